"""``bnmft finite-width``: what width N does to a BN MLP's mean field - the 1/N coefficients of c*, q* and lambda_G,
the distance to BSB1 layer by layer, the width for 1% and the outlier state (:func:`bnmft.finite_width`,
docs/finite_width.md, docs/outlier.md)."""

from __future__ import annotations

import json

from .arguments import positive_int


def add_parsers(sub) -> None:
    p = sub.add_parser("finite-width", help="finite width: 1/N coefficients, distance to BSB1, the outlier state")
    p.add_argument("--phi", required=True, help="nonlinearity (a registered name or an expression in z)")
    p.add_argument("--batch-size", "-B", required=True, nargs="+", type=positive_int, metavar="B")
    p.add_argument("--width", "-N", required=True, type=positive_int, help="N: units per layer (and input dim)")
    p.add_argument("--depth", type=positive_int, help="layers of the predicted distance (default: window's stop, 20)")
    p.add_argument("--window", metavar="START:STOP",
                   help="average the 1/N coefficients over the simulator's layers START..STOP-1 (default: stationary)")
    p.add_argument("--seed", type=int, default=0, help="the Monte Carlo draws of the one-unit constants")
    p.add_argument("--samples", type=positive_int,
                   help="one-neuron draws for lambda_G's coefficient (default about 6e7 / B^2; fewer: faster, noisier)")
    p.add_argument("--json", action="store_true", help="a list: one object per batch size")
    p.set_defaults(func=cmd_finite_width)


def cmd_finite_width(args) -> int:
    from ..meanfield import finite_width

    out = [finite_width(args.phi, b, args.width, depth=args.depth, window=args.window, seed=args.seed,
                        samples=args.samples).to_dict()
           for b in args.batch_size]  # fmt: skip
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    fmt = lambda v, spec=".4g": "none" if v is None else format(v, spec)  # noqa: E731
    for row in out:
        where = "stationary" if row["window"] is None else "layers {}:{}".format(*row["window"])
        bound = "< " if row["width_for_1_percent_is_bound"] else ""
        print(f"phi = {row['phi']}, B = {row['batch_size']}, N = {row['width']} (1/N coefficients: {where})")
        for key, label in (("c_star", "c*"), ("q_star", "q*"), ("lambda_G", "lambda_G")):
            if row[key + "_coefficient"] is None:
                print(f"  {label:9s} {row[key]:.6g} (no 1/N expansion at B < 6: infinite variance)")
                continue
            print(f"  {label:9s} {row[key]:.6g} + ({row[key + '_coefficient']:.4g} +- "
                  f"{row[key + '_coefficient_stderr']:.2g}) / N")  # fmt: skip
        if row["width_for_1_percent"] is not None:
            print(f"  lambda_G within 1% from N = {bound}{row['width_for_1_percent']:.0f}")
        step = max(1, len(row["distance"]) // 8)
        layers = ", ".join(f"{d['layer']}: {d['distance']:.4f}" for d in row["distance"][::step])
        print(f"  distance to BSB1: stationary {row['stationary_distance']:.4f}; by layer {layers}")
        o = row["outlier"]
        escape = o["escape_depth"]
        escape = "never (no saddle)" if escape == "inf" else f"after {fmt(escape, '.1f')} layers on average"
        print(f"  outlier state (docs/outlier.md): critical batch size {fmt(o['critical_batch_size'])}, saddle "
              f"{fmt(o['saddle'])}, stable {fmt(o['stable'])}; networks of this width leave BSB1 {escape}")
    return 0
