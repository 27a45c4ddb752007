"""The conv-BN simulator against the spatial mean field (bnmft.conv_theory): within error bars plus a stated
finite-channel allowance."""

import math

import pytest

from bnmft import InputError, conv_theory
from bnmft.simulate import simulate_conv

#: finite-channel allowance on lambda_G: 2% at C = 256 (measured: periodic relu B = 2, 4x4: +0.9% +- 0.3%)
ALLOWANCE = 0.02


@pytest.mark.parametrize(
    "phi, b, spatial, kernel, extra",
    [
        ("relu", 2, (4, 4), 3, {}),
        ("tanh", 2, (4, 4), 3, {}),
        ("relu", 4, (8,), 5, {}),
        ("relu", 2, (4, 4), 3, {"eps": 0.5, "sigma_w": 1.3}),
        ("relu", 4, (4, 4), 3, {"ghost_size": 2}),
    ],
)
def test_periodic_padding_agrees_with_the_mlp_at_batch_times_positions(phi, b, spatial, kernel, extra):
    sim = simulate_conv(phi, b, spatial=spatial, channels=256, depth=24, networks=8, kernel=kernel, seed=2, **extra)
    s = sim.summary
    group = extra.get("ghost_size", b)
    assert (
        s["lambda_G_theory"]
        == conv_theory(
            phi, group, spatial=spatial, kernel=kernel, eps=extra.get("eps", 0.0), sigma_w=extra.get("sigma_w", 1.0)
        ).lambda_G
    )
    assert abs(s["lambda_G_mean"] - s["lambda_G_theory"]) < 3 * s["lambda_G_stderr"] + ALLOWANCE * s["lambda_G_theory"]
    if not extra:  # c* between any two (example, position) pairs of one BN batch, within an image or across
        for key in ("c_space", "c_batch"):
            assert abs(s[f"{key}_mean"] - s["c_star_theory"]) < 3 * s[f"{key}_stderr"] + 0.01


def test_zero_padding_agrees_with_its_mean_field():
    sim = simulate_conv("relu", 2, spatial=(4, 4), channels=256, depth=24, networks=8, padding="zero", seed=1)
    s = sim.summary
    t = conv_theory("relu", 2, spatial=(4, 4), padding="zero")
    assert s["lambda_G_theory"] == pytest.approx(t.lambda_G)
    se = math.hypot(s["lambda_G_stderr"], t.lambda_G_stderr)
    assert abs(s["lambda_G_mean"] - t.lambda_G) < 3 * se + ALLOWANCE * t.lambda_G
    # and it is not the periodic value
    assert t.lambda_G < t.mlp_lambda_G - 0.05


def test_tidy_rows_and_same_seed_same_numbers():
    kw = dict(spatial=(4, 4), channels=16, depth=6, networks=3, seed=5, window_start=1)
    a, b = simulate_conv("relu", 2, **kw), simulate_conv("relu", 2, **kw)
    assert a.summary == b.summary
    rows = a.rows()
    assert len(rows) == 3 * 6
    assert {"phi", "batch_size", "channels", "spatial", "kernel", "padding", "network", "layer", "log_grad_h"} <= set(
        rows[0]
    )
    assert rows[0]["spatial"] == "4x4" and rows[0]["channels"] == 16


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(kernel=4), "odd"),
        (dict(kernel=7, spatial=(4, 4)), "larger than the image"),
        (dict(padding="reflect"), "padding"),
        (dict(spatial=(0, 4)), "spatial"),
        (dict(spatial="4y4"), "spatial"),
        (dict(channels=0), "width"),
        (dict(init="orthogonal"), "unknown option"),
        (dict(ghost_size=3), "ghost_size"),
    ],
)
def test_bad_input(kwargs, match):
    args = dict(spatial=(4, 4), channels=8, depth=6, networks=2)
    args.update(kwargs)
    with pytest.raises(InputError, match=match):
        simulate_conv("relu", 2, **args)
