"""Forward dynamics at the BSB1 fixed point: the convergence eigenvalues and the two-batch map.

* ``lambda_M`` (multiplicity B(B-3)/2) and ``lambda_L`` (multiplicity B-1): the nonzero eigenvalues of the
  Jacobian of ``Sigma -> V(Sigma)`` at Sigma* (docs/theory.md section 5); all other eigenvalues are 0.
* ``forward_depth_scale = -1 / ln max(lambda_L, lambda_M)``; ``bsb1_stable``: both < 1.
* ``cross_batch_c = E[phi(x_1)]^2``: the constant cross block of the two-batch fixed point (docs/theory.md section 7).
* ``cross_batch_rate`` (ours): the per-layer factor by which a perturbation of the cross block (the
  correlation between two batches) shrinks. Expanding the joint Gaussian density of two batches to first
  order in their cross-covariance Delta, and using that ``||G h||`` is independent of the direction:
  ``delta C' = kappa G Delta G`` with ``kappa = E[chi_{B-1}]^2 E[x_1 phi(x_1)]^2 B / (mu* (B-1)^2)``; as B -> inf,
  ``kappa -> E[phi'(z)]^2 / Var[phi(z)]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy.special import poch

from ..errors import InputError
from .closed_forms import kernel
from .moments import SphericalMoments


@dataclass(frozen=True)
class ForwardRates:
    lambda_L: float | None
    lambda_M: float | None
    cross_batch_c: float
    cross_batch_rate: float


def mean_chi_squared_over_dof(k: float) -> float:
    """``E[chi_k]^2 / k`` with ``E[chi_k] = sqrt(2) Gamma((k+1)/2) / Gamma(k/2)`` (Pochhammer: exact for large k)."""
    return 2.0 * poch(k / 2, 0.5) ** 2 / k


def cross_batch_rate(xphi: float, mu: float, batch_size: float) -> float:
    """kappa of the module docstring from ``E[x_1 phi(x_1)]`` and mu*."""
    if math.isinf(batch_size):
        return float(xphi * xphi / mu)
    b = batch_size
    return float(mean_chi_squared_over_dof(b - 1) * xphi * xphi * b / (mu * (b - 1)))


def from_moments(m: SphericalMoments) -> ForwardRates:
    """Forward rates from the spherical moments (quadrature path)."""
    rate = cross_batch_rate(m.xphi, m.mu, m.batch_size)
    if math.isinf(m.batch_size):
        return ForwardRates(None, None, m.mean**2, rate)
    b = m.batch_size
    assert m.m_pair is not None and m.l_one is not None and m.l_pair is not None  # finite B
    lam_m = (b - 1) / (m.mu * b) * m.m_pair
    t = 2 * (1 - 2 / b) * b / (b - 1) * m.l_one - 4 * m.l_pair
    lam_l = (b - 1) * t / (4 * m.mu * (b - 2))
    return ForwardRates(lam_l, lam_m, m.mean**2, rate)


def homogeneous_closed_form(alpha: float, batch_size: float, mean: float, xphi: float, mu: float) -> ForwardRates:
    """``max(z, 0)^alpha`` in closed form where the math gives one: the degree-1 arc-cosine kernel J = J_1 (relu is
    alpha_relu at alpha = 1; docs/theory.md 5.4), c = -1/(B-1): ``lambda_M = B J'(c) / ((B+1)(1 - J(c)))``,
    ``lambda_L = (B-2)/(B+1) + B J'(c) / ((B-1)(B+1)(1 - J(c)))``; mean, xphi, mu as given. Other degrees have no
    closed form here (the theory takes the quadrature).

    Raises:
        InputError: alpha != 1.
    """
    if alpha != 1.0:
        raise InputError(f"alpha: the forward eigenvalues are in closed form for alpha = 1 only, got {alpha!r}")
    rate = cross_batch_rate(xphi, mu, batch_size)
    if math.isinf(batch_size):
        return ForwardRates(None, None, mean**2, rate)
    b = batch_size
    j, dj = (float(v) for v in kernel(alpha, -1.0 / (b - 1)))
    lam_m = b * dj / ((b + 1) * (1 - j))
    lam_l = (b - 2) / (b + 1) + b * dj / ((b - 1) * (b + 1) * (1 - j))
    return ForwardRates(lam_l, lam_m, mean**2, rate)


def affine_closed_form(batch_size: float, offset: float) -> ForwardRates:
    """Affine phi: ``lambda_L = lambda_M = (B-1)/(B+1)``, cross block ``offset^2``, kappa = E[chi]^2/(B-1)."""
    if math.isinf(batch_size):
        return ForwardRates(None, None, offset**2, 1.0)
    b = batch_size
    lam = (b - 1) / (b + 1)
    return ForwardRates(lam, lam, offset**2, mean_chi_squared_over_dof(b - 1))


def forward_depth_scale(lambda_l: float | None, lambda_m: float | None) -> float | None:
    """``-1 / ln max(lambda_L, lambda_M)``: the depth over which the batch geometry converges; ``inf`` when
    the larger eigenvalue is >= 1 (BSB1 is then not attracting: no convergence)."""
    if lambda_l is None or lambda_m is None:
        return None
    top = max(lambda_l, lambda_m)
    if top >= 1.0:
        return math.inf
    if top <= 0.0:
        return 0.0
    return -1.0 / math.log(top)
