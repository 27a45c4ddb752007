"""Every option of ``theory``, ``simulate``, ``residual``, ``design`` and ``conv`` either changes the result or is
refused (exit status 2, one line naming it) - in each mode of the command. Never silently ignored.

The options come from the parser itself, so a new option fails :func:`test_every_option_has_a_value` until it is
added here. "Changes the result": the JSON output differs from the mode's default once the option's own echo (a key
of its name) is removed - an option that is only echoed back has done nothing. Output options must write their file.
"""

import json

import pytest

from bnmft.cli import main
from bnmft.cli.app import build_parser

#: the modes of each command: a small, fast command line (JSON output)
MODES = {
    "theory": {
        "eps = 0": ["theory", "--phi", "relu", "-B", "8"],
        "eps > 0": ["theory", "--phi", "relu", "-B", "8", "--eps", "0.05"],
    },
    "simulate": {
        "width": ["simulate", "--phi", "relu", "-B", "8", "-N", "16", "-L", "8", "-K", "2"],
        "widths": ["simulate", "--phi", "relu", "-B", "8", "--widths", "16", "24", "32", "-L", "8", "-K", "2"],
    },
    "residual": {  # sigma_w != 1: there linear_first and bn_first differ
        "theory": ["residual", "--phi", "relu", "-B", "8", "-D", "3", "--sigma-w", "1.3"],
        "simulation": ["residual", "--phi", "relu", "-B", "8", "-D", "3", "--sigma-w", "1.3", "-N", "16",
                       "--networks", "2"],
    },
    "design": {  # tanh at B = 8 trains 52 layers: 60 needs a smaller gamma or an eps > 0
        "plain": ["design", "--phi", "tanh", "-B", "8", "-D", "60"],
        "residual": ["design", "--phi", "tanh", "-B", "8", "-D", "30", "--residual", "--sigma-w", "1.3"],
    },
    "conv": {
        "periodic": ["conv", "--phi", "relu", "-B", "4", "--spatial", "4"],
        "zero padding": ["conv", "--phi", "relu", "-B", "4", "--spatial", "4", "--padding", "zero", "--samples", "500"],
        "simulation": ["conv", "--phi", "relu", "-B", "4", "--spatial", "4", "-C", "4", "-L", "8", "-K", "2"],
    },
}  # fmt: skip
#: a value for every option (other than the required ones, --json, --help, --debug), unlike its default
VALUES = {
    "gamma": ["0.7"],
    "beta": ["0.3"],
    "alpha": ["2"],  # relu and tanh take no alpha: refused
    "slope": ["0.2"],
    "eps": ["0.1"],
    "sigma_w": ["1.5"],
    "method": ["quadrature"],
    "spatial": ["4x4"],
    "width": ["12"],
    "widths": ["12", "20", "28"],
    "init": ["orthogonal"],
    "sampler": ["conditional"],  # auto picks dense at these sizes
    "placement": ["after"],
    "detach_stats": [],
    "ghost_size": ["2"],
    "two_batches": [],
    "seed": ["5"],
    "dtype": ["float64"],
    "chunk": ["1"],
    "branch_depth": ["2"],
    "branch_scale": ["0.5"],
    "branch": ["linear_first"],
    "input_correlation": ["0.2"],
    "output_gradient": ["centred"],
    "criterion": ["10"],
    "networks": ["3"],
    "residual": [],
    "knobs": ["beta"],
    "kernel": ["1"],
    "padding": ["zero"],
    "samples": ["800"],
    "channels": ["3"],
    "depth": ["7"],
}
#: values for one mode, where the common one is that mode's own setting
MODE_VALUES = {
    ("conv", "zero padding", "padding"): ["periodic"],
    ("conv", "periodic", "padding"): ["zero", "--samples", "500"],  # fewer Monte Carlo draws than the default
    ("conv", "simulation", "padding"): ["zero", "--samples", "500"],
}
#: where the work runs, not what it computes (cuda where there is none is refused; on a GPU, rounding differs)
NOT_RESULTS = {"device"}
#: output options: the file they name must be written
OUTPUTS = {"plot": "figure.png", "out": "outdir"}
SKIP = {"help", "debug", "json"}


