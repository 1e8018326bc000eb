r"""GD, SGD and PGD on a cubic Taylor loss in :math:`d` dimensions with prescribed :math:`\alpha,\beta`."""

from __future__ import annotations

import functools
import hashlib
import math
from typing import ClassVar

import numpy as np
import sympy as sp

from .._contract import Engine
from .._errors import ParameterError
from .._resources import check_allocation
from .._validation import check_int, check_nonnegative, check_positive, check_real
from ..engines import NumpyEngine
from ..theory import cubic_taylor_construction as construction
from ..theory import self_stabilization as reduced
from ..theory._symbolic_loss import gradient_step, hessian, top_eigenvalue_2x2
from ._base import EnsembleModel, SymbolicStep

__all__ = ["CubicTaylor", "PGD_PROJECTION_STEPS"]

#: linearised projections onto the stable set after each PGD gradient step (Damian et al. use 3)
PGD_PROJECTION_STEPS = 5
#: A lower bound on the memory SymPy takes per parameter symbol while deriving the step (tracemalloc
#: peak / parameters: 10 KiB at d = 4, 15 KiB at d = 6, 33 KiB at d = 10, growing with d).
SYMBOLIC_BYTES_PER_PARAM = 8 * 1024
#: Bytes per index triple of the coupled triples: the 3-tuple (64) and its slots in two lists (16), its
#: RNG key and increment (16) and its draw (8).
_TRIPLE_BYTES = 104


def _n_params(d: int) -> int:
    """Parameters of the symbolic step: eta, S0, g, the unique entries of H and T, u, w, dS, and for
    full noise the unique entries of the noise square root (an upper bound over the methods)."""
    pairs, triples = d * (d + 1) // 2, d * (d + 1) * (d + 2) // 6
    return 3 + 4 * d + 2 * pairs + triples


