"""The finite-width section's part "how wide is wide enough" (docs/finite_width.md, docs/outlier.md): the distance of
the batch geometry to BSB1 against depth, measured in the 1/N table's own simulations beside the linear-noise
prediction and the outlier state's level, and the validity map of the mean field over batch size and width.

Called by :mod:`.width` (it owns the simulations); numbers come from :mod:`bnmft.meanfield` only.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .._io import write_csv
from .plots import load_pyplot, save_figure
from .section import Check

#: the distance figure: relu, per preset the (batch size, widths) taken from the 1/N table's simulations
DISTANCE = {
    "tiny": [(8, (32, 128))],
    "quick": [(32, (256, 1024)), (128, (256, 1024))],
    "paper": [(32, (256, 1024)), (128, (256, 1024))],
}
#: the linear-noise prediction is checked where it holds: predicted stationary distance below this, and no outlier
#: state at this B (docs/finite_width.md: the expansion parameter is the squared distance)
LINEAR_REGIME = 0.7
#: to this relative accuracy (rms distance over the networks against the predicted root of E D^2; measured
#: deviations 1-8%, docs/finite_width.md), plus 3 standard errors of the measured rms
LINEAR_TOLERANCE = 0.08
#: the validity map: relu's escape to the outlier state, batch sizes above the critical one and the width grid
ESCAPE_BATCHES = (64, 96, 128, 192, 256)
ESCAPE_WIDTHS = tuple(2**k for k in range(8, 17, 2))
#: the depths the map answers for, and per preset the Monte Carlo draws of each escape estimate
MAP_DEPTHS = (60, 200)
ESCAPE_SAMPLES = {"tiny": 10_000, "quick": 10_000, "paper": 20_000}
#: conv-BN stacks (relu, periodic, docs/conv_width.md): per preset the (batch size, image) settings, the channel
#: grid and the chain's replicas (100: mean depth to about 5%; ~30 s for the quick grid)
CONV = {
    "tiny": ([(8, (4, 4))], (8, 16), 100),
    "quick": ([(8, (8, 8)), (16, (4, 4))], (32, 64, 128), 100),
    "paper": ([(8, (8, 8)), (16, (4, 4))], (32, 64, 128, 256, 512), 400),
}


def outlier_distance(rho: float, b: int) -> float:
    """The distance to BSB1 of the S_{B-1}-symmetric state with one example's centred-norm ratio rho
    (docs/outlier.md: S proportional to ``k v v^T + P_W`` with ``k = rho B (B-2) / ((B-1)^2 - rho)``):
    ``|k - 1| sqrt(B - 2) / (k + B - 2)``."""
    k = rho * b * (b - 2) / ((b - 1) ** 2 - rho)
    return abs(k - 1) * math.sqrt(b - 2) / (k + b - 2)


def distance_rows(distances: list[dict], depth: int) -> dict:
    """The measured distance to BSB1 (``distances``: dicts ``batch_size``, ``width``, ``distance`` - an array
    (networks, layers) - relu, Gaussian inputs of dimension N) beside the linear-noise prediction: tidy rows (one
    per B, N, layer) and one curve summary per (B, N) with the stationary prediction and the outlier state's level."""
    from ..meanfield import fluctuations, outlier_state

    rows, curves = [], []
    for item in sorted(distances, key=lambda x: (x["batch_size"], x["width"])):
        b, n, dist = item["batch_size"], item["width"], np.asarray(item["distance"], dtype=float)
        fl = fluctuations("relu", b)
        predicted = fl.distance(n, depth)
        o = outlier_state("relu", b)
        rms = np.sqrt(np.mean(dist**2, axis=0))
        se = np.std(dist**2, axis=0, ddof=1) / math.sqrt(dist.shape[0]) / (2 * rms)  # delta method on mean D^2
        for layer in range(depth):
            rows.append({"phi": "relu", "batch_size": b, "width": n, "networks": dist.shape[0], "layer": layer + 1,
                         "measured_rms": float(rms[layer]), "measured_rms_stderr": float(se[layer]),
                         "measured_p10": float(np.quantile(dist[:, layer], 0.1)),
                         "measured_p90": float(np.quantile(dist[:, layer], 0.9)),
                         "predicted": predicted[layer]["distance"]})  # fmt: skip
        curves.append({"batch_size": b, "width": n, "stationary": fl.stationary_distance(n), "saddle": o.saddle,
                       "outlier": None if o.stable is None else outlier_distance(o.stable, b)})  # fmt: skip
    return {"rows": rows, "curves": curves, "depth": depth}


