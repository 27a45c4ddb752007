"""Convolutional networks with spatial BN (channels -> infinity): docs/theory.md section 10, derivation in
docs/convolutional.md.

State: the covariance ``Sigma`` over the n = B x P (example, position) pairs, one per channel (channels i.i.d. in
mean field). A random conv layer (``k^d`` offsets, weights ``N(0, sigma_w^2 / (k^d C))``) maps it to
``A(Sigma)_((a,p),(b,q)) = sigma_w^2 / k^d sum_delta Sigma_((a,p+delta),(b,q+delta))`` (offsets outside the image
dropped with zero padding); BN per channel over all n pairs followed by phi is the MLP's map V at batch size n.

* **Periodic padding: exact reduction (ours).** A translation-invariant Sigma is a fixed point of A (up to
  sigma_w^2), and so is any BSB1 matrix over the n pairs. i.i.d. Gaussian inputs have ``Sigma = I`` (BSB1), so the
  state is the MLP's BSB1 fixed point at batch size n from the first layer on, and the backward operator
  ``A^T o E[J^T . J]`` has the MLP's dominant eigenvector G_n with the MLP's eigenvalue (A^T G_n = sigma_w^2 G_n).
  So every quantity - q*, c* (between any two distinct pairs, same example or not), lambda_G, eps > 0 - is the
  MLP theory at batch size ``B x H x W``, whatever the kernel size (:func:`bnmft.theory` at n; exact to the
  engine's accuracy).
* **Zero padding.** The borders lose offsets, positions stop being exchangeable and the fixed point is no longer
  BSB1: the map ``Sigma -> V_n(A(Sigma))`` is iterated to its fixed point with :func:`bnmft.gram_map` (exact Laplace
  method for positive-homogeneous phi; Monte Carlo otherwise, with its standard error), and lambda_G is the dominant
  eigenvalue of the backward operator, found by power iteration on a Monte Carlo of the BN -> phi Jacobian at the
  fixed point (``samples`` draws, common to all iterations; standard error from 4 independent quarters). eps = 0
  only (the Laplace method is scale free).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError
from ..nonlinearity import Nonlinearity, PhiSpec, resolve
from ..options import check_bn_options, check_int, check_memory
from .api import check_theory_input, theory_resolved
from .gram import gram_map_resolved

PADDINGS = ("periodic", "zero")
#: largest image (positions) the theory and the conv simulator take
MAX_POSITIONS = 65536
#: largest B x positions the zero-padding iteration takes (its state is an n x n matrix)
MAX_ZERO_PAIRS = 1024
#: zero padding: the forward iteration's and each power iteration's most steps (progress counts up to their sum)
FORWARD_ITERATIONS, POWER_ITERATIONS = 200, 60
#: zero padding's Monte Carlo backward: most elements of one chunk of per-sample n x n matrices (memory)
BACKWARD_CHUNK_ELEMENTS = 2**24


@dataclass(frozen=True)
class ConvResult:
    """The conv network's mean field: ``lambda_G`` (per-layer growth of the squared gradient norm), ``q_star``,
    ``c_star`` (mean correlation between distinct (example, position) pairs), ``c_space`` / ``c_batch`` (within one
    example / across examples), ``effective_batch_size`` (B x positions), ``mlp_lambda_G`` (the MLP at batch B x
    positions), ``mlp_lambda_G_at_batch`` (the MLP at batch B: what the conv network is *not*; None for B < 4),
    ``method`` and ``lambda_G_stderr`` (0 for exact results)."""

    phi: str
    batch_size: int
    spatial: tuple[int, ...]
    kernel: int
    padding: str
    eps: float
    sigma_w: float
    gamma: float
    beta: float
    effective_batch_size: int
    lambda_G: float
    lambda_G_stderr: float
    q_star: float | None
    c_star: float | None
    c_space: float | None
    c_batch: float | None
    mlp_lambda_G: float
    mlp_lambda_G_at_batch: float | None
    max_trainable_depth: float
    method: str
    notes: tuple[str, ...] = ()
    params: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["spatial"] = "x".join(map(str, self.spatial))
        out["notes"] = list(self.notes)
        return out


def check_conv_shape(spatial, kernel: int, padding: str) -> tuple[int, ...]:
    """The image shape ``(L,)`` or ``(H, W)`` (or text ``"L"`` / ``"HxW"``), an odd kernel and a padding (a periodic
    kernel no larger than the image); returns the shape as a tuple. Shared by the theory and the conv simulator."""
    if isinstance(spatial, str):
        try:
            spatial = tuple(int(v) for v in spatial.lower().split("x"))
        except ValueError:
            raise InputError(f"spatial must be 'L' or 'HxW' (positive integers), got {spatial!r}") from None
    shape = tuple(spatial)
    if not 1 <= len(shape) <= 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in shape):
        raise InputError(f"spatial must be (L,) or (H, W) with positive integers, got {spatial!r}")
    if math.prod(shape) > MAX_POSITIONS:
        raise InputError(f"spatial: at most {MAX_POSITIONS} positions, got {shape}")
    check_int("kernel", kernel)
    if kernel % 2 == 0:
        raise InputError(f"kernel must be odd (a centred k x k kernel), got {kernel}")
    if padding not in PADDINGS:
        raise InputError(f"padding must be one of {PADDINGS}, got {padding!r}")
    if padding == "periodic" and kernel > min(shape):
        raise InputError(f"kernel={kernel} is larger than the image {shape} (periodic padding wraps it)")
    if padding == "zero" and kernel > 2 * max(shape) - 1:
        raise InputError(
            f"kernel must be <= {2 * max(shape) - 1} with zero padding on the image {shape} (a larger kernel only "
            f"adds offsets that fall outside the image everywhere), got {str(kernel)[:30]}"
        )
    return shape


def check_conv_batch(batch_size, spatial, kernel: int, padding: str, *, min_batch: int = 1
                     ) -> tuple[int, tuple[int, ...], int]:
    """The batch size (``>= min_batch``) and image of a conv-BN stack (:func:`check_conv_shape`), with BN's sample
    n = B x positions >= 4; returns ``(B, shape, n)``. Shared by the theory and the finite-channel chain."""
    b = check_int("batch_size", batch_size, min_batch)
    shape = check_conv_shape(spatial, kernel, padding)
    n = b * math.prod(shape)
    if n < 4:
        raise InputError(f"batch_size x positions must be >= 4 (the BN statistics' sample), got {b} x "
                         f"{math.prod(shape)}")  # fmt: skip
    return b, shape, n


def conv_average(sigma: np.ndarray, b: int, spatial: tuple[int, ...], kernel: int, padding: str) -> np.ndarray:
    """``A(Sigma)`` with sigma_w = 1: Sigma (n x n, n = B P, pairs ordered (example, position)) averaged over the
    kernel's offsets applied to both position indices (zero padding: offsets leaving the image contribute 0)."""
    shape = (b, *spatial)
    s = sigma.reshape(shape + shape)
    d = len(spatial)
    out = np.zeros_like(s)
    half = kernel // 2
    # zero padding: offsets of |o| >= the image's size along an axis contribute 0 and are skipped (not counted out)
    ranges = [np.arange(-min(half, size - 1), min(half, size - 1) + 1) for size in spatial]
    offsets = np.array(np.meshgrid(*ranges, indexing="ij")).reshape(d, -1).T
    for delta in offsets:
        shifted = s
        for axis, o in enumerate(delta):
            for first in (1 + axis, 2 + d + axis):  # the position axes of both indices
                shifted = np.roll(shifted, -int(o), axis=first)
                if padding == "zero" and o != 0:
                    index = [slice(None)] * shifted.ndim
                    n_axis = spatial[axis]
                    index[first] = slice(n_axis - o, None) if o > 0 else slice(0, -o)
                    shifted = shifted.copy()
                    shifted[tuple(index)] = 0.0
        out += shifted
    n = b * math.prod(spatial)
    return out.reshape(n, n) / kernel**d


