"""The main job's trainability section (paper Figs 3, 4 and 5, and our residual sweeps): Fig 4 (the first SGD
steps, cached in ``.cache/fig4_*``), the preset's training sweeps (stored in ``sweeps.db``, resumable), and per
sweep the accuracy table with the theory's depth line, measured against predicted trainable depth, and a verdict on
the claim. A section of the main job (interface: :mod:`.section`)."""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from . import budget
from .residual import (
    RESIDUAL_CLAIMS,
    RESIDUAL_SWEEPS,
    plain_vs_residual_figure,
    plain_vs_residual_report,
    plain_vs_residual_verdict,
    theory_line_text,
)
from .section import Check, Claim, Context

NAME = "training (Figs 3, 4, 5)"

#: the paper's claim each trainability figure checks (docs/theory.md section 12)
PAPER_CLAIMS = {
    "fig3a": "ReLU-BN networks train up to about 16 / ln lambda_G(B) layers, and not beyond (Fig 3a).",
    "fig3b": "With BN statistics over ghost batches of size B inside a big batch, the edge follows B (Fig 3b).",
    "fig3c": "The same edge with RMSProp: it is a property of the initialisation, not of SGD (Fig 3c).",
    "fig3d": "The same edge on CIFAR-10 (Fig 3d).",
    "fig5a": "tanh(gamma z): smaller gamma is closer to linear and trains deeper, along 16 / ln lambda_G (Fig 5a).",
    "fig5b": "relu(z + beta): larger beta is closer to linear and trains deeper (Fig 5b).",
    "fig5c": "tanh with BN's eps: larger eps rescues depth, with a transition near eps ~ 1 (Fig 5c).",
    "fig5d": "relu with BN's eps: the transition near eps ~ 1, a smaller rescue (Fig 5d).",
    "quick": "ReLU-BN networks train up to about 16 / ln lambda_G(B) layers, and not beyond (Fig 3a).",
    "tiny": "A smoke run of the training pipeline (no claim).",
}
#: the sweeps the budget study tests (docs/budget.md): sweep -> (optimizer, learning rate, the study's columns); it
#: judges a sweep only where the sweep has the study's 1x cells (:func:`.budget.matches_study`: the quick preset's,
#: not the paper preset's 10 epochs at the paper's rate)
BUDGET_TESTED = {
    "fig3a": ("sgd", "1e-3*B", ("B8", "B32")),
    "fig3b": ("sgd", "1e-3*B", ("ghost8",)),
    "fig3c": ("rmsprop", "1e-5*B", ("B8", "B32")),
}


def run(ctx: Context) -> dict:
    """Fig 4 (cached) and the preset's training sweeps into ``sweeps.db`` (resumable), a heatmap per sweep."""
    from . import figures

    fig4 = ctx.cached("fig4", lambda: figures.fig4(ctx.out, **figures.PRESETS[ctx.preset]["fig4"]))
    sweeps = _sweeps(ctx)
    study = budget.load_committed() if any(n in BUDGET_TESTED for n in sweeps) else None
    if study is not None and (budget.COMMITTED / "budget.png").is_file():
        shutil.copyfile(budget.COMMITTED / "budget.png", ctx.out / "budget.png")
    return {"fig4": fig4, "sweeps": sweeps, "budget": study}