def _options(command: str) -> list:
    parser = build_parser()
    return [a for a in parser.commands.choices[command].options if a.dest not in SKIP and not a.required]


CASES = [
    pytest.param(command, mode, action.dest, action.option_strings[0], id=f"{command}-{mode}-{action.dest}")
    for command, modes in MODES.items()
    for mode in modes
    for action in _options(command)
    if action.dest not in NOT_RESULTS and not (action.nargs == 0 and action.option_strings[0] in modes[mode])
]  # a flag the mode already sets cannot change it


def _strip(value, key: str):
    """The JSON without the option's own echo (keys named like it, at any level)."""
    if isinstance(value, dict):
        return {k: _strip(v, key) for k, v in value.items() if k != key}
    if isinstance(value, list):
        return [_strip(v, key) for v in value]
    return value


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse refuses by exiting
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def defaults():
    """The JSON of each mode without any extra option (computed once)."""
    return {}


def test_every_option_has_a_value():
    for command in MODES:
        missing = [a.dest for a in _options(command) if a.dest not in VALUES | OUTPUTS and a.dest not in NOT_RESULTS]
        assert not missing, f"bnmft {command}: add a value for {missing} to VALUES (and check it applies)"


@pytest.mark.parametrize(("command", "mode", "dest", "flag"), CASES)
def test_option_changes_the_result_or_is_refused(command, mode, dest, flag, defaults, tmp_path, capsys):
    base = MODES[command][mode]
    if (command, mode) not in defaults:
        code, out, err = _run([*base, "--json"], capsys)
        assert code == 0, err
        defaults[command, mode] = json.loads(out)
    value = [str(tmp_path / OUTPUTS[dest])] if dest in OUTPUTS else MODE_VALUES.get((command, mode, dest), VALUES[dest])
    argv = [*base, flag, *value, "--json"]
    code, out, err = _run(argv, capsys)
    if code == 2:  # refused: one line naming the option (argparse's own message names it too)
        assert err.count("\n") == 1 and "Traceback" not in err, err
        return
    assert code == 0, f"{argv}: exit {code}\n{err[-2000:]}"
    if dest in OUTPUTS:
        assert (tmp_path / OUTPUTS[dest]).exists(), f"{flag} wrote nothing"
        return
    assert _strip(json.loads(out), dest) != _strip(defaults[command, mode], dest), f"{flag} {value} is ignored"


# --- options outside their mode: refused, naming the option and the mode (issue 22)

