"""The presets can't rot: every sweep of every preset is built and validated, and one shrunken cell of each sweep of
the paper preset trains end to end (tiny data, one step) - CIFAR-10 from synthetic files in the standard format."""

import numpy as np
import pytest

from bnmft.experiments.config import TrainConfig, check_config
from bnmft.experiments.runners import run_cells
from bnmft.experiments.sweep import PRESETS, load_sweeps

from .test_data import make_cifar


@pytest.mark.parametrize("preset", PRESETS)
def test_every_cell_of_every_preset_is_valid(preset):
    sweeps = load_sweeps(preset)
    assert sweeps
    for sweep in sweeps:
        cells = sweep.cells()
        assert cells and all(check_config(TrainConfig(**c)) for c in cells)


def test_one_shrunken_cell_of_each_paper_sweep_trains(tmp_path):
    make_cifar(tmp_path, np.random.default_rng(0), n=16)
    sweeps = load_sweeps("paper")
    assert {s.name for s in sweeps} >= {"fig3a", "fig3b", "fig3c", "fig3d", "fig5a", "fig5b", "fig5c", "fig5d"}
    for sweep in sweeps:
        cell = sweep.cells()[len(sweep.cells()) // 2]  # a cell from the middle of the grid
        ghost = cell.get("ghost_size")
        shrunk = cell | {
            "width": 8,
            "depth": min(cell["depth"], 3),
            "epochs": 1,
            "batch_size": 8,
            "ghost_size": None if ghost is None else 4,
            "train_subset": 8,
            "test_subset": 8,
            "data_dir": str(tmp_path) if cell["dataset"] == "cifar10" else cell.get("data_dir"),
        }
        (result,) = run_cells([shrunk])
        assert result["steps"] == 1, sweep.name
        assert 0.0 <= result["test_accuracy"] <= 1.0, sweep.name
        assert result["diverged"] or len(result["history"]) == 1, sweep.name
