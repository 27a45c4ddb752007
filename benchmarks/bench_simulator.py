"""Benchmark: simulator throughput as a fraction of the raw batched-matmul FLOP rate, and the Fig 1a wall time.

In one run on this machine:

1. the raw rate: ``torch.bmm`` of (K, B, N) x (K, N, N), the simulator's own shapes, repeated (FLOP/s);
2. the simulator: forward + backward of K BN networks of width N and depth L (``run_ensemble``), counting
   the matmul work only (forward ``2 K B N^2`` per layer, backward twice that): FLOP/s and the fraction of (1);
3. the paper's Fig 1a setting (200 ReLU networks of width 1000, here depth 50 and B in 4 ... 128), with the dense
   sampler (benchmarks/bench_sampler.py compares the conditional one): 10 of the 200 networks timed and
   extrapolated, or run in full with ``--full``.

Target (issue 4): >= 50% of the raw rate at width 1000 on CPU.

Usage: ``.venv/bin/python benchmarks/bench_simulator.py [--width 1000] [--full] [--json]``
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import bnmft
from bnmft.simulate import NetworkSpec, run_ensemble, simulate_mlp, to_torch
from bnmft.simulate.network import segments_for

FIG1A_BATCHES = (4, 5, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128)


def raw_rate(k: int, b: int, n: int, repeats: int = 10) -> float:
    x = torch.randn(k, b, n)
    w = torch.randn(k, n, n)
    torch.bmm(x, w.transpose(1, 2))
    start = time.perf_counter()
    for _ in range(repeats):
        torch.bmm(x, w.transpose(1, 2))
    return 2 * k * b * n * n * repeats / (time.perf_counter() - start)


def simulator_rate(k: int, sizes, n: int, depth: int) -> float:
    """Matmul FLOP/s of the simulator: forward 2 K T N^2 and backward (input gradient) 2 K T N^2 per layer,
    T = sum of the batch sizes run together. (Weight-gradient norms come from B x B products, not dW.)"""
    phi = to_torch(bnmft.get_nonlinearity("relu"))
    spec = NetworkSpec(width=n, depth=depth)
    segments = segments_for(sizes)
    total = sum(sizes)
    x = torch.randn(k, total, n)
    run_ensemble(phi, x, NetworkSpec(width=n, depth=2), segments, torch.Generator().manual_seed(0))  # warm-up
    start = time.perf_counter()
    run_ensemble(phi, x, spec, segments, torch.Generator().manual_seed(1))
    return 4 * k * total * n * n * depth / (time.perf_counter() - start)


def fig1a_time(full: bool, width: int, networks: int = 200, depth: int = 50) -> tuple[float, bool]:
    """All batch sizes run through the same networks; without --full, 10 of the 200 networks are timed."""
    count = networks if full else 10
    start = time.perf_counter()
    simulate_mlp("relu", list(FIG1A_BATCHES), width=width, depth=depth, networks=count, sampler="dense")
    seconds = time.perf_counter() - start
    return seconds * networks / count, full


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=1000)
    parser.add_argument("--networks", type=int, default=4)
    parser.add_argument("--depth", type=int, default=10)
    parser.add_argument("--full", action="store_true", help="run the whole Fig 1a setting (long on a CPU)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    k, n = args.networks, args.width
    b = sum(FIG1A_BATCHES)
    raw = raw_rate(k, b, n)
    sim = simulator_rate(k, FIG1A_BATCHES, n, args.depth)
    fig, measured = fig1a_time(args.full, n)
    result = {
        "threads": torch.get_num_threads(),
        "shape": {"networks": k, "batch_size": b, "width": n, "depth": args.depth},
        "raw_bmm_gflops": raw / 1e9,
        "simulator_gflops": sim / 1e9,
        "fraction_of_raw": sim / raw,
        "fig1a_seconds": fig,
        "fig1a_measured_in_full": measured,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"torch threads: {result['threads']}; K={k} networks, batch sizes {FIG1A_BATCHES} together "
        f"({b} rows), width N={n}, depth {args.depth}"
    )
    print(f"  raw batched matmul : {raw / 1e9:8.1f} GFLOP/s")
    print(f"  simulator (fwd+bwd): {sim / 1e9:8.1f} GFLOP/s  = {100 * sim / raw:.0f}% of raw")
    what = "measured" if measured else "extrapolated from 10 of the 200 networks"
    print(f"  Fig 1a (200 nets, width {n}, depth 50, B = 4..128): {fig:.0f} s ({what})")


if __name__ == "__main__":
    main()
