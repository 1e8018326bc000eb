"""Run state, draw layout, recording driver and result collection of the quadratic-regression model.

Both QR engines (Numba: `_numba_engine`, NumPy reference: `_numpy_engine`) advance a `QRRunState` in place
with the same draws.  They differ only in the kernels; the driver here is shared:

* observables are recorded at absolute steps ``t % record_every == 0`` (state *before* step t) and at
  the final step, from the state alone (and the Lanczos warm-start vector, itself updated only at those
  steps), so a run split into any segments gives the same records;
* a trajectory is checked after every step; once ``|theta_a| > divergence_bound`` (or non-finite) it is
  marked dead at that step, its state set to NaN and never advanced again.
"""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np

from ..._contract import Engine, ensemble_summary
from ..._rng import normals, stream_keys

__all__ = ["QRRunState", "QREngineBase", "collect_qr", "draw_layout", "SCHEME_CODES", "OBSERVABLES", "OBSERVABLE_DOCS",
           "LANCZOS_DRAW_OFFSET", "single_blas_thread"]

#: Observables recorded on the stride (and at the final step), in this order.
OBSERVABLES = ("loss", "sharpness", "ntk_max_eigenvalue", "ntk_trace", "noise_kernel_norm", "grad_norm",
               "noise_kernel_norm_exact")
OBSERVABLE_DOCS = {
    "loss": "full-batch loss ||z||^2/(2n)",
    "sharpness": "largest algebraic eigenvalue of the Hessian of the loss",
    "ntk_max_eigenvalue": "largest eigenvalue of the NTK J J^T/n (Gauss-Newton sharpness)",
    "ntk_trace": "trace of the NTK J J^T/n",
    "noise_kernel_norm": "noise kernel norm K (closure, sdeeos.theory.mean_square) at batch_size/sampling; "
                         "NaN where eta*lambda is outside its domain",
    "grad_norm": "norm of the full-batch gradient",
    "noise_kernel_norm_exact": "exact noise kernel norm K_exact = lambda_max(G) of the linearised second-moment "
                               "operator (threshold exactly 1; sdeeos.theory.mean_square); NaN off-domain or "
                               "when n > exact_kernel_max_n",
}
#: Draw counter of the fixed per-trajectory vector mixed into Lanczos warm starts.
LANCZOS_DRAW_OFFSET = 2**62

#: Sampling scheme codes passed to the kernels (0: full batch).
SCHEME_CODES = {"gd": 0, "without_replacement": 1, "with_replacement": 2, "bernoulli": 3}


def draw_layout(spec) -> tuple[int, int, int]:
    """``(scheme code, first step draw, draws per step)``: step t uses draws ``c0 + t*D .. c0 + t*D + D-1``."""
    model = spec.model
    if spec.method in ("gd", "pgd"):
        return SCHEME_CODES["gd"], model.P, 0
    code = SCHEME_CODES[model.sampling]
    per_step = model.n if model.sampling == "bernoulli" else model.batch_size
    return code, model.P, per_step


def lanczos_start_vectors(model, keys, gammas) -> np.ndarray:
    """Fixed unit vectors (one per trajectory) mixed into every Lanczos warm start."""
    v = np.empty((keys.size, model.P))
    for a in range(model.P):
        v[:, a] = normals(keys, gammas, LANCZOS_DRAW_OFFSET + a)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@dataclasses.dataclass
