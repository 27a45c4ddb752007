"""Forward dynamics (issue: theory engine II): the eigenvalues lambda_L, lambda_M against the full spectrum of a
finite-difference Jacobian of the Gram map, closed forms, and the two-batch quantities."""

import math

import numpy as np
import pytest

from bnmft import get_nonlinearity, theory
from bnmft.meanfield.gram import gram_map

from .references import batch_norm, bn_phi_jacobian, sample_sphere_batch


def symmetric_basis(b: int) -> list[np.ndarray]:
    basis = []
    for i in range(b):
        for j in range(i, b):
            e = np.zeros((b, b))
            e[i, j] = e[j, i] = 1.0
            basis.append(e)
    return basis


def coordinates(mat: np.ndarray) -> np.ndarray:
    return mat[np.triu_indices(len(mat))]


def finite_difference_spectrum(spec: str, b: int, method: str, step: float = 1e-4, **kw) -> np.ndarray:
    """Eigenvalues of the B(B+1)/2 x B(B+1)/2 Jacobian of Sigma -> V(Sigma) at Sigma*, by central differences."""
    phi = get_nonlinearity(spec, **kw)
    r = theory(phi, b)
    sigma = r.q_star * ((1 - r.c_star) * np.eye(b) + r.c_star)
    np.testing.assert_allclose(gram_map(phi, sigma, method=method).value, sigma, atol=1e-12)  # a fixed point
    sigma = sigma + np.ones((b, b))  # V ignores 11^T (BN centres); keeps perturbations PSD when Sigma* is singular
    columns = []
    for e in symmetric_basis(b):
        plus = gram_map(phi, sigma + step * e, method=method).value
        minus = gram_map(phi, sigma - step * e, method=method).value
        columns.append(coordinates((plus - minus) / (2 * step)))
    return np.sort(np.linalg.eigvals(np.array(columns).T).real)


@pytest.mark.parametrize(
    ("spec", "b", "method", "kw"),
    [
        ("tanh", 4, "sphere", {}),
        ("tanh", 5, "sphere", {}),
        ("sin(z) + 0.5*z", 5, "sphere", {}),
        ("relu", 4, "laplace", {}),
        ("relu", 7, "laplace", {}),
        ("alpha_relu", 6, "laplace", {"alpha": 1.5}),
        ("identity", 6, "laplace", {}),
    ],
)
def test_eigenvalues_and_multiplicities_match_the_jacobian(spec, b, method, kw):
    spectrum = finite_difference_spectrum(spec, b, method, **kw)
    r = theory(spec, b, **kw)
    expected = np.sort(
        np.concatenate([np.zeros(b + 1), np.full(b - 1, r.lambda_L), np.full(b * (b - 3) // 2, r.lambda_M)])
    )
    assert r.multiplicity_L == b - 1 and r.multiplicity_M == b * (b - 3) // 2
    np.testing.assert_allclose(spectrum, expected, atol=2e-7)


@pytest.mark.parametrize("b", [4, 5, 8, 32, 1000])
def test_relu_and_identity_general_path_match_closed_forms(b):
    for spec, expr in (("relu", "relu(z)"), ("identity", "z")):
        closed, general = theory(spec, b), theory(expr, b)
        assert closed.forward_method == "closed_form" and general.forward_method == "quadrature"
        for key in ("lambda_L", "lambda_M", "cross_batch_c", "cross_batch_rate"):
            assert getattr(general, key) == pytest.approx(getattr(closed, key), rel=1e-10, abs=1e-14)


def test_closed_form_values():
    b = 10
    r = theory("identity", b)
    assert r.lambda_L == r.lambda_M == pytest.approx((b - 1) / (b + 1), rel=1e-15)
    assert r.bsb1_stable and r.forward_depth_scale == pytest.approx(-1 / math.log((b - 1) / (b + 1)))
    relu_big = theory("relu", 10**5)
    assert relu_big.lambda_M == pytest.approx(math.pi / (2 * (math.pi - 1)), rel=1e-4)  # docs/theory.md section 5.4
    assert relu_big.lambda_L == pytest.approx(1.0, abs=1e-4)
    assert theory("relu", 4).cross_batch_c == pytest.approx(0.1875, rel=1e-14)  # docs/theory.md section 7
    assert theory("relu", math.inf).cross_batch_c == pytest.approx(1 / (2 * math.pi), rel=1e-14)
    assert theory("tanh", 8).cross_batch_c == pytest.approx(0.0, abs=1e-14)


def test_alpha_relu_breaks_symmetry_for_large_alpha():
    assert theory("alpha_relu", 32, alpha=1.0).bsb1_stable
    unstable = theory("alpha_relu", 32, alpha=2.0)
    assert not unstable.bsb1_stable and unstable.forward_depth_scale == math.inf


@pytest.mark.parametrize(("spec", "b"), [("relu", 6), ("tanh", 8), ("identity", 5), ("gelu", 12)])
def test_cross_batch_rate_against_monte_carlo_of_the_pathwise_derivative(spec, b, rng):
    """Two batches h, h' = eps h + sqrt(1 - eps^2) z with BSB1 Sigma*: d/d eps of the cross block
    E[phi(BN h) phi(BN h')^T] at eps = 0 is kappa mu* G (docs/theory.md section 7); estimated with the exact BN
    Jacobian."""
    phi = get_nonlinearity(spec)
    r = theory(spec, b)
    g = np.eye(b) - 1.0 / b
    root = np.sqrt(r.mu_star) * g  # Sigma_G = mu* G: G-part of h ~ N(0, Sigma*)
    n, reps, estimates = 40000, 10, []
    for _ in range(reps):
        h = rng.standard_normal((n, b)) @ root
        z = rng.standard_normal((n, b)) @ root
        f = phi(batch_norm(h))
        jac = bn_phi_jacobian(z, phi.derivative)  # d phi(BN(z + eps h)) / d eps = J(z) h at eps = 0
        dy = np.einsum("nij,nj->ni", jac, h)
        deriv = f.T @ dy / n
        estimates.append(np.trace(g @ deriv @ g) / (b - 1) / r.mu_star)
    mean, se = np.mean(estimates), np.std(estimates, ddof=1) / math.sqrt(reps)
    assert se < 0.02 * r.cross_batch_rate
    assert abs(mean - r.cross_batch_rate) < 4 * se, (mean, se, r.cross_batch_rate)


def test_bsb1_sampling_helper_is_consistent(rng):
    x = sample_sphere_batch(rng, 10, 6)
    np.testing.assert_allclose(batch_norm(x), x, atol=1e-12)
