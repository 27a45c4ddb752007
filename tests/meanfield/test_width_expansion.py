"""The 1/N coefficients of c* and q* (bnmft.meanfield.width_expansion, docs/finite_width.md section 5): the curvature
rule against a Monte Carlo of the actual map under random deviations of the state, and the total against the
simulator."""

import math

import numpy as np
import pytest

from bnmft.meanfield.api import check_theory_input
from bnmft.meanfield.width_expansion import (
    noise_parts_resolved,
    statistic_coefficients_resolved,
    unit_constants_resolved,
)
from bnmft.nonlinearity import resolve


def _irrep_draw(rng, b, irrep):
    """A Gaussian centred traceless symmetric matrix with identity covariance on the L or M irrep."""
    g = rng.standard_normal((b, b))
    g = (g + g.T) / 2
    p = np.eye(b) - 1 / b
    x = p @ g @ p
    x -= np.trace(x) * p / (b - 1)
    a_l = p @ np.diag(np.diag(x)) @ p / (1 - 2 / b)  # the L part: M matrices are centred with zero diagonal
    return a_l if irrep == "L" else x - a_l


def _statistics(f, b):
    d = np.sum(f**2, axis=-1) / b
    a = (np.sum(f, axis=-1) ** 2 - b * d) / (b * (b - 1))
    return d, a


@pytest.mark.parametrize("irrep", ["L", "M"])
def test_curvature_rule_against_a_monte_carlo_of_the_map(irrep):
    """E over random deviations delta (covariance s Pi_X) of E_{h ~ N(0, P + delta)} F(h), minus F's value at BSB1,
    is g[F] s for X = L and -g[F] s for X = M (antithetic pairs +-delta remove the first order exactly; the same
    Gaussian draws for every state remove most of the noise)."""
    b, s, draws, units = 8, 0.01, 400, 20_000
    _base, phi = resolve("tanh")
    rng = np.random.default_rng(5)
    y = rng.standard_normal((units, b))
    p = np.eye(b) - 1 / b

    def mean_stats(cov):
        h = y @ np.linalg.cholesky(cov).T @ p  # rows ~ N(0, P cov P)
        z = (h - h.mean(axis=1, keepdims=True)) / h.std(axis=1, keepdims=True)
        d, a = _statistics(phi(z), b)
        return np.array([d.mean(), a.mean()])

    at_bsb1 = mean_stats(np.eye(b))
    shifts = []
    for _ in range(draws):
        delta = math.sqrt(s) * _irrep_draw(rng, b, irrep)
        shifts.append((mean_stats(np.eye(b) + delta) + mean_stats(np.eye(b) - delta)) / 2 - at_bsb1)
    shifts = np.array(shifts)
    measured, se = shifts.mean(axis=0), shifts.std(axis=0, ddof=1) / math.sqrt(draws)
    consts = unit_constants_resolved(phi, b)
    q, c = at_bsb1[0], at_bsb1[1] / at_bsb1[0]
    sign = 1 if irrep == "L" else -1
    # g_q is the curvature of d; g_c q* that of a - c* d
    predicted_q = sign * consts.g_q.mean() * s
    measured_c = measured[1] - c * measured[0]
    predicted_c = sign * consts.g_c.mean() * q * s
    assert abs(predicted_q) > 5 * se[0]  # the effect is resolved
    assert measured[0] == pytest.approx(predicted_q, abs=3 * se[0] + 0.05 * abs(predicted_q))
    assert measured_c == pytest.approx(predicted_c, abs=3 * math.hypot(se[1], c * se[0]) + 0.05 * abs(predicted_c))


def test_isotropic_deviations_bias_nothing():
    """Sigma_L = Sigma_M biases no statistic: the L and M curvatures are opposite (the identity behind the rule)."""
    base, phi = resolve("relu")
    _b, settings = check_theory_input(16)
    coeffs, fl = statistic_coefficients_resolved(base, phi, 16, settings, None)
    part_l, part_m = noise_parts_resolved(fl, None)
    assert part_l > part_m > 0  # relu's slow L mode: the per-example norms fluctuate most
    consts = unit_constants_resolved(phi, 16)
    assert coeffs.c_star == pytest.approx(consts.g_c.mean() * (part_l - part_m) + consts.ratio.mean(), rel=1e-9)


def test_c_star_coefficient_against_the_simulator():
    """relu, B = 32, depth 30 (window 10:27), widths 64 and 128: N (c*(N) - c*) against the predicted b over the same
    window (the 1/N^2 remainder: within 15%, plus 3 standard errors)."""
    from bnmft.simulate import simulate_mlp

    base, phi = resolve("relu")
    _b, settings = check_theory_input(32)
    predicted = statistic_coefficients_resolved(base, phi, 32, settings, (10, 27))[0]
    for n, k in ((64, 48), (128, 32)):
        s = simulate_mlp("relu", [32], width=n, depth=30, networks=k, seed=2).summaries[0]
        measured, se = n * (s.c_star_mean - s.c_star_theory), n * s.c_star_stderr
        assert measured == pytest.approx(predicted.c_star, abs=3 * se + 0.15 * abs(predicted.c_star)), (n, measured)


def test_finite_width_api_and_json():
    """bnmft.finite_width: the pieces it reports are the engine's own (same seed, same numbers), lambda_G has no
    coefficient below B = 6, and its JSON has one entry per layer and the outlier state with its escape depth."""
    import json

    import bnmft
    from bnmft.meanfield.escape import escape_depth_resolved

    r = bnmft.finite_width("tanh", 4, 128, depth=6, window="2:6", seed=3)
    base, phi = resolve("tanh")
    _b, settings = check_theory_input(4)
    direct = statistic_coefficients_resolved(base, phi, 4, settings, (2, 6), 3)[0]
    assert (r.c_star_coefficient, r.q_star_coefficient) == (direct.c_star, direct.q_star)
    assert r.lambda_G_coefficient is None and r.width_for_1_percent is None
    out = json.loads(json.dumps(r.to_dict()))
    assert out["window"] == [2, 6] and [d["layer"] for d in out["distance"]] == list(range(1, 7))
    assert out["outlier"]["critical_batch_size"] is None  # tanh has no outlier state
    relu = bnmft.finite_width("relu", 128, 256, depth=3, seed=1, samples=2000).to_dict()
    assert relu["lambda_G_coefficient"] < -2 * relu["lambda_G_coefficient_stderr"]  # large-B relu: strongly negative
    assert relu["width_for_1_percent"] == pytest.approx(
        abs(relu["lambda_G_coefficient"]) / (0.01 * relu["lambda_G"]), rel=1e-12)
    escape = escape_depth_resolved(*resolve("relu"), 128, 256, 256, seed=1)
    assert relu["outlier"]["escape_depth"] == pytest.approx(escape.expected_depth, rel=1e-12)
    assert 10 < relu["outlier"]["escape_depth"] < 30  # the simulator's 20.7 +- 1.1 at N = 256 (test_outlier_sim)
