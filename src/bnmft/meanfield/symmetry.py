"""Symmetry breaking for alpha_relu (``max(z, 0)^alpha``): the alpha at which BSB1 stops being attracting.

As alpha grows, the forward eigenvalue ``lambda_L`` (perturbations of the examples' norms; docs/theory.md section 5)
increases and crosses 1: beyond that, a batch drifts away from BSB1 toward block-structured "BSB2" Gram
matrices where a few examples dominate (the paper's Fig 1c/d). We find the crossing of
``max(lambda_L, lambda_M) = 1`` by Brent's method on alpha (tolerance 1e-9), with lambda_L and lambda_M from
the quadrature path (relative accuracy ~1e-10 for alpha >= 3/4). ``max`` is below 1 at alpha = 1 (relu) for
every finite B, and lambda_L increases with alpha; the threshold falls from about 4 at B = 5 toward 1 as B
grows (numerically lambda_L -> alpha at large B).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import brentq

from ..errors import InputError
from ..nonlinearity import Nonlinearity, PhiSpec, get_nonlinearity, resolve
from ..options import check_batch_size
from .api import check_theory_input, theory_resolved

#: the parameters :func:`symmetry_breaking` can vary on any phi (BN's scale and shift)
BN_PARAMETERS = ("gamma", "beta")


@dataclass(frozen=True)
class SymmetryBreaking:
    """Where BSB1 stops being attracting as one parameter of phi grows.

    Attributes:
        batch_size: B.
        critical: the parameter value where ``max(lambda_L, lambda_M) = 1`` (``inf`` if none in the bracket).
        eigenvalue: which one crosses (``"lambda_L"`` or ``"lambda_M"``), None if none does.
        bracket: the searched interval ``(low, high)``; BSB1 is attracting at ``low``.
        phi, parameter, params: the nonlinearity, the varied parameter and the fixed ones.
    """

    batch_size: int
    critical: float
    eigenvalue: str | None
    bracket: tuple[float, float]
    phi: str = "alpha_relu"
    parameter: str = "alpha"
    params: dict = field(default_factory=dict)

    @property
    def alpha_star(self) -> float:
        """alpha_relu's name for :attr:`critical`."""
        return self.critical

    @property
    def alpha_max(self) -> float:
        """The upper end of the bracket."""
        return self.bracket[1]

    def to_dict(self) -> dict:
        return {
            "batch_size": self.batch_size,
            "phi": self.phi,
            "parameter": self.parameter,
            "alpha_star": "inf" if math.isinf(self.critical) else self.critical,
            "eigenvalue": self.eigenvalue,
            "alpha_max": self.alpha_max,
        }


def symmetry_breaking(
    phi: str | Nonlinearity | Callable[[np.ndarray], np.ndarray],
    batch_size: int,
    *,
    parameter: str,
    bracket: tuple[float, float],
    **params: float,
) -> SymmetryBreaking:
    """The value of one parameter of phi at which BSB1 stops being attracting (``max(lambda_L, lambda_M) = 1``).

    Args:
        phi: any phi specification :func:`bnmft.theory` takes (name, expression, Nonlinearity, callable).
        batch_size: B, a finite integer >= 4.
        parameter: ``"gamma"`` or ``"beta"`` (any phi), or a parameter of a registered phi (``alpha`` of
            alpha_relu and elu, ``slope`` of leaky_relu).
        bracket: ``(low, high)`` with BSB1 attracting at ``low``; Brent's method (xtol 1e-9) finds the crossing.
        **params: the other, fixed parameters (and gamma, beta unless varied).

    Returns:
        :class:`SymmetryBreaking`; ``critical = inf`` when BSB1 is still attracting at ``high``.

    Raises:
        InputError: B not a finite integer >= 4, a bad bracket, or BSB1 not attracting at ``low``.
    """
    b = _finite_batch(batch_size)
    try:
        low, high = (float(v) for v in bracket)
    except (TypeError, ValueError):
        raise InputError(f"bracket must be two numbers (low, high), got {bracket!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise InputError(f"bracket must be finite with low < high, got {bracket!r}")
    return _symmetry_breaking(phi, b, parameter, low, high, params)


def _finite_batch(batch_size: Any) -> int:
    size = check_batch_size(batch_size)
    if math.isinf(size):
        raise InputError("batch_size must be finite: the forward eigenvalues are defined for finite B")
    return int(size)


def _symmetry_breaking(
    phi: PhiSpec, b: int, parameter: str, low: float, high: float, params: dict[str, Any]
) -> SymmetryBreaking:
    """The kernel of :func:`symmetry_breaking`: B and the bracket checked; phi resolved here, once when gamma or
    beta varies (one base phi), at each value when a parameter of phi itself varies (it changes the function)."""
    fixed = {k: v for k, v in params.items() if v is not None}
    spec = {"derivative": fixed.pop("derivative", None), "kinks": fixed.pop("kinks", ())}
    bn = {k: fixed.pop(k) for k in BN_PARAMETERS if k in fixed}
    base = None if parameter not in BN_PARAMETERS else get_nonlinearity(phi, **spec, **fixed)

    def top(value: float) -> tuple[float, str]:
        _, settings = check_theory_input(b, **{**bn, parameter: value} if base is not None else bn)
        if base is not None:
            here, effective = base, base.affine_input(settings["gamma"], settings["beta"])
        else:
            here, effective = resolve(
                phi, gamma=settings["gamma"], beta=settings["beta"], **spec, **{**fixed, parameter: value}
            )
        r = theory_resolved(here, effective, b, **settings)
        assert r.lambda_L is not None and r.lambda_M is not None  # finite B
        return (r.lambda_L, "lambda_L") if r.lambda_L >= r.lambda_M else (r.lambda_M, "lambda_M")

    name = phi if isinstance(phi, str) else getattr(phi, "name", getattr(phi, "__name__", "callable"))
    if top(low)[0] >= 1.0:
        raise InputError(
            f"bracket: BSB1 is not attracting at {parameter} = {low:g} (B = {b}); the lower end must be stable"
        )
    reported = {k: v for k, v in params.items() if v is not None and k not in ("derivative", "kinks")}
    if top(high)[0] < 1.0:
        return SymmetryBreaking(b, math.inf, None, (low, high), name, parameter, reported)
    star = brentq(lambda v: top(v)[0] - 1.0, low, high, xtol=1e-9, rtol=1e-12)
    return SymmetryBreaking(b, float(star), top(star)[1], (low, high), name, parameter, reported)


def symmetry_breaking_alpha(batch_size: int, *, alpha_max: float = 16.0) -> SymmetryBreaking:
    """The alpha_relu exponent at which BSB1 stops being attracting for batch size B (finite, >= 4): the
    general rule :func:`symmetry_breaking` on ``alpha_relu`` over alpha in (1, alpha_max] (relu, alpha = 1, is
    attracting for every finite B).

    Raises:
        InputError: B not a finite integer >= 4, or alpha_max not in (1, 64].
    """
    if isinstance(alpha_max, bool) or not (isinstance(alpha_max, int | float) and 1.0 < alpha_max <= 64.0):
        raise InputError(f"alpha_max must be a number in (1, 64], got {alpha_max!r}")
    return _symmetry_breaking("alpha_relu", _finite_batch(batch_size), "alpha", 1.0, float(alpha_max), {})
