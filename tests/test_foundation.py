"""The foundation's contracts: one meaning per public name, one phi specification everywhere, torch only at the
edge, one error type, and the one-implementation rules (checked by looking at the code and by running it)."""

import ast
import importlib
import inspect
import json
import math
import pkgutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import bnmft
from bnmft import InputError
from bnmft.meanfield.eps import m_prime_at_zero
from bnmft.meanfield.moments import spherical_moments
from bnmft.meanfield.quadrature import tensor_rule_applies
from bnmft.nonlinearity import from_callable

SRC = Path(bnmft.__file__).parent


def _modules(package) -> list:
    return [
        importlib.import_module(f"{package.__name__}.{m.name}")
        for m in pkgutil.iter_modules(package.__path__)
        if m.name != "__main__"
    ]


def test_no_public_name_is_both_a_function_and_a_module():
    import bnmft.cli
    import bnmft.experiments
    import bnmft.meanfield
    import bnmft.nonlinearity
    import bnmft.report
    import bnmft.simulate

    packages = (bnmft, bnmft.meanfield, bnmft.nonlinearity, bnmft.simulate, bnmft.cli, bnmft.report, bnmft.experiments)
    for package in packages:
        for name in getattr(package, "__all__", ()):
            assert hasattr(package, name), f"{package.__name__}.{name} is in __all__ but missing"
        submodules = {m.__name__.rsplit(".", 1)[1] for m in _modules(package)}
        functions = {n for n in dir(package) if not n.startswith("_") and inspect.isfunction(getattr(package, n))}
        assert not functions & submodules, f"{package.__name__}: {functions & submodules} name both"
    assert inspect.isfunction(bnmft.theory) and inspect.ismodule(bnmft.meanfield)
    # the README's attribute chains
    assert bnmft.meanfield.symmetry.symmetry_breaking_alpha is bnmft.symmetry_breaking_alpha
    assert bnmft.meanfield.gram.gram_map is bnmft.gram_map


SPECS = {
    "name": ("tanh", {}),
    "expression": ("tanh(z)", {}),
    "Nonlinearity": (bnmft.get_nonlinearity("tanh"), {}),
    "callable": (np.tanh, {"derivative": lambda z: 1 / np.cosh(z) ** 2}),
}


@pytest.mark.parametrize("kind", list(SPECS))
def test_every_entry_point_takes_every_phi_specification(kind):
    spec, extra = SPECS[kind]
    ref = bnmft.theory("tanh", 5, gamma=0.7)
    assert bnmft.theory(spec, 5, gamma=0.7, **extra).lambda_G == pytest.approx(ref.lambda_G, rel=1e-10)
    sigma = np.eye(5) + 0.3
    want = bnmft.gram_map("tanh", sigma, gamma=0.7).value
    np.testing.assert_allclose(bnmft.gram_map(spec, sigma, gamma=0.7, **extra).value, want, rtol=1e-10)
    p = bnmft.propagate(spec, sigma, 2, gram=True, gamma=0.7, **extra)
    np.testing.assert_allclose(p.grams[1], want, rtol=1e-10)
    e = bnmft.eps_theory(spec, 5, kappa=0.3, gamma=0.7, **extra)
    assert e.lambda_G == pytest.approx(bnmft.theory("tanh", 5, gamma=0.7, eps=0.3).lambda_G, rel=1e-8)
    s = bnmft.symmetry_breaking(spec, 6, parameter="gamma", bracket=(0.5, 3.0), **extra)
    assert s.critical == math.inf  # tanh(gamma z) stays BSB1-stable (tested over the whole bracket)
    if kind != "callable":
        assert bnmft.spherical_moments(spec, 5).mu == pytest.approx(bnmft.spherical_moments("tanh", 5).mu, rel=1e-12)
        assert bnmft.gegenbauer_series(spec, 8).lambda_G == pytest.approx(bnmft.theory("tanh", 8).lambda_G, rel=1e-8)


