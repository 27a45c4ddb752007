"""Finite width around the BSB1 fixed point: the linear-noise theory of the batch geometry (docs/finite_width.md).

At width N the post-activation batch Gram ``K_l = (1/N) sum_i f(h_i) f(h_i)^T`` (f = phi after BN, the rows h_i of
layer l i.i.d. N(0, K_{l-1}) given layer l-1) is a Markov chain whose mean step is the mean-field map. Its state
is the centred, trace-normalised ``S = (B-1) P K P / tr(P K P)`` (BSB1 is S = P); the simulator's distance to BSB1
is ``D = ||S - P||_F / ||P||_F``. Near BSB1 the deviation splits into the two S_B irreps: L (dimension B-1, the
examples' norms) and M (dimension B(B-3)/2). Per irrep X and component:

    Sigma_X(l) = lambda_X^2 Sigma_X(l-1) + sigma2_X / N,        E D_l^2 = (d_L Sigma_L(l) + d_M Sigma_M(l)) / (B-1),

with lambda_X the engine's forward eigenvalues (:mod:`.forward`) and sigma2_X the one-neuron noise: the variance per
component of the irrep-X part of ``(B-1)/t [(P f)(P f)^T - |P f|^2 P / (B-1)]`` (t = E|P f|^2, the derivative of S
at BSB1 applied to one neuron's ``f f^T``), estimated by Monte Carlo with its standard error. The L part of a
centred traceless symmetric A has squared norm ``|diag A|^2 / (1 - 2/B)``. Gaussian inputs of dimension N_in start
at ``Sigma_X(0) = s2_X / N_in`` with s2_X the same noise for f = identity (a Wishart Gram).

Regime (checked against the simulator in tests/meanfield/test_linear_noise.py): small deviations, i.e. D well
below 1 - the linear-noise theory fails where the chain leaves BSB1 (relu at large B, docs/finite_width.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from ..nonlinearity import Nonlinearity, PhiSpec, resolve
from ..options import check_int, check_seed
from .api import check_theory_input, theory_resolved

#: neurons drawn for the one-neuron noise (in batches, for the standard error)
SAMPLES, BATCHES = 200_000, 20


@dataclass(frozen=True)
class Fluctuations:
    """The linear-noise constants of one (phi, B) and what they predict.

    Attributes:
        phi, batch_size: the setting.
        lambda_L, lambda_M: the forward eigenvalues at BSB1 (per layer, on each irrep).
        sigma2_L, sigma2_M: the one-neuron noise per component of each irrep (divide by N), Monte Carlo.
        sigma2_L_stderr, sigma2_M_stderr: their standard errors.
        input_sigma2_L, input_sigma2_M: the same for Gaussian inputs (f = identity).
        dims: (d_L, d_M).
    """

    phi: str
    batch_size: int
    lambda_L: float
    lambda_M: float
    sigma2_L: float
    sigma2_M: float
    sigma2_L_stderr: float
    sigma2_M_stderr: float
    input_sigma2_L: float
    input_sigma2_M: float
    dims: tuple[int, int]

    def distance(self, width: int, depth: int, input_dim: int | None = None) -> list[dict]:
        """The predicted distance to BSB1 (root of E D^2) after each of ``depth`` layers of width N, from Gaussian
        inputs of dimension ``input_dim`` (default N): one dict per layer (``layer`` 1..depth, ``distance``)."""
        n = check_int("width", width)
        d = check_int("depth", depth)
        n_in = n if input_dim is None else check_int("input_dim", input_dim)
        path = self.variances(d, n / n_in) / n
        return [{"layer": layer, "distance": math.sqrt((self.dims[0] * s_l + self.dims[1] * s_m)
                                                       / (self.batch_size - 1))}
                for layer, (s_l, s_m) in enumerate(path[1:], start=1)]  # fmt: skip

    def batch_distance(self, width: int, mean_field: np.ndarray, samples: int | None = None) -> list[dict]:
        """The predicted distance to BSB1 (root of E D^2) after each layer of width N from a fixed input batch
        (docs/finite_width.md section 8): ``E D_l^2 ~= D_mf(l)^2 + (d_L Sigma_L(l) + d_M Sigma_M(l)) / (B-1)``, the
        noise recursion started at 0 (fixed inputs carry no sampling noise), the cross term neglected.

        Args:
            width: N.
            mean_field: D_mf(l) for l = 0, 1, ..., depth: the distance of the deterministic Gram iteration from the
                batch's Gram (:func:`bnmft.meanfield.propagation.propagate_resolved`; entry 0, the input, unused).
            samples: units per layer of a Monte Carlo Gram map (None where the map is exact): its own noise, that
                of a layer of width ``samples``, is taken out of ``D_mf^2`` on average.

        Returns:
            One dict per layer (``layer`` 1..depth, ``distance``).
        """
        n = check_int("width", width)
        mf = np.asarray(mean_field, dtype=float)
        noise = self.variances(len(mf) - 1, 0.0) @ np.array(self.dims, dtype=float) / (self.batch_size - 1)
        mf2 = mf**2 if samples is None else np.maximum(mf**2 - noise / samples, 0.0)
        total = mf2 + noise / n
        return [{"layer": layer, "distance": math.sqrt(total[layer])} for layer in range(1, len(mf))]

    def variances(self, depth: int, input_ratio: float = 1.0) -> np.ndarray:
        """``N Sigma_L`` and ``N Sigma_M`` after 0, 1, ..., depth layers (rows; 0: the Gaussian input, of dimension
        ``N / input_ratio``): :func:`variance_path` with this chain's constants."""
        return variance_path((self.lambda_L, self.lambda_M), (self.sigma2_L, self.sigma2_M),
                             (input_ratio * self.input_sigma2_L, input_ratio * self.input_sigma2_M), depth)  # fmt: skip

    def stationary_distance(self, width: int) -> float:
        """The distance the chain settles to: ``Sigma_X = sigma2_X / (N (1 - lambda_X^2))``."""
        n = check_int("width", width)
        s_l = self.sigma2_L / (n * (1 - self.lambda_L**2))
        s_m = self.sigma2_M / (n * (1 - self.lambda_M**2))
        return math.sqrt((self.dims[0] * s_l + self.dims[1] * s_m) / (self.batch_size - 1))


