"""Ensembles of independent batch-normalised MLPs, run together with batched matrix products.

Network (docs/theory.md section 1, the paper's order): ``h^l = W^l x^(l-1)``, ``x^l = phi(gamma BN(h^l) + beta)``
("before", the default) or ``x^l = gamma BN(phi(h^l)) + beta`` ("after"). BN normalises each neuron over the
batch (or over ghost sub-batches of ``ghost_size`` examples) with the biased variance plus ``eps`` (torch's fused
kernel; it needs eps > 0, so eps = 0 is passed as 1e-30, negligible against any batch variance); with
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

from .conditional import conditional_linear, gram
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
    sampler: str = "auto"


@dataclass
class EnsembleRun:
    """Per-layer measurements of K networks on one batch (or two batches), all float64 CPU tensors.

    q, c: (K, L) mean diagonal of the post-activation Gram ``x x^T / N`` and mean off-diagonal / diagonal.
    distance: (K, L) scale-free distance of that Gram to BSB1 (as in :mod:`bnmft.meanfield.propagation`).
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


def batch_norm(
    h: torch.Tensor,
    group: int,
    eps: float | torch.Tensor,
    detach: bool,
    *,
    examples_last: bool = False,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """BN over groups of ``group`` consecutive examples: h (K, B, N), B divisible by group; ``eps`` a number, or a
    tensor of shape (K,) (one eps per network: the batched training of an eps grid).

    With ``examples_last`` h is (K, N, B) - the layout of ``W @ x^T`` - and BN needs no transposed copies: every
    (network, neuron, group) is a channel of torch's fused kernel. ``weight``, ``bias`` (K, N): BN's learnable gamma
    and beta, applied in the same fused call (``examples_last`` only)."""
    if examples_last:
        return _batch_norm_examples_last(h, group, eps, detach, weight, bias)
    k, b, n = h.shape
    if isinstance(eps, torch.Tensor) or detach:
        return _normalise(h.reshape(k, b // group, group, n), 2, eps, detach).reshape(k, b, n)
    # torch's fused batch norm (one pass forward and backward): examples first, every (network, group, neuron) a
    # channel
    flat = h.reshape(k, b // group, group, n).permute(2, 0, 1, 3).reshape(group, -1)
    y = torch.nn.functional.batch_norm(flat, None, None, training=True, momentum=0.0, eps=max(eps, 1e-30))
    return y.reshape(group, k, b // group, n).permute(1, 2, 0, 3).reshape(k, b, n)


def _normalise(g: torch.Tensor, dim: int, eps: float | torch.Tensor, detach: bool) -> torch.Tensor:
    """The unfused path: g (K, ...) with the group's examples along ``dim``; eps a number or one per network."""
    var, mean = torch.var_mean(g, dim=dim, unbiased=False, keepdim=True)
    if detach:
        mean, var = mean.detach(), var.detach()
    e = eps.to(g.dtype).reshape(-1, *([1] * (g.dim() - 1))) if isinstance(eps, torch.Tensor) else eps
    return (g - mean) / torch.sqrt(var + e)


def _batch_norm_examples_last(h, group, eps, detach, weight, bias) -> torch.Tensor:
    k, n, b = h.shape
    if isinstance(eps, torch.Tensor) or detach:
        y = _normalise(h.reshape(k, n, b // group, group), 3, eps, detach).reshape(k, n, b)
        return y if weight is None else y * weight[:, :, None] + bias[:, :, None]
    per = b // group
    flat = h.reshape(1, k * n * per, group)  # channels (network, neuron, group); the group's examples along L
    w = None if weight is None else weight[:, :, None].expand(k, n, per).reshape(-1)
    c = None if bias is None else bias[:, :, None].expand(k, n, per).reshape(-1)
    y = torch.nn.functional.batch_norm(flat, None, None, w, c, training=True, momentum=0.0, eps=max(eps, 1e-30))
    return y.reshape(k, n, b)


@dataclass(frozen=True)
class Segment:
    """A batch inside the concatenated input: rows ``[offset, offset + length)``; BN groups of ``group`` rows;
    with ``pair`` the segment holds two batches of ``length // 2`` (normalised separately)."""

    offset: int
    length: int
    group: int
    pair: bool = False

    @property
    def size(self) -> int:
        return self.length // 2 if self.pair else self.length


def segments_for(batch_sizes, ghost_size: int | None = None, pair: bool = False) -> list[Segment]:
    out, offset = [], 0
    for b in batch_sizes:
        length = 2 * b if pair else b
        out.append(Segment(offset, length, ghost_size or b, pair))
        offset += length
    return out


def _segment_bn(h: torch.Tensor, segments: list[Segment], eps: float, detach: bool) -> torch.Tensor:
    parts = [batch_norm(h[:, s.offset : s.offset + s.length], s.group, eps, detach) for s in segments]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def gram_stats(x: torch.Tensor, seg: Segment, full_gram: torch.Tensor | None = None):
    """q, c, distance (and the cross-batch correlation of a pair) of one segment, per network; ``full_gram``:
    ``x x^T`` of all rows when already computed (the conditional sampler's)."""
    n = x.shape[-1]
    b = seg.size
    first = x[:, seg.offset : seg.offset + b]
    if full_gram is None:
        gram = first @ first.transpose(1, 2) / n
    else:
        gram = full_gram[:, seg.offset : seg.offset + b, seg.offset : seg.offset + b] / n
    diag = torch.diagonal(gram, dim1=1, dim2=2).mean(dim=1)
    off = (gram.sum(dim=(1, 2)) - torch.diagonal(gram, dim1=1, dim2=2).sum(dim=1)) / (b * (b - 1))
    cen = gram - gram.mean(dim=1, keepdim=True)
    cen = cen - cen.mean(dim=2, keepdim=True)
    tr = torch.diagonal(cen, dim1=1, dim2=2).sum(dim=1).clamp_min(1e-30)
    target = (torch.eye(b, dtype=x.dtype, device=x.device) - 1.0 / b) / (b - 1)
    dist = torch.linalg.matrix_norm(cen / tr[:, None, None] - target) / torch.linalg.matrix_norm(target)
    cross = None
    if seg.pair:
        # matched-example alignment tr(G C G) / sqrt(tr(G S11 G) tr(G S22 G)): its finite-width noise floor is
        # ~1/sqrt(N B), far below that of a Frobenius norm of the whole cross block
        second = x[:, seg.offset + b : seg.offset + 2 * b]
        a = first - first.mean(dim=1, keepdim=True)
        b2 = second - second.mean(dim=1, keepdim=True)
        cross = (a * b2).sum(dim=(1, 2)) / torch.sqrt((a * a).sum(dim=(1, 2)) * (b2 * b2).sum(dim=(1, 2)))
    return diag, off / diag, dist, cross, gram


def run_ensemble(
    phi: TorchFn,
    inputs: torch.Tensor,
    spec: NetworkSpec,
    segments: list[Segment] | int,
    gen: torch.Generator,
    *,
    keep_grams: bool = False,
) -> list[EnsembleRun]:
    """Forward and backward pass of K networks on several batches at once, sharing the weights.

    Args:
        phi: torch nonlinearity (gamma and beta included; see :func:`bnmft.simulate.torch_phi.to_torch`).
        inputs: (K, T, d): the segments' rows concatenated (see :class:`Segment`).
        spec: architecture.
        segments: the batches (an int B means one batch of B rows, with ``spec.ghost_size``).
        gen: torch generator for the weights and the top-level gradient direction.

    Returns:
        One :class:`EnsembleRun` per segment. BN never mixes segments, so each segment's measurements are
        those of a separate run on the same networks; sharing the weights amortises their generation.
    """
    if isinstance(segments, int):
        segments = segments_for([segments], spec.ghost_size, inputs.shape[1] == 2 * segments)
    k, _, d = inputs.shape
    device, dtype = inputs.device, inputs.dtype
    nseg = len(segments)
    logs = torch.zeros(spec.depth, nseg, k, dtype=torch.float64)
    logs_w = torch.zeros(spec.depth, nseg, k, dtype=torch.float64)
    lengths = torch.tensor([s.length for s in segments], device=device)
    x = inputs
    pre, acts, stats = [], [], []
    conditional = spec.sampler == "conditional"
    if conditional:  # the backward pass's draws: their own stream, seeded from gen
        seed = int(torch.randint(0, 2**62, (1,), generator=gen, device=device).item())
        noise_gen = torch.Generator(device=device).manual_seed(seed)
        x = x.detach().requires_grad_(True)  # the conditional backward needs a graph from the first layer
        gram_x = gram(x)
    for layer in range(spec.depth):
        acts.append(x.detach())
        if conditional:
            record = _recorder(logs[layer], logs_w[layer], gram_x, segments)
            h = conditional_linear(
                x,
                spec.width,
                spec.sigma_w,
                gen,
                noise_gen,
                gram_x=gram_x,
                record=record,
                input_grad=layer > 0,
                init=spec.init,
            )
        else:
            w = init_weights(k, spec.width, d if layer == 0 else spec.width, spec, gen, device, dtype)
            h = torch.bmm(x, w.transpose(1, 2))
        if layer == 0 and not h.requires_grad:
            h.requires_grad_(True)  # weights are not differentiated (their gradient norms come from the hooks)
        if spec.placement == "before":
            x = phi(_segment_bn(h, segments, spec.eps, spec.detach_stats))
        else:
            x = _segment_bn(phi(h), segments, spec.eps, spec.detach_stats)
        pre.append(h)
        with torch.no_grad():
            gram_x = gram(x) if conditional else None
            stats.append([gram_stats(x.detach(), seg, gram_x) for seg in segments])
    readout = torch.randn(x.shape, generator=gen, device=device, dtype=dtype)

    def make_hook(layer):
        def hook(grad):
            inp = acts[layer]
            scales = []
            for i, seg in enumerate(segments):
                # the gradient arrives normalised (norm ~1) from above, so the working dtype is safe here;
                # sums are accumulated in float64
                g = grad[:, seg.offset : seg.offset + seg.length]
                xin = inp[:, seg.offset : seg.offset + seg.length]
                sq = g.pow(2).sum(dim=(1, 2), dtype=torch.float64)
                logs[layer, i] = torch.log(sq).cpu()
                # ||g^T x||_F^2 = sum((g g^T) * (x x^T)): the weight-gradient norm without forming dW
                gram_g = torch.bmm(g, g.transpose(1, 2))
                gram_in = torch.bmm(xin, xin.transpose(1, 2))
                logs_w[layer, i] = torch.log((gram_g * gram_in).sum(dim=(1, 2), dtype=torch.float64)).cpu()
                scales.append(torch.rsqrt(sq).clamp(max=1e300))
            scale = torch.repeat_interleave(torch.stack(scales, 1), lengths, dim=1)  # (K, T)
            return grad * scale.to(grad.dtype)[:, :, None]

        return hook

    if not conditional:  # (the conditional layers record inside their backward, from Grams they compute anyway)
        for layer, h in enumerate(pre):
            h.register_hook(make_hook(layer))
    (x * readout).sum().backward()
    # the gradient reaching layer l was divided by the norms of all layers above: add their logs back
    suffix = torch.flip(torch.cumsum(torch.flip(logs, [0]), 0), [0])  # sum over layers >= l
    log_grad_h = suffix
    log_grad_w = logs_w + suffix - logs  # dW^l from the gradient as it arrived (divided by layers > l)
    runs = []
    for i in range(nseg):
        q, c, dist, cross, grams = (list(v) for v in zip(*[layer_stats[i] for layer_stats in stats], strict=True))
        runs.append(
            EnsembleRun(
                q=torch.stack(q, 1).double().cpu(),
                c=torch.stack(c, 1).double().cpu(),
                distance=torch.stack(dist, 1).double().cpu(),
                log_grad_h=log_grad_h[:, i].T.contiguous(),
                log_grad_w=log_grad_w[:, i].T.contiguous(),
                cross=None if cross[0] is None else torch.stack(cross, 1).double().cpu(),
                grams=torch.stack(grams, 1).double().cpu() if keep_grams else None,
            )
        )
    return runs


SAMPLERS = ("auto", "dense", "conditional")


def _recorder(logs: torch.Tensor, logs_w: torch.Tensor, gram_in: torch.Tensor, segments: list[Segment]):
    """The conditional layers' version of the dense path's hook: from ``dh dh^T`` (K, T, T), record each segment's
    log squared gradient norm into ``logs`` (nseg, K) and weight-gradient norm (``sum((g g^T) * (x x^T))``) into
    ``logs_w``; return the per-row factors (K, T) that rescale each segment's gradient to norm 1."""

    def record(gram_d: torch.Tensor) -> torch.Tensor:
        factors = []
        for i, seg in enumerate(segments):
            rows = slice(seg.offset, seg.offset + seg.length)
            block = gram_d[:, rows, rows]
            sq = torch.diagonal(block, dim1=1, dim2=2).sum(dim=1)
            logs[i] = torch.log(sq).cpu()
            logs_w[i] = torch.log((block * gram_in[:, rows, rows]).sum(dim=(1, 2))).cpu()
            factors.append(torch.rsqrt(sq).clamp(max=1e300)[:, None].expand(-1, seg.length))
        return torch.cat(factors, dim=1)

    return record