class Background:
    """The preset's sweeps training in a background thread (:func:`start`): ``wait()`` for them, or ``stop()`` them."""

    def __init__(self, work: Callable[[threading.Event], None], threads: int):
        self._stop = threading.Event()
        self._outcome: dict[str, Any] = {}
        self._threads = threads
        self._thread = threading.Thread(target=self._run, args=(work,), name="bnmft-training", daemon=True)
        self._thread.start()

    def _join(self) -> None:
        """Wait for the thread; the main process's torch threads back to what they were."""
        from ..experiments.training import torch_threads

        self._thread.join()
        torch_threads(self._threads)

    def _run(self, work: Callable[[threading.Event], None]) -> None:
        began = time.perf_counter()
        try:
            work(self._stop)
        except BaseException as err:  # handed to the main thread by wait() (or reported by stop())
            self._outcome["error"] = err
        finally:
            self._outcome["seconds"] = time.perf_counter() - began

    def wait(self) -> float:
        """Wait for every cell (restoring the main process's torch threads); re-raise the training's error; return
        its wall time in seconds."""
        self._join()
        if "error" in self._outcome:
            raise self._outcome["error"]
        return self._outcome["seconds"]

    def stop(self) -> None:
        """End the training now (the main job failed or was interrupted): the cells in flight are abandoned, the
        finished ones stay in the store; an error of the training itself is reported on stderr."""
        self._stop.set()
        self._join()
        if "error" in self._outcome:
            print(f"bnmft: the background training had failed too: {self._outcome['error']!r}", file=sys.stderr)


def start(ctx: Context) -> Background:
    """Start training the preset's sweeps in the background while the other sections run: one schedule for all of
    them on ``ctx``'s workers, the costliest cells first (:func:`~bnmft.experiments.sweep.run_sweeps`), into
    ``out/sweeps.db``; the main process keeps one torch thread meanwhile (the sections beside the workers, which
    have one each: oversubscribed threads are many times slower). :meth:`Background.wait` waits for it;
    :func:`run` then finds every cell done."""
    from ..experiments.store import Store
    from ..experiments.sweep import run_sweeps
    from ..experiments.training import torch_threads

    sweeps = list(_preset_sweeps(ctx.preset, _data_dir()))

    def work(stop: threading.Event) -> None:
        store = Store(ctx.out / "sweeps.db")  # (this thread's own connection)
        try:
            run_sweeps(sweeps, store, progress=not ctx.quiet, workers=ctx.workers, scheduler=ctx.scheduler,
                       device=ctx.device, stop=stop)  # fmt: skip
        finally:
            store.close()

    return Background(work, torch_threads(1))


def _sweeps(ctx: Context) -> dict:
    """The preset's training sweep(s) into out/sweeps.db (resumable), and a heatmap per sweep."""
    from ..experiments.store import Store
    from ..experiments.sweep import run_sweep, sweep_results
    from .plots import plot_heatmap

    out = ctx.out
    store = Store(out / "sweeps.db")
    made = {}
    try:
        for sweep in _preset_sweeps(ctx.preset, _data_dir()):
            started = time.perf_counter()
            run_sweep(
                sweep, store, progress=not ctx.quiet, workers=ctx.workers, scheduler=ctx.scheduler, device=ctx.device
            )
            results = sweep_results(store, sweep)  # (a cell two sweeps share is stored once)
            path = plot_heatmap(
                results, sweep.x, out / f"heatmap_{sweep.name}.png", title=sweep.description or sweep.name
            )
            if sweep.x == "branch_depth":  # plain against residual: also accuracy against depth, side by side
                figure = plain_vs_residual_figure(results, out / f"{sweep.name}.png", sweep.description or sweep.name)
            made[sweep.name] = {
                "figure": figure.name if sweep.x == "branch_depth" else None,
                "path": path.name,
                "sweep": sweep,
                "results": results,
                "seconds": time.perf_counter() - started,
            }
    finally:
        store.close()
    return made


def _data_dir() -> str:
    """The data directory of the sweeps that name none: ``$BNMFT_DATA``, else ``data``."""
    return os.environ.get("BNMFT_DATA", "data")


@lru_cache(maxsize=8)
def _preset_sweeps(preset: str, default_data_dir: str) -> tuple:
    """The preset's sweeps as this machine trains them (:func:`_with_stand_in`): worked out once per process and
    data directory, for :func:`start` and :func:`run` alike (a skipped sweep is named once)."""
    from ..experiments.sweep import load_sweeps

    return tuple(s for s in (_with_stand_in(s, default_data_dir) for s in load_sweeps(preset)) if s is not None)


