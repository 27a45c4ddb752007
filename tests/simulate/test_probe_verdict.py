"""The probe's verdict against independent references (plain autograd on out-of-place copies, bnmft.theory,
bnmft.residual_theory and bnmft.design called directly), the hook fallback for models torch.fx cannot trace, and
the probe's figure."""

import math

import pytest
import torch

import bnmft
from bnmft.simulate import probe

from .test_probe import tv_model

nn = torch.nn


def unit(width: int, inplace: bool = True) -> nn.Sequential:
    """A plain unit: linear (no bias, N(0, 1/N)) -> BatchNorm1d -> ReLU."""
    lin = nn.Linear(width, width, bias=False)
    nn.init.normal_(lin.weight, 0.0, 1 / math.sqrt(width))
    return nn.Sequential(lin, nn.BatchNorm1d(width), nn.ReLU(inplace=inplace))


class LinearFirst(nn.Module):
    """x + ReLU(BN(W x)): a residual unit whose branch starts with its linear layer."""

    def __init__(self, width: int):
        super().__init__()
        self.branch = unit(width, inplace=False)

    def forward(self, x):
        return x + self.branch(x)


def bn_grad_norms(model: nn.Module, inputs: torch.Tensor, seed: int) -> dict[str, float]:
    """Independent: plain autograd, the BN outputs retained, loss sum(R * output) with R ~ N(0, 1) drawn from
    torch.Generator().manual_seed(seed) (the documented default); the dict in forward call order."""
    kept: dict[str, torch.Tensor] = {}
    names = {m: n for n, m in model.named_modules()}

    def keep(module, args, out):
        out.retain_grad()
        kept[names[module]] = out

    hooks = [m.register_forward_hook(keep) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    model.train()
    out = model(inputs)
    for h in hooks:
        h.remove()
    (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))).sum().backward()
    return {name: float(t.grad.double().pow(2).sum()) for name, t in kept.items()}


def out_of_place_twin(model: nn.Module, make) -> nn.Module:
    twin = make()
    for m in twin.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    twin.load_state_dict(model.state_dict())
    return twin


def test_verdict_growth_is_the_first_over_the_last_bn_gradient_by_plain_autograd():
    torch.manual_seed(7)
    model = tv_model("resnet", inplace=True)
    twin = tv_model("resnet", inplace=False)
    twin.load_state_dict(model.state_dict())
    x = torch.randn(8, 3, 8, 8)
    r = probe(model, x, seed=2)
    ref = bn_grad_norms(twin, x, seed=2)
    order = list(ref)  # forward call order
    first, last = order[0], order[-1]
    expected = math.log(ref[first] / ref[last])
    assert (r.growth["first"], r.growth["last"]) == (first, last)
    assert r.verdict["log_growth"] == pytest.approx(expected, rel=1e-6)
    assert r.verdict["margin"] == pytest.approx(16 - expected, rel=1e-6)
    for b in r.bn_layers:  # every log_grad_ratio against the last BN layer
        assert b["log_grad_ratio"] == pytest.approx(math.log(ref[b["name"]] / ref[last]), abs=1e-6)


@pytest.mark.parametrize("depth", [10, 40])
def test_trainable_flips_at_the_criterion_16(depth):
    # ReLU at B = 8: lambda_G = 1.788, ln 1.788 = 0.58 per layer, so 9 layers of growth give ~5 (trainable) and 39
    # give ~21 (not): the verdict must follow the measured growth across 16
    torch.manual_seed(depth)
    model = nn.Sequential(*[unit(64) for _ in range(depth)])
    x = torch.randn(8, 64)
    r = probe(model, x, seed=1)
    ref = bn_grad_norms(out_of_place_twin(model, lambda: nn.Sequential(*[unit(64) for _ in range(depth)])), x, 1)
    growth = math.log(ref["0.1"] / ref[f"{depth - 1}.1"])
    assert r.verdict["log_growth"] == pytest.approx(growth, rel=1e-6)
    assert (growth < 16) == (depth == 10)  # the two models really lie on both sides of the criterion
    assert r.verdict["trainable"] is (depth == 10)
    assert ("NOT trainable" in r.verdict["summary"]) is (depth == 40)


def sigma_w(linear: nn.Linear) -> float:
    w = linear.weight.detach().double()
    return math.sqrt(float(w.pow(2).mean()) * w.shape[1])


