"""The measured-vs-theory trainable depth table on synthetic heatmaps with known edges."""

import pytest

from bnmft import theory
from bnmft.experiments.agreement import median_ratio, trainable_depths
from bnmft.experiments.config import TrainConfig


def _cells(edges: dict[int, int], depths=(5, 10, 20, 30, 40, 60)) -> list[dict]:
    out = []
    for b, edge in edges.items():
        for d in depths:
            cfg = TrainConfig(phi="relu", batch_size=b, depth=d, eps=1e-3).to_dict()
            acc = 0.92 - 0.002 * d if d <= edge else 0.11
            out.append({"key": f"{b}-{d}", "config": cfg, "result": {"test_accuracy": acc}})
    return out


def test_the_edge_and_the_ratio():
    rows = trainable_depths(_cells({8: 20, 32: 40, 128: 60}), "batch_size")
    assert [r["measured_depth"] for r in rows] == [20, 40, 60]
    for r in rows:
        predicted = theory("relu", r["x"], eps=1e-3).max_trainable_depth
        assert r["theory_depth"] == pytest.approx(predicted)
        assert r["ratio"] == pytest.approx(r["measured_depth"] / predicted)
        assert r["threshold"] == pytest.approx(0.1 + 0.5 * (0.92 - 0.01 - 0.1))
    assert median_ratio(rows) == pytest.approx(sorted(r["ratio"] for r in rows)[1])


def test_a_column_that_never_trains_has_no_depth():
    cells = _cells({8: 0, 32: 30})
    rows = trainable_depths(cells, "batch_size")
    assert rows[0]["measured_depth"] is None and rows[0]["ratio"] is None
    assert rows[1]["measured_depth"] == 30
    assert median_ratio(rows) == pytest.approx(rows[1]["ratio"])
