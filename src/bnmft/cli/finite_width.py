"""``bnmft finite-width``: what width N does to a BN MLP's mean field - the 1/N coefficients of c*, q* and lambda_G,
the distance to BSB1 layer by layer (from Gaussian inputs, or a given batch with ``--input``), the width for 1% and the
outlier state (:func:`bnmft.finite_width`, docs/finite_width.md, docs/outlier.md); with ``--spatial`` a conv-BN stack
of N channels: the depth at which it leaves the mean field and the rate it settles to
(:func:`bnmft.conv_departure_depth`, docs/conv_width.md)."""

from __future__ import annotations

import json

from ..errors import InputError
from .arguments import finite_float, positive_int

#: options of the MLP prediction and of the conv-BN one (--spatial): each is an error in the other mode
MLP_FLAGS = (("--depth", "depth"), ("--window", "window"), ("--samples", "samples"), ("--input", "input"))
CONV_FLAGS = (("--kernel", "kernel"), ("--threshold", "threshold"), ("--max-depth", "max_depth"),
              ("--replicas", "replicas"))  # fmt: skip


def add_parsers(sub) -> None:
    p = sub.add_parser("finite-width", help="finite width: 1/N coefficients, distance to BSB1, the outlier state")
    p.add_argument("--phi", required=True, help="nonlinearity (a registered name or an expression in z)")
    p.add_argument("--batch-size", "-B", required=True, nargs="+", type=positive_int, metavar="B")
    p.add_argument("--width", "-N", required=True, type=positive_int,
                   help="N: units per layer (and the inputs' dimension, without --input)")
    p.add_argument("--depth", type=positive_int, help="layers of the predicted distance (default: window's stop, 20)")
    p.add_argument("--window", metavar="START:STOP",
                   help="average the 1/N coefficients over the simulator's layers START..STOP-1 (default: stationary)")
    p.add_argument("--seed", type=int, default=0, help="the Monte Carlo draws of the one-unit constants")
    p.add_argument("--samples", type=positive_int,
                   help="one-neuron draws for lambda_G's coefficient (default about 6e7 / B^2; fewer: faster, noisier)")
    p.add_argument("--input", metavar="FILE.npy",
                   help="a fixed input batch (B x d, rows are examples, saved with numpy): the distance to BSB1 "
                   "from it instead of from Gaussian inputs of dimension N (one -B, equal to its B)")  # fmt: skip
    p.add_argument("--spatial", metavar="HxW|L",
                   help="a conv-BN stack (periodic padding) on images of this shape, N its channels: when it leaves "
                   "the mean field (docs/conv_width.md)")  # fmt: skip
    p.add_argument("--kernel", type=positive_int, help="with --spatial: odd kernel size (default 3)")
    p.add_argument("--threshold", type=finite_float,
                   help="with --spatial: the variance of the examples' relative norms that counts as departed "
                   "(default 0.25)")  # fmt: skip
    p.add_argument("--max-depth", type=positive_int, help="with --spatial: layers the chain runs at most (5000)")
    p.add_argument("--replicas", type=positive_int, help="with --spatial: simulated batches of the chain (400)")
    p.add_argument("--json", action="store_true", help="a list: one object per batch size")
    p.set_defaults(func=cmd_finite_width)


def cmd_finite_width(args) -> int:
    from ..meanfield import finite_width

    conv = args.spatial is not None
    for flag, attr in MLP_FLAGS if conv else CONV_FLAGS:
        if getattr(args, attr) is not None:
            raise InputError(f"{flag} does not apply " + ("to a conv-BN stack (--spatial)" if conv else
                                                          "without --spatial (it is an option of the conv-BN chain)"))
    if conv:
        return _conv_departure(args)

    inputs = None if args.input is None else _batch(args.input, args.batch_size)
    out = [finite_width(args.phi, b, args.width, depth=args.depth, window=args.window, seed=args.seed,
                        samples=args.samples, inputs=inputs).to_dict()
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
        print(f"  distance to BSB1 (from {row['distance_source']}): stationary {row['stationary_distance']:.4f}; by "
              f"layer {layers}")
        o = row["outlier"]
        escape = o["escape_depth"]
        escape = "never (no saddle)" if escape == "inf" else f"after {fmt(escape, '.1f')} layers on average"
        print(f"  outlier state (docs/outlier.md): critical batch size {fmt(o['critical_batch_size'])}, saddle "
              f"{fmt(o['saddle'])}, stable {fmt(o['stable'])}; networks of this width leave BSB1 {escape}")
    return 0


def _batch(path: str, batch_sizes: list[int]):
    """--input's array: a (B, d) batch whose B is the one -B given (finite real values: checked by finite_width)."""
    from .theory import load_array

    x = load_array(path, "--input")
    if x.ndim != 2:
        raise InputError(f"--input must hold an array of shape (B, d) (rows are examples), got shape {x.shape}")
    if len(batch_sizes) != 1 or batch_sizes[0] != x.shape[0]:
        given = " ".join(map(str, batch_sizes))
        raise InputError(f"--input holds a batch of B = {x.shape[0]} examples: give exactly one -B, equal to "
                         f"{x.shape[0]} (got -B {given})")  # fmt: skip
    return x


def _conv_departure(args) -> int:
    from ..meanfield import conv_departure_depth

    options = {k: getattr(args, k) for k in ("kernel", "threshold", "max_depth", "replicas")}
    out = [conv_departure_depth(args.phi, b, args.spatial, args.width, seed=args.seed,
                                **{k: v for k, v in options.items() if v is not None}).to_dict()
           for b in args.batch_size]  # fmt: skip
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    for r in out:
        size = "x".join(map(str, r["spatial"]))
        print(f"phi = {r['phi']}, conv-BN stack, B = {r['batch_size']} on {size} (n = {r['effective_batch_size']} "
              f"pairs), {r['channels']} channels ({r['model']} chain, docs/conv_width.md)")
        if r["mean_depth"] == "inf":
            print(f"  stays near the mean field for all {args.max_depth or 5000} layers run")
            continue
        bound = ">= " if r["censored"] > 0 else ""
        median = "none" if r["median_depth"] is None else f"{r['median_depth']:.0f}"
        spread = "-" if r["depth_std"] is None else f"{r['depth_std']:.1f}"
        print(f"  leaves the mean field after {bound}{r['mean_depth']:.1f} +- {r['mean_depth_stderr']:.1f} layers "
              f"(median {median}, network-to-network spread {spread}, not departed: "
              f"{100 * r['censored']:.0f}%)")
        if r["settled_rate"] is not None:
            print(f"  gradient growth per layer {r['rate_at_bsb1']:.4f} near BSB1, settling to "
                  f"{r['settled_rate']:.4f} (spread {r['settled_rate_spread']:.3f}); the dominant example holds "
                  f"{r['settled_share']:.2f} of the centred norm")
    return 0