OUT_OF_MODE = [
    (["theory", "--phi", "relu", "-B", "8", "--sigma-w", "2"], "--sigma-w", "--eps > 0"),
    (["theory", "--phi", "relu", "-B", "8", "--eps", "0.1", "--method", "quadrature"], "--method", "eps = 0"),
    (["simulate", "--phi", "relu", "-B", "8", "--widths", "8", "16", "32", "-L", "8", "-K", "2", "--out", "x"], "--out",
     "--width"),
    (["residual", "--phi", "relu", "-B", "8", "-D", "3", "--dtype", "float64"], "--dtype", "--networks"),
    (["residual", "--phi", "relu", "-B", "8", "-D", "3", "--branch", "linear_first"], "--branch", "--eps > 0"),
    (["design", "--phi", "tanh", "-B", "8", "-D", "30", "--branch-depth", "1"], "--branch-depth/-K", "--residual"),
    (["design", "--phi", "tanh", "-B", "8", "-D", "30", "--branch-scale", "0.5"], "--branch-scale", "--residual"),
    (["design", "--phi", "tanh", "-B", "8", "-D", "30", "--knobs", "gamma", "--gamma", "0.5"], "--gamma", "knob"),
    (["design", "--phi", "tanh", "-B", "8", "-D", "30", "--knobs", "gamma", "--sigma-w", "2"], "--sigma-w", "eps"),
    (["conv", "--phi", "relu", "-B", "4", "--spatial", "4", "--kernel", "1", "--padding", "zero"], "--padding",
     "--kernel > 1"),
    (["conv", "--phi", "relu", "-B", "4", "--spatial", "8", "--kernel", "5"], "--kernel", "--padding zero"),
    (["conv", "--phi", "relu", "-B", "4", "--spatial", "4", "--sigma-w", "2"], "--sigma-w", "--eps > 0"),
    (["symmetry", "-B", "8", "--gamma", "2"], "--gamma", "--phi"),
    (["symmetry", "-B", "8", "--phi", "elu", "--parameter", "alpha", "--bracket", "1", "3", "--alpha-max", "4"],
     "--alpha-max", "--bracket"),
    (["propagate", "--phi", "relu", "--input", "{batch}", "--depth", "2", "--method", "laplace", "--seed", "1"],
     "--seed", "monte_carlo"),
    (["theory", "--phi", "relu", "-B", "8", "--spatial", ""], "--spatial", "bnmft conv"),
    (["theory", "--phi", "relu", "-B", "8", "--plot", ""], "--plot", "empty"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "flag", "mode"), OUT_OF_MODE, ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_option_outside_its_mode_is_refused(argv, flag, mode, tmp_path, capsys):
    import numpy as np

    np.save(tmp_path / "batch.npy", np.random.default_rng(0).standard_normal((8, 6)))
    code, out, err = _run([a.format(batch=tmp_path / "batch.npy") for a in argv], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and flag in err and mode in err, err


def test_an_option_in_its_mode_still_works(capsys):
    """The table refuses options by mode, not by name: the same options in their modes run."""
    for argv in (
        ["theory", "--phi", "relu", "-B", "8", "--eps", "0", "0.1", "--sigma-w", "2", "--method", "quadrature"],
        ["design", "--phi", "tanh", "-B", "8", "-D", "30", "--residual", "-K", "1", "--branch-scale", "0.5"],
        ["conv", "--phi", "relu", "-B", "4", "--spatial", "8", "--kernel", "5", "--padding", "zero", "--samples", "99"],
    ):
        code, out, err = _run([*argv, "--json"], capsys)
        assert code == 0, err
        assert json.loads(out)


# --- overflow and NaN in residual and design: named, never a traceback, a warning or a NaN (issue 22)


@pytest.mark.parametrize(
    ("kwargs", "argument", "allowed"),
    [
        ({"criterion": 1000.0}, "criterion", "(0, 700]"),
        ({"criterion": 1e300}, "criterion", "(0, 700]"),
        ({"sigma_w": 1e-200}, "sigma_w", "[1e-100, 1e+100]"),
        ({"sigma_w": 1e200}, "sigma_w", "[1e-100, 1e+100]"),
        ({"branch_scale": 1e200}, "branch_scale", "[0, 1e+100]"),
        ({"eps": 1e308}, "eps", "smaller eps"),
        ({"gamma": 1e200}, "gamma", "overflow"),
        ({"phi": "elu", "alpha": 1e200}, "alpha", "overflow"),
        ({"branch_scale": 1e100, "sigma_w": 1e100}, "branch_scale", "overflow"),
    ],
)
def test_residual_theory_names_what_overflows(kwargs, argument, allowed):
    import warnings

    import bnmft

    kwargs = {"phi": "relu", **kwargs}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(bnmft.InputError) as err:
            bnmft.residual_theory(kwargs.pop("phi"), 8, depth=5, **kwargs)
    assert argument in str(err.value) and allowed in str(err.value)
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], [str(w.message) for w in caught]


def test_residual_numbers_are_finite_in_the_collapsed_phase():
    """eps above the plain network's kappa_c: lambda_G is the eps theory's (it was NaN), every number finite."""
    import math

    import bnmft

    for phi in ("relu", "tanh"):
        r = bnmft.residual_theory(phi, 8, depth=10, eps=10.0)
        assert r.lambda_G == pytest.approx(bnmft.theory(phi, 8, eps=10.0).lambda_G, rel=1e-10)
        assert math.isfinite(r.exponent) and r.max_trainable_depth is not None
        assert all(math.isfinite(row["log_grad_ratio"]) for row in r.blocks)


@pytest.mark.parametrize("branch", ["bn_first", "linear_first"])
def test_residual_trainable_depth_is_the_exact_crossing(branch):
    """The depth search past the given blocks (the m -> infinity limit) agrees with the exact block-by-block ratio,
    also for linear_first with sigma_w != 1 (whose limit was off by sigma_w^2)."""
    import bnmft

    kw = dict(branch=branch, sigma_w=0.6, criterion=6.0, branch_depth=2)
    found = bnmft.residual_theory("relu", 8, depth=5, **kw).max_trainable_depth
    exact = [
        bnmft.residual_theory("relu", 8, depth=d, trainable_depth=False, **kw).blocks[0]["log_grad_ratio"]
        for d in (found, found + 1)
    ]
    assert exact[0] <= 6.0 < exact[1]


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"beta": 1e308}, "beta=1e+308"),
        ({"phi": "relu", "beta": 1e308}, "beta=1e+308"),
        ({"phi": "relu", "beta": 1e308, "residual_network": True}, "beta=1e+308"),
        ({"gamma": 0.0, "knobs": ["beta"]}, "gamma"),
        ({"residual_network": True, "depth": 100_001}, "depth must be <= 100000"),
        ({"phi": "alpha_relu", "alpha": -1.0, "residual_network": True}, "alpha must be > 0"),
        ({"branch_depth": 2}, "branch_depth applies to residual networks only"),
        ({"criterion": 8.0}, "criterion applies to residual networks only"),
    ],
)
def test_design_names_the_bad_setting_before_searching(kwargs, argument):
    import warnings

    import bnmft

    kwargs = {"phi": "tanh", "depth": 50, **kwargs}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(bnmft.InputError) as err:
            bnmft.design(kwargs.pop("phi"), 8, kwargs.pop("depth"), **kwargs)
    assert argument in str(err.value) and "no setting reaches" not in str(err.value)
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)]


