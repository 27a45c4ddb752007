"""The immutable result of :func:`bnmft.theory`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

#: Trainable depth in units of the depth scale, found by the paper's experiments (docs/theory.md section 8).
TRAINABLE_DEPTH_FACTOR = 16.0


#: the keys of a result in tables and JSON output (bnmft theory --json, the main job's table)
SUMMARY_KEYS = (
    "phi",
    "batch_size",
    "gamma",
    "beta",
    "q_star",
    "c_star",
    "mu_star",
    "lambda_G",
    "depth_scale",
    "max_trainable_depth",
    "lambda_L",
    "lambda_M",
    "multiplicity_L",
    "multiplicity_M",
    "forward_depth_scale",
    "bsb1_stable",
    "cross_batch_c",
    "cross_batch_rate",
    "eps",
    "sigma_w",
    "kappa",
    "kappa_c",
    "phase",
    "lambda_W",
    "method",
    "forward_method",
    "phi_mean",
    "quadrature_error",
    "params",
)


def depth_scale(rate: float) -> float:
    """``1 / ln(rate)``; ``inf`` for rate = 1 (no explosion)."""
    return math.inf if rate == 1.0 else 1.0 / math.log(rate)


@dataclass(frozen=True)
class TheoryResult:
    """Mean-field predictions for one nonlinearity and batch size (and BN's eps, sigma_w).

    Attributes:
        phi: name of the nonlinearity (without gamma and beta).
        batch_size: B, an int >= 4, or ``math.inf`` for the large-batch limit.
        gamma, beta: BN's scale and shift, folded into phi: ``phi(gamma z + beta)``.
        params: parameters of phi (``alpha``, ``slope``).
        q_star: diagonal of the BSB1 fixed point Sigma* (second moment of phi under the batch law).
        c_star: off-diagonal of Sigma* divided by q_star.
        mu_star: ``q*(1 - c*)``, the eigenvalue of Sigma* on im G.
        phi_mean: ``E[phi(x_1)]`` under the batch law.
        lambda_G: per-layer growth factor of the squared gradient norm going backward.
        depth_scale: ``1 / ln lambda_G`` (``inf`` when lambda_G = 1).
        max_trainable_depth: ``16 * depth_scale``.
        method: ``"closed_form"`` or ``"quadrature"``: how q*, c*, mu*, lambda_G were computed.
        quadrature_error: estimated relative error of the quadrature (``0.0`` for closed forms).
        lambda_L, lambda_M: the nonzero eigenvalues of the forward Jacobian at Sigma* (docs/theory.md section 5),
            with multiplicities :attr:`multiplicity_L` = B-1 and :attr:`multiplicity_M` = B(B-3)/2; the other
            B+1 eigenvalues are 0. ``None`` for B = inf (the spectrum is defined at finite B only).
        forward_depth_scale: ``-1 / ln max(lambda_L, lambda_M)`` (``inf`` if BSB1 is not attracting).
        bsb1_stable: both eigenvalues < 1: BSB1 is locally attracting.
        forward_method: ``"closed_form"`` (relu, affine) or ``"quadrature"``.
        cross_batch_c: the constant cross block ``E[phi]^2`` of the two-batch fixed point (docs/theory.md section 7).
        cross_batch_rate: per-layer factor by which the correlation between two batches decays.
        eps, sigma_w, kappa: BN's eps, the weight scale and ``kappa = eps / sigma_w^2`` (docs/theory.md section 6).
        kappa_c: the critical kappa; ``phase``: ``"stationary"`` (kappa < kappa_c) or ``"collapsed"``.
        lambda_W: growth rate of the weight gradients (= lambda_G in the stationary phase). With eps > 0,
            ``depth_scale`` and ``max_trainable_depth`` use ``max(lambda_G, lambda_W)``; in the collapsed phase
            q*, c* are not defined (None) and mu* = 0; the eps = 0 forward quantities (lambda_L, lambda_M,
            cross-batch) are None for eps > 0 (not derived).
    """

    phi: str
    batch_size: float
    gamma: float
    beta: float
    q_star: float | None
    c_star: float | None
    mu_star: float
    phi_mean: float | None
    lambda_G: float
    depth_scale: float
    max_trainable_depth: float
    method: str
    quadrature_error: float = 0.0
    params: Mapping[str, float] = field(default_factory=dict)
    lambda_L: float | None = None
    lambda_M: float | None = None
    forward_depth_scale: float | None = None
    bsb1_stable: bool | None = None
    forward_method: str | None = None
    cross_batch_c: float | None = None
    cross_batch_rate: float | None = None
    eps: float = 0.0
    sigma_w: float = 1.0
    kappa: float = 0.0
    kappa_c: float | None = None
    phase: str = "stationary"
    lambda_W: float | None = None

    @property
    def multiplicity_L(self) -> int | None:
        """B - 1 (perturbations of the examples' norms), None for B = inf."""
        return None if math.isinf(self.batch_size) else int(self.batch_size) - 1

    @property
    def multiplicity_M(self) -> int | None:
        """B(B-3)/2 (perturbations of the correlations between examples), None for B = inf."""
        return None if math.isinf(self.batch_size) else int(self.batch_size) * (int(self.batch_size) - 3) // 2

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: ``batch_size`` is an int or ``"inf"``, infinite floats become ``"inf"``."""
        out = asdict(self)
        out["params"] = dict(self.params)
        out["multiplicity_L"], out["multiplicity_M"] = self.multiplicity_L, self.multiplicity_M
        for key, value in out.items():
            if isinstance(value, float) and math.isinf(value):
                out[key] = "inf" if value > 0 else "-inf"
        if out["batch_size"] != "inf":
            out["batch_size"] = int(self.batch_size)
        return out