def plot_distance(study: dict, path: Path) -> Path:
    """Per batch size: the measured rms distance and its 10-90% band per width, the prediction dashed, and the
    outlier state's level dotted."""
    plt = load_pyplot()
    curves, rows = study["curves"], study["rows"]
    batch_sizes = sorted({c["batch_size"] for c in curves})
    fig, axes = plt.subplots(1, len(batch_sizes), figsize=(6.5 * len(batch_sizes), 4.2), constrained_layout=True,
                             squeeze=False)  # fmt: skip
    for ax, b in zip(axes[0], batch_sizes, strict=True):
        level = None
        for i, c in enumerate(c for c in curves if c["batch_size"] == b):
            sel = [r for r in rows if r["batch_size"] == b and r["width"] == c["width"]]
            layers = [r["layer"] for r in sel]
            ax.fill_between(layers, [r["measured_p10"] for r in sel], [r["measured_p90"] for r in sel],
                            color=f"C{i}", alpha=0.2, lw=0)  # fmt: skip
            ax.plot(layers, [r["measured_rms"] for r in sel], color=f"C{i}", lw=1.5,
                    label=f"N = {c['width']}: simulated (rms, 10-90% band)")  # fmt: skip
            ax.plot(layers, [r["predicted"] for r in sel], "--", color=f"C{i}", lw=1.2,
                    label=f"N = {c['width']}: linear-noise prediction")  # fmt: skip
            level = c["outlier"]
        if level is not None:
            ax.axhline(level, color="k", ls=":", lw=1, label=f"outlier state (one example dominant): {level:.2f}")
        ax.set_xlabel("layer")
        ax.set_ylabel("distance to BSB1  ||S - P|| / ||P||")
        ax.set_title(f"relu, B = {b}")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, path, dpi=150)


def escape_widths(depths: tuple[int, ...] = MAP_DEPTHS, samples: int = ESCAPE_SAMPLES["paper"]) -> list[dict]:
    """relu above its critical batch size: the expected depth at which networks started at BSB1 leave it, on the
    width grid, and per depth D the width from which that depth exceeds D (log-log interpolation; None beyond the
    grid)."""
    from ..meanfield import escape_depth

    out = []
    for b in ESCAPE_BATCHES:
        widths, expected = [], []
        for n in ESCAPE_WIDTHS:  # up the grid until the escape is deeper than every depth asked (its cost grows)
            widths.append(n)
            expected.append(escape_depth("relu", b, n, samples=samples).expected_depth)
            if expected[-1] > max(depths):
                break
        row = {"batch_size": b, "widths": widths, "expected_depth": expected}
        for d in depths:
            row[f"width_for_depth_{d}"] = _crossing(tuple(widths), expected, d)
        out.append(row)
    return out


def _crossing(widths: tuple[int, ...], depths: list[float], target: float) -> float | None:
    """The width where the (increasing) escape depth reaches ``target``, interpolated in log-log."""
    for i in range(len(widths) - 1):
        (n0, d0), (n1, d1) = (widths[i], depths[i]), (widths[i + 1], depths[i + 1])
        if d0 <= target <= d1:
            frac = math.log(target / d0) / math.log(d1 / d0)
            return float(math.exp(math.log(n0) + frac * math.log(n1 / n0)))
    return float(widths[0]) if depths[0] >= target else None


