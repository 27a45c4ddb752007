"""The training-budget study's run, outputs and report part (docs/budget.md): the Fig 3a columns trained at 1x, 4x
and 16x the quick preset's budget, with SGD at our learning rate and the paper's and RMSProp at the paper's, several
seeds per cell; the crossing depth against the number of steps, its trend and verdict.

:func:`run_study` trains (resumable: the cells live in ``DIR/sweeps.db``) and writes ``budget.json`` (everything),
``budget_seeds.csv``, ``budget.csv`` (per budget), ``budget_trends.csv`` and ``budget.png`` into ``DIR``. The main
job does not train the study (hours on 2 cores); its report shows the committed run in ``docs/budget/``
(:func:`load_committed`, :func:`text`).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from .._io import write_csv
from .plots import load_pyplot, save_figure

#: where the committed run lives (the repository's docs/; absent in an installed package)
COMMITTED = Path(__file__).resolve().parents[3] / "docs" / "budget"
OPTIMIZER_LABELS = {("sgd", "1e-3*B"): "SGD, lr 1e-3 B (ours)", ("sgd", "1e-5*B"): "SGD, lr 1e-5 B (paper)",
                    ("rmsprop", "1e-5*B"): "RMSProp, lr 1e-5 B (paper)"}  # fmt: skip


def run_study(out: Path, plan_name: str = "full", *, workers: int | None = None, scheduler: str | None = None,
              device: str = "cpu", progress: bool = True, train: bool = True) -> dict:  # fmt: skip
    """Train the plan's sweeps (unless ``train`` is False: then only the stored cells are analysed) and write the
    outputs. Returns the analysis (``budget.json``'s content)."""
    from ..experiments.budget import PLANS, PROBED, analyse, anchor_learns, anchor_only, budget_sweeps
    from ..experiments.store import Store
    from ..experiments.sweep import run_sweep

    plan = PLANS[plan_name]
    out.mkdir(parents=True, exist_ok=True)
    sweeps = budget_sweeps(plan)
    store = Store(out / "sweeps.db")
    started = time.perf_counter()
    planned, skipped = 0, []
    try:
        for label, sweep in sweeps:
            options = {"workers": workers, "scheduler": scheduler, "device": device, "progress": progress}
            if label in PROBED:  # the anchor first; the whole grid only where it learns
                probe = anchor_only(sweep, plan)
                if train:
                    run_sweep(probe, store, **options)
                if not anchor_learns(store.results(sweep.name), plan):
                    planned += len(probe.cells())
                    skipped.append(sweep.name)
                    continue
            planned += len(sweep.cells())
            if train:
                run_sweep(sweep, store, **options)
        results = {s.name: store.results(s.name) for _, s in sweeps}
    finally:
        store.close()
    cells = [c for rows in results.values() for c in rows]
    study = analyse(plan, results)
    study |= {"plan": plan_name, "cells_done": len(cells), "cells_planned": planned, "anchor_only": skipped,
              "training_core_seconds": sum(c["result"].get("seconds", 0.0) for c in cells),
              "wall_seconds_this_call": time.perf_counter() - started}  # fmt: skip
    (out / "budget.json").write_text(json.dumps(study, indent=1, default=_json_default))
    write_csv(out / "budget_seeds.csv", study["seeds"])
    write_csv(out / "budget.csv", study["summary"])
    write_csv(out / "budget_trends.csv", [{k: v for k, v in t.items() if k not in ("budgets", "means")}
                                          for t in study["trends"]])  # fmt: skip
    if study["summary"]:
        plot_budget(study, out / "budget.png")
    return study


def _json_default(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    raise TypeError(f"not JSON: {value!r}")


def plot_budget(study: dict, path: Path) -> Path:
    """Crossing depth (mean over seeds, standard error) against SGD steps, one line per column and optimiser; the
    theory's line per column dashed; a converging trend's geometric limit as a marker at the right."""
    plt = load_pyplot()
    columns = list(dict.fromkeys(r["column"] for r in study["summary"]))
    fig, axes = plt.subplots(1, len(columns), figsize=(6 * len(columns), 4.4), constrained_layout=True, squeeze=False)
    for ax, column in zip(axes[0], columns, strict=True):
        rows = [r for r in study["summary"] if r["column"] == column]
        keys = list(dict.fromkeys((r["optimizer"], r["lr"]) for r in rows))
        right = max(r["steps"] for r in rows) * 2
        for i, key in enumerate(keys):
            sel = [r for r in rows if (r["optimizer"], r["lr"]) == key and r["crossing_mean"] is not None]
            if not sel:
                continue
            ax.errorbar([r["steps"] for r in sel], [r["crossing_mean"] for r in sel],
                        yerr=[r["crossing_stderr"] or 0.0 for r in sel], fmt="o-", color=f"C{i}", capsize=3,
                        label=OPTIMIZER_LABELS.get(key, f"{key[0]}, lr {key[1]}"))  # fmt: skip
            t = next(t for t in study["trends"] if (t["column"], t["optimizer"], t["lr"]) == (column, *key))
            if t.get("limit") is not None and t.get("limit_interval"):
                lo, hi = t["limit_interval"]
                hi = min(hi, 3 * rows[0]["theory_depth"])
                ax.errorbar([right * (1 + 0.1 * i)], [t["limit"]], yerr=[[t["limit"] - lo], [hi - t["limit"]]],
                            fmt="D", color=f"C{i}", capsize=3, mfc="none")  # fmt: skip
        line = rows[0]["theory_depth"]
        ax.axhline(line, color="k", ls="--", lw=1, label=f"16 / ln lambda_G = {line:.1f}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("SGD steps (open diamonds: geometric limit, 16-84%)")
        ax.set_ylabel("crossing depth (half-way accuracy)")
        ax.set_title(f"column {column}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, path, dpi=150)


def load_committed(directory: Path = COMMITTED) -> dict | None:
    """The committed study (``budget.json``) or None where there is none."""
    path = directory / "budget.json"
    return json.loads(path.read_text()) if path.is_file() else None


def verdict_for(study: dict | None, column: str) -> list[dict]:
    """The study's trends of one column (empty without a study)."""
    return [] if study is None else [t for t in study["trends"] if t["column"] == column]


def text(study: dict | None) -> list[str]:
    """The report's part (markdown lines) beside the heatmaps."""
    if study is None:
        return ["### The edge against the training budget", "",
                "No budget study in docs/budget/ (run `bnmft budget --out docs/budget`, several hours on 2 cores).",
                ""]  # fmt: skip
    done = f"{study['cells_done']} of {study['cells_planned']} cells"
    lines = [
        "### The edge against the training budget",
        "",
        f"The budget study (`bnmft budget`, docs/budget.md; {done}, {study['training_core_seconds'] / 3600:.1f} "
        "core-hours of training): per column, optimiser and budget (1x = the quick preset's 1 epoch on 5000 "
        "examples), the crossing depth of each seed (half-way between chance and a depth-8 network's accuracy), "
        "mean +- standard error over the seeds.",
        "",
        "![budget study](budget.png)",
        "",
        "| column | optimiser | budget | steps | crossing | +- | / line | seeds crossed (censored, untrained) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    for r in study["summary"]:
        label = OPTIMIZER_LABELS.get((r["optimizer"], r["lr"]), f"{r['optimizer']} {r['lr']}")
        lines.append(f"| {r['column']} | {label} | {r['budget']}x | {r['steps']} | {fmt(r['crossing_mean'], '.1f')} | "
                     f"{fmt(r['crossing_stderr'], '.1f')} | {fmt(r['ratio'], '.2f')} | {r['crossed']} of "
                     f"{r['seeds']} ({r['censored']}, {r['untrained']}) |")  # fmt: skip
    lines += ["", "| column | optimiser | line | verdict |", "|---|---|---|---|"]
    for t in study["trends"]:
        label = OPTIMIZER_LABELS.get((t["optimizer"], t["lr"]), f"{t['optimizer']} {t['lr']}")
        lines.append(f"| {t['column']} | {label} | {t['theory_depth']:.1f} | {t['verdict']} |")
    return [*lines, ""]
