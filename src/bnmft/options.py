"""Validation of the options every layer of bnmft shares: one check each, used by the theory, the simulator,
training and the CLI (whose argument types call these functions), so that one bad value gets one message.

Every check raises :class:`~bnmft.errors.InputError` naming the argument and what is allowed.
"""

from __future__ import annotations

import math
import numbers
import os
import resource
from pathlib import Path
from typing import Any

import numpy as np

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


def check_in_range(name: str, value: float, low: float, high: float, why: str, *, open_low: bool = False) -> float:
    """An already checked real number in ``[low, high]`` (``(low, high]`` with ``open_low``); ``why`` says where the
    limits come from."""
    if not ((value > low if open_low else value >= low) and value <= high):
        interval = f"{'(' if open_low else '['}{low:g}, {high:g}]"
        raise InputError(f"{name} must be in {interval} ({why}), got {value!r}")
    return value


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


def check_real_array(value: Any, name: str) -> np.ndarray:
    """A real numeric array as float64 (complex values are refused, not silently cut to their real part)."""

    if np.iscomplexobj(value):
        raise InputError(f"{name} must be real, got complex values")
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{name} must be a real numeric array") from None
    return array


#: the largest seed (the random generators take seeds below 2^63)
MAX_SEED = 2**63 - 1


def check_seed(value: Any, name: str = "seed") -> int:
    """A seed: an integer in [0, 2^63)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= int(value) <= MAX_SEED:
        raise InputError(f"{name} must be an integer in [0, 2^63), got {str(value)[:40]}")
    return int(value)


def available_memory() -> int:
    """Bytes of memory available now: the machine's (psutil where installed, else the physical memory), and no more
    than this process may still map under ``ulimit -v`` (the soft ``RLIMIT_AS`` less the address space in use)."""
    try:
        import psutil
    except ImportError:  # psutil comes with dask's distributed; without it, the physical memory
        free = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    else:
        free = int(psutil.virtual_memory().available)
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        free = min(free, max(0, soft - _address_space_in_use()))
    return free


def _address_space_in_use() -> int:
    """Bytes of address space this process maps now (what RLIMIT_AS counts): /proc/self/statm's first field; 0
    where there is no /proc (then the soft limit alone bounds the estimate)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[0])
    except (OSError, ValueError, IndexError):  # not Linux: no way to tell without psutil's platform code
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def check_memory(needed: float, what: str, name: str) -> None:
    """Refuse, before allocating, work that needs more than the memory available now."""
    free = available_memory()
    if needed > free:
        raise InputError(
            f"{name}: {what} needs about {needed / 2**30:.3g} GiB of memory, but {free / 2**30:.3g} GiB are "
            "available; use smaller sizes"
        )


#: the figure formats ``--plot`` and ``heatmap --out`` write: matplotlib's, less those needing LaTeX (pgf) or giving
#: raw pixel buffers (raw, rgba)
FIGURE_SUFFIXES = (".png", ".pdf", ".svg", ".svgz", ".jpg", ".jpeg", ".eps", ".ps", ".tif", ".tiff", ".webp")


def check_output_path(path: str | os.PathLike, name: str, *, directory: bool = False, suffix: str = "") -> Path:
    """An output path that can be written, checked before any work starts; missing directories are created here
    (like ``mkdir -p``), so every command writes into them the same way.

    Args:
        path: a file (or, with ``directory``, a directory).
        name: the argument, for the message (e.g. ``"--plot"``).
        suffix: added to a file name without one (what matplotlib would do silently), so the path reported is
            the path written. A figure's (``suffix`` one of :data:`FIGURE_SUFFIXES`) name must end in one of them.

    Returns:
        The path to write, its directory (with ``directory``: itself) created. A figure format matplotlib cannot
        write, a parent that is a file, an existing directory given for a file (or a file for a directory), or an
        unwritable place is an InputError.
    """
    target = Path(path)
    if not str(path).strip():
        raise InputError(f"{name}: give a path, got an empty string")
    if directory:
        if target.exists() and not target.is_dir():
            raise InputError(f"{name}: {str(path)!r} is a file, not a directory")
    else:
        if target.is_dir():
            raise InputError(f"{name}: {str(path)!r} is a directory; give a file name")
        if suffix and not target.suffix and not target.exists():
            target = target.with_suffix(suffix)
        if suffix in FIGURE_SUFFIXES and target.suffix.lower() not in FIGURE_SUFFIXES:
            raise InputError(
                f"{name}: a figure's name must end in one of {', '.join(FIGURE_SUFFIXES)} (the formats matplotlib "
                f"writes), got {str(path)!r}"
            )
    existing = target if target.exists() else target.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() and existing != target:
        raise InputError(f"{name}: cannot write {str(target)!r}: {str(existing)!r} is a file, not a directory")
    if not os.access(existing, os.W_OK):
        raise InputError(f"{name}: cannot write {str(target)!r}: {str(existing)!r} is not writable")
    folder = target if directory else target.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # e.g. under /proc, or a full disk: the user's place, reported as bad input
        raise InputError(f"{name}: cannot create the directory {str(folder)!r}: {err.strerror}") from None
    return target


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
    "FIGURE_SUFFIXES",
    "MAX_BATCH",
    "MAX_SEED",
    "MIN_BATCH",
    "available_memory",
    "check_batch_size",
    "check_bn_option",
    "check_bn_options",
    "check_in_range",
    "check_int",
    "check_memory",
    "check_output_path",
    "check_real",
    "check_real_array",
    "check_seed",
]
