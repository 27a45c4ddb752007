"""BN with eps > 0 (issue: theory engine III; docs/theory.md section 6)."""

import math

import numpy as np
import pytest

from bnmft import get_nonlinearity, theory
from bnmft.meanfield.closed_forms import relu_kernel


def test_eps_zero_changes_nothing_and_adds_the_keys():
    for spec in ("relu", "tanh", "gelu"):
        r = theory(spec, 16, eps=0.0)
        assert r.to_dict() == theory(spec, 16).to_dict()
        assert r.phase == "stationary" and r.kappa == 0.0 and r.lambda_W == r.lambda_G


@pytest.mark.parametrize("spec", ["tanh", "relu", "gelu", "relu(z + 0.5)"])
def test_small_eps_limit(spec):
    zero, small = theory(spec, 12), theory(spec, 12, eps=1e-10)
    assert small.lambda_G == pytest.approx(zero.lambda_G, rel=1e-8)
    assert small.mu_star == pytest.approx(zero.mu_star, rel=1e-8)
    assert small.q_star == pytest.approx(zero.q_star, rel=1e-8)


def test_only_kappa_matters():
    a = theory("tanh", 8, eps=0.2, sigma_w=2.0)
    b = theory("tanh", 8, eps=0.05)
    assert a.kappa == b.kappa == 0.05
    for key in ("lambda_G", "lambda_W", "mu_star", "q_star", "c_star"):
        assert getattr(a, key) == getattr(b, key)


def test_kappa_c_closed_forms():
    for b in (4, 8, 64):
        assert theory("tanh", b, eps=0.1).kappa_c == pytest.approx(1.0, rel=1e-12)  # phi'(0)^2
        assert theory("gelu", b, eps=0.1).kappa_c == pytest.approx(0.25, rel=1e-12)
        j1 = float(relu_kernel(-1.0 / (b - 1))[0])
        assert theory("relu", b, eps=0.1).kappa_c == pytest.approx((1 - j1) * (b - 1) / (2 * b), rel=1e-12)


@pytest.mark.parametrize("kappa", [0.05, 0.3, 0.8, 2.0])
def test_relu_homogeneous_path_against_the_general_chebyshev_path(kappa):
    exact, general = theory("relu", 10, eps=kappa), theory("relu(z)", 10, eps=kappa)  # independent numerics
    assert exact.phase == general.phase
    for key in ("lambda_G", "lambda_W", "mu_star"):
        assert getattr(general, key) == pytest.approx(getattr(exact, key), rel=1e-9, abs=1e-14)


def test_collapsed_phase_closed_form_for_tanh():
    """phi smooth at 0: K(0) = B phi'(0)^2, so lambda_G = 1/kappa and lambda_W = 1 exactly."""
    for kappa in (1.5, 4.0):
        r = theory("tanh", 16, eps=kappa)
        assert r.phase == "collapsed" and r.q_star is None and r.c_star is None and r.mu_star == 0.0
        assert r.lambda_G == pytest.approx(1 / kappa, rel=1e-9)
        assert r.lambda_W == pytest.approx(1.0, rel=1e-9)
        assert r.max_trainable_depth == math.inf


def bn_eps(h, eps):
    c = h - h.mean(axis=1, keepdims=True)
    return c / np.sqrt((c * c).mean(axis=1, keepdims=True) + eps)


def bn_eps_jacobian(h, eps, dphi):
    """Exact Jacobian of h -> phi(BN_eps(h)): sqrt(B)/sqrt(r^2 + B eps) (I - rho^2 v v^T) G, times phi'."""
    b = h.shape[1]
    g = np.eye(b) - 1.0 / b
    c = h @ g
    r2 = np.sum(c * c, axis=1)
    v = c / np.sqrt(r2)[:, None]
    rho2 = r2 / (r2 + b * eps)
    jac = (
        (np.sqrt(b) / np.sqrt(r2 + b * eps))[:, None, None]
        * (np.eye(b) - rho2[:, None, None] * v[:, :, None] * v[:, None, :])
        @ g
    )
    return dphi(bn_eps(h, eps))[:, :, None] * jac


def test_bn_eps_jacobian_formula(rng):
    h, eps = rng.standard_normal((2, 5)), 0.7
    jac = bn_eps_jacobian(h, eps, lambda x: 1 / np.cosh(x) ** 2)
    for k in range(5):
        e = np.zeros(5)
        e[k] = 1e-6
        num = (np.tanh(bn_eps(h + e, eps)) - np.tanh(bn_eps(h - e, eps))) / 2e-6
        np.testing.assert_allclose(jac[:, :, k], num, atol=1e-8)