# --- older paths: heatmaps of odd stores, a failed sweep's new store (issue 22)


def _store(path, specs: dict, accuracy="0.5"):
    from bnmft.experiments.store import Store

    store = Store(path)
    for name, spec in specs.items():
        store.register_sweep(name, spec)
        for depth in (2, 4):
            config = {"depth": depth, "batch_size": 8, "phi": "relu", "dataset": "mnist"}
            result = f'{{"test_accuracy": {accuracy}}}'
            row = (f"{name}{depth}", name, json.dumps(config), result)
            store.db.execute("INSERT INTO cells VALUES (?, ?, ?, ?, 0.5, 0, 0.0)", row)
    store.close()


def test_heatmap_of_odd_sweeps(tmp_path, capsys):
    spec = {"x": "batch_size", "base": {}, "grid": {}, "seeds": [0]}
    _store(tmp_path / "nox.db", {"s": {"base": {}, "grid": {}}})
    code, _, err = _run(["heatmap", "--store", str(tmp_path / "nox.db"), "--out", str(tmp_path / "a.png")], capsys)
    assert code == 2 and err.count("\n") == 1 and "no x axis" in err
    _store(tmp_path / "nan.db", {"s": spec}, accuracy="NaN")
    code, _, err = _run(["heatmap", "--store", str(tmp_path / "nan.db"), "--out", str(tmp_path / "b.png")], capsys)
    assert code == 2 and "test_accuracy in [0, 1]" in err and not (tmp_path / "b.png").exists()
    _store(tmp_path / "slash.db", {"fig/3a": spec, "plain": spec})  # a name with a slash: a file name without it
    code, _, err = _run(["heatmap", "--store", str(tmp_path / "slash.db"), "--out", str(tmp_path / "h.png")], capsys)
    assert code == 0, err
    assert (tmp_path / "h_fig_3a.png").stat().st_size > 1000 and (tmp_path / "h_plain.png").exists()


CIFAR_SWEEP = """
name = "c"
[base]
dataset = "cifar10"
data_dir = "{data}"
phi = "relu"
width = 8
lr = "1e-3*B"
epochs = 1
train_subset = 32
test_subset = 32
[grid]
depth = [2]
batch_size = [8]
"""


def test_failed_sweep_leaves_no_new_store(tmp_path, monkeypatch, capsys):
    from bnmft.experiments import data

    monkeypatch.setattr(data, "CIFAR_URL", (tmp_path / "no-such-archive.tar.gz").as_uri())  # the download fails
    (tmp_path / "c.toml").write_text(CIFAR_SWEEP.format(data=tmp_path / "data"))
    argv = ["sweep", str(tmp_path / "c.toml"), "--workers", "1", "--json", "--store"]
    code, _, err = _run([*argv, str(tmp_path / "new.db")], capsys)
    assert code == 2 and "cifar10" in err
    assert not list(tmp_path.glob("new.db*"))
    _store(tmp_path / "old.db", {"s": {"x": "batch_size"}})  # a store that was there before is kept, cells and all
    code, _, _ = _run([*argv, str(tmp_path / "old.db")], capsys)
    assert code == 2 and (tmp_path / "old.db").exists()


