"""The batch Gram map ``V(Sigma) = E[phi(BN(h)) phi(BN(h))^T]``, ``h ~ N(0, Sigma)``, for any PSD Sigma.

Three methods (docs/theory.md section 2.6), chosen by :func:`gram_map` (``method="auto"``):

* ``"laplace"`` - exact, for positive-homogeneous phi of degree alpha (identity, relu, alpha_relu with
  beta = 0). The Schwinger / Laplace identity ``|u|^(-2a) = Gamma(a)^-1 int_0^inf s^(a-1) e^(-s |u|^2) ds``
  turns V into a one-dimensional integral of Gaussian kernels:
  ``V = B^a / Gamma(a) int ds s^(a-1) det(I + 2 s Sigma_G)^(-1/2) V_phi(Sigma_G (I + 2 s Sigma_G)^(-1))``,
  ``Sigma_G = G Sigma G``, ``V_phi`` the Gaussian kernel of phi (arc-cosine kernel). Numerically: Sigma_G is
  eigendecomposed once (the all-ones direction and zero eigenvalues dropped, so rank-deficient inputs work),
  ``s = e^r``, the log of the scalar factor is accumulated in log space, the r axis is split at
  ``-ln(2 lambda_max) - 8`` and ``-ln(2 lambda_min) + 8`` (around the peak), the middle is integrated by
  composite Gauss-Legendre (10 nodes per unit of r) and the two exponential tails by 40-point Gauss-Laguerre
  rules with their exact decay rates (alpha on the left, rank/2 on the right). Relative accuracy ~1e-12.
* ``"sphere"`` - exact quadrature for any phi when B <= 5: BN's output direction follows the angular central
  Gaussian law ``ACG(Omega)``, ``Omega = Q^T Sigma Q`` (Q an orthonormal basis of im G), whose density
  against the uniform law is ``det(Omega)^(-1/2) (u^T Omega^-1 u)^(-n/2)``, n = B - 1; a product rule on the
  sphere S^(n-1) (Gauss-Legendre in the angles with their cos^k weights, trapezoid on the circle) integrates
  it. Needs full-rank Omega. Relative accuracy ~1e-12 for smooth phi near BSB1 inputs.
* ``"monte_carlo"`` - any phi and B: the sample mean of ``phi(x) phi(x)^T`` over ``samples`` draws, returned
  with its standard error (entrywise).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.special import gammaln

from ..errors import InputError
from ..nonlinearity import Nonlinearity, PhiSpec, resolve
from ..options import check_real_array
from .closed_forms import kernel as arc_cosine

METHODS = ("auto", "laplace", "sphere", "monte_carlo")
SPHERE_MAX_BATCH = 5
RANK_TOL = 1e-12
#: samples x batch size per Monte Carlo chunk (~16 MB of float64)
MC_CHUNK_ELEMENTS = 2_000_000


@dataclass(frozen=True)
class GramMapValue:
    """``value``: V(Sigma) (B x B); ``stderr``: entrywise standard error (zeros for exact methods)."""

    value: np.ndarray
    stderr: np.ndarray
    method: str


def check_gram(gram, name: str = "gram", min_size: int = 4) -> np.ndarray:
    """Validate a Gram (covariance) matrix: square, finite, symmetric and positive semi-definite."""
    g = check_real_array(gram, name)
    if g.ndim != 2 or g.shape[0] != g.shape[1]:
        raise InputError(f"{name} must be a square B x B matrix, got shape {g.shape}")
    if g.shape[0] < min_size:
        raise InputError(f"{name} must be at least {min_size} x {min_size} (batch size >= {min_size}), got {g.shape}")
    if not np.all(np.isfinite(g)):
        raise InputError(f"{name} must be finite (it contains NaN or inf)")
    scale = max(float(np.max(np.abs(g))), 1e-300)
    if np.max(np.abs(g - g.T)) > 1e-10 * scale:
        raise InputError(f"{name} must be symmetric (max |G - G^T| = {np.max(np.abs(g - g.T)):.3g})")
    g = (g + g.T) / 2
    low = float(np.linalg.eigvalsh(g)[0])
    if low < -1e-10 * scale:
        raise InputError(f"{name} must be positive semi-definite (smallest eigenvalue {low:.3g})")
    return g


def centring(b: int) -> np.ndarray:
    """``G = I - 11^T / B``."""
    return np.eye(b) - 1.0 / b


def centred_spectrum(sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nonzero eigenpairs of G Sigma G (eigenvalues (k,), eigenvectors (B, k))."""
    g = centring(len(sigma))
    vals, vecs = np.linalg.eigh(g @ sigma @ g)
    keep = vals > RANK_TOL * max(float(np.max(np.abs(sigma))), 1e-300)
    if not np.any(keep):
        raise InputError(
            "gram: the batch has no spread after centring (G Sigma G = 0: all examples coincide up to a common "
            "shift), so batch norm is undefined"
        )
    return vals[keep], vecs[:, keep]


