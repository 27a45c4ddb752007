"""The main job's finite-width sections (issue 14): the width sweep to N = 65536 with the 1/N extrapolation of
lambda_G and c* (theory at 1/N = 0), the table of the measured 1/N coefficient of lambda_G for relu and tanh at
B = 4, 8, 32, 128, their checks and report text: a section of the main job (interface: :mod:`.section`). The
simulations are cached (``.cache/width_sweep_*``, ``finite_width_*``).

The simulations use the default sampler (the conditional one at these sizes: O(N B^2) per layer), which is what
makes width 65536 affordable on a CPU.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .._io import write_csv
from . import wide_enough
from .plots import load_pyplot, save_figure
from .section import Check, Claim, Context, check_table

if TYPE_CHECKING:  # (the simulator imports torch: only the builders below need it)
    from ..simulate.extrapolation import WidthFit

NAME = "finite width (1/N)"
#: width sweep (relu, B = 32): width -> networks, per preset; depth 50 (window: layers 16 to 47)
SWEEP_WIDTHS = {
    "tiny": {32: 8, 64: 8, 128: 8},
    "quick": {64: 256, 256: 128, 1024: 64, 4096: 32, 16384: 8, 65536: 4},
    "paper": {64: 1024, 256: 512, 1024: 256, 4096: 128, 16384: 64, 65536: 32},
}
SWEEP_BATCH, SWEEP_DEPTH = 32, 50
#: the 1/N table: settings, and the networks budget (networks at width N: max(16, budget // N)); depth 60
TABLE_SETTINGS = {
    "tiny": [("relu", 8)],
    "quick": [(phi, b) for phi in ("relu", "tanh") for b in (4, 8, 32, 128)],
    "paper": [(phi, b) for phi in ("relu", "tanh") for b in (4, 8, 32, 128)],
}
TABLE_BUDGET = {"tiny": 512, "quick": 16384, "paper": 65536}
#: the share of the default one-neuron draws behind each predicted lambda_G coefficient (its standard error grows as
#: 1 / sqrt(share): 1.4x in the quick preset, which saves about a minute of the main job)
LAMBDA_SAMPLE_SHARE = {"tiny": 0.5, "quick": 0.5, "paper": 1.0}
TABLE_DEPTH = {"tiny": 12, "quick": 60, "paper": 60}


def table_widths(batch_size: int, preset: str) -> list[int]:
    """Widths of the 1/N table for one batch size: five doublings from max(64, 2B) (tiny: three from 32; quick at
    B >= 128: four, to 2048 - width 4096 at B = 128 cost a minute of the main job per nonlinearity)."""
    if preset == "tiny":
        return [32, 64, 128]
    first = max(64, 2 * batch_size)
    return [first * 2**k for k in range(4 if preset == "quick" and batch_size >= 128 else 5)]


def predicted_coefficients(phi: str, batch_size: int, simulation, preset: str = "paper") -> dict:
    """The linear-noise prediction of the 1/N coefficients over a simulation's estimation window
    (:func:`bnmft.finite_width`): ``c_star``, ``lambda_G``, ``q_star`` with ``*_stderr`` (lambda_G's from
    :data:`LAMBDA_SAMPLE_SHARE` of the default one-neuron draws)."""
    from ..meanfield import finite_width
    from ..meanfield.gradient_width import default_samples
    from ..meanfield.width_expansion import MIN_BATCH_LAMBDA

    depth = simulation.config.network.depth
    share = LAMBDA_SAMPLE_SHARE[preset]
    samples = None if share == 1 or batch_size < MIN_BATCH_LAMBDA else int(share * default_samples(batch_size))
    f = finite_width(phi, batch_size, 1024, depth=depth, window=simulation.config.window(), samples=samples)
    return {key: getattr(f, f"{key}_coefficient") for key in ("c_star", "lambda_G", "q_star")} | {
        f"{key}_stderr": getattr(f, f"{key}_coefficient_stderr") for key in ("c_star", "lambda_G", "q_star")
    } | {"expansion_parameter": f.stationary_distance**2 * f.width}  # N E D^2: the expansion is in E D^2


def _fit_row(fit: WidthFit, phi: str, networks: dict) -> dict:
    row = {"phi": phi, "batch_size": fit.batch_size, "estimate": fit.estimate, "a": fit.a, "a_stderr": fit.a_stderr,
           "b": fit.b, "b_stderr": fit.b_stderr, "c": fit.c, "c_stderr": fit.c_stderr, "theory": fit.theory,
           "b_at_theory": fit.b_at_theory, "b_at_theory_stderr": fit.b_at_theory_stderr,
           "chi2": fit.chi2, "dof": fit.dof, "widths": " ".join(map(str, fit.widths)),
           "networks": " ".join(str(networks[w]) for w in fit.widths)}  # fmt: skip
    # the width where the 1/N term is 1% of the value (where b is resolved: |b| > 2 s.e.), else the bound from
    # |b| + 2 s.e.; b with the intercept held at the theory where there is one (the free fit's b is biased by the
    # 1/N^2 terms, docs/finite_width.md section 7)
    held = fit.b_at_theory is not None and fit.b_at_theory_stderr is not None
    b, se = (fit.b_at_theory, fit.b_at_theory_stderr) if held else (fit.b, fit.b_stderr)
    value = fit.theory if held and fit.theory else fit.a
    resolved = abs(b) > 2 * se
    row["width_for_1pct"] = (abs(b) if resolved else abs(b) + 2 * se) / (0.01 * abs(value))
    row["b_resolved"] = resolved
    return row


def width_sweep(out: Path, preset: str = "quick") -> dict:
    """relu, B = 32, widths 64 ... 65536: lambda_G and c* against 1/N with the fitted ``a + b/N (+ c/N^2)`` and the
    theory at 1/N = 0, and the deviation from the theory on log-log axes with a 1/N line (``width_sweep.png``,
    ``width_sweep.csv`` per width, ``width_fits.csv``)."""
    from ..simulate import simulate_mlp
    from ..simulate.extrapolation import extrapolate

    plan = SWEEP_WIDTHS[preset]
    results = {
        n: simulate_mlp("relu", [SWEEP_BATCH], width=n, depth=SWEEP_DEPTH, networks=k, seed=3) for n, k in plan.items()
    }
    fits = {f.estimate: f for f in extrapolate(results).fits}
    predicted = predicted_coefficients("relu", SWEEP_BATCH, next(iter(results.values())), preset)
    rows = []
    for n, res in results.items():
        s = res.summaries[0]
        rows.append({"width": n, "batch_size": SWEEP_BATCH, "networks": s.networks,
                     "sampler": res.config.network.sampler, "lambda_G": s.lambda_G_mean,
                     "lambda_stderr": s.lambda_G_stderr, "lambda_theory": s.lambda_G_theory,
                     "c_star": s.c_star_mean, "c_stderr": s.c_star_stderr, "c_theory": s.c_star_theory,
                     "c_dev": abs(s.c_star_mean - s.c_star_theory),
                     "lambda_dev": abs(s.lambda_G_mean - s.lambda_G_theory)})  # fmt: skip
    n = np.array(list(plan), dtype=float)
    c_dev = np.array([r["c_dev"] for r in rows])
    # the slope of the c* deviation over the widths where it stands above its noise
    above = np.array([r["c_dev"] > 2 * r["c_stderr"] for r in rows])
    use = above if above.sum() >= 2 else np.ones_like(above)
    slope = float(np.polyfit(np.log(n[use]), np.log(c_dev[use]), 1)[0])
    _plot_sweep(rows, fits, slope, predicted, out / "width_sweep.png")
    write_csv(out / "width_sweep.csv", rows)
    fit_rows = [_with_prediction(_fit_row(f, "relu", plan), predicted) for f in fits.values()]
    write_csv(out / "width_fits.csv", fit_rows)
    return {"slope": slope, "rows": rows, "fits": fit_rows}


def _with_prediction(row: dict, predicted: dict) -> dict:
    """The fit's row with the predicted coefficient (``b_predicted``, ``b_predicted_stderr``) beside the measured."""
    key = row["estimate"]
    b, se = predicted.get(key), predicted.get(f"{key}_stderr")
    # the width where the predicted 1/N term is 1% of the value (a bound from |b| + 2 s.e. where b is not resolved)
    need = None if b is None else (abs(b) if abs(b) > 2 * se else abs(b) + 2 * se) / (0.01 * abs(row["theory"]))
    return row | {"b_predicted": b, "b_predicted_stderr": se, "width_for_1pct_predicted": need,
                  "expansion_parameter": predicted["expansion_parameter"]}  # fmt: skip


