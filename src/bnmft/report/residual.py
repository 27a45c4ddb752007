"""The main job's residual-network section (docs/theory.md section 9): the simulator against the exact theory, with
its checks (a section of the main job, interface: :mod:`.section`; the simulation is cached, ``.cache/residual_*``),
and for :mod:`.training` the plain-vs-residual figure, verdict and our claims for the residual sweeps."""

from __future__ import annotations

import textwrap
from pathlib import Path

from .section import Check, Claim, Context, check_table

NAME = "residual networks (simulation)"

#: our claims for the residual sweeps (the paper has none): sweep name -> claim
RESIDUAL_CLAIMS = {
    "resnet_batch": (
        "Residual BN networks train until the gradient has grown by e^16 from the last block to the first "
        "(the paper's 16 / ln lambda_G criterion, read as a total growth; docs/theory.md section 9)."
    ),
    "resnet_vs_plain": (
        "At equal depth, residual BN networks train where plain ones cannot: their gradient grows polynomially, "
        "not exponentially."
    ),
}
RESIDUAL_SWEEPS = (*RESIDUAL_CLAIMS, "tiny_resnet_vs_plain")


def allowance(row: dict) -> float:
    """3 standard errors plus the finite-width allowance of tests/simulate/test_residual_sim.py (5% at N = 512), scaled
    like 1/N (the measured trend of the deviation)."""
    return 3 * row["log_grad_ratio_stderr"] + 0.05 * (512 / row["width"]) * abs(row["log_grad_ratio_theory"])


def run(ctx: Context) -> dict:
    """Residual BN networks from the simulator against the theory (imports torch), cached."""
    from .figures import residual_networks

    return {"residual": ctx.cached("residual", lambda: residual_networks(ctx.out, ctx.preset))}


def checks(data: dict) -> list[Check]:
    result = []
    for r in data["residual"]["rows"]:
        what = (
            f"residual {r['phi']} B={r['batch_size']} K={r['branch_depth']} branch_scale={r['branch_scale']:g}: ln "
            f"gradient ratio at block {r['block']} of {r['depth']}, simulation (width {r['width']}) vs theory"
        )
        value, ref = r["log_grad_ratio"], r["log_grad_ratio_theory"]
        result.append(Check(what, value, ref, abs(value - ref), allowance(r)))
    return result


def claims(data: dict) -> list[Claim]:
    return []


def appendix(data: dict) -> str:
    return ""


def plain_vs_residual_figure(results: list[dict], path: Path, title: str) -> Path:
    """Test accuracy against depth, one line per branch depth (0: plain), with each one's theory depth (dotted)."""
    from ..experiments.agreement import theory_depth_for
    from ..experiments.sweep import grid_table
    from .plots import load_pyplot, save_figure

    plt = load_pyplot()
    xs, depths, table = grid_table(results, "branch_depth")
    fig, ax = plt.subplots(figsize=(6, 4.2), constrained_layout=True)
    base = results[0]["config"]
    for j, k in enumerate(xs):
        color = f"C{j}"
        label = "plain" if k == 0 else f"residual, K = {k}"
        ax.plot(depths, [row[j] for row in table], "o-", color=color, label=label)
        line = theory_depth_for(base, "branch_depth", k)
        if line is not None and line <= 4 * max(depths):
            ax.axvline(line, color=color, ls=":", lw=1.2, label=f"{label}: theory depth {line:.0f}")
        elif line is not None:
            ax.plot([], [], " ", label=f"{label}: theory depth {line:.3g} (off the chart)")
    ax.set_xscale("log")
    ax.set_xlabel("depth (layers; residual: blocks of K layers)")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.axhline(0.1, color="gray", lw=0.8)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("\n".join(textwrap.wrap(title, 70)), fontsize=9)
    return save_figure(fig, path)


def text(data: dict) -> str:
    rows = data["residual"]["rows"]
    p = data["residual"]["settings"]
    found = checks(data)
    ok = sum(c.passed for c in found)
    lines = [
        "## Residual BN networks (ours: docs/theory.md section 9, docs/residual.md)",
        "",
        f"Exact per-block mean field (`bnmft.residual_theory`) against {p['networks']} simulated networks of width "
        f"{p['width']} and {p['depth']} blocks (`bnmft.simulate.simulate_residual`): the log squared-gradient ratio "
        "ln(E||dL/dx^l||^2 / E||dL/dx^D||^2) and the stream's variance, mean and standard error across networks.",
        "",
        "![residual simulation](residual_simulation.png)",
        "",
        "| phi | B | K | scale | block | ln ratio simulated | s.e. | theory | variance simulated | theory | exponent |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['phi']} | {r['batch_size']} | {r['branch_depth']} | {r['branch_scale']:g} | {r['block']} | "
            f"{r['log_grad_ratio']:.4f} | {r['log_grad_ratio_stderr']:.4f} | {r['log_grad_ratio_theory']:.4f} | "
            f"{r['stream_variance']:.4f} | {r['stream_variance_theory']:.4f} | {r['exponent']:.4f} |"
        )
    lines += [
        "",
        f"{ok} of {len(found)} within 3 standard errors plus the finite-width allowance (5% at width 512, scaled "
        "like 1/N). The gradient grows as a power of the stream variance with exponent lambda_G^K, not "
        "exponentially in depth.",
        "",
        "### Checks: residual networks",
        "",
        *check_table(found),
        "",
    ]
    return "\n".join(lines)


def plain_vs_residual_report(name: str, figure: str) -> list[str]:
    return [f"Plain against residual networks at equal depth (`{name}`):", "", f"![plain vs residual]({figure})", ""]


def theory_line_text(name: str) -> str:
    """What the last row of a sweep's accuracy table is."""
    if name in RESIDUAL_SWEEPS:
        return (
            "the theory's maximum trainable depth: for residual networks the deepest network whose gradient grows "
            "by at most e^16 from the last block to the first (`bnmft.residual_theory`, output gradient centred by the "
            "final BN), for plain ones 16 / ln max(lambda_G, lambda_W)"
        )
    return (
        "the theory's maximum trainable depth 16 / ln max(lambda_G, lambda_W) at the cells' eps (at eps = 1e-3 "
        "this is the paper's white line)"
    )


def plain_vs_residual_verdict(rows: list[dict], xs: list, depths: list, table: list[list]) -> str:
    """The verdict of a plain-vs-residual sweep: where each column stops training, against its theory depth."""
    parts = []
    for j, (k, row) in enumerate(zip(xs, rows, strict=True)):
        kind = "plain" if k == 0 else f"residual (K = {k})"
        theory = row["theory_depth"]
        predicted = "-" if theory is None else f"{theory:.3g}"
        if row["censored"]:
            deepest = table[-1][j]
            parts.append(
                f"{kind} still trains at depth {depths[-1]} (accuracy {deepest:.2f}; theory depth {predicted})"
            )
        elif row["crossing_depth"] is not None:
            parts.append(f"{kind} stops at depth ~{row['crossing_depth']:.0f} (theory depth {predicted})")
        else:
            parts.append(f"{kind} does not train (theory depth {predicted})")
    return "; ".join(parts)
