"""The linear-noise theory of the batch geometry at finite width (bnmft.meanfield.linear_noise) against a closed
form (Gaussian inputs: a Wishart Gram has noise 2 per component on both irreps) and against the simulator's
distance to BSB1 layer by layer (no free parameter)."""

import numpy as np
import pytest

from bnmft.errors import InputError
from bnmft.meanfield.linear_noise import fluctuations
from bnmft.simulate import simulate_mlp


def test_wishart_input_noise_is_two_per_component():
    """f = identity: for x ~ N(0, P) the traceless part of x x^T has variance 2 per component (isotropic)."""
    f = fluctuations("relu", 16)
    assert f.input_sigma2_L == pytest.approx(2.0, abs=0.03)
    assert f.input_sigma2_M == pytest.approx(2.0, abs=0.01)
    assert f.dims == (15, 16 * 13 // 2)


def test_the_noise_has_small_standard_errors_and_the_engines_eigenvalues():
    f = fluctuations("tanh", 32)
    assert f.sigma2_L_stderr < 0.01 * f.sigma2_L and f.sigma2_M_stderr < 0.01 * f.sigma2_M
    assert 0 < f.lambda_L < 1 and 0 < f.lambda_M < 1
    d = f.distance(256, 200)
    assert d[-1]["distance"] == pytest.approx(f.stationary_distance(256), rel=1e-6)  # converged


@pytest.mark.parametrize("phi,batch,width", [("relu", 8, 128), ("tanh", 32, 256)])
def test_distance_to_bsb1_matches_the_simulator_layer_by_layer(phi, batch, width):
    """Gaussian inputs of dimension N, 16 networks of depth 12: the rms distance to BSB1 at every layer within 8% of
    the prediction (measured here: within 1-5%)."""
    f = fluctuations(phi, batch)
    r = simulate_mlp(phi, [batch], width=width, depth=12, networks=16, seed=3)
    measured = np.sqrt((r.runs[batch].distance.numpy() ** 2).mean(axis=0))
    predicted = np.array([row["distance"] for row in f.distance(width, 12)])
    assert measured == pytest.approx(predicted, rel=0.08)


def test_bad_input():
    with pytest.raises(InputError, match="batch_size"):
        fluctuations("relu", 3)
    with pytest.raises(InputError, match="batch_size"):
        fluctuations("relu", "inf")
    with pytest.raises(InputError, match="width"):
        fluctuations("relu", 8).distance(0, 3)


def test_finite_width_command(capsys):
    import json

    from bnmft.cli import main

    assert main(["finite-width", "--phi", "relu", "-B", "8", "128", "-N", "256", "--depth", "5", "--samples", "1000",
                 "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["batch_size"] for r in rows] == [8, 128]
    assert rows[0]["outlier"]["critical_batch_size"] == 52 and rows[0]["outlier"]["stable"] is None  # relu, B = 8
    assert [d["layer"] for d in rows[1]["distance"]] == [1, 2, 3, 4, 5]
    first = fluctuations("relu", 128).distance(256, 1)[0]["distance"]
    assert rows[1]["distance"][0]["distance"] == pytest.approx(first)
    assert rows[1]["outlier"]["saddle"] == pytest.approx(1.2038, abs=1e-3) and rows[1]["outlier"]["stable"] > 20
    assert main(["finite-width", "--phi", "relu", "-B", "3", "-N", "256"]) == 2
    assert "batch_size" in capsys.readouterr().err
