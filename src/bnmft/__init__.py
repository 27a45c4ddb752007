"""bnmft: the mean field theory of batch normalization (Yang et al., ICLR 2019) as software.

The public API (this module) is small; the implementation lives in subpackages:

* :mod:`bnmft.theory` - exact theory in numpy/scipy (no torch);
* :mod:`bnmft.nonlinearity` - the registry of nonlinearities and safe expressions.

``import bnmft`` never imports torch.
"""

from .nonlinearity import Nonlinearity, get_nonlinearity
from .nonlinearity import available as nonlinearities
from .theory import (
    Propagation,
    TheoryResult,
    gegenbauer_series,
    gram_map,
    propagate,
    spherical_moments,
    theory,
    theory_table,
)

__version__ = "0.1.0"

__all__ = [
    "Nonlinearity",
    "Propagation",
    "TheoryResult",
    "__version__",
    "gegenbauer_series",
    "get_nonlinearity",
    "gram_map",
    "nonlinearities",
    "propagate",
    "spherical_moments",
    "theory",
    "theory_table",
]
