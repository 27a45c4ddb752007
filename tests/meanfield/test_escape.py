"""The escape-depth chain (bnmft.meanfield.escape, docs/outlier.md section 6): its noise at BSB1 against the
linear-noise theory's L irrep, where it does not apply, its discretisation, and its bookkeeping. (Against the
simulator: tests/simulate/test_outlier_sim.py.)"""

import math

import numpy as np
import pytest

from bnmft.errors import InputError
from bnmft.meanfield import escape as module
from bnmft.meanfield.escape import escape_depth, escape_depth_resolved
from bnmft.meanfield.linear_noise import fluctuations
from bnmft.meanfield.outlier import outlier_state_resolved
from bnmft.nonlinearity import resolve


@pytest.fixture(scope="module")
def relu128():
    return escape_depth("relu", 128, 1024)


@pytest.mark.parametrize(("phi", "b"), [("relu", 128), ("tanh", 32)])
def test_the_noise_at_bsb1_is_the_l_irrep_noise(phi, b, relu128):
    """At rho = 1 one example's per-layer variance of rho is ``sigma2_L B^2 (B-2) / (B-1)^3`` (the L part of one
    unit's noise, read on one diagonal entry): two independent Monte Carlo estimates, within 3 combined errors."""
    r = relu128 if phi == "relu" else escape_depth(phi, b, 256)
    f = fluctuations(phi, b)
    factor = b * b * (b - 2) / (b - 1) ** 3
    error = math.hypot(r.noise_at_bsb1_stderr, factor * f.sigma2_L_stderr)
    assert r.noise_at_bsb1_stderr < 0.04 * r.noise_at_bsb1  # the check can fail
    assert abs(r.noise_at_bsb1 - factor * f.sigma2_L) < 3 * error, (r.noise_at_bsb1, factor * f.sigma2_L, error)
    assert r.lambda_L == pytest.approx(f.lambda_L, abs=1e-8)


def test_no_saddle_means_no_escape():
    """tanh (no second fixed point at any B) and relu below its critical batch size 52: infinite depth."""
    for phi, b in (("tanh", 128), ("relu", 51)):
        r = escape_depth(phi, b, 512)
        assert r.saddle is None and r.expected_depth == math.inf and r.escape_probability == 0.0
        assert r.to_dict()["expected_depth"] == "inf"


def test_where_bsb1_is_not_attracting_the_model_does_not_apply():
    r = escape_depth("gelu", 128, 512)  # lambda_L > 1: the saddle is rho = 1 itself
    assert r.lambda_L > 1 and r.saddle == 1.0 and r.expected_depth is None and r.escape_probability is None


def test_survival_and_the_summaries_agree(relu128):
    r = relu128
    s = np.array(r.survival)
    assert s[0] == pytest.approx(1.0, abs=1e-12) and np.all(np.diff(s) <= 1e-12) and s[-1] < 1e-6
    assert r.expected_depth == pytest.approx(s.sum(), rel=1e-5)  # the tail beyond 1e-6 adds nothing visible
    assert s[r.median_depth] <= 0.5 < s[r.median_depth - 1]
    assert r.threshold == pytest.approx(math.sqrt(r.saddle * r.stable), rel=1e-12)
    assert 0 < r.escape_probability < 1 and 1 < r.normalisation < 1.1
    assert 30 < r.expected_depth < 50  # measured by the simulator: 43.6 +- 2.4 (docs/outlier.md)


def test_the_discretisation_has_converged(monkeypatch):
    """Twice the cells, twice the noise grid: the expected depth moves by < 0.5%."""
    base = escape_depth("relu", 128, 512).expected_depth
    monkeypatch.setattr(module, "CELLS_PER_STD", 2 * module.CELLS_PER_STD)
    cells = escape_depth("relu", 128, 512).expected_depth
    monkeypatch.setattr(module, "CELLS_PER_STD", module.CELLS_PER_STD / 2)
    monkeypatch.setattr(module, "NOISE_POINTS", 2 * module.NOISE_POINTS)
    points = escape_depth("relu", 128, 512).expected_depth
    assert cells == pytest.approx(base, rel=5e-3) and points == pytest.approx(base, rel=5e-3)


def test_wider_networks_stay_longer_and_the_normalisation_slows_the_escape():
    base, phi = resolve("relu")
    out = outlier_state_resolved(base, phi, 128.0)
    depths = [escape_depth_resolved(base, phi, 128, n, n, outlier=out).expected_depth for n in (256, 512, 2048)]
    assert depths[0] < depths[1] < depths[2]
    bare = escape_depth_resolved(base, phi, 128, 512, 512, outlier=out, background=False).expected_depth
    assert bare < 0.95 * depths[1]  # without it the chain's E t drifts above 1 and examples leave sooner
    higher = escape_depth_resolved(base, phi, 128, 512, 512, 8.0, outlier=out).expected_depth
    assert higher > depths[1]  # a farther threshold takes longer to reach


def test_bad_input():
    with pytest.raises(InputError, match="batch_size"):
        escape_depth("relu", "inf", 512)
    with pytest.raises(InputError, match="width"):
        escape_depth("relu", 128, 8)
    with pytest.raises(InputError, match="input_dim"):
        escape_depth("relu", 128, 512, input_dim=0)
    with pytest.raises(InputError, match="threshold"):
        escape_depth("relu", 128, 512, threshold=1.1)  # below the saddle 1.2038
    with pytest.raises(InputError, match="samples"):
        escape_depth("relu", 128, 512, samples=10)
    with pytest.raises(InputError, match="seed"):
        escape_depth("relu", 128, 512, seed=-1)
