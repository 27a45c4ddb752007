"""Batched training: cells that share their shapes train together as one stacked model.

Cells of a sweep that agree on :data:`BATCH_KEYS` (data set, phi, depth, branch depth, width, batch size, optimiser,
epochs, data sizes) - e.g. the seeds, or the gammas, betas, eps, sigma_w, learning rates, ghost sizes or branch scales
of one depth - become
one model whose weights are stacked along a leading axis of size K: every layer is one batched matrix product
(``torch.bmm`` of the activations (K, B, N) with the transposed weights (K, N_in, N_out): MKL's batched product with
the skinny operand on the left is about 4x faster than ``W @ x^T``, forward and backward), batch norm one (fused
where the eps agree) call, the loss the sum of the K models' losses (their
gradients never mix) and the optimiser an element-wise update with one learning rate per model.

Each model draws its data subset, initial weights and data order from its own seed exactly as
:func:`bnmft.experiments.training.train` does, so a batched cell gives the one-at-a-time numbers to float
tolerance (tests/experiments/test_batched.py); only the order of floating-point sums in the matrix products
differs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..nonlinearity import get_nonlinearity
from ..simulate.network import NetworkSpec, batch_norm, init_weights
from ..simulate.torch_phi import to_torch
from .config import TrainConfig, check_config, layer_counts
from .data import Dataset
from .groups import BATCH_KEYS, batch_key
from .training import batch_statistics, cached_dataset, subset

RMSPROP_ALPHA, RMSPROP_EPS = 0.99, 1e-8  # torch.optim.RMSprop's defaults, which train() uses


class _Stack:
    """The K models' parameters and BN running statistics, stacked (float32, CPU); the weight matrices transposed,
    (K, N_in, N_out), so that a layer is ``x @ W^T`` for activations x (K, B, N_in)."""

    def __init__(self, cfgs: Sequence[TrainConfig], features: int, classes: int, gens: list[torch.Generator]):
        first = cfgs[0]
        k, n = len(cfgs), first.width
        n_weights, n_norms = layer_counts(first)
        per_model = []
        for cfg, gen in zip(cfgs, gens, strict=True):  # the draws of BNMLP.__init__, in its order
            spec = NetworkSpec(width=n, depth=first.depth, sigma_w=cfg.sigma_w)
            layers = [
                init_weights(1, n, features if i == 0 else n, spec, gen, "cpu", torch.float32)[0]
                for i in range(n_weights)
            ]
            readout = torch.empty(classes, n).normal_(0.0, 1.0 / math.sqrt(n), generator=gen)
            per_model.append((layers, readout))
        self.weights = [torch.stack([m[0][i].T for m in per_model]).contiguous().requires_grad_()
                        for i in range(n_weights)]  # fmt: skip
        self.gammas = [
            torch.tensor([[c.gamma] * n for c in cfgs], dtype=torch.float32).requires_grad_() for _ in range(n_norms)
        ]
        self.betas = [
            torch.tensor([[c.beta] * n for c in cfgs], dtype=torch.float32).requires_grad_() for _ in range(n_norms)
        ]
        self.readout = torch.stack([m[1].T for m in per_model]).contiguous().requires_grad_()
        self.bias = torch.zeros(k, classes).requires_grad_()
        self.running_mean = [torch.zeros(k, n) for _ in range(n_norms)]
        self.running_var = [torch.ones(k, n) for _ in range(n_norms)]
        self.scales = torch.tensor([c.branch_scale for c in cfgs], dtype=torch.float32)[:, None, None]  # (K, 1, 1)

    def parameters(self) -> list[torch.Tensor]:
        return [*self.weights, *self.gammas, *self.betas, self.readout, self.bias]

    def to(self, device: torch.device) -> _Stack:
        """Move everything to ``device`` (drawn on the CPU first: the same numbers on every device)."""

        def move(x: torch.Tensor) -> torch.Tensor:
            return x.detach().to(device).requires_grad_(x.requires_grad)

        self.weights, self.gammas, self.betas = (
            [move(x) for x in xs] for xs in (self.weights, self.gammas, self.betas)
        )
        self.readout, self.bias = move(self.readout), move(self.bias)
        self.running_mean = [x.to(device) for x in self.running_mean]
        self.running_var = [x.to(device) for x in self.running_var]
        self.scales = self.scales.to(device)
        return self


def train_batched(cfgs: Sequence[TrainConfig], data: Dataset | None = None, device: str = "cpu") -> list[dict]:
    """Train cells that share :data:`BATCH_KEYS` as one stacked model; one result per cell, as
    :func:`~bnmft.experiments.training.train` returns it (plus ``"batched": K``; ``seconds`` is the batch's wall
    time divided by K). ``device``: ``"cpu"`` or ``"cuda"`` (initial weights and data order are drawn on the CPU,
    so a cell's numbers do not depend on the device beyond float rounding)."""
    cfgs = [check_config(c) for c in cfgs]
    if not cfgs:
        return []
    dev = check_device(device)
    if len({batch_key(asdict(c)) for c in cfgs}) > 1:
        raise InputError(f"cells trained together must share {', '.join(BATCH_KEYS)}")
    start = time.perf_counter()
    first, k = cfgs[0], len(cfgs)
    data = data or cached_dataset(first.dataset, first.data_dir)
    xs_tr, ys_tr, xs_te, ys_te = [], [], [], []
    for cfg in cfgs:  # the subsets of train(), from each cell's seed
        rng = np.random.default_rng(cfg.seed)
        a, b = subset(data.x_train, data.y_train, cfg.train_subset, rng)
        c, d = subset(data.x_test, data.y_test, cfg.test_subset, rng)
        xs_tr.append(a), ys_tr.append(b), xs_te.append(c), ys_te.append(d)
    xtr, ytr = torch.as_tensor(np.stack(xs_tr)).to(dev), torch.as_tensor(np.stack(ys_tr)).to(dev)
    xte, yte = torch.as_tensor(np.stack(xs_te)).to(dev), torch.as_tensor(np.stack(ys_te)).to(dev)
    gens = [torch.Generator().manual_seed(cfg.seed) for cfg in cfgs]
    model = _Stack(cfgs, data.features, data.classes, gens).to(dev)
    phi = to_torch(get_nonlinearity(first.phi, **({"alpha": first.alpha} if first.alpha is not None else {})))
    eps_values = [float(c.eps) for c in cfgs]
    eps: float | torch.Tensor = eps_values[0] if len(set(eps_values)) == 1 else torch.tensor(eps_values, device=dev)
    eps_column = torch.tensor(eps_values, dtype=torch.float32, device=dev)[:, None, None]
    groups: dict[int, list[int]] = {}
    for i, cfg in enumerate(cfgs):
        g = cfg.ghost_size if cfg.ghost_size and first.batch_size % cfg.ghost_size == 0 else first.batch_size
        groups.setdefault(g, []).append(i)
    lrs = torch.tensor([c.learning_rate() for c in cfgs], dtype=torch.float32, device=dev)
    rows = torch.arange(k, device=dev)[:, None]

    def normalise(h: torch.Tensor, layer: int) -> torch.Tensor:
        """BN and its affine map in training mode per model (its ghost groups), updating the running statistics.
        h is (K, B, N)."""
        gamma, beta = model.gammas[layer][:, None, :], model.betas[layer][:, None, :]
        if len(groups) == 1:
            ((g, _),) = groups.items()
            y = batch_norm(h, g, eps, detach=False)
            parts = [(slice(None), g)]
        else:
            y = torch.empty_like(h)
            parts = [(torch.tensor(idx, device=dev), g) for g, idx in groups.items()]
            for idx, g in parts:
                y[idx] = batch_norm(h[idx], g, eps if isinstance(eps, float) else eps[idx], detach=False)
        with torch.no_grad():
            for idx, g in parts:
                mean, var = batch_statistics(h[idx], g)
                model.running_mean[layer][idx] = 0.9 * model.running_mean[layer][idx] + 0.1 * mean
                model.running_var[layer][idx] = 0.9 * model.running_var[layer][idx] + 0.1 * var
        return y * gamma + beta

    def norm(h: torch.Tensor, layer: int, training: bool) -> torch.Tensor:
        if training:
            return normalise(h, layer)
        y = (h - model.running_mean[layer][:, None, :]) / torch.sqrt(model.running_var[layer][:, None, :] + eps_column)
        return model.gammas[layer][:, None, :] * y + model.betas[layer][:, None, :]

    def forward(x: torch.Tensor, training: bool) -> torch.Tensor:
        """x (K, B, features) -> logits (K, B, classes); activations (K, B, N) throughout."""
        a = x
        if first.branch_depth == 0:
            for layer, w in enumerate(model.weights):
                a = phi(norm(torch.bmm(a, w), layer, training))
        else:  # the residual network of BNMLP._residual
            stream = norm(torch.bmm(a, model.weights[0]), 0, training)
            j = 1
            for _ in range(first.depth):
                h = stream
                for _ in range(first.branch_depth):
                    h = torch.bmm(phi(norm(h, j, training)), model.weights[j])
                    j += 1
                stream = stream + model.scales * h
            a = phi(norm(stream, j, training))
        return torch.bmm(a, model.readout) + model.bias[:, None, :]

    params = model.parameters()
    square_avg = [torch.zeros_like(p) for p in params]
    diverged = [False] * k
    history: list[list[dict]] = [[] for _ in range(k)]
    steps = [0] * k
    b, n_train, classes = first.batch_size, xtr.shape[1], data.classes
    for epoch in range(first.epochs):
        orders = torch.stack([torch.randperm(n_train, generator=gen) for gen in gens]).to(dev)
        total, correct = torch.zeros(k, dtype=torch.float64), torch.zeros(k, dtype=torch.int64)
        count = [0] * k
        for i in range(0, n_train - b + 1, b):
            active = [j for j in range(k) if not diverged[j]]
            if not active:
                break
            idx = orders[:, i : i + b]
            logits = forward(xtr[rows, idx], training=True)
            labels = ytr[rows, idx]
            losses = F.cross_entropy(logits.reshape(-1, classes), labels.reshape(-1), reduction="none")
            losses = losses.reshape(k, b).mean(dim=1)
            finite = torch.isfinite(losses)
            for j in active:
                if not bool(finite[j]):
                    diverged[j] = True  # as train(): the run ends here, recorded as diverged
            active = [j for j in active if not diverged[j]]
            for p in params:
                p.grad = None
            if active:
                losses[active].sum().backward()
            mask = torch.zeros(k, dtype=torch.float32, device=dev)
            mask[active] = 1.0
            _step(params, square_avg, lrs * mask, first.optimizer)
            with torch.no_grad():
                hits = (logits.argmax(dim=2) == labels).sum(dim=1)
            for j in active:
                total[j] += float(losses[j].detach()) * b
                correct[j] += int(hits[j])
                count[j] += b
                steps[j] += 1
        with torch.no_grad():
            for j in range(k):
                if not diverged[j] and not all(bool(torch.isfinite(p[j]).all()) for p in params):
                    diverged[j] = True
            test_loss, test_correct = _evaluate(forward, xte, yte, classes)
        for j in range(k):
            if diverged[j]:
                continue
            finite_loss = math.isfinite(test_loss[j])
            history[j].append(
                {
                    "epoch": epoch + 1,
                    "train_loss": float(total[j]) / max(count[j], 1),
                    "train_accuracy": int(correct[j]) / max(count[j], 1),
                    "test_loss": test_loss[j],
                    "test_accuracy": test_correct[j] if finite_loss else 1.0 / classes,
                }
            )
    seconds = (time.perf_counter() - start) / k
    chance = 1.0 / classes
    return [
        {
            "config": cfg.to_dict(),
            "history": history[j],
            "diverged": diverged[j],
            "test_accuracy": history[j][-1]["test_accuracy"] if history[j] and not diverged[j] else chance,
            "steps": steps[j],
            "seconds": seconds,
            "learning_rate": cfg.learning_rate(),
            "batched": k,
        }
        for j, cfg in enumerate(cfgs)
    ]


def cuda_available() -> bool:
    """Whether torch sees a CUDA device here (the report's metadata)."""
    return torch.cuda.is_available()


def check_device(device: str) -> torch.device:
    """``"cpu"``, or ``"cuda"`` (``"cuda:N"``) where a CUDA device is available."""
    if not isinstance(device, str) or not (device == "cpu" or device.startswith("cuda")):
        raise InputError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device={device!r} but no CUDA device is available here; use 'cpu'")
    try:
        return torch.device(device)
    except RuntimeError as err:
        raise InputError(f"device: {err}") from None


def _step(params: list[torch.Tensor], square_avg: list[torch.Tensor], lrs: torch.Tensor, optimizer: str) -> None:
    """One SGD or RMSprop step (torch's update rules and defaults) with one learning rate per model."""
    with torch.no_grad():
        for p, avg in zip(params, square_avg, strict=True):
            if p.grad is None:
                continue
            lr = lrs.reshape(-1, *([1] * (p.dim() - 1)))
            if optimizer == "sgd":
                p.addcmul_(lr, p.grad, value=-1.0)  # p -= lr * grad in one pass
            else:
                avg.mul_(RMSPROP_ALPHA).addcmul_(p.grad, p.grad, value=1 - RMSPROP_ALPHA)
                p.addcdiv_(lr * p.grad, avg.sqrt().add_(RMSPROP_EPS), value=-1.0)


def _evaluate(forward, xte: torch.Tensor, yte: torch.Tensor, classes: int, chunk: int = 2000):
    """Test loss and accuracy per model (BN running statistics), in chunks of examples."""
    k, n = yte.shape
    loss = torch.zeros(k, dtype=torch.float64, device=yte.device)
    correct = torch.zeros(k, dtype=torch.int64, device=yte.device)
    for i in range(0, n, chunk):
        out = forward(xte[:, i : i + chunk], training=False)
        y = yte[:, i : i + chunk]
        ce = F.cross_entropy(out.reshape(-1, classes), y.reshape(-1), reduction="none").reshape(k, -1)
        loss += ce.sum(dim=1).double()
        correct += (out.argmax(dim=2) == y).sum(dim=1)
    return [float(v) / n for v in loss], [int(c) / n for c in correct]


__all__ = ["check_device", "train_batched"]
