"""Iterating the Gram map from a user's batch: how a real batch approaches the BSB1 fixed point with depth,
and how the correlation between two batches is lost (docs/theory.md sections 2, 5 and 7).

The input is a data batch X (B x d, rows are examples; the first layer's pre-activations have Gram
``X X^T / d``) or a Gram matrix. Each layer applies ``Sigma -> V(Sigma)`` (:mod:`.gram_map`: exact for
homogeneous phi and for B <= 5, Monte Carlo with standard errors otherwise).

Distances are scale-free, so that the input layer can be compared too: with ``N(S) = G S G / tr(G S G)``,
``distance_l = ||N(Sigma_l) - N(Sigma*)||_F / ||N(Sigma*)||_F`` (``N(Sigma*) = G / (B-1)``). From the first
layer on it shrinks like ``max(lambda_L, lambda_M)^l`` near the fixed point.

Two batches X1 (B1 x d), X2 (B2 x d): the joint (B1+B2) x (B1+B2) Gram is propagated with BN applied to each
batch separately. The diagonal blocks follow V; the cross block ``E[phi(BN h1) phi(BN h2)^T]`` is estimated by
Monte Carlo of the joint Gaussian (no exact reduction is known to us). The cross-batch correlation
``tr(G C G) / sqrt(tr(G S_11 G) tr(G S_22 G))`` (batches of equal size: the alignment of matched examples; for
unequal sizes the Frobenius norms replace the traces) is 1 for identical batches and decays to 0 at the
per-layer rate ``cross_batch_rate`` of :func:`bnmft.theory`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..nonlinearity import Nonlinearity, PhiSpec, resolve
from ..options import check_real_array, check_seed
from .api import check_theory_input, theory_resolved
from .gram import METHODS, batch_norm_rows, centring, check_gram, gram_map_resolved
from .result import TheoryResult

#: limits of one propagation (each layer is one Gram map; Monte Carlo costs samples x B^2 per layer)
MAX_DEPTH = 10_000
MAX_SAMPLES = 10**8


@dataclass(frozen=True)
class Propagation:
    """Per-layer Gram matrices of a batch (and of a second batch) through a deep BN network.

    Attributes:
        grams: (depth + 1, B, B); index 0 is the input Gram, index l the Gram after l layers.
        stderr: same shape; Monte Carlo standard errors (zeros where the method is exact).
        distance: (depth + 1,) scale-free distance to the BSB1 fixed point (module docstring).
        fixed_point: Sigma*, (B, B).
        theory: the :class:`TheoryResult` of phi at this batch size (eigenvalues, rates).
        method: the Gram-map method used for the diagonal block(s).
        cross_grams: (depth + 1, B1, B2) cross blocks, or None for one batch.
        cross_correlation, cross_stderr: (depth + 1,) cross-batch correlation and its standard error.
        grams2, distance2: the second batch's Gram matrices and distances (two batches only).
    """

    phi: str
    batch_size: int
    depth: int
    grams: np.ndarray
    stderr: np.ndarray
    distance: np.ndarray
    fixed_point: np.ndarray
    theory: TheoryResult
    method: str
    cross_grams: np.ndarray | None = None
    cross_correlation: np.ndarray | None = None
    cross_stderr: np.ndarray | None = None
    grams2: np.ndarray | None = None
    distance2: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)

    def rows(self) -> list[dict]:
        """Tidy table: one dict per layer."""
        out = []
        for layer in range(self.depth + 1):
            g = self.grams[layer]
            b = len(g)
            diag = float(np.mean(np.diag(g)))
            off = float((g.sum() - np.trace(g)) / (b * (b - 1)))
            row = {
                "layer": layer,
                "distance": float(self.distance[layer]),
                "q_mean": diag,
                "c_mean": off / diag if diag > 0 else 0.0,
                "max_stderr": float(np.max(self.stderr[layer])),
            }
            if self.cross_correlation is not None:
                assert self.cross_stderr is not None and self.distance2 is not None
                row["cross_correlation"] = float(self.cross_correlation[layer])
                row["cross_stderr"] = float(self.cross_stderr[layer])
                row["distance2"] = float(self.distance2[layer])
            out.append(row)
        return out


def gram_of_batch(batch, name: str = "inputs") -> np.ndarray:
    """``X X^T / d`` for a data batch X of shape (B, d), B >= 4 (rows are examples)."""
    x = check_real_array(batch, name)
    if x.ndim == 0 or x.size == 0:
        raise InputError(f"{name} must be an array of shape (batch_size, features), got shape {x.shape}")
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        x = x.reshape(x.shape[0], -1)
    if x.shape[0] < 4:
        raise InputError(f"{name} must hold at least 4 examples (rows), got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise InputError(f"{name} must be finite (it contains NaN or inf)")
    return x @ x.T / x.shape[1]


def normalised_centred(gram: np.ndarray) -> np.ndarray:
    g = centring(len(gram))
    c = g @ gram @ g
    tr = np.trace(c)
    return c / tr if tr > 0 else c


def _distance(gram: np.ndarray) -> float:
    b = len(gram)
    target = centring(b) / (b - 1)
    return float(np.linalg.norm(normalised_centred(gram) - target) / np.linalg.norm(target))


def _cross_correlation(s11, s22, c12) -> float:
    """``tr(G C G) / sqrt(tr(G S11 G) tr(G S22 G))`` for batches of equal size (matched examples; small
    Monte Carlo noise floor), else ``||G C G||_F / sqrt(||G S11 G||_F ||G S22 G||_F)``."""
    g1, g2 = centring(len(s11)), centring(len(s22))
    if len(s11) == len(s22):
        den = math.sqrt(max(np.trace(g1 @ s11 @ g1) * np.trace(g2 @ s22 @ g2), 0.0))
        return float(np.trace(g1 @ c12 @ g2) / den) if den > 0 else 0.0
    num = np.linalg.norm(g1 @ c12 @ g2)
    den = math.sqrt(np.linalg.norm(g1 @ s11 @ g1) * np.linalg.norm(g2 @ s22 @ g2))
    return float(num / den) if den > 0 else 0.0


def _joint_cross(phi: Nonlinearity, joint: np.ndarray, b1: int, samples: int, rng):
    """Monte Carlo of the cross block and of the cross-batch correlation's standard error (batch means)."""
    vals, vecs = np.linalg.eigh(joint)
    root = vecs * np.sqrt(np.maximum(vals, 0.0))
    reps, per = 8, max(samples // 8, 2)
    parts = []
    for _ in range(reps):
        h = rng.standard_normal((per, len(joint))) @ root.T
        f1, f2 = phi(batch_norm_rows(h[:, :b1])), phi(batch_norm_rows(h[:, b1:]))
        parts.append(f1.T @ f2 / per)
    blocks = np.array(parts)
    return blocks.mean(axis=0), blocks.std(axis=0, ddof=1) / math.sqrt(reps), blocks


def propagate(
    phi: PhiSpec,
    inputs: np.ndarray,
    depth: int,
    *,
    inputs2: np.ndarray | None = None,
    gram: bool = False,
    gamma: float = 1.0,
    beta: float = 0.0,
    method: str = "auto",
    samples: int = 100_000,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
    derivative: Callable[[np.ndarray], np.ndarray] | None = None,
    kinks: tuple[float, ...] = (),
    **params: float,
) -> Propagation:
    """Propagate a batch's Gram matrix (and optionally a second batch) through ``depth`` BN layers.

    Args:
        phi, gamma, beta, derivative, kinks, params: the nonlinearity, as in :func:`bnmft.theory`.
        inputs: a data batch (B, d) (rows are examples), or a B x B Gram matrix if ``gram=True``.
        depth: number of layers, 1 ... MAX_DEPTH (10000).
        inputs2: a second batch (same kind as ``inputs``, same number of features) for the cross-batch
            correlation.
        method: Gram-map method (``"auto"``, ``"laplace"``, ``"sphere"``, ``"monte_carlo"``).
        samples, seed: Monte Carlo size per layer (2 ... MAX_SAMPLES = 1e8) and seed (an integer in [0, 2^63);
            same seed, same numbers).
        progress: called with the layer index after each layer.

    Returns:
        A :class:`Propagation`.

    Raises:
        InputError: non-symmetric or non-PSD Gram, wrong shapes, depth < 1, fewer than 4 examples.
    """
    if isinstance(depth, bool) or not isinstance(depth, numbers.Integral) or not 1 <= depth <= MAX_DEPTH:
        raise InputError(f"depth must be an integer >= 1 (and <= {MAX_DEPTH}), got {str(depth)[:30]}")
    check_seed(seed)
    if isinstance(samples, bool) or not isinstance(samples, numbers.Integral) or not 2 <= samples <= MAX_SAMPLES:
        raise InputError(f"samples must be an integer in [2, {MAX_SAMPLES:.0e}], got {str(samples)[:30]}")
    if method not in METHODS:
        raise InputError(f"method must be one of {METHODS}, got {method!r}")
    if inputs2 is None:
        start = check_gram(inputs, "gram") if gram else gram_of_batch(inputs)
        b1 = len(start)
        joint = None
    else:
        if gram:
            raise InputError("inputs2 needs data batches (gram=False): the cross block is not given by two Grams")
        start = gram_of_batch(inputs)  # validates both batches first
        gram_of_batch(inputs2, "inputs2")
        x1, x2 = check_real_array(inputs, "inputs"), check_real_array(inputs2, "inputs2")
        x1 = x1.reshape(x1.shape[0], -1) if x1.ndim > 1 else x1[:, None]
        x2 = x2.reshape(x2.shape[0], -1) if x2.ndim > 1 else x2[:, None]
        if x1.shape[1] != x2.shape[1]:
            raise InputError(f"inputs and inputs2 must have the same number of features, got {x1.shape} and {x2.shape}")
        b1 = len(start)
        both = np.concatenate([x1, x2])
        joint = both @ both.T / both.shape[1]
    b, settings = check_theory_input(b1, gamma=gamma, beta=beta)
    base, effective = resolve(phi, gamma=gamma, beta=beta, derivative=derivative, kinks=kinks, **params)
    return propagate_resolved(base, effective, b, settings, start, int(depth), joint=joint, method=method,
                              samples=int(samples), seed=seed, progress=progress)  # fmt: skip


def propagate_resolved(
    base: Nonlinearity,
    effective: Nonlinearity,
    b: float,
    settings: dict,
    start: np.ndarray,
    depth: int,
    *,
    joint: np.ndarray | None = None,
    method: str = "auto",
    samples: int = 100_000,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> Propagation:
    """The kernel of :func:`propagate`: phi resolved (``effective`` with gamma and beta folded in), ``b`` and
    ``settings`` :func:`check_theory_input`'s, ``start`` a checked B x B Gram (:func:`gram_of_batch` or
    :func:`check_gram`), ``joint`` the two batches' joint Gram (or None), depth, method, samples and seed checked."""
    b1 = len(start)
    rng = np.random.default_rng(seed)
    result = theory_resolved(base, effective, b, **settings)
    q_star, c_star = result.q_star, result.c_star
    assert q_star is not None and c_star is not None  # finite B, eps = 0: the engine always has them
    fixed = q_star * ((1 - c_star) * np.eye(b1) + c_star)

    def step(sigma):
        out = gram_map_resolved(effective, sigma, method=method, samples=samples, rng=rng)
        return out.value, out.stderr, out.method

    grams, errors, used = [start], [np.zeros_like(start)], "exact"
    # the second batch's lists (filled only for two batches)
    cross: list[np.ndarray] = []
    cross_corr: list[float] = []
    cross_se: list[float] = []
    grams2: list[np.ndarray] = []
    if joint is not None:
        s22 = joint[b1:, b1:]
        cross, cross_corr, cross_se, grams2 = (
            [joint[:b1, b1:]],
            [_cross_correlation(start, s22, joint[:b1, b1:])],
            [0.0],
            [s22],
        )
    for layer in range(1, depth + 1):
        value, se, used = step(grams[-1])
        grams.append(value)
        errors.append(se)
        if joint is not None:
            value2 = step(grams2[-1])[0]
            current = np.block([[grams[-2], cross[-1]], [cross[-1].T, grams2[-1]]])
            c12, _, reps = _joint_cross(effective, current, b1, samples, rng)
            corr_reps = [_cross_correlation(value, value2, block) for block in reps]
            grams2.append(value2)
            cross.append(c12)
            cross_corr.append(_cross_correlation(value, value2, c12))
            cross_se.append(float(np.std(corr_reps, ddof=1) / math.sqrt(len(corr_reps))))
        if progress is not None:
            progress(layer)
    notes = []
    if joint is not None:
        notes.append(
            f"cross block by Monte Carlo ({samples} samples per layer): correlations below about "
            f"{3 / math.sqrt(samples):.1g} are at the noise floor"
        )
    return Propagation(
        phi=base.name,
        batch_size=b1,
        depth=int(depth),
        grams=np.array(grams),
        stderr=np.array(errors),
        distance=np.array([_distance(g) for g in grams]),
        fixed_point=fixed,
        theory=result,
        method=used,
        cross_grams=None if joint is None else np.array(cross),
        cross_correlation=None if joint is None else np.array(cross_corr),
        cross_stderr=None if joint is None else np.array(cross_se),
        grams2=None if joint is None else np.array(grams2),
        distance2=None if joint is None else np.array([_distance(g) for g in grams2]),
        notes=notes,
    )