def _plot_sweep(rows: list[dict], fits: dict[str, WidthFit], slope: float, predicted: dict, path: Path) -> Path:
    plt = load_pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), constrained_layout=True)
    inv = np.array([1 / r["width"] for r in rows])
    grid = np.linspace(0, inv.max() * 1.05, 200)
    for ax, key, se, label in ((axes[0], "lambda_G", "lambda_stderr", r"$\lambda_G$"),
                               (axes[1], "c_star", "c_stderr", r"$c^*$")):  # fmt: skip
        fit = fits[key]
        ax.errorbar(inv, [r[key] for r in rows], yerr=[r[se] for r in rows], fmt="o", ms=4, label="simulation")
        curve = fit.a + fit.b * grid + (fit.c or 0.0) * grid**2
        quad = " + c/N²" if fit.c is not None else ""
        ax.plot(grid, curve, "C0-", lw=1, label=f"fit a + b/N{quad}: b = {fit.b:.3g} ± {fit.b_stderr:.2g}")
        ax.errorbar(
            [0], [fit.a], yerr=[fit.a_stderr], fmt="s", color="C2", ms=5, label=f"a = {fit.a:.5f} ± {fit.a_stderr:.1g}"
        )
        ax.plot([0], [fit.theory], "k*", ms=11, label=f"theory {fit.theory:.5f}")
        b_pred = predicted[key]
        ax.plot(grid, fit.theory + b_pred * grid, "k--", lw=1,
                label=f"predicted theory + b/N: b = {b_pred:.3g} ± {predicted[key + '_stderr']:.1g}")  # fmt: skip
        ax.set_xlabel("1 / width")
        ax.set_ylabel(label)
        ax.set_title(f"relu, B = {SWEEP_BATCH}: {label} against 1/N")
        ax.legend(fontsize=7)
        ax.grid(True, alpha=0.3)
    ax = axes[2]
    n = np.array([r["width"] for r in rows], dtype=float)
    c_dev = np.array([r["c_dev"] for r in rows])
    ax.errorbar(n, c_dev, yerr=[r["c_stderr"] for r in rows], fmt="o-", label=r"$|c^*_{sim} - c^*|$")
    ax.errorbar(n, [r["lambda_dev"] for r in rows], yerr=[r["lambda_stderr"] for r in rows], fmt="s-",
                label=r"$|\lambda_{G,sim} - \lambda_G|$")  # fmt: skip
    ax.loglog(n, c_dev[0] * n[0] / n, "k--", lw=0.8, label="slope -1 (1/N)")
    ax.set_xlabel("width N")
    ax.set_ylabel("deviation from the mean field theory")
    ax.set_title(f"fitted slope of the c* deviation {slope:.2f}")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    return save_figure(fig, path, dpi=150)