def _backward_chunk(n: int) -> int:
    """Samples per chunk of the Monte Carlo backward: 256, fewer when 256 n x n matrices would be too large."""
    return max(1, min(256, BACKWARD_CHUNK_ELEMENTS // (n * n)))


def _check_zero_padding_memory(n: int, spatial: tuple[int, ...], kernel: int, samples: int) -> None:
    """Refuse, before allocating, a zero-padding theory that cannot fit: the backward's samples x n draws (a few
    copies), its chunk of n x n matrices, the n x n states and the kernel's offsets; named by the largest part."""
    parts = {
        "samples": 6.0 * samples * n,
        "batch_size x positions": 4.0 * _backward_chunk(n) * n * n + 8.0 * n * n,
        "kernel": 3.0 * len(spatial) * math.prod(min(kernel, 2 * size - 1) for size in spatial),
    }
    name = max(parts, key=parts.__getitem__)
    check_memory(8 * sum(parts.values()), f"zero padding's theory ({samples} Monte Carlo samples over {n} pairs)",
                 name)  # fmt: skip


def check_zero_padding(n: int, spatial: tuple[int, ...], kernel: int, eps: float, samples: int) -> None:
    """Zero padding's own conditions at n = B x positions pairs (eps = 0, n <= MAX_ZERO_PAIRS, samples >= 8, the
    memory): cheap, so ``bnmft conv`` checks every batch size's before the first one runs."""
    if eps > 0:
        raise InputError("padding='zero' needs eps = 0 (the Gram map's exact methods are scale free)")
    if n > MAX_ZERO_PAIRS:
        raise InputError(f"padding='zero': batch_size x positions must be <= {MAX_ZERO_PAIRS}, got {n}")
    check_int("samples", samples, 8)
    _check_zero_padding_memory(n, spatial, kernel, samples)


def _backward_rate(phi, sigma_h: np.ndarray, b: int, spatial, kernel, padding, samples: int, seed: int,
                   step: Callable[[int], None] = lambda done: None):  # fmt: skip
    """Dominant eigenvalue of ``Pi -> A^T(E[J^T Pi J])`` at pre-activation covariance sigma_h (Monte Carlo of the
    BN -> phi Jacobian over n pairs; power iteration with common random numbers), and its standard error from four
    independent quarters of the samples. ``step(k)``: k power iterations done (of 4 x POWER_ITERATIONS)."""
    n = len(sigma_h)
    chunk = _backward_chunk(n)
    w, v = np.linalg.eigh(sigma_h)
    root = v * np.sqrt(np.clip(w, 0, None))
    rng = np.random.default_rng(seed)
    h = rng.standard_normal((samples, n)) @ root.T
    u = h - h.mean(axis=1, keepdims=True)
    r2 = np.sum(u * u, axis=1)
    vv = u / np.sqrt(r2)[:, None]
    d = phi.derivative(math.sqrt(n) * vv)
    scale = n / r2

    def apply(pi: np.ndarray, idx: slice) -> np.ndarray:
        acc = np.zeros((n, n))
        for i in range(idx.start, idx.stop, chunk):
            j = slice(i, min(i + chunk, idx.stop))
            dd = d[j]
            m = dd[:, :, None] * pi[None] * dd[:, None, :]  # D Pi D
            mv = np.einsum("sab,sb->sa", m, vv[j])
            vmv = np.einsum("sa,sa->s", mv, vv[j])
            # (I - vv^T) M (I - vv^T) = M - v (M v)^T - (M v) v^T + (v^T M v) v v^T  (M symmetric)
            t = m - vv[j][:, :, None] * mv[:, None, :] - mv[:, :, None] * vv[j][:, None, :]
            t += vmv[:, None, None] * vv[j][:, :, None] * vv[j][:, None, :]
            acc += np.einsum("s,sab->ab", scale[j], t)
        acc /= idx.stop - idx.start
        acc -= acc.mean(axis=0, keepdims=True)  # G ... G
        acc -= acc.mean(axis=1, keepdims=True)
        return conv_average(acc, b, spatial, kernel, padding)

    def power(idx: slice, before: int) -> float:
        pi = np.eye(n) - 1.0 / n
        lam = 0.0
        for i in range(POWER_ITERATIONS):
            new = apply(pi, idx)
            step(before + i + 1)
            lam_new = float(np.trace(new) / np.trace(pi))
            pi = new / np.trace(new)
            if abs(lam_new - lam) < 1e-10 * lam_new:
                break
            lam = lam_new
        step(before + POWER_ITERATIONS)
        return lam_new

    quarter = samples // 4
    parts = [power(slice(i * quarter, (i + 1) * quarter), i * POWER_ITERATIONS) for i in range(4)]
    return float(np.mean(parts)), float(np.std(parts, ddof=1) / 2)


def conv_theory(
    phi: PhiSpec,
    batch_size: int,
    *,
    spatial: tuple[int, ...],
    kernel: int = 3,
    padding: str = "periodic",
    eps: float = 0.0,
    sigma_w: float = 1.0,
    gamma: float = 1.0,
    beta: float = 0.0,
    samples: int = 20_000,
    seed: int = 0,
    derivative: Callable[[np.ndarray], np.ndarray] | None = None,
    kinks: tuple[float, ...] = (),
    progress: Callable[[int, int], None] | None = None,
    **params: float,
) -> ConvResult:
    """Mean field of a conv -> spatial BN -> phi stack (module docstring).

    Args:
        phi, gamma, beta, eps, sigma_w, derivative, kinks, **params: as for :func:`bnmft.theory`.
        batch_size: B (B x positions >= 4).
        spatial: (L,) or (H, W).
        kernel: odd kernel size; padding: ``"periodic"`` (exact: the MLP at batch B x positions) or ``"zero"``
            (eps = 0; B x positions <= MAX_ZERO_PAIRS; kernel <= 2 max(spatial) - 1; Monte Carlo backward with
            ``samples`` draws; its cost grows as samples x (B x positions)^2: minutes from about 64 pairs on).
        progress: zero padding: called as ``progress(done, total)`` after each forward or power iteration
            (``total`` = FORWARD_ITERATIONS + 4 POWER_ITERATIONS, an iteration that converges early skips ahead).

    Returns:
        :class:`ConvResult`.

    Raises:
        InputError: a bad phi, batch size (B x positions >= 4), shape, kernel, padding or BN option; zero padding
            with eps > 0 or more than MAX_ZERO_PAIRS pairs; the errors of :func:`bnmft.theory` at B x positions.
    """
    b, spatial, n = check_conv_batch(batch_size, spatial, kernel, padding)
    eps, sigma_w, gamma, beta = check_bn_options(eps=eps, sigma_w=sigma_w, gamma=gamma, beta=beta)
    _, settings = check_theory_input(n, eps=eps, sigma_w=sigma_w, gamma=gamma, beta=beta)
    base, effective = resolve(phi, gamma=gamma, beta=beta, derivative=derivative, kinks=kinks, **params)
    return conv_theory_resolved(base, effective, b, spatial, kernel, padding, settings, samples=samples, seed=seed,
                                progress=progress)  # fmt: skip


def conv_theory_resolved(
    base: Nonlinearity,
    effective: Nonlinearity,
    b: int,
    spatial: tuple[int, ...],
    kernel: int,
    padding: str,
    settings: dict[str, Any],
    *,
    samples: int,
    seed: int,
    progress: Callable[[int, int], None] | None = None,
) -> ConvResult:
    """The kernel of :func:`conv_theory`: phi resolved (``effective = base(gamma z + beta)``), the shape checked
    (:func:`check_conv_shape`), ``settings`` from :func:`bnmft.meanfield.api.check_theory_input` at B x positions;
    zero padding's own conditions (eps = 0, B x positions <= MAX_ZERO_PAIRS, samples >= 8, the memory) are checked
    here."""
    eps, sigma_w, gamma, beta = (settings[k] for k in ("eps", "sigma_w", "gamma", "beta"))
    n = b * math.prod(spatial)
    if padding == "zero" and kernel != 1:
        check_zero_padding(n, spatial, kernel, eps, samples)
    mlp = theory_resolved(base, effective, n, **settings)
    at_b = theory_resolved(base, effective, b, **settings).lambda_G if b >= 4 else None
    common: dict[str, Any] = dict(phi=base.name, batch_size=b, spatial=spatial, kernel=kernel, padding=padding, eps=eps,
                  sigma_w=sigma_w, gamma=gamma, beta=beta, effective_batch_size=n, mlp_lambda_G=mlp.lambda_G,
                  mlp_lambda_G_at_batch=at_b,
                  params=dict(base.parameters))  # fmt: skip
    if padding == "periodic" or kernel == 1:
        return ConvResult(
            **common, lambda_G=mlp.lambda_G, lambda_G_stderr=0.0, q_star=mlp.q_star, c_star=mlp.c_star,
            c_space=mlp.c_star, c_batch=mlp.c_star, max_trainable_depth=mlp.max_trainable_depth,
            method=f"mlp at batch {n} ({mlp.method})",
        )  # fmt: skip
    sigma = np.eye(n)
    notes = []
    method = "laplace" if effective.homogeneous_degree is not None else "monte_carlo"
    total = FORWARD_ITERATIONS + 4 * POWER_ITERATIONS

    def step(done: int) -> None:
        if progress is not None:
            progress(done, total)

    for i in range(FORWARD_ITERATIONS):
        value = gram_map_resolved(effective, conv_average(sigma, b, spatial, kernel, padding), method=method,
                          samples=samples, rng=np.random.default_rng(seed))  # fmt: skip
        change = float(np.max(np.abs(value.value - sigma)))
        sigma = value.value
        step(i + 1)
        if change < 1e-10 * float(np.max(np.abs(sigma))):
            break
    else:
        notes.append(f"forward iteration stopped after {FORWARD_ITERATIONS} layers (last change {change:.2g})")
    step(FORWARD_ITERATIONS)
    q = float(np.mean(np.diag(sigma)))
    p = math.prod(spatial)
    blocks = sigma.reshape(b, p, b, p)
    within = np.einsum("apaq->", blocks) - np.trace(sigma)
    c_space = float(within / (b * p * (p - 1)) / q) if p > 1 else None
    across = float(sigma.sum() - np.einsum("apaq->", blocks))
    c_batch = across / (b * (b - 1) * p * p) / q if b > 1 else None
    c_star = float((sigma.sum() - np.trace(sigma)) / (n * (n - 1)) / q)
    lam, lam_se = _backward_rate(effective, conv_average(sigma, b, spatial, kernel, padding), b, spatial, kernel,
                                 padding, samples, seed, lambda done: step(FORWARD_ITERATIONS + done))  # fmt: skip
    depth = 16.0 / math.log(lam) if lam > 1 else math.inf
    return ConvResult(
        **common, lambda_G=lam, lambda_G_stderr=lam_se, q_star=q, c_star=c_star, c_space=c_space, c_batch=c_batch,
        max_trainable_depth=depth, method=f"{method} forward, Monte Carlo backward ({samples} samples)",
        notes=tuple(notes),
    )  # fmt: skip
