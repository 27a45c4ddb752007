"""The one simulator runner (bnmft.simulate.runner): chunking, seeds, progress, statistics, memory check."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch

import bnmft.options
from bnmft import InputError
from bnmft.simulate import simulate_conv, simulate_mlp, simulate_residual
from bnmft.simulate.runner import MAX_ELEMENTS, mean_se, run_family, tidy_rows

torch.set_num_threads(1)


@dataclass
class Counted:
    index: torch.Tensor
    value: torch.Tensor
    absent: torch.Tensor | None = None


@dataclass
class CountingFamily:
    """A family whose network i measures (i, f(i)), whatever the chunks: what the runner must hand back in order."""

    network_values: int = 1
    network_bytes: int = 8
    size_argument: str = "size"
    what: str = "one counted network"
    started: int = 0

    def run_chunk(self, k: int, gen: torch.Generator) -> list[Counted]:
        index = torch.arange(self.started, self.started + k, dtype=torch.float64)
        self.started += k
        return [Counted(index, index**2), Counted(-index, index + 0.5)]


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 100])
def test_chunks_give_the_same_networks_in_order(chunk):
    seen = []
    out = run_family(CountingFamily(), networks=7, chunk=chunk, seed=0, device="cpu", progress=seen.append)
    assert out[0].index.tolist() == list(range(7))
    assert out[0].value.tolist() == [i * i for i in range(7)]
    assert out[1].index.tolist() == [-i for i in range(7)]
    assert out[1].absent is None
    assert seen == sorted(set(seen)) and seen[-1] == 7
    assert len(seen) == math.ceil(7 / min(chunk, 7))


def test_chunks_are_capped_by_the_values_kept():
    seen = []
    family = CountingFamily(network_values=MAX_ELEMENTS // 2 + 1)  # two networks would exceed the cap
    run_family(family, networks=3, chunk=50, seed=0, device="cpu", progress=seen.append)
    assert seen == [1, 2, 3]


def test_memory_check_names_the_family_argument(monkeypatch):
    monkeypatch.setattr(bnmft.options, "available_memory", lambda: 2**30)
    family = CountingFamily(network_bytes=2**31)
    with pytest.raises(InputError, match=r"^size: one counted network needs about 2 GiB"):
        run_family(family, networks=1, chunk=1, seed=0, device="cpu")
    assert family.started == 0  # refused before any work


def test_mean_se_against_numpy():
    rng = np.random.default_rng(3)
    values = rng.standard_normal((9, 4))
    mean, se = mean_se(values)
    for j in range(4):
        column = values[:, j]
        assert mean[j] == pytest.approx(sum(column) / 9, rel=1e-13)
        var = sum((v - sum(column) / 9) ** 2 for v in column) / 8
        assert se[j] == pytest.approx(math.sqrt(var / 9), rel=1e-12)
        m, s = mean_se(column)
        assert isinstance(m, float) and m == pytest.approx(mean[j], rel=1e-13) and s == pytest.approx(se[j])
    m, s = mean_se(np.array([2.5]))
    assert m == 2.5 and s == math.inf


def test_tidy_rows_order_and_columns():
    a = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=torch.float64)
    rows = tidy_rows({"phi": "relu"}, {"x": a, "y": -a, "gone": None}, index="block", first=0,
                     per_index=lambda i: {"scale": 10 * i})  # fmt: skip
    assert len(rows) == 6
    assert rows[4] == {"phi": "relu", "network": 1, "block": 1, "scale": 10, "x": 5.0, "y": -5.0}
    assert list(rows[0]) == ["phi", "network", "block", "scale", "x", "y"]


def test_mlp_more_networks_start_with_the_fewer():
    """The chunks consume one seeded generator in order: K = 4 in chunks of 2 begins with the K = 2 run."""
    kwargs = dict(width=16, depth=8, seed=5, chunk=2, sampler="dense")
    two = simulate_mlp("tanh", [4, 6], networks=2, **kwargs)
    four = simulate_mlp("tanh", [4, 6], networks=4, **kwargs)
    for b in (4, 6):
        for name in ("q", "c", "log_grad_h", "log_grad_w"):
            assert torch.equal(getattr(four.runs[b], name)[:2], getattr(two.runs[b], name))
        assert four.runs[b].q.shape == (4, 8)


def test_mlp_summary_is_the_mean_and_stderr_of_its_rows():
    """The summary from the tidy table, recomputed here: per network the mean backward growth factor over the window
    (layers 3 .. L - 4), then mean and std / sqrt(K) across networks."""
    result = simulate_mlp("relu", [5], width=12, depth=10, networks=6, chunk=4, sampler="dense", seed=1)
    logs = {}
    for row in result.rows():
        logs.setdefault(row["network"], {})[row["layer"]] = row["log_grad_h"]
    per_net = []
    for net in range(6):
        y = [logs[net][layer + 1] for layer in range(3, 7)]  # window [3, 7) in 0-based layers
        per_net.append(np.mean([math.exp(y[i] - y[i + 1]) for i in range(3)]))
    s = result.summaries[0]
    assert s.lambda_G_mean == pytest.approx(np.mean(per_net), rel=1e-12)
    assert s.lambda_G_stderr == pytest.approx(np.std(per_net, ddof=1) / math.sqrt(6), rel=1e-10)


def test_residual_more_networks_start_with_the_fewer():
    two = simulate_residual("relu", 4, width=16, depth=4, networks=2, chunk=1, seed=2)
    three = simulate_residual("relu", 4, width=16, depth=4, networks=3, chunk=1, seed=2)
    assert torch.equal(three.run.log_grad[:2], two.run.log_grad)
    assert torch.equal(three.run.stream_variance[:2], two.run.stream_variance)


def test_conv_more_networks_start_with_the_fewer():
    two = simulate_conv("relu", 2, spatial=(4,), channels=8, depth=8, networks=2, chunk=2, seed=4)
    three = simulate_conv("relu", 2, spatial=(4,), channels=8, depth=8, networks=3, chunk=2, seed=4)
    assert torch.equal(three.run.log_grad_h[:2], two.run.log_grad_h)


@pytest.mark.parametrize(
    "call, argument",
    [
        # ~2.3 GiB of activations per network: under the 8 GiB the residual simulator once hard-coded, over the
        # 1 GiB available here
        (lambda: simulate_residual("relu", 4, width=2**17, depth=99, networks=1), "width"),
        (lambda: simulate_conv("relu", 4, spatial=(64, 64), channels=512, depth=40, networks=1), "channels"),
        (lambda: simulate_mlp("relu", [64], width=2**16, depth=40, networks=1, sampler="dense"), "width"),
    ],
)
def test_memory_check_uses_the_memory_available(monkeypatch, call, argument):
    monkeypatch.setattr(bnmft.options, "available_memory", lambda: 2**30)
    with pytest.raises(InputError, match=rf"^{argument}: .* GiB of memory, but 1 GiB are available"):
        call()