def conv_departures(preset: str) -> list[dict]:
    """relu conv-BN stacks: the predicted depth at which a stack of C channels leaves the mean field and the
    gradient rate it settles to (:func:`bnmft.conv_departure_depth`, offsets chain), on the preset's grid."""
    from ..meanfield import conv_departure_depth

    settings, channels, replicas = CONV[preset]
    rows = []
    for b, image in settings:
        for c in channels:
            r = conv_departure_depth("relu", b, image, c, replicas=replicas)
            rows.append({"batch_size": b, "image": "x".join(map(str, image)), "pairs": r.effective_batch_size,
                         "channels": c, "departure_depth": r.mean_depth, "departure_depth_stderr": r.mean_depth_stderr,
                         "depth_std": r.depth_std, "rate_at_bsb1": r.rate_at_bsb1, "settled_rate": r.settled_rate,
                         "settled_share": r.settled_share})  # fmt: skip
    return rows


def plot_conv(rows: list[dict], path: Path) -> Path:
    """Departure depth (error bars: the chain's standard error; band: network-to-network spread) and settled rate
    against channels, one line per (B, image)."""
    plt = load_pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    keys = sorted({(r["batch_size"], r["image"], r["pairs"]) for r in rows})
    for i, (b, image, n) in enumerate(keys):
        sel = [r for r in rows if (r["batch_size"], r["image"]) == (b, image)]
        c = [r["channels"] for r in sel]
        d = np.array([r["departure_depth"] for r in sel])
        spread = np.array([r["depth_std"] or 0.0 for r in sel])
        label = f"B = {b}, {image} (n = {n})"
        left.errorbar(c, d, yerr=[r["departure_depth_stderr"] or 0.0 for r in sel], fmt="o-", color=f"C{i}", capsize=3,
                      label=label)  # fmt: skip
        left.fill_between(c, np.maximum(d - spread, 0), d + spread, color=f"C{i}", alpha=0.15, lw=0)
        right.plot(c, [r["settled_rate"] for r in sel], "o-", color=f"C{i}", label=f"{label}: settled")
        right.plot(c, [r["rate_at_bsb1"] for r in sel], ":", color=f"C{i}", label=f"{label}: near BSB1")
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("channels C")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    left.set_ylabel("layer where the examples' norms depart")
    left.set_title("relu conv-BN: depth of the mean field (band: network to network)")
    right.set_ylabel("gradient growth per layer")
    right.set_title("the rate before and after the departure")
    return save_figure(fig, path, dpi=150)


def validity_map(table_rows: list[dict], escapes: list[dict], path: Path) -> Path:
    """Width against batch size: the width where lambda_G's 1/N correction falls to 1% (predicted over the table's
    window; per phi), and relu's escape widths per depth. Above both lines the mean field holds to 1%."""
    plt = load_pyplot()
    fig, ax = plt.subplots(figsize=(6.8, 4.6), constrained_layout=True)
    for i, phi in enumerate(sorted({r["phi"] for r in table_rows})):
        pts = sorted((r["batch_size"], r["width_for_1pct_predicted"]) for r in table_rows
                     if r["phi"] == phi and r.get("width_for_1pct_predicted") is not None)  # fmt: skip
        if pts:
            ax.plot(*zip(*pts, strict=True), "o-", color=f"C{i}",
                    label=f"{phi}: lambda_G within 1% above (predicted)")  # fmt: skip
    for j, d in enumerate(MAP_DEPTHS):
        pts = [(e["batch_size"], e[f"width_for_depth_{d}"]) for e in escapes if e[f"width_for_depth_{d}"]]
        if pts:
            ax.plot(*zip(*pts, strict=True), "s--", color=f"C{j + 2}",
                    label=f"relu: stays at BSB1 for {d} layers above (escape to the outlier state)")  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("batch size B")
    ax.set_ylabel("width N")
    ax.set_title("how wide is wide enough: the mean field holds above the lines")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, path, dpi=150)


