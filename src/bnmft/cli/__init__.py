"""The ``bnmft`` command, one module per command family:

* :mod:`.app` - the parser, the output checks and :func:`main` (bad input: one line, exit status 2);
* :mod:`.arguments` - the argument types (they call the library's checks, so the CLI refuses what the API does);
* :mod:`.theory` - ``theory``, ``propagate``, ``symmetry``, ``nonlinearities`` (the MLP family's theory);
* :mod:`.simulate` - ``simulate`` (the MLP family's simulator);
* :mod:`.residual` - ``residual`` and ``design`` (the residual family);
* :mod:`.conv` - ``conv`` (the convolutional family) and ``probe`` (any PyTorch model);
* :mod:`.experiments` - ``sweep`` and ``heatmap``; ``reproduce`` runs the main job (:mod:`bnmft.report`).
"""

from .app import build_parser, main

__all__ = ["build_parser", "main"]
