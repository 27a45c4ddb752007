"""The training-budget study's run, outputs and report part (docs/budget.md): the Fig 3a columns trained at 1x, 4x
and 16x the quick preset's budget, with SGD at our learning rate and the paper's and RMSProp at the paper's, several
seeds per cell; the crossing depth against the number of steps, its trend and verdict.

:func:`run_study` trains (resumable: the cells live in ``DIR/sweeps.db``) and writes ``budget.json`` (everything),
``budget_seeds.csv``, ``budget.csv`` (per budget), ``budget_trends.csv`` and ``budget.png`` into ``DIR``. The main
job does not train the study (hours on 2 cores); its report shows the committed run in ``docs/budget/``
(:func:`load_committed`, :func:`text`), and judges the Fig 3a/3b/3c claims by it only where the preset's sweep has
the study's 1x cells (:func:`matches_study`).
"""

from __future__ import annotations

import json
import math
import time
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from .._io import write_csv
from ..errors import InputError
from ..options import check_real
from .plots import load_pyplot, save_figure

if TYPE_CHECKING:
    from ..experiments.sweep import Sweep

#: where the committed run lives (the repository's docs/; absent in an installed package)
COMMITTED = Path(__file__).resolve().parents[3] / "docs" / "budget"
OPTIMIZER_LABELS = {("sgd", "1e-3*B"): "SGD, lr 1e-3 B (ours)", ("sgd", "1e-5*B"): "SGD, lr 1e-5 B (paper)",
                    ("rmsprop", "1e-5*B"): "RMSProp, lr 1e-5 B (paper)"}  # fmt: skip


def run_study(out: Path, plan: str = "full", *, workers: int | None = None, scheduler: str | None = None,
              device: str = "cpu", progress: bool = True, train: bool = True,
              time_limit: float | None = None) -> dict:  # fmt: skip
    """Train the sweeps of ``plan`` (a name of :data:`~bnmft.experiments.budget.PLANS`, or a plan file:
    :func:`~bnmft.experiments.budget.load_plan`) unless ``train`` is False (then only the stored cells are
    analysed), and write the outputs. Returns the analysis (``budget.json``'s content: strict JSON, a non-finite
    number stored as None).
    ``time_limit``: seconds of wall time for the training (:func:`~bnmft.experiments.sweep.run_sweeps`'s rule: the
    cells in flight finish, a cell starts only while it is expected to finish in time).

    ``training_wall_seconds`` is the wall time the study has trained (the union of its cells' training spans, over
    every call), ``training_core_seconds_left`` the estimated training time of the cells not yet stored
    (:class:`~bnmft.experiments.groups.CostModel`, from the stored cells; None while nothing is measured).

    A :data:`~bnmft.experiments.budget.PROBED` sweep counts as its anchors alone (``anchor_only``) where they are
    stored and none learns; where its anchors are not all stored yet (``not_probed``: without training, or where a
    time limit stopped the probes - then its grid waits for the next run) the whole sweep counts, so
    ``cells_planned`` is then an upper bound."""
    from ..experiments.budget import PROBED, analyse, anchor_learns, anchor_only, budget_sweeps, load_plan
    from ..experiments.store import Store
    from ..experiments.sweep import run_sweeps

    if time_limit is not None and not train:
        raise InputError("time_limit: a limit of training, not allowed with train=False")
    if time_limit is not None:
        check_real("time_limit", time_limit, positive=True)
    source, plan = plan, load_plan(plan)
    out.mkdir(parents=True, exist_ok=True)
    sweeps = budget_sweeps(plan)
    store = Store(out / "sweeps.db")
    started = time.perf_counter()
    options = {"workers": workers, "scheduler": scheduler, "device": device, "progress": progress, "order": "sweeps"}
    deadline = None if time_limit is None else time.monotonic() + time_limit
    planned, skipped, not_probed, run, waiting = 0, [], [], [], []
    try:
        # the probed optimisers' anchors first (one schedule), then every sweep that is not skipped as one schedule
        # in the plan's order (the smallest budget first; each group with the first sweep that has a cell of it -
        # e.g. SGD at both rates of one depth trains as one batched model)
        probes = {sweep.name: anchor_only(sweep, plan) for label, sweep in sweeps if label in PROBED}
        if train and probes:
            run_sweeps(list(probes.values()), store, time_limit=time_limit, **options)
        for _, sweep in sweeps:
            if sweep.name in probes:
                stored = store.results(sweep.name)
                if sum(r["config"]["depth"] == plan.anchor_depth for r in stored) < len(probes[sweep.name].cells()):
                    not_probed.append(sweep.name)  # (without training, or stopped by the time limit) it may follow
                    if train:  # never its grid before its probe: the next run probes it first
                        planned += len(sweep.cells())
                        waiting.append(sweep)
                        continue
                elif not anchor_learns(stored, plan):
                    planned += len(probes[sweep.name].cells())
                    skipped.append(sweep.name)
                    continue
            planned += len(sweep.cells())
            run.append(sweep)
        left = None if deadline is None else deadline - time.monotonic()
        if train and (left is None or left > 0):
            run_sweeps(run, store, time_limit=left, **options)
        results = {s.name: store.results(s.name) for _, s in sweeps}
        core_seconds_left = _seconds_left(store, run + waiting)
    finally:
        store.close()
    cells = [c for rows in results.values() for c in rows]
    study = analyse(plan, results)
    study |= {"plan": source, "cells_done": len(cells), "cells_planned": planned, "anchor_only": skipped,
              "not_probed": not_probed, "training_core_seconds": sum(c["result"].get("seconds", 0.0) for c in cells),
              "training_core_seconds_left": core_seconds_left, "training_wall_seconds": _wall_seconds(cells),
              "wall_seconds_this_call": time.perf_counter() - started}  # fmt: skip
    study = _finite(study)
    (out / "budget.json").write_text(json.dumps(study, indent=1, allow_nan=False))
    write_csv(out / "budget_seeds.csv", study["seeds"])
    write_csv(out / "budget.csv", study["summary"])
    write_csv(out / "budget_trends.csv", [{k: v for k, v in t.items() if k not in ("budgets", "means", "dropped")}
                                          for t in study["trends"]])  # fmt: skip
    if study["summary"]:
        _plot_budget(study, out / "budget.png")
    return study


