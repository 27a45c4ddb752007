"""Safe parsing and exact differentiation of nonlinearity expressions in ``z``.

An expression such as ``"tanh(2*z) + 0.1*z"`` is parsed with :mod:`ast` and checked against a whitelist
(numbers, the variable ``z``, the constants ``pi`` and ``e``, ``+ - * / **`` and the functions in
:data:`FUNCTIONS`). Nothing is ever passed to ``eval``. The checked tree is compiled into numpy closures
that evaluate value and derivative together (forward-mode automatic differentiation with dual numbers),
so the derivative is exact to rounding.

Functions with a kink (``abs``, ``relu``, ``max``, ``min``) record the sub-expression whose zero is the kink,
so the quadrature can split its domain there (see :func:`Expression.kinks`).
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .elementary import ALIASES, ELEMENTARY, Elementary

MAX_LENGTH = 1000
MAX_NODES = 400


@dataclass(frozen=True)
class Dual:
    """A value and its derivative with respect to z (arrays or scalars)."""

    val: np.ndarray | float
    der: np.ndarray | float


def _const(c: float) -> Dual:
    return Dual(c, 0.0)


def _unary(fn: Elementary) -> Callable[[Dual], Dual]:
    def apply(a: Dual) -> Dual:
        val = np.asarray(a.val)
        return Dual(fn.value(val), fn.derivative(val) * a.der)

    return apply


def _constant_fn(c: float) -> Callable[[Dual], Dual]:
    def constant(z: Dual) -> Dual:
        return _const(c)

    return constant


def _maximum(a: Dual, b: Dual) -> Dual:
    pick = np.greater(a.val, b.val)
    return Dual(np.where(pick, a.val, b.val), np.where(pick, a.der, b.der))


def _minimum(a: Dual, b: Dual) -> Dual:
    pick = np.less(a.val, b.val)
    return Dual(np.where(pick, a.val, b.val), np.where(pick, a.der, b.der))


#: name -> (number of arguments, implementation on dual numbers, kink: does it have a kink where its
#: first argument (minus the second, for max/min) crosses zero). The unary ones are :data:`ELEMENTARY`.
FUNCTIONS: dict[str, tuple[int, Callable[..., Dual], bool]] = {
    **{name: (1, _unary(fn), fn.kink) for name, fn in ELEMENTARY.items()},
    **{alias: (1, _unary(ELEMENTARY[name]), ELEMENTARY[name].kink) for alias, name in ALIASES.items()},
    "max": (2, _maximum, True),
    "min": (2, _minimum, True),
}
#: the functions of two arguments (a backend for :meth:`Expression.build` provides these too)
BINARY = ("max", "min")

CONSTANTS = {"pi": math.pi, "e": math.e}
_OPERATORS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}


class ExpressionError(InputError):
    """An expression that cannot be parsed or is not allowed."""


def _pow(a: Dual, b: Dual, b_is_const: bool) -> Dual:
    val = np.power(a.val, b.val)
    if b_is_const:
        # d(a^c) = c a^(c-1) a'; written so that a^0 and integer powers of 0 stay finite.
        c = b.val
        der = 0.0 if c == 0 else c * np.power(a.val, c - 1) * a.der
    else:
        der = val * (b.der * np.log(a.val) + b.val * a.der / a.val)
    return Dual(val, der)


@dataclass
class _Compiled:
    fn: Callable[[Dual], Dual]
    is_const: bool


class Expression:
    """A parsed, whitelisted expression in ``z``.

    Args:
        text: the expression, e.g. ``"tanh(2*z) + 0.1*z"``.

    Raises:
        ExpressionError: (an :class:`~bnmft.errors.InputError`) naming what is not allowed.
    """

    def __init__(self, text: str):
        if not isinstance(text, str) or not text.strip():
            raise ExpressionError("phi: the expression is empty")
        if len(text) > MAX_LENGTH:
            raise ExpressionError(f"phi: the expression is longer than {MAX_LENGTH} characters")
        self.text = text.strip()
        try:
            tree = ast.parse(self.text, mode="eval")
        except (SyntaxError, RecursionError, MemoryError, ValueError) as err:
            raise ExpressionError(f"phi: cannot parse {self.text!r} as an expression in z ({err})") from None
        count = sum(1 for _ in ast.walk(tree))
        if count > MAX_NODES:
            raise ExpressionError(f"phi: the expression has more than {MAX_NODES} parts")
        self._kink_args: list[Callable[[Dual], Dual]] = []
        self._uses_z = False
        try:
            self._root = self._compile(tree.body)
        except RecursionError:
            raise ExpressionError("phi: the expression is nested too deeply") from None
        if not self._uses_z:
            raise ExpressionError(f"phi: {self.text!r} does not depend on z (phi must not be constant)")

    # -- compilation -------------------------------------------------------------------------------------
    def _compile(self, node: ast.AST) -> _Compiled:
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, int | float):
                raise ExpressionError(f"phi: constant {node.value!r} is not allowed (only real numbers)")
            try:
                value = float(node.value)
            except OverflowError:
                raise ExpressionError(f"phi: the constant {str(node.value)[:20]}... is too large for a float") from None
            return _Compiled(_constant_fn(value), True)
        if isinstance(node, ast.Name):
            if node.id == "z":
                self._uses_z = True
                return _Compiled(lambda z: z, False)
            if node.id in CONSTANTS:
                return _Compiled(_constant_fn(CONSTANTS[node.id]), True)
            raise ExpressionError(
                f"phi: unknown name {node.id!r}; the variable is 'z', constants are {sorted(CONSTANTS)}"
            )
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            inner = self._compile(node.operand)
            if isinstance(node.op, ast.UAdd):
                return inner
            f = inner.fn
            return _Compiled(lambda z: (lambda a: Dual(-a.val, -a.der))(f(z)), inner.is_const)
        if isinstance(node, ast.BinOp):
            return self._binop(node)
        if isinstance(node, ast.Call):
            return self._call(node)
        raise ExpressionError(
            f"phi: {type(node).__name__} is not allowed in an expression; use numbers, z, + - * / ** and "
            f"the functions {sorted(FUNCTIONS)}"
        )

    def _binop(self, node: ast.BinOp) -> _Compiled:
        left, right = self._compile(node.left), self._compile(node.right)
        lf, rf = left.fn, right.fn
        is_const = left.is_const and right.is_const
        op = node.op
        if isinstance(op, ast.Add):
            fn = lambda z: (lambda a, b: Dual(a.val + b.val, a.der + b.der))(lf(z), rf(z))  # noqa: E731
        elif isinstance(op, ast.Sub):
            fn = lambda z: (lambda a, b: Dual(a.val - b.val, a.der - b.der))(lf(z), rf(z))  # noqa: E731
        elif isinstance(op, ast.Mult):
            fn = lambda z: (lambda a, b: Dual(a.val * b.val, a.der * b.val + a.val * b.der))(lf(z), rf(z))  # noqa: E731
        elif isinstance(op, ast.Div):
            fn = lambda z: (  # noqa: E731
                lambda a, b: Dual(a.val / b.val, (a.der * b.val - a.val * b.der) / (b.val * b.val))
            )(lf(z), rf(z))
        elif isinstance(op, ast.Pow):
            rc = right.is_const
            fn = lambda z: _pow(lf(z), rf(z), rc)  # noqa: E731
        else:
            raise ExpressionError(f"phi: operator {type(op).__name__} is not allowed; use + - * / **")
        return _Compiled(fn, is_const)

    def _call(self, node: ast.Call) -> _Compiled:
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            name = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
            raise ExpressionError(f"phi: unknown function {name!r}; allowed: {sorted(FUNCTIONS)}")
        if node.keywords:
            raise ExpressionError(f"phi: {node.func.id}() takes no keyword arguments")
        arity, impl, has_kink = FUNCTIONS[node.func.id]
        if len(node.args) != arity:
            raise ExpressionError(f"phi: {node.func.id}() takes {arity} argument(s), got {len(node.args)}")
        args = [self._compile(a) for a in node.args]
        fns = [a.fn for a in args]
        is_const = all(a.is_const for a in args)
        if has_kink and not is_const:
            if arity == 1:
                self._kink_args.append(fns[0])
            else:
                f0, f1 = fns
                self._kink_args.append(lambda z: (lambda a, b: Dual(a.val - b.val, 0.0))(f0(z), f1(z)))
        return _Compiled(lambda z: impl(*[f(z) for f in fns]), is_const)

    # -- other backends (values only) ---------------------------------------------------------------------
    def build(self, functions: Mapping[str, Callable]) -> Callable:
        """The same checked tree as a function ``z -> phi(z)`` on another array type (e.g. the simulator's tensors,
        whose autograd then differentiates it). Arithmetic uses the array type's operators; calls use ``functions``, a
        table with every name of :data:`ELEMENTARY` and :data:`BINARY`. Constant sub-expressions are folded here
        (with numpy), so ``functions`` only ever sees arrays, except for one argument of max and min.
        """
        tree = ast.parse(self.text, mode="eval").body  # already checked by __init__
        table = {**functions, **{alias: functions[name] for alias, name in ALIASES.items()}}

        def constant(node: ast.AST) -> float | None:
            compiled = self._compile(node)
            return float(compiled.fn(_const(0.0)).val) if compiled.is_const else None

        def build(node: ast.AST) -> Callable:
            value = constant(node)
            if value is not None:
                return lambda z: value
            if isinstance(node, ast.Name):  # z (named constants were folded)
                return lambda z: z
            if isinstance(node, ast.UnaryOp):
                inner = build(node.operand)
                return (lambda z: -inner(z)) if isinstance(node.op, ast.USub) else inner
            if isinstance(node, ast.BinOp):
                a, b = build(node.left), build(node.right)
                op = _OPERATORS[type(node.op)]
                return lambda z: op(a(z), b(z))
            assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            fn = table[node.func.id]
            args = [build(arg) for arg in node.args]
            if len(args) == 2:
                first, second = args
                return lambda z: fn(first(z), second(z))
            (only,) = args
            return lambda z: fn(only(z))

        return build(tree)

    # -- evaluation ----------------------------------------------------------------------------------------
    def value_and_derivative(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """phi(z) and phi'(z), broadcast to the shape of z."""
        z = np.asarray(z, dtype=float)
        with np.errstate(all="ignore"):
            out = self._root.fn(Dual(z, np.ones_like(z)))
        return np.broadcast_to(out.val, z.shape).astype(float), np.broadcast_to(out.der, z.shape).astype(float)

    def kinks(self, lo: float = -60.0, hi: float = 60.0, grid: int = 24001) -> tuple[float, ...]:
        """Points in [lo, hi] where an argument of abs/relu/max/min crosses zero (where phi may have a kink).

        Found by a sign scan on a uniform grid followed by Brent's method; tangential zeros (which cause no
        kink of the value) are not reported.
        """
        from scipy.optimize import brentq

        zs = np.linspace(lo, hi, grid)
        found: list[float] = []
        for arg in self._kink_args:
            with np.errstate(all="ignore"):
                vals = np.broadcast_to(arg(Dual(zs, np.ones_like(zs))).val, zs.shape)

            def f(t, arg=arg):
                with np.errstate(all="ignore"):
                    return float(np.asarray(arg(Dual(np.float64(t), 1.0)).val))

            exact = zs[vals == 0.0]
            found.extend(float(t) for t in exact)
            sign = np.sign(vals)
            idx = np.nonzero((sign[:-1] * sign[1:]) < 0)[0]
            for i in idx:
                if np.isfinite(vals[i]) and np.isfinite(vals[i + 1]):
                    found.append(
                        brentq(f, zs[i], zs[i + 1], xtol=1e-15, rtol=4 * np.finfo(float).eps)
                    )  # scipy's minimum
        found.sort()
        unique: list[float] = []
        for t in found:
            if not unique or t - unique[-1] > 1e-12 * max(1.0, abs(t)):
                unique.append(t)
        return tuple(unique)
