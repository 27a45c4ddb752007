"""The measured-vs-theory trainable depth table on synthetic heatmaps with known edges."""

import math
import statistics

import pytest

from bnmft import theory
from bnmft.experiments.agreement import median_ratio, trainable_depths
from bnmft.experiments.config import TrainConfig

DEPTHS = (5, 10, 20, 30, 45, 60)


def _accuracy(d: int, edge: int) -> float:
    return 0.92 - 0.002 * d if d <= edge else 0.11


def _cells(edges: dict[int, int]) -> list[dict]:
    out = []
    for b, edge in edges.items():
        for d in DEPTHS:
            cfg = TrainConfig(phi="relu", batch_size=b, depth=d, eps=1e-3).to_dict()
            out.append({"key": f"{b}-{d}", "config": cfg, "result": {"test_accuracy": _accuracy(d, edge)}})
    return out


def test_the_edge_the_crossing_and_the_ratios():
    rows = trainable_depths(_cells({8: 20, 32: 30, 128: 60}), "batch_size")
    assert [r["measured_depth"] for r in rows] == [20, 30, 60]
    assert [r["censored"] for r in rows] == [False, False, True]  # the deepest network of the last column trains
    threshold = 0.1 + 0.5 * (_accuracy(5, 99) - 0.1)
    for r, (edge, after) in zip(rows[:2], [(20, 30), (30, 45)], strict=True):
        predicted = theory("relu", r["x"], eps=1e-3).max_trainable_depth
        assert r["theory_depth"] == pytest.approx(predicted)
        assert r["threshold"] == pytest.approx(threshold)
        f = (_accuracy(edge, 99) - threshold) / (_accuracy(edge, 99) - 0.11)
        assert r["crossing_depth"] == pytest.approx(edge * (after / edge) ** f)
        assert r["ratio"] == pytest.approx(edge / predicted)
        assert r["crossing_ratio"] == pytest.approx(r["crossing_depth"] / predicted)
    assert rows[2]["crossing_depth"] is None
    assert median_ratio(rows) == pytest.approx(statistics.median([r["crossing_ratio"] for r in rows[:2]]))
    assert median_ratio(rows, "ratio") == pytest.approx(statistics.median([r["ratio"] for r in rows[:2]]))


def test_a_column_that_never_trains_has_no_depth():
    rows = trainable_depths(_cells({8: 0, 32: 30}), "batch_size")
    assert rows[0]["measured_depth"] is None and rows[0]["ratio"] is None and not rows[0]["censored"]
    assert rows[1]["measured_depth"] == 30 and math.isfinite(rows[1]["crossing_ratio"])
    assert median_ratio(rows) == pytest.approx(rows[1]["crossing_ratio"])
