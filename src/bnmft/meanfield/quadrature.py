"""Quadrature rules for the batch law of one and two coordinates (docs/theory.md section 2.3).

With eps = 0, batch norm sends every batch to ``x = sqrt(B) G h / ||G h||``: uniform on the sphere of radius
``sqrt(B)`` in the (B-1)-dimensional space im G. With ``A = B - 1`` and ``rho = -1/(B-1)`` (docs/theory.md 2.3):

* one coordinate: ``x_1 = sqrt(A) sin(theta)``, theta with density ``cos(theta)^(B-3)`` on [-pi/2, pi/2];
* two coordinates: given theta, ``x_2 = sqrt(A) (rho sin(theta) + sqrt(1 - rho^2) cos(theta) sin(psi))`` with
  psi independent of theta, density ``cos(psi)^(B-4)`` on [-pi/2, pi/2].

(``sin(theta)`` is one coordinate of a uniform unit vector in R^A, ``sin(psi)`` one coordinate of the uniform
unit vector in R^(A-1) that carries the rest.) The angle substitution turns the Jacobi weights
``(1 - t^2)^((B-4)/2)`` and ``(1 - w^2)^((B-5)/2)``, singular at the ends for small B, into the smooth weights
``cos^k``, so composite Gauss-Legendre rules converge exponentially for analytic integrands, for every B.
For ``B = inf`` the law is the standard Gaussian in x (two coordinates independent).

**Rule.** Composite Gauss-Legendre with :data:`NODES_PER_PANEL` nodes per panel, panels uniform in the angle.
Kinks of phi (points where phi or phi' is not analytic) are moved onto panel boundaries, so every panel
integrates an analytic function; the panels next to a kink are graded (``u = s^2`` toward the kink), which
integrates the half-integer powers ``|x - k|^(j/2)`` of alpha_relu's moments exactly (a nonlinearity may
ask for a stronger grading for other power singularities: ``Nonlinearity.kink_grading``). The weights
are normalised by their sum (the truncated mass is below TAIL). The domain
is truncated where the integrand (weight times ``1 + phi^2 + phi'^2 (1 + x^2)``) falls below
:data:`TAIL` times its maximum. The panel width is halved until the one-coordinate moments agree to
:data:`REL_TOL` between the rule and the rule with twice as many panels.

**Large B.** Where :func:`tensor_rule_applies`, pairs are integrated on the tensor grid of the one-coordinate
rule with the exact joint-density ratio (:func:`joint_ratio`): phi is evaluated once per node.

**Accuracy** (the one statement; tests/meanfield/test_accuracy.py): smooth phi against 20-digit mpmath
integration in other coordinates and the Gegenbauer series: better than 1e-11 (typically 1e-15); relu and
alpha_relu (alpha in {0.75, 1.5, 2, 3}) through the kink-split path against the closed forms: better than 1e-8
(typically 1e-13).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..errors import InputError

NODES_PER_PANEL = 12
GRADING_POWER = 2
TAIL = 1e-32
REL_TOL = 1e-13
MAX_PANELS = 128
ACCEPT_TOL = 1e-7
GAUSS_SCAN_LIMIT = 40.0  # |x| beyond which the Gaussian weight is below 1e-347


@lru_cache(maxsize=8)
def _gauss_legendre_01(n: int) -> tuple[np.ndarray, np.ndarray]:
    s, w = np.polynomial.legendre.leggauss(n)
    return (s + 1) / 2, w / 2


def log_cos_power(k: int, angle: np.ndarray) -> np.ndarray:
    """``k log cos(angle)``, accurate for small angles, ``0`` for ``k = 0``, ``-inf`` at +-pi/2."""
    if k == 0:
        return np.zeros_like(angle)
    with np.errstate(divide="ignore"):
        return 0.5 * k * np.log1p(-(np.sin(angle) ** 2))


def snap_panels(lo: np.ndarray, hi: np.ndarray, kinks: np.ndarray, panels: int):
    """Panel boundaries per row, uniform on [lo, hi] with each kink moved onto its nearest boundary.

    Args:
        lo, hi: shape (R,), the interval of each row (``hi >= lo``).
        kinks: shape (R, K); entries outside (lo, hi) or NaN are ignored.
        panels: number of panels P per row.

    Returns:
        ``(bounds, is_kink)`` of shape (R, P + 1), or ``None`` when two kinks fall on the same boundary (the
        caller then doubles P).
    """
    frac = np.arange(panels + 1) / panels
    width = hi - lo
    bounds = lo[:, None] + width[:, None] * frac
    is_kink = np.zeros(bounds.shape, dtype=bool)
    rows_all = np.arange(len(lo))
    for k in kinks.T:
        with np.errstate(invalid="ignore"):
            inside = np.isfinite(k) & (k > lo) & (k < hi)
        if not np.any(inside):
            continue
        rows = rows_all[inside]
        j = np.clip(np.rint((k[rows] - lo[rows]) / width[rows] * panels), 1, panels - 1).astype(int)
        if np.any(is_kink[rows, j]):
            return None
        bounds[rows, j] = k[rows]
        is_kink[rows, j] = True
    if np.any(np.diff(bounds, axis=1)[width > 0] <= 0):
        return None
    return bounds, is_kink


def panel_rule(bounds: np.ndarray, is_kink: np.ndarray, grading: int = GRADING_POWER, n: int = NODES_PER_PANEL):
    """Composite Gauss-Legendre nodes and weights, graded toward kinks.

    Args:
        bounds, is_kink: shape (R, P + 1) from :func:`snap_panels`.
        grading: power p of the map ``u = s^p`` in panels next to a kink.

    Returns:
        ``(nodes, weights)`` of shape (R, P * n); weights integrate ``dt`` over each row's interval.
    """
    s, ws = _gauss_legendre_01(n)
    left, right = bounds[:, :-1], bounds[:, 1:]
    width = (right - left)[:, :, None]
    nodes = left[:, :, None] + width * s
    weights = width * ws
    kl, kr = is_kink[:, :-1], is_kink[:, 1:]
    graded = kl | kr
    if np.any(graded):  # only the few panels next to a kink are remapped
        p = grading
        sp, tp = s**p, (1 - s) ** p
        den = sp + tp
        maps = {  # (left kink, right kink) -> (u(s), u'(s))
            (True, False): (sp, p * s ** (p - 1)),
            (False, True): (1 - tp, p * (1 - s) ** (p - 1)),
            (True, True): (sp / den, p * s ** (p - 1) * (1 - s) ** (p - 1) / den**2),
        }
        for (at_left, at_right), (u, du) in maps.items():
            rows, cols = np.nonzero((kl == at_left) & (kr == at_right) & graded)
            if rows.size:
                w = width[rows, cols]
                nodes[rows, cols] = left[rows, cols, None] + w * u
                weights[rows, cols] = w * ws * du
    count = bounds.shape[0]
    return nodes.reshape(count, -1), weights.reshape(count, -1)


@lru_cache(maxsize=64)
def _unit_rule(panels: int, n: int = NODES_PER_PANEL) -> tuple[np.ndarray, np.ndarray]:
    """Composite Gauss-Legendre on [0, 1] with uniform panels (nodes and weights, shape (panels * n,))."""
    s, ws = _gauss_legendre_01(n)
    left = np.arange(panels)[:, None] / panels
    return (left + s / panels).ravel(), np.tile(ws / panels, panels)


def _rule_on(lo, hi, kinks, panels, grading):
    """Snap, doubling the panel count until kinks no longer collide."""
    if kinks.shape[1] == 0:  # no kinks: the same uniform rule on every row
        u, v = _unit_rule(panels)
        width = (hi - lo)[:, None]
        return lo[:, None] + width * u, width * v
    while panels <= 8 * MAX_PANELS:
        snapped = snap_panels(lo, hi, kinks, panels)
        if snapped is not None:
            return panel_rule(*snapped, grading=grading)
        panels *= 2
    raise InputError("phi: kinks are too close together to be separated by the quadrature")


@dataclass(frozen=True)
class Support:
    """The truncated range [xlo, xhi] of one coordinate that carries the integrals, phi's kinks in it, and
    the power of the graded map next to the kinks (:attr:`bnmft.nonlinearity.Nonlinearity.kink_grading`)."""

    xlo: float
    xhi: float
    kinks: tuple[float, ...]
    grading: int = GRADING_POWER


class SphereRule:
    """Quadrature for the one- and two-coordinate marginals of the spherical batch law (finite B >= 4).

    Args:
        batch_size: B >= 4.
        support: truncated x range and kinks.
        panels: panels per coordinate.
    """

    def __init__(self, batch_size: int, support: Support, panels: int):
        self.batch_size = B = int(batch_size)
        self.support = support
        self.panels = panels
        self.scale = math.sqrt(B - 1)
        self.rho = -1.0 / (B - 1)
        self._kinks = np.asarray(support.kinks, dtype=float)

    def _angle(self, x):
        return np.arcsin(np.clip(np.asarray(x, dtype=float) / self.scale, -1.0, 1.0))

    def _outer_breaks(self) -> np.ndarray:
        """Angles theta where x_1 is at a kink, or where a kink of x_2 enters the reach of x_2 given x_1.

        Given theta, x_2 / sqrt(A) ranges over ``[sin(theta - t0), sin(theta + t0)]`` with ``cos(t0) = rho``;
        the inner integral is not analytic in theta where a kink k crosses an end of that range, i.e. where
        ``sin(theta +- t0) = k / sqrt(A)``.
        """
        if not self._kinks.size:
            return self._kinks
        t0 = math.acos(self.rho)
        s = np.arcsin(np.clip(self._kinks / self.scale, -1, 1))
        cand = np.sort(np.concatenate([s, s - t0, math.pi - s - t0, s + t0, -math.pi - s + t0]))
        cand = cand[(cand > -math.pi / 2) & (cand < math.pi / 2)]
        return cand[np.concatenate([[True], np.diff(cand) > 1e-12])]

    def one(self) -> tuple[np.ndarray, np.ndarray]:
        """Nodes ``x_1`` (n,) and probability weights (n,) for one coordinate."""
        B = self.batch_size
        lo, hi = self._angle([self.support.xlo]), self._angle([self.support.xhi])
        theta, w = _rule_on(lo, hi, self._outer_breaks()[None, :], self.panels, self.support.grading)
        theta, w = theta[0], w[0]
        w = w * np.exp(log_cos_power(B - 3, theta))
        return self.scale * np.sin(theta), w / w.sum()

    def two(self, outer: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``x_1`` (R, 1), ``x_2`` (R, M) and probability weights (R, M) for a pair of coordinates; ``outer`` is
        :meth:`one`'s result when the caller has it already."""
        B, a, rho = self.batch_size, self.scale, self.rho
        x1, w1 = self.one() if outer is None else outer
        theta = np.arcsin(x1 / a)
        sin_t, spread = np.sin(theta), math.sqrt(1 - rho * rho) * np.cos(theta)

        def inner_angle(x):  # psi at which x_2 = x, per row (NaN where x is out of reach)
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.arcsin((np.asarray(x, dtype=float)[None, ...] / a - rho * sin_t[:, None]) / spread[:, None])

        lo = np.nan_to_num(inner_angle([self.support.xlo])[:, 0], nan=-math.pi / 2)
        hi = np.nan_to_num(inner_angle([self.support.xhi])[:, 0], nan=math.pi / 2)
        hi = np.maximum(hi, lo)
        kinks = inner_angle(self._kinks) if self._kinks.size else np.empty((len(x1), 0))
        psi, w2 = _rule_on(lo, hi, kinks, self.panels, self.support.grading)
        sin_psi = np.sin(psi)
        if B > 4:  # weight cos(psi)^(B-4) = exp((B-4)/2 log(1 - sin^2)), the sine computed once for x_2 too
            with np.errstate(divide="ignore"):
                w2 *= np.exp((0.5 * (B - 4)) * np.log1p(-(sin_psi * sin_psi)))
        w2 /= np.maximum(w2.sum(axis=1, keepdims=True), 1e-300)  # the conditional law of psi, per row
        x2 = a * (rho * sin_t[:, None] + spread[:, None] * sin_psi)
        return x1[:, None], x2, w1[:, None] * w2


