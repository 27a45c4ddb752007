"""Spherical moments of phi: every eps = 0 quantity reduces to these (docs/theory.md sections 2-5).

For finite B, x is uniform on the sphere of radius sqrt(B) in im G (see :mod:`.quadrature`); for
``B = inf``, x_1 and x_2 are independent standard Gaussians. With ``d = phi'``:

=============  ===========================================
``mean``       E[phi(x_1)]
``second``     E[phi(x_1)^2]                      (= q*)
``cross``      E[phi(x_1) phi(x_2)]                (= q* c*)
``mu``         E[(phi(x_1) - phi(x_2))^2] / 2      (= mu* = q* (1 - c*), without cancellation)
``d2``         E[d(x_1)^2]
``dd``         E[d(x_1) d(x_2)]
``xd``         E[(x_1 d(x_1) - x_2 d(x_2))^2] / 2
``x2d2``       E[x_1^2 d(x_1)^2]                   (residual blocks: the batch-mean part of the gradient)
``xphi``       E[x_1 phi(x_1)]
``m_pair``     E[c_1 c_2 g], c = phi - E[phi], g of docs/theory.md 5.3 (lambda_M); finite B only
``l_one``      E[c_1^2 (x_1^2 - 1)]       (lambda_L, below); finite B only
``l_pair``     E[c_1 c_2 (x_1^2 - 1)]     (lambda_L); finite B only
=============  ===========================================

lambda_L's integrand needs the batch mean of phi; by exchangeability and the conditioning trick (docs/theory.md 2.4)
(``E[x_2^2 | x_1] = (B - x_1^2)/(B-1)``, ``E[x_2^2 | x_1, x_3] = (B - x_1^2 - x_3^2)/(B-2)``) it reduces (ours) to
``T = 2 (1 - 2/B) B/(B-1) l_one - 4 l_pair`` and ``lambda_L = (B-1) T / (4 mu* (B-2))``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..nonlinearity import Nonlinearity, PhiSpec, resolve
from ..options import check_batch_size
from .quadrature import (
    ACCEPT_TOL,
    MAX_PANELS,
    REL_TOL,
    TAIL,
    GaussRule,
    SphereRule,
    Support,
    joint_ratio,
    scan_grid,
    tensor_rule_applies,
)

_KINK_PROBE = (1e-5, 1e-8)


@dataclass(frozen=True)
class SphericalMoments:
    """One- and two-coordinate moments of phi under the batch law (see the module docstring)."""

    batch_size: float
    mean: float
    second: float
    cross: float
    mu: float
    d2: float
    dd: float
    xd: float
    xphi: float
    panels: int
    error: float
    x2d2: float = 0.0
    m_pair: float | None = None
    l_one: float | None = None
    l_pair: float | None = None


def _evaluate(phi: Nonlinearity, x: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(all="ignore"):
        f, d = phi(x), phi.derivative(x)
    bad = ~(np.isfinite(f) & np.isfinite(d))
    if phi.kinks and np.any(bad):  # phi' need not exist exactly at a kink (a set of measure zero)
        at_kink = np.min(np.abs(np.asarray(x)[..., None] - np.asarray(phi.kinks)), axis=-1) < 1e-9
        f, d = np.where(at_kink, 0.0, f), np.where(at_kink, 0.0, d)
        bad &= ~at_kink
    if np.any(bad):
        i = np.flatnonzero(bad)[0]
        z, fz, dz = float(np.asarray(x).flat[i]), float(f.flat[i]), float(d.flat[i])
        overflow = not (math.isnan(fz) or math.isnan(dz))
        detail = "overflows" if overflow else "is not a number"
        advice = (
            "; its Gaussian moments diverge, so the large-batch limit B = inf is not defined (use a finite batch_size)"
            if overflow and "B = inf" in what
            else "; phi must be finite, with finite moments"
        )
        raise InputError(f"phi={phi.name!r} (or its derivative) {detail} (not finite) at z = {z:.6g}, {what}{advice}")
    return f, d


def find_support(phi: Nonlinearity, batch_size: float, *, check_derivative: bool = True) -> Support:
    """Truncate the x range where ``density * (1 + phi^2 + phi'^2 (1 + x^2))`` is below TAIL of its max.

    Raises:
        InputError: phi not finite on the support, discontinuous or with a non-square-integrable derivative
            at a kink, or (B = inf) moments that diverge.
    """
    x, log_density = scan_grid(batch_size)
    where = (
        "inside the support of the Gaussian limit (B = inf)"
        if math.isinf(batch_size)
        else f"inside the support |z| <= sqrt(B-1) = {math.sqrt(batch_size - 1):.4g} of the batch law"
    )
    f, d = _evaluate(phi, x, where)
    with np.errstate(divide="ignore"):
        log_g = log_density + np.logaddexp(
            0.0, np.logaddexp(2 * np.log(np.abs(f)), 2 * np.log(np.abs(d)) + np.log1p(x * x))
        )
    keep = np.nonzero(log_g > log_g.max() + math.log(TAIL))[0]
    first, last = keep[0], keep[-1]
    if math.isinf(batch_size) and (first == 0 or last == len(x) - 1):
        raise InputError(
            f"phi={phi.name!r}: its Gaussian moments E[phi(z)^2] or E[phi'(z)^2] diverge (the integrand does "
            "not decay by |z| = 40), so the large-batch limit B = inf is not defined; use a finite batch_size"
        )
    xlo, xhi = x[max(first - 1, 0)], x[min(last + 1, len(x) - 1)]
    kinks = tuple(k for k in phi.kinks if xlo < k < xhi)
    _check_kinks(phi, kinks, check_derivative)
    return Support(float(xlo), float(xhi), kinks, phi.kink_grading)


def _check_kinks(phi: Nonlinearity, kinks: tuple[float, ...], check_derivative: bool = True) -> None:
    """phi must be continuous and phi'^2 integrable at each kink (the theory uses Stein's lemma)."""
    for k in kinks:
        small, tiny = _KINK_PROBE
        probe = k + np.array([-small, small, -tiny, tiny]) * max(1.0, abs(k))
        f, d = _evaluate(phi, probe, f"next to its kink at z = {k:.6g}")
        scale = max(1.0, float(np.max(np.abs(f))))
        jump_near, jump_far = abs(f[3] - f[2]), abs(f[1] - f[0])
        if jump_near > 1e-6 * scale and jump_near > 0.5 * jump_far:  # a jump does not shrink as z -> k
            raise InputError(
                f"phi={phi.name!r} jumps at z = {k:.6g} ({f[2]:.6g} -> {f[3]:.6g}); the mean field theory "
                "needs a continuous phi"
            )
        for near, far in ((d[2], d[0]), (d[3], d[1])) if check_derivative else ():
            if abs(near) > 1e-300 and abs(far) > 1e-300:
                power = math.log(near * near / (far * far)) / math.log(small / tiny)
                if power >= 1 - 1e-6:
                    raise InputError(
                        f"phi={phi.name!r}: phi'(z)^2 is not integrable at z = {k:.6g} (it grows like "
                        f"|z - {k:.6g}|^-{power:.3g}), so the gradient rate lambda_G is infinite"
                    )


#: what :func:`_one_moments` returns, for messages
_ONE_MOMENTS = ("E[phi]", "E[phi^2]", "E[phi'^2]", "E[z^2 phi'^2]")


def _one_moments(x: np.ndarray, w: np.ndarray, f: np.ndarray, d: np.ndarray) -> np.ndarray:
    return np.array([w @ f, w @ (f * f), w @ (d * d), w @ (x * x * d * d)])


def _relative_change(a: np.ndarray, b: np.ndarray, with_derivative: bool) -> float:
    """Largest relative change of the one-coordinate moments; E[phi] on the scale of sqrt(E[phi^2])."""
    scale = np.abs(b)
    scale[0] = max(scale[0], math.sqrt(abs(b[1])))
    change = np.abs(a - b) / np.maximum(scale, 1e-300)
    return float(np.max(change if with_derivative else change[:2]))


def panel_counts(width: float) -> list[int]:
    """The panel counts tried, coarsest first: three quarters of a panel per unit of x (enough for many analytic
    phi; the two-coordinate rule costs the square), then one per unit, doubled up to MAX_PANELS."""
    base = max(4, math.ceil(width))
    counts = sorted({max(4, math.ceil(width * 0.75))} - {base})
    while base <= MAX_PANELS // 2:
        counts.append(base)
        base *= 2
    return counts


def spherical_moments(
    phi: PhiSpec,
    batch_size: float,
    *,
    with_derivative: bool = True,
    gamma: float = 1.0,
    beta: float = 0.0,
    derivative: Callable[[np.ndarray], np.ndarray] | None = None,
    kinks: tuple[float, ...] = (),
    **params: float,
) -> SphericalMoments:
    """Moments of ``phi(gamma z + beta)`` under the batch law of size ``batch_size`` (an int >= 4, or ``math.inf``).

    Quadrature: see :mod:`.quadrature` (composite Gauss-Legendre in the sphere angles, kinks on panel
    boundaries). The rule used has the fewest panels of :func:`panel_counts` whose one-coordinate moments agree
    with the rule of twice as many panels to 1e-13 (at most MAX_PANELS); ``error`` is that relative change, an
    estimate of the relative error of the rule used.
    With ``with_derivative=False`` the moments of phi' (d2, dd, xd) are still returned but not used to judge
    convergence (for callers that take the backward quantities from a closed form).

    Args:
        phi, gamma, beta, derivative, kinks, **params: the nonlinearity, as for :func:`bnmft.theory`.

    Raises:
        InputError: a bad batch size or phi; see :func:`find_support`; or no convergence to ACCEPT_TOL (1e-7)
            with MAX_PANELS panels.
    """
    b = check_batch_size(batch_size)
    _, effective = resolve(phi, gamma=gamma, beta=beta, derivative=derivative, kinks=kinks, **params)
    return spherical_moments_resolved(effective, b, with_derivative=with_derivative)


def _overflow(phi: Nonlinearity, batch_size: float, what: str) -> InputError:
    """The error for moments that leave double precision, naming phi's parameters and BN's gamma and beta when set."""
    bn = {k: phi.params[k] for k, v in (("gamma", 1.0), ("beta", 0.0)) if phi.params.get(k, v) != v}
    given = "".join(f", {k}={v:g}" for k, v in {**phi.parameters, **bn}.items())
    return InputError(
        f"phi={phi.name!r}, batch_size={batch_size:g}{given}: the theory's numbers overflow double precision ({what} "
        "is not finite); use settings closer to the defaults"
    )


def spherical_moments_resolved(
    phi: Nonlinearity, batch_size: float, *, with_derivative: bool = True
) -> SphericalMoments:
    """The kernel of :func:`spherical_moments`: phi resolved (gamma, beta included), B checked.

    Raises:
        InputError: as :func:`spherical_moments`; moments that overflow double precision (``beta=1e200``).
    """
    # overflow and invalid values are detected (every moment is checked finite), not printed as warnings
    with np.errstate(over="ignore", invalid="ignore"):
        moments = _spherical_moments(phi, batch_size, with_derivative)
    bad = [k for k, v in vars(moments).items() if k != "batch_size" and isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise _overflow(phi, batch_size, f"the moment {bad[0]!r}")
    return moments


def _spherical_moments(phi: Nonlinearity, batch_size: float, with_derivative: bool) -> SphericalMoments:
    support = find_support(phi, batch_size, check_derivative=with_derivative)
    make = (
        (lambda p: GaussRule(support, p))
        if math.isinf(batch_size)
        else (lambda p: SphereRule(int(batch_size), support, p))
    )
    cache: dict[int, tuple] = {}

    def moments_with(p: int) -> tuple:
        if p not in cache:
            r = make(p)
            xp, wp = r.one()
            fp, dp = _evaluate(phi, xp, "at a quadrature node")
            one = _one_moments(xp, wp, fp, dp)
            if not np.all(np.isfinite(one)):  # phi is finite, but phi^2 or phi'^2 is not: stop before refining
                raise _overflow(phi, batch_size, _ONE_MOMENTS[int(np.argmin(np.isfinite(one)))])
            cache[p] = (r, xp, wp, fp, dp, one)
        return cache[p]

    for panels in panel_counts(support.xhi - support.xlo):
        rule, x, w, f, d, current = moments_with(panels)
        refined = moments_with(2 * panels)[-1]
        error = _relative_change(current, refined, with_derivative)
        if error <= REL_TOL:
            break
    if error > ACCEPT_TOL:
        raise InputError(
            f"phi={phi.name!r}: the quadrature did not converge (relative change {error:.2g} with "
            f"{MAX_PANELS} panels, B = {batch_size}); phi varies too fast or is not piecewise analytic"
        )
    mean, second, d2, x2d2 = refined
    centred = f - mean
    xphi = float(w @ (x * f))

    if math.isinf(batch_size):
        dmean = float(w @ d)
        xdm = float(w @ (x * d))
        return SphericalMoments(
            batch_size=batch_size,
            mean=float(mean),
            second=float(second),
            cross=float(mean) ** 2,
            mu=float(w @ (centred * centred)),
            d2=float(d2),
            dd=dmean**2,
            xd=float(w @ (x * x * d * d)) - xdm**2,
            xphi=xphi,
            x2d2=float(x2d2),
            panels=panels,
            error=error,
        )

    b = int(batch_size)
    if tensor_rule_applies(b, support):
        pairs = _tensor_pairs(b, x, w, f, d, mean)
    else:
        pairs = _angle_pairs(rule, phi, x, w, f, d, mean)
    return SphericalMoments(
        batch_size=batch_size,
        mean=float(mean),
        second=float(second),
        d2=float(d2),
        xphi=xphi,
        x2d2=float(x2d2),
        l_one=float(w @ (centred * centred * (x * x - 1))),
        panels=panels,
        error=error,
        **pairs,
    )


def _g_coefficients(x1: np.ndarray, b: int) -> tuple[np.ndarray, np.ndarray, float]:
    """g of docs/theory.md section 5.3 (lambda_M) as a polynomial in x_2: ``g = A(x_1) + Bc(x_1) x_2 + C x_2^2``."""
    m = b - 2
    k = m * (m - 1)
    return x1 * x1 / m + (2 * x1 * x1 - b) / k, x1 * (1 + 2 / m + 2 / k), 1 / m + 2 / k


def _angle_pairs(rule: SphereRule, phi: Nonlinearity, x, w, f, d, mean: float) -> dict[str, float]:
    """Two-coordinate moments on the angle rule (any B): x_2's nodes depend on x_1 (:meth:`SphereRule.two`)."""
    x1, x2, w12 = rule.two((x, w))
    f2, d2 = _evaluate(phi, x2, "at a quadrature node")
    x1, c1 = x1[:, 0], f - mean
    # differences stay two-dimensional (no cancellation when phi_1 ~ phi_2, docs/theory.md section 6's mu*)
    diff = f[:, None] - f2
    xd_diff = (x1 * d)[:, None] - x2 * d2
    # the rest is a row factor times an x_2 integral: contract each row once
    wc2 = w12 * (f2 - mean)
    s_c2, s_c2x, s_c2xx = wc2.sum(axis=1), np.einsum("ij,ij->i", wc2, x2), np.einsum("ij,ij,ij->i", wc2, x2, x2)
    g_a, g_b, g_c = _g_coefficients(x1, rule.batch_size)
    return {
        "cross": float(f @ np.einsum("ij,ij->i", w12, f2)),
        "mu": 0.5 * float(np.einsum("ij,ij,ij->", w12, diff, diff)),
        "dd": float(d @ np.einsum("ij,ij->i", w12, d2)),
        "xd": 0.5 * float(np.einsum("ij,ij,ij->", w12, xd_diff, xd_diff)),
        "m_pair": float(c1 @ (g_a * s_c2 + g_b * s_c2x + g_c * s_c2xx)),
        "l_pair": float((c1 * (x1 * x1 - 1)) @ s_c2),
    }


