"""bnmft.finite_width(..., inputs=X): the distance to BSB1 layer by layer from a fixed input batch,
``E D_l^2 ~= D_mf(l)^2 + noise(l) / N`` (docs/finite_width.md section 8), against the simulator run on the same batch;
the identity of the two distance definitions (propagate's and the simulator's); the Gaussian-input default
unchanged; bad input; the CLI's --input."""

import json

import numpy as np
import pytest
import torch

import bnmft
from bnmft.cli import main
from bnmft.errors import InputError
from bnmft.meanfield.linear_noise import fluctuations
from bnmft.meanfield.propagation import _distance, propagate
from bnmft.simulate import simulate_mlp
from bnmft.simulate.network import gram_stats, segments_for

B, DEPTH, NETWORKS = 8, 15, 400


def two_clusters(b: int = B, d: int = 32, seed: int = 0) -> np.ndarray:
    """A correlated batch: two clusters of b/2 examples (D_mf(1) about 1.2 for relu, 1.7 for tanh)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((2, d))
    return np.repeat(centres, b // 2, axis=0) + 0.3 * rng.standard_normal((b, d))


def test_propagate_distance_is_the_simulators():
    """propagate's ``||N(K) - G/(B-1)||_F / ||G/(B-1)||_F``, N(K) = G K G / tr(G K G), is the simulator's
    ``||S - P||_F / ||P||_F``, S = (B-1) P K P / tr(P K P), on the same post-activation Gram (float64)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, B, 40)) + np.linspace(0, 2, B)[None, :, None] * rng.standard_normal(40)
    seg = segments_for([B])[0]
    _, _, simulated, _, gram = gram_stats(torch.as_tensor(x), seg)
    assert float(simulated[0]) == pytest.approx(_distance(gram[0].numpy()), rel=1e-12)
    s = (B - 1) * (g := np.eye(B) - 1 / B) @ gram[0].numpy() @ g / np.trace(g @ gram[0].numpy() @ g)
    assert float(simulated[0]) == pytest.approx(np.linalg.norm(s - g) / np.linalg.norm(g), rel=1e-12)


@pytest.mark.parametrize("phi", ["relu", "tanh"])
def test_distance_from_a_batch_against_the_simulator(phi):
    """The same fixed two-cluster batch through 400 simulated networks of depth 15 at N = 256 and 1024: the rms
    distance over the networks within 3 s.e. (delta method) + 4% of the prediction at every layer (measured with
    1000 networks: relu within 1.8%, tanh within 3.0%, largest where D_mf^2 and the noise are alike). Neither piece
    alone does: the mean field misses the noise floor, the Gaussian-input prediction the batch's structure."""
    x = two_clusters()
    for n in (256, 1024):
        r = bnmft.finite_width(phi, B, n, depth=DEPTH, samples=400, inputs=x)
        assert r.distance_source == "the given batch" and [d["layer"] for d in r.distance] == list(range(1, 16))
        predicted = np.array([d["distance"] for d in r.distance])
        sim = simulate_mlp(phi, [B], width=n, depth=DEPTH, networks=NETWORKS, seed=1, inputs=x)
        d2 = sim.runs[B].distance.numpy() ** 2
        rms = np.sqrt(d2.mean(axis=0))
        se = d2.std(axis=0, ddof=1) / np.sqrt(NETWORKS) / (2 * rms)
        assert np.all(np.abs(rms - predicted) <= 3 * se + 0.04 * predicted), (n, rms, predicted)
        mean_field = propagate(phi, x, DEPTH, samples=20_000).distance[1:]
        assert rms[-1] - mean_field[-1] > 20 * se[-1]  # the noise floor is needed deep down
        gaussian = np.array([d["distance"] for d in bnmft.fluctuations(phi, B).distance(n, DEPTH)])
        assert rms[0] - gaussian[0] > 0.5  # and the batch's own structure at the start


def test_gaussian_default_is_unchanged():
    """No inputs: the linear-noise prediction from Gaussian inputs of dimension N (Fluctuations.distance), and the
    JSON says where the distance starts."""
    r = bnmft.finite_width("relu", B, 256, depth=6, samples=400)
    assert r.distance_source == "gaussian inputs of dimension N"
    assert r.distance == fluctuations("relu", B).distance(256, 6)
    given = bnmft.finite_width("relu", B, 256, depth=6, samples=400, inputs=two_clusters()).to_dict()
    assert json.loads(json.dumps(given))["distance_source"] == "the given batch"
    # everything but the distance is the same either way
    plain = r.to_dict()
    assert {k: v for k, v in given.items() if not k.startswith("distance")} == {
        k: v for k, v in plain.items() if not k.startswith("distance")
    }


@pytest.mark.parametrize(
    "inputs,message",
    [
        (two_clusters(b=6), r"inputs must be an array of shape \(batch_size, d\) = \(8, d\).*\(6, 32\)"),
        (np.ones(8), r"inputs must be an array of shape .*\(8,\)"),
        (np.ones((8, 4, 2)), r"inputs must be an array of shape .*\(8, 4, 2\)"),
        (np.where(np.eye(8, 5) > 0, np.nan, 1.0), "inputs must be finite"),
        (np.ones((8, 5)) * 1j, "inputs must be real"),
        (np.ones((8, 5)) + np.arange(5), "inputs has no spread after centring"),
    ],
)
def test_bad_inputs(inputs, message):
    with pytest.raises(InputError, match=message):
        bnmft.finite_width("relu", B, 256, depth=4, samples=400, inputs=inputs)


def test_the_command_line_input(tmp_path, capsys):
    """--input FILE.npy: the JSON's distance is the API's; two -B values, a -B other than the file's, a file that is
    not a (B, d) array, an unreadable file and --spatial are refused (exit 2, naming --input)."""
    x = two_clusters()
    path = tmp_path / "batch.npy"
    np.save(path, x)
    base = ["finite-width", "--phi", "relu", "-N", "256", "--depth", "5", "--samples", "400"]
    assert main([*base, "-B", "8", "--input", str(path), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    api = bnmft.finite_width("relu", 8, 256, depth=5, samples=400, inputs=x)
    assert row["distance"] == api.distance and row["distance_source"] == "the given batch"
    assert main([*base, "-B", "8", "--input", str(path)]) == 0
    assert "distance to BSB1 (from the given batch)" in capsys.readouterr().out
    np.save(flat := tmp_path / "flat.npy", x.ravel())
    (junk := tmp_path / "junk.npy").write_text("not numpy")
    for argv, message in [
        (["-B", "8", "16", "--input", str(path)], "exactly one -B, equal to 8"),
        (["-B", "16", "--input", str(path)], "exactly one -B, equal to 8"),
        (["-B", "8", "--input", str(flat)], "shape (B, d)"),
        (["-B", "8", "--input", str(junk)], "cannot read"),
        (["-B", "8", "--input", str(tmp_path / "missing.npy")], "no such file"),
    ]:
        assert main([*base, *argv]) == 2
        assert message in capsys.readouterr().err, argv
    spatial = ["finite-width", "--phi", "relu", "-N", "16", "-B", "8", "--spatial", "4", "--input", str(path)]
    assert main(spatial) == 2
    assert "--input does not apply to a conv-BN stack" in capsys.readouterr().err
