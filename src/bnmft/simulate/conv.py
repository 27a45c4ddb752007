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
    """q, c_space, c_batch per network from x (B, K C, *spatial), in O(B P C) (no n x n Gram): with s_a the sum of
    example a's position vectors, the within-example pair sum is sum_a ||s_a||^2 - sum_(a,p) ||x_ap||^2 and the
    across-example one ||sum_a s_a||^2 - sum_a ||s_a||^2 (Gram entries are x_ap . x_bq / C)."""
    b, p, c = x.shape[0], spec.positions, spec.network.width
    xs = x.reshape(b, k, c, p).double()
    diag_sum = xs.pow(2).sum(dim=(0, 2, 3)) / c  # (K,)
    s = xs.sum(dim=3)  # (B, K, C)
    per_example = s.pow(2).sum(dim=(0, 2)) / c
    total = s.sum(dim=0).pow(2).sum(dim=1) / c
    q = diag_sum / (b * p)
    c_space = (per_example - diag_sum) / (b * p * (p - 1)) / q if p > 1 else torch.zeros_like(q)
    c_batch = (total - per_example) / (b * (b - 1) * p * p) / q if b > 1 else torch.zeros_like(q)
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


@dataclass
class ConvSimulation:
    """Estimates (mean and standard error across networks over the stationary window, as
    :func:`bnmft.simulate.simulate_mlp` takes them) and the theory (:func:`bnmft.conv_theory`) where it applies."""

    spec: ConvSpec
    settings: dict
    run: ConvRun
    summary: dict

    def rows(self) -> list[dict]:
        """Tidy table: one dict per (network, layer), every setting in its columns."""
        out = []
        k, depth = self.run.q.shape
        for net in range(k):
            for layer in range(depth):
                row = dict(self.settings, network=net, layer=layer + 1)
                for name in ("q", "c_space", "c_batch", "channel_mean", "channel_var", "channel_var_spread"):
                    row[name] = float(getattr(self.run, name)[net, layer])
                row["log_grad_h"] = float(self.run.log_grad_h[net, layer])
                out.append(row)
        return out


def simulate_conv(
    phi,
    batch_size: int,
    *,
    spatial: tuple[int, ...] | list[int],
    channels: int,
    depth: int,
    networks: int,
    kernel: int = 3,
    padding: str = "periodic",
    progress=None,
    **options,
) -> ConvSimulation:
    """Simulate K conv-BN networks (module docstring) and estimate the per-layer gradient growth lambda_G and the
    Gram summaries per network, then across networks.

    Args:
        phi: nonlinearity spec (a Nonlinearity for phi's own parameters).
        batch_size: B (>= 2; B = 2 is fine here: BN's statistics run over B x positions).
        spatial: image shape, (L,) or (H, W).
        channels, depth, networks: C, L layers, K networks.
        kernel: odd kernel size k; padding: ``"periodic"`` or ``"zero"``.
        progress: called with the number of networks finished after each chunk.
        **options: eps, gamma, beta, sigma_w, detach_stats, ghost_size, seed, device, dtype, chunk, window_start.

    Returns:
        :class:`ConvSimulation`.
    """
    from ..errors import InputError
    from ..meanfield.conv import check_conv_shape, conv_theory
    from ..nonlinearity import get_nonlinearity
    from .mlp import DTYPES, SimulationConfig, _mean_se, growth_rates, validate
    from .torch_phi import to_torch

    allowed = {"eps", "gamma", "beta", "sigma_w", "detach_stats", "ghost_size", "seed", "device", "dtype", "chunk"}
    unknown = set(options) - allowed - {"window_start"}
    if unknown:
        raise InputError(f"unknown option {sorted(unknown)[0]!r}")
    options = {key: v for key, v in options.items() if v is not None}
    spatial = check_conv_shape(spatial, kernel, padding)
    net_keys = {"eps", "sigma_w", "detach_stats", "ghost_size"}
    network = NetworkSpec(channels, depth, **{key: v for key, v in options.items() if key in net_keys})
    rest = {key: v for key, v in options.items() if key not in net_keys}
    base = get_nonlinearity(phi)
    config = SimulationConfig(phi=base.name, network=network, networks=networks, **rest)
    validate(config, [batch_size])
    spec = ConvSpec(network, spatial, kernel, padding)
    per_network = 8 * batch_size * spec.positions * channels * depth
    from ..options import check_memory

    check_memory(per_network * (8 if config.dtype == "float64" else 4), "one network's activations", "channels")
    phi_t = to_torch(base.affine_input(config.gamma, config.beta))
    device, dtype = torch.device(config.device), DTYPES[config.dtype]
    gen = torch.Generator(device=device).manual_seed(config.seed)
    chunk = max(1, min(config.chunk, 60_000_000 // per_network))
    parts = []
    for first in range(0, networks, chunk):
        k = min(chunk, networks - first)
        x = torch.randn(batch_size, k * channels, *spatial, generator=gen, device=device, dtype=dtype)
        parts.append(run_conv_ensemble(phi_t, x, spec, k, gen))
        if progress is not None:
            progress(first + k)
    names = ("q", "c_space", "c_batch", "channel_mean", "channel_var", "channel_var_spread", "log_grad_h")
    run = ConvRun(*(torch.cat([getattr(p, n) for p in parts]) for n in names))
    start, stop = config.window()
    lam, lam_se = _mean_se(growth_rates(run.log_grad_h, start, stop))
    if not math.isfinite(lam):
        raise InputError(f"the simulation produced non-finite values in {config.dtype}: use dtype='float64'")
    summary = {"lambda_G_mean": lam, "lambda_G_stderr": lam_se}
    for name in ("q", "c_space", "c_batch", "channel_var"):
        mean, se = _mean_se(getattr(run, name)[:, start:stop].mean(dim=1).numpy())
        summary[f"{name}_mean"], summary[f"{name}_stderr"] = mean, se
    group = network.ghost_size or batch_size
    summary["lambda_G_theory"] = None
    if not network.detach_stats and group * spec.positions >= 4 and (padding == "periodic" or network.eps == 0):
        t = conv_theory(
            base, group, spatial=spatial, kernel=kernel, padding=padding, gamma=config.gamma, beta=config.beta,
            eps=network.eps, sigma_w=network.sigma_w,
        )  # fmt: skip
        summary.update(lambda_G_theory=t.lambda_G, c_star_theory=t.c_star, q_star_theory=t.q_star)
    settings = config.settings()
    settings.update(batch_size=batch_size, spatial="x".join(map(str, spatial)), kernel=kernel, padding=padding)
    settings["channels"] = settings.pop("width")
    for drop in ("placement", "two_batches", "init"):
        settings.pop(drop, None)
    return ConvSimulation(spec, settings, run, summary)
