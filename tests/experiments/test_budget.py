"""The training-budget study (bnmft.experiments.budget, bnmft.report.budget): its grid, its crossings and trend on
synthetic results with known edges (exact: accuracy linear in log depth around the edge), and a small real run that
resumes from its store."""

import json
import math

import numpy as np
import pytest

from bnmft.cli import main
from bnmft.experiments import budget
from bnmft.experiments.budget import (
    PLANS,
    BudgetPlan,
    analyse,
    budget_sweeps,
    column_theory,
    depth_grid,
    sweep_name,
    trend,
)

PLAN = BudgetPlan(columns={"B32": {"batch_size": 32}}, budgets={1: (1, 5000), 4: (2, 10000), 16: (4, 20000)},
                  seeds=(0, 1, 2), optimizers=("sgd", "sgd_paper"))  # fmt: skip


def _accuracy(depth: float, edge: float) -> float:
    """0.9 for shallow networks, 0.5 (the threshold: half-way from 0.1) exactly at the edge, linear in log depth."""
    return float(np.clip(0.5 - 2.0 * (math.log(depth) - math.log(edge)), 0.1, 0.9))


def _results(edges: dict[tuple[int, str, int], float]) -> dict[str, list[dict]]:
    """Stored cells of PLAN with the given edge per (budget, optimiser label, seed)."""
    out: dict[str, list[dict]] = {}
    for (factor, label, seed), edge in edges.items():
        epochs, train = PLAN.budgets[factor]
        for d in depth_grid(PLAN, "B32"):
            config = {"depth": d, "seed": seed, "batch_size": 32}
            result = {"test_accuracy": _accuracy(d, edge), "steps": epochs * train // 32}
            out.setdefault(sweep_name("B32", factor, label), []).append({"config": config, "result": result})
    return out


def test_the_depth_grid_spans_the_line():
    line = column_theory(PLAN, "B32")
    assert line == pytest.approx(38.117, abs=1e-3)  # 16 / ln lambda_G, relu B = 32, eps 1e-3
    grid = depth_grid(PLAN, "B32")
    assert grid[0] == PLAN.anchor_depth and np.all(np.diff(grid[1:]) == 4)
    assert grid[1] <= 0.6 * line < grid[1] + 4 and grid[-1] >= 1.6 * line > grid[-1] - 4
    full = [s for _, s in budget_sweeps(PLANS["full"])]
    assert len({s.name for s in full}) == len(full) == 3 * 3 * 3  # budgets x columns x optimisers
    first = full[0].cells()[0]
    assert (first["epochs"], first["train_subset"], first["test_subset"]) == (1, 5000, 1000)  # 1x: the quick preset
    assert (first["optimizer"], first["lr"]) == ("sgd", "1e-3*B")
    ghost = next(s for s in full if s.name == "budget_ghost8_16x_rmsprop").cells()
    assert {(c["batch_size"], c["ghost_size"], c["epochs"], c["train_subset"], c["lr"]) for c in ghost} == {
        (128, 8, 4, 20000, "1e-5*B")
    }
    assert {c["seed"] for c in ghost} == {0, 1, 2}


def test_crossings_and_a_geometric_limit_are_recovered_exactly():
    line = column_theory(PLAN, "B32")
    # a crossing that converges geometrically to the line (increments 8, 4: r = 1/2, limit d3 + 4) with seed offsets
    # that cancel in the mean; the paper's rate never trains
    means = {1: line - 12, 4: line - 4, 16: line}
    edges = {(f, "sgd", s): means[f] + off for f in means for s, off in zip((0, 1, 2), (-1.5, 0.0, 1.5),
                                                                                 strict=True)}  # fmt: skip
    cells = _results(edges)
    for f in means:  # the paper's rate: only the anchor ran, and it stayed at chance
        cells[sweep_name("B32", f, "sgd_paper")] = [
            {"config": c["config"], "result": {**c["result"], "test_accuracy": 0.11}}
            for c in cells[sweep_name("B32", f, "sgd")] if c["config"]["depth"] == PLAN.anchor_depth
        ]
    study = analyse(PLAN, cells)
    ours = [s for s in study["summary"] if s["lr"] == "1e-3*B"]
    assert [s["crossing_mean"] for s in ours] == pytest.approx([means[f] for f in (1, 4, 16)], abs=1e-9)
    assert ours[0]["crossing_stderr"] == pytest.approx(1.5 / math.sqrt(3), rel=1e-9)  # std 1.5 over 3 seeds
    assert [s["steps"] for s in ours] == [156, 625, 2500]
    t = next(t for t in study["trends"] if t["lr"] == "1e-3*B")
    assert t["ratio_of_increments"] == pytest.approx(0.5) and t["limit"] == pytest.approx(line + 4)
    lo, hi = t["limit_interval"]
    assert lo < line + 4 < hi and t["consistent"] is False  # the limit lies 4 layers past the line, beyond its error
    slope = np.polyfit(np.log([156, 625, 2500]) / math.log(4), [means[f] for f in (1, 4, 16)], 1)[0]
    assert t["gain_per_4x"] == pytest.approx(slope)
    paper = next(t for t in study["trends"] if t["lr"] == "1e-5*B")
    assert paper["verdict"] == "does not train within the budgets tried" and paper["consistent"] is None


def test_a_limit_at_the_line_is_consistent_and_a_growing_edge_is_not():
    line = column_theory(PLAN, "B32")
    at_line = trend([{"budget": f, "steps": 10 * f, "crossing_depth": line - 8 / f + off}
                     for f in (1, 4, 16) for off in (-0.5, 0.0, 0.5)])  # fmt: skip
    # increments 6 and 1.5: r = 1/4, limit (line - 0.5) + 1.5 (1/4) / (3/4) = line
    assert at_line["ratio_of_increments"] == pytest.approx(0.25) and at_line["limit"] == pytest.approx(line)
    summary = [{"crossing_mean": m, "ratio": m / line, "steps": 10 * f, "censored": 0}
               for f, m in zip((1, 4, 16), at_line["means"], strict=True)]  # fmt: skip
    text, consistent = budget.verdict(summary, at_line, line)
    assert consistent is True and at_line["converging_fraction"] > 0.99 and "geometric limit" in text
    growing = [{"budget": f, "steps": 10 * f, "crossing_depth": 20 + 5 * math.log(f, 4) * (1 + 0.4 * k) + off}
               for f in (1, 4, 16) for k, off in ((0, -0.3), (1, 0.0), (2, 0.3))]  # fmt: skip
    g = trend(growing)
    assert g["ratio_of_increments"] == pytest.approx(1.0) and g["limit"] is None
    summary = [{"crossing_mean": m, "ratio": m / line, "steps": 10 * f, "censored": 0}
               for f, m in zip((1, 4, 16), g["means"], strict=True)]  # fmt: skip
    text, consistent = budget.verdict(summary, g, line)
    assert consistent is False and "not converging" in text and "+" in text
    text, consistent = budget.verdict(summary[:1], trend([]), line)  # one budget: no trend, no judgement
    assert consistent is None and text.endswith("one budget so far") and f"{g['means'][0]:.1f}" in text


def test_a_small_run_resumes_from_its_store(tmp_path, monkeypatch, capsys):
    plan = BudgetPlan(columns={"B8": {"batch_size": 8}}, budgets={1: (1, 64), 4: (1, 256)}, seeds=(0, 1),
                      depth_step=24, anchor_depth=2, optimizers=("rmsprop", "sgd_paper"),
                      base={"dataset": "mnist", "test_subset": 64, "width": 16})  # fmt: skip
    monkeypatch.setitem(PLANS, "tiny", plan)
    argv = ["budget", "--plan", "tiny", "--out", str(tmp_path), "--workers", "1", "--json"]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    # rmsprop over the whole grid; SGD at the paper's rate only its anchors (they stay at chance at this budget)
    planned = len(depth_grid(plan, "B8")) * 2 * 2 + 2 * 2
    assert first["cells_done"] == first["cells_planned"] == planned
    paper = [t for t in first["trends"] if t["lr"] == "1e-5*B" and t["optimizer"] == "sgd"]
    assert paper and paper[0]["verdict"] == "does not train within the budgets tried"
    stored = json.loads((tmp_path / "budget.json").read_text())
    assert {(s["budget"], s["steps"]) for s in stored["summary"]} == {(1, 8), (4, 32)}
    assert (tmp_path / "budget.png").stat().st_size > 0 and (tmp_path / "budget_trends.csv").is_file()
    assert main(argv) == 0  # everything is stored: nothing trains again, the same answer
    again = json.loads(capsys.readouterr().out)
    assert again["trends"] == first["trends"]
    assert main([*argv[:-1], "--no-train", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cells_done"] == planned


def test_the_reports_verdict_follows_the_study():
    """Fig 3a's claim: consistent only where every tested column converges to the line; not judged with too few
    budgets; not tested without a study."""
    from bnmft.report.training import _budget_verdict

    def study(*flags):
        return {"trends": [{"column": c, "optimizer": "sgd", "lr": "1e-3*B", "verdict": f"v{c}", "consistent": f}
                           for c, f in zip(("B8", "B32"), flags, strict=True)]}  # fmt: skip

    assert _budget_verdict("fig3a", 0.74, study(True, True))[1] is True
    text, flag = _budget_verdict("fig3a", 0.74, study(True, False))
    assert flag is False and text.startswith("not established") and "column B8: vB8; column B32: vB32" in text
    assert _budget_verdict("fig3a", 0.74, study(True, None))[1] is None
    text, flag = _budget_verdict("fig3a", 0.74, None)
    assert flag is None and "not tested" in text and "0.74" in text
