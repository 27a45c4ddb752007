"""``bnmft.simulate.simulate_mlp``: finite-width BN networks measured against the mean-field theory.

K independent networks (run in chunks of ``chunk`` networks with batched matrix products) each see one batch
of B Gaussian inputs for every batch size B (different inputs per network); all batch sizes run through the
same networks, normalised separately, so the weights are drawn once for all of them. Per layer and network we record
the post-activation Gram statistics, the squared gradient norms with respect to pre-activations and weights
(log space), and, with ``two_batches``, the correlation between two batches through the same weights.

Estimates (per batch size):

* ``lambda_G``: per network, the mean over the stationary window (layers ``[window_start, depth - 3)``,
  ``window_start = max(3, depth // 3)`` by default: the forward pass has reached BSB1 and the top-level gradient
  has aligned with G) of the per-layer growth factors ``||dL/dh^l||^2 / ||dL/dh^(l+1)||^2`` (the exponentiated
  per-layer slopes of the log norm); then the mean and standard error across networks. The arithmetic mean
  estimates the theory's ``E`` of the growth; the regression slope of the log norm (kept as
  ``lambda_G_geometric``) estimates ``exp E log``, which is biased low at finite width when the factor is
  heavy-tailed (B = 4, where its variance is infinite).
* ``c_star`` (and ``q_star``): per network, the average over the same window of the off-diagonal / diagonal of
  the Gram; mean and standard error across networks.

The tidy table has one row per (batch size, network, layer) with every setting in its columns.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .._io import write_csv
from ..errors import InputError
from ..meanfield.api import check_theory_input, theory_resolved
from ..nonlinearity import Nonlinearity, resolve
from ..options import check_bn_options, check_int, check_seed
from .conditional import choose_sampler
from .extrapolation import WidthExtrapolation, extrapolate
from .network import INITS, PLACEMENTS, SAMPLERS, EnsembleRun, NetworkSpec, Segment, run_ensemble, segments_for
from .runner import growth_rates, mean_se, run_family, slope_rates, tidy_rows, window_mean
from .torch_phi import TorchFn, to_torch

DEVICES = ("cpu", "cuda")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
#: dtype -> (smallest sigma_w, largest sigma_w, largest eps) whose squared activations stay representable (and far
#: above the 1e-30 that stands for eps = 0 in the fused kernel)
SCALE_LIMITS = {"float32": (1e-10, 1e15, 1e30), "float64": (1e-100, 1e100, 1e250)}


@dataclass(frozen=True)
class SimulationConfig:
    """Everything that defines a simulation (and goes into every row of its table): the architecture
    (:class:`~bnmft.simulate.network.NetworkSpec`) and the rest."""

    phi: str
    network: NetworkSpec
    networks: int
    gamma: float = 1.0
    beta: float = 0.0
    two_batches: bool = False
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    chunk: int = 50
    window_start: int | None = None
    params: dict = field(default_factory=dict)

    def window(self) -> tuple[int, int]:
        depth = self.network.depth
        start = self.window_start if self.window_start is not None else max(3, depth // 3)
        return start, depth - 3

    def settings(self) -> dict:
        """Flat settings for the tidy table: the architecture's fields next to the others."""
        out = {k: v for k, v in asdict(self).items() if k not in ("network", "params", "chunk", "window_start")}
        out.update(asdict(self.network))
        out.update({f"param_{k}": v for k, v in self.params.items()})
        return out


@dataclass
class BatchSummary:
    """Estimates for one batch size, next to the theory's values."""

    batch_size: int
    width: int
    depth: int
    networks: int
    lambda_G_mean: float
    lambda_G_stderr: float
    lambda_G_theory: float | None
    c_star_mean: float
    c_star_stderr: float
    c_star_theory: float | None
    q_star_mean: float
    q_star_stderr: float
    q_star_theory: float | None
    lambda_W_mean: float | None = None
    lambda_W_stderr: float | None = None
    lambda_W_theory: float | None = None
    lambda_G_geometric: float | None = None
    lambda_G_geometric_stderr: float | None = None
    cross_batch_rate_theory: float | None = None  # the per-layer correlation is in the tidy table


