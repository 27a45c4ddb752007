"""Batch norm with eps > 0 (docs/theory.md section 6, ours): the kappa scaling, the collapsed phase, lambda_W.

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
import numbers
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.polynomial import chebyshev
from scipy.optimize import brentq
from scipy.special import gammaln

from ..errors import InputError
from ..nonlinearity import Nonlinearity, PhiSpec, resolve
from ..options import check_batch_size
from . import closed_forms
from .moments import spherical_moments_resolved

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
        self.alpha = phi.homogeneous_degree
        self.m_prime0 = m_prime_at_zero(phi, b)
        if self.alpha is not None:
            m = spherical_moments_resolved(phi, b)
            self._one = np.array([m.mu, m.second, m.cross, (b - 1) * m.d2 + m.dd, m.xd, m.d2, m.x2d2])
            return
        # Chebyshev-Lobatto points: the ends s = 0 (taken as 1e-12: phi(1e-6 x)) and s = 1 (eps -> 0) are nodes
        nodes = np.maximum(0.5 * (1 - np.cos(np.pi * np.arange(CHEB_NODES) / (CHEB_NODES - 1))), 1e-12)
        values = []
        for s in nodes:
            rho = math.sqrt(s)
            m = spherical_moments_resolved(phi.affine_input(rho, 0.0), b)  # x -> phi(rho x): derivative rho * d
            values.append([m.mu, m.second, m.cross, ((b - 1) * m.d2 + m.dd) / s, m.xd / s, m.d2 / s, m.x2d2 / s])
        table = np.array(values)
        self._coef = np.stack([chebyshev.chebfit(2 * nodes - 1, table[:, j], CHEB_NODES - 1) for j in range(7)], 1)

    def __call__(self, s: np.ndarray) -> np.ndarray:
        """(m, q, p, K1, X, D2, XD2) at s (stacked along the first axis): m(s), E[phi^2], E[phi_1 phi_2],
        (B-1)E[d^2] + E[d_1 d_2], E[(x1 d1 - x2 d2)^2]/2, E[d^2], E[x_1^2 d_1^2]; d = phi'(sqrt(s) x)."""
        s = np.asarray(s, dtype=float)
        if self.alpha is not None:
            a = self.alpha
            sa = np.power(s, a)
            sa1 = np.power(s, a - 1) if a != 1.0 else np.ones_like(s)
            powers = np.stack([sa, sa, sa, sa1, sa1, sa1, sa1])
            return self._one.reshape(7, *([1] * s.ndim)) * powers
        return chebyshev.chebval(2 * s - 1, self._coef)

    def K(self, s: np.ndarray) -> np.ndarray:
        values = self(s)
        return values[3] - (2 * s - s * s) * values[4]


#: MomentCurves already built, keyed by how phi is rebuilt (registry or expression), its parameters and B
_CURVES: dict[tuple, MomentCurves] = {}
_CURVES_MAX = 32


def moment_curves(phi: Nonlinearity, batch_size: int) -> MomentCurves:
    """:class:`MomentCurves` of phi and B, cached for registered and expression phi (a sweep over eps, or a
    planner's search, builds them once); a plain callable is rebuilt every time (nothing identifies it)."""
    if phi.source[0] == "callable":
        return MomentCurves(phi, batch_size)
    key = (repr(phi.source), repr(sorted(phi.params.items())), phi.kinks, int(batch_size))
    if key not in _CURVES:
        if len(_CURVES) >= _CURVES_MAX:
            _CURVES.pop(next(iter(_CURVES)))
        _CURVES[key] = MomentCurves(phi, batch_size)
    return _CURVES[key]


