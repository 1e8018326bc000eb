"""PyTorch side of sdeeos: curvature of real networks, the theory's quantities, EoS-SGD, training.

Importing this subpackage imports torch (an optional extra: ``pip install sdeeos[torch]``);
``import sdeeos`` alone never does.

Public API
----------
* curvature: :class:`FlatParams` (``mode="eval"``/``"batch"``: how buffers are used; never written),
  :func:`hvp`, :class:`HessianOperator`, :class:`ChunkedLoss` (data as a ``DataLoader``), :func:`lanczos_top`,
  :func:`power_iteration_top`, :class:`SharpnessTracker`, :class:`EigenResult`, :func:`disable_tf32`,
  :func:`hessian_trace` (Hutchinson with its standard error, or exact), :class:`TraceResult`
* losses: ``"mse"``, ``"ce"`` or any callable ``loss(outputs, targets)`` (:func:`check_loss`,
  :func:`output_hessian`: the loss's Gauss–Newton factor)
* theory quantities: :func:`loss_function`, :func:`per_example_loss_function`,
  :func:`sharpness_gradient`, :func:`self_stabilization_constants`, :func:`projected_noise_variance`,
  :func:`batch_sharpness`, :func:`project_to_stable_set`, :func:`predicted_gap`
* top-k edge directions: :func:`top_k_eigenpairs` (block Lanczos), :func:`edge_constants`
  (λ_j, G, α_j, x_j, Σ_1 of the k-direction model), :class:`EigenSolveError`
* plateau constants: :func:`gradient_flow_rate` (sharpening rate under a small-step continuation),
  :func:`noise_kernel` (K from the Gauss–Newton/NTK top eigenvalues and trace)
* data and networks: :func:`load_data`, :func:`build_model`, :func:`per_example_loss`
* optimizers: :class:`EdgeSGD` (step size = margin x the smallest measured edge: curvature, batch
  sharpness, noise kernel), :class:`EoSSGD` (the proposal's rule), both :class:`EdgeStepOptimizer`,
  drop-in ``torch.optim`` optimizers (docs/torch_optimizers.md);
  :class:`NonFiniteCurvatureError`
* training: :func:`train`, :class:`TrainConfig`, :class:`NonFiniteLossError`
* label-noise SGD: :func:`label_noise_targets`, :func:`label_noise_projected_variance`
  (the projected noise variance sigma_u^2(B, s)), :func:`output_jacobian_energy`
* studies: the real-network study kinds live in `sdeeos.studies` (`real_eos`, `real_gap`,
  `eos_sgd_vs_baselines`)
"""

from __future__ import annotations

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
    MEASURE_MODES,
    ChunkedLoss,
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
from ._losses import check_loss, output_hessian
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
from ._trace import TraceResult, hessian_trace
from ._label_noise import label_noise_projected_variance, label_noise_targets, output_jacobian_energy
from ._train import OPTIMIZERS, NonFiniteLossError, TrainConfig, train

__all__ = [
    "MEASURE_MODES", "ChunkedLoss", "EigenResult", "FlatParams", "HessianOperator", "SharpnessTracker", "disable_tf32", "hvp",
    "lanczos_top", "power_iteration_top",
    "EdgeConstants", "EigenSolveError", "TopKResult", "edge_constants", "project_to_stable_set_k",
    "projected_noise_covariance", "top_k_eigenpairs",
    "DATASETS", "ClassificationData", "load_data", "check_loss", "output_hessian", "TraceResult", "hessian_trace",
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

