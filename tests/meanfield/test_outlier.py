"""The outlier state (docs/outlier.md): the exact one-example reduction of the Gram map, its fixed points, the
critical batch size and the B = inf limit, against the full Gram map, a Monte Carlo of phi o BN and the forward
eigenvalue lambda_L of :func:`bnmft.theory`."""

import json
import math

import numpy as np
import pytest

import bnmft
from bnmft import InputError, gram_map, outlier_state, theory
from bnmft.meanfield import outlier as module
from bnmft.meanfield.gram import sphere_rule
from bnmft.nonlinearity import resolve

from .references import batch_norm


def symmetric_gram(b: int, rho: float) -> np.ndarray:
    """The centred Gram matrix with example 0's centred squared norm rho times each other's (others exchangeable)."""
    vec = np.full(b, -1.0)
    vec[0] = b - 1
    vec /= math.sqrt(b * (b - 1))
    kappa = rho * b * (b - 2) / ((b - 1) ** 2 - rho)
    return kappa * np.outer(vec, vec) + np.eye(b) - 1.0 / b - np.outer(vec, vec)


def read_rho(gram: np.ndarray) -> float:
    b = len(gram)
    centred = np.diag((np.eye(b) - 1.0 / b) @ gram @ (np.eye(b) - 1.0 / b))
    return float(centred[0] / centred[1:].mean())


@pytest.mark.parametrize(("phi", "b"), [("relu", 8), ("relu", 32), ("identity", 16)])
def test_the_reduction_is_the_full_gram_map(phi, b):
    """V (exact Laplace map, B x B) keeps the S_(B-1) symmetry, and F_B read off it is the reduced map."""
    r = outlier_state(phi, b)
    off = ~np.eye(b, dtype=bool) & (np.arange(b) > 0)[:, None] & (np.arange(b) > 0)
    for rho in (0.3, 1.0, 2.5, 7.0, 40.0):
        v = gram_map(phi, symmetric_gram(b, rho)).value
        assert v.std(where=off) < 1e-12 and np.ptp(np.diag(v)[1:]) < 1e-12 and np.ptp(v[0, 1:]) < 1e-12
        assert r.map(rho) == pytest.approx(read_rho(v), rel=1e-11)
    assert r.map(1.0) == pytest.approx(1.0, abs=1e-12)


def refined_sphere_map(phi, b: int, rho: float) -> float:
    """rho' of V(Sigma(rho)), B <= 5, by the angular central Gaussian law on a fine product rule of the sphere
    (gram_map's own rule, 40 x 80 nodes, is off by 1e-6 at rho = 7, B = 5: the law is peaked away from BSB1)."""
    vals, vecs = np.linalg.eigh(np.eye(b) - 1.0 / b)
    q = vecs[:, vals > 0.5]
    omega = q.T @ symmetric_gram(b, rho) @ q
    u, w = sphere_rule(b - 1, 160, 320) if b == 4 else sphere_rule(b - 1, 80, 160)  # converged to 1e-12
    dens = np.einsum("mi,ij,mj->m", u, np.linalg.inv(omega), u) ** (-(b - 1) / 2) / math.sqrt(np.linalg.det(omega))
    f = phi(math.sqrt(b) * u @ q.T)
    return read_rho(np.einsum("m,mi,mj->ij", w * dens, f, f))


@pytest.mark.parametrize("b", [4, 5])
@pytest.mark.parametrize("phi", ["tanh", "sigmoid"])
def test_the_general_quadrature_against_a_refined_sphere_rule(phi, b):
    """The path for non-homogeneous phi (B = 4: three examples on a circle) against the full Gram map on the sphere."""
    r, f = outlier_state(phi, b), bnmft.get_nonlinearity(phi)
    for rho in (0.3, 2.5, 7.0):
        assert r.map(rho) == pytest.approx(refined_sphere_map(f, b, rho), rel=1e-9)


