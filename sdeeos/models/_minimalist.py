r"""The minimalist edge-of-stability example :math:`f(x,y)=\tfrac14(x^2y^2-1)^2` (Zhu et al. 2023)."""

from __future__ import annotations

import functools
from types import SimpleNamespace
from typing import ClassVar

import numpy as np

from .._contract import ensemble_summary
from .._errors import ParameterError
from .._rng import stream_keys
from .._validation import check_nonnegative, check_positive, check_real
from ..theory import minimalist as theory
from ._base import EnsembleModel, SymbolicStep
from ._toy_common import apply_initial_spread

__all__ = ["Minimalist"]


@functools.lru_cache(maxsize=None)
def _symbolic_step(method: str) -> SymbolicStep:
    """The step of ``method``: one shared object per method (parameters are symbols, so every
    instance runs the same generated code with its own parameter vector)."""
    x, y, eta, sigma, z, z1, z2 = theory.symbols()
    noise = {"gd": (), "sgd": (z1, z2), "sgd-mult": (z,)}[method]
    gx, gy = theory.derive_gradient()
    observables = {
        "sharpness": theory.derive_sharpness(),
        "loss": theory.loss(),
        "grad_norm_sq": gx**2 + gy**2,
        "xy": x * y,
        "x2_minus_y2": theory.derive_gf_invariant(),
    }
    return SymbolicStep(state=(x, y), params=(eta, sigma), noise=noise,
                        update=tuple(theory.update(method)), observables=observables)


