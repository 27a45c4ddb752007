"""The conditional sampler (issue 14): the same networks in distribution as drawing every weight matrix, at
O(N B^2) per layer, so widths far past the dense path's reach."""

import math

import numpy as np
import pytest

from bnmft import InputError
from bnmft.simulate import simulate_mlp


def _agree(a, b, name, k=4.0, slack=0.0):
    ma, sa = getattr(a, f"{name}_mean"), getattr(a, f"{name}_stderr")
    mb, sb = getattr(b, f"{name}_mean"), getattr(b, f"{name}_stderr")
    assert abs(ma - mb) <= k * math.hypot(sa, sb) + slack, (name, ma, sa, mb, sb)


@pytest.mark.parametrize(
    "phi, batch_sizes, options",
    [
        ("relu", [8, 32], {}),
        ("tanh", [16], {"eps": 0.3}),
        ("relu", [16], {"ghost_size": 4}),
        ("gelu", [8], {"placement": "after", "detach_stats": True}),
        ("relu", [8], {"two_batches": True}),
    ],
)
def test_conditional_agrees_with_dense_in_distribution(phi, batch_sizes, options):
    kw = dict(width=192, depth=20, networks=30, dtype="float64", **options)
    dense = simulate_mlp(phi, batch_sizes, seed=1, sampler="dense", **kw)
    cond = simulate_mlp(phi, batch_sizes, seed=2, sampler="conditional", **kw)
    for a, b in zip(dense.summaries, cond.summaries, strict=True):
        for name in ("lambda_G", "lambda_W", "c_star", "q_star"):
            _agree(a, b, name)
    # the per-layer log gradient norms (log-space bookkeeping) agree layer by layer
    for b_ in batch_sizes:
        ld, lc = dense.runs[b_].log_grad_h.numpy(), cond.runs[b_].log_grad_h.numpy()
        diff = ld.mean(0) - lc.mean(0)
        se = np.sqrt(ld.var(0, ddof=1) / len(ld) + lc.var(0, ddof=1) / len(lc))
        assert np.all(np.abs(diff) <= 4.5 * se + 1e-9)
    if options.get("two_batches"):
        cd, cc = dense.runs[8].cross.numpy(), cond.runs[8].cross.numpy()
        assert abs(cd[:, 5].mean() - cc[:, 5].mean()) < 4 * math.hypot(cd[:, 5].std() / 5.4, cc[:, 5].std() / 5.4)


def test_rank_deficient_inputs_are_exact():
    """A linear BN network keeps rank-deficient batches rank-deficient; the conditional path must too (Q spans
    more than col(X) - still exact)."""
    rng = np.random.default_rng(0)
    base = rng.standard_normal((3, 64))
    inputs = rng.standard_normal((8, 3)) @ base  # 8 examples of rank 3
    kw = dict(width=64, depth=8, networks=20, inputs=inputs, window_start=2, dtype="float64")
    dense = simulate_mlp("identity", [8], seed=1, **kw).summaries[0]
    cond = simulate_mlp("identity", [8], seed=2, sampler="conditional", **kw).summaries[0]
    for name in ("q_star", "c_star", "lambda_G"):
        _agree(dense, cond, name)


def test_a_width_the_dense_path_cannot_reach():
    """Width 16384 (dense: 16384^2 x 12 weights per network, 13 GB in float32): the theory to 1%."""
    r = simulate_mlp("relu", [8], width=16384, depth=12, networks=3, seed=0, sampler="conditional", window_start=4)
    s = r.summaries[0]
    assert abs(s.lambda_G_mean - s.lambda_G_theory) < 3 * s.lambda_G_stderr + 0.01 * s.lambda_G_theory
    assert abs(s.c_star_mean - s.c_star_theory) < 3 * s.c_star_stderr + 0.002


def test_same_seed_same_numbers_and_bad_input():
    kw = dict(width=32, depth=8, networks=3, seed=4, sampler="conditional")
    a, b = simulate_mlp("relu", [8], **kw), simulate_mlp("relu", [8], **kw)
    assert a.summaries == b.summaries
    with pytest.raises(InputError, match="sampler"):
        simulate_mlp("relu", [8], width=32, depth=8, networks=2, sampler="magic")
    with pytest.raises(InputError, match=r"orthogonal.*width >= 2 x rows"):
        simulate_mlp("relu", [8], width=12, depth=8, networks=2, sampler="conditional", init="orthogonal")
    with pytest.raises(InputError, match="square layers"):
        inputs = np.random.default_rng(0).standard_normal((8, 20))
        simulate_mlp(
            "relu", [8], width=32, depth=8, networks=2, sampler="conditional", init="orthogonal", inputs=inputs
        )


