"""``bnmft theory``, ``propagate``, ``symmetry`` and ``nonlinearities``: the MLP family's exact theory."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence

from ..errors import InputError
from ..meanfield import TheoryResult, theory
from ..meanfield.result import SUMMARY_KEYS
from ..nonlinearity import available
from .arguments import batch_size_arg, bn_option, finite_float, phi_params, positive_int

TABLE_COLUMNS = (  # header, TheoryResult attribute, width, significant digits
    ("B", "batch_size", 7, 0),
    ("q*", "q_star", 13, 10),
    ("c*", "c_star", 13, 10),
    ("mu*", "mu_star", 13, 10),
    ("lambda_G", "lambda_G", 13, 10),
    ("max depth", "max_trainable_depth", 10, 6),
    ("lambda_L", "lambda_L", 13, 10),
    ("lambda_M", "lambda_M", 13, 10),
    ("fwd depth", "forward_depth_scale", 10, 6),
    ("stable", "bsb1_stable", 6, 0),
    ("method", "method", 11, 0),
)
EPS_COLUMNS = (
    ("B", "batch_size", 7, 0),
    ("eps", "eps", 10, 6),
    ("kappa", "kappa", 10, 6),
    ("kappa_c", "kappa_c", 10, 6),
    ("phase", "phase", 10, 0),
    ("q*", "q_star", 13, 10),
    ("c*", "c_star", 13, 10),
    ("mu*", "mu_star", 13, 10),
    ("lambda_G", "lambda_G", 13, 10),
    ("lambda_W", "lambda_W", 13, 10),
    ("max depth", "max_trainable_depth", 10, 6),
)


def _cell(value, width: int, digits: int) -> str:
    if value is None:
        text = "-"
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, float) and math.isinf(value):
        text = "inf" if value > 0 else "-inf"
    elif isinstance(value, float) and digits:
        text = f"{value:.{digits}g}"
    else:
        text = str(value)
    return text.rjust(width)


def format_table(results: Sequence[TheoryResult]) -> str:
    """A fixed-width text table of results (one row per result; '-' where a quantity is not defined)."""
    first = results[0]
    knobs = f"  gamma = {first.gamma:g}, beta = {first.beta:g}" if (first.gamma != 1 or first.beta != 0) else ""
    columns = EPS_COLUMNS if any(r.eps > 0 for r in results) else TABLE_COLUMNS
    lines = [f"phi = {first.phi}{knobs}", "  ".join(h.rjust(w) for h, _, w, _ in columns)]
    for r in results:
        lines.append("  ".join(_cell(getattr(r, key), w, d) for _, key, w, d in columns))
    return "\n".join(lines)


JSON_KEYS = SUMMARY_KEYS


def to_json(results: Sequence[TheoryResult]) -> str:
    return json.dumps([{k: r.to_dict()[k] for k in JSON_KEYS} for r in results], indent=2)


def cmd_theory(args) -> int:
    eps_values = args.eps or [0.0]
    kwargs = {
        "gamma": args.gamma,
        "beta": args.beta,
        "method": args.method,
        "sigma_w": args.sigma_w,
        **phi_params(args),
    }
    results = [theory(args.phi, b, eps=e, **kwargs) for b in args.batch_size for e in eps_values]
    if args.plot:
        if len(eps_values) > 1:
            from ..report.plots import plot_eps_phase_diagram

            plot_eps_phase_diagram(args.phi, args.batch_size, eps_values, args.plot, **kwargs)
        else:
            from ..report.plots import plot_theory

            plot_theory(args.phi, args.batch_size, args.plot, eps=eps_values[0], **kwargs)
    if args.json:
        print(to_json(results))
    else:
        print(format_table(results))
        if args.plot:
            print(f"plot written to {args.plot}")
    return 0


def load_array(path: str, flag: str):
    import numpy as np

    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{flag}: no such file {path!r}") from None
    except (ValueError, OSError, EOFError) as err:  # EOFError: an empty file
        raise InputError(f"{flag}: cannot read {path!r} as a .npy array ({type(err).__name__}: {err})") from None


def propagate_method(args) -> str:
    """The Gram-map method ``propagate`` uses with these arguments (``auto``'s pick: from phi and the batch size)."""
    if args.method != "auto":
        return args.method
    from ..meanfield.gram import auto_method, check_gram
    from ..meanfield.propagation import gram_of_batch
    from ..nonlinearity import resolve

    inputs = load_array(args.input, "--input")
    b = len(check_gram(inputs, "--input") if args.gram else gram_of_batch(inputs, "--input"))
    _, effective = resolve(args.phi, gamma=args.gamma, beta=args.beta, **phi_params(args))
    return auto_method(effective, b)


def propagate_samples_apply(args) -> bool:
    """Whether --samples and --seed are used: by the Monte Carlo Gram map, and by --input2's cross block (always
    sampled); the laplace and sphere methods are exact."""
    return args.input2 is not None or propagate_method(args) == "monte_carlo"


def propagate_samples_mode(args) -> str:
    """Where --samples and --seed apply, and the method these arguments use (for the refusal's message)."""
    return (
        "with the Monte Carlo Gram map (--method monte_carlo, or auto where it picks monte_carlo: phi not "
        "positive-homogeneous and B > 5) or with --input2 (its cross block is sampled); here the method is "
        f"{propagate_method(args)}, which is exact: no samples"
    )


def cmd_propagate(args) -> int:
    from tqdm import tqdm

    from ..meanfield import propagate

    inputs = load_array(args.input, "--input")
    inputs2 = load_array(args.input2, "--input2") if args.input2 else None
    with tqdm(total=args.depth, desc="layers", unit="layer", disable=None, file=sys.stderr) as bar:
        result = propagate(
            args.phi,
            inputs,
            args.depth,
            inputs2=inputs2,
            gram=args.gram,
            gamma=args.gamma,
            beta=args.beta,
            method=args.method,
            samples=args.samples,
            seed=args.seed,
            progress=lambda _: bar.update(1),
            **phi_params(args),
        )
    if args.save:
        import numpy as np

        extra = {} if result.cross_grams is None else {"cross_grams": result.cross_grams, "grams2": result.grams2}
        with open(args.save, "wb") as fh:  # a file object: numpy adds no suffix, the path printed is the path written
            np.savez(
                fh,
                grams=result.grams,
                stderr=result.stderr,
                distance=result.distance,
                fixed_point=result.fixed_point,
                **extra,
            )
    if args.plot:
        from ..report.plots import plot_propagation

        plot_propagation(result, args.plot)
    t = result.theory
    summary = {
        "phi": result.phi,
        "batch_size": result.batch_size,
        "depth": result.depth,
        "method": result.method,
        "lambda_L": t.lambda_L,
        "lambda_M": t.lambda_M,
        "predicted_rate": max(t.lambda_L, t.lambda_M),
        "cross_batch_rate": t.cross_batch_rate,
        "notes": result.notes,
        "layers": result.rows(),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(
        f"phi = {result.phi}, B = {result.batch_size}, method = {result.method}; predicted rate "
        f"max(lambda_L, lambda_M) = {summary['predicted_rate']:.6g}"
        + (f", cross-batch rate {t.cross_batch_rate:.6g}" if result.cross_correlation is not None else "")
    )
    cols = ["layer", "distance", "q_mean", "c_mean"] + (
        ["cross_correlation", "cross_stderr"] if result.cross_correlation is not None else []
    )
    print("  ".join(c.rjust(17 if c.startswith("cross") else 12) for c in cols))
    for row in summary["layers"]:
        cells = [f"{row['layer']:>12d}"] + [f"{row[c]:>{17 if c.startswith('cross') else 12}.6g}" for c in cols[1:]]
        print("  ".join(cells))
    for note in result.notes:
        print(f"note: {note}")
    return 0


def cmd_symmetry(args) -> int:
    from tqdm import tqdm

    from ..meanfield.symmetry import symmetry_breaking, symmetry_breaking_alpha

    if any(math.isinf(b) for b in args.batch_size):
        raise InputError("--batch-size: must be finite for the forward eigenvalues")
    general = args.phi is not None or args.parameter is not None or args.bracket is not None
    if general:
        if args.phi is None or args.parameter is None:
            raise InputError("--phi and --parameter go together (and --bracket LOW HIGH; default 1 alpha_max)")
        bracket = tuple(args.bracket) if args.bracket else (1.0, args.alpha_max)
        fixed = dict(
            phi_params(args), **{k: getattr(args, k) for k in ("gamma", "beta") if getattr(args, k) is not None}
        )

        def find(b):
            return symmetry_breaking(args.phi, b, parameter=args.parameter, bracket=bracket, **fixed)

    else:

        def find(b):
            return symmetry_breaking_alpha(b, alpha_max=args.alpha_max)

    results = [find(b) for b in tqdm(args.batch_size, desc="batch sizes", disable=None, file=sys.stderr)]
    if args.plot:
        from ..report.plots import plot_symmetry_breaking

        plot_symmetry_breaking(results, args.plot)
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
        return 0
    first = results[0]
    print(f"{first.phi}: {first.parameter} at which BSB1 stops being attracting (max(lambda_L, lambda_M) = 1)")
    print(f"{'B':>8}  {first.parameter + '*':>14}  crossing")
    for r in results:
        star = f"none <= {r.bracket[1]:g}" if math.isinf(r.critical) else f"{r.critical:.10g}"
        print(f"{r.batch_size:>8}  {star:>14}  {r.eigenvalue or '-'}")
    return 0


def cmd_nonlinearities(args) -> int:
    entries = available()
    if args.json:
        print(json.dumps(entries, indent=2))
    else:
        width = max(map(len, entries))
        for name, doc in entries.items():
            print(f"{name:<{width}}  {doc}")
        print("\nor any expression in z, e.g. 'tanh(2*z) + 0.1*z'")
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("theory", help="fixed point and gradient explosion rate for phi and batch sizes")
    p.add_argument("--phi", required=True, help="a name (see `bnmft nonlinearities`) or an expression in z")
    p.add_argument(
        "--batch-size",
        "-B",
        required=True,
        nargs="+",
        type=batch_size_arg,
        metavar="B",
        help="one or more batch sizes (integers >= 4, or 'inf'; convolutional networks: bnmft conv)",
    )
    p.add_argument("--gamma", type=bn_option("gamma"), default=1.0, help="BN scale: phi(gamma z + beta) (default 1)")
    p.add_argument("--beta", type=bn_option("beta"), default=0.0, help="BN shift (default 0)")
    p.add_argument("--alpha", type=finite_float, help="alpha of alpha_relu (max(z,0)^alpha) or elu")
    p.add_argument("--slope", type=finite_float, help="negative slope of leaky_relu")
    p.add_argument("--method", choices=("auto", "closed_form", "quadrature"), default="auto")
    p.add_argument(
        "--eps",
        nargs="+",
        type=bn_option("eps"),
        metavar="E",
        help="BN eps (one or more values >= 0; default 0). Only kappa = eps / sigma_w^2 matters",
    )
    p.add_argument("--sigma-w", type=bn_option("sigma_w"), default=1.0, help="weight scale sigma_w (> 0, default 1)")
    p.add_argument("--json", action="store_true", help="print a JSON list, one object per batch size")
    p.add_argument("--plot", metavar="FILE", help="draw lambda_G and max trainable depth against batch size")
    p.set_defaults(func=cmd_theory)

    p = sub.add_parser("propagate", help="iterate the Gram map from a data batch (or Gram matrix) through depth")
    p.add_argument("--phi", required=True, help="a name (see `bnmft nonlinearities`) or an expression in z")
    p.add_argument("--input", required=True, metavar="FILE.npy", help="data batch (B x features), rows are examples")
    p.add_argument("--input2", metavar="FILE.npy", help="a second batch: report the cross-batch correlation")
    p.add_argument("--gram", action="store_true", help="--input is a B x B Gram matrix, not a data batch")
    p.add_argument("--depth", "-L", required=True, type=positive_int, help="number of layers (>= 1)")
    p.add_argument("--gamma", type=bn_option("gamma"), default=1.0)
    p.add_argument("--beta", type=bn_option("beta"), default=0.0)
    p.add_argument("--alpha", type=finite_float)
    p.add_argument("--slope", type=finite_float)
    p.add_argument(
        "--method",
        choices=("auto", "laplace", "sphere", "monte_carlo"),
        default="auto",
        help="Gram map: exact Laplace (homogeneous phi), exact sphere rule (B <= 5), or Monte Carlo",
    )
    mc = "(Monte Carlo only: --method monte_carlo, auto where it picks it, or --input2's cross block)"
    p.add_argument("--samples", type=positive_int, default=100_000, help=f"samples per layer {mc}")
    p.add_argument("--seed", type=int, default=0, help=f"random seed {mc}")
    p.add_argument("--json", action="store_true", help="print a JSON object with one row per layer")
    p.add_argument("--plot", metavar="FILE", help="distance to the fixed point (and cross-batch correlation) by layer")
    p.add_argument("--save", metavar="FILE.npz", help="save the per-layer Gram matrices")
    p.set_defaults(func=cmd_propagate)

    p = sub.add_parser("symmetry", help="alpha_relu: the alpha at which BSB1 stops being attracting, per batch size")
    p.add_argument("--batch-size", "-B", required=True, nargs="+", type=batch_size_arg, metavar="B")
    p.add_argument("--alpha-max", type=finite_float, default=16.0, help="search alpha in (1, alpha_max]")
    p.add_argument("--phi", help="any phi (default alpha_relu, varying alpha); needs --parameter")
    p.add_argument("--parameter", help="the parameter to vary: gamma, beta, or one of phi's (alpha, slope)")
    p.add_argument("--bracket", nargs=2, type=finite_float, metavar=("LOW", "HIGH"), help="search interval")
    p.add_argument("--gamma", type=bn_option("gamma"), help="fixed gamma (unless varied)")
    p.add_argument("--beta", type=bn_option("beta"), help="fixed beta (unless varied)")
    p.add_argument("--alpha", type=finite_float, help="fixed alpha of phi (unless varied)")
    p.add_argument("--slope", type=finite_float, help="fixed slope of leaky_relu (unless varied)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--plot", metavar="FILE", help="alpha* against batch size")
    p.set_defaults(func=cmd_symmetry)

    p = sub.add_parser("nonlinearities", help="list the registered nonlinearities")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_nonlinearities)
