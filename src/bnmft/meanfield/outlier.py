"""The outlier state: one example's centred norm against a BSB1 background (derivation: docs/outlier.md).

**Reduction (exact).** V commutes with permutations, so Gram matrices symmetric under permutations of examples 2..B
map to such matrices; centred and up to scale they are ``k v v^T + P_W`` (v the unit zero-sum vector along example 1,
P_W the projector on the zero-sum vectors orthogonal to v). The state ``rho = (G S G)_11 / (G S G)_22`` (BSB1: 1) is
``k (B-1)^2 / (k + B(B-2))``; internally ``u = log k``.

**Rules** (relative errors measured in tests/meanfield/test_outlier.py). Homogeneous phi (identity, relu, alpha_relu
with beta = 0): the Laplace integral of :mod:`.gram` on the 4 distinct entries of V, any B (the full B x B map to
1e-14). Other phi: ``tan(theta) = sqrt(k) t`` (theta the batch direction's angle to v, t of a fixed law); given
theta the other examples are a BSB1 batch of size B-1 of ``phi(a + s y)`` (B = 4: three points on a circle), whose
moments (rules of :mod:`.quadrature`, kinks on panel boundaries) are tabulated on a Gauss-Legendre grid in
``asinh(tan(theta) / c)`` and reweighted for each k (against Laplace: identity 1e-12; relu, kinked, 3e-7 at B = 4,
2e-8 at B = 5-8, 1e-10 from B = 16; tanh: 1e-10 against doubled rules, 1e-9 against a refined sphere rule). B = inf:
``F(rho) = E[(phi(sqrt(rho) z) - E phi)^2] / Var phi``, z ~ N(0, 1); homogeneous phi of degree a:
``rho^a + (rho^(a/2) - 1)^2 (E phi)^2 / Var phi`` (relu: ``rho + (sqrt(rho) - 1)^2 / (pi - 1)``).

**Fixed points.** rho = 1 (``F'(1) = lambda_L``) and the zeros of ``(u' - u) / u`` on a u grid (rho in
[0.01, (1 - 1e-6)(B-1)^2], B = inf: to 1e6) refined by Brent's method; stable: ``|F'| < 1 - 1e-9`` (F' to ~1e-12).
Critical batch size: the smallest B with another fixed point, bisection over B <= 4096 (None if none at 4096).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import brentq, minimize_scalar
from scipy.special import logsumexp

from ..errors import InputError
from ..nonlinearity import Nonlinearity, PhiSpec, resolve
from ..options import check_real_array
from .api import check_theory_input
from .closed_forms import kernel as arc_cosine
from .moments import find_support, spherical_moments_resolved
from .quadrature import SphereRule, Support, joint_ratio, panel_rule, snap_panels, tensor_rule_applies

#: the largest batch size the critical batch size is searched up to
MAX_CRITICAL_BATCH = 4096
#: the scanned range of rho: [RHO_MIN, (1 - RHO_EDGE) (B-1)^2], B = inf: [RHO_MIN, RHO_MAX_INF]
RHO_MIN, RHO_EDGE, RHO_MAX_INF = 1e-2, 1e-6, 1e6
#: |F'| within this of 1 is marginal, not stable (relu at B = inf: F'(1) = 1 exactly)
MARGINAL = 1e-9
Step = Callable[[np.ndarray], np.ndarray]  # u = log kappa -> log kappa'


@dataclass(frozen=True)
class OutlierResult:
    """The one-example reduction of the mean-field map at one batch size.

    Attributes:
        phi, gamma, beta: the nonlinearity ``phi(gamma z + beta)``; batch_size: B (int) or ``math.inf``.
        critical_batch_size: the smallest B with a fixed point besides rho = 1 (None: none up to 4096).
        saddle: the unstable fixed point nearest to rho = 1 (in log rho; rho = 1 itself where BSB1 is unstable, as
            for gelu at B = 128, or marginal, relu at B = inf); stable: the stable one other than 1 nearest to it.
        fixed_points: every ``(rho, F'(rho), |F'| < 1)`` found, rho ascending (rho = 1 included).
        method: ``"laplace"``, ``"quadrature"`` or ``"gaussian"`` (B = inf).
    """

    phi: str
    batch_size: float
    gamma: float
    beta: float
    critical_batch_size: int | None
    saddle: float | None
    stable: float | None
    fixed_points: list[tuple[float, float, bool]]
    method: str
    _step: Step = field(repr=False, compare=False)

    def map(self, rho: Any) -> np.ndarray:
        """``F_B(rho)`` elementwise, rho in (0, (B-1)^2) (B = inf: rho > 0); InputError outside."""
        r = check_real_array(rho, "rho")
        top = math.inf if math.isinf(self.batch_size) else (self.batch_size - 1) ** 2
        if not np.all(np.isfinite(r)) or np.any(r <= 0) or np.any(r >= top):
            raise InputError(f"rho must be finite and in (0, {top:g}) (B = {self.batch_size:g}), got {rho!r}")
        return _rho(self.batch_size, self._step(_log_kappa(self.batch_size, r).reshape(-1))).reshape(r.shape)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (batch_size an int or ``"inf"``; fixed points as objects)."""
        keys = ("phi", "gamma", "beta", "critical_batch_size", "saddle", "stable", "method")
        out: dict[str, Any] = {k: getattr(self, k) for k in keys}
        out["batch_size"] = "inf" if math.isinf(self.batch_size) else int(self.batch_size)
        out["fixed_points"] = [{"rho": r, "derivative": d, "stable": s} for r, d, s in self.fixed_points]
        return out