@pytest.mark.parametrize("b", [8, 32, 128])
@pytest.mark.parametrize("phi", ["relu", "tanh"])
def test_the_map_agrees_with_a_monte_carlo_of_phi_bn(phi, b, rng):
    """rho' of ``E[f f^T]``, f = phi(BN(h)), h ~ N(0, Sigma(rho)): 16 independent replicates, within 4 errors."""
    f_phi = bnmft.get_nonlinearity(phi)
    r = outlier_state(phi, b)
    for rho in (0.5, 3.0):
        root = np.linalg.cholesky(symmetric_gram(b, rho) + 1e-12 * np.eye(b) + 1.0)  # + 11^T: BN removes it
        estimates = []
        for _ in range(16):
            f = f_phi(batch_norm(rng.standard_normal((40_000 // b * 8, b)) @ root.T))
            c = f - f.mean(axis=1, keepdims=True)
            estimates.append(np.mean(c[:, 0] ** 2) / np.mean(c[:, 1:] ** 2))
        mean, se = np.mean(estimates), np.std(estimates, ddof=1) / 4
        assert se < 0.02 * mean  # the check can fail
        assert abs(float(r.map(rho)) - mean) < 4 * se, (phi, b, rho, float(r.map(rho)), mean, se)


@pytest.mark.parametrize("b", [4, 8, 32, 128, 1000])
@pytest.mark.parametrize("phi", ["relu", "tanh", "sigmoid"])
def test_bsb1_is_a_fixed_point_with_slope_lambda_l(phi, b):
    """rho = 1 is fixed and F'(1) is the forward eigenvalue lambda_L of the norms (an independent computation)."""
    r = outlier_state(phi, b)
    assert r.map(1.0) == pytest.approx(1.0, abs=1e-11)
    one = [p for p in r.fixed_points if p[0] == 1.0]
    assert len(one) == 1 and one[0][1] == pytest.approx(theory(phi, b).lambda_L, abs=1e-8)


def test_relu_infinite_batch_is_the_closed_form_and_the_limit_of_finite_batches():
    rho = np.array([0.3, 0.8, 1.5, 4.0, 9.0])
    closed = rho + (np.sqrt(rho) - 1) ** 2 / (math.pi - 1)
    inf = outlier_state("relu", math.inf)
    assert np.allclose(inf.map(rho), closed, rtol=1e-14)
    assert inf.fixed_points == [(1.0, pytest.approx(1.0, abs=1e-9), False)]  # marginal: F_inf >= rho everywhere
    assert inf.saddle == 1.0 and inf.stable is None  # the saddle (1 + 19.3/B at finite B) has merged with BSB1
    # F_B = F_inf + d(rho) / B + O(1/B^2): B (F_B - F_inf) converges
    d = {b: b * (outlier_state("relu", b).map(rho) - closed) for b in (1024, 2048, 4096)}
    assert np.all(np.abs(d[4096] - d[2048]) < 0.6 * np.abs(d[2048] - d[1024]) + 1e-9)
    assert np.all(np.abs(d[4096] - d[2048]) < 0.02 * np.abs(d[4096]))
    assert np.all(np.abs(outlier_state("relu", 4096).map(rho) / closed - 1) < 0.02)


def test_gaussian_limit_of_a_general_phi_is_the_limit_of_finite_batches():
    """tanh at B = inf (F = E[tanh(sqrt(rho) z)^2] / E[tanh(z)^2]) against the finite-B quadrature, 1/B convergence."""
    rho = np.array([0.2, 0.9, 1.3, 5.0, 50.0])
    inf = outlier_state("tanh", "inf").map(rho)
    d = {b: b * (outlier_state("tanh", b).map(rho) - inf) for b in (1024, 2048, 4096)}
    assert np.all(np.abs(d[4096] - d[2048]) < 0.6 * np.abs(d[2048] - d[1024]) + 1e-9)
    assert np.all(np.abs(d[4096] - d[2048]) < 0.02 * np.abs(d[4096]) + 1e-6)


def test_relu_critical_batch_size_is_52():
    """Below B = 52 rho = 1 is the only fixed point of relu's map; from 52 on a saddle and a stable outlier state."""
    assert outlier_state("relu", 51).fixed_points == [(1.0, pytest.approx(theory("relu", 51).lambda_L), True)]
    r52 = outlier_state("relu", 52)
    assert r52.critical_batch_size == 52 and len(r52.fixed_points) == 3
    assert 1.0 < r52.saddle < r52.stable < 5.0  # born together near rho = 3 (a saddle-node)
    r = outlier_state("relu", 128)
    assert r.saddle == pytest.approx(1.20383, abs=1e-4) and r.stable == pytest.approx(25.4983, abs=1e-3)
    for rho, slope, stable in r.fixed_points:
        assert float(r.map(rho)) == pytest.approx(rho, rel=1e-10)
        assert stable == (abs(slope) < 1) and (rho == r.saddle) == (not stable)


def test_iterating_the_map_from_either_side_of_the_saddle():
    """B = 128: an example just above the saddle drifts to the outlier state, just below it returns to BSB1."""
    r = outlier_state("relu", 128)
    rho = r.saddle * np.array([1.05, 0.95])
    for _ in range(700):
        rho = r.map(rho)
    assert rho == pytest.approx([r.stable, 1.0], rel=1e-3)


def test_where_bsb1_is_unstable_rho_one_is_the_saddle():
    """gelu at B = 128: lambda_L > 1, and the map has stable states on both sides of BSB1."""
    r = outlier_state("gelu", 128)
    assert theory("gelu", 128).lambda_L > 1 and r.saddle == 1.0 and r.critical_batch_size == 30
    assert [p[0] < 1 for p in r.fixed_points if p[2]] == [True, False] and 0.6 < r.stable < 0.7


def test_a_neutral_map_has_no_spurious_fixed_points():
    """identity at B = inf maps every rho to itself: rounding-level moves must not read as fixed points."""
    r = outlier_state("identity", "inf")
    assert np.allclose(r.map([0.3, 5.0]), [0.3, 5.0], rtol=1e-14)
    assert r.fixed_points == [(1.0, pytest.approx(1.0), False)] and r.stable is None


def test_every_phi_specification_gives_the_same_map():
    rho = np.array([0.4, 1.7, 9.0])
    want = outlier_state("tanh", 16, gamma=0.7).map(rho)
    for spec, extra in (("tanh(z)", {}), (np.tanh, {"derivative": lambda z: 1 / np.cosh(z) ** 2})):
        assert np.allclose(outlier_state(spec, 16, gamma=0.7, **extra).map(rho), want, rtol=1e-13)


def test_tanh_has_no_outlier_state():
    r = outlier_state("tanh", 1024)
    assert r.critical_batch_size is None and r.saddle is None and r.stable is None
    rho = np.geomspace(0.02, 1000, 60)
    moved = r.map(rho) - rho
    assert np.all(np.sign(moved) == np.sign(1 - rho))  # every example's norm moves toward the others'


@pytest.mark.parametrize(
    ("phi", "b", "tol"),
    [("identity", 4, 1e-13), ("identity", 1024, 1e-11), ("relu", 4, 1e-6), ("relu", 8, 1e-8), ("relu", 64, 1e-10)],
)
def test_the_general_quadrature_against_laplace(phi, b, tol):
    """The path for non-homogeneous phi, run on homogeneous phi (kinks included for relu), against the exact map:
    u = log kappa to tol (the accuracy the module docstring states)."""
    _, effective = resolve(phi)
    u = np.log(np.array([0.02, 0.5, 1.5, 4.0, 8.0]))
    assert np.allclose(module._Nested(effective, b)(u), module._laplace_step(effective, 1.0, b, u), rtol=0, atol=tol)


def test_result_is_json_ready_and_exported():
    r = outlier_state("relu", 64)
    out = json.loads(json.dumps(r.to_dict()))
    assert out["critical_batch_size"] == 52 and out["batch_size"] == 64 and out["method"] == "laplace"
    assert out["saddle"] == r.saddle and len(out["fixed_points"]) == 3
    assert bnmft.OutlierResult is module.OutlierResult and bnmft.meanfield.outlier_state is outlier_state
    assert outlier_state("relu", "inf").to_dict()["batch_size"] == "inf"


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: outlier_state("relu", 3), "batch_size"),
        (lambda: outlier_state("relu", 16.5), "batch_size"),
        (lambda: outlier_state("relu", "many"), "batch_size"),
        (lambda: outlier_state("nope", 16), "nope"),
        (lambda: outlier_state("relu", 16, gamma=0.0), "gamma"),
        (lambda: outlier_state("relu", 16, beta=math.nan), "beta"),
        (lambda: outlier_state("relu", 16).map(0.0), "rho"),
        (lambda: outlier_state("relu", 16).map(225.0), "rho"),
        (lambda: outlier_state("relu", 16).map([1.0, math.nan]), "rho"),
        (lambda: outlier_state("relu", 16).map("x"), "rho"),
        (lambda: outlier_state(lambda z: 0 * z + 1.0, 16), "phi"),
    ],
)
def test_bad_input_raises_input_error(call, name):
    with pytest.raises(InputError, match=name):
        call()