def finite_width_table(out: Path, preset: str = "quick") -> dict:
    """The measured 1/N coefficient of lambda_G (and c*) for relu and tanh at B = 4, 8, 32, 128 (``finite_width.csv``):
    widths of :func:`table_widths`, networks max(16, budget / N), depth 60, each fitted as a + b/N (+ c/N^2)."""
    from ..simulate import simulate_mlp
    from ..simulate.extrapolation import extrapolate

    rows, distances = [], []
    wanted = dict(wide_enough.DISTANCE[preset])
    for phi, b in TABLE_SETTINGS[preset]:
        plan = {n: max(16, TABLE_BUDGET[preset] // n) for n in table_widths(b, preset)}
        results = {
            n: simulate_mlp(phi, [b], width=n, depth=TABLE_DEPTH[preset], networks=k, seed=7) for n, k in plan.items()
        }
        if phi == "relu" and b in wanted:  # the distance to BSB1 per network and layer, for "how wide is wide enough"
            distances += [{"batch_size": b, "width": n, "distance": results[n].runs[b].distance.numpy()}
                          for n in wanted[b]]  # fmt: skip
        predicted = predicted_coefficients(phi, b, next(iter(results.values())), preset)
        outside = outside_expansion(phi, b)
        rows += [_with_prediction(_fit_row(f, phi, plan), predicted) | {"outside_expansion": outside}
                 for f in extrapolate(results).fits if f.estimate in ("lambda_G", "c_star")]  # fmt: skip
    write_csv(out / "finite_width.csv", rows)
    return {"rows": rows, "depth": TABLE_DEPTH[preset], "distances": distances}


def run(ctx: Context) -> dict:
    """The width sweep and the 1/N table (imports torch), cached."""
    table = ctx.cached("finite_width", lambda: finite_width_table(ctx.out, ctx.preset))
    return {
        "width_sweep": ctx.cached("width_sweep", lambda: width_sweep(ctx.out, ctx.preset)),
        "finite_width": table,
        "wide_enough": ctx.cached("wide_enough", lambda: wide_enough.study(
            ctx.out, table["distances"], table["depth"], table["rows"], ctx.preset)),
    }


def _predicted(row: dict) -> str:
    if row.get("b_predicted") is None:
        return "none (B < 6: infinite variance)"
    return f"{row['b_predicted']:.3g} +- {row['b_predicted_stderr']:.1g}"


def _held(row: dict) -> str:
    return "-" if row.get("b_at_theory") is None else f"{row['b_at_theory']:.3g} +- {row['b_at_theory_stderr']:.2g}"


def outside_expansion(phi: str, batch_size: int) -> str | None:
    """Why the linear-noise 1/N coefficients do not describe the simulations at (phi, B) (None where they should):
    relu above its critical batch size, where finite networks leave BSB1 for the outlier state (docs/outlier.md)."""
    from ..meanfield import outlier_state

    critical = outlier_state(phi, batch_size).critical_batch_size
    if critical is not None and batch_size >= critical:
        return f"B >= {critical:g}: the batch drifts to the outlier state"
    return None


def prediction_checks(rows: list[dict]) -> list[Check]:
    """Each predicted 1/N coefficient against the measured one with the intercept held at the theory, where the
    expansion applies (:func:`outside_expansion`): 3 combined standard errors + 10% of the prediction (the
    O(1/N^2) terms the window's widths leave in the measured b; docs/finite_width.md)."""
    out = []
    for r in rows:
        if r.get("b_predicted") is None or r.get("b_at_theory") is None or r["outside_expansion"]:
            continue
        allow = 3 * math.hypot(r["b_at_theory_stderr"], r["b_predicted_stderr"]) + 0.1 * abs(r["b_predicted"])
        out.append(Check(f"{r['phi']} B={r['batch_size']} {r['estimate']}: 1/N coefficient measured (intercept at "
                         "the theory) vs predicted", r["b_at_theory"], r["b_predicted"],
                         abs(r["b_at_theory"] - r["b_predicted"]), allow))  # fmt: skip
    return out


def checks(data: dict) -> list[Check]:
    """The extrapolated (1/N -> 0) lambda_G and c* against the theory: 4 standard errors of the intercept (c* also
    + 1e-3 relative: at B = 128 the deep finite-width state drifts from BSB1, see the report)."""
    result = []
    for r in data["width_sweep"]["fits"] + [r for r in data["finite_width"]["rows"] if r["estimate"] == "lambda_G"]:
        if r["theory"] is None:
            continue
        allow = 4 * r["a_stderr"] + (1e-3 * abs(r["theory"]) if r["estimate"] == "c_star" else 0.0)
        name = (
            f"{r['phi']} B={r['batch_size']} {r['estimate']} extrapolated to 1/N = 0 (widths {r['widths']}) vs theory"
        )
        result.append(Check(name, r["a"], r["theory"], abs(r["a"] - r["theory"]), allow))
    return result + prediction_checks(data["finite_width"]["rows"]) + wide_enough.checks(data["wide_enough"])


def claims(data: dict) -> list[Claim]:
    return []


def appendix(data: dict) -> str:
    return ""


def text(data: dict) -> str:
    sweep, table = data["width_sweep"], data["finite_width"]
    fits = {r["estimate"]: r for r in sweep["fits"]}
    lam, c = fits["lambda_G"], fits["c_star"]
    widest = max(r["width"] for r in sweep["rows"])
    conditional = [r["width"] for r in sweep["rows"] if r["sampler"] == "conditional"]
    sampler = f"the conditional sampler from width {min(conditional)}" if conditional else "the dense sampler"
    outside = sorted({f"{r['phi']} B={r['batch_size']} ({r['outside_expansion']})" for r in table["rows"]
                      if r["outside_expansion"]})  # fmt: skip
    lines = [
        "## Finite width: extrapolation in 1/N",
        "",
        f"relu, B = {SWEEP_BATCH}, widths {min(r['width'] for r in sweep['rows'])} to {widest} ({sampler}), "
        f"each estimate fitted as a + b/N (+ c/N^2 where chi^2 asks for it): lambda_G extrapolates to "
        f"{lam['a']:.5f} +- {lam['a_stderr']:.5f} (theory {lam['theory']:.5f}; b = {lam['b']:.3g} +- "
        f"{lam['b_stderr']:.2g}), c* to {c['a']:.5f} +- {c['a_stderr']:.5f} (theory {c['theory']:.5f}; b = "
        f"{c['b']:.3g} +- {c['b_stderr']:.2g}). The c* deviation falls like N^{sweep['slope']:.2f}.",
        "",
        "![width sweep](width_sweep.png)",
        "",
        f"The 1/N coefficient b of lambda_G (depth {table['depth']}, window from layer {table['depth'] // 3}): the "
        "theory holds to 1% from a width of about |b| / (0.01 lambda_G) (where b is not "
        "resolved, |b| + 2 s.e. gives a bound). b is measured twice: by the free fit a + b/N (+ c/N^2), and with "
        "the intercept held at the theory (N (X(N) - theory) fitted as b + c/N (+ d/N^2)), which the O(1/N^2) "
        "terms do not bias - they are large here: the expansion parameter is the squared distance to BSB1, "
        + ", ".join(f"{r['expansion_parameter']:.0f}/N ({r['phi']} {r['batch_size']})" for r in table["rows"]
                    if r["estimate"] == "lambda_G")
        + ". The prediction is the linear-noise theory's (`bnmft.finite_width`, no free "
        "parameter, over the same window; docs/finite_width.md).",
        "",
        "| phi | B | widths | lambda_G at 1/N = 0 | theory | b (free fit) | b (intercept at theory) | b predicted | "
        "width for 1% |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table["rows"]:
        if r["estimate"] != "lambda_G":
            continue
        width = f"{r['width_for_1pct']:.0f}" if r["b_resolved"] else f"< {r['width_for_1pct']:.0f}"
        lines.append(f"| {r['phi']} | {r['batch_size']} | {r['widths'].split()[0]}-{r['widths'].split()[-1]} | "
                     f"{r['a']:.4f} +- {r['a_stderr']:.4f} | {r['theory']:.4f} | {r['b']:.3g} +- {r['b_stderr']:.2g}"
                     f"{' (+ c/N^2)' if r['c'] is not None else ''} | {_held(r)} | {_predicted(r)} | "
                     f"{width} |")  # fmt: skip
    lines += [
        "",
        "The same for c* (the batch's mean correlation), whose 1/N coefficient the linear-noise theory predicts from "
        "the fluctuations of the examples' norms and angles (docs/finite_width.md):",
        "",
        "| phi | B | c* at 1/N = 0 | theory | b (free fit) | b (intercept at theory) | b predicted |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in table["rows"]:
        if r["estimate"] == "c_star":
            lines.append(f"| {r['phi']} | {r['batch_size']} | {r['a']:.5f} +- {r['a_stderr']:.5f} | "
                         f"{r['theory']:.5f} | {r['b']:.3g} +- {r['b_stderr']:.2g}"
                         f"{' (+ c/N^2)' if r['c'] is not None else ''} | {_held(r)} | {_predicted(r)} |")  # fmt: skip
    lines += [
        "",
        'At large B the finite-width Gram matrix of relu networks drifts away from BSB1 with depth, to the outlier '
        "state (below, docs/outlier.md), so there the measured coefficients belong to this depth window and "
        "the linear-noise prediction, an expansion around BSB1, does not apply"
        + (": " + "; ".join(outside) if outside else " (no setting of this table is there)") + ".",
        "",
        *wide_enough.text(data["wide_enough"], table["rows"]),
        "### Checks: extrapolation to infinite width and the predicted 1/N coefficients",
        "",
        *check_table(checks(data)),
        "",
    ]
    return "\n".join(lines)
