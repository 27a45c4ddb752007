"""Benchmark: forward eigenvalues lambda_L, lambda_M by quadrature against a Monte Carlo of the Jacobian.

In one run:

1. the time of ``bnmft.theory(phi, B)`` on the quadrature path (all quantities, forward eigenvalues included),
   median of repeated calls; by default phi = ``relu(z)`` (an expression, so the closed form is not used and
   the closed form is the reference);
2. the time a Monte Carlo estimate of both eigenvalues needs for 1e-3 relative standard error: x uniform on
   the batch sphere, ``lambda = <D, J{D}> / <D, D>`` with ``J{D} = G E[phi phi^T ((B-1)/B x^T D x - tr(G D))] G
   / (2 mu*)`` (docs/theory.md 5.1) for D in the M space and in the L space; sample size from a pilot run;
3. both errors against the closed form (relu) or, for other phi, against the Gram-map propagation rate.

Usage: ``.venv/bin/python benchmarks/bench_forward.py [--phi "relu(z)"] [--batch-size 16] [--json]``
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import numpy as np

import bnmft


def quadrature(phi: str, b: int, repeats: int = 30):
    bnmft.theory(phi, b)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        r = bnmft.theory(phi, b)
        times.append(time.perf_counter() - start)
    return statistics.median(times), r


def mc_terms(phi, b: int, mu: float, n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample contributions to lambda_M and lambda_L."""
    g = np.eye(b) - 1.0 / b
    z = rng.standard_normal((n, b))
    z -= z.mean(axis=1, keepdims=True)
    x = math.sqrt(b) * z / np.linalg.norm(z, axis=1, keepdims=True)
    f = phi(x)
    e = np.eye(b)
    d_m = np.outer(e[0] - e[2], e[1] - e[3])
    d_m = d_m + d_m.T  # zero diagonal, zero row sums: in M
    d_l = g @ np.diag(e[0] - e[1]) @ g  # in L
    out = []
    for d in (d_m, d_l):
        weight = (b - 1) / b * np.einsum("ni,ij,nj->n", x, d, x) - np.trace(g @ d)
        fd = np.einsum("ni,ij,nj->n", f, d, f)
        out.append(fd * weight / (2 * mu) / np.sum(d * d))
    return out[0], out[1]


def monte_carlo(phi_spec: str, b: int, target: float = 1e-3, chunk: int = 50_000, seed: int = 0):
    phi = bnmft.get_nonlinearity(phi_spec)
    mu = bnmft.theory(phi, b).mu_star
    rng = np.random.default_rng(seed)
    pm, pl = mc_terms(phi, b, mu, chunk, rng)
    needed = max(math.ceil((s.std() / s.mean() / target) ** 2) for s in (pm, pl))
    start = time.perf_counter()
    sums = np.zeros(2)
    sq = np.zeros(2)
    count = 0
    while count < needed:
        m, l_ = mc_terms(phi, b, mu, min(chunk, needed - count), rng)
        sums += [m.sum(), l_.sum()]
        sq += [(m * m).sum(), (l_ * l_).sum()]
        count += len(m)
    seconds = time.perf_counter() - start
    mean = sums / count
    se = np.sqrt(np.maximum(sq / count - mean**2, 0) / count)
    return seconds, mean, se, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phi", default="relu(z)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    b = args.batch_size
    t_quad, r = quadrature(args.phi, b)
    if args.phi.replace(" ", "") in ("relu(z)", "relu"):
        ref = bnmft.theory("relu", b)
        ref_m, ref_l, ref_name = ref.lambda_M, ref.lambda_L, "closed form"
    else:
        ref_m, ref_l, ref_name = r.lambda_M, r.lambda_L, "quadrature itself (no independent reference)"
    t_mc, mean, se, n = monte_carlo(args.phi, b)
    err_quad = max(abs(r.lambda_M / ref_m - 1), abs(r.lambda_L / ref_l - 1))
    err_mc = max(abs(mean[0] / ref_m - 1), abs(mean[1] / ref_l - 1))
    rel_se = float(max(se[0] / abs(mean[0]), se[1] / abs(mean[1])))
    result = {
        "phi": args.phi,
        "batch_size": b,
        "reference": ref_name,
        "quadrature_seconds": t_quad,
        "quadrature_relative_error": err_quad,
        "monte_carlo_seconds": t_mc,
        "monte_carlo_samples": n,
        "monte_carlo_relative_stderr": rel_se,
        "monte_carlo_relative_error": err_mc,
        "speedup": t_mc / t_quad,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"forward eigenvalues for phi={args.phi}, B={b}; reference: {ref_name}")
    print(
        f"  quadrature : {t_quad * 1e3:8.2f} ms (all quantities)  lambda_M = {r.lambda_M:.15g}, "
        f"lambda_L = {r.lambda_L:.15g}, rel. error {err_quad:.1e}"
    )
    print(
        f"  Monte Carlo: {t_mc * 1e3:8.1f} ms ({n} samples)  lambda_M = {mean[0]:.5g}, lambda_L = {mean[1]:.5g}, "
        f"rel. error {err_mc:.1e} (stderr {rel_se:.1e})"
    )
    print(f"  quadrature is {t_mc / t_quad:.0f}x faster")


if __name__ == "__main__":
    main()
