"""The conv departure chain (bnmft.meanfield.conv_width, docs/conv_width.md): its drift against the outlier map's
B = infinity closed form, its noise against the relu closed form, its slope against the outlier engine, and its
spread and departure depth against the conv simulator (bnmft.simulate.conv_drift)."""

import json
import math

import numpy as np
import pytest

from bnmft.errors import InputError
from bnmft.meanfield import conv_width as module
from bnmft.meanfield.conv_width import conv_departure_depth, drift_map, moment_table
from bnmft.meanfield.outlier import outlier_state_resolved
from bnmft.nonlinearity import resolve
from bnmft.simulate.conv_drift import measure_conv_drift


def test_relu_moments_and_noise_closed_forms():
    """relu: E relu(sqrt(rho) z)^k = rho^(k/2) (1/sqrt(2 pi), 1/2, sqrt(2/pi), 3/2); at BSB1 the relative noise of
    one example's centred norm is (E (x - mu)^4 - g^2) / g^2 with g = 1/2 - 1/(2 pi)."""
    log_rho, table = moment_table(resolve("relu")[1])
    rho = np.exp(log_rho)
    for k, m in enumerate((1 / math.sqrt(2 * math.pi), 0.5, math.sqrt(2 / math.pi), 1.5)):
        np.testing.assert_allclose(table[k], m * rho ** ((k + 1) / 2), rtol=1e-10)
    mu = 1 / math.sqrt(2 * math.pi)
    g = 0.5 - mu * mu
    m4 = 1.5 - 4 * mu * math.sqrt(2 / math.pi) + 3 * mu * mu - 3 * mu**4
    r = conv_departure_depth("relu", 8, (4, 4), 32, max_depth=12, replicas=100)
    assert r.model == "offsets"
    assert r.rate_at_bsb1 == pytest.approx(1 / (1 - 1 / math.pi), rel=3e-3)  # (1/2) / Var relu, before any drift
    assert r.noise_at_bsb1 == pytest.approx((m4 - g * g) / (g * g), rel=1e-9)
    assert r.drift_slope == pytest.approx(1.0, abs=1e-6)


def test_drift_is_the_outlier_map_at_infinite_batch():
    """One example at rho among many at 1: g(rho) / g(1) is F_inf(rho) = rho + (sqrt(rho) - 1)^2 / (pi - 1) for relu
    (docs/outlier.md section 3); the mean of phi moves by O(1 / B)."""
    log_rho, table = moment_table(resolve("relu")[1])
    b = 10**6
    for rho in (0.3, 0.8, 2.0, 5.0):
        state = np.ones(b)
        state[0] = rho
        g, _ = drift_map(state, log_rho, table)
        assert g[0] / g[1] == pytest.approx(rho + (math.sqrt(rho) - 1) ** 2 / (math.pi - 1), rel=2e-5)


def test_drift_slope_is_the_outlier_slope_at_large_n():
    """tanh: the chain's slope F_inf'(1) (its own quadrature) against the outlier engine's lambda_L at n = 4096
    (which differs by O(1/n))."""
    r = conv_departure_depth("tanh", 16, (16, 16), 64, max_depth=5, replicas=100)
    assert r.model == "norms"
    base, phi = resolve("tanh")
    lam = next(s for rho, s, _ in outlier_state_resolved(base, phi, 4096.0).fixed_points if rho == 1.0)
    assert r.effective_batch_size == 4096
    assert r.drift_slope == pytest.approx(lam, abs=2e-3)
    assert r.lambda_L == pytest.approx(lam, abs=1e-12)


def test_early_spread_against_the_simulator():
    """Layers 3-20 (the noise-driven onset): the simulator's spread of the examples' norms, 48 networks, against
    the chain's, within 3 standard errors plus 10% (the chain's error on the onset is a few %)."""
    run = measure_conv_drift("relu", 8, (4, 4), 32, depth=20, networks=48, chunk=16, seed=1)
    pred = conv_departure_depth("relu", 8, (4, 4), 32, max_depth=20, replicas=1000).spread
    spread = run.get("spread")
    for layer in (3, 10, 20):
        m, se = spread[:, layer - 1].mean(), spread[:, layer - 1].std(ddof=1) / math.sqrt(len(spread))
        assert abs(m - pred[layer - 1]) < 3 * se + 0.1 * pred[layer - 1], (layer, m, se, pred[layer - 1])


def test_departure_depth_against_the_simulator():
    """relu, B = 32, 4x4 (n = 512), C = 32: mean departure layer of 32 networks against both chains, within 3
    standard errors plus 20% (their measured accuracy, docs/conv_width.md); and the drifted state is one example, not
    one pair, taking the norm."""
    depth = 90
    run = measure_conv_drift("relu", 32, (4, 4), 32, depth=depth, networks=32, chunk=16, seed=2)
    layers = run.departure_layers()
    assert np.isnan(layers).mean() < 0.1
    measured = np.where(np.isnan(layers), depth, layers)
    m, se = measured.mean(), measured.std(ddof=1) / math.sqrt(len(measured))
    for model in ("offsets", "norms"):
        pred = conv_departure_depth("relu", 32, (4, 4), 32, model=model, replicas=200)
        assert abs(m - pred.mean_depth) < 3 * se + 0.2 * pred.mean_depth, (model, m, se, pred.mean_depth)
    late = slice(depth - 10, depth)
    share = run.get("max_share")[:, late].mean()
    assert share > 0.2  # one example of 32 (1/32 at BSB1)
    # ... spread over its 16 positions: the largest pair holds about the example's share / 16, not the example's
    assert run.get("pair_share")[:, late].mean() < 2.5 * share / 16, (run.get("pair_share")[:, late].mean(), share)


