"""The test references themselves: the BN Jacobian formula against finite differences."""

import numpy as np

from .references import batch_norm, bn_phi_jacobian


def test_bn_jacobian_matches_finite_differences(rng):
    b, h = 6, rng.standard_normal((3, 6))
    jac = bn_phi_jacobian(h, lambda x: 1 / np.cosh(x) ** 2)
    eps = 1e-6
    for k in range(b):
        step = np.zeros(b)
        step[k] = eps
        numeric = (np.tanh(batch_norm(h + step)) - np.tanh(batch_norm(h - step))) / (2 * eps)
        np.testing.assert_allclose(jac[:, :, k], numeric, atol=1e-8)
