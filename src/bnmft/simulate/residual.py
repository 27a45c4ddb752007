"""Finite-width residual BN networks (docs/theory.md section 9): per-block stream statistics and gradient norms.

Network: ``x^(l+1) = x^l + a_l F(x^l)`` (a_l: the branch scale), l = 0 .. D-1, branch
``F = K x [BN -> phi -> linear]``
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
Compare with :func:`bnmft.residual_theory`.
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
from ..meanfield.residual import (
    BRANCHES,
    DEFAULT_CRITERION,
    ResidualResult,
    branch_scale_and_params,
    check_branch_scale,
    residual_theory_resolved,
)
from ..nonlinearity import Nonlinearity, resolve
from ..options import check_int, check_real
from .conditional import choose_sampler, conditional_linear
from .mlp import DTYPES, SimulationConfig, validate
from .network import NetworkSpec, Segment, batch_norm, gram_stats, init_weights
from .runner import mean_se, run_family, tidy_rows, track_log_norms, true_log_norms
from .torch_phi import TorchFn, to_torch


@dataclass(frozen=True)
class ResidualConfig:
    """A residual simulation: the plain simulation's settings (:class:`~bnmft.simulate.mlp.SimulationConfig`,
    whose network's depth is the number of blocks) and the residual architecture."""

    simulation: SimulationConfig
    batch_size: int
    branch_depth: int = 1
    branch_scale: tuple[float, ...] = ()
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
        x = x + cfg.branch_scale[block] * h
        streams.append(x)
    variance, distance = [], []
    with torch.no_grad():
        for s in streams:
            grouped = s.reshape(k, b // group, group, n)  # the variance BN sees: within each (ghost) group
            centred = grouped - grouped.mean(dim=2, keepdim=True)
            variance.append(centred.pow(2).sum(dim=(1, 2, 3), dtype=torch.float64) / (b * n))
            distance.append(gram_stats(s.detach(), seg)[2].double())
    readout = torch.randn(x.shape, generator=gen, device=device, dtype=dtype)
    logs = track_log_norms(streams, k)  # (K, B, N): the networks along dim 0
    (x * readout).sum().backward()
    return ResidualRun(
        stream_variance=torch.stack(variance, 1).cpu(),
        distance=torch.stack(distance, 1).cpu(),
        log_grad=true_log_norms(logs),
    )


@dataclass
class _ResidualChunks:
    """The residual family for :func:`~bnmft.simulate.runner.run_family`: a chunk of K networks -> a
    :class:`ResidualRun`."""

    config: ResidualConfig
    phi: TorchFn
    size_argument: str = "width"

    @property
    def what(self) -> str:
        net = self.config.simulation.network
        return (f"one network (width {net.width}, {net.depth} blocks of {self.config.branch_depth} layers, batch "
                f"{self.config.batch_size})")  # fmt: skip

    @property
    def network_values(self) -> int:
        cfg, net = self.config, self.config.simulation.network
        return 4 * (cfg.branch_depth + 2) * (net.depth + 1) * cfg.batch_size * net.width

    @property
    def network_bytes(self) -> int:
        return self.network_values * (8 if self.config.simulation.dtype == "float64" else 4)

    def run_chunk(self, k: int, gen: torch.Generator) -> ResidualRun:
        sim = self.config.simulation
        device, dtype = torch.device(sim.device), DTYPES[sim.dtype]
        x = torch.randn(k, self.config.batch_size, sim.network.width, generator=gen, device=device, dtype=dtype)
        x = x * math.sqrt(self.config.input_variance)
        return run_residual_ensemble(self.phi, x, sim.network, self.config, gen)


@dataclass
class ResidualSimulation:
    """Measurements of a residual simulation, with the theory (:func:`bnmft.residual_theory`) at the same settings.

    ``blocks``: one dict per block l = 0 .. D: ``stream_variance`` (+ ``_stderr``), ``distance`` (+ ``_stderr``),
    ``grad_norm_sq`` = mean over networks of ``||g^l||^2 / ||g^D||^2`` (+ ``_stderr``), ``log_grad_ratio`` (its
    log, + ``_stderr``), and the theory's ``stream_variance_theory``, ``log_grad_ratio_theory``."""

    config: ResidualConfig
    run: ResidualRun
    blocks: list[dict]
    theory: ResidualResult | None

    def rows(self) -> list[dict]:
        """Tidy table: one dict per (network, block), every setting in its columns (as the plain simulator's)."""
        blocks = self.run.log_grad.shape[1]
        columns = {name: getattr(self.run, name) for name in ("stream_variance", "distance", "log_grad")}
        return tidy_rows(self.config.settings(), columns, index="block", first=0, per_index=lambda block: dict(
            branch_scale=self.config.branch_scale[block] if block < blocks - 1 else None))  # fmt: skip

    def save(self, directory: str | Path) -> dict[str, Path]:
        """Write ``blocks.csv`` (the tidy table) and ``summary.csv`` (per block, with the theory)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = {"blocks": directory / "blocks.csv", "summary": directory / "summary.csv"}
        write_csv(paths["blocks"], self.rows())
        write_csv(paths["summary"], self.blocks)
        return paths


def simulate_residual(
    phi: str | Nonlinearity,
    batch_size: int,
    *,
    width: int,
    depth: int,
    networks: int,
    branch_depth: int = 1,
    branch_scale: float | Sequence[float] | None = None,
    branch: str = "bn_first",
    input_variance: float = 1.0,
    progress: Callable[[int], None] | None = None,
    **options,
) -> ResidualSimulation:
    """Simulate K residual BN networks of ``depth`` blocks and measure them per block (module docstring).

    Args:
        phi: nonlinearity spec (as for :func:`bnmft.theory`); phi's parameters (``alpha`` of alpha_relu and elu,
            ``slope`` of leaky_relu) go in ``options``.
        batch_size: B (>= 2; the theory column needs B >= 4).
        width, depth, networks: N, D (blocks), K (networks).
        branch_depth, branch_scale, branch, input_variance: as for :func:`bnmft.residual_theory` (``alpha=`` as
            there: phi's parameter for alpha_relu and elu, else the deprecated name of ``branch_scale``).
        progress: called with the number of networks finished after each chunk.
        **options: eps, gamma, beta, sigma_w, init, detach_stats, ghost_size, seed, device, dtype, chunk; alpha,
            slope (phi's).

    Raises:
        InputError: a bad phi, option, size, branch or branch scale; both ``branch_scale`` and the deprecated
            ``alpha``; a simulation whose values overflow its dtype.

    Returns:
        :class:`ResidualSimulation`; same seed, same numbers (same device and dtype).
    """
    scale, options = branch_scale_and_params(phi, branch_scale, options)
    params = {k: options.pop(k) for k in ("alpha", "slope") if options.get(k) is not None}
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
    scales = check_branch_scale(scale, depth)
    q_in = check_real("input_variance", input_variance, positive=True)
    network_keys = {"eps", "sigma_w", "init", "detach_stats", "ghost_size", "sampler"}
    base, _ = resolve(phi, **params)  # phi resolved once; gamma, beta folded in below (once checked)
    network = NetworkSpec(width, depth, **{key: v for key, v in options.items() if key in network_keys})
    if network.sampler == "auto":  # the faster valid one (recorded in the settings)
        network = replace(network, sampler=choose_sampler(width, [batch_size], network.init))
    rest = {key: v for key, v in options.items() if key not in network_keys}
    sim = SimulationConfig(phi=base.name, network=network, networks=networks, window_start=0, params=params, **rest)
    cfg = ResidualConfig(sim, batch_size, branch_depth, scales, branch, q_in)
    # the plain simulator's checks (its lambda_G window needs 5 layers; the residual estimates need none)
    validate(replace(sim, network=replace(network, depth=max(depth, 5))), [batch_size])
    effective = base.affine_input(sim.gamma, sim.beta)
    phi_t = to_torch(effective)
    run = run_family(_ResidualChunks(cfg, phi_t), networks=networks, chunk=sim.chunk, seed=sim.seed, device=sim.device,
                     progress=progress)  # fmt: skip
    if not torch.isfinite(run.log_grad).all() or not torch.isfinite(run.stream_variance).all():
        raise InputError(f"the simulation produced non-finite values in {sim.dtype}: use dtype='float64'")
    var_mean, var_se = mean_se(run.stream_variance.numpy())
    dist_mean, dist_se = mean_se(run.distance.numpy())
    ratios = np.exp(run.log_grad.numpy() - run.log_grad.numpy()[:, -1:])
    ratio_mean, ratio_se = mean_se(ratios)
    t = None
    group = network.ghost_size or batch_size
    if group >= 4 and not network.detach_stats:
        t = residual_theory_resolved(
            base, effective, group, depth=depth, branch_depth=branch_depth, branch=branch,
            branch_scale=scales[0] if len(set(scales)) == 1 and isinstance(scale, int | float) else scales,
            eps=network.eps, sigma_w=network.sigma_w, gamma=sim.gamma, beta=sim.beta, input_variance=q_in,
            input_correlation=0.0, output_gradient="iid", criterion=DEFAULT_CRITERION, trainable_depth=True,
        )  # fmt: skip
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
