"""How a sweep's cells train together and what that costs: cells that share :data:`BATCH_KEYS` form one batched
model (:func:`group_cells`; :func:`bnmft.experiments.batched.train_batched` trains it), a group's relative cost orders
the schedule (:func:`cell_cost`), and its wall time in seconds is estimated from the cells a store already holds
(:class:`CostModel`: a time-limited run, the hours left). Torch-free.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence

from .config import TrainConfig, layer_counts

#: the fields that cells trained together must share
BATCH_KEYS = (
    "dataset",
    "data_dir",
    "phi",
    "alpha",
    "depth",
    "branch_depth",
    "width",
    "batch_size",
    "optimizer",
    "epochs",
    "train_subset",
    "test_subset",
)
#: at most this many cells in one batched model (memory grows linearly with it)
MAX_MODELS = 16
#: the fields that decide a layer-step's price (besides the layer-steps :func:`cell_cost` counts)
KIND_KEYS = ("optimizer", "batch_size", "ghost_size", "width", "branch_depth", "dataset")


def batch_key(config: dict) -> tuple:
    """The fields a cell must share with the others of its batch."""
    return tuple(config.get(k) for k in BATCH_KEYS)


def group_cells(configs: Sequence[dict], max_models: int = MAX_MODELS) -> list[list[dict]]:
    """Cells grouped by :func:`batch_key` (first-seen order), each group cut into pieces of at most
    ``max_models``."""
    groups: dict[tuple, list[dict]] = {}
    for config in configs:
        groups.setdefault(batch_key(config), []).append(config)
    return [g[i : i + max_models] for g in groups.values() for i in range(0, len(g), max_models)]


def cell_cost(group: list[dict]) -> float:
    """A batched group's relative training cost, for ordering (longest first): layer-steps times ``1 + B / 64`` per
    model (measured on 2 cores at width 384: a layer-step costs 1.1 ms at B = 8 and 3.5 ms at B = 128), times K^0.6
    for K stacked models (a stack of 3 costs about 2 singles), times (width / 384)^2 (assumed: the weight matrix's
    size)."""
    cfg = TrainConfig(**group[0])
    steps = max(1, cfg.epochs * ((cfg.train_subset or 60_000) // cfg.batch_size))  # (None: the whole set, ~60k)
    per_model = sum(layer_counts(cfg)) * steps * (1 + cfg.batch_size / 64) * (cfg.width / 384) ** 2
    return per_model * len(group) ** 0.6


def _kind(config: dict) -> tuple:
    return tuple(config.get(k) for k in KIND_KEYS)


class CostModel:
    """Seconds of wall time a batched group takes, from finished cells: :func:`cell_cost` times a price per unit of
    cost, the median over the finished cells of the same kind (:data:`KIND_KEYS`: optimiser, batch and ghost size,
    width, residual branch depth, data set), else over all finished cells; None before any cell has finished.

    Accuracy (``benchmarks/cost_model.py`` on the budget study's store, 2 workers on 2 cores: each 4x or 16x cell
    predicted from the cells of its kind at smaller budgets): the actual time is 0.84-1.74x the estimate (median per
    kind; all cells: median 1.30, 10-90% 0.99-1.75, one 7x outlier trained beside another job). The price moves
    with the machine's load, so a time-limited run leaves a margin (:data:`bnmft.experiments.sweep.LIMIT_MARGIN`).
    """

    def __init__(self, rows: Iterable[dict] = ()):
        self._prices: dict[tuple, list[float]] = {}
        for row in rows:
            self.add(row["config"], row["result"])

    def add(self, config: dict, result: dict) -> None:
        """Learn from one finished cell (a store row's config and result: ``seconds`` per model, ``batched`` K)."""
        seconds, k = result.get("seconds"), result.get("batched", 1)
        if not isinstance(seconds, int | float) or not seconds > 0 or not isinstance(k, int) or k < 1:
            return  # (a row of another program, or without timing: nothing to learn)
        self._prices.setdefault(_kind(config), []).append(seconds * k / cell_cost([config] * k))

    def seconds(self, group: list[dict]) -> float | None:
        """The estimated wall time of training ``group`` as one batched model (None: nothing measured yet)."""
        prices = self._prices.get(_kind(group[0])) or [p for ps in self._prices.values() for p in ps]
        return statistics.median(prices) * cell_cost(group) if prices else None


__all__ = ["BATCH_KEYS", "KIND_KEYS", "MAX_MODELS", "CostModel", "batch_key", "cell_cost", "group_cells"]