def m_prime_at_zero(phi: Nonlinearity, batch_size: int) -> float:
    """``m'(0) = lim_(s -> 0) m(s) / s``, in closed form (ours; module docstring).

    As s -> 0, ``phi(sqrt(s) x) - phi(0) ~ sqrt(s) (l x_- + r x_+)`` with l, r the one-sided slopes of phi at 0,
    so m'(0) is the mu* of the piecewise-linear ``l z + (r - l) relu(z)``:
    ``l r B/(B-1) + (r - l)^2 mu*_relu(B)`` (from ``E[x_1^2] = 1``, ``E[x_1 x_2] = -1/(B-1)`` and
    ``E[(x_1 - x_2)(relu(x_1) - relu(x_2))] = B/(B-1)``); for smooth phi ``phi'(0)^2 B/(B-1)``. Homogeneous phi of
    degree alpha != 1 have ``m(s) = s^alpha m(1)``: m'(0) = 0 (alpha > 1) or inf (alpha < 1). Exact to rounding;
    checked against the quadrature of the piecewise-linear function in the tests.
    """
    b = batch_size
    a = phi.homogeneous_degree
    if a is not None and a != 1.0:
        return 0.0 if a > 1.0 else math.inf
    if not any(abs(k) < 1e-12 for k in phi.kinks):
        return float(phi.derivative(np.array(0.0))) ** 2 * b / (b - 1)
    right = float(phi.derivative(np.array(1e-9)))
    left = float(phi.derivative(np.array(-1e-9)))
    return left * right * b / (b - 1) + (right - left) ** 2 * closed_forms.homogeneous(1.0, b)["mu_star"]


def kappa_critical(phi: Nonlinearity, batch_size: int) -> float:
    """``kappa_c = m'(0) (B-1)/B``: a fixed point mu* > 0 exists iff kappa < kappa_c (closed form, cheap)."""
    return float(m_prime_at_zero(phi, batch_size) * (batch_size - 1) / batch_size)


def chi_rule(k: int) -> tuple[np.ndarray, np.ndarray]:
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
    curves = moment_curves(phi, b)
    chi2, w = chi_rule(b - 1)
    kappa_c = kappa_critical(phi, b)

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
            raise RuntimeError(f"kappa={kappa:g}: no stationary fixed point found although kappa < kappa_c")
    log_mu = brentq(lambda t: math.log(forward(math.exp(t))) - t, lo, hi, xtol=1e-14, rtol=1e-15)
    mu = math.exp(log_mu)
    q, p = (float(v) for v in (curves(s_of(mu)) @ w)[1:3])
    lam = rate(mu)
    return EpsResult(kappa, kappa_c, "stationary", mu, q, p / q, lam, lam)


def eps_theory(
    phi: PhiSpec,
    batch_size: int,
    *,
    kappa: float,
    gamma: float = 1.0,
    beta: float = 0.0,
    derivative: Callable[[np.ndarray], np.ndarray] | None = None,
    kinks: tuple[float, ...] = (),
    **params: float,
) -> EpsResult:
    """The eps > 0 theory of ``phi(gamma z + beta)`` at ``kappa = eps / sigma_w^2 > 0`` (module docstring).

    Args:
        phi: any phi specification (name, expression in z, :class:`~bnmft.Nonlinearity`, callable).
        batch_size: B, a finite integer >= 4.
        kappa: eps / sigma_w^2, finite and > 0 (``bnmft.theory(..., eps=0)`` is the eps = 0 theory).
        gamma, beta, derivative, kinks, **params: as for :func:`bnmft.theory`.

    Returns:
        :class:`EpsResult` (phase, kappa_c, mu*, q*, c*, lambda_G, lambda_W); ``bnmft.theory(..., eps=...)`` gives
        the same numbers inside a full :class:`~bnmft.TheoryResult`.
    """
    b = check_batch_size(batch_size)
    if math.isinf(b):
        raise InputError("batch_size must be finite for eps > 0 (the eps theory averages over ||G h|| ~ chi_{B-1})")
    if isinstance(kappa, bool) or not isinstance(kappa, numbers.Real) or not (math.isfinite(kappa) and kappa > 0):
        raise InputError(f"kappa must be a finite number > 0, got {kappa!r}")
    _, effective = resolve(phi, gamma=gamma, beta=beta, derivative=derivative, kinks=kinks, **params)
    return solve(effective, int(b), float(kappa))
