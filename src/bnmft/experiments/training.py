"""Training BN MLPs on real data: the trainability experiments of the paper (docs/theory.md section 12, Figs 3-5).

The network reuses the simulator's pieces (:mod:`bnmft.simulate`): the torch nonlinearity, the Gaussian
``N(0, sigma_w^2 / fan_in)`` initialisation and the batch-norm function (with ghost batches). Architecture:
``depth`` blocks ``linear (no bias) -> BN (gamma, beta learnable, initialised to the config's values) -> phi``,
then a linear read-out with bias and softmax cross-entropy. BN uses batch statistics in training and running
averages (momentum 0.1) at test time, as in every framework.

A run whose loss overflows or turns NaN stops and is recorded as diverged (never a crash).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from ..nonlinearity import get_nonlinearity
from ..simulate.network import NetworkSpec, batch_norm, init_weights
from ..simulate.torch_phi import to_torch
from .config import TrainConfig, check_config, layer_counts
from .data import Dataset, load_dataset


def torch_threads(n: int | None = None) -> int:
    """This process's torch intra-op threads: set to ``n`` where given; returns the number before."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    return before


def batch_statistics(h: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's mean and (biased) variance per neuron for BN's running statistics, averaged over the ghost
    groups: h (K, B, N) -> two (K, N). (Written out: ``torch.var_mean`` is several times slower at these shapes.)"""
    k, b, n = h.shape
    g = h.reshape(k, b // group, group, n)
    mean = g.mean(dim=2, keepdim=True)
    return mean.mean(dim=(1, 2)), ((g - mean) ** 2).mean(dim=2).mean(dim=1)


class BatchNorm(torch.nn.Module):
    """BN over (ghost) batches with learnable gamma/beta and running statistics for evaluation. The normalisation
    in training is the simulator's :func:`~bnmft.simulate.network.batch_norm` (one implementation)."""

    def __init__(self, width: int, eps: float, gamma: float, beta: float, ghost: int | None):
        super().__init__()
        self.eps, self.ghost = eps, ghost
        self.weight = torch.nn.Parameter(torch.full((width,), float(gamma)))
        self.bias = torch.nn.Parameter(torch.full((width,), float(beta)))
        self.register_buffer("running_mean", torch.zeros(width))
        self.register_buffer("running_var", torch.ones(width))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.training:
            b = h.shape[0]
            group = self.ghost if self.ghost and b % self.ghost == 0 else b
            with torch.no_grad():
                mean, var = batch_statistics(h[None], group)
                self.running_mean.mul_(0.9).add_(0.1 * mean[0])
                self.running_var.mul_(0.9).add_(0.1 * var[0])
            y = batch_norm(h[None], group, self.eps, detach=False)[0]
        else:
            y = (h - self.running_mean) / torch.sqrt(self.running_var + self.eps)
        return self.weight * y + self.bias


class BNMLP(torch.nn.Module):
    """``depth`` x (linear -> BN -> phi), then a linear read-out; or, with ``branch_depth`` K >= 1, the residual
    network of :class:`~bnmft.experiments.config.TrainConfig` (embedding ``BN(W_0 x)``, ``depth`` blocks
    ``x + branch_scale * F(x)``, final BN -> phi). Weights initialised as in the simulator."""

    def __init__(self, cfg: TrainConfig, features: int, classes: int, gen: torch.Generator):
        super().__init__()
        phi = get_nonlinearity(cfg.phi, **({"alpha": cfg.alpha} if cfg.alpha is not None else {}))
        self.phi = to_torch(phi)
        self.cfg = cfg
        spec = NetworkSpec(width=cfg.width, depth=cfg.depth, sigma_w=cfg.sigma_w)
        self.weights = torch.nn.ParameterList()
        self.norms = torch.nn.ModuleList()
        n_weights, n_norms = layer_counts(cfg)
        for layer in range(n_weights):
            fan_in = features if layer == 0 else cfg.width
            w = init_weights(1, cfg.width, fan_in, spec, gen, "cpu", torch.float32)[0]
            self.weights.append(torch.nn.Parameter(w))
        for _ in range(n_norms):
            self.norms.append(BatchNorm(cfg.width, cfg.eps, cfg.gamma, cfg.beta, cfg.ghost_size))
        self.readout = torch.nn.Linear(cfg.width, classes)
        with torch.no_grad():
            self.readout.weight.normal_(0.0, 1.0 / math.sqrt(cfg.width), generator=gen)
            self.readout.bias.zero_()
        self.pre: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor, keep: bool = False) -> torch.Tensor:
        self.pre = []
        if self.cfg.branch_depth:
            return self.readout(self._residual(x))
        for w, norm in zip(self.weights, self.norms, strict=True):
            h = x @ w.T
            if keep:
                h.retain_grad()
                self.pre.append(h)
            x = self.phi(norm(h))
        return self.readout(x)

    def _residual(self, x: torch.Tensor) -> torch.Tensor:
        stream = self.norms[0](x @ self.weights[0].T)
        j = 1
        for _ in range(self.cfg.depth):
            h = stream
            for _ in range(self.cfg.branch_depth):
                h = self.phi(self.norms[j](h)) @ self.weights[j].T
                j += 1
            stream = stream + self.cfg.branch_scale * h
        return self.phi(self.norms[j](stream))


