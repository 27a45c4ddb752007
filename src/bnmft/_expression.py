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
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import special

MAX_LENGTH = 1000
MAX_NODES = 400


@dataclass(frozen=True)
class Dual:
    """A value and its derivative with respect to z (arrays or scalars)."""

    val: np.ndarray | float
    der: np.ndarray | float


def _const(c: float) -> Dual:
    return Dual(c, 0.0)


def _sigmoid(u):
    return special.expit(u)


def _unary(f: Callable, df: Callable) -> Callable[[Dual], Dual]:
    def apply(a: Dual) -> Dual:
        return Dual(f(a.val), df(a.val) * a.der)

    return apply


def _gelu_d(u):
    return special.ndtr(u) + u * np.exp(-0.5 * u * u) / math.sqrt(2 * math.pi)


def _silu_d(u):
    s = _sigmoid(u)
    return s + u * s * (1 - s)


def _maximum(a: Dual, b: Dual) -> Dual:
    pick = np.greater(a.val, b.val)
    return Dual(np.where(pick, a.val, b.val), np.where(pick, a.der, b.der))


def _minimum(a: Dual, b: Dual) -> Dual:
    pick = np.less(a.val, b.val)
    return Dual(np.where(pick, a.val, b.val), np.where(pick, a.der, b.der))


#: name -> (number of arguments, implementation on dual numbers, kink: does it have a kink where its
#: first argument (minus the second, for max/min) crosses zero)
FUNCTIONS: dict[str, tuple[int, Callable[..., Dual], bool]] = {
    "exp": (1, _unary(np.exp, np.exp), False),
    "log": (1, _unary(np.log, lambda u: 1.0 / u), False),
    "log1p": (1, _unary(np.log1p, lambda u: 1.0 / (1.0 + u)), False),
    "expm1": (1, _unary(np.expm1, np.exp), False),
    "sqrt": (1, _unary(np.sqrt, lambda u: 0.5 / np.sqrt(u)), False),
    "sin": (1, _unary(np.sin, np.cos), False),
    "cos": (1, _unary(np.cos, lambda u: -np.sin(u)), False),
    "tan": (1, _unary(np.tan, lambda u: 1.0 / np.cos(u) ** 2), False),
    "sinh": (1, _unary(np.sinh, np.cosh), False),
    "cosh": (1, _unary(np.cosh, np.sinh), False),
    "tanh": (1, _unary(np.tanh, lambda u: 4 * np.exp(-2 * np.abs(u)) / (1 + np.exp(-2 * np.abs(u))) ** 2), False),
    "arctan": (1, _unary(np.arctan, lambda u: 1.0 / (1.0 + u * u)), False),
    "atan": (1, _unary(np.arctan, lambda u: 1.0 / (1.0 + u * u)), False),
    "arcsinh": (1, _unary(np.arcsinh, lambda u: 1.0 / np.sqrt(1.0 + u * u)), False),
    "asinh": (1, _unary(np.arcsinh, lambda u: 1.0 / np.sqrt(1.0 + u * u)), False),
    "erf": (1, _unary(special.erf, lambda u: 2.0 / math.sqrt(math.pi) * np.exp(-u * u)), False),
    "sigmoid": (1, _unary(_sigmoid, lambda u: _sigmoid(u) * (1.0 - _sigmoid(u))), False),
    "softplus": (1, _unary(lambda u: np.logaddexp(0.0, u), _sigmoid), False),
    "gelu": (1, _unary(lambda u: u * special.ndtr(u), _gelu_d), False),
    "silu": (1, _unary(lambda u: u * _sigmoid(u), _silu_d), False),
    "abs": (1, _unary(np.abs, lambda u: np.sign(u)), True),
    "relu": (1, _unary(lambda u: np.maximum(u, 0.0), lambda u: (u > 0).astype(float)), True),
    "max": (2, _maximum, True),
    "min": (2, _minimum, True),
}

CONSTANTS = {"pi": math.pi, "e": math.e}


def _as_tensor(value, like):
    import torch

    return value if isinstance(value, torch.Tensor) else torch.full_like(like, float(value))


def _torch_pow(base, exponent):
    import torch

    if isinstance(base, torch.Tensor) or isinstance(exponent, torch.Tensor):
        return torch.pow(base, exponent)
    return base**exponent


class ExpressionError(ValueError):
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
        ExpressionError: (a ``ValueError``) naming what is not allowed.
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
            c = float(node.value)
            return _Compiled(lambda z, c=c: _const(c), True)
        if isinstance(node, ast.Name):
            if node.id == "z":
                self._uses_z = True
                return _Compiled(lambda z: z, False)
            if node.id in CONSTANTS:
                c = CONSTANTS[node.id]
                return _Compiled(lambda z, c=c: _const(c), True)
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

    # -- torch backend (values only; autograd differentiates) ------------------------------------------------
    def torch_function(self):
        """The same checked tree compiled to torch operations: ``z (tensor) -> phi(z) (tensor)``."""
        import torch

        table = {
            "exp": torch.exp,
            "log": torch.log,
            "log1p": torch.log1p,
            "expm1": torch.expm1,
            "sqrt": torch.sqrt,
            "sin": torch.sin,
            "cos": torch.cos,
            "tan": torch.tan,
            "sinh": torch.sinh,
            "cosh": torch.cosh,
            "tanh": torch.tanh,
            "arctan": torch.atan,
            "atan": torch.atan,
            "arcsinh": torch.asinh,
            "asinh": torch.asinh,
            "erf": torch.erf,
            "sigmoid": torch.sigmoid,
            "softplus": torch.nn.functional.softplus,
            "gelu": torch.nn.functional.gelu,
            "silu": torch.nn.functional.silu,
            "abs": torch.abs,
            "relu": torch.relu,
            "max": torch.maximum,
            "min": torch.minimum,
        }
        tree = ast.parse(self.text, mode="eval").body  # already checked by __init__

        def build(node):
            if isinstance(node, ast.Constant):
                c = float(node.value)
                return lambda z: c
            if isinstance(node, ast.Name):
                if node.id == "z":
                    return lambda z: z
                c = CONSTANTS[node.id]
                return lambda z: c
            if isinstance(node, ast.UnaryOp):
                inner = build(node.operand)
                return (lambda z: -inner(z)) if isinstance(node.op, ast.USub) else inner
            if isinstance(node, ast.BinOp):
                a, b = build(node.left), build(node.right)
                ops = {
                    ast.Add: lambda x, y: x + y,
                    ast.Sub: lambda x, y: x - y,
                    ast.Mult: lambda x, y: x * y,
                    ast.Div: lambda x, y: x / y,
                    ast.Pow: _torch_pow,
                }
                op = ops[type(node.op)]
                return lambda z: op(a(z), b(z))
            fn = table[node.func.id]
            args = [build(a) for a in node.args]
            if len(args) == 2:
                return lambda z: fn(*[_as_tensor(f(z), z) for f in args])
            return lambda z: fn(_as_tensor(args[0](z), z))

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
                    found.append(brentq(f, zs[i], zs[i + 1], xtol=1e-15, rtol=4e-16))
        found.sort()
        unique: list[float] = []
        for t in found:
            if not unique or t - unique[-1] > 1e-12 * max(1.0, abs(t)):
                unique.append(t)
        return tuple(unique)
