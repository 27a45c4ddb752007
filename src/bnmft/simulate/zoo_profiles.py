"""The whole-model prediction against the probe on the model zoo: tidy rows the main job's report draws
(:func:`zoo_profiles`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .model_probe import probe
from .model_zoo import ZOO


def zoo_profiles(
    names: Sequence[str], batch_size: int, image: int, draws: int, *, width: float | None = None, seed: int = 0
) -> tuple[list[dict], list[dict]]:
    """Each zoo model probed at initialisation (``draws`` initialisations, Gaussian ``(batch_size, 3, image, image)``
    inputs) beside its graph prediction (:func:`~bnmft.simulate.model_graph.predict_model`).

    Returns:
        ``(models, layers)``: one row per model (``model``, ``batch_size``, ``image``, ``draws``, ``bn_layers``,
        ``measured`` and ``measured_stderr`` - the total ln gradient growth from the first BN layer to the last -,
        ``predicted``, ``ratio`` = predicted / measured, ``worst_layer_error`` and ``allowed`` = 0.1 |measured| + 0.3);
        one row per model and BN layer (``model``, ``index``, ``name``, ``measured``, ``measured_stderr``,
        ``predicted``: ln of its squared gradient norm over the last BN layer's).
    """
    models, layers = [], []
    for name in names:
        build = ZOO[name]
        x = torch.randn(batch_size, 3, image, image, generator=torch.Generator().manual_seed(seed + 1))
        result = probe((lambda b=build: b(width)) if width is not None else build, x, draws=draws, seed=seed)
        g = result.growth
        errors = [abs(b["predicted_log_grad_ratio"] - b["log_grad_ratio"]) for b in result.bn_layers
                  if b.get("predicted_log_grad_ratio") is not None and b["log_grad_ratio"] is not None]  # fmt: skip
        measured, predicted = g.get("measured"), g.get("predicted")
        models.append({"model": name, "batch_size": batch_size, "image": image, "draws": draws,
                       "bn_layers": len(result.bn_layers), "measured": measured,
                       "measured_stderr": g.get("measured_stderr"), "predicted": predicted,
                       "ratio": predicted / measured if measured and predicted is not None else None,
                       "worst_layer_error": max(errors) if errors else None,
                       "allowed": 0.1 * abs(measured) + 0.3 if measured is not None else None})  # fmt: skip
        for i, b in enumerate(result.bn_layers):
            se = b.get("log_grad_ratio_stderr")
            layers.append({"model": name, "index": i, "name": b["name"], "measured": b["log_grad_ratio"],
                           "measured_stderr": se if se is not None and math.isfinite(se) else None,
                           "predicted": b.get("predicted_log_grad_ratio")})  # fmt: skip
    return models, layers


__all__ = ["zoo_profiles"]
