"""Finite-channel convolutional BN networks (theory.md section 4d; docs/convolutional.md).

Network, per layer: ``conv (k x k, or k in 1-D; C channels in and out, no bias, weights N(0, sigma_w^2 / (k^d C))),
periodic or zero padding) -> BN per channel over (batch, every position) -> phi`` (BatchNorm2d's statistics), on
1-D or 2-D images. Batched over K independent networks: the networks' channels are stacked and convolved with
``groups = K`` (one call per layer). BN is the simulator's one batch-norm function
(:func:`bnmft.simulate.network.batch_norm`) with the (example, position) pairs as its rows: a ghost batch is
``ghost_size`` examples with all their positions.

Measurements per layer (post-activation), per network: the per-channel mean and variance of the pre-activations
over (batch, positions), averaged over channels, and their spread across channels; the (example, position) Gram
matrix averaged over channels ``Sigma = x x^T / C`` summarised as its mean diagonal ``q``, the mean correlation
between distinct positions of one example (``c_space``) and between examples (``c_batch``); and the log squared
gradient norm w.r.t. the pre-activations (hooks, log-space rescaling as in :mod:`.network`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .network import NetworkSpec, batch_norm
from .torch_phi import TorchFn

PADDINGS = ("periodic", "zero")


@dataclass(frozen=True)
class ConvSpec:
    """A conv-BN stack: the shared architecture (:class:`~bnmft.simulate.network.NetworkSpec`, whose ``width`` is
    the number of channels C and ``depth`` the number of layers), the image shape, kernel size and padding."""

    network: NetworkSpec
    spatial: tuple[int, ...]
    kernel: int = 3
    padding: str = "periodic"

    @property
    def positions(self) -> int:
        return math.prod(self.spatial)


@dataclass
class ConvRun:
    """Per-layer measurements of K networks, float64 CPU tensors of shape (K, L): ``q``, ``c_space``, ``c_batch``
    (the channel-averaged Gram), ``channel_mean``, ``channel_var`` (pre-activation, averaged over channels),
    ``channel_var_spread`` (std over channels of the per-channel variance), ``log_grad_h``."""

    q: torch.Tensor
    c_space: torch.Tensor
    c_batch: torch.Tensor
    channel_mean: torch.Tensor
    channel_var: torch.Tensor
    channel_var_spread: torch.Tensor
    log_grad_h: torch.Tensor


def conv_weights(k: int, spec: ConvSpec, gen, device, dtype) -> torch.Tensor:
    """(K C, C, k[, k]) Gaussian weights N(0, sigma_w^2 / (k^d C)) for ``groups = K``."""
    c, d = spec.network.width, len(spec.spatial)
    shape = (k * c, c, *([spec.kernel] * d))
    w = torch.randn(shape, generator=gen, device=device, dtype=dtype)
    return w * (spec.network.sigma_w / math.sqrt(spec.kernel**d * c))


def convolve(x: torch.Tensor, w: torch.Tensor, spec: ConvSpec, groups: int) -> torch.Tensor:
    """x (B, K C, *spatial) -> same shape: the K networks' convolutions in one grouped call."""
    pad = spec.kernel // 2
    conv = F.conv1d if len(spec.spatial) == 1 else F.conv2d
    if spec.padding == "periodic":
        x = F.pad(x, [pad] * (2 * len(spec.spatial)), mode="circular")
        return conv(x, w, groups=groups)
    return conv(x, w, padding=pad, groups=groups)


def channel_batch_norm(h: torch.Tensor, k: int, spec: ConvSpec, group: int) -> torch.Tensor:
    """BN per channel over (batch, positions): h (B, K C, *spatial) as the rows (example, position) of
    :func:`~bnmft.simulate.network.batch_norm`, ``group`` examples (with all their positions) per BN group."""
    b, p, c = h.shape[0], spec.positions, spec.network.width
    rows = h.reshape(b, k, c, p).permute(1, 0, 3, 2).reshape(k, b * p, c)  # (K, (example, position), C)
    y = batch_norm(rows, group * p, spec.network.eps, spec.network.detach_stats)
    return y.reshape(k, b, p, c).permute(1, 0, 3, 2).reshape(h.shape)


def _gram_summary(x: torch.Tensor, k: int, spec: ConvSpec):
    """q, c_space, c_batch per network from x (B, K C, *spatial)."""
    b, p, c = x.shape[0], spec.positions, spec.network.width
    rows = x.reshape(b, k, c, p).permute(1, 0, 3, 2).reshape(k, b * p, c).double()
    gram = rows @ rows.transpose(1, 2) / c  # (K, n, n), n = B P
    diag = torch.diagonal(gram, dim1=1, dim2=2)
    q = diag.mean(dim=1)
    blocks = gram.reshape(k, b, p, b, p)
    same = torch.eye(b, dtype=torch.bool, device=x.device)
    within = blocks[:, same]  # (K, B, P, P): one example's positions
    within_sum = within.sum(dim=(1, 2, 3)) - diag.sum(dim=1)
    c_space = within_sum / (b * p * max(p - 1, 1)) / q if p > 1 else torch.zeros_like(q)
    across_sum = gram.sum(dim=(1, 2)) - within.sum(dim=(1, 2, 3))
    c_batch = across_sum / (b * (b - 1) * p * p) / q if b > 1 else torch.zeros_like(q)
    return q, c_space, c_batch


def run_conv_ensemble(phi: TorchFn, inputs: torch.Tensor, spec: ConvSpec, k: int, gen) -> ConvRun:
    """Forward and backward pass of K conv-BN networks: inputs (B, K C, *spatial)."""
    device, dtype = inputs.device, inputs.dtype
    group = spec.network.ghost_size or inputs.shape[0]
    b, c = inputs.shape[0], spec.network.width
    x = inputs
    pre, stats = [], []
    for _ in range(spec.network.depth):
        h = convolve(x, conv_weights(k, spec, gen, device, dtype), spec, k)
        if not pre:
            h.requires_grad_(True)
        pre.append(h)
        with torch.no_grad():
            per_channel = h.detach().reshape(b, k, c, -1).transpose(0, 1).reshape(k, b, c, -1)
            var, mean = torch.var_mean(per_channel.double(), dim=(1, 3), unbiased=False)  # (K, C)
        x = phi(channel_batch_norm(h, k, spec, group))
        with torch.no_grad():
            stats.append((*_gram_summary(x.detach(), k, spec), mean.mean(1), var.mean(1), var.std(1)))
    readout = torch.randn(x.shape, generator=gen, device=device, dtype=dtype)
    logs = torch.zeros(spec.network.depth, k, dtype=torch.float64)

    def make_hook(layer):
        def hook(grad):
            sq = grad.reshape(b, k, -1).pow(2).sum(dim=(0, 2), dtype=torch.float64)
            logs[layer] = torch.log(sq).cpu()
            scale = torch.rsqrt(sq).clamp(max=1e300).to(grad.dtype)
            return (grad.reshape(b, k, -1) * scale[None, :, None]).reshape(grad.shape)

        return hook

    for layer, h in enumerate(pre):
        h.register_hook(make_hook(layer))
    (x * readout).sum().backward()
    log_grad = torch.flip(torch.cumsum(torch.flip(logs, [0]), 0), [0])
    columns = [torch.stack([s[i] for s in stats], 1).double().cpu() for i in range(6)]
    return ConvRun(*columns, log_grad_h=log_grad.T.contiguous())
