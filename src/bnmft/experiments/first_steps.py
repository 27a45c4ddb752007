"""The paper's Fig 4 measurement: per-layer norms over the first SGD steps of ReLU-BN networks on MNIST.

The report (:mod:`bnmft.report.figures`) plots the rows; this module is the only place that trains for it, so
the report needs no torch of its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .config import TrainConfig
from .training import BNMLP, cached_dataset


def first_steps(depths: Sequence[int], steps: int, batch_size: int, seed: int = 0) -> list[dict]:
    """Train one ReLU-BN MLP per depth for ``steps`` SGD steps (the paper's learning rate 1e-5 x B) on MNIST and
    record, before each step, every layer's ``||W^l||``, ``||dL/dh^l||`` and ``||dL/dW^l||``.

    Args:
        depths: network depths, each >= 1.
        steps: SGD steps per network (>= 1).
        batch_size: examples per step.
        seed: seeds the weights and the batches.

    Returns:
        Tidy rows: ``depth, step, layer (1-based), weight_norm, grad_h_norm, grad_w_norm, loss``.
    """
    torch.manual_seed(seed)
    data = cached_dataset("mnist", None)
    rng = np.random.default_rng(seed)
    rows = []
    for depth in depths:
        cfg = TrainConfig(depth=depth, batch_size=batch_size, lr="paper", seed=seed)
        model = BNMLP(cfg, data.features, data.classes, torch.Generator().manual_seed(seed))
        opt = torch.optim.SGD(model.parameters(), lr=cfg.learning_rate())
        for step in range(steps):
            idx = rng.choice(len(data.x_train), size=batch_size, replace=False)
            x, y = torch.as_tensor(data.x_train[idx]), torch.as_tensor(data.y_train[idx])
            loss = torch.nn.functional.cross_entropy(model(x, keep=True), y)
            opt.zero_grad()
            loss.backward()
            for layer, (w, h) in enumerate(zip(model.weights, model.pre, strict=True)):
                rows.append(
                    {
                        "depth": depth,
                        "step": step,
                        "layer": layer + 1,
                        "weight_norm": float(w.detach().norm()),
                        "grad_h_norm": float(h.grad.norm()),
                        "grad_w_norm": float(w.grad.norm()),
                        "loss": float(loss.detach()),
                    }
                )
            opt.step()
    return rows
