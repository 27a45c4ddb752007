"""The conditional sampler: a fresh Gaussian layer sampled only where a forward-and-backward pass looks at it.

For ``W`` (fan_out x fan_in, entries ``N(0, s^2)``, ``s = sigma_w / sqrt(fan_in)``) and a layer input
``X = x^T`` (fan_in x T, T rows of the batch) write ``X = Q R`` with Q orthonormal (fan_in x r) and R (r x T).
``A = W Q`` is i.i.d. Gaussian and the forward pass needs only it: ``H = W X = A R``. In the backward pass
``W^T dH = Q A^T dH + Q_perp (W Q_perp)^T dH``; ``W Q_perp`` is independent of everything else, so the second
term is distributed exactly as ``(I - Q Q^T) Z`` with Z's rows i.i.d. ``N(0, s^2 dH^T dH)``. The trajectory is
reproduced exactly in distribution at every finite width for O(fan B^2) per layer instead of O(fan^2 B).

How it is computed (never forming Q): ``G = X^T X`` is factored (in float64) as ``R^T R`` by Cholesky and
``P = R^{-1}``, so ``Q = X P`` and, with ``M M^T = s^2 dH^T dH``, ``Z = Y M^T`` (Y standard normal),

    ``h = R^T A^T``,    ``dx = z + (dh A - (z x^T) P) P^T x``     (rows-first layout, ``z = Z^T``).

Networks whose Gram is singular or ill-conditioned (``||R||_F ||P||_F > 1e3``: a centred batch through an
identity network has rank T - 1) take a float64 path instead: an eigendecomposition ``G = V L V^T``
with ``R = L^1/2 V^T`` and ``P = V L^-1/2`` over the directions with ``lambda > 1e-10 lambda_max`` (the others
carry singular values below 1e-5 of the largest: treated as unseen, which is exact for a zero one). The noise
factor M is a Cholesky factor of ``s^2 dH^T dH + delta I`` with ``delta = 1e-6`` of its mean eigenvalue (BN's
backward makes ``dH^T dH`` singular; float32 rounding of it is ~1e-7): an extra variance of 1e-6 of the
backward noise's, far below any statistical error here (an eigendecomposition where Cholesky still fails).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

#: accept the float32 Cholesky path while ||R||_F ||P||_F (>= the condition number of R) stays below this
MAX_CONDITION = 1e3
#: eigenvalues of the Gram below this fraction of the largest count as zero (rank deficiency)
RANK_TOLERANCE = 1e-10
#: jitter of the backward noise covariance, relative to its mean eigenvalue
NOISE_JITTER = 1e-6

Recorder = Callable[[torch.Tensor], torch.Tensor]

#: the cost model of :func:`choose_sampler`, in ns per normal draw and per multiply-add of a square-ish and of a
#: tall-skinny batched product; measured on 2 CPU cores (benchmarks/bench_sampler.py)
_NS_PER_NORMAL, _NS_PER_FLOP_DENSE, _NS_PER_FLOP_THIN = 5.5, 0.0143, 0.015


def choose_sampler(width: int, rows: list[int], init: str, input_dim: int | None = None) -> str:
    """The faster valid sampler for ``width``-wide layers.

    Gaussian weights: "dense" draws one N x N matrix per layer shared by all batches (``rows``: the rows of each
    batch, 2B for a pair) and costs N^2 normals + 4 N^2 sum(rows) flops; "conditional" runs each batch through its
    own networks for sum(2 N T normals + 14 N T^2 flops). Orthogonal weights: the dense path also needs a QR of an
    N x N matrix per layer (O(N^3)), so the conditional one is chosen wherever it applies: square layers
    (``input_dim`` = width) with width >= 2 rows.

    Args:
        width: layer width N.
        rows: rows per batch (T).
        init: weight init ("gaussian" or "orthogonal").
        input_dim: the first layer's fan-in (default: the width).

    Returns:
        "dense" or "conditional".
    """
    if init == "orthogonal":
        square = input_dim is None or input_dim == width
        return "conditional" if square and width >= 2 * max(rows) else "dense"
    dense = width * width * (_NS_PER_NORMAL + 4 * sum(rows) * _NS_PER_FLOP_DENSE)
    conditional = sum(2 * width * t * _NS_PER_NORMAL + 14 * width * t * t * _NS_PER_FLOP_THIN for t in rows)
    return "conditional" if conditional < dense else "dense"


def gram(x: torch.Tensor) -> torch.Tensor:
    """``x x^T`` for x (K, T, n), in x's dtype: the Gram the sampler factors (and the statistics reuse)."""
    x = x.detach()
    return x @ x.transpose(1, 2)


