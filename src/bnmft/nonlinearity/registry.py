"""Nonlinearities: a registry of named functions with exact derivatives, safe expressions, and callables.

Every nonlinearity is a :class:`Nonlinearity`: a vectorised ``phi`` and its derivative ``phi'`` (both map a
float64 array to an array of the same shape), the points where phi or phi' is not smooth (``kinks``, used by
the quadrature to split its domain), and, for the closed forms, a ``family`` tag.

The paper's knobs toward the linear regime, ``gamma`` and ``beta`` of batch norm, fold into the
nonlinearity (docs/theory.md section 1): :meth:`Nonlinearity.affine_input` returns ``z -> phi(gamma * z + beta)``.

Example:
    >>> phi = get_nonlinearity("tanh(2*z) + 0.1*z")
    >>> float(phi(np.array(0.0))), float(phi.derivative(np.array(0.0)))
    (0.0, 2.1)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from types import MappingProxyType
from typing import Any

import numpy as np

from ..errors import InputError
from ..options import check_real
from .elementary import ELEMENTARY
from .expression import Expression

ArrayFn = Callable[[np.ndarray], np.ndarray]

SELU_LAMBDA = 1.0507009873554804934193349852946
SELU_ALPHA = 1.6732632423543772848170429916717


@dataclass(frozen=True)
class Nonlinearity:
    """A scalar nonlinearity phi with its exact derivative.

    Attributes:
        name: canonical description, e.g. ``"tanh"``, ``"alpha_relu(alpha=1.5)"``, ``"tanh(2*z)"``.
        fn: vectorised phi (float64 array in, same-shape array out).
        deriv: vectorised phi'.
        kinks: sorted points z where phi or phi' is not analytic (empty for smooth phi).
        family: ``"identity"``, ``"alpha_relu"`` (relu is alpha_relu at alpha = 1) or ``None``; with ``alpha``
            (degree of positive homogeneity) in ``params``, this enables closed forms.
        params: the parameters the nonlinearity was built with (``slope``, ``alpha``, ``gamma``, ``beta``).
        kink_grading: power p of the graded quadrature map ``u = s^p`` next to kinks (2 integrates
            half-integer power singularities exactly; alpha_relu asks for more when 2 alpha is not an integer).
    """

    name: str
    fn: ArrayFn = field(repr=False)
    deriv: ArrayFn = field(repr=False)
    kinks: tuple[float, ...] = ()
    family: str | None = None
    params: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    kink_grading: int = 2
    #: how to rebuild phi elsewhere (e.g. in the simulator): ("registry", name, params), ("expression", text) or
    #: ("callable",) - see the simulator
    source: tuple = ("callable",)

    def __call__(self, z: np.ndarray) -> np.ndarray:
        return self.fn(np.asarray(z, dtype=float))

    def derivative(self, z: np.ndarray) -> np.ndarray:
        """phi'(z), same shape as z."""
        return self.deriv(np.asarray(z, dtype=float))

    @property
    def homogeneous_degree(self) -> float | None:
        """alpha when phi (gamma and beta included) is positive-homogeneous, ``phi(t z) = t^alpha phi(z)`` for
        t > 0, *and* its Gaussian kernel is known in closed form: identity, relu and alpha_relu with beta = 0 and
        gamma != 0 (the arc-cosine kernels). None otherwise - also for homogeneous functions the registry does not
        tag (leaky_relu, ``abs(z)``), which take the general path. The closed forms, the eps theory's exact
        s-scaling and the Laplace Gram map all key on this one property."""
        gamma = self.params.get("gamma", 1.0)
        beta = self.params.get("beta", 0.0)
        if self.family in ("identity", "alpha_relu") and beta == 0.0 and gamma != 0.0:
            return float(self.params.get("alpha", 1.0))
        return None

    @property
    def parameters(self) -> dict[str, float]:
        """The parameters a user gives this phi (``slope``, ``alpha``): for a registered name, those it takes
        (relu and identity none, although their ``params`` carry ``alpha = 1`` for the closed forms); otherwise
        ``params`` without BN's gamma and beta (and identity's implied alpha)."""
        if self.source[0] == "registry" and self.source[1] in _REGISTRY:
            return {k: float(v) for k, v in self.params.items() if k in _REGISTRY[self.source[1]].params}
        implied = ("gamma", "beta", "alpha") if self.family == "identity" else ("gamma", "beta")
        return {k: float(v) for k, v in self.params.items() if k not in implied}

    @property
    def affine(self) -> tuple[float, float] | None:
        """``(slope, offset)`` when ``phi(z) = slope z + offset`` (identity, gamma and beta included), else None."""
        if self.family != "identity":
            return None
        return float(self.params.get("gamma", 1.0)), float(self.params.get("beta", 0.0))

    def affine_input(self, gamma: float = 1.0, beta: float = 0.0) -> Nonlinearity:
        """``z -> phi(gamma * z + beta)``: BN's gamma and beta folded into phi (docs/theory.md section 1)."""
        check_real("gamma", gamma)
        check_real("beta", beta)
        if gamma == 1.0 and beta == 0.0:
            return self
        g, b, f, d = float(gamma), float(beta), self.fn, self.deriv
        kinks = () if g == 0 else tuple(sorted((k - b) / g for k in self.kinks))
        params = dict(self.params, gamma=g, beta=b)
        return Nonlinearity(
            name=self.name,
            fn=lambda z: f(g * z + b),
            deriv=lambda z: g * d(g * z + b),
            kinks=kinks,
            family=self.family,
            params=MappingProxyType(params),
            kink_grading=self.kink_grading,
            source=self.source,
        )