# -- Laplace method (positive-homogeneous phi) --------------------------------------------------------------
def gaussian_kernel(phi: Nonlinearity, alpha: float, cov: np.ndarray) -> np.ndarray:
    """``E[phi(u) phi(u)^T]``, u ~ N(0, cov), for homogeneous phi (batched over leading axes of cov)."""
    gamma = phi.params.get("gamma", 1.0)
    if phi.family == "identity":
        return gamma * gamma * cov
    diag = np.maximum(np.diagonal(cov, axis1=-2, axis2=-1), 0.0)
    root = np.sqrt(diag)
    outer = root[..., :, None] * root[..., None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.where(outer > 0, cov / outer, 0.0)
    # E[relu(z)^(2a)] = 2^a Gamma(a + 1/2) / (2 sqrt(pi)); max(gamma z, 0)^a has the same law up to |gamma|^a
    second = math.exp(alpha * math.log(2) + gammaln(alpha + 0.5)) / (2 * math.sqrt(math.pi))
    kernel = arc_cosine(alpha, corr)[0]
    return abs(gamma) ** (2 * alpha) * second * outer**alpha * kernel


@lru_cache(maxsize=4)
def _laguerre(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.laguerre.laggauss(n)


@lru_cache(maxsize=4)
def _legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    x, w = np.polynomial.legendre.leggauss(n)
    return (x + 1) / 2, w / 2


def _laplace(phi: Nonlinearity, alpha: float, sigma: np.ndarray) -> np.ndarray:
    b = len(sigma)
    lam, vecs = centred_spectrum(sigma)
    rank = len(lam)
    r_lo = -math.log(2 * lam[-1]) - 8.0
    r_hi = max(-math.log(2 * lam[0]) + 8.0, r_lo + 1.0)
    panels = math.ceil(r_hi - r_lo)
    s01, w01 = _legendre(10)
    edges = np.linspace(r_lo, r_hi, panels + 1)
    width = np.diff(edges)[:, None]
    r_mid = (edges[:-1, None] + width * s01).ravel()
    w_mid = (width * w01).ravel()
    t, wt = _laguerre(40)
    # tails: f(r_lo - t) ~ e^(-alpha t) and f(r_hi + t) ~ e^(-rank t / 2): Laguerre in the scaled variable
    r_left, w_left = r_lo - t / alpha, wt * np.exp(t) / alpha
    r_right, w_right = r_hi + t / (rank / 2), wt * np.exp(t) / (rank / 2)
    r = np.concatenate([r_left, r_mid, r_right])
    w = np.concatenate([w_left, w_mid, w_right])
    s = np.exp(r)
    scaled = lam[None, :] / (1 + 2 * s[:, None] * lam[None, :])  # eigenvalues of the tilted covariance
    log_factor = alpha * r - 0.5 * np.sum(np.log1p(2 * s[:, None] * lam[None, :]), axis=1)
    covs = np.einsum("ik,nk,jk->nij", vecs, scaled, vecs)
    kernels = gaussian_kernel(phi, alpha, covs)
    weights = w * np.exp(log_factor + alpha * math.log(b) - gammaln(alpha))
    return np.einsum("n,nij->ij", weights, kernels)


# -- exact sphere quadrature (small B) ----------------------------------------------------------------------
@lru_cache(maxsize=8)
def sphere_rule(n: int, angle_nodes: int = 40, circle_nodes: int = 80) -> tuple[np.ndarray, np.ndarray]:
    """Product rule for the uniform law on S^(n-1): points (M, n) and probability weights (M,).

    Recursively ``u = (sin t, cos t v)``, t with density ``cos^(n-2) t`` (Gauss-Legendre in t), v on S^(n-2);
    the circle S^1 by the trapezoid rule (exact for trigonometric polynomials of degree < circle_nodes).
    """
    if n == 2:
        a = 2 * np.pi * np.arange(circle_nodes) / circle_nodes
        return np.stack([np.cos(a), np.sin(a)], axis=1), np.full(circle_nodes, 1.0 / circle_nodes)
    x, w = np.polynomial.legendre.leggauss(angle_nodes)
    t = x * np.pi / 2
    wt = w * np.cos(t) ** (n - 2)
    wt /= wt.sum()
    sub, wsub = sphere_rule(n - 1, angle_nodes, circle_nodes)
    pts = np.concatenate(
        [np.repeat(np.sin(t), len(sub))[:, None], (np.cos(t)[:, None, None] * sub[None]).reshape(-1, n - 1)], axis=1
    )
    return pts, np.outer(wt, wsub).ravel()


def _basis(b: int) -> np.ndarray:
    """Orthonormal basis of im G: shape (B, B-1)."""
    vals, vecs = np.linalg.eigh(centring(b))
    return vecs[:, vals > 0.5]


def _sphere(phi: Nonlinearity, sigma: np.ndarray) -> np.ndarray:
    b = len(sigma)
    q = _basis(b)
    omega = q.T @ sigma @ q
    n = b - 1
    vals = np.linalg.eigvalsh(omega)
    if vals[0] <= 1e-9 * vals[-1]:
        raise InputError("method='sphere' needs a Gram matrix whose centred part has full rank B-1")
    u, w = sphere_rule(n)
    inv = np.linalg.inv(omega)
    quad = np.einsum("mi,ij,mj->m", u, inv, u)
    density = np.exp(-0.5 * np.sum(np.log(vals)) - 0.5 * n * np.log(quad))
    x = math.sqrt(b) * u @ q.T
    f = phi(x)
    return np.einsum("m,mi,mj->ij", w * density, f, f)


# -- Monte Carlo -------------------------------------------------------------------------------------------
def batch_norm_rows(h: np.ndarray) -> np.ndarray:
    """``sqrt(B) G h / ||G h||`` for each row h (eps = 0)."""
    centred = h - h.mean(axis=-1, keepdims=True)
    norm = np.linalg.norm(centred, axis=-1, keepdims=True)
    return math.sqrt(h.shape[-1]) * centred / norm


def _monte_carlo(phi: Nonlinearity, sigma: np.ndarray, samples: int, rng) -> tuple[np.ndarray, np.ndarray]:
    b = len(sigma)
    vals, vecs = np.linalg.eigh(sigma)
    root = vecs * np.sqrt(np.maximum(vals, 0.0))
    total, total_sq, done = np.zeros((b, b)), np.zeros((b, b)), 0
    chunk = max(1, min(20000, MC_CHUNK_ELEMENTS // b))  # memory O(chunk B), never O(chunk B^2)
    while done < samples:
        n = min(chunk, samples - done)
        f = phi(batch_norm_rows(rng.standard_normal((n, b)) @ root.T))
        total += f.T @ f  # sum over samples of f f^T
        f2 = f * f
        total_sq += f2.T @ f2  # sum of (f_i f_j)^2
        done += n
    mean = total / samples
    var = np.maximum(total_sq / samples - mean * mean, 0.0)
    return mean, np.sqrt(var / samples)


def gram_map(
    phi: PhiSpec,
    sigma: np.ndarray,
    *,
    gamma: float = 1.0,
    beta: float = 0.0,
    method: str = "auto",
    samples: int = 100_000,
    rng: np.random.Generator | None = None,
    derivative: Callable[[np.ndarray], np.ndarray] | None = None,
    kinks: tuple[float, ...] = (),
    **params: float,
) -> GramMapValue:
    """V(Sigma) for a PSD B x B Sigma (B >= 4) and the nonlinearity ``phi(gamma z + beta)``.

    Args:
        phi, gamma, beta, derivative, kinks, **params: the nonlinearity, as in :func:`bnmft.theory`.
        sigma: the input Gram (covariance) matrix of the pre-activations, B x B, symmetric PSD.
        method: see the module docstring; ``"auto"`` picks laplace for homogeneous phi, sphere for B <= 5, else
            monte_carlo (``samples`` draws from ``rng``, default ``np.random.default_rng(0)``).

    Returns:
        :class:`GramMapValue`: V(Sigma) (B x B) with entrywise standard errors (zeros for exact methods).

    Raises:
        InputError: a bad phi, method, Gram matrix (not square, symmetric, PSD, at least 4 x 4; no spread after
            centring) or sample count; a method that does not apply (laplace: homogeneous phi; sphere: B <= 5).
    """
    _, effective = resolve(phi, gamma=gamma, beta=beta, derivative=derivative, kinks=kinks, **params)
    if method not in METHODS:
        raise InputError(f"method must be one of {METHODS}, got {method!r}")
    sigma = check_gram(sigma)
    return gram_map_resolved(effective, sigma, method=method, samples=samples, rng=rng)


def auto_method(phi: Nonlinearity, batch_size: int) -> str:
    """The method ``"auto"`` picks: laplace for homogeneous phi, sphere for B <= SPHERE_MAX_BATCH, else monte_carlo."""
    if phi.homogeneous_degree is not None:
        return "laplace"
    return "sphere" if batch_size <= SPHERE_MAX_BATCH else "monte_carlo"


def gram_map_resolved(
    phi: Nonlinearity, sigma: np.ndarray, *, method: str = "auto", samples: int = 100_000, rng=None
) -> GramMapValue:
    """The kernel of :func:`gram_map`: phi resolved (gamma, beta included), sigma a checked Gram matrix
    (:func:`check_gram`), method one of :data:`METHODS`; the checks that depend on the method chosen are here."""
    b = len(sigma)
    alpha = phi.homogeneous_degree
    if method == "auto":
        method = auto_method(phi, b)
    if method == "laplace":
        if alpha is None:
            raise InputError(
                f"method='laplace' needs a positive-homogeneous phi (identity, relu, alpha_relu with beta = 0), "
                f"got {phi.name!r}"
            )
        return GramMapValue(_laplace(phi, alpha, sigma), np.zeros((b, b)), "laplace")
    if method == "sphere":
        if b > SPHERE_MAX_BATCH:
            raise InputError(f"method='sphere' is available for B <= {SPHERE_MAX_BATCH}, got B = {b}")
        centred_spectrum(sigma)
        return GramMapValue(_sphere(phi, sigma), np.zeros((b, b)), "sphere")
    if isinstance(samples, bool) or not isinstance(samples, int | np.integer) or samples < 2:
        raise InputError(f"samples must be an integer >= 2, got {samples!r}")
    centred_spectrum(sigma)
    rng = np.random.default_rng(0) if rng is None else rng
    mean, se = _monte_carlo(phi, sigma, int(samples), rng)
    return GramMapValue(mean, se, "monte_carlo")
