"""The mean-field theory engine: numpy and scipy only, float64 throughout (docs/theory.md sections 1-10).

The public functions are re-exported here and by :mod:`bnmft`; the modules (none shares a name with a
function) are

* :mod:`.quadrature` - rules for the one- and two-coordinate batch law (angles, panels, kinks);
* :mod:`.moments` - the spherical moments of phi every quantity reduces to;
* :mod:`.closed_forms` - affine, relu and alpha_relu, and the arc-cosine kernel;
* :mod:`.gegenbauer` - the paper's Gegenbauer series (an independent check);
* :mod:`.forward` - forward eigenvalues and two-batch rates;
* :mod:`.gram` - the Gram map V(Sigma) for any Sigma; :mod:`.propagation` - iterating it from a user's batch;
* :mod:`.symmetry` - where BSB1 stops being attracting; :mod:`.eps` - batch norm with eps > 0;
* :mod:`.linear_noise` - finite width around BSB1 (:func:`fluctuations`, the linear-noise theory);
* :mod:`.width_expansion` - the 1/N coefficients of c*, q* (and, from :mod:`.gradient_width`, lambda_G):
  :func:`finite_width`; :mod:`.outlier` - the outlier state; :mod:`.escape` - when finite networks leave BSB1;
* :mod:`.graph` - a whole network's mean field from its graph (the framework adapter is in :mod:`bnmft.simulate`);
* :mod:`.residual` - residual networks (:func:`residual_theory`); :mod:`.planner` - the depth planner (:func:`design`);
* :mod:`.conv` - convolutional networks with spatial BN (:func:`conv_theory`); :mod:`.conv_width` - finite channels:
  the depth at which a conv-BN stack leaves the mean field (:func:`conv_departure_depth`);
* :mod:`.api` - :func:`theory`, dispatch and validation; :mod:`.result` - :class:`TheoryResult`.
"""

from ..options import check_batch_size
from .api import theory, theory_table
from .conv import ConvResult, conv_theory
from .conv_width import ConvDeparture, conv_departure_depth
from .eps import EpsResult, eps_theory
from .escape import EscapeDepth, escape_depth
from .gegenbauer import GegenbauerSeries, gegenbauer_series
from .gram import GramMapValue, gram_map
from .linear_noise import Fluctuations, fluctuations
from .moments import SphericalMoments, spherical_moments
from .outlier import OutlierResult, outlier_state
from .planner import DesignOption, DesignResult, design
from .propagation import Propagation, propagate
from .residual import ResidualResult, local_rate, residual_theory
from .result import TheoryResult
from .symmetry import SymmetryBreaking, symmetry_breaking, symmetry_breaking_alpha
from .width_expansion import FiniteWidthResult, finite_width

__all__ = [
    "ConvDeparture",
    "ConvResult",
    "DesignOption",
    "DesignResult",
    "EpsResult",
    "EscapeDepth",
    "FiniteWidthResult",
    "Fluctuations",
    "GegenbauerSeries",
    "GramMapValue",
    "OutlierResult",
    "Propagation",
    "ResidualResult",
    "SphericalMoments",
    "SymmetryBreaking",
    "TheoryResult",
    "check_batch_size",
    "conv_departure_depth",
    "conv_theory",
    "design",
    "eps_theory",
    "escape_depth",
    "finite_width",
    "fluctuations",
    "gegenbauer_series",
    "gram_map",
    "local_rate",
    "outlier_state",
    "propagate",
    "residual_theory",
    "spherical_moments",
    "symmetry_breaking",
    "symmetry_breaking_alpha",
    "theory",
    "theory_table",
]
