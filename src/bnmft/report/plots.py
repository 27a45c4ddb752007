"""Figures from theory results (and, later, simulation tables). matplotlib is imported lazily (Agg backend)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from ..meanfield import TheoryResult, theory, theory_table


def load_pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int = 150) -> Path:
    """Write a figure (format from the suffix), creating the directory, and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    if not path.suffix and not path.exists():
        path = path.with_suffix(".png")  # what matplotlib would write; return the path really written
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format=path.suffix.lstrip(".") or "png")  # an explicit format: no suffix added
    plt.close(fig)
    return path


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
    plt = load_pyplot()
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
    return save_figure(fig, path)


def plot_theory(phi, batch_sizes: Sequence, path: str | Path, **kwargs) -> Path:
    """lambda_G, max trainable depth and forward eigenvalues of one phi: a dense curve over the range of
    ``batch_sizes``, the requested sizes marked (the B = inf limit dashed if requested). kwargs go to theory()."""
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


def plot_propagation(result, path: str | Path) -> Path:
    """Distance to the BSB1 fixed point against layer, with the theory's asymptotic slope
    ``max(lambda_L, lambda_M)^l``; for two batches, the cross-batch correlation with ``cross_batch_rate^l``."""
    import numpy as np

    plt = load_pyplot()
    two = result.cross_correlation is not None
    fig, axes = plt.subplots(
        1, 2 if two else 1, figsize=(11 if two else 5.5, 4), constrained_layout=True, squeeze=False
    )
    layers = np.arange(result.depth + 1)
    t = result.theory
    ax = axes[0, 0]
    ax.semilogy(layers, result.distance, "o-", ms=3, label="batch 1")
    if two:
        ax.semilogy(layers, result.distance2, "s-", ms=3, label="batch 2")
    top = max(t.lambda_L, t.lambda_M)
    last = len(layers) - 1  # the theory gives the asymptotic slope: anchor it at the deepest layer
    ax.semilogy(
        layers,
        result.distance[last] * top ** (layers - last),
        "k--",
        lw=0.8,
        label=rf"asymptotic rate $\max(\lambda_L,\lambda_M)$ = {top:.4g}",
    )
    ax.set_xlabel("layer")
    ax.set_ylabel("distance to the BSB1 fixed point")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    if two:
        ax = axes[0, 1]
        ax.errorbar(layers, result.cross_correlation, yerr=result.cross_stderr, fmt="o-", ms=3, label="simulated map")
        k = t.cross_batch_rate
        corr = np.maximum(result.cross_correlation, 1e-12)
        # anchor the asymptotic slope where the correlation is small (linear regime) but above the MC noise
        mid = int(np.argmin(np.abs(np.log(corr) - np.log(0.15))))
        ax.semilogy(
            layers, corr[mid] * k ** (layers - mid), "k--", lw=0.8, label=rf"asymptotic rate $\kappa$ = {k:.4g}"
        )
        ax.set_ylim(max(corr.min() / 2, 1e-4), 1.5)
        ax.set_yscale("log")
        ax.set_xlabel("layer")
        ax.set_ylabel("cross-batch correlation")
        ax.legend(fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"{result.phi}, B = {result.batch_size}")
    return save_figure(fig, path)


