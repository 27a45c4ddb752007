"""Trainability experiments: offline data sets, training of BN MLPs, resumable sweeps (local process pool or
Dask), the SQLite results store and the heatmaps. Only :mod:`.training` imports torch (and the sweep's workers,
which call it): declaring, validating and reading back sweeps works without torch.

* :mod:`.config` - :class:`TrainConfig` (one cell) and its validation;
* :mod:`.data` - MNIST, Fashion-MNIST, CIFAR-10 loaders;
* :mod:`.training` - the BN MLP and :func:`train`;
* :mod:`.store` - the SQLite store keyed by configuration hashes;
* :mod:`.sweep` - TOML sweeps, validation, execution, resumption.
"""