def construction_bytes(d: int, loss_seed: int = 0, coupling: float = 0.0) -> int:
    r"""Peak bytes `construct` allocates: the tensor :math:`T` (d, d, d) float64, three of them at once
    when ``loss_seed`` > 0 (rotation and symmetrisation), the (d, d) matrices, and with ``coupling`` > 0
    the list of coupled index triples."""
    cube = 8 * d**3 * (3 if loss_seed > 0 else 1)
    triples = _TRIPLE_BYTES * (d * (d + 1) * (d + 2) // 6) if coupling > 0 and d > 2 else 0
    return cube + 8 * 6 * d * d + triples


def _check_memory(what: str, nbytes: int, d: int) -> None:
    check_allocation(f"cubic-taylor {what} with d={d}", nbytes, hint="a smaller d (the model stores the dense "
                     "d x d x d tensor T and derives one symbol per entry of it)")


@functools.lru_cache(maxsize=None)
def _symbolic_step(d: int, method: str, full_noise: bool) -> SymbolicStep:
    """The step of ``method`` for dimension ``d``: every array entry is a parameter symbol.

    ``full_noise``: noise :math:`\\Sigma^{1/2}z` with ``d`` normals per step; otherwise only along
    :math:`u`, :math:`\\sigma u z` (one normal per step).
    """
    theta, coeffs, L = construction.symbolic_loss(d)
    eta = sp.Symbol("eta", positive=True)
    u = sp.symbols(f"u_0:{d}", real=True)       # top eigenvector at 0 (defines x)
    w = sp.symbols(f"w_0:{d}", real=True)       # grad S_perp at 0 (defines y, sharpness units)
    ds = sp.symbols(f"dS_0:{d}", real=True)     # grad S at 0 (first-order sharpness)
    s0 = sp.Symbol("S0", real=True)             # sharpness at 0
    params = [eta] + [coeffs[k] for k in coeffs] + list(u) + list(w) + list(ds) + [s0]
    if method == "sgd":
        if full_noise:
            nsq = {(i, j): sp.Symbol(f"N_{i}_{j}", real=True) for i, j in construction.unique_index_pairs(d)}
            noise = sp.symbols(f"z0:{d}", real=True)
            xi = tuple(sum(nsq[tuple(sorted((i, j)))] * noise[j] for j in range(d)) for i in range(d))
            params += list(nsq.values())
        else:
            sigma = sp.Symbol("sigma", nonnegative=True)
            noise = (sp.Symbol("z", real=True),)
            xi = tuple(sigma * u[i] * noise[0] for i in range(d))
            params.append(sigma)
        update = gradient_step(L, theta, eta, noise_terms=xi)
    elif method == "gd":
        noise, update = (), gradient_step(L, theta, eta)
    elif method == "pgd":
        # not a symbolic step: the engine below projects with an exact eigendecomposition; the
        # placeholder update is never run, the observables are the same as for GD.
        noise, update = (), tuple(theta)
    else:  # pragma: no cover
        raise ParameterError(f"method must be one of {CubicTaylor.methods}, got {method!r}")
    x = sum(ui * ti for ui, ti in zip(u, theta))
    y = sum(wi * ti for wi, ti in zip(w, theta))
    observables = {
        "sharpness_u": s0 + sum(di * ti for di, ti in zip(ds, theta)),
        "x_sq": x**2,
        "y": y,
        "y_x": y * x,
        "y_x_sq": y * x**2,
        "loss": L,
    }
    if d == 2:
        observables["sharpness"] = top_eigenvalue_2x2(hessian(L, theta))
    return SymbolicStep(state=tuple(theta), params=tuple(params), noise=tuple(noise), update=tuple(update),
                        observables=observables)


class CubicTaylor(EnsembleModel):
    r"""GD, SGD and PGD on :math:`L(\theta)=L_0+g^\top\theta+\tfrac12\theta^\top H\theta+\tfrac16T[\theta,\theta,\theta]`.

    :math:`g, H, T` are built by `sdeeos.theory.cubic_taylor_construction.construct` so that at the
    reference point :math:`\theta=0` the sharpness is :math:`2/\eta`, :math:`u\cdot\nabla L=0`, and Damian's
    :math:`\alpha`, :math:`\beta` and the eigengap take the given values (see that module for the
    construction and why the sharpening direction is flat); or supplied by the user
    (`from_tensors`).  The updates are derived by SymPy from the loss with every array entry a
    parameter, so one compiled kernel serves every :math:`(g, H, T)` of a given :math:`d`.

    Methods:

    * ``"gd"``: :math:`\theta'=\theta-\eta\nabla L`;
    * ``"sgd"``: :math:`\theta'=\theta-\eta(\nabla L+\Sigma^{1/2}z)`, :math:`\Sigma=\sigma^2uu^\top+\sigma_\perp^2(I-uu^\top)`,
      so the projected noise variance is :math:`\sigma_u^2=\sigma^2`;
    * ``"pgd"``: projected GD onto Damian's stable set :math:`\{S\le2/\eta,\ u\cdot\nabla L=0\}`: after each
      gradient step, `PGD_PROJECTION_STEPS` linearised projections
      :math:`\theta\leftarrow\theta-\max(0,S-2/\eta)\nabla S^\perp/\lVert\nabla S^\perp\rVert^2-u\,(u\cdot\nabla L)/S`
      with the *exact* top eigenpair of :math:`\nabla^2L(\theta)` (batched ``numpy.linalg.eigh``; this
      method runs in NumPy on every backend).

    Observables (reduced coordinates relative to :math:`\theta=0`): ``x_sq`` (:math:`x=u\cdot\theta`),
    ``y`` (:math:`y=\nabla S^\perp\cdot\theta`, sharpness units), ``y_x``, ``y_x_sq``, ``loss``,
    ``sharpness_u`` (:math:`u^\top\nabla^2L(\theta)u=S(0)+\nabla S\cdot\theta`, the first-order
    sharpness along the fixed reference direction, which is :math:`2/\eta+y` for the constructed loss:
    it is the reduced model's sharpness, and is polynomial, so available for every :math:`d`) and,
    for :math:`d=2` only, ``sharpness`` (the exact top Hessian eigenvalue, closed form; for
    :math:`d\ge3` the top eigenvalue has no closed form a symbolic step could state).

    Parameters
    ----------
    eta, alpha, beta : float > 0
    d : int >= 2
        Dimension (the construction needs the top direction and the sharpening direction).
    gap : float in (0, 2/eta], optional
        Eigengap of the Hessian at 0 (default 1/eta; for d = 2 it is 2/eta).
    sigma, sigma_perp : float >= 0
        Noise standard deviation along :math:`u` and along every direction orthogonal to it.
    coupling : float >= 0
        Size (relative to :math:`\sqrt\beta`) of random extra third-order couplings (d >= 3).
    loss_seed : int >= 0
        Seed of the couplings; > 0 also rotates the basis at random (dense :math:`g, H, T`).
    x0, y0 : float
        Initial point :math:`\theta_0=x_0u+(y_0/\sqrt\beta)\,n` (default :math:`x_0=\sqrt{2\alpha/\beta}`, :math:`y_0=0`).
    """

    name: ClassVar[str] = "cubic-taylor"
    methods: ClassVar[tuple[str, ...]] = ("sgd", "gd", "pgd")
    #: methods with a stochastic modified equation (`sdeeos.models.CubicTaylorSME`); pgd is not a smooth map
    sme_methods: ClassVar[tuple[str, ...]] = ("sgd", "gd")

    def __init__(self, eta: float, alpha: float, beta: float, d: int = 2, gap: float | None = None,
                 sigma: float = 0.0, sigma_perp: float = 0.0, coupling: float = 0.0, loss_seed: int = 0,
                 *, x0: float | None = None, y0: float = 0.0):
        self.eta = check_positive("eta", eta)
        self.alpha = check_positive("alpha", alpha)
        self.beta = check_positive("beta", beta)
        self.d = construction.check_dimension(d)
        self.sigma = check_nonnegative("sigma", sigma)
        self.sigma_perp = check_nonnegative("sigma_perp", sigma_perp)
        self.coupling = check_nonnegative("coupling", coupling)
        self.loss_seed = check_int("loss_seed", loss_seed, low=0, high=2**64 - 1)
        _check_memory("tensors g, H, T", construction_bytes(self.d, self.loss_seed, self.coupling), self.d)
        self.loss = construction.construct(self.eta, self.alpha, self.beta, self.d, gap, coupling=self.coupling,
                                           loss_seed=self.loss_seed, sigma=self.sigma, sigma_perp=self.sigma_perp)
        self.gap = float(construction.damian_constants(self.loss.g, self.loss.H, self.loss.T)["eigengap"])
        self.x0 = math.sqrt(2 * self.alpha / self.beta) if x0 is None else check_real("x0", x0)
        self.y0 = check_real("y0", y0)
        self._theta0 = self.x0 * self.loss.u + (self.y0 / math.sqrt(self.beta)) * self.loss.n
        self._tensor_digest = None

    @classmethod
    def from_tensors(cls, eta, g, H, T, *, L0=0.0, noise_cov=None, theta0=None) -> "CubicTaylor":
        r"""The model for user-supplied :math:`g` (d,), :math:`H` (d, d), :math:`T` (d, d, d) and noise covariance.

        :math:`H` and :math:`T` must be symmetric (``ParameterError`` otherwise); :math:`\alpha`,
        :math:`\beta`, the eigengap and :math:`\sigma_u^2=u^\top\Sigma u` are computed at 0 (Damian's
        definitions, `damian_constants`), and :math:`x, y` are measured from 0.
        """
        self = cls.__new__(cls)
        self.eta = check_positive("eta", eta)
        g = np.asarray(g, dtype=float)
        if g.ndim != 1:
            raise ParameterError(f"g must be a vector of length d >= 2, got shape {g.shape}")
        self.d = construction.check_dimension(g.shape[0])
        if not np.all(np.isfinite(g)):
            raise ParameterError("g must be finite")
        # T's float64 copy, its symmetrisation's running sum and result, and one deviation at a time
        _check_memory("tensor T", 4 * 8 * self.d**3, self.d)
        H = construction.check_symmetric_matrix("H", H, self.d)
        T = construction.check_symmetric_tensor("T", T, self.d)
        cov = np.zeros((self.d, self.d)) if noise_cov is None else \
            construction.check_symmetric_matrix("noise_cov", noise_cov, self.d)
        lam, vec = np.linalg.eigh(cov)
        if lam.min() < -8 * np.finfo(float).eps * max(abs(lam).max(), 1e-300):
            raise ParameterError(f"noise_cov must be positive semi-definite, smallest eigenvalue {lam.min():.3g}")
        # eigenvalues within round-off of 0 are 0 (else sqrt turns 1e-16 into 1e-8 off-u noise)
        lam = np.where(lam <= 8 * self.d * np.finfo(float).eps * max(lam.max(), 0.0), 0.0, lam)
        noise_sqrt = (vec * np.sqrt(lam)) @ vec.T
        c = construction.damian_constants(g, H, T)
        n_vec = c["grad_sharpness_perp"]
        n_vec = n_vec / np.linalg.norm(n_vec) if np.linalg.norm(n_vec) > 0 else np.zeros(self.d)
        self.loss = construction.CubicTaylorLoss(L0=check_real("L0", L0), g=g, H=H, T=T, noise_sqrt=noise_sqrt,
                                                 u=c["u"], n=n_vec)
        self.alpha, self.beta, self.gap = float(c["alpha"]), float(c["beta"]), float(c["eigengap"])
        self.sigma = float(np.sqrt(max(c["u"] @ cov @ c["u"], 0.0)))
        self.sigma_perp = float("nan")
        self.coupling, self.loss_seed = float("nan"), 0
        self._theta0 = np.zeros(self.d) if theta0 is None else np.asarray(theta0, dtype=float)
        if self._theta0.shape != (self.d,) or not np.all(np.isfinite(self._theta0)):
            raise ParameterError(f"theta0 must be a finite vector of length {self.d}")
        self.x0 = float(c["u"] @ self._theta0)
        self.y0 = float(c["grad_sharpness_perp"] @ self._theta0)
        digest = hashlib.sha256()
        for a in (g, H, T, noise_sqrt, self._theta0, np.array([self.loss.L0])):
            digest.update(np.ascontiguousarray(a).tobytes())
        self._tensor_digest = digest.hexdigest()[:16]
        return self

    # ------------------------------------------------------------------ model interface
    def default_method(self) -> str:
        return "sgd" if (self.sigma > 0 or self._full_noise) else "gd"

    @property
    def _full_noise(self) -> bool:
        """Whether the noise has components off u (then d normals per step instead of one)."""
        off_u = self.loss.noise_sqrt - self.sigma * np.outer(self.loss.u, self.loss.u)
        return bool(np.any(np.abs(off_u) > 1e-12 * max(self.sigma, 1e-300)))

    def parameters(self) -> dict[str, float]:
        return {"eta": self.eta, "alpha": self.alpha, "beta": self.beta, "d": self.d, "gap": self.gap,
                "sigma": self.sigma, "sigma_perp": self.sigma_perp, "coupling": self.coupling,
                "loss_seed": self.loss_seed}

    def initial_state(self) -> dict[str, float]:
        out = {"x": self.x0, "y": self.y0}
        if self._tensor_digest is not None:
            out["tensors_sha256"] = self._tensor_digest
        return out

    def validate_run(self, method: str) -> None:
        if method == "sgd" and self.sigma == 0 and not self._full_noise:
            raise ParameterError("sigma must be > 0 for method 'sgd' (use method 'gd' for sigma = 0)")

    def step(self, method: str) -> SymbolicStep:
        return _symbolic_step(self.d, method, self._full_noise if method == "sgd" else False)

    def _symbol_values(self) -> dict[str, float]:
        c = construction.damian_constants(self.loss.g, self.loss.H, self.loss.T)
        _, coeffs, _ = construction.symbolic_loss(self.d)
        vals = construction.coefficient_values(self.loss)
        out = {coeffs[k].name: v for k, v in vals.items()}
        out["eta"] = self.eta
        out["S0"] = float(c["sharpness"])
        out["sigma"] = self.sigma
        for i in range(self.d):
            out[f"u_{i}"] = float(self.loss.u[i])
            out[f"w_{i}"] = float(c["grad_sharpness_perp"][i])
            out[f"dS_{i}"] = float(c["grad_sharpness"][i])
            for j in range(i, self.d):
                out[f"N_{i}_{j}"] = float(self.loss.noise_sqrt[i, j])
        return out

    def param_vector(self, method: str) -> np.ndarray:
        values = self._symbol_values()
        return np.array([values[s.name] for s in self.step(method).params], dtype=np.float64)

    def initial_vector(self, method: str) -> np.ndarray:
        return np.array(self._theta0, dtype=np.float64)

    def engine(self, backend: str):
        return _CubicTaylorEngine(super().engine(backend))

    def symbolic_bytes(self, method: str) -> int:
        """`SYMBOLIC_BYTES_PER_PARAM` per parameter symbol of the step (a lower bound)."""
        return SYMBOLIC_BYTES_PER_PARAM * _n_params(self.d)

    def work_bytes(self, spec) -> int:
        """The symbolic derivation of the step (`symbolic_bytes`) and, for ``pgd``, the Hessians, their
        eigenvectors and ``T[theta]`` (n_traj, d, d)."""
        work = self.symbolic_bytes(spec.method)
        if spec.method == "pgd":
            work += 8 * 4 * spec.n_traj * self.d**2
        return work

    def dtypes(self, method: str) -> tuple[str, ...]:
        return ("float64",) if method == "pgd" else super().dtypes(method)  # pgd's NumPy step is float64

    # ------------------------------------------------------------------ theory
    def run_notes(self, method: str) -> dict[str, object]:
        notes = {
            "sharpness_definition": "sharpness_u = u^T Hess(theta) u with u the top eigenvector at theta = 0 "
                                    "(first order in theta); sharpness = exact top eigenvalue (d = 2 only)",
            "reduced_coordinates": "x = u.theta, y = grad_S_perp.theta (sharpness units), both at theta = 0",
        }
        if method == "pgd":
            notes["pgd_engine"] = (f"NumPy, batched eigh, {PGD_PROJECTION_STEPS} linearised projections "
                                   "per step (same on every backend)")
        return notes

    def predictions(self, method: str) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.beta > 0 and self.alpha > 0:
            out["x_sq_predicted"] = float(reduced.x_sq_stationary(self.alpha, self.beta))
        if method == "sgd" and self.alpha > 0 and self.beta > 0:
            args = (self.eta, self.alpha, self.beta, self.sigma)
            out["sharpness_gap_predicted_leading"] = float(reduced.gap_leading(*args, outside="nan"))
            out["sharpness_gap_predicted_exact"] = float(reduced.gap_exact(*args, outside="nan"))
        elif method == "pgd":
            out["sharpness_gap_predicted_exact"] = 0.0
        return out

    def summarize(self, method: str, summary: dict[str, float]) -> dict[str, float]:
        r"""Gap :math:`2/\eta-\langle S_u\rangle`, the gap of the exact eigenvalue (d = 2), and the reduced
        model's exact gap identity evaluated at the measured moments."""
        out = {
            "sharpness_gap": 2 / self.eta - summary["sharpness_u_mean"],
            "sharpness_gap_stderr": summary["sharpness_u_mean_stderr"],
        }
        if "sharpness_mean" in summary:
            out["sharpness_gap_exact_eigenvalue"] = 2 / self.eta - summary["sharpness_mean"]
            out["sharpness_gap_exact_eigenvalue_stderr"] = summary["sharpness_mean_stderr"]
        if method == "sgd" and self.alpha > 0:
            out["sharpness_gap_from_moments"] = float(reduced.gap_from_moments(
                self.eta, self.alpha, self.beta, self.sigma, summary["y_x_meansq"], summary["x_sq_meansq"]))
        return out


# ---------------------------------------------------------------------------------------------- PGD
def pgd_step(loss: construction.CubicTaylorLoss, eta: float, theta: np.ndarray,
             n_proj: int = PGD_PROJECTION_STEPS) -> np.ndarray:
    r"""One PGD step for every column of ``theta`` (shape ``(d, n)``): gradient step, then ``n_proj``
    linearised projections onto :math:`\{S\le2/\eta,\ u\cdot\nabla L=0\}` with the exact top eigenpair."""
    theta = theta - eta * loss.gradient(theta)
    for _ in range(n_proj):
        lam, vec = np.linalg.eigh(loss.hessian(theta))      # (n, d), (n, d, d)
        s, u = lam[:, -1], vec[:, :, -1]                     # (n,), (n, d)
        ds = np.einsum("ijk,ni,nj->nk", loss.T, u, u)
        ds_perp = ds - u * np.sum(u * ds, axis=1, keepdims=True)
        grad = loss.gradient(theta).T
        excess = np.maximum(0.0, s - 2 / eta)
        norm2 = np.sum(ds_perp**2, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            coef = np.where(excess > 0, excess / norm2, 0.0)
        move = coef[:, None] * ds_perp + u * (np.sum(u * grad, axis=1) / s)[:, None]
        theta = theta - move.T
    return theta


class _CubicTaylorEngine(NumpyEngine):
    """Runs ``gd``/``sgd`` on the generic symbolic engine it wraps, and ``pgd`` with `pgd_step`.

    For ``pgd`` it is the NumPy engine with its step replaced by `pgd_step` (recording, burn-in,
    streamed sums, folds and divergence are the NumPy engine's own loop).
    """

    name: ClassVar[str] = "cubic-taylor"

    def __init__(self, symbolic: Engine):
        self.symbolic = symbolic
        self.dtypes = symbolic.dtypes

    def advance(self, spec, run, t1: int, n_threads: int | None = None) -> None:
        if spec.method != "pgd":
            self.symbolic.advance(spec, run, t1, n_threads=n_threads)
            return
        super().advance(spec, run, t1, n_threads=n_threads)

    def next_state(self, spec, run, t, state, params, update) -> list:
        """One PGD step of every surviving trajectory (a diverged one stays NaN)."""
        model: CubicTaylor = spec.model
        theta = np.array(state)                              # (d, n_traj)
        alive = run.alive.astype(bool)
        with np.errstate(all="ignore"):
            new = theta.copy()
            if alive.any():
                new[:, alive] = pgd_step(model.loss, model.eta, theta[:, alive])
        return list(new)
