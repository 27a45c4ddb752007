"""bnmft.probe on models built from standard torch layers: the package's own MLP, residual and conv networks (where
it must agree with the simulator and the theory) and a small VGG-style conv-BN net."""

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

import bnmft
from bnmft import InputError
from bnmft.simulate import probe, simulate_mlp


def mlp(width: int, depth: int, phi=torch.nn.ReLU) -> torch.nn.Sequential:
    """The paper's network in torch layers: linear (no bias, N(0, 1/N)) -> BatchNorm1d -> phi."""
    layers = []
    for _ in range(depth):
        lin = torch.nn.Linear(width, width, bias=False)
        torch.nn.init.normal_(lin.weight, 0.0, 1 / math.sqrt(width))
        layers += [lin, torch.nn.BatchNorm1d(width), phi()]
    return torch.nn.Sequential(*layers)


class Block(torch.nn.Module):
    def __init__(self, width: int, alpha: float):
        super().__init__()
        self.alpha = alpha
        self.branch = torch.nn.Sequential(
            torch.nn.BatchNorm1d(width), torch.nn.ReLU(), torch.nn.Linear(width, width, bias=False)
        )
        torch.nn.init.normal_(self.branch[2].weight, 0.0, 1 / math.sqrt(width))

    def forward(self, x):
        return x + self.alpha * self.branch(x)


def test_mlp_rates_agree_with_the_simulator_and_the_theory():
    torch.manual_seed(0)
    rates, local = [], []
    for seed in range(3):
        torch.manual_seed(seed)
        r = probe(mlp(256, 24), torch.randn(32, 256), seed=seed)
        rates += [b["measured_rate"] for b in r.bn_layers[8:-3]]
        local += [b["theory_rate"] for b in r.bn_layers[8:-3]]
        assert all(b["phi"] == "relu" and b["batch"] == 32 for b in r.bn_layers)
    theory = bnmft.theory("relu", 32).lambda_G
    # the theory at each layer's measured state: lambda_G up to the finite-width noise of the measured variance
    assert np.mean(local) == pytest.approx(theory, rel=0.01)
    sim = simulate_mlp("relu", [32], width=256, depth=24, networks=10, seed=0).summaries[0]
    mean, se = np.mean(rates), np.std(rates, ddof=1) / math.sqrt(len(rates))
    assert abs(mean - sim.lambda_G_mean) < 4 * math.hypot(se, sim.lambda_G_stderr) + 0.03 * theory


def test_residual_blocks_follow_the_residual_theory():
    width, depth, b = 256, 16, 16
    logs = []
    for seed in range(3):
        torch.manual_seed(seed)
        model = torch.nn.Sequential(*[Block(width, 1.0) for _ in range(depth)])
        r = probe(model, torch.randn(b, width), seed=seed)
        assert len(r.bn_layers) == depth
        logs.append(sum(math.log(x["measured_rate"]) for x in r.bn_layers[1:]))
    # ||dL/d BN_l out||^2 is proportional to E||dL/dx^(l+1)||^2: the sum of the logs is ln of the stream's
    # gradient ratio between blocks 1 and D (docs/residual.md)
    t = bnmft.residual_theory("relu", b, depth=depth)
    expected = t.blocks[1]["log_grad_ratio"] - t.blocks[depth]["log_grad_ratio"]
    assert np.mean(logs) == pytest.approx(expected, rel=0.1)


def test_conv_probe_uses_batch_times_positions_and_agrees():
    torch.manual_seed(1)
    c, layers = 64, []
    for i in range(10):
        conv = torch.nn.Conv2d(3 if i == 0 else c, c, 3, padding=1, padding_mode="circular", bias=False)
        layers += [conv, torch.nn.BatchNorm2d(c), torch.nn.ReLU()]
    r = probe(torch.nn.Sequential(*layers), torch.randn(4, 3, 8, 8))
    assert {b["batch"] for b in r.bn_layers} == {4 * 64}
    rates = [b["measured_rate"] for b in r.bn_layers[3:-2]]
    theory = bnmft.conv_theory("relu", 4, spatial=(8, 8)).lambda_G
    assert np.mean([b["theory_rate"] for b in r.bn_layers[3:-2]]) == pytest.approx(theory, rel=0.03)
    assert np.mean(rates) == pytest.approx(theory, rel=0.05)


