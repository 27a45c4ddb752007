"""Benchmark: the conditional sampler against drawing every weight matrix (issue 14), in one run.

1. The Fig 1a setting (ReLU, width 1000, depth 50, batch sizes 4 ... 128 through the same networks): wall time of
   ``simulate(..., sampler="dense")`` and ``sampler="conditional"`` on the same number of networks (default 10 of
   the paper's 200; ``--networks 200`` for all), their ratio, and the agreement of the lambda_G estimates per batch
   size (difference in combined standard errors).
2. Width 65536, relu, B = 32, depth 50 with the conditional sampler: wall time for ``--wide-networks`` networks
   (the issue's target: 20 networks in under a minute) and lambda_G against the theory.

Usage: ``.venv/bin/python benchmarks/bench_sampler.py [--networks 10] [--wide-networks 20] [--json]``
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

from bnmft.simulate import simulate

FIG1A_BATCHES = (4, 5, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--networks", type=int, default=10)
    parser.add_argument("--wide-networks", type=int, default=20)
    parser.add_argument("--skip-wide", action="store_true", help="only the Fig 1a comparison")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    out: dict = {"setting": {"width": 1000, "depth": 50, "batch_sizes": FIG1A_BATCHES, "networks": args.networks}}
    times, results = {}, {}
    for sampler in ("dense", "conditional"):
        start = time.perf_counter()
        results[sampler] = simulate(
            "relu", list(FIG1A_BATCHES), width=1000, depth=50, networks=args.networks, seed=1, sampler=sampler
        )
        times[sampler] = time.perf_counter() - start
    out["dense_s"], out["conditional_s"] = times["dense"], times["conditional"]
    out["speedup"] = times["dense"] / times["conditional"]
    z = []
    for a, b in zip(results["dense"].summaries, results["conditional"].summaries, strict=True):
        se = math.hypot(a.lambda_G_stderr, b.lambda_G_stderr)
        z.append({"batch_size": a.batch_size, "dense": a.lambda_G_mean, "conditional": b.lambda_G_mean,
                  "z": (a.lambda_G_mean - b.lambda_G_mean) / se if se > 0 else 0.0})  # fmt: skip
    out["agreement"] = z
    if args.skip_wide:
        print(json.dumps(out, indent=2) if args.json else f"Fig 1a setting, {args.networks} networks: dense "
              f"{times['dense']:.1f} s, conditional {times['conditional']:.1f} s: {out['speedup']:.1f}x; z: "
              + ", ".join(f"{r['z']:+.1f}" for r in z))  # fmt: skip
        return
    start = time.perf_counter()
    wide = simulate("relu", [32], width=65536, depth=50, networks=args.wide_networks, seed=2, sampler="conditional")
    s = wide.summaries[0]
    out["wide"] = {
        "width": 65536,
        "networks": args.wide_networks,
        "seconds": time.perf_counter() - start,
        "lambda_G": s.lambda_G_mean,
        "stderr": s.lambda_G_stderr,
        "theory": s.lambda_G_theory,
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"Fig 1a setting, {args.networks} networks: dense {times['dense']:.1f} s, conditional "
          f"{times['conditional']:.1f} s: {out['speedup']:.1f}x")  # fmt: skip
    print("lambda_G dense vs conditional (z = difference / combined s.e.): " + ", ".join(
        f"B={r['batch_size']}: {r['z']:+.1f}" for r in z))  # fmt: skip
    w = out["wide"]
    print(f"width 65536, B = 32, depth 50, {w['networks']} networks: {w['seconds']:.1f} s; lambda_G "
          f"{w['lambda_G']:.4f} +- {w['stderr']:.4f} (theory {w['theory']:.4f})")  # fmt: skip


if __name__ == "__main__":
    main()
