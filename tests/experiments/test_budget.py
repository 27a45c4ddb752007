"""The training-budget study (bnmft.experiments.budget, bnmft.report.budget): its grid (frozen: the committed store's
cells are keyed by their configurations), its crossings and trend on synthetic results with known edges (exact:
accuracy linear in log depth around the edge), partial stores, and a small real run that resumes from its store."""

import hashlib
import itertools
import json
import math
import re
from dataclasses import replace

import numpy as np
import pytest

from bnmft.cli import main
from bnmft.errors import InputError
from bnmft.experiments.budget import (
    BOOTSTRAP_DRAWS,
    MAX_INTERVAL_FRACTION,
    PLANS,
    BudgetPlan,
    _summarise,
    _trend,
    _verdict,
    analyse,
    anchor_learns,
    budget_sweeps,
    column_theory,
    depth_grid,
    sweep_name,
)
from bnmft.experiments.store import Store, cell_key
from bnmft.report import budget as report

PLAN = BudgetPlan(columns={"B32": {"batch_size": 32}}, budgets={1: (1, 5000), 4: (2, 10000), 16: (4, 20000)},
                  seeds=(0, 1, 2), optimizers=("sgd", "sgd_paper"))  # fmt: skip


def _accuracy(depth: float, edge: float) -> float:
    """0.9 for shallow networks, 0.5 (the threshold: half-way from 0.1) exactly at the edge, linear in log depth."""
    return float(np.clip(0.5 - 2.0 * (math.log(depth) - math.log(edge)), 0.1, 0.9))


