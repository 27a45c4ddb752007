"""The depth planner: each knob it returns puts the theory's trainable depth at the target, and no more nonlinear
setting of that knob reaches it."""

import math

import pytest

import bnmft
from bnmft import InputError, design


def test_plain_tanh_gamma_and_eps_sit_on_the_target():
    d = design("tanh", 16, 120)
    opts = {o.knob: o for o in d.options}
    assert set(opts) == {"gamma", "eps"}
    g = opts["gamma"].value
    assert bnmft.theory("tanh", 16, gamma=g).max_trainable_depth == pytest.approx(120, rel=1e-3)
    assert bnmft.theory("tanh", 16, gamma=g * 1.01).max_trainable_depth < 120  # more nonlinear: too shallow
    e = opts["eps"].value
    assert bnmft.theory("tanh", 16, eps=e).max_trainable_depth == pytest.approx(120, rel=1e-3)
    assert bnmft.theory("tanh", 16, eps=e * 0.99).max_trainable_depth < 120


def test_plain_relu_beta():
    d = design("relu", 32, 80)
    beta = next(o.value for o in d.options if o.knob == "beta")
    assert bnmft.theory("relu", 32, beta=beta).max_trainable_depth == pytest.approx(80, rel=1e-3)
    assert "eps" in d.unreachable  # relu's weight-gradient rate never drops to 1 (docs/theory.md 6.4)


def test_a_reachable_default_is_reported_at_the_bound():
    d = design("relu", 32, 20)  # relu at B = 32 already trains 38 layers: beta = 0 and eps = 0 are enough
    opts = {o.knob: o for o in d.options}
    assert opts["beta"].value == 0.0 and opts["beta"].at_bound
    assert opts["eps"].value == 0.0 and opts["eps"].at_bound


def test_residual_alpha_puts_the_gradient_growth_at_e16():
    d = design("relu", 4, 100, residual_network=True, branch_depth=2)
    alpha = next(o.value for o in d.options if o.knob == "branch_scale")
    r = bnmft.residual_theory("relu", 4, depth=100, branch_depth=2, branch_scale=alpha)
    assert r.blocks[0]["log_grad_ratio"] == pytest.approx(16.0, abs=0.01)
    assert (
        bnmft.residual_theory("relu", 4, depth=100, branch_depth=2, branch_scale=alpha * 1.01).blocks[0][
            "log_grad_ratio"
        ]
        > 16
    )


def test_affine_phi_only_has_eps():
    d = design("identity", 8, 50)
    assert [o.knob for o in d.options] == ["eps"] or "eps" in d.unreachable


def test_unreachable_depth_is_a_clear_error():
    with pytest.raises(InputError, match="no setting reaches depth 2000"):
        design("relu", 4, 2000)
    with pytest.raises(InputError, match="knobs"):
        design("relu", 8, 20, knobs=["branch_scale"])
    with pytest.raises(InputError, match="finite"):
        design("relu", math.inf, 20)
