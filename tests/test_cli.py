"""The command line: table, --json keys, --plot, bad input -> exit status 2 without traceback."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bnmft import theory
from bnmft.cli import main

REQUIRED_KEYS = {"phi", "batch_size", "q_star", "c_star", "mu_star", "lambda_G", "depth_scale", "max_trainable_depth"}
FORWARD_KEYS = {"lambda_L", "lambda_M", "forward_depth_scale", "bsb1_stable", "cross_batch_c"}


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def run_failing(capsys, *argv) -> tuple[int, str]:
    """Exit status and stderr of a command expected to fail (argparse exits by itself, main() returns 2)."""
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def test_json_output(capsys):
    code, out, _ = run(capsys, "theory", "--phi", "relu", "--batch-size", "4", "32", "inf", "--json")
    assert code == 0
    rows = json.loads(out)
    assert [r["batch_size"] for r in rows] == [4, 32, "inf"]
    assert isinstance(rows[0]["batch_size"], int)
    for row in rows:
        assert REQUIRED_KEYS | FORWARD_KEYS <= set(row)
        assert row["phi"] == "relu"
    assert rows[1]["lambda_G"] == pytest.approx(theory("relu", 32).lambda_G, rel=1e-15)
    assert rows[2]["lambda_G"] == pytest.approx(math.pi / (math.pi - 1), rel=1e-14)
    assert rows[1]["lambda_M"] == theory("relu", 32).lambda_M and rows[1]["bsb1_stable"] is True
    assert rows[2]["lambda_L"] is None and rows[2]["cross_batch_c"] == pytest.approx(1 / (2 * math.pi))


def test_options_reach_the_theory(capsys):
    code, out, _ = run(capsys, "theory", "--phi", "alpha_relu", "--alpha", "2", "--gamma", "0.5", "-B", "16", "--json")
    assert code == 0
    (row,) = json.loads(out)
    ref = theory("alpha_relu", 16, alpha=2.0, gamma=0.5)
    assert row["lambda_G"] == ref.lambda_G and row["q_star"] == ref.q_star
    code, out, _ = run(capsys, "theory", "--phi", "leaky_relu", "--slope", "0.2", "--beta", "0.1", "-B", "8", "--json")
    assert json.loads(out)[0]["lambda_G"] == theory("leaky_relu", 8, slope=0.2, beta=0.1).lambda_G


def test_table_output(capsys):
    code, out, _ = run(capsys, "theory", "--phi", "tanh(2*z) + 0.1*z", "--batch-size", "8", "inf")
    assert code == 0
    assert "lambda_G" in out and "max depth" in out
    lines = out.strip().splitlines()
    assert lines[-1].split()[0] == "inf"
    assert float(lines[-2].split()[4]) == pytest.approx(theory("tanh(2*z) + 0.1*z", 8).lambda_G, rel=1e-9)


def test_plot(tmp_path, capsys):
    target = tmp_path / "rates.png"
    code, _, _ = run(capsys, "theory", "--phi", "relu", "-B", "4", "8", "64", "inf", "--plot", str(target))
    assert code == 0
    assert target.stat().st_size > 10_000


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["theory", "--phi", "relu", "-B", "2"], "gradient is exactly zero"),
        (["theory", "--phi", "relu", "-B", "3"], "infinite"),
        (["theory", "--phi", "relu", "-B", "4.5"], "integer"),
        (["theory", "--phi", "relu", "-B", "-8"], ">= 4"),
        (["theory", "--phi", "nosuch", "-B", "8"], "unknown nonlinearity"),
        (["theory", "--phi", "__import__('os').system('echo hi')", "-B", "8"], "phi"),
        (["theory", "--phi", "tanh(", "-B", "8"], "cannot parse"),
        (["theory", "--phi", "0*z+1", "-B", "8"], "constant"),
        (["theory", "--phi", "exp(z**2)", "-B", "inf"], "diverge"),
        (["theory", "--phi", "tanh", "--gamma", "nan", "-B", "8"], "--gamma"),
        (["theory", "--phi", "relu", "--beta", "inf", "-B", "8"], "--beta"),
        (["theory", "--phi", "tanh", "--alpha", "2", "-B", "8"], "'alpha' does not apply"),
        (["theory", "--phi", "relu"], "--batch-size"),
        (["theory", "--phi", "relu", "-B", "8", "--eps", "-1"], "--eps"),
        (["theory", "--phi", "relu", "-B", "8", "--eps", "1", "--sigma-w", "0"], "--sigma-w"),
        (["theory", "--phi", "relu", "-B", "inf", "--eps", "0.1"], "finite batch_size"),
    ],
)
def test_bad_input_exits_2_without_traceback(argv, message, capsys):
    code, err = run_failing(capsys, *argv)
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_console_script_end_to_end(tmp_path):
    """The installed `bnmft` entry point, as a user runs it."""
    exe = Path(sys.executable).with_name("bnmft")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "bnmft.cli"]
    ok = subprocess.run([*cmd, "theory", "--phi", "relu", "-B", "32", "--json"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    c = -1 / 31  # docs/theory.md section 3.4: relu closed form at B = 32, written out independently here
    j1 = (math.sqrt(1 - c * c) + (math.pi - math.acos(c)) * c) / math.pi
    expected = ((math.pi - math.acos(c)) / math.pi + 31) / (29 * (1 - j1)) - 1 / 29
    assert json.loads(ok.stdout)[0]["lambda_G"] == pytest.approx(expected, rel=1e-14)
    bad = subprocess.run([*cmd, "theory", "--phi", "relu", "-B", "3"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr and "batch_size must be >= 4" in bad.stderr


def test_import_does_not_pull_torch_or_matplotlib():
    code = (
        "import sys, bnmft; bnmft.theory('tanh', 8); "
        "print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_nonlinearities_listing(capsys):
    code, out, _ = run(capsys, "nonlinearities", "--json")
    assert code == 0 and "alpha_relu" in json.loads(out)


def test_propagate_cli(tmp_path, capsys):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 30))
    x2 = x.copy()
    x2[0] = rng.standard_normal(30)
    np.save(tmp_path / "a.npy", x)
    np.save(tmp_path / "b.npy", x2)
    code, out, _ = run(
        capsys,
        "propagate",
        "--phi",
        "relu",
        "--input",
        str(tmp_path / "a.npy"),
        "--depth",
        "6",
        "--json",
        "--save",
        str(tmp_path / "g.npz"),
        "--plot",
        str(tmp_path / "p.png"),
    )
    assert code == 0
    summary = json.loads(out)
    assert [row["layer"] for row in summary["layers"]] == list(range(7))
    assert summary["method"] == "laplace"
    assert summary["predicted_rate"] == max(theory("relu", 8).lambda_L, theory("relu", 8).lambda_M)
    saved = np.load(tmp_path / "g.npz")
    assert saved["grams"].shape == (7, 8, 8)
    assert (tmp_path / "p.png").stat().st_size > 10_000
    code, out, _ = run(
        capsys,
        "propagate",
        "--phi",
        "relu",
        "--input",
        str(tmp_path / "a.npy"),
        "--input2",
        str(tmp_path / "b.npy"),
        "-L",
        "3",
        "--samples",
        "20000",
    )
    assert code == 0 and "cross_correlation" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--input", "/nonexistent.npy", "--depth", "3"], "no such file"),
        (["--input", "{a}", "--depth", "0"], "--depth"),
        (["--input", "{bad}", "--gram", "--depth", "2"], "symmetric"),
        (["--input", "{a}", "--input2", "{short}", "--depth", "2"], "same number of features"),
    ],
)
def test_propagate_bad_input(extra, message, tmp_path, capsys):
    import numpy as np

    np.save(tmp_path / "a.npy", np.random.default_rng(1).standard_normal((6, 5)))
    np.save(tmp_path / "bad.npy", np.triu(np.ones((5, 5))))
    np.save(tmp_path / "short.npy", np.ones((6, 3)))
    files = {k: str(tmp_path / f"{k}.npy") for k in ("a", "bad", "short")}
    code, err = run_failing(capsys, "propagate", "--phi", "relu", *[e.format(**files) for e in extra])
    assert code == 2
    assert message in err and "Traceback" not in err


SIM_KEYS = {
    "batch_size",
    "width",
    "depth",
    "networks",
    "lambda_G_mean",
    "lambda_G_stderr",
    "lambda_G_theory",
    "c_star_mean",
    "c_star_stderr",
    "c_star_theory",
}


def test_simulate_cli_json_out_and_seed(tmp_path, capsys):
    argv = ["simulate", "--phi", "relu", "-B", "4", "8", "-N", "32", "-L", "12", "-K", "3", "--seed", "7", "--json"]
    code, out, _ = run(capsys, *argv, "--out", str(tmp_path))
    assert code == 0
    rows = json.loads(out)
    assert [r["batch_size"] for r in rows] == [4, 8]
    assert all(SIM_KEYS <= set(r) for r in rows)
    assert rows[1]["lambda_G_theory"] == theory("relu", 8).lambda_G
    for name in ("layers.csv", "summary.csv", "lambda_G.png", "gradients.png"):
        assert (tmp_path / name).stat().st_size > 0
    code, again, _ = run(capsys, *argv)
    assert json.loads(again) == rows  # same seed, same numbers


def test_simulate_widths_passes_every_option(capsys):
    """--widths goes through the same options as one width (--two-batches included): the CLI's fits equal the
    API's at the same settings, and differ from those without the option."""
    from bnmft.simulate import simulate_mlp

    argv = ["simulate", "--phi", "relu", "-B", "8", "--widths", "32", "64", "128", "-L", "10", "-K", "4"]
    code, out, _ = run(capsys, *argv, "--two-batches", "--seed", "3", "--json")
    assert code == 0
    rows = {r["estimate"]: r for r in json.loads(out)}
    kw = dict(widths=[32, 64, 128], depth=10, networks=4, seed=3)
    fits = {f.estimate: f for f in simulate_mlp("relu", [8], two_batches=True, **kw).fits}
    assert rows["lambda_G"]["a"] == pytest.approx(fits["lambda_G"].a, rel=1e-12)
    assert rows["c_star"]["b"] == pytest.approx(fits["c_star"].b, rel=1e-12)
    single = {f.estimate: f for f in simulate_mlp("relu", [8], **kw).fits}
    assert rows["lambda_G"]["a"] != pytest.approx(single["lambda_G"].a, rel=1e-9)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["-N", "0"], "--width"),
        (["-L", "0"], "--depth"),
        (["-B", "1"], "--batch-size"),
        (["--device", "tpu"], "device must be one of"),
        (["--ghost-size", "3"], "must divide"),
        (["-L", "4"], "too shallow"),
    ],
)
def test_simulate_bad_input(extra, message, capsys):
    options = {"-B": "8", "-N": "16", "-L": "12", "-K": "2"} | dict(zip(extra[::2], extra[1::2], strict=True))
    argv = ["simulate", "--phi", "relu"] + [x for pair in options.items() for x in pair]
    code, err = run_failing(capsys, *argv)
    assert code == 2, err
    assert message in err and "Traceback" not in err


