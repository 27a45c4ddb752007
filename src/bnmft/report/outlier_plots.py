"""Figures of the outlier state (docs/outlier.md): the one-example map rho -> F_B(rho) at several batch sizes, and its
fixed points against B (the saddle-node at the critical batch size). matplotlib is imported lazily (Agg backend)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..meanfield.api import check_theory_input
from ..meanfield.outlier import OutlierResult, outlier_state_resolved
from ..nonlinearity import PhiSpec, resolve
from .plots import dense_batch_sizes, load_pyplot, save_figure

#: the rho range drawn (at finite B up to half the largest rho, (B-1)^2, where F_B / rho turns back up to 1)
RHO_RANGE = (0.1, 2000.0)


def _check_sizes(batch_sizes: Sequence, name: str, *, finite: bool = False) -> list[float]:
    """Each batch size checked (:func:`check_theory_input`); ``finite``: B = inf refused."""
    if not len(batch_sizes):
        raise InputError(f"{name}: give at least one batch size")
    sizes = [check_theory_input(b)[0] for b in batch_sizes]
    if finite and any(math.isinf(b) for b in sizes):
        raise InputError(f"{name}: finite batch sizes only (the B = inf map has no fixed point besides rho = 1)")
    return sizes


def _results(phi: PhiSpec, sizes: Sequence[float]) -> list[OutlierResult]:
    """The outlier results of each (checked) batch size, phi resolved once."""
    base, effective = resolve(phi)
    return [outlier_state_resolved(base, effective, b) for b in sizes]


def _label(b: float) -> str:
    return "B = inf" if math.isinf(b) else f"B = {int(b)}"


def plot_outlier_map(
    path: str | Path, phi: PhiSpec = "relu", batch_sizes: Sequence = (32, 52, 64, 128, 512, math.inf)
) -> Path:
    """``F_B(rho) / rho`` against rho (log axis) for each batch size; above 1 the example's relative norm grows.
    Fixed points marked: stable filled, unstable open (BSB1 at rho = 1 included).

    Raises:
        InputError: a bad phi or batch size.
    """
    results = _results(phi, _check_sizes(batch_sizes, "batch_sizes"))
    plt = load_pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2), constrained_layout=True)
    for i, r in enumerate(results):
        top = RHO_RANGE[1] if math.isinf(r.batch_size) else min(RHO_RANGE[1], 0.5 * (r.batch_size - 1) ** 2)
        rho = np.geomspace(RHO_RANGE[0], top, 400)
        color = f"C{i % 10}"
        ax.plot(rho, r.map(rho) / rho, color=color, label=_label(r.batch_size))
        for x, _, stable in r.fixed_points:
            ax.plot(x, 1.0, "o", color=color, mfc=color if stable else "white", ms=6, zorder=3)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_ylim(0.8, 1.25)
    ax.set_xlabel(r"$\rho$ (one example's centred squared norm / the others')")
    ax.set_ylabel(r"$F_B(\rho) / \rho$")
    ax.set_title(f"{results[0].phi}: one example against a BSB1 background (filled: stable, open: unstable)",
                 fontsize=9)  # fmt: skip
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(True, which="both", alpha=0.3)
    return save_figure(fig, path, dpi=120)


def plot_bifurcation(path: str | Path, phi: PhiSpec = "relu", batch_sizes: Sequence[int] | None = None) -> Path:
    """The fixed points of ``F_B`` against B (log axes): stable solid, unstable dashed, the critical batch size
    marked. Default batch sizes: about 48 log-spaced from 16 to 4096, plus the critical one and its neighbours.

    Raises:
        InputError: a bad phi or batch size (finite ones only here).
    """
    sizes = _check_sizes(dense_batch_sizes(16, 4096) if batch_sizes is None else batch_sizes, "batch_sizes",
                         finite=True)  # fmt: skip
    results = _results(phi, sizes)
    critical = results[0].critical_batch_size
    if batch_sizes is None and critical is not None:  # resolve the fold
        extra = [float(b) for b in (critical - 1, critical, critical + 1, critical + 3) if b not in sizes]
        results = sorted(results + _results(phi, extra), key=lambda r: r.batch_size)
    plt = load_pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.2), constrained_layout=True)
    bsb1 = [(r.batch_size, next(s for x, _, s in r.fixed_points if x == 1.0)) for r in results]
    for stable, style in ((True, "-"), (False, "--")):
        ys = [1.0 if s == stable else np.nan for _, s in bsb1]
        ax.plot([b for b, _ in bsb1], ys, style, color="C0", label="BSB1 (rho = 1)" if stable else None)
    branch = [(r.batch_size, r.saddle, r.stable) for r in results if r.saddle not in (None, 1.0)]
    if branch:
        if critical is not None:  # close the fold at its birth: the saddle and the stable state meet
            born = next(r for r in results if r.batch_size == critical) if any(
                r.batch_size == critical for r in results) else None  # fmt: skip
            if born is not None and born.saddle is not None and born.stable is not None:
                mid = math.sqrt(born.saddle * born.stable)
                branch = [(critical - 0.5, mid, mid)] + [p for p in branch if p[0] >= critical]
        xs = [p[0] for p in branch]
        ax.plot(xs, [p[1] for p in branch], "--", color="C3", label="saddle (unstable)")
        ax.plot(xs, [p[2] for p in branch], "-", color="C2", label="outlier state (stable)")
    if critical is not None:
        ax.axvline(critical, color="k", ls=":", lw=0.9, label=f"critical B = {critical}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("batch size B")
    ax.set_ylabel(r"fixed points $\rho$ of $F_B$")
    ax.set_title(f"{results[0].phi}: fixed points of the one-example map", fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(True, which="both", alpha=0.3)
    return save_figure(fig, path, dpi=120)


__all__ = ["plot_bifurcation", "plot_outlier_map"]
