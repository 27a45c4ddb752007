"""The theory against a Monte Carlo of the actual BN map and its exact Jacobian (issue: theory engine I, 4).

Each replicate estimates the fixed point Sigma* from batches ``phi(BN(z))``, then samples pre-activations
``h ~ N(0, Sigma*)`` of the next layer and averages ``||G J||_F^2 / (B - 1)`` with J the exact Jacobian of
``h -> phi(BN(h))``: the eigenvalue of the backward map on G (docs/theory.md section 3). Replicates are
independent, so their spread gives the standard error; the theory must lie within 4 of them.
"""

import math

import numpy as np
import pytest

from bnmft import get_nonlinearity, theory

from .references import batch_norm, bn_phi_jacobian, sample_sphere_batch

REPLICATES = 16
SAMPLES = 12000


def monte_carlo(spec: str, batch_size: int, rng, **kw) -> dict[str, tuple[float, float]]:
    phi = get_nonlinearity(spec, **kw)
    b = batch_size
    g_mat = np.eye(b) - 1.0 / b
    estimates = {"q_star": [], "c_star": [], "lambda_G": []}
    for _ in range(REPLICATES):
        y = phi(sample_sphere_batch(rng, SAMPLES, b))  # layer outputs, shape (n, B)
        sigma = y.T @ y / SAMPLES
        q = np.mean(np.diag(sigma))
        c = (sigma.sum() - np.trace(sigma)) / (b * (b - 1)) / q
        h = rng.standard_normal((SAMPLES, b)) @ np.linalg.cholesky(sigma).T  # next pre-activations
        jac = bn_phi_jacobian(h, phi.derivative)
        lam = np.mean(np.sum((g_mat @ jac) ** 2, axis=(1, 2))) / (b - 1)
        estimates["q_star"].append(q)
        estimates["c_star"].append(c)
        estimates["lambda_G"].append(lam)
    return {k: (float(np.mean(v)), float(np.std(v, ddof=1) / math.sqrt(REPLICATES))) for k, v in estimates.items()}


@pytest.mark.parametrize(
    ("spec", "batch_size", "kw"),
    [
        ("relu", 4, {}),
        ("relu", 16, {}),
        ("tanh", 5, {}),
        ("tanh", 32, {}),
        ("gelu", 8, {}),
        ("alpha_relu", 6, {"alpha": 2.0}),
        ("sin(2*z) + relu(z)", 10, {}),
        ("elu", 12, {}),
    ],
)
def test_theory_within_four_standard_errors(spec, batch_size, kw, rng):
    mc = monte_carlo(spec, batch_size, rng, **kw)
    r = theory(spec, batch_size, **kw)
    for key in ("q_star", "c_star", "lambda_G"):
        mean, se = mc[key]
        assert se < 0.02 * abs(getattr(r, key)) + 1e-3  # the check has teeth
        assert abs(mean - getattr(r, key)) < 4 * se, (key, mean, se, getattr(r, key))


def test_batch_norm_of_bsb1_input_is_the_sphere_law(rng):
    """docs/theory.md section 2.2: BN of any BSB1 Gaussian batch is uniform on the sphere (here: its moments)."""
    b, q, c = 7, 3.0, 0.4
    cov = q * ((1 - c) * np.eye(b) + c)
    h = rng.standard_normal((200000, b)) @ np.linalg.cholesky(cov).T
    x = batch_norm(h)
    np.testing.assert_allclose(np.sum(x * x, axis=1), b)  # radius sqrt(B)
    np.testing.assert_allclose(np.mean(x[:, 0] * x[:, 1]), -1 / (b - 1), atol=4 * 1.1 / math.sqrt(200000))
