"""The Gegenbauer series for the BSB1 fixed point and lambda_G (the paper's main theorem; docs/theory.md 3.3).

Expand ``phi(sqrt(B-1) t)`` in the Gegenbauer polynomials ``C_k^(lam)(t)``, ``lam = (B-3)/2``, orthonormal for
the one-coordinate law (density proportional to ``(1 - t^2)^(lam - 1/2)``), with coefficients ``a_k``. Then

* ``q* = sum_k a_k^2``,  ``q* c* = sum_k a_k^2 C_k(rho) / C_k(1)``,  ``rho = -1/(B-1)``,
* ``mu* = sum_k c_k a_k^2``,  ``c_k = 1 - C_k(rho) / C_k(1)``,
* ``lambda_G = sum_k k (B-3+k)/(B-3) c_k a_k^2 / sum_k c_k a_k^2``.

This module is an independent route to the same numbers as :mod:`.moments` (one-coordinate integrals only,
a different quadrature), used to check it. Quadrature: an n-point Gauss rule for the exact weight, built by
Golub-Welsch from the three-term recurrence of the orthonormal polynomials (``scipy.linalg.eigh_tridiagonal``),
stable for every B (scipy's ``roots_gegenbauer`` switches to an asymptotic approximation for lam > 170).
Exact for polynomials of degree 2n - 1; for analytic phi the coefficients and the sums converge
geometrically. For kinked phi the series converges slowly (algebraically): use it as a check only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.linalg import eigh_tridiagonal

from ..errors import InputError
from ..nonlinearity import PhiSpec, resolve
from ..options import check_batch_size, check_int


def _offdiag(lam: float, n: int) -> np.ndarray:
    """Jacobi-matrix off-diagonal ``b_k``, k = 1..n-1, of the orthonormal Gegenbauer polynomials in t."""
    k = np.arange(1, n, dtype=float)
    return np.sqrt(k * (k + 2 * lam - 1) / (4 * (k + lam) * (k + lam - 1)))


def gauss_gegenbauer(batch_size: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n-point Gauss rule for the law of t = x_1 / sqrt(B-1): nodes (n,), probability weights (n,)."""
    lam = (batch_size - 3) / 2
    if lam == 0.0:  # B = 3 is excluded by the theory; the recurrence below needs lam > 0
        raise InputError("batch_size must be >= 4")
    nodes = eigh_tridiagonal(np.zeros(n), _offdiag(lam, n), eigvals_only=True)
    # Christoffel weights 1 / sum_k p_k(t)^2: relatively accurate even where they are tiny (tails).
    p = orthonormal_polys(batch_size, nodes, n - 1)
    return nodes, 1.0 / np.sum(p * p, axis=0)


def orthonormal_polys(batch_size: int, t: np.ndarray, degree: int) -> np.ndarray:
    """Orthonormal Gegenbauer polynomials p_0..p_degree at t: shape (degree + 1, len(t))."""
    lam = (batch_size - 3) / 2
    b = _offdiag(lam, degree + 1)
    p = np.empty((degree + 1, len(t)))
    p[0] = 1.0
    if degree >= 1:
        p[1] = t / b[0]
    for k in range(1, degree):
        p[k + 1] = (t * p[k] - b[k - 1] * p[k - 1]) / b[k]
    return p


def ratio_at(batch_size: int, t: float, degree: int) -> np.ndarray:
    """``C_k(t) / C_k(1)`` for k = 0..degree, by the stable recurrence
    ``R_k = (2 t (k + lam - 1) R_{k-1} - (k - 1) R_{k-2}) / (k + 2 lam - 1)``."""
    lam = (batch_size - 3) / 2
    r = np.empty(degree + 1)
    r[0] = 1.0
    if degree >= 1:
        r[1] = t
    for k in range(2, degree + 1):
        r[k] = (2 * t * (k + lam - 1) * r[k - 1] - (k - 1) * r[k - 2]) / (k + 2 * lam - 1)
    return r


@dataclass(frozen=True)
class GegenbauerSeries:
    """Coefficients and the sums of the series (see the module docstring)."""

    batch_size: int
    coefficients: np.ndarray  # a_k, shape (degree + 1,)
    q_star: float
    c_star: float
    mu_star: float
    lambda_G: float


def gegenbauer_series(
    phi: PhiSpec,
    batch_size: int,
    *,
    degree: int = 160,
    nodes: int = 240,
    gamma: float = 1.0,
    beta: float = 0.0,
    derivative: Callable[[np.ndarray], np.ndarray] | None = None,
    kinks: tuple[float, ...] = (),
    **params: float,
) -> GegenbauerSeries:
    """lambda_G and the fixed point of ``phi(gamma z + beta)`` by the Gegenbauer series, truncated at ``degree``.

    Args:
        phi, gamma, beta, derivative, kinks, **params: the nonlinearity, as for :func:`bnmft.theory`.
        batch_size: B >= 4 (finite).
        degree: highest k kept.
        nodes: size of the Gauss rule used for the coefficients (must exceed ``degree``).

    Raises:
        InputError: a bad phi, B not a finite integer >= 4, or degree / nodes not integers with nodes > degree.
    """
    size = check_batch_size(batch_size)
    if math.isinf(size):
        raise InputError("batch_size must be finite for the Gegenbauer series (its polynomials depend on B)")
    degree = check_int("degree", degree, 0)
    nodes = check_int("nodes", nodes, degree + 1)
    _, fn = resolve(phi, gamma=gamma, beta=beta, derivative=derivative, kinks=kinks, **params)
    b = int(size)
    t, w = gauss_gegenbauer(b, nodes)
    values = np.asarray(fn(math.sqrt(b - 1) * t), dtype=float)
    coeff = orthonormal_polys(b, t, degree) @ (w * values)
    k = np.arange(degree + 1, dtype=float)
    a2 = coeff**2
    c_k = 1 - ratio_at(b, -1.0 / (b - 1), degree)
    q = float(a2.sum())
    mu = float(c_k @ a2)
    lam = float((k * (b - 3 + k) / (b - 3) * c_k) @ a2) / mu
    return GegenbauerSeries(b, coeff, q, 1 - mu / q, mu, lam)
