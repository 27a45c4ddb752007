"""The ``bnmft residual`` and ``bnmft design`` commands (residual networks and the depth planner); registered by
:func:`bnmft.cli.build_parser`."""

from __future__ import annotations

import argparse
import json
import math
import sys

from ..errors import InputError
from .arguments import batch_size_arg, bn_option, finite_float, phi_params, positive_int


def branch_scale_list(text: str) -> float | list[float]:
    """``--branch-scale``: one number, or comma-separated numbers (one per block)."""
    parts = [p for p in text.split(",") if p.strip()]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number or comma-separated numbers, got {text!r}") from None
    if not values or not all(math.isfinite(v) and v >= 0 for v in values):
        raise argparse.ArgumentTypeError(f"must be finite numbers >= 0, got {text!r}")
    return values[0] if len(values) == 1 else values


def add_parsers(sub) -> None:
    p = sub.add_parser("residual", help="residual BN network: per-block stream variance and gradient growth")
    p.add_argument("--phi", required=True, help="a name (see `bnmft nonlinearities`) or an expression in z")
    p.add_argument("--batch-size", "-B", required=True, type=batch_size_arg, metavar="B", help="batch size (>= 4)")
    p.add_argument("--depth", "-D", required=True, type=positive_int, help="number of residual blocks")
    p.add_argument("--branch-depth", "-K", type=positive_int, default=1, help="BN -> phi -> linear layers per branch")
    p.add_argument(
        "--branch-scale", type=branch_scale_list, help="branch scale a of x + a F(x): a number, or one per block"
    )
    p.add_argument("--alpha", type=finite_float, help="alpha of alpha_relu or elu (the branch scale is --branch-scale)")
    p.add_argument("--slope", type=finite_float, help="negative slope of leaky_relu")
    p.add_argument("--branch", choices=("bn_first", "linear_first"), default="bn_first")
    p.add_argument("--eps", type=bn_option("eps"), default=0.0)
    p.add_argument("--sigma-w", type=bn_option("sigma_w"), default=1.0)
    p.add_argument("--gamma", type=bn_option("gamma"), default=1.0)
    p.add_argument("--beta", type=bn_option("beta"), default=0.0)
    p.add_argument("--input-correlation", type=finite_float, default=0.0, help="c_in of the BSB1 input (default 0)")
    p.add_argument(
        "--output-gradient",
        choices=("iid", "centred"),
        default="iid",
        help="iid: a loss linear in the output; centred: a BN follows the last block",
    )
    p.add_argument("--criterion", type=finite_float, default=16.0, help="trainable: ln gradient growth <= this")
    p.add_argument("--width", "-N", type=positive_int, help="also simulate networks of this width (with --networks)")
    p.add_argument("--networks", type=positive_int, help="number of simulated networks")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--device", default="cpu", help="cpu or cuda (simulation)")
    p.add_argument(
        "--sampler", choices=("auto", "dense", "conditional"), default="auto", help="weights (auto: the faster)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object (keys blocks, exponent, ...)")
    p.add_argument("--plot", metavar="FILE", help="log gradient ratio and stream variance against block")
    p.set_defaults(func=cmd_residual)

    p = sub.add_parser("design", help="settings that make a depth trainable, as nonlinear as possible")
    p.add_argument("--phi", required=True, help="a name (see `bnmft nonlinearities`) or an expression in z")
    p.add_argument("--batch-size", "-B", required=True, type=batch_size_arg, metavar="B")
    p.add_argument("--depth", "-D", required=True, type=positive_int, help="target depth (layers, or blocks)")
    p.add_argument("--residual", action="store_true", help="plan a residual network")
    p.add_argument("--branch-depth", "-K", type=positive_int, default=1)
    p.add_argument("--branch", choices=("bn_first", "linear_first"), default="bn_first")
    p.add_argument("--branch-scale", type=finite_float, help="branch scale while other knobs are searched (default 1)")
    p.add_argument("--alpha", type=finite_float, help="alpha of alpha_relu or elu (the branch scale is --branch-scale)")
    p.add_argument("--slope", type=finite_float, help="negative slope of leaky_relu")
    p.add_argument("--eps", type=bn_option("eps"), default=0.0)
    p.add_argument("--sigma-w", type=bn_option("sigma_w"), default=1.0)
    p.add_argument("--gamma", type=bn_option("gamma"), default=1.0)
    p.add_argument("--beta", type=bn_option("beta"), default=0.0)
    p.add_argument("--knobs", nargs="+", choices=("gamma", "beta", "eps", "branch_scale"), help="default: by phi")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_design)


def cli_phi_params(args) -> dict[str, float]:
    """phi's parameters on ``bnmft residual`` and ``bnmft design``: ``--alpha`` is phi's parameter here as on every
    command (alpha_relu, elu). It used to be the branch scale, so a phi without an alpha is refused (use
    --branch-scale) rather than the number silently taking a new meaning; with alpha_relu or elu and no
    --branch-scale, :func:`alpha_note` says which alpha it is."""
    from ..nonlinearity import takes_parameter

    if args.alpha is not None and not takes_parameter(args.phi, "alpha"):
        raise InputError(
            f"--alpha is the parameter of alpha_relu and elu, not of phi={args.phi!r}; the residual branch scale is "
            "--branch-scale"
        )
    return phi_params(args)