def test_unit_depth_and_changes_match_theory_and_design_called_directly():
    torch.manual_seed(0)
    b, width, count = 8, 64, 12
    model = nn.Sequential(*[unit(width) for _ in range(count)])
    r = probe(model, torch.randn(b, width))
    u = r.verdict["unit"]
    sw = sigma_w(model[0][0])  # the first unit's own weights: the setting of its BN layer
    assert (u["phi"], u["batch"], u["count"], u["norm_layers"], u["kind"]) == ("relu", b, count, 1, "unit")
    assert u["eps"] == 1e-5 and u["gamma"] == 1.0 and u["beta"] == 0.0 and u["sigma_w"] == pytest.approx(sw)
    t = bnmft.theory("relu", b, eps=1e-5, sigma_w=sw)
    assert u["predicted_max_depth"] == pytest.approx(t.max_trainable_depth, rel=1e-9)
    assert r.verdict["trainable"]  # 11 x ln 1.79 ~ 6.4 < 16: the planner aims at 4 x 12 units
    d = bnmft.design("relu", b, 4 * count, eps=1e-5, sigma_w=sw)
    got = [(c["knob"], c["value"], c["predicted_depth"]) for c in r.verdict["changes"]]
    want = [(o.knob, o.value, o.predicted_depth) for o in d.options if not o.at_bound]  # at_bound: no change needed
    assert len(want) >= 1
    assert [g[0] for g in got] == [w[0] for w in want]
    for (_, gv, gd), (_, wv, wd) in zip(got, want, strict=True):
        assert gv == pytest.approx(wv, rel=1e-9) and (gd is None) == (wd is None)
        assert gd is None or gd == pytest.approx(wd, rel=1e-9)


def test_residual_unit_depth_and_changes_match_residual_theory_and_design():
    torch.manual_seed(1)
    b, width, count = 16, 64, 10
    model = nn.Sequential(*[LinearFirst(width) for _ in range(count)])
    r = probe(model, torch.randn(b, width))
    u = r.verdict["unit"]
    sw = sigma_w(model[0].branch[0])
    assert (u["kind"], u["branch"], u["norm_layers"], u["count"]) == ("residual", "linear_first", 1, count)
    t = bnmft.residual_theory("relu", b, depth=count, branch="linear_first", eps=1e-5, sigma_w=sw)
    assert t.max_trainable_depth is not None
    assert u["predicted_max_depth"] == pytest.approx(t.max_trainable_depth, rel=1e-9)
    target = count if not r.verdict["trainable"] else 4 * count
    d = bnmft.design("relu", b, target, residual_network=True, branch="linear_first", eps=1e-5, sigma_w=sw)
    changes = {c["knob"]: c for c in r.verdict["changes"]}
    assert {o.knob for o in d.options if not o.at_bound} | {"zero_init_last_bn_gamma"} == set(changes)
    for o in (o for o in d.options if not o.at_bound):
        assert changes[o.knob]["value"] == pytest.approx(o.value, rel=1e-9)
        assert (changes[o.knob]["predicted_depth"] is None) == (o.predicted_depth is None)
    assert "zero_init_last_bn_gamma" in changes


class Untraceable(nn.Module):
    """Data-dependent control flow in forward: torch.fx cannot trace it."""

    def __init__(self, width: int, depth: int):
        super().__init__()
        self.body = nn.Sequential(*[unit(width) for _ in range(depth)])
        self.head = nn.Linear(width, 3)

    def forward(self, x):
        h = self.body(x)
        if h.sum() > -1e30:  # always true, but a Python bool of a traced value
            h = self.head(h)
        return h


class Traceable(Untraceable):
    def forward(self, x):
        return self.head(self.body(x))


