"""The ``bnmft`` command's argument types: each refuses bad text with a message naming what is allowed (argparse
prefixes the argument), using the library's own checks where there is one."""

from __future__ import annotations

import argparse
import math

from ..errors import InputError
from ..options import check_batch_size, check_bn_option


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def bn_option(name: str):
    """An argparse type for one of the shared options (eps, sigma_w, gamma, beta): the library's own check."""

    def parse(text: str) -> float:
        try:
            return check_bn_option(name, finite_float(text))
        except InputError as err:
            raise argparse.ArgumentTypeError(str(err).removeprefix(f"{name} ")) from None

    parse.__name__ = name  # argparse names the type in its messages
    return parse


def _int_at_least(text: str, low: int, why: str = "") -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be an integer >= {low}{why}, got {text!r}")
    return value


def positive_hours(text: str) -> float:
    """Hours of wall time: a finite number > 0 (e.g. 2.5)."""
    value = finite_float(text)
    if value <= 0 or not math.isfinite(value * 3600):
        raise argparse.ArgumentTypeError(f"must be a number of hours > 0, got {text!r}")
    return value


def positive_int(text: str) -> int:
    return _int_at_least(text, 1)


def sim_batch_size(text: str) -> int:
    return _int_at_least(text, 2, " (batch norm needs two examples)")


def batch_size_arg(text: str):
    try:
        return check_batch_size(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def phi_params(args) -> dict[str, float]:
    """The parameters of the parametric nonlinearities (alpha_relu's alpha, the slope) given on the command line."""
    return {k: v for k, v in (("alpha", args.alpha), ("slope", args.slope)) if v is not None}
