"""Finite-width simulator (PyTorch, CPU or CUDA): ensembles of real BN networks that measure what the theory
predicts. Importing this subpackage imports torch; ``import bnmft`` does not.

* :mod:`.torch_phi` - the nonlinearity as a differentiable torch function;
* :mod:`.network` - the batched ensemble: forward, hooks for log-space gradient norms, measurements;
* :mod:`.mlp` - :func:`simulate_mlp` (the MLP family), estimates with standard errors, the tidy table;
* :mod:`.residual` - residual BN networks (:func:`simulate_residual`), per-block measurements;
* :mod:`.conv` - convolutional BN networks (:func:`simulate_conv`);
* :mod:`.runner` - the one run skeleton the three families plug into (chunks, memory check, seed, progress,
  statistics, tidy tables);
* :mod:`.model_probe` - :func:`probe`: any PyTorch model, layer by layer, against the theory;
* :mod:`.model_graph` - :func:`predict_model`: a model's mean field from its graph (the torch adapter of
  :mod:`bnmft.meanfield.graph`); :mod:`.model_zoo` - torchvision-style BN models built from torch layers.
"""

from .conv import ConvSimulation, simulate_conv
from .extrapolation import WidthExtrapolation, WidthFit
from .mlp import BatchSummary, SimulationConfig, SimulationResult, simulate_mlp
from .model_graph import predict_model
from .model_probe import ProbeResult, probe
from .network import NetworkSpec, run_ensemble
from .residual import ResidualSimulation, simulate_residual
from .runner import growth_rates, slope_rates
from .torch_phi import to_torch

__all__ = [
    "BatchSummary",
    "ConvSimulation",
    "NetworkSpec",
    "ProbeResult",
    "ResidualSimulation",
    "SimulationConfig",
    "SimulationResult",
    "WidthExtrapolation",
    "WidthFit",
    "growth_rates",
    "predict_model",
    "probe",
    "run_ensemble",
    "simulate_conv",
    "simulate_mlp",
    "simulate_residual",
    "slope_rates",
    "to_torch",
]


def __getattr__(name: str):
    if name == "simulate":  # the old name of simulate_mlp (a function may not share the subpackage's name)
        import warnings

        warnings.warn("bnmft.simulate.simulate is deprecated: use bnmft.simulate.simulate_mlp", DeprecationWarning,
                      stacklevel=2)  # fmt: skip
        return simulate_mlp
    raise AttributeError(f"module 'bnmft.simulate' has no attribute {name!r}")
