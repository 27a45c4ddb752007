"""Batch norm with eps > 0 (theory.md section 4b, ours): the kappa scaling, the collapsed phase, lambda_W.

With ``y = sqrt(B) G h / sqrt(||G h||^2 + B eps)`` and a BSB1 input whose centred Gram is ``mu G``, the output
is ``phi(rho x)`` with x the eps = 0 spherical law and ``rho^2 = s = chi^2 / (chi^2 + B kappa / mu)``,
``chi^2 ~ chi^2_{B-1}``, ``kappa = eps / sigma_w^2``. Everything is an average over chi of spherical moments
of ``x -> phi(sqrt(s) x)``:

* ``m(s) = E[(phi(rho x_1) - phi(rho x_2))^2] / 2``; forward map ``mu' = F(kappa / mu) = E_chi[m(s)]``;
* ``K(s) = (B-1) E[d_1^2] + E[d_1 d_2] - (2s - s^2)(E[x_1^2 d_1^2] - E[x_1 d_1 x_2 d_2])``, ``d = phi'(rho x)``;
  ``lambda(mu) = E_chi[K(s) / (chi^2 + B kappa / mu)] / mu``.

Phases: a fixed point ``mu* > 0`` exists iff ``kappa < kappa_c = m'(0) (B-1)/B`` ("stationary": lambda_G =
lambda_W = lambda(mu*)); otherwise mu shrinks geometrically ("collapsed": ``lambda_G = K(0)/(B kappa)``,
``lambda_W = K(0)/(m'(0)(B-1))``; q*, c* undefined, mu* = 0).

Numerics: the moments are analytic in s on [0, 1] (they are even in rho); they are Chebyshev-interpolated
from :data:`CHEB_NODES` Chebyshev-Lobatto points, each a full 2-D spherical quadrature (:mod:`.moments`). For
positive-homogeneous phi (relu, alpha_relu with beta = 0) the s-dependence is exact: ``m(s) = s^a m(1)`` etc.
The chi average is the trapezoid rule in ``y = ln chi^2`` (the integrand is smooth and decays
exponentially on both sides: spectral accuracy), 600 points. The fixed point solves
``ln F(kappa/mu) = ln mu`` by Brent's method in ln mu. Observed accuracy ~1e-10 relative for smooth phi.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.polynomial import chebyshev
from scipy.optimize import brentq
from scipy.special import gammaln

from ..nonlinearity import Nonlinearity
from .moments import spherical_moments

CHEB_NODES = 40
CHI_POINTS = 600


@dataclass(frozen=True)
class EpsResult:
    kappa: float
    kappa_c: float
    phase: str
    mu_star: float
    q_star: float | None
    c_star: float | None
    lambda_G: float
    lambda_W: float


class MomentCurves:
    """The spherical moments of ``x -> phi(sqrt(s) x)`` as functions of s in [0, 1]."""

    def __init__(self, phi: Nonlinearity, batch_size: int):
        self.b = b = batch_size
        gamma = phi.params.get("gamma", 1.0)
        beta = phi.params.get("beta", 0.0)
        self.alpha = None
        if phi.family in ("identity", "relu", "alpha_relu") and beta == 0.0 and gamma != 0.0:
            self.alpha = float(phi.params.get("alpha", 1.0))
            m = spherical_moments(phi, b)
            self._one = np.array([m.mu, m.second, m.cross, (b - 1) * m.d2 + m.dd, m.xd])
            self.m_prime0 = m.mu if self.alpha == 1.0 else (0.0 if self.alpha > 1.0 else math.inf)
            return
        # Chebyshev-Lobatto points: the ends s = 0 (taken as 1e-12: phi(1e-6 x)) and s = 1 (eps -> 0) are nodes
        nodes = np.maximum(0.5 * (1 - np.cos(np.pi * np.arange(CHEB_NODES) / (CHEB_NODES - 1))), 1e-12)
        values = []
        for s in nodes:
            rho = math.sqrt(s)
            m = spherical_moments(phi.affine_input(rho, 0.0), b)  # x -> phi(rho x): derivative rho * d
            values.append([m.mu, m.second, m.cross, ((b - 1) * m.d2 + m.dd) / s, m.xd / s])
        values = np.array(values)
        self._coef = [chebyshev.chebfit(2 * nodes - 1, values[:, j], CHEB_NODES - 1) for j in range(5)]
        self.m_prime0 = self._m_prime0(phi)

    @staticmethod
    def kappa_c_only(phi: Nonlinearity, batch_size: int) -> float:
        """kappa_c = m'(0) (B-1)/B without building the curves (cheap; used for eps = 0 results too)."""
        b = batch_size
        gamma, beta = phi.params.get("gamma", 1.0), phi.params.get("beta", 0.0)
        if phi.family in ("identity", "relu", "alpha_relu") and beta == 0.0 and gamma != 0.0:
            a = float(phi.params.get("alpha", 1.0))
            m_prime0 = spherical_moments(phi, b).mu if a == 1.0 else (0.0 if a > 1.0 else math.inf)
        else:
            m_prime0 = MomentCurves._m_prime0_of(phi, b)
        return m_prime0 * (b - 1) / b

    def _m_prime0(self, phi: Nonlinearity) -> float:
        return MomentCurves._m_prime0_of(phi, self.b)

    @staticmethod
    def _m_prime0_of(phi: Nonlinearity, b: int) -> float:
        """m'(0): phi'(0)^2 B/(B-1) where phi is differentiable at 0; for a kink at 0, the m(1) of the
        piecewise-linear phi'(0+-) z."""
        if not any(abs(k) < 1e-12 for k in phi.kinks):
            return float(phi.derivative(np.array(0.0))) ** 2 * b / (b - 1)
        right = float(phi.derivative(np.array(1e-9)))
        left = float(phi.derivative(np.array(-1e-9)))
        from ..nonlinearity import from_callable

        lin = from_callable(
            lambda z: np.where(z > 0, right * z, left * z),
            derivative=lambda z: np.where(z > 0, right, left),
            kinks=(0.0,),
        )
        return spherical_moments(lin, b).mu

    def __call__(self, s: np.ndarray) -> np.ndarray:
        """(m, q, p, K1, X) at s: m(s), E[phi^2], E[phi_1 phi_2], (B-1)E[d^2] + E[d_1 d_2], E[(x1 d1-x2 d2)^2]/2."""
        s = np.asarray(s, dtype=float)
        if self.alpha is not None:
            a = self.alpha
            mu1, q1, p1, k1, x1 = self._one
            sa = np.power(s, a)
            sa1 = np.power(s, a - 1) if a != 1.0 else np.ones_like(s)
            return np.stack([mu1 * sa, q1 * sa, p1 * sa, k1 * sa1, x1 * sa1])
        t = 2 * s - 1
        return np.stack([chebyshev.chebval(t, c) for c in self._coef])

    def K(self, s: np.ndarray) -> np.ndarray:
        _, _, _, k1, xd = self(s)
        return k1 - (2 * s - s * s) * xd


