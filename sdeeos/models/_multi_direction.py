r"""The reduced self-stabilization dynamics with k coupled edge directions."""

from __future__ import annotations

import functools
from typing import ClassVar

import numpy as np
import sympy as sp

from .._errors import ParameterError
from .._validation import check_positive, check_real
from ..theory import multi_direction as theory
from ._base import EnsembleModel, SymbolicStep

__all__ = ["MultiDirection"]


@functools.lru_cache(maxsize=None)
def _symbolic_step(k: int, method: str) -> SymbolicStep:
    """The step of ``method`` with ``k`` directions: one shared object per (k, method)."""
    s = theory.symbols(k)
    eta, x, y = s["eta"], s["x"], s["y"]
    update = theory.update(k, noisy=(method == "sgd"))
    noise = s["z"] if method == "sgd" else ()
    params = (eta,) + s["alpha"] + s["sigma"] + theory.coupling_symbols(k)
    if k == 1:
        # the observables of SelfStabilization, in its order
        observables = {"sharpness": 2 / eta + y[0], "x_sq": x[0] ** 2, "y_x": y[0] * x[0],
                       "y_x_sq": y[0] * x[0] ** 2}
    else:
        observables = {"sharpness": 2 / eta + sp.Max(*y)}
        for j in range(k):
            n = j + 1
            observables[f"sharpness{n}"] = 2 / eta + y[j]
            observables[f"x_sq{n}"] = x[j] ** 2
            # its mean square is E[x_j^2 y_j^2] (the weighted gap identity)
            observables[f"y_x{n}"] = y[j] * x[j]
            observables[f"y_x_sq{n}"] = y[j] * x[j] ** 2
        G = s["G"]
        observables["r_G_r"] = sum(G[i, j] * x[i] ** 2 * x[j] ** 2 for i in range(k) for j in range(k))
    return SymbolicStep(state=tuple(x) + tuple(y), params=params, noise=tuple(noise), update=tuple(update),
                        observables=observables)


def _vector(name: str, value, k: int | None = None) -> np.ndarray:
    """A float vector from a sequence or a comma-separated string (the CLI's form, e.g. ``"1,0.5"``)."""
    if isinstance(value, str):
        try:
            value = [float(v) for v in value.replace(";", ",").split(",") if v.strip()]
        except ValueError:
            raise ParameterError(f"{name} must be numbers separated by commas, got {value!r}") from None
    arr = np.atleast_1d(np.asarray(value, dtype=float)).reshape(-1)
    if arr.size == 0 or (k is not None and arr.size != k):
        raise ParameterError(f"{name} must have {k if k is not None else 'at least one'} entries, got {arr.size}")
    if not np.all(np.isfinite(arr)):
        raise ParameterError(f"{name} must be finite, got {arr.tolist()}")
    return arr


def _matrix(value, k: int) -> np.ndarray:
    """The coupling from a k×k array or a string with rows separated by ``;`` (``"100,20;20,80"``)."""
    if isinstance(value, str):
        rows = [r for r in value.split(";") if r.strip()]
        value = [_vector("coupling", r) for r in rows]
        if any(r.size != len(rows) for r in value):
            raise ParameterError(f"coupling must be a square matrix (rows separated by ';'), got {len(rows)} rows")
    return theory.check_coupling(value, k)