def plot_symmetry_breaking(results, path: str | Path) -> Path:
    """alpha* (BSB1 -> BSB2 threshold of alpha_relu) against batch size; the region above is symmetry-broken."""
    plt = load_pyplot()
    from matplotlib.ticker import ScalarFormatter

    finite = [r for r in results if math.isfinite(r.alpha_star)]
    fig, ax = plt.subplots(figsize=(5.5, 4), constrained_layout=True)
    xs, ys = [r.batch_size for r in finite], [r.alpha_star for r in finite]
    ax.plot(xs, ys, "o-", label=r"$\alpha^*$: $\max(\lambda_L, \lambda_M) = 1$")
    if xs:
        ax.fill_between(xs, ys, max(ys) * 1.1, alpha=0.15, label="BSB1 unstable (symmetry breaking)")
    ax.axhline(1.0, color="k", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.set_xlabel("batch size B")
    ax.set_ylabel(r"alpha_relu exponent $\alpha$")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    return save_figure(fig, path)


# -- simulation figures (they consume the simulator's tidy rows) ---------------------------------------------
def _group(rows, *keys):
    out: dict = {}
    for row in rows:
        out.setdefault(tuple(row[k] for k in keys), []).append(row)
    return out


def plot_simulation_summary(
    summaries, path: str | Path, *, phi=None, theory_kwargs=None, title: str | None = None
) -> Path:
    """lambda_G and c* against batch size: the theory as a line (dense in B), the simulation as mean +- 1 std
    across networks (the paper's Fig 1a band) with the standard error as error bars."""
    import numpy as np

    plt = load_pyplot()
    from matplotlib.ticker import ScalarFormatter

    bs = np.array([s.batch_size for s in summaries])
    k = np.array([s.networks for s in summaries])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for ax, key, label in ((axes[0], "lambda_G", r"$\lambda_G$"), (axes[1], "c_star", r"$c^*$")):
        mean = np.array([getattr(s, f"{key}_mean") for s in summaries])
        se = np.array([getattr(s, f"{key}_stderr") for s in summaries])
        std = se * np.sqrt(k)
        ax.fill_between(bs, mean - std, mean + std, alpha=0.25, label="simulation, mean $\\pm$ 1 std")
        ax.errorbar(bs, mean, yerr=se, fmt="o", ms=3, label="simulation mean $\\pm$ 1 s.e.")
        if phi is not None and min(bs) >= 4:
            dense = dense_batch_sizes(int(min(bs)), int(max(bs)))
            curve = theory_table(phi, dense, **(theory_kwargs or {}))
            ax.plot(dense, [getattr(r, key) for r in curve], "k-", lw=1, label="mean field theory")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.set_xlabel("batch size B")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_gradient_depth(rows, path: str | Path, *, rates: dict | None = None, title: str | None = None) -> Path:
    """log10 of the squared gradient norm w.r.t. pre-activations against layer, one line per batch size
    (mean +- 1 std across networks); dashed: the theory's slope lambda_G per layer (``rates``: B -> lambda_G)."""
    import numpy as np

    plt = load_pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.2), constrained_layout=True)
    for i, ((b,), group) in enumerate(sorted(_group(rows, "batch_size").items())):
        layers = sorted({r["layer"] for r in group})
        by_layer = _group(group, "layer")
        vals = np.array([[r["log_grad_h"] / math.log(10) for r in by_layer[(layer,)]] for layer in layers])
        mean, std = vals.mean(axis=1), vals.std(axis=1)
        color = f"C{i % 10}"
        ax.plot(layers, mean, color=color, label=f"B = {b}")
        ax.fill_between(layers, mean - std, mean + std, color=color, alpha=0.2)
        if rates and b in rates and rates[b] is not None:
            top = layers[-1]
            ax.plot(layers, mean[-1] + (top - np.array(layers)) * math.log10(rates[b]), color=color, ls="--", lw=0.8)
    ax.set_xlabel("layer l")
    ax.set_ylabel(r"$\log_{10} \|\partial L / \partial h^l\|^2$")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, title="dashed: theory slope" if rates else None)
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def plot_heatmap(results: list[dict], x: str, path: str | Path, *, title: str | None = None) -> Path:
    """Test accuracy over (x, depth) with the theory's maximum trainable depth (white): 16 / ln lambda_G for plain
    networks, a total gradient growth e^16 for residual ones (:func:`bnmft.experiments.agreement.theory_depth_for`);
    placed by interpolation in log depth between the grid's rows."""
    import numpy as np

    from ..experiments.agreement import theory_depth_for
    from ..experiments.sweep import grid_table

    plt = load_pyplot()
    xs, depths, table = grid_table(results, x)
    grid = np.array([[np.nan if v is None else v for v in row] for row in table], dtype=float)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(xs), 1.2 + 0.35 * len(depths)), constrained_layout=True)
    im = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, label="test accuracy")
    ax.set_xticks(range(len(xs)), [f"{v:g}" if isinstance(v, float) else str(v) for v in xs])
    ax.set_yticks(range(len(depths)), [str(d) for d in depths])
    ax.set_xlabel(x)
    ax.set_ylabel("depth")
    base = results[0]["config"]
    line = [theory_depth_for(base, x, v) for v in xs]
    if any(v is not None for v in line):
        idx = [i for i, v in enumerate(line) if v is not None]
        with np.errstate(divide="ignore"):
            where = np.log([max(line[i], 1e-300) for i in idx])
        rows = np.interp(where, np.log(depths), np.arange(len(depths)), left=-0.5, right=len(depths) - 0.5)
        residual = x == "branch_depth" or base.get("branch_depth")
        label = r"theory: gradient growth $e^{16}$" if residual else r"theory: $16/\ln\max(\lambda_G, \lambda_W)$"
        ax.plot(idx, rows, "w--", lw=2, label=label)
        ax.legend(loc="upper right", fontsize=8)
    import textwrap

    # wrap to the figure's width (about 9.5 characters per inch at this size), so narrow heatmaps keep their title
    width_chars = max(24, int(9.5 * fig.get_figwidth()))
    ax.set_title("\n".join(textwrap.wrap(title or f"{base['phi']} on {base['dataset']}", width_chars)), fontsize=9)
    return save_figure(fig, path)


