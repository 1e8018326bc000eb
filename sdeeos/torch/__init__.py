"""PyTorch side of sdeeos: curvature of real networks, the theory's quantities, EoS-SGD, training.

Importing this subpackage imports torch (an optional extra: ``pip install sdeeos[torch]``);
``import sdeeos`` alone never does.

Public API
----------
* curvature: :class:`FlatParams`, :func:`hvp`, :class:`HessianOperator`, :func:`lanczos_top`,
  :func:`power_iteration_top`, :class:`SharpnessTracker`, :class:`EigenResult`, :func:`disable_tf32`
* theory quantities: :func:`loss_function`, :func:`per_example_loss_function`,
  :func:`sharpness_gradient`, :func:`self_stabilization_constants`, :func:`projected_noise_variance`,
  :func:`batch_sharpness`, :func:`project_to_stable_set`, :func:`predicted_gap`
* top-k edge directions: :func:`top_k_eigenpairs` (block Lanczos), :func:`edge_constants`
  (λ_j, G, α_j, x_j, Σ_1 of the k-direction model), :class:`EigenSolveError`
* plateau constants: :func:`gradient_flow_rate` (sharpening rate under a small-step continuation),
  :func:`noise_kernel` (K from the Gauss–Newton/NTK top eigenvalues and trace)
* data and networks: :func:`load_data`, :func:`build_model`, :func:`per_example_loss`
* optimizers: :class:`EdgeSGD` (step size = margin x the smallest measured edge: curvature, batch
  sharpness, noise kernel), :class:`EoSSGD` (the proposal's rule), both :class:`EdgeStepOptimizer`;
  :class:`NonFiniteCurvatureError`
* training: :func:`train`, :class:`TrainConfig`, :class:`NonFiniteLossError`
* label-noise SGD: :func:`label_noise_targets`, :func:`label_noise_projected_variance`
  (the projected noise variance sigma_u^2(B, s)), :func:`output_jacobian_energy`
* studies: the real-network study kinds live in `sdeeos.studies` (``STUDY_RUNNERS``, ``real_eos``,
  ``real_gap``, ``eos_sgd_vs_baselines`` here are deprecated aliases)
"""

from __future__ import annotations

import importlib

from .._errors import BackendUnavailableError

try:
    import torch as _torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise BackendUnavailableError(
        "sdeeos.torch needs PyTorch, which is not installed; install the CPU build with "
        "`pip install torch --index-url https://download.pytorch.org/whl/cpu` "
        "or the extra `pip install 'sdeeos[torch]'`"
    ) from exc

from ._curvature import (
    EigenResult,
    FlatParams,
    HessianOperator,
    SharpnessTracker,
    disable_tf32,
    hvp,
    lanczos_top,
    power_iteration_top,
)
from ._edge_directions import (
    EdgeConstants,
    EigenSolveError,
    TopKResult,
    edge_constants,
    project_to_stable_set_k,
    projected_noise_covariance,
    top_k_eigenpairs,
)
from ._data import DATASETS, ClassificationData, load_data
from ._edge_optimizer import EdgeStepOptimizer, NonFiniteCurvatureError
from ._edge_sgd import EDGE_TERMS, REFRESH_MODES, EdgeSGD
from ._eos_sgd import EoSSGD
from ._nets import LOSSES, MODELS, accuracy, build_model, mean_loss, per_example_loss
from ._plateau import gauss_newton_top, gradient_flow_rate, noise_kernel, ntk_trace, ntk_trace_per_example
from ._quantities import (
    SelfStabilizationConstants,
    batch_sharpness,
    batch_sharpness_ratios,
    loss_function,
    per_example_loss_function,
    predicted_gap,
    project_to_stable_set,
    projected_gradient_components,
    projected_noise_variance,
    self_stabilization_constants,
    sharpness_gradient,
    without_replacement_factor,
)
from ._label_noise import label_noise_projected_variance, label_noise_targets, output_jacobian_energy
from ._train import OPTIMIZERS, NonFiniteLossError, TrainConfig, train

__all__ = [
    "EigenResult", "FlatParams", "HessianOperator", "SharpnessTracker", "disable_tf32", "hvp",
    "lanczos_top", "power_iteration_top",
    "EdgeConstants", "EigenSolveError", "TopKResult", "edge_constants", "project_to_stable_set_k",
    "projected_noise_covariance", "top_k_eigenpairs",
    "DATASETS", "ClassificationData", "load_data",
    "EDGE_TERMS", "REFRESH_MODES", "EdgeSGD", "EdgeStepOptimizer", "NonFiniteCurvatureError", "EoSSGD",
    "LOSSES", "MODELS", "accuracy", "build_model", "mean_loss", "per_example_loss",
    "gauss_newton_top", "gradient_flow_rate", "noise_kernel", "ntk_trace", "ntk_trace_per_example",
    "SelfStabilizationConstants", "batch_sharpness", "batch_sharpness_ratios", "loss_function", "per_example_loss_function",
    "predicted_gap", "project_to_stable_set", "projected_gradient_components",
    "projected_noise_variance", "self_stabilization_constants", "sharpness_gradient",
    "without_replacement_factor",
    "label_noise_projected_variance", "label_noise_targets", "output_jacobian_energy",
    "OPTIMIZERS", "NonFiniteLossError", "TrainConfig", "train",
]

_MOVED_TO_STUDIES = ("STUDY_RUNNERS", "eos_sgd_vs_baselines", "real_eos", "real_gap")


def __getattr__(name: str):
    """The deprecated study names, loaded on first use (the study kinds import this package)."""
    if name in _MOVED_TO_STUDIES:
        return getattr(importlib.import_module("sdeeos.torch._studies"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
