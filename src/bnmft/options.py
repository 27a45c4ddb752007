"""Validation of the options every layer of bnmft shares: one check each, used by the theory, the simulator,
training and the CLI (whose argument types call these functions), so that one bad value gets one message.

Every check raises :class:`~bnmft.errors.InputError` naming the argument and what is allowed.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from .errors import InputError

#: the smallest batch size of the mean-field theory (B = 3 has an infinite gradient rate, B = 2 zero gradients)
MIN_BATCH = 4
#: the largest finite batch size: beyond it double precision cannot resolve the O(1/B) terms (lambda_L = 1 - O(1/B),
#: c* = O(1/B)); B = inf is the limit
MAX_BATCH = 10**9


def check_real(name: str, value: Any, *, minimum: float | None = None, positive: bool = False) -> float:
    """A finite real number (not a bool), optionally ``>= minimum`` or ``> 0``; returned as float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(f"{name} must be a finite number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise InputError(f"{name} must be a finite number, got {value!r}")
    if minimum is not None and v < minimum:
        raise InputError(f"{name} must be >= {minimum:g}, got {value!r}")
    if positive and v <= 0:
        raise InputError(f"{name} must be > 0, got {value!r}")
    return v


def check_int(name: str, value: Any, minimum: int = 1) -> int:
    """An integer (not a bool) ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


#: the shared options of batch norm and the weights, and what each allows (keyword arguments of check_real)
BN_OPTIONS: dict[str, dict[str, Any]] = {
    "eps": {"minimum": 0.0},
    "sigma_w": {"positive": True},
    "gamma": {},
    "beta": {},
}


def check_bn_option(name: str, value: Any) -> float:
    """One of :data:`BN_OPTIONS`: BN's eps (finite, >= 0), the weight scale sigma_w (finite, > 0), BN's gamma and
    beta (finite)."""
    return check_real(name, value, **BN_OPTIONS[name])


def check_bn_options(
    *, eps: Any = 0.0, sigma_w: Any = 1.0, gamma: Any = 1.0, beta: Any = 0.0
) -> tuple[float, float, float, float]:
    """All of :data:`BN_OPTIONS` at once (theory, simulator, training).

    Returns:
        ``(eps, sigma_w, gamma, beta)`` as floats.
    """
    return (
        check_bn_option("eps", eps),
        check_bn_option("sigma_w", sigma_w),
        check_bn_option("gamma", gamma),
        check_bn_option("beta", beta),
    )


def check_batch_size(batch_size: Any) -> float:
    """Validate B: an integer >= 4 or infinity (``math.inf`` or the string ``"inf"``); returns int or inf."""
    if isinstance(batch_size, str):
        text = batch_size.strip().lower()
        if text in ("inf", "infinity"):
            return math.inf
        try:
            batch_size = int(text)
        except ValueError:
            raise InputError(f"batch_size must be an integer >= {MIN_BATCH} or 'inf', got {batch_size!r}") from None
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Real):
        raise InputError(f"batch_size must be an integer >= {MIN_BATCH} or inf, got {batch_size!r}")
    too_big = InputError(
        f"batch_size must be <= {MAX_BATCH:.0e} or 'inf', got {str(batch_size)[:30]}: beyond it double precision "
        "cannot resolve the O(1/B) terms of the theory; use 'inf' for the large-batch limit"
    )
    if isinstance(batch_size, numbers.Integral) and int(batch_size) > MAX_BATCH:
        raise too_big  # before float(): a huge int does not fit a float
    value = float(batch_size)
    if math.isnan(value):
        raise InputError("batch_size must be an integer >= 4 or inf, got nan")
    if math.isinf(value):
        if value < 0:
            raise InputError("batch_size must be an integer >= 4 or +inf, got -inf")
        return math.inf
    if not value.is_integer():
        raise InputError(
            f"batch_size must be an integer (the number of examples BN normalises together), got {batch_size!r}"
        )
    if value < MIN_BATCH:
        why = {
            2: "with B = 2 batch norm outputs +-1 whatever the input, so every gradient is exactly zero",
            3: "with B = 3 the mean-field gradient rate is infinite (E[1/||Gh||^2] diverges for a chi^2 with "
            "2 degrees of freedom)",
        }.get(int(value), "batch norm needs at least 2 examples, and the theory at least 4")
        raise InputError(f"batch_size must be >= {MIN_BATCH}, got {int(value)}: {why}")
    if value > MAX_BATCH:
        raise too_big
    return int(value)


__all__ = [
    "BN_OPTIONS",
    "MAX_BATCH",
    "MIN_BATCH",
    "check_batch_size",
    "check_bn_option",
    "check_bn_options",
    "check_int",
    "check_real",
]