def plot_eps_phase_diagram(phi, batch_sizes: Sequence, eps_values: Sequence[float], path: str | Path, **kwargs) -> Path:
    """docs/theory.md section 6 against eps: lambda_G and lambda_W (left), the two depth lines 16/ln(rate) (right),
    with the transition eps_c = kappa_c sigma_w^2 marked; one colour per batch size."""
    import numpy as np

    plt = load_pyplot()
    positive = [e for e in eps_values if e > 0]
    lo, hi = (min(positive), max(positive)) if positive else (1e-3, 10.0)
    grid = sorted(set(np.geomspace(lo / 3, hi * 3, 60).tolist()) | set(positive))
    sigma_w = kwargs.get("sigma_w", 1.0)
    fig, (ax_rate, ax_depth) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for i, b in enumerate(batch_sizes):
        color = f"C{i % 10}"
        rs = [theory(phi, b, eps=e, **kwargs) for e in grid]
        lam_g = [r.lambda_G for r in rs]
        lam_w = [r.lambda_W for r in rs]
        ax_rate.plot(grid, lam_g, color=color, label=rf"$\lambda_G$, B = {b}")
        ax_rate.plot(grid, lam_w, color=color, ls="--", label=rf"$\lambda_W$, B = {b}")
        with np.errstate(divide="ignore"):
            dg = [16 / math.log(v) if v > 1 else np.inf for v in lam_g]
            dw = [16 / math.log(v) if v > 1 else np.inf for v in lam_w]
        ax_depth.plot(grid, dg, color=color, label=f"from $\\lambda_G$, B = {b}")
        ax_depth.plot(grid, dw, color=color, ls="--", label=f"from $\\lambda_W$, B = {b}")
        eps_c = rs[0].kappa_c * sigma_w**2
        for ax in (ax_rate, ax_depth):
            ax.axvline(eps_c, color=color, lw=0.8, ls=":")
    ax_rate.axhline(1.0, color="k", lw=0.6)
    for ax in (ax_rate, ax_depth):
        ax.set_xscale("log")
        ax.set_xlabel(r"eps  (dotted: transition $\epsilon_c = \kappa_c \sigma_w^2$)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    ax_rate.set_ylabel("per-layer gradient growth")
    ax_depth.set_ylabel(r"max trainable depth $16/\ln(\mathrm{rate})$")
    ax_depth.set_yscale("log")
    first = theory(phi, batch_sizes[0], **kwargs)
    fig.suptitle(
        f"BN MLP, {first.phi} (gamma = {first.gamma:g}, beta = {first.beta:g}), "
        f"B = {', '.join(str(b) for b in batch_sizes)}, sigma_w = {sigma_w:g}: mean-field gradient rates against eps"
    )
    return save_figure(fig, path)


def plot_residual(result, path: str | Path, *, simulation=None) -> Path:
    """Residual network (:func:`bnmft.residual_theory`): ``ln(E||g^l||^2 / E||g^D||^2)`` and the stream variance against
    block l, theory lines; with ``simulation`` (:class:`bnmft.simulate.ResidualSimulation`) measured points with
    2-standard-error bars."""
    plt = load_pyplot()
    fig, (ax_g, ax_v) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    blocks = [r["block"] for r in result.blocks]
    ax_g.plot(blocks, [r["log_grad_ratio"] for r in result.blocks], color="C0", label="theory")
    ax_v.plot(blocks, [r["stream_variance"] for r in result.blocks], color="C0", label="theory")
    if simulation is not None:
        rows = simulation.blocks
        x = [r["block"] for r in rows]
        ax_g.errorbar(
            x,
            [r["log_grad_ratio"] for r in rows],
            yerr=[2 * r["log_grad_ratio_stderr"] for r in rows],
            fmt="o",
            ms=3,
            color="C1",
            label=f"simulation (N = {simulation.config.simulation.network.width})",
        )
        ax_v.errorbar(
            x,
            [r["stream_variance"] for r in rows],
            yerr=[2 * r["stream_variance_stderr"] for r in rows],
            fmt="o",
            ms=3,
            color="C1",
            label="simulation",
        )
    scale = result.branch_scale if isinstance(result.branch_scale, float) else "per block"
    ax_g.set_title(
        f"{result.phi}, B = {result.batch_size}, K = {result.branch_depth}, branch scale = {scale}, "
        f"eps = {result.eps:g}: "
        f"exponent {result.exponent:.4g}",
        fontsize=9,
    )
    ax_g.set_xlabel("block l")
    ax_g.set_ylabel(r"$\ln(E\|\partial L/\partial x^l\|^2 / E\|\partial L/\partial x^D\|^2)$")
    ax_v.set_xlabel("block l")
    ax_v.set_ylabel("stream variance (per neuron, over the batch)")
    for ax in (ax_g, ax_v):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_conv(results, path: str | Path, *, simulations=None) -> Path:
    """Convolutional network (:func:`bnmft.conv_theory` results, one per (batch size, eps)): lambda_G against batch
    size, one line per eps, and the MLP at batch B x positions (dotted); with ``simulations`` (one
    :class:`bnmft.simulate.ConvSimulation` per result) the measured lambda_G with 2-standard-error bars, and a second
    panel: the measured log squared gradient norms by layer (mean +- 1 std across networks) with the theory's slope."""
    import numpy as np

    plt = load_pyplot()
    panels = 1 if simulations is None else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4), constrained_layout=True, squeeze=False)
    ax = axes[0][0]
    by_eps: dict[float, list[int]] = {}
    for i, r in enumerate(results):
        by_eps.setdefault(r.eps, []).append(i)
    for j, (eps, idx) in enumerate(sorted(by_eps.items())):
        idx = sorted(idx, key=lambda i: results[i].batch_size)
        color = f"C{j % 10}"
        bs = [results[i].batch_size for i in idx]
        ax.errorbar(bs, [results[i].lambda_G for i in idx], yerr=[2 * results[i].lambda_G_stderr for i in idx],
                    color=color, marker="s", ms=4, label=f"theory, eps = {eps:g}")  # fmt: skip
        ax.plot(bs, [results[i].mlp_lambda_G for i in idx], color=color, ls=":", lw=0.8)
        if simulations is not None:
            ax.errorbar(bs, [simulations[i].summary["lambda_G_mean"] for i in idx],
                        yerr=[2 * simulations[i].summary["lambda_G_stderr"] for i in idx], fmt="o", ms=4,
                        mfc="none", color=color, label="simulation")  # fmt: skip
    first = results[0]
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size B")
    ax.set_ylabel(r"$\lambda_G$")
    ax.set_title(f"{first.phi}, conv on {'x'.join(map(str, first.spatial))} ({first.padding} padding); dotted: MLP at "
                 "B x positions", fontsize=9)  # fmt: skip
    if simulations is not None:
        ax_g = axes[0][1]
        for i, (r, sim) in enumerate(zip(results, simulations, strict=True)):
            logs = sim.run.log_grad_h.numpy() / math.log(10)
            layers = np.arange(1, logs.shape[1] + 1)
            mean, std = logs.mean(axis=0), logs.std(axis=0)
            color = f"C{i % 10}"
            ax_g.plot(layers, mean, color=color, label=f"B = {r.batch_size}, eps = {r.eps:g}")
            ax_g.fill_between(layers, mean - std, mean + std, color=color, alpha=0.2)
            ax_g.plot(layers, mean[-1] + (layers[-1] - layers) * math.log10(r.lambda_G), color=color, ls="--", lw=0.8)
        ax_g.set_xlabel("layer l")
        ax_g.set_ylabel(r"$\log_{10} \|\partial L / \partial h^l\|^2$")
        ax_g.set_title("measured; dashed: the theory's slope", fontsize=9)
    for row in axes:
        for a in row:
            a.grid(True, alpha=0.3)
            a.legend(fontsize=8)
    return save_figure(fig, path)


