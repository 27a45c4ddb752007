"""The nonlinearity of :mod:`bnmft.nonlinearity` as a differentiable torch function.

Registered names map to torch's own functions, expressions are compiled from the same whitelisted tree to
torch operations (autograd differentiates them), and plain numpy callables run through a custom autograd
function built from phi and phi' (CPU tensors only, slower). ``gamma`` and ``beta`` are applied as
``phi(gamma * z + beta)`` exactly as in the theory.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .._expression import Expression
from ..nonlinearity import SELU_ALPHA, SELU_LAMBDA, Nonlinearity

TorchFn = Callable[[torch.Tensor], torch.Tensor]


def _registry_fn(name: str, params: dict) -> TorchFn:
    alpha = params.get("alpha", 1.0)
    slope = params.get("slope", 0.01)
    table: dict[str, TorchFn] = {
        "identity": lambda z: z,
        "relu": torch.relu,
        "leaky_relu": lambda z: F.leaky_relu(z, negative_slope=slope),
        "alpha_relu": lambda z: torch.relu(z) ** alpha,
        "tanh": torch.tanh,
        "erf": torch.erf,
        "sigmoid": torch.sigmoid,
        "gelu": F.gelu,
        "silu": F.silu,
        "elu": lambda z: F.elu(z, alpha=alpha),
        "selu": lambda z: SELU_LAMBDA * F.elu(z, alpha=SELU_ALPHA),
        "softplus": F.softplus,
        "sin": torch.sin,
    }
    return table[name]


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
        base = Expression(phi.source[1]).torch_function()
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


__all__ = ["check_against_numpy", "to_torch"]