def _wall_seconds(cells: list[dict]) -> float:
    """The length of the union of the cells' training spans (``finished`` less the batched model's wall time,
    ``seconds`` x ``batched``): the study's wall time, the pauses between its runs left out (and the milliseconds
    between storing the cells of one batch counted)."""
    spans = sorted((c["finished"] - c["result"]["seconds"] * c["result"].get("batched", 1), c["finished"])
                   for c in cells if isinstance(c["result"].get("seconds"), int | float))  # fmt: skip
    total, start, end = 0.0, None, None
    for a, b in spans:
        if end is None or a > end:
            total += 0.0 if end is None else end - start
            start, end = a, b
        else:
            end = max(end, b)
    return total + (0.0 if end is None else end - start)


def _seconds_left(store, sweeps: list[Sweep]) -> float | None:
    """The estimated training time (core-seconds) of the sweeps' cells ``store`` does not hold, grouped as a run
    would batch them; None while nothing is measured."""
    from ..experiments.groups import CostModel, group_cells
    from ..experiments.store import cell_key

    done = store.done_keys()
    missing = {cell_key(c): c for s in sweeps for c in s.cells() if cell_key(c) not in done}
    costs = CostModel(store.results())
    estimates = [costs.seconds(group) for group in group_cells(list(missing.values()))]
    return None if None in estimates else float(sum(estimates))


