"""Training, sweep configuration, resumption after kill -9, Dask, heatmaps (issue: trainability experiments)."""

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from bnmft.cli import main
from bnmft.errors import InputError
from bnmft.experiments.store import Store, cell_key
from bnmft.experiments.sweep import load_sweeps, parse_sweep, run_sweep
from bnmft.experiments.training import TrainConfig, train

TINY = {"dataset": "mnist", "width": 16, "lr": "1e-3*B", "epochs": 1, "train_subset": 256, "test_subset": 64}


def test_training_records_history_and_learns():
    cfg = TINY | {"width": 64, "train_subset": 2000, "test_subset": 500, "lr": 0.05}
    r = train(TrainConfig(**cfg, depth=3, batch_size=16))
    assert r["history"][0]["epoch"] == 1 and not r["diverged"]
    assert {"train_loss", "train_accuracy", "test_loss", "test_accuracy"} <= set(r["history"][0])
    assert r["history"][0]["train_accuracy"] > 0.3
    assert r["test_accuracy"] > 0.5  # far above chance (0.1) after one epoch on 2000 examples


def test_divergence_is_recorded_not_raised():
    r = train(TrainConfig(**(TINY | {"lr": 1e9}), depth=3, batch_size=16))
    assert r["diverged"] and r["test_accuracy"] == pytest.approx(0.1)


def test_rmsprop_and_ghost_batches_run():
    r = train(TrainConfig(**(TINY | {"optimizer": "rmsprop", "lr": 1e-4}), depth=2, batch_size=16, ghost_size=4))
    assert len(r["history"]) == 1


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"name": "s", "grid": {"depth": [2]}, "colour": 1}, "unknown key 'colour'"),
        ({"name": "s", "grid": {"depth": [2], "widht": [3]}}, "unknown key grid.'widht'"),
        ({"name": "s", "base": {"lr_rate": 1}, "grid": {"depth": [2]}}, "unknown key base.'lr_rate'"),
        ({"name": "s", "grid": {"depth": []}}, "grid.depth is empty"),
        ({"name": "s", "grid": {"batch_size": [8]}}, "grid.depth is required"),
        ({"name": "s", "grid": {"depth": [0]}}, "depth must be an integer >= 1"),
        ({"name": "s", "grid": {"depth": [2], "batch_size": [1]}}, "batch_size must be an integer >= 2"),
        ({"name": "s", "base": {"lr": -1}, "grid": {"depth": [2]}}, "lr must be positive"),
        ({"name": "s", "base": {"dataset": "imagenet"}, "grid": {"depth": [2]}}, "dataset must be one of"),
        ({"name": "s", "base": {"phi": "nosuch"}, "grid": {"depth": [2]}}, "unknown nonlinearity"),
        ({"name": "s", "base": {"eps": -1.0}, "grid": {"depth": [2]}}, "eps must be >= 0"),
        ({"grid": {"depth": [2]}}, "'name' is required"),
        ({"name": "s", "x": "gamma", "grid": {"depth": [2]}}, "x = 'gamma' must be one of the grid keys"),
        ({"name": "s", "base": {"batch_size": 10, "ghost_size": 4}, "grid": {"depth": [2]}}, "must divide"),
        ({"name": "s", "seeds": [0, 1, 0], "grid": {"depth": [2]}}, "seeds repeats a seed"),
    ],
)
def test_bad_configurations_are_rejected_with_the_key_named(raw, message):
    with pytest.raises(ValueError, match=message):
        parse_sweep(raw)


def test_presets_parse():
    assert [s.name for s in load_sweeps("paper")] == [
        "fig3a",
        "fig3b",
        "fig3c",
        "fig3d",
        "fig5a",
        "fig5b",
        "fig5c",
        "fig5d",
        "resnet_batch",
        "resnet_vs_plain",
    ]
    quick = load_sweeps("quick")  # every figure of the paper, reduced, and the residual sweeps
    assert [s.name for s in quick] == [s.name for s in load_sweeps("paper")]
    assert quick[0].x == "batch_size" and sum(len(s.cells()) for s in quick) >= 200


def test_cell_keys_hash_the_full_configuration():
    a = TrainConfig(depth=3).to_dict()
    b = TrainConfig(depth=3, seed=1).to_dict()
    assert cell_key(a) == cell_key(dict(reversed(list(a.items())))) and cell_key(a) != cell_key(b)


