"""The immutable result of :func:`bnmft.theory`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

#: Trainable depth in units of the depth scale, found by the paper's experiments (theory.md section 4).
TRAINABLE_DEPTH_FACTOR = 16.0


def depth_scale(rate: float) -> float:
    """``1 / ln(rate)``; ``inf`` for rate = 1 (no explosion)."""
    return math.inf if rate == 1.0 else 1.0 / math.log(rate)


@dataclass(frozen=True)
class TheoryResult:
    """Mean-field predictions for one nonlinearity and batch size (eps = 0).

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
        method: ``"closed_form"`` or ``"quadrature"``.
        quadrature_error: estimated relative error of the quadrature (``0.0`` for closed forms).
    """

    phi: str
    batch_size: float
    gamma: float
    beta: float
    q_star: float
    c_star: float
    mu_star: float
    phi_mean: float
    lambda_G: float
    depth_scale: float
    max_trainable_depth: float
    method: str
    quadrature_error: float = 0.0
    params: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: ``batch_size`` is an int or ``"inf"``, infinite floats become ``"inf"``."""
        out = asdict(self)
        out["params"] = dict(self.params)
        for key, value in out.items():
            if isinstance(value, float) and math.isinf(value):
                out[key] = "inf" if value > 0 else "-inf"
        if out["batch_size"] != "inf":
            out["batch_size"] = int(self.batch_size)
        return out
