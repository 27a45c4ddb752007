"""Finite-width extrapolation (issue 14, item 4): each estimate measured at several widths N, fitted as
``a + b/N`` (and ``+ c/N^2`` where the data ask for it) by weighted least squares with the estimates' standard errors,
so ``a`` is the infinite-width value (beside the theory) and ``b`` the 1/N coefficient: the width at which the theory
holds to a relative accuracy r is about ``|b| / (r |a|)``.

The quadratic term is added when the linear fit is rejected (chi^2 above the 99% point of its distribution) and at
least 4 widths are available; the standard errors of the coefficients are the weighted least squares ones, scaled
by sqrt(chi^2/dof) when that exceeds 1 (the data scatter more than their error bars).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import chi2 as chi2_dist

ESTIMATES = ("lambda_G", "c_star", "q_star")


@dataclass(frozen=True)
class WidthFit:
    """One estimate at one batch size: ``a`` (infinite width) +- ``a_stderr``, ``b`` (1/N) +- ``b_stderr``, ``c``
    (1/N^2, None when not needed), the theory, chi^2 and its degrees of freedom; ``b_at_theory`` +- its standard
    error: b with the intercept held at the theory (``N (X(N) - theory)`` fitted as ``b + c/N [+ d/N^2]``), which
    the free fit's O(1/N^2) terms do not bias (docs/finite_width.md); None where there is no theory."""

    batch_size: int
    estimate: str
    a: float
    a_stderr: float
    b: float
    b_stderr: float
    c: float | None
    c_stderr: float | None
    theory: float | None
    chi2: float
    dof: int
    widths: tuple[int, ...]
    b_at_theory: float | None = None
    b_at_theory_stderr: float | None = None


def fit_inverse_width(widths, values, stderrs) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Weighted least squares of ``values`` on (1, 1/N[, 1/N^2]): (coefficients, their standard errors, chi^2, dof)."""
    n = np.asarray(widths, dtype=float)
    y = np.asarray(values, dtype=float)
    se = np.maximum(np.asarray(stderrs, dtype=float), 1e-300)

    def solve(order: int):
        design = np.stack([n ** (-p) for p in range(order + 1)], axis=1) / se[:, None]
        coef, *_ = np.linalg.lstsq(design, y / se, rcond=None)
        resid = y / se - design @ coef
        dof = len(y) - (order + 1)
        chi2 = float(resid @ resid)
        cov = np.linalg.inv(design.T @ design)
        scale = max(1.0, chi2 / dof) if dof > 0 else 1.0
        return coef, np.sqrt(np.diag(cov) * scale), chi2, dof

    coef, errs, chi2, dof = solve(1)
    if len(y) >= 4 and dof > 0 and chi2 > chi2_dist.ppf(0.99, dof):
        coef, errs, chi2, dof = solve(2)
    return coef, errs, chi2, dof


@dataclass
class WidthExtrapolation:
    """``simulate_mlp(..., widths=[...])``: the simulation at every width (``results``: width -> SimulationResult) and
    one :class:`WidthFit` per batch size and estimate (``fits``)."""

    results: dict = field(repr=False)
    fits: list[WidthFit]

    def rows(self) -> list[dict]:
        """Tidy records: one per (batch size, estimate)."""
        from dataclasses import asdict

        return [dict(asdict(f), widths=list(f.widths)) for f in self.fits]


def extrapolate(results: dict) -> WidthExtrapolation:
    """Fit every estimate of ``results`` (width -> :class:`~bnmft.simulate.mlp.SimulationResult`, same batch sizes)."""
    widths = sorted(results)
    fits = []
    for i, first in enumerate(results[widths[0]].summaries):
        for name in ESTIMATES:
            values = [getattr(results[w].summaries[i], f"{name}_mean") for w in widths]
            errors = [getattr(results[w].summaries[i], f"{name}_stderr") for w in widths]
            if not all(math.isfinite(v) and math.isfinite(e) for v, e in zip(values, errors, strict=True)):
                continue
            coef, errs, chi2, dof = fit_inverse_width(widths, values, errors)
            theory = getattr(first, f"{name}_theory")
            held = held_se = None
            if theory is not None and math.isfinite(theory) and len(widths) >= 3:
                n = np.asarray(widths, dtype=float)
                scaled = fit_inverse_width(widths, n * (np.asarray(values) - theory), n * np.asarray(errors))
                held, held_se = float(scaled[0][0]), float(scaled[1][0])
            fits.append(
                WidthFit(
                    batch_size=first.batch_size,
                    estimate=name,
                    a=float(coef[0]),
                    a_stderr=float(errs[0]),
                    b=float(coef[1]),
                    b_stderr=float(errs[1]),
                    c=float(coef[2]) if len(coef) > 2 else None,
                    c_stderr=float(errs[2]) if len(coef) > 2 else None,
                    theory=theory,
                    chi2=chi2,
                    dof=dof,
                    widths=tuple(widths),
                    b_at_theory=held,
                    b_at_theory_stderr=held_se,
                )
            )
    return WidthExtrapolation(results, fits)
