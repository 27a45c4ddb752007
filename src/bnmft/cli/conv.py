"""``--spatial``: the convolutional (spatial BN) variants of ``bnmft theory`` and ``bnmft simulate``, and
``bnmft probe``; registered by :func:`bnmft.cli.build_parser`."""

from __future__ import annotations

import json
import math
import sys

from ..errors import InputError
from .arguments import positive_int


def add_spatial_arguments(theory_parser, simulate_parser) -> None:
    for p in (theory_parser, simulate_parser):
        p.add_argument(
            "--spatial", metavar="HxW", help="convolutional network on L or HxW images (BN over batch x positions)"
        )
        p.add_argument("--kernel", type=positive_int, default=3, help="odd kernel size (with --spatial; default 3)")
        p.add_argument("--padding", choices=("periodic", "zero"), default="periodic", help="with --spatial")
    simulate_parser.add_argument("--channels", "-C", type=positive_int, help="channels (with --spatial)")
    theory_parser.add_argument("--samples", type=positive_int, default=20_000, help="Monte Carlo (zero padding)")


def _spatial(args):
    from ..meanfield.conv import check_conv_shape

    return check_conv_shape(args.spatial, args.kernel, args.padding)


def theory_spatial(args, phi_params: dict) -> int:
    from ..meanfield.conv import conv_theory

    spatial = _spatial(args)
    results = []
    for b in args.batch_size:
        if not isinstance(b, int):
            raise InputError("--batch-size: must be finite with --spatial")
        b = int(b)
        for e in args.eps or [0.0]:
            results.append(
                conv_theory(
                    args.phi,
                    b,
                    spatial=spatial,
                    kernel=args.kernel,
                    padding=args.padding,
                    eps=e,
                    sigma_w=args.sigma_w,
                    gamma=args.gamma,
                    beta=args.beta,
                    samples=args.samples,
                    **phi_params,
                )
            )
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2, default=float))
        return 0
    first = results[0]
    print(f"phi = {first.phi}, conv {args.kernel}x{args.kernel} on {args.spatial} ({args.padding} padding)")
    header = ("B", "B x pos", "eps", "lambda_G", "+-", "MLP at B x pos", "c_space", "c_batch", "max depth")
    print("  ".join(h.rjust(14) for h in header))
    for r in results:
        cells = [
            str(r.batch_size), str(r.effective_batch_size), f"{r.eps:g}", f"{r.lambda_G:.8g}",
            f"{r.lambda_G_stderr:.2g}",
            f"{r.mlp_lambda_G:.8g}", "-" if r.c_space is None else f"{r.c_space:.6g}",
            "-" if r.c_batch is None else f"{r.c_batch:.6g}", f"{r.max_trainable_depth:.6g}",
        ]  # fmt: skip
        print("  ".join(c.rjust(14) for c in cells))
    return 0


def simulate_spatial(args, phi_params: dict) -> int:
    from tqdm import tqdm

    from ..nonlinearity import get_nonlinearity
    from ..simulate.conv import simulate_conv

    if args.channels is None:
        raise InputError("--channels is required with --spatial (the conv layers' width)")
    if args.width is not None:
        raise InputError("--width does not apply with --spatial: use --channels")
    for flag, bad in (("--init", args.init != "gaussian"), ("--placement", args.placement != "before"),
                      ("--sampler", args.sampler == "conditional"),
                      ("--two-batches", args.two_batches)):  # fmt: skip
        if bad:
            raise InputError(f"{flag} is not available with --spatial")
    spatial = _spatial(args)
    phi = get_nonlinearity(args.phi, **phi_params)
    out = []
    for b in args.batch_size:
        with tqdm(total=args.networks, desc=f"B = {b}", unit="net", disable=None, file=sys.stderr) as bar:
            sim = simulate_conv(
                phi, b, spatial=spatial, channels=args.channels, depth=args.depth, networks=args.networks,
                kernel=args.kernel, padding=args.padding, eps=args.eps, gamma=args.gamma, beta=args.beta,
                sigma_w=args.sigma_w, detach_stats=args.detach_stats, ghost_size=args.ghost_size, seed=args.seed,
                device=args.device, dtype=args.dtype, chunk=args.chunk, progress=lambda n: bar.update(n - bar.n),
            )  # fmt: skip
        out.append({"batch_size": b, **sim.summary})
        if args.out:
            from pathlib import Path

            from .._io import write_csv

            write_csv(Path(args.out) / f"conv_layers_B{b}.csv", sim.rows())
    if args.json:
        print(json.dumps(out, indent=2, default=float))
        return 0
    print(f"phi = {phi.name}, conv {args.kernel}x{args.kernel} on {args.spatial} ({args.padding}), "
          f"{args.channels} channels, depth {args.depth}, {args.networks} networks")  # fmt: skip
    print(f"{'B':>6}  {'lambda_G (sim)':>22}  {'theory':>10}  {'c_space':>10}  {'c_batch':>10}")
    for row in out:
        lt = "-" if row["lambda_G_theory"] is None else f"{row['lambda_G_theory']:.5f}"
        print(
            f"{row['batch_size']:>6}  {row['lambda_G_mean']:>12.5f} +- {row['lambda_G_stderr']:<7.5f}  {lt:>10}  "
            f"{row['c_space_mean']:>10.5f}  {row['c_batch_mean']:>10.5f}"
        )
    return 0


