"""Accuracy of the quadrature path against independent references (issue: theory engine I, item 4)."""

import math

import mpmath as mp
import numpy as np
import pytest

from bnmft import gegenbauer_series, get_nonlinearity, theory
from bnmft.meanfield.closed_forms import arccos_kernel, relu_kernel

from .references import mp_moments

SMOOTH = ["tanh", "erf", "sigmoid", "gelu", "silu", "softplus", "sin", "tanh(2*z) + 0.1*z"]


@pytest.mark.parametrize(
    ("spec", "mp_f", "mp_df", "batch_size"),
    [
        ("tanh", mp.tanh, lambda x: mp.sech(x) ** 2, 5),
        ("tanh", mp.tanh, lambda x: mp.sech(x) ** 2, 12),
        ("sin", mp.sin, mp.cos, 7),
        ("gelu", lambda x: x * mp.ncdf(x), lambda x: mp.ncdf(x) + x * mp.npdf(x), 9),
    ],
)
def test_smooth_phi_matches_mpmath(spec, mp_f, mp_df, batch_size):
    """1e-9 relative against an independent 20-digit tanh-sinh quadrature in other coordinates."""
    ref = mp_moments(mp_f, mp_df, batch_size)
    r = theory(spec, batch_size)
    assert r.method == "quadrature"
    assert r.q_star == pytest.approx(ref["second"], rel=1e-11)
    assert r.mu_star == pytest.approx(ref["mu"], rel=1e-11)
    assert r.lambda_G == pytest.approx(ref["lambda_G"], rel=1e-11)


@pytest.mark.parametrize(
    ("spec", "batch_size"),
    [(spec, b) for spec in SMOOTH[:-1] for b in (4, 5, 8, 16, 33)] + [(SMOOTH[-1], b) for b in (4, 5, 8, 16)],
)
def test_smooth_phi_matches_gegenbauer_series(spec, batch_size):
    """docs/theory.md section 3.3: the Gegenbauer series (1-D Golub-Welsch rule) against the 2-D quadrature."""
    phi = get_nonlinearity(spec)
    series = gegenbauer_series(phi, batch_size)
    assert np.max(np.abs(series.coefficients[-10:])) < 1e-12  # the series has converged
    r = theory(phi, batch_size)
    assert r.q_star == pytest.approx(series.q_star, rel=1e-10)
    assert r.c_star == pytest.approx(series.c_star, rel=1e-9, abs=1e-12)
    assert r.lambda_G == pytest.approx(series.lambda_G, rel=1e-10)


def test_arccos_kernel_against_elementary_closed_forms():
    for c in np.linspace(-0.9, 0.9, 13):
        j1, dj1 = (float(v) for v in arccos_kernel(1.0, c))
        assert (j1, dj1) == pytest.approx(tuple(float(v) for v in relu_kernel(c)), rel=1e-13)
        # Cho & Saul degree 2: J(theta) = (3 sin t cos t + (pi - t)(1 + 2 cos^2 t)) / (3 pi), normalised
        t = math.acos(c)
        j2 = (3 * math.sin(t) * math.cos(t) + (math.pi - t) * (1 + 2 * math.cos(t) ** 2)) / (3 * math.pi)
        assert float(arccos_kernel(2.0, c)[0]) == pytest.approx(j2, rel=1e-13)


def test_arccos_kernel_fractional_degree_against_mpmath():
    """E[u+^a v+^a] with v = c u + s w, w independent of u, by nested 1-D quadrature."""
    a, c = 1.5, -0.2
    s = math.sqrt(1 - c * c)
    with mp.workdps(15):

        def inner(u):
            return mp.quad(lambda y: (s * y) ** a * mp.npdf(y - c * u / s), [0, 1, mp.inf])  # y = w + c u / s

        val = mp.quad(lambda u: u**a * mp.npdf(u) * inner(u), [0, 1, mp.inf])
        norm = mp.quad(lambda u: u ** (2 * a) * mp.npdf(u), [0, mp.inf])
    assert float(arccos_kernel(a, c)[0]) == pytest.approx(float(val / norm), rel=1e-9)