def tensor_rule_applies(batch_size: float, support: Support) -> bool:
    """Large B (about B >= 400): the joint density of (x_1, x_2) is smooth on the whole truncated square, whose
    corners lie well inside the ellipse where it vanishes (``3 s^2 <= B - 2``, s = max |x| of the support). The
    tensor and angle rules agree to ~5e-15 already from ``B / s^2 = 2.2`` (tests/meanfield/test_accuracy.py)."""
    s = max(abs(support.xlo), abs(support.xhi))
    return math.isfinite(batch_size) and 3 * s * s <= batch_size - 2


def joint_ratio(batch_size: int, x: np.ndarray) -> np.ndarray:
    """The density ratio ``r_ij = p(x_i, x_j) / (p(x_i) p(x_j))`` of a pair of coordinates on a tensor grid (large B).

    The pair (x_1, x_2) of the batch law has density proportional to ``(1 - Q / (B (B-2)))^((B-5)/2)``,
    ``Q = (B-1)(x_1^2 + x_2^2) + 2 x_1 x_2`` (a two-dimensional projection of the uniform law on the sphere of
    radius sqrt(B) in im G), and one coordinate ``(1 - x^2/(B-1))^((B-4)/2)``. With (x, w) a rule for one
    coordinate, ``W_ij = w_i r_ij w_j`` (normalised to sum 1) is a product rule for the pair; kinks of phi sit on
    panel boundaries in both coordinates. Valid where :func:`tensor_rule_applies` (the square inside the ellipse).

    Args:
        batch_size: B.
        x: nodes of the one-coordinate rule, shape (n,).

    Returns:
        r, shape (n, n), up to a constant factor.
    """
    b = batch_size
    scale = 1.0 / (b * (b - 2.0))
    u = (b - 1) * scale * (x * x)
    one = (0.5 * (b - 4)) * np.log1p(-(x * x) / (b - 1))
    log_r = u[:, None] + u[None, :]
    log_r += np.outer((2 * scale) * x, x)
    np.log1p(-log_r, out=log_r)
    log_r *= 0.5 * (b - 5)
    log_r -= one[:, None]
    log_r -= one[None, :]
    return np.exp(log_r, out=log_r)