@dataclass
class SimulationResult:
    config: SimulationConfig
    summaries: list[BatchSummary]
    runs: dict[int, EnsembleRun]

    def rows(self) -> list[dict]:
        """Tidy table: one dict per (batch size, network, layer)."""
        settings = self.config.settings()
        out = []
        for b, run in self.runs.items():
            columns = {name: getattr(run, name) for name in ("q", "c", "distance", "log_grad_h", "log_grad_w")}
            columns["cross_correlation"] = run.cross
            out += tidy_rows(dict(settings, batch_size=b), columns, index="layer", first=1)
        return out

    def save(self, directory: str | Path) -> dict[str, Path]:
        """Write ``layers.csv`` (the tidy table) and ``summary.csv`` into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = {"layers": directory / "layers.csv", "summary": directory / "summary.csv"}
        rows = self.rows()
        write_csv(paths["layers"], rows)
        write_csv(paths["summary"], [asdict(s) for s in self.summaries])
        return paths


def validate(config: SimulationConfig, batch_sizes: Sequence[int], input_dim: int | None = None) -> None:
    """Reject bad settings before any work starts, naming the argument (``input_dim``: the first layer's fan-in
    when it is not the width)."""
    net = config.network
    check_int("width", net.width)
    check_int("depth", net.depth)
    check_int("networks", config.networks)
    check_int("chunk", config.chunk)
    if not batch_sizes:
        raise InputError("batch_size: give at least one batch size")
    if len(set(batch_sizes)) != len(batch_sizes):
        raise InputError(f"batch_size: each batch size once, got {list(batch_sizes)}")
    for b in batch_sizes:
        check_int("batch_size", b, 2)
        if net.ghost_size is not None and b % net.ghost_size:
            raise InputError(f"ghost_size={net.ghost_size} must divide every batch size, got batch_size={b}")
    if net.ghost_size is not None:
        check_int("ghost_size", net.ghost_size, 2)
    check_bn_options(eps=net.eps, sigma_w=net.sigma_w, gamma=config.gamma, beta=config.beta)
    if config.gamma == 0:
        raise InputError("gamma must be nonzero: with gamma = 0, phi(gamma z + beta) is constant and passes nothing")
    check_seed(config.seed)
    if config.dtype in DTYPES:
        low, high, eps_max = SCALE_LIMITS[config.dtype]
        if not low <= net.sigma_w <= high or net.eps > eps_max:
            raise InputError(
                f"sigma_w must be in [{low:g}, {high:g}] and eps <= {eps_max:g} with dtype={config.dtype} (the "
                f"pre-activations' variance ~ sigma_w^2 and var + eps must be representable), got sigma_w = "
                f"{net.sigma_w:g}, eps = {net.eps:g}; only kappa = eps / sigma_w^2 matters to the theory"
            )
    if net.init not in INITS:
        raise InputError(f"init must be one of {INITS}, got {net.init!r}")
    if net.sampler not in SAMPLERS:
        raise InputError(f"sampler must be one of {SAMPLERS}, got {net.sampler!r}")
    if net.sampler == "conditional" and net.init == "orthogonal":
        rows = max(2 * b if config.two_batches else b for b in batch_sizes)
        if net.width < 2 * rows or (input_dim is not None and input_dim != net.width):
            raise InputError(
                f"sampler='conditional' with init='orthogonal' needs square layers (inputs of dimension width) and "
                f"width >= 2 x rows per batch ({2 * rows}), got width {net.width}, input dimension "
                f"{input_dim or net.width}; use sampler='dense'"
            )
    if net.placement not in PLACEMENTS:
        raise InputError(f"placement must be one of {PLACEMENTS}, got {net.placement!r}")
    if config.dtype not in DTYPES:
        raise InputError(f"dtype must be one of {tuple(DTYPES)}, got {config.dtype!r}")
    if config.device not in DEVICES:
        raise InputError(f"device must be one of {DEVICES}, got {config.device!r}")
    if config.device == "cuda" and not torch.cuda.is_available():
        raise InputError("device='cuda' but no CUDA device is available here; use device='cpu'")
    start, stop = config.window()
    if stop - start < 2:
        raise InputError(
            f"depth={net.depth} is too shallow to estimate lambda_G: the stationary window "
            f"[{start}, {stop}) needs at least 2 layers (use depth >= {start + 5})"
        )


def simulate_mlp(
    phi: str | Nonlinearity,
    batch_sizes: Sequence[int],
    *,
    width: int | None = None,
    depth: int,
    networks: int,
    widths: Sequence[int] | None = None,
    progress: Callable[[int], None] | None = None,
    keep_grams: bool = False,
    inputs: np.ndarray | None = None,
    **options,
) -> SimulationResult | WidthExtrapolation:
    """Simulate ensembles of BN MLPs and estimate lambda_G, c*, q* per batch size (module docstring).

    Args:
        phi: nonlinearity spec (as for :func:`bnmft.theory`); ``alpha``/``slope`` go in ``options``.
        batch_sizes: batch sizes B (>= 2; the theory columns need B >= 4).
        width, depth, networks: N, L, K.
        widths: instead of ``width``, three or more widths: every width is simulated (same seed) and each estimate
            is fitted as ``a + b/N`` (``+ c/N^2`` where needed; :mod:`bnmft.simulate.extrapolation`); returns a
            :class:`~bnmft.simulate.extrapolation.WidthExtrapolation`.
        progress: called with (networks finished) x (number of batch sizes) after each chunk.
        keep_grams: keep the per-layer Gram matrices (memory: K L B^2 floats per batch size).
        inputs: optional fixed input batch(es), shape (B, d) or (2, B, d) with ``two_batches``; default:
            Gaussian inputs of dimension ``width``, independent per network (and, for two batches, a copy
            whose first example is redrawn).
        **options: the other fields of :class:`SimulationConfig` (eps, gamma, beta, sigma_w, init, placement,
            detach_stats, ghost_size, two_batches, seed, device, dtype, chunk, window_start) and phi's
            parameters (alpha, slope).

    Returns:
        :class:`SimulationResult`; same seed, same numbers (on the same device and dtype).
    """
    if widths is not None:
        if width is not None:
            raise InputError("give width or widths, not both")
        ws = list(widths)
        if len(ws) < 3 or len(set(ws)) != len(ws):
            raise InputError(f"widths: at least 3 different widths to fit a + b/N, got {ws}")
        for w in ws:
            check_int("widths", w)
        done = 0

        def step(n: int) -> None:
            if progress is not None:
                progress(done + n)

        results = {}
        for w in sorted(ws):
            results[w] = simulate_mlp(phi, batch_sizes, width=w, depth=depth, networks=networks, progress=step,
                                  keep_grams=keep_grams, inputs=inputs, **dict(options))  # fmt: skip
            done += networks * len(list(batch_sizes))
        return extrapolate(results)
    if width is None:
        raise InputError("width: give the width N (or widths=[...] to extrapolate in 1/N)")
    params = {k: options.pop(k) for k in ("alpha", "slope") if options.get(k) is not None}
    options = {k: v for k, v in options.items() if v is not None}
    network_keys = set(NetworkSpec.__dataclass_fields__) - {"width", "depth"}
    unknown = set(options) - network_keys - (set(SimulationConfig.__dataclass_fields__) - {"network", "params"})
    if unknown:
        raise InputError(f"unknown option {sorted(unknown)[0]!r}")
    base, _ = resolve(phi, **params)  # phi resolved once; gamma, beta folded in below (once checked)
    network = NetworkSpec(width, depth, **{k: v for k, v in options.items() if k in network_keys})
    rest = {k: v for k, v in options.items() if k not in network_keys}
    batch_sizes = list(batch_sizes)
    input_dim = None if inputs is None or np.ndim(inputs) == 0 else int(np.shape(inputs)[-1])
    if network.sampler == "auto":  # the faster valid one (recorded in the result's settings)
        two = bool(options.get("two_batches"))
        rows = [2 * b if two else b for b in batch_sizes]
        network = replace(network, sampler=choose_sampler(width, rows, network.init, input_dim))
    config = SimulationConfig(phi=base.name, network=network, networks=networks, params=params, **rest)
    validate(config, batch_sizes, input_dim)
    effective = base.affine_input(config.gamma, config.beta)
    phi_t = to_torch(effective)
    if config.device == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads()))
    start, stop = config.window()
    chunks = _MLPChunks(config, phi_t, batch_sizes, inputs, keep_grams)
    scale = len(batch_sizes)  # progress counts (networks finished) x (batch sizes)
    measured_runs = run_family(
        chunks, networks=config.networks, chunk=config.chunk, seed=config.seed, device=config.device,
        progress=None if progress is None else (lambda n: progress(n * scale)),
    )  # fmt: skip
    summaries, runs = [], {}
    for i, b in enumerate(batch_sizes):
        run = measured_runs[i]
        runs[b] = run
        summary = _summarise(config, base, effective, b, run, start, stop)
        measured = (summary.lambda_G_mean, summary.c_star_mean, summary.q_star_mean)
        if not all(math.isfinite(v) for v in measured):
            raise InputError(
                f"the simulation at batch_size={b} produced non-finite values (lambda_G = {measured[0]}): the "
                f"activations overflowed in {config.dtype}; use dtype='float64' or settings closer to 1"
            )
        summaries.append(summary)
    return SimulationResult(config, summaries, runs)


@dataclass
class _MLPChunks:
    """The MLP family for :func:`~bnmft.simulate.runner.run_family`: a chunk of K networks -> one
    :class:`~bnmft.simulate.network.EnsembleRun` per batch size."""

    config: SimulationConfig
    phi: TorchFn
    batch_sizes: list[int]
    inputs: np.ndarray | None
    keep_grams: bool
    size_argument: str = "width"
    segments: list[Segment] = field(init=False)
    conditional: bool = field(init=False)
    network_values: int = field(init=False)
    network_bytes: int = field(init=False)
    what: str = field(init=False)

    def __post_init__(self) -> None:
        net = self.config.network
        # all batch sizes run through the same networks (BN never mixes them): the weights, whose generation costs
        # more than the matmuls at small B, are drawn once per layer for all of them
        self.segments = segments_for(self.batch_sizes, net.ghost_size, self.config.two_batches)
        # (the conditional sampler runs each batch through its own networks: its chunks hold the largest one)
        self.conditional = net.sampler == "conditional"
        lengths = [s.length for s in self.segments]
        self.network_values = (max(lengths) if self.conditional else sum(lengths)) * net.width * net.depth
        rows = sum(lengths)
        # one network at a time at least: its largest weight matrix (the dense sampler's), and the activations kept
        # for backprop
        weights = net.width * max(net.width, rows) if not self.conditional else 0
        self.network_bytes = (4 if self.config.dtype == "float32" else 8) * (weights + 4 * rows * net.width * net.depth)
        self.what = f"one network (width {net.width}, depth {net.depth}, {rows} rows)"

    def run_chunk(self, k: int, gen: torch.Generator) -> list[EnsembleRun]:
        device, dtype = torch.device(self.config.device), DTYPES[self.config.dtype]
        spec = self.config.network
        xs = [self._inputs(k, b, gen, device, dtype) for b in self.batch_sizes]
        if self.conditional:
            # each batch size through its own networks: the conditional sampler's cost is O(N rows^2) per layer, so
            # sharing the weights across batch sizes (all rows at once) would cost more than it saves
            return [run_ensemble(self.phi, x, spec, [replace(seg, offset=0)], gen, keep_grams=self.keep_grams)[0]
                    for x, seg in zip(xs, self.segments, strict=True)]  # fmt: skip
        return run_ensemble(self.phi, torch.cat(xs, dim=1), spec, self.segments, gen, keep_grams=self.keep_grams)

    def _inputs(self, k, b, gen, device, dtype):
        config, inputs = self.config, self.inputs
        if inputs is not None:
            x = torch.as_tensor(np.asarray(inputs, dtype=float), dtype=dtype, device=device)
            if config.two_batches:
                if x.ndim != 3 or x.shape[0] != 2 or x.shape[1] != b:
                    raise InputError(f"inputs must have shape (2, {b}, d) for two batches, got {tuple(x.shape)}")
                x = x.reshape(2 * b, -1)
            elif x.ndim != 2 or x.shape[0] != b:
                raise InputError(f"inputs must have shape ({b}, d), got {tuple(x.shape)}")
            return x.unsqueeze(0).expand(k, -1, -1).contiguous()
        x = torch.randn(k, b, config.network.width, generator=gen, device=device, dtype=dtype)
        if config.two_batches:
            other = x.clone()
            other[:, 0] = torch.randn(k, config.network.width, generator=gen, device=device, dtype=dtype)
            x = torch.cat([x, other], dim=1)
        return x


def _summarise(config, base, effective, b, run: EnsembleRun, start, stop) -> BatchSummary:
    lam_mean, lam_se = mean_se(growth_rates(run.log_grad_h, start, stop))
    lw_mean, lw_se = mean_se(growth_rates(run.log_grad_w, start, stop))
    geo_mean, geo_se = mean_se(slope_rates(run.log_grad_h, start, stop))
    c_mean, c_se = mean_se(window_mean(run.c, start, stop))
    q_mean, q_se = mean_se(window_mean(run.q, start, stop))
    # the eps = 0 theory of the paper's architecture; with ghost BN the statistics' batch is the ghost size
    net = config.network
    group = net.ghost_size or b
    t = None
    if group >= 4 and net.placement == "before" and not net.detach_stats:
        size, settings = check_theory_input(
            group, gamma=config.gamma, beta=config.beta, eps=net.eps, sigma_w=net.sigma_w
        )
        t = theory_resolved(base, effective, size, **settings)
    return BatchSummary(
        batch_size=b,
        width=net.width,
        depth=net.depth,
        networks=config.networks,
        lambda_G_mean=lam_mean,
        lambda_G_stderr=lam_se,
        lambda_G_theory=None if t is None else t.lambda_G,
        lambda_G_geometric=geo_mean,
        lambda_G_geometric_stderr=geo_se,
        lambda_W_mean=lw_mean,
        lambda_W_stderr=lw_se,
        lambda_W_theory=None if t is None else t.lambda_W,
        c_star_mean=c_mean,
        c_star_stderr=c_se,
        c_star_theory=None if t is None else t.c_star,
        q_star_mean=q_mean,
        q_star_stderr=q_se,
        q_star_theory=None if t is None else t.q_star,
        cross_batch_rate_theory=None if (t is None or run.cross is None) else t.cross_batch_rate,
    )