def _with_stand_in(sweep, default_data_dir: str):
    """CIFAR-10 sweeps run on CIFAR-10 where its files are in the data directory (the sweep's ``data_dir``, else
    ``default_data_dir``); otherwise on Fashion-MNIST as a clearly labelled stand-in (same shapes of network, 784
    inputs), or not at all (with a message) when neither is on this machine."""
    from dataclasses import replace

    from ..experiments.data import DatasetUnavailable, load_dataset

    if sweep.base.get("dataset") != "cifar10":
        return sweep
    data_dir = sweep.base.get("data_dir") or default_data_dir
    if (Path(data_dir) / "cifar-10-batches-py").exists():
        return sweep
    try:
        load_dataset("fashion_mnist", sweep.base.get("data_dir"))
    except DatasetUnavailable as err:
        print(f"bnmft reproduce: skipping {sweep.name}: no CIFAR-10 files in {data_dir} and {err}", file=sys.stderr)
        return None
    return replace(
        sweep,
        name=f"{sweep.name}_fashion",
        base=dict(sweep.base, dataset="fashion_mnist"),
        description=sweep.description.replace("CIFAR-10", "Fashion-MNIST (stand-in: no CIFAR-10 files found)"),
    )


def checks(data: dict) -> list[Check]:
    return []


def _measured(name: str, made: dict, study: dict | None = None) -> dict:
    """One sweep's accuracy grid, its measured against predicted trainable depths, and the claim's verdict."""
    from ..experiments.agreement import median_ratio, trainable_depths
    from ..experiments.sweep import grid_table

    sweep = made["sweep"]
    xs, depths, table = grid_table(made["results"], sweep.x)
    rows = trainable_depths(made["results"], sweep.x)  # one row per column, with the theory's depth
    med, med_grid = median_ratio(rows), median_ratio(rows, "ratio")
    claim = PAPER_CLAIMS.get(name.removesuffix("_fashion"), "") or RESIDUAL_CLAIMS.get(name, "")
    source = "Ours" if name in RESIDUAL_SWEEPS else "Paper"
    consistent: bool | None
    if sweep.x == "branch_depth":
        verdict, consistent = plain_vs_residual_verdict(rows, xs, depths, table), None
    elif med is None:
        verdict, consistent = "no column trains at all in this reduced run: not reproduced here", False
    elif 0.5 <= med <= 2.0:
        verdict = f"consistent: the measured edge sits at {med:.2f} x the predicted depth (median over columns)"
        consistent = True
    else:
        verdict = f"not reproduced in this reduced run: the measured edge sits at {med:.2f} x the prediction"
        consistent = False
    if name in BUDGET_TESTED and med is not None and budget.matches_study(
        sweep, *BUDGET_TESTED[name], plan=(study or {}).get("plan", "full")
    ):
        verdict, consistent = _budget_verdict(name, med, study)
    found = Claim(
        source,
        claim,
        verdict,
        consistent=consistent,
        ratio=med,
        ratio_of="trainable depth measured / theory at the crossing, median over columns",
        subject=f"sweep `{name}`",
    )
    return {"xs": xs, "depths": depths, "table": table, "rows": rows, "med": med, "med_grid": med_grid, "claim": found}


def _budget_verdict(name: str, med: float, study: dict | None) -> tuple[str, bool | None]:
    """A claim about where the edge sits, judged by the budget study (docs/budget.md): consistent only where every
    tested column's crossing converges, as training gets longer, to within its error of the line; not established
    where any column's does not; otherwise not yet judged. The text gives each column's measured trend."""
    optimizer, lr, columns = BUDGET_TESTED[name]
    here = f"after this run's one epoch on 5k the edge sits at {med:.2f} x the line (median over columns)"
    trends = [t for c in columns for t in budget.verdict_for(study, c) if (t["optimizer"], t["lr"]) == (optimizer, lr)]
    if not trends:
        return here + "; how it moves with longer training is not tested (no budget study: docs/budget.md)", None
    judged = [t["consistent"] for t in trends]
    # any column against the line decides; else any not yet judged (too few budgets, none trains, too uncertain)
    consistent = False if False in judged else None if None in judged else True
    said = "; ".join(f"column {t['column']}: {t['verdict']}" for t in trends)
    lead = {True: "consistent", False: "not established", None: "not yet judged"}[consistent]
    return f"{lead}: {here}; the budget study ({optimizer}, lr {lr}): {said}", consistent