def test_hook_fallback_for_an_untraceable_model_equals_the_traced_path():
    torch.manual_seed(4)
    model = Untraceable(32, 5)
    twin = Traceable(32, 5)
    twin.load_state_dict(model.state_dict())
    x = torch.randn(8, 32)
    fallback, traced = probe(model, x, seed=3), probe(twin, x, seed=3)
    assert not fallback.traced and traced.traced
    assert any("torch.fx cannot trace" in n and "call order" in n for n in fallback.notes)
    assert [b["name"] for b in fallback.bn_layers] == [b["name"] for b in traced.bn_layers]
    for f, t in zip(fallback.bn_layers, traced.bn_layers, strict=True):
        assert f["grad_norm_sq"] == pytest.approx(t["grad_norm_sq"], rel=1e-9)
        assert (f["phi"], f["previous"]) == (t["phi"], t["previous"])
        assert f["theory_rate"] == pytest.approx(t["theory_rate"], rel=1e-12)
    ref = bn_grad_norms(out_of_place_twin(model, lambda: Traceable(32, 5)), x, 3)
    assert {b["name"]: b["grad_norm_sq"] for b in fallback.bn_layers} == pytest.approx(ref, rel=1e-6)
    assert fallback.growth["measured"] == pytest.approx(traced.growth["measured"], rel=1e-9)


def test_layer_group_and_instance_norm_are_measured_and_say_no_theory():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                          nn.InstanceNorm2d(8, affine=True), nn.SiLU(), nn.Flatten(), nn.Linear(8 * 16, 8),
                          nn.LayerNorm(8), nn.Tanh(), nn.Linear(8, 2))  # fmt: skip
    r = probe(model, torch.randn(4, 3, 4, 4))
    norms = [row for row in r.layers if row["kind"] in ("groupnorm", "instancenorm", "layernorm")]
    assert [row["name"] for row in norms] == ["1", "4", "8"] and all(row["grad_norm_sq"] > 0 for row in norms)
    assert all(row["theory"].startswith("none") for row in norms)
    for name, kind in (("1", "groupnorm"), ("4", "instancenorm"), ("8", "layernorm")):
        assert any(n.startswith(f"{name} ({kind}): measured; no theory") for n in r.notes)


def test_plot_probe_draws_the_graph_view(tmp_path):
    from bnmft.report.plots import plot_probe

    torch.manual_seed(0)
    r = probe(tv_model("resnet", inplace=True), torch.randn(6, 3, 8, 8), draws=2)
    path = plot_probe(r, tmp_path / "probe.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 20_000


def test_a_vgg_without_blocks_is_a_plain_stack_of_its_bn_layers():
    torch.manual_seed(2)
    layers, c = [], 3
    for w in (8, "M", 16, 16, "M", 16):
        if w == "M":
            layers.append(nn.MaxPool2d(2))
            continue
        layers += [nn.Conv2d(c, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
        c = w
    model = nn.Sequential()
    model.features = nn.Sequential(*layers)
    model.flatten = nn.Flatten()
    model.classifier = nn.Sequential(nn.Linear(16 * 4, 32), nn.ReLU(True), nn.Dropout(), nn.Linear(32, 10))
    r = probe(model, torch.randn(4, 3, 8, 8))
    assert r.blocks == []  # features beside classifier: no repeated unit
    u = r.verdict["unit"]
    assert (u["kind"], u["count"], u["setting_of"], u["batch"]) == ("plain", 4, "features.12", 4 * 4)
    conv = model.features[11]  # the conv before the BN layer of the smallest batch (the largest relu rate)
    w = conv.weight.detach().double()
    t = bnmft.theory("relu", 16, eps=1e-5, sigma_w=math.sqrt(float(w.pow(2).mean()) * w[0].numel()))
    assert u["predicted_max_depth"] == pytest.approx(t.max_trainable_depth, rel=1e-9)
    assert "a plain stack of such BatchNorm layers trains to" in r.verdict["summary"]


def test_frozen_parameters_are_measured_through():
    torch.manual_seed(5)
    model = nn.Sequential(*[unit(16) for _ in range(4)], nn.Linear(16, 3))
    frozen = nn.Sequential(*[unit(16) for _ in range(4)], nn.Linear(16, 3))
    frozen.load_state_dict(model.state_dict())
    frozen.requires_grad_(False)
    x = torch.randn(8, 16)
    a, b = probe(model, x, seed=1), probe(frozen, x, seed=1, steps=1)
    assert [r["grad_norm_sq"] for r in b.bn_layers] == pytest.approx([r["grad_norm_sq"] for r in a.bn_layers])
    assert all(row["weight_grad_norm_sq"] is None for row in b.layers if row["kind"] == "linear")
    assert not any(p.requires_grad for p in frozen.parameters())  # the user's flags are left as they were