def outlier_state(
    phi: PhiSpec,
    batch_size: int | float | str,
    *,
    gamma: float = 1.0,
    beta: float = 0.0,
    derivative: Callable[[np.ndarray], np.ndarray] | None = None,
    kinks: tuple[float, ...] = (),
    **params: float,
) -> OutlierResult:
    """The outlier map ``F_B(rho)`` with its fixed points and the critical batch size (module docstring).

    Args:
        phi, gamma, beta, derivative, kinks, **params: the nonlinearity, as for :func:`bnmft.theory`.
        batch_size: B, an integer >= 4, or ``math.inf`` / ``"inf"``.

    Raises:
        InputError: a bad batch size, phi, gamma (also 0) or beta; phi not finite or with diverging moments.
    """
    b, settings = check_theory_input(batch_size, gamma=gamma, beta=beta)
    base, effective = resolve(
        phi, gamma=settings["gamma"], beta=settings["beta"], derivative=derivative, kinks=kinks, **params
    )
    return outlier_state_resolved(base, effective, b)


def outlier_state_resolved(base: Nonlinearity, phi: Nonlinearity, batch_size: float) -> OutlierResult:
    """The kernel of :func:`outlier_state`: phi resolved (gamma and beta in ``phi``), B checked."""
    step, method = _reduced_map(phi, batch_size)
    points = _fixed_points(step, batch_size)
    others = [(r, s) for r, _, s in points if r != 1.0 or not s]  # nearest to rho = 1 in log rho:
    nearest = {k: min((r for r, s in others if s == k), key=lambda r: abs(math.log(r)), default=None) for k in (0, 1)}
    gamma, beta = float(phi.params.get("gamma", 1.0)), float(phi.params.get("beta", 0.0))
    crit = _critical_batch_size(phi)
    return OutlierResult(base.name, batch_size, gamma, beta, crit, nearest[0], nearest[1], points, method, step)


def _log_kappa(b: float, rho: np.ndarray) -> np.ndarray:
    return np.log(rho) if math.isinf(b) else np.log(rho) + math.log(b * (b - 2.0)) - np.log((b - 1.0) ** 2 - rho)


def _rho(b: float, u: np.ndarray) -> np.ndarray:
    return np.exp(u if math.isinf(b) else u + 2 * math.log(b - 1.0) - np.logaddexp(u, math.log(b * (b - 2.0))))


def _checked_log_ratio(num: np.ndarray, den: np.ndarray, phi: Nonlinearity) -> np.ndarray:
    """``log(num / den)``; a constant phi (den = 0) or an overflow is bad input, never a NaN."""
    with np.errstate(all="ignore"):
        out = np.log(num) - np.log(den)
    if not np.all(np.isfinite(out)):
        raise InputError(f"phi={phi.name!r}: the outlier map is not defined (phi constant, or moments overflow)")
    return out