def test_symmetry_breaking_general_rule_reproduces_the_alpha_relu_case():
    s = bnmft.symmetry_breaking("alpha_relu", 8, parameter="alpha", bracket=(1.0, 16.0))
    assert s.critical == pytest.approx(bnmft.symmetry_breaking_alpha(8).alpha_star, abs=1e-8)
    t = bnmft.theory("alpha_relu", 8, alpha=s.critical)
    assert max(t.lambda_L, t.lambda_M) == pytest.approx(1.0, abs=1e-7)
    with pytest.raises(InputError, match="lower end must be stable"):
        bnmft.symmetry_breaking("alpha_relu", 8, parameter="alpha", bracket=(2.0, 3.0))


def test_no_torch_in_the_numpy_core():
    core = [SRC / "options.py", SRC / "errors.py", *sorted((SRC / "nonlinearity").glob("*.py"))]
    core += sorted((SRC / "meanfield").glob("*.py"))
    for path in core:
        assert "torch" not in path.read_text(), path


def test_only_the_simulator_and_the_experiments_import_torch():
    """The CLI and the report drive torch through bnmft.simulate / bnmft.experiments, never import it themselves."""
    import ast

    for path in sorted(SRC.rglob("*.py")):
        if path.relative_to(SRC).parts[0] in ("simulate", "experiments"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            assert not any(n == "torch" or n.startswith("torch.") for n in names), f"{path} imports torch"


def test_heatmap_of_a_store_works_without_torch(tmp_path):
    from bnmft.experiments.config import TrainConfig
    from bnmft.experiments.store import Store, cell_key

    db = tmp_path / "runs.db"
    store = Store(db)
    spec = {"name": "s", "x": "batch_size", "base": {}, "grid": {}, "seeds": [0], "description": "fake"}
    store.register_sweep("s", spec)
    for depth in (2, 4):
        for b in (8, 16):
            cfg = TrainConfig(depth=depth, batch_size=b).to_dict()
            store.add("s", cell_key(cfg), cfg, {"test_accuracy": 0.5 + 0.01 * depth, "history": []})
    store.close()
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any import of torch now fails
        "from bnmft.cli import main\n"
        f"code = main(['heatmap', '--store', {str(db)!r}, '--out', {str(tmp_path / 'h.png')!r}])\n"
        "assert 'torch' not in sys.modules or sys.modules['torch'] is None\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "h.png").stat().st_size > 5000


def test_cli_turns_only_input_errors_into_status_2(monkeypatch, capsys):
    from bnmft.cli import app as cli

    assert cli.main(["theory", "--phi", "0*z + 1", "-B", "8"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "constant" in err and "Traceback" not in err

    def bug(args):
        raise ValueError("a bug in bnmft, not the user's input")  # numpy and scipy raise plain ValueErrors

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["nonlinearities"].set_defaults(func=bug)
    with pytest.raises(ValueError, match="a bug"):
        cli.main(["nonlinearities"])


def test_a_bug_shows_its_traceback_and_exit_status_1(tmp_path):
    code = (
        "import bnmft.cli.app as c, sys\n"
        "def bug(args): raise ZeroDivisionError('bug')\n"
        "p = c.build_parser(); c.build_parser = lambda: p\n"
        "p._subparsers._group_actions[0].choices['nonlinearities'].set_defaults(func=bug)\n"
        "sys.exit(c.main(['nonlinearities']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "Traceback" in done.stderr and "ZeroDivisionError" in done.stderr


def test_no_silent_except():
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ExceptHandler):
                assert node.type is not None, f"{path}:{node.lineno}: bare except"
                body = node.body
                silent = all(
                    isinstance(s, ast.Pass) or (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))
                    for s in body
                )
                assert not silent, f"{path}:{node.lineno}: an except that does nothing"


def test_every_input_check_raises_the_one_error_type():
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                name = getattr(node.exc.func, "id", None)
                assert name != "ValueError", f"{path}:{node.lineno}: raise InputError (or a bug's own type)"


@pytest.mark.parametrize(
    ("spec", "kwargs"),
    [
        ("leaky_relu", {"slope": 0.2}),
        ("elu", {}),
        ("selu", {}),
        ("abs(z)", {}),
        ("relu", {"gamma": -0.6}),
        ("relu(z) - 0.3 * relu(-z)", {}),
        ("tanh", {}),
        ("relu", {}),
    ],
)
def test_kappa_c_closed_form_against_the_quadrature_of_the_linearisation(spec, kwargs):
    """m'(0) = mu* of the piecewise-linear l z_- + r z_+ (eps.m_prime_at_zero), here by the 2-D quadrature."""
    _, phi = bnmft.nonlinearity.resolve(spec, **kwargs)
    right, left = float(phi.derivative(np.array(1e-9))), float(phi.derivative(np.array(-1e-9)))
    lin = from_callable(
        lambda z: np.where(z > 0, right * z, left * z), kinks=(0.0,), derivative=lambda z: np.where(z > 0, right, left)
    )
    for b in (4, 7, 32):
        assert m_prime_at_zero(phi, b) == pytest.approx(spherical_moments(lin, b).mu, rel=1e-12)
        assert bnmft.theory(spec, b, **kwargs).kappa_c == pytest.approx(m_prime_at_zero(phi, b) * (b - 1) / b)


@pytest.mark.parametrize("spec", ["tanh", "gelu", "elu", "relu(z + 0.5)", "sin", "softplus", "tanh(2*z) + 0.1*z"])
def test_large_b_tensor_rule_agrees_with_the_angle_rule(spec, monkeypatch):
    from bnmft.meanfield import moments

    for b in (256, 1024, 100_000):
        fast = spherical_moments(spec, b)
        monkeypatch.setattr(moments, "tensor_rule_applies", lambda *_: False)
        slow = spherical_moments(spec, b)
        monkeypatch.undo()
        for key in ("cross", "mu", "dd", "xd", "m_pair", "l_pair"):
            assert getattr(fast, key) == pytest.approx(getattr(slow, key), rel=1e-12, abs=1e-15), (spec, b, key)
    phi = bnmft.get_nonlinearity(spec)
    support = moments.find_support(phi, 100_000)
    assert tensor_rule_applies(100_000, support) and not tensor_rule_applies(32, moments.find_support(phi, 32))


def test_training_batch_norm_is_the_simulators():
    import torch

    from bnmft.experiments.training import BatchNorm
    from bnmft.simulate.network import batch_norm

    h = torch.randn(16, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 3 + 1
    bn = BatchNorm(5, 1e-3, 1.5, -0.25, ghost=4).double()  # gamma, beta exact in float32
    out = bn(h)
    np.testing.assert_allclose(out.detach(), 1.5 * batch_norm(h[None], 4, 1e-3, False)[0] - 0.25, rtol=1e-12)
    g = h.reshape(4, 4, 5)
    np.testing.assert_allclose(bn.running_mean, 0.1 * g.mean(dim=1).mean(dim=0), rtol=1e-12)
    manual = (g - g.mean(1, keepdim=True)) / torch.sqrt(g.var(1, unbiased=False, keepdim=True) + 1e-3)
    np.testing.assert_allclose(batch_norm(h[None], 4, 1e-3, False)[0], manual.reshape(16, 5), rtol=1e-10)


def test_theory_json_is_strict_json():
    text = json.dumps(bnmft.theory("relu", 8, eps=5.0).to_dict(), allow_nan=False)
    assert json.loads(text)["phase"] == "collapsed"


@pytest.mark.parametrize(
    ("package", "old", "new"),
    [
        ("bnmft", "residual", "residual_theory"),
        ("bnmft", "spatial_theory", "conv_theory"),
        ("bnmft.simulate", "simulate", "simulate_mlp"),
    ],
)
def test_old_public_names_still_work_with_a_deprecation_warning(package, old, new):
    module = importlib.import_module(package)
    with pytest.warns(DeprecationWarning, match=new):
        alias = getattr(module, old)
    assert alias is getattr(module, new)
    assert old not in getattr(module, "__all__", ())
    assert not hasattr(module, "no_such_name")  # the module's __getattr__ still refuses unknown names


def test_no_module_imports_another_modules_private_names():
    """A name with a leading underscore is its module's own; what other modules need has a public name (the
    kernels that take an already-resolved phi are ``*_resolved``)."""
    import ast

    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module != "__future__":
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                assert not private, f"{path.relative_to(SRC)} imports {private} from {node.module}"
