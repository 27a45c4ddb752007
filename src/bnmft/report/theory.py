"""The main job's theory section: the mean-field table (q*, c*, mu*, lambda_G, depth scale and max trainable depth
for several nonlinearities over batch sizes 4 ... 4096 and inf; in the report's appendix), the engine's checks
against independent references (closed forms through the general quadrature path, the Gegenbauer series, the check
values of docs/theory.md, propagation), symmetry breaking, the eps > 0 phase diagrams and a propagated batch.

Writes ``theory_table.csv`` / ``.json``, ``theory_lambda_G.png``, ``symmetry_breaking.png``, ``propagation.png``,
``eps_phase_tanh.png`` and ``eps_phase_relu.png``. No torch.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..meanfield import gegenbauer_series, propagate, theory
from ..meanfield.closed_forms import homogeneous
from ..meanfield.result import SUMMARY_KEYS
from ..meanfield.symmetry import symmetry_breaking_alpha
from ..nonlinearity import get_nonlinearity
from .plots import (
    dense_batch_sizes,
    plot_eps_phase_diagram,
    plot_propagation,
    plot_symmetry_breaking,
    plot_theory_curves,
)
from .section import Check, Claim, Context, anchor, check_table

NAME = "theory (table, checks, symmetry, eps, propagation)"
APPENDIX_TITLE = "Appendix: the theory table"

#: (label, spec, keyword arguments) of the nonlinearities in the table
PHIS = (
    ("relu", "relu", {}),
    ("tanh", "tanh", {}),
    ("tanh, gamma=0.5", "tanh", {"gamma": 0.5}),
    ("relu, beta=1", "relu", {"beta": 1.0}),
    ("alpha_relu, alpha=2", "alpha_relu", {"alpha": 2.0}),
    ("gelu", "gelu", {}),
    ("selu", "selu", {}),
    ("sin", "sin", {}),
    ("identity", "identity", {}),
)
TABLE_BATCH_SIZES = (4, 5, 6, 8, 16, 32, 64, 128, 256, 1024, 4096, math.inf)
SYMMETRY_BATCH_SIZES = (5, 6, 8, 12, 16, 32, 64, 128, 256, 1024)
RELU_CHECKS = {4: (0.1695, 3.0841), 8: (0.2501, 1.7882), 32: (0.3023, 1.5220)}  # docs/theory.md 2.5, 3.4
EPS_SPECS, EPS_BATCH, EPS_VALUES = ("tanh", "relu"), 32, (1e-3, 0.1, 0.5, 2.0)


def run(ctx: Context) -> dict:
    """Compute the table, the checks, symmetry breaking, the eps rows and the propagation example; write the
    section's figures and the table files into ``ctx.out``."""
    out = ctx.out
    dense = dense_batch_sizes(4, 4096, 40)
    jobs = [(label, spec, kw, b) for label, spec, kw in PHIS for b in sorted(set(dense) | set(TABLE_BATCH_SIZES))]
    curves: dict[str, list] = {label: [] for label, _, _ in PHIS}
    rows = []
    for label, spec, kw, b in tqdm(jobs, desc="theory", unit="point", disable=ctx.quiet, file=sys.stderr):
        r = theory(spec, b, **kw)
        curves[label].append(r)
        if b in TABLE_BATCH_SIZES:
            rows.append({"label": label, **r.to_dict()})
    _write_table(rows, out)
    plot_theory_curves(curves, out / "theory_lambda_G.png", title="BN mean field theory (eps = 0)")
    symmetry = [
        symmetry_breaking_alpha(b)
        for b in tqdm(SYMMETRY_BATCH_SIZES, desc="symmetry", disable=ctx.quiet, file=sys.stderr)
    ]
    plot_symmetry_breaking(symmetry, out / "symmetry_breaking.png")
    prop = _propagation_example()
    plot_propagation(prop, out / "propagation.png")
    for spec in EPS_SPECS:  # docs/theory.md section 6: the eps phase diagram
        plot_eps_phase_diagram(spec, [8, 32], [1e-3, 10.0], out / f"eps_phase_{spec}.png")
    eps = [(spec, e, theory(spec, EPS_BATCH, eps=e)) for spec in EPS_SPECS for e in EPS_VALUES]
    return {
        "rows": rows,
        "symmetry": symmetry,
        "eps": eps,
        "checks": _engine_checks() + _propagation_checks(prop),
    }


def checks(data: dict) -> list[Check]:
    return data["checks"]


def claims(data: dict) -> list[Claim]:
    return []