# -- the registry ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Entry:
    build: Callable[..., Nonlinearity]
    params: tuple[str, ...]
    doc: str


_REGISTRY: dict[str, _Entry] = {}


def register(name: str, params: tuple[str, ...] = (), doc: str = ""):
    """Decorator: register ``build(**params) -> Nonlinearity`` under ``name``."""

    def wrap(build: Callable[..., Nonlinearity]) -> Callable[..., Nonlinearity]:
        _REGISTRY[name] = _Entry(build, params, doc)
        return build

    return wrap


def available() -> dict[str, str]:
    """Registered names -> one-line description (with their parameters)."""
    return {k: e.doc for k, e in sorted(_REGISTRY.items())}


def _elementary(name: str, doc: str) -> None:
    """Register a function of :data:`bnmft._elementary.ELEMENTARY` under its own name."""
    fn = ELEMENTARY[name]
    register(name, doc=doc)(lambda: Nonlinearity(name, fn.value, fn.derivative, (0.0,) if fn.kink else ()))


_elementary("tanh", "tanh(z)")
_elementary("erf", "erf(z)")
_elementary("sigmoid", "1 / (1 + exp(-z))")
_elementary("gelu", "z * Phi(z), Phi the standard normal CDF (exact, not the tanh approximation)")
_elementary("silu", "z * sigmoid(z) (swish)")
_elementary("softplus", "log(1 + exp(z))")
_elementary("sin", "sin(z)")


@register("identity", doc="z")
def _identity() -> Nonlinearity:
    return Nonlinearity(
        "identity", lambda z: z * 1.0, np.ones_like, family="identity", params=MappingProxyType({"alpha": 1.0})
    )


@register("relu", doc="max(z, 0): alpha_relu at alpha = 1")
@cache  # immutable: built once (relu is the most used phi; theory("relu", B) costs ~50 us in all)
def _relu() -> Nonlinearity:
    # the general rule at alpha = 1 (closed forms, Gram map, eps scaling), with relu's elementary value and derivative
    relu = ELEMENTARY["relu"]
    return replace(_alpha_relu(1.0), name="relu", fn=relu.value, deriv=relu.derivative)


@register("leaky_relu", params=("slope",), doc="max(z, 0) + slope * min(z, 0); slope = 0.01 by default")
def _leaky_relu(slope: float = 0.01) -> Nonlinearity:
    s = check_real("slope", slope)
    return Nonlinearity(
        f"leaky_relu(slope={s:g})",
        lambda z: np.where(z > 0, z, s * z),
        lambda z: np.where(z > 0, 1.0, s),
        (0.0,),
        params=MappingProxyType({"slope": s}),
    )


