"""Every public entry point that takes phi gives the same answer for a specification with its parameters
(``"leaky_relu", slope=0.1``) as for the phi built first (``get_nonlinearity("leaky_relu", slope=0.1)``, passed
without parameters): phi and the options are resolved once, at the public boundary, and internal code calls
kernels (never the public functions with an already-built phi plus the raw parameters, which raised
"parameter 'slope' does not apply" - bnmft.design answered "no setting reaches depth 5", bnmft.conv_theory failed).

Also: relu is alpha_relu at alpha = 1 (closed forms checked against the elementary arc-cosine formulas written
here), and the residual branch scale is ``branch_scale`` (``alpha=`` deprecated unless phi takes an alpha)."""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, is_dataclass

import numpy as np
import pytest

import bnmft
from bnmft.cli import main

#: non-default parameters of the parametric nonlinearities (the others take none)
PARAMS = {"leaky_relu": {"slope": 0.1}, "alpha_relu": {"alpha": 1.5}, "elu": {"alpha": 0.7}}
#: BN's gamma and beta, off their defaults (every phi allows them)
BN = {"gamma": 1.3, "beta": 0.2}
NAMES = sorted(bnmft.nonlinearities())
CASES = [(name, bn) for name in NAMES for bn in ({}, BN)]


def canonical(value) -> str:
    """A comparable text of a result: dataclasses, arrays, tuples and floats (NaN included) spelt out exactly."""

    def plain(x):
        if is_dataclass(x) and not isinstance(x, type):
            return {k: plain(v) for k, v in asdict(x).items()}
        if isinstance(x, dict):
            return {str(k): plain(v) for k, v in x.items()}
        if isinstance(x, list | tuple):
            return [plain(v) for v in x]
        if isinstance(x, np.ndarray):
            return [plain(v) for v in x.tolist()] if x.ndim else plain(x.item())
        if isinstance(x, float | np.floating):
            return repr(float(x))
        return x

    return json.dumps(plain(value), sort_keys=True, default=repr)


def outcome(fn, *args, **kwargs) -> str:
    """The result, or the InputError's message: both routes must agree on either."""
    try:
        return canonical(fn(*args, **kwargs))
    except bnmft.InputError as err:
        return f"InputError: {err}"


def both(fn, name: str, *args, bn: dict | None = None, **kwargs) -> tuple[str, str]:
    """fn with (name, its parameters) and with the phi built first (no parameters)."""
    bn = bn or {}
    params = PARAMS.get(name, {})
    built = bnmft.get_nonlinearity(name, **params)
    return outcome(fn, name, *args, **params, **bn, **kwargs), outcome(fn, built, *args, **bn, **kwargs)


@pytest.mark.parametrize(("name", "bn"), CASES)
def test_theory_engine_resolves_phi_once(name, bn):
    for b in (6, math.inf):
        spec, built = both(bnmft.theory, name, b, bn=bn)
        assert spec == built
    spec, built = both(bnmft.theory, name, 6, bn=bn, eps=0.05)
    assert spec == built
    spec, built = both(bnmft.theory_table, name, [5, 8], bn=bn)
    assert spec == built
    spec, built = both(bnmft.eps_theory, name, 6, bn=bn, kappa=0.05)
    assert spec == built
    spec, built = both(bnmft.spherical_moments, name, 6, bn=bn)
    assert spec == built
    spec, built = both(bnmft.gegenbauer_series, name, 6, bn=bn, degree=20, nodes=40)
    assert spec == built
    spec, built = both(bnmft.conv_theory, name, 4, bn=bn, spatial=(3,))
    assert spec == built
    spec, built = both(bnmft.residual_theory, name, 6, bn=bn, depth=3, trainable_depth=False)
    assert spec == built
    sigma = np.eye(5) + 0.2
    spec, built = both(bnmft.gram_map, name, sigma, bn=bn)
    assert spec == built
    inputs = np.random.default_rng(1).standard_normal((6, 7))
    spec, built = both(bnmft.propagate, name, inputs, 2, bn=bn, samples=64)
    assert spec == built


@pytest.mark.parametrize("name", NAMES)
def test_planner_and_symmetry_resolve_phi_once(name):
    spec, built = both(bnmft.design, name, 8, 5, knobs=["eps"])
    assert spec == built

    def crossing(phi, *args, **kwargs):  # the numbers (phi and params echo the call as given)
        s = bnmft.symmetry_breaking(phi, *args, **kwargs)
        return s.critical, s.eigenvalue

    spec, built = both(crossing, name, 8, parameter="gamma", bracket=(0.9, 1.1))
    assert spec == built


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_the_reported_bugs(name):
    """The planner and the conv theory once refused parameters that theory takes (the phi was resolved twice)."""
    params = PARAMS[name]
    built = bnmft.get_nonlinearity(name, **params)
    planned = bnmft.design(name, 8, 5, **params)
    assert canonical(planned) == canonical(bnmft.design(built, 8, 5))
    assert planned.options  # e.g. leaky_relu(slope=0.1): gamma = 4 reaches depth 5
    conv = bnmft.conv_theory(name, 4, spatial=(8,), **params)
    assert conv.lambda_G == bnmft.theory(built, 32).lambda_G  # periodic padding: the MLP at B x positions


