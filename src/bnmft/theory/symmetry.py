"""Symmetry breaking for alpha_relu (``max(z, 0)^alpha``): the alpha at which BSB1 stops being attracting.

As alpha grows, the forward eigenvalue ``lambda_L`` (perturbations of the examples' norms; theory.md section 3)
increases and crosses 1: beyond that, a batch drifts away from BSB1 toward block-structured "BSB2" Gram
matrices where a few examples dominate (the paper's Fig 1c/d). We find the crossing of
``max(lambda_L, lambda_M) = 1`` by Brent's method on alpha (tolerance 1e-9), with lambda_L and lambda_M from
the quadrature path (relative accuracy ~1e-10 for alpha >= 3/4). ``max`` is below 1 at alpha = 1 (relu) for
every finite B, and lambda_L increases with alpha; the threshold falls from about 4 at B = 5 toward 1 as B
grows (numerically lambda_L -> alpha at large B).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy.optimize import brentq

from .api import check_batch_size, theory


@dataclass(frozen=True)
class SymmetryBreaking:
    """``alpha_star``: the alpha where max(lambda_L, lambda_M) = 1 (``inf`` if none below ``alpha_max``);
    ``eigenvalue``: which one crosses (``"lambda_L"`` or ``"lambda_M"``)."""

    batch_size: int
    alpha_star: float
    eigenvalue: str | None
    alpha_max: float

    def to_dict(self) -> dict:
        return {
            "batch_size": self.batch_size,
            "alpha_star": "inf" if math.isinf(self.alpha_star) else self.alpha_star,
            "eigenvalue": self.eigenvalue,
            "alpha_max": self.alpha_max,
        }


def _top(batch_size: int, alpha: float) -> tuple[float, str]:
    r = theory("alpha_relu", batch_size, alpha=alpha)
    return (r.lambda_L, "lambda_L") if r.lambda_L >= r.lambda_M else (r.lambda_M, "lambda_M")


def symmetry_breaking_alpha(batch_size: int, *, alpha_max: float = 16.0) -> SymmetryBreaking:
    """The alpha_relu exponent at which BSB1 stops being attracting for batch size B (finite, >= 4).

    Raises:
        ValueError: B not a finite integer >= 4, or alpha_max not in (1, 64].
    """
    b = check_batch_size(batch_size)
    if math.isinf(b):
        raise ValueError("batch_size must be finite: the forward eigenvalues are defined for finite B")
    if not (isinstance(alpha_max, int | float) and 1.0 < alpha_max <= 64.0):
        raise ValueError(f"alpha_max must be a number in (1, 64], got {alpha_max!r}")
    low = _top(b, 1.0)[0] - 1.0
    high, _which = _top(b, float(alpha_max))
    if low >= 0:  # pragma: no cover - relu is BSB1-stable for every finite B
        return SymmetryBreaking(b, 1.0, "lambda_L", float(alpha_max))
    if high < 1.0:
        return SymmetryBreaking(b, math.inf, None, float(alpha_max))
    star = brentq(lambda a: _top(b, a)[0] - 1.0, 1.0, float(alpha_max), xtol=1e-9, rtol=1e-12)
    return SymmetryBreaking(b, float(star), _top(b, star)[1], float(alpha_max))
