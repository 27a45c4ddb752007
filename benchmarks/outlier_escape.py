"""Escape depth from BSB1, measured against :func:`bnmft.meanfield.escape.escape_depth` (docs/outlier.md section 6).

relu BN networks of batch B (default 128) and width N, Gaussian inputs of dimension N (independent per network),
simulated with :func:`bnmft.simulate.simulate_mlp` keeping every layer's Gram. Per layer and example,
``rho_j = (G K G)_jj / mean_{i != j} (G K G)_ii``; a network's escape depth is the first layer at which
``max_j rho_j`` passes the threshold (default ``sqrt(saddle * stable)``, 5.54 at B = 128). Networks that have not
escaped by the simulated depth are counted as censored (the mean is then a lower bound; the median stays exact while
fewer than half are censored).

Prints, per width: networks, depth, censored, measured mean +- standard error, measured median, and the chain's
expected and median depth (and, "unnormalised", its expected depth without the normalisation by the other examples:
an ablation).

Usage: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/outlier_escape.py [--widths 256 512 1024 2048]
[--networks 16] [--batch 128] [--json]``. Measured on this machine (2 cores, one thread): about 3 minutes for the
default.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch

from bnmft.meanfield.escape import escape_depth_resolved
from bnmft.meanfield.outlier import outlier_state_resolved
from bnmft.nonlinearity import resolve
from bnmft.simulate import simulate_mlp


def example_rhos(grams: np.ndarray) -> np.ndarray:
    """(K, L, B, B) Grams -> (K, L, B): each example's centred squared norm over the mean of the others'."""
    b = grams.shape[-1]
    g = grams - grams.mean(axis=-1, keepdims=True)
    g = g - g.mean(axis=-2, keepdims=True)
    d = np.diagonal(g, axis1=-2, axis2=-1)
    return d / ((d.sum(axis=-1, keepdims=True) - d) / (b - 1))


def escape_layers(width: int, b: int, depth: int, networks: int, threshold: float, seed: int, chunk: int = 4):
    """Each network's first layer (1-based) with some rho_j > threshold, or None (censored)."""
    out = []
    for start in range(0, networks, chunk):
        k = min(chunk, networks - start)
        run = simulate_mlp("relu", [b], width=width, depth=depth, networks=k, seed=seed + start, keep_grams=True,
                           chunk=k).runs[b]  # fmt: skip
        top = example_rhos(run.grams.numpy()).max(axis=-1)  # (K, L)
        out += [int(np.argmax(m > threshold)) + 1 if np.any(m > threshold) else None for m in top]
    return out


def summarise(layers: list, depth: int) -> dict:
    """Mean (censored networks counted at the simulated depth: a lower bound), its standard error, the median."""
    values = np.array([depth if x is None else x for x in layers], dtype=float)
    censored = sum(x is None for x in layers)
    median = float(np.median(values)) if censored <= len(layers) // 2 - (len(layers) % 2 == 0) else math.nan
    return {"mean": float(values.mean()), "stderr": float(values.std(ddof=1) / math.sqrt(len(values))),
            "median": median, "censored": censored}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--networks", type=int, default=32)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    base, phi = resolve("relu")
    outlier = outlier_state_resolved(base, phi, float(args.batch))
    rows = []
    for width in args.widths:
        theory = escape_depth_resolved(base, phi, args.batch, width, width, outlier=outlier)
        ablation = escape_depth_resolved(base, phi, args.batch, width, width, outlier=outlier, background=False)
        depth = math.ceil(3 * theory.expected_depth) + 10  # deep enough that (nearly) all escape
        start = time.perf_counter()
        measured = summarise(escape_layers(width, args.batch, depth, args.networks, theory.threshold, args.seed),
                             depth)  # fmt: skip
        rows.append({"width": width, "networks": args.networks, "depth": depth, **measured,
                     "predicted_mean": theory.expected_depth, "predicted_median": theory.median_depth,
                     "without_normalisation": ablation.expected_depth,
                     "seconds": time.perf_counter() - start})  # fmt: skip
        if not args.json:
            r = rows[-1]
            print(f"N={width:5d} K={r['networks']} depth={depth:4d} censored={r['censored']}  measured "
                  f"{r['mean']:6.1f} +- {r['stderr']:4.1f} (median {r['median']:5.1f})  predicted "
                  f"{r['predicted_mean']:6.1f} "
                  f"(median {r['predicted_median']})  unnormalised {r['without_normalisation']:6.1f}"
                  f"  [{r['seconds']:.0f} s]", flush=True)  # fmt: skip
    if args.json:
        print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
