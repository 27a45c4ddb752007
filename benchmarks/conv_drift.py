"""Conv-BN stacks leaving the mean field: measured departure depth and drift against
:func:`bnmft.meanfield.conv_width.conv_departure_depth` (docs/conv_width.md).

relu, periodic padding, 3x3 kernel, Gaussian inputs, the conv simulator with the per-layer measurements of
:mod:`bnmft.simulate.conv_drift`. Per setting (B, image, C): networks, depth, the measured mean departure layer (first
layer where the variance over examples of the relative centred norms reaches 0.25; networks that never do are
counted at the simulated depth: a lower bound, flagged by the censored fraction) +- its standard error, the
median, the network-to-network spread, the offsets chain's mean, median and spread and the norms chain's mean; the
measured rate over the last 50 layers and largest example's share against the offsets chain's settled ones (a
comparison only where the networks have settled, i.e. depth >~ 3 x departure); then the drift in windows of layers:
per-layer gradient growth, the across-example correlation c_batch, the largest example's and the largest pair's share
of the norm, the kurtosis of the BN output, and the rate ``(1/2) mean_c 1/Var_c(h)`` read off the measured channel
variances.

Usage: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/conv_drift.py [--quick] [--json]``. Measured on this machine
(one thread): about 8 minutes for the default grid, 35 s with ``--quick``.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch

from bnmft.meanfield.conv_width import conv_departure_depth
from bnmft.simulate.conv_drift import measure_conv_drift

#: (B, image, C, depth, networks)
GRID = [
    (8, (8, 8), 32, 250, 32),
    (8, (8, 8), 64, 250, 32),
    (8, (8, 8), 128, 250, 16),
    (4, (8, 8), 64, 300, 32),
    (16, (8, 8), 64, 250, 16),
    (8, (4, 4), 64, 300, 32),
    (16, (4, 4), 64, 250, 32),
    (32, (4, 4), 64, 200, 16),
]
QUICK = [(8, (8, 8), 32, 200, 16), (32, (4, 4), 32, 120, 32), (8, (4, 4), 32, 200, 32)]
WINDOWS = [(10, 40), (40, 80), (80, 120), (120, 160), (160, 200), (200, 250), (250, 300)]


def mean_se(x: np.ndarray) -> tuple[float, float]:
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(len(x)))


def one(b: int, spatial: tuple[int, int], c: int, depth: int, networks: int, seed: int) -> dict:
    t0 = time.time()
    run = measure_conv_drift("relu", b, spatial, c, depth, networks, chunk=8, seed=seed)
    layers = run.departure_layers()
    censored = float(np.isnan(layers).mean())
    counted = np.where(np.isnan(layers), depth, layers)
    m, se = mean_se(counted)
    pred = conv_departure_depth("relu", b, spatial, c)  # the offsets chain (relu's default)
    norms = conv_departure_depth("relu", b, spatial, c, model="norms", replicas=2000)
    late = rates[:, depth - 51 : depth - 1].mean(axis=1) if (rates := run.rates()).shape[1] >= 60 else None
    windows = []
    for lo, hi in WINDOWS:
        if hi > depth:
            break
        lam = rates[:, lo : hi - 1].mean(axis=1)
        row = {"layers": f"{lo}-{hi}", "rate": mean_se(lam)}
        for name in ("c_batch", "c_space", "max_share", "pair_share", "kurtosis", "spread"):
            row[name] = float(run.get(name)[:, lo:hi].mean())
        row["rate_from_channel_variances"] = float(0.5 * run.get("inv_var")[:, lo : hi - 1].mean())
        windows.append(row)
    return {"batch_size": b, "spatial": "x".join(map(str, spatial)), "channels": c, "n": b * math.prod(spatial),
            "depth": depth, "networks": networks, "measured_mean": m, "measured_stderr": se,
            "measured_median": float(np.median(counted)), "measured_std": float(counted.std(ddof=1)),
            "censored": censored, "predicted_mean": pred.mean_depth, "predicted_median": pred.median_depth,
            "predicted_std": pred.depth_std, "norms_mean": norms.mean_depth,
            "late_rate": mean_se(late) if late is not None else None,
            "late_share": float(run.get("max_share")[:, -50:].mean()),
            "predicted_settled_rate": pred.settled_rate, "predicted_settled_share": pred.settled_share,
            "predicted_rate_at_bsb1": pred.rate_at_bsb1, "windows": windows, "seconds": time.time() - t0}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="three small settings (about 40 s)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [one(*setting, seed=args.seed) for setting in (QUICK if args.quick else GRID)]
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"{'B':>3} {'image':>5} {'C':>4} {'n':>5} {'K':>3} {'depth':>5} | {'measured mean':>14} {'median':>6} "
          f"{'std':>5} {'cens':>4} | {'offsets':>7} {'median':>6} {'std':>5} {'ratio':>5} | {'norms':>6} "
          f"{'ratio':>5} | "
          f"{'rate, last 50':>15} {'settled':>7} | {'share':>5} {'settled':>7}")  # fmt: skip
    for r in rows:
        print(f"{r['batch_size']:>3} {r['spatial']:>5} {r['channels']:>4} {r['n']:>5} {r['networks']:>3} "
              f"{r['depth']:>5} | {r['measured_mean']:7.1f} +- {r['measured_stderr']:4.1f} {r['measured_median']:6.0f} "
              f"{r['measured_std']:5.1f} {r['censored']:4.2f} | {r['predicted_mean']:10.1f} "
              f"{r['predicted_median'] or math.nan:6.0f} {r['predicted_std']:5.1f} "
              f"{r['measured_mean'] / r['predicted_mean']:5.2f} | {r['norms_mean']:6.1f} "
              f"{r['measured_mean'] / r['norms_mean']:5.2f} | {r['late_rate'][0]:.4f} +- {r['late_rate'][1]:.4f} "
              f"{r['predicted_settled_rate'] or math.nan:7.4f} | {r['late_share']:5.3f} "
              f"{r['predicted_settled_share'] or math.nan:7.3f}")  # fmt: skip
    for r in rows:
        print(f"\nB = {r['batch_size']}, {r['spatial']}, C = {r['channels']}: drift by window of layers")
        for w in r["windows"]:
            lam, se = w["rate"]
            print(f"  {w['layers']:>8}: rate {lam:.4f} +- {se:.4f} (channel variances: "
                  f"{w['rate_from_channel_variances']:.4f})  c_batch {w['c_batch']:.3f}  c_space {w['c_space']:.3f}  "
                  f"max example share {w['max_share']:.3f}  max pair share {w['pair_share']:.4f}  "
                  f"kurtosis {w['kurtosis']:.1f}  spread {w['spread']:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
