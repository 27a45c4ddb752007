"""The torch adapter's name tables against the numpy core: every registered name and every expression function,
value and autograd derivative."""

import numpy as np
import pytest
import torch

from bnmft import get_nonlinearity, nonlinearities
from bnmft.nonlinearity.elementary import ELEMENTARY
from bnmft.nonlinearity.expression import BINARY, FUNCTIONS
from bnmft.simulate.torch_phi import (
    TORCH_CALLS,
    TORCH_FUNCTIONS,
    TORCH_MODULES,
    TORCH_REGISTRY,
    call_phi,
    module_phi,
    to_torch,
)

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


#: each activation module with parameters that are not torch's defaults (a dropped parameter fails the test)
MODULES = [torch.nn.ELU(alpha=0.7), torch.nn.LeakyReLU(negative_slope=0.2)]


@pytest.mark.parametrize(
    "module", [*MODULES, *(cls() for cls in TORCH_MODULES if cls not in (torch.nn.ELU, torch.nn.LeakyReLU))]
)
def test_every_activation_module_is_its_registered_nonlinearity(module):
    """torch's own module against the numpy core's nonlinearity of the name and parameters the table gives."""
    name, params = module_phi(module)
    phi = get_nonlinearity(name, **params)
    z = np.linspace(-4, 4, 201) + 1e-3
    out = module(torch.as_tensor(z, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(out, phi(z), rtol=1e-12, atol=1e-14)


def test_module_table_is_exact_about_classes():
    assert module_phi(torch.nn.ReLU()) == ("relu", {})
    assert module_phi(torch.nn.LeakyReLU(0.3)) == ("leaky_relu", {"slope": 0.3})
    assert module_phi(torch.nn.Hardtanh()) is None and module_phi(torch.nn.Linear(2, 2)) is None

    class MyReLU(torch.nn.ReLU):
        pass

    assert module_phi(MyReLU()) is None  # exactly the class, as the probe always matched


CALLS = [(torch.nn.functional.leaky_relu, (0.2,), {}), (torch.nn.functional.elu, (), {"alpha": 0.7})]


@pytest.mark.parametrize("call", [*CALLS, *((fn, (), {}) for fn in TORCH_CALLS if callable(fn))])
def test_every_functional_activation_is_its_registered_nonlinearity(call):
    """torch's own function (with its arguments) against the numpy core's nonlinearity the table gives."""
    fn, args, kwargs = call
    name, params = call_phi(fn, args, kwargs)
    phi = get_nonlinearity(name, **params)
    z = np.linspace(-4, 4, 201) + 1e-3
    out = fn(torch.as_tensor(z, dtype=torch.float64).clone(), *args, **kwargs).numpy()
    np.testing.assert_allclose(out, phi(z), rtol=1e-12, atol=1e-14)


def test_method_activations_and_other_calls():
    z = torch.linspace(-3, 3, 61, dtype=torch.float64)
    for method in (m for m in TORCH_CALLS if isinstance(m, str)):
        name, params = call_phi(method, (), {})
        np.testing.assert_allclose(getattr(z.clone(), method)().numpy(), get_nonlinearity(name, **params)(z.numpy()),
                                   rtol=1e-12, atol=1e-14)  # fmt: skip
    assert call_phi(torch.add, (), {}) is None and call_phi("view", (), {}) is None