# --- standard output closed or broken (issue 22)


def _bnmft(*args: str) -> list[str]:
    import sys

    return [sys.executable, "-m", "bnmft.cli", *args]


def test_closed_pipe_ends_quietly_with_141():
    """``bnmft theory ... | head -1``: the reader goes after one line; the rest is not an error to report."""
    import subprocess

    sizes = [str(b) for b in range(4, 1500)]  # about 150 kB of table: more than a pipe holds
    proc = subprocess.Popen(_bnmft("theory", "--phi", "relu", "-B", *sizes), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    assert proc.stdout.readline().startswith(b"phi = relu")
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141
    assert err == b""


def test_closed_stdout_is_an_error():
    """``bnmft theory ... >&-``: the results would be lost, so the command says so (one line, status 2)."""
    import os
    import subprocess

    proc = subprocess.run(_bnmft("theory", "--phi", "relu", "-B", "8"), stderr=subprocess.PIPE,
                          preexec_fn=lambda: os.close(1), timeout=120)  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.count(b"\n") == 1 and b"standard output is closed" in proc.stderr


def test_heatmap_of_a_sweep_reads_the_cell_it_shares_with_another(tmp_path, capsys, monkeypatch):
    # a cell two sweeps share is stored once, under the first (as Fig 3a's column in Figs 5b-5d): the second sweep's
    # heatmap reads it by its key
    from bnmft.experiments.store import Store, cell_key
    from bnmft.experiments.sweep import parse_sweep
    from bnmft.report import plots

    base = {"x": "gamma", "base": {"dataset": "mnist", "batch_size": 8, "width": 16}}
    sweeps = [parse_sweep(base | {"name": "a", "grid": {"depth": [2, 4], "gamma": [1.0]}}),
              parse_sweep(base | {"name": "b", "grid": {"depth": [2, 4], "gamma": [0.5, 1.0]}})]  # fmt: skip
    store = Store(tmp_path / "s.db")
    for sweep in sweeps:
        store.register_sweep(sweep.name, sweep.to_dict())
        for config in sweep.cells():
            store.add(sweep.name, cell_key(config), config, {"test_accuracy": 0.5})  # the first add keeps a cell
    assert len(store.results("b")) == 2
    store.close()
    seen = {}
    monkeypatch.setattr(plots, "plot_heatmap", lambda results, x, target, title: seen.setdefault(title, results))
    code, _, err = _run(["heatmap", "--store", str(tmp_path / "s.db"), "--out", str(tmp_path / "h.png")], capsys)
    assert code == 0, err
    assert sorted((r["config"]["depth"], r["config"]["gamma"]) for r in seen["b"]) == [(2, 0.5), (2, 1.0), (4, 0.5),
                                                                                      (4, 1.0)]  # fmt: skip


def test_heatmap_of_a_sweep_too_big_for_this_machine_or_of_an_unknown_field(tmp_path, capsys, monkeypatch):
    # a sweep trained on a bigger machine plots here (no memory check); a grid this version cannot enumerate falls
    # back, with a note, to the cells stored under the sweep's name
    from bnmft.report import plots

    big = {"x": "batch_size", "base": {"width": 20000}, "grid": {"depth": [100]}, "seeds": [0]}
    odd = {"x": "batch_size", "base": {"colour": "red"}, "grid": {"depth": [2]}, "seeds": [0]}
    _store(tmp_path / "s.db", {"big": big, "odd": odd})
    seen = {}
    monkeypatch.setattr(plots, "plot_heatmap", lambda results, x, target, title: seen.setdefault(title, results))
    code, _, err = _run(["heatmap", "--store", str(tmp_path / "s.db"), "--out", str(tmp_path / "h.png")], capsys)
    assert code == 0, err
    assert [len(seen["big"]), len(seen["odd"])] == [2, 2]  # _store puts depths 2 and 4 under each name
    assert "sweep 'odd': its grid cannot be enumerated here" in err and "big" not in err
