"""Hostile input on every subcommand: each bad value ends with exit status 2 and one line on stderr naming the
argument - never a traceback, never another exception, never a wrong answer with status 0.

A table of value classes per argument (non-numbers, NaN/inf, negative, zero, huge, huge integers, unwritable or
wrong-kind paths, corrupt files of each kind the commands read), crossed with the subcommands' arguments.
"""

import json
import os
import sqlite3
import sys

import numpy as np
import pytest

from bnmft.cli import main
from bnmft.experiments.store import Store

HUGE_INT = "9" * 40
NOT_NUMBERS = ["abc", "", "1,5", "0x", "nan", "inf", "-inf", "1e400"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    np.save(d / "batch.npy", np.random.default_rng(0).standard_normal((8, 12)))
    np.save(d / "other.npy", np.random.default_rng(1).standard_normal((8, 5)))
    np.save(d / "empty.npy", np.zeros((0,)))
    np.save(d / "zerod.npy", np.array(1.0))
    np.save(d / "complex.npy", np.ones((8, 4)) + 1j)
    np.save(d / "rows3.npy", np.ones((3, 4)))
    np.save(d / "nanbatch.npy", np.full((8, 4), np.nan))
    np.save(d / "objects.npy", np.array([{"a": 1}] * 8, dtype=object), allow_pickle=True)
    (d / "text.npy").write_text("not an array")
    (d / "zerobytes.npy").write_bytes(b"")
    (d / "text.db").write_text("not a database")
    (d / "binary.toml").write_bytes(bytes(range(256)))
    (d / "invalid.toml").write_text("name = [unclosed\n")
    (d / "afile").write_text("x")
    (d / "adir").mkdir()
    other = sqlite3.connect(d / "other.db")
    other.execute("CREATE TABLE cells (id INTEGER, stuff TEXT)")
    other.commit()
    other.close()
    for name, config, result in (
        ("corrupt.db", "{not json", '{"test_accuracy": 0.5}'),
        ("nokeys.db", '{"batch_size": 8}', '{"test_accuracy": 0.5}'),
        ("noacc.db", '{"depth": 2, "batch_size": 8}', '{"diverged": false}'),
    ):
        store = Store(d / name)
        store.register_sweep("s", {"name": "s", "x": "batch_size", "base": {}, "grid": {}, "seeds": [0]})
        store.db.execute("INSERT INTO cells VALUES ('k1', 's', ?, ?, 0.5, 0, 0.0)", (config, result))
        store.close()
    store = Store(d / "corruptspec.db")
    store.db.execute("INSERT INTO sweeps VALUES ('s', '{bad', 0.0)")
    store.close()
    return d


def _cases():
    theory = ["theory", "--phi", "relu", "-B", "8"]
    prop = ["propagate", "--phi", "relu", "--input", "{d}/batch.npy", "--depth", "1"]
    sym = ["symmetry", "-B", "8"]
    sim = ["simulate", "--phi", "relu", "-B", "8", "-N", "8", "-L", "10", "-K", "2"]
    sweep = ["sweep", "tiny", "--store", "{d}/new.db", "--workers", "1"]
    heat = ["heatmap", "--store", "{d}/nokeys.db", "--out", "{d}/h.png"]
    cases = []

    def add(base, option, values, replace=True):
        for v in values:
            argv = list(base)
            if option in argv and replace:
                argv[argv.index(option) + 1] = v
            elif option is not None:
                argv += [option, v]
            else:
                argv = [*argv, v]
            cases.append(argv)

    # theory
    add(theory, "-B", [*(v for v in NOT_NUMBERS if v != "inf"), "3", "2", "0", "-5", "4.5", HUGE_INT, "1000000001"])
    add(theory, "--gamma", [*NOT_NUMBERS, "0", "1e308", "1e200"])
    add(theory, "--beta", NOT_NUMBERS)
    add(theory, "--eps", [*NOT_NUMBERS, "-1", "-1e-300"])
    add(theory, "--sigma-w", [*NOT_NUMBERS, "0", "-1"])
    add(theory, "--method", ["magic", "closed-form"])
    add(
        theory,
        "--phi",
        [
            "",
            "tanhh",
            "__import__('os')",
            "z**",
            "log(z)",
            "abs(z)/z",
            "sqrt(abs(z))",
            "1" * 400 + "*z",
            "z" + "+z" * 600,
            "0*z+1",
        ],
    )
    add(["theory", "--phi", "exp(z**2)", "-B"], None, ["inf"])
    add(["theory", "--phi", "alpha_relu", "-B", "8"], "--alpha", [*NOT_NUMBERS, "-1", "0", "0.5", "1000"])
    add(["theory", "--phi", "tanh", "-B", "8"], "--alpha", ["2"])  # a parameter tanh does not take
    add(["theory", "--phi", "leaky_relu", "-B", "8"], "--slope", NOT_NUMBERS)
    add(["theory", "--phi", "relu", "-B", "8", "--eps", "1"], "--sigma-w", ["1e-200"])
    add(theory, "--plot", ["{d}/adir", "{d}/afile/x.png", "/dev/full", "/proc/no/such/dir/p.png"])
    # propagate
    add(
        prop,
        "--input",
        [
            "{d}/missing.npy",
            "{d}/text.npy",
            "{d}/empty.npy",
            "{d}/zerod.npy",
            "{d}/complex.npy",
            "{d}/rows3.npy",
            "{d}/nanbatch.npy",
            "{d}/objects.npy",
            "{d}/adir",
        ],
    )
    add(prop, "--input2", ["{d}/other.npy", "{d}/missing.npy", "{d}/complex.npy"])
    add(prop, "--depth", ["0", "-1", "abc", "1.5", "1000000000", HUGE_INT])
    add(prop, "--samples", ["0", "1", "abc", "1000000000000", HUGE_INT])
    add(prop, "--seed", ["-1", "abc", HUGE_INT])
    add(prop, "--method", ["magic"])
    add(["propagate", "--phi", "tanh", "--input", "{d}/batch.npy", "--depth", "1"], "--method", ["laplace", "sphere"])
    add(prop, "--save", ["{d}/adir", "/dev/full", "{d}/afile/g.npz"])
    add(prop, "--plot", ["{d}/adir", "/dev/full"])
    add(prop, "--gram", [], replace=False)
    cases.append([*prop, "--gram"])  # a 8 x 12 batch is not a Gram matrix
    # symmetry
    add(sym, "-B", ["3", "inf", "abc", HUGE_INT])
    add(sym, "--alpha-max", [*NOT_NUMBERS, "1", "0", "100"])
    add(sym, "--parameter", ["alpha"])  # without --phi
    add([*sym, "--phi", "alpha_relu", "--parameter", "alpha", "--bracket"], None, ["3"])
    cases.append([*sym, "--phi", "alpha_relu", "--parameter", "alpha", "--bracket", "3", "1"])
    cases.append([*sym, "--phi", "alpha_relu", "--parameter", "alpha", "--bracket", "nan", "2"])
    cases.append([*sym, "--phi", "alpha_relu", "--parameter", "alpha", "--bracket", "2", "3"])  # unstable at 2
    cases.append([*sym, "--phi", "tanh", "--parameter", "nosuch", "--bracket", "1", "2"])
    add(sym, "--plot", ["{d}/adir"])
    # simulate
    add(sim, "-B", ["1", "0", "abc", HUGE_INT])
    add(sim, "-N", ["0", "-1", "abc", "3000000000", HUGE_INT])
    cases.append([*sim, "--sampler", "dense", "-N", "10000000"])  # a 1e7 x 1e7 weight matrix (conditional: fine)
    add(sim, "-L", ["0", "3", "abc"])
    add(sim, "-K", ["0", "abc"])
    add(sim, "--eps", [*NOT_NUMBERS, "-1", "1e308"])
    add(sim, "--sigma-w", [*NOT_NUMBERS, "0", "1e300", "1e-200"])
    add(sim, "--gamma", ["0", "nan", "abc"])
    add(sim, "--ghost-size", ["3", "1", "0"])
    add(sim, "--seed", ["-1", "abc", HUGE_INT])
    add(sim, "--device", ["tpu", "cuda:7"])
    add(sim, "--dtype", ["float16"])
    add(sim, "--chunk", ["0", "abc"])
    add(sim, "--init", ["uniform"])
    add(sim, "--placement", ["middle"])
    add(sim, "--phi", ["nosuch", "0*z+1"])
    add(sim, "--out", ["{d}/afile"])
    add(sim, "--widths", ["64", "0", "abc"])  # with -N, a width 0, not a number
    cases.append(["simulate", "--phi", "relu", "-B", "8", "-L", "10", "-K", "2", "--widths", "8", "16"])  # 2 widths
    add(sim, "--sampler", ["magic"])
    cases.append([*sim, "--sampler", "conditional", "--init", "orthogonal"])
    # residual and design
    res = ["residual", "--phi", "relu", "-B", "8", "--depth", "5"]
    add(res, "-B", ["3", "inf", "abc", HUGE_INT, "1000000001"])
    add(res, "--depth", ["0", "-1", "abc", "1000000", HUGE_INT])
    add(res, "--branch-depth", ["0", "abc", "100000"])
    add(res, "--branch-scale", [*NOT_NUMBERS, "-1", "1,2", ",", "1,-1,1,1,1"])
    add(res, "--alpha", ["0.5"])  # relu takes no alpha: not silently the branch scale
    add(res, "--branch", ["post"])
    add(res, "--eps", ["-1", "nan"])
    add(res, "--input-correlation", ["1", "-0.5", "nan"])
    add(res, "--output-gradient", ["mean"])
    add(res, "--criterion", ["0", "-1", "inf"])
    add(res, "--gamma", ["0", "abc"])
    add(res, "--phi", ["nosuch", "0*z+1"])
    add(res, "--plot", ["{d}/adir", "/dev/full"])
    add(res, "--width", ["8"])  # without --networks
    add([*res, "--networks", "2", "--width"], None, ["0", "abc", "1000000000"])  # ~2 TiB of activations
    add([*res, "--networks", "2", "--width", "8"], "--dtype", ["float16"])
    add([*res, "--networks", "2", "--width", "8"], "--input-correlation", ["0.5"])
    des = ["design", "--phi", "relu", "-B", "8", "--depth", "20"]
    add(des, "-B", ["3", "inf", "abc"])
    add(des, "--depth", ["0", "abc", "100000"])  # 100000 plain layers: no setting reaches it
    add(des, "--knobs", ["alpha", "magic"])
    add(des, "--eps", ["-1"])
    add(des, "--phi", ["nosuch"])
    # convolutional: bnmft conv (theory; with -C -L -K a simulation), probe
    cv = ["conv", "--phi", "relu", "-B", "2", "--spatial", "4x4"]
    add(cv, "--spatial", ["0x4", "4y4", "", "4x4x4", "1", "300x300"])
    add(cv, "--kernel", ["2", "0", "abc", "9"])
    add(cv, "--padding", ["reflect"])
    add([*cv, "--padding", "zero"], "--eps", ["0.1"])
    add([*cv, "--padding", "zero"], "--samples", ["0", "4", "abc"])
    add(cv, "--samples", ["100"])  # periodic padding is exact: no Monte Carlo to size
    add(cv, "-B", ["inf", "0", "abc", "2.5"])
    add(["conv", "--phi", "relu", "-B", "1", "--spatial"], None, ["2", "3"])  # B x positions < 4
    add(cv, "--phi", ["nosuch", "0*z+1"])
    add(cv, "--slope", ["0.1", "nan"])  # relu takes no slope
    add(cv, "--gamma", ["0", "abc"])
    add(cv, "--plot", ["{d}/adir", "{d}/afile/x.png"])
    for flag, value in (("--seed", "1"), ("--dtype", "float64"), ("--device", "cpu"), ("--chunk", "2"),
                        ("--ghost-size", "2"), ("--out", "{d}/o")):  # fmt: skip
        cases.append([*cv, flag, value])  # a simulation option without a simulation: refused, never ignored
    cases.append([*cv, "--detach-stats"])
    sims = [*cv, "-C", "8", "-L", "8", "-K", "2"]
    add(sims, "-C", ["0", "abc"])
    add(sims, "--kernel", ["4", "7"])
    add(sims, "--seed", ["-1", "abc"])
    add(sims, "--device", ["tpu"])
    add(sims, "--dtype", ["float16"])
    add(sims, "--ghost-size", ["3", "0"])
    add(sims, "--out", ["{d}/afile"])
    add(sims, "--init", ["orthogonal"])  # MLP-only options are not conv options
    cases.append([*sims, "--two-batches"])
    cases.append([*sims, "-N", "8"])
    cases.append([*cv, "-L", "6", "-K", "2"])  # no -C
    cases.append([*cv, "-C", "8"])  # -C without -L and -K
    add(["conv", "--phi", "relu", "-B", "1", "--spatial", "4x4", "-C", "8", "-L", "6", "-K"], None, ["2"])  # B = 1
    for command in (["theory", "--phi", "relu", "-B", "4"], ["simulate", "--phi", "relu", "-B", "4", "-N", "8",
                                                               "-L", "6", "-K", "2"]):  # fmt: skip
        cases.append([*command, "--spatial", "4x4"])  # moved to bnmft conv
        cases.append([*command, "--kernel", "3"])
    add(["theory", "--phi", "relu", "-B"], None, ["2"])  # B = 2: the MLP theory needs B >= 4
    cases.append(["simulate", "--phi", "relu", "-B", "8", "-L", "6", "-K", "2"])  # no --width
    pr = ["probe", "--model", "nosuchmodule:make", "-B", "8"]
    add(pr, "--model", ["nosuchmodule:make", "json:nothing", "json", ":x", "json:dumps", "math:pi"])
    add(["probe", "--model", "torch.nn:ReLU", "-B"], None, ["0", "abc"])
    add(["probe", "--model", "torch.nn:ReLU", "-B", "4"], "--input-shape", ["0", "abc", "3x"])
    cases.append(["probe", "--model", "torch.nn:ReLU", "-B", "4", "--input-shape", "8"])  # nothing to probe
    cases.append(["probe", "--model", "torch.nn:ReLU", "-B", "4"])  # no input shape to infer
    add(["probe", "--model", "torch.nn:ReLU", "-B", "4", "--input-shape", "8"], "--steps", ["-1", "abc"])
    bn = ["probe", "--model", "tests.simulate.test_probe_data:bn_mlp"]
    add(bn, "-B", ["1"])  # batch statistics of one example
    add([*bn, "-B", "4"], "--plot", ["{d}/out.txt", "{d}/adir"])  # not a figure format; a directory
    add([*bn, "-B", "4"], "--draws", ["0", "abc"])
    bad_data = ["nosuch", "{d}/other.npy", "{d}/adir", "{d}/complex.npy", "{d}/nanbatch.npy", "{d}/text.npy",
                "{d}/objects.npy", "{d}/zerod.npy", "{d}/missing.npy"]  # fmt: skip
    add([*bn, "-B", "4"], "--data", bad_data)
    add([*bn, "-B", "9"], "--data", ["{d}/batch.npy"])  # 8 examples for a batch of 9
    cases.append(["probe", "--model", "tests.simulate.test_probe_data:Raising", "-B", "4", "--input-shape", "12"])
    # sweep
    add(["sweep"], None, ["{d}/missing.toml", "{d}/binary.toml", "{d}/invalid.toml", "{d}/adir", "nosuchpreset"])
    add(sweep, "--store", ["{d}/adir", "{d}/text.db", "{d}/other.db", "{d}/afile/x.db"])
    add(sweep, "--workers", ["0", "-1", "abc"])
    add(sweep, "--hours", ["0", "-1", "abc", "inf", "nan"])
    add(sweep, "--scheduler", ["nonsense://x", "tcp://::::"])
    add(sweep, "--device", ["tpu", "cuda", "cuda:9"])
    # heatmap
    add(
        heat,
        "--store",
        [
            "{d}/missing.db",
            "{d}/text.db",
            "{d}/other.db",
            "{d}/corrupt.db",
            "{d}/nokeys.db",
            "{d}/noacc.db",
            "{d}/corruptspec.db",
            "{d}/adir",
        ],
    )
    add(["heatmap", "--store", "{d}/noacc.db", "--out"], None, ["{d}/adir", "{d}/afile/x.png"])
    add(["heatmap", "--store", "{d}/noacc.db", "--out", "{d}/h.png"], "--sweep", ["nosuch"])
    # residual and design: overflow, hidden errors, options outside their mode (issue 22)
    res = ["residual", "--phi", "relu", "-B", "8", "-D", "5"]
    add(res, "--criterion", ["1000", "1e300", "0"])
    add(res, "--sigma-w", ["1e-200", "1e200"])
    add(res, "--eps", ["1e308"])
    add(res, "--branch-scale", ["1e200"])
    add(res, "--gamma", ["1e200"])
    add(["residual", "--phi", "elu", "-B", "8", "-D", "5"], "--alpha", ["1e200"])
    add(res, "--seed", ["3"])  # a simulation option without a simulation
    des = ["design", "--phi", "tanh", "-B", "8", "-D", "50"]
    add(des, "--beta", ["1e308"])
    add([*des, "--knobs", "beta"], "--gamma", ["0"])
    add([*des, "--residual"], "-D", ["100001"])
    add([*des, "--residual"], "--sigma-w", ["1e-200"])
    add(["design", "--phi", "alpha_relu", "-B", "8", "-D", "50", "--residual"], "--alpha", ["-1"])
    add(des, "-K", ["2"])  # residual options without --residual
    add(des, "--branch-scale", ["0.5"])
    add(["propagate", "--phi", "relu", "--depth", "1", "--input"], None, ["{d}/zerobytes.npy"])
    add(["reproduce", "--out"], None, [""])
    # reproduce, nonlinearities, the command itself
    add(["reproduce"], "--out", ["{d}/afile"])
    add(["reproduce"], "--preset", ["huge"])
    add(["reproduce", "--out", "{d}/r"], "--device", ["tpu", "cuda"])
    add(["reproduce", "--out", "{d}/r"], "--workers", ["0", "abc"])
    add(["budget"], "--out", ["{d}/afile", ""])
    add(["budget", "--out", "{d}/b"], "--plan", ["huge"])
    add(["budget", "--out", "{d}/b"], "--workers", ["0", "abc"])
    add(["budget", "--out", "{d}/b"], "--device", ["tpu"])
    add(["budget", "--out", "{d}/b", "--no-train"], "--workers", ["2"])  # options of training: refused, not ignored
    add(["budget", "--out", "{d}/b", "--no-train"], "--scheduler", ["tcp://localhost:8786"])
    add(["budget", "--out", "{d}/b", "--no-train"], "--device", ["cpu"])
    add(["budget", "--out", "{d}/b"], "--hours", ["0", "-2", "1h"])
    add(["budget", "--out", "{d}/b", "--no-train"], "--hours", ["1"])
    cases += [["nonlinearities", "--jsn"], ["nosuchcommand"], []]
    return cases


CASES = _cases()


def test_the_table_is_large():
    assert len(CASES) > 200


@pytest.mark.parametrize("argv", CASES, ids=lambda a: " ".join(a)[:80])
def test_bad_input_exits_2_with_one_line(argv, files, capsys):
    argv = [a.format(d=files) for a in argv]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse refuses by exiting
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2, f"exit {code} for {argv}\nstdout: {out[-500:]}\nstderr: {err[-2000:]}"
    assert err.count("\n") == 1 and err.startswith("bnmft"), f"not one line for {argv}:\n{err}"
    assert "Traceback" not in err


def test_json_output_of_bad_input_is_not_printed(files, capsys):
    assert main(["theory", "--phi", "relu", "-B", "8", "--gamma", "1e308", "--json"]) == 2
    out, _ = capsys.readouterr()
    assert out == ""
    with pytest.raises(json.JSONDecodeError):
        json.loads(out)


# --- the probe runs the user's code (issue 22): its exceptions shown as theirs in one line, --debug for the traceback

USER_MODELS = """
import torch

nn = torch.nn


def mlp():
    return nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4))


def linear():
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


def raising():
    raise ValueError("the factory refuses")


def _filled(value):
    model = mlp()
    with torch.no_grad():
        model[3].weight.fill_(value)
    return model


def nan_output():
    return _filled(float("nan"))


def inf_output():
    return _filled(1e38)  # overflows float32
"""


@pytest.fixture
def user_models(tmp_path, monkeypatch):
    """A working directory with three modules (unique names: imports stay cached): models, one that raises on
    import, one with a syntax error; sys.path restored afterwards (the probe adds the working directory)."""
    tag = tmp_path.name.replace("-", "_").lower()
    names = {"m": f"models_{tag}", "broken": f"broken_{tag}", "syntax": f"syntax_{tag}"}
    (tmp_path / f"{names['m']}.py").write_text(USER_MODELS)
    (tmp_path / f"{names['broken']}.py").write_text('raise RuntimeError("this module is broken")\n')
    (tmp_path / f"{names['syntax']}.py").write_text("def f(:\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delenv("BNMFT_DEBUG", raising=False)
    return names


@pytest.mark.parametrize(
    ("model", "extra", "named"),
    [
        (".{m}:mlp", [], ["--model must be MODULE:CALLABLE", "'.{m}:mlp'"]),
        ("{m}:", [], ["--model must be MODULE:CALLABLE"]),
        ("{broken}:mlp", [], ["--model {broken}:mlp", "RuntimeError: this module is broken"]),
        ("{syntax}:mlp", [], ["--model {syntax}:mlp", "SyntaxError: invalid syntax"]),
        ("{m}:raising", [], ["--model {m}:raising", "its factory raised ValueError: the factory refuses"]),
        ("{m}:raising", ["--draws", "3"], ["its factory raised ValueError: the factory refuses"]),
        ("{m}:nan_output", [], ["--model {m}:nan_output", "output", "NaN or inf"]),
        ("{m}:inf_output", ["--json"], ["--model {m}:inf_output", "output", "NaN or inf"]),
        ("{m}:mlp", ["-B", "1"], ["--batch-size must be an integer >= 2"]),
        ("{m}:linear", ["-B", "1"], ["--batch-size must be an integer >= 2"]),  # no BN: still batch statistics
        ("{m}:mlp", ["--seed", str(2**70)], ["--seed must be an integer in [0, 2^63)"]),
        ("{m}:mlp", ["--seed", str(2**63 - 1), "--draws", "2"], ["--seed + --draws - 1", "[0, 2^63)"]),
    ],
)
def test_the_probe_shows_the_users_errors_in_one_line(user_models, capsys, model, extra, named):
    code = main(["probe", "--model", model.format(**user_models), "-B", "8", *extra])
    out, err = capsys.readouterr()
    assert code == 2 and out == "", (code, out, err)
    assert err.count("\n") == 1 and err.startswith("bnmft probe: error: ") and "Traceback" not in err, err
    for text in named:
        assert text.format(**user_models) in err, err


@pytest.mark.parametrize("how", ["--debug first", "--debug last", "BNMFT_DEBUG=1"])
def test_debug_shows_the_users_traceback(user_models, capsys, monkeypatch, how):
    argv = ["probe", "--model", f"{user_models['m']}:raising", "-B", "8"]
    if how == "--debug first":
        argv.insert(0, "--debug")
    elif how == "--debug last":
        argv.append("--debug")
    else:
        monkeypatch.setenv("BNMFT_DEBUG", "1")
    assert main(argv) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert 'raise ValueError("the factory refuses")' in "\n".join(lines)  # the user's own line, in their file
    assert lines[-1].startswith("bnmft probe: error: --model") and "ValueError: the factory refuses" in lines[-1]


def test_a_valid_users_model_is_probed(user_models, capsys):
    assert main(["probe", "--model", f"{user_models['m']}:mlp", "-B", "8", "--json"]) == 0
    out = capsys.readouterr().out
    assert "NaN" not in out and json.loads(out)["bn_layers"][0]["theory_rate"] > 1


# --- output formats and directories, allocations, long computations (issue 22): refused before any work, by name

WORK = {  # argument lists whose work takes from half a minute to hours: each refusal below comes before it
    "theory": ["theory", "--phi", "relu", "-B", "8"],
    "symmetry": ["symmetry", "-B", "8"],
    "propagate": ["propagate", "--phi", "tanh", "--input", "{d}/batch.npy", "--depth", "10000"],
    "residual": ["residual", "--phi", "relu", "-B", "8", "-D", "100000"],
    "conv": ["conv", "--phi", "relu", "-B", "1", "--spatial", "8x8", "--padding", "zero"],
    "probe": ["probe", "--model", "tests.simulate.test_probe_data:bn_mlp", "-B", "4"],
}
REFUSED_EARLY = [
    *[([*argv, "--plot", "{d}/x.xyz"], "--plot: a figure's name must end in one of .png") for argv in WORK.values()],
    ([*WORK["theory"], "--plot", "{d}/plot.png.v2"], "--plot: a figure's name"),
    (["heatmap", "--store", "{d}/noacc.db", "--out", "{d}/hm.xyz"], "--out: a figure's name must end in one of"),
    ([*WORK["theory"], "--plot", "/proc/no/such/dir/p.png"], "--plot: cannot"),
    (["conv", "--phi", "relu", "-B", "1", "--spatial", "2x2", "--kernel", "100001", "--padding", "zero"],
     "kernel must be <= 3 with zero padding"),
    (["conv", "--phi", "relu", "-B", "1", "--spatial", "2x2", "--kernel", "1" * 25, "--padding", "zero"],
     "kernel must be <= 3 with zero padding"),
    (["conv", "--phi", "relu", "-B", "4", "--spatial", "2x2", "--padding", "zero", "--samples", "1000000000"],
     "samples: zero padding's theory (1000000000 Monte Carlo samples over 16 pairs) needs about"),
    (["conv", "--phi", "tanh", "-B", "1", "--spatial", "32x32", "--padding", "zero"],
     "samples: zero padding's theory (20000 Monte Carlo samples over 1024 pairs)"),  # 1.5 GiB (1 GiB here)
    (["probe", "--model", "torch.nn:ReLU", "-B", "64", "--input-shape", "10000x10000"], "--input-shape: the probe's"),
    (["probe", "--model", "{m}:wide", "-B", "10000"], "--batch-size: the probe's batch (10000 examples of 8 values, "
     "1000000 outputs each in the first layer) needs about"),
    (["residual", "--phi", "relu", "-B", "8", "--depth", "100000", "-K", "1000"], "depth x branch_depth must be <="),
    (["design", "--phi", "relu", "-B", "8", "--residual", "--depth", "100000", "-K", "1000"],
     "depth x branch_depth must be <= 1e+07 layers"),
]  # fmt: skip


@pytest.fixture
def wide_model(tmp_path, monkeypatch):
    """A module holding ``wide``: a first Linear layer of a million outputs (its weights are 32 MB)."""
    name = f"wide_{tmp_path.name.replace('-', '_').lower()}"
    (tmp_path / f"{name}.py").write_text(
        "import torch\n\ndef wide():\n    return torch.nn.Sequential(torch.nn.Linear(8, 10**6), torch.nn.ReLU())\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    return name


@pytest.mark.parametrize(("argv", "named"), REFUSED_EARLY, ids=[" ".join(a)[:80] for a, _ in REFUSED_EARLY])
def test_outputs_and_allocations_are_refused_before_the_work(argv, named, files, wide_model, capsys, monkeypatch):
    import time

    import bnmft.options

    monkeypatch.setattr(bnmft.options, "available_memory", lambda: 2**30)  # the same answer on every machine
    argv = [a.format(d=files, m=wide_model) for a in argv]
    start = time.perf_counter()
    code = main(argv)
    elapsed = time.perf_counter() - start
    out, err = capsys.readouterr()
    assert code == 2 and out == "", (code, out, err)
    assert err.count("\n") == 1 and "Traceback" not in err and named in err, err
    assert elapsed < 10, f"{elapsed:.1f} s: refused after the work, not before"
    assert not (files / "x.xyz").exists() and not (files / "hm.xyz").exists()


def test_missing_output_directories_are_created(files, tmp_path, capsys):
    save, plot = tmp_path / "new" / "a" / "grams.npz", tmp_path / "new" / "b" / "c" / "layers"
    argv = ["propagate", "--phi", "relu", "--input", f"{files}/batch.npy", "--depth", "2"]
    assert main([*argv, "--save", str(save), "--plot", str(plot)]) == 0
    assert save.is_file() and plot.with_suffix(".png").is_file()  # a bare figure name gets .png
    assert main(["theory", "--phi", "relu", "-B", "8", "--plot", str(tmp_path / "new" / "T.PDF")]) == 0
    assert (tmp_path / "new" / "T.PDF").read_bytes().startswith(b"%PDF")
    capsys.readouterr()


def test_memory_check_respects_ulimit_v(tmp_path):
    """Under ``ulimit -v`` (RLIMIT_AS) the memory available is what the process may still map, not the machine's."""
    import resource
    import subprocess

    limit = 3 * 2**30  # below the 3.6 GiB asked for, far below the machine's memory

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))

    argv = ["conv", "--phi", "relu", "-B", "4", "--spatial", "2x2", "--padding", "zero", "--samples", "5000000"]
    run = subprocess.run([sys.executable, "-m", "bnmft.cli", *argv], capture_output=True, text=True, timeout=60,
                         preexec_fn=cap, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert "samples: zero padding's theory" in run.stderr and "Traceback" not in run.stderr
    free = float(run.stderr.split(" GiB are available")[0].rsplit(" ", 1)[1])
    assert 0 <= free < limit / 2**30, run.stderr


def test_long_work_reports_progress_and_ctrl_c_exits_130(capsys, monkeypatch):
    """Residual design searches and zero-padding conv theory report their iterations, and Ctrl-C ends them with
    exit status 130 and one line."""
    import signal
    import threading
    import time

    from bnmft import design
    from bnmft.meanfield.conv import conv_theory

    for run in (lambda p: design("tanh", 8, 50, residual_network=True, progress=p),
                lambda p: conv_theory("relu", 1, spatial=(2, 2), padding="zero", samples=64, progress=p)):  # fmt: skip
        calls: list[tuple[int, int]] = []
        run(lambda done, total, calls=calls: calls.append((done, total)))
        done = [d for d, _ in calls]
        assert len(calls) > 3 and done == sorted(done) and calls[-1][0] == calls[-1][1], calls
    import bnmft.meanfield.planner as planner

    def long_search(*args, progress=None, **kwargs):  # the work itself can finish early on a warm, fast machine
        for done in range(600):
            if progress is not None:
                progress(done, 600)
            time.sleep(0.1)
        raise AssertionError("not interrupted")

    monkeypatch.setattr(planner, "design", long_search)
    # Ctrl-C as a terminal delivers it (pytest-xdist's workers ignore SIGINT: restore Python's handler here)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    start = time.perf_counter()
    timer.start()
    try:
        code = main(["design", "--phi", "relu", "-B", "8", "--residual", "--depth", "100000"])  # minutes of work
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    assert code == 130 and time.perf_counter() - start < 60  # minutes without the interrupt; loaded machines are slow
    assert capsys.readouterr().err == "bnmft: interrupted\n"


# --- issue 22 leftovers: theory overflow named (never a warning or "constant"), propagate's Monte Carlo options,
# a full stdout named, every conv batch size checked before the first runs

THEORY_OVERFLOW = [  # (extra arguments to theory --phi relu -B 8, what the one line names)
    (["--beta", "1e200"], "beta=1e+200: the theory's numbers overflow double precision"),
    (["--gamma", "1e200"], "gamma=1e+200: the theory's numbers overflow double precision"),
    (["--gamma=-1e200"], "gamma=-1e+200: the theory's numbers overflow double precision"),
    (["--beta", "1e200", "-B", "inf"], "beta=1e+200: the theory's numbers overflow double precision"),
    (["--beta", "1e200", "--eps", "0.1"], "beta=1e+200: the theory's numbers overflow double precision"),
    (["--phi", "gelu", "--beta", "1e200"], "beta=1e+200: the theory's numbers overflow double precision"),
    (["--phi", "sin", "--gamma", "1e200"], "gamma=1e+200: the theory's numbers overflow double precision"),
    (["--beta", "1e20"], "beta=1e+20 varies on the support of the batch law too little"),  # not constant: lost
    (["--beta=-1e200"], "beta=-1e+200 is constant on the support"),  # relu(z - 1e200) = 0: truly constant
    (["--beta", "-1e200"], "argument --beta: expected one argument"),  # argparse: write --beta=-1e200
    (["--eps", "0.1", "--sigma-w", "1e-200"], "kappa = eps / sigma_w^2 = 0.1 / 1e-200^2 overflows"),
]


def _exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse refuses by exiting
        return int(exc.code)


@pytest.mark.parametrize(("extra", "named"), THEORY_OVERFLOW, ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_theory_overflow_is_named_without_warnings(extra, named, capsys):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = _exit_code(["theory", "--phi", "relu", "-B", "8", *extra])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and err.count("\n") == 1 and named in err, err
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], [str(w.message) for w in caught]


def test_theory_extreme_eps_and_sigma_w_give_finite_answers(capsys):
    """kappa = 1e308 is deep in the collapsed phase, and kappa = 0.1 / 1e400 underflows to the eps = 0 theory."""
    assert main(["theory", "--phi", "relu", "-B", "8", "--eps", "1e308", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["phase"] == "collapsed" and row["lambda_W"] > 1 and "nan" not in json.dumps(row).lower()
    assert main(["theory", "--phi", "relu", "-B", "8", "--eps", "0.1", "--sigma-w", "1e200", "--json"]) == 0
    (small,) = json.loads(capsys.readouterr().out)
    assert main(["theory", "--phi", "relu", "-B", "8", "--json"]) == 0
    (plain,) = json.loads(capsys.readouterr().out)
    assert small["kappa"] == 0 and small["lambda_G"] == pytest.approx(plain["lambda_G"], rel=1e-12)


@pytest.fixture
def batches(tmp_path):
    rng = np.random.default_rng(0)
    for name, rows in (("b8", 8), ("b5", 5), ("c8", 8)):
        np.save(tmp_path / f"{name}.npy", rng.standard_normal((rows, 12)))
    return tmp_path


@pytest.mark.parametrize(
    ("phi", "batch", "option", "method"),
    [("relu", "b8", "--samples", "laplace"), ("relu", "b8", "--seed", "laplace"), ("tanh", "b5", "--seed", "sphere")],
)
def test_propagate_refuses_samples_and_seed_where_auto_is_exact(phi, batch, option, method, batches, capsys):
    argv = ["propagate", "--phi", phi, "--input", str(batches / f"{batch}.npy"), "--depth", "2", option, "7"]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1, err
    assert f"{option} applies only with the Monte Carlo Gram map" in err and f"the method is {method}" in err, err


def test_propagate_samples_and_seed_change_monte_carlo_results(batches, capsys):
    """Where they apply (auto picking monte_carlo, and --input2's sampled cross block), they are used."""
    base = ["propagate", "--phi", "tanh", "--input", str(batches / "b8.npy"), "--depth", "2", "--json"]
    runs = []
    for seed, samples in (("1", "500"), ("2", "500"), ("1", "501")):
        assert main([*base, "--seed", seed, "--samples", samples]) == 0
        runs.append(json.loads(capsys.readouterr().out))
    assert runs[0]["method"] == "monte_carlo"
    assert runs[0]["layers"] != runs[1]["layers"] and runs[0]["layers"] != runs[2]["layers"]
    two = ["propagate", "--phi", "relu", "--input", str(batches / "b8.npy"), "--input2", str(batches / "c8.npy")]
    assert main([*two, "--depth", "1", "--samples", "200", "--seed", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["method"] == "laplace"


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full")
@pytest.mark.parametrize("argv", [["theory", "--phi", "relu", "-B", "8"], ["nonlinearities", "--json"]])
def test_a_full_stdout_is_named(argv, capsys, monkeypatch):
    """``bnmft ... >/dev/full``: print's OSError carries no file name; the one line names stdout."""
    full = open("/dev/full", "w")  # closed below, after main has pointed its descriptor at /dev/null
    monkeypatch.setattr(sys, "stdout", full)
    try:
        code = main(argv)
    finally:
        monkeypatch.undo()
        full.close()
    err = capsys.readouterr().err
    assert code == 2 and err == f"bnmft {argv[0]}: error: cannot write the output to stdout: No space left on device\n"


@pytest.mark.parametrize(
    ("sizes", "named"),
    [(["4", "200"], "batch_size x positions must be <= 1024, got 1600"),
     (["1", "16", "--samples", "400000"], "samples: zero padding's theory (400000 Monte Carlo samples over 128")],
)  # fmt: skip
def test_conv_checks_every_batch_size_before_the_first_runs(sizes, named, capsys, monkeypatch):
    import bnmft.meanfield.conv
    import bnmft.options

    def ran(*args, **kwargs):
        raise AssertionError("a batch size ran before the others were checked")

    monkeypatch.setattr(bnmft.options, "available_memory", lambda: 2**30)  # 153 MiB for B = 1, 2.3 GiB for B = 16
    monkeypatch.setattr(bnmft.meanfield.conv, "conv_theory", ran)
    assert main(["conv", "--phi", "relu", "--spatial", "8", "--padding", "zero", "-B", *sizes]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and named in err, err


def test_conv_simulation_counts_its_weights_in_the_memory_check(capsys):
    """100000 channels: the C x C x 3 x 3 weights of 50 layers (1.8e12 values) alone exceed memory; refused before
    torch allocates anything."""
    code = main(["conv", "--phi", "relu", "--channels", "100000", "--depth", "50", "--networks", "2", "-B", "4",
                 "--spatial", "4x4"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "channels" in err and "GiB" in err and err.count("\n") == 1
