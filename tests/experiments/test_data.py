"""Data loaders: real MNIST from the installed package, and tiny synthetic files in the standard formats."""

import gzip
import pickle
import struct

import numpy as np
import pytest

from bnmft.experiments.data import DatasetUnavailable, load_cifar10, load_dataset, load_fashion_mnist, read_idx


def write_idx(path, array):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def make_fashion(directory, rng, n=20, labels=10):
    write_idx(directory / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
    write_idx(directory / "train-labels-idx1-ubyte.gz", rng.integers(0, labels, n))
    write_idx(directory / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (n // 2, 28, 28)))
    write_idx(directory / "t10k-labels-idx1-ubyte.gz", rng.integers(0, 10, n // 2))


def make_cifar(root, rng, n=10):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8), b"labels": list(rng.integers(0, 10, n))}
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh)


def test_mnist_from_the_package():
    d = load_dataset("mnist")
    assert d.x_train.shape == (60000, 784) and d.x_test.shape == (10000, 784)
    assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int64
    assert d.x_train.min() >= 0 and d.x_train.max() <= 1 and set(np.unique(d.y_test)) == set(range(10))


def test_fashion_mnist_idx_files(tmp_path, rng):
    make_fashion(tmp_path, rng)
    d = load_fashion_mnist(tmp_path)
    assert d.x_train.shape == (20, 784) and d.x_test.shape == (10, 784) and d.classes == 10
    assert d.x_train.max() <= 1.0
    np.testing.assert_array_equal(read_idx(tmp_path / "train-labels-idx1-ubyte.gz"), d.y_train)


def test_bad_labels_are_rejected(tmp_path, rng):
    make_fashion(tmp_path, rng, labels=12)
    with pytest.raises(ValueError, match=r"labels must be integers in \[0, 10\)"):
        load_fashion_mnist(tmp_path)


def test_cifar10_standard_files(tmp_path, rng):
    make_cifar(tmp_path, rng)
    d = load_cifar10(tmp_path, download=False)
    assert d.x_train.shape == (50, 3072) and d.x_test.shape == (10, 3072) and d.features == 3072


def test_missing_data_sets_say_how_to_get_them(tmp_path):
    with pytest.raises(DatasetUnavailable, match="cifar-10-batches-py"):
        load_cifar10(tmp_path, download=False)
    with pytest.raises(ValueError, match="dataset must be one of"):
        load_dataset("imagenet")
