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


# --- torchvision layouts built from torch layers (no torchvision): in-place ReLU, residual additions in place,
# downsample shortcuts, dense concatenation, inverted residuals with ReLU6 and depthwise convolutions


class BasicBlock(torch.nn.Module):
    def __init__(self, i, o, stride, inplace):
        super().__init__()
        nn, self.inplace = torch.nn, inplace
        self.conv1, self.bn1 = nn.Conv2d(i, o, 3, stride, 1, bias=False), nn.BatchNorm2d(o)
        self.relu = nn.ReLU(inplace=inplace)
        self.conv2, self.bn2 = nn.Conv2d(o, o, 3, 1, 1, bias=False), nn.BatchNorm2d(o)
        self.downsample = None
        if stride != 1 or i != o:
            self.downsample = nn.Sequential(nn.Conv2d(i, o, 1, stride, bias=False), nn.BatchNorm2d(o))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        if self.inplace:
            out += identity
        else:
            out = out + identity
        return self.relu(out)


class Bottleneck(torch.nn.Module):
    def __init__(self, i, o, stride, inplace):
        super().__init__()
        nn, self.inplace = torch.nn, inplace
        self.conv1, self.bn1 = nn.Conv2d(i, o, 1, bias=False), nn.BatchNorm2d(o)
        self.conv2, self.bn2 = nn.Conv2d(o, o, 3, stride, 1, bias=False), nn.BatchNorm2d(o)
        self.conv3, self.bn3 = nn.Conv2d(o, 4 * o, 1, bias=False), nn.BatchNorm2d(4 * o)
        self.relu = nn.ReLU(inplace=inplace)
        self.downsample = None
        if stride != 1 or i != 4 * o:
            self.downsample = nn.Sequential(nn.Conv2d(i, 4 * o, 1, stride, bias=False), nn.BatchNorm2d(4 * o))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn3(self.conv3(self.relu(self.bn2(self.conv2(out)))))
        if self.inplace:
            out += identity
        else:
            out = out + identity
        return self.relu(out)


class DenseLayer(torch.nn.Module):
    def __init__(self, i, growth, inplace):
        super().__init__()
        nn = torch.nn
        self.norm1, self.relu1 = nn.BatchNorm2d(i), nn.ReLU(inplace=inplace)
        self.conv1 = nn.Conv2d(i, 2 * growth, 1, bias=False)
        self.norm2, self.relu2 = nn.BatchNorm2d(2 * growth), nn.ReLU(inplace=inplace)
        self.conv2 = nn.Conv2d(2 * growth, growth, 3, 1, 1, bias=False)

    def forward(self, features):
        x = torch.cat(features, 1)
        return self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))


class DenseBlock(torch.nn.ModuleDict):
    def __init__(self, layers, i, growth, inplace):
        super().__init__()
        for k in range(layers):
            self[f"denselayer{k + 1}"] = DenseLayer(i + k * growth, growth, inplace)

    def forward(self, x):
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class InvertedResidual(torch.nn.Module):
    def __init__(self, i, o, stride, expand, inplace):
        super().__init__()
        nn, hidden = torch.nn, i * expand
        self.use_res = stride == 1 and i == o
        self.conv = nn.Sequential(
            nn.Conv2d(i, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=inplace),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=inplace), nn.Conv2d(hidden, o, 1, bias=False), nn.BatchNorm2d(o),
        )  # fmt: skip

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


def tv_model(kind: str, inplace: bool) -> torch.nn.Module:
    nn = torch.nn
    stem = [nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=inplace)]
    if kind == "resnet":
        body = [nn.Sequential(BasicBlock(8, 8, 1, inplace), BasicBlock(8, 8, 1, inplace)),
                nn.Sequential(BasicBlock(8, 16, 2, inplace), BasicBlock(16, 16, 1, inplace))]  # fmt: skip
        c = 16
    elif kind == "bottleneck":
        body = [nn.Sequential(Bottleneck(8, 4, 1, inplace), Bottleneck(16, 4, 1, inplace)),
                nn.Sequential(Bottleneck(16, 8, 2, inplace), Bottleneck(32, 8, 1, inplace))]  # fmt: skip
        c = 32
    elif kind == "densenet":
        body = [
            DenseBlock(3, 8, 4, inplace),
            nn.BatchNorm2d(20),
            nn.ReLU(inplace=inplace),
            nn.Conv2d(20, 8, 1),
            nn.AvgPool2d(2),
            DenseBlock(3, 8, 4, inplace),
            nn.BatchNorm2d(20),
            nn.ReLU(inplace=inplace),
        ]
        c = 20
    else:  # mobilenet
        body = [InvertedResidual(8, 8, 1, 4, inplace), InvertedResidual(8, 12, 2, 4, inplace),
                InvertedResidual(12, 12, 1, 4, inplace), nn.Conv2d(12, 16, 1, bias=False), nn.BatchNorm2d(16),
                nn.ReLU6(inplace=inplace)]  # fmt: skip
        c = 16
    return nn.Sequential(*stem, *body, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.0), nn.Linear(c, 10))


