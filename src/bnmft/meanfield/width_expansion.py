"""The 1/N corrections of the batch statistics c* and q* at finite width (docs/finite_width.md section 5).

**Rule.** The simulator's ``q_l`` and ``c_l`` are the mean diagonal and (mean off-diagonal) / (mean diagonal) of the
post-activation Gram, averages over the N units of a layer whose rows are i.i.d. given the previous layer's state
``S_{l-1}``. To order 1/N:

    E q_l = q* + g_q (Sigma_L(l-1) - Sigma_M(l-1)),
    E c_l = c* + g_c (Sigma_L(l-1) - Sigma_M(l-1)) + R / N,

with Sigma_X the per-component variances of the linear-noise theory (:mod:`.linear_noise`) and three one-unit
constants: for a statistic F of one unit, which depends only on the direction omega of its centred pre-activations
(BN, eps = 0), the curvature of ``S -> E_{h ~ N(0, S)} F`` at BSB1 averaged over a random deviation is
``g[F] = (B^2 - 1)/8 Cov_omega(F, p_L)``, ``p_L = |diag(omega omega^T - P/(B-1))|^2 / (1 - 2/B)`` (the L part; the M
part gives ``-g``, so an isotropic deviation biases nothing); ``g_q = g[d]`` and ``g_c = g[a - c* d] / q*`` with
``d = |f|^2 / B`` and ``a`` the unit's mean off-diagonal product; ``R = (c* Var d - Cov(a, d)) / q*^2`` is the bias
of the ratio of two unit averages. The first-order response vanishes at BSB1 (no invariant direction) and ``E S = P``
exactly, so nothing else enters at this order.

All constants are Monte Carlo over units (:data:`SAMPLES` in :data:`BATCHES` batches; the standard error comes from
the spread of the coefficient over the batches, plus the noise constants' own error). Measured against the
simulator in tests/meanfield/test_width_expansion.py and docs/finite_width.md section 7 (relu B = 32: -1.88
predicted, -1.97 +- 0.04 measured over the main job's window with the intercept held at the theory).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from ..nonlinearity import Nonlinearity, PhiSpec, resolve
from ..options import check_int, check_real_array, check_seed
from . import gradient_width
from .api import check_theory_input, theory_resolved
from .escape import EscapeDepth, escape_depth_resolved
from .gradient_width import lambda_g_coefficient_resolved
from .gram import centred_spectrum
from .linear_noise import BATCHES, Fluctuations, fluctuations_resolved
from .outlier import OutlierResult, outlier_state_resolved
from .propagation import gram_of_batch, propagate_resolved

#: lambda_G's coefficient needs B >= 6: below, E|P h|^-4 is infinite (lambda_G's fluctuations at B = 4, the Monte
#: Carlo's variance at B = 5), and the 1/N expansion of lambda_G does not exist
MIN_BATCH_LAMBDA = 6
#: units drawn for the curvature and ratio constants (in batches, for the standard error)
SAMPLES = 200_000
#: units per layer of the Monte Carlo Gram map behind a given batch's mean-field distance (phi not homogeneous,
#: B > 5): its own noise is that of a layer this wide, taken out on average (Fluctuations.batch_distance)
MEAN_FIELD_SAMPLES = 200_000
#: where the predicted distance starts (FiniteWidthResult.distance_source)
GAUSSIAN_SOURCE, BATCH_SOURCE = "gaussian inputs of dimension N", "the given batch"


@dataclass(frozen=True)
class UnitConstants:
    """The one-unit constants of the 1/N expansion at one (phi, B), per Monte Carlo batch (arrays of length
    :data:`BATCHES`): ``g_q``, ``g_c`` and ``ratio`` (R)."""

    g_q: np.ndarray
    g_c: np.ndarray
    ratio: np.ndarray


def unit_constants_resolved(effective: Nonlinearity, b: int, seed: int = 0) -> UnitConstants:
    """Estimate ``g_q``, ``g_c`` and ``R`` (module docstring) from :data:`SAMPLES` units h ~ N(0, I_B), per batch.

    Args:
        effective: phi with BN's gamma and beta folded in; b: the batch size (>= 4).

    Returns:
        :class:`UnitConstants` (one value per batch of units).
    """
    rng = np.random.default_rng([seed, 1])
    per = SAMPLES // BATCHES
    g_q, g_c, ratio = [], [], []
    for _ in range(BATCHES):
        h = rng.standard_normal((per, b))
        u = h - h.mean(axis=1, keepdims=True)
        omega = u / np.linalg.norm(u, axis=1, keepdims=True)
        f = effective(math.sqrt(b) * omega)  # BN: zero mean, unit variance over the batch
        d = np.sum(f**2, axis=1) / b
        a = (np.sum(f, axis=1) ** 2 - b * d) / (b * (b - 1))
        p_l = np.sum((omega**2 - 1 / b) ** 2, axis=1) / (1 - 2 / b)
        q, c = d.mean(), a.mean() / d.mean()
        scale = (b * b - 1) / 8

        def cov(x: np.ndarray, y: np.ndarray) -> float:
            return float(np.mean((x - x.mean()) * (y - y.mean())))

        g_q.append(scale * cov(d, p_l))
        g_c.append(scale * cov(a - c * d, p_l) / q)
        ratio.append((c * cov(d, d) - cov(a, d)) / q**2)
    return UnitConstants(np.array(g_q), np.array(g_c), np.array(ratio))


def noise_parts_resolved(fl: Fluctuations, window: tuple[int, int] | None) -> tuple[float, float]:
    """``N Sigma_L`` and ``N Sigma_M`` of the state a layer's statistics are computed from, averaged over the
    simulator's layer indices ``[start, stop)`` (layer l's statistics see the state after l layers; Gaussian inputs of
    dimension N before layer 0), or stationary (``window=None``)."""
    if window is None:
        return fl.sigma2_L / (1 - fl.lambda_L**2), fl.sigma2_M / (1 - fl.lambda_M**2)
    start, stop = window
    part_l, part_m = fl.variances(stop - 1)[start:stop].mean(axis=0)
    return float(part_l), float(part_m)


@dataclass(frozen=True)
class StatisticCoefficients:
    """b in X(N) = X + b / N for q* and c*, with standard errors (Monte Carlo over units)."""

    q_star: float
    q_star_stderr: float
    c_star: float
    c_star_stderr: float


def statistic_coefficients_resolved(
    base: Nonlinearity, effective: Nonlinearity, b: int, settings: dict, window: tuple[int, int] | None, seed: int = 0
) -> tuple[StatisticCoefficients, Fluctuations]:
    """The 1/N coefficients of q* and c* over ``window`` (None: stationary) - a kernel: inputs checked by the caller.

    Returns:
        (coefficients, the :class:`Fluctuations` they used).
    """
    fl = fluctuations_resolved(base, effective, b, settings, seed)
    part_l, part_m = noise_parts_resolved(fl, window)
    diff = part_l - part_m
    consts = unit_constants_resolved(effective, b, seed)
    q_values = consts.g_q * diff
    c_values = consts.g_c * diff + consts.ratio
    # the noise constants' own Monte Carlo error, propagated through diff (each part ~ proportional to its sigma2)
    diff_se = math.hypot(part_l * fl.sigma2_L_stderr / fl.sigma2_L, part_m * fl.sigma2_M_stderr / fl.sigma2_M)

    def mean_se(values: np.ndarray, curvature: np.ndarray) -> tuple[float, float]:
        se = values.std(ddof=1) / math.sqrt(len(values))
        return float(values.mean()), float(math.hypot(se, abs(curvature.mean()) * diff_se))

    q, q_se = mean_se(q_values, consts.g_q)
    c, c_se = mean_se(c_values, consts.g_c)
    return StatisticCoefficients(q, q_se, c, c_se), fl


@dataclass(frozen=True)
class FiniteWidthResult:
    """What width N does to a BN network's mean field at one batch size (:func:`finite_width`).

    Attributes:
        phi, batch_size, width, depth, window: the setting (window: the simulator's layer indices ``[start, stop)``
            the coefficients average over; None: the stationary state).
        c_star, q_star, lambda_G: the mean-field values (N = infinity).
        c_star_coefficient, q_star_coefficient, lambda_G_coefficient: b in ``X(N) = X + b / N``, each with its
            ``*_stderr`` (Monte Carlo over units).
        width_for_1_percent: the width where lambda_G's 1/N correction is 1% of lambda_G (``|b| / (0.01
            lambda_G)``; where b is not resolved, ``|b| < 2 s.e.``, the bound from ``|b| + 2 s.e.``, and
            ``width_for_1_percent_is_bound`` is True). None for B < 6, where lambda_G has no 1/N expansion
            (:data:`MIN_BATCH_LAMBDA`).
        distance: the predicted distance to BSB1 after each layer 1..depth (dicts ``layer``, ``distance``; the
            simulator's layer l), from ``distance_source``: ``"gaussian inputs of dimension N"`` (the default) or
            ``"the given batch"`` (``inputs``); stationary_distance: where it settles (either way).
        fluctuations: the linear-noise constants; outlier: the outlier state at this B; escape: when networks of
            this width started at BSB1 (Gaussian inputs of dimension N) leave it for the outlier state
            (:func:`bnmft.escape_depth`).
    """

    phi: str
    batch_size: int
    width: int
    depth: int
    window: tuple[int, int] | None
    c_star: float
    q_star: float
    lambda_G: float
    c_star_coefficient: float
    c_star_coefficient_stderr: float
    q_star_coefficient: float
    q_star_coefficient_stderr: float
    lambda_G_coefficient: float | None
    lambda_G_coefficient_stderr: float | None
    width_for_1_percent: float | None
    width_for_1_percent_is_bound: bool | None
    distance: list[dict]
    distance_source: str
    stationary_distance: float
    fluctuations: Fluctuations
    outlier: OutlierResult
    escape: EscapeDepth

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: every field; ``fluctuations`` flattened to its constants, ``outlier`` to critical batch size,
        saddle, stable and the escape depth (expected and median; ``"inf"`` where there is no saddle, null where
        BSB1 itself is unstable)."""
        out = {k: v for k, v in self.__dict__.items() if k not in ("fluctuations", "outlier", "escape")}
        out["window"] = None if self.window is None else list(self.window)
        fl = asdict(self.fluctuations)
        out.update({k: fl[k] for k in ("lambda_L", "lambda_M", "sigma2_L", "sigma2_L_stderr", "sigma2_M",
                                       "sigma2_M_stderr")})  # fmt: skip
        o = self.outlier
        e = self.escape.to_dict()
        out["outlier"] = {"critical_batch_size": o.critical_batch_size, "saddle": o.saddle, "stable": o.stable,
                          "escape_depth": e["expected_depth"], "escape_median_depth": e["median_depth"]}  # fmt: skip
        return out


def check_window(window: Any, depth: int | None) -> tuple[int, int] | None:
    """A window ``(start, stop)`` or ``"start:stop"`` of simulator layer indices with ``1 <= start`` and
    ``start + 2 <= stop`` (``stop <= depth`` where a depth is given), or None (the stationary state)."""
    if window is None:
        return None
    if isinstance(window, str):
        parts = window.split(":")
        try:
            window = tuple(int(p) for p in parts)
        except ValueError:
            window = parts
    if not isinstance(window, tuple | list) or len(window) != 2:
        raise InputError(f"window must be start:stop (two layer indices), got {window!r}")
    start, stop = check_int("window start", window[0]), check_int("window stop", window[1])
    if stop - start < 2:
        raise InputError(f"window must have start + 2 <= stop, got {start}:{stop}")
    if depth is not None and stop > depth:
        raise InputError(f"window {start}:{stop} ends below depth={depth}: stop must be <= depth")
    return start, stop


def finite_width(
    phi: PhiSpec,
    batch_size: int,
    width: int,
    *,
    depth: int | None = None,
    window: tuple[int, int] | str | None = None,
    gamma: float = 1.0,
    beta: float = 0.0,
    seed: int = 0,
    samples: int | None = None,
    inputs: Any = None,
    **params: Any,
) -> FiniteWidthResult:
    """Predict what width N does to a BN MLP's mean field (eps = 0): the 1/N coefficients of c*, q* and lambda_G,
    the distance to BSB1 layer by layer, the width where lambda_G is within 1%, and the outlier state.

    Args:
        phi: a nonlinearity specification (as :func:`bnmft.theory`); ``params`` its parameters.
        batch_size: B >= 4 (finite).
        width: N >= 16, units per layer (and the dimension of the Gaussian inputs).
        depth: layers of the predicted distance (default: the window's stop, else 20).
        window: the simulator's layer indices ``(start, stop)`` (or ``"start:stop"``) the coefficients average over,
            as the simulator's estimates do (its default for depth D: ``max(3, D // 3) : D - 3``); None: stationary.
        gamma, beta: BN's scale and shift; seed: the Monte Carlo draws of the one-unit constants.
        samples: one-neuron draws for lambda_G's coefficient (default about 6e7 / B^2, 8 000 to 200 000: about 5 s
            at B = 8, 20 s at B = 128; the standard error falls as 1 / sqrt(samples)).
        inputs: a fixed input batch, a real array of shape (batch_size, d) (rows are examples): the distance is then
            predicted from it (docs/finite_width.md section 8) as ``E D_l^2 ~= D_mf(l)^2 + noise(l) / N``, with
            D_mf the distance of the mean-field Gram iteration from ``X X^T / d`` (as :func:`bnmft.propagate`'s,
            whose ``distance[l]`` is the simulator's layer-l distance ``||S - P||_F / ||P||_F``, ``S = (B-1) P K P /
            tr(P K P)``) and noise the linear-noise recursion started at 0; the cross term between the two is
            neglected (it is small next to D_mf^2 where D_mf is O(1), and next to the noise where D_mf is small).
            Measured against the simulator on the same fixed batch (two clusters, B = 8, 1000 networks of depth 15;
            docs/finite_width.md section 8): at every layer relu within 1.8% (N = 256) and 0.7% (N = 1024), tanh
            within 3.0% and 2.4%, the simulator above the prediction, most where D_mf^2 and the noise are alike.
            None (default): Gaussian inputs of dimension N. The coefficients, stationary distance and escape depth
            do not depend on it.

    Returns:
        :class:`FiniteWidthResult`.

    Raises:
        InputError: bad phi, batch size (infinite or < 4), width, depth, window, gamma, beta, seed or samples
        (which needs B >= 6); inputs not a finite real array of shape (batch_size, d); BSB1 not
        an attracting fixed point of phi at this B (no expansion around it).

    Measured accuracy against the simulator (docs/finite_width.md, the main job's window of depth 60): c*'s
    coefficient within its error bars for tanh (B = 8: -0.0395 predicted, -0.0399 +- 0.0014 measured) and relu
    B <= 32 (B = 32: -1.88 against -1.97 +- 0.04, intercept held at the theory); lambda_G's within 1-2 standard errors
    where the simulation resolves it (relu 8: 0.40 against 0.45 +- 0.10; tanh 32: 3.05 against 2.90 +- 0.17). Not
    valid where the batch leaves BSB1 for the outlier state (relu, B above about 52, width below the escape width;
    ``outlier``).
    """
    b, settings = check_theory_input(batch_size, gamma=gamma, beta=beta)
    if math.isinf(b) or b < 4:
        raise InputError(f"batch_size must be a finite integer >= 4, got {batch_size!r}")
    n = check_int("width", width, 16)  # (the escape chain's one-layer noise must be nearly Gaussian)
    d = None if depth is None else check_int("depth", depth)
    win = check_window(window, d)
    d = d if d is not None else (win[1] if win is not None else 20)
    check_seed(seed)
    draws = None if samples is None else check_int("samples", samples, 2 * gradient_width.BATCHES)
    if draws is not None and b < MIN_BATCH_LAMBDA:
        raise InputError(f"samples applies to lambda_G's coefficient, which needs batch_size >= {MIN_BATCH_LAMBDA} "
                         f"(got {int(b)}): leave it out")  # fmt: skip
    start = None
    if inputs is not None:
        x = check_real_array(inputs, "inputs")
        if x.ndim != 2 or x.shape[0] != b or x.shape[1] < 1:
            raise InputError(f"inputs must be an array of shape (batch_size, d) = ({int(b)}, d), one row per example, "
                             f"got shape {x.shape}")  # fmt: skip
        start = gram_of_batch(x)  # (finite values)
        try:
            centred_spectrum(start)
        except InputError:
            raise InputError("inputs has no spread after centring (all examples coincide up to a common shift): batch "
                             "norm is undefined") from None  # fmt: skip
    base, effective = resolve(phi, gamma=settings["gamma"], beta=settings["beta"], **params)
    return finite_width_resolved(base, effective, int(b), settings, n, d, win, seed, draws, start)


def finite_width_resolved(
    base: Nonlinearity,
    effective: Nonlinearity,
    b: int,
    settings: dict,
    width: int,
    depth: int,
    window: tuple[int, int] | None,
    seed: int = 0,
    samples: int | None = None,
    start: np.ndarray | None = None,
) -> FiniteWidthResult:
    """The kernel of :func:`finite_width` (every input checked and resolved; ``start``: a given batch's Gram
    ``X X^T / d``, :func:`~bnmft.meanfield.propagation.gram_of_batch`'s, or None for Gaussian inputs)."""
    t = theory_resolved(base, effective, float(b), **settings)
    if not t.bsb1_stable:
        raise InputError(f"phi={base.name!r}, batch_size={b}: BSB1 is not an attracting fixed point, no 1/N expansion")
    outlier = outlier_state_resolved(base, effective, float(b))
    stats, fl = statistic_coefficients_resolved(base, effective, b, settings, window, seed)
    lam_b = lam_se = needed = resolved = None
    if b >= MIN_BATCH_LAMBDA:
        lam_b, lam_se = lambda_g_coefficient_resolved(base, effective, b, settings, window=window, depth=depth,
                                                      seed=seed, samples=samples)  # fmt: skip
        resolved = abs(lam_b) > 2 * lam_se
        needed = float((abs(lam_b) if resolved else abs(lam_b) + 2 * lam_se) / (0.01 * t.lambda_G))
    assert t.c_star is not None and t.q_star is not None  # finite B, eps = 0: the engine always has them
    if start is None:
        distance, source = fl.distance(width, depth), GAUSSIAN_SOURCE
    else:  # the mean field from the batch (its own Monte Carlo stream), the noise from 0 (docs/finite_width.md s. 8)
        mf_seed = int(np.random.default_rng([seed, 2]).integers(2**62))
        path = propagate_resolved(base, effective, float(b), settings, start, depth, samples=MEAN_FIELD_SAMPLES,
                                  seed=mf_seed)  # fmt: skip
        exact = path.method != "monte_carlo"
        distance = fl.batch_distance(width, path.distance, None if exact else MEAN_FIELD_SAMPLES)
        source = BATCH_SOURCE
    return FiniteWidthResult(
        phi=base.name, batch_size=b, width=width, depth=depth, window=window, c_star=float(t.c_star),
        q_star=float(t.q_star), lambda_G=float(t.lambda_G), c_star_coefficient=stats.c_star,
        c_star_coefficient_stderr=stats.c_star_stderr, q_star_coefficient=stats.q_star,
        q_star_coefficient_stderr=stats.q_star_stderr, lambda_G_coefficient=lam_b, lambda_G_coefficient_stderr=lam_se,
        width_for_1_percent=needed, width_for_1_percent_is_bound=None if resolved is None else not resolved,
        distance=distance, distance_source=source, stationary_distance=fl.stationary_distance(width), fluctuations=fl,
        outlier=outlier, escape=escape_depth_resolved(base, effective, b, width, width, seed=seed, outlier=outlier),
    )  # fmt: skip


__all__ = [
    "FiniteWidthResult",
    "StatisticCoefficients",
    "UnitConstants",
    "check_window",
    "finite_width",
    "finite_width_resolved",
    "noise_parts_resolved",
    "statistic_coefficients_resolved",
    "unit_constants_resolved",
]