class QRRunState:
    """Host arrays of a quadratic-regression run (shapes in comments; M trajectories, P parameters)."""

    t: int                     # next step to take
    theta: np.ndarray          # (M, P)
    velocity: np.ndarray       # (M, P) heavy-ball buffer
    keys: np.ndarray           # (M,) uint64
    gammas: np.ndarray         # (M,) uint64
    alive: np.ndarray          # (M,) uint8
    diverged_step: np.ndarray  # (M,) int64, -1 while alive
    sharp_vec: np.ndarray      # (M, P) Lanczos warm start of the recorded sharpness (top eigenvector)
    pgd_vec: np.ndarray        # (M, P) warm start of PGD's top eigenvector
    start_vec: np.ndarray      # (M, P) fixed unit vectors mixed into warm starts
    rec: np.ndarray            # (n_records, n_obs, M)
    final: np.ndarray          # (n_obs, M) observables at t = n_steps (NaN until then)

    @classmethod
    def initial(cls, spec) -> "QRRunState":
        model = spec.model
        M, P = spec.n_traj, model.P
        keys, gammas = stream_keys(spec.seed, M)
        start = lanczos_start_vectors(model, keys, gammas)
        return cls(
            t=0, theta=np.ascontiguousarray(model.initial_theta(keys, gammas)), velocity=np.zeros((M, P)),
            keys=keys, gammas=gammas, alive=np.ones(M, np.uint8), diverged_step=np.full(M, -1, np.int64),
            sharp_vec=start.copy(), pgd_vec=start.copy(), start_vec=start,
            rec=np.full((spec.n_records, len(OBSERVABLES), M), np.nan),
            final=np.full((len(OBSERVABLES), M), np.nan),
        )

    def arrays(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


class QREngineBase(Engine):
    """Shared driver: record, advance the kernel to the next record step, repeat."""

    name = "base"

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return True, ""

    # -- to implement
    def _advance_kernel(self, spec, run, t0, t1, n_threads):  # pragma: no cover - abstract
        raise NotImplementedError

    def _observe_quadratic(self, spec, run, n_threads):  # pragma: no cover - abstract
        """``(out, spectra, ntks)``: (n_obs, M) observables of the alive trajectories (NaN for dead ones),
        (M, min(n, P)) NTK spectra and (M, n, n) NTKs (None unless K_exact is recorded); the driver fills
        K and K_exact from them."""
        raise NotImplementedError

    # -- shared
    def observe(self, spec, run, n_threads=None) -> np.ndarray:
        """(n_obs, M) observables of the current state (BLAS limited to one thread: the work is many
        small per-trajectory factorisations, parallelised over trajectories by Numba where it can be)."""
        model = spec.model
        with single_blas_thread():
            if model.is_linear:
                return observe_linear(model, run)
            out, spectra, ntks = self._observe_quadratic(spec, run, n_threads)
            k = OBSERVABLES.index("noise_kernel_norm")
            kx = OBSERVABLES.index("noise_kernel_norm_exact")
            for m in np.flatnonzero(run.alive):
                out[k, m] = model.noise_kernel_norm(spectra[m])
                if ntks is not None:
                    out[kx, m] = model.noise_kernel_norm_exact(ntks[m])
        return out

    def advance(self, spec, run, t1, n_threads=None) -> None:
        every = spec.record_every
        t = run.t
        while t < t1:
            if every and t % every == 0:
                run.rec[t // every] = self.observe(spec, run, n_threads)
            nxt = min(t1, (t // every + 1) * every) if every else t1
            self._advance_kernel(spec, run, t, nxt, n_threads)
            t = nxt
            run.t = t
        if t1 == spec.n_steps:
            run.final[:] = self.observe(spec, run, n_threads)
        run.t = t1


def single_blas_thread():
    """Limit BLAS/LAPACK to one thread (many small per-trajectory factorisations: threads only add
    contention); a no-op when ``threadpoolctl`` is not installed.  Results do not depend on it."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - optional
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def observe_linear(model, run) -> np.ndarray:
    """Observables of the linear model: only loss and gradient change; the rest is a constant of J0."""
    M = run.theta.shape[0]
    out = np.full((len(OBSERVABLES), M), np.nan)
    alive = run.alive.astype(bool)
    th = run.theta[alive]
    z = model.z0 + th @ model.J0.T
    grad = z @ model.J0 / model.n
    lam = model.initial_ntk_eigenvalues
    values = {
        "loss": 0.5 * np.sum(z * z, axis=1) / model.n,
        "sharpness": lam.max(),
        "ntk_max_eigenvalue": lam.max(),
        "ntk_trace": lam.sum(),
        "noise_kernel_norm": model.noise_kernel_norm(lam),
        "grad_norm": np.linalg.norm(grad, axis=1),
        "noise_kernel_norm_exact": linear_exact_kernel(model),
    }
    for k, name in enumerate(OBSERVABLES):
        out[k, alive] = values[name]
    return out


def linear_exact_kernel(model) -> float:
    """K_exact of the linear model (constant; cached on the model), NaN when n > exact_kernel_max_n."""
    if not model.records_exact_kernel():
        return float("nan")
    cache = model.__dict__.setdefault("_exact_kernel_cache", {})
    key = (model.eta, model.batch_size, model.sampling)
    if key not in cache:
        cache[key] = model.noise_kernel_norm_exact(model.J0 @ model.J0.T / model.n)
    return cache[key]


def collect_qr(spec, run) -> tuple[dict, dict, dict]:
    """Data variables, coordinates and scalar summaries of a finished quadratic-regression run."""
    alive = run.alive.astype(bool)
    data: dict = {}
    summary: dict[str, float] = {}
    coords = {"traj": np.arange(spec.n_traj), "param": np.arange(spec.model.P)}
    if spec.record_every:
        steps = np.arange(spec.n_records) * spec.record_every
        coords["step"] = steps
        after = steps >= spec.burn_in
    for k, name in enumerate(OBSERVABLES):
        doc = OBSERVABLE_DOCS[name]
        final = np.where(alive, run.final[k], np.nan)
        data[f"final_{name}"] = ("traj", final, {"long_name": f"{doc}, at the final step"})
        m, se = _summary(final, alive)
        summary[f"{name}_final_mean"] = m
        summary[f"{name}_final_mean_stderr"] = se
        if spec.record_every:
            path = run.rec[:, k, :].T.copy()
            data[f"path_{name}"] = (("traj", "step"), path, {"long_name": doc})
            if after.any():
                with np.errstate(invalid="ignore"):
                    tm = np.where(alive, np.mean(path[:, after], axis=1), np.nan)
                data[f"{name}_time_mean"] = ("traj", tm, {"long_name": f"{doc}, mean over recorded steps >= burn_in"})
                m, se = _summary(tm, alive)
                summary[f"{name}_mean"] = m
                summary[f"{name}_mean_stderr"] = se
    data["final_theta"] = (("traj", "param"), run.theta.copy(), {"long_name": "parameters at the final step"})
    data["diverged"] = ("traj", ~alive, {"long_name": "trajectory left the divergence bound"})
    data["diverged_step"] = ("traj", run.diverged_step.copy(),
                             {"long_name": "step after which divergence was detected (-1: never)"})
    summary["n_diverged"] = int((~alive).sum())
    summary["n_alive"] = int(alive.sum())
    return data, coords, summary


def _summary(values, alive):
    ok = alive & np.isfinite(values)
    if not ok.any():
        return float("nan"), float("nan")
    return ensemble_summary(values, ok)
