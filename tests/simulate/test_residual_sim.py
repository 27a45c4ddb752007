"""The residual simulator against the exact residual theory (bnmft.residual_theory): within error bars plus a stated
finite-width allowance, and a deviation that shrinks like 1/N."""

import itertools
import math

import numpy as np
import pytest

from bnmft import InputError, get_nonlinearity
from bnmft.simulate import simulate_residual

WIDTH = 512
NETWORKS = 8
#: finite-width allowance at N = 512 (measured deviations: <= 4% of the log gradient ratio, tanh B = 8 K = 2
#: the largest; <= 2% of the stream variance), on top of 3 standard errors
GRAD_ALLOWANCE, VAR_ALLOWANCE = 0.05, 0.02


def check_against_theory(sim, blocks):
    for i in blocks:
        row = sim.blocks[i]
        g, gt = row["log_grad_ratio"], row["log_grad_ratio_theory"]
        assert abs(g - gt) <= 3 * row["log_grad_ratio_stderr"] + GRAD_ALLOWANCE * abs(gt) + 1e-6, (i, row)
        v, vt = row["stream_variance"], row["stream_variance_theory"]
        assert abs(v - vt) <= 3 * row["stream_variance_stderr"] + VAR_ALLOWANCE * vt, (i, row)


GRID = list(itertools.product(["relu", "tanh", "identity"], [8, 32], [1, 2], [0.3, 1.0]))


@pytest.mark.parametrize("phi, b, k, alpha", GRID)
def test_simulation_agrees_with_theory(phi, b, k, alpha):
    depth = 30
    sim = simulate_residual(
        phi, b, width=WIDTH, depth=depth, networks=NETWORKS, branch_depth=k, branch_scale=alpha, seed=11
    )
    check_against_theory(sim, [0, 5, depth // 2, depth - 3, depth])
    assert sim.blocks[depth]["log_grad_ratio"] == 0.0


def test_deep_network_agrees_with_theory():
    sim = simulate_residual("relu", 32, width=WIDTH, depth=100, networks=6, branch_depth=1, branch_scale=1.0, seed=2)
    check_against_theory(sim, [0, 25, 50, 75, 97])


@pytest.mark.parametrize(
    "phi, b, options",
    [
        ("relu", 16, dict(eps=0.1, sigma_w=1.5, branch="linear_first", branch_depth=2)),
        ("tanh", 16, dict(eps=0.5, sigma_w=0.8, gamma=1.5, beta=0.2)),
        ("relu", 32, dict(ghost_size=8, branch_scale=0.5)),
        ("relu", 8, dict(branch_scale=[1.0 / math.sqrt(i + 1) for i in range(20)], dtype="float64")),
    ],
)
def test_options_agree_with_theory(phi, b, options):
    sim = simulate_residual(phi, b, width=WIDTH, depth=20, networks=NETWORKS, seed=4, **options)
    assert sim.theory is not None
    check_against_theory(sim, [0, 10, 17])


def test_deviation_shrinks_like_one_over_width():
    """relu, B = 32, K = 2: the log-gradient deviation at block 0 fitted as c N^-p over N = 16, 32, 64 (256
    networks each) has p = 1 within 0.35 (measured N * deviation: 4.1, 4.0, 3.9, and 2.9 +- 1.0 at N = 128)."""
    widths, devs, ses = [16, 32, 64], [], []
    for n in widths:
        sim = simulate_residual("relu", 32, width=n, depth=20, networks=256, branch_depth=2, seed=5, dtype="float64")
        row = sim.blocks[0]
        devs.append(row["log_grad_ratio"] - row["log_grad_ratio_theory"])
        ses.append(row["log_grad_ratio_stderr"])
    devs, ses = np.array(devs), np.array(ses)
    assert np.all(devs > 3 * ses)  # resolved at every width
    x, y, w = np.log(widths), np.log(devs), (devs / ses) ** 2  # weights: 1 / var(log dev)
    xm, ym = np.sum(w * x) / w.sum(), np.sum(w * y) / w.sum()
    slope = np.sum(w * (x - xm) * (y - ym)) / np.sum(w * (x - xm) ** 2)
    slope_se = 1 / math.sqrt(np.sum(w * (x - xm) ** 2))
    assert abs(-slope - 1) < 0.35, (slope, slope_se)
    assert abs(-slope - 0.5) > 3 * slope_se  # and not the 1/sqrt(N) of a noise floor


def test_same_seed_same_numbers_and_tidy_rows():
    kw = dict(width=64, depth=6, networks=3, branch_depth=2, branch_scale=0.5, seed=9)
    a, b = simulate_residual("tanh", 8, **kw), simulate_residual("tanh", 8, **kw)
    assert a.blocks == b.blocks
    rows = a.rows()
    assert len(rows) == 3 * 7
    keys = {"phi", "batch_size", "width", "depth", "eps", "branch_depth", "network", "block", "log_grad"}
    assert keys <= set(rows[0])
    assert rows[0]["branch_scale"] == 0.5 and rows[6]["branch_scale"] is None


def test_detached_statistics_run_without_theory():
    sim = simulate_residual("relu", 8, width=64, depth=6, networks=3, detach_stats=True)
    assert sim.theory is None and all(math.isfinite(r["log_grad_ratio"]) for r in sim.blocks)


def test_alpha_relu_goes_through_a_nonlinearity():
    sim = simulate_residual(get_nonlinearity("alpha_relu", alpha=1.5), 8, width=128, depth=8, networks=4)
    assert sim.theory is not None and sim.config.simulation.phi.startswith("alpha_relu")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(branch_scale=-0.5), "branch_scale"),
        (dict(branch_scale=[1.0]), "branch_scale"),
        (dict(branch="post"), "branch"),
        (dict(branch_depth=0), "branch_depth"),
        (dict(placement="after"), "placement"),
        (dict(ghost_size=3), "ghost_size"),
        (dict(input_variance=-1.0), "input_variance"),
        (dict(width=0), "width"),
    ],
)
def test_bad_input_names_the_argument(kwargs, match):
    args = dict(width=32, depth=4, networks=2)
    args.update(kwargs)
    with pytest.raises(InputError, match=match):
        simulate_residual("relu", 8, **args)