def _factor(x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """R^T and P for each network's layer input x (K, T, n) with Gram g = x x^T (working dtype), and a mask of the
    networks that need the float64 path (whose Gram is then recomputed from x in float64).

    A float32 Gram's rounding error, relative to its smallest eigenvalue, is ~1e-7 x cond(G) / sqrt(n) (sums of n
    products); with cond(R) <= MAX_CONDITION (cond(G) <= 1e6) the basis is orthonormal to ~1e-4 at worst, ~1e-8
    for a typical ReLU batch (cond(G) ~ 1e2).

    Returns:
        (rt, p, exact, seen): rt = R^T (K, T, T), p = P (K, T, T) with ``R^T R = G`` on the seen directions and
        ``P = R^{-1}`` there (zero columns for unseen ones); exact (K,) bool: True where the eigendecomposition
        (float64 products) is used; seen (K, T) bool: the columns of Q = X P that are basis vectors.
    """
    g = g.double()
    t = g.shape[-1]
    chol, info = torch.linalg.cholesky_ex(g)
    eye = torch.eye(t, dtype=g.dtype, device=g.device).expand_as(g)
    p = torch.linalg.solve_triangular(chol.transpose(1, 2), eye, upper=True)  # R^{-1}, R = L^T
    size = torch.linalg.matrix_norm(chol) * torch.linalg.matrix_norm(p)
    exact = (info != 0) | ~torch.isfinite(size) | (size > MAX_CONDITION)
    rt = chol
    seen = torch.ones(g.shape[:2], dtype=torch.bool, device=g.device)
    if bool(exact.any()):
        x64 = x[exact].detach().double()
        vals, vecs = torch.linalg.eigh(x64 @ x64.transpose(1, 2))
        keep = vals > RANK_TOLERANCE * vals[:, -1:].clamp_min(1e-300)
        root = torch.where(keep, vals.clamp_min(0).sqrt(), torch.zeros_like(vals))
        inv = torch.where(keep, vals.clamp_min(1e-300).rsqrt(), torch.zeros_like(vals))
        rt, p = rt.clone(), p.clone()
        rt[exact] = vecs * root[:, None, :]
        p[exact] = vecs * inv[:, None, :]
        seen[exact] = keep
    return rt, p, exact, seen


def _noise_factor(cov: torch.Tensor) -> torch.Tensor:
    """M with ``M M^T = cov + delta I`` (module docstring) for cov (K, T, T) float64."""
    t = cov.shape[-1]
    delta = NOISE_JITTER * torch.diagonal(cov, dim1=1, dim2=2).mean(dim=1).clamp_min(1e-300)
    jittered = cov + delta[:, None, None] * torch.eye(t, dtype=cov.dtype, device=cov.device)
    m, info = torch.linalg.cholesky_ex(jittered)
    bad = info != 0
    if bool(bad.any()):
        vals, vecs = torch.linalg.eigh(jittered[bad])
        m = m.clone()
        m[bad] = vecs * vals.clamp_min(0).sqrt()[:, None, :]
    return m


def _backward_rows(u, p, x, m, y):
    """``dx / s = z + (u - (z x^T) P) P^T x`` with ``z = M y``, ``M M^T = dH^T dH`` and ``u = dh A / s``; tensors
    (k, ., .) in one dtype."""
    z = m @ y
    w = (u - (m @ (y @ x.transpose(1, 2))) @ p) @ p.transpose(1, 2)
    return torch.baddbmm(z, w, x)


def _recorded_gram(ctx, dh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``dh dh^T`` (float64) and the per-row factors of the log-space bookkeeping: ``ctx.record`` sees the Gram of
    the incoming gradient and returns the factors the gradient goes on with (unit norm); the Gram is returned
    rescaled by them (dh itself is never rescaled: the callers fold the factors into B x B matrices)."""
    gd = (dh @ dh.transpose(1, 2)).double()
    factor = torch.ones(dh.shape[:2], dtype=torch.float64, device=dh.device)
    if ctx.record is not None:
        factor = ctx.record(gd).double()
        gd = gd * factor[:, :, None] * factor[:, None, :]
    return gd, factor


def _orthogonal_rows(a_t, p, x, root, g_t):
    """``dx / s = a^T Q^T + C^T F^T`` in rows: ``Q = X P``; F the orthonormal frame of ``Y = (I - Q Q^T) G`` by
    Cholesky (``F = Y L^-T``, ``L L^T = Y^T Y``), C^T = root; tensors (k, ., .) in one dtype."""
    y_t = torch.baddbmm(g_t, -(((g_t @ x.transpose(1, 2)) @ p) @ p.transpose(1, 2)), x)  # (P_perp G)^T
    chol = torch.linalg.cholesky((y_t @ y_t.transpose(1, 2)).double())
    eye = torch.eye(chol.shape[-1], dtype=chol.dtype, device=chol.device).expand_as(chol)
    frame = torch.linalg.solve_triangular(chol, eye, upper=False).to(x.dtype)  # L^-1: F^T = L^-1 Y^T
    return torch.baddbmm((root @ frame) @ y_t, a_t @ p.transpose(1, 2), x)


class _ConditionalLayer(torch.autograd.Function):
    """``h = x W^T`` for a fresh W (module docstring): x (K, T, n_in) -> h (K, T, n_out). Gaussian W: ``frame`` =
    A^T / scale, standard normal; orthogonal W = scale O: ``frame`` = U^T, orthonormal rows (zero for unseen
    directions). rt = R^T and p = P (K, T, T) float64; exact (K,) bool: the networks on the float64 path."""

    @staticmethod
    def forward(ctx, x, frame, rt, p, exact, scale, noise_gen, record, input_grad, orthogonal):
        h = (rt * scale).to(x.dtype) @ frame
        if bool(exact.any()):
            h[exact] = ((rt[exact] * scale) @ frame[exact].double()).to(x.dtype)
        ctx.save_for_backward(x, frame, p, exact)
        ctx.scale, ctx.noise_gen, ctx.record, ctx.input_grad = scale, noise_gen, record, input_grad
        ctx.orthogonal = orthogonal
        return h

    @staticmethod
    def backward(ctx, dh):
        x, frame, p, exact = ctx.saved_tensors
        k, t, n_in = x.shape
        gd, factor = _recorded_gram(ctx, dh)
        if not ctx.input_grad:
            return (None,) * 10
        u = (dh @ frame.transpose(1, 2)).double()  # dh A / scale (Gaussian), (U^T dH)^T (orthogonal)
        if bool(exact.any()):
            u[exact] = dh[exact].double() @ frame[exact].double().transpose(1, 2)
        u = u * factor[:, :, None]
        if ctx.orthogonal:  # the part of dH outside col(U) (Gram dH^T dH - a^T a) goes by a Haar isometry
            rows, root = _orthogonal_rows, _noise_factor(gd - u @ u.transpose(1, 2))
        else:  # Z's rows have covariance s^2 dH^T dH
            rows, root = _backward_rows, _noise_factor(gd)
        u, root = u * ctx.scale, root * ctx.scale  # dx is linear in (u, root): the scale rides on the T x T factors
        y = torch.randn(k, t, n_in, generator=ctx.noise_gen, device=x.device, dtype=x.dtype)
        dtype = x.dtype
        dx = rows(u.to(dtype), p.to(dtype), x, root.to(dtype), y)
        if bool(exact.any()):
            e = exact
            dx[e] = rows(u[e], p[e], x[e].double(), root[e], y[e].double()).to(dtype)
        return (dx,) + (None,) * 9


def _haar_frame_rows(k: int, t: int, n: int, seen: torch.Tensor, gen, device, dtype) -> torch.Tensor:
    """U^T (k, t, n): the rows of a Haar-uniform orthonormal t-frame in R^n (Cholesky-QR of a Gaussian, positive
    diagonal: Gram-Schmidt, so rotation-equivariant), with the rows of unseen directions (``~seen``) zero."""
    g_t = torch.randn(k, t, n, generator=gen, device=device, dtype=dtype) * seen[:, :, None].to(dtype)
    gram_g = (g_t @ g_t.transpose(1, 2)).double() + torch.diag_embed((~seen).double())
    chol = torch.linalg.cholesky(gram_g)
    eye = torch.eye(t, dtype=chol.dtype, device=chol.device).expand_as(chol)
    return torch.linalg.solve_triangular(chol, eye, upper=False).to(dtype) @ g_t


def conditional_linear(
    x: torch.Tensor,
    fan_out: int,
    sigma_w: float,
    gen: torch.Generator,
    noise_gen: torch.Generator,
    *,
    gram_x: torch.Tensor | None = None,
    record: Recorder | None = None,
    input_grad: bool = True,
    init: str = "gaussian",
) -> torch.Tensor:
    """``x W^T`` for K fresh layers, Gaussian ``W ~ N(0, sigma_w^2 / fan_in)`` or (``init="orthogonal"``, square,
    ``fan_in >= 2 T``) ``W = sigma_w O`` with O Haar-orthogonal, by the conditional sampler.

    Args:
        x: (K, T, fan_in) layer input (T rows: the batch, or two batches).
        fan_out: output width.
        sigma_w: weight scale.
        gen: draws A in the forward pass; noise_gen: the backward's Z (own stream, so the backward's draws do
            not shift the forward's).
        gram_x: ``x x^T`` (:func:`gram`) when already computed.
        record: called in the backward with ``dh dh^T`` (K, T, T float64) of the incoming gradient; returns
            per-row factors (K, T) the gradient is multiplied by before it travels on (log-space bookkeeping).
        input_grad: False at the first layer: only ``record`` runs in the backward.
        init: "gaussian" or "orthogonal".

    Returns:
        (K, T, fan_out) pre-activations, differentiable in x as described in the module docstring.
    """
    k, _, fan_in = x.shape
    g = gram(x) if gram_x is None else gram_x
    rt, p, exact, seen = _factor(x, g)
    if init == "orthogonal":
        u_t = _haar_frame_rows(k, g.shape[-1], fan_out, seen, gen, x.device, x.dtype)
        return _ConditionalLayer.apply(x, u_t, rt, p, exact, sigma_w, noise_gen, record, input_grad, True)
    scale = sigma_w / math.sqrt(fan_in)
    at = torch.randn(k, g.shape[-1], fan_out, generator=gen, device=x.device, dtype=x.dtype)
    return _ConditionalLayer.apply(x, at, rt, p, exact, scale, noise_gen, record, input_grad, False)
