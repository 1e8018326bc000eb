"""Theory: SymPy derivations and the numeric predictions lambdified from them.

Each submodule derives its results from the model's update expressions; numeric functions are
generated from those expressions with ``sympy.lambdify`` and never retyped by hand.

* `self_stabilization`: the stochastic reduced model's stationary identities, gap (closure and beyond)
* `reduced_model`: the reduced (x, y) map derived from a cubic Taylor model of the loss
* `gd_stability`: GD, heavy-ball and Nesterov thresholds on a quadratic
* `batch_noise`: mini-batch noise under three sampling models
* `mean_square`: 1-D mean-square threshold, linear-regression second-moment operator, noise kernel K
* `multi_direction`: the reduced model with k coupled edge directions (identities, closure, beta_eff)
* `sde`: Ornstein-Uhlenbeck moments (continuous, Euler-Maruyama), Fokker-Planck, Lyapunov equation
* `corrected_boundary`: what the models predict for the proposal's 2 + c sqrt(eta sigma^2)
* `step_size_edges`: the largest stable step per edge (curvature, batch sharpness, noise kernel) and the rule
* `derivations`: the registry of runnable derivations (``sdeeos derive``)
"""

from . import (
    batch_noise,
    corrected_boundary,
    derivations,
    gd_stability,
    mean_square,
    multi_direction,
    reduced_model,
    sde,
    self_stabilization,
    step_size_edges,
)

__all__ = [
    "self_stabilization",
    "reduced_model",
    "gd_stability",
    "batch_noise",
    "mean_square",
    "multi_direction",
    "sde",
    "corrected_boundary",
    "step_size_edges",
    "derivations",
]