class MultiDirection(EnsembleModel):
    r"""The reduced self-stabilization model with k oscillating directions (:mod:`sdeeos.theory.multi_direction`).

    .. math::

        x_j' = -(1+\eta y_j)x_j + \eta\sigma_j z_j,\qquad
        y_i' = y_i + \eta\Big(\alpha_i - \tfrac12\sum_j G_{ij}x_j^2\Big),\qquad \lambda_i = 2/\eta + y_i,

    :math:`G_{ij}=\nabla\lambda_i\cdot\nabla\lambda_j`; the sharpness is :math:`2/\eta+\max_jy_j`.
    With k = 1 (``coupling=[[beta]]``) this is `SelfStabilization` symbol for symbol, so the same seed
    gives bit-identical trajectories.  Methods ``"sgd"`` (needs some ``sigma_j > 0``)
    and ``"gd"`` (:math:`\sigma=0`).

    Parameters
    ----------
    eta : float > 0
    alpha : k floats (sequence, or a comma-separated string)
        Sharpening rates :math:`\alpha_i=-\nabla L\cdot\nabla\lambda_i`.
    sigma : k floats >= 0
        Projected noise standard deviations :math:`\sigma_j=(u_j^\top\Sigma_Bu_j)^{1/2}`.
    coupling : k×k symmetric positive-definite matrix (array, or rows separated by ``;``)
    x0, y0 : float or k floats
        Initial condition (default: the exact stationary amplitudes
        :math:`x_{j,0}=\sqrt{2(G^{-1}\alpha)_j}` where positive, else 0; :math:`y_0=0`).

    >>> m = MultiDirection(eta=0.01, alpha=[1.0, 1.0], sigma=[10.0, 10.0], coupling=[[100.0, 20.0], [20.0, 100.0]])
    >>> m.step("sgd").update[2]
    eta*(-G11*x1**2/2 - G12*x2**2/2 + alpha1) + y1
    >>> [round(v, 6) for v in m.x_sq_stationary()]
    [0.016667, 0.016667]
    """

    name: ClassVar[str] = "multi-direction"
    methods: ClassVar[tuple[str, ...]] = ("sgd", "gd")
    cli_help: ClassVar[dict[str, str]] = {
        "alpha": "sharpening rates, comma-separated (one per direction)",
        "sigma": "projected noise std per direction, comma-separated",
        "coupling": "G_ij = grad lambda_i . grad lambda_j, rows separated by ';' (e.g. '100,20;20,80')",
    }

    def __init__(self, eta: float, alpha: str, sigma: str, coupling: str, *, x0: str | None = None,
                 y0: str | None = None):
        self.eta = check_positive("eta", eta)
        self.alpha = _vector("alpha", alpha)
        self.k = self.alpha.size
        self.sigma = _vector("sigma", sigma, self.k)
        if np.any(self.sigma < 0):
            raise ParameterError(f"sigma must be >= 0, got {self.sigma.tolist()}")
        self.coupling = _matrix(coupling, self.k)
        m = theory.x_sq_stationary(self.alpha, self.coupling)
        if self.k == 1:
            check_positive("alpha", self.alpha[0])
        self.x0 = np.sqrt(np.maximum(m, 0.0)) if x0 is None else self._broadcast("x0", x0)
        self.y0 = np.zeros(self.k) if y0 is None else self._broadcast("y0", y0)

    def _broadcast(self, name, value) -> np.ndarray:
        if np.ndim(value) == 0 and not isinstance(value, str):
            return np.full(self.k, check_real(name, value))
        return _vector(name, value, self.k)

    # ------------------------------------------------------------------ symbols
    def _symbols(self):
        return theory.symbols(self.k)

    def default_method(self) -> str:
        return "sgd" if np.any(self.sigma > 0) else "gd"

    def parameters(self) -> dict[str, float]:
        s = self._symbols()
        out = {"eta": self.eta}
        out.update({a.name: float(v) for a, v in zip(s["alpha"], self.alpha)})
        out.update({a.name: float(v) for a, v in zip(s["sigma"], self.sigma)})
        k = self.k
        out.update({s["G"][i, j].name: float(self.coupling[i, j]) for i in range(k) for j in range(i, k)})
        return out

    def initial_state(self) -> dict[str, float]:
        s = self._symbols()
        out = {v.name: float(a) for v, a in zip(s["x"], self.x0)}
        out.update({v.name: float(a) for v, a in zip(s["y"], self.y0)})
        return out

    def validate_run(self, method: str) -> None:
        if method == "sgd" and not np.any(self.sigma > 0):
            raise ParameterError("sigma must be > 0 in some direction for method 'sgd' (use method 'gd')")

    def step(self, method: str) -> SymbolicStep:
        if method not in self.methods:  # pragma: no cover - check_method guards this
            raise ParameterError(f"method must be one of {self.methods}, got {method!r}")
        return _symbolic_step(self.k, method)

    # ------------------------------------------------------------------ theory
    def x_sq_stationary(self) -> list[float]:
        """Exact :math:`\\mathbb E x_j^2=2(G^{-1}\\alpha)_j`."""
        return [float(v) for v in theory.x_sq_stationary(self.alpha, self.coupling)]

    def _suffix(self, j: int) -> str:
        return "" if self.k == 1 else str(j + 1)

    def run_notes(self, method: str) -> dict[str, object]:
        m = theory.x_sq_stationary(self.alpha, self.coupling)
        if np.any(m <= 0):
            return {"stationary_state": "none with every direction at the edge: (G^-1 alpha)_j <= 0 for "
                    f"j in {[int(j) + 1 for j in np.flatnonzero(m <= 0)]}"}
        if method != "sgd":
            return {"stationary_state": "n/a (deterministic)"}
        ok = np.isfinite(theory.gap_exact(self.eta, self.alpha, self.sigma, self.coupling, outside="nan"))
        if np.all(ok):
            return {"stationary_state": "exists (closure, every direction)"}
        return {"stationary_state": "none: eta^2 sigma_j^2 > E[x_j^2] for some direction; trajectories are "
                "expected to diverge"}

    def predictions(self, method: str) -> dict[str, float]:
        m = theory.x_sq_stationary(self.alpha, self.coupling)
        out = {f"x_sq{self._suffix(j)}_predicted": float(m[j]) for j in range(self.k)}
        if method == "sgd" and np.all(m > 0):
            exact = theory.gap_exact(self.eta, self.alpha, self.sigma, self.coupling, outside="nan")
            lead = theory.gap_leading(self.eta, self.alpha, self.sigma, self.coupling, outside="nan")
            beff = theory.beta_eff(self.alpha, self.coupling)
            for j in range(self.k):
                sfx = "" if self.k == 1 else f"{j + 1}"
                out[f"sharpness_gap{sfx}_predicted_exact"] = float(exact[j])
                out[f"sharpness_gap{sfx}_predicted_leading"] = float(lead[j])
                if self.k > 1:
                    out[f"beta_eff{sfx}"] = float(beff[j])
            if self.k > 1:
                # closure: frozen y_j, so the top eigenvalue's gap is the smallest per-direction gap
                out["sharpness_gap_predicted_closure_top"] = float(np.min(exact))
        return out

    def summarize(self, method: str, summary: dict[str, float]) -> dict[str, float]:
        out = {"sharpness_gap": 2 / self.eta - summary["sharpness_mean"],
               "sharpness_gap_stderr": summary["sharpness_mean_stderr"]}
        if self.k > 1:
            for j in range(self.k):
                out[f"sharpness_gap{j + 1}"] = 2 / self.eta - summary[f"sharpness{j + 1}_mean"]
                out[f"sharpness_gap{j + 1}_stderr"] = summary[f"sharpness{j + 1}_mean_stderr"]
        if method == "sgd":
            sfx = [self._suffix(j) for j in range(self.k)]
            m = theory.x_sq_stationary(self.alpha, self.coupling)
            gaps = [2 / self.eta - summary[f"sharpness{s}_mean"] for s in sfx]
            if self.k == 1:
                r_g_r = self.coupling[0, 0] * summary["x_sq_meansq"]
            else:
                r_g_r = summary["r_G_r_mean"]
            out["weighted_gap"] = float(np.dot(m, gaps))
            out["weighted_gap_from_moments"] = float(theory.weighted_gap_rhs(
                self.eta, self.alpha, self.sigma, self.coupling, [summary[f"y_x{s}_meansq"] for s in sfx],
                [summary[f"x_sq{s}_mean"] for s in sfx], r_g_r))
        return out