def test_residual_networks_with_the_conditional_sampler():
    from bnmft.simulate import simulate_residual

    kw = dict(width=256, depth=15, networks=12, branch_depth=2, dtype="float64")
    dense = simulate_residual("relu", 8, seed=1, **kw)
    cond = simulate_residual("relu", 8, seed=2, sampler="conditional", **kw)
    for i in (0, 7, 14):
        a, b = dense.blocks[i], cond.blocks[i]
        for key in ("log_grad_ratio", "stream_variance"):
            assert abs(a[key] - b[key]) <= 4 * math.hypot(a[f"{key}_stderr"], b[f"{key}_stderr"]) + 1e-9, (i, key)
        assert abs(b["log_grad_ratio"] - b["log_grad_ratio_theory"]) <= 3 * b["log_grad_ratio_stderr"] + 0.05 * abs(
            b["log_grad_ratio_theory"]
        )


@pytest.mark.parametrize("rank", [6, 3])
def test_orthogonal_layer_exact_identities(rank):
    """W = s O with O orthogonal: ``h h^T = s^2 x x^T``, ``||dx|| = s ||dh||`` and ``x dx^T = h dh^T``, exactly for
    every draw; the part of dx outside col(x) points in a uniformly random direction there (its mean is 0)."""
    import torch

    from bnmft.simulate.conditional import conditional_linear

    gen = torch.Generator().manual_seed(0)
    n = 64
    base = torch.randn(200, rank, n, generator=gen, dtype=torch.float64)
    x = (torch.randn(200, 6, rank, generator=gen, dtype=torch.float64) @ base).float().requires_grad_(True)
    h = conditional_linear(x, n, 1.7, gen, torch.Generator().manual_seed(1), init="orthogonal")
    dh = torch.randn(h.shape, generator=gen)
    (h * dh).sum().backward()
    xd, hd = x.detach().double(), h.detach().double()
    tol = 1e-4 * (xd @ xd.transpose(1, 2)).abs().amax()
    assert torch.allclose(hd @ hd.transpose(1, 2), 1.7**2 * xd @ xd.transpose(1, 2), atol=tol.item())
    ratio = x.grad.double().pow(2).sum(dim=(1, 2)) / (1.7**2 * dh.double().pow(2).sum(dim=(1, 2)))
    assert torch.allclose(ratio, torch.ones_like(ratio), atol=1e-4)
    lhs, rhs = xd @ x.grad.double().transpose(1, 2), hd @ dh.double().transpose(1, 2)
    assert torch.allclose(lhs, rhs, atol=1e-4 * rhs.abs().amax().item())
    q, _ = torch.linalg.qr(xd.transpose(1, 2))
    q = q[:, :, :rank]
    g = x.grad.double().transpose(1, 2)
    perp = g - q @ (q.transpose(1, 2) @ g)
    assert perp.mean(dim=0).abs().max() < 5 * perp.std(dim=0).max() / math.sqrt(200)


@pytest.mark.parametrize(
    "phi, batch_sizes, options",
    [
        ("relu", [8], {}),
        ("tanh", [16], {"eps": 0.1}),
        ("identity", [8], {"two_batches": True}),
    ],
)
def test_orthogonal_conditional_agrees_with_dense(phi, batch_sizes, options):
    kw = dict(width=96, depth=20, networks=30, dtype="float64", init="orthogonal", **options)
    dense = simulate_mlp(phi, batch_sizes, seed=1, sampler="dense", **kw)
    cond = simulate_mlp(phi, batch_sizes, seed=2, sampler="conditional", **kw)
    for a, b in zip(dense.summaries, cond.summaries, strict=True):
        for name in ("lambda_G", "c_star", "q_star"):
            _agree(a, b, name)
    for b_ in batch_sizes:
        ld, lc = dense.runs[b_].log_grad_h.numpy(), cond.runs[b_].log_grad_h.numpy()
        se = np.sqrt(ld.var(0, ddof=1) / len(ld) + lc.var(0, ddof=1) / len(lc))
        assert np.all(np.abs(ld.mean(0) - lc.mean(0)) <= 4.5 * se + 1e-9)
    if options.get("two_batches"):
        cd, cc = dense.runs[8].cross.numpy(), cond.runs[8].cross.numpy()
        for layer in (3, 10, 16):
            se = math.hypot(cd[:, layer].std(), cc[:, layer].std()) / math.sqrt(30)
            assert abs(cd[:, layer].mean() - cc[:, layer].mean()) < 4 * se + 1e-9


