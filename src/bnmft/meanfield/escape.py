"""Escape depth: how deep a BN network of finite width N stays near BSB1 before one example leaves for the outlier
state (derivation and checks: docs/outlier.md section 6).

**The chain.** Each example's centred squared norm is followed in the linear coordinate
``t = S_11 / (1 - 1/B) = B rho / (B - 1 + rho)`` (S the centred, trace-normalised Gram; BSB1: t = 1; rho the
variable of :mod:`.outlier`; the batch mean of t is exactly 1 in every network). Per layer,
``t' = G(t) / Gbar_l + sqrt(w(t) / N) xi``:

* ``G``: the exact reduced map ``F_B`` of :mod:`.outlier` in t (one example against a symmetric background);
* ``Gbar_l = E_l G(t)``: the other examples are not a symmetric background but copies of the same chain, and the
  batch's normalisation divides every example by the batch mean of the mapped norms. At B = inf this is exact for a
  batch with any spread of norms: ``rho'_j = r(rho_j) / mean_i r(rho_i)``, ``r(rho) = E (phi(sqrt(rho) z) - mbar)^2``
  with ``mbar`` the batch mean of phi, whose change with the spread moves r only at third order. To second order
  ``Gbar = 1 + c E (t - 1)^2`` (``c = G''(1) / 2``), the same term as the exact S_B argument gives (the map's second
  derivative summed over an orthonormal basis of the L irrep is invariant, centred and traceless, hence zero: the
  other examples' fluctuations cancel the curvature along the example's own direction on average). Without it the
  chain breaks ``E t = 1`` at order B/N. E_l is over the chain's own surviving law at layer l (self-consistent).
* ``w(t) / N``: the one-layer sampling variance of t' (the delta method on ``t' = B sum_n a_n / sum_n T_n`` over the
  N units, a the unit's centred value of the example squared, T the unit's centred squared norm), Monte Carlo over
  units of the symmetric state with common random numbers on a grid of t (relative standard error about 2.5% at
  100 000 units; at t = 1 it is the L-irrep noise of :mod:`.linear_noise`: ``w(1) = sigma2_L (B-2)/(B-1)``).

The chain is discretised on a grid uniform in log t (cell width a quarter of the smallest relative noise std;
transition probabilities integrated exactly over the cells; below the grid's lower end the mass stays in the first
cell, above the threshold it has escaped). The B examples are treated as independent copies:
``P(no escape by layer l) = S_1(l)^B``. Gaussian inputs of dimension d start at ``Var t_0 = 2 (B-2) / ((B-1) d)``
(a Wishart Gram). Doubling the cells or the noise grid changes the expected depth by < 0.5%; the Monte Carlo seed by
about 1% (tests/meanfield/test_escape.py).

**Not included** (each O(1/N) without the B/N enhancement of the L mode): the ratio bias of t', the O(1/B) difference
between an example's reduced map and its share of the normalisation, the angles (M irrep) beyond their isotropic
cancellation, and the noise's skewness.

**Where it does not apply.** No saddle (tanh, relu at B < 52: no second fixed point): ``expected_depth = inf``,
``escape_probability = 0``. BSB1 not attracting (``lambda_L >= 1``, e.g. gelu at B = 128: the saddle of
:mod:`.outlier` is rho = 1 itself): ``expected_depth`` and ``escape_probability`` are None (the network leaves BSB1
at mean field already).
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
from .outlier import OutlierResult, outlier_state_resolved

#: units drawn for the noise w(t) (common random numbers on every grid point), and the batches of its std. error
SAMPLES, BATCHES = 100_000, 20
#: values (units x examples) per chunk of the Monte Carlo
CHUNK_VALUES = 2_000_000
#: grid points of w(t) between the chain's lower end and the threshold (plus t = 1)
NOISE_POINTS = 10
#: cells per noise std, and the limits on the number of cells
CELLS_PER_STD, MIN_CELLS, MAX_CELLS = 4.0, 200, 4000
#: the kernel (and its derivative in the normalisation factor 1 / Gbar, applied to first order) is rebuilt when the
#: factor has moved by this fraction of the noise std at t = 1 since the last build
REBUILD = 0.05
#: iterate until the normalisation's excess Gbar - 1 is stable to MOMENT_TOL (relative, per layer) and the per-layer
#: escape probability of one example to RATIO_TOL (relative), then sum the geometric tail
MOMENT_TOL, RATIO_TOL, MAX_LAYERS = 1e-9, 1e-6, 50_000
#: the survival curve kept in the result ends where it drops below this
SURVIVAL_FLOOR = 1e-6


@dataclass(frozen=True)
class EscapeDepth:
    """The escape of a width-N, batch-B network from BSB1 (module docstring).

    Attributes:
        phi, batch_size, width, input_dim: the setting (Gaussian inputs of dimension ``input_dim``).
        saddle, stable: the outlier map's unstable and stable fixed points (rho; :func:`bnmft.outlier_state`).
        threshold: rho an example must pass to count as escaped (default ``sqrt(saddle * stable)``).
        expected_depth: the mean layer at which some example first passes the threshold (inf: no saddle; None:
            BSB1 not attracting).
        median_depth: the first layer by which it has happened with probability >= 1/2 (None where it never does).
        escape_probability: per layer, in the quasi-stationary regime, the probability that some example escapes.
        noise_at_bsb1, noise_at_bsb1_stderr: one example's per-layer variance of rho at BSB1, times N, and its Monte
            Carlo standard error (``sigma2_L B^2 (B-2) / (B-1)^3`` in terms of :func:`bnmft.fluctuations`).
        lambda_L: ``F_B'(1)``; curvature: ``c = G''(1)/2`` in t.
        normalisation: the quasi-stationary ``Gbar`` (about ``1 + c E (t - 1)^2``; None where the model does not
            apply).
        stationary_std: the quasi-stationary root mean square of one example's ``rho - 1`` (None likewise).
        survival: ``P(no example has passed the threshold by layer l)``, l = 0, 1, ... (down to 1e-6, or until the
            geometric tail).
    """

    phi: str
    batch_size: int
    width: int
    input_dim: int
    saddle: float | None
    stable: float | None
    threshold: float | None
    expected_depth: float | None
    median_depth: int | None
    escape_probability: float | None
    noise_at_bsb1: float
    noise_at_bsb1_stderr: float
    lambda_L: float
    curvature: float | None
    normalisation: float | None
    stationary_std: float | None
    survival: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (an infinite expected depth as ``"inf"``)."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["survival"] = list(self.survival)
        if out["expected_depth"] is not None and math.isinf(out["expected_depth"]):
            out["expected_depth"] = "inf"
        return out


def escape_depth(
    phi: PhiSpec,
    batch_size: int,
    width: int,
    *,
    input_dim: int | None = None,
    threshold: float | None = None,
    gamma: float = 1.0,
    beta: float = 0.0,
    samples: int = SAMPLES,
    seed: int = 0,
    **params: Any,
) -> EscapeDepth:
    """The depth at which finite-width noise carries one example of a BSB1 batch over the outlier map's saddle.

    Args:
        phi, gamma, beta, **params: the nonlinearity ``phi(gamma z + beta)``, as for :func:`bnmft.theory`.
        batch_size: B, a finite integer >= 4.
        width: N (>= 16: the one-layer noise must be nearly Gaussian).
        input_dim: the dimension of the Gaussian inputs (default N).
        threshold: the rho that counts as escaped, above the saddle and below ``(B-1)^2`` (default
            ``sqrt(saddle * stable)``).
        samples: units drawn for the noise w(t) (>= 2000); seed: their generator.

    Returns:
        :class:`EscapeDepth`.

    Raises:
        InputError: a bad phi, batch size (infinite or < 4), width, input_dim, threshold, samples or seed.
    """
    b, settings = check_theory_input(batch_size, gamma=gamma, beta=beta)
    if math.isinf(b):
        raise InputError(f"batch_size must be a finite integer >= 4, got {batch_size!r}")
    n = check_int("width", width, 16)
    d = n if input_dim is None else check_int("input_dim", input_dim)
    if threshold is not None:
        threshold = check_real("threshold", threshold, positive=True)
    samples = check_int("samples", samples, 2000)
    seed = check_seed(seed)
    base, effective = resolve(phi, gamma=settings["gamma"], beta=settings["beta"], **params)
    return escape_depth_resolved(base, effective, int(b), n, d, threshold, samples, seed)


def escape_depth_resolved(
    base: Nonlinearity,
    phi: Nonlinearity,
    b: int,
    width: int,
    input_dim: int,
    threshold: float | None = None,
    samples: int = SAMPLES,
    seed: int = 0,
    outlier: OutlierResult | None = None,
    background: bool = True,
) -> EscapeDepth:
    """The kernel of :func:`escape_depth` (everything checked; ``outlier``: the outlier result of (phi, B) if already
    computed; ``background=False`` drops the other examples' curvature term, an ablation). Raises InputError for a
    threshold not between the saddle and ``(B-1)^2``."""
    out = outlier_state_resolved(base, phi, float(b)) if outlier is None else outlier
    lam = next(slope for rho, slope, _ in out.fixed_points if rho == 1.0)
    common: dict[str, Any] = {"phi": base.name, "batch_size": b, "width": width, "input_dim": input_dim,
                              "saddle": out.saddle, "stable": out.stable, "lambda_L": lam}  # fmt: skip
    to_rho = b * b / (b - 1.0) ** 2  # (d rho / d t)^2 at t = 1
    if out.saddle is None or out.saddle == 1.0 or lam >= 1:
        if threshold is not None:
            raise InputError(f"threshold does not apply: phi={base.name!r} at batch_size={b} has no saddle above BSB1 "
                             "to escape over (leave it out)")  # fmt: skip
        (w1,), (e1,) = _noise(phi, b, np.array([1.0]), samples, seed)
        no_saddle = out.saddle is None and lam < 1
        return EscapeDepth(**common, threshold=None, expected_depth=math.inf if no_saddle else None,
                           median_depth=None, escape_probability=0.0 if no_saddle else None,
                           noise_at_bsb1=w1 * to_rho, noise_at_bsb1_stderr=e1 * to_rho, curvature=None,
                           normalisation=None, stationary_std=None, survival=(1.0,) if no_saddle else ())  # fmt: skip
    top = (b - 1.0) ** 2
    rho_x = math.sqrt(out.saddle * (out.stable if out.stable is not None else top)) if threshold is None else threshold
    if not out.saddle < rho_x < top:
        raise InputError(f"threshold must be in ({out.saddle:.6g}, {top:g}) (above the saddle), got {threshold!r}")
    chain = _Chain(out, phi, b, width, input_dim, _t_of_rho(b, rho_x), samples, seed, background)
    return EscapeDepth(**common, threshold=rho_x, **chain.run())


def _t_of_rho(b: int, rho: Any) -> Any:
    return b * rho / (b - 1.0 + rho)


def _rho_of_t(b: int, t: Any) -> Any:
    return (b - 1.0) * t / (b - t)


def _noise(phi: Nonlinearity, b: int, ts: np.ndarray, samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``w(t)`` and its standard error at each t: ``B^2 Var(a - q T) / E[T]^2``, q = E a / E T, over units of the
    symmetric state (``h = sqrt(k) z v + P_W g``, then BN and phi; the same z, g for every t)."""
    rng = np.random.default_rng(seed)
    v = np.full(b, -1.0)
    v[0] = b - 1.0
    v /= math.sqrt(b * (b - 1.0))
    rho = _rho_of_t(b, ts)
    kappa = rho * b * (b - 2.0) / ((b - 1.0) ** 2 - rho)
    sums = np.zeros((BATCHES, len(ts), 5))  # per batch and t: sums of a, T, a^2, a T, T^2
    per_batch = np.diff(np.linspace(0, samples, BATCHES + 1).astype(int))
    rows = max(1, CHUNK_VALUES // b)
    for j, count in enumerate(per_batch):
        for start in range(0, count, rows):
            m = min(rows, count - start)
            z = rng.standard_normal(m)
            g = rng.standard_normal((m, b))
            g -= g.mean(axis=1, keepdims=True)
            pw = g - np.outer(g @ v, v)  # the W part: zero-sum, first coordinate 0
            pw2 = np.einsum("ij,ij->i", pw, pw)
            for i, k in enumerate(kappa):
                scale = np.sqrt(b / (k * z * z + pw2))
                f = phi((math.sqrt(k) * z * scale)[:, None] * v[None, :] + pw * scale[:, None])
                f -= f.mean(axis=1, keepdims=True)
                a = f[:, 0] ** 2
                tot = np.einsum("ij,ij->i", f, f)
                sums[j, i] += (a.sum(), tot.sum(), (a * a).sum(), (a * tot).sum(), (tot * tot).sum())

    def w_of(s: np.ndarray, count: float | np.ndarray) -> np.ndarray:
        ma, mt, aa, at, tt = (s[..., c] / count for c in range(5))
        q = ma / mt
        return b * b * (aa - 2 * q * at + q * q * tt - (ma - q * mt) ** 2) / (mt * mt)

    total = w_of(sums.sum(axis=0), samples)
    batches = w_of(sums, per_batch[:, None])
    if not np.all(np.isfinite(total)) or np.any(total <= 0):
        raise InputError(f"phi={phi.name!r}: the one-unit noise of the outlier chain is not finite and positive")
    return total, batches.std(axis=0, ddof=1) / math.sqrt(BATCHES)


class _Chain:
    """The discretised chain in t (module docstring): built once, iterated layer by layer."""

    def __init__(self, out: OutlierResult, phi: Nonlinearity, b: int, n: int, d: int, t_x: float, samples: int,
                 seed: int, background: bool = True):  # fmt: skip
        self.b, self.n, self.t_x = b, n, t_x
        lam = next(slope for rho, slope, _ in out.fixed_points if rho == 1.0)
        self.step = lambda t: _t_of_rho(b, out.map(_rho_of_t(b, t)))
        h = 0.02  # G''(1) by Richardson-extrapolated second differences (G is exact to ~1e-10)
        g = self.step(1.0 + np.array([-2 * h, -h, 0.0, h, 2 * h]))
        second = (16 * (g[1] - 2 * g[2] + g[3]) / h**2 - (g[0] - 2 * g[2] + g[4]) / (4 * h * h)) / 15
        self.curvature = float(second / 2)
        self.weight = 1.0 if background else 0.0  # of the normalisation by the batch's mean G
        # the noise: t = 1 first (its value sizes the chain's lower end), then a log grid up to the threshold
        (w1,), (e1,) = _noise(phi, b, np.array([1.0]), samples, seed)
        self.w1, self.w1_err = float(w1), float(e1)
        spread = math.sqrt(w1 / (n * (1 - lam * lam)) + 2.0 / d)
        self.t_lo = max(0.05, 1.0 - 12 * spread)
        others = np.geomspace(self.t_lo, t_x, NOISE_POINTS)
        others = others[np.abs(others - 1.0) > 1e-3]
        w_others, _ = _noise(phi, b, others, samples, seed)  # the same draws as at t = 1
        order = np.argsort(np.append(others, 1.0))
        grid, w_grid = np.append(others, 1.0)[order], np.append(w_others, w1)[order]
        self.noise = lambda t: np.exp(np.interp(np.log(t), np.log(grid), np.log(w_grid)))
        smallest = float(np.min(np.sqrt(w_grid / n) / grid))  # the smallest relative noise std on the grid
        du = smallest / CELLS_PER_STD
        cells = int(min(MAX_CELLS, max(MIN_CELLS, math.ceil(math.log(t_x / self.t_lo) / du))))
        edges_u = np.linspace(math.log(self.t_lo), math.log(t_x), cells + 1)
        self.edges = np.exp(edges_u)
        self.t = np.exp((edges_u[1:] + edges_u[:-1]) / 2)
        self.mapped = self.step(self.t)
        self.std = np.sqrt(self.noise(self.t) / n)
        var0 = 2.0 * (b - 2) / ((b - 1) * d)
        cdf = ndtr((self.edges - 1.0) / math.sqrt(var0))
        self.p0 = np.diff(cdf)
        self.p0[0] += cdf[0]

    def kernel(self, factor: float) -> tuple[np.ndarray, np.ndarray]:
        """Transition probabilities between cells (rows: from; the mass below the grid in the first cell) for the drift
        ``factor G(t)``, and their derivative in the factor."""
        x = (self.edges[None, :] - factor * self.mapped[:, None]) / self.std[:, None]
        cdf = ndtr(x)
        pdf = -np.exp(-0.5 * x * x) * (self.mapped / (math.sqrt(2 * math.pi) * self.std))[:, None]
        q, dq = np.diff(cdf, axis=1), np.diff(pdf, axis=1)
        q[:, 0] += cdf[:, 0]
        dq[:, 0] += pdf[:, 0]
        return q, dq

    def run(self) -> dict[str, Any]:
        b = self.b
        p = self.p0.copy()
        survival1, built, ratio, factor = [float(p.sum())], math.nan, None, math.nan
        tolerance = REBUILD * math.sqrt(self.w1 / self.n)  # the noise std at t = 1
        for _ in range(MAX_LAYERS):
            mass = p.sum()
            last, factor = factor, float(self.weight * mass / (p @ self.mapped) + 1 - self.weight)  # 1 / mean G
            if not abs(factor - built) < tolerance:  # (also when nothing is built yet)
                (q, dq), built = self.kernel(factor), factor
            moment = float(p @ (self.t - 1.0) ** 2 / mass)
            p = p @ q + (factor - built) * (p @ dq)  # first order in the factor's move since the build
            survival1.append(float(p.sum()))
            new_ratio = survival1[-1] / survival1[-2]
            settled = abs(factor - last) < MOMENT_TOL * abs(1 - factor) + 1e-15  # (False while last is NaN)
            leaving = 1 - new_ratio > 1e-12  # (not yet: a ratio of 1 to rounding is no rate)
            if settled and leaving and ratio is not None and abs(new_ratio - ratio) < RATIO_TOL * (1 - new_ratio):
                ratio = new_ratio
                break
            ratio = new_ratio
            if survival1[-1] ** b < 1e-15:
                break
        s1 = np.array(survival1)
        sb = s1**b
        tail_factor = 1.0 if ratio is None else ratio**b  # (None: the chain never settled on a rate)
        expected = float(sb.sum() + (sb[-1] * tail_factor / (1 - tail_factor) if tail_factor < 1 else math.inf))
        below = np.nonzero(sb <= 0.5)[0]
        if below.size:
            median = int(below[0])
        elif 0 < tail_factor < 1:
            median = len(sb) - 1 + math.ceil(math.log(0.5 / sb[-1]) / math.log(tail_factor))
        else:
            median = None
        keep = sb[: max(2, int(np.argmax(sb < SURVIVAL_FLOOR)) + 1)] if np.any(sb < SURVIVAL_FLOOR) else sb
        scale = b / (b - 1.0)  # d rho / d t at t = 1
        return {
            "expected_depth": expected,
            "median_depth": median,
            "escape_probability": float(1 - tail_factor),
            "noise_at_bsb1": self.w1 * scale**2,
            "noise_at_bsb1_stderr": self.w1_err * scale**2,
            "curvature": self.curvature,
            "normalisation": 1 / factor,
            "stationary_std": math.sqrt(moment) * scale,
            "survival": tuple(float(x) for x in keep),
        }


__all__ = ["EscapeDepth", "escape_depth", "escape_depth_resolved"]
