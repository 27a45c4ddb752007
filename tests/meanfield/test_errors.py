"""Bad input: a ValueError that names the argument and what is allowed; never a silent NaN."""

import math

import numpy as np
import pytest

from bnmft import theory


@pytest.mark.parametrize(
    ("batch_size", "message"),
    [
        (2, "B = 2 batch norm outputs .* exactly zero"),
        (3, "B = 3 the mean-field gradient rate is infinite"),
        (1, "batch_size must be >= 4"),
        (-8, "batch_size must be >= 4"),
        (4.5, "batch_size must be an integer"),
        ("abc", "batch_size must be an integer >= 4 or 'inf'"),
        (True, "batch_size must be an integer"),
        (float("nan"), "batch_size must be an integer >= 4 or inf, got nan"),
        (-math.inf, r"\+inf"),
        (None, "batch_size must be"),
    ],
)
def test_bad_batch_sizes(batch_size, message):
    with pytest.raises(ValueError, match=message):
        theory("relu", batch_size)


def test_accepted_batch_size_spellings():
    assert theory("relu", "inf").batch_size == math.inf
    assert theory("relu", 8.0).batch_size == 8
    assert theory("relu", np.int64(8)).lambda_G == theory("relu", 8).lambda_G


@pytest.mark.parametrize(
    ("phi", "kwargs", "message"),
    [
        ("0*z + 1", {}, "constant"),
        ("tanh", {"gamma": 0.0}, "gamma must be nonzero"),
        ("tanh", {"gamma": float("nan")}, "gamma must be a finite number"),
        ("tanh", {"beta": float("inf")}, "beta must be a finite number"),
        ("log(z)", {}, "not finite"),
        ("sqrt(abs(z))", {}, "not integrable"),
        ("abs(z)/z", {}, "jumps"),
        ("relu", {"method": "magic"}, "method must be one of"),
        ("tanh", {"method": "closed_form"}, "no closed form"),
        ("relu", {"beta": 1.0, "method": "closed_form"}, "no closed form"),
        ("alpha_relu", {"alpha": 0.5}, "infinite|not integrable"),
        ("tanhh", {}, "unknown nonlinearity"),
        ("__import__('os')", {}, "not allowed|unknown function"),
        (42, {}, "phi must be a name"),
    ],
)
def test_bad_phi_and_options(phi, kwargs, message):
    with pytest.raises(ValueError, match=message):
        theory(phi, 8, **kwargs)


def test_moments_that_diverge_in_the_large_batch_limit():
    with pytest.raises(ValueError, match="diverge"):
        theory("exp(z**2)", math.inf)
    with pytest.raises(ValueError, match="diverge"):
        theory("exp(z**2/4)", math.inf)
    assert math.isfinite(theory("exp(z**2/8)", math.inf).lambda_G)  # E[exp(z^2/4)] is finite
    assert math.isfinite(theory("exp(z**2)", 8).lambda_G)  # finite B: the sphere is bounded


def test_overflow_on_the_support_is_an_error_not_nan():
    with pytest.raises(ValueError, match="not finite"):
        theory("exp(z**2)", 4000)


def test_callable_that_returns_nan():
    with pytest.raises(ValueError, match="not finite"):
        theory(lambda z: np.where(z > 2, np.nan, z), 16)