def study(out: Path, distances: list[dict], depth: int, table_rows: list[dict], preset: str) -> dict:
    """The whole part: ``wide_enough_distance.csv``/``.png``, ``wide_enough_escape.csv``, ``wide_enough_map.png``
    (escape widths computed for the quick and paper presets only) and ``wide_enough_conv.csv``/``.png``."""
    dist = distance_rows(distances, depth)
    write_csv(out / "wide_enough_distance.csv", dist["rows"])
    plot_distance(dist, out / "wide_enough_distance.png")
    escapes = escape_widths(samples=ESCAPE_SAMPLES[preset]) if preset != "tiny" else []
    write_csv(out / "wide_enough_escape.csv", [
        {"batch_size": e["batch_size"], "width": n, "expected_escape_depth": x}
        for e in escapes for n, x in zip(e["widths"], e["expected_depth"], strict=True)
    ])  # fmt: skip
    validity_map(table_rows, escapes, out / "wide_enough_map.png")
    conv = conv_departures(preset)
    write_csv(out / "wide_enough_conv.csv", conv)
    plot_conv(conv, out / "wide_enough_conv.png")
    from ..meanfield import outlier_state

    critical = outlier_state("relu", ESCAPE_BATCHES[0]).critical_batch_size
    return {"distance": dist, "escapes": escapes, "conv": conv, "critical_batch_size": critical}


def checks(data: dict) -> list[Check]:
    """Per (B, N) where the linear-noise theory applies (stationary distance below :data:`LINEAR_REGIME` and no
    outlier state at this B): the worst relative error of the predicted distance over the layers; and where relu
    has an outlier state, that the measured drift passes the prediction (the expansion stops holding)."""
    out = []
    dist = data["distance"]
    for c in dist["curves"]:
        sel = [r for r in dist["rows"] if r["batch_size"] == c["batch_size"] and r["width"] == c["width"]]
        if c["stationary"] > LINEAR_REGIME or c["outlier"] is not None:
            continue
        worst = max(sel, key=lambda r: abs(r["measured_rms"] / r["predicted"] - 1) - 3 * r["measured_rms_stderr"]
                    / r["predicted"])  # fmt: skip
        err = abs(worst["measured_rms"] / worst["predicted"] - 1)
        allow = LINEAR_TOLERANCE + 3 * worst["measured_rms_stderr"] / worst["predicted"]
        out.append(Check(f"relu B={c['batch_size']} N={c['width']}: distance to BSB1, worst layer ({worst['layer']}) "
                         "measured rms / linear-noise prediction - 1", worst["measured_rms"], worst["predicted"], err,
                         allow))  # fmt: skip
    return out