def write_config(path, depths, sizes=(8, 16), seeds=(0,), **overrides):
    base = "\n".join(f"{k} = {json.dumps(v)}" for k, v in (TINY | overrides).items())
    path.write_text(
        f'name = "t"\nx = "batch_size"\nseeds = {list(seeds)}\n[base]\n{base}\n[grid]\n'
        f"depth = {list(depths)}\nbatch_size = {list(sizes)}\n"
    )
    return path


def rows(db):
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT key, finished, result FROM cells ORDER BY finished").fetchall()
    except sqlite3.OperationalError:  # the schema is not there yet
        return []
    finally:
        con.close()


def test_resume_after_kill_9_loses_and_duplicates_nothing(tmp_path):
    # 24 cells of ~0.3 s each: the kill lands after 3 finished cells, long before the last
    config = write_config(tmp_path / "s.toml", [1, 2, 3, 4, 5, 6], seeds=(0, 1), train_subset=1024, width=64)
    db = tmp_path / "r.db"
    cmd = [sys.executable, "-m", "bnmft.cli", "sweep", str(config), "--store", str(db), "--workers", "1", "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and (not db.exists() or len(rows(db)) < 3):
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = rows(db)
    assert 3 <= len(before) < 24, "the kill must land mid-sweep"
    assert main(["sweep", str(config), "--store", str(db), "--workers", "1", "--json"]) == 0
    after = rows(db)
    keys = [k for k, _, _ in after]
    assert len(after) == 24 and len(set(keys)) == 24  # nothing lost, nothing duplicated
    assert set(before) <= set(after)  # finished cells untouched (same timestamps and results)
    expected = {cell_key(c) for c in load_sweeps(config)[0].cells()}
    assert set(keys) == expected


def test_dask_local_cluster(tmp_path):
    distributed = pytest.importorskip("distributed")
    config = write_config(tmp_path / "s.toml", [1, 2])
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cl:
        store = Store(tmp_path / "d.db")
        summary = run_sweep(load_sweeps(config)[0], store, scheduler=cl.scheduler_address, progress=False)
        assert summary == {"cells": 4, "skipped": 0, "ran": 4, "by_others": 0, "left": 0}
        again = run_sweep(load_sweeps(config)[0], store, scheduler=cl.scheduler_address, progress=False)
        assert again == {"cells": 4, "skipped": 4, "ran": 0, "by_others": 0, "left": 0}
        assert all(0 <= r["result"]["test_accuracy"] <= 1 for r in store.results("t"))
        store.close()


def test_sweep_and_heatmap_cli(tmp_path, capsys):
    config = write_config(tmp_path / "s.toml", [1, 2])
    db, fig = tmp_path / "h.db", tmp_path / "h.png"
    assert main(["sweep", str(config), "--store", str(db), "--workers", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["ran"] == 4
    assert main(["heatmap", "--store", str(db), "--out", str(fig)]) == 0
    assert fig.stat().st_size > 5000


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sweep", "{bad}", "--store", "{db}"], "unknown key 'colour'"),
        (["sweep", "/nonexistent.toml", "--store", "{db}"], "cannot read"),
        (["heatmap", "--store", "/nonexistent.db", "--out", "x.png"], "no such file"),
        (["sweep", "{bad}", "--store", "{db}", "--workers", "0"], "--workers"),
        (["sweep", "{bad}", "--store", "{db}", "--hours", "0"], "--hours: must be a number of hours > 0"),
        (["sweep", "{bad}", "--store", "{db}", "--hours", "nan"], "--hours: must be a finite number"),
    ],
)
def test_cli_errors(argv, message, tmp_path, capsys):
    (tmp_path / "bad.toml").write_text('name = "b"\ncolour = 1\n[grid]\ndepth = [1]\n')
    files = {"bad": str(tmp_path / "bad.toml"), "db": str(tmp_path / "e.db")}
    try:
        code = main([a.format(**files) for a in argv])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_heatmap_theory_line_uses_the_eps_theory():
    from bnmft import theory
    from bnmft.experiments.agreement import theory_depth_for

    cfg = TrainConfig(phi="tanh", batch_size=16, eps=1e-3).to_dict()
    assert theory_depth_for(cfg, "eps", 1e-3) == pytest.approx(theory("tanh", 16, eps=1e-3).max_trainable_depth)
    assert theory_depth_for(cfg, "eps", 0.5) > theory_depth_for(cfg, "eps", 1e-3)  # toward the transition
    assert theory_depth_for(cfg, "eps", 3.0) == float("inf")  # collapsed phase: lambda_W = 1 for tanh
    assert theory_depth_for(dict(cfg, ghost_size=4, batch_size=16), "eps", 1e-3) == pytest.approx(
        theory("tanh", 4, eps=1e-3).max_trainable_depth
    )


def test_sweeps_in_one_schedule_train_a_shared_cell_once_and_the_costliest_first(tmp_path):
    from bnmft.experiments.groups import cell_cost, group_cells
    from bnmft.experiments.sweep import run_sweeps

    a = load_sweeps(write_config(tmp_path / "a.toml", [1, 3], sizes=(8,)))[0]
    b = parse_sweep({"name": "b", "x": "batch_size", "base": TINY, "grid": {"depth": [3, 2], "batch_size": [8]}})
    store = Store(tmp_path / "s.db")
    order = []
    counts = run_sweeps([a, b], store, workers=1, progress=False,
                        on_result=lambda r: order.append(r["config"]["depth"]))  # fmt: skip
    # depth 3 at B = 8 is in both: trained once, stored under the first sweep, read by either through its keys
    assert order == [3, 2, 1]  # one worker: the costliest (deepest) cell first, whichever sweep it came from
    assert counts == {"t": {"cells": 2, "skipped": 0, "ran": 2, "by_others": 0, "left": 0},
                      "b": {"cells": 2, "skipped": 0, "ran": 2, "by_others": 0, "left": 0}}  # fmt: skip
    assert sorted(r["config"]["depth"] for r in store.results("b")) == [2]
    shared = store.results(keys={cell_key(c) for c in b.cells()})
    assert sorted((r["config"]["depth"], r["sweep"]) for r in shared) == [(2, "b"), (3, "t")]
    again = run_sweeps([a, b], store, workers=1, progress=False)
    assert again["b"] == {"cells": 2, "skipped": 2, "ran": 0, "by_others": 0, "left": 0}
    # the cost: layer-steps x (1 + B / 64) per model, K^0.6 for K stacked
    one = TrainConfig(depth=10, batch_size=64, train_subset=640, epochs=2).to_dict()
    assert cell_cost([one]) == pytest.approx((10 + 10) * (2 * 640 // 64) * (1 + 64 / 64))  # weights + BN layers
    assert cell_cost([one, dict(one, seed=1)]) == pytest.approx(cell_cost([one]) * 2 ** 0.6)
    assert len(group_cells([one, dict(one, seed=1)])) == 1
    assert cell_cost([dict(one, width=192)]) == pytest.approx(cell_cost([one]) / 4)  # the weight matrices' size
    store.close()


def test_sweeps_in_the_given_order_finish_the_first_sweep_first(tmp_path):
    from bnmft.experiments.sweep import run_sweeps

    a = parse_sweep({"name": "a", "x": "batch_size", "base": TINY, "grid": {"depth": [1, 2], "batch_size": [8]}})
    b = parse_sweep({"name": "b", "x": "batch_size", "base": TINY, "grid": {"depth": [3, 4], "batch_size": [8]}})
    store = Store(tmp_path / "s.db")
    order = []
    run_sweeps([a, b], store, workers=1, progress=False, order="sweeps",
               on_result=lambda r: order.append(r["config"]["depth"]))  # fmt: skip
    assert order == [1, 2, 3, 4]  # sweep a first, in its grid order, then b; "cost" would give 4, 3, 2, 1
    with pytest.raises(InputError, match="order must be"):
        run_sweeps([a], store, order="grid")
    store.close()


def test_a_stopped_schedule_ends_at_once_keeping_finished_cells(tmp_path):
    import threading

    from bnmft.experiments.sweep import run_sweeps, sweep_results

    sweep = load_sweeps(write_config(tmp_path / "a.toml", [1, 2, 3], sizes=(8, 16)))[0]
    store = Store(tmp_path / "s.db")
    stop = threading.Event()
    counts = run_sweeps([sweep], store, workers=1, progress=False, stop=stop, on_result=lambda r: stop.set())
    assert counts["t"]["ran"] == 1 and len(sweep_results(store, sweep)) == 1  # the first cell kept, then stopped
    assert counts["t"]["left"] == 5 and counts["t"]["by_others"] == 0  # the others left for the next run
    with pytest.raises(InputError, match="not both"):
        store.results("t", keys=set())
    store.close()


def _timed_cell(store, depth, batch_size, seconds, batched=1):
    """A finished cell of another sweep with a given training time (what a time-limited run estimates from)."""
    config = TrainConfig(**TINY, depth=depth, batch_size=batch_size).to_dict()
    store.add("old", cell_key(config), config, {"test_accuracy": 0.5, "seconds": seconds, "batched": batched})
    return config


def test_the_cost_model_prices_a_group_by_the_finished_cells_of_its_kind(tmp_path):
    from bnmft.experiments.groups import CostModel, cell_cost

    store = Store(tmp_path / "s.db")
    assert CostModel(store.results()).seconds([TrainConfig(**TINY).to_dict()]) is None  # nothing measured
    cheap = [_timed_cell(store, d, 8, s, batched=2) for d, s in ((5, 1.0), (6, 3.0), (7, 2.0))]
    dear = _timed_cell(store, 5, 16, 100.0)
    costs = CostModel(store.results())
    store.close()
    prices = sorted(s * 2 / cell_cost([c, c]) for c, s in zip(cheap, (1.0, 3.0, 2.0), strict=True))
    group = [TrainConfig(**TINY, depth=9, batch_size=8, seed=k).to_dict() for k in range(3)]
    assert costs.seconds(group) == pytest.approx(prices[1] * cell_cost(group))  # the median price of its kind
    assert costs.seconds([dear]) == pytest.approx(100.0)  # a cell is its own estimate
    other = [TrainConfig(**TINY, depth=3, batch_size=32).to_dict()]  # a kind never measured: all cells' median
    every = sorted([*prices, 100.0 / cell_cost([dear])])
    assert costs.seconds(other) == pytest.approx((every[1] + every[2]) / 2 * cell_cost(other))
    costs.add(other[0], {"test_accuracy": 0.5})  # a row without timing teaches nothing
    assert costs.seconds(other) == pytest.approx((every[1] + every[2]) / 2 * cell_cost(other))
    no_steps = TrainConfig(**(TINY | {"train_subset": 16}), batch_size=32).to_dict()  # a valid cell of 0 steps
    assert cell_cost([no_steps]) == cell_cost([dict(no_steps, train_subset=32)]) > 0  # priced as one step
    costs.add(no_steps, {"test_accuracy": 0.1, "seconds": 0.5})


def test_a_time_limited_run_starts_only_the_cells_that_fit_and_the_next_run_goes_on(tmp_path, capsys):
    from bnmft.experiments.sweep import run_sweeps

    config = write_config(tmp_path / "s.toml", [1, 2], sizes=(8, 16))
    db = tmp_path / "s.db"
    store = Store(db)
    _timed_cell(store, 9, 8, 1e-3)  # B = 8 cells cost next to nothing here, B = 16 cells a day each
    _timed_cell(store, 9, 16, 86400.0)
    sweep = load_sweeps(config)[0]
    counts = run_sweeps([sweep], store, workers=1, progress=False, time_limit=3600)
    assert counts["t"] == {"cells": 4, "skipped": 0, "ran": 2, "by_others": 0, "left": 2}
    assert sorted(r["config"]["batch_size"] for r in store.results("t")) == [8, 8]
    for bad in (0, -1.0, math.nan, math.inf, True, "1h"):
        with pytest.raises(InputError, match="time_limit must be"):
            run_sweeps([sweep], store, time_limit=bad)
    store.close()
    assert main(["sweep", str(config), "--store", str(db), "--workers", "1", "--hours", "1"]) == 0
    assert "0 run now, 2 left for the time limit (run again to go on)" in capsys.readouterr().out
    assert main(["sweep", str(config), "--store", str(db), "--workers", "1", "--json"]) == 0  # no limit: the rest
    assert json.loads(capsys.readouterr().out)[0] == {"sweep": "t", "cells": 4, "skipped": 2, "ran": 2,
                                                       "by_others": 0, "left": 0}  # fmt: skip
    # a file of two sweeps under one limit: the cheap kind trains in both, the dear kind is left in both
    db = tmp_path / "two.db"
    store = Store(db)
    _timed_cell(store, 9, 8, 1e-3)
    _timed_cell(store, 9, 16, 86400.0)
    store.close()
    base = "\n".join(f"{k} = {json.dumps(v)}" for k, v in TINY.items())
    two = tmp_path / "two.toml"
    two.write_text("".join(f'[[sweeps]]\nname = "{n}"\nx = "batch_size"\n[sweeps.base]\n{base}\n[sweeps.grid]\n'
                           f"depth = [{d}]\nbatch_size = [8, 16]\n" for n, d in (("u", 3), ("v", 4))))  # fmt: skip
    assert main(["sweep", str(two), "--store", str(db), "--workers", "2", "--hours", "1", "--json"]) == 0
    assert [(r["sweep"], r["ran"], r["left"]) for r in json.loads(capsys.readouterr().out)] == [("u", 1, 1),
                                                                                             ("v", 1, 1)]


def test_the_progress_bar_estimates_the_time_left_from_the_measured_cells(tmp_path, capsys):
    from bnmft.experiments.groups import CostModel, cell_cost
    from bnmft.experiments.sweep import _time_left_text

    store = Store(tmp_path / "s.db")
    measured = _timed_cell(store, 9, 8, 7200.0)  # two hours for one cell of depth 9
    costs = CostModel(store.results())
    twin = [dict(measured, seed=1)]
    assert _time_left_text(costs, twin, 1) == "~2.0 h left"
    assert _time_left_text(costs, twin, 3) == "~40 min left"  # three slots
    assert _time_left_text(CostModel(), twin, 1) == ""  # nothing measured: no guess
    sweep = parse_sweep({"name": "p", "x": "batch_size", "base": TINY, "grid": {"depth": [1], "batch_size": [8]}})
    run_sweep(sweep, store, workers=1, progress=True)
    store.close()
    minutes = math.ceil(7200 * cell_cost(sweep.cells()) / cell_cost([measured]) / 60)
    assert f"~{minutes} min left" in capsys.readouterr().err  # shown from the start, from the measured cell


def test_a_dry_run_estimates_without_training_or_creating_a_store(tmp_path, capsys):
    from bnmft.experiments.groups import CostModel, group_cells

    config = write_config(tmp_path / "s.toml", [1, 2], sizes=(8, 16))
    fresh = tmp_path / "new.db"
    assert main(["sweep", str(config), "--store", str(fresh), "--dry-run"]) == 0
    assert "4 cells, 0 done, 4 to train: not estimated (nothing measured in the store yet)" in capsys.readouterr().out
    assert not fresh.exists()
    db = tmp_path / "s.db"
    store = Store(db)
    _timed_cell(store, 9, 8, 3600.0)
    _timed_cell(store, 9, 16, 7200.0)
    done = TrainConfig(**TINY, depth=1, batch_size=8).to_dict()
    store.add("t", cell_key(done), done, {"test_accuracy": 0.5, "seconds": 1.0})
    costs, before = CostModel(store.results()), len(store.results())
    store.close()
    assert main(["sweep", str(config), "--store", str(db), "--dry-run", "--workers", "2", "--json"]) == 0
    (plan,) = json.loads(capsys.readouterr().out)
    todo = [c for c in load_sweeps(config)[0].cells() if cell_key(c) != cell_key(done)]
    expected = sum(costs.seconds(g) for g in group_cells(todo))
    assert (plan["cells"], plan["done"], plan["to_train"]) == (4, 1, 3)
    groups = [costs.seconds(g) for g in group_cells(todo)]
    assert plan["core_seconds"] == pytest.approx(expected) and plan["longest_group_seconds"] == max(groups)
    assert plan["wall_seconds"] == pytest.approx(max(expected / 2, max(groups)))
    store = Store(db)
    assert len(store.results()) == before  # nothing trained
    store.close()
    for extra in (["--hours", "1"], ["--device", "cuda"]):
        assert main(["sweep", str(config), "--store", str(db), "--dry-run", *extra]) == 2
        assert "not allowed with --dry-run" in capsys.readouterr().err


def test_another_programs_database_is_refused_and_left_as_it_was(tmp_path, capsys):
    """A SQLite file of another program (its own tables, no ``cells``) is refused by a run and by a dry run, and
    bnmft's tables are never added to it; a dry run opens a store read-only (its bytes unchanged)."""
    config = write_config(tmp_path / "s.toml", [1, 2], sizes=(8, 16))
    other = tmp_path / "other.db"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE users (id INTEGER, name TEXT)")
    db.commit()
    db.close()
    before = other.read_bytes()
    for extra in (["--dry-run"], ["--workers", "1"]):
        assert main(["sweep", str(config), "--store", str(other), *extra]) == 2
        err = capsys.readouterr().err
        assert "another program's database (tables ['users']" in err and "Traceback" not in err
        assert other.read_bytes() == before
    with pytest.raises(InputError, match="does not exist"):
        Store(tmp_path / "none.db", read_only=True)
    mine = tmp_path / "mine.db"
    store = Store(mine)
    _timed_cell(store, 9, 8, 3600.0)
    store.close()
    before = mine.read_bytes()
    assert main(["sweep", str(config), "--store", str(mine), "--dry-run"]) == 0
    assert mine.read_bytes() == before and "4 to train" in capsys.readouterr().out
