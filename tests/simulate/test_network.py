"""The simulator's building blocks against direct computations."""

import math

import numpy as np
import pytest
import torch

from bnmft import get_nonlinearity
from bnmft.simulate import NetworkSpec, run_ensemble, simulate_mlp, to_torch
from bnmft.simulate.network import batch_norm, init_weights, segments_for


@pytest.mark.parametrize("spec", ["relu", "tanh", "gelu", "selu", "sin", "tanh(2*z) + 0.1*z", "abs(z - 0.5)"])
def test_torch_phi_values_and_autograd_derivative(spec):
    phi = get_nonlinearity(spec).affine_input(0.7, 0.2)
    z = torch.linspace(-4, 4, 401, dtype=torch.float64) + 1e-3
    z.requires_grad_(True)
    out = to_torch(phi)(z)
    (grad,) = torch.autograd.grad(out.sum(), z)
    np.testing.assert_allclose(out.detach().numpy(), phi(z.detach().numpy()), rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(grad.numpy(), phi.derivative(z.detach().numpy()), rtol=1e-12, atol=1e-13)


def test_numpy_callable_runs_through_a_custom_autograd_function():
    phi = get_nonlinearity(np.arctan, derivative=lambda z: 1 / (1 + z * z))
    z = torch.linspace(-3, 3, 11, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(to_torch(phi)(z).sum(), z)
    np.testing.assert_allclose(grad.numpy(), 1 / (1 + z.detach().numpy() ** 2))


def test_batch_norm_and_ghost_groups():
    h = torch.randn(3, 8, 5, dtype=torch.float64)
    y = batch_norm(h, 8, 0.0, False)
    np.testing.assert_allclose(y.mean(dim=1).numpy(), 0, atol=1e-14)
    np.testing.assert_allclose((y**2).mean(dim=1).numpy(), 1, atol=1e-12)
    ghost = batch_norm(h, 4, 0.0, False)
    np.testing.assert_allclose(ghost[:, :4].numpy(), batch_norm(h[:, :4], 4, 0.0, False).numpy())
    eps = batch_norm(h, 8, 0.5, False)
    var = h.var(dim=1, unbiased=False, keepdim=True)
    np.testing.assert_allclose(eps.numpy(), ((h - h.mean(1, keepdim=True)) / torch.sqrt(var + 0.5)).numpy())


def test_orthogonal_init_is_orthogonal_and_scaled():
    gen = torch.Generator().manual_seed(0)
    spec = NetworkSpec(width=16, depth=1, init="orthogonal", sigma_w=1.5)
    w = init_weights(2, 16, 16, spec, gen, "cpu", torch.float64)
    np.testing.assert_allclose(
        (w @ w.transpose(1, 2)).numpy(), np.broadcast_to(2.25 * np.eye(16), (2, 16, 16)), atol=1e-12
    )


@pytest.mark.parametrize(
    ("placement", "detach", "ghost"),
    [("before", False, None), ("after", False, None), ("before", True, None), ("before", False, 4)],
)
def test_log_space_gradient_norms_equal_plain_autograd(placement, detach, ghost):
    """Two batch sizes (8 and 4) through the same networks; the hooks rescale gradients on the way down and
    compute weight-gradient norms without forming dW. Both must equal ordinary autograd, segment by segment."""
    spec = NetworkSpec(width=12, depth=6, placement=placement, detach_stats=detach, ghost_size=ghost)
    segments = segments_for([8, 4], ghost)
    phi = to_torch(get_nonlinearity("tanh"))
    x = torch.randn(3, 12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    runs = run_ensemble(phi, x, spec, segments, torch.Generator().manual_seed(5))
    gen = torch.Generator().manual_seed(5)  # replay the same networks without hooks
    h_list, w_list, act = [], [], x
    for _ in range(spec.depth):
        w = init_weights(3, 12, 12, spec, gen, "cpu", torch.float64).requires_grad_(True)
        h = torch.bmm(act, w.transpose(1, 2))
        h.retain_grad()
        parts = []
        for seg in segments:
            piece = h[:, seg.offset : seg.offset + seg.length]
            if placement == "before":
                parts.append(phi(batch_norm(piece, seg.group, 0.0, detach)))
            else:
                parts.append(batch_norm(phi(piece), seg.group, 0.0, detach))
        act = torch.cat(parts, dim=1)
        h_list.append(h)
        w_list.append(w)
    readout = torch.randn(act.shape, generator=gen, dtype=torch.float64)
    for i, seg in enumerate(segments):
        for t in h_list + w_list:
            t.grad = None
        rows = slice(seg.offset, seg.offset + seg.length)
        (act[:, rows] * readout[:, rows]).sum().backward(retain_graph=True)
        direct_h = torch.stack([torch.log(h.grad[:, rows].pow(2).sum(dim=(1, 2))) for h in h_list], 1)
        direct_w = torch.stack([torch.log(w.grad.pow(2).sum(dim=(1, 2))) for w in w_list], 1)
        np.testing.assert_allclose(runs[i].log_grad_h.numpy(), direct_h.numpy(), rtol=1e-10)
        np.testing.assert_allclose(runs[i].log_grad_w.numpy(), direct_w.numpy(), rtol=1e-10)


def test_deep_networks_do_not_overflow_in_float32():
    r = simulate_mlp("relu", [4], width=32, depth=400, networks=2, dtype="float32")
    logs = r.runs[4].log_grad_h
    assert torch.all(torch.isfinite(logs))
    assert float(logs[:, 0].mean() - logs[:, -1].mean()) > 300  # far beyond float32's range (~88 in log)


def test_same_seed_same_numbers_and_different_seed_differs():
    a = simulate_mlp("tanh", [8], width=32, depth=10, networks=3, seed=4)
    b = simulate_mlp("tanh", [8], width=32, depth=10, networks=3, seed=4)
    c = simulate_mlp("tanh", [8], width=32, depth=10, networks=3, seed=5)
    assert a.rows() == b.rows()
    assert a.rows() != c.rows()


def test_tidy_table_and_files(tmp_path):
    r = simulate_mlp("relu", [4, 8], width=16, depth=12, networks=3, two_batches=True)
    rows = r.rows()
    assert len(rows) == 2 * 3 * 12
    assert {
        "batch_size",
        "network",
        "layer",
        "q",
        "c",
        "distance",
        "log_grad_h",
        "log_grad_w",
        "cross_correlation",
        "phi",
        "width",
        "eps",
        "init",
    } <= set(rows[0])
    paths = r.save(tmp_path)
    assert paths["layers"].read_text().count("\n") == len(rows) + 1
    assert "lambda_G_mean" in paths["summary"].read_text()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"width": 0}, "width must be an integer >= 1"),
        ({"depth": 0}, "depth must be an integer >= 1"),
        ({"depth": 5}, "too shallow"),
        ({"batch_sizes": [1]}, "batch_size must be an integer >= 2"),
        ({"batch_sizes": []}, "at least one batch size"),
        ({"device": "tpu"}, "device must be one of"),
        ({"init": "xavier"}, "init must be one of"),
        ({"eps": -1.0}, "eps must be >= 0"),
        ({"gamma": math.nan}, "gamma must be a finite number"),
        ({"ghost_size": 3}, "must divide"),
        ({"dtype": "float16"}, "dtype must be one of"),
        ({"colour": "red"}, "unknown option 'colour'"),
    ],
)
def test_bad_settings_are_rejected_before_work(kwargs, message):
    args = {"batch_sizes": [8], "width": 8, "depth": 12, "networks": 2} | kwargs
    phi, sizes = "relu", args.pop("batch_sizes")
    with pytest.raises(ValueError, match=message):
        simulate_mlp(phi, sizes, **args)


