"""Finite-width residual BN networks (theory.md section 4c): per-block stream statistics and gradient norms.

Network: ``x^(l+1) = x^l + alpha_l F(x^l)``, l = 0 .. D-1, branch ``F = K x [BN -> phi -> linear]``
(``branch="bn_first"``) or ``linear -> K x [BN -> phi -> linear]`` (``"linear_first"``); the BN, the weight
initialisation and the nonlinearity are the plain simulator's (:mod:`.network`), so every option of
:class:`~bnmft.simulate.network.NetworkSpec` except ``placement`` applies (``depth`` counts blocks). Inputs: Gaussian
batches of width N, ``x^0_(b,n) ~ N(0, q_in)`` i.i.d. (different per network). Loss ``sum(R * x^D)`` with a fixed
Gaussian R (an i.i.d. gradient at the output); hooks on every stream tensor record ``||dL/dx^l||^2`` and rescale the
gradient to norm 1 (log-space bookkeeping as in :mod:`.network`).

Estimates per block, across networks (mean and standard error): the stream's per-neuron centred, biased batch
variance (within each ghost batch, where BN's statistics are taken); its distance to the BSB1 shape;
``E||g^l||^2 / E||g^D||^2`` as the mean of the per-network ratios (g^D = R is nearly deterministic:
``||R||^2 / (N B) = 1 + O(1/sqrt(N B))``) and its log, with the delta-method error ``se / mean``.
Compare with :func:`bnmft.residual`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .._io import write_csv
from ..errors import InputError
from ..meanfield.residual import BRANCHES, ResidualResult, check_alpha, residual_theory
from ..nonlinearity import Nonlinearity, get_nonlinearity
from ..options import check_int, check_real
from .mlp import DTYPES, MAX_ELEMENTS, SimulationConfig, validate
from .conditional import choose_sampler, conditional_linear
from .network import NetworkSpec, Segment, _gram_stats, batch_norm, init_weights
from .torch_phi import TorchFn, to_torch


@dataclass(frozen=True)
class ResidualConfig:
    """A residual simulation: the plain simulation's settings (:class:`~bnmft.simulate.mlp.SimulationConfig`,
    whose network's depth is the number of blocks) and the residual architecture."""

    simulation: SimulationConfig
    batch_size: int
    branch_depth: int = 1
    alpha: tuple[float, ...] = ()
    branch: str = "bn_first"
    input_variance: float = 1.0

    def settings(self) -> dict:
        out = self.simulation.settings()
        out.pop("placement", None)
        out.pop("two_batches", None)
        out.update(
            batch_size=self.batch_size,
            branch_depth=self.branch_depth,
            branch=self.branch,
            input_variance=self.input_variance,
        )
        return out


@dataclass
class ResidualRun:
    """Per-block measurements of K networks (float64 CPU tensors, shape (K, D + 1)): stream variance, distance to
    BSB1, and the log squared gradient norm w.r.t. each stream tensor x^l."""

    stream_variance: torch.Tensor
    distance: torch.Tensor
    log_grad: torch.Tensor