@register("alpha_relu", params=("alpha",), doc="max(z, 0)^alpha, alpha > 0; alpha = 1 is relu")
def _alpha_relu(alpha: float = 1.0) -> Nonlinearity:
    a = check_real("alpha", alpha)
    if a <= 0:
        raise InputError(f"alpha must be > 0 for alpha_relu, got {alpha!r}")

    def f(z):
        return np.where(z > 0, np.power(np.maximum(z, 0.0), a), 0.0)

    def d(z):
        with np.errstate(divide="ignore"):
            return np.where(z > 0, a * np.power(np.maximum(z, 0.0), a - 1), 0.0)

    # phi'^2 ~ z^(2a-2) at 0+; the graded map u = s^p turns it into s^(p(2a-1)-1), polynomial at a = 3/4
    grading = 2 if (2 * a).is_integer() else 6
    return Nonlinearity(
        f"alpha_relu(alpha={a:g})",
        f,
        d,
        (0.0,),
        family="alpha_relu",
        params=MappingProxyType({"alpha": a}),
        kink_grading=grading,
    )


@register("elu", params=("alpha",), doc="z if z > 0 else alpha * (exp(z) - 1); alpha = 1 by default")
def _elu(alpha: float = 1.0) -> Nonlinearity:
    a = check_real("alpha", alpha)
    return Nonlinearity(
        f"elu(alpha={a:g})" if a != 1.0 else "elu",
        lambda z: np.where(z > 0, z, a * np.expm1(np.minimum(z, 0.0))),
        lambda z: np.where(z > 0, 1.0, a * np.exp(np.minimum(z, 0.0))),
        (0.0,),
        params=MappingProxyType({"alpha": a}),
    )


@register("selu", doc="scale * elu(z, alpha) with the self-normalising constants of Klambauer et al.")
def _selu() -> Nonlinearity:
    lam, a = SELU_LAMBDA, SELU_ALPHA
    return Nonlinearity(
        "selu",
        lambda z: lam * np.where(z > 0, z, a * np.expm1(np.minimum(z, 0.0))),
        lambda z: lam * np.where(z > 0, 1.0, a * np.exp(np.minimum(z, 0.0))),
        (0.0,),
    )


# -- resolution ----------------------------------------------------------------------------------------------
def get_nonlinearity(
    spec: str | Nonlinearity | Callable[[np.ndarray], np.ndarray],
    *,
    derivative: Callable[[np.ndarray], np.ndarray] | None = None,
    kinks: tuple[float, ...] = (),
    **params: float,
) -> Nonlinearity:
    """Resolve a nonlinearity specification.

    Args:
        spec: a registered name (see :func:`available`), an expression in ``z`` such as
            ``"tanh(2*z) + 0.1*z"`` (parsed safely, differentiated exactly), a :class:`Nonlinearity`, or a
            numpy-vectorised callable.
        derivative: for a callable, its derivative; if omitted it is computed by a 5-point finite-difference
            stencil (relative accuracy about 1e-10; one-sided next to declared ``kinks``).
        kinks: for a callable, the points where it is not smooth.
        **params: parameters of a registered nonlinearity (``slope`` for leaky_relu, ``alpha`` for
            alpha_relu and elu). ``None`` values are ignored.

    Raises:
        InputError: unknown name, unparsable or disallowed expression, parameter that does not apply.
    """
    params = {k: v for k, v in params.items() if v is not None}
    if isinstance(spec, Nonlinearity):
        _no_params(spec.name, params, ())
        return spec
    if callable(spec):
        _no_params(getattr(spec, "__name__", "callable"), params, ())
        return from_callable(spec, derivative=derivative, kinks=kinks)
    if not isinstance(spec, str):
        raise InputError(f"phi must be a name, an expression in z or a callable, got {type(spec).__name__}")
    key = spec.strip().lower().replace("-", "_")
    if key in _REGISTRY:
        entry = _REGISTRY[key]
        _no_params(key, params, entry.params)
        built = entry.build(**params)
        return replace(built, source=("registry", key, dict(built.params)))
    if spec.strip().replace("-", "_").isidentifier() and not spec.strip().startswith("-") and key != "z":
        raise InputError(
            f"phi: unknown nonlinearity {spec!r}; known names: {', '.join(sorted(_REGISTRY))}, "
            "or an expression in z such as 'tanh(2*z) + 0.1*z'"
        )
    _no_params(spec, params, ())
    return from_expression(spec)


