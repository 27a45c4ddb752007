"""Residual BN networks (bnmft.residual_theory): closed forms, exact identities, a Monte Carlo of the block's maps."""

import math

import numpy as np
import pytest

import bnmft
from bnmft import InputError, residual_theory
from bnmft.meanfield.residual import _Branch, _Layer
from bnmft.nonlinearity import get_nonlinearity


def identity_reference(b: int, depth: int, alpha: float, m0: float, sigma_w: float = 1.0) -> np.ndarray:
    """The exact identity formula (docs/theory.md section 9): E||g^l||^2/E||g^D||^2 = ((B-1)/B) P_l + 1/B, P_l the
    product of (1 + alpha^2 lambda_G v / s_j) over the blocks above, with lambda_G = (B-2)/(B-3), mu* = B/(B-1)."""
    lam, mu = (b - 2) / (b - 3), b / (b - 1)
    m = m0 + alpha**2 * sigma_w**2 * mu * np.arange(depth + 1)
    factors = 1 + alpha**2 * sigma_w**2 * lam * mu / m[:-1]
    p = np.concatenate([np.cumprod(factors[::-1])[::-1], [1.0]])
    return (b - 1) / b * p + 1 / b


@pytest.mark.parametrize("b, depth, alpha, sigma_w", [(8, 60, 1.0, 1.0), (5, 17, 0.3, 2.0), (32, 100, 0.7, 0.5)])
def test_identity_matches_the_closed_form(b, depth, alpha, sigma_w):
    r = residual_theory("identity", b, depth=depth, branch_scale=alpha, sigma_w=sigma_w)
    got = np.array([row["grad_norm_sq"] for row in r.blocks])
    np.testing.assert_allclose(got, identity_reference(b, depth, alpha, 1.0, sigma_w), rtol=1e-12)
    assert r.exponent == pytest.approx((b - 2) / (b - 3), rel=1e-12)


def test_identity_reproduces_theory_md_numbers():
    # docs/theory.md section 9: 4.852 and 0.741 at blocks 0 and 30 of a B = 8, D = 60 network (log ratios)
    r = residual_theory("identity", 8, depth=60)
    assert r.blocks[0]["log_grad_ratio"] == pytest.approx(4.852, abs=5e-4)
    assert r.blocks[30]["log_grad_ratio"] == pytest.approx(0.741, abs=5e-4)


@pytest.mark.parametrize("phi, b, k", [("relu", 8, 1), ("relu", 16, 3), ("tanh", 32, 2), ("gelu", 6, 2)])
def test_exponent_is_lambda_g_to_the_branch_depth(phi, b, k):
    r = residual_theory(phi, b, depth=3, branch_depth=k)
    lam = bnmft.theory(phi, b).lambda_G
    assert r.lambda_G == pytest.approx(lam, rel=1e-10)
    assert r.exponent == pytest.approx(lam**k, rel=1e-10)


def test_stream_variance_grows_by_the_branch_fixed_point():
    b, alpha, sigma_w = 16, 0.6, 1.3
    t = bnmft.theory("tanh", b)
    r = residual_theory(
        "tanh", b, depth=20, branch_scale=alpha, sigma_w=sigma_w, input_variance=2.0, input_correlation=0.25
    )
    m0 = 2.0 * 0.75
    for row in r.blocks:
        expected = (m0 + row["block"] * alpha**2 * sigma_w**2 * t.mu_star) * (b - 1) / b
        assert row["stream_variance"] == pytest.approx(expected, rel=1e-12)
    # the mean part: the branch adds sigma_w^2 (q* + (B-1) q* c*) / B per unit alpha^2 to tr(Sigma)/B's mean share
    q, c = t.q_star, t.c_star
    last = r.blocks[-1]
    second = (m0 * (b - 1) + 2.0 * (1 + (b - 1) * 0.25)) / b + 20 * alpha**2 * sigma_w**2 * q
    assert last["stream_second_moment"] == pytest.approx(second, rel=1e-12)
    assert c is not None