def _evaluate(model: BNMLP, x: torch.Tensor, y: torch.Tensor, chunk: int = 2000) -> tuple[float, float]:
    model.eval()
    loss, correct = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(x), chunk):
            out = model(x[i : i + chunk])
            loss += float(torch.nn.functional.cross_entropy(out, y[i : i + chunk], reduction="sum"))
            correct += int((out.argmax(dim=1) == y[i : i + chunk]).sum())
    model.train()
    return loss / len(x), correct / len(x)


def subset(x, y, n, rng):
    if n is None or n >= len(x):
        return x, y
    idx = rng.choice(len(x), size=n, replace=False)
    return x[idx], y[idx]


_DATA_CACHE: dict[tuple, Dataset] = {}


def cached_dataset(name: str, data_dir: str | None) -> Dataset:
    key = (name, data_dir)
    if key not in _DATA_CACHE:
        _DATA_CACHE[key] = load_dataset(name, data_dir)
    return _DATA_CACHE[key]


def train(cfg: TrainConfig, data: Dataset | None = None) -> dict:
    """Train one network; returns per-epoch train loss and accuracy (running, over the epoch's batches), test
    loss and accuracy (BN running statistics), ``diverged`` and timing."""
    check_config(cfg)
    start = time.perf_counter()
    data = data or cached_dataset(cfg.dataset, cfg.data_dir)
    rng = np.random.default_rng(cfg.seed)
    xtr, ytr = subset(data.x_train, data.y_train, cfg.train_subset, rng)
    xte, yte = subset(data.x_test, data.y_test, cfg.test_subset, rng)
    xtr, ytr, xte, yte = (torch.as_tensor(a) for a in (xtr, ytr, xte, yte))
    gen = torch.Generator().manual_seed(cfg.seed)
    model = BNMLP(cfg, data.features, data.classes, gen)
    lr = cfg.learning_rate()
    opt = (
        torch.optim.SGD(model.parameters(), lr=lr)
        if cfg.optimizer == "sgd"
        else torch.optim.RMSprop(model.parameters(), lr=lr)
    )
    history, diverged, steps = [], False, 0
    for epoch in range(cfg.epochs):
        order = torch.randperm(len(xtr), generator=gen)
        total, count, correct = 0.0, 0, 0
        for i in range(0, len(xtr) - cfg.batch_size + 1, cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            logits = model(xtr[idx])
            loss = torch.nn.functional.cross_entropy(logits, ytr[idx])
            if not torch.isfinite(loss):
                diverged = True
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            correct += int((logits.detach().argmax(dim=1) == ytr[idx]).sum())
            count += len(idx)
            steps += 1
        if diverged or not all(torch.isfinite(p).all() for p in model.parameters()):
            diverged = True
            break
        test_loss, test_acc = _evaluate(model, xte, yte)
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": total / max(count, 1),
                "train_accuracy": correct / max(count, 1),
                "test_loss": test_loss,
                "test_accuracy": test_acc if math.isfinite(test_loss) else 1.0 / data.classes,
            }
        )
    chance = 1.0 / data.classes
    final = history[-1]["test_accuracy"] if history and not diverged else chance
    return {
        "config": cfg.to_dict(),
        "history": history,
        "diverged": diverged,
        "test_accuracy": final,
        "steps": steps,
        "seconds": time.perf_counter() - start,
        "learning_rate": lr,
    }