def text(data: dict, table_rows: list[dict]) -> list[str]:
    """The part's markdown lines (a subsection of the finite-width section; its checks are in the section's)."""
    dist = data["distance"]
    lines = [
        "### How wide is wide enough",
        "",
        "The distance of the batch geometry to BSB1 layer by layer (relu, the 1/N table's simulations, Gaussian "
        "inputs): simulated (rms over the networks, 10-90% band) against the linear-noise prediction "
        "(`bnmft.fluctuations`, no free parameter) and, where relu has one, the level of the outlier state (one "
        "example with a dominant norm, `bnmft.outlier_state`).",
        "",
        "![distance to BSB1](wide_enough_distance.png)",
        "",
        "| B | N | networks | stationary distance (predicted) | measured rms at the last layer | outlier level |",
        "|---|---|---|---|---|---|",
    ]
    for c in dist["curves"]:
        last = [r for r in dist["rows"] if r["batch_size"] == c["batch_size"] and r["width"] == c["width"]][-1]
        level = "none" if c["outlier"] is None else f"{c['outlier']:.2f}"
        lines.append(f"| {c['batch_size']} | {c['width']} | {last['networks']} | {c['stationary']:.3f} | "
                     f"{last['measured_rms']:.3f} +- {last['measured_rms_stderr']:.3f} | {level} |")  # fmt: skip
    need = [f"{r['phi']} B = {r['batch_size']}: {r['width_for_1pct_predicted']:.0f}" for r in table_rows
            if r["estimate"] == "lambda_G" and r.get("width_for_1pct_predicted") is not None]  # fmt: skip
    lines += [
        "",
        "The linear-noise theory holds while the squared distance is small and the batch stays near BSB1. Two "
        "limits set how wide a network must be: lambda_G's 1/N correction (predicted within 1% from a width of "
        + (", ".join(need) if need else "-") + "; the measured widths are in the table above), "
        f"and, for relu above the critical batch size {data['critical_batch_size']}, the escape of one example "
        "to the outlier state, whose "
        "expected depth grows with the width (`bnmft.escape_depth`; simulator against prediction, quoted from "
        "docs/outlier.md: B = 128, "
        "N = 256 ... 2048: 20.7, 31.2, 40.7, 51.9 layers against 19.6, 28.6, 39.3, 52.4 predicted).",
        "",
    ]
    if data["escapes"]:
        lines += ["| relu, B | " + " | ".join(f"escape depth at N = {n}" for n in ESCAPE_WIDTHS) + " | "
                  + " | ".join(f"width for {d} layers" for d in MAP_DEPTHS) + " |",
                  "|---|" + "---|" * (len(ESCAPE_WIDTHS) + len(MAP_DEPTHS))]  # fmt: skip
        for e in data["escapes"]:
            need = [e[f"width_for_depth_{d}"] for d in MAP_DEPTHS]
            depth_cells = [f"{x:.1f}" for x in e["expected_depth"]]
            depth_cells += ["(deeper)"] * (len(ESCAPE_WIDTHS) - len(depth_cells))
            lines.append(f"| {e['batch_size']} | " + " | ".join(depth_cells) + " | "
                         + " | ".join("-" if x is None else f"{x:.0f}" for x in need) + " |")  # fmt: skip
        lines += ["", "![validity map](wide_enough_map.png)", ""]
    lines += [
        "**Conv-BN stacks.** BN's batch there is the n = B x positions pairs, far above "
        f"{data['critical_batch_size']}, and the width is the "
        "channels C. With periodic padding a convolution keeps each example's spatial mean, so relu's examples' "
        "norms are marginal at n = infinity and finite-C noise random-walks them apart until one example holds most "
        "of the norm; the across-example correlation then falls and the gradient rate declines. Predicted "
        "(`bnmft.conv_departure_depth`, offsets chain; `bnmft finite-width --spatial HxW`): the layer where the "
        "variance of the examples' relative norms reaches 0.25, and the rate it settles to. Against the conv "
        "simulator (quoted from docs/conv_width.md, B = 8, 8x8): C = 32, 64, 128, 256 departed at 61.7 +- 6.3, "
        "89.8 +- 7.6, 122 +- 13, 150 +- 20 layers against 76.9, 92.0, 121, 146 from the chain (400 replicas); "
        "settled rate 1.403 +- 0.003 measured at C = 64 against 1.388.",
        "",
        "| B | image | n | C | departs after (layers) | network-to-network std | rate near BSB1 | settled rate | "
        "dominant example's share |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["conv"]:
        fmt = lambda v, spec=".4f": "-" if v is None else format(v, spec)  # noqa: E731
        lines.append(f"| {r['batch_size']} | {r['image']} | {r['pairs']} | {r['channels']} | "
                     f"{r['departure_depth']:.1f} +- {fmt(r['departure_depth_stderr'], '.1f')} | "
                     f"{fmt(r['depth_std'], '.1f')} | "
                     f"{fmt(r['rate_at_bsb1'])} | {fmt(r['settled_rate'])} | {fmt(r['settled_share'], '.2f')} |")
    lines += ["", "![conv-BN departure](wide_enough_conv.png)", ""]
    return lines
