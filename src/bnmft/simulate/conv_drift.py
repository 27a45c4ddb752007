"""The drift of finite-channel conv-BN stacks away from the mean field, measured per layer (docs/conv_width.md).

The network is the conv simulator's (:mod:`.conv`: conv -> BN per channel over (batch, positions) -> phi, weights
``N(0, 1 / (k^d C))``, eps = 0, Gaussian inputs), run here with extra per-layer measurements of the state the stack
drifts to. Per network and layer (post-activation x = phi(BN(h)), centred per channel over the n pairs):

* ``spread``: the variance over the B examples of ``rho_a``, example a's centred squared norm (mean over its
  channels and positions) over the batch mean; ``max_share``: the largest example's share ``max_a rho_a / B``;
* ``pair_share``: the largest (example, position) pair's share of the pre-activation norm ``sum y^2`` (BN output);
* ``kurtosis``: ``E y^4 / (E y^2)^2`` of the BN output over all (channel, pair) values (3 for a Gaussian);
* ``c_space``, ``c_batch``: as in :mod:`.conv`; ``var_x``: the per-channel variance of x, averaged over channels;
  ``inv_var``: ``mean_c 1 / Var_c(h)`` of the pre-activations (the backward pass divides channel c by its std);
* ``log_grad_h``: the log squared gradient norm w.r.t. the pre-activations (exact backprop, log-space rescaling).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError
from ..meanfield.conv import check_conv_shape
from ..nonlinearity import resolve
from ..options import check_int, check_seed
from .conv import ConvSpec, channel_batch_norm, conv_weights, convolve, gram_summary
from .network import NetworkSpec
from .runner import track_log_norms, true_log_norms
from .torch_phi import to_torch

#: the per-layer measurements, in the order of :attr:`DriftRun.values`' last axis
NAMES = ("spread", "max_share", "pair_share", "kurtosis", "c_space", "c_batch", "var_x", "inv_var")


@dataclass
class DriftRun:
    """``values`` (K, L, len(NAMES)) float64 and ``log_grad_h`` (K, L) of K networks (layer 1 first)."""

    values: np.ndarray
    log_grad_h: np.ndarray

    def get(self, name: str) -> np.ndarray:
        """One measurement, (K, L)."""
        return self.values[:, :, NAMES.index(name)]

    def rates(self) -> np.ndarray:
        """(K, L - 1) per-layer backward growth ``exp(log_grad_h[l] - log_grad_h[l + 1])``."""
        return np.exp(self.log_grad_h[:, :-1] - self.log_grad_h[:, 1:])

    def departure_layers(self, threshold: float = 0.25) -> np.ndarray:
        """Per network, the first layer (1-based) with ``spread >= threshold``; NaN if none (censored)."""
        hit = self.get("spread") >= threshold
        return np.where(hit.any(axis=1), hit.argmax(axis=1) + 1.0, np.nan)


def _run_chunk(phi, b: int, spec: ConvSpec, k: int, gen: torch.Generator) -> DriftRun:
    c, p, dtype = spec.network.width, spec.positions, torch.float32
    x = torch.randn(b, k * c, *spec.spatial, generator=gen, dtype=dtype)
    pre, rows = [], []
    for _ in range(spec.network.depth):
        h = convolve(x, conv_weights(k, spec, gen, "cpu", dtype), spec, k)
        if not pre:
            h.requires_grad_(True)
        pre.append(h)
        y = channel_batch_norm(h, k, spec, b)
        x = phi(y)
        with torch.no_grad():
            hh = h.detach().double().reshape(b, k, c, p)
            inv_var = (1 / hh.var(dim=(0, 3), unbiased=False)).mean(1)
            _, c_space, c_batch = gram_summary(x.detach(), k, spec)
            yy = y.detach().double().reshape(b, k, c, p)
            xc = x.detach().double().reshape(b, k, c, p)
            xc = xc - xc.mean(dim=(0, 3), keepdim=True)
            r = xc.pow(2).mean(dim=(2, 3))  # (B, K)
            r = r / r.mean(0, keepdim=True)
            y2 = yy.pow(2).mean(2)  # (B, K, P): per pair
            pair_share = y2.permute(1, 0, 2).reshape(k, -1).max(1).values / y2.sum(dim=(0, 2))
            kurt = yy.pow(4).mean(dim=(0, 2, 3)) / yy.pow(2).mean(dim=(0, 2, 3)).pow(2)
            rows.append(torch.stack([r.var(0, unbiased=False), r.max(0).values / b, pair_share, kurt, c_space,
                                     c_batch, xc.pow(2).mean(dim=(0, 2, 3)), inv_var], 1))  # fmt: skip
    logs = track_log_norms(pre, k, view=lambda g: g.reshape(b, k, -1), network_dim=1)
    (x * torch.randn(x.shape, generator=gen, dtype=dtype)).sum().backward()
    return DriftRun(torch.stack(rows, 1).numpy(), true_log_norms(logs).numpy())


def measure_conv_drift(
    phi: str,
    batch_size: int,
    spatial: tuple[int, ...] | list[int] | str,
    channels: int,
    depth: int,
    networks: int,
    *,
    kernel: int = 3,
    chunk: int = 8,
    seed: int = 0,
) -> DriftRun:
    """K = ``networks`` relu-type conv-BN stacks (periodic padding, float32 on the CPU, ``chunk`` networks per pass)
    with the module's per-layer measurements (chunk i drawn
    from seed + i).

    Raises:
        InputError: a bad phi, batch size (< 2), shape, kernel, channels, depth, networks, chunk or seed.
    """
    b = check_int("batch_size", batch_size, 2)
    shape = check_conv_shape(spatial, kernel, "periodic")
    c, depth = check_int("channels", channels, 2), check_int("depth", depth, 2)
    networks, chunk, seed = check_int("networks", networks), check_int("chunk", chunk), check_seed(seed)
    if math.prod(shape) * b < 2:
        raise InputError("batch_size x positions must be >= 2")
    phi_t = to_torch(resolve(phi)[1])
    spec = ConvSpec(NetworkSpec(c, depth), shape, kernel, "periodic")
    parts = [_run_chunk(phi_t, b, spec, min(chunk, networks - s), torch.Generator().manual_seed(seed + i))
             for i, s in enumerate(range(0, networks, chunk))]  # fmt: skip
    return DriftRun(np.concatenate([q.values for q in parts]), np.concatenate([q.log_grad_h for q in parts]))


__all__ = ["NAMES", "DriftRun", "measure_conv_drift"]
