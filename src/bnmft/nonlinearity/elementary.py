"""The elementary functions of bnmft's nonlinearities, each written once with its exact derivative (numpy).

Both the expression language (:mod:`bnmft._expression`: ``tanh(2*z) + 0.1*z``) and the registry
(:mod:`bnmft.nonlinearity`: ``"tanh"``) take their functions from :data:`ELEMENTARY`; the simulator's
translation is a table with the same names (:mod:`bnmft.simulate`, tested entry by entry against this one).
Functions map a float64 array to an array of the same shape.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import special

ArrayFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Elementary:
    """A function of one argument with its derivative; ``kink``: not differentiable where the argument is 0."""

    value: ArrayFn
    derivative: ArrayFn
    kink: bool = False


def _sigmoid(u: np.ndarray) -> np.ndarray:
    return special.expit(u)


def _sech2(u: np.ndarray) -> np.ndarray:
    t = np.exp(-2 * np.abs(u))  # sech^2 = 4 t / (1 + t)^2, without overflow and accurate in the tails
    return 4 * t / (1 + t) ** 2


def _gelu_derivative(u: np.ndarray) -> np.ndarray:
    return special.ndtr(u) + u * np.exp(-0.5 * u * u) / math.sqrt(2 * math.pi)


def _silu_derivative(u: np.ndarray) -> np.ndarray:
    s = _sigmoid(u)
    return s * (1 + u * _sigmoid(-u))


ELEMENTARY: dict[str, Elementary] = {
    "exp": Elementary(np.exp, np.exp),
    "log": Elementary(np.log, lambda u: 1.0 / u),
    "log1p": Elementary(np.log1p, lambda u: 1.0 / (1.0 + u)),
    "expm1": Elementary(np.expm1, np.exp),
    "sqrt": Elementary(np.sqrt, lambda u: 0.5 / np.sqrt(u)),
    "sin": Elementary(np.sin, np.cos),
    "cos": Elementary(np.cos, lambda u: -np.sin(u)),
    "tan": Elementary(np.tan, lambda u: 1.0 / np.cos(u) ** 2),
    "sinh": Elementary(np.sinh, np.cosh),
    "cosh": Elementary(np.cosh, np.sinh),
    "tanh": Elementary(np.tanh, _sech2),
    "arctan": Elementary(np.arctan, lambda u: 1.0 / (1.0 + u * u)),
    "arcsinh": Elementary(np.arcsinh, lambda u: 1.0 / np.sqrt(1.0 + u * u)),
    "erf": Elementary(special.erf, lambda u: 2.0 / math.sqrt(math.pi) * np.exp(-u * u)),
    "sigmoid": Elementary(_sigmoid, lambda u: _sigmoid(u) * _sigmoid(-u)),
    "softplus": Elementary(lambda u: np.logaddexp(0.0, u), _sigmoid),
    "gelu": Elementary(lambda u: u * special.ndtr(u), _gelu_derivative),
    "silu": Elementary(lambda u: u * _sigmoid(u), _silu_derivative),
    "abs": Elementary(np.abs, np.sign, kink=True),
    "relu": Elementary(lambda u: np.maximum(u, 0.0), lambda u: (u > 0).astype(float), kink=True),
}

#: other spellings accepted in expressions
ALIASES = {"atan": "arctan", "asinh": "arcsinh"}

__all__ = ["ALIASES", "ELEMENTARY", "Elementary"]
