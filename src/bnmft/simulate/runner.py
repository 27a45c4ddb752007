"""One run skeleton for every simulated family (MLP, residual, conv): chunks of networks, the memory check, the seed,
progress, the log-space gradient bookkeeping, the statistics across networks and the tidy per-layer table.

A family (:class:`Family`) says what one network costs and how to build and run a chunk of K networks; it returns
per-network measurements: a dataclass whose tensor fields have the networks along dim 0 (fields may be None), or a
list of such (e.g. one per batch size). :func:`run_family` does the rest:

* refuses, before any work, a network that needs more memory than the machine has available now
  (:func:`bnmft.options.check_memory`, naming the family's size argument);
* runs ``networks`` networks in chunks of at most ``chunk`` (and at most ``MAX_ELEMENTS`` kept values), all drawn
  from one ``torch.Generator`` seeded with ``seed``, in order: the chunks consume the generator one after the
  other, so a run of K networks starts with the networks of a run of fewer (same seed, same chunk);
* reports the number of networks finished after each chunk;
* concatenates the chunks' measurements along the network dimension.

A new family (say GroupNorm networks) is one module: its network's forward and backward on a chunk, and its
estimates from :func:`mean_se`, :func:`growth_rates` and :func:`tidy_rows`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import numpy as np
import torch

from ..options import check_memory

#: cap on the values kept per chunk (activations kept for backprop, in a family's own count per network)
MAX_ELEMENTS = 150_000_000

M = TypeVar("M")
M_co = TypeVar("M_co", covariant=True)


class Family(Protocol[M_co]):
    """What the runner needs from a family of networks (a dataclass with these fields will do)."""

    @property
    def size_argument(self) -> str:
        """The argument the memory check names (``"width"``, ``"channels"``)."""
        ...

    @property
    def what(self) -> str:
        """One network, in words, for the memory check's message."""
        ...

    @property
    def network_values(self) -> int:
        """Values one network keeps alive (a chunk holds at most ``MAX_ELEMENTS`` of them)."""
        ...

    @property
    def network_bytes(self) -> int:
        """The memory one network needs at least (checked against the memory available)."""
        ...

    def run_chunk(self, k: int, gen: torch.Generator) -> M_co:
        """Build and run K networks (weights, inputs and noise drawn from ``gen``) -> per-network measurements."""
        ...


