"""bnmft probe --data: real inputs from a .npy file (as is and resized), a CIFAR-10 directory, MNIST, and a clear
error for inputs that cannot be brought to the model's shape. The forward statistics of the first layer do not
depend on the order of the examples, so a file of exactly B examples gives a reference computed independently."""

import json
import sys

import numpy as np
import pytest
import torch

from bnmft.cli import main

from ..experiments.test_data import make_cifar

MODELS = """
import torch
nn = torch.nn

def mlp():
    return nn.Sequential(nn.Linear(12, 16), nn.BatchNorm1d(16), nn.ReLU(inplace=True), nn.Linear(16, 16),
                         nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4))

def cnn():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
                         nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))

def mnist_mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 32),
                         nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10))
"""


def bn_mlp() -> torch.nn.Module:
    """A BN model for tests/test_bad_input.py (--model tests.simulate.test_probe_data:bn_mlp)."""
    nn = torch.nn
    return nn.Sequential(nn.Linear(12, 16), nn.BatchNorm1d(16), nn.ReLU(inplace=True), nn.Linear(16, 4))


class Raising(torch.nn.Module):
    """A model whose forward raises its own error (tests/test_bad_input.py)."""

    def __init__(self):
        super().__init__()
        self.lin, self.bn = torch.nn.Linear(12, 8), torch.nn.BatchNorm1d(8)

    def forward(self, x):
        raise ValueError("this model refuses every batch")


@pytest.fixture
def workdir(tmp_path, monkeypatch, request):
    """A working directory with a uniquely named module of models (imported by --model MODULE:CALLABLE)."""
    name = f"probe_models_{request.node.name.replace('[', '_').replace(']', '').replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(MODELS)
    monkeypatch.chdir(tmp_path)
    yield tmp_path, name
    sys.modules.pop(name, None)


def run_json(capsys, *argv) -> dict:
    code = main(["probe", *argv, "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)


def first_layer_stats(model: torch.nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """Independent: the first layer's output, per-channel (biased) variance and mean, averaged over channels."""
    with torch.no_grad():
        out = model[0](x).double()
    per = out.transpose(0, 1).reshape(out.shape[1], -1) if out.dim() > 2 else out.T
    return float(per.var(dim=1, unbiased=False).mean()), float(per.mean(dim=1).mean())


def factory(workdir, attr: str, seed: int = 0) -> torch.nn.Module:
    module = __import__(workdir[1])
    torch.manual_seed(seed)  # the CLI builds the model after torch.manual_seed(--seed)
    return getattr(module, attr)()


def test_npy_file_as_is(workdir, capsys):
    x = np.random.default_rng(1).normal(2.0, 3.0, (8, 12)).astype(np.float32)
    np.save(workdir[0] / "x.npy", x)
    out = run_json(capsys, "--model", f"{workdir[1]}:mlp", "-B", "8", "--data", "x.npy")
    var, mean = first_layer_stats(factory(workdir, "mlp"), torch.from_numpy(x))
    first = out["layers"][0]
    assert first["name"] == "0" and first["shape"] == [8, 16]
    assert first["channel_var"] == pytest.approx(var, rel=1e-5)
    assert first["channel_mean"] == pytest.approx(mean, abs=1e-5)
    assert first["input_var"] == pytest.approx(float(x.astype(np.float64).var(axis=0).mean()), rel=1e-5)


def test_npy_file_resized_to_the_input_shape(workdir, capsys):
    # constant grey images of 1x8x8: resized bilinearly to 3x16x16 they stay constant in every channel
    levels = np.linspace(0.1, 0.9, 6, dtype=np.float32)
    np.save(workdir[0] / "grey.npy", np.broadcast_to(levels[:, None, None, None], (6, 1, 8, 8)).copy())
    out = run_json(capsys, "--model", f"{workdir[1]}:cnn", "-B", "6", "--data", "grey.npy", "--input-shape", "3x16x16")
    reference = torch.from_numpy(np.broadcast_to(levels[:, None, None, None], (6, 3, 16, 16)).copy())
    var, _ = first_layer_stats(factory(workdir, "cnn"), reference)
    first = out["layers"][0]
    assert first["shape"] == [6, 8, 16, 16] and first["channel_var"] == pytest.approx(var, rel=1e-5)
    assert [b["batch"] for b in out["bn_layers"]] == [6 * 256, 6 * 256]


def test_cifar10_directory_with_labels_and_steps(workdir, capsys, rng):
    make_cifar(workdir[0] / "data", rng, n=4)  # 20 training examples in the standard files
    for source in ("data", "data/cifar-10-batches-py"):  # the directory holding the folder, or the folder
        out = run_json(capsys, "--model", f"{workdir[1]}:cnn", "-B", "20", "--data", source, "--steps", "1")
        first = out["layers"][0]
        assert first["shape"] == [20, 8, 32, 32]
        # all 20 examples, pixels / 255: the input's per-channel variance over (batch, positions)
        from bnmft.experiments.data import load_cifar10

        x = load_cifar10(workdir[0] / "data", download=False).x_train.reshape(20, 3, 32, 32).astype(np.float64)
        assert first["input_var"] == pytest.approx(float(x.transpose(1, 0, 2, 3).reshape(3, -1).var(axis=1).mean()))
        assert out["steps"] == 1 and out["growth"]["after_steps"] is not None
    code = main(["probe", "--model", f"{workdir[1]}:cnn", "-B", "4", "--data", str(workdir[0])])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "cifar-10-batches-py" in err


def test_mnist_images_reach_a_flattening_model(workdir, capsys):
    pytest.importorskip("mnist")
    out = run_json(capsys, "--model", f"{workdir[1]}:mnist_mlp", "-B", "16", "--data", "mnist", "--input-shape",
                   "1x28x28", "--steps", "2")  # fmt: skip
    first = out["layers"][0]
    assert first["name"] == "1" and first["shape"] == [16, 32]
    assert 0.01 < first["input_var"] < 0.25  # pixels in [0, 1], not N(0, 1) inputs
    assert out["growth"]["after_steps"] is not None


def test_inputs_of_the_wrong_shape_are_one_clear_line(workdir, capsys):
    np.save(workdir[0] / "five.npy", np.zeros((8, 5), dtype=np.float32))
    code = main(["probe", "--model", f"{workdir[1]}:mlp", "-B", "8", "--data", "five.npy"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "examples of shape 5" in err and "input shape 12" in err
    np.save(workdir[0] / "nan.npy", np.full((8, 12), np.nan, dtype=np.float32))
    code = main(["probe", "--model", f"{workdir[1]}:mlp", "-B", "8", "--data", "nan.npy"])
    assert code == 2 and "finite" in capsys.readouterr().err
    code = main(["probe", "--model", f"{workdir[1]}:mlp", "-B", "9", "--data", "five.npy"])
    assert code == 2 and "fewer than the batch size 9" in capsys.readouterr().err
