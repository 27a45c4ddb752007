"""Benchmark: the quadrature path for lambda_G against a Monte Carlo estimate of the same number.

Measures, in one run on this machine:

1. the time of ``bnmft.theory("tanh", 32)`` (quadrature path: q*, c*, mu*, lambda_G and the depths),
   median of repeated calls;
2. the time a Monte Carlo estimate of lambda_G needs for a 1e-3 relative standard error: pre-activations
   ``h ~ N(0, Sigma*)``, the exact Jacobian J of ``h -> phi(BN(h))``, lambda_G = E||G J||_F^2 / (B-1)
   (theory.md section 4), vectorised numpy in chunks; the sample size comes from a pilot run;
3. both errors against a reference: the Gegenbauer series (an independent 1-D quadrature; it agrees with
   a 20-digit mpmath integration to ~1e-15 in the tests).

Prints the ratio of the times and of the errors. Targets (issue 2): quadrature < 5 ms, >= 100x faster
than the Monte Carlo, >= 1e4x more accurate.

Usage: ``.venv/bin/python benchmarks/bench_theory.py [--phi tanh] [--batch-size 32] [--json]``
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import numpy as np

import bnmft


def quadrature_time(phi: str, b: int, repeats: int = 50) -> tuple[float, float]:
    bnmft.theory(phi, b)  # warm caches (Gauss-Legendre rule)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        r = bnmft.theory(phi, b)
        times.append(time.perf_counter() - start)
    return statistics.median(times), r.lambda_G


def mc_samples(phi, b: int, sigma_chol: np.ndarray, n: int, rng) -> np.ndarray:
    """n samples of ||G J||_F^2 / (B - 1)."""
    g_mat = np.eye(b) - 1.0 / b
    h = rng.standard_normal((n, b)) @ sigma_chol.T
    centred = h - h.mean(axis=1, keepdims=True)
    r = np.linalg.norm(centred, axis=1)
    v = centred / r[:, None]
    d = phi.derivative(math.sqrt(b) * v)
    # G J = G diag(d) (I - v v^T) G sqrt(B) / r ; (I - v v^T) G = G - v v^T since v is in im G
    m = d[:, :, None] * (np.eye(b)[None] - v[:, :, None] * v[:, None, :]) @ g_mat
    gj = g_mat @ m * (math.sqrt(b) / r)[:, None, None]
    return np.sum(gj * gj, axis=(1, 2)) / (b - 1)


def monte_carlo(phi_spec: str, b: int, target: float = 1e-3, chunk: int = 20000, seed: int = 0):
    phi = bnmft.get_nonlinearity(phi_spec)
    r = bnmft.theory(phi, b)
    sigma = r.q_star * ((1 - r.c_star) * np.eye(b) + r.c_star)  # the BSB1 fixed point (given to the MC)
    chol = np.linalg.cholesky(sigma)
    rng = np.random.default_rng(seed)
    pilot = mc_samples(phi, b, chol, chunk, rng)
    needed = math.ceil((pilot.std() / pilot.mean() / target) ** 2)
    start = time.perf_counter()
    total, total_sq, count = 0.0, 0.0, 0
    while count < needed:
        s = mc_samples(phi, b, chol, min(chunk, needed - count), rng)
        total, total_sq, count = total + s.sum(), total_sq + (s * s).sum(), count + len(s)
    seconds = time.perf_counter() - start
    mean = total / count
    stderr = math.sqrt(max(total_sq / count - mean * mean, 0.0) / count)
    return seconds, mean, stderr, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phi", default="tanh")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    b = args.batch_size
    reference = bnmft.gegenbauer_series(bnmft.get_nonlinearity(args.phi), b).lambda_G
    t_quad, lam_quad = quadrature_time(args.phi, b)
    t_mc, lam_mc, se_mc, n_mc = monte_carlo(args.phi, b)
    err_quad = abs(lam_quad / reference - 1)
    err_mc = abs(lam_mc / reference - 1)
    result = {
        "phi": args.phi,
        "batch_size": b,
        "quadrature_seconds": t_quad,
        "quadrature_relative_error": err_quad,
        "monte_carlo_seconds": t_mc,
        "monte_carlo_samples": n_mc,
        "monte_carlo_relative_stderr": se_mc / lam_mc,
        "monte_carlo_relative_error": err_mc,
        "speedup": t_mc / t_quad,
        "accuracy_ratio": (se_mc / lam_mc) / max(err_quad, 1e-16),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"lambda_G for phi={args.phi}, B={b}; reference (Gegenbauer series) = {reference:.15g}")
    print(f"  quadrature : {t_quad * 1e3:8.3f} ms   lambda_G = {lam_quad:.15g}   rel. error {err_quad:.1e}")
    print(
        f"  Monte Carlo: {t_mc * 1e3:8.1f} ms   lambda_G = {lam_mc:.6g} +- {se_mc:.1g} ({n_mc} samples)"
        f"   rel. error {err_mc:.1e} (stderr {se_mc / lam_mc:.1e})"
    )
    print(
        f"  quadrature is {t_mc / t_quad:.0f}x faster and {result['accuracy_ratio']:.1e}x more accurate "
        "(MC standard error / quadrature error, the latter floored at 1e-16)"
    )


if __name__ == "__main__":
    main()
