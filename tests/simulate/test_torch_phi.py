"""The torch adapter's name tables against the numpy core: every registered name and every expression function,
value and autograd derivative."""

import numpy as np
import pytest
import torch

from bnmft import get_nonlinearity, nonlinearities
from bnmft.nonlinearity.elementary import ELEMENTARY
from bnmft.nonlinearity.expression import BINARY, FUNCTIONS
from bnmft.simulate.torch_phi import TORCH_FUNCTIONS, TORCH_REGISTRY, to_torch

#: arguments inside each function's domain (log, sqrt, log1p need positive or > -1 arguments; tan away from poles)
DOMAIN = {"log": "log(z + 5)", "sqrt": "sqrt(z + 5)", "log1p": "log1p(z + 3)", "tan": "tan(0.3 * z)"}
#: parameters that are not the defaults, so a dropped parameter fails the test
PARAMS = {"leaky_relu": {"slope": 0.2}, "alpha_relu": {"alpha": 1.5}, "elu": {"alpha": 0.7}}


def _compare(phi, z_values):
    z = torch.as_tensor(z_values, dtype=torch.float64).requires_grad_(True)
    out = to_torch(phi)(z)
    (grad,) = torch.autograd.grad(out.sum(), z)
    np.testing.assert_allclose(out.detach().numpy(), phi(z_values), rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(grad.numpy(), phi.derivative(z_values), rtol=1e-12, atol=1e-13)


def test_the_tables_cover_the_core():
    assert set(TORCH_FUNCTIONS) == set(ELEMENTARY) | set(BINARY)
    assert set(FUNCTIONS) - set(TORCH_FUNCTIONS) <= {"atan", "asinh"}  # aliases, resolved by Expression.build
    for name in nonlinearities():
        assert name in TORCH_REGISTRY or name in TORCH_FUNCTIONS, name


@pytest.mark.parametrize("name", sorted(nonlinearities()))
def test_every_registered_name(name):
    phi = get_nonlinearity(name, **PARAMS.get(name, {}))
    _compare(phi, np.linspace(-4, 4, 201) + 1e-3)
    _compare(phi.affine_input(0.6, 0.3), np.linspace(-4, 4, 201) + 1e-3)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_every_expression_function(name):
    text = "max(z, 0.1 * z + 0.2)" if name == "max" else "min(0.5, z)" if name == "min" else f"{name}(0.8 * z)"
    text = DOMAIN.get(name, text)
    _compare(get_nonlinearity(f"{text} + 0.1 * z"), np.linspace(-4, 4, 201) + 1e-3)


def test_constant_subexpressions_are_folded():
    _compare(get_nonlinearity("tanh(2) * z + exp(-1) * sin(pi / 4 * z) - max(z, log(2))"), np.linspace(-3, 3, 61))