def _finite(value):
    """A strict-JSON copy: non-finite floats become None (an unbounded interval end), tuples lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def cells_text(study: dict, left: bool = True) -> str:
    """``"21 of 30 cells"``, or ``"21 of at most 630 cells (5 sweeps not yet probed)"`` where a probed sweep's
    anchors are not all stored yet; with ``left``, the estimated training left where cells are missing (``", about
    3.2 core-hours of training left"``)."""
    waiting = study.get("not_probed") or []
    seconds = study.get("training_core_seconds_left") if left else None  # (None too: a study of an older version)
    rest = f", about {seconds / 3600:.1f} core-hours of training left" if seconds else ""
    if not waiting:
        return f"{study['cells_done']} of {study['cells_planned']} cells{rest}"
    return (f"{study['cells_done']} of at most {study['cells_planned']} cells ({len(waiting)} "
            f"sweep{'s' if len(waiting) > 1 else ''} not yet probed){rest}")  # fmt: skip


def _plot_budget(study: dict, path: Path) -> Path:
    """:func:`budget_figure`, saved."""
    return save_figure(budget_figure(study), path, dpi=150)


def budget_figure(study: dict):
    """Crossing depth (mean over seeds, standard error) against SGD steps: one panel per column, one line per
    optimiser (its colour the same in every panel, the optimisers a little apart at each budget), the theory's line
    dashed and labelled in the panel; marker shapes say the rest - open circle: provisional (partial grids), down
    triangle: below the grid (at its first depth), up triangle: beyond it (at its last), cross: nothing trains (at
    the grid's first depth), open diamond: a converging trend's geometric limit (16-84%, right of the budgets). One
    legend for the figure, below the panels.

    Returns:
        The matplotlib figure.
    """
    plt = load_pyplot()
    from matplotlib.lines import Line2D

    columns = list(dict.fromkeys(r["column"] for r in study["summary"]))
    colours = {key: f"C{i}" for i, key in enumerate(OPTIMIZER_LABELS)}
    fig, axes = plt.subplots(1, len(columns), figsize=(4.6 * len(columns), 4.2), constrained_layout=True,
                             squeeze=False)  # fmt: skip
    drawn: dict[tuple, str] = {}  # optimiser -> its label, in the order drawn
    shapes: set[str] = set()  # the marker kinds drawn, for the legend
    for ax, column in zip(axes[0], columns, strict=True):
        rows = [r for r in study["summary"] if r["column"] == column]
        keys = list(dict.fromkeys((r["optimizer"], r["lr"]) for r in rows))
        budgets = sorted((steps, factor) for factor, steps in {r["budget"]: r["steps"] for r in rows}.items())
        right = budgets[-1][0] * 2
        for i, key in enumerate(keys):
            dodge = 2 ** (0.07 * (i - (len(keys) - 1) / 2))  # the optimisers side by side at each budget
            colour = colours.setdefault(key, f"C{len(colours)}")
            drawn.setdefault(key, OPTIMIZER_LABELS.get(key, f"{key[0]}, lr {key[1]}"))
            own = [r for r in rows if (r["optimizer"], r["lr"]) == key]
            on_grid = [r for r in own if r["crossing_mean"] is not None and not r["below_grid"]]
            if on_grid:
                ax.errorbar([r["steps"] * dodge for r in on_grid], [r["crossing_mean"] for r in on_grid],
                            yerr=[r["crossing_stderr"] or 0.0 for r in on_grid], fmt="o-", color=colour,
                            capsize=3)  # fmt: skip
            marks = [  # (rows, depth of the marker, marker, its kind)
                ([r for r in on_grid if r["partial"]], "crossing_mean", dict(marker="o", mfc="white"), "partial"),
                ([r for r in own if r["crossing_mean"] is not None and r["below_grid"]], "grid_bottom",
                 dict(marker="v", ms=8), "below"),
                ([r for r in own if r["crossing_mean"] is None and 2 * r["censored"] > r["seeds"]], "grid_top",
                 dict(marker="^", ms=8), "beyond"),  # most seeds' edge beyond the grid (the verdict's rule)
                ([r for r in own if r["untrained"] == r["seeds"]], "grid_bottom", dict(marker="x", ms=8, mew=2),
                 "untrained"),
            ]  # fmt: skip
            for chosen, depth, style, kind in marks:
                if chosen:
                    ax.plot([r["steps"] * dodge for r in chosen], [r[depth] for r in chosen], ls="none", color=colour,
                            zorder=3, **style)  # fmt: skip
                    shapes.add(kind)
            t = next((t for t in study["trends"] if (t["column"], t["optimizer"], t["lr"]) == (column, *key)), {})
            # a limit whose interval is unbounded above says little and would squash the panel: the verdict states it
            if t.get("limit") is not None and t.get("limit_interval") and None not in t["limit_interval"]:
                lo, hi = t["limit_interval"]
                # the interval as a bar of its own: the bootstrap's 16-84% need not hold the point estimate
                x = right * (1 + 0.1 * i)
                ax.errorbar([x], [(lo + hi) / 2], yerr=[(hi - lo) / 2], fmt="none", color=colour, capsize=3)
                ax.plot([x], [t["limit"]], "D", color=colour, mfc="none")
                shapes.add("limit")
        line = rows[0]["theory_depth"]
        ax.axhline(line, color="k", ls="--", lw=1)
        ax.annotate(rf"$16/\ln\lambda_G = {line:.1f}$", (0.02, line), xycoords=("axes fraction", "data"),
                    xytext=(0, 3), textcoords="offset points", fontsize=8, va="bottom")  # fmt: skip
        bottom, top = ax.get_ylim()
        ax.set_ylim(bottom - 0.03 * (top - bottom), max(top, line + 0.12 * (line - bottom)))
        ax.set_xscale("log", base=2)
        ax.set_xticks([steps for steps, _ in budgets], [f"{steps}\n({factor}x)" for steps, factor in budgets])
        ax.minorticks_off()
        ax.set_xlim(budgets[0][0] / 1.6, right * 1.5)
        ax.set_xlabel("SGD steps (budget)")
        ax.set_title(f"column {column}")
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("crossing depth (half-way accuracy)")
    handles = [Line2D([], [], color=colours[key], marker="o", label=label) for key, label in drawn.items()]
    keys = {"partial": ("o", "white", "provisional (partial grids)"), "below": ("v", "grey", "below the grid"),
            "beyond": ("^", "grey", "beyond the grid"), "untrained": ("x", "grey", "does not train"),
            "limit": ("D", "white", "geometric limit (16-84%)")}  # fmt: skip
    handles += [Line2D([], [], ls="none", color="grey", marker=m, mfc=face, label=text)
                for kind, (m, face, text) in keys.items() if kind in shapes]  # fmt: skip
    handles.append(Line2D([], [], color="k", ls="--", lw=1, label=r"theory: $16/\ln\lambda_G$"))
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 4), fontsize=8, frameon=False)
    fig.suptitle("Trainable edge against the training budget (mean +- standard error over seeds)", fontsize=10)
    return fig


