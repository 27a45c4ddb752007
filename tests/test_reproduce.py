"""The main job writes its table, figure and report, and the report's checks pass."""

import csv
import json
import math
import re

import pytest

from bnmft.cli import main


def test_reproduce_writes_everything(tmp_path, capsys):
    assert main(["reproduce", "--out", str(tmp_path), "--json", "--preset", "tiny"]) == 0
    for name in (
        "theory_table.csv",
        "theory_table.json",
        "theory_lambda_G.png",
        "report.md",
        "symmetry_breaking.png",
        "propagation.png",
        "fig1a_lambda_G.png",
        "fig1b_gradients.png",
        "fig1c_symmetry_breaking.png",
        "fig1d_gram_examples.png",
        "fig2_two_batches.png",
        "width_sweep.png",
        "fig1_simulation.csv",
        "fig4_first_steps.png",
        "eps_phase_tanh.png",
        "eps_phase_relu.png",
        "heatmap_tiny.png",
        "sweeps.db",
    ):
        assert (tmp_path / name).stat().st_size > 0
    rows = list(csv.DictReader(open(tmp_path / "theory_table.csv")))
    relu_32 = next(r for r in rows if r["label"] == "relu" and r["batch_size"] == "32")
    c = -1 / 31  # theory.md section 4, ReLU closed form
    j1 = (math.sqrt(1 - c * c) + (math.pi - math.acos(c)) * c) / math.pi
    expected = ((math.pi - math.acos(c)) / math.pi + 31) / (29 * (1 - j1)) - 1 / 29
    assert float(relu_32["lambda_G"]) == pytest.approx(expected, rel=1e-14)
    assert len(json.loads((tmp_path / "theory_table.json").read_text())) == len(rows)
    report = (tmp_path / "report.md").read_text()
    verdicts = re.findall(r"\| (yes|NO) \|$", report, flags=re.M)
    assert len(verdicts) >= 20 and set(verdicts) == {"yes"}
    assert "Sweep `tiny`" in report and "16/ln lambda_G" in report