def _write_table(rows: list[dict], out: Path) -> None:
    keys = ["label", *(k for k in SUMMARY_KEYS if k != "params")]
    with open(out / "theory_table.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    (out / "theory_table.json").write_text(json.dumps(rows, indent=2))


def _engine_checks() -> list[Check]:
    """The engine against independent references.

    The docs/theory.md check values are printed to 4 decimals: the engine's value rounded to 4 decimals must equal
    them (difference measured after rounding). The others are relative differences.
    """
    checks = []
    for b, (c_ref, lam_ref) in RELU_CHECKS.items():
        r = theory("relu", b, method="quadrature")
        for name, value, ref in (("c*", r.c_star, c_ref), ("lambda_G", r.lambda_G, lam_ref)):
            checks.append(
                Check(f"relu {name} B={b}, docs/theory.md (4 decimals)", value, ref, abs(round(value, 4) - ref), 1e-12)
            )
    for a in (1.0, 2.0, 3.0):
        for b in (4, 32, 1024):
            r = theory("alpha_relu", b, alpha=a, method="quadrature")
            ref = homogeneous(a, b)["lambda_G"]
            checks.append(
                Check(
                    f"alpha_relu a={a:g} lambda_G B={b}: quadrature vs closed form",
                    r.lambda_G,
                    ref,
                    abs(r.lambda_G / ref - 1),
                    1e-9,
                )
            )
    for spec in ("tanh", "gelu", "sin"):
        for b in (4, 8, 32):
            r, g = theory(spec, b), gegenbauer_series(get_nonlinearity(spec), b)
            checks.append(
                Check(
                    f"{spec} lambda_G B={b}: quadrature vs Gegenbauer series",
                    r.lambda_G,
                    g.lambda_G,
                    abs(r.lambda_G / g.lambda_G - 1),
                    1e-10,
                )
            )
    for b in (4, 8, 64, 1024):
        closed, general = theory("relu", b), theory("relu(z)", b)
        for key in ("lambda_L", "lambda_M"):
            checks.append(
                Check(
                    f"relu {key} B={b}: quadrature vs closed form",
                    getattr(general, key),
                    getattr(closed, key),
                    abs(getattr(general, key) / getattr(closed, key) - 1),
                    1e-9,
                )
            )
    for b in (8, 1024, 100000):
        r = theory("z", b)
        ref = (b - 2) / (b - 3)
        checks.append(
            Check(
                f"identity (as the expression 'z') lambda_G B={b}: quadrature vs (B-2)/(B-3)",
                r.lambda_G,
                ref,
                abs(r.lambda_G / ref - 1),
                1e-12,
            )
        )
    return checks


def _propagation_example():
    """Fig 2-like setting for ReLU: a batch of 16 Gaussian inputs and a copy that differs in one example."""
    rng = np.random.default_rng(2019)
    x = rng.standard_normal((16, 64))
    x2 = x.copy()
    x2[0] = rng.standard_normal(64)
    return propagate("relu", x, 30, inputs2=x2, samples=100_000, seed=1)


def _propagation_checks(prop) -> list[Check]:
    top = max(prop.theory.lambda_L, prop.theory.lambda_M)
    rate = prop.distance[-1] / prop.distance[-2]
    return [
        Check(
            "relu B=16: per-layer contraction of the exact Gram map at depth 30 vs max(lambda_L, lambda_M)",
            rate,
            top,
            abs(rate / top - 1),
            1e-3,
        )
    ]


def text(data: dict) -> str:
    lines = [
        "## Mean-field theory (eps = 0)",
        "",
        "![lambda_G against batch size](theory_lambda_G.png)",
        "",
        "q*, c*, lambda_G and the maximum trainable depth of each nonlinearity at each batch size: "
        f"[the theory table](#{anchor(APPENDIX_TITLE)}) (appendix).",
        "",
        "### Checks against independent references",
        "",
        *check_table(checks(data)),
        "",
        "## Symmetry breaking (alpha_relu)",
        "",
        "BSB1 stops being attracting when max(lambda_L, lambda_M) crosses 1; the crossing eigenvalue is "
        "lambda_L (the examples' norms separate: a few examples come to dominate the batch).",
        "",
        "![alpha* against batch size](symmetry_breaking.png)",
        "",
        "| B | alpha* | crossing |",
        "|---|---|---|",
    ]
    for s in data["symmetry"]:
        star = f"none <= {s.alpha_max:g}" if math.isinf(s.alpha_star) else f"{s.alpha_star:.8g}"
        lines.append(f"| {s.batch_size} | {star} | {s.eigenvalue or '-'} |")
    lines += [
        "",
        "## eps > 0 (docs/theory.md section 6)",
        "",
        "lambda_G and lambda_W against eps, with the transition eps_c = kappa_c sigma_w^2 (dotted). tanh has a "
        "true critical point at eps = sigma_w^2, where the trainable depth diverges; relu's weight-gradient "
        "rate only drops a little.",
        "",
        "![tanh](eps_phase_tanh.png)",
        "",
        "![relu](eps_phase_relu.png)",
        "",
        "| phi | B | eps | phase | kappa_c | lambda_G | lambda_W | max depth |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for spec, e, r in data["eps"]:
        lines.append(
            f"| {spec} | {EPS_BATCH} | {e:g} | {r.phase} | {r.kappa_c:.6g} | {r.lambda_G:.8g} | "
            f"{r.lambda_W:.8g} | {r.max_trainable_depth:.4g} |"
        )
    lines += ["", "## Propagating a real batch", "", "![propagation](propagation.png)", ""]
    return "\n".join(lines)


def appendix(data: dict) -> str:
    lines = [
        f"## {APPENDIX_TITLE}",
        "",
        "Mean-field predictions at initialisation (eps = 0; `theory_table.csv` / `.json` hold every column).",
        "",
        "| phi | B | q* | c* | lambda_G | max depth | method |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        depth = r["max_trainable_depth"]
        depth = depth if isinstance(depth, str) else f"{depth:.4g}"
        lines.append(
            f"| {r['label']} | {r['batch_size']} | {r['q_star']:.8g} | {r['c_star']:.8g} | "
            f"{r['lambda_G']:.10g} | {depth} | {r['method']} |"
        )
    return "\n".join(lines) + "\n"
