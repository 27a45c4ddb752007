"""Finite channels in conv-BN stacks: the depth at which the examples' norms leave the mean field (docs/conv_width.md).

In a conv-BN stack BN's batch is the n = B x P (example, position) pairs and the width is the number of channels C.
Mean field (C -> infinity) puts the stack at the MLP's BSB1 fixed point at batch n (docs/convolutional.md). At finite
C the state drifts: one *example* (all its positions together) takes a growing share of the centred norm, the
across-example correlation falls and the gradient rate declines. This module predicts when.

Two chains over ``replicas`` independent batches (one replica = one network), both heuristic and checked against the
conv simulator. Each follows every example's centred squared norm of the post-activations relative to the batch
mean, ``rho_a`` (mean 1). With periodic padding the convolution preserves an example's spatial mean of any
per-position quantity (it averages shifts), so in mean field ``rho`` changes only through BN -> phi, which acts on
each pair. A batch *departs* at the first layer where the variance over its B examples of ``rho`` reaches
``threshold`` (default 0.25: the across-example correlation is then about 6% below c* (1 - spread / 4)).

**"norms" (any phi).** State: the B norms. Taking an example's pairs as independent ``N(0, rho_a)`` draws (the
centred pair covariance at BSB1 is isotropic to O(1/n)) and P large:

* drift ``rho'_a = g(rho_a) / mean_b g(rho_b)``, ``g(rho) = E (phi(sqrt(rho) z) - mu)^2``, ``mu = mean_b
  E phi(sqrt(rho_b) z)``: at B = infinity the outlier map ``F_inf`` of docs/outlier.md section 3 (tested); for relu
  its slope at BSB1 is exactly 1 and its curvature pushes any example above the mean further up. The finite-n
  restoring slope ``lambda_L(n) - F_inf'(1)`` (about ``-2.25 / n`` for relu; :mod:`.outlier`) is added linearly;
* noise: the norm is a mean over ``C x P`` (channel, position) values: ``g(rho_a)`` gets an independent Gaussian error
  of variance ``(E (phi - mu)^4 - g^2) / (C P)`` (relu at BSB1: ``4.4076 g^2 / (C P)``).

**"offsets" (relu; the default there).** Once norms differ, each example's relu mean differs from the batch's: every
channel carries a per-example offset (the example's spatial mean), which the next conv passes on as offsets with a
random Gaussian weight per channel. State: the offsets ``m`` (C x B, finite C) and each example's variance about
them (positions independent, P -> infinity). Per layer: offsets ``u_c ~ N(0, m^T m / C)`` (the kernel-summed weights
are N(0, 1/C)); BN per channel over the batch; relu's mean and variance of a Gaussian in closed form; centring per
channel; plus the norms chain's sampling noise and restoring slope on the residual part. The offsets hold the drift
back (the dominant example's offset is partly removed by its own channels' BN mean) and spread the channels'
variances; the gradient rate is read off as ``(1/2) mean_c 1 / Var_c(h)`` (relu's E phi'^2 = 1/2 over each channel's
BN scale; measured to hold within 0.3-1.4% along the simulated drift, O(1/C)).

Not included in either: the O(1/n) terms of the map away from BSB1 beyond the linear restoring slope, finite P in
the offsets (and the offsets' own positional noise), and zero padding (borders do not conserve an example's mean).

**Measured accuracy** (relu, periodic, 3x3 kernel, the conv simulator; table in docs/conv_width.md): the early
spread (layers 3-20) within its Monte Carlo error (both chains); the mean departure depth over C = 32-256, B = 4-32,
P = 16-64 (n = 128-1024): "offsets" within -20% .. +14% (7 of 9 settings within 2 standard errors, the worst C = 32
and B = 16 at 8x8, early by 20% and 15%), "norms" systematically early by 4-39% (median 18%); the settled rate
(B = 8, 8x8, C = 32 / 64) 0.4% / 1.1% below the measured 1.411 / 1.403, lower still at B = 32, 4x4 (1.391 against
~1.434: 3%); the dominant example's settled share 0.66-0.81 against 0.79-0.82 measured (B = 8, 8x8).
Cost of "offsets": ~ replicas x C x B x depth; 400 replicas at C = 64, B = 8 take ~12 s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import ndtr

from ..errors import InputError
from ..nonlinearity import Nonlinearity, PhiSpec, resolve
from ..options import check_int, check_real, check_seed
from .api import check_theory_input
from .conv import check_conv_batch
from .outlier import outlier_state_resolved

#: the moments E phi(sqrt(rho) z)^k, k = 1..4, are tabulated on a log grid of rho and interpolated in log rho
RHO_RANGE, RHO_POINTS = (1e-4, 1e4), 3201
#: Gauss-Legendre in x = sqrt(rho) z on [-Z_MAX sqrt(rho), Z_MAX sqrt(rho)], split at phi's kinks, NODES per panel
Z_MAX, NODES = 12.0, 96
#: the spread of the first layers kept in the result (for checks against the simulator)
SPREAD_LAYERS = 64
#: largest replicas x batch size (memory of the chain's state)
MAX_STATE = 10**7
#: the offsets chain: values (replicas x C x B) per chunk of replicas
CHUNK_VALUES = 2_000_000
#: the offsets chain's rate at BSB1 is its mean over these layers (layer 1 sees the Gaussian input's scale)
BSB1_LAYERS = (2, 10)
MODELS = ("auto", "offsets", "norms")


@dataclass(frozen=True)
class ConvDeparture:
    """When a finite-channel conv-BN stack leaves the mean field (module docstring).

    Attributes:
        phi, batch_size, spatial, channels, kernel, threshold: the setting.
        effective_batch_size: n = B x positions.
        mean_depth: mean over replicas of the departure layer (censored replicas counted at ``max_depth``: then a
            lower bound; inf when every replica is censored); mean_depth_stderr: its Monte Carlo standard error (None
            when every replica is censored).
        median_depth: the median departure layer (None when more than half are censored).
        depth_std: the spread of the departure layer from network to network (one replica = one network; None
            where fewer than two replicas departed).
        censored: the fraction of replicas that have not departed by ``max_depth``.
        lambda_L: the MLP's slope of one pair's norm at BSB1, batch n; drift_slope: ``F_inf'(1)``, the chain's slope
            at P = infinity (relu: 1).
        noise_at_bsb1: ``C P`` times one example's per-layer variance of rho at BSB1.
        spread: the mean over replicas of ``Var_a rho_a`` after layers 1, 2, ... (the first layers only).
        model: ``"offsets"`` (relu) or ``"norms"`` (module docstring).
        settled_rate, settled_rate_spread, settled_share: the offsets chain only (else None): the per-layer gradient
            growth ``(1/2) mean_c 1/Var_c(h)`` and the largest example's share of the norm, averaged per replica over
            layers [2 d, 3 d) after its departure layer d, then over replicas (mean, and std over replicas of the
            rate); rate_at_bsb1: the same rate over the first layers (the large-n value ``1 / (2 Var relu)``; the
            mean field at batch n differs by O(1/n)).
    """

    phi: str
    batch_size: int
    spatial: tuple[int, ...]
    channels: int
    kernel: int
    threshold: float
    effective_batch_size: int
    model: str
    mean_depth: float
    mean_depth_stderr: float | None
    median_depth: float | None
    depth_std: float | None
    censored: float
    lambda_L: float
    drift_slope: float
    noise_at_bsb1: float
    spread: tuple[float, ...]
    settled_rate: float | None = None
    settled_rate_spread: float | None = None
    settled_share: float | None = None
    rate_at_bsb1: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (an infinite mean depth as ``"inf"``)."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["spatial"], out["spread"] = list(self.spatial), list(self.spread)
        if math.isinf(out["mean_depth"]):
            out["mean_depth"] = "inf"
        return out


def conv_departure_depth(
    phi: PhiSpec,
    batch_size: int,
    spatial: tuple[int, ...] | list[int] | str,
    channels: int,
    *,
    kernel: int = 3,
    padding: str = "periodic",
    threshold: float = 0.25,
    max_depth: int = 5000,
    replicas: int = 400,
    seed: int = 0,
    model: str = "auto",
    gamma: float = 1.0,
    beta: float = 0.0,
    **params: Any,
) -> ConvDeparture:
    """The depth at which a conv-BN stack of C channels leaves the mean field - the spread of its examples' centred
    norms reaches ``threshold`` - and (relu) the gradient rate and dominant example's share it settles to (module
    docstring: the chains, their approximations and measured accuracy).

    Args:
        phi, gamma, beta, **params: the nonlinearity ``phi(gamma z + beta)``, as for :func:`bnmft.conv_theory`.
        batch_size: B, an integer >= 2 with B x positions >= 4.
        spatial, kernel: the image ``(L,)`` / ``(H, W)`` / ``"HxW"`` and the odd kernel size, as for
            :func:`bnmft.conv_theory` (the prediction does not depend on the kernel).
        channels: C >= 8.
        padding: ``"periodic"`` only (zero padding breaks the conservation the chain rests on).
        threshold: the variance over examples of the relative centred norms that counts as departed, in
            ``(0, B - 1)`` (B - 1: one example holds all the norm).
        max_depth: layers the chain runs at most; replicas: independent batches (>= 100); seed: their generator.
        model: ``"offsets"`` (relu only), ``"norms"``, or ``"auto"``: offsets for relu, norms otherwise.

    Returns:
        :class:`ConvDeparture`.

    Raises:
        InputError: a bad phi, batch size, shape, kernel, padding (zero), channels, threshold, max_depth, replicas,
            seed or model ("offsets" for a phi other than relu).
    """
    b, shape, n = check_conv_batch(batch_size, spatial, kernel, padding, min_batch=2)
    if padding != "periodic":
        raise InputError("padding must be 'periodic' for conv_departure_depth (zero padding does not conserve an "
                         "example's spatial mean, which the chain rests on)")  # fmt: skip
    _, settings = check_theory_input(n, gamma=gamma, beta=beta)
    c = check_int("channels", channels, 8)
    v = check_real("threshold", threshold, positive=True)
    if v >= b - 1:
        raise InputError(
            f"threshold must be in (0, {b - 1}) (B - 1: one example holds all the norm), got {threshold!r}"
        )
    depth = check_int("max_depth", max_depth)
    reps = check_int("replicas", replicas, 100)
    if reps * b > MAX_STATE:
        raise InputError(f"replicas x batch_size must be <= {MAX_STATE}, got {reps} x {b}")
    seed = check_seed(seed)
    if model not in MODELS:
        raise InputError(f"model must be one of {MODELS}, got {model!r}")
    base, effective = resolve(phi, gamma=settings["gamma"], beta=settings["beta"], **params)
    return conv_departure_depth_resolved(base, effective, b, shape, c, kernel, v, depth, reps, seed, model)


def moments(phi: Nonlinearity, rho: np.ndarray) -> np.ndarray:
    """``M`` (4, len(rho)) with ``M[k - 1] = E phi(sqrt(rho) z)^k``, k = 1..4, z ~ N(0, 1): Gauss-Legendre panels in
    x = sqrt(rho) z split at the kinks of phi (relu's moments to ~1e-14)."""
    t, wt = np.polynomial.legendre.leggauss(NODES)
    out = np.empty((4, len(rho)))
    for i, r in enumerate(rho):
        s = math.sqrt(r)
        edges = np.array([-Z_MAX * s, *[k for k in phi.kinks if abs(k) < Z_MAX * s], Z_MAX * s])
        half = np.diff(edges)[:, None] / 2
        x = (edges[:-1, None] + half * (t[None, :] + 1)).ravel()
        w = (half * wt[None, :]).ravel() * np.exp(-0.5 * (x / s) ** 2) / (s * math.sqrt(2 * math.pi))
        f = phi(x)
        if not np.all(np.isfinite(f)):
            raise InputError(f"phi={phi.name!r} is not finite on the chain's range of norms")
        out[:, i] = [(f**k) @ w for k in range(1, 5)]
    return out


def moment_table(phi: Nonlinearity) -> tuple[np.ndarray, np.ndarray]:
    """``(log rho grid, moments on it)``: the chain interpolates linearly in log rho (grid step 0.0058: relative
    error ~4e-6 in the moments)."""
    log_rho = np.linspace(math.log(RHO_RANGE[0]), math.log(RHO_RANGE[1]), RHO_POINTS)
    return log_rho, moments(phi, np.exp(log_rho))


def drift_map(rho: np.ndarray, log_rho: np.ndarray, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(g, m4)`` per example for rho (..., B): the centred second and fourth moments of phi at each example's norm,
    centred by the batch mean mu (the chain's drift is ``g / mean g``; its noise variance ``(m4 - g^2) / (C P)``)."""
    lr = np.log(np.clip(rho, *RHO_RANGE))
    a1, a2, a3, a4 = (np.interp(lr, log_rho, table[k]) for k in range(4))
    mu = a1.mean(axis=-1, keepdims=True)
    g = a2 - 2 * mu * a1 + mu * mu
    m4 = a4 - 4 * mu * a3 + 6 * mu**2 * a2 - 4 * mu**3 * a1 + mu**4
    return g, m4


def conv_departure_depth_resolved(
    base: Nonlinearity,
    phi: Nonlinearity,
    b: int,
    spatial: tuple[int, ...],
    channels: int,
    kernel: int,
    threshold: float,
    max_depth: int,
    replicas: int,
    seed: int,
    model: str = "auto",
) -> ConvDeparture:
    """The kernel of :func:`conv_departure_depth` (everything checked; ``model`` "auto", "offsets" or "norms",
    "offsets" only for relu)."""
    p = math.prod(spatial)
    n, cp = b * p, channels * p
    log_rho, table = moment_table(phi)
    h = 1e-3  # F_inf'(1), the P = infinity drift's slope, by a centred difference of the exact moments
    (a1m, a1, a1p), (a2m, a2, a2p) = moments(phi, np.array([1 - h, 1.0, 1 + h]))[:2]
    var = a2 - a1 * a1
    if not var > 0:
        raise InputError(f"phi={phi.name!r} has zero variance under a standard Gaussian")
    slope = float(((a2p - 2 * a1 * a1p) - (a2m - 2 * a1 * a1m)) / (2 * h * var))
    out = outlier_state_resolved(base, phi, float(max(n, 4)))
    lam = float(next(s for r, s, _ in out.fixed_points if r == 1.0))
    g1, m41 = drift_map(np.ones(b), log_rho, table)
    noise = float((m41[0] - g1[0] ** 2) / g1[0] ** 2)
    relu = _is_relu(phi)
    if model == "offsets" and not relu:
        raise InputError(f"model='offsets' needs relu (its closed forms), got phi={phi.name!r}")
    use_offsets = model == "offsets" or (model == "auto" and relu)
    rng = np.random.default_rng(seed)
    if use_offsets:
        first, spread, rates, shares = _offset_chain(b, p, channels, lam - slope, noise, threshold, max_depth,
                                                     replicas, rng)  # fmt: skip
    else:
        first, spread = _norm_chain(b, cp, lam - slope, threshold, max_depth, replicas, rng, log_rho, table)
        rates, shares = None, None
    censored = float(np.mean(np.isinf(first)))
    counted = np.where(np.isinf(first), max_depth, first)
    done = first[np.isfinite(first)]
    settled: dict[str, float | None] = dict.fromkeys(("settled_rate", "settled_rate_spread", "settled_share",
                                                      "rate_at_bsb1"))
    if rates is not None:
        # rates[:, k] is layer k + 1: layers [BSB1_LAYERS) and [2 d, 3 d)
        settled["rate_at_bsb1"] = float(rates[:, BSB1_LAYERS[0] - 1 : BSB1_LAYERS[1] - 1].mean())
        kept = [(i, int(2 * d) - 1, int(3 * d) - 1) for i, d in enumerate(first)
                if np.isfinite(d) and 3 * d <= rates.shape[1]]  # fmt: skip
        if kept:
            per = np.array([rates[i, lo:hi].mean() for i, lo, hi in kept])
            share = float(np.mean([shares[i, lo:hi].mean() for i, lo, hi in kept]))
            settled.update(settled_rate=float(per.mean()), settled_rate_spread=float(per.std()), settled_share=share)
    return ConvDeparture(
        phi=base.name, batch_size=b, spatial=tuple(spatial), channels=channels, kernel=kernel, threshold=threshold,
        effective_batch_size=n, model="offsets" if use_offsets else "norms",
        mean_depth=math.inf if censored == 1.0 else float(counted.mean()),
        mean_depth_stderr=float(counted.std(ddof=1) / math.sqrt(len(first))) if censored < 1 else None,
        median_depth=float(np.median(counted)) if censored < 0.5 else None,
        depth_std=float(done.std(ddof=1)) if done.size > 1 else None, censored=censored, lambda_L=lam,
        drift_slope=slope, noise_at_bsb1=noise, spread=tuple(spread), **settled,
    )  # fmt: skip


def _is_relu(phi: Nonlinearity) -> bool:
    """phi(gamma z + beta) is relu up to a positive factor (the offsets chain's closed forms)."""
    z = np.linspace(-3, 3, 13)
    f = phi(z)
    return bool(f[-1] > 0 and np.allclose(f, np.maximum(z, 0) * f[-1] / 3, atol=1e-12 * f[-1]))


def _norm_chain(b, cp, restoring, threshold, max_depth, replicas, rng, log_rho, table):
    """The examples' norms alone (module docstring, "norms"): departure layer per replica, mean spread per layer."""
    rho = np.abs(1 + math.sqrt(2.0 / cp) * rng.standard_normal((replicas, b)))  # Gaussian inputs: chi^2 / (C P)
    rho /= rho.mean(axis=1, keepdims=True)
    first = np.full(replicas, np.inf)
    spread: list[float] = []
    for layer in range(1, max_depth + 1):
        g, m4 = drift_map(rho, log_rho, table)
        g = np.maximum(g + np.sqrt(np.maximum(m4 - g * g, 0.0) / cp) * rng.standard_normal(g.shape), 1e-12)
        new = g / g.mean(axis=1, keepdims=True) + restoring * (rho - 1)
        rho = np.maximum(new, 1e-9)
        rho /= rho.mean(axis=1, keepdims=True)
        v = rho.var(axis=1)
        if layer <= SPREAD_LAYERS:
            spread.append(float(v.mean()))
        first[(v >= threshold) & np.isinf(first)] = layer
        if layer >= SPREAD_LAYERS and np.all(np.isfinite(first)):
            break
    return first, spread


def _offset_chain(b, p, c, restoring, noise, threshold, max_depth, replicas, rng):
    """relu with the examples' per-channel offsets (module docstring, "offsets"): departure layer per replica, mean
    spread per layer, and per replica and layer the rate ``(1/2) mean_c 1 / Var_c(h)`` and the largest share."""
    chunk = max(1, CHUNK_VALUES // (c * b))
    parts = [_offset_chunk(b, p, c, restoring, noise, threshold, max_depth, min(chunk, replicas - s), rng)
             for s in range(0, replicas, chunk)]  # fmt: skip
    first = np.concatenate([q[0] for q in parts])
    head = min(SPREAD_LAYERS, *(q[1].shape[1] for q in parts))  # chunks stop at different layers
    spread = np.concatenate([q[1][:, :head] for q in parts], axis=0).mean(axis=0)
    layers = min(q[2].shape[1] for q in parts)
    rates = np.concatenate([q[2][:, :layers] for q in parts])
    shares = np.concatenate([q[3][:, :layers] for q in parts])
    return first, [float(x) for x in spread], rates, shares


def _offset_chunk(b, p, c, restoring, noise, threshold, max_depth, reps, rng):
    """One chunk of replicas of :func:`_offset_chain`. State: ``m`` (reps, C, B), each channel's offset of each
    example (its spatial mean of the centred post-activation), ``r`` (reps, B) each example's variance about its own
    offsets (positions independent, P -> infinity). A conv layer maps the offsets to Gaussian ones with the Gram
    ``m^T m / C`` over examples (the weights summed over the kernel's offsets are N(0, 1/C)) and keeps r; BN, relu
    and the channel's centring are closed forms of a Gaussian of mean o and std s: ``E relu = o Phi + s phi``,
    ``E relu^2 = (o^2 + s^2) Phi + o s phi`` at o / s."""
    first = np.full(reps, np.inf)
    r = np.abs(1 + math.sqrt(2.0 / (c * p)) * rng.standard_normal((reps, b)))
    m = np.zeros((reps, c, b))
    prev = r / r.mean(axis=1, keepdims=True)
    spread, rates, shares = [], [], []
    eye = 1e-12 * np.eye(b)
    for layer in range(1, max_depth + 1):
        gram = np.einsum("rca,rcb->rab", m, m) / c
        u = np.einsum("rcb,rab->rca", rng.standard_normal((reps, c, b)), np.linalg.cholesky(gram + eye))
        u -= u.mean(axis=2, keepdims=True)
        var_h = (u * u).mean(axis=2) + r.mean(axis=1, keepdims=True)  # (reps, C): each channel's variance
        rates.append((0.5 / var_h).mean(axis=1))
        sd = np.sqrt(var_h)[:, :, None]
        o, s = u / sd, np.sqrt(r)[:, None, :] / sd
        t = o / s
        cdf, pdf = ndtr(t), np.exp(-0.5 * t * t) / math.sqrt(2 * math.pi)
        mean = o * cdf + s * pdf
        within = (o * o + s * s) * cdf + o * s * pdf - mean * mean
        m = mean - mean.mean(axis=2, keepdims=True)  # BN's batch mean of relu removed per channel
        r = within.mean(axis=1)
        rho = r + (m * m).mean(axis=1)
        scale = rho.mean(axis=1, keepdims=True)
        # the norm's sampling noise over C x P values, and the finite-n restoring slope, put on the residual part
        r = r + rho * math.sqrt(noise / (c * p)) * rng.standard_normal(rho.shape) + restoring * (prev - 1) * scale
        r = np.maximum(r, 1e-12 * scale)
        rho = r + (m * m).mean(axis=1)
        prev = rho / rho.mean(axis=1, keepdims=True)
        v = prev.var(axis=1)
        spread.append(v)
        shares.append(prev.max(axis=1) / b)
        first[(v >= threshold) & np.isinf(first)] = layer
        done = np.all(np.isfinite(first))
        if layer >= SPREAD_LAYERS and done and layer >= 3 * np.quantile(first, 0.9):
            break
    return first, np.array(spread).T, np.array(rates).T, np.array(shares).T


__all__ = ["ConvDeparture", "conv_departure_depth", "conv_departure_depth_resolved"]