def test_settled_rate_against_the_simulator():
    """relu, B = 8, 8x8, C = 32: the per-layer gradient growth of 16 networks over layers 150-200 (after departure,
    ~60 layers) against the offsets chain's settled rate, within 3 standard errors plus 2.5% (the chain is 1-2% low,
    docs/conv_width.md), and both well below the mean field's 1.473."""
    run = measure_conv_drift("relu", 8, (8, 8), 32, depth=200, networks=16, chunk=16, seed=3)
    lam = run.rates()[:, 150:199].mean(axis=1)
    m, se = lam.mean(), lam.std(ddof=1) / math.sqrt(len(lam))
    pred = conv_departure_depth("relu", 8, (8, 8), 32, replicas=200)
    assert abs(m - pred.settled_rate) < 3 * se + 0.025 * pred.settled_rate, (m, se, pred.settled_rate)
    assert m < 1.44 and pred.settled_rate < 1.44
    assert abs(run.get("max_share")[:, 150:].mean() - pred.settled_share) < 0.1


def test_offsets_chain_in_chunks(monkeypatch):
    """Chunks of replicas stop at different layers; the result is that of the replicas pooled."""
    whole = conv_departure_depth("relu", 16, (4, 4), 8, replicas=100, seed=5)
    monkeypatch.setattr(module, "CHUNK_VALUES", 16 * 8 * 25)  # 4 chunks of 25
    parts = conv_departure_depth("relu", 16, (4, 4), 8, replicas=100, seed=5)
    assert len(parts.spread) == len(whole.spread) == module.SPREAD_LAYERS
    assert parts.censored == 0.0 and parts.settled_rate is not None
    error = math.hypot(whole.mean_depth_stderr, parts.mean_depth_stderr)
    assert abs(parts.mean_depth - whole.mean_depth) < 4 * error


def test_tanh_does_not_depart():
    """tanh pulls every example back (F_inf'(1) = 0.46): no departure in the chain, and the simulator's spread stays
    far below the threshold."""
    r = conv_departure_depth("tanh", 8, (4, 4), 32, max_depth=200, replicas=200)
    assert r.censored == 1.0 and r.mean_depth == math.inf and r.median_depth is None and r.mean_depth_stderr is None
    run = measure_conv_drift("tanh", 8, (4, 4), 32, depth=60, networks=8)
    assert run.get("spread").max() < 0.25


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 1}, "batch_size"),
        ({"channels": 4}, "channels"),
        ({"padding": "zero"}, "periodic"),
        ({"threshold": 7.0}, "threshold"),
        ({"threshold": -1.0}, "threshold"),
        ({"kernel": 4}, "odd"),
        ({"spatial": (2, 2)}, "larger than the image"),
        ({"replicas": 10}, "replicas"),
        ({"max_depth": 0}, "max_depth"),
        ({"model": "exact"}, "model"),
        ({"phi": "tanh", "model": "offsets"}, "relu"),
        ({"batch_size": 2, "spatial": (1, 1), "kernel": 1}, "positions must be >= 4"),
    ],
)
def test_bad_input(kwargs, match):
    args = {"phi": "relu", "batch_size": 8, "spatial": (4, 4), "channels": 32} | kwargs
    with pytest.raises(InputError, match=match):
        conv_departure_depth(**args)


def test_cli_conv_mode_is_the_api(capsys):
    """``bnmft finite-width --spatial``: the JSON is :func:`bnmft.conv_departure_depth`'s, one object per B; the MLP's
    options are errors there, the chain's options errors without it (exit 2)."""
    from bnmft.cli import main

    argv = ["finite-width", "--phi", "relu", "-B", "16", "-N", "8", "--spatial", "4x4", "--replicas", "100",
            "--seed", "5"]  # fmt: skip
    assert main([*argv, "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row == conv_departure_depth("relu", 16, (4, 4), 8, replicas=100, seed=5).to_dict()
    assert main(argv) == 0
    assert f"after {row['mean_depth']:.1f} +- {row['mean_depth_stderr']:.1f} layers" in capsys.readouterr().out
    assert main([*argv, "--window", "2:5"]) == 2
    assert "--window does not apply" in capsys.readouterr().err
    assert main(["finite-width", "--phi", "relu", "-B", "8", "-N", "64", "--threshold", "0.3"]) == 2
    assert "--threshold does not apply without --spatial" in capsys.readouterr().err