def run_family(
    family: Family[M],
    *,
    networks: int,
    chunk: int,
    seed: int,
    device: str,
    progress: Callable[[int], None] | None = None,
) -> M:
    """Run ``networks`` networks of ``family`` (module docstring); input already checked by the caller.

    Returns:
        The chunks' measurements concatenated along dim 0 (networks first), in the family's own type.

    Raises an :class:`~bnmft.errors.InputError` naming ``family.size_argument`` when one network needs more memory
    than is available.
    """
    check_memory(family.network_bytes, family.what, family.size_argument)
    size = max(1, min(chunk, MAX_ELEMENTS // max(1, family.network_values)))
    gen = torch.Generator(device=torch.device(device)).manual_seed(seed)
    parts: list[M] = []
    done = 0
    for first in range(0, networks, size):
        k = min(size, networks - first)
        parts.append(family.run_chunk(k, gen))
        done += k
        if progress is not None:
            progress(done)
    return concat(parts)


def concat(parts: Sequence[Any]) -> Any:
    """Chunks' measurements -> one: dataclasses field by field (tensors concatenated along dim 0, None kept),
    lists and tuples element by element."""
    first = parts[0]
    if isinstance(first, list | tuple):
        return type(first)(concat([p[i] for p in parts]) for i in range(len(first)))
    if dataclasses.is_dataclass(first) and not isinstance(first, type):
        values = {}
        for f in dataclasses.fields(first):
            items = [getattr(p, f.name) for p in parts]
            values[f.name] = None if items[0] is None else torch.cat(items, dim=0)
        return type(first)(**values)
    raise TypeError(f"cannot concatenate measurements of type {type(first).__name__}")


def mean_se(values: np.ndarray | torch.Tensor) -> tuple[Any, Any]:
    """Mean and standard error across networks (axis 0; ``std(ddof=1) / sqrt(K)``, infinite for one network):
    floats for a vector of K values, arrays for a (K, n) table."""
    values = np.asarray(values, dtype=float)
    k = values.shape[0]
    mean = values.mean(axis=0)
    se = values.std(axis=0, ddof=1) / math.sqrt(k) if k > 1 else np.full(values.shape[1:], math.inf)
    if values.ndim == 1:
        return float(mean), float(se)
    return mean, se


def growth_rates(log_norms: torch.Tensor, start: int, stop: int) -> np.ndarray:
    """Per network, the mean over layers [start, stop - 1) of the backward growth factor
    ``exp(log_norms[l] - log_norms[l + 1])``; ``log_norms`` (K, L)."""
    y = log_norms[:, start:stop].numpy()
    return np.exp(y[:, :-1] - y[:, 1:]).mean(axis=1)


def slope_rates(log_norms: torch.Tensor, start: int, stop: int) -> np.ndarray:
    """Per network, ``exp(-slope)`` of the least-squares line through log_norms[:, start:stop] vs layer."""
    y = log_norms[:, start:stop].numpy()
    layers = np.arange(start, stop, dtype=float)
    lc = layers - layers.mean()
    slope = (y - y.mean(axis=1, keepdims=True)) @ lc / (lc @ lc)
    return np.exp(-slope)


def window_mean(values: torch.Tensor, start: int, stop: int) -> np.ndarray:
    """Per network, the mean of a (K, L) measurement over layers [start, stop)."""
    return values[:, start:stop].mean(dim=1).numpy()


def track_log_norms(
    tensors: Sequence[torch.Tensor],
    k: int,
    *,
    view: Callable[[torch.Tensor], torch.Tensor] = lambda g: g,
    network_dim: int = 0,
) -> torch.Tensor:
    """Hooks for the log-space gradient bookkeeping: each tensor's gradient, seen through ``view`` with the K
    networks along ``network_dim``, has its per-network squared norm recorded (log, float64) and is rescaled to norm
    1 before it travels further down, so gradients never overflow or underflow whatever the depth.

    Returns:
        ``logs`` (len(tensors), K), filled in by the backward pass; :func:`true_log_norms` turns it into the true
        log squared norms.
    """
    logs = torch.zeros(len(tensors), k, dtype=torch.float64)

    def make_hook(i: int):
        def hook(grad: torch.Tensor) -> torch.Tensor:
            g = view(grad)
            sq = g.pow(2).sum(dim=tuple(d for d in range(g.dim()) if d != network_dim), dtype=torch.float64)
            logs[i] = torch.log(sq).cpu()
            shape = [1] * g.dim()
            shape[network_dim] = k
            return (g * torch.rsqrt(sq).clamp(max=1e300).to(grad.dtype).reshape(shape)).reshape(grad.shape)

        return hook

    for i, t in enumerate(tensors):
        t.register_hook(make_hook(i))
    return logs


def true_log_norms(logs: torch.Tensor) -> torch.Tensor:
    """The recorded logs (L, K), bottom layer first -> the true log squared norms (K, L): the gradient reaching
    layer l was divided by the norms of all layers above, so their logs are added back (a suffix sum)."""
    return torch.flip(torch.cumsum(torch.flip(logs, [0]), 0), [0]).T.contiguous()


def tidy_rows(
    settings: dict,
    columns: dict[str, torch.Tensor | None],
    *,
    index: str,
    first: int,
    per_index: Callable[[int], dict] | None = None,
) -> list[dict]:
    """Tidy table: one dict per (network, layer or block), every setting in its columns.

    Args:
        settings: the columns common to every row.
        columns: name -> (K, L) measurement (None: column left out).
        index: the name of the layer column (``"layer"``, ``"block"``); numbered from ``first``.
        per_index: extra columns of layer i (0-based), placed before the measurements.
    """
    present = {name: col.tolist() for name, col in columns.items() if col is not None}
    k, n = next(iter(c for c in columns.values() if c is not None)).shape
    out = []
    for net in range(k):
        for i in range(n):
            row = dict(settings, network=net, **{index: i + first})
            if per_index is not None:
                row.update(per_index(i))
            row.update({name: float(col[net][i]) for name, col in present.items()})
            out.append(row)
    return out