def run_residual_ensemble(
    phi: TorchFn, inputs: torch.Tensor, spec: NetworkSpec, cfg: ResidualConfig, gen: torch.Generator
) -> ResidualRun:
    """Forward and backward pass of K residual networks: inputs (K, B, N) -> per-block measurements."""
    k, b, n = inputs.shape
    device, dtype = inputs.device, inputs.dtype
    group = spec.ghost_size or b
    seg = Segment(0, b, group)
    x = inputs.clone().requires_grad_(True)
    streams = [x]
    noise_gen = None
    if spec.sampler == "conditional":  # the backward's draws: their own stream, seeded from gen
        noise_gen = torch.Generator(device=device).manual_seed(
            int(torch.randint(0, 2**62, (1,), generator=gen, device=device).item())
        )

    def linear(v: torch.Tensor) -> torch.Tensor:
        if spec.sampler == "conditional":
            return conditional_linear(v, n, spec.sigma_w, gen, noise_gen, init=spec.init)
        return torch.bmm(v, init_weights(k, n, n, spec, gen, device, dtype).transpose(1, 2))

    for block in range(spec.depth):
        h = x
        if cfg.branch == "linear_first":
            h = linear(h)
        for _ in range(cfg.branch_depth):
            y = phi(batch_norm(h, group, spec.eps, spec.detach_stats))
            h = linear(y)
        x = x + cfg.alpha[block] * h
        streams.append(x)
    variance, distance = [], []
    with torch.no_grad():
        for s in streams:
            grouped = s.reshape(k, b // group, group, n)  # the variance BN sees: within each (ghost) group
            centred = grouped - grouped.mean(dim=2, keepdim=True)
            variance.append(centred.pow(2).sum(dim=(1, 2, 3), dtype=torch.float64) / (b * n))
            distance.append(_gram_stats(s.detach(), seg)[2].double())
    readout = torch.randn(x.shape, generator=gen, device=device, dtype=dtype)
    logs = torch.zeros(len(streams), k, dtype=torch.float64)

    def make_hook(i):
        def hook(grad):
            sq = grad.pow(2).sum(dim=(1, 2), dtype=torch.float64)
            logs[i] = torch.log(sq).cpu()
            return grad * torch.rsqrt(sq).clamp(max=1e300).to(grad.dtype)[:, None, None]

        return hook

    for i, s in enumerate(streams):
        s.register_hook(make_hook(i))
    (x * readout).sum().backward()
    log_grad = torch.flip(torch.cumsum(torch.flip(logs, [0]), 0), [0])  # the true log norms: add the scales back
    return ResidualRun(
        stream_variance=torch.stack(variance, 1).cpu(),
        distance=torch.stack(distance, 1).cpu(),
        log_grad=log_grad.T.contiguous(),
    )


@dataclass
class ResidualSimulation:
    """Measurements of a residual simulation, with the theory (:func:`bnmft.residual`) at the same settings.

    ``blocks``: one dict per block l = 0 .. D: ``stream_variance`` (+ ``_stderr``), ``distance`` (+ ``_stderr``),
    ``grad_norm_sq`` = mean over networks of ``||g^l||^2 / ||g^D||^2`` (+ ``_stderr``), ``log_grad_ratio`` (its
    log, + ``_stderr``), and the theory's ``stream_variance_theory``, ``log_grad_ratio_theory``."""

    config: ResidualConfig
    run: ResidualRun
    blocks: list[dict]
    theory: ResidualResult | None

    def rows(self) -> list[dict]:
        """Tidy table: one dict per (network, block), every setting in its columns (as the plain simulator's)."""
        settings = self.config.settings()
        out = []
        k, blocks = self.run.log_grad.shape
        for net in range(k):
            for block in range(blocks):
                out.append(
                    dict(
                        settings,
                        network=net,
                        block=block,
                        alpha=self.config.alpha[block] if block < blocks - 1 else None,
                        stream_variance=float(self.run.stream_variance[net, block]),
                        distance=float(self.run.distance[net, block]),
                        log_grad=float(self.run.log_grad[net, block]),
                    )
                )
        return out

    def save(self, directory: str | Path) -> dict[str, Path]:
        """Write ``blocks.csv`` (the tidy table) and ``summary.csv`` (per block, with the theory)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = {"blocks": directory / "blocks.csv", "summary": directory / "summary.csv"}
        write_csv(paths["blocks"], self.rows())
        write_csv(paths["summary"], self.blocks)
        return paths


def _mean_se(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    k = values.shape[0]
    se = values.std(axis=0, ddof=1) / math.sqrt(k) if k > 1 else np.full(values.shape[1], math.inf)
    return values.mean(axis=0), se


def simulate_residual(
    phi: str | Nonlinearity,
    batch_size: int,
    *,
    width: int,
    depth: int,
    networks: int,
    branch_depth: int = 1,
    alpha: float | Sequence[float] = 1.0,
    branch: str = "bn_first",
    input_variance: float = 1.0,
    progress: Callable[[int], None] | None = None,
    **options,
) -> ResidualSimulation:
    """Simulate K residual BN networks of ``depth`` blocks and measure them per block (module docstring).

    Args:
        phi: nonlinearity spec; ``alpha_relu``'s exponent is not an option here (``alpha`` is the branch scale):
            pass ``get_nonlinearity("alpha_relu", alpha=...)``.
        batch_size: B (>= 2; the theory column needs B >= 4).
        width, depth, networks: N, D (blocks), K (networks).
        branch_depth, alpha, branch, input_variance: as for :func:`bnmft.residual`.
        progress: called with the number of networks finished after each chunk.
        **options: eps, gamma, beta, sigma_w, init, detach_stats, ghost_size, seed, device, dtype, chunk.

    Returns:
        :class:`ResidualSimulation`; same seed, same numbers (same device and dtype).
    """
    unknown = set(options) - {
        "sampler",
        "eps",
        "gamma",
        "beta",
        "sigma_w",
        "init",
        "detach_stats",
        "ghost_size",
        "seed",
        "device",
        "dtype",
        "chunk",
    }
    if unknown:
        raise InputError(f"unknown option {sorted(unknown)[0]!r}")
    options = {key: v for key, v in options.items() if v is not None}
    check_int("depth", depth)
    check_int("branch_depth", branch_depth)
    if branch not in BRANCHES:
        raise InputError(f"branch must be one of {BRANCHES}, got {branch!r}")
    alphas = check_alpha(alpha, depth)
    q_in = check_real("input_variance", input_variance, positive=True)
    network_keys = {"eps", "sigma_w", "init", "detach_stats", "ghost_size", "sampler"}
    base = get_nonlinearity(phi)
    network = NetworkSpec(width, depth, **{key: v for key, v in options.items() if key in network_keys})
    if network.sampler == "auto":  # the faster valid one (recorded in the settings)
        network = replace(network, sampler=choose_sampler(width, [batch_size], network.init))
    rest = {key: v for key, v in options.items() if key not in network_keys}
    sim = SimulationConfig(phi=base.name, network=network, networks=networks, window_start=0, **rest)
    cfg = ResidualConfig(sim, batch_size, branch_depth, alphas, branch, q_in)
    # the plain simulator's checks (its lambda_G window needs 5 layers; the residual estimates need none)
    validate(replace(sim, network=replace(network, depth=max(depth, 5))), [batch_size])
    per_network = 4 * (branch_depth + 2) * (depth + 1) * batch_size * width
    if per_network * (8 if sim.dtype == "float64" else 4) > 8 * 2**30:
        raise InputError(f"width x depth x branch_depth x batch_size too large for memory ({per_network:.3g} values)")
    phi_t = to_torch(base.affine_input(sim.gamma, sim.beta))
    device, dtype = torch.device(sim.device), DTYPES[sim.dtype]
    gen = torch.Generator(device=device).manual_seed(sim.seed)
    chunk = max(1, min(sim.chunk, MAX_ELEMENTS // per_network))
    parts = []
    for first in range(0, networks, chunk):
        k = min(chunk, networks - first)
        x = torch.randn(k, batch_size, width, generator=gen, device=device, dtype=dtype) * math.sqrt(q_in)
        parts.append(run_residual_ensemble(phi_t, x, network, cfg, gen))
        if progress is not None:
            progress(first + k)
    run = ResidualRun(*(torch.cat([getattr(p, f) for p in parts]) for f in ("stream_variance", "distance", "log_grad")))
    if not torch.isfinite(run.log_grad).all() or not torch.isfinite(run.stream_variance).all():
        raise InputError(f"the simulation produced non-finite values in {sim.dtype}: use dtype='float64'")
    var_mean, var_se = _mean_se(run.stream_variance.numpy())
    dist_mean, dist_se = _mean_se(run.distance.numpy())
    ratios = np.exp(run.log_grad.numpy() - run.log_grad.numpy()[:, -1:])
    ratio_mean, ratio_se = _mean_se(ratios)
    t = None
    group = network.ghost_size or batch_size
    if group >= 4 and not network.detach_stats:
        t = residual_theory(
            base,
            group,
            depth=depth,
            branch_depth=branch_depth,
            alpha=list(alphas),
            branch=branch,
            eps=network.eps,
            sigma_w=network.sigma_w,
            gamma=sim.gamma,
            beta=sim.beta,
            input_variance=q_in,
        )
    blocks = []
    for i in range(depth + 1):
        row = {
            "block": i,
            "stream_variance": float(var_mean[i]),
            "stream_variance_stderr": float(var_se[i]),
            "distance": float(dist_mean[i]),
            "distance_stderr": float(dist_se[i]),
            "grad_norm_sq": float(ratio_mean[i]),
            "grad_norm_sq_stderr": float(ratio_se[i]),
            "log_grad_ratio": float(np.log(ratio_mean[i])),
            "log_grad_ratio_stderr": float(ratio_se[i] / ratio_mean[i]),
        }
        if t is not None:
            row["stream_variance_theory"] = t.blocks[i]["stream_variance"]
            row["log_grad_ratio_theory"] = t.blocks[i]["log_grad_ratio"]
        blocks.append(row)
    return ResidualSimulation(cfg, run, blocks, t)