@pytest.mark.parametrize("batch_size", [4, 5, 6, 8, 16, 32, 100, 1000, 10**5])
def test_relu_general_path_matches_closed_form(batch_size):
    closed = theory("relu", batch_size)
    general = theory("relu", batch_size, method="quadrature")
    assert closed.method == "closed_form" and general.method == "quadrature"
    for key in ("q_star", "c_star", "mu_star", "lambda_G"):
        assert getattr(general, key) == pytest.approx(getattr(closed, key), rel=1e-9)


@pytest.mark.parametrize("alpha", [0.75, 1.5, 2.0, 3.0])
@pytest.mark.parametrize("batch_size", [4, 7, 32, 500, math.inf])
def test_alpha_relu_general_path_matches_closed_form(alpha, batch_size):
    closed = theory("alpha_relu", batch_size, alpha=alpha)
    general = theory("alpha_relu", batch_size, alpha=alpha, method="quadrature")
    for key in ("q_star", "c_star", "mu_star", "lambda_G"):
        assert getattr(general, key) == pytest.approx(getattr(closed, key), rel=1e-8)


def test_relu_check_values_from_theory_md():
    for b, c_ref, lam_ref in [(4, 0.1695, 3.0841), (8, 0.2501, 1.7882), (32, 0.3023, 1.5220)]:
        r = theory("relu", b)
        assert round(r.c_star, 4) == c_ref
        assert round(r.lambda_G, 4) == pytest.approx(lam_ref, abs=1e-12)
    assert theory("relu", math.inf).lambda_G == pytest.approx(math.pi / (math.pi - 1), rel=1e-15)
    assert theory("relu", 4).max_trainable_depth == pytest.approx(14.2, abs=0.05)
    assert theory("relu", math.inf).max_trainable_depth == pytest.approx(41.8, abs=0.05)


@pytest.mark.parametrize("batch_size", [4, 5, 9, 64, 1000, 10**5])
def test_identity_through_the_general_path(batch_size):
    r = theory("z", batch_size)  # an expression: no closed form is used
    assert r.method == "quadrature"
    assert r.lambda_G == pytest.approx((batch_size - 2) / (batch_size - 3), rel=1e-12)
    assert r.c_star == pytest.approx(-1 / (batch_size - 1), rel=1e-11)


@pytest.mark.parametrize("spec", ["tanh", "relu", "gelu", "relu(z + 1)"])
def test_large_batch_limit(spec):
    """docs/theory.md section 4: lambda_G(B) -> E[phi'^2] / Var[phi], with a 1/B correction."""
    limit = theory(spec, math.inf, method="quadrature")
    lam_4, lam_5 = theory(spec, 10**4).lambda_G, theory(spec, 10**5).lambda_G
    assert abs(lam_5 - limit.lambda_G) < abs(lam_4 - limit.lambda_G) / 5
    assert lam_5 == pytest.approx(limit.lambda_G, rel=1e-4)
    # independent 1-D mpmath reference for the limit
    f = get_nonlinearity(spec)
    with mp.workdps(20):

        def gauss(g):
            return mp.quad(lambda x: g(x) * mp.npdf(x), [-mp.inf, -1, 0, 1, mp.inf])

        fx = lambda x: float(f(np.array(float(x))))  # noqa: E731
        dx = lambda x: float(f.derivative(np.array(float(x))))  # noqa: E731
        mean = gauss(fx)
        ref = gauss(lambda x: dx(x) ** 2) / gauss(lambda x: (fx(x) - mean) ** 2)
    assert limit.lambda_G == pytest.approx(float(ref), rel=1e-9)


def test_gamma_beta_match_an_explicit_expression():
    a = theory("tanh", 16, gamma=0.5, beta=0.3)
    b = theory("tanh(0.5*z + 0.3)", 16)
    assert a.lambda_G == pytest.approx(b.lambda_G, rel=1e-13)
    assert a.q_star == pytest.approx(b.q_star, rel=1e-13)
    # relu(gamma z) closed form scales q* by gamma^2 and leaves lambda_G
    r = theory("relu", 16, gamma=-3.0)
    assert r.method == "closed_form"
    assert r.q_star == pytest.approx(9 * 0.5, rel=1e-14)
    assert r.lambda_G == pytest.approx(theory("relu", 16, gamma=-3.0, method="quadrature").lambda_G, rel=1e-10)
