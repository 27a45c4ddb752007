"""The configuration of one training run (one cell of a sweep) and its validation: no torch here, so sweeps can be
declared, checked and read back (heatmaps) in an environment without it."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from ..errors import InputError
from ..nonlinearity import get_nonlinearity
from ..options import check_bn_options, check_int, check_memory, check_real, check_seed
from .data import DATASETS

OPTIMIZERS = ("sgd", "rmsprop")
PAPER_LR_PER_EXAMPLE = 1e-5  # the paper's learning rate is 1e-5 * B


@dataclass(frozen=True)
class TrainConfig:
    """One training run (one cell of a sweep). ``lr`` is a number or ``"paper"`` (1e-5 * B) or
    ``"<factor>*B"`` (e.g. ``"1e-3*B"``). ``branch_depth`` 0 is the paper's plain network of ``depth`` layers;
    ``branch_depth`` K >= 1 a pre-activation residual network of ``depth`` blocks (docs/theory.md section 9), each
    ``x + branch_scale * F(x)`` with ``F = K x [BN -> phi -> linear]``, between a linear embedding with BN and a
    final BN -> phi before the read-out (:func:`layer_counts`). ``alpha`` is alpha_relu's exponent, not the
    branch scale."""

    dataset: str = "mnist"
    phi: str = "relu"
    depth: int = 10
    width: int = 384
    batch_size: int = 32
    ghost_size: int | None = None
    optimizer: str = "sgd"
    lr: float | str = "paper"
    epochs: int = 10
    eps: float = 1e-3
    gamma: float = 1.0
    beta: float = 0.0
    sigma_w: float = 1.0
    alpha: float | None = None
    branch_depth: int = 0
    branch_scale: float = 1.0
    train_subset: int | None = None
    test_subset: int | None = None
    seed: int = 0
    data_dir: str | None = None

    def learning_rate(self) -> float:
        if isinstance(self.lr, str):
            text = self.lr.replace(" ", "")
            if text == "paper":
                return PAPER_LR_PER_EXAMPLE * self.batch_size
            if text.endswith("*B"):
                return float(text[:-2]) * self.batch_size
            return float(text)
        return float(self.lr)

    def to_dict(self) -> dict:
        return asdict(self)


def layer_counts(cfg: TrainConfig) -> tuple[int, int]:
    """(weight matrices, BN layers): ``(depth, depth)`` for a plain network; ``(1 + D K, 2 + D K)`` for a residual
    one (the embedding, D blocks of K branch layers, and the final BN)."""
    if cfg.branch_depth == 0:
        return cfg.depth, cfg.depth
    inner = cfg.depth * cfg.branch_depth
    return inner + 1, inner + 2


def check_config(cfg: TrainConfig) -> TrainConfig:
    """Reject impossible values (and values of the wrong type), naming the key."""
    for name in ("dataset", "phi", "optimizer"):
        if not isinstance(getattr(cfg, name), str):
            raise InputError(f"{name} must be a string, got {getattr(cfg, name)!r}")
    if cfg.data_dir is not None and not isinstance(cfg.data_dir, str):
        raise InputError(f"data_dir must be a path (a string), got {cfg.data_dir!r}")
    if isinstance(cfg.lr, bool) or not isinstance(cfg.lr, str | int | float):
        raise InputError(f"lr must be a number, 'paper' or '<factor>*B', got {cfg.lr!r}")
    if cfg.alpha is not None:
        check_real("alpha", cfg.alpha)
    check_seed(cfg.seed)
    for name in ("depth", "width", "epochs"):
        check_int(name, getattr(cfg, name))
    check_int("batch_size", cfg.batch_size, 2)
    check_int("branch_depth", cfg.branch_depth, 0)
    check_real("branch_scale", cfg.branch_scale, minimum=0.0)
    for name in ("train_subset", "test_subset", "ghost_size"):
        if getattr(cfg, name) is not None:
            check_int(name, getattr(cfg, name), 2 if name == "ghost_size" else 1)
    if cfg.ghost_size is not None and cfg.batch_size % cfg.ghost_size:
        raise InputError(f"ghost_size={cfg.ghost_size} must divide batch_size={cfg.batch_size}")
    if cfg.dataset.lower().replace("-", "_") not in DATASETS:
        raise InputError(f"dataset must be one of {DATASETS}, got {cfg.dataset!r}")
    if cfg.optimizer not in OPTIMIZERS:
        raise InputError(f"optimizer must be one of {OPTIMIZERS}, got {cfg.optimizer!r}")
    try:
        lr = cfg.learning_rate()
    except (ValueError, OverflowError):
        raise InputError(f"lr must be a number, 'paper' or '<factor>*B', got {cfg.lr!r}") from None
    if not (math.isfinite(lr) and lr > 0):
        raise InputError(f"lr must be positive and finite, got {cfg.lr!r}")
    check_bn_options(eps=cfg.eps, sigma_w=cfg.sigma_w, gamma=cfg.gamma, beta=cfg.beta)
    # the largest allocation: the weights, their gradients and optimiser state, and a batch's activations
    layers = layer_counts(cfg)[0]
    params = layers * cfg.width * cfg.width
    check_memory(4.0 * (4 * params + 8 * cfg.batch_size * cfg.width * layers), "one training run", "width")
    get_nonlinearity(cfg.phi, **({"alpha": cfg.alpha} if cfg.alpha is not None else {}))
    return cfg


CONFIG_KEYS = tuple(f.name for f in fields(TrainConfig))
