"""V(Sigma) for any PSD Sigma, and propagation from a user's batch (issue: theory engine II, item 4)."""

import math

import numpy as np
import pytest

from bnmft import get_nonlinearity, propagate, theory
from bnmft.meanfield.closed_forms import arccos_kernel
from bnmft.meanfield.gram import gram_map

from .references import arccos_series, batch_norm


def random_gram(rng, b, features=None, rank=None):
    x = rng.standard_normal((b, features or 3 * b))
    if rank is not None:
        x = x[:, :rank]
    return x @ x.T / x.shape[1]


def monte_carlo_v(spec, sigma, rng, n=400_000, **kw):
    """Independent reference: sample h ~ N(0, Sigma), batch norm, phi; mean and standard error per entry."""
    phi = get_nonlinearity(spec, **kw)
    vals, vecs = np.linalg.eigh(sigma)
    h = rng.standard_normal((n, len(sigma))) @ (vecs * np.sqrt(np.maximum(vals, 0))).T
    f = phi(batch_norm(h))
    prods = f[:, :, None] * f[:, None, :]
    return prods.mean(axis=0), prods.std(axis=0) / math.sqrt(n)


@pytest.mark.parametrize(
    ("spec", "kw", "b", "rank"),
    [
        ("relu", {}, 6, None),
        ("relu", {}, 10, 3),
        ("identity", {}, 7, None),
        ("alpha_relu", {"alpha": 1.5}, 6, None),
        ("relu", {}, 8, 1),
    ],
)
def test_laplace_method_against_monte_carlo(spec, kw, b, rank, rng):
    sigma = random_gram(rng, b, rank=rank)
    exact = gram_map(get_nonlinearity(spec, **kw), sigma, method="laplace")
    mean, se = monte_carlo_v(spec, sigma, rng, **kw)
    z = np.abs(exact.value - mean) / np.maximum(se, 1e-12)
    assert np.max(z) < 4.5  # B^2 entries, a few standard errors
    assert np.all(exact.stderr == 0)


def test_laplace_reproduces_bsb1_fixed_point_and_sphere_rule(rng):
    for b in (4, 9, 40):
        r = theory("relu", b)
        star = r.q_star * ((1 - r.c_star) * np.eye(b) + r.c_star)
        np.testing.assert_allclose(gram_map(get_nonlinearity("relu"), star * 3.7 + 2.0).value, star, atol=1e-13)
    sigma = random_gram(rng, 5, features=50)
    phi = get_nonlinearity("identity")
    np.testing.assert_allclose(
        gram_map(phi, sigma, method="sphere").value, gram_map(phi, sigma, method="laplace").value, atol=1e-10
    )


def test_sphere_rule_for_smooth_phi_against_monte_carlo(rng):
    sigma = random_gram(rng, 5, features=30)
    exact = gram_map(get_nonlinearity("tanh"), sigma, method="sphere")
    mean, se = monte_carlo_v("tanh", sigma, rng)
    assert np.max(np.abs(exact.value - mean) / se) < 4.5


def test_monte_carlo_method_reports_its_error(rng):
    sigma = random_gram(rng, 12)
    est = gram_map(get_nonlinearity("gelu"), sigma, method="monte_carlo", samples=50_000, rng=rng)
    ref, _ = monte_carlo_v("gelu", sigma, rng, n=400_000)
    assert est.method == "monte_carlo" and np.all(est.stderr > 0)
    assert np.max(np.abs(est.value - ref) / est.stderr) < 5


def test_arccos_kernel_hypergeometric_form_against_series():
    for a in (0.75, 1.5, 2.0, 3.0):
        for c in (-0.95, -0.3, 0.0, 0.4, 0.99):
            assert float(arccos_kernel(a, np.array(c))[0]) == pytest.approx(arccos_series(a, c)[0], rel=1e-11)
        for c in (-0.3, 0.0, 0.3):  # the derivative too, where the fixed point needs it
            assert float(arccos_kernel(a, c)[1]) == pytest.approx(arccos_series(a, c)[1], rel=1e-12)