def test_vgg_style_net_from_standard_layers_and_steps(tmp_path):
    torch.manual_seed(0)
    layers, c = [], 3
    for i, w in enumerate([16, 16, 32, 32]):
        layers += [torch.nn.Conv2d(c, w, 3, padding=1), torch.nn.BatchNorm2d(w), torch.nn.ReLU()]
        c = w
        if i % 2:
            layers.append(torch.nn.MaxPool2d(2))
    model = torch.nn.Sequential(*layers, torch.nn.Flatten(), torch.nn.Linear(32 * 4 * 4, 10))
    r = probe(model, torch.randn(8, 3, 16, 16), steps=2, lr=0.05)
    kinds = [row["kind"] for row in r.layers if row["step"] == 0]
    assert kinds.count("conv") == 4 and kinds.count("batchnorm") == 4 and kinds.count("linear") == 1
    assert [b["batch"] for b in r.bn_layers] == [8 * 256, 8 * 256, 8 * 64, 8 * 64]
    assert r.bn_layers[0]["measured_rate"] is None and all(b["measured_rate"] > 0 for b in r.bn_layers[1:])
    assert {row["step"] for row in r.layers} == {0, 2}
    after = [row for row in r.layers if row["step"] == 2 and row["kind"] == "conv"]
    before = [row for row in r.layers if row["step"] == 0 and row["kind"] == "conv"]
    assert any(a["weight_norm_sq"] != b_["weight_norm_sq"] for a, b_ in zip(after, before, strict=True))
    # a loss of the user's
    r2 = probe(model, torch.randn(8, 3, 16, 16), loss=lambda out: out.pow(2).mean())
    assert all(row["grad_norm_sq"] > 0 for row in r2.layers)


def test_layer_and_group_norm_are_recorded_without_a_theory_rate():
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8), torch.nn.Tanh(), torch.nn.Linear(8, 8))
    r = probe(model, torch.randn(4, 8))
    assert [row["kind"] for row in r.layers] == ["linear", "layernorm", "linear"] and r.bn_layers == []


def test_bad_input():
    with pytest.raises(InputError, match=r"torch\.nn\.Module"):
        probe("not a model", torch.randn(4, 8))
    with pytest.raises(InputError, match="no BatchNorm"):
        probe(torch.nn.Sequential(torch.nn.ReLU()), torch.randn(4, 8))
    with pytest.raises(InputError, match="steps"):
        probe(mlp(8, 2), torch.randn(4, 8), steps=-1)


def test_cli_probe_on_a_users_module(tmp_path):
    (tmp_path / "mynet.py").write_text(
        "import torch\n\ndef make():\n    nn = torch.nn\n"
        "    return nn.Sequential(nn.Linear(20, 64), nn.BatchNorm1d(64), "
        "nn.ReLU(), nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 3))\n"
    )
    run = [sys.executable, "-m", "bnmft.cli", "probe", "--model", "mynet:make", "-B", "16"]
    done = subprocess.run([*run, "--json", "--plot", "p.png"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    import json

    out = json.loads(done.stdout)
    assert [x["name"] for x in out["bn_layers"]] == ["1", "4"]
    assert {"name", "kind", "grad_norm_sq"} <= set(out["layers"][0])
    assert {"name", "measured_rate", "theory_rate"} <= set(out["bn_layers"][1])
    assert (tmp_path / "p.png").stat().st_size > 0
    bad = subprocess.run(
        [*run[:-2], "-B", "16", "--model", "mynet:missing"], cwd=tmp_path, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "missing" in bad.stderr