def _reduced_map(phi: Nonlinearity, b: float) -> tuple[Step, str]:
    alpha = phi.homogeneous_degree
    if math.isinf(b):
        return _gaussian_step(phi, alpha), "gaussian"
    if alpha is not None:
        return (lambda u: _laplace_step(phi, alpha, int(b), u)), "laplace"
    return _Nested(phi, int(b)), "quadrature"


def _gaussian_step(phi: Nonlinearity, alpha: float | None) -> Step:
    """B = inf: the outlier ~ N(0, kappa) against an i.i.d. N(0, 1) background (kappa = rho)."""
    mom = spherical_moments_resolved(phi, math.inf, with_derivative=False)
    mean, var = mom.mean, mom.mu
    if alpha is not None:  # closed form: kappa^a + (kappa^(a/2) - 1)^2 m^2 / Var
        return lambda u: _checked_log_ratio(
            np.exp(alpha * u) * var + np.expm1(alpha * u / 2) ** 2 * mean * mean, np.full_like(u, var), phi
        )
    sup = find_support(phi, math.inf, check_derivative=False)
    half = max(abs(sup.xlo), abs(sup.xhi))
    panels = max(8, math.ceil(2 * half))

    def step(u: np.ndarray) -> np.ndarray:
        scale = np.exp(u / 2)[:, None]
        kinks = np.asarray(phi.kinks, dtype=float)[None, :] / scale
        z, w = _panels(np.full(len(u), -half), np.full(len(u), half), kinks, panels, phi.kink_grading)
        w = w * np.exp(-0.5 * z * z)
        centred = phi(scale * z) - mean
        return _checked_log_ratio(np.sum(w * centred**2, axis=1) / np.sum(w, axis=1), np.full(len(u), var), phi)

    return step


def _laplace_step(phi: Nonlinearity, alpha: float, b: int, u: np.ndarray) -> np.ndarray:
    """Homogeneous phi: V by the Laplace integral, only its entries V11, V12, V22, V23 (chunks of close kappa)."""
    if len(u) > 32:
        out, order = np.empty(len(u)), np.argsort(u)
        for chunk in np.array_split(order, math.ceil(len(u) / 32)):
            out[chunk] = _laplace_step(phi, alpha, b, u[chunk])
        return out
    # Sigma_G: eigenvalue kappa on v, 1 on W (rank B-1); s = e^r, tails by Gauss-Laguerre as in gram._laplace
    r_lo, r_hi = -math.log(2) - max(float(u.max()), 0.0) - 8.0, -math.log(2) - min(float(u.min()), 0.0) + 8.0
    edges = np.linspace(r_lo, r_hi, math.ceil(r_hi - r_lo) + 1)
    width = np.diff(edges)[:, None]
    (s01, w01), (t, wt) = np.polynomial.legendre.leggauss(10), np.polynomial.laguerre.laggauss(40)
    right = (b - 1) / 2
    r = np.concatenate([r_lo - t / alpha, (edges[:-1, None] + width * (s01 + 1) / 2).ravel(), r_hi + t / right])
    w = np.concatenate([wt * np.exp(t) / alpha, (width * w01 / 2).ravel(), wt * np.exp(t) / right])
    s, kappa = np.exp(r)[None, :], np.exp(u)[:, None]
    a, c = kappa / (1 + 2 * s * kappa), 1 / (1 + 2 * s)  # the tilted covariance: a v v^T + c P_W
    log_f = alpha * r - 0.5 * np.log1p(2 * s * kappa) - 0.5 * (b - 2) * np.log1p(2 * s)
    c11, c12 = a * (b - 1) / b, -a / b
    c22, c23 = a / (b * (b - 1)) + c * (b - 2) / (b - 1), a / (b * (b - 1)) - c / (b - 1)
    if phi.family == "identity":
        v11, v12, v22, v23 = c11, c12, c22, c23
        w_node = np.broadcast_to(c, a.shape)  # V22 - V23 = c exactly
    else:  # E[phi(u) phi(v)] ~ (C_uu C_vv)^(a/2) J(corr): the constant factor cancels in kappa'
        v11, v22 = c11**alpha, c22**alpha
        v12 = (c11 * c22) ** (alpha / 2) * arc_cosine(alpha, c12 / np.sqrt(c11 * c22))[0]
        j23 = arc_cosine(alpha, c23 / c22)[0]
        v23, w_node = v22 * j23, v22 * (1 - j23)
    v_node = ((b - 1) * (v11 - 2 * v12 + v23) + w_node) / b
    weight = w * np.exp(log_f - log_f.max(axis=1, keepdims=True))
    return _checked_log_ratio(np.sum(weight * v_node, axis=1), np.sum(weight * w_node, axis=1), phi)


