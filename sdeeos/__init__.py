"""sdeeos: the edge of stability of GD and SGD.

Public API (everything else is private and may change):

* models: `SelfStabilization` (reduced EoS model), `QuadraticRegression`, `Minimalist`, `CubicTaylor`,
  `OrnsteinUhlenbeck` and the stochastic modified equations `*SME`; bases `Model`, `EnsembleModel`
* `simulate`: run an ensemble, get an `xarray.Dataset`
* `sweep`: a grid of simulations (local Dask cluster by default), resumable NetCDF/Zarr stores
* `theory`: SymPy derivations and the predictions lambdified from them
* `RNG_SCHEME`: the name of the counter-based random-number scheme every backend uses
  (`RNG_SCHEME_F32`: its float32 variant, used by ``dtype="float32"`` runs)

The names load on first use (`PUBLIC`: name -> the module that defines it), so that ``import sdeeos``
and the command line's ``--help`` do not import SymPy, Numba and the sweep runner up front.
"""

from __future__ import annotations

import importlib

from ._errors import BackendUnavailableError, Float32ResolutionWarning, OutsideDomainError, ParameterError, SdeeosError
from ._version import __version__

#: public name -> the module defining it (loaded on first access)
PUBLIC = {
    "theory": "sdeeos.theory",
    "RNG_SCHEME": "sdeeos._rng",
    "RNG_SCHEME_F32": "sdeeos._rng",
    "NoWorkersError": "sdeeos._sharded",
    "SchedulerUnreachableError": "sdeeos._sharded",
    "ShardFailedError": "sdeeos._sharded",
    "simulate": "sdeeos._simulate",
    "sweep": "sdeeos.sweeps",
    **dict.fromkeys(("MODEL_REGISTRY", "CubicTaylor", "CubicTaylorSME", "EnsembleModel", "Minimalist",
                     "MinimalistSME", "Model", "OrnsteinUhlenbeck", "QuadraticRegression", "MultiDirection",
                     "SelfStabilization", "SelfStabilizationSME", "StochasticModifiedEquation"), "sdeeos.models"),
}

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
    "NoWorkersError",
    "SchedulerUnreachableError",
    "ParameterError",
    "BackendUnavailableError",
    "OutsideDomainError",
]


def __getattr__(name: str):
    """A public name, imported from its module on first use (then cached in this module)."""
    if name not in PUBLIC:
        raise AttributeError(f"module 'sdeeos' has no attribute {name!r}")
    module = importlib.import_module(PUBLIC[name])
    value = module if module.__name__ == f"{__name__}.{name}" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *PUBLIC})