def _chi_rule(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes chi^2 and probability weights for chi^2_k: trapezoid in y = ln chi^2."""
    mode = math.log(k)
    sd = math.sqrt(2.0 / k)
    lo = mode - 80.0 / k - 12 * sd
    hi = mode + 12 * sd + 3.0
    y = np.linspace(lo, hi, CHI_POINTS)
    logw = 0.5 * k * y - 0.5 * np.exp(y) - 0.5 * k * math.log(2) - gammaln(0.5 * k)
    w = np.exp(logw)
    return np.exp(y), w / w.sum()


def solve(phi: Nonlinearity, batch_size: int, kappa: float) -> EpsResult:
    """The eps > 0 theory at ``kappa = eps / sigma_w^2 > 0`` (module docstring)."""
    b = int(batch_size)
    curves = MomentCurves(phi, b)
    chi2, w = _chi_rule(b - 1)
    kappa_c = curves.m_prime0 * (b - 1) / b

    def s_of(mu):
        return chi2 / (chi2 + b * kappa / mu)

    def forward(mu):
        return float(w @ curves(s_of(mu))[0])

    def rate(mu):
        return float(w @ (curves.K(s_of(mu)) / (chi2 + b * kappa / mu))) / mu

    k0 = float(curves.K(np.array([0.0]))[0])
    if kappa >= kappa_c:
        lam_g = k0 / (b * kappa)
        lam_w = k0 / (curves.m_prime0 * (b - 1)) if curves.m_prime0 > 0 else math.inf
        return EpsResult(kappa, kappa_c, "collapsed", 0.0, None, None, lam_g, lam_w)
    mu_eps0 = float(curves(np.array([1.0]))[0][0])  # mu* at eps = 0 (s = 1): the upper end
    hi = math.log(mu_eps0) + 1.0
    lo = hi - 5.0
    while math.log(forward(math.exp(lo))) - lo <= 0:  # walk down until F(kappa/mu) > mu
        lo -= 5.0
        if lo < -700:
            raise ValueError(f"kappa={kappa:g}: no stationary fixed point found although kappa < kappa_c")
    log_mu = brentq(lambda t: math.log(forward(math.exp(t))) - t, lo, hi, xtol=1e-14, rtol=1e-15)
    mu = math.exp(log_mu)
    _, q, p, _, _ = (float(v) for v in w @ curves(s_of(mu)).T)
    lam = rate(mu)
    return EpsResult(kappa, kappa_c, "stationary", mu, q, p / q, lam, lam)