def add_parsers(sub) -> None:
    add_spatial_arguments(sub.choices["theory"], sub.choices["simulate"])
    p = sub.add_parser("probe", help="any PyTorch model: per-layer statistics and gradients, BN layers vs theory")
    p.add_argument("--model", required=True, metavar="MODULE:CALLABLE", help="MODULE importable from here")
    p.add_argument("--input-shape", metavar="SHAPE", help="one example's shape, e.g. 3x32x32 or 784 (default: "
                   "the first Linear layer's in_features)")  # fmt: skip
    p.add_argument("--batch-size", "-B", required=True, type=positive_int)
    p.add_argument("--steps", type=int, default=0, help="also record after this many SGD steps")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="one object with lists layers and bn_layers")
    p.add_argument("--plot", metavar="FILE", help="signal propagation: gradient norms and variances by layer")
    p.set_defaults(func=cmd_probe)


def load_model(spec: str):
    """``module:callable`` -> the callable's model (module importable from the working directory)."""
    import importlib
    import os

    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise InputError(f"--model must be MODULE:CALLABLE, got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise InputError(f"--model: cannot import {module_name!r} from {os.getcwd()} ({err})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise InputError(f"--model: {module_name!r} has no callable {attr!r}")
    import inspect

    try:
        signature: inspect.Signature | None = inspect.signature(factory)
    except ValueError:  # no signature to inspect (some builtins): call it and see
        signature = None
    if signature is not None:
        try:
            signature.bind()
        except TypeError:
            raise InputError(f"--model: {spec} must be callable without arguments") from None
    return factory()  # an exception inside the user's own code keeps its traceback


def _input_shape(text, model) -> tuple[int, ...]:
    import torch

    if text:
        try:
            shape = tuple(int(v) for v in text.lower().replace(",", "x").split("x"))
        except ValueError:
            raise InputError(f"--input-shape must be integers like 3x32x32, got {text!r}") from None
        if not shape or any(v < 1 for v in shape) or math.prod(shape) > 10**8:
            raise InputError(f"--input-shape must be positive integers (at most 1e8 values), got {text!r}")
        return shape
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            return (m.in_features,)
        if isinstance(m, torch.nn.Conv1d | torch.nn.Conv2d | torch.nn.Conv3d):
            break
    raise InputError("--input-shape is needed (the model does not start with a Linear layer)")


def cmd_probe(args) -> int:
    import torch

    from ..simulate.model_probe import probe

    if args.steps < 0:
        raise InputError(f"--steps must be >= 0, got {args.steps}")
    if not (args.lr > 0 and args.lr < float("inf")):
        raise InputError(f"--lr must be a finite number > 0, got {args.lr}")
    if args.seed < 0:
        raise InputError(f"--seed must be >= 0, got {args.seed}")
    torch.manual_seed(args.seed)
    model = load_model(args.model)
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"--model: {args.model} returned {type(model).__name__}, not a torch.nn.Module")
    shape = _input_shape(args.input_shape, model)
    inputs = torch.randn(args.batch_size, *shape, generator=torch.Generator().manual_seed(args.seed))
    try:
        result = probe(model, inputs, steps=args.steps, lr=args.lr, seed=args.seed)
    except RuntimeError as err:  # the model's own forward refuses these inputs (shapes): the user's input
        raise InputError(f"--input-shape {shape}: the model's forward failed: {str(err).splitlines()[0]}") from None
    if args.plot:
        from ..report.plots import plot_probe

        plot_probe(result, args.plot)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=float))
        return 0
    print(f"{'layer':>14}  {'kind':>10}  {'channel var':>12}  {'batch corr':>10}  {'grad norm^2':>12}")
    for row in result.layers:
        if row["step"] == 0:
            g = "-" if row["grad_norm_sq"] is None else f"{row['grad_norm_sq']:.4g}"
            print(f"{row['name'][-14:]:>14}  {row['kind']:>10}  {row['channel_var']:>12.4g}  "
                  f"{row['batch_correlation']:>10.4f}  {g:>12}")  # fmt: skip
    print(f"\n{'BN layer':>14}  {'phi':>8}  {'batch':>7}  {'measured rate':>13}  {'theory rate':>11}")
    for b in result.bn_layers:
        m = "-" if b["measured_rate"] is None else f"{b['measured_rate']:.4f}"
        t = "-" if b["theory_rate"] is None else f"{b['theory_rate']:.4f}"
        print(f"{b['name'][-14:]:>14}  {b['phi']!s:>8}  {b['batch']:>7}  {m:>13}  {t:>11}")
    for note in result.notes:
        print(f"note: {note}")
    if args.plot:
        print(f"plot written to {args.plot}")
    return 0