@pytest.mark.parametrize("rank", [6, 3])
def test_one_layer_exact_identities(rank):
    """For any W: ``x dx^T = h dh^T`` (X^T W^T dH = (W X)^T dH) exactly, and the forward's rows have covariance
    s^2 x x^T; both hold for the Cholesky path (full rank) and the float64 eigen path (rank 3 of 6 rows)."""
    import torch

    from bnmft.simulate.conditional import conditional_linear

    gen = torch.Generator().manual_seed(0)
    base = torch.randn(4, rank, 300, generator=gen, dtype=torch.float64)
    x = (torch.randn(4, 6, rank, generator=gen, dtype=torch.float64) @ base).float().requires_grad_(True)
    noise = torch.Generator().manual_seed(1)
    h = conditional_linear(x, 500, 1.3, gen, noise)
    dh = torch.randn(h.shape, generator=gen)
    (h * dh).sum().backward()
    lhs = x.detach() @ x.grad.transpose(1, 2)
    rhs = h.detach() @ dh.transpose(1, 2)
    assert torch.allclose(lhs, rhs, rtol=1e-4, atol=1e-3 * rhs.abs().max().item())
    # forward covariance: pooled over 500 output rows and 4 networks, E[h h^T] / 500 = s^2 x x^T
    xx = x.detach().double() @ x.detach().double().transpose(1, 2) * 1.3**2 / 300
    hh = h.detach().double().transpose(1, 2)
    emp = torch.einsum("kni,knj->kij", hh, hh) / 500
    assert torch.allclose(emp, xx, atol=4 * xx.diagonal(dim1=1, dim2=2).max().item() / math.sqrt(500))
    # the unseen part of dx: (I - P) dx has E||.||^2 = s^2 (fan_in - rank) ||dh||^2 (fresh noise)
    q, _ = torch.linalg.qr(x.detach().double().transpose(1, 2))
    q = q[:, :, :rank] if rank < 6 else q
    g = x.grad.double().transpose(1, 2)
    perp = g - q @ (q.transpose(1, 2) @ g)
    ratio = perp.pow(2).sum() / (1.3**2 / 300 * (300 - rank) * dh.double().pow(2).sum())
    assert abs(ratio.item() - 1) < 0.05


def test_auto_picks_the_faster_valid_sampler():
    from bnmft.simulate.conditional import choose_sampler

    assert choose_sampler(1000, [32], "gaussian") == "conditional"
    assert choose_sampler(1000, [4, 5, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128], "gaussian") == "conditional"
    assert choose_sampler(64, [128], "gaussian") == "dense"  # rows > width: nothing to save
    assert choose_sampler(4096, [32], "orthogonal") == "conditional"  # the dense path needs an N x N QR per layer
    assert choose_sampler(48, [32], "orthogonal") == "dense"  # no room for the frame: width < 2 rows
    assert choose_sampler(4096, [32], "orthogonal", input_dim=100) == "dense"  # a rectangular first layer
    kw = dict(depth=8, networks=2, seed=1)
    assert simulate_mlp("relu", [8], width=512, **kw).config.network.sampler == "conditional"
    assert simulate_mlp("relu", [64], width=32, **kw).config.network.sampler == "dense"
    assert simulate_mlp("relu", [8], width=512, init="orthogonal", **kw).config.network.sampler == "conditional"
    assert simulate_mlp("relu", [8], width=12, init="orthogonal", **kw).config.network.sampler == "dense"
    rows = simulate_mlp("relu", [8], width=512, **kw).rows()
    assert {r["sampler"] for r in rows} == {"conditional"}


def test_float32_path_agrees_with_float64():
    """The working-dtype (float32) Cholesky path against float64 runs, relu and tanh at B = 32."""
    for phi in ("relu", "tanh"):
        kw = dict(width=256, depth=20, networks=24, sampler="conditional")
        a = simulate_mlp(phi, [32], seed=1, **kw).summaries[0]
        b = simulate_mlp(phi, [32], seed=2, dtype="float64", **kw).summaries[0]
        for name in ("lambda_G", "c_star", "q_star"):
            _agree(a, b, name)
