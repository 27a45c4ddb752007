"""The registry, expressions and callables: values and exact derivatives against independent formulas."""

import math

import numpy as np
import pytest
from scipy import special

from bnmft import get_nonlinearity, nonlinearities
from bnmft.nonlinearity.expression import Expression

Z = np.linspace(-6, 6, 1201) + 1e-3  # avoid landing exactly on kinks

# Independent reference implementations (written here, not imported from the package)
REFERENCE = {
    "identity": lambda z: z,
    "relu": lambda z: np.maximum(z, 0),
    "tanh": np.tanh,
    "erf": special.erf,
    "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
    "gelu": lambda z: 0.5 * z * (1 + special.erf(z / math.sqrt(2))),
    "silu": lambda z: z / (1 + np.exp(-z)),
    "elu": lambda z: np.where(z > 0, z, np.exp(z) - 1),
    "selu": lambda z: 1.0507009873554805 * np.where(z > 0, z, 1.6732632423543772 * (np.exp(z) - 1)),
    "softplus": lambda z: np.log(1 + np.exp(z)),
    "sin": np.sin,
    "leaky_relu": lambda z: np.where(z > 0, z, 0.01 * z),
    "alpha_relu": lambda z: np.maximum(z, 0),
}


def central_difference(f, z, h=1e-5):
    return (f(z + h) - f(z - h)) / (2 * h)


def test_registry_has_the_required_names():
    required = {
        "identity",
        "relu",
        "leaky_relu",
        "alpha_relu",
        "tanh",
        "erf",
        "sigmoid",
        "gelu",
        "silu",
        "elu",
        "selu",
        "softplus",
        "sin",
    }
    assert required <= set(nonlinearities())


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_values_and_derivatives(name):
    phi = get_nonlinearity(name)
    np.testing.assert_allclose(phi(Z), REFERENCE[name](Z), rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(phi.derivative(Z), central_difference(REFERENCE[name], Z), rtol=1e-7, atol=1e-8)


def test_parameters():
    leaky = get_nonlinearity("leaky_relu", slope=0.2)
    assert leaky(np.array(-2.0)) == pytest.approx(-0.4)
    ar = get_nonlinearity("alpha_relu", alpha=1.5)
    np.testing.assert_allclose(ar(Z), np.maximum(Z, 0) ** 1.5)
    np.testing.assert_allclose(ar.derivative(Z), 1.5 * np.maximum(Z, 0) ** 0.5)
    assert ar.kinks == (0.0,)


def test_gamma_beta_fold_into_phi():
    phi = get_nonlinearity("relu").affine_input(gamma=2.0, beta=1.0)
    np.testing.assert_allclose(phi(Z), np.maximum(2 * Z + 1, 0))
    np.testing.assert_allclose(phi.derivative(Z), 2.0 * (2 * Z + 1 > 0))
    assert phi.kinks == (-0.5,)


@pytest.mark.parametrize(
    ("text", "value", "derivative"),
    [
        ("tanh(2*z) + 0.1*z", lambda z: np.tanh(2 * z) + 0.1 * z, lambda z: 2 / np.cosh(2 * z) ** 2 + 0.1),
        ("z**3 - 2*z", lambda z: z**3 - 2 * z, lambda z: 3 * z**2 - 2),
        (
            "exp(-z**2/2)*sin(pi*z)",
            lambda z: np.exp(-z * z / 2) * np.sin(np.pi * z),
            lambda z: np.exp(-z * z / 2) * (np.pi * np.cos(np.pi * z) - z * np.sin(np.pi * z)),
        ),
        (
            "max(z, 0.5*z) / (1 + abs(z))",
            lambda z: np.maximum(z, 0.5 * z) / (1 + np.abs(z)),
            lambda z: np.where(z > 0, 1 / (1 + z) ** 2, 0.5 / (1 - z) ** 2),
        ),
        ("softplus(3*z)/3", lambda z: np.log1p(np.exp(3 * z)) / 3, lambda z: 1 / (1 + np.exp(-3 * z))),
        ("2**z", lambda z: 2.0**z, lambda z: np.log(2) * 2.0**z),
        ("-relu(1 - z)", lambda z: -np.maximum(1 - z, 0), lambda z: (1 - z > 0) * 1.0),
    ],
)
def test_expressions_differentiate_exactly(text, value, derivative):
    phi = get_nonlinearity(text)
    np.testing.assert_allclose(phi(Z), value(Z), rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(phi.derivative(Z), derivative(Z), rtol=1e-12, atol=1e-13)


def test_expression_kinks_are_found():
    assert Expression("relu(z - 1) + abs(2*z + 1)").kinks() == pytest.approx((-0.5, 1.0), abs=1e-14)
    assert Expression("max(z**3, 8)").kinks() == pytest.approx((2.0,), abs=1e-13)
    assert Expression("tanh(z)").kinks() == ()


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('true')",
        "z.__class__",
        "(lambda: 1)()",
        "[z for z in ()]",
        "open('x')",
        "'a'",
        "z if z else 1",
        "z < 1",
        "eval('1')",
        "tanh(z, 2)",
        "tanh(x=z)",
        "1j*z",
        "z[0]",
        "",
        "tanh(z",
        "y + 1",
        "3.0",
    ],
)
def test_unsafe_or_bad_expressions_are_rejected(text):
    with pytest.raises(ValueError, match="phi"):
        get_nonlinearity(text)


def test_unknown_name_and_wrong_parameter():
    with pytest.raises(ValueError, match="unknown nonlinearity 'tanhh'"):
        get_nonlinearity("tanhh")
    with pytest.raises(ValueError, match="'alpha' does not apply to phi='tanh'"):
        get_nonlinearity("tanh", alpha=2.0)
    with pytest.raises(ValueError, match="alpha must be > 0"):
        get_nonlinearity("alpha_relu", alpha=-1.0)
    with pytest.raises(ValueError, match="slope must be a finite number"):
        get_nonlinearity("leaky_relu", slope=float("nan"))


def test_callable_with_and_without_derivative():
    phi = get_nonlinearity(np.tanh, derivative=lambda z: 1 - np.tanh(z) ** 2)
    np.testing.assert_allclose(phi.derivative(Z), 1 - np.tanh(Z) ** 2, rtol=1e-15)
    numeric = get_nonlinearity(np.sin)
    np.testing.assert_allclose(numeric.derivative(Z), np.cos(Z), rtol=1e-9, atol=1e-10)
    kinked = get_nonlinearity(lambda z: np.maximum(z, 0) ** 2, kinks=(0.0,))
    near = np.array([-1e-4, -1e-6, 1e-6, 1e-4, 1.0])
    np.testing.assert_allclose(kinked.derivative(near), 2 * np.maximum(near, 0), atol=1e-10)