class GaussRule:
    """Quadrature for the standard Gaussian law of one coordinate (the ``B = inf`` limit)."""

    def __init__(self, support: Support, panels: int):
        self.support = support
        self.panels = panels

    def one(self) -> tuple[np.ndarray, np.ndarray]:
        kinks = np.asarray(self.support.kinks, dtype=float)[None, :]
        x, w = _rule_on(
            np.array([self.support.xlo]), np.array([self.support.xhi]), kinks, self.panels, self.support.grading
        )
        x, w = x[0], w[0]
        w = w * np.exp(-0.5 * x * x)
        return x, w / w.sum()


def scan_grid(batch_size: float, points: int = 1001) -> tuple[np.ndarray, np.ndarray]:
    """x grid over the whole support and the log density there (unnormalised), for finding the support.

    Finite B: uniform in theta over the angles where ``cos^(B-3)`` exceeds 1e-320; B = inf: uniform in x on
    [-40, 40].
    """
    if math.isinf(batch_size):
        x = np.linspace(-GAUSS_SCAN_LIMIT, GAUSS_SCAN_LIMIT, points)
        return x, -0.5 * x * x
    k = int(batch_size) - 3
    cap = math.pi / 2 if k <= 1 else min(math.pi / 2, math.acos(math.exp(-737.0 / k)))
    theta = np.linspace(-cap, cap, points)
    return math.sqrt(batch_size - 1) * np.sin(theta), log_cos_power(k, theta)