def _stacked_theory(bn: list[dict]) -> dict[str, float]:
    """ln(||g||^2 / ||g_last||^2) predicted per BN layer by stepping back from the last one along ``previous``,
    each step adding ln ``theory_rate`` (a plain stack of such layers; None where a rate is missing)."""
    if not bn or bn[-1].get("log_grad_ratio") is None:
        return {}
    out = {bn[-1]["name"]: 0.0}
    for b in reversed(bn):
        up, rate = b.get("previous"), b.get("theory_rate")
        if b["name"] in out and up is not None and up not in out and rate:
            out[up] = out[b["name"]] + math.log(rate)
    return out


def plot_zoo_profiles(models: list[dict], layers: list[dict], path: str | Path) -> Path:
    """One panel per model (:func:`bnmft.simulate.zoo_profiles.zoo_profiles`): each BN layer's measured ln squared
    gradient norm over the last BN layer's (2-standard-error bars) and the graph prediction."""
    plt = load_pyplot()
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.8), constrained_layout=True, squeeze=False)
    for ax, m in zip(axes[0], models, strict=True):
        rows = [r for r in layers if r["model"] == m["model"]]
        x = [r["index"] for r in rows]
        measured = [float("nan") if r["measured"] is None else r["measured"] for r in rows]
        errors = [0.0 if r["measured_stderr"] is None else 2 * r["measured_stderr"] for r in rows]
        ax.errorbar(x, measured, yerr=errors, fmt="o", ms=3, color="C0", label="measured (probe)")
        ax.plot(x, [float("nan") if r["predicted"] is None else r["predicted"] for r in rows], "-", color="k", lw=1.2,
                label="predicted from the graph")  # fmt: skip
        ratio = "" if m["ratio"] is None else f", predicted / measured {m['ratio']:.3f}"
        ax.set_title(f"{m['model']} (B = {m['batch_size']}, {m['image']}x{m['image']}){ratio}", fontsize=8)
        ax.set_xlabel("BN layer (forward order)")
        ax.grid(True, alpha=0.3)
    label = r"$\ln(\|\partial L/\partial\,\mathrm{BN}\|^2 / \|\partial L/\partial\,\mathrm{BN_{last}}\|^2)$"
    axes[0][0].set_ylabel(label)
    axes[0][0].legend(fontsize=7)
    return save_figure(fig, Path(path))


