"""sdeeos: the edge of stability of GD and SGD.

Public API (everything else is private and may change):

* models: `SelfStabilization`, base `EnsembleModel`
* `simulate`: run an ensemble, get an `xarray.Dataset`
* `theory`: SymPy derivations and the predictions lambdified from them
* `RNG_SCHEME`: the name of the counter-based random-number scheme every backend uses
"""

from . import theory
from ._errors import BackendUnavailableError, OutsideDomainError, ParameterError, SdeeosError
from ._rng import RNG_SCHEME
from ._simulate import simulate
from ._version import __version__
from .models import MODEL_REGISTRY, EnsembleModel, Model, SelfStabilization

__all__ = [
    "__version__",
    "simulate",
    "theory",
    "Model",
    "EnsembleModel",
    "SelfStabilization",
    "MODEL_REGISTRY",
    "RNG_SCHEME",
    "SdeeosError",
    "ParameterError",
    "BackendUnavailableError",
    "OutsideDomainError",
]