PhiSpec = str | Nonlinearity | Callable[[np.ndarray], np.ndarray]


def takes_parameter(spec: Any, name: str) -> bool:
    """Whether ``spec`` is a registered name whose nonlinearity takes the parameter ``name`` (``alpha`` of
    alpha_relu and elu, ``slope`` of leaky_relu); False for anything else (a Nonlinearity or a callable takes none)."""
    if not isinstance(spec, str):
        return False
    entry = _REGISTRY.get(spec.strip().lower().replace("-", "_"))
    return entry is not None and name in entry.params


def resolve(
    spec: PhiSpec,
    *,
    gamma: float = 1.0,
    beta: float = 0.0,
    derivative: Callable[[np.ndarray], np.ndarray] | None = None,
    kinks: tuple[float, ...] = (),
    **params: float,
) -> tuple[Nonlinearity, Nonlinearity]:
    """The one entry every public function uses for phi: ``(base, effective)``, the nonlinearity of ``spec``
    (see :func:`get_nonlinearity`) and ``z -> base(gamma z + beta)`` (gamma, beta checked finite)."""
    base = get_nonlinearity(spec, derivative=derivative, kinks=kinks, **params)
    return base, base.affine_input(gamma, beta)


def _no_params(name: str, given: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    extra = sorted(set(given) - set(allowed))
    if extra:
        takes = ", ".join(allowed) if allowed else "no parameters"
        raise InputError(f"parameter {extra[0]!r} does not apply to phi={name!r} (it takes: {takes})")


def from_expression(text: str) -> Nonlinearity:
    """A nonlinearity from a safe expression in ``z`` (see :mod:`bnmft._expression`)."""
    expr = Expression(text)

    def f(z):
        return expr.value_and_derivative(z)[0]

    def d(z):
        return expr.value_and_derivative(z)[1]

    return Nonlinearity(expr.text, f, d, expr.kinks(), source=("expression", expr.text))


def from_callable(
    fn: Callable[[np.ndarray], np.ndarray],
    *,
    derivative: Callable[[np.ndarray], np.ndarray] | None = None,
    kinks: tuple[float, ...] = (),
    name: str | None = None,
) -> Nonlinearity:
    """Wrap a numpy-vectorised callable (and optionally its derivative)."""
    kinks = tuple(sorted(check_real("kinks", k) for k in kinks))
    label = name or str(getattr(fn, "__name__", "callable"))

    def f(z):
        return np.asarray(fn(z), dtype=float) * np.ones_like(z)

    d = (lambda z: np.asarray(derivative(z), dtype=float) * np.ones_like(z)) if derivative else _fd(f, kinks)
    return Nonlinearity(label, f, d, kinks)


def _fd(f: ArrayFn, kinks: tuple[float, ...]) -> ArrayFn:
    """5-point central differences; next to a kink, the 5-point one-sided stencil pointing away from it."""

    def d(z):
        z = np.asarray(z, dtype=float)
        h = 1e-3 * np.maximum(1.0, np.abs(z))
        central = (f(z - 2 * h) - 8 * f(z - h) + 8 * f(z + h) - f(z + 2 * h)) / (12 * h)
        if not kinks:
            return central
        dist = z[..., None] - np.asarray(kinks)
        idx = np.argmin(np.abs(dist), axis=-1)
        nearest = np.take_along_axis(dist, idx[..., None], axis=-1)[..., 0]
        near = np.abs(nearest) < 2.5 * h
        if not np.any(near):
            return central
        s = np.where(nearest >= 0, 1.0, -1.0) * h
        one_sided = (-25 * f(z) + 48 * f(z + s) - 36 * f(z + 2 * s) + 16 * f(z + 3 * s) - 3 * f(z + 4 * s)) / (12 * s)
        return np.where(near, one_sided, central)

    return d
