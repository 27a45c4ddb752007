"""``bnmft.theory``: the BSB1 fixed point and the gradient explosion rate for any phi and batch size."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

import numpy as np

from ..errors import InputError
from ..nonlinearity import Nonlinearity, PhiSpec, resolve
from ..options import check_batch_size, check_bn_options
from . import closed_forms, forward
from .eps import kappa_critical
from .eps import solve as solve_eps
from .moments import spherical_moments_resolved
from .result import TRAINABLE_DEPTH_FACTOR, TheoryResult, depth_scale

#: lambda_G below 1 by at most this is rounding (the quadrature's accuracy); it is reported as 1
LAMBDA_ROUNDING = 1e-12
METHODS = ("auto", "closed_form", "quadrature")
#: mu* below this fraction of q* means phi is constant on the support (to floating-point precision)
CONSTANT_TOL = 1e-14


def _closed_form(phi: Nonlinearity, batch_size: float) -> dict[str, float] | None:
    """Closed-form values when phi (with its gamma, beta) is affine or positive-homogeneous; else None."""
    if phi.affine is not None:
        return closed_forms.affine(*phi.affine, batch_size)
    a = phi.homogeneous_degree
    if a is None:
        return None
    # max(gamma z, 0)^a = |gamma|^a max(+-z, 0)^a, and the batch law is symmetric under x -> -x.
    values = closed_forms.homogeneous(a, batch_size)
    scale = abs(phi.params.get("gamma", 1.0)) ** a
    values.update(q_star=values["q_star"] * scale**2, mu_star=values["mu_star"] * scale**2, mean=values["mean"] * scale)
    return values


def _overflow_is_bad_input(fn: Callable[..., TheoryResult]) -> Callable[..., TheoryResult]:
    """Settings whose numbers leave double precision (gamma = 1e308, alpha = 1000) are bad input: say so. Wraps the
    kernel :func:`theory_resolved`, so every caller (the public functions and the other kernels) gets the same
    message."""

    @functools.wraps(fn)
    def checked(base: Nonlinearity, effective: Nonlinearity, b: float, **settings: Any) -> TheoryResult:
        try:
            return fn(base, effective, b, **settings)
        except (OverflowError, ZeroDivisionError) as err:
            detail = err.args[-1] if err.args else type(err).__name__  # OverflowError's args may be (errno, text)
            given = "".join(
                f", {k}={v!r}" for k, v in settings.items() if isinstance(v, int | float) and v != _DEFAULTS.get(k)
            )
            raise InputError(
                f"phi={base.name!r}, batch_size={b!r}{given}: the theory's numbers overflow double precision "
                f"({detail}); use smaller settings"
            ) from None

    return checked


#: the defaults of theory's settings (the overflow message names the others)
_DEFAULTS = {"gamma": 1.0, "beta": 0.0, "eps": 0.0, "sigma_w": 1.0}


def check_theory_input(
    batch_size: Any, *, method: str = "auto", eps: Any = 0.0, sigma_w: Any = 1.0, gamma: Any = 1.0, beta: Any = 0.0
) -> tuple[float, dict[str, Any]]:
    """The checks of :func:`theory` except phi: ``(B, settings)`` with settings the keyword arguments of
    :func:`theory_resolved` (method, eps, sigma_w, gamma, beta as floats).

    Raises:
        InputError: a bad method, batch size, eps, sigma_w, gamma (also 0) or beta; eps > 0 with B = inf.
    """
    if method not in METHODS:
        raise InputError(f"method must be one of {METHODS}, got {method!r}")
    b = check_batch_size(batch_size)
    eps, sigma_w, gamma, beta = check_bn_options(eps=eps, sigma_w=sigma_w, gamma=gamma, beta=beta)
    if eps > 0 and math.isinf(b):
        raise InputError("eps > 0 needs a finite batch_size (the eps theory averages over ||G h|| ~ chi_{B-1})")
    if gamma == 0:
        raise InputError("gamma must be nonzero: with gamma = 0, phi(gamma z + beta) is constant")
    return b, {"method": method, "eps": eps, "sigma_w": sigma_w, "gamma": gamma, "beta": beta}


def theory(
    phi: PhiSpec,
    batch_size: int | float | str,
    *,
    gamma: float = 1.0,
    beta: float = 0.0,
    method: str = "auto",
    eps: float = 0.0,
    sigma_w: float = 1.0,
    derivative: Callable[[np.ndarray], np.ndarray] | None = None,
    kinks: tuple[float, ...] = (),
    **params: float,
) -> TheoryResult:
    """Mean-field predictions for a batch-normalised network with nonlinearity ``phi(gamma z + beta)``.

    Args:
        phi: a registered name (``bnmft.nonlinearities()``), an expression in z such as
            ``"tanh(2*z) + 0.1*z"``, a :class:`~bnmft.Nonlinearity`, or a numpy-vectorised callable.
        batch_size: B, an integer >= 4, or ``math.inf`` / ``"inf"`` for the large-batch limit.
        gamma, beta: BN's scale and shift at initialisation.
        method: ``"auto"`` (closed form where one exists, else quadrature), ``"closed_form"`` or
            ``"quadrature"`` (the general path, for any phi).
        eps, sigma_w: BN's eps and the weight scale; only ``kappa = eps / sigma_w^2`` matters
            (docs/theory.md section 6). With eps = 0 every number is that of the eps = 0 theory.
        derivative, kinks: for a callable phi, its derivative and non-smooth points (optional).
        **params: parameters of a registered phi: ``alpha`` (alpha_relu, elu), ``slope`` (leaky_relu).

    Returns:
        A :class:`TheoryResult`. Closed forms where they exist (exact to rounding); otherwise composite
        Gauss-Legendre on the sphere angles with kinks on panel boundaries (:mod:`bnmft.meanfield.quadrature`,
        whose docstring states the measured accuracy); the estimate is in ``quadrature_error``. Nothing of the
        eps > 0 theory is computed at eps = 0 except the closed form ``kappa_c``.

    Raises:
        InputError: bad batch size, gamma, beta, phi or method; constant phi; phi not finite, or with
            moments that diverge; no closed form when ``method="closed_form"``.
    """
    b, settings = check_theory_input(batch_size, method=method, eps=eps, sigma_w=sigma_w, gamma=gamma, beta=beta)
    base, effective = resolve(
        phi, gamma=settings["gamma"], beta=settings["beta"], derivative=derivative, kinks=kinks, **params
    )
    return theory_resolved(base, effective, b, **settings)


@_overflow_is_bad_input
def theory_resolved(
    base: Nonlinearity,
    effective: Nonlinearity,
    b: float,
    *,
    method: str = "auto",
    eps: float = 0.0,
    sigma_w: float = 1.0,
    gamma: float = 1.0,
    beta: float = 0.0,
) -> TheoryResult:
    """The kernel of :func:`theory`: phi already resolved (``base`` and ``effective = base(gamma z + beta)``), the
    settings already checked (:func:`check_theory_input`). Internal code calls this, never :func:`theory`."""
    values = _closed_form(effective, b) if method != "quadrature" else None
    if values is None and method == "closed_form":
        raise InputError(
            f"method='closed_form': no closed form for phi={base.name!r} with beta={beta:g}; closed forms exist "
            "for identity (any gamma, beta), relu and alpha_relu (beta = 0)"
        )
    # the forward eigenvalues in closed form: affine phi, and the degree-1 arc-cosine kernel (relu = alpha_relu at
    # alpha = 1, any gamma != 0); other degrees take the quadrature
    forward_closed = values is not None and (effective.affine is not None or effective.homogeneous_degree == 1.0)
    moments = None
    if values is None or not forward_closed:
        # with a closed-form lambda_G, phi' moments are not needed: do not let them decide convergence
        moments = spherical_moments_resolved(effective, b, with_derivative=values is None)
        _check_not_constant(base.name, gamma, beta, moments.second, moments.mu, moments.d2)
    if values is not None:
        method_used, error = "closed_form", 0.0
        q, c, mu, mean, lam = (float(values[k]) for k in ("q_star", "c_star", "mu_star", "mean", "lambda_G"))
    else:
        assert moments is not None
        method_used, error = "quadrature", moments.error
        q, mu, mean = moments.second, moments.mu, moments.mean
        c = 1.0 - mu / q
        if math.isinf(b):
            lam = moments.d2 / mu  # docs/theory.md section 4: E[phi'^2] / Var[phi]
        else:
            lam = ((b - 1) * moments.d2 + moments.dd - moments.xd) / ((b - 3) * mu)  # docs/theory.md 3.2
    if not (math.isfinite(lam) and lam > 0):
        raise InputError(
            f"phi={base.name!r} with gamma={gamma:g}, beta={beta:g}: lambda_G = {lam:.3g} is not a finite positive "
            "number: phi' must be square-integrable, and not vanish on the support (a step function at this gamma)"
        )
    if not all(math.isfinite(v) for v in (q, c, mu, mean)):
        raise InputError(
            f"phi={base.name!r} with gamma={gamma:g}, beta={beta:g}: the fixed point overflows double precision "
            f"(q* = {q:.3g}); use a smaller gamma or beta"
        )
    if 1.0 - LAMBDA_ROUNDING <= lam < 1.0 or (math.isinf(b) and abs(lam - 1.0) <= LAMBDA_ROUNDING):
        # lambda_G >= 1 for every phi (E[phi'^2] >= Var phi, equality for affine phi at B = inf): what the
        # quadrature cannot tell from 1 is reported as 1 (no explosion), never as a rate below 1
        lam = 1.0
    elif lam < 1.0:
        raise InputError(
            f"phi={base.name!r} with gamma={gamma:g}, beta={beta:g}: lambda_G = 1 - {1 - lam:.2g} cannot be resolved "
            "from 1 in double precision (phi is affine on the support to within rounding); lambda_G = 1 and the "
            "trainable depth is unlimited up to that precision"
        )

    if forward_closed and effective.affine is not None:
        rates = forward.affine_closed_form(b, beta)
    elif forward_closed:
        assert values is not None
        rates = forward.homogeneous_closed_form(1.0, b, mean, values["xphi"], mu)
    else:
        assert moments is not None
        rates = forward.from_moments(moments)
        error = max(error, moments.error)
    xi = depth_scale(lam)
    result_params = dict(base.parameters)
    top = None if rates.lambda_L is None or rates.lambda_M is None else max(rates.lambda_L, rates.lambda_M)
    kappa_c = None if math.isinf(b) else kappa_critical(effective, int(b))
    result = TheoryResult(
        phi=base.name,
        batch_size=b,
        gamma=gamma,
        beta=beta,
        q_star=q,
        c_star=c,
        mu_star=mu,
        phi_mean=mean,
        lambda_G=lam,
        depth_scale=xi,
        max_trainable_depth=TRAINABLE_DEPTH_FACTOR * xi,
        method=method_used,
        quadrature_error=error,
        params=result_params,
        lambda_L=rates.lambda_L,
        lambda_M=rates.lambda_M,
        forward_depth_scale=forward.forward_depth_scale(rates.lambda_L, rates.lambda_M),
        bsb1_stable=None if top is None else bool(top < 1.0),
        forward_method="closed_form" if forward_closed else "quadrature",
        cross_batch_c=rates.cross_batch_c,
        cross_batch_rate=rates.cross_batch_rate,
        eps=eps,
        sigma_w=sigma_w,
        kappa=0.0,
        kappa_c=kappa_c,
        phase="stationary",
        lambda_W=lam,
    )
    if eps == 0.0:
        return result
    return _with_eps(result, effective, int(b), eps, sigma_w)


def _with_eps(r: TheoryResult, phi: Nonlinearity, b: int, eps: float, sigma_w: float) -> TheoryResult:
    """docs/theory.md section 6: replace the fixed point and the rates by their eps > 0 values."""
    kappa = eps / sigma_w / sigma_w
    if not math.isfinite(kappa):
        raise InputError(f"kappa = eps / sigma_w^2 = {eps:g} / {sigma_w:g}^2 overflows; use a larger sigma_w")
    e = solve_eps(phi, b, kappa)
    top = max(e.lambda_G, e.lambda_W)
    xi = depth_scale(top) if top > 1.0 else math.inf
    return replace(
        r,
        q_star=e.q_star,
        c_star=e.c_star,
        mu_star=e.mu_star,
        phi_mean=None,
        lambda_G=e.lambda_G,
        lambda_W=e.lambda_W,
        depth_scale=xi,
        max_trainable_depth=TRAINABLE_DEPTH_FACTOR * xi,
        kappa=kappa,
        kappa_c=e.kappa_c,
        phase=e.phase,
        lambda_L=None,
        lambda_M=None,
        forward_depth_scale=None,
        bsb1_stable=None,
        cross_batch_c=None,
        cross_batch_rate=None,
        method="quadrature" if r.method == "quadrature" or e.phase == "stationary" else r.method,
    )


def _check_not_constant(name: str, gamma: float, beta: float, q: float, mu: float, d2: float) -> None:
    if q > 0 and mu > CONSTANT_TOL * q:
        return
    if q > 0 and d2 > 0:  # phi' does not vanish: phi varies, by less than double precision resolves at its size
        raise InputError(
            f"phi={name!r} with gamma={gamma:g}, beta={beta:g} varies on the support of the batch law too little "
            f"relative to its size for double precision (mu*/q* = {mu / q:.3g} < {CONSTANT_TOL:g}, q* = {q:.3g}, "
            f"although E[phi'^2] = {d2:.3g} > 0): the theory's numbers are lost to rounding; use a smaller |beta| "
            "(or |gamma|)"
        )
    raise InputError(
        f"phi={name!r} with gamma={gamma:g}, beta={beta:g} is constant on the support of the batch "
        f"law (mu* = {mu:.3g}, q* = {q:.3g}); batch norm then passes no signal and no gradient"
    )


def theory_table(phi: PhiSpec, batch_sizes: Iterable, **kwargs: Any) -> list[TheoryResult]:
    """:func:`theory` for each batch size (same keyword arguments): the input checked and phi resolved once.

    Raises:
        InputError: as :func:`theory`, for any of the batch sizes.
    """
    derivative, kinks = kwargs.pop("derivative", None), kwargs.pop("kinks", ())
    options = {k: kwargs.pop(k) for k in ("method", "eps", "sigma_w", "gamma", "beta") if k in kwargs}
    checked = [check_theory_input(b, **options) for b in batch_sizes]
    if not checked:
        return []
    settings = checked[0][1]
    base, effective = resolve(
        phi, gamma=settings["gamma"], beta=settings["beta"], derivative=derivative, kinks=kinks, **kwargs
    )
    return [theory_resolved(base, effective, b, **settings) for b, _ in checked]