def mc_rates(spec, b, eps, mu, rng, n=100_000, reps=10):
    """Monte Carlo of the raw BN_eps map at a BSB1 input with centred Gram mu G (sigma_w = 1): the forward map
    m = E[(phi_1 - phi_2)^2]/2 and the backward eigenvalue E||G J||^2/(B-1); means and standard errors."""
    phi = get_nonlinearity(spec)
    g = np.eye(b) - 1.0 / b
    ms, lams = [], []
    for _ in range(reps):
        h = np.sqrt(mu) * rng.standard_normal((n, b)) @ g
        y = phi(bn_eps(h, eps))
        ms.append(np.mean((y[:, 0] - y[:, 1]) ** 2) / 2)
        jac = bn_eps_jacobian(h, eps, phi.derivative)
        lams.append(np.mean(np.sum((g @ jac) ** 2, axis=(1, 2))) / (b - 1))
    return [(np.mean(v), np.std(v, ddof=1) / np.sqrt(reps)) for v in (ms, lams)]


@pytest.mark.parametrize(("spec", "b", "eps"), [("tanh", 8, 0.3), ("relu", 6, 0.15), ("gelu", 10, 0.1)])
def test_stationary_phase_against_monte_carlo(spec, b, eps, rng):
    r = theory(spec, b, eps=eps)
    assert r.phase == "stationary"
    (m, m_se), (lam, lam_se) = mc_rates(spec, b, eps, r.mu_star, rng)
    assert abs(m - r.mu_star) < 4 * m_se  # mu* is a fixed point of the raw map
    assert abs(lam - r.lambda_G) < 4 * lam_se


@pytest.mark.parametrize(("spec", "b", "eps"), [("tanh", 8, 2.0), ("relu", 8, 1.0)])
def test_collapsed_phase_against_monte_carlo(spec, b, eps, rng):
    r = theory(spec, b, eps=eps)
    assert r.phase == "collapsed"
    mu = 1e-6  # deep in the collapse: mu has shrunk toward 0
    (m, _), (lam, lam_se) = mc_rates(spec, b, eps, mu, rng)
    assert abs(lam - r.lambda_G) < 4 * lam_se + 1e-4 * r.lambda_G  # O(mu) corrections
    ratio = m / mu  # per-layer shrink factor of mu = kappa_c / kappa
    assert ratio == pytest.approx(r.kappa_c / r.kappa, rel=1e-3)
    assert lam / ratio == pytest.approx(r.lambda_W, rel=5e-3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"eps": -0.1}, "eps must be >= 0"),
        ({"eps": math.nan}, "eps must be a finite number"),
        ({"sigma_w": 0.0}, "sigma_w must be > 0"),
        ({"sigma_w": math.inf}, "sigma_w must be a finite number"),
    ],
)
def test_bad_eps_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        theory("tanh", 8, **kwargs)
    with pytest.raises(ValueError, match="finite batch_size"):
        theory("tanh", math.inf, eps=0.1)


def test_smooth_phi_against_an_independent_solver():
    """tanh, B = 6, kappa = 0.3: the fixed point and lambda_G from a separate implementation - a generalized
    Gauss-Laguerre rule for chi^2 (instead of the trapezoid rule in ln chi^2) and a direct 2-D quadrature at every
    node (instead of Chebyshev interpolation in s) - agree to 1e-9."""
    from scipy.optimize import brentq
    from scipy.special import roots_genlaguerre

    from bnmft.meanfield.moments import spherical_moments

    b, kappa = 6, 0.3
    phi = get_nonlinearity("tanh")
    u, w = roots_genlaguerre(80, (b - 1) / 2 - 1)  # 40 nodes leave 2e-9 (a pole of 1/(chi^2 + c) nearby)
    w = w / w.sum()
    chi2 = 2 * u

    def moments_at(t):
        s = chi2 / (chi2 + b * t)
        return s, [spherical_moments(phi.affine_input(math.sqrt(si), 0.0), b) for si in s]

    def forward(mu):
        _, ms = moments_at(kappa / mu)
        return sum(wi * m.mu for wi, m in zip(w, ms, strict=True))

    mu = math.exp(brentq(lambda x: math.log(forward(math.exp(x))) - x, math.log(1e-3), math.log(1.0), xtol=1e-13))
    s, ms = moments_at(kappa / mu)
    k = np.array([((b - 1) * m.d2 + m.dd) / si - (2 * si - si * si) * m.xd / si for si, m in zip(s, ms, strict=True)])
    lam = float(np.sum(w * k / (chi2 + b * kappa / mu))) / mu
    r = theory("tanh", b, eps=kappa)
    assert r.mu_star == pytest.approx(mu, rel=1e-9)
    assert r.lambda_G == pytest.approx(lam, rel=1e-9)
