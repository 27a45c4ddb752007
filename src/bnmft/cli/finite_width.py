"""``bnmft finite-width``: the batch geometry's fluctuations around BSB1 at width N (:func:`bnmft.fluctuations`,
docs/finite_width.md)."""

from __future__ import annotations

import json

from ..options import check_int
from .arguments import positive_int


def add_parsers(sub) -> None:
    p = sub.add_parser("finite-width", help="finite width: the distance to BSB1 layer by layer (linear-noise theory)")
    p.add_argument("--phi", required=True, help="nonlinearity (a registered name or an expression in z)")
    p.add_argument("--batch-size", "-B", required=True, nargs="+", type=positive_int, metavar="B")
    p.add_argument("--width", "-N", required=True, type=positive_int, help="N: units per layer (and input dim)")
    p.add_argument("--depth", type=positive_int, default=20, help="layers to predict (default 20)")
    p.add_argument("--seed", type=int, default=0, help="the Monte Carlo draws of the one-unit noise")
    p.add_argument("--json", action="store_true", help="a list: one object per batch size")
    p.set_defaults(func=cmd_finite_width)


def cmd_finite_width(args) -> int:
    from ..meanfield.linear_noise import fluctuations
    from ..meanfield.outlier import outlier_state

    check_int("--depth", args.depth)
    out = []
    for b in args.batch_size:
        f = fluctuations(args.phi, b, seed=args.seed)
        out.append({"phi": f.phi, "batch_size": b, "width": args.width, "lambda_L": f.lambda_L,
                    "lambda_M": f.lambda_M, "sigma2_L": f.sigma2_L, "sigma2_L_stderr": f.sigma2_L_stderr,
                    "sigma2_M": f.sigma2_M, "sigma2_M_stderr": f.sigma2_M_stderr,
                    "stationary_distance": f.stationary_distance(args.width),
                    "distance": f.distance(args.width, args.depth)})  # fmt: skip
        o = outlier_state(args.phi, b)
        out[-1]["outlier"] = {"critical_batch_size": o.critical_batch_size, "saddle": o.saddle, "stable": o.stable}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    for row in out:
        print(f"phi = {row['phi']}, B = {row['batch_size']}, N = {row['width']}: lambda_L {row['lambda_L']:.4f}, "
              f"lambda_M {row['lambda_M']:.4f}, sigma2_L {row['sigma2_L']:.4f}, "
              f"sigma2_M {row['sigma2_M']:.4f}")  # fmt: skip
        step = max(1, len(row["distance"]) // 8)
        layers = ", ".join(f"{d['layer']}: {d['distance']:.4f}" for d in row["distance"][::step])
        print(f"  distance to BSB1: stationary {row['stationary_distance']:.4f}; by layer {layers}")
        o = row["outlier"]
        fmt = lambda v: "none" if v is None else f"{v:.4g}"  # noqa: E731
        print(f"  outlier state (docs/outlier.md): critical batch size {fmt(o['critical_batch_size'])}, saddle "
              f"{fmt(o['saddle'])}, stable {fmt(o['stable'])}")
    return 0
