"""Closed forms for affine phi and positive-homogeneous phi (relu, alpha_relu) (docs/theory.md sections 2.5, 3.4).

Everything here is exact up to rounding: the arc-cosine kernel of any degree alpha (the one implementation in
bnmft, also used by the Laplace Gram map) is a pair of Gauss hypergeometric functions of the correlation c
(|c| <= 1/3 at the fixed point for B >= 4, c = 0 for B = inf).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import gammaln, hyp2f1, poch

from ..errors import InputError


def _positive_moment_kernel(b: float, c: np.ndarray) -> np.ndarray:
    """``E[u_+^b v_+^b]`` for standard Gaussians u, v with correlation c in (-1, 1), b > -1/2 (ours):
    ``(1-c^2)^(b+1/2) 2^b / (2 pi) [Gamma((b+1)/2)^2 F(h, h; 1/2; c^2) + 2c Gamma(b/2+1)^2 F(h+1/2, h+1/2; 3/2; c^2)]``,
    h = (b+1)/2 (the even and odd parts of the series ``sum_k (2c)^k / k! Gamma((b+k+1)/2)^2``)."""
    h = (b + 1) / 2
    c2 = c * c
    with np.errstate(all="ignore"):
        even = math.exp(2 * gammaln(h)) * hyp2f1(h, h, 0.5, c2)
        odd = 2 * c * math.exp(2 * gammaln(b / 2 + 1)) * hyp2f1(h + 0.5, h + 0.5, 1.5, c2)
        return (1 - c2) ** (b + 0.5) * 2**b / (4 * math.pi) * (even + odd)


def _positive_moment(k: float) -> float:
    """``E[u_+^k]`` for a standard Gaussian u, k > -1: ``2^(k/2) Gamma((k+1)/2) / (2 sqrt(pi))``."""
    return math.exp((k / 2) * math.log(2) + gammaln((k + 1) / 2)) / (2 * math.sqrt(math.pi))


def arccos_kernel(alpha: float, c: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """The normalised arc-cosine kernel of degree alpha and its derivative: the one implementation the closed forms,
    the forward eigenvalues and the Laplace Gram map use (relu: :func:`relu_kernel`, the same in elementary form).

    ``J(c) = E[relu(u)^a relu(v)^a] / E[relu(u)^(2a)]`` for standard Gaussians u, v with correlation c, so
    ``J(1) = 1``, ``J(-1) = 0``; ``J'(c) = a^2 E[relu(u)^(a-1) relu(v)^(a-1)] / E[relu(u)^(2a)]`` (Price's theorem;
    finite for alpha > 1/2, ``inf`` otherwise). Both by Gauss hypergeometric functions (scipy's hyp2f1), accurate
    to ~1e-13 relative for |c| <= 0.95 (tested against the elementary degree-1 and degree-2 forms, the power
    series and mpmath); near c = -1, where J vanishes like (1+c)^(alpha+1/2), the absolute error stays ~1e-16.

    Args:
        alpha: degree, > 0.
        c: correlation(s) in [-1, 1] (clipped there), any shape.

    Returns:
        ``(J(c), J'(c))``, float64 arrays of the shape of c (0-d for a scalar).
    """
    a = float(alpha)
    corr = np.clip(np.asarray(c, dtype=float), -1.0, 1.0)
    inner = np.clip(corr, -1.0 + 1e-300, 1.0 - 1e-16)
    norm = _positive_moment(2 * a)
    j = np.where(corr >= 1.0, 1.0, np.where(corr <= -1.0, 0.0, _positive_moment_kernel(a, inner) / norm))
    if a <= 0.5:
        return j, np.full_like(j, math.inf)
    top = a * a * _positive_moment(2 * a - 2) / norm  # J'(1)
    dj = np.where(corr >= 1.0, top, np.where(corr <= -1.0, 0.0, a * a * _positive_moment_kernel(a - 1, inner) / norm))
    return j, dj


def relu_kernel(c: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Degree-1 arc-cosine kernel in elementary functions (docs/theory.md section 2.5): ``J1(c) = (sqrt(1-c^2) +
    (pi - arccos c) c) / pi`` and ``J1'(c) = (pi - arccos c) / pi``; c clipped to [-1, 1]. Returns arrays."""
    corr = np.clip(np.asarray(c, dtype=float), -1.0, 1.0)
    angle = np.pi - np.arccos(corr)
    return (np.sqrt(1 - corr * corr) + angle * corr) / np.pi, angle / np.pi


def kernel(alpha: float, c: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """:func:`arccos_kernel`, in elementary form (:func:`relu_kernel`) for alpha = 1."""
    return relu_kernel(c) if alpha == 1.0 else arccos_kernel(alpha, c)


def homogeneous(alpha: float, batch_size: float) -> dict[str, float]:
    """q*, c*, mu*, lambda_G for ``max(z, 0)^alpha`` (alpha = 1: relu), any B >= 4 or B = inf.

    q* is the spherical moment ``E[x_1+^(2a)] = A^a Gamma(a + 1/2) Gamma(A/2) / (2 sqrt(pi) Gamma(a + A/2))``,
    A = B - 1 (from ``x_1^2 / A ~ Beta(1/2, (B-2)/2)``); c* = J(-1/(B-1)); lambda_G from docs/theory.md 3.4:
    ``((B-3+2a)((2a-1) J'(c) + a^2 (B-1))) / ((2a-1)(B-3)(B-1)(1 - J(c))) - a^2/(B-3)``, and for B = inf
    ``a^2 / ((2a - 1)(1 - J(0)))`` (= E[phi'^2] / Var[phi]).
    """
    a = float(alpha)
    if a <= 0.5:
        raise InputError(
            f"alpha_relu with alpha = {a:g}: phi'^2 ~ z^(2 alpha - 2) is not integrable at 0 for alpha <= 1/2, "
            "so lambda_G is infinite; alpha must be > 1/2"
        )
    c = 0.0 if math.isinf(batch_size) else -1.0 / (batch_size - 1)
    q = _half_abs_moment(2 * a, batch_size)
    j, dj = (float(v) for v in kernel(a, c))
    if math.isinf(batch_size):
        lam = a * a / ((2 * a - 1) * (1 - j))
    else:
        b = batch_size
        lam = ((b - 3 + 2 * a) * ((2 * a - 1) * dj + a * a * (b - 1))) / (
            (2 * a - 1) * (b - 3) * (b - 1) * (1 - j)
        ) - a * a / (b - 3)
    mean = _half_abs_moment(a, batch_size)
    xphi = _half_abs_moment(a + 1, batch_size)
    return {"q_star": q, "c_star": j, "mu_star": q * (1 - j), "lambda_G": lam, "mean": mean, "xphi": xphi}


def _half_abs_moment(k: float, batch_size: float) -> float:
    """``E[max(x_1, 0)^k]``: Gaussian for B = inf, else on the sphere ``A^(k/2) E[t+^k]`` with
    ``t^2 ~ Beta(1/2, (B-2)/2)``, A = B - 1."""
    if math.isinf(batch_size):
        return math.exp(gammaln((k + 1) / 2) + (k / 2) * math.log(2)) / (2 * math.sqrt(math.pi))
    big_a = batch_size - 1
    # Gamma(A/2) / Gamma((k + A)/2) by the Pochhammer symbol: no cancellation of large log-gammas at large B
    return big_a ** (k / 2) * math.exp(gammaln((k + 1) / 2)) / poch(big_a / 2, k / 2) / (2 * math.sqrt(math.pi))


def affine(slope: float, offset: float, batch_size: float) -> dict[str, float]:
    """``phi(z) = slope * z + offset``: Sigma* = slope^2 B/(B-1) G + offset^2 11^T, lambda_G = (B-2)/(B-3)."""
    a2, b2 = slope * slope, offset * offset
    rho = 0.0 if math.isinf(batch_size) else -1.0 / (batch_size - 1)
    q = a2 + b2
    lam = 1.0 if math.isinf(batch_size) else (batch_size - 2) / (batch_size - 3)
    return {
        "q_star": q,
        "c_star": (a2 * rho + b2) / q,
        "mu_star": a2 * (1 - rho),
        "lambda_G": lam,
        "mean": offset,
        "xphi": slope,  # E[x_1 (slope x_1 + offset)] = slope E[x_1^2] = slope
    }


__all__ = ["affine", "arccos_kernel", "homogeneous", "kernel", "relu_kernel"]
