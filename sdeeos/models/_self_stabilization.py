r"""Damian's reduced self-stabilization dynamics with projected gradient noise (sharpness units)."""

from __future__ import annotations

import functools
import math
from typing import ClassVar

import numpy as np
import sympy as sp

from .._errors import ParameterError
from .._validation import check_nonnegative, check_positive, check_real
from ..theory import self_stabilization as theory
from ._base import EnsembleModel, SymbolicStep

__all__ = ["SelfStabilization"]


@functools.lru_cache(maxsize=None)
def _symbolic_step(method: str) -> SymbolicStep:
    """The step of ``method``: one shared object per method (parameters are symbols)."""
    x, y, z, eta, alpha, beta, sigma = theory.symbols()
    if method == "sgd":
        update = theory.reduced_update(noisy=True)
        noise = (z,)
    elif method == "gd":
        update = theory.reduced_update(noisy=False)
        noise = ()
    elif method == "pgd":
        update = (sp.Integer(0) * x, sp.Min(0, y + eta * alpha))
        noise = ()
    else:  # pragma: no cover - check_method guards this
        raise ParameterError(f"method must be one of {SelfStabilization.methods}, got {method!r}")
    observables = {
        "sharpness": 2 / eta + y,
        "x_sq": x**2,
        # y*x: its mean square is E[x^2 y^2], which enters the exact gap identity
        "y_x": y * x,
        "y_x_sq": y * x**2,
    }
    params = (eta, alpha, beta, sigma)
    return SymbolicStep(state=(x, y), params=params, noise=noise, update=tuple(update),
                        observables=observables)


class SelfStabilization(EnsembleModel):
    r"""The reduced (x, y) model of self-stabilization (docs/theory.md#reduced-model).

    .. math::

        x_{t+1} = -(1+\eta y_t)x_t + \eta\sigma z_t,\qquad
        y_{t+1} = y_t + \eta(\alpha - \tfrac\beta2 x_t^2),\qquad S_t = 2/\eta + y_t,

    with :math:`z_t \sim N(0,1)`, so the projected gradient noise :math:`\xi_t=\sigma z_t` has
    variance :math:`\sigma^2 = \sigma_u^2`.  Methods:

    * ``"gd"``: full-batch GD, :math:`\sigma = 0` whatever ``sigma`` is;
    * ``"sgd"``: the noisy map above (needs ``sigma > 0``);
    * ``"pgd"``: the constrained reference trajectory, :math:`x \equiv 0` and
      :math:`y_{t+1} = \min(0, y_t + \eta\alpha)` (sharpness rises at rate :math:`\eta\alpha` per
      step and is held at :math:`2/\eta`).

    Parameters
    ----------
    eta, alpha, beta : float > 0
        Step size, progressive-sharpening rate, self-stabilization strength.
    sigma : float >= 0
        Standard deviation of the projected gradient noise :math:`\sigma_u`.
    x0, y0 : float
        Initial condition, the same for every trajectory (default: the equilibrium amplitude
        :math:`x_0=\sqrt{2\alpha/\beta}`, :math:`y_0 = 0`).

    >>> m = SelfStabilization(eta=0.01, alpha=1.0, beta=100.0, sigma=10.0)
    >>> m.step("sgd").update
    (eta*sigma*z + x*(-eta*y - 1), eta*(alpha - beta*x**2/2) + y)
    """

    name: ClassVar[str] = "self-stabilization"
    methods: ClassVar[tuple[str, ...]] = ("sgd", "gd", "pgd")

    def __init__(self, eta: float, alpha: float, beta: float, sigma: float = 0.0, *, x0=None, y0=0.0):
        self.eta = check_positive("eta", eta)
        self.alpha = check_positive("alpha", alpha)
        self.beta = check_positive("beta", beta)
        self.sigma = check_nonnegative("sigma", sigma)
        self.x0 = math.sqrt(2 * self.alpha / self.beta) if x0 is None else check_real("x0", x0)
        self.y0 = check_real("y0", y0)

    def default_method(self) -> str:
        return "sgd" if self.sigma > 0 else "gd"

    def parameters(self) -> dict[str, float]:
        return {"eta": self.eta, "alpha": self.alpha, "beta": self.beta, "sigma": self.sigma}

    def initial_state(self) -> dict[str, float]:
        return {"x": self.x0, "y": self.y0}

    def validate_run(self, method: str) -> None:
        if method == "sgd" and self.sigma == 0:
            raise ParameterError("sigma must be > 0 for method 'sgd' (use method 'gd' for sigma = 0)")

    def step(self, method: str) -> SymbolicStep:
        return _symbolic_step(method)

    def collect(self, spec, run):
        data, coords, summary = super().collect(spec, run)
        if spec.method == "gd":
            # Deterministic cycles grow (the period-2 orbit is weakly unstable, docs/theory.md#deterministic-cycle); once
            # x underflows to 0.0 it stays there and y (the sharpness) grows without bound.
            alive = run.alive.astype(bool)
            summary["n_x_underflow"] = int(np.sum(alive & (run.state[0] == 0.0)))
        return data, coords, summary

    # ------------------------------------------------------------------ theory
    def run_notes(self, method: str) -> dict[str, object]:
        if method != "sgd":
            return {"stationary_state": "n/a (deterministic)"}
        # r = sigma^2 beta / (4 alpha^2); in float64 so that a huge sigma gives inf, not OverflowError
        with np.errstate(over="ignore"):
            validity = float(np.float64(self.sigma) ** 2 / (4 * np.float64(self.alpha) ** 2 / self.beta))
        if bool(theory.stationary_state_exists(self.eta, self.alpha, self.beta, self.sigma)):
            return {"stationary_state": "exists", "closure_validity_ratio": validity}
        return {
            "stationary_state": "none: eta**2*beta*sigma**2 > 2*alpha, the noise kick exceeds "
            "the equilibrium amplitude; trajectories are expected to diverge",
            "closure_validity_ratio": validity,
        }

    def predictions(self, method: str) -> dict[str, float]:
        p = self.parameters()
        out = {"x_sq_predicted": float(theory.x_sq_stationary(self.alpha, self.beta))}
        if method == "sgd":
            args = (p["eta"], p["alpha"], p["beta"], p["sigma"])
            out["sharpness_gap_predicted_leading"] = float(theory.gap_leading(*args, outside="nan"))
            out["sharpness_gap_predicted_exact"] = float(theory.gap_exact(*args, outside="nan"))
            # closure plus the slow-variable fluctuations (linearised slow SDE): ~ exact + 3/2 eta alpha
            out["sharpness_gap_predicted_corrected"] = float(theory.gap_corrected(*args, outside="nan"))
        elif method == "pgd":
            out = {"sharpness_gap_predicted_exact": 0.0}
        return out

    def summarize(self, method: str, summary: dict[str, float]) -> dict[str, float]:
        """Gap :math:`2/\\eta - \\langle S\\rangle` and the gap from the exact moment identity."""
        out = {
            "sharpness_gap": 2 / self.eta - summary["sharpness_mean"],
            "sharpness_gap_stderr": summary["sharpness_mean_stderr"],
        }
        if method == "sgd":
            out["sharpness_gap_from_moments"] = float(theory.gap_from_moments(
                self.eta, self.alpha, self.beta, self.sigma, summary["y_x_meansq"], summary["x_sq_meansq"]))
        return out