def test_theory_cli_eps_keys_and_phase_plot(tmp_path, capsys):
    code, out, _ = run(
        capsys,
        "theory",
        "--phi",
        "tanh",
        "-B",
        "8",
        "--eps",
        "0.1",
        "2",
        "--sigma-w",
        "1",
        "--json",
        "--plot",
        str(tmp_path / "phase.png"),
    )
    assert code == 0
    rows = json.loads(out)
    assert [r["phase"] for r in rows] == ["stationary", "collapsed"]
    for row in rows:
        assert {"eps", "sigma_w", "kappa", "kappa_c", "phase", "lambda_W"} <= set(row)
    assert rows[1]["q_star"] is None and rows[1]["lambda_W"] == pytest.approx(1.0)
    assert rows[0]["lambda_G"] == theory("tanh", 8, eps=0.1).lambda_G
    assert (tmp_path / "phase.png").stat().st_size > 10_000


def test_residual_json_is_one_object_with_blocks(capsys):
    import bnmft

    assert (
        main(["residual", "--phi", "tanh", "-B", "16", "--depth", "30", "-K", "2", "--branch-scale", "0.5", "--json"])
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert {"blocks", "exponent", "max_trainable_depth"} <= set(out)
    assert len(out["blocks"]) == 31 and out["blocks"][-1]["log_grad_ratio"] == 0.0
    assert {"block", "stream_variance", "log_grad_ratio"} <= set(out["blocks"][0])
    api = bnmft.residual_theory("tanh", 16, depth=30, branch_depth=2, branch_scale=0.5)
    assert out["blocks"][0]["log_grad_ratio"] == api.blocks[0]["log_grad_ratio"]
    assert out["exponent"] == pytest.approx(bnmft.theory("tanh", 16).lambda_G ** 2, rel=1e-10)


def test_residual_per_block_alpha_simulation_and_plot(tmp_path, capsys):
    plot = tmp_path / "res.png"
    argv = ["residual", "--phi", "relu", "-B", "8", "--depth", "4", "--branch-scale", "1,0.5,0.5,0.25"]
    assert main([*argv, "--width", "64", "--networks", "3", "--plot", str(plot), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["branch_scale"] == [1.0, 0.5, 0.5, 0.25] and plot.stat().st_size > 0
    sim = out["simulation"]
    assert sim["width"] == 64 and len(sim["blocks"]) == 5
    assert sim["blocks"][0]["log_grad_ratio_theory"] == out["blocks"][0]["log_grad_ratio"]


def test_design_json_lists_the_knobs(capsys):
    assert main(["design", "--phi", "tanh", "-B", "32", "--depth", "200", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    options = {o["knob"]: o for o in out["options"]}
    assert set(options) == {"gamma", "eps"}
    # the planner's gamma really puts the theory's trainable depth at the target
    import bnmft

    t = bnmft.theory("tanh", 32, gamma=options["gamma"]["value"])
    assert t.max_trainable_depth == pytest.approx(200, rel=1e-3)
    assert main(["design", "--phi", "relu", "-B", "8", "--depth", "300", "--residual", "-K", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {o["knob"] for o in out["options"]} == {"beta", "eps", "branch_scale"}
    for o in out["options"]:
        assert o["predicted_depth"] >= 300


def test_conv_json_keeps_lambda_g(capsys):
    import bnmft

    assert main(["conv", "--phi", "tanh", "-B", "2", "4", "--spatial", "4x4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["effective_batch_size"] for r in out] == [32, 64]
    assert out[1]["lambda_G"] == bnmft.theory("tanh", 64).lambda_G and out[1]["spatial"] == "4x4"
    assert "simulation" not in out[0]


def test_conv_phi_parameters(capsys):
    """--slope / --alpha reach the theory: with periodic padding the conv network is the MLP at B x positions."""
    assert main(["conv", "--phi", "leaky_relu", "--slope", "0.1", "-B", "4", "--spatial", "8", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[0]["lambda_G"] == pytest.approx(theory("leaky_relu", 32, slope=0.1).lambda_G, rel=1e-12)
    assert out[0]["lambda_G"] != pytest.approx(theory("leaky_relu", 32, slope=0.3).lambda_G, rel=1e-3)
    assert main(["conv", "--phi", "alpha_relu", "--alpha", "1.5", "-B", "2", "--spatial", "3x3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[0]["lambda_G"] == pytest.approx(theory("alpha_relu", 18, alpha=1.5).lambda_G, rel=1e-12)
    assert main(["conv", "--phi", "leaky_relu", "--slope", "0.1", "-B", "4", "--spatial", "8"]) == 0
    assert "leaky_relu(slope=0.1)" in capsys.readouterr().out


def test_conv_simulation_beside_theory(capsys):
    from bnmft.simulate import simulate_conv

    argv = ["conv", "--phi", "relu", "-B", "2", "--spatial", "8", "-C", "32", "-L", "12", "-K", "3", "--json"]
    assert main([*argv, "--kernel", "3", "--seed", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[0]["batch_size"] == 2 and out[0]["lambda_G"] == pytest.approx(theory("relu", 16).lambda_G)
    sim = out[0]["simulation"]
    assert (sim["channels"], sim["depth"], sim["networks"]) == (32, 12, 3)
    api = simulate_conv("relu", 2, spatial=(8,), channels=32, depth=12, networks=3, seed=1)
    assert sim["lambda_G_mean"] == api.summary["lambda_G_mean"] and sim["c_batch_mean"] == api.summary["c_batch_mean"]
    assert sim["lambda_G_mean"] > 1
    assert main(argv[:-1]) == 0
    text = capsys.readouterr().out
    assert "32 channels, depth 12, 3 networks" in text and "measured" in text


def test_conv_plot_and_tables(tmp_path, capsys):
    import csv

    argv = ["conv", "--phi", "tanh", "-B", "2", "--spatial", "4", "--eps", "0", "0.5", "-C", "8", "-L", "8", "-K", "2"]
    assert main([*argv, "--plot", str(tmp_path / "conv"), "--out", str(tmp_path / "tables")]) == 0
    assert (tmp_path / "conv.png").stat().st_size > 0
    for name in ("conv_layers_B2_eps0.csv", "conv_layers_B2_eps0.5.csv"):
        rows = list(csv.DictReader(open(tmp_path / "tables" / name)))
        assert len(rows) == 2 * 8 and {r["layer"] for r in rows} == {str(i) for i in range(1, 9)}
    assert "plot written to" in capsys.readouterr().out


def test_spatial_moved_to_conv(capsys):
    for command in (["theory", "--phi", "relu", "-B", "4"], ["simulate", "--phi", "relu", "-B", "4", "-L", "6",
                                                               "-K", "2", "-N", "8"]):  # fmt: skip
        with pytest.raises(SystemExit) as err:
            main([*command, "--spatial", "4x4"])
        assert err.value.code == 2
        message = capsys.readouterr().err
        assert message.count("\n") == 1 and "--spatial" in message and "bnmft conv" in message
