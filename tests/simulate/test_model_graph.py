"""The whole-model mean-field prediction (bnmft.meanfield.graph through bnmft.simulate.predict_model) against the
engine's exact rate where the graph is the paper's MLP, and against the probe's measurements (means over draws)
on torchvision-style models - the accuracy the docs (docs/graph.md) state."""

import itertools
import math

import pytest
import torch

import bnmft
from bnmft.cli import main
from bnmft.errors import InputError
from bnmft.simulate.model_graph import predict_model
from bnmft.simulate.model_probe import probe
from bnmft.simulate.model_zoo import ZOO


def mlp(depth: int, width: int = 256) -> torch.nn.Sequential:
    layers: list[torch.nn.Module] = []
    for i in range(depth):
        layers += [torch.nn.Linear(width if i else 32, width, bias=False), torch.nn.BatchNorm1d(width), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers, torch.nn.Linear(width, 10))


@pytest.mark.parametrize("batch", [8, 16, 64])
def test_plain_bn_mlp_steps_are_the_engines_lambda_G(batch):
    """Linear -> BN -> ReLU: every step back one BN layer multiplies the squared gradient by the engine's exact
    lambda_G(B) (the finite-batch factor times the large-batch rule E[phi'^2] / Var[phi])."""
    torch.manual_seed(0)
    prediction, _ = predict_model(mlp(8), (32,), batch)
    ratios = [n["log_grad_ratio"] for n in prediction.norm_layers]
    steps = [a - b for a, b in itertools.pairwise(ratios)]
    expected = math.log(bnmft.theory("relu", batch).lambda_G)
    assert steps[1:] == pytest.approx([expected] * (len(steps) - 1), rel=0.02)


def test_forward_variances_match_the_probe_layer_by_layer():
    """Every BN layer's input variance (the conv output's channel variance) as measured, with zero padding."""
    torch.manual_seed(0)
    model = ZOO["vgg11_bn"]()
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    measured = {r["name"]: r["channel_var"] for r in probe(model, x).layers if r["kind"] == "conv"}
    prediction, _ = predict_model(model, (3, 32, 32), 16)
    predicted = {t["name"]: t["channel_var"] for t in prediction.tensors if t["kind"] == "weight"}
    for name, value in measured.items():
        assert predicted[name] == pytest.approx(value, rel=0.15), name


def test_zero_padding_on_a_2x2_image_against_the_probe():
    """relu -> 3x3 conv (zero padding) on 2x2 images -> BN: the mean leaking through the taps that see the image
    raises the conv output's variance; the predicted gradient ratio agrees with the measured one."""

    class Chain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bn0 = torch.nn.BatchNorm2d(128)
            self.conv = torch.nn.Conv2d(128, 128, 3, padding=1, bias=False)
            torch.nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
            self.bn1 = torch.nn.BatchNorm2d(128)

        def forward(self, x):
            return self.bn1(self.conv(torch.relu(self.bn0(x))))

    x = torch.randn(32, 128, 2, 2, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    r = probe(Chain, x, draws=6)
    assert r.growth["predicted"] == pytest.approx(r.growth["measured"], abs=4 * r.growth["measured_stderr"] + 0.02)


@pytest.mark.parametrize("name,batch", [("resnet18", 8), ("resnet18", 32), ("vgg11_bn", 32), ("resnet50", 32)])
def test_zoo_models_within_the_stated_accuracy(name, batch):
    """The issue's target: total ln growth within 10% of the measured (mean of 4 draws), every BN layer's ln ratio
    within 10% of the total + 0.3."""
    x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    r = probe(ZOO[name], x, draws=4, seed=0)
    measured = r.growth["measured"]
    assert r.growth["predicted"] == pytest.approx(measured, rel=0.10)
    for b in r.bn_layers:
        assert abs(b["predicted_log_grad_ratio"] - b["log_grad_ratio"]) <= 0.1 * measured + 0.3, b["name"]


def test_a_layernorm_blocks_the_prediction_with_a_reason():
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    prediction, notes = predict_model(model, (8,), 8)
    assert prediction is None
    assert any("LayerNorm" in n and "no mean-field rule" in n for n in notes)


def test_bad_arguments_are_input_errors():
    with pytest.raises(InputError, match="batch_size"):
        predict_model(mlp(2), (32,), 1)
    with pytest.raises(InputError, match="input_shape"):
        predict_model(mlp(2), (31,), 8)
    with pytest.raises(InputError, match="model"):
        predict_model("resnet", (3, 32, 32), 8)


def test_predict_command_json(capsys):
    code = main(["predict", "--model", "bnmft.simulate.model_zoo:resnet18", "--input-shape", "3x32x32", "-B", "8",
                 "--json"])  # fmt: skip
    import json

    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["growth"]["first"] == "bn1" and out["growth"]["last"] == "layer4.1.bn2"
    assert 3.5 < out["growth"]["predicted"] < 7
    assert out["verdict"]["source"] == "predicted" and out["verdict"]["trainable"] is True
    assert len(out["bn_layers"]) == 20 and out["bn_layers"][-1]["predicted_log_grad_ratio"] == 0.0
    # the probe's verdict from the prediction alone: the repeated residual unit and the planner's changes
    unit = out["verdict"]["unit"]
    assert unit["class"] == "BasicBlock" and unit["kind"] == "residual" and unit["branch"] == "linear_first"
    assert unit["setting_of"] == "layer1.0.bn1" and unit["batch"] == 8 * 8 * 8
    assert "zero_init_last_bn_gamma" in [c["knob"] for c in out["verdict"]["changes"]]
    # the last BN layer (1x1 images, B = 8): relu after it, the fixed-point lambda_G at its batch x positions
    assert out["bn_layers"][-1]["theory_rate"] == pytest.approx(bnmft.theory("relu", 8).lambda_G, rel=1e-4)  # eps 1e-5


def test_collapsed_phase_vgg_stack_is_predicted():
    """eps = 1 (BN's collapsed phase: vanishing gradients) in the VGG-style stack of the paper's appendix: channels
    whose fluctuations vanish carry no correlation (they once made a NaN); the prediction follows the measured
    vanishing (measured here -5.55 at depth 4, predicted -5.61; the per-layer theory -5.31)."""
    from bnmft.simulate.vgg import vgg_stack

    torch.manual_seed(0)
    model = vgg_stack(4, 8, 0.0, 1.0, 8)
    x = torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    r = probe(model, x)
    assert r.growth["predicted"] == pytest.approx(r.growth["measured"], abs=0.1 * abs(r.growth["measured"]) + 0.3)
    assert r.growth["measured"] < -3
