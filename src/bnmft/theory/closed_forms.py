"""Closed forms for affine phi and positive-homogeneous phi (relu, alpha_relu) (theory.md sections 2, 4).

Everything here is exact up to rounding: the arc-cosine kernel of any degree alpha is a power series in the
correlation c (summed to machine precision; |c| <= 1/3 for B >= 4 and c = 0 for B = inf).
"""

from __future__ import annotations

import math

from scipy.special import gammaln, poch


def _series(a: float, c: float, shift: float) -> float:
    """``sum_k (2c)^k / k! * Gamma((a + k + shift) / 2)^2``, summed until the terms drop below 1e-18."""
    if c == 0.0:
        return math.exp(2 * gammaln((a + shift) / 2))
    total, k = 0.0, 0
    sign = 1.0 if c > 0 else -1.0
    log2c = math.log(2 * abs(c))
    while True:
        term = math.exp(k * log2c - gammaln(k + 1) + 2 * gammaln((a + k + shift) / 2))
        total += sign**k * term
        if k > 8 and term < 1e-18 * abs(total):
            return total
        k += 1
        if k > 5000:  # pragma: no cover - |c| <= 1/3 converges in < 100 terms
            raise RuntimeError("arc-cosine series did not converge")


def arccos_kernel(alpha: float, c: float) -> tuple[float, float]:
    """Normalised arc-cosine kernel of degree alpha and its derivative.

    ``J(c) = E[relu(u)^a relu(v)^a] / E[relu(u)^(2a)]`` for standard Gaussians u, v with correlation c, so
    ``J(1) = 1``; ``J'(c) = a^2 E[relu(u)^(a-1) relu(v)^(a-1)] / E[relu(u)^(2a)]`` (Price's theorem; finite for
    alpha > 1/2). Series (ours): ``E[u_+^a v_+^b] = 2^((a+b)/2) / (4 pi) (1 - c^2)^((a+b+1)/2)
    sum_k (2c)^k / k! Gamma((a+k+1)/2) Gamma((b+k+1)/2)``.

    Args:
        alpha: degree, > 0 (> 1/2 for the derivative to be finite).
        c: correlation in (-1, 1).

    Returns:
        ``(J(c), J'(c))``.
    """
    a = float(alpha)
    norm = 2 * math.sqrt(math.pi) * math.exp(gammaln(a + 0.5))
    j = (1 - c * c) ** (a + 0.5) * _series(a, c, 1.0) / norm
    dj = a * a * (1 - c * c) ** (a - 0.5) * _series(a, c, 0.0) / (2 * norm) if a > 0.5 else math.inf
    return j, dj


def relu_kernel(c: float) -> tuple[float, float]:
    """Degree-1 arc-cosine kernel in elementary functions: ``J1(c)`` and ``J1'(c)`` (theory.md section 2)."""
    return (math.sqrt(1 - c * c) + (math.pi - math.acos(c)) * c) / math.pi, (math.pi - math.acos(c)) / math.pi


def homogeneous(alpha: float, batch_size: float) -> dict[str, float]:
    """q*, c*, mu*, lambda_G for ``max(z, 0)^alpha`` (alpha = 1: relu), any B >= 4 or B = inf.

    q* is the spherical moment ``E[x_1+^(2a)] = A^a Gamma(a + 1/2) Gamma(A/2) / (2 sqrt(pi) Gamma(a + A/2))``,
    A = B - 1 (from ``x_1^2 / A ~ Beta(1/2, (B-2)/2)``); c* = J(-1/(B-1)); lambda_G from theory.md section 4:
    ``((B-3+2a)((2a-1) J'(c) + a^2 (B-1))) / ((2a-1)(B-3)(B-1)(1 - J(c))) - a^2/(B-3)``, and for B = inf
    ``a^2 / ((2a - 1)(1 - J(0)))`` (= E[phi'^2] / Var[phi]).
    """
    a = float(alpha)
    if a <= 0.5:
        raise ValueError(
            f"alpha_relu with alpha = {a:g}: phi'^2 ~ z^(2 alpha - 2) is not integrable at 0 for alpha <= 1/2, "
            "so lambda_G is infinite; alpha must be > 1/2"
        )
    c = 0.0 if math.isinf(batch_size) else -1.0 / (batch_size - 1)
    q = _half_abs_moment(2 * a, batch_size)
    j, dj = relu_kernel(c) if a == 1.0 else arccos_kernel(a, c)
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


__all__ = ["affine", "arccos_kernel", "homogeneous", "relu_kernel"]
