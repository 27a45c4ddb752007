"""Trainability experiments: offline data sets, training of BN MLPs, resumable sweeps (local process pool or
Dask), the SQLite results store and the heatmaps. Imports torch (through training); ``import bnmft`` does not.

* :mod:`.data` - MNIST, Fashion-MNIST, CIFAR-10 loaders;
* :mod:`.training` - :class:`TrainConfig`, the BN MLP and :func:`train`;
* :mod:`.store` - the SQLite store keyed by configuration hashes;
* :mod:`.sweep` - TOML sweeps, validation, execution, resumption.
"""
