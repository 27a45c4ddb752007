"""Figures from theory results (and, later, simulation tables). matplotlib is imported lazily (Agg backend)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from .theory import TheoryResult, theory_table


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def dense_batch_sizes(lo: int, hi: int, count: int = 48) -> list[int]:
    """About ``count`` log-spaced integer batch sizes from lo to hi (inclusive, no duplicates)."""
    if hi <= lo:
        return [lo]
    step = (math.log(hi) - math.log(lo)) / (count - 1)
    return sorted({round(math.exp(math.log(lo) + i * step)) for i in range(count)} | {lo, hi})


def plot_theory_curves(
    curves: dict[str, Sequence[TheoryResult]],
    path: str | Path,
    *,
    markers: dict[str, Sequence[TheoryResult]] | None = None,
    title: str | None = None,
) -> Path:
    """Three panels against batch size: lambda_G, the maximum trainable depth 16 / ln lambda_G, and the forward
    eigenvalues lambda_L (solid) and lambda_M (dotted), with 1 (the BSB1 stability line) marked.

    Args:
        curves: label -> results over batch sizes (finite ones are drawn as a line, an infinite one as a
            dashed asymptote in the same colour).
        path: output file (format from the suffix: .png, .pdf, .svg).
        markers: label -> results drawn as points (e.g. the batch sizes asked for).
    """
    plt = _pyplot()
    fig, (ax_rate, ax_depth, ax_fwd) = plt.subplots(1, 3, figsize=(15, 4), constrained_layout=True)
    for i, (label, results) in enumerate(curves.items()):
        color = f"C{i % 10}"
        finite = [r for r in results if math.isfinite(r.batch_size)]
        limit = [r for r in results if math.isinf(r.batch_size)]
        xs = [r.batch_size for r in finite]
        ax_rate.plot(xs, [r.lambda_G for r in finite], color=color, label=label)
        ax_depth.plot(xs, [r.max_trainable_depth for r in finite], color=color, label=label)
        fwd = [r for r in finite if r.lambda_L is not None]
        ax_fwd.plot([r.batch_size for r in fwd], [r.lambda_L for r in fwd], color=color, label=label)
        ax_fwd.plot([r.batch_size for r in fwd], [r.lambda_M for r in fwd], color=color, ls=":")
        for r in limit:
            ax_rate.axhline(r.lambda_G, color=color, ls="--", lw=0.8)
            if math.isfinite(r.max_trainable_depth):
                ax_depth.axhline(r.max_trainable_depth, color=color, ls="--", lw=0.8)
        for r in (markers or {}).get(label, []):
            if math.isfinite(r.batch_size):
                ax_rate.plot(r.batch_size, r.lambda_G, "o", color=color, ms=4)
                ax_depth.plot(r.batch_size, r.max_trainable_depth, "o", color=color, ms=4)
    from matplotlib.ticker import ScalarFormatter

    for ax in (ax_rate, ax_depth, ax_fwd):
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.set_xlabel("batch size B")
        ax.grid(True, which="both", alpha=0.3)
    ax_rate.set_ylabel(r"gradient explosion rate $\lambda_G$")
    ax_rate.set_yscale("log")
    ax_depth.set_ylabel(r"max trainable depth $16/\ln\lambda_G$")
    ax_depth.set_yscale("log")
    for ax in (ax_rate, ax_depth):
        ax.yaxis.set_major_formatter(ScalarFormatter())
    ax_fwd.axhline(1.0, color="k", lw=0.8)
    ax_fwd.set_ylabel(r"forward eigenvalues $\lambda_L$ (solid), $\lambda_M$ (dotted)")
    ax_rate.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


def plot_theory(phi, batch_sizes: Sequence, path: str | Path, **kwargs) -> Path:
    """lambda_G, max trainable depth and forward eigenvalues of one phi: a dense curve over the range of ``batch_sizes`` with
    the requested sizes marked (and the B = inf limit dashed if requested). kwargs go to :func:`theory`."""
    asked = theory_table(phi, batch_sizes, **kwargs)
    finite = [int(r.batch_size) for r in asked if math.isfinite(r.batch_size)]
    dense = dense_batch_sizes(min(finite), max(finite)) if finite else []
    curve = theory_table(phi, dense, **kwargs) + [r for r in asked if math.isinf(r.batch_size)]
    label = asked[0].phi + _knobs(asked[0])
    return plot_theory_curves({label: curve}, path, markers={label: asked})


def _knobs(r: TheoryResult) -> str:
    parts = [f"gamma={r.gamma:g}"] if r.gamma != 1 else []
    parts += [f"beta={r.beta:g}"] if r.beta != 0 else []
    return f" ({', '.join(parts)})" if parts else ""