def test_cuda_request_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="no CUDA device"):
        simulate_mlp("relu", [8], width=8, depth=12, networks=2, device="cuda")


@pytest.mark.parametrize("eps", [1e-3, "per-network"])
@pytest.mark.parametrize("group", [4, 8])
def test_batch_norm_examples_last_is_the_same_map(eps, group):
    """The (K, N, B) layout (with BN's affine fused in) against the (K, B, N) one, values and gradients."""
    gen = torch.Generator().manual_seed(1)
    h = torch.randn(3, 8, 5, dtype=torch.float64, generator=gen) * 2 + 0.5
    gamma = torch.rand(3, 5, dtype=torch.float64, generator=gen) + 0.5
    beta = torch.randn(3, 5, dtype=torch.float64, generator=gen)
    e = torch.tensor([1e-3, 0.1, 1.0], dtype=torch.float64) if eps == "per-network" else eps
    h1 = h.clone().requires_grad_(True)
    h2 = h.transpose(1, 2).contiguous().requires_grad_(True)
    y1 = batch_norm(h1, group, e, False) * gamma[:, None, :] + beta[:, None, :]
    y2 = batch_norm(h2, group, e, False, examples_last=True, weight=gamma, bias=beta)
    np.testing.assert_allclose(y2.transpose(1, 2).detach().numpy(), y1.detach().numpy(), rtol=1e-10, atol=1e-12)
    r = torch.randn(y1.shape, dtype=torch.float64, generator=gen)
    (g1,) = torch.autograd.grad((y1 * r).sum(), h1)
    (g2,) = torch.autograd.grad((y2 * r.transpose(1, 2)).sum(), h2)
    np.testing.assert_allclose(g2.transpose(1, 2).numpy(), g1.numpy(), rtol=1e-8, atol=1e-10)
