"""Ensembles of independent batch-normalised MLPs, run together with batched matrix products.

Network (theory.md section 1, the paper's order): ``h^l = W^l x^(l-1)``, ``x^l = phi(gamma BN(h^l) + beta)``
("before", the default) or ``x^l = gamma BN(phi(h^l)) + beta`` ("after"). BN normalises each neuron over the
batch (or over ghost sub-batches of ``ghost_size`` examples) with the biased variance plus ``eps``; with
``detach_stats`` the batch mean and variance are constants for backprop (an ablation). There are no biases
(BN removes them when it comes first). Weights: ``W_ij ~ N(0, sigma_w^2 / fan_in)`` or scaled random
orthogonal matrices.

Tensor layout: activations are (K, B, N) for K networks, B examples, width N; weights (K, N, fan_in).

Backward: the loss is ``sum(R * x^L)`` with a fixed Gaussian R, so the backpropagated gradient is a random
direction at the top. A hook on every pre-activation records the squared gradient norm of each network and
rescales that network's gradient to norm 1 before it travels further down; the true log norms are the
running sums of the recorded logs. Gradients therefore never overflow or underflow, whatever the depth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .torch_phi import TorchFn

INITS = ("gaussian", "orthogonal")
PLACEMENTS = ("before", "after")


@dataclass(frozen=True)
class NetworkSpec:
    """Architecture of one ensemble member (see the module docstring)."""

    width: int
    depth: int
    eps: float = 0.0
    sigma_w: float = 1.0
    init: str = "gaussian"
    placement: str = "before"
    detach_stats: bool = False
    ghost_size: int | None = None


@dataclass
class EnsembleRun:
    """Per-layer measurements of K networks on one batch (or two batches), all float64 CPU tensors.

    q, c: (K, L) mean diagonal of the post-activation Gram ``x x^T / N`` and mean off-diagonal / diagonal.
    distance: (K, L) scale-free distance of that Gram to BSB1 (as in :mod:`bnmft.theory.propagate`).
    log_grad_h, log_grad_w: (K, L) log of ``||dLoss/dh^l||^2`` and ``||dLoss/dW^l||^2``.
    cross: (K, L) cross-batch correlation (two batches), else None.
    grams: (K, L, B, B) post-activation Gram matrices if requested, else None.
    """

    q: torch.Tensor
    c: torch.Tensor
    distance: torch.Tensor
    log_grad_h: torch.Tensor
    log_grad_w: torch.Tensor
    cross: torch.Tensor | None = None
    grams: torch.Tensor | None = None


def init_weights(k: int, fan_out: int, fan_in: int, spec: NetworkSpec, gen, device, dtype) -> torch.Tensor:
    if spec.init == "gaussian":
        w = torch.randn(k, fan_out, fan_in, generator=gen, device=device, dtype=dtype)
        return w * (spec.sigma_w / math.sqrt(fan_in))
    a = torch.randn(k, max(fan_out, fan_in), max(fan_out, fan_in), generator=gen, device=device, dtype=dtype)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)  # Haar-distributed
    # scaled so that E||W x||^2 = sigma_w^2 ||x||^2 fan_out / fan_in, as for the Gaussian init
    return q[:, :fan_out, :fan_in] * (spec.sigma_w * math.sqrt(max(fan_out, fan_in) / fan_in))


def batch_norm(h: torch.Tensor, group: int, eps: float, detach: bool) -> torch.Tensor:
    """BN over groups of ``group`` consecutive examples: h (K, B, N), B divisible by group."""
    k, b, n = h.shape
    g = h.reshape(k, b // group, group, n)
    mean = g.mean(dim=2, keepdim=True)
    var = g.var(dim=2, unbiased=False, keepdim=True)
    if detach:
        mean, var = mean.detach(), var.detach()
    return ((g - mean) / torch.sqrt(var + eps)).reshape(k, b, n)


def _gram_stats(x: torch.Tensor, group: int):
    """q, c, distance per network from the Gram of the first ``group`` examples; cross-correlation if two."""
    n = x.shape[-1]
    first = x[:, :group]
    gram = first @ first.transpose(1, 2) / n
    b = group
    diag = torch.diagonal(gram, dim1=1, dim2=2).mean(dim=1)
    off = (gram.sum(dim=(1, 2)) - torch.diagonal(gram, dim1=1, dim2=2).sum(dim=1)) / (b * (b - 1))
    cen = gram - gram.mean(dim=1, keepdim=True)
    cen = cen - cen.mean(dim=2, keepdim=True)
    tr = torch.diagonal(cen, dim1=1, dim2=2).sum(dim=1).clamp_min(1e-300)
    target = (torch.eye(b, dtype=x.dtype, device=x.device) - 1.0 / b) / (b - 1)
    dist = torch.linalg.matrix_norm(cen / tr[:, None, None] - target) / torch.linalg.matrix_norm(target)
    cross = None
    if x.shape[1] == 2 * group:
        # matched-example alignment tr(G C G) / sqrt(tr(G S11 G) tr(G S22 G)): its finite-width noise floor is
        # ~1/sqrt(N B), far below that of a Frobenius norm of the whole cross block
        second = x[:, group:]
        a = first - first.mean(dim=1, keepdim=True)
        b2 = second - second.mean(dim=1, keepdim=True)
        cross = (a * b2).sum(dim=(1, 2)) / torch.sqrt((a * a).sum(dim=(1, 2)) * (b2 * b2).sum(dim=(1, 2)))
    return diag, off / diag, dist, cross, gram


def run_ensemble(
    phi: TorchFn,
    inputs: torch.Tensor,
    spec: NetworkSpec,
    batch_size: int,
    gen: torch.Generator,
    *,
    keep_grams: bool = False,
) -> EnsembleRun:
    """Forward and backward pass of K networks on ``inputs`` (K, B, d) or (K, 2B, d) for two batches.

    Args:
        phi: torch nonlinearity (gamma and beta included; see :func:`bnmft.simulate.torch_phi.to_torch`).
        inputs: the input batch(es); two batches share the weights and are normalised separately.
        spec: architecture.
        batch_size: B (the BN group is ``spec.ghost_size or B``).
        gen: torch generator for the weights and the top-level gradient direction.
    """
    k, _, d = inputs.shape
    device, dtype = inputs.device, inputs.dtype
    group = spec.ghost_size or batch_size
    x = inputs
    pre, weights = [], []
    stats = []
    for layer in range(spec.depth):
        w = init_weights(k, spec.width, d if layer == 0 else spec.width, spec, gen, device, dtype)
        w.requires_grad_(True)
        h = torch.bmm(x, w.transpose(1, 2))
        if spec.placement == "before":
            x = phi(batch_norm(h, group, spec.eps, spec.detach_stats))
        else:
            x = batch_norm(phi(h), group, spec.eps, spec.detach_stats)
        pre.append(h)
        weights.append(w)
        with torch.no_grad():
            stats.append(_gram_stats(x.detach(), batch_size))
    readout = torch.randn(x.shape, generator=gen, device=device, dtype=dtype)
    logs = torch.zeros(spec.depth, k, dtype=torch.float64)

    def make_hook(layer):
        def hook(grad):
            sq = grad.double().pow(2).sum(dim=(1, 2))
            logs[layer] = torch.log(sq)
            scale = torch.rsqrt(sq).clamp(max=1e300).to(grad.dtype)
            return grad * scale[:, None, None]

        return hook

    for layer, h in enumerate(pre):
        h.register_hook(make_hook(layer))
    (x * readout).sum().backward()
    # the gradient reaching layer l was divided by the norms of all layers above: add their logs back
    suffix = torch.flip(torch.cumsum(torch.flip(logs, [0]), 0), [0])  # sum over layers >= l
    log_grad_h = suffix
    log_w = torch.stack([torch.log(w.grad.double().pow(2).sum(dim=(1, 2))) for w in weights])
    log_grad_w = log_w + suffix  # dW^l is computed from the rescaled gradient at h^l
    q, c, dist, cross, grams = (list(v) for v in zip(*stats, strict=True))
    return EnsembleRun(
        q=torch.stack(q, 1).double().cpu(),
        c=torch.stack(c, 1).double().cpu(),
        distance=torch.stack(dist, 1).double().cpu(),
        log_grad_h=log_grad_h.T.contiguous(),
        log_grad_w=log_grad_w.T.contiguous(),
        cross=None if cross[0] is None else torch.stack(cross, 1).double().cpu(),
        grams=torch.stack(grams, 1).double().cpu() if keep_grams else None,
    )
