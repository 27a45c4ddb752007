"""Finite-channel convolutional BN networks (docs/theory.md section 10; docs/convolutional.md).

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
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import InputError
from ..meanfield.api import check_theory_input
from ..meanfield.conv import check_conv_shape, conv_theory_resolved
from ..nonlinearity import Nonlinearity, resolve
from .mlp import DTYPES, SimulationConfig, validate
from .network import NetworkSpec, batch_norm
from .runner import growth_rates, mean_se, run_family, tidy_rows, track_log_norms, true_log_norms, window_mean
from .torch_phi import TorchFn, to_torch


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


def gram_summary(x: torch.Tensor, k: int, spec: ConvSpec):
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
    pre: list[torch.Tensor] = []
    stats: list[tuple[torch.Tensor, ...]] = []
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
            stats.append((*gram_summary(x.detach(), k, spec), mean.mean(1), var.mean(1), var.std(1)))
    readout = torch.randn(x.shape, generator=gen, device=device, dtype=dtype)
    # (B, K C, *spatial) seen as (B, K, C x positions): the networks along dim 1
    logs = track_log_norms(pre, k, view=lambda g: g.reshape(b, k, -1), network_dim=1)
    (x * readout).sum().backward()
    q, c_space, c_batch, mean, var, spread = (torch.stack([s[i] for s in stats], 1).double().cpu() for i in range(6))
    return ConvRun(q, c_space, c_batch, mean, var, spread, log_grad_h=true_log_norms(logs))


@dataclass
class _ConvChunks:
    """The conv family for :func:`~bnmft.simulate.runner.run_family`: a chunk of K networks -> a :class:`ConvRun`."""

    spec: ConvSpec
    batch_size: int
    phi: TorchFn
    dtype: str
    device: str
    size_argument: str = "channels"

    @property
    def what(self) -> str:
        net = self.spec.network
        return (f"one network's activations and weights ({net.width} channels, depth {net.depth}, batch "
                f"{self.batch_size} x {self.spec.positions} positions)")  # fmt: skip

    @property
    def _activations(self) -> int:  # values kept for backprop per network: ~8 per (example, position, channel, layer)
        return 8 * self.batch_size * self.spec.positions * self.spec.network.width * self.spec.network.depth

    @property
    def _weights(self) -> int:  # every layer's C x C x k^d weights, kept for backprop
        n = self.spec.network
        return n.depth * n.width * n.width * self.spec.kernel ** len(self.spec.spatial)

    @property
    def network_values(self) -> int:
        # the convolutions' padded copies and workspaces on top: chunks of at most MAX_ELEMENTS / 2.5 activations
        return self._activations * 5 // 2 + self._weights

    @property
    def network_bytes(self) -> int:
        return (self._activations + self._weights) * (8 if self.dtype == "float64" else 4)

    def run_chunk(self, k: int, gen: torch.Generator) -> ConvRun:
        c, spatial = self.spec.network.width, self.spec.spatial
        device, dtype = torch.device(self.device), DTYPES[self.dtype]
        x = torch.randn(self.batch_size, k * c, *spatial, generator=gen, device=device, dtype=dtype)
        return run_conv_ensemble(self.phi, x, self.spec, k, gen)


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
        names = ("q", "c_space", "c_batch", "channel_mean", "channel_var", "channel_var_spread", "log_grad_h")
        return tidy_rows(self.settings, {name: getattr(self.run, name) for name in names}, index="layer", first=1)


def simulate_conv(
    phi: str | Nonlinearity,
    batch_size: int,
    *,
    spatial: tuple[int, ...] | list[int],
    channels: int,
    depth: int,
    networks: int,
    kernel: int = 3,
    padding: str = "periodic",
    progress: Callable[[int], None] | None = None,
    **options,
) -> ConvSimulation:
    """Simulate K conv-BN networks (module docstring) and estimate the per-layer gradient growth lambda_G and the
    Gram summaries per network, then across networks.

    Args:
        phi: nonlinearity spec (as for :func:`bnmft.theory`; phi's parameters alpha, slope go in ``options``).
        batch_size: B (>= 2; B = 2 is fine here: BN's statistics run over B x positions).
        spatial: image shape, (L,) or (H, W).
        channels, depth, networks: C, L layers, K networks.
        kernel: odd kernel size k; padding: ``"periodic"`` or ``"zero"``.
        progress: called with the number of networks finished after each chunk.
        **options: eps, gamma, beta, sigma_w, detach_stats, ghost_size, seed, device, dtype, chunk, window_start;
            alpha, slope (phi's).

    Returns:
        :class:`ConvSimulation`.

    Raises:
        InputError: a bad phi, option, size, shape, kernel or padding; a simulation that overflows its dtype.
    """
    allowed = {"eps", "gamma", "beta", "sigma_w", "detach_stats", "ghost_size", "seed", "device", "dtype", "chunk"}
    params = {k: options.pop(k) for k in ("alpha", "slope") if options.get(k) is not None}
    unknown = set(options) - allowed - {"window_start", "alpha", "slope"}
    if unknown:
        raise InputError(f"unknown option {sorted(unknown)[0]!r}")
    options = {key: v for key, v in options.items() if v is not None}
    spatial = check_conv_shape(spatial, kernel, padding)
    net_keys = {"eps", "sigma_w", "detach_stats", "ghost_size"}
    network = NetworkSpec(channels, depth, **{key: v for key, v in options.items() if key in net_keys})
    rest = {key: v for key, v in options.items() if key not in net_keys}
    base, _ = resolve(phi, **params)  # phi resolved once; gamma, beta folded in below (once checked)
    config = SimulationConfig(phi=base.name, network=network, networks=networks, params=params, **rest)
    validate(config, [batch_size])
    spec = ConvSpec(network, spatial, kernel, padding)
    effective = base.affine_input(config.gamma, config.beta)
    phi_t = to_torch(effective)
    chunks = _ConvChunks(spec, batch_size, phi_t, config.dtype, config.device)
    run = run_family(chunks, networks=networks, chunk=config.chunk, seed=config.seed, device=config.device,
                     progress=progress)  # fmt: skip
    start, stop = config.window()
    lam, lam_se = mean_se(growth_rates(run.log_grad_h, start, stop))
    if not math.isfinite(lam):
        raise InputError(f"the simulation produced non-finite values in {config.dtype}: use dtype='float64'")
    summary = {"lambda_G_mean": lam, "lambda_G_stderr": lam_se}
    for name in ("q", "c_space", "c_batch", "channel_var"):
        mean, se = mean_se(window_mean(getattr(run, name), start, stop))
        summary[f"{name}_mean"], summary[f"{name}_stderr"] = mean, se
    group = network.ghost_size or batch_size
    summary["lambda_G_theory"] = None
    if not network.detach_stats and group * spec.positions >= 4 and (padding == "periodic" or network.eps == 0):
        _, settings = check_theory_input(group * spec.positions, gamma=config.gamma, beta=config.beta,
                                         eps=network.eps, sigma_w=network.sigma_w)  # fmt: skip
        t = conv_theory_resolved(base, effective, group, spatial, kernel, padding, settings, samples=20_000, seed=0)
        summary.update(lambda_G_theory=t.lambda_G, c_star_theory=t.c_star, q_star_theory=t.q_star)
    settings = config.settings()
    settings.update(batch_size=batch_size, spatial="x".join(map(str, spatial)), kernel=kernel, padding=padding)
    settings["channels"] = settings.pop("width")
    for drop in ("placement", "two_batches", "init"):
        settings.pop(drop, None)
    return ConvSimulation(spec, settings, run, summary)