def _monte_carlo_gains(phi_name: str, b: int, mu_h: float, eps: float, samples: int, seed: int):
    """E[J^T Pi J] for Pi = G and Pi = 11^T/B by sampling h ~ N(0, mu_h G) (a BSB1 input), J the Jacobian of
    phi(BN_eps(h)) written out directly; returns the coefficients of G (mean, standard error)."""
    rng = np.random.default_rng(seed)
    phi = get_nonlinearity(phi_name)
    g = np.eye(b) - 1.0 / b
    h = rng.standard_normal((samples, b)) @ g * math.sqrt(mu_h)
    r2 = np.sum(h * h, axis=1)
    v = h / np.sqrt(r2)[:, None]
    s = r2 / (r2 + b * eps)
    y = math.sqrt(b) * h / np.sqrt(r2 + b * eps)[:, None]
    d = phi.derivative(y)
    # J = sqrt(B)/sqrt(r^2 + B eps) D (I - s v v^T) G; J^T Pi J for Pi = I (trace form) and G
    scale = b / (r2 + b * eps)
    jac = (d[:, :, None] * (np.eye(b)[None] - s[:, None, None] * v[:, :, None] * v[:, None, :])) @ g
    jac *= np.sqrt(scale)[:, None, None]
    tr_i = np.einsum("sab,sab->s", jac, jac) / (b - 1)
    jg = np.einsum("ab,sbc->sac", g, jac)
    tr_g = np.einsum("sab,sab->s", jg, jg) / (b - 1)
    tr_one = tr_i - tr_g  # Pi = 11^T / B = I - G
    return [(float(x.mean()), float(x.std() / math.sqrt(samples))) for x in (tr_g, tr_one)]


@pytest.mark.parametrize(
    "phi, b, mu_h, eps", [("relu", 8, 1.0, 0.0), ("tanh", 6, 2.0, 0.0), ("relu", 8, 0.7, 0.3), ("tanh", 16, 1.5, 0.5)]
)
def test_layer_gains_match_a_monte_carlo_of_the_jacobian(phi, b, mu_h, eps):
    layer = _Layer(get_nonlinearity(phi), b, eps > 0)
    v = layer(eps / mu_h)
    (mg, sg), (m1, s1) = _monte_carlo_gains(phi, b, mu_h, eps, 200_000, 1)
    assert abs(v.lam_hat / mu_h - mg) < 5 * sg
    assert abs((v.t_hat - v.lam_hat) / mu_h - m1) < 5 * s1 + 1e-12


def test_identity_never_passes_the_batch_mean_into_the_branch():
    layer = _Layer(get_nonlinearity("identity"), 8, True)
    for e in (0.0, 0.1, 3.0):
        v = layer(e)
        assert v.t_hat == pytest.approx(v.lam_hat, rel=1e-10)


def test_eps_to_zero_is_continuous_and_branches_agree_at_eps_zero():
    kw = dict(depth=40, branch_depth=2, branch_scale=0.8)
    zero = residual_theory("tanh", 16, **kw)
    tiny = residual_theory("tanh", 16, eps=1e-12, **kw)
    lf = residual_theory("tanh", 16, branch="linear_first", sigma_w=1.7, **kw)
    for a, b_ in zip(zero.blocks, tiny.blocks, strict=True):
        assert b_["log_grad_ratio"] == pytest.approx(a["log_grad_ratio"], rel=1e-7, abs=1e-9)
    # linear_first with sigma_w: its stream grows by sigma_w^2 (its output layer), the gradient ratio is unchanged
    k = 1.7**2
    for a, c in zip(zero.blocks, lf.blocks, strict=True):
        increment = a["stream_variance"] - 0.9375  # the input's (B-1)/B
        assert c["stream_variance"] == pytest.approx(a["stream_variance"] + (k - 1) * increment, rel=1e-10)
    eps_bn = residual_theory("tanh", 16, eps=0.5, **kw)
    eps_lf = residual_theory("tanh", 16, eps=0.5, branch="linear_first", sigma_w=2.0, **kw)
    assert eps_bn.blocks[0]["log_grad_ratio"] != pytest.approx(eps_lf.blocks[0]["log_grad_ratio"], rel=1e-3)


def test_per_block_alpha_sequence_equals_the_constant():
    a = residual_theory("relu", 8, depth=25, branch_scale=0.5)
    b_ = residual_theory("relu", 8, depth=25, branch_scale=[0.5] * 25)
    assert [r["log_grad_ratio"] for r in a.blocks] == pytest.approx([r["log_grad_ratio"] for r in b_.blocks], rel=1e-14)
    # a schedule with zeros is a shorter network
    c = residual_theory("relu", 8, depth=30, branch_scale=[0.5] * 25 + [0.0] * 5)
    assert c.blocks[0]["log_grad_ratio"] == pytest.approx(a.blocks[0]["log_grad_ratio"], rel=1e-14)


