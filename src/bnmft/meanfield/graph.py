"""The mean field of a whole network graph at initialisation: every tensor's per-channel law forward, every tensor's
squared gradient norm backward (docs/graph.md).

A network is a list of :class:`GraphOp` in topological order (the adapter :func:`bnmft.simulate.predict_model`
builds it from a traced PyTorch graph; any framework can). Each op kind is defined
once below with its forward rule (the law of its output) and its backward rule (the squared gradient norm it hands
each input), side by side in :data:`RULES`.

The law of a tensor is kept per *channel group* (a concatenation keeps its parts apart: a BatchNorm normalises each
part by its own variance): the group's channel count and a sample of its joint (channel, sample) law, an array
``(K, M)`` of K channels by M (example, position) values - deterministic stratified Gaussian draws, paired
independently where two tensors are independent in the mean field (docs/graph.md section 1). The rules:

* weight layers (Linear, Conv, grouped and depthwise): Gaussian output (the central limit over the fan-in) with the
  second moment ``Var(w) * taps * sum_c q_c`` counting only the taps that see the image (zero padding), the channel
  offsets ``Var(w) * sum_t f_t^2 * sum_c mu_c^2`` and the within-channel variance the rest, scaled per position by
  its share of valid taps; backward ``Var(w) * channels seen * mean taps``;
* BatchNorm: each channel normalised over its (example, position) values; backward ``gamma^2 / (v + eps)``;
* activations: phi elementwise, backward ``E[phi'^2]``; right after a BatchNorm, times the engine's exact finite-batch
  factor ``lambda_G(n) / lambda_G(inf)`` at the layer's effective batch n = B x positions (docs/graph.md section 3);
* additions: independent sum; backward the same gradient to every input; concatenation: groups side by side,
  gradient split by group; max and average pooling: the max or the mean over each window's valid entries
  (independent positions in the mean field), backward 1 (max) or ``mean(count / divisor^2)`` (average);
  dropout (training mode): ``1 / (1 - p)`` both ways; flatten and reshapes: the law unchanged.

Gradients arriving at a tensor from several consumers add in squared norm (independent in the mean field). The
output's gradient is i.i.d. (the probe's ``sum(R * output)``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
from scipy.special import ndtr, ndtri

from ..errors import InputError
from ..nonlinearity import Nonlinearity

#: channels x samples of a law's sample (docs/graph.md section 1: the stated Monte Carlo accuracy)
CHANNELS, SAMPLES = 64, 1024
KINDS = ("input", "weight", "norm", "act", "add", "cat", "pool", "dropout", "scale", "flatten", "identity", "output")


@dataclass(frozen=True)
class GraphOp:
    """One operation of a network.

    Attributes:
        name: the layer's name (reported as is).
        kind: one of :data:`KINDS`.
        inputs: indices of earlier ops whose outputs it takes (in order).
        attrs: the kind's attributes - ``input``: ``channels``, ``spatial`` (tuple), optional ``mean``,
            ``second_moment``; ``weight``: ``in_channels``, ``out_channels``, ``groups``, ``weight_var`` (mean W^2),
            ``bias_mean``, ``bias_var``, ``valid`` (per axis, a 0/1 list per output index: which taps see the
            image), ``spatial`` (the output's); ``norm``: ``eps``, ``gamma``,
            ``gamma2`` (mean of gamma^2), ``beta``; ``act``: ``phi`` (a :class:`Nonlinearity`); ``pool``: ``mode``
            (``max`` or ``avg``), ``windows`` (per-axis lists of (valid count, divisor) per output index),
            ``covers`` (per-axis lists of windows per input index), ``spatial``; ``dropout``: ``p``; ``scale``:
            ``factor``; ``flatten``: none; ``cat``: none (channel axis); ``output``: none.
    """

    name: str
    kind: str
    inputs: tuple[int, ...] = ()
    attrs: dict[str, Any] = field(default_factory=dict)


#: offset (one entry per spatial axis) -> correlation of the examples' fluctuations at two positions that far apart
Corr = dict[tuple[int, ...], float]
#: the offsets tracked per axis (docs/graph.md section 4: spatial correlation)
REACH = 2


@dataclass
class _Group:
    channels: int
    law: np.ndarray  # (CHANNELS, SAMPLES)
    corr: Corr = field(default_factory=dict)
    #: exact (channels, positions) means over the examples, and their Gaussian standard deviations while the law is
    #: Gaussian at each position (after a weight layer and a BatchNorm; None after an activation)
    pos: tuple[np.ndarray, np.ndarray | None] | None = None
    #: what rules computed from this group, reused by the next consumer (a DenseNet group feeds every later layer)
    cache: dict = field(default_factory=dict, repr=False)

    def memo(self, key: tuple, compute: Callable[[], Any]) -> Any:
        if key not in self.cache:
            self.cache[key] = compute()
        return self.cache[key]


def _rho(corr: Corr, d: tuple[int, ...]) -> float:
    """The correlation at offset d (1 at zero, symmetric, 0 beyond what is tracked)."""
    if not any(d):
        return 1.0
    return corr.get(d, corr.get(tuple(-x for x in d), 0.0))


def _offsets(ndim: int) -> list[tuple[int, ...]]:
    """The tracked nonzero offsets, one of each +-d pair."""
    grid: list[tuple[int, ...]] = [()]
    for _ in range(ndim):
        grid = [(*g, x) for g in grid for x in range(-REACH, REACH + 1)]
    return [d for d in grid if any(d) and d > tuple(-x for x in d)]


def _mix(groups: list[tuple[float, Corr]], ndim: int) -> Corr:
    """The correlation of a sum or mixture of independent parts with the given fluctuation variances."""
    total = sum(w for w, _ in groups)
    if total <= 0:
        return {}
    return {d: sum(w * _rho(c, d) for w, c in groups) / total for d in _offsets(ndim)}


@dataclass
class _Tensor:
    groups: list[_Group]
    spatial: tuple[int, ...]
    norm: tuple[int, float, float] | None = None  # a BatchNorm's output: (effective batch, gamma, beta)
    routes: list = field(default_factory=list)  # what the forward rule kept for the backward one

    @property
    def channels(self) -> int:
        return sum(g.channels for g in self.groups)


Grad = list[np.ndarray]  # per group: each sample's share of the squared gradient norm, aligned with the law


class _Sampler:
    """Deterministic stratified draws: Gaussian quantiles at (i + 1/2) / n, permuted by a seeded generator. The
    copies return the flat indices they took, so the backward pass can route gradients to the samples."""

    def __init__(self, seed: int, batch: int):
        self.batch = batch
        self.rng = np.random.default_rng(seed)
        self.z = ndtri((np.arange(SAMPLES) + 0.5) / SAMPLES)
        self.zc = ndtri((np.arange(CHANNELS) + 0.5) / CHANNELS)

    def gaussian(self, offset_mean: float, offset_var: float, within_var: float, scale: np.ndarray) -> np.ndarray:
        """Channel offsets N(offset_mean, offset_var) plus within-channel N(0, within_var) times ``scale``."""
        offsets = offset_mean + math.sqrt(max(offset_var, 0.0)) * self.rng.permutation(self.zc)
        within = np.stack([self.rng.permutation(self.z) for _ in range(CHANNELS)])
        return offsets[:, None] + math.sqrt(max(within_var, 0.0)) * within * scale[None, :]

    def _keep_positions(self, positions: int) -> np.ndarray:
        """A permutation of the samples that keeps each one's position (samples sit at positions j P // M)."""
        return np.argsort(_positions(positions) + self.rng.random(SAMPLES), kind="stable")

    def shuffle(self, law: np.ndarray, positions: int) -> tuple[np.ndarray, np.ndarray]:
        """An independent copy (channels permuted, samples permuted within each position) and the flat indices it
        took."""
        rows = self.rng.permutation(CHANNELS)
        idx = np.stack([r * SAMPLES + self._keep_positions(positions) for r in rows])
        return law.ravel()[idx], idx

    def within(self, law: np.ndarray, positions: int) -> tuple[np.ndarray, np.ndarray]:
        """Other examples at the same channels and positions, and the flat indices they took."""
        idx = np.stack([r * SAMPLES + self._keep_positions(positions) for r in range(CHANNELS)])
        return law.ravel()[idx], idx

    def at(self, law: np.ndarray, positions: int, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For every sample j a random example of the same channel at input position ``targets[j]``."""
        if positions > SAMPLES:  # fewer samples than positions: any example of the channel, independently
            cols = self.rng.integers(0, SAMPLES, (CHANNELS, SAMPLES))
        else:
            start = -(-np.arange(positions + 1) * SAMPLES // positions)  # first sample of each position
            first, size = start[targets], start[targets + 1] - start[targets]
            cols = first[None, :] + (self.rng.random((CHANNELS, SAMPLES)) * size).astype(int)
        idx = np.arange(CHANNELS)[:, None] * SAMPLES + cols
        return law.ravel()[idx], idx


def _positions(positions: int) -> np.ndarray:
    """Each sample's position index (samples spread evenly over the positions)."""
    return np.arange(SAMPLES) * positions // SAMPLES


def _position_means(g: _Group, positions: int) -> np.ndarray:
    """(channels, positions): the exact per-position means where a rule kept them, else from the sample."""
    if g.pos is not None and g.pos[0].shape[1] == positions:
        return g.pos[0]
    return _sample_position_means(g.law, positions)


def _sample_position_means(law: np.ndarray, positions: int) -> np.ndarray:
    """(channels, positions): each channel's mean at each position over the examples; the channel's mean where
    positions hold fewer than 8 samples."""
    if SAMPLES // positions < 8:
        return np.repeat(law.mean(axis=1, keepdims=True), positions, axis=1)
    if SAMPLES % positions == 0:
        return law.reshape(CHANNELS, positions, SAMPLES // positions).mean(axis=2)
    return np.stack([law[:, _positions(positions) == p].mean(axis=1) for p in range(positions)], axis=1)


def _scatter(idx: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Gradient shares ``values`` routed back to the samples at flat indices ``idx``."""
    out = np.zeros(CHANNELS * SAMPLES)
    np.add.at(out, idx.ravel(), values.ravel())
    return out.reshape(CHANNELS, SAMPLES)


def _uniform(total: float) -> np.ndarray:
    return np.full((CHANNELS, SAMPLES), total / (CHANNELS * SAMPLES))


def _merged(groups: list[_Group]) -> np.ndarray:
    """One law for several groups: channels drawn in proportion to the groups' channel counts."""
    if len(groups) == 1:
        return groups[0].law
    total = sum(g.channels for g in groups)
    edges = np.cumsum([g.channels for g in groups]) / total * CHANNELS
    owner = np.searchsorted(edges, np.arange(CHANNELS) + 0.5)
    return np.stack([groups[o].law[k] for k, o in enumerate(owner)])


def _allocate(weights: np.ndarray) -> np.ndarray:
    """SAMPLES indices of categories in proportion to ``weights`` (deterministic)."""
    edges = np.cumsum(weights) / np.sum(weights) * SAMPLES
    return np.searchsorted(edges, np.arange(SAMPLES) + 0.5)


def _grid(per_axis: list[list]) -> list[tuple]:
    """Every output position's per-axis entries (the product over axes)."""
    out: list[tuple] = [()]
    for axis in per_axis:
        out = [(*a, b) for a in out for b in axis]
    return out


def _taps(op: GraphOp) -> tuple[np.ndarray, np.ndarray]:
    """(output positions, taps): the input position each tap reads, -1 where it falls on the padding (zero
    padding), combined over the axes from the adapter's per-axis ``source`` lists."""
    src = np.zeros((1, 1), dtype=int)
    size = 1
    for axis, n in zip(op.attrs["source"], op.attrs["in_spatial"], strict=True):
        a = np.asarray(axis, dtype=int)  # (outputs, taps) on this axis
        both = (src[:, None, :, None] >= 0) & (a[None, :, None, :] >= 0)
        src = np.where(both, src[:, None, :, None] * n + a[None, :, None, :], -1)
        src = src.reshape(src.shape[0] * src.shape[1], -1)
        size *= n
    return src, (src >= 0).astype(float)


def _weight_forward(op: GraphOp, ins: list[_Tensor], s: _Sampler) -> _Tensor:
    """docs/graph.md section 2: over the examples a Gaussian with variance ``Var(w) * sum over valid taps of the
    input's within-position variance``, around a per-channel spatial pattern: the input's per-position channel
    means read through random weights by the taps that see the image."""
    a = op.attrs
    src, valid = _taps(op)
    out_positions, taps = src.shape[0], valid.sum(axis=1)
    in_positions = math.prod(ins[0].spatial)
    pos = _positions(out_positions)
    var_w, groups = a["weight_var"], a["groups"]
    depthwise = groups > 1 and groups == a["in_channels"]

    def pattern(g: _Group, scale: float) -> np.ndarray:
        """(channels, output positions): sum over input rows and taps of N(0, scale^2) times the read means."""
        means = _position_means(g, in_positions)[:, np.maximum(src, 0)] * valid[None]  # (rows, out, taps)
        if depthwise:
            return scale * np.einsum("rot,rt->ro", means, s.rng.standard_normal((CHANNELS, src.shape[1])))
        flat = means.transpose(0, 2, 1).reshape(-1, out_positions)
        return scale * s.rng.standard_normal((CHANNELS, flat.shape[0])) @ flat

    def noise(within: float) -> np.ndarray:
        z = np.stack([s.rng.permutation(s.z) for _ in range(CHANNELS)])
        return z * np.sqrt(var_w * within * taps[pos])

    def group(channels: int, means: np.ndarray, within: float, corr: Corr) -> _Group:
        sd = np.broadcast_to(np.sqrt(var_w * within * taps), means.shape)
        return _Group(channels, means[:, pos] + noise(within), corr, (means, sd))

    bias = a["bias_mean"] + math.sqrt(a["bias_var"]) * s.rng.permutation(s.zc)
    stride = a.get("stride", ())
    ndim = len(a["spatial"])

    def strided(corr: Corr) -> Corr:
        """A random convolution keeps the input's correlation at the offset it reads (same tap): stride times d."""
        return {d: _rho(corr, tuple(k * x for k, x in zip(stride, d, strict=True))) for d in _offsets(ndim)}

    if depthwise:  # channels do not mix
        mult = a["out_channels"] // a["in_channels"]
        out = [group(g.channels * mult, bias[:, None] + pattern(g, math.sqrt(var_w)),
                     float(np.mean(_within_position_var(g, in_positions))), strided(g.corr))
               for g in ins[0].groups]  # fmt: skip
        return _Tensor(out, a["spatial"])
    means = bias[:, None] + sum(pattern(g, math.sqrt(var_w * g.channels / (groups * CHANNELS))) for g in ins[0].groups)
    parts = [(g.channels * float(np.mean(_within_position_var(g, in_positions))), g.corr) for g in ins[0].groups]
    within = sum(w for w, _ in parts)
    corr = strided(_mix(parts, ndim)) if ndim else {}
    return _Tensor([group(a["out_channels"], means, within / groups, corr)], a["spatial"])


def _within_position_var(g: _Group, positions: int) -> np.ndarray:
    """Each channel's variance over the examples at a position, averaged over the positions."""
    return np.mean(g.law**2, axis=1) - np.mean(_position_means(g, positions) ** 2, axis=1)


def _weight_backward(op: GraphOp, ins: list[_Tensor], out: _Tensor, grad: Grad) -> list[Grad]:
    """``Var(w) * channels seen * mean valid taps``, spread over the input's samples (the weights mix them)."""
    a = op.attrs
    mean_taps = float(_taps(op)[1].sum(axis=1).mean())
    if a["groups"] > 1 and a["groups"] == a["in_channels"]:
        return [[_uniform(a["weight_var"] * mean_taps * float(g.sum())) for g in grad]]
    total = sum(float(g.sum()) for g in grad)
    return [[_uniform(a["weight_var"] * mean_taps * g.channels / a["groups"] * total) for g in ins[0].groups]]


def _norm_forward(op: GraphOp, ins: list[_Tensor], s: _Sampler) -> _Tensor:
    a = op.attrs

    def normalised(g: _Group) -> _Group:
        mean = g.law.mean(axis=1, keepdims=True)
        centred = g.law - mean
        scale = a["gamma"] / np.sqrt(np.mean(centred**2, axis=1, keepdims=True) + a["eps"])
        pos = None
        if g.pos is not None:  # the exact per-position means (and deviations) follow the same affine map
            pos = (a["beta"] + scale * (g.pos[0] - mean), None if g.pos[1] is None else scale * g.pos[1])
        return _Group(g.channels, a["beta"] + scale * centred, g.corr, pos)

    out = [g.memo(("norm", a["gamma"], a["beta"], a["eps"]), partial(normalised, g)) for g in ins[0].groups]
    n = s.batch * math.prod(ins[0].spatial)
    return _Tensor(out, ins[0].spatial, norm=(n, a["gamma"], a["beta"]))


def _norm_backward(op: GraphOp, ins: list[_Tensor], out: _Tensor, grad: Grad) -> list[Grad]:
    """``gamma^2 / (v + eps)`` per channel."""
    a = op.attrs
    return [[a["gamma2"] / (g.memo(("var",), partial(np.var, g.law, axis=1, keepdims=True)) + a["eps"]) * gi
             for g, gi in zip(ins[0].groups, grad, strict=True)]]  # fmt: skip


_FACTORS: dict[tuple, float] = {}


def _finite_batch_factor(phi: Nonlinearity, n: int, gamma: float, beta: float) -> float:
    """lambda_G(n) / lambda_G(inf) of the engine at the effective batch n (docs/graph.md section 3); 1 where the
    engine has no answer (n < 4). Cached by phi's canonical name (not for plain callables)."""
    key = (phi.name, n, gamma, beta)
    if phi.source[0] != "callable" and key in _FACTORS:
        return _FACTORS[key]
    _FACTORS[key] = factor = _factor(phi, n, gamma, beta)
    return factor


def _factor(phi: Nonlinearity, n: int, gamma: float, beta: float) -> float:
    from .api import theory_resolved

    if n < 4:
        return 1.0
    effective = phi.affine_input(gamma, beta)
    settings = {"method": "auto", "eps": 0.0, "sigma_w": 1.0, "gamma": gamma, "beta": beta}
    at_n = theory_resolved(phi, effective, float(n), **settings).lambda_G
    at_inf = theory_resolved(phi, effective, math.inf, **settings).lambda_G
    return at_n / at_inf


#: probabilists' Gauss-Hermite nodes and weights (normalised): E f(Z) for standard normal Z, 24 points
_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(24)
_HERMITE = (_NODES, _WEIGHTS / _WEIGHTS.sum())


def _act_forward(op: GraphOp, ins: list[_Tensor], s: _Sampler) -> _Tensor:
    phi = op.attrs["phi"]
    return _Tensor([g.memo(("act", _phi_key(phi)), partial(_activated, phi, g)) for g in ins[0].groups],
                   ins[0].spatial)  # fmt: skip


def _phi_key(phi: Nonlinearity) -> object:
    """phi's canonical name (the same function whichever op holds it); the object itself for a plain callable."""
    return phi if phi.source[0] == "callable" else phi.name


def _slope2(phi: Nonlinearity, law: np.ndarray) -> np.ndarray:
    return phi.derivative(law) ** 2


def _activated(phi: Nonlinearity, g: _Group) -> _Group:
    """phi applied to a group: its law, its correlation (to first order), its per-position means."""
    y = phi(g.law)
    kept = 0.0
    if g.corr:  # first order in the correlation: the square of phi's linear part (its first Hermite term)
        xc, yc = g.law - g.law.mean(axis=1, keepdims=True), y - y.mean(axis=1, keepdims=True)
        vx, vy = float(np.mean(xc**2)), float(np.mean(yc**2))
        kept = float(np.mean(xc * yc)) ** 2 / (vx * vy) if vx > 0 and vy > 0 else 0.0
    pos = None
    if g.pos is not None and g.pos[1] is not None:
        # Gaussian at each position: the means' variation over positions by Gauss-Hermite (which is 2% off for a
        # kink, e.g. relu's mean), their level from the sample's channel means (exact to the sample's accuracy)
        means = np.einsum("h,rph->rp", _HERMITE[1], phi(g.pos[0][..., None] + g.pos[1][..., None] * _HERMITE[0]))
        pos = (means - means.mean(axis=1, keepdims=True) + y.mean(axis=1, keepdims=True), None)
    return _Group(g.channels, y, {d: kept * r for d, r in g.corr.items()}, pos)


def _act_backward(op: GraphOp, ins: list[_Tensor], out: _Tensor, grad: Grad) -> list[Grad]:
    """``phi'(x)^2`` sample by sample; after a BatchNorm, times the finite-batch factor."""
    phi = op.attrs["phi"]
    factor = 1.0 if ins[0].norm is None else _finite_batch_factor(phi, *ins[0].norm)
    slopes = [g.memo(("slope2", _phi_key(phi)), partial(_slope2, phi, g.law)) for g in ins[0].groups]
    return [[factor * d2 * gi for d2, gi in zip(slopes, grad, strict=True)]]


def _add_forward(op: GraphOp, ins: list[_Tensor], s: _Sampler) -> _Tensor:
    channels = {t.channels for t in ins}
    if len(channels) != 1:
        raise InputError(f"{op.name}: an addition of tensors with {sorted(channels)} channels")
    layouts = {tuple(g.channels for g in t.groups) for t in ins}
    if len(layouts) > 1:  # grouped differently: one merged group, the gradient spread by channels
        positions = math.prod(ins[0].spatial)
        law = _merged(ins[0].groups) + sum(s.shuffle(_merged(t.groups), positions)[0] for t in ins[1:])
        parts = [(g.channels * float(np.mean(g.law.var(axis=1))), g.corr) for t in ins for g in t.groups]
        return _Tensor([_Group(ins[0].channels, law, _mix(parts, len(ins[0].spatial)))], ins[0].spatial,
                       routes=[None])  # fmt: skip
    groups, routes = [], []
    for i, g in enumerate(ins[0].groups):
        copies = [s.shuffle(t.groups[i].law, math.prod(ins[0].spatial)) for t in ins[1:]]
        parts = [(float(np.mean(t.groups[i].law.var(axis=1))), t.groups[i].corr) for t in ins]
        groups.append(_Group(g.channels, g.law + sum(c[0] for c in copies), _mix(parts, len(ins[0].spatial))))
        routes.append([c[1] for c in copies])
    return _Tensor(groups, ins[0].spatial, routes=routes)


def _add_backward(op: GraphOp, ins: list[_Tensor], out: _Tensor, grad: Grad) -> list[Grad]:
    """The same gradient to every input, routed to the samples each one contributed."""
    if out.routes == [None]:
        total = float(sum(g.sum() for g in grad))
        return [[_uniform(total * g.channels / t.channels) for g in t.groups] for t in ins]
    parts = [list(grad)]
    for k in range(1, len(ins)):
        parts.append([_scatter(out.routes[i][k - 1], gi) for i, gi in enumerate(grad)])
    return parts


def _cat_forward(op: GraphOp, ins: list[_Tensor], s: _Sampler) -> _Tensor:
    spatial = {t.spatial for t in ins}
    if len(spatial) != 1:
        raise InputError(f"{op.name}: a concatenation of tensors of spatial sizes {sorted(spatial)}")
    return _Tensor([g for t in ins for g in t.groups], ins[0].spatial)


def _cat_backward(op: GraphOp, ins: list[_Tensor], out: _Tensor, grad: Grad) -> list[Grad]:
    parts, start = [], 0
    for t in ins:
        parts.append(grad[start : start + len(t.groups)])
        start += len(t.groups)
    return parts


def _pool_forward(op: GraphOp, ins: list[_Tensor], s: _Sampler) -> _Tensor:
    """docs/graph.md section 4: the max or the mean over each window's valid entries, drawn at their positions
    (independent examples at each); the routes keep which samples each output took (for the max, the argmax: the
    gradient goes there only)."""
    src, valid = _taps(op)
    divisor = np.ones(1)
    for axis in op.attrs["divisor"]:
        divisor = np.outer(divisor, np.asarray(axis, dtype=float)).ravel()
    in_positions, pos = math.prod(ins[0].spatial), _positions(src.shape[0])
    count, div = valid.sum(axis=1)[pos], divisor[pos]
    out: list[_Group] = []
    routes: list[list[tuple[np.ndarray | None, np.ndarray]]] = []
    for g in ins[0].groups:
        if op.attrs["mode"] == "avg" and src.shape[0] == 1 and src.shape[1] > 32:  # a global mean: Gaussian
            mu, sd = g.law.mean(axis=1, keepdims=True), g.law.std(axis=1, keepdims=True) / math.sqrt(count[0])
            law = count[0] * (mu + sd * np.stack([s.rng.permutation(s.z) for _ in range(CHANNELS)])) / div[0]
            out.append(_Group(g.channels, law))
            routes.append([(None, count / div**2)])
            continue
        best = np.full(g.law.shape, -np.inf)
        total, arg = np.zeros(g.law.shape), np.zeros(g.law.shape, dtype=int)
        route: list[tuple[np.ndarray | None, np.ndarray]] = []
        for t in range(src.shape[1]):
            ok = valid[pos, t] > 0
            vals, idx = s.at(g.law, in_positions, np.maximum(src[pos, t], 0))
            if op.attrs["mode"] == "max":
                take = ok[None, :] & (vals > best)
                best, arg = np.where(take, vals, best), np.where(take, idx, arg)
            else:
                total += vals * ok[None, :]
                route.append((idx, ok / div**2))
        kernel, stride = op.attrs.get("kernel", ()), op.attrs.get("stride", ())
        if op.attrs["mode"] == "max":
            corr = _max_pool_corr(g.law, g.corr, kernel, stride, s.rng) if kernel else {}
            out.append(_Group(g.channels, best, corr))
            routes.append([(arg, np.ones(SAMPLES))])
        else:
            law = total / div[None, :]
            corr, factor = _avg_pool_corr(g.corr, kernel, stride)
            if factor != 1.0:  # correlated positions: the mean's fluctuation is larger than independent draws give
                means = _sample_position_means(law, src.shape[0])[:, pos]
                law = means + (law - means) * math.sqrt(factor)
            out.append(_Group(g.channels, law, corr))
            routes.append(route)
    return _Tensor(out, op.attrs["spatial"], routes=routes)


def _window(kernel: tuple[int, ...]) -> np.ndarray:
    return np.array(list(itertools.product(*[range(k) for k in kernel])), dtype=int).reshape(-1, len(kernel))


def _avg_pool_corr(corr: Corr, kernel: tuple[int, ...], stride: tuple[int, ...]) -> tuple[Corr, float]:
    """docs/graph.md section 4: a window mean's correlation at output offset d, ``sum_{i in W, j in W + s d}
    rho(i - j) / sum_{i, j in W} rho(i - j)``, and its variance relative to independent positions,
    ``sum_{i, j in W} rho(i - j) / |W|``."""
    if not corr or not kernel:
        return {}, 1.0
    w = _window(kernel)
    within = sum(_rho(corr, tuple(i - j)) for i in w for j in w)
    out = {}
    for d in _offsets(len(kernel)):
        shift = np.array(stride) * np.array(d)
        out[d] = sum(_rho(corr, tuple(i - j - shift)) for i in w for j in w) / within
    return out, within / len(w)


def _max_pool_corr(law: np.ndarray, corr: Corr, kernel: tuple[int, ...], stride: tuple[int, ...], rng) -> Corr:
    """docs/graph.md section 4: the correlation of window maxima, by Monte Carlo - a Gaussian field with the
    input's correlation mapped to the input's within-channel law (a Gaussian copula), maxima over overlapping windows
    on a small grid of outputs."""
    n = REACH + 1
    size = [(n - 1) * st + k for k, st in zip(kernel, stride, strict=True)]
    coords = _window(tuple(size))
    cov = np.array([[_rho(corr, tuple(a - b)) for b in coords] for a in coords])
    centred = law - law.mean(axis=1, keepdims=True)
    if not np.all(np.isfinite(cov)) or not np.all(np.isfinite(centred)) or float(np.max(np.abs(centred))) == 0.0:
        return {}  # no fluctuation to correlate (a collapsed channel): nothing to carry
    vals, vecs = np.linalg.eigh(cov)
    field_ = rng.standard_normal((4000, len(coords))) @ (vecs * np.sqrt(np.clip(vals, 0, None))).T
    values = np.sort(centred.ravel())
    field_ = values[np.minimum((ndtr(field_) * len(values)).astype(int), len(values) - 1)]
    index = {tuple(c): i for i, c in enumerate(coords)}
    outs = _window((n,) * len(kernel))
    maxima = {tuple(o): np.max(field_[:, [index[tuple(o * np.array(stride) + t)] for t in _window(kernel)]], axis=1)
              for o in outs}  # fmt: skip
    result = {}
    for d in _offsets(len(kernel)):
        base = tuple(max(0, -x) for x in d)
        a, b = maxima[base], maxima[tuple(x + y for x, y in zip(base, d, strict=True))]
        sa, sb = float(np.std(a)), float(np.std(b))
        result[d] = float(np.mean((a - a.mean()) * (b - b.mean())) / (sa * sb)) if sa > 0 and sb > 0 else 0.0
    return result


def _pool_backward(op: GraphOp, ins: list[_Tensor], out: _Tensor, grad: Grad) -> list[Grad]:
    parts = []
    for gi, route in zip(grad, out.routes, strict=True):
        back = np.zeros((CHANNELS, SAMPLES))
        for idx, weight in route:
            if idx is None:  # a global mean: spread evenly over the channel's samples
                back += (gi * weight[None, :]).sum(axis=1, keepdims=True) / SAMPLES
            else:
                back += _scatter(idx, gi * weight[None, :])
        parts.append(back)
    return [parts]


def _dropout_forward(op: GraphOp, ins: list[_Tensor], s: _Sampler) -> _Tensor:
    p = op.attrs["p"]
    keep = (np.arange(SAMPLES) >= p * SAMPLES).astype(float) / (1 - p)
    copies = [s.within(g.law, math.prod(ins[0].spatial)) for g in ins[0].groups]
    return _Tensor([_Group(g.channels, c[0] * keep[None, :], {d: (1 - p) * r for d, r in g.corr.items()})
                    for g, c in zip(ins[0].groups, copies, strict=True)],
                   ins[0].spatial, routes=[(c[1], keep) for c in copies])  # fmt: skip


def _dropout_backward(op: GraphOp, ins: list[_Tensor], out: _Tensor, grad: Grad) -> list[Grad]:
    return [[_scatter(idx, gi * keep[None, :] ** 2) for gi, (idx, keep) in zip(grad, out.routes, strict=True)]]


def _scale_forward(op: GraphOp, ins: list[_Tensor], s: _Sampler) -> _Tensor:
    return _Tensor([_Group(g.channels, op.attrs["factor"] * g.law, g.corr) for g in ins[0].groups], ins[0].spatial)


def _flatten_forward(op: GraphOp, ins: list[_Tensor], s: _Sampler) -> _Tensor:
    positions = math.prod(ins[0].spatial) if ins[0].spatial else 1
    return _Tensor([_Group(g.channels * positions, g.law) for g in ins[0].groups], ())


def _identity_forward(op: GraphOp, ins: list[_Tensor], s: _Sampler) -> _Tensor:
    return ins[0]


def _gain(factor: Callable[[GraphOp], float]):
    def backward(op: GraphOp, ins: list[_Tensor], out: _Tensor, grad: Grad) -> list[Grad]:
        return [[factor(op) * gi for gi in grad]]

    return backward


Forward = Callable[[GraphOp, list[_Tensor], _Sampler], _Tensor]
Backward = Callable[[GraphOp, list[_Tensor], _Tensor, Grad], list[Grad]]
#: each op kind's forward and backward rule, side by side
RULES: dict[str, tuple[Forward, Backward]] = {
    "weight": (_weight_forward, _weight_backward),
    "norm": (_norm_forward, _norm_backward),
    "act": (_act_forward, _act_backward),
    "add": (_add_forward, _add_backward),
    "cat": (_cat_forward, _cat_backward),
    "pool": (_pool_forward, _pool_backward),
    "dropout": (_dropout_forward, _dropout_backward),
    "scale": (_scale_forward, _gain(lambda op: op.attrs["factor"] ** 2)),
    "flatten": (_flatten_forward, _gain(lambda op: 1.0)),
    "identity": (_identity_forward, _gain(lambda op: 1.0)),
}


@dataclass
class GraphPrediction:
    """The mean field of a network graph.

    Attributes:
        tensors: one tidy record per op: ``name``, ``kind``, ``channels``, ``spatial``, ``mean`` and
            ``second_moment`` (over channels and samples), ``channel_var`` (the within-channel variance over
            (example, position), averaged over channels: the probe's ``channel_var``), ``grad_norm_sq`` (the
            squared gradient norm at the op's output relative to the network output's).
        norm_layers: one record per normalisation op: ``name``, ``batch`` (effective), ``log_grad_ratio`` (ln of its
            output's squared gradient norm over the last normalisation op's).
        growth: ln of the first normalisation op's squared gradient norm over the last's (``first``, ``last``).
    """

    tensors: list[dict]
    norm_layers: list[dict]
    growth: float | None
    first: str | None
    last: str | None

    def to_dict(self) -> dict:
        return {"tensors": self.tensors, "norm_layers": self.norm_layers, "growth": self.growth,
                "first": self.first, "last": self.last}  # fmt: skip


def _input(op: GraphOp, s: _Sampler) -> _Tensor:
    a = op.attrs
    mean, q = a.get("mean", 0.0), a.get("second_moment", 1.0)
    law = s.gaussian(mean, 0.0, q - mean**2, np.ones(SAMPLES))
    return _Tensor([_Group(a["channels"], law)], tuple(a["spatial"]))


def predict_graph_resolved(ops: list[GraphOp], batch_size: int, seed: int = 0) -> GraphPrediction:
    """The kernel of :func:`bnmft.simulate.predict_model` (ops checked by the adapter): the forward pass of the
    laws, then the backward pass of squared gradient norms from every ``output`` op (module docstring)."""
    sampler = _Sampler(seed, batch_size)
    tensors: list[_Tensor] = []
    for op in ops:
        if op.kind == "input":
            tensors.append(_input(op, sampler))
        elif op.kind == "output":
            tensors.append(tensors[op.inputs[0]])
        else:
            tensors.append(RULES[op.kind][0](op, [tensors[i] for i in op.inputs], sampler))
    grads: list[Grad | None] = [None] * len(tensors)

    def receive(j: int, part: Grad) -> None:
        have = grads[j]
        grads[j] = part if have is None else [a + b for a, b in zip(have, part, strict=True)]

    for i in range(len(ops) - 1, -1, -1):
        op, grad = ops[i], grads[i]
        if op.kind == "output":
            src = tensors[op.inputs[0]]
            receive(op.inputs[0], [_uniform(g.channels / src.channels) for g in src.groups])
        elif op.kind != "input" and grad is not None:
            parts = RULES[op.kind][1](op, [tensors[j] for j in op.inputs], tensors[i], grad)
            for j, part in zip(op.inputs, parts, strict=True):
                receive(j, part)
    records: list[dict] = []
    norms: list[dict[str, Any]] = []
    for op, t, grad in zip(ops, tensors, grads, strict=True):
        g = [0.0] if grad is None else [float(x.sum()) for x in grad]
        law = _merged(t.groups) if len(t.groups) > 1 else t.groups[0].law
        within = sum(c.channels * float(np.mean(c.memo(("var",), partial(np.var, c.law, axis=1, keepdims=True))))
                     for c in t.groups) / t.channels  # fmt: skip
        records.append({"name": op.name, "kind": op.kind, "channels": t.channels, "spatial": list(t.spatial),
                        "mean": float(law.mean()), "second_moment": float(np.mean(law**2)), "channel_var": within,
                        "grad_norm_sq": float(sum(g))})  # fmt: skip
        if op.kind == "norm":
            norms.append({"name": op.name, "batch": t.norm[0] if t.norm else None, "grad_norm_sq": float(sum(g))})
    growth: float | None = None
    first: str | None = None
    last: str | None = None
    if norms:
        ref = float(norms[-1]["grad_norm_sq"])
        for n in norms:
            sq = float(n["grad_norm_sq"])
            n["log_grad_ratio"] = math.log(sq / ref) if sq > 0 and ref > 0 else None
        first, last = str(norms[0]["name"]), str(norms[-1]["name"])
        growth = norms[0]["log_grad_ratio"] if len(norms) >= 2 else None
    return GraphPrediction(records, norms, growth, first, last)


__all__ = ["KINDS", "RULES", "GraphOp", "GraphPrediction", "predict_graph_resolved"]
