"""The ``bnmft conv`` command (convolutional networks: BN over batch x positions; the exact or Monte Carlo theory,
and with ``--channels --depth --networks`` a simulation beside it) and ``bnmft probe``; registered by
:func:`bnmft.cli.build_parser`."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from typing import TypeVar

from ..errors import InputError
from ..options import FIGURE_SUFFIXES, check_int, check_memory, check_seed
from .arguments import bn_option, finite_float, phi_params, positive_int

T = TypeVar("T")

#: the simulation's options (flag, attribute): errors without --channels/--depth/--networks, never ignored
SIMULATION_FLAGS = (
    ("--seed", "seed"),
    ("--dtype", "dtype"),
    ("--device", "device"),
    ("--chunk", "chunk"),
    ("--detach-stats", "detach_stats"),
    ("--ghost-size", "ghost_size"),
    ("--out", "out"),
)
#: the measured estimates shown beside the theory (keys of ConvSimulation.summary)
MEASURED_KEYS = (
    "lambda_G_mean",
    "lambda_G_stderr",
    "q_mean",
    "q_stderr",
    "c_space_mean",
    "c_space_stderr",
    "c_batch_mean",
    "c_batch_stderr",
    "channel_var_mean",
    "channel_var_stderr",
)


class MovedToConv(argparse.Action):
    """``--spatial`` on ``bnmft theory`` / ``simulate``: refused (exit 2) with a pointer to ``bnmft conv``."""

    def __call__(self, parser, namespace, values, option_string=None):
        parser.exit(
            2,
            f"{parser.prog}: error: --spatial: convolutional networks have their own command: bnmft conv "
            "--phi SPEC -B B --spatial HxW [--channels C --depth L --networks K] (see bnmft conv --help)\n",
        )


def add_conv_parser(sub) -> None:
    p = sub.add_parser("conv", help="convolutional BN network (BN over batch x positions): theory, and a simulation")
    p.add_argument("--phi", required=True, help="a name (see `bnmft nonlinearities`) or an expression in z")
    p.add_argument("--batch-size", "-B", required=True, nargs="+", type=positive_int, metavar="B",
                   help="one or more batch sizes (B x positions >= 4; B >= 2 to simulate)")  # fmt: skip
    p.add_argument("--spatial", required=True, metavar="HxW|L", help="image shape: L (1-D) or HxW (2-D)")
    p.add_argument("--kernel", type=positive_int, default=3, help="odd kernel size (default 3)")
    p.add_argument("--padding", choices=("periodic", "zero"), default="periodic",
                   help="periodic (exact: the MLP at batch B x positions) or zero (Monte Carlo backward)")  # fmt: skip
    p.add_argument("--eps", nargs="+", type=bn_option("eps"), metavar="E", help="BN eps (one or more; default 0)")
    p.add_argument("--gamma", type=bn_option("gamma"), default=1.0, help="BN scale: phi(gamma z + beta) (default 1)")
    p.add_argument("--beta", type=bn_option("beta"), default=0.0, help="BN shift (default 0)")
    p.add_argument("--alpha", type=finite_float, help="alpha of alpha_relu (max(z,0)^alpha) or elu")
    p.add_argument("--slope", type=finite_float, help="negative slope of leaky_relu")
    p.add_argument("--sigma-w", type=bn_option("sigma_w"), default=1.0, help="weight scale sigma_w (> 0, default 1)")
    p.add_argument("--samples", type=positive_int, help="Monte Carlo draws of the backward (--padding zero; "
                   "default 20000)")  # fmt: skip
    p.add_argument("--channels", "-C", type=positive_int, help="also simulate networks of this many channels")
    p.add_argument("--depth", "-L", type=positive_int, help="layers of the simulated networks")
    p.add_argument("--networks", "-K", type=positive_int, help="number of simulated networks")
    p.add_argument("--seed", type=int, help="simulation seed (default 0)")
    p.add_argument("--dtype", choices=("float32", "float64"), help="simulation dtype (default float32)")
    p.add_argument("--device", help="cpu or cuda (simulation; default cpu)")
    p.add_argument("--chunk", type=positive_int, help="networks run together (simulation; default 50)")
    p.add_argument("--detach-stats", action="store_true", help="no backprop through the BN statistics (simulation)")
    p.add_argument("--ghost-size", type=positive_int, help="BN statistics over ghost batches of this size (simulation)")
    p.add_argument("--json", action="store_true", help="print a JSON list, one object per (batch size, eps)")
    p.add_argument("--plot", metavar="FILE", help="lambda_G against batch size (and the measured gradients by layer)")
    p.add_argument("--out", metavar="DIR", help="write the simulation's tidy tables (conv_layers_B*.csv)")
    p.set_defaults(func=cmd_conv)


def cmd_conv(args) -> int:
    from ..meanfield.conv import check_conv_shape, check_zero_padding, conv_theory
    from ..nonlinearity import get_nonlinearity

    sizes = {"--channels": args.channels, "--depth": args.depth, "--networks": args.networks}
    simulating = any(v is not None for v in sizes.values())
    if simulating and any(v is None for v in sizes.values()):
        missing = [flag for flag, v in sizes.items() if v is None]
        raise InputError(f"{missing[0]}: --channels, --depth and --networks go together (they ask for a simulation)")
    if not simulating:
        for flag, attr in SIMULATION_FLAGS:
            if getattr(args, attr) not in (None, False):
                raise InputError(f"{flag} applies to the simulation only: add --channels, --depth and --networks")
    if args.samples is not None and (args.padding != "zero" or args.kernel == 1):
        raise InputError("--samples applies to --padding zero with --kernel > 1 only (the others are exact)")
    spatial = check_conv_shape(args.spatial, args.kernel, args.padding)
    phi = get_nonlinearity(args.phi, **phi_params(args))
    eps_values = args.eps or [0.0]
    samples = 20_000 if args.samples is None else args.samples
    pairs = [(b, e) for b in args.batch_size for e in eps_values]
    if args.padding == "zero" and args.kernel > 1:  # every batch size's limits and memory before the first one runs
        for b, e in pairs:
            check_zero_padding(b * math.prod(spatial), spatial, args.kernel, e, samples)
    results = []
    for b, e in pairs:  # zero padding iterates (minutes from about 64 pairs): a progress bar on stderr
        with _iterations_bar(f"B = {b}", args.padding == "zero" and args.kernel > 1) as bar:
            results.append(conv_theory(phi, b, spatial=spatial, kernel=args.kernel, padding=args.padding, eps=e,
                                       sigma_w=args.sigma_w, gamma=args.gamma, beta=args.beta, samples=samples,
                                       progress=lambda done, total, bar=bar: bar.update(done - bar.n)))  # fmt: skip
    sims = _simulate(args, pairs, spatial, phi) if simulating else None
    if args.plot:
        from ..report.plots import plot_conv

        plot_conv(results, args.plot, simulations=sims)
    out = [r.to_dict() for r in results]
    if sims is not None:
        for row, sim in zip(out, sims, strict=True):
            row["simulation"] = {"channels": args.channels, "depth": args.depth, "networks": args.networks,
                                 **{k: sim.summary[k] for k in MEASURED_KEYS}}  # fmt: skip
    if args.json:
        print(json.dumps(out, indent=2, default=float))
        return 0
    first = results[0]
    size = "x".join(map(str, spatial))
    line = f"phi = {first.phi}, conv {'x'.join([str(args.kernel)] * len(spatial))} on {size} ({args.padding} padding)"
    if sims is not None:
        line += f", {args.channels} channels, depth {args.depth}, {args.networks} networks"
    print(line)
    header = ["B", "B x pos", "eps", "lambda_G", "+-", "MLP at B x pos", "c_space", "c_batch", "max depth"]
    if sims is not None:
        header += ["measured", "+-", "c_space (sim)", "c_batch (sim)"]
    print("  ".join(h.rjust(14) for h in header))
    for i, r in enumerate(results):
        cells = [
            str(r.batch_size), str(r.effective_batch_size), f"{r.eps:g}", f"{r.lambda_G:.8g}",
            f"{r.lambda_G_stderr:.2g}",
            f"{r.mlp_lambda_G:.8g}", "-" if r.c_space is None else f"{r.c_space:.6g}",
            "-" if r.c_batch is None else f"{r.c_batch:.6g}", f"{r.max_trainable_depth:.6g}",
        ]  # fmt: skip
        if sims is not None:
            m = sims[i].summary
            cells += [f"{m['lambda_G_mean']:.6g}", f"{m['lambda_G_stderr']:.2g}", f"{m['c_space_mean']:.6g}",
                      f"{m['c_batch_mean']:.6g}"]  # fmt: skip
        print("  ".join(c.rjust(14) for c in cells))
    for note in sorted({n for r in results for n in r.notes}):
        print(f"note: {note}")
    if args.out:
        print(f"wrote conv_layers_B*.csv in {args.out}")
    if args.plot:
        print(f"plot written to {args.plot}")
    return 0


def _iterations_bar(desc: str, shown: bool):
    """A tqdm bar on stderr (on a terminal) over zero padding's iterations: the forward's, then the backward's power
    iterations (FORWARD_ITERATIONS + 4 POWER_ITERATIONS at most; one that converges early skips ahead)."""
    from tqdm import tqdm

    from ..meanfield.conv import FORWARD_ITERATIONS, POWER_ITERATIONS

    total = FORWARD_ITERATIONS + 4 * POWER_ITERATIONS
    return tqdm(total=total, desc=desc, unit="it", disable=None if shown else True, file=sys.stderr)


def _simulate(args, pairs: list[tuple[int, float]], spatial: tuple[int, ...], phi) -> list:
    """One simulation per (batch size, eps), a progress bar on stderr; the tidy tables into ``--out``."""
    from tqdm import tqdm

    from ..simulate.conv import simulate_conv

    options = {name: getattr(args, name) for name in ("seed", "dtype", "device", "chunk", "ghost_size")}
    several_eps = len({e for _, e in pairs}) > 1
    sims = []
    for b, e in pairs:
        desc = f"B = {b}" + (f", eps = {e:g}" if several_eps else "")
        with tqdm(total=args.networks, desc=desc, unit="net", disable=None, file=sys.stderr) as bar:
            sim = simulate_conv(
                phi, b, spatial=spatial, channels=args.channels, depth=args.depth, networks=args.networks,
                kernel=args.kernel, padding=args.padding, eps=e, gamma=args.gamma, beta=args.beta,
                sigma_w=args.sigma_w, detach_stats=args.detach_stats, progress=lambda n: bar.update(n - bar.n),
                **options,
            )  # fmt: skip
        sims.append(sim)
        if args.out:
            from pathlib import Path

            from .._io import write_csv

            name = f"conv_layers_B{b}" + (f"_eps{e:g}" if several_eps else "") + ".csv"
            Path(args.out).mkdir(parents=True, exist_ok=True)
            write_csv(Path(args.out) / name, sim.rows())
    return sims


def add_parsers(sub) -> None:
    for command in ("theory", "simulate"):
        sub.choices[command].add_argument("--spatial", action=MovedToConv, help=argparse.SUPPRESS)
    add_conv_parser(sub)
    p = sub.add_parser("probe", help="any PyTorch model: per-layer statistics and gradients along its graph, BN "
                       "layers vs theory, a verdict")  # fmt: skip
    p.add_argument("--model", required=True, metavar="MODULE:CALLABLE", help="MODULE importable from here")
    p.add_argument("--input-shape", metavar="SHAPE", help="one example's shape, e.g. 3x32x32 or 784 (default: "
                   "the first Linear layer's in_features, or the data set's own shape)")  # fmt: skip
    p.add_argument("--batch-size", "-B", required=True, type=positive_int)
    p.add_argument("--data", metavar="SOURCE", help="inputs (and labels) from mnist, fashion-mnist, cifar10, a DIR "
                   "holding cifar-10-batches-py, or a FILE.npy of examples (n, ...), instead of Gaussian inputs; "
                   "resized to --input-shape")  # fmt: skip
    p.add_argument("--data-dir", help="where fashion-mnist / cifar10 files are")
    p.add_argument("--draws", type=positive_int, default=1, help="K fresh initialisations: means and standard errors")
    p.add_argument("--steps", type=int, default=0, help="also record after this many SGD steps (cross-entropy)")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="one object: layers, bn_layers, blocks, growth, verdict")
    p.add_argument("--plot", metavar="FILE", help="signal propagation: gradient norms and variances by layer")
    p.set_defaults(func=cmd_probe)


def load_factory(spec: str):
    """``module:callable`` -> the callable (module importable from the working directory), checked to be callable
    without arguments; :func:`bnmft.simulate.model_probe.seeded_model` calls it.

    The user's own code - importing the module, calling the factory - runs through :func:`_users`: whatever it
    raises becomes one line naming the model, the exception's type and message (its traceback with ``--debug``)."""
    import importlib
    import os

    module_name, sep, attr = spec.partition(":")
    if not sep or not all(part.isidentifier() for part in module_name.split(".")) or not attr.isidentifier():
        raise InputError(
            f"--model must be MODULE:CALLABLE - a dotted module name importable from here (like mymodels or "
            f"pkg.models) and a name in it - got {spec!r}"
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module = _users(spec, f"importing {module_name} (from {os.getcwd()})", lambda: importlib.import_module(module_name))
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
    return lambda: _users(spec, "its factory", factory)


def _users(spec: str, what: str, call: Callable[[], T]) -> T:
    """``call()``, which runs the user's code (``what``): any exception it raises is the user's, reported as bad
    input in one line naming the model, the exception's type and the first line of its message; the exception
    stays the cause (the CLI shows its traceback with ``--debug``)."""
    try:
        return call()
    except InputError:
        raise
    except Exception as err:  # the user's code may raise anything: shown as theirs, never as a bnmft traceback
        message = str(err).strip().splitlines()
        detail = f"{type(err).__name__}: {message[0]}" if message else type(err).__name__
        raise InputError(f"--model {spec}: {what} raised {detail} (run with --debug for the traceback)") from err


def input_shape_arg(text: str | None) -> tuple[int, ...] | None:
    """``--input-shape`` ("3x32x32", "784") as a tuple; None when not given (the probe infers it)."""
    if not text:
        return None
    try:
        shape = tuple(int(v) for v in text.lower().replace(",", "x").split("x"))
    except ValueError:
        raise InputError(f"--input-shape must be integers like 3x32x32, got {text!r}") from None
    if not shape or any(v < 1 for v in shape) or math.prod(shape) > 10**8:
        raise InputError(f"--input-shape must be positive integers (at most 1e8 values), got {text!r}")
    return shape


#: the figure formats --plot writes (checked by bnmft.options.check_output_path before any work)
PLOT_SUFFIXES = FIGURE_SUFFIXES


def _check_probe_memory(model, batch: int, shape: tuple[int, ...] | None) -> None:
    """Refuse, before any input is drawn, a batch that cannot fit: a lower bound of the probe's memory, the float32
    inputs and the first layer's outputs and their gradients (a Linear's features, or a conv's channels at the
    input's positions over its stride); the rest depends on the user's model."""
    modules = list(model.modules()) if callable(getattr(model, "modules", None)) else []
    first = next((m for m in modules if isinstance(getattr(m, "out_features", getattr(m, "out_channels", None)), int)),
                 None)  # fmt: skip
    inputs = math.prod(shape) if shape else getattr(first, "in_features", 0)
    outputs = 0
    if first is not None and hasattr(first, "out_features"):
        outputs = first.out_features
    elif first is not None:
        stride = getattr(first, "stride", 1)
        strides = math.prod(stride) if isinstance(stride, tuple) else stride
        outputs = first.out_channels * max(1, math.prod(shape[1:]) // max(1, strides)) if shape else 0
    name = "--input-shape" if shape and inputs >= outputs else "--batch-size"
    check_memory(4.0 * batch * (inputs + 2 * outputs), f"the probe's batch ({batch} examples of {inputs} values, "
                 f"{outputs} outputs each in the first layer)", name)  # fmt: skip


def _fmt(value, spec: str = ".4g", stderr=None) -> str:
    if value is None:
        return "-"
    text = format(value, spec)
    return text if stderr is None else f"{text} +- {stderr:.2g}"


def cmd_probe(args) -> int:
    from ..simulate.model_probe import gaussian_inputs, probe, seeded_model

    if args.steps < 0:
        raise InputError(f"--steps must be >= 0, got {args.steps}")
    if not (args.lr > 0 and args.lr < float("inf")):
        raise InputError(f"--lr must be a finite number > 0, got {args.lr}")
    check_int("--batch-size", args.batch_size, 2)  # every statistic the probe records is over the batch
    check_seed(args.seed, "--seed")
    check_seed(args.seed + args.draws - 1, "--seed + --draws - 1")  # draw k is seeded with seed + k
    factory = load_factory(args.model)
    model = seeded_model(factory, args.seed, what=f"--model: {args.model}")
    shape = input_shape_arg(args.input_shape)
    _check_probe_memory(model, args.batch_size, shape)
    labels = None
    if args.data:
        from ..experiments.data import probe_batch
        from ..simulate.model_probe import fit_inputs

        examples, native, classes = probe_batch(args.data, args.batch_size, args.seed, args.data_dir)
        inputs, labels = fit_inputs(model, examples, native, classes, shape)
    else:
        inputs = gaussian_inputs(model, args.batch_size, shape, args.seed)
    _check_output(model, inputs, args.model)
    result = probe(factory if args.draws > 1 else model, inputs, labels=labels, steps=args.steps, lr=args.lr,
                   seed=args.seed, draws=args.draws)  # fmt: skip
    _check_no_nan(result.to_dict(), args.model)
    if args.plot:
        from ..report.plots import plot_probe

        plot_probe(result, args.plot)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=float))
        return 0
    _print_probe(result, args)
    return 0


