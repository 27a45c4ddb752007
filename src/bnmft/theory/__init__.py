"""The theory engine: numpy and scipy only, float64 throughout (theory.md sections 1-4).

Public entry points are re-exported by :mod:`bnmft`; the modules are

* :mod:`.quadrature` - rules for the one- and two-coordinate batch law (angles, panels, kinks);
* :mod:`.moments` - the spherical moments of phi every quantity reduces to;
* :mod:`.closed_forms` - affine, relu and alpha_relu (arc-cosine kernels);
* :mod:`.gegenbauer` - the paper's Gegenbauer series (an independent check);
* :mod:`.forward` - forward eigenvalues and two-batch rates; :mod:`.gram_map` - V(Sigma) for any Sigma;
  :mod:`.propagate` - iterating V from a user's batch;
* :mod:`.api` - :func:`theory`, dispatch and validation; :mod:`.result` - :class:`TheoryResult`.
"""

from .api import check_batch_size, theory, theory_table
from .gegenbauer import GegenbauerSeries, gegenbauer_series
from .gram_map import GramMapValue, gram_map
from .moments import SphericalMoments, spherical_moments
from .propagate import Propagation, propagate
from .result import TheoryResult

__all__ = [
    "GegenbauerSeries",
    "GramMapValue",
    "Propagation",
    "SphericalMoments",
    "TheoryResult",
    "check_batch_size",
    "gegenbauer_series",
    "gram_map",
    "propagate",
    "spherical_moments",
    "theory",
    "theory_table",
]
