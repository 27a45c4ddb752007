"""bnmft: the mean field theory of batch normalization (Yang et al., ICLR 2019) as software.

The public API (this module) is small and re-exported from the implementation:

* :mod:`bnmft.meanfield` - the exact theory engine in numpy/scipy (no torch): :func:`theory`,
  :func:`gram_map`, :func:`propagate`, :func:`symmetry_breaking`, :func:`eps_theory`; one function per network family:
  :func:`theory` (the paper's MLP), :func:`residual_theory` (residual networks), :func:`conv_theory` (conv
  networks); :func:`design` (the depth planner); finite width: :func:`fluctuations`, :func:`finite_width`,
  :func:`outlier_state`, :func:`escape_depth`, :func:`conv_departure_depth` (finite channels); ...;
* :func:`probe` - any PyTorch model, layer by layer, against the theory (imports torch when called);
* :mod:`bnmft.nonlinearity` - the registry of nonlinearities and safe expressions;
* :class:`InputError` - the one error type for bad input (a ``ValueError``).

Every function that takes a nonlinearity takes the same specifications: a registered name, an expression in
``z``, a :class:`Nonlinearity` or a numpy-vectorised callable. ``import bnmft`` never imports torch; the
simulator (:mod:`bnmft.simulate`) and the training experiments (:mod:`bnmft.experiments`) do.
"""

from .errors import InputError
from .meanfield import (
    ConvDeparture,
    ConvResult,
    DesignOption,
    DesignResult,
    EpsResult,
    EscapeDepth,
    FiniteWidthResult,
    Fluctuations,
    GramMapValue,
    OutlierResult,
    Propagation,
    ResidualResult,
    SymmetryBreaking,
    TheoryResult,
    conv_departure_depth,
    conv_theory,
    design,
    eps_theory,
    escape_depth,
    finite_width,
    fluctuations,
    gegenbauer_series,
    gram_map,
    outlier_state,
    propagate,
    residual_theory,
    spherical_moments,
    symmetry_breaking,
    symmetry_breaking_alpha,
    theory,
    theory_table,
)
from .nonlinearity import Nonlinearity, get_nonlinearity
from .nonlinearity import available as nonlinearities

__version__ = "0.1.0"

#: old public names -> (new name, the function): still work, with a DeprecationWarning
_DEPRECATED = {"residual": "residual_theory", "spatial_theory": "conv_theory"}


def __getattr__(name: str):
    if name in _DEPRECATED:
        import warnings

        new = _DEPRECATED[name]
        warnings.warn(f"bnmft.{name} is deprecated: use bnmft.{new}", DeprecationWarning, stacklevel=2)
        return globals()[new]
    raise AttributeError(f"module 'bnmft' has no attribute {name!r}")


def probe(model, inputs, loss=None, **kwargs):
    """Probe any ``torch.nn.Module`` layer by layer against the theory: see
    :func:`bnmft.simulate.model_probe.probe` (this wrapper imports torch only when called)."""
    from .simulate.model_probe import probe as run_probe

    return run_probe(model, inputs, loss, **kwargs)


__all__ = [
    "ConvDeparture",
    "ConvResult",
    "DesignOption",
    "DesignResult",
    "EpsResult",
    "EscapeDepth",
    "FiniteWidthResult",
    "Fluctuations",
    "GramMapValue",
    "InputError",
    "Nonlinearity",
    "OutlierResult",
    "Propagation",
    "ResidualResult",
    "SymmetryBreaking",
    "TheoryResult",
    "__version__",
    "conv_departure_depth",
    "conv_theory",
    "design",
    "eps_theory",
    "escape_depth",
    "finite_width",
    "fluctuations",
    "gegenbauer_series",
    "get_nonlinearity",
    "gram_map",
    "nonlinearities",
    "outlier_state",
    "probe",
    "propagate",
    "residual_theory",
    "spherical_moments",
    "symmetry_breaking",
    "symmetry_breaking_alpha",
    "theory",
    "theory_table",
]