def test_design_leaky_relu_reaches_depth_5_with_gamma_4():
    result = bnmft.design("leaky_relu", 8, 5, slope=0.1)
    gamma = next(o for o in result.options if o.knob == "gamma")
    assert gamma.value == 4.0 and gamma.at_bound
    assert gamma.predicted_depth == pytest.approx(
        16 / math.log(bnmft.theory("leaky_relu", 8, slope=0.1, gamma=4).lambda_G)
    )


@pytest.mark.parametrize("name", NAMES)
def test_simulators_theory_columns_resolve_phi_once(name):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from bnmft.simulate import simulate_conv, simulate_mlp, simulate_residual

    params = PARAMS.get(name, {})
    built = bnmft.get_nonlinearity(name, **params)
    size = {"width": 8, "depth": 8, "networks": 2, "seed": 3, "dtype": "float64"}

    def mlp(phi, **kw):
        r = simulate_mlp(phi, [4], **size, **kw)
        s = r.summaries[0]
        return s.lambda_G_theory, s.c_star_theory, s.q_star_theory, s.lambda_G_mean

    assert outcome(mlp, name, **params, **BN) == outcome(mlp, built, **BN)
    assert mlp(built, **BN)[0] == bnmft.theory(built, 4, **BN).lambda_G

    def residual(phi, **kw):
        r = simulate_residual(phi, 4, width=8, depth=3, networks=2, seed=3, dtype="float64", **kw)
        return [
            (row["stream_variance_theory"], row["log_grad_ratio_theory"], row["log_grad_ratio"]) for row in r.blocks
        ]

    assert outcome(residual, name, **params, **BN) == outcome(residual, built, **BN)

    def conv(phi, **kw):
        r = simulate_conv(phi, 2, spatial=(4,), channels=4, depth=8, networks=2, seed=3, dtype="float64", **kw)
        return {k: v for k, v in r.summary.items() if k.endswith("_theory")}, r.summary["lambda_G_mean"]

    assert outcome(conv, name, **params, **BN) == outcome(conv, built, **BN)


def cli_json(capsys, argv: list[str]):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def cli_flags(name: str) -> list[str]:
    return [text for k, v in PARAMS.get(name, {}).items() for text in (f"--{k}", str(v))]


@pytest.mark.parametrize("name", NAMES)
def test_cli_parameters_equal_the_built_phi(name, capsys):
    built = bnmft.get_nonlinearity(name, **PARAMS.get(name, {}))
    flags = cli_flags(name)
    out = cli_json(capsys, ["theory", "--phi", name, "-B", "6", "--gamma", "1.3", "--json", *flags])
    expected = bnmft.theory(built, 6, gamma=1.3).to_dict()
    assert canonical(out[0]) == canonical({k: expected[k] for k in out[0]})
    out = cli_json(capsys, ["residual", "--phi", name, "-B", "6", "-D", "3", "--branch-scale", "0.5", "--json", *flags])
    expected = bnmft.residual_theory(built, 6, depth=3, branch_scale=0.5).to_dict()
    assert canonical(out) == canonical(expected)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_cli_simulate_parameters_equal_the_built_phi(name, capsys):
    pytest.importorskip("torch")
    from bnmft.simulate import simulate_mlp

    built = bnmft.get_nonlinearity(name, **PARAMS[name])
    argv = ["simulate", "--phi", name, "-B", "4", "-N", "8", "-L", "8", "-K", "2", "--dtype", "float64", "--json"]
    out = cli_json(capsys, [*argv, *cli_flags(name)])[0]
    s = simulate_mlp(built, [4], width=8, depth=8, networks=2, dtype="float64").summaries[0]
    assert (out["lambda_G_theory"], out["c_star_theory"], out["lambda_G_mean"]) == (
        s.lambda_G_theory,
        s.c_star_theory,
        s.lambda_G_mean,
    )