@pytest.mark.parametrize(
    ("gram", "message"),
    [
        (np.ones((5, 4)), "square"),
        (np.array([[1, 2, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]), "symmetric"),
        (np.diag([1, 1, 1, -1.0]), "positive semi-definite"),
        (np.eye(3), "at least 4"),
        (np.full((4, 4), np.nan), "finite"),
        (np.ones((5, 5)), "no spread"),
    ],
)
def test_bad_gram_matrices(gram, message):
    with pytest.raises(ValueError, match=message):
        gram_map(get_nonlinearity("relu"), gram)


def test_identity_converges_globally_from_any_full_rank_batch(rng):
    """docs/theory.md 2.5: for identity the iteration converges to B/(B-1) G from any full-rank centred input."""
    for trial in range(4):
        b = int(rng.integers(4, 12))
        x = rng.standard_normal((b, 2 * b)) * rng.uniform(0.1, 10, size=(b, 1))  # very unequal norms
        p = propagate("identity", x, 120)
        assert p.method == "laplace"
        np.testing.assert_allclose(p.grams[-1], b / (b - 1) * (np.eye(b) - 1 / b), atol=1e-6)
        layer = int(np.argmax(p.distance < 1e-5))  # asymptotic, but above rounding
        rate = p.distance[layer + 1] / p.distance[layer]
        assert rate == pytest.approx((b - 1) / (b + 1), rel=1e-3), trial


def test_propagation_rate_is_the_top_forward_eigenvalue(rng):
    x = rng.standard_normal((8, 40))
    p = propagate("relu", x, 25)
    assert p.distance[-1] / p.distance[-2] == pytest.approx(max(p.theory.lambda_L, p.theory.lambda_M), rel=1e-4)


def test_rank_deficient_identity_input_does_not_converge(rng):
    x = rng.standard_normal((8, 4))  # centred Gram of rank 4 < B - 1
    p = propagate("identity", x, 30)
    assert p.distance[-1] > 0.3


def test_two_batches_lose_their_correlation_at_the_predicted_rate(rng):
    """Both batches start at the BSB1 fixed point, partly correlated; the per-layer ratio of their correlation
    tends to cross_batch_rate as the correlation goes to 0 (the map is linear only there)."""
    b = 8
    r = theory("relu", b)
    chol = np.linalg.cholesky(r.q_star * ((1 - r.c_star) * np.eye(b) + r.c_star))
    x = chol * np.sqrt(b)  # x x^T / b = Sigma*
    x2 = np.sqrt(0.7) * x + np.sqrt(0.3) * chol @ rng.standard_normal((b, b))
    p = propagate("relu", x, 14, inputs2=x2, samples=400_000, seed=3)
    c = p.cross_correlation
    assert c[0] > 0.7 and c[-1] < 0.05
    ratios = c[1:] / c[:-1]
    small = [ratio for ratio, before in zip(ratios, c[:-1], strict=True) if 0.03 < before < 0.1]
    assert len(small) >= 2
    assert np.all(np.array(small) == pytest.approx(p.theory.cross_batch_rate, abs=0.03))
    assert ratios[0] > ratios[-1] > p.theory.cross_batch_rate - 0.01  # approaches the rate from above
    again = propagate("relu", x, 14, inputs2=x2, samples=400_000, seed=3)
    np.testing.assert_array_equal(again.cross_correlation, c)  # same seed, same numbers


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"depth": 0}, "depth must be an integer >= 1"),
        ({"depth": 2.5}, "depth must be an integer"),
        ({"depth": 3, "inputs": np.ones((3, 5))}, "at least 4 examples"),
        ({"depth": 3, "inputs2": np.ones((6, 7))}, "same number of features"),
        ({"depth": 3, "inputs": np.diag([1, 1, 1, -1.0]), "gram": True}, "positive semi-definite"),
    ],
)
def test_bad_propagation_input(kwargs, message, rng):
    args = {"inputs": rng.standard_normal((6, 5))} | kwargs
    with pytest.raises(ValueError, match=message):
        propagate("relu", **args)