def claims(data: dict) -> list[Claim]:
    return [_measured(name, made, data.get("budget"))["claim"] for name, made in data["sweeps"].items()]


def appendix(data: dict) -> str:
    return ""


def text(data: dict) -> str:
    lines = [
        "## Trainability (paper Figs 3 and 4)",
        "",
        "Fig 4: per-layer norms over the first SGD steps (a deep network's early weights grow after one step "
        "and its gradient profile flattens).",
        "",
        "![Fig 4](fig4_first_steps.png)",
        "",
    ]
    for name, made in data["sweeps"].items():
        sweep = made["sweep"]
        measured = _measured(name, made, data.get("budget"))
        xs, depths, table, rows = measured["xs"], measured["depths"], measured["table"], measured["rows"]
        line = [r["theory_depth"] for r in rows]
        lines += [
            f"Sweep `{name}`: {sweep.description}. Test accuracy; last row: {theory_line_text(name)}.",
            "",
            f"| depth \\ {sweep.x} | " + " | ".join(str(v) for v in xs) + " |",
            "|---" * (len(xs) + 1) + "|",
        ]
        for d, row in zip(depths, table, strict=True):
            lines.append(f"| {d} | " + " | ".join("-" if v is None else f"{v:.2f}" for v in row) + " |")
        label = "theory (e^16)" if name in RESIDUAL_SWEEPS else "16/ln lambda_G"
        lines.append(f"| {label} | " + " | ".join("-" if v is None else f"{v:.1f}" for v in line) + " |")
        lines += ["", f"![{name}]({made['path']})", ""]
        med, med_grid = measured["med"], measured["med_grid"]
        lines += [
            f"Measured against predicted maximum trainable depth (`{name}`): per column the deepest depth whose test "
            "accuracy is above halfway between chance (0.1) and the shallowest network's accuracy, and where the "
            "accuracy crosses that threshold (interpolated in log depth between grid depths). A column whose deepest "
            "network still trains is censored (its edge lies beyond the grid) and left out of the medians.",
            "",
            f"| {sweep.x} | threshold | deepest depth above | crossing | theory depth | ratio | crossing ratio |",
            "|---|---|---|---|---|---|---|",
        ]

        def fmt(v, spec):
            return "-" if v is None else format(v, spec)

        for r in rows:
            deepest = fmt(r["measured_depth"], "d") + (" (censored)" if r["censored"] else "")
            cells = [
                str(r["x"]),
                fmt(r["threshold"], ".2f"),
                deepest,
                fmt(r["crossing_depth"], ".1f"),
                fmt(r["theory_depth"], ".1f"),
                fmt(r["ratio"], ".2f"),
                fmt(r["crossing_ratio"], ".2f"),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines += [
            "",
            f"Median ratio measured / theory: {fmt(med, '.2f')} (crossing), {fmt(med_grid, '.2f')} (deepest grid "
            "depth above the threshold). With one epoch of training the edge is expected somewhat below the "
            "theory's line (it bounds what can train at all).",
            "",
        ]
        if made.get("figure"):
            lines += plain_vs_residual_report(name, made["figure"])
        if name == "fig3a":  # the study sits beside the heatmap it tests
            lines += budget.text(data.get("budget"))
        lines += [measured["claim"].quote(note="."), ""]
    return "\n".join(lines)
