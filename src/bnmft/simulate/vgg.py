"""The paper's appendix at initialisation: gradient explosion in a VGG-style conv-BN stack against depth, for BN's
initial beta and eps, measured with :func:`~bnmft.simulate.model_probe.probe`'s kernel beside the mean-field prediction.

The stack (CPU-sized VGG19 layout): ``depth`` blocks ``conv 3x3 (zero padding, no bias, PyTorch's default init) ->
BatchNorm2d(eps, bias initialised to beta) -> ReLU``, with 2x2 max-pooling after the blocks where VGG19 pools
(after conv 2, 4, 8, 12, 16), on ``image x image`` inputs with 3 channels, then a linear classifier. The measured
explosion is ``ln(||dL/d BN_1 out||^2 / ||dL/d BN_L out||^2)`` (the sum of the probe's per-block log rates); the
prediction is the sum of the theory's log rates over the same blocks (each BN layer's phi = relu(z + beta), its
batch x positions, and eps relative to its measured input variance): the periodic-padding conv theory, so zero
padding and pooling make it an approximation, whose error the figure shows. ``log_growth_graph``: the whole-model
mean-field prediction from the graph (:func:`~bnmft.simulate.model_graph.predict_model`, docs/graph.md), which
models zero padding, max pooling and eps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from .model_probe import probe_resolved

#: VGG19 pools after these convolutions (1-based)
POOL_AFTER = (2, 4, 8, 12, 16)


def vgg_stack(depth: int, channels: int, beta: float, eps: float, image: int, classes: int = 10) -> torch.nn.Module:
    """The stack of the module docstring (weights drawn from torch's global generator)."""
    layers: list[torch.nn.Module] = []
    c, size = 3, image
    for i in range(1, depth + 1):
        bn = torch.nn.BatchNorm2d(channels, eps=eps)
        torch.nn.init.constant_(bn.bias, beta)
        layers += [torch.nn.Conv2d(c, channels, 3, padding=1, bias=False), bn, torch.nn.ReLU()]
        c = channels
        if i in POOL_AFTER and size >= 2:
            layers.append(torch.nn.MaxPool2d(2))
            size //= 2
    layers += [torch.nn.Flatten(), torch.nn.Linear(channels * size * size, classes)]
    return torch.nn.Sequential(*layers)


def gradient_explosion(
    depths: Sequence[int],
    betas: Sequence[float],
    eps_values: Sequence[float],
    *,
    channels: int = 32,
    image: int = 32,
    batch_size: int = 8,
    seeds: int = 3,
) -> list[dict]:
    """Tidy rows, one per (beta, eps, depth): the measured log gradient growth from the last BN layer to the first
    (mean and standard error over ``seeds`` networks) and the theory's."""
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = []
    for beta in betas:
        for eps in eps_values:
            for depth in depths:
                measured, predicted, graph = [], [], []
                for seed in range(seeds):
                    torch.manual_seed(seed)
                    model = vgg_stack(depth, channels, beta, eps, image)
                    inputs = torch.randn(batch_size, 3, image, image, generator=torch.Generator().manual_seed(seed))
                    result = probe_resolved(model, inputs, seed=seed, verdict=False)  # (the verdict is not drawn)
                    bns = result.bn_layers[1:]
                    measured.append(sum(math.log(b["measured_rate"]) for b in bns))
                    if result.growth.get("predicted") is not None:
                        graph.append(result.growth["predicted"])
                    if all(b["theory_rate"] is not None for b in bns):
                        predicted.append(sum(math.log(b["theory_rate"]) for b in bns))
                m = np.array(measured)
                rows.append(
                    {
                        "beta": beta,
                        "eps": eps,
                        "depth": depth,
                        "channels": channels,
                        "image": image,
                        "batch_size": batch_size,
                        "networks": seeds,
                        "log_growth": float(m.mean()),
                        "log_growth_stderr": float(m.std(ddof=1) / math.sqrt(len(m))) if len(m) > 1 else math.inf,
                        "log_growth_theory": float(np.mean(predicted)) if predicted else None,
                        "log_growth_graph": float(np.mean(graph)) if graph else None,
                    }
                )
    return rows