def load_committed(directory: Path = COMMITTED) -> dict | None:
    """The committed study (``budget.json``) or None where there is none."""
    path = directory / "budget.json"
    return json.loads(path.read_text()) if path.is_file() else None


def verdict_for(study: dict | None, column: str) -> list[dict]:
    """The study's trends of one column (empty without a study)."""
    return [] if study is None else [t for t in study["trends"] if t["column"] == column]


#: a cell's fields that do not make it another experiment: its place in the grid (depth, seed) and where data lives
_PLACE = ("depth", "seed", "data_dir")


def matches_study(sweep: Sweep, optimizer: str, lr: str, columns: tuple[str, ...], plan: str = "full") -> bool:
    """Whether the budget study's 1x cells of these columns, optimiser and rate (plan ``plan``) are cells of
    ``sweep`` apart from depth and seed (the same data set, subsets, epochs, optimiser, learning rate, width, eps,
    batch or ghost size, ...): only then does the study judge the sweep's claim (``paper``'s Fig 3 sweeps, 10 epochs
    at the paper's rate, keep their own verdict)."""
    mine = {tuple(sorted((k, v) for k, v in c.items() if k not in _PLACE)) for c in sweep.cells()}
    theirs = _study_cells(plan, optimizer, lr, tuple(columns))
    return bool(theirs) and theirs <= mine


