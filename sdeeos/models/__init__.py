"""Ensemble models: small final classes over `EnsembleModel`, each defined once symbolically."""

from ._base import EnsembleModel, Model, SymbolicStep
from ._self_stabilization import SelfStabilization
from ._minimalist import Minimalist
from ._cubic_taylor import CubicTaylor
from ._sde import CubicTaylorSME, MinimalistSME, OrnsteinUhlenbeck, SelfStabilizationSME, StochasticModifiedEquation
from .quadratic_regression import QuadraticRegression
from ._multi_direction import MultiDirection

#: CLI / dataset name -> model class.  Adding a model is adding a module and one entry here.
MODEL_REGISTRY = {cls.name: cls for cls in (SelfStabilization, QuadraticRegression)}
MODEL_REGISTRY.update({cls.name: cls for cls in (MultiDirection, Minimalist, CubicTaylor, OrnsteinUhlenbeck, MinimalistSME, CubicTaylorSME, SelfStabilizationSME)})

__all__ = [
    "Model",
    "EnsembleModel",
    "SymbolicStep",
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
]
