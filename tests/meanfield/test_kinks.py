"""Kinked expressions with their kinks anywhere: the kink is found to machine precision and the theory equals the
same phi written with the registry's gamma and beta (independent code paths: an expression's kink finder and
dual-number derivative against the registry's closed-form relu and leaky_relu)."""

import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bnmft import get_nonlinearity, theory

kinks = st.floats(-2.0, 2.0, allow_nan=False).filter(lambda k: abs(k) > 1e-6)
sizes = st.sampled_from([4, 5, 8, 17, 64])


def _same(a, b, keys=("lambda_G", "mu_star", "lambda_L", "lambda_M")):
    for key in keys:
        x, y = getattr(a, key), getattr(b, key)
        assert x == pytest.approx(y, rel=1e-8, abs=1e-12), (key, x, y)


@settings(max_examples=25, deadline=None)
@given(k=kinks, b=sizes)
def test_shifted_relu_max_min_abs(k, b):
    assume(abs(k) < 0.9 * math.sqrt(b - 1))  # the batch law lives on |z| <= sqrt(B-1): a kink beyond is no kink
    shifted = theory("relu", b, beta=-k)  # relu(z - k), the registry's relu with beta
    _same(theory(f"relu(z - {k!r})", b), shifted, keys=("lambda_G", "mu_star", "q_star", "lambda_L", "lambda_M"))
    _same(theory(f"max(z, {k!r})", b), shifted)  # = relu(z - k) + k: the same up to a constant
    _same(theory(f"min(z, {k!r})", b), theory("relu", b, gamma=-1.0, beta=k))  # = k - relu(k - z)
    _same(theory(f"abs(z - {k!r})", b), theory("leaky_relu", b, slope=-1.0, beta=-k))  # |u| = leaky_relu(u, -1)


@settings(max_examples=25, deadline=None)
@given(k=kinks)
def test_the_kink_is_found_to_machine_precision(k):
    assert get_nonlinearity(f"relu(z - {k!r})").kinks == pytest.approx((k,), rel=4 * 2.2e-16, abs=1e-15)
    cube = get_nonlinearity(f"relu(z**3 - {k!r})").kinks[0]
    assert cube == pytest.approx(math.copysign(abs(k) ** (1 / 3), k), rel=1e-14)


@pytest.mark.parametrize(
    "spec", ["relu(z-1/3)", "abs(z-0.1234)", "max(z,0.1)", "min(z,1.0001)", "relu(z**3-0.5)", "-z"]
)
def test_the_expressions_once_refused(spec):
    r = theory(spec, 8)
    assert math.isfinite(r.lambda_G) and r.lambda_G > 1
