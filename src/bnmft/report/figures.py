"""The paper's simulation figures (Fig 1a-d, Fig 2; docs/theory.md section 12), from the simulator and the theory.

Each builder runs its simulation, writes its figure(s) and a tidy CSV into ``out`` and returns a summary dict
for the report. Two presets: ``"quick"`` (minutes on a 2-core CPU) and ``"paper"`` (the paper's sizes:
200 networks of width 1000 for Fig 1a; for a GPU or a patient CPU).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from .._io import write_csv
from ..meanfield import propagate, theory
from ..meanfield.symmetry import symmetry_breaking_alpha
from ..simulate import simulate_mlp
from .plots import load_pyplot, plot_gradient_depth, plot_simulation_summary, save_figure

PRESETS = {
    "tiny": {
        "fig1a": {"width": 64, "depth": 16, "networks": 6},
        "fig1cd": {"width": 64, "depth": 16, "networks": 4, "batch_size": 8},
        "fig2": {"width": 64, "depth": 12, "networks": 2},
        "fig4": {"depths": (5, 10), "steps": 3},
    },
    "quick": {
        "fig1a": {"width": 512, "depth": 30, "networks": 40},
        "fig1cd": {"width": 256, "depth": 40, "networks": 16, "batch_size": 8},
        "fig2": {"width": 512, "depth": 60, "networks": 8},
        "fig4": {"depths": (10, 25, 50), "steps": 10},
    },
    "paper": {
        "fig1a": {"width": 1000, "depth": 50, "networks": 200},
        "fig1cd": {"width": 1000, "depth": 50, "networks": 50, "batch_size": 8},
        "fig2": {"width": 1000, "depth": 100, "networks": 20},
        "fig4": {"depths": (10, 25, 50, 100), "steps": 10},
    },
}
FIG1A_BATCHES = (4, 5, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128)


def fig1ab(out: Path, preset: str = "quick", progress: Callable[[int], None] | None = None) -> dict:
    """Fig 1a (lambda_G against B: theory line, simulation band) and Fig 1b (gradient norm against depth)."""
    p = PRESETS[preset]["fig1a"]
    result = simulate_mlp("relu", list(FIG1A_BATCHES), progress=progress, seed=1, **p)
    write_csv(out / "fig1_simulation.csv", result.rows())
    plot_simulation_summary(
        result.summaries,
        out / "fig1a_lambda_G.png",
        phi="relu",
        title=f"Fig 1a: ReLU, {p['networks']} networks of width {p['width']}, depth {p['depth']}",
    )
    rows = [r for r in result.rows() if r["batch_size"] in (4, 8, 32, 128)]
    plot_gradient_depth(
        rows,
        out / "fig1b_gradients.png",
        rates={s.batch_size: s.lambda_G_theory for s in result.summaries},
        title="Fig 1b: gradient norms explode with depth",
    )
    return {"summaries": result.summaries, "settings": p}


def fig1cd(out: Path, preset: str = "quick", alphas=None, progress: Callable[[int], None] | None = None) -> dict:
    """Fig 1c/d: alpha_relu networks as alpha grows: the spread of the Gram entries at the last layer jumps at
    the BSB1 -> BSB2 transition (theory: alpha* where lambda_L = 1), and example Gram matrices in each phase."""
    p = dict(PRESETS[preset]["fig1cd"])
    b = p.pop("batch_size")
    star = symmetry_breaking_alpha(b).alpha_star
    alphas = list(alphas) if alphas is not None else list(np.round(np.linspace(1.0, 2.6, 9), 3))
    spread_diag, spread_off, examples = [], [], {}
    for i, alpha in enumerate(alphas):
        r = simulate_mlp("alpha_relu", [b], alpha=float(alpha), keep_grams=True, seed=2, **p)
        grams = r.runs[b].grams[:, -1].numpy()  # (K, B, B) at the last layer
        scale = np.mean(np.diagonal(grams, axis1=1, axis2=2), axis=1)[:, None, None]
        g = grams / scale
        diag = np.diagonal(g, axis1=1, axis2=2)
        off = g[:, ~np.eye(b, dtype=bool)]
        spread_diag.append(float(np.mean(np.var(diag, axis=1))))
        spread_off.append(float(np.mean(np.var(off, axis=1))))
        examples[float(alpha)] = g[0]
        if progress is not None:
            progress(i + 1)
    plt = load_pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4), constrained_layout=True)
    ax.semilogy(alphas, spread_diag, "o-", label="variance of diagonal entries")
    ax.semilogy(alphas, spread_off, "s-", label="variance of off-diagonal entries")
    ax.axvline(star, color="k", ls="--", lw=0.8, label=rf"theory $\alpha^*$ = {star:.3f} (B = {b})")
    ax.set_xlabel(r"alpha_relu exponent $\alpha$")
    ax.set_ylabel("variance across the batch (normalised Gram, last layer)")
    ax.set_title(f"Fig 1c: BSB1 -> BSB2, width {p['width']}, depth {p['depth']}")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    save_figure(fig, out / "fig1c_symmetry_breaking.png", dpi=150)
    below = min(examples, key=lambda a: abs(a - (star - 0.4)))
    above = max(examples)
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.8), constrained_layout=True)
    for ax, alpha, phase in ((axes[0], below, "BSB1"), (axes[1], above, "broken (BSB2-like)")):
        im = ax.imshow(examples[alpha], cmap="viridis")
        ax.set_title(rf"$\alpha$ = {alpha:g}: {phase}")
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle("Fig 1d: last-layer Gram matrices (normalised), one network")
    save_figure(fig, out / "fig1d_gram_examples.png", dpi=150)
    rows = [
        {"alpha": a, "var_diag": d, "var_offdiag": o, "alpha_star": star, "batch_size": b, **p}
        for a, d, o in zip(alphas, spread_diag, spread_off, strict=True)
    ]
    write_csv(out / "fig1c_symmetry_breaking.csv", rows)
    return {"alpha_star": star, "rows": rows}


def circle_batches(points: int = 64, seed: int = 0) -> np.ndarray:
    """Two batches of ``points`` points on the unit circle that differ in one point: shape (2, points, 2)."""
    rng = np.random.default_rng(seed)
    angles = np.sort(rng.uniform(0, 2 * np.pi, points))
    first = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    second = first.copy()
    moved = rng.uniform(0, 2 * np.pi)
    second[0] = [np.cos(moved), np.sin(moved)]
    return np.stack([first, second])


def fig2(out: Path, preset: str = "quick", progress: Callable[[int], None] | None = None) -> dict:
    """Fig 2: a linear BN network with orthogonal weights, two batches of 64 points on a circle differing in
    one point: PCA of the first batch's representation at several depths, and the cross-batch correlation
    against depth with the mean-field prediction for these inputs."""
    p = PRESETS[preset]["fig2"]
    b = 64
    inputs = circle_batches(b)
    r = simulate_mlp(
        "identity",
        [b],
        init="orthogonal",
        two_batches=True,
        inputs=inputs,
        keep_grams=True,
        seed=3,
        progress=progress,
        **p,
    )
    run = r.runs[b]
    t = theory("identity", b)
    cross = run.cross.numpy()
    layers = np.arange(1, p["depth"] + 1)
    plt = load_pyplot()
    shown = sorted({1, 2, min(5, p["depth"]), min(20, p["depth"]), p["depth"]})
    fig, grid = plt.subplots(2, 3, figsize=(12, 7.5), constrained_layout=True)
    axes = list(grid.ravel())
    for ax in axes[len(shown) : -1]:
        ax.axis("off")
    for ax, layer in zip(axes, shown, strict=False):
        gram = run.grams[0, layer - 1].numpy()
        vals, vecs = np.linalg.eigh(gram - gram.mean(0) - gram.mean(1)[:, None] + gram.mean())
        scores = vecs[:, -2:] * np.sqrt(np.maximum(vals[-2:], 0))
        ax.scatter(scores[:, 1], scores[:, 0], c=np.arange(b), cmap="hsv", s=12)
        ax.set_title(f"layer {layer}: PCA of batch 1")
        ax.set_aspect("equal", adjustable="datalim")
    ax = axes[-1]
    mean, std = cross.mean(axis=0), cross.std(axis=0)
    ax.plot(layers, mean, label="simulation (mean $\\pm$ std)")
    ax.fill_between(layers, mean - std, mean + std, alpha=0.25)
    # The circle inputs have rank 2 and a linear BN network keeps them in that 2-D span, so the batches never
    # reach BSB1 and the rate kappa (a linearisation at BSB1) does not apply; the theory curve is the
    # mean-field Gram map iterated from these very inputs (Gaussian weights, cross block by Monte Carlo).
    mf = propagate("identity", inputs[0], p["depth"], inputs2=inputs[1], samples=40_000, seed=4)
    ax.plot(
        np.arange(p["depth"] + 1),
        np.maximum(mf.cross_correlation, 1e-4),
        "k--",
        lw=1,
        label="mean field theory (bnmft.propagate)",
    )
    k = t.cross_batch_rate
    ax.set_yscale("log")
    ax.set_ylim(max(1e-3, float(mean.min()) / 3), 1.5)
    ax.set_xlabel("layer")
    ax.set_ylabel("cross-batch correlation")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(
        f"Fig 2: linear BN network, orthogonal weights, width {p['width']}, two batches of 64 points "
        "on a circle differing in one point"
    )
    save_figure(fig, out / "fig2_two_batches.png", dpi=120)
    rows = [
        {
            "layer": int(layer),
            "cross_correlation_mean": float(m),
            "cross_correlation_std": float(s),
            "mean_field": float(mf.cross_correlation[layer]),
        }
        for layer, m, s in zip(layers, mean, std, strict=True)
    ]
    write_csv(out / "fig2_cross_correlation.csv", rows)
    half_sim = int(layers[np.argmax(mean < 0.5)]) if np.any(mean < 0.5) else None
    half_mf = int(np.argmax(mf.cross_correlation < 0.5)) if np.any(mf.cross_correlation < 0.5) else None
    return {
        "bsb1_cross_batch_rate": k,
        "layer_half_simulation": half_sim,
        "layer_half_mean_field": half_mf,
        "rows": rows,
    }


def fig4(out: Path, depths=(10, 25, 50), steps: int = 10, batch_size: int = 64, seed: int = 0) -> dict:
    """Fig 4: the first ``steps`` SGD steps (paper's learning rate 1e-5 * B) of ReLU-BN networks of several depths
    on MNIST: per-layer norms of the weights, of the pre-activation gradients and of the weight gradients.
    At step 0 the gradients explode with depth; one step later the early layers' weights have grown (BN is
    scale invariant, so their gradients shrink as 1/||W||) and the gradient profile flattens."""
    from ..experiments.first_steps import first_steps

    rows = first_steps(depths, steps, batch_size, seed)
    write_csv(out / "fig4_first_steps.csv", rows)
    plt = load_pyplot()
    keys = (
        ("weight_norm", r"$\|W^l\|$"),
        ("grad_h_norm", r"$\|\partial L/\partial h^l\|$"),
        ("grad_w_norm", r"$\|\partial L/\partial W^l\|$"),
    )
    fig, axes = plt.subplots(len(depths), 3, figsize=(13, 3.2 * len(depths)), constrained_layout=True, squeeze=False)
    cmap = plt.get_cmap("viridis")
    for i, depth in enumerate(depths):
        for j, (key, label) in enumerate(keys):
            ax = axes[i, j]
            for step in range(steps):
                sel = [r for r in rows if r["depth"] == depth and r["step"] == step]
                ax.semilogy(
                    [r["layer"] for r in sel],
                    [r[key] for r in sel],
                    color=cmap(step / max(steps - 1, 1)),
                    lw=1.2,
                    label=f"step {step}" if (i, j) == (0, 0) and step in (0, steps - 1) else None,
                )
            ax.set_title(f"depth {depth}: {label}")
            ax.set_xlabel("layer")
            ax.grid(True, which="both", alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"Fig 4: the first {steps} SGD steps (lr 1e-5 x B, B = {batch_size}), ReLU-BN on MNIST")
    save_figure(fig, out / "fig4_first_steps.png", dpi=130)
    first = {d: [r for r in rows if r["depth"] == d and r["step"] == 0] for d in depths}
    last = {d: [r for r in rows if r["depth"] == d and r["step"] == steps - 1] for d in depths}
    ratio = {
        d: (
            first[d][0]["grad_h_norm"] / first[d][-1]["grad_h_norm"],
            last[d][0]["grad_h_norm"] / last[d][-1]["grad_h_norm"],
        )
        for d in depths
    }
    return {"rows": rows, "gradient_ratio_first_to_last_layer": ratio}


#: residual networks checked against the exact theory in the main job: (phi, B, branch depth K, branch scale)
RESIDUAL_CASES = (("relu", 8, 2, 1.0), ("tanh", 32, 1, 0.5), ("identity", 8, 1, 1.0))
RESIDUAL_SIZES = {
    "tiny": {"width": 64, "depth": 10, "networks": 4},
    "quick": {"width": 512, "depth": 60, "networks": 12},
    "paper": {"width": 1000, "depth": 200, "networks": 20},
}


def residual_networks(out: Path, preset: str = "quick") -> dict:
    """Residual BN networks (docs/theory.md section 9): the simulator against :func:`bnmft.residual_theory` for
    :data:`RESIDUAL_CASES`; ``residual_simulation.png`` (the first case) and ``residual_simulation.csv`` (per case,
    blocks 0, D/2 and D-5: measured log gradient ratio and stream variance with standard errors, theory)."""
    from ..simulate import simulate_residual
    from .plots import plot_residual

    p = RESIDUAL_SIZES[preset]
    rows = []
    for i, (phi, b, k, scale) in enumerate(RESIDUAL_CASES):
        sim = simulate_residual(phi, b, branch_depth=k, branch_scale=scale, seed=7, **p)
        if i == 0:
            plot_residual(sim.theory, out / "residual_simulation.png", simulation=sim)
        for block in (0, p["depth"] // 2, p["depth"] - 5):
            r = sim.blocks[block]
            rows.append(
                {
                    "phi": phi,
                    "batch_size": b,
                    "branch_depth": k,
                    "branch_scale": scale,
                    "width": p["width"],
                    "depth": p["depth"],
                    "networks": p["networks"],
                    "block": block,
                    "log_grad_ratio": r["log_grad_ratio"],
                    "log_grad_ratio_stderr": r["log_grad_ratio_stderr"],
                    "log_grad_ratio_theory": r["log_grad_ratio_theory"],
                    "stream_variance": r["stream_variance"],
                    "stream_variance_stderr": r["stream_variance_stderr"],
                    "stream_variance_theory": r["stream_variance_theory"],
                    "exponent": sim.theory.exponent,
                }
            )
    write_csv(out / "residual_simulation.csv", rows)
    return {"rows": rows, "settings": p}


VGG_SIZES = {
    "tiny": {"depths": (2, 4), "channels": 8, "image": 8, "seeds": 2},
    "quick": {"depths": (4, 8, 16), "channels": 32, "image": 32, "seeds": 2},
    "paper": {"depths": (4, 8, 12, 16), "channels": 64, "image": 32, "seeds": 5},
}
VGG_BETAS, VGG_EPS = (0.0, 0.5, 1.0), (1e-5, 1e-3, 0.1, 1.0)


def vgg_appendix(out: Path, preset: str = "quick") -> dict:
    """The paper's appendix claim at initialisation (VGG with BN: beta > 0 and eps > 0 help): the gradient explosion
    of a VGG-style conv-BN stack against depth for each beta and eps, measured by :func:`bnmft.probe`, with the
    theory's prediction (:mod:`bnmft.simulate.vgg`); ``vgg_gradients.png`` and ``vgg_gradients.csv``."""
    from ..simulate.vgg import gradient_explosion

    p = VGG_SIZES[preset]
    rows = gradient_explosion(p["depths"], VGG_BETAS, VGG_EPS, channels=p["channels"], image=p["image"],
                              seeds=p["seeds"])  # fmt: skip
    write_csv(out / "vgg_gradients.csv", rows)
    plt = load_pyplot()
    fig, axes = plt.subplots(1, len(VGG_BETAS), figsize=(5 * len(VGG_BETAS), 4), constrained_layout=True, sharey=True)
    for ax, beta in zip(axes, VGG_BETAS, strict=True):
        for i, eps in enumerate(VGG_EPS):
            sel = [r for r in rows if r["beta"] == beta and r["eps"] == eps]
            d = [r["depth"] for r in sel]
            ax.errorbar(d, [r["log_growth"] for r in sel], yerr=[2 * r["log_growth_stderr"] for r in sel], fmt="o",
                        color=f"C{i}", label=f"eps = {eps:g}")  # fmt: skip
            theory_values = [r["log_growth_theory"] for r in sel]
            if all(v is not None for v in theory_values):
                ax.plot(d, theory_values, "--", color=f"C{i}", lw=1)
            graph_values = [r.get("log_growth_graph") for r in sel]
            if all(v is not None for v in graph_values):
                ax.plot(d, graph_values, ":", marker="x", color=f"C{i}", lw=1.5)
        ax.axhline(0, color="gray", lw=0.8)
        ax.set_title(f"beta = {beta:g}")
        ax.set_xlabel("conv-BN-relu layers (VGG19 layout)")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel(r"$\ln(\|\partial L/\partial y^1\|^2 / \|\partial L/\partial y^L\|^2)$ (BN outputs)")
    axes[0].legend(fontsize=8, title="points: measured; dashed: per-layer theory;\ndotted x: graph prediction")
    fig.suptitle(f"VGG-style stack at init: {p['channels']} channels, {p['image']}x{p['image']} inputs, batch 8",
                 fontsize=10)  # fmt: skip
    save_figure(fig, out / "vgg_gradients.png")
    return {"rows": rows, "settings": p}