# -- relu is alpha_relu at alpha = 1 --------------------------------------------------------------------------
def elementary_relu(b: float) -> dict[str, float]:
    """The relu closed forms from the elementary degree-1 arc-cosine kernel, written out here (independent of
    bnmft): J1(c) = (sqrt(1-c^2) + (pi - arccos c) c) / pi, J1'(c) = (pi - arccos c) / pi at c = -1/(B-1);
    q* = E[relu(x_1)^2] = 1/2 (x_1^2 has mean 1 under the batch law); mu* = q* (1 - J1(c));
    lambda_G = (B-1)(J1' + B - 1)/((B-3)(B-1)(1 - J1)) - 1/(B-3) (docs/theory.md section 3.4 at alpha = 1);
    lambda_M = B J1' / ((B+1)(1 - J1)), lambda_L = (B-2)/(B+1) + B J1' / ((B-1)(B+1)(1 - J1))."""
    c = -1.0 / (b - 1)
    j = (math.sqrt(1 - c * c) + (math.pi - math.acos(c)) * c) / math.pi
    dj = (math.pi - math.acos(c)) / math.pi
    return {
        "q_star": 0.5,
        "c_star": j,
        "mu_star": 0.5 * (1 - j),
        "lambda_G": (b - 1) * (dj + b - 1) / ((b - 3) * (b - 1) * (1 - j)) - 1 / (b - 3),
        "lambda_M": b * dj / ((b + 1) * (1 - j)),
        "lambda_L": (b - 2) / (b + 1) + b * dj / ((b - 1) * (b + 1) * (1 - j)),
    }


@pytest.mark.parametrize("b", [4, 5, 8, 32, 1000])
def test_relu_is_alpha_relu_at_one_with_the_elementary_values(b):
    relu, general = bnmft.theory("relu", b), bnmft.theory("alpha_relu", b, alpha=1.0)
    assert relu.method == general.method == relu.forward_method == general.forward_method == "closed_form"
    for key, value in elementary_relu(b).items():
        assert getattr(relu, key) == pytest.approx(value, rel=1e-12, abs=1e-15), key
        assert getattr(general, key) == pytest.approx(value, rel=1e-12, abs=1e-15), key
    assert relu.params == {} and general.params == {"alpha": 1.0}
    # the quadrature (the general path for any phi) agrees to its accuracy
    assert bnmft.theory("relu", b, method="quadrature").lambda_L == pytest.approx(relu.lambda_L, rel=1e-9)


def test_relu_nonlinearity_is_the_alpha_relu_rule():
    relu, general = bnmft.get_nonlinearity("relu"), bnmft.get_nonlinearity("alpha_relu", alpha=1.0)
    assert relu.name == "relu" and relu.family == general.family == "alpha_relu"
    assert relu.homogeneous_degree == general.homogeneous_degree == 1.0
    z = np.linspace(-3, 3, 61)
    assert np.array_equal(relu(z), general(z)) and np.array_equal(relu.derivative(z), general.derivative(z))


# -- the residual branch scale is branch_scale ----------------------------------------------------------------
def test_branch_scale_and_the_deprecated_alpha():
    new = bnmft.residual_theory("relu", 8, depth=5, branch_scale=0.5)
    assert new.branch_scale == 0.5 and [r["branch_scale"] for r in new.blocks] == [0.5] * 5 + [None]
    with pytest.warns(DeprecationWarning, match="branch_scale"):
        old = bnmft.residual_theory("relu", 8, depth=5, alpha=0.5)
    assert canonical(old) == canonical(new)
    with pytest.warns(DeprecationWarning):
        assert new.alpha == 0.5
    with pytest.raises(bnmft.InputError, match="branch_scale"), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        bnmft.residual_theory("relu", 8, depth=5, alpha=0.5, branch_scale=0.5)
    # phi with an alpha of its own: alpha= is phi's (no warning), the branch scale stays 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        elu = bnmft.residual_theory("elu", 8, depth=5, alpha=0.5)
    assert elu.phi == "elu(alpha=0.5)" and elu.branch_scale == 1.0
    assert canonical(elu) == canonical(bnmft.residual_theory(bnmft.get_nonlinearity("elu", alpha=0.5), 8, depth=5))


def test_design_branch_scale_knob():
    result = bnmft.design("relu", 8, 200, residual_network=True, knobs=["branch_scale"])
    assert [o.knob for o in result.options] == ["branch_scale"] and "branch_scale" in result.settings
    with pytest.warns(DeprecationWarning):
        old = bnmft.design("relu", 8, 200, residual_network=True, knobs=["alpha"])
    assert canonical(old) == canonical(result)


def test_cli_residual_alpha_never_silently_the_branch_scale(capsys):
    assert main(["residual", "--phi", "relu", "-B", "8", "-D", "4", "--alpha", "0.5"]) == 2
    assert "--branch-scale" in capsys.readouterr().err
    out = cli_json(capsys, ["residual", "--phi", "alpha_relu", "-B", "8", "-D", "4", "--alpha", "1.5", "--json"])
    assert out["phi"] == "alpha_relu(alpha=1.5)" and out["branch_scale"] == 1.0
    out = cli_json(capsys, ["design", "--phi", "relu", "-B", "8", "-D", "200", "--residual", "--knobs", "branch_scale",
                            "--json"])  # fmt: skip
    assert out["options"][0]["knob"] == "branch_scale"