def _results(edges: dict[tuple[int, str, int], float]) -> dict[str, list[dict]]:
    """Stored cells of PLAN with the given edge per (budget, optimiser label, seed)."""
    out: dict[str, list[dict]] = {}
    for (factor, label, seed), edge in edges.items():
        epochs, train = PLAN.budgets[factor]
        for d in depth_grid(PLAN, "B32"):
            config = {"depth": d, "seed": seed, "batch_size": 32}
            result = {"test_accuracy": _accuracy(d, edge), "steps": epochs * train // 32}
            out.setdefault(sweep_name("B32", factor, label), []).append({"config": config, "result": result})
    return out


def _rows(crossings: dict[int, list[float]], line: float) -> list[dict]:
    """Seed rows of one (column, optimiser) with these complete crossings per budget (steps 10 x the factor)."""
    return [{"column": "B32", "optimizer": "sgd", "lr": "1e-3*B", "budget": f, "steps": 10 * f, "seed": seed,
             "theory_depth": line, "grid_bottom": 22, "grid_top": 62, "crossing_depth": c, "measured_depth": 22,
             "censored": False, "complete": True, "untrained": False, "below_grid": False}
            for f, cs in crossings.items() for seed, c in enumerate(cs)]  # fmt: skip


def _judged(crossings: dict[int, list[float]], line: float) -> tuple[dict, str, bool | None]:
    rows = _rows(crossings, line)
    t = _trend(rows)
    return (t, *_verdict(_summarise(rows), t, line))


def test_the_full_plans_cells_are_frozen():
    """The committed store (docs/budget/sweeps.db) is resumed by cell: the hash of each cell's whole configuration.
    Any change to the plan's grids, bases, seeds, budgets or rates would orphan its cells; these are the cells of
    2026-12-06 (issue 24)."""
    plan = PLANS["full"]
    grids = {c: depth_grid(plan, c) for c in plan.columns}
    assert grids == {"B8": [8, *range(16, 49, 4)], "B32": [8, *range(22, 63, 4)], "ghost8": [8, *range(16, 49, 4)]}
    assert plan.budgets == {1: (1, 5000), 4: (2, 10000), 16: (4, 20000)} and plan.seeds == (0, 1, 2)
    cells = sorted(f"{s.name} {cell_key(c)}" for _, s in budget_sweeps(plan) for c in s.cells())
    assert len(cells) == 3 * 3 * 3 * 3 * 10 + 3 * 3 * 3 * 2  # budgets x optimisers x seeds x (B8, ghost8: 10; B32: 12)
    digest = hashlib.sha256("\n".join(cells).encode()).hexdigest()
    assert digest == "8fdf7e352e1aab733e93e9153e463a72190dcc2cac40e3b12606567ccd63b9ef"


def test_the_depth_grid_spans_the_line():
    line = column_theory(PLAN, "B32")
    assert line == pytest.approx(38.117, abs=1e-3)  # 16 / ln lambda_G, relu B = 32, eps 1e-3
    grid = depth_grid(PLAN, "B32")
    assert grid[0] == PLAN.anchor_depth and np.all(np.diff(grid[1:]) == 4)
    assert grid[1] <= 0.6 * line < grid[1] + 4 and grid[-1] >= 1.6 * line > grid[-1] - 4
    full = [s for _, s in budget_sweeps(PLANS["full"])]
    assert len({s.name for s in full}) == len(full) == 3 * 3 * 3  # budgets x columns x optimisers
    first = full[0].cells()[0]
    assert (first["epochs"], first["train_subset"], first["test_subset"]) == (1, 5000, 1000)  # 1x: the quick preset
    assert (first["optimizer"], first["lr"]) == ("sgd", "1e-3*B")
    ghost = next(s for s in full if s.name == "budget_ghost8_16x_rmsprop").cells()
    assert {(c["batch_size"], c["ghost_size"], c["epochs"], c["train_subset"], c["lr"]) for c in ghost} == {
        (128, 8, 4, 20000, "1e-5*B")
    }
    assert {c["seed"] for c in ghost} == {0, 1, 2}


def test_crossings_and_a_geometric_limit_are_recovered_exactly():
    line = column_theory(PLAN, "B32")
    # a crossing that converges geometrically to the line (increments 8, 4: r = 1/2, limit d3 + 4) with seed offsets
    # that cancel in the mean; the paper's rate never trains
    means = {1: line - 12, 4: line - 4, 16: line}
    edges = {(f, "sgd", s): means[f] + off for f in means for s, off in zip((0, 1, 2), (-1.5, 0.0, 1.5),
                                                                                 strict=True)}  # fmt: skip
    cells = _results(edges)
    for f in means:  # the paper's rate: only the anchor ran, and it stayed at chance
        cells[sweep_name("B32", f, "sgd_paper")] = [
            {"config": c["config"], "result": {**c["result"], "test_accuracy": 0.11}}
            for c in cells[sweep_name("B32", f, "sgd")] if c["config"]["depth"] == PLAN.anchor_depth
        ]
    study = analyse(PLAN, cells)
    ours = [s for s in study["summary"] if s["lr"] == "1e-3*B"]
    assert [s["crossing_mean"] for s in ours] == pytest.approx([means[f] for f in (1, 4, 16)], abs=1e-9)
    assert ours[0]["crossing_stderr"] == pytest.approx(1.5 / math.sqrt(3), rel=1e-9)  # std 1.5 over 3 seeds
    assert [s["steps"] for s in ours] == [156, 625, 2500]
    t = next(t for t in study["trends"] if t["lr"] == "1e-3*B")
    assert t["ratio_of_increments"] == pytest.approx(0.5) and t["limit"] == pytest.approx(line + 4)
    lo, hi = t["limit_interval"]
    assert lo < line + 4 < hi and t["consistent"] is False  # the limit lies 4 layers past the line, beyond its error
    slope = np.polyfit(np.log([156, 625, 2500]) / math.log(4), [means[f] for f in (1, 4, 16)], 1)[0]
    assert t["gain_per_4x"] == pytest.approx(slope)
    paper = next(t for t in study["trends"] if t["lr"] == "1e-5*B")
    assert paper["verdict"] == "does not train within the budgets tried (156, 625, 2500 steps)"
    assert paper["consistent"] is None and paper["dropped"] == {f"{f}x": "3 untrained" for f in (1, 4, 16)}


def test_a_limit_at_the_line_is_consistent_and_a_growing_edge_is_not():
    line = column_theory(PLAN, "B32")
    # increments 6 and 1.5: r = 1/4, limit (line - 0.5) + 1.5 (1/4) / (3/4) = line; the seed offsets are the same
    # at every budget, so every paired draw has r = 1/4 and its limit at line + (the drawn seeds' mean offset)
    at_line, text, consistent = _judged({f: [line - 8 / f + off for off in (-0.5, 0.0, 0.5)] for f in (1, 4, 16)},
                                        line)  # fmt: skip
    assert at_line["ratio_of_increments"] == pytest.approx(0.25) and at_line["limit"] == pytest.approx(line)
    lo, hi = at_line["limit_interval"]  # the 16 and 84% points of the mean of 3 draws from (-0.5, 0, 0.5): -1/6, 1/6
    assert (lo - line, hi - line) == pytest.approx((-1 / 6, 1 / 6))
    assert consistent is True and at_line["converging_fraction"] == 1.0 and "geometric limit" in text
    growing = {f: [20 + 5 * math.log(f, 4) * (1 + 0.4 * k) + off for k, off in ((0, -0.3), (1, 0.0), (2, 0.3))]
               for f in (1, 4, 16)}  # fmt: skip
    g, text, consistent = _judged(growing, line)
    assert g["ratio_of_increments"] == pytest.approx(1.0) and g["limit"] is None
    assert consistent is False and "not converging" in text and "+" in text
    _, text, consistent = _judged({1: growing[1]}, line)  # one budget: no trend, no judgement
    assert consistent is None and text.endswith("one budget so far") and f"{g['means'][0]:.1f}" in text


def test_a_crossing_settled_at_the_line_is_consistent_and_a_loose_limit_is_not_judged():
    """A plateau: the second increment is noise about zero (here r < 0, which 0 < r < 1 would call 'not
    converging'); the geometric sum holds for |r| < 1. A limit whose interval is wider than a quarter of the line is
    not judged, whether or not it holds the line."""
    line = column_theory(PLAN, "B32")
    e4, e16 = (-0.2, 0.1, 0.3), (0.1, -0.3, 0.1)
    settled = {1: [line - 6.0] * 3, 4: [line + e for e in e4], 16: [line + e for e in e16]}
    t, text, consistent = _judged(settled, line)
    d1, d2, d3 = line - 6.0, line + np.mean(e4), line + np.mean(e16)
    r = (d3 - d2) / (d2 - d1)
    assert t["ratio_of_increments"] == pytest.approx(r) and -0.02 < r < 0
    assert t["limit"] == pytest.approx(d3 + (d3 - d2) * r / (1 - r))
    # paired draws: d1 fixed, d2 - d1 about 6, d3 the mean of 3 draws from e16 (+- 0.3): |r| < 0.06 in every draw
    assert t["converging_fraction"] == 1.0 and t["unbounded_draws"] == 0
    lo, hi = t["limit_interval"]
    assert lo < line < hi and hi - lo < 0.5 and consistent is True
    loose = {1: [line - 40.0] * 3, 4: [line] * 3, 16: [line - 18.0, line, line + 18.0]}  # |r| <= 0.45
    t, text, consistent = _judged(loose, line)
    lo, hi = t["limit_interval"]
    assert t["converging_fraction"] == 1.0 and hi - lo > MAX_INTERVAL_FRACTION * line and lo < line < hi
    assert consistent is None and f"limit too uncertain ({lo:.1f}-{hi:.1f}" in text


def test_draws_without_a_limit_are_unbounded_not_nan_and_the_json_is_strict():
    line = column_theory(PLAN, "B32")
    # increments 4 and 2 on average, but the last budget's seeds spread so widely that a third of the draws or more
    # have r >= 1 (no limit): the interval's upper end is unbounded (None), never NaN
    wide = {1: [line - 10.0] * 3, 4: [line - 6.0] * 3, 16: [line - 10.0, line - 4.0, line + 2.0]}
    t, text, consistent = _judged(wide, line)
    assert t["limit"] == pytest.approx(line - 4.0 + 2.0 * 0.5 / 0.5) and t["limit_interval"][1] is None
    # a draw has no limit where r = (m + 6) / 4 is outside (-1, 1), m the mean of its 3 seeds' offsets: exactly
    p = np.mean([not -1 < (np.mean(m) + 6) / 4 < 1 for m in itertools.product((-10, -4, 2), repeat=3)])  # 11/27
    n = BOOTSTRAP_DRAWS
    assert abs(t["unbounded_draws"] - n * p) < 4 * math.sqrt(n * p * (1 - p)) and p == pytest.approx(11 / 27)
    assert t["converging_fraction"] == pytest.approx(1 - t["unbounded_draws"] / n)
    assert consistent is False and "unbounded" in text and "nan" not in text
    assert json.loads(json.dumps(report._finite(t), allow_nan=False))["limit_interval"][1] is None
    assert report._finite({"a": (math.inf, -math.inf, math.nan, 1.5)}) == {"a": [None, None, None, 1.5]}


def test_a_small_run_resumes_from_its_store(tmp_path, monkeypatch, capsys):
    plan = BudgetPlan(columns={"B8": {"batch_size": 8}}, budgets={1: (1, 64), 4: (1, 256)}, seeds=(0, 1),
                      depth_step=24, anchor_depth=2, optimizers=("rmsprop", "sgd_paper"),
                      base={"dataset": "mnist", "test_subset": 64, "width": 16})  # fmt: skip
    monkeypatch.setitem(PLANS, "tiny", plan)
    argv = ["budget", "--plan", "tiny", "--out", str(tmp_path), "--workers", "1", "--json"]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    # rmsprop over the whole grid; SGD at the paper's rate only its anchors (they stay at chance at this budget)
    planned = len(depth_grid(plan, "B8")) * 2 * 2 + 2 * 2
    assert first["cells_done"] == first["cells_planned"] == planned
    assert first["training_core_seconds_left"] == 0.0
    # one worker: the wall time is the training time, plus the milliseconds between storing a batch's cells
    assert first["training_core_seconds"] <= first["training_wall_seconds"] <= 1.5 * first["training_core_seconds"]
    paper = [t for t in first["trends"] if t["lr"] == "1e-5*B" and t["optimizer"] == "sgd"]
    assert paper and paper[0]["verdict"] == "does not train within the budgets tried (8, 32 steps)"
    stored = json.loads((tmp_path / "budget.json").read_text())
    assert {(s["budget"], s["steps"]) for s in stored["summary"]} == {(1, 8), (4, 32)}
    assert (tmp_path / "budget.png").stat().st_size > 0 and (tmp_path / "budget_trends.csv").is_file()
    assert stored["training_core_seconds_left"] == 0.0  # nothing left to estimate
    assert main(argv) == 0  # everything is stored: nothing trains again, the same answer
    again = json.loads(capsys.readouterr().out)
    assert again["trends"] == first["trends"]
    assert main(["budget", "--plan", "tiny", "--out", str(tmp_path), "--no-train", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cells_done"] == planned


def test_the_reports_verdict_follows_the_study():
    """Fig 3a's claim: consistent only where every tested column converges to the line; not judged with too few
    budgets; not tested without a study."""
    from bnmft.report.training import _budget_verdict

    def study(*flags):
        return {"trends": [{"column": c, "optimizer": "sgd", "lr": "1e-3*B", "verdict": f"v{c}", "consistent": f}
                           for c, f in zip(("B8", "B32"), flags, strict=True)]}  # fmt: skip

    assert _budget_verdict("fig3a", 0.74, study(True, True))[1] is True
    text, flag = _budget_verdict("fig3a", 0.74, study(True, False))
    assert flag is False and text.startswith("not established") and "column B8: vB8; column B32: vB32" in text
    assert _budget_verdict("fig3a", 0.74, study(True, None))[1] is None
    for flags in ((False, None), (None, False)):  # a column against the line decides, whatever the other's state
        text, flag = _budget_verdict("fig3a", 0.74, study(*flags))
        assert flag is False and text.startswith("not established")
    text, flag = _budget_verdict("fig3a", 0.74, None)
    assert flag is None and "not tested" in text and "0.74" in text


def test_a_sweep_is_judged_by_the_study_only_where_it_has_the_studys_cells():
    """The quick preset's Fig 3a/3b/3c sweeps are the study's 1x cells (at some depths); the paper preset's (10
    epochs at the paper's rate; Fig 3b's batch 1000) are not, and keep their own verdict."""
    from bnmft.experiments.sweep import load_sweeps
    from bnmft.report.training import BUDGET_TESTED, _measured

    quick, paper = ({s.name: s for s in load_sweeps(p)} for p in ("quick", "paper"))
    for name, tested in BUDGET_TESTED.items():
        assert report.matches_study(quick[name], *tested) and not report.matches_study(paper[name], *tested)
    against = {"plan": "full", "trends": [{"column": c, "optimizer": "sgd", "lr": "1e-3*B", "verdict": "v",
                                           "consistent": False} for c in ("B8", "B32")]}  # fmt: skip
    for preset, lead in ((quick, "not established"), (paper, "consistent: the measured edge")):
        sweep = replace(preset["fig3a"], grid={"depth": [5, 10, 20, 40], "batch_size": [8, 32]})
        results = [{"config": c, "result": {"test_accuracy": _accuracy(c["depth"], 30.0)}} for c in sweep.cells()]
        claim = _measured("fig3a", {"sweep": sweep, "results": results}, against)["claim"]
        assert claim.verdict.startswith(lead) and ("budget study" in claim.verdict) == (preset is quick)


def test_a_censored_last_budget_is_beyond_the_line():
    line = column_theory(PLAN, "B32")
    edges = {(f, "sgd", s): edge for f, edge in ((1, line - 12), (4, line - 4), (16, 200.0)) for s in (0, 1, 2)}
    study = analyse(PLAN, _results(edges))
    t = study["trends"][0]
    assert [s["censored"] for s in study["summary"]] == [0, 0, 3] and t["dropped"] == {"16x": "3 censored"}
    top = depth_grid(PLAN, "B32")[-1]
    assert t["consistent"] is False and t["verdict"].endswith(
        f"at 2500 steps the edge lies beyond the grid (> {top} = {top / line:.2f} x the line)"
    )
    assert t["verdict"].startswith(f"the crossing moves from {line - 12:.1f}")


def test_partial_stores_missing_anchors_and_crossings_below_the_grid():
    """Only grid depths count; a seed without its anchor has no crossing; a seed trained to its deepest stored depth
    is not censored before its grid is complete; a crossing between the anchor and the grid's first depth is
    flagged, without an error bar, and kept out of the trend; the table marks both."""
    line = column_theory(PLAN, "B32")
    grid = depth_grid(PLAN, "B32")
    edges = {(f, "sgd", s): line - 8 + s for f in (1, 4) for s in (0, 1, 2)} | {(4, "sgd", 1): 200.0}
    edges |= {(1, "sgd_paper", s): 12.0 for s in (0, 1, 2)}  # between the anchor (8) and the grid's 22
    cells = _results(edges)
    four = sweep_name("B32", 4, "sgd")
    cells[four] = [c for c in cells[four] if (c["config"]["seed"], c["config"]["depth"]) != (0, PLAN.anchor_depth)
                   and not (c["config"]["seed"] == 1 and c["config"]["depth"] > 50)]  # fmt: skip
    off_grid = {"config": {"depth": 5, "seed": 2, "batch_size": 32}, "result": {"test_accuracy": 1.0, "steps": 156}}
    cells[sweep_name("B32", 1, "sgd")].append(off_grid)  # not on the grid: ignored (it would raise the threshold)
    study = analyse(PLAN, cells)
    seeds = {(r["optimizer"], r["lr"], r["budget"], r["seed"]): r for r in study["seeds"]}
    assert [seeds["sgd", "1e-3*B", 1, s]["crossing_depth"] for s in (0, 1, 2)] == pytest.approx(
        [line - 8, line - 7, line - 6], abs=1e-9
    )
    no_anchor, cut = seeds["sgd", "1e-3*B", 4, 0], seeds["sgd", "1e-3*B", 4, 1]
    assert no_anchor["crossing_depth"] is None and not no_anchor["complete"] and no_anchor["reference_accuracy"] is None
    assert cut["censored"] is False and cut["crossing_depth"] is None and cut["depths"] == sum(d <= 50 for d in grid)
    summary = {(s["lr"], s["budget"]): s for s in study["summary"]}
    assert (summary["1e-3*B", 4]["incomplete"], summary["1e-3*B", 4]["partial"], summary["1e-3*B", 4]["crossed"]) == (
        2, True, 1
    )
    ours = next(t for t in study["trends"] if t["lr"] == "1e-3*B")
    assert ours["budgets"] == [1] and ours["dropped"] == {"4x": "2 incomplete"} and ours["consistent"] is None
    assert ours["verdict"].endswith("one budget so far; left out: 4x (2 incomplete)")
    below = summary["1e-5*B", 1]
    assert below["below_grid"] == below["crossed"] == 3 and below["crossing_stderr"] is None
    paper = next(t for t in study["trends"] if t["lr"] == "1e-5*B")
    assert paper["dropped"] == {"1x": "3 below the grid"} and paper["consistent"] is None
    assert paper["verdict"].endswith(f"156 steps: crossing < {grid[1]} (below the grid)")
    lines = report.text(study | {"cells_done": 0, "cells_planned": 0, "training_core_seconds": 0.0})
    assert any("| 4x (partial: 2 of 3 seeds incomplete) |" in line for line in lines)
    assert any(f"| < {grid[1]} (below grid) | - |" in line for line in lines)


def test_no_train_reads_a_partial_store_without_nan(tmp_path, monkeypatch, capsys):
    """``--no-train`` on a store whose probed sweeps are not yet probed: they count whole ("at most"); a limit with an
    unbounded interval is written as strict JSON (None)."""
    monkeypatch.setitem(PLANS, "tiny", PLAN)
    line = column_theory(PLAN, "B32")
    edges = {(f, "sgd", s): line + off for f, offs in ((1, (-10, -10, -10)), (4, (-6, -6, -6)), (16, (-10, -4, 2)))
             for s, off in enumerate(offs)}  # fmt: skip
    cells = _results(edges)
    first = sweep_name("B32", 1, "sgd_paper")  # two of its three anchors stored
    cells[first] = [c for c in _results({(1, "sgd_paper", s): 5.0 for s in (0, 1)})[first]
                    if c["config"]["depth"] == PLAN.anchor_depth]  # fmt: skip
    store = Store(tmp_path / "sweeps.db")
    for name, rows in cells.items():
        for c in rows:
            store.add(name, cell_key({**c["config"], "sweep": name}), c["config"], c["result"])  # one key each
    store.close()
    assert main(["budget", "--plan", "tiny", "--out", str(tmp_path), "--no-train"]) == 0
    per_sweep = len(depth_grid(PLAN, "B32")) * 3
    out = capsys.readouterr().out
    assert f"{3 * per_sweep + 2} of at most {6 * per_sweep} cells (3 sweeps not yet probed)" in out
    strict = json.loads((tmp_path / "budget.json").read_text(), parse_constant=lambda c: pytest.fail(f"JSON {c}"))
    ours = next(t for t in strict["trends"] if t["lr"] == "1e-3*B")
    assert ours["limit_interval"][1] is None and "unbounded" in ours["verdict"] and ours["consistent"] is False
    assert strict["not_probed"] == [sweep_name("B32", f, "sgd_paper") for f in (1, 4, 16)]


@pytest.mark.parametrize(
    "change, named",
    [({"optimizers": ("adam",)}, "optimizers"), ({"depth_step": 0}, "depth_step"), ({"seeds": ()}, "seeds"),
     ({"budgets": {}}, "budgets")],
)  # fmt: skip
def test_a_bad_plan_is_refused(change, named, tmp_path):
    with pytest.raises(InputError, match=named):
        replace(PLAN, **change)
    with pytest.raises(InputError, match=r"plan: cannot read 'huge'.*or one of full, tiny"):
        report.run_study(tmp_path / "x", "huge")
    with pytest.raises(InputError, match="column: no column 'B99'"):
        column_theory(PLAN, "B99")
    assert not (tmp_path / "x").exists()


def test_an_anchor_learns_by_the_heatmaps_rule():
    def cells(accuracy, depth=PLAN.anchor_depth):
        return [{"config": {"depth": depth}, "result": {"test_accuracy": accuracy}}]

    assert anchor_learns(cells(0.2), PLAN) and not anchor_learns(cells(0.19), PLAN)  # chance 0.1 + MIN_GAIN 0.1
    assert not anchor_learns(cells(0.9, depth=22), PLAN)  # only the anchor counts


def test_a_time_limited_study_trains_what_fits_and_estimates_the_rest(tmp_path, monkeypatch, capsys):
    """A store whose measured cells make every planned group cost hours: a one-hour run trains nothing - not even
    the probed sweep's anchors, so its grid waits (not probed, counted whole) - and the estimate left is the cost
    model's sum over the groups a run would train (an exact identity)."""
    from bnmft.experiments.groups import CostModel, group_cells

    plan = BudgetPlan(columns={"B8": {"batch_size": 8}}, budgets={1: (1, 64)}, seeds=(0, 1), depth_step=24,
                      anchor_depth=2, optimizers=("rmsprop", "sgd_paper"),
                      base={"dataset": "mnist", "test_subset": 64, "width": 16})  # fmt: skip
    monkeypatch.setitem(PLANS, "tiny", plan)
    store = Store(tmp_path / "sweeps.db")
    for label in ("rmsprop", "sgd_paper"):  # one measured cell of each kind, off the plan's grid
        config = next(s for lab, s in budget_sweeps(plan) if lab == label).cells()[0] | {"depth": 99}
        store.add("old", cell_key(config), config, {"test_accuracy": 0.5, "seconds": 3e6, "batched": 1})
    costs = CostModel(store.results())
    store.close()
    study = report.run_study(tmp_path, "tiny", workers=1, progress=False, time_limit=3600.0)
    assert study["cells_done"] == 0 and study["not_probed"] == [sweep_name("B8", 1, "sgd_paper")]
    cells = {cell_key(c): c for _, s in budget_sweeps(plan) for c in s.cells()}
    assert study["cells_planned"] == len(cells)
    expected = sum(costs.seconds(g) for g in group_cells(list(cells.values())))
    assert study["training_core_seconds_left"] == pytest.approx(expected)
    assert expected > 3600  # (each group is estimated at hours: none fits)
    assert main(["budget", "--plan", "tiny", "--out", str(tmp_path), "--no-train"]) == 0
    out = capsys.readouterr().out
    assert f"0 of at most {len(cells)} cells (1 sweep not yet probed), about {expected / 3600:.1f} core-hours" in out
    for argv in (["--no-train", "--hours", "1"], ["--hours", "-1"]):
        try:
            code = main(["budget", "--plan", "tiny", "--out", str(tmp_path), *argv])
        except SystemExit as exc:  # (argparse's refusal)
            code = exc.code
        err = capsys.readouterr().err
        assert code == 2 and "--hours" in err and "Traceback" not in err


def test_the_wall_time_is_the_union_of_the_cells_training_spans():
    def cell(finished, seconds, batched=1):
        return {"finished": finished, "result": {"seconds": seconds, "batched": batched}}

    # spans [0, 10] and [5, 12] overlap (two workers), [20, 25] after a pause, [21, 23] inside it (a batch of 2)
    cells = [cell(12.0, 7.0), cell(10.0, 10.0), cell(25.0, 5.0), cell(23.0, 1.0, batched=2)]
    assert report._wall_seconds(cells) == pytest.approx(12.0 + 5.0)
    assert report._wall_seconds([]) == 0.0
    lines = report.text({"cells_done": 4, "cells_planned": 4, "training_core_seconds": 7200.0,
                         "training_wall_seconds": 3960.0, "summary": [], "trends": []})  # fmt: skip
    assert "4 of 4 cells, 2.0 core-hours of training in 1.1 hours of wall time. Per column" in lines[2]


def test_the_budget_figure_marks_every_row_where_its_legend_says():
    base = {"column": "B8", "seeds": 3, "censored": 0, "untrained": 0, "partial": False, "below_grid": 0,
            "grid_bottom": 16, "grid_top": 44, "theory_depth": 27.7, "crossing_stderr": 0.5}  # fmt: skip
    summary = [
        base | {"optimizer": "sgd", "lr": "1e-3*B", "budget": 1, "steps": 625, "crossing_mean": 19.0},
        base | {"optimizer": "sgd", "lr": "1e-3*B", "budget": 4, "steps": 2500, "crossing_mean": 22.0,
                "partial": True},
        base | {"optimizer": "sgd", "lr": "1e-5*B", "budget": 1, "steps": 625, "crossing_mean": None, "untrained": 3},
        base | {"optimizer": "sgd", "lr": "1e-5*B", "budget": 4, "steps": 2500, "crossing_mean": 16.0,
                "below_grid": 3},
        base | {"optimizer": "rmsprop", "lr": "1e-5*B", "budget": 4, "steps": 2500, "crossing_mean": None,
                "censored": 2},
    ]  # fmt: skip
    fig = report.budget_figure({"summary": summary, "trends": []})
    ax = fig.axes[0]
    points = {(line.get_marker(), round(x), y) for line in ax.get_lines()
              for x, y in zip(*line.get_data(), strict=True) if line.get_linestyle() == "None"}  # fmt: skip
    assert ("x", round(625 * 2**0.0), 16) in points  # the paper's SGD, in the middle of three: not moved
    assert ("v", 2500, 16) in points and ("^", round(2500 * 2**0.07), 44) in points
    assert ("o", round(2500 * 2**-0.07), 22.0) in points  # the provisional point, open
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["SGD, lr 1e-3 B (ours)", "SGD, lr 1e-5 B (paper)", "RMSProp, lr 1e-5 B (paper)",
                      "provisional (partial grids)", "below the grid", "beyond the grid", "does not train",
                      r"theory: $16/\ln\lambda_G$"]  # fmt: skip
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_the_docs_plan_file_loads_as_documented(tmp_path):
    """docs/budget.md's example plan: its line, grid and cell count are what the page says."""
    import re
    from pathlib import Path

    from bnmft.experiments.budget import load_plan

    page = (Path(__file__).resolve().parents[2] / "docs" / "budget.md").read_text()
    (tmp_path / "my_plan.toml").write_text(re.search(r"```toml\n(.*?)```", page, re.S).group(1))
    plan = load_plan(str(tmp_path / "my_plan.toml"))
    line, grid = column_theory(plan, "tanh16"), depth_grid(plan, "tanh16")
    cells = sum(len(s.cells()) for _, s in budget_sweeps(plan))
    assert f"line is {line:.1f} layers: the anchor and {len(grid) - 1} depths from {grid[1]} to {grid[-1]}, " \
           f"{cells} cells" in " ".join(page.split())  # fmt: skip
    assert plan.base["phi"] == "tanh" and plan.budgets == {1: (1, 5000), 4: (2, 10000), 16: (4, 20000)}


@pytest.mark.parametrize(
    "text, named",
    [
        ("seeds = [0]\ncolour = 1\n[columns.a]\nbatch_size = 8\n[budgets]\n1 = [1, 64]\n", "unknown key 'colour'"),
        ("[columns.a]\nbatch_size = 8\n[budgets]\n1 = [1, 64]\n", "'seeds' is required"),
        ("seeds = [0]\n[columns.a]\nghost_size = 4\n[budgets]\n1 = [1, 64]\n", "columns.a: a table with an integer"),
        ("seeds = [0]\n[columns.a]\nbatch_size = 8\n[budgets]\n1 = [1, 64]\n2 = [1, 128]\n8 = [1, 512]\n",
         "grow by one ratio"),
        ("seeds = [0]\n[columns.a]\nbatch_size = 8\n[budgets]\nx = [1, 64]\n", "budgets.x: a factor is a positive"),
        ("seeds = [0]\n[columns.a]\nbatch_size = 8\n[budgets]\n1 = [1, 64]\n4 = [1, 128]\n", "proportional"),
        ("seeds = [[0]]\n[columns.a]\nbatch_size = 8\n[budgets]\n1 = [1, 64]\n", "seeds must be an array of"),
        ("seeds = [0]\noptimizers = ['sgd', 'sgd']\n[columns.a]\nbatch_size = 8\n[budgets]\n1 = [1, 64]\n",
         "optimizers repeats"),
        ("seeds = [0]\ndepth_range = [0.5]\n[columns.a]\nbatch_size = 8\n[budgets]\n1 = [1, 64]\n", "depth_range"),
        ("seeds = [0]\ndepth_range = [0.5, inf]\n[columns.a]\nbatch_size = 8\n[budgets]\n1 = [1, 64]\n",
         "depth_range"),
        ("seeds = [0]\ndepth_range = [0.01, 0.02]\n[columns.a]\nbatch_size = 8\n[budgets]\n1 = [1, 64]\n",
         "fewer than 2 depths"),
        ('seeds = [0]\n[columns."$x|y$"]\nbatch_size = 8\n[budgets]\n1 = [1, 64]\n', "a column's name is"),
        ("seeds = [0]\n[columns.a]\nbatch_size = 8\nepochs = 3\n[budgets]\n1 = [1, 64]\n", "columns.a.epochs"),
        ("seeds = [0]\n[columns.a]\nbatch_size = 8\n[columns.b]\nbatch_size = 8\n[budgets]\n1 = [1, 64]\n",
         "train the same cells"),
        ("seeds = [0]\n[columns.a]\nbatch_size = 8\n[budgets]\n1 = [1]\n", "budgets.1: (epochs, train_subset)"),
        ("seeds = [0, 0]\n[columns.a]\nbatch_size = 8\n[budgets]\n1 = [1, 64]\n", "seeds repeats"),
        ("seeds = [0]\n[base]\nlr = 0.1\n[columns.a]\nbatch_size = 8\n[budgets]\n1 = [1, 64]\n", "base.lr: set by"),
        ("seeds = [0]\ndepth_range = [2, 1]\n[columns.a]\nbatch_size = 8\n[budgets]\n1 = [1, 64]\n", "depth_range"),
        ("seeds = [0]\noptimizers = ['adam']\n[columns.a]\nbatch_size = 8\n[budgets]\n1 = [1, 64]\n", "unknown 'adam'"),
        ("seeds = [0]\n[columns.a]\nbatch_size = 8\nphi = 'nosuch'\n[budgets]\n1 = [1, 64]\n", "unknown nonlinearity"),
        ("seeds = [0\n", "plan: not valid TOML"),
    ],
)  # fmt: skip
def test_a_bad_plan_file_is_refused_with_its_key_named(text, named, tmp_path, capsys):
    from bnmft.experiments.budget import load_plan

    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(InputError, match=re.escape(named)):
        load_plan(str(path))
    assert main(["budget", "--plan", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err and not (tmp_path / "o" / "sweeps.db").exists()


def test_a_plan_file_runs_end_to_end(tmp_path, capsys):
    path = tmp_path / "p.toml"
    path.write_text('seeds = [0]\noptimizers = ["rmsprop"]\ndepth_step = 24\nanchor_depth = 2\n'
                    '[base]\ndataset = "mnist"\nwidth = 16\ntest_subset = 64\n'
                    '[columns.small]\nbatch_size = 8\n[budgets]\n1 = [1, 64]\n4 = [1, 256]\n')  # fmt: skip
    assert main(["budget", "--plan", str(path), "--out", str(tmp_path / "o"), "--workers", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["cells_done"] == out["cells_planned"] > 0 and {t["column"] for t in out["trends"]} == {"small"}
    assert json.loads((tmp_path / "o" / "budget.json").read_text())["plan"] == str(path)


def test_the_trends_file_takes_a_limit_first_met_on_a_later_row(tmp_path):
    """The study's trends differ in keys (a limit's interval only where the crossing converges): the CSV's columns
    are every row's keys, a row without one leaves its cell empty (the full study crashed here once)."""
    from bnmft._io import write_csv

    rows = [{"column": "B8", "limit": None}, {"column": "B32", "limit": 42.0, "limit_interval": (40.8, 43.8)}]
    text = write_csv(tmp_path / "trends.csv", rows).read_text().splitlines()
    assert text == ["column,limit,limit_interval", "B8,,", 'B32,42.0,"(40.8, 43.8)"']


@pytest.mark.parametrize("interval", [(38.4, None), (20.0, 24.0)])
def test_the_figure_draws_a_limit_outside_its_interval(interval):
    """The bootstrap's 16-84% interval need not hold the geometric limit: the diamond sits at the limit and the bar
    spans the interval; a limit whose interval is unbounded above (the full study's ghost-8 SGD: 108.1, 38.4 to
    unbounded) is left to the verdict's words."""
    import matplotlib.pyplot as plt

    row = {"column": "B8", "optimizer": "sgd", "lr": "1e-3*B", "seeds": 3, "censored": 0, "untrained": 0,
           "partial": False, "below_grid": 0, "grid_bottom": 16, "grid_top": 44, "theory_depth": 27.7,
           "crossing_stderr": 0.5}  # fmt: skip
    summary = [row | {"budget": b, "steps": s, "crossing_mean": m} for b, s, m in ((1, 625, 19), (4, 2500, 26),
                                                                                     (16, 10000, 32))]  # fmt: skip
    trend = {"column": "B8", "optimizer": "sgd", "lr": "1e-3*B", "limit": 108.1, "limit_interval": interval}
    fig = report.budget_figure({"summary": summary, "trends": [trend]})
    ax = fig.axes[0]
    diamonds = [list(line.get_ydata()) for line in ax.get_lines() if line.get_marker() == "D"]
    bars = [c.get_segments()[0] for c in ax.collections if len(c.get_segments()) == 1
            and c.get_segments()[0][0][0] > 10000]  # fmt: skip
    if interval[1] is None:
        assert diamonds == [] and bars == []
    else:
        assert diamonds == [[108.1]] and len(bars) == 1
        assert sorted(point[1] for point in bars[0]) == pytest.approx(list(interval))
    plt.close(fig)
