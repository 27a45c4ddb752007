"""``bnmft simulate``: finite-width BN networks (one width, or several with --widths for the 1/N extrapolation)
against the theory (convolutional networks: ``bnmft conv``, :mod:`bnmft.cli.conv`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import InputError
from .arguments import bn_option, finite_float, phi_params, positive_int, sim_batch_size


def add_parsers(sub) -> None:
    """Add the ``simulate`` subcommand to the subparsers ``sub``."""
    p = sub.add_parser("simulate", help="finite-width BN networks: measured lambda_G and c* against the theory")
    p.add_argument("--phi", required=True, help="a name (see `bnmft nonlinearities`) or an expression in z")
    p.add_argument("--batch-size", "-B", required=True, nargs="+", type=sim_batch_size, metavar="B")
    p.add_argument("--width", "-N", type=positive_int, help="width N")
    p.add_argument("--widths", nargs="+", type=positive_int, metavar="N", help="extrapolate in 1/N over these widths")
    p.add_argument("--depth", "-L", required=True, type=positive_int)
    p.add_argument("--networks", "-K", required=True, type=positive_int)
    p.add_argument("--eps", type=bn_option("eps"), default=0.0)
    p.add_argument("--gamma", type=bn_option("gamma"), default=1.0)
    p.add_argument("--beta", type=bn_option("beta"), default=0.0)
    p.add_argument("--alpha", type=finite_float)
    p.add_argument("--slope", type=finite_float)
    p.add_argument("--sigma-w", type=bn_option("sigma_w"), default=1.0)
    p.add_argument("--init", choices=("gaussian", "orthogonal"), default="gaussian")
    p.add_argument(
        "--sampler",
        choices=("auto", "dense", "conditional"),
        default="auto",
        help="draw every weight matrix, or only what the pass sees (exact in distribution, O(N B^2) per layer); "
        "auto: the faster one",
    )
    p.add_argument("--placement", choices=("before", "after"), default="before", help="BN before phi (paper) or after")
    p.add_argument("--detach-stats", action="store_true", help="no backprop through the batch mean and variance")
    p.add_argument("--ghost-size", type=positive_int, help="BN statistics over sub-batches of this size")
    p.add_argument("--two-batches", action="store_true", help="also record the correlation between two batches")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--chunk", type=positive_int, default=50, help="networks run together (memory vs speed)")
    p.add_argument("--json", action="store_true", help="print a JSON list, one object per batch size")
    p.add_argument("--out", metavar="DIR", help="write layers.csv (tidy table), summary.csv and plots")
    p.set_defaults(func=cmd_simulate)


SIMULATE_JSON_KEYS = (
    "batch_size",
    "width",
    "depth",
    "networks",
    "lambda_G_mean",
    "lambda_G_stderr",
    "lambda_G_theory",
    "c_star_mean",
    "c_star_stderr",
    "c_star_theory",
    "q_star_mean",
    "q_star_stderr",
    "q_star_theory",
    "lambda_G_geometric",
    "lambda_G_geometric_stderr",
    "lambda_W_mean",
    "lambda_W_stderr",
    "lambda_W_theory",
)


def cmd_simulate(args) -> int:
    from dataclasses import asdict

    if args.widths:
        return _simulate_widths(args)
    if args.width is None:
        raise InputError("--width is required (or --widths; convolutional networks: bnmft conv)")

    result = _run_simulation(args, width=args.width)
    if args.out:
        from ..report.plots import plot_gradient_depth, plot_simulation_summary

        paths = result.save(args.out)
        theory_ok = args.eps == 0 and args.placement == "before" and not args.detach_stats
        plot_simulation_summary(
            result.summaries,
            Path(args.out) / "lambda_G.png",
            phi=args.phi if theory_ok and len(args.batch_size) > 1 else None,
            theory_kwargs={"gamma": args.gamma, "beta": args.beta, **phi_params(args)},
            title=f"{result.config.phi}: width {args.width}, depth {args.depth}",
        )
        plot_gradient_depth(
            result.rows(),
            Path(args.out) / "gradients.png",
            rates={s.batch_size: s.lambda_G_theory for s in result.summaries},
        )
        if not args.json:
            print(f"wrote {paths['layers']}, {paths['summary']}, lambda_G.png, gradients.png in {args.out}")
    summaries = [asdict(s) for s in result.summaries]
    if args.json:
        print(json.dumps([{k: s[k] for k in SIMULATE_JSON_KEYS} for s in summaries], indent=2, default=float))
        return 0
    print(f"phi = {result.config.phi}, width = {args.width}, depth = {args.depth}, networks = {args.networks}")
    print(f"{'B':>6}  {'lambda_G (sim)':>22}  {'theory':>10}  {'c* (sim)':>22}  {'theory':>10}")
    for s in result.summaries:
        lt = "-" if s.lambda_G_theory is None else f"{s.lambda_G_theory:.5f}"
        ct = "-" if s.c_star_theory is None else f"{s.c_star_theory:.5f}"
        print(
            f"{s.batch_size:>6}  {s.lambda_G_mean:>12.5f} +- {s.lambda_G_stderr:<7.5f}  {lt:>10}  "
            f"{s.c_star_mean:>12.5f} +- {s.c_star_stderr:<7.5f}  {ct:>10}"
        )
    return 0


def _run_simulation(args, **size):
    """``simulate`` with ``bnmft simulate``'s options (``size``: width=N, or widths=[...]), a progress bar on stderr."""
    from tqdm import tqdm

    from ..simulate import simulate_mlp

    names = ("eps", "gamma", "beta", "sigma_w", "init", "sampler", "placement", "detach_stats", "ghost_size", "seed")
    options = {
        name: getattr(args, name) for name in (*names, "two_batches", "device", "dtype", "chunk", "alpha", "slope")
    }
    total = args.networks * len(args.batch_size) * len(size.get("widths") or [0])
    with tqdm(total=total, desc="networks", unit="net", disable=None, file=sys.stderr) as bar:
        return simulate_mlp(args.phi, args.batch_size, depth=args.depth, networks=args.networks,
                        progress=lambda done: bar.update(done - bar.n), **size, **options)  # fmt: skip


def _simulate_widths(args) -> int:
    """``bnmft simulate --widths ...``: every estimate fitted as a + b/N (+ c/N^2), beside the theory."""
    if args.width is not None:
        raise InputError("--width and --widths: give one of them")
    result = _run_simulation(args, widths=args.widths)
    rows = result.rows()
    if args.json:
        print(json.dumps(rows, indent=2, default=float))
        return 0
    print(f"phi = {args.phi}: estimates fitted as a + b/N over widths {sorted(args.widths)}")
    print(f"{'B':>6}  {'estimate':>9}  {'a (N = inf)':>22}  {'theory':>10}  {'b (1/N)':>20}  {'chi2/dof':>9}")
    for r in rows:
        t = "-" if r["theory"] is None else f"{r['theory']:.5f}"
        print(
            f"{r['batch_size']:>6}  {r['estimate']:>9}  {r['a']:>12.5f} +- {r['a_stderr']:<7.5f}  {t:>10}  "
            f"{r['b']:>9.3f} +- {r['b_stderr']:<7.3f}  {r['chi2']:>5.1f}/{r['dof']}"
        )
    return 0