def variance_path(lambdas, sigma2s, start, depth: int) -> np.ndarray:
    """The linear-noise recursion ``s_X(l) = lambda_X^2 s_X(l-1) + sigma2_X`` (section 4 of docs/finite_width.md, in
    units of 1/N) per irrep X, from ``start``: an array (depth + 1, irreps), row l after l layers."""
    lam2, sig = np.asarray(lambdas, dtype=float) ** 2, np.asarray(sigma2s, dtype=float)
    out = np.empty((depth + 1, len(sig)))
    out[0] = start
    for layer in range(1, depth + 1):
        out[layer] = lam2 * out[layer - 1] + sig
    return out


def _irrep_noise(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per neuron (rows of f, shape (n, B)): the squared norms of the L part and of the whole of
    ``(B-1)/t [(P f)(P f)^T - |P f|^2 P/(B-1)]`` (t = mean |P f|^2)."""
    b = f.shape[1]
    pf = f - f.mean(axis=1, keepdims=True)
    norm2 = np.sum(pf**2, axis=1)
    scale = (b - 1) / norm2.mean()
    # diag A = scale (pf^2 - |pf|^2 (1 - 1/B) / (B - 1)); |A|^2 = scale^2 (|pf|^4 - |pf|^4 / (B - 1))
    diag = scale * (pf**2 - norm2[:, None] * (1 - 1 / b) / (b - 1))
    total = scale**2 * norm2**2 * (1 - 1 / (b - 1))
    return np.sum(diag**2, axis=1) / (1 - 2 / b), total


def _noise(values_l: np.ndarray, total: np.ndarray, dims: tuple[int, int]) -> tuple[float, float, float, float]:
    """sigma2_L, sigma2_M and their standard errors from per-neuron squared norms (batch means)."""
    l_parts = np.array_split(values_l, BATCHES)
    m_parts = np.array_split(total - values_l, BATCHES)
    s_l = np.array([p.mean() for p in l_parts]) / dims[0]
    s_m = np.array([p.mean() for p in m_parts]) / dims[1]
    return (float(s_l.mean()), float(s_m.mean()), float(s_l.std(ddof=1) / math.sqrt(BATCHES)),
            float(s_m.std(ddof=1) / math.sqrt(BATCHES)))  # fmt: skip


def fluctuations_resolved(
    base: Nonlinearity, effective: Nonlinearity, b: int, settings: dict, seed: int = 0
) -> Fluctuations:
    """The kernel of :func:`fluctuations` (phi resolved; B and ``settings``, :func:`check_theory_input`'s,
    checked)."""
    t = theory_resolved(base, effective, float(b), **settings)
    if t.lambda_L is None or t.lambda_M is None:
        raise InputError(f"phi={base.name!r}: the engine has no forward eigenvalues at B = {b}")
    dims = (b - 1, b * (b - 3) // 2)
    rng = np.random.default_rng(seed)
    h = rng.standard_normal((SAMPLES, b))
    z = (h - h.mean(axis=1, keepdims=True)) / h.std(axis=1, keepdims=True)  # BN over the batch, per neuron
    l_part, total = _irrep_noise(effective(z))
    s_l, s_m, e_l, e_m = _noise(l_part, total, dims)
    il, itot = _irrep_noise(h)
    in_l, in_m, _, _ = _noise(il, itot, dims)
    return Fluctuations(base.name, b, float(t.lambda_L), float(t.lambda_M), s_l, s_m, e_l, e_m, in_l, in_m, dims)


def fluctuations(phi: PhiSpec, batch_size: int, *, gamma: float = 1.0, beta: float = 0.0, seed: int = 0,
                 **params: Any) -> Fluctuations:  # fmt: skip
    """The linear-noise constants of the batch geometry at finite width (module docstring), eps = 0.

    Args:
        phi: a nonlinearity specification (as :func:`bnmft.theory`); ``params`` its parameters.
        batch_size: B >= 4 (finite).
        gamma, beta: BN's scale and shift (phi(gamma z + beta)).
        seed: the Monte Carlo draws of the one-neuron noise.

    Returns:
        :class:`Fluctuations`; ``.distance(width, depth)`` the predicted distance to BSB1 layer by layer.

    Raises:
        InputError: a bad phi, batch size (infinite or < 4), gamma, beta or seed.
    """
    b, settings = check_theory_input(batch_size, gamma=gamma, beta=beta)
    if math.isinf(b) or b < 4:
        raise InputError(f"batch_size must be a finite integer >= 4, got {batch_size!r}")
    check_seed(seed)
    base, effective = resolve(phi, gamma=settings["gamma"], beta=settings["beta"], **params)
    return fluctuations_resolved(base, effective, int(b), settings, seed)


__all__ = ["Fluctuations", "fluctuations", "fluctuations_resolved"]
