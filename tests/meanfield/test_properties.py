"""Property tests (Hypothesis) of the exact identities of docs/theory.md section 3."""

import math

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from bnmft import theory

batch_sizes = st.one_of(st.integers(4, 12), st.integers(13, 3000), st.just(math.inf))
smooth_names = st.sampled_from(["tanh", "erf", "sigmoid", "gelu", "silu", "softplus", "sin"])
kinked_names = st.sampled_from(["relu", "elu", "selu", "leaky_relu"])
gammas = st.floats(0.25, 3.0).flatmap(lambda g: st.sampled_from([g, -g]))


def linear_rate(b):
    return 1.0 if math.isinf(b) else (b - 2) / (b - 3)


@given(name=st.one_of(smooth_names, kinked_names), b=batch_sizes, gamma=gammas, beta=st.floats(-1.0, 1.0))
def test_nonlinear_phi_explodes_faster_than_linear(name, b, gamma, beta):
    # the batch law lives on |x| <= sqrt(B-1): a kink outside it leaves phi affine there (tested below)
    kinked = name in ("relu", "elu", "selu", "leaky_relu")
    assume(not kinked or math.isinf(b) or abs(beta / gamma) < 0.9 * math.sqrt(b - 1))
    r = theory(name, b, gamma=gamma, beta=beta)
    assert r.lambda_G > linear_rate(b)
    assert r.q_star > 0 and r.mu_star > 0
    assert -1 / (b - 1 if math.isfinite(b) else math.inf) - 1e-12 <= r.c_star < 1


@given(a=st.floats(0.05, 20.0).flatmap(lambda a: st.sampled_from([a, -a])), b0=st.floats(-5, 5), b=batch_sizes)
def test_affine_phi_has_the_linear_rate(a, b0, b):
    r = theory(f"{a!r}*z + {b0!r}", b)
    assert r.method == "quadrature"
    assert r.lambda_G == pytest.approx(linear_rate(b), rel=1e-12)
    assert r.mu_star == pytest.approx(a * a * (1 if math.isinf(b) else b / (b - 1)), rel=1e-12)


@given(
    base=st.sampled_from(["tanh(z)", "relu(z)", "sin(z) + 0.3*z", "gelu(z)", "abs(z - 0.5)"]),
    a=st.floats(0.1, 10.0).flatmap(lambda a: st.sampled_from([a, -a])),
    shift=st.floats(-10, 10),
    b=batch_sizes,
)
def test_invariance_under_affine_maps_of_phi(base, a, shift, b):
    plain = theory(base, b)
    mapped = theory(f"{a!r}*({base}) + {shift!r}", b)
    assert mapped.lambda_G == pytest.approx(plain.lambda_G, rel=1e-10)
    assert mapped.mu_star == pytest.approx(a * a * plain.mu_star, rel=1e-10)


@given(b=st.integers(4, 9), shift=st.floats(1.05, 3.0), gamma=st.floats(0.2, 2.0))
def test_kink_outside_the_support_means_affine(b, shift, gamma):
    """relu(gamma z + beta) with its kink beyond sqrt(B-1) is affine on the support: exactly the linear rate."""
    beta = shift * gamma * math.sqrt(b - 1)  # kink at z = -beta/gamma, outside |z| <= sqrt(B-1)
    assert theory("relu", b, gamma=gamma, beta=beta).lambda_G == pytest.approx(linear_rate(b), rel=1e-12)
    with pytest.raises(ValueError, match="constant on the support"):
        theory("relu", b, gamma=gamma, beta=-beta)  # identically zero there
