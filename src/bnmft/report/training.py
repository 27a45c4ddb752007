"""The main job's trainability section (paper Figs 3, 4 and 5, and our residual sweeps): per sweep the accuracy
table with the theory's depth line, measured against predicted trainable depth, and a verdict on the claim.
Called by :mod:`bnmft.reproduce`."""

from __future__ import annotations

from .residual import (
    RESIDUAL_CLAIMS,
    RESIDUAL_SWEEPS,
    plain_vs_residual_report,
    plain_vs_residual_verdict,
    theory_line_text,
)

#: the paper's claim each trainability figure checks (theory.md section 6)
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


def training_report(sims: dict) -> list[str]:
    from ..experiments.agreement import median_ratio, trainable_depths
    from ..experiments.sweep import grid_table

    lines = [
        "## Trainability (paper Figs 3 and 4)",
        "",
        "Fig 4: per-layer norms over the first SGD steps (a deep network's early weights grow after one step "
        "and its gradient profile flattens).",
        "",
        "![Fig 4](fig4_first_steps.png)",
        "",
    ]
    for name, made in sims["training"].items():
        sweep = made["sweep"]
        xs, depths, table = grid_table(made["results"], sweep.x)
        rows = trainable_depths(made["results"], sweep.x)  # one row per column, with the theory's depth
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
        med, med_grid = median_ratio(rows), median_ratio(rows, "ratio")
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
        claim = PAPER_CLAIMS.get(name.removesuffix("_fashion"), "") or RESIDUAL_CLAIMS.get(name, "")
        source = "Ours" if name in RESIDUAL_SWEEPS else "Paper"
        if sweep.x == "branch_depth":
            verdict = plain_vs_residual_verdict(rows, xs, depths, table)
        elif med is None:
            verdict = "no column trains at all in this reduced run: not reproduced here"
        elif 0.5 <= med <= 2.0:
            verdict = f"consistent: the measured edge sits at {med:.2f} x the predicted depth (median over columns)"
        else:
            verdict = f"not reproduced in this reduced run: the measured edge sits at {med:.2f} x the prediction"
        lines += [f"> **{source}:** {claim} **Here:** {verdict}.", ""]
    return lines
