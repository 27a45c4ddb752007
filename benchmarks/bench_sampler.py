"""Benchmark: the conditional sampler against drawing every weight matrix (issue 14), in one run.

1. The Fig 1a setting (ReLU, width 1000, depth 50, batch sizes 4 ... 128): wall time of ``simulate_mlp(...,
   sampler="dense")`` - every batch size through the same networks, so one 1000 x 1000 matrix per layer serves all
   twelve - and of ``sampler="conditional"`` - each batch through its own networks - on the same number of
   networks (default 10 of the paper's 200; ``--networks 200`` for all); the ratio and the agreement of the
   lambda_G estimates per batch size (difference over combined standard errors).
2. One batch size at a time (width 1000, B = 4, 32, 128): the ratio when the dense path cannot share its weights.
3. Width 65536, relu, B = 32, depth 50 with the conditional sampler: wall time for ``--wide-networks`` networks
   (the issue's target: 20 networks in under a minute) and lambda_G against the theory.
4. Orthogonal weights (the Fig 2 network: identity, two batches of 32 through the same weights, depth 30), widths
   1024 and 2048, 4 networks: dense (a QR of an N x N matrix per layer) against the conditional sampler.

Why setting 1 cannot reach 10x: per layer and network the conditional sampler must draw 2 N T normals for a batch
of T rows (A = W Q and the backward's Z), 2 N sum(T) = 0.89 N^2 here, while the dense path draws N^2 once for all
twelve batches - and a normal costs ~5.5 ns here, as much as ~400 multiply-adds. The ratio grows like N / B
(setting 2; 3).

Usage: ``.venv/bin/python benchmarks/bench_sampler.py [--networks 10] [--wide-networks 20] [--json]``
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

from bnmft.simulate import simulate_mlp

FIG1A_BATCHES = (4, 5, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128)


def _timed(phi: str = "relu", **kw):
    start = time.perf_counter()
    result = simulate_mlp(phi, **kw)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--networks", type=int, default=10)
    parser.add_argument("--single-networks", type=int, default=6, help="networks per batch size in setting 2")
    parser.add_argument("--wide-networks", type=int, default=20)
    parser.add_argument("--skip-wide", action="store_true", help="without setting 3")
    parser.add_argument("--only-orthogonal", action="store_true", help="setting 4 only")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    simulate_mlp("relu", [8], width=64, depth=8, networks=2, sampler="conditional")  # warm-up (lazy imports, BLAS)
    out: dict = {"setting": {"width": 1000, "depth": 50, "batch_sizes": FIG1A_BATCHES, "networks": args.networks}}
    out["orthogonal"] = []
    for width in (1024, 2048):
        kw = dict(batch_sizes=[32], width=width, depth=30, networks=4, seed=1, init="orthogonal", two_batches=True)
        td, rd = _timed(phi="identity", sampler="dense", **kw)
        tc, rc = _timed(phi="identity", sampler="conditional", **kw)
        a, b = rd.summaries[0], rc.summaries[0]
        out["orthogonal"].append({"width": width, "dense_s": td, "conditional_s": tc, "speedup": td / tc,
                                  "lambda_G": [a.lambda_G_mean, b.lambda_G_mean]})  # fmt: skip
    if args.only_orthogonal:
        _print(out, args)
        return
    times, results = {}, {}
    for sampler in ("dense", "conditional"):
        times[sampler], results[sampler] = _timed(
            batch_sizes=list(FIG1A_BATCHES), width=1000, depth=50, networks=args.networks, seed=1, sampler=sampler
        )
    out["dense_s"], out["conditional_s"] = times["dense"], times["conditional"]
    out["speedup"] = times["dense"] / times["conditional"]
    z = []
    for a, b in zip(results["dense"].summaries, results["conditional"].summaries, strict=True):
        se = math.hypot(a.lambda_G_stderr, b.lambda_G_stderr)
        z.append({"batch_size": a.batch_size, "dense": a.lambda_G_mean, "conditional": b.lambda_G_mean,
                  "z": (a.lambda_G_mean - b.lambda_G_mean) / se if se > 0 else 0.0})  # fmt: skip
    out["agreement"] = z
    single = []
    for b in (4, 32, 128):
        kw = dict(batch_sizes=[b], width=1000, depth=50, networks=args.single_networks, seed=1)
        td, _ = _timed(sampler="dense", **kw)
        tc, _ = _timed(sampler="conditional", **kw)
        single.append({"batch_size": b, "dense_s": td, "conditional_s": tc, "speedup": td / tc})
    out["single_batch"] = single
    if not args.skip_wide:
        seconds, wide = _timed(batch_sizes=[32], width=65536, depth=50, networks=args.wide_networks, seed=2,
                               sampler="conditional")  # fmt: skip
        s = wide.summaries[0]
        out["wide"] = {"width": 65536, "networks": args.wide_networks, "seconds": seconds, "lambda_G": s.lambda_G_mean,
                       "stderr": s.lambda_G_stderr, "theory": s.lambda_G_theory}  # fmt: skip
    _print(out, args)


def _print(out: dict, args) -> None:
    if args.json:
        print(json.dumps(out, indent=2))
        return
    if "dense_s" in out:
        print(f"Fig 1a setting, {args.networks} networks: dense {out['dense_s']:.1f} s, conditional "
              f"{out['conditional_s']:.1f} s: {out['speedup']:.1f}x")  # fmt: skip
        print("lambda_G dense vs conditional (z = difference / combined s.e.): " + ", ".join(
            f"B={r['batch_size']}: {r['z']:+.1f}" for r in out["agreement"]))  # fmt: skip
        print(f"one batch size at a time, width 1000, depth 50, {args.single_networks} networks: " + ", ".join(
            f"B={r['batch_size']}: {r['speedup']:.1f}x ({r['dense_s']:.2f} s / {r['conditional_s']:.2f} s)"
            for r in out["single_batch"]))  # fmt: skip
    if "wide" in out:
        w = out["wide"]
        print(f"width 65536, B = 32, depth 50, {w['networks']} networks: {w['seconds']:.1f} s; lambda_G "
              f"{w['lambda_G']:.4f} +- {w['stderr']:.4f} (theory {w['theory']:.4f})")  # fmt: skip
    print("orthogonal weights (identity, two batches of 32, depth 30, 4 networks): " + ", ".join(
        f"width {r['width']}: {r['speedup']:.1f}x ({r['dense_s']:.1f} s / {r['conditional_s']:.2f} s)"
        for r in out["orthogonal"]))  # fmt: skip


if __name__ == "__main__":
    main()