def _tensor_pairs(b: int, x, w, f, d, mean: float) -> dict[str, float]:
    """Two-coordinate moments on the tensor grid (large B, :func:`.quadrature.joint_ratio`): phi is evaluated once
    per node and every moment is one matrix product. mu* and the xd term are written as ``E[e_1^2] - E[e_1 e_2]``
    with e centred, whose second term is O(1/B) of the first (no cancellation)."""
    ratio = joint_ratio(b, x)
    c = f - mean
    cx = c * x
    columns = np.stack([np.ones_like(x), f, d, c, cx, cx * x, x * d], axis=1)
    products = w[:, None] * (ratio @ (w[:, None] * columns))  # (W @ v) for each column v, unnormalised
    total = float(products[:, 0].sum())
    products /= total
    marginal = products[:, 0]
    w_f, w_d, w_c, w_cx, w_cxx, w_e = products[:, 1:].T
    e = x * d - marginal @ (x * d)
    w_e = w_e - (marginal @ (x * d)) * marginal  # W @ e for the centred e
    g_a, g_b, g_c = _g_coefficients(x, b)
    return {
        "cross": float(f @ w_f),
        "mu": float(marginal @ (c * c) - c @ w_c),
        "dd": float(d @ w_d),
        "xd": float(marginal @ (e * e) - e @ w_e),
        "m_pair": float(c @ (g_a * w_c + g_b * w_cx + g_c * w_cxx)),
        "l_pair": float((c * (x * x - 1)) @ w_c),
    }