def _panels(lo: np.ndarray, hi: np.ndarray, kinks: np.ndarray, panels: int, grading: int):
    """Composite Gauss-Legendre rows on [lo, hi] with the kinks on panel boundaries (doubling on collisions)."""
    while (snapped := snap_panels(lo, hi, kinks, panels)) is None and panels <= 4096:
        panels *= 2
    if snapped is None:
        raise InputError("phi: kinks are too close together to be separated by the quadrature")
    return panel_rule(snapped[0], snapped[1], grading=grading)


class _Nested:
    """Any phi, finite B: the outlier's angle outside, the conditional BSB1 batch of size B-1 inside (module doc)."""

    CHUNK = 2_000_000  # pair-rule nodes x outer rows per chunk (memory)

    def __init__(self, phi: Nonlinearity, b: int):
        self.phi, self.b, self.m = phi, b, b - 1
        sup = find_support(phi, self.m, check_derivative=False)
        self.y_max = max(abs(sup.xlo), abs(sup.xhi))
        self.panels = max(8, math.ceil(self.y_max))  # 12 nodes per 2 units of y (kinked rows: per unit)
        self.kinks = np.asarray(phi.kinks, dtype=float)
        self.table: tuple | None = None  # (u_lo, u_hi, tau, log weights, E[(v^T f)^2 | .], E[(f_2 - f_3)^2 | .] / 2)
        if not self.kinks.size and b > 4:  # one inner rule for every row
            rule = SphereRule(self.m, Support(-self.y_max, self.y_max, ()), self.panels)
            self.y, self.wy = rule.one()
            if tensor_rule_applies(self.m, rule.support):
                pair = self.wy[:, None] * joint_ratio(self.m, self.y) * self.wy[None, :]
                self.pair: Any = pair / pair.sum()
            else:
                self.pair = rule.two((self.y, self.wy))

    def __call__(self, u: np.ndarray) -> np.ndarray:
        lo, hi = float(np.min(u)), float(np.max(u))
        if self.table is None or lo < self.table[0] or hi > self.table[1]:
            cover = (min(lo, 0.0) - 1.0, max(hi, 0.0) + 1.0)
            self.table = (*cover, *self._tabulate(*cover))
        tau, log_w, top, low = self.table[2:]
        log_w = log_w[None, :] - 0.5 * (self.b - 1) * np.log1p(tau[None, :] ** 2 / np.exp(u)[:, None])
        weight = np.exp(log_w - logsumexp(log_w, axis=1, keepdims=True))
        return _checked_log_ratio(weight @ top, weight @ low, self.phi)

    def _tabulate(self, u_lo: float, u_hi: float) -> tuple[np.ndarray, ...]:
        """Outer nodes tau, log weights, and per node ``E[(v^T f)^2 | theta]``, ``E[(f_2 - f_3)^2 | theta] / 2``."""
        b, m = self.b, self.m
        c = 0.3 * math.exp(min(u_lo, 0.0) / 2) / math.sqrt(b)  # resolves the tau-law of the smallest kappa
        tail = 10 ** (1 + 18 / (b - 2)) * math.exp(max(u_hi, 0.0) / 2)  # mass beyond < 1e-18 (tau^-(B-1) tail)
        v_max = math.asinh(tail / c)
        pole = math.sqrt(b * (2.0 if m == 3 else m - 1))  # R sqrt(B); breaks: x_1 or the others' reach +-R at a kink
        with np.errstate(invalid="ignore"):  # NaN: no such angle (dropped below)
            at = np.arcsin(-self.kinks * math.sqrt(b - 1) / math.hypot(1.0, pole))
            theta = np.concatenate(
                [np.arcsin(self.kinks / math.sqrt(b - 1))]
                + [d + e for d in (math.atan(pole), -math.atan(pole)) for e in (at, np.pi - at, -np.pi - at)]
            )
        v_kinks = np.arcsinh(np.tan(theta[np.abs(theta) < np.pi / 2]) / c)[None, :]
        (v,), (wv,) = _panels(lo := np.array([-v_max]), -lo, v_kinks, 2 * math.ceil(v_max), self.phi.kink_grading)
        tau = c * np.sinh(v)
        cos_t, sin_t = 1 / np.sqrt(1 + tau * tau), tau / np.sqrt(1 + tau * tau)
        shift, scale = -sin_t / math.sqrt(b - 1), math.sqrt(b / (b - 1)) * cos_t
        mean, second, pair = self._inner(shift, scale)
        f1 = self.phi(math.sqrt(b - 1) * sin_t) - mean  # everything centred per row (BN ignores a shift)
        total = m * second + m * (m - 1) * pair  # E[(sum of the others)^2 | theta]
        top = ((b - 1) ** 2 * f1 * f1 + total) / (b * (b - 1))  # v^T f = sqrt(B/(B-1)) (f_1 - mean of f)
        return tau, np.log(wv * c * np.cosh(v)), top, second - pair

    def _inner(self, shift: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per row: E[g], E[(g - E g)^2], E[(g_2 - E g)(g_3 - E g)] for g = phi(shift + scale y), y ~ BSB1(B-1)."""
        if self.m == 3:
            return self._inner_circle(shift, scale)
        if self.kinks.size:
            return self._inner_kinked(shift, scale)
        phi, y, wy = self.phi, self.y, self.wy
        g = phi(shift[:, None] + scale[:, None] * y[None, :])
        mean = g @ wy
        g -= mean[:, None]
        second = (g * g) @ wy
        if isinstance(self.pair, np.ndarray):
            return mean, second, np.einsum("ni,ij,nj->n", g, self.pair, g)
        (_, y2, w12), pair, rows = self.pair, np.empty(len(shift)), max(1, self.CHUNK // self.pair[1].size)
        for sl in (slice(i, i + rows) for i in range(0, len(shift), rows)):
            g2 = phi(shift[sl, None, None] + scale[sl, None, None] * y2[None]) - mean[sl, None, None]
            pair[sl] = np.einsum("rk,rkj,kj->r", g[sl], g2, w12)
        return mean, second, pair

    def _inner_kinked(self, shift: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Kinks of phi move with the row (y = (k - shift) / scale): one kink-aware sphere rule per row."""
        out = np.empty((3, len(shift)))
        for i, (a, s) in enumerate(zip(shift, scale, strict=True)):
            ks = tuple(float(k) for k in (self.kinks - a) / s if abs(k) < self.y_max)
            rule = _MergedBreaks(self.m, Support(-self.y_max, self.y_max, ks, self.phi.kink_grading), 2 * self.panels)
            y, wy = rule.one()
            g = self.phi(a + s * y)
            mean = float(wy @ g)
            _, y2, w12 = rule.two((y, wy))
            g2 = self.phi(a + s * y2) - mean
            out[:, i] = mean, float(wy @ (g - mean) ** 2), float(np.einsum("k,kj,kj->", g - mean, g2, w12))
        return out[0], out[1], out[2]

    def _inner_circle(self, shift: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """B = 4: the other three examples lie on a circle, ``y_i = sqrt(2) cos(psi + 2 pi i / 3)``, psi uniform."""
        with np.errstate(invalid="ignore"):  # NaN where a kink is out of reach
            at = np.arccos((self.kinks[None, :] - shift[:, None]) / (math.sqrt(2) * scale[:, None]))
        breaks = np.concatenate([at, -at, at - 2 * np.pi / 3, -at - 2 * np.pi / 3], axis=1) % (2 * np.pi)
        zero = np.zeros(len(shift))
        psi, w = _panels(zero, zero + 2 * np.pi, breaks, 32, self.phi.kink_grading)
        w /= 2 * np.pi
        arm = math.sqrt(2) * scale[:, None]
        g1, g2 = (self.phi(shift[:, None] + arm * np.cos(psi + d)) for d in (0, 2 * np.pi / 3))
        mean = np.sum(w * g1, axis=1)
        g1, g2 = g1 - mean[:, None], g2 - mean[:, None]
        return mean, np.sum(w * g1 * g1, axis=1), np.sum(w * g1 * g2, axis=1)


class _MergedBreaks(SphereRule):
    """The sphere rule with breaks closer than 1e-3 rad merged (a moving kink can put two arbitrarily close)."""

    def _outer_breaks(self) -> np.ndarray:
        breaks = super()._outer_breaks()
        return breaks[np.concatenate([[True], np.diff(breaks) > 1e-3])] if breaks.size else breaks


def _scan(step: Step, b: float, spacing: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """The u grid over the scanned rho (sinh-graded from 1e-4 for |u| < 2, u = 0 excluded; ``spacing`` beyond) and
    ``(u' - u) / u`` on it: its zeros are the fixed points besides rho = 1, its sign the way rho moves."""
    top = RHO_MAX_INF if math.isinf(b) else (1 - RHO_EDGE) * (b - 1) ** 2
    u_lo, u_hi = (float(_log_kappa(b, np.array(r))) for r in (RHO_MIN, top))
    near = 1e-4 * np.sinh(np.arange(-10.6, 10.6, spacing / 2) + spacing / 4)
    near = near[(near > u_lo) & (near < u_hi)]
    grid = np.concatenate([np.arange(u_lo, -2.0, spacing), near, np.arange(u_hi, 2.0, -spacing)[::-1]])
    moved = step(grid) - grid  # rounding-level moves are no move (identity at B = inf is neutral everywhere)
    return grid, np.where(np.abs(moved) > 1e-11 * np.maximum(1.0, np.abs(grid)), moved, 0.0) / grid


def _growth(step: Step, u: float) -> float:
    return float((step(np.array([u]))[0] - u) / u)


def _derivative(step: Step, u: float) -> float:
    """``du'/du`` (= F'(rho) at a fixed point): central differences, Richardson-extrapolated (error ~1e-12)."""
    h = 1e-3 * max(1.0, abs(u))
    far_lo, near_lo, near_hi, far_hi = step(u + h * np.array([-1.0, -0.5, 0.5, 1.0]))
    return float((4 * (near_hi - near_lo) / h - (far_hi - far_lo) / (2 * h)) / 3)


def _fixed_points(step: Step, b: float) -> list[tuple[float, float, bool]]:
    grid, growth = _scan(step, b)
    roots = [0.0]
    for i in np.nonzero(growth[:-1] * growth[1:] < 0)[0]:
        if not grid[i] < 0 < grid[i + 1]:  # a change across rho = 1 means F'(1) = 1 (relu, B = inf): no new root
            roots.append(brentq(lambda x: _growth(step, x), grid[i], grid[i + 1], xtol=1e-13, rtol=1e-13))
    points = sorted((float(_rho(b, np.array(r))) if r else 1.0, _derivative(step, r)) for r in roots)
    return [(r, d, abs(d) < 1 - MARGINAL) for r, d in points]


def _has_extra_fixed_point(step: Step, b: float) -> bool:
    """Whether ``(u' - u) / u`` reaches 0: its maximum on a coarse grid, refined by Brent's method around it."""
    grid, growth = _scan(step, b, spacing=0.3)
    i = int(np.argmax(growth))
    if growth[i] >= 0:
        return True
    bounds = (grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)])
    return -minimize_scalar(lambda x: -_growth(step, x), bounds=bounds, method="bounded").fun >= 0


_CRITICAL_CACHE: dict[tuple, int | None] = {}


def _critical_batch_size(phi: Nonlinearity) -> int | None:
    """Bisection over B in [4, MAX_CRITICAL_BATCH] on the existence of a fixed point besides rho = 1; cached for
    registered names and expressions (a callable is recomputed: its identity is not a key)."""
    key = (phi.source[:2], tuple(sorted(phi.params.items()))) if phi.source[0] != "callable" else None
    if key in _CRITICAL_CACHE:
        return _CRITICAL_CACHE[key]

    def extra(b: int) -> bool:
        return _has_extra_fixed_point(_reduced_map(phi, b)[0], b)

    found = None
    if extra(MAX_CRITICAL_BATCH):
        lo, hi = 3, MAX_CRITICAL_BATCH  # none at lo (B = 3 is outside the theory), one at hi
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if extra(mid) else (mid, hi)
        found = hi
    if key is not None:
        _CRITICAL_CACHE[key] = found
    return found


__all__ = ["OutlierResult", "outlier_state", "outlier_state_resolved"]
