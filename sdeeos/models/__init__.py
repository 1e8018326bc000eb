"""Ensemble models: small final classes over `EnsembleModel`, each defined once symbolically."""

from ._base import EnsembleModel, Model, SymbolicStep
from ._self_stabilization import SelfStabilization

#: CLI / dataset name -> model class.  Adding a model is adding a module and one entry here.
MODEL_REGISTRY = {cls.name: cls for cls in (SelfStabilization,)}

__all__ = ["Model", "EnsembleModel", "SymbolicStep", "SelfStabilization", "MODEL_REGISTRY"]
