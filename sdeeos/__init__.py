"""sdeeos: the edge of stability of GD and SGD.

Public API (everything else is private and may change):

* models: `SelfStabilization` (reduced EoS model), `QuadraticRegression`, `Minimalist`, `CubicTaylor`,
  `OrnsteinUhlenbeck` and the stochastic modified equations `*SME`; bases `Model`, `EnsembleModel`
* `simulate`: run an ensemble, get an `xarray.Dataset`
* `sweep`: a grid of simulations (local Dask cluster by default), resumable NetCDF/Zarr stores
* `theory`: SymPy derivations and the predictions lambdified from them
* `RNG_SCHEME`: the name of the counter-based random-number scheme every backend uses
  (`RNG_SCHEME_F32`: its float32 variant, used by ``dtype="float32"`` runs)
"""

from . import theory
from ._errors import BackendUnavailableError, Float32ResolutionWarning, OutsideDomainError, ParameterError, SdeeosError
from ._rng import RNG_SCHEME, RNG_SCHEME_F32
from ._sharded import SchedulerUnreachableError, ShardFailedError
from ._simulate import simulate
from .sweeps import sweep
from ._version import __version__
from .models import (
    MODEL_REGISTRY,
    CubicTaylor,
    CubicTaylorSME,
    EnsembleModel,
    Minimalist,
    MinimalistSME,
    Model,
    OrnsteinUhlenbeck,
    QuadraticRegression,
    MultiDirection,
    SelfStabilization,
    SelfStabilizationSME,
    StochasticModifiedEquation,
)

__all__ = [
    "__version__",
    "simulate",
    "sweep",
    "theory",
    "Model",
    "EnsembleModel",
    "SelfStabilization",
    "QuadraticRegression",
    "MultiDirection",
    "Minimalist",
    "CubicTaylor",
    "OrnsteinUhlenbeck",
    "StochasticModifiedEquation",
    "MinimalistSME",
    "CubicTaylorSME",
    "SelfStabilizationSME",
    "MODEL_REGISTRY",
    "RNG_SCHEME",
    "RNG_SCHEME_F32",
    "SdeeosError",
    "Float32ResolutionWarning",
    "ShardFailedError",
    "SchedulerUnreachableError",
    "ParameterError",
    "BackendUnavailableError",
    "OutsideDomainError",
]
