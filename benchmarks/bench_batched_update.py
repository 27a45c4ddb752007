"""Benchmark: the batched trainer's weight update inside the backward pass (``_LinearStep``) against the update
after it (autograd's weight gradients, then :func:`_step` over them), measured in one run.

Setting (the budget study's cells, docs/budget.md): K = 3 stacked models (three seeds), batch 8, width 384, depth 32,
BN + ReLU, one torch thread; SGD and RMSProp. Both arms run the same forward pass and the same arithmetic (the
trainer's numbers are bit-identical either way: tests/experiments/test_batched.py); they differ only in when each
weight matrix is updated: right after its layer's input gradient has read it (still in cache), or after the whole
backward pass from a stored gradient. The arms alternate, ``--repeats`` times ``--steps`` steps each; printed: the
median seconds per step of each and their ratio.

Usage: ``.venv/bin/python benchmarks/bench_batched_update.py [--steps 40] [--repeats 5] [--json]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from bnmft.experiments.batched import _LinearStep, _step, _WeightUpdate
from bnmft.simulate.network import batch_norm

K, B, WIDTH, DEPTH, FEATURES, CLASSES = 3, 8, 384, 32, 784, 10


def make_model(gen: torch.Generator) -> list[torch.Tensor]:
    fans = [FEATURES] + [WIDTH] * (DEPTH - 1)
    weights = [(torch.randn(K, fan, WIDTH, generator=gen) / fan**0.5).requires_grad_() for fan in fans]
    return [*weights, (torch.randn(K, WIDTH, CLASSES, generator=gen) / WIDTH**0.5).requires_grad_()]


def run(fused: bool, optimizer: str, steps: int, seed: int = 0) -> float:
    """Seconds per training step of one arm."""
    gen = torch.Generator().manual_seed(seed)
    params = make_model(gen)
    weights, readout = params[:-1], params[-1]
    x, y = torch.randn(K, B, FEATURES, generator=gen), torch.randint(0, CLASSES, (K, B), generator=gen)
    lrs = torch.full((K,), 1e-3 * B)
    update = _WeightUpdate(optimizer)
    update.lrs = lrs
    after = [readout] if fused else params  # what _step updates after the backward pass
    square_avg = [torch.zeros_like(p) for p in after]
    start = time.perf_counter()
    for _ in range(steps):
        a = x
        for w in weights:
            h = _LinearStep.apply(a, w, update) if fused else torch.bmm(a, w)
            a = torch.relu(batch_norm(h, B, 1e-5, detach=False))
        loss = F.cross_entropy(torch.bmm(a, readout).reshape(-1, CLASSES), y.reshape(-1))
        for p in params:
            p.grad = None
        loss.backward()
        _step(after, square_avg, lrs, optimizer)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for optimizer in ("sgd", "rmsprop"):
        times: dict[str, list[float]] = {"after": [], "fused": []}
        run(True, optimizer, 3), run(False, optimizer, 3)  # warm-up
        for _ in range(args.repeats):
            times["after"].append(run(False, optimizer, args.steps))
            times["fused"].append(run(True, optimizer, args.steps))
        after, fused = statistics.median(times["after"]), statistics.median(times["fused"])
        rows.append({"optimizer": optimizer, "seconds_per_step_after": after, "seconds_per_step_fused": fused,
                     "speedup": after / fused})  # fmt: skip
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"K = {K}, B = {B}, width {WIDTH}, depth {DEPTH}, one torch thread")
    for r in rows:
        print(f"{r['optimizer']:8s} update after backward {1e3 * r['seconds_per_step_after']:7.1f} ms/step, "
              f"inside it {1e3 * r['seconds_per_step_fused']:7.1f} ms/step: {r['speedup']:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
