"""Finite-width extrapolation: the fit recovers known coefficients, and the simulator's infinite-width values meet
the theory."""

import numpy as np
import pytest

from bnmft import InputError
from bnmft.simulate import simulate_mlp
from bnmft.simulate.extrapolation import fit_inverse_width


def test_the_fit_recovers_a_and_b_within_their_errors():
    rng = np.random.default_rng(0)
    widths = np.array([32, 64, 128, 256, 512])
    hits, linear = 0, 0
    for _ in range(200):
        se = np.full(5, 0.002)
        y = 1.5 + 3.0 / widths + rng.normal(0, se)
        coef, errs, _, dof = fit_inverse_width(widths, y, se)
        if len(coef) == 2:  # the quadratic term is added only where chi^2 rejects the line (1% of the time here)
            linear += 1
            assert dof == 3
            hits += abs(coef[0] - 1.5) < errs[0]
    assert linear >= 190
    assert 0.6 < hits / linear < 0.8  # ~68% of the 1-sigma intervals hold a: the standard errors are right


def test_curved_data_get_the_quadratic_term():
    widths = np.array([8, 16, 32, 64, 128])
    y = 1.0 + 2.0 / widths + 40.0 / widths**2
    coef = fit_inverse_width(widths, y + 1e-9, np.full(5, 1e-4))[0]
    assert len(coef) == 3
    np.testing.assert_allclose(coef, [1.0, 2.0, 40.0], rtol=1e-4)


def test_simulated_estimates_extrapolate_to_the_theory():
    r = simulate_mlp("relu", [32], widths=[64, 128, 256, 512], depth=20, networks=24, seed=1, sampler="conditional")
    fits = {f.estimate: f for f in r.fits}
    for name in ("lambda_G", "c_star", "q_star"):
        f = fits[name]
        assert abs(f.a - f.theory) < 4 * f.a_stderr + 1e-3 * abs(f.theory), f
    assert fits["c_star"].b < -3 * fits["c_star"].b_stderr  # c* approaches its limit from below, like 1/N
    # b with the intercept held at the theory agrees with the free fit's b (both within their errors)
    f = fits["c_star"]
    assert abs(f.b_at_theory - f.b) < 3 * np.hypot(f.b_stderr, f.b_at_theory_stderr)
    assert f.b_at_theory_stderr < f.b_stderr  # one parameter fewer: a tighter b
    rows = r.rows()
    assert {"batch_size", "estimate", "a", "a_stderr", "b", "b_stderr", "theory", "widths"} <= set(rows[0])


def test_the_held_intercept_fit_is_unbiased_by_curvature():
    """With the intercept known, N (X(N) - a) = b + c/N is linear in 1/N: the b of held-intercept data with a large
    1/N^2 term is exact, where the free fit over few widths would need the quadratic term."""
    widths = np.array([64, 128, 256, 512, 1024])
    y = 1.0 - 2.0 / widths + 900.0 / widths**2
    coef = fit_inverse_width(widths, widths * (y - 1.0), np.full(5, 1e-6))[0]
    np.testing.assert_allclose(coef[:2], [-2.0, 900.0], rtol=1e-6)


def test_bad_widths():
    with pytest.raises(InputError, match="widths"):
        simulate_mlp("relu", [8], widths=[64, 128], depth=8, networks=2)
    with pytest.raises(InputError, match="not both"):
        simulate_mlp("relu", [8], width=64, widths=[32, 64, 128], depth=8, networks=2)
    with pytest.raises(InputError, match="width"):
        simulate_mlp("relu", [8], depth=8, networks=2)
