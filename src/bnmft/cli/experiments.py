"""``bnmft sweep``, ``heatmap``, ``budget`` (the trainability experiments) and ``reproduce`` (the main job)."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

from ..errors import InputError
from .arguments import positive_hours, positive_int


def cmd_sweep(args) -> int:
    from ..experiments.store import Store
    from ..experiments.sweep import load_sweeps, run_sweeps

    sweeps = load_sweeps(args.config)  # every cell is validated before any work starts
    if args.dry_run:
        return _dry_run(args, sweeps)
    created = not Path(args.store).exists()
    store = Store(args.store)
    try:
        # one schedule: the sweeps in the file's order, each in its grid order (a free worker takes the next sweep's
        # cells), under one time limit
        counts = run_sweeps(sweeps, store, workers=args.workers, scheduler=args.scheduler, progress=not args.json,
                            device=args.device, order="sweeps",
                            time_limit=None if args.hours is None else args.hours * 3600)  # fmt: skip
        summaries = [{"sweep": sweep.name, **counts[sweep.name]} for sweep in sweeps]
    except BaseException:
        if created:  # a sweep that fails (no data, Ctrl-C) before its first cell leaves no new store behind
            _remove_if_unused(store, {s.name for s in sweeps})
        raise
    finally:
        store.close()
    if args.json:
        print(json.dumps(summaries, indent=2))
    else:
        for s in summaries:
            others = f", {s['by_others']} by another sweep" if s["by_others"] else ""
            left = f", {s['left']} left for the time limit (run again to go on)" if s["left"] else ""
            print(
                f"sweep {s['sweep']}: {s['cells']} cells, {s['skipped']} already done, {s['ran']} run now{others}"
                f"{left} -> {args.store}"
            )
    return 0


def _dry_run(args, sweeps) -> int:
    """``bnmft sweep --dry-run``: the cells each sweep would train and their estimated cost; nothing trains, no store
    is created."""
    from ..experiments.store import Store
    from ..experiments.sweep import plan_sweeps

    given = [f"--{name}" for name in ("scheduler", "hours") if getattr(args, name) is not None]
    given += ["--device"] if args.device != "cpu" else []
    if given:
        raise InputError(f"{', '.join(given)}: options of training, not allowed with --dry-run (trains nothing)")
    store = Store(args.store, read_only=True) if Path(args.store).exists() else None
    try:
        plans = plan_sweeps(sweeps, store)
    finally:
        if store is not None:
            store.close()
    workers = args.workers or os.cpu_count() or 1  # (a run's default)
    for p in plans:  # the wall time: spread over the workers, but never under the longest batched group
        p["wall_seconds"] = (None if p["core_seconds"] is None
                             else max(p["core_seconds"] / workers, p["longest_group_seconds"]))  # fmt: skip
    if args.json:
        print(json.dumps(plans, indent=2))
        return 0
    for p in plans:
        if p["core_seconds"] is None:
            cost = "not estimated (nothing measured in the store yet)"
        else:
            cost = (f"about {p['core_seconds'] / 3600:.1f} core-hours, {p['wall_seconds'] / 3600:.1f} hours with "
                    f"{workers} worker{'s' if workers > 1 else ''}")  # fmt: skip
        print(f"sweep {p['sweep']}: {p['cells']} cells, {p['done']} done, {p['to_train']} to train: {cost}")
    return 0


def _remove_if_unused(store, names: set[str]) -> None:
    """Delete a store this command created if nobody used it: no finished cell, no claim, no sweep but ours (another
    sweep started on the same new file keeps it)."""
    db = store.db
    cells = db.execute("SELECT COUNT(*) FROM cells").fetchone()[0]
    claims = db.execute("SELECT COUNT(*) FROM claims").fetchone()[0]
    others = {n for (n,) in db.execute("SELECT name FROM sweeps")} - names
    if cells or claims or others:
        return
    store.close()
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{store.path}{suffix}").unlink(missing_ok=True)


def cmd_heatmap(args) -> int:
    from ..experiments.store import Store
    from ..report.plots import plot_heatmap

    if not Path(args.store).exists():
        raise InputError(f"--store: no such file {args.store!r}")
    store = Store(args.store)
    try:
        specs = store.sweeps()
        names = [args.sweep] if args.sweep else sorted(specs)
        if not names:
            raise InputError(f"--store: {args.store} holds no sweep yet")
        unknown = [n for n in names if n not in specs]
        if unknown:
            raise InputError(f"--sweep: no sweep {unknown[0]!r} in {args.store} (it has: {', '.join(sorted(specs))})")
        for name in names:  # a sweep's spec written by another program: refused before any figure
            spec = specs[name]
            if not isinstance(spec, dict) or not isinstance(spec.get("x"), str):
                raise InputError(f"store: {args.store}: sweep {name!r} has no x axis (a key 'x' naming a grid key)")
        written = []
        for name in names:
            results = _sweep_cells(store, name, specs[name])
            if not results:
                continue
            out = Path(args.out)
            safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)  # a sweep's name may hold '/' or spaces: not in a file name
            target = out if len(names) == 1 else out.with_name(f"{out.stem}_{safe}{out.suffix}")
            plot_heatmap(results, specs[name]["x"], target, title=specs[name].get("description") or name)
            written.append(str(target))
    finally:
        store.close()
    print("\n".join(f"wrote {w}" for w in written) if written else "no finished cells to plot")
    return 0


def _sweep_cells(store, name: str, spec: dict) -> list[dict]:
    """A stored sweep's finished cells: those stored under its name and, where its spec's grid can be enumerated,
    the cells of its grid another sweep stored (a cell two sweeps share is stored once, under the first: Figs 5b-5d
    share a column with Fig 3a). Nothing is checked against this machine (a sweep trained elsewhere plots here)."""
    from ..experiments.sweep import Sweep, sweep_results

    rows = store.results(name)
    grid = spec.get("grid")
    if not isinstance(grid, dict) or not grid:
        return rows
    try:
        sweep = Sweep(name=name, x=spec["x"], base=dict(spec.get("base") or {}), grid=grid,
                      seeds=tuple(spec.get("seeds") or (0,)))  # fmt: skip
        others = sweep_results(store, sweep)  # (enumerating the grid raises for fields this version lacks)
    except (TypeError, ValueError) as err:  # a spec of another version or program
        print(f"bnmft heatmap: sweep {name!r}: its grid cannot be enumerated here ({err}); plotting the cells stored "
              "under its name only", file=sys.stderr)  # fmt: skip
        return rows
    have = {r["key"] for r in rows}
    return rows + [r for r in others if r["key"] not in have]


def cmd_budget(args) -> int:
    from ..report.budget import cells_text, run_study

    if args.no_train:  # options of training: refused rather than ignored
        given = [f"--{name}" for name in ("workers", "scheduler", "device", "hours") if getattr(args, name) is not None]
        if given:
            raise InputError(f"{', '.join(given)}: options of training, not allowed with --no-train (trains nothing)")
    study = run_study(Path(args.out), args.plan, workers=args.workers, scheduler=args.scheduler,
                      device=args.device or "cpu", progress=not args.json, train=not args.no_train,
                      time_limit=None if args.hours is None else args.hours * 3600)  # fmt: skip
    if args.json:
        keys = ("cells_done", "cells_planned", "not_probed", "training_core_seconds", "training_wall_seconds",
                "training_core_seconds_left", "trends")  # fmt: skip
        print(json.dumps({"out": args.out} | {k: study[k] for k in keys}, indent=2, allow_nan=False))
        return 0
    print(f"budget study ({args.plan}): {cells_text(study)} -> {args.out}")
    for t in study["trends"]:
        print(f"  {t['column']}, {t['optimizer']} lr {t['lr']} (line {t['theory_depth']:.1f}): {t['verdict']}")
    return 0


def cmd_reproduce(args) -> int:
    from ..report.main_job import reproduce

    reproduce(
        args.out,
        quiet=args.json,
        preset=args.preset,
        workers=args.workers,
        scheduler=args.scheduler,
        device=args.device,
    )
    if args.json:
        print(json.dumps({"out": str(args.out)}))
    return 0


HOURS_HELP = ("a wall-time limit: start a cell only while 1.5x its estimated time (from the store's finished cells) "
              "fits; the cells in flight finish; run again to go on (under a cluster job's limit, give less: the "
              "estimate can be 2x off)")


def add_parsers(sub) -> None:
    p = sub.add_parser("sweep", help="run (or resume) a training sweep declared in TOML")
    p.add_argument("config", help="a sweep TOML file, or a preset: quick, paper, tiny")
    p.add_argument("--store", required=True, metavar="FILE", help="SQLite results file (created if needed)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="Dask distributed scheduler, e.g. tcp://host:8786")
    p.add_argument("--workers", type=positive_int, help="local worker processes (default: CPU cores)")
    p.add_argument("--device", default="cpu", help="cpu, or cuda: cells of one shape train batched on the GPU")
    p.add_argument("--hours", type=positive_hours, help=HOURS_HELP)
    p.add_argument("--dry-run", action="store_true", help="train nothing: the cells each sweep would train and their "
                   "estimated core-hours (from the store's finished cells; hours with --workers)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="no progress bar; print a JSON summary")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("heatmap", help="test-accuracy heatmap of a sweep with the theory's depth line")
    p.add_argument("--store", required=True, metavar="FILE")
    p.add_argument("--out", required=True, metavar="FIG.png")
    p.add_argument("--sweep", help="which sweep in the store (default: all, one file each)")
    p.set_defaults(func=cmd_heatmap)

    p = sub.add_parser("budget", help="the trainable edge against the training budget (hours: resumable)")
    p.add_argument("--out", default="results/budget", help="directory of the store and outputs (default: "
                   "results/budget; the committed run is docs/budget)")  # fmt: skip
    p.add_argument("--plan", default="full", metavar="full|tiny|FILE.toml",
                   help="full: Fig 3a's B = 8, 32 and Fig 3b's ghost 8, budgets 1x, 4x, 16x, 3 seeds; tiny: smoke run; "
                   "or a plan file of your own columns, budgets, optimisers and seeds (docs/budget.md)")  # fmt: skip
    p.add_argument("--workers", type=positive_int, help="local worker processes (default: CPU cores)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="run the cells on a Dask cluster")
    p.add_argument("--device", help="cpu (default), or cuda: the batched models train on the GPU")
    p.add_argument("--hours", type=positive_hours, help=HOURS_HELP)
    p.add_argument("--no-train", action="store_true", help="analyse the cells already in the store, train nothing "
                   "(not with --workers, --scheduler, --device, --hours)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="no progress bar; print a JSON summary")
    p.set_defaults(func=cmd_budget)

    p = sub.add_parser("reproduce", help="the main job: regenerate the theory tables and figures")
    p.add_argument("--out", default="results", help="output directory (default: results)")
    p.add_argument(
        "--preset",
        choices=("tiny", "quick", "paper"),
        default="quick",
        help="sizes: tiny (smoke test), quick (every figure, reduced: about 18 minutes on 2 cores), paper (the "
        "paper's grids: hundreds of core-hours, for a GPU or a cluster)",
    )
    p.add_argument("--workers", type=positive_int, help="local worker processes for the training sweeps")
    p.add_argument("--scheduler", metavar="ADDRESS", help="run the training sweeps on a Dask cluster")
    p.add_argument("--device", default="cpu", help="cpu, or cuda: the sweeps' batched models train on the GPU")
    p.add_argument("--json", action="store_true", help="no progress output; print a JSON summary")
    p.set_defaults(func=cmd_reproduce)
