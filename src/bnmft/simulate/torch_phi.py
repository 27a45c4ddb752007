"""The nonlinearities of :mod:`bnmft.nonlinearity` as differentiable torch functions: the torch adapter.

The name tables, the only torch code for nonlinearities: :data:`TORCH_FUNCTIONS` has every elementary function of
:data:`bnmft._expression.FUNCTIONS` (the numpy core's :data:`bnmft._elementary.ELEMENTARY` plus max and min) and
is passed to :meth:`bnmft._expression.Expression.build` to compile expressions; registered names are the
elementary function of the same name or a :data:`TORCH_REGISTRY` builder for the parametric ones. Plain numpy
callables run through a custom autograd function built from phi and phi' (CPU tensors only, slower). ``gamma`` and
``beta`` are applied as ``phi(gamma * z + beta)`` exactly as in the theory. :data:`TORCH_MODULES` maps torch's
activation modules, and :data:`TORCH_CALLS` its functional activations, to registered names or expressions (for
:func:`bnmft.simulate.probe`). Every entry is tested against the numpy
value and derivative (tests/simulate/test_torch_phi.py).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..nonlinearity import SELU_ALPHA, SELU_LAMBDA, Nonlinearity
from ..nonlinearity.expression import Expression

TorchFn = Callable[[torch.Tensor], torch.Tensor]


def _pair(op: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable:
    """max / min with one argument possibly a Python float (a constant folded by Expression.build)."""

    def apply(a, b):
        if not isinstance(a, torch.Tensor):
            a = torch.full_like(b, float(a))
        if not isinstance(b, torch.Tensor):
            b = torch.full_like(a, float(b))
        return op(a, b)

    return apply


#: the elementary functions, by the names of the expression language
TORCH_FUNCTIONS: dict[str, Callable] = {
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
    "arcsinh": torch.asinh,
    "erf": torch.erf,
    "sigmoid": torch.sigmoid,
    "softplus": F.softplus,
    "gelu": F.gelu,
    "silu": F.silu,
    "abs": torch.abs,
    "relu": torch.relu,
    "max": _pair(torch.maximum),
    "min": _pair(torch.minimum),
}

#: registered names that are not elementary functions: name -> builder taking the registry's parameters
TORCH_REGISTRY: dict[str, Callable[..., TorchFn]] = {
    "identity": lambda **_: lambda z: z,
    "leaky_relu": lambda slope=0.01, **_: lambda z: F.leaky_relu(z, negative_slope=slope),
    "alpha_relu": lambda alpha=1.0, **_: lambda z: torch.relu(z) ** alpha,
    "elu": lambda alpha=1.0, **_: lambda z: F.elu(z, alpha=alpha),
    "selu": lambda **_: lambda z: SELU_LAMBDA * F.elu(z, alpha=SELU_ALPHA),
}


#: torch activation modules -> registered nonlinearities, as (name, {parameter: the module's attribute}); the rule is
#: the class name lower-cased, without parameters; the others are spelled out
TORCH_MODULES: dict[type[torch.nn.Module], tuple[str, dict[str, str]]] = {
    **{
        cls: (cls.__name__.lower(), {})
        for cls in (
            torch.nn.ReLU,
            torch.nn.Tanh,
            torch.nn.GELU,
            torch.nn.SiLU,
            torch.nn.Sigmoid,
            torch.nn.Softplus,
            torch.nn.SELU,
            torch.nn.Identity,
        )
    },
    torch.nn.ELU: ("elu", {"alpha": "alpha"}),
    torch.nn.LeakyReLU: ("leaky_relu", {"slope": "negative_slope"}),
    # no registered name: the expression of torch's definition (kinks found by the expression language)
    torch.nn.ReLU6: ("min(max(z, 0), 6)", {}),
    torch.nn.Hardswish: ("z * min(max(z + 3, 0), 6) / 6", {}),
    torch.nn.Hardsigmoid: ("min(max(z / 6 + 0.5, 0), 1)", {}),
    torch.nn.Mish: ("z * tanh(softplus(z))", {}),
}

#: functional activations (``F.relu(x)``, ``torch.tanh(x)``, ``x.relu()``) -> registered nonlinearities, as (name,
#: {parameter: (position among the call's arguments after the input, keyword, default)}); methods by name
TORCH_CALLS: dict[object, tuple[str, dict[str, tuple[int, str, float]]]] = {
    **{fn: ("relu", {}) for fn in (F.relu, torch.relu, F.relu_, torch.relu_)},
    **{fn: ("tanh", {}) for fn in (torch.tanh, F.tanh)},
    **{fn: ("sigmoid", {}) for fn in (torch.sigmoid, F.sigmoid)},
    F.gelu: ("gelu", {}),
    F.silu: ("silu", {}),
    F.selu: ("selu", {}),
    F.softplus: ("softplus", {}),
    F.elu: ("elu", {"alpha": (0, "alpha", 1.0)}),
    F.leaky_relu: ("leaky_relu", {"slope": (0, "negative_slope", 0.01)}),
    F.relu6: TORCH_MODULES[torch.nn.ReLU6],
    F.hardswish: TORCH_MODULES[torch.nn.Hardswish],
    F.hardsigmoid: TORCH_MODULES[torch.nn.Hardsigmoid],
    F.mish: TORCH_MODULES[torch.nn.Mish],
    **{name: ("relu", {}) for name in ("relu", "relu_")},
    **{name: ("tanh", {}) for name in ("tanh", "tanh_")},
    **{name: ("sigmoid", {}) for name in ("sigmoid", "sigmoid_")},
}


def module_phi(module: torch.nn.Module) -> tuple[str, dict[str, float]] | None:
    """The registered nonlinearity of an activation module of :data:`TORCH_MODULES` (exactly that class): its name
    and its parameters read from the module; None for any other module."""
    entry = TORCH_MODULES.get(type(module))
    if entry is None:
        return None
    name, attributes = entry
    return name, {param: float(getattr(module, attr)) for param, attr in attributes.items()}


def call_phi(target: object, args: tuple, kwargs: dict) -> tuple[str, dict[str, float]] | None:
    """The registered nonlinearity of a functional activation call (:data:`TORCH_CALLS`: a function, or a tensor
    method's name) with ``args`` the arguments after the input; None for any other call."""
    try:
        entry = TORCH_CALLS.get(target)
    except TypeError:  # an unhashable target is no activation
        return None
    if entry is None:
        return None
    name, parameters = entry
    params = {}
    for param, (position, keyword, default) in parameters.items():
        value = kwargs.get(keyword, args[position] if len(args) > position else default)
        params[param] = float(value)
    return name, params


def _registry_fn(name: str, params: dict) -> TorchFn:
    if name in TORCH_REGISTRY:
        return TORCH_REGISTRY[name](**params)
    return TORCH_FUNCTIONS[name]


class _NumpyPhi(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, phi):
        ctx.phi = phi
        ctx.save_for_backward(z)
        values = phi(z.detach().cpu().double().numpy())
        return torch.as_tensor(np.asarray(values), dtype=z.dtype, device=z.device)

    @staticmethod
    def backward(ctx, grad):
        (z,) = ctx.saved_tensors
        d = ctx.phi.derivative(z.detach().cpu().double().numpy())
        return grad * torch.as_tensor(np.asarray(d), dtype=z.dtype, device=z.device), None


def to_torch(phi: Nonlinearity) -> TorchFn:
    """A differentiable torch version of ``phi`` (gamma and beta included)."""
    kind = phi.source[0]
    if kind == "registry":
        base = _registry_fn(phi.source[1], phi.source[2])
    elif kind == "expression":
        base = Expression(phi.source[1]).build(TORCH_FUNCTIONS)
    else:
        return lambda z: _NumpyPhi.apply(z, phi)
    gamma = float(phi.params.get("gamma", 1.0))
    beta = float(phi.params.get("beta", 0.0))
    if gamma == 1.0 and beta == 0.0:
        return base
    return lambda z: base(gamma * z + beta)


def check_against_numpy(phi: Nonlinearity, points: int = 101) -> float:
    """Largest relative difference between the torch and numpy versions on [-4, 4] (a self-check)."""
    z = np.linspace(-4, 4, points) + 1e-3
    ours = to_torch(phi)(torch.as_tensor(z, dtype=torch.float64)).numpy()
    ref = phi(z)
    return float(np.max(np.abs(ours - ref) / np.maximum(1.0, np.abs(ref))))


__all__ = [
    "TORCH_CALLS",
    "TORCH_FUNCTIONS",
    "TORCH_MODULES",
    "TORCH_REGISTRY",
    "call_phi",
    "check_against_numpy",
    "module_phi",
    "to_torch",
]