def alpha_note(args) -> None:
    """The note on stderr that --alpha is phi's alpha (not the branch scale), once the command has succeeded (bad
    input stays one line)."""
    if args.alpha is not None and args.branch_scale is None:
        print(f"note: --alpha {args.alpha:g} is {args.phi}'s alpha; the branch scale is --branch-scale (default 1)",
              file=sys.stderr)  # fmt: skip


def cmd_residual(args) -> int:
    from ..meanfield.residual import residual_theory

    params = cli_phi_params(args)
    if (args.width is None) != (args.networks is None):
        raise InputError("--width and --networks go together (they ask for a simulation)")
    settings = dict(
        depth=args.depth,
        branch_depth=args.branch_depth,
        branch_scale=args.branch_scale,
        branch=args.branch,
        eps=args.eps,
        sigma_w=args.sigma_w,
        gamma=args.gamma,
        beta=args.beta,
        **params,
    )
    result = residual_theory(
        args.phi,
        args.batch_size,
        input_correlation=args.input_correlation,
        output_gradient=args.output_gradient,
        criterion=args.criterion,
        **settings,
    )
    sim = None
    if args.width is not None:
        if args.input_correlation != 0 or args.output_gradient != "iid":
            raise InputError(
                "the simulation uses i.i.d. Gaussian inputs and a linear loss: drop --input-correlation "
                "and --output-gradient, or --width/--networks"
            )
        from tqdm import tqdm

        from ..simulate.residual import simulate_residual

        with tqdm(total=args.networks, desc="networks", unit="net", disable=None, file=sys.stderr) as bar:
            sim = simulate_residual(
                args.phi,
                int(args.batch_size),
                width=args.width,
                networks=args.networks,
                seed=args.seed,
                dtype=args.dtype,
                device=args.device,
                sampler=args.sampler,
                progress=lambda n: bar.update(n - bar.n),
                **settings,
            )
    if args.plot:
        from ..report.plots import plot_residual

        plot_residual(result, args.plot, simulation=sim)
    alpha_note(args)
    out = result.to_dict()
    if sim is not None:
        out["simulation"] = {"width": args.width, "networks": args.networks, "blocks": sim.blocks}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    scale = result.branch_scale if isinstance(result.branch_scale, float) else "per block"
    print(
        f"phi = {result.phi}, B = {result.batch_size}, D = {result.depth} blocks, K = {result.branch_depth} "
        f"({result.branch}), branch scale = {scale}, eps = {result.eps:g}"
    )
    depth = result.max_trainable_depth
    print(
        f"exponent {result.exponent:.6g} (plain network's lambda_G {result.lambda_G:.6g}); max trainable depth "
        f"{depth if depth is not None else 'beyond 1e8'} blocks (ln gradient growth <= {result.criterion:g})"
    )
    step = max(1, result.depth // 20)
    shown = sorted(set(range(0, result.depth + 1, step)) | {result.depth})
    header = ["block", "stream_var", "log_grad_ratio"] + (["measured", "stderr"] if sim else [])
    print("  ".join(h.rjust(14) for h in header))
    for i in shown:
        row = result.blocks[i]
        cells = [f"{i:>14d}", f"{row['stream_variance']:>14.6g}", f"{row['log_grad_ratio']:>14.6g}"]
        if sim is not None:
            m = sim.blocks[i]
            cells += [f"{m['log_grad_ratio']:>14.6g}", f"{m['log_grad_ratio_stderr']:>14.3g}"]
        print("  ".join(cells))
    for note in result.notes:
        print(f"note: {note}")
    if args.plot:
        print(f"plot written to {args.plot}")
    return 0


def cmd_design(args) -> int:
    from tqdm import tqdm

    from ..meanfield.planner import design

    params = cli_phi_params(args)
    # a residual search evaluates the theory of D x K layers up to some 100 times: a progress bar on stderr
    with tqdm(desc="theory evaluations", unit="eval", disable=None if args.residual else True, file=sys.stderr) as bar:
        result = design(
            args.phi,
            args.batch_size,
            args.depth,
            residual_network=args.residual,
            branch_depth=args.branch_depth,
            branch=args.branch,
            branch_scale=args.branch_scale,
            eps=args.eps,
            sigma_w=args.sigma_w,
            gamma=args.gamma,
            beta=args.beta,
            knobs=args.knobs,
            progress=lambda done, total: bar.update(done - bar.n) if bar.total == total else bar.reset(total),
            **params,
        )
    alpha_note(args)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    kind = f"residual, K = {result.branch_depth}" if result.residual else "plain"
    print(f"phi = {result.phi}, B = {result.batch_size}, target depth {result.depth} ({kind})")
    print("  ".join(h.rjust(12) for h in ("knob", "value", "max depth", "lambda_G", "exponent")))
    for o in result.options:
        value = f"{o.value:.4g}" + (" (bound)" if o.at_bound else "")
        depth = "beyond" if o.predicted_depth is None else f"{o.predicted_depth:.5g}"
        exponent = "-" if o.exponent is None else f"{o.exponent:.4g}"
        print("  ".join(c.rjust(12) for c in (o.knob, value, depth, f"{o.lambda_G:.6g}", exponent)))
    for knob, why in result.unreachable.items():
        print(f"note: {knob}: {why}")
    return 0