def plot_prediction(norm_layers: list[dict], growth: float | None, path: str | Path, title: str = "") -> Path:
    """A graph prediction (:func:`bnmft.simulate.predict_model`): each BN layer's predicted ln squared gradient
    norm over the last one's, in forward order."""
    plt = load_pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.12 * len(norm_layers)), 4.5), constrained_layout=True)
    x = list(range(len(norm_layers)))
    ax.plot(x, [float("nan") if b["log_grad_ratio"] is None else b["log_grad_ratio"] for b in norm_layers], "o-",
            ms=3, color="k", label="predicted (mean field of the graph)")  # fmt: skip
    ax.set_xticks(x, [b["name"] for b in norm_layers], rotation=80, fontsize=5)
    ax.set_xlabel("BN layer (forward order)")
    ax.set_ylabel(r"$\ln(\|\partial L/\partial\,\mathrm{BN}\|^2 / \|\partial L/\partial\,\mathrm{BN_{last}}\|^2)$")
    total = "" if growth is None else f"predicted total ln growth {growth:.3g}"
    ax.set_title(f"{title}  {total}".strip(), fontsize=9)
    ax.legend(fontsize=8)
    return save_figure(fig, Path(path))


def plot_probe(result, path: str | Path) -> Path:
    """A probed model (:func:`bnmft.probe`) along its graph: per BN layer (forward order) ln of its squared gradient
    norm over the last BN layer's (``log_grad_ratio``, 2-standard-error bars with draws) beside the theory stacked
    from the last layer along ``previous`` (each step ln ``theory_rate``); each BN layer's ``measured_rate`` against
    ``theory_rate`` and ``local_rate``; the ln gradient growth across each block and stage (``blocks``), with the
    verdict's total against the criterion in the title."""
    plt = load_pyplot()
    fig, (ax_g, ax_r, ax_b) = plt.subplots(1, 3, figsize=(16, 4.5), constrained_layout=True)
    bn = result.bn_layers
    x = list(range(len(bn)))
    names = [b["name"] for b in bn]

    def values(rows, key):
        return [float("nan") if r.get(key) is None else r[key] for r in rows]

    def errors(rows, key):
        return [0.0 if r.get(f"{key}_stderr") is None else 2 * r[f"{key}_stderr"] for r in rows]

    ax_g.errorbar(x, values(bn, "log_grad_ratio"), yerr=errors(bn, "log_grad_ratio"), fmt="o-", ms=4, color="C0",
                  label="measured")  # fmt: skip
    if any(b.get("predicted_log_grad_ratio") is not None for b in bn):
        ax_g.plot(x, values(bn, "predicted_log_grad_ratio"), "k_", ms=12, mew=2,
                  label="predicted from the graph (mean field)")  # fmt: skip
    else:
        stacked = _stacked_theory(bn)
        ax_g.plot(x, [stacked.get(n, float("nan")) for n in names], "k_", ms=12, mew=2,
                  label=r"theory: $\sum \ln \lambda_G$ along the graph")  # fmt: skip
    ax_g.set_ylabel(r"$\ln(\|\partial L/\partial\,\mathrm{BN}\|^2 / \|\partial L/\partial\,\mathrm{BN_{last}}\|^2)$")
    ax_r.errorbar(x, values(bn, "measured_rate"), yerr=errors(bn, "measured_rate"), fmt="o", ms=4, color="C0",
                  label="measured (vs the BN layer upstream)")  # fmt: skip
    ax_r.plot(x, values(bn, "theory_rate"), "k_", ms=12, mew=2, label=r"theory rate (fixed-point $\lambda_G$)")
    ax_r.plot(x, values(bn, "local_rate"), "x", ms=5, color="C3", label="local rate (measured state)")
    ax_r.set_ylabel("gradient growth back to the previous BN layer")
    for ax in (ax_g, ax_r):
        ax.set_xticks(x, names, rotation=70, fontsize=6)
        ax.set_xlabel("BN layer (forward order)")
    blocks = result.blocks
    xb = list(range(len(blocks)))
    colors = ["C1" if b["level"] == "stage" else "C2" for b in blocks]
    ax_b.bar(xb, values(blocks, "growth"), yerr=errors(blocks, "growth"), color=colors)
    ax_b.set_xticks(xb, [f"{b['name']} ({b['level']})" for b in blocks], rotation=70, fontsize=6)
    ax_b.set_ylabel("ln gradient growth across it (input over output)")
    ax_b.set_xlabel("block / stage")
    v = result.verdict or {}
    if v.get("log_growth") is not None:
        verb = "trainable" if v.get("trainable") else "NOT trainable"
        ax_b.set_title(f"total ln growth {v['log_growth']:.3g} vs criterion {v['criterion']:g}: {verb}", fontsize=9)
    if not blocks:
        ax_b.text(0.5, 0.5, "no repeated blocks", ha="center", va="center", transform=ax_b.transAxes)
    for ax in (ax_g, ax_r, ax_b):
        ax.grid(True, alpha=0.3)
    ax_g.legend(fontsize=7)
    ax_r.legend(fontsize=7)
    return save_figure(fig, path)
