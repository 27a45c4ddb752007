"""Benchmark: training throughput as a fraction of the raw matmul rate of the same GEMM shapes, one cell at a time
(``train``) against K cells batched as one stacked model (``train_batched``), measured in one run.

Setting (issue 11): width 384, depth 30, ReLU, SGD, one torch thread, batch sizes 16 and 64; the batch is K = 8
cells of a gamma grid (as Fig 5a's cells of one depth). For each, the GEMM work of one training step is counted
exactly (forward ``h = x W^T`` per layer and the read-out; backward the weight gradients of every layer and the
input gradients of every layer but the first); the raw rate is ``torch.mm`` (one cell) or ``torch.bmm`` (K cells)
on exactly those shapes, timed in the same run; the throughput is that work divided by the wall time of the
training loop (data set and evaluation excluded: a 100-example test set, timed separately and subtracted).

Usage: ``.venv/bin/python benchmarks/bench_training.py [--steps 60] [--models 8] [--json]``
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from bnmft.experiments.batched import train_batched
from bnmft.experiments.config import TrainConfig
from bnmft.experiments.training import cached_dataset, train

WIDTH, DEPTH, FEATURES, CLASSES = 384, 30, 784, 10


def gemm_shapes(b: int) -> list[tuple[int, int, int]]:
    """(m, k, n) of every matrix product of one training step: (m x k) @ (k x n)."""
    shapes = []
    fans = [FEATURES] + [WIDTH] * (DEPTH - 1)
    for i, fan in enumerate(fans):
        shapes.append((b, fan, WIDTH))  # forward
        shapes.append((WIDTH, b, fan))  # weight gradient
        if i > 0:
            shapes.append((b, WIDTH, fan))  # input gradient
    shapes += [(b, WIDTH, CLASSES), (CLASSES, b, WIDTH), (b, CLASSES, WIDTH)]  # read-out
    return shapes


def raw_rate(b: int, k: int, repeats: int = 5) -> float:
    """FLOP/s of torch.mm (k = 1) or torch.bmm on the step's shapes, best of ``repeats``."""
    mats = [(torch.randn(k, m, kk), torch.randn(k, kk, n)) for m, kk, n in gemm_shapes(b)]
    flops = sum(2 * k * m * kk * n for m, kk, n in gemm_shapes(b))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(10):
            for a, c in mats:
                torch.mm(a[0], c[0]) if k == 1 else torch.bmm(a, c)
        best = min(best, (time.perf_counter() - start) / 10)
    return flops / best


def configs(b: int, k: int, steps: int, test: int) -> list[TrainConfig]:
    gammas = [0.5 + i * 1.0 / max(k - 1, 1) for i in range(k)]
    return [
        TrainConfig(
            dataset="mnist",
            phi="relu",
            depth=DEPTH,
            width=WIDTH,
            batch_size=b,
            epochs=1,
            lr=1e-3 * b,
            train_subset=steps * b,
            test_subset=test,
            gamma=g,
        )
        for g in gammas
    ]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(b: int, k: int, steps: int) -> dict:
    step_flops = sum(2 * m * kk * n for m, kk, n in gemm_shapes(b))
    one_cfg = configs(b, 1, steps, 100)[0]
    empty = configs(b, 1, 1, 100)[0]  # set-up, one step and evaluation: subtracted
    one = timed(lambda: train(one_cfg)) - timed(lambda: train(empty))
    many = configs(b, k, steps, 100)
    few = configs(b, k, 1, 100)
    batched = timed(lambda: train_batched(many)) - timed(lambda: train_batched(few))
    rate_one, rate_k = raw_rate(b, 1), raw_rate(b, k)
    achieved_one = step_flops * (steps - 1) / one
    achieved_k = k * step_flops * (steps - 1) / batched
    return {
        "batch_size": b,
        "models": k,
        "one_cell_seconds_per_step": one / (steps - 1),
        "batched_seconds_per_step_per_cell": batched / (steps - 1) / k,
        "raw_mm_gflops": rate_one / 1e9,
        "raw_bmm_gflops": rate_k / 1e9,
        "one_cell_fraction": achieved_one / rate_one,
        "batched_fraction": achieved_k / rate_k,
        "batched_fraction_of_mm": achieved_k / rate_one,
        "speedup_per_cell": (one / (steps - 1)) / (batched / (steps - 1) / k),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--models", type=int, default=8)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cached_dataset("mnist", None)
    rows = [measure(b, args.models, args.steps) for b in (16, 64)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"width {WIDTH}, depth {DEPTH}, one torch thread; batched: {args.models} cells (a gamma grid)")
    for r in rows:
        print(
            f"B = {r['batch_size']:>3}: one cell {r['one_cell_seconds_per_step'] * 1e3:6.1f} ms/step = "
            f"{r['one_cell_fraction']:5.1%} of raw mm ({r['raw_mm_gflops']:.1f} GFLOP/s); batched "
            f"{r['batched_seconds_per_step_per_cell'] * 1e3:6.1f} ms/step/cell = {r['batched_fraction']:5.1%} of raw "
            f"bmm ({r['raw_bmm_gflops']:.1f} GFLOP/s), {r['batched_fraction_of_mm']:5.1%} of raw mm; "
            f"{r['batched_fraction'] / r['one_cell_fraction']:.2f}x the fraction, {r['speedup_per_cell']:.2f}x per cell"
        )


if __name__ == "__main__":
    main()