@lru_cache(maxsize=16)
def _study_cells(plan_name: str, optimizer: str, lr: str, columns: tuple[str, ...]) -> frozenset:
    from ..experiments.budget import OPTIMIZERS, PLANS, budget_sweeps, sweep_name

    plan = PLANS.get(plan_name)
    if plan is None or any(c not in plan.columns for c in columns):
        return frozenset()
    wanted = {sweep_name(c, min(plan.budgets), label) for c in columns for label in plan.optimizers
              if OPTIMIZERS[label] == (optimizer, lr)}  # fmt: skip
    cells = {tuple(sorted((k, v) for k, v in c.items() if k not in _PLACE))
             for _, s in budget_sweeps(plan) if s.name in wanted for c in s.cells()}  # fmt: skip
    return frozenset(cells) if len(wanted) == len(columns) else frozenset()


def text(study: dict | None) -> list[str]:
    """The report's part (markdown lines) beside the heatmaps."""
    if study is None:
        return ["### The edge against the training budget", "",
                "No budget study in docs/budget/ (run `bnmft budget --out docs/budget`, several hours on 2 cores).",
                ""]  # fmt: skip
    one = ("1x = the quick preset's 1 epoch on 5000 examples" if study.get("plan", "full") == "full"
           else f"the plan {study['plan']}'s budgets")  # fmt: skip
    wall = study.get("training_wall_seconds")  # (absent from a study of an older version)
    left = study.get("training_core_seconds_left")
    spent = (f"{study['training_core_seconds'] / 3600:.1f} core-hours of training"
             + (f" in {wall / 3600:.1f} hours of wall time" if wall else "")
             + (f"; about {left / 3600:.1f} core-hours left" if left else ""))  # fmt: skip
    lines = [
        "### The edge against the training budget",
        "",
        f"The budget study (`bnmft budget`, docs/budget.md): {cells_text(study, left=False)}, {spent}. Per column, "
        f"optimiser and budget ({one}), the crossing depth of each seed (half-way between chance and the shallow "
        "anchor network's accuracy), mean +- standard error over the seeds.",
        "",
        "![budget study](budget.png)",
        "",
    ]
    return [*lines, *tables(study), ""]


def tables(study: dict) -> list[str]:
    """The study's two markdown tables: the crossing per column, optimiser and budget, and the verdict per column
    and optimiser (the report's, and the README's: tests/test_docs.py keeps the README's copy equal to this)."""
    lines = [
        "| column | optimiser | budget | steps | crossing | +- | / line | seeds crossed (censored, untrained) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    columns = list(dict.fromkeys(r["column"] for r in study["summary"]))
    optimizers = list(OPTIMIZER_LABELS)
    order = lambda r: (columns.index(r["column"]),  # noqa: E731
                       optimizers.index((r["optimizer"], r["lr"])) if (r["optimizer"], r["lr"]) in optimizers
                       else len(optimizers), r["budget"])  # fmt: skip
    for r in sorted(study["summary"], key=order):  # per column and optimiser, the budgets in a row
        label = OPTIMIZER_LABELS.get((r["optimizer"], r["lr"]), f"{r['optimizer']} {r['lr']}")
        budget = f"{r['budget']}x" + (f" (partial: {r['incomplete']} of {r['seeds']} seeds incomplete)"
                                      if r.get("partial") else "")  # fmt: skip
        crossing, ratio = fmt(r["crossing_mean"], ".1f"), fmt(r["ratio"], ".2f")
        if r.get("below_grid") and r["below_grid"] == r["crossed"]:
            crossing, ratio = f"< {r['grid_bottom']} (below grid)", f"< {r['grid_bottom'] / r['theory_depth']:.2f}"
        elif r.get("below_grid"):
            crossing += f" ({r['below_grid']} below grid)"
        lines.append(f"| {r['column']} | {label} | {budget} | {r['steps']} | {crossing} | "
                     f"{fmt(r['crossing_stderr'], '.1f')} | {ratio} | {r['crossed']} of "
                     f"{r['seeds']} ({r['censored']}, {r['untrained']}) |")  # fmt: skip
    lines += ["", "| column | optimiser | line | verdict |", "|---|---|---|---|"]
    for t in study["trends"]:
        label = OPTIMIZER_LABELS.get((t["optimizer"], t["lr"]), f"{t['optimizer']} {t['lr']}")
        lines.append(f"| {t['column']} | {label} | {t['theory_depth']:.1f} | {t['verdict']} |")
    return lines