def reference_grad_norms(model: torch.nn.Module, inputs: torch.Tensor, seed: int) -> dict[str, float]:
    """Independent: plain autograd on an out-of-place model, retained BN outputs, the documented default loss
    sum(R * output) with R ~ N(0, 1) from torch.Generator().manual_seed(seed)."""
    kept = {}
    names = {m: n for n, m in model.named_modules()}

    def keep(module, args, out):
        out.retain_grad()
        kept[names[module]] = out

    hooks = [m.register_forward_hook(keep) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    model.train()
    out = model(inputs)
    for h in hooks:
        h.remove()
    r = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
    (out * r).sum().backward()
    return {name: float(t.grad.double().pow(2).sum()) for name, t in kept.items()}


def snapshot(model: torch.nn.Module):
    return ({k: v.clone() for k, v in model.state_dict().items()}, [m.training for m in model.modules()],
            [p.grad for p in model.parameters()])  # fmt: skip


@pytest.mark.parametrize("kind", ["resnet", "bottleneck", "densenet", "mobilenet"])
def test_in_place_torchvision_layouts_measure_autograd_and_leave_the_model_alone(kind):
    torch.manual_seed(3)
    model = tv_model(kind, inplace=True).eval()  # an eval-mode model, as a user would hand it over
    twin = tv_model(kind, inplace=False)
    twin.load_state_dict(model.state_dict())
    x = torch.randn(6, 3, 8, 8)
    before = snapshot(model)
    r = probe(model, x, seed=5)
    after = snapshot(model)
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0])  # weights, buffers, running statistics
    assert before[1] == after[1] and not model.training and all(g is None for g in after[2])
    ref = reference_grad_norms(twin, x, seed=5)
    got = {b["name"]: b["grad_norm_sq"] for b in r.bn_layers}
    assert set(got) == set(ref) and len(ref) >= 5
    for name in ref:
        assert got[name] == pytest.approx(ref[name], rel=1e-5), name
    assert r.traced and r.growth["measured"] == pytest.approx(math.log(ref[r.growth["first"]] / ref[r.growth["last"]]),
                                                              rel=1e-5)  # fmt: skip
    assert all(b["phi"] is not None for b in r.bn_layers)
    if kind == "mobilenet":
        inside = {b["phi"] for b in r.bn_layers if b["name"][0] in "345"}  # the inverted residuals
        assert inside == {"min(max(z, 0), 6)", "identity"}  # ReLU6 (in place); the linear bottleneck
    if kind in ("resnet", "bottleneck"):
        # the downsample BN is paired with the BN upstream along the graph, not with the parallel branch's
        down = [b for b in r.bn_layers if "downsample" in b["name"]][-1]  # in the second stage
        assert down["previous"] == ("3.1.bn2" if kind == "resnet" else "3.1.bn3")
        assert {b["kind"] for b in r.blocks if b["level"] == "block"} == {"residual"}
        assert {b["name"] for b in r.blocks if b["level"] == "stage"} == {"3", "4"}


def test_theory_rate_is_the_fixed_point_and_draws_give_error_bars():
    r = probe(lambda: mlp(64, 6), torch.randn(32, 64), draws=4)
    theory = bnmft.theory("relu", 32, eps=1e-5).lambda_G
    assert all(b["theory_rate"] == pytest.approx(theory, rel=1e-6) for b in r.bn_layers)
    assert r.draws == 4 and r.growth["measured_stderr"] > 0
    assert all(b["measured_rate_stderr"] > 0 for b in r.bn_layers[1:])
    v = r.verdict
    assert v["trainable"] == (r.growth["measured"] <= 16) and v["margin"] == pytest.approx(16 - r.growth["measured"])


def test_functional_activations_and_no_normalisation_layer():
    class Functional(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.bn, self.b = torch.nn.Linear(8, 16), torch.nn.BatchNorm1d(16), torch.nn.Linear(16, 4)

        def forward(self, x):
            return self.b(torch.nn.functional.leaky_relu(self.bn(self.a(x)), 0.2))

    r = probe(Functional(), torch.randn(8, 8))
    assert r.bn_layers[0]["phi"] == "leaky_relu" and r.bn_layers[0]["phi_params"] == {"slope": 0.2}
    plain = probe(torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)), torch.randn(4, 8))
    assert [row["kind"] for row in plain.layers] == ["linear", "linear"] and all(row["grad_norm_sq"] > 0
                                                                                for row in plain.layers)  # fmt: skip
    assert any("no normalisation layer" in n for n in plain.notes)
    with pytest.raises(InputError, match="batch size: 1"):
        probe(mlp(8, 2), torch.randn(1, 8))
    with pytest.raises(InputError, match="forward raised RuntimeError"):
        probe(mlp(8, 2), torch.randn(4, 9))