class Minimalist(EnsembleModel):
    r"""GD and SGD on the minimalist loss :math:`f(x,y)=\tfrac14(x^2y^2-1)^2` (Zhu et al. 2023; docs/theory.md#minimalist).

    The update and the observables are derived by SymPy from :math:`f` (`sdeeos.theory.minimalist`);
    the engines run exactly what was derived.  Methods:

    * ``"gd"``: :math:`\theta'=\theta-\eta\nabla f`;
    * ``"sgd"``: additive isotropic gradient noise, :math:`\theta'=\theta-\eta(\nabla f+\sigma z)`,
      :math:`z\sim N(0,I_2)` (so :math:`\sigma_u^2=\sigma^2` along any direction);
    * ``"sgd-mult"``: multiplicative noise, :math:`\theta'=\theta-\eta(1+\sigma z)\nabla f`, the
      gradient of the random loss :math:`(1+\sigma z)f` (noise vanishes on the minimisers, as for an
      interpolating model).

    Observables: ``sharpness`` (exact top eigenvalue of the 2x2 Hessian, closed form), ``loss``,
    ``grad_norm_sq``, ``xy`` (1 on the minimisers) and ``x2_minus_y2`` (conserved by gradient flow).

    Parameters
    ----------
    eta : float > 0
    sigma : float >= 0
        Noise scale (needs > 0 for the SGD methods).
    x0, y0 : float
        Initial point (default (6, 0.05), docs/theory.md#minimalist).
    x0_spread, y0_spread : float >= 0
        Trajectories start uniformly in :math:`[x_0-w_x, x_0+w_x]\times[y_0-w_y, y_0+w_y]`, drawn from
        the run's RNG streams (`sdeeos.models._toy_common`); 0 (default): every trajectory at (x0, y0).

    >>> m = Minimalist(eta=0.05)
    >>> m.step("gd").update[0]
    -eta*x*y**2*(x**2*y**2 - 1) + x
    """

    name: ClassVar[str] = "minimalist"
    methods: ClassVar[tuple[str, ...]] = ("gd", "sgd", "sgd-mult")
    #: methods with a stochastic modified equation (`sdeeos.models.MinimalistSME`)
    sme_methods: ClassVar[tuple[str, ...]] = ("gd", "sgd", "sgd-mult")
    divergence_bound: ClassVar[float] = 1e8

    def __init__(self, eta: float, sigma: float = 0.0, x0: float = 6.0, y0: float = 0.05,
                 x0_spread: float = 0.0, y0_spread: float = 0.0):
        self.eta = check_positive("eta", eta)
        self.sigma = check_nonnegative("sigma", sigma)
        self.x0 = check_real("x0", x0)
        self.y0 = check_real("y0", y0)
        self.x0_spread = check_nonnegative("x0_spread", x0_spread)
        self.y0_spread = check_nonnegative("y0_spread", y0_spread)

    def default_method(self) -> str:
        return "sgd" if self.sigma > 0 else "gd"

    def parameters(self) -> dict[str, float]:
        return {"eta": self.eta, "sigma": self.sigma}

    def initial_state(self) -> dict[str, float]:
        return {"x": self.x0, "y": self.y0, "x0_spread": self.x0_spread, "y0_spread": self.y0_spread}

    def validate_run(self, method: str) -> None:
        if method != "gd" and self.sigma == 0:
            raise ParameterError(f"sigma must be > 0 for method {method!r} (use method 'gd' for sigma = 0)")

    def step(self, method: str) -> SymbolicStep:
        if method not in self.methods:  # pragma: no cover - check_method guards this
            raise ParameterError(f"method must be one of {self.methods}, got {method!r}")
        return _symbolic_step(method)

    def new_run(self, spec):
        run = super().new_run(spec)
        apply_initial_spread(run, (self.x0_spread, self.y0_spread), spec.rng)
        return run

    def initial_points(self, n_traj: int, seed: int = 0, rng: str = "splitmix") -> tuple[np.ndarray, np.ndarray]:
        """The initial ``(x, y)`` of every trajectory of a run with ``n_traj``, ``seed`` and random-number
        family ``rng`` (same draws as `new_run`; float32 runs use ``"philox"`` unless told otherwise)."""
        keys, gammas = stream_keys(seed, n_traj, rng=rng)
        run = SimpleNamespace(keys=keys, gammas=gammas,
                              state=np.array([np.full(n_traj, self.x0), np.full(n_traj, self.y0)]))
        apply_initial_spread(run, (self.x0_spread, self.y0_spread), rng)
        return run.state[0], run.state[1]

    def collect(self, spec, run):
        data, coords, summary = super().collect(spec, run)
        alive = run.alive.astype(bool)
        with np.errstate(all="ignore"):
            final_s = np.where(alive, theory.sharpness(run.state[0], run.state[1]), np.nan)
        data["final_sharpness"] = ("traj", final_s, {"long_name": "exact sharpness at the last state"})
        summary["final_sharpness_mean"], summary["final_sharpness_mean_stderr"] = ensemble_summary(final_s, alive)
        return data, coords, summary

    # ------------------------------------------------------------------ theory
    def run_notes(self, method: str) -> dict[str, object]:
        return {"sharpness_definition": "exact top eigenvalue of the 2x2 Hessian (closed form)"}

    def predictions(self, method: str) -> dict[str, float]:
        out = {"sharpness_eos": 2 / self.eta}
        if self.x0 * self.y0 != 0:
            out["sharpness_gf_limit"] = float(theory.gf_limit_sharpness(self.x0, self.y0))
        if method == "sgd-mult":
            out["sharpness_mean_square_bound"] = theory.mean_square_sharpness_bound(self.eta, self.sigma)
        return out

    def summarize(self, method: str, summary: dict[str, float]) -> dict[str, float]:
        """Gaps :math:`2/\\eta-\\langle S\\rangle` (time average after burn-in) and at the last state."""
        return {
            "sharpness_gap": 2 / self.eta - summary["sharpness_mean"],
            "sharpness_gap_stderr": summary["sharpness_mean_stderr"],
            "final_sharpness_gap": 2 / self.eta - summary["final_sharpness_mean"],
            "final_sharpness_gap_stderr": summary["final_sharpness_mean_stderr"],
        }