@pytest.mark.parametrize(
    "phi, b, k, eps, out", [("relu", 16, 2, 0.0, "iid"), ("relu", 8, 3, 0.0, "centred"), ("tanh", 8, 2, 0.3, "iid")]
)
def test_max_trainable_depth_is_where_the_criterion_is_crossed(phi, b, k, eps, out):
    r = residual_theory(phi, b, depth=2, branch_depth=k, eps=eps, output_gradient=out)
    d = r.max_trainable_depth
    assert d is not None and d > 2
    if d > 5000:  # computed past the exact blocks: check only the exact part's consistency
        d = residual_theory(
            phi, b, depth=2, branch_depth=k, eps=eps, output_gradient=out, criterion=8.0
        ).max_trainable_depth
        crit = 8.0
    else:
        crit = 16.0
    at = residual_theory(phi, b, depth=d, branch_depth=k, eps=eps, output_gradient=out, trainable_depth=False)
    past = residual_theory(phi, b, depth=d + 1, branch_depth=k, eps=eps, output_gradient=out, trainable_depth=False)
    assert at.blocks[0]["log_grad_ratio"] <= crit + 1e-9 < past.blocks[0]["log_grad_ratio"]


def test_power_law_in_the_stream_variance():
    r = residual_theory("relu", 32, depth=20000, trainable_depth=False, output_gradient="centred")
    rows = r.blocks
    # ln ratio between blocks 0 and l against ln of the variance ratio: slope -> exponent deep in the network
    v = np.array([row["stream_variance"] for row in rows])
    g = np.array([row["log_grad_ratio"] for row in rows])
    slope = (g[10000] - g[19000]) / (math.log(v[19000]) - math.log(v[10000]))
    assert slope == pytest.approx(r.exponent, rel=1e-3)


def test_centred_output_drops_the_mean_part():
    iid = residual_theory("identity", 8, depth=10)
    centred = residual_theory("identity", 8, depth=10, output_gradient="centred")
    for a, c in zip(iid.blocks, centred.blocks, strict=True):
        assert a["grad_norm_sq"] == pytest.approx((7 * c["grad_norm_sq"] + 1) / 8, rel=1e-12)


def test_branch_maps_use_one_layer_object():
    layer = _Layer(get_nonlinearity("relu"), 8, False)
    branch = _Branch(layer, 2, "bn_first", 0.0, 1.0)
    limit, deep = branch(None), branch(1e6)
    assert deep.g * 1e6 == pytest.approx(limit.g, rel=1e-12)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(depth=0), "depth"),
        (dict(depth=5, branch_scale=-1.0), "branch_scale"),
        (dict(depth=5, branch_scale=[1.0, 2.0]), "branch_scale"),
        (dict(depth=5, branch="post"), "branch"),
        (dict(depth=5, branch_depth=0), "branch_depth"),
        (dict(depth=5, input_correlation=1.0), "input_correlation"),
        (dict(depth=5, input_variance=0.0), "input_variance"),
        (dict(depth=5, output_gradient="x"), "output_gradient"),
        (dict(depth=5, criterion=math.inf), "criterion"),
        (dict(depth=5, eps=-1.0), "eps"),
        (dict(depth=10**6), "depth"),
    ],
)
def test_bad_input_names_the_argument(kwargs, match):
    with pytest.raises(InputError, match=match):
        residual_theory("relu", 8, **kwargs)


def test_infinite_batch_is_refused():
    with pytest.raises(InputError, match="finite"):
        residual_theory("relu", math.inf, depth=3)


def test_rows_are_tidy_records():
    r = residual_theory("relu", 8, depth=4, branch_scale=[0.1, 0.2, 0.3, 0.4])
    rows = r.rows()
    assert len(rows) == 5 and all(row["phi"] == "relu" and row["batch_size"] == 8 for row in rows)
    assert [row["branch_scale"] for row in rows] == [0.1, 0.2, 0.3, 0.4, None]
    d = r.to_dict()
    assert d["branch_scale"] == [0.1, 0.2, 0.3, 0.4] and {"blocks", "exponent", "max_trainable_depth"} <= set(d)


@pytest.mark.parametrize(
    "phi, b, eps, sigma_w", [("relu", 32, 0.0, 1.0), ("tanh", 16, 0.3, 1.0), ("relu", 8, 0.05, 2.0)]
)
def test_local_rate_at_the_fixed_point_is_lambda_g(phi, b, eps, sigma_w):
    from bnmft.meanfield import local_rate

    t = bnmft.theory(phi, b, eps=eps, sigma_w=sigma_w)
    # BN's input at the fixed point: centred eigenvalue sigma_w^2 mu*, biased variance (B-1)/B of it
    var = sigma_w**2 * t.mu_star * (b - 1) / b
    got = local_rate(phi, b, input_variance=var, eps=eps, weight_gain=sigma_w**2)
    assert got == pytest.approx(t.lambda_G, rel=1e-9)
