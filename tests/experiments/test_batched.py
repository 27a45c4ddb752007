"""Batched training against one-at-a-time training: same seed, same numbers to float tolerance."""

import pytest

from bnmft.experiments.batched import train_batched
from bnmft.experiments.config import TrainConfig
from bnmft.experiments.groups import batch_key, group_cells
from bnmft.experiments.store import Store
from bnmft.experiments.sweep import load_sweeps, run_sweep
from bnmft.experiments.training import train

BASE = {"dataset": "mnist", "width": 32, "depth": 3, "batch_size": 16, "epochs": 2, "train_subset": 512}


def _close(one: dict, batched: dict) -> None:
    assert batched["diverged"] == one["diverged"] and batched["steps"] == one["steps"]
    assert len(batched["history"]) == len(one["history"])
    for a, b in zip(one["history"], batched["history"], strict=True):
        for key in ("train_loss", "test_loss"):
            assert b[key] == pytest.approx(a[key], rel=2e-5), key
        for key in ("train_accuracy", "test_accuracy"):
            assert b[key] == pytest.approx(a[key], abs=2 / 256), key


@pytest.mark.parametrize("optimizer", ["sgd", "rmsprop"])
def test_a_batch_gives_the_one_at_a_time_numbers(optimizer):
    lr = 0.05 if optimizer == "sgd" else 1e-3
    base = BASE | {"optimizer": optimizer, "test_subset": 256}
    cfgs = [
        TrainConfig(**base, seed=0, lr=lr),
        TrainConfig(**base, seed=1, lr=lr / 2, gamma=0.7, beta=0.1),  # another seed, rate, gamma and beta
        TrainConfig(**base, seed=0, lr=lr, eps=0.5, sigma_w=1.3),  # another eps (BN per model) and sigma_w
        TrainConfig(**base, seed=2, lr=lr, ghost_size=8),  # ghost batches
    ]
    for one, batched in zip([train(c) for c in cfgs], train_batched(cfgs), strict=True):
        _close(one, batched)
        assert batched["batched"] == 4


def test_divergence_in_a_batch_stays_in_its_model():
    cfgs = [TrainConfig(**BASE, test_subset=256, seed=0, lr=0.05), TrainConfig(**BASE, test_subset=256, seed=0, lr=1e9)]
    good, bad = train_batched(cfgs)
    assert bad["diverged"] and bad["test_accuracy"] == pytest.approx(0.1)
    _close(train(cfgs[0]), good)


def test_cells_are_grouped_by_shape():
    cells = [TrainConfig(**(BASE | {"depth": d}), gamma=g).to_dict() for d in (2, 3) for g in (0.5, 1.0, 1.5)]
    groups = group_cells(cells, max_models=2)
    assert [len(g) for g in groups] == [2, 1, 2, 1]
    assert all(len({batch_key(c) for c in g}) == 1 for g in groups)
    with pytest.raises(ValueError, match="must share"):
        train_batched([TrainConfig(**(BASE | {"depth": 2})), TrainConfig(**BASE)])


def test_a_sweep_trains_a_gamma_grid_batched(tmp_path):
    path = tmp_path / "g.toml"
    path.write_text(
        'name = "g"\nx = "gamma"\n[base]\ndataset = "mnist"\nwidth = 16\nepochs = 1\ntrain_subset = 256\n'
        'test_subset = 64\nlr = "1e-3*B"\nbatch_size = 16\n[grid]\ndepth = [2]\ngamma = [0.5, 1.0, 1.5]\n'
    )
    store = Store(tmp_path / "g.db")
    summary = run_sweep(load_sweeps(path)[0], store, workers=1, progress=False)
    assert summary["ran"] == 3
    results = store.results("g")
    assert len(results) == 3 and all(r["result"]["batched"] == 3 for r in results)
    for r in results:  # each stored cell is the cell trained alone
        one = train(TrainConfig(**r["config"]))
        assert r["result"]["test_accuracy"] == pytest.approx(one["test_accuracy"], abs=2 / 64)
    store.close()


def test_residual_cells_batch_with_the_one_at_a_time_numbers():
    base = BASE | {"test_subset": 256, "branch_depth": 2, "depth": 4}
    cfgs = [
        TrainConfig(**base, seed=0, lr=0.05, branch_scale=1.0),
        TrainConfig(**base, seed=1, lr=0.05, branch_scale=0.3, gamma=0.8),
        TrainConfig(**base, seed=0, lr=0.02, branch_scale=2.0, eps=0.1),
    ]
    for one, batched in zip([train(c) for c in cfgs], train_batched(cfgs), strict=True):
        _close(one, batched)
    assert batch_key(cfgs[0].to_dict()) != batch_key(TrainConfig(**(base | {"branch_depth": 1})).to_dict())


def test_residual_network_shape_and_branch_scale_zero():
    """branch_scale = 0: the blocks are skipped exactly, so the network is the embedding and the head alone."""
    import torch

    from bnmft.experiments.config import layer_counts
    from bnmft.experiments.training import BNMLP

    cfg = TrainConfig(**(BASE | {"branch_depth": 3, "depth": 5}), branch_scale=0.0)
    assert layer_counts(cfg) == (16, 17)
    model = BNMLP(cfg, 20, 10, torch.Generator().manual_seed(0))
    x = torch.randn(16, 20)
    shallow = TrainConfig(**(BASE | {"branch_depth": 3, "depth": 0 + 1}), branch_scale=0.0)
    small = BNMLP(shallow, 20, 10, torch.Generator().manual_seed(0))
    small.weights[0].data.copy_(model.weights[0].data)
    small.readout.load_state_dict(model.readout.state_dict())
    torch.testing.assert_close(model(x), small(x))