def _check_output(model, inputs, spec: str) -> None:
    """The model's output on the probe's inputs (a forward on a train-mode copy) holds no NaN or inf: the probe
    measures the gradient of that output, and a non-finite one would leave nothing but NaN to report."""
    import copy

    output = _users(spec, "its forward", lambda: copy.deepcopy(model).train()(inputs))
    finite = getattr(output, "isfinite", None)  # a tensor (other outputs: the probe's own error)
    if finite is not None and not bool(finite().all()):
        raise InputError(
            f"--model {spec}: the model's output on these inputs holds NaN or inf (its weights or its forward "
            "overflow or divide by zero): there is no gradient to measure"
        )


def _check_no_nan(value, spec: str, where: str = "the result") -> None:
    """No NaN anywhere in the probe's result (a number the probe could not measure is None, printed as -)."""
    if isinstance(value, float) and math.isnan(value):
        raise InputError(f"--model {spec}: the probe measured NaN for {where} (the model yields no finite value)")
    if isinstance(value, dict):
        for key, v in value.items():
            _check_no_nan(v, spec, f"{value['name']}'s {key}" if "name" in value else str(key))
    elif isinstance(value, list):
        for v in value:
            _check_no_nan(v, spec, where)


def _print_probe(result, args) -> None:
    width = max([len("layer"), *(len(r["name"]) for r in result.layers)])
    print(f"{'layer':<{width}}  {'kind':>12}  {'channel var':>12}  {'batch corr':>10}  {'grad norm^2':>12}")
    for row in result.layers:
        if row["step"] == 0:
            print(f"{row['name']:<{width}}  {row['kind']:>12}  {row['channel_var']:>12.4g}  "
                  f"{row['batch_correlation']:>10.4f}  {_fmt(row['grad_norm_sq']):>12}")  # fmt: skip
    if result.bn_layers:
        print(f"\n{'BN layer':<{width}}  {'phi':>10}  {'batch':>7}  {'measured rate':>13}  {'theory rate':>11}  "
              f"{'local rate':>10}  {'ln ratio':>8}  {'predicted':>9}  previous")  # fmt: skip
        for b in result.bn_layers:
            phi = str(b["phi"]) if b["phi"] is None or len(b["phi"]) <= 10 else b["phi"][:9] + "~"
            print(
                f"{b['name']:<{width}}  {phi:>10}  {b['batch']:>7}  {_fmt(b['measured_rate'], '.4f'):>13}  "
                f"{_fmt(b['theory_rate'], '.4f'):>11}  {_fmt(b['local_rate'], '.4f'):>10}  "
                f"{_fmt(b['log_grad_ratio'], '.3f'):>8}  {_fmt(b.get('predicted_log_grad_ratio'), '.3f'):>9}  "
                f"{b['previous'] or '-'}"
            )
    if result.blocks:
        print(f"\n{'block':<{width}}  {'level':>6}  {'class':>12}  {'kind':>9}  {'ln growth':>10}")
        for b in result.blocks:
            print(f"{b['name']:<{width}}  {b['level']:>6}  {b['class'][:12]:>12}  {b['kind']:>9}  "
                  f"{_fmt(b['growth'], '.3f', b.get('growth_stderr')):>10}")  # fmt: skip
    g = result.growth
    if g.get("measured") is not None:
        print(f"\ntotal ln gradient growth {g['first']} <- {g['last']}: "
              f"{_fmt(g['measured'], '.3f', g.get('measured_stderr'))}; predicted from the graph "
              f"{_fmt(g.get('predicted'), '.3f')}")  # fmt: skip
    if result.steps:
        after = g.get("after_steps")
        print(f"after {result.steps} SGD steps (lr {args.lr:g}): total ln growth {_fmt(after, '.3f')}")
    v = result.verdict
    if v.get("summary"):
        print(f"verdict: {v['summary']}")
        for c in v.get("concentrated_in", []):
            print(f"  growth concentrates in {c['name']}: {c['growth']:.3f} ({100 * c['share']:.0f}% of the growth)")
        for c in v.get("changes", []):
            print(f"  change {c['knob']} -> {c['value']:.4g}: {c['effect']}")
        unit = v.get("unit") or {}
        for key in ("why", "design_note"):
            if unit.get(key):
                print(f"  {unit['class']}: {unit[key]}")
    for note in result.notes:
        print(f"note: {note}")
    if args.plot:
        print(f"plot written to {args.plot}")
