"""bnmft: the mean field theory of batch normalization (Yang et al., ICLR 2019) as software.

The public API (this module) is small and re-exported from the implementation:

* :mod:`bnmft.meanfield` - the exact theory engine in numpy/scipy (no torch): :func:`theory`,
  :func:`gram_map`, :func:`propagate`, :func:`symmetry_breaking`, :func:`eps_theory`, :func:`residual` (residual
  networks), :func:`design` (the depth planner), :func:`spatial_theory` (conv networks), ...;
* :func:`probe` - any PyTorch model, layer by layer, against the theory (imports torch when called);
* :mod:`bnmft.nonlinearity` - the registry of nonlinearities and safe expressions;
* :class:`InputError` - the one error type for bad input (a ``ValueError``).

Every function that takes a nonlinearity takes the same specifications: a registered name, an expression in
``z``, a :class:`Nonlinearity` or a numpy-vectorised callable. ``import bnmft`` never imports torch; the
simulator (:mod:`bnmft.simulate`) and the training experiments (:mod:`bnmft.experiments`) do.
"""

from .errors import InputError
from .meanfield import (
    DesignOption,
    DesignResult,
    EpsResult,
    GramMapValue,
    Propagation,
    ResidualResult,
    SpatialResult,
    SymmetryBreaking,
    TheoryResult,
    design,
    eps_theory,
    gegenbauer_series,
    gram_map,
    propagate,
    residual,
    spatial_theory,
    spherical_moments,
    symmetry_breaking,
    symmetry_breaking_alpha,
    theory,
    theory_table,
)
from .nonlinearity import Nonlinearity, get_nonlinearity
from .nonlinearity import available as nonlinearities

__version__ = "0.1.0"


def probe(model, inputs, loss=None, **kwargs):
    """Probe any ``torch.nn.Module`` layer by layer against the theory: see
    :func:`bnmft.simulate.model_probe.probe` (this wrapper imports torch only when called)."""
    from .simulate.model_probe import probe as run_probe

    return run_probe(model, inputs, loss, **kwargs)


__all__ = [
    "DesignOption",
    "DesignResult",
    "EpsResult",
    "GramMapValue",
    "InputError",
    "Nonlinearity",
    "Propagation",
    "ResidualResult",
    "SpatialResult",
    "SymmetryBreaking",
    "TheoryResult",
    "__version__",
    "design",
    "eps_theory",
    "gegenbauer_series",
    "get_nonlinearity",
    "gram_map",
    "nonlinearities",
    "probe",
    "propagate",
    "residual",
    "spatial_theory",
    "spherical_moments",
    "symmetry_breaking",
    "symmetry_breaking_alpha",
    "theory",
    "theory_table",
]
