"""NumPy reference engine of the quadratic-regression model (dense batch masks, exact eigensolvers).

Same draws as the Numba engine (``uniforms(keys, gammas, c)``, Floyd's algorithm vectorised over
trajectories), but independent arithmetic: per step the batch is a count matrix ``C`` (M x n) and the
gradient ``(C * z) J / B`` is computed on all n rows with GEMMs/einsum; the sharpness is the top
eigenvalue of the explicit Hessian (``eigh``), PGD uses exact eigenpairs.  It agrees with the Numba
engine up to round-off and is meant for tests and small runs (it does n/B times the Numba work).
"""

from __future__ import annotations

import numpy as np

from ..._rng import uniforms
from ._state import OBSERVABLES, QREngineBase, draw_layout

__all__ = ["QRNumpyEngine", "batch_counts", "hessian", "exact_observables"]

#: Trajectories per block (bounds the M x n x P temporaries).
BLOCK = 16


def _padded(rows: np.ndarray) -> np.ndarray:
    """``rows`` (m <= BLOCK, ...) with zero rows appended up to BLOCK.  Every block then has one shape:
    NumPy's matmul and einsum sum in another order for a single row (GEMV) than for several, and a
    trajectory's numbers must not depend on how many trajectories share its block (a shard of one)."""
    if rows.shape[0] == BLOCK:  # a full block (every one but the last): no copy on the step's path
        return rows
    out = np.zeros((BLOCK,) + rows.shape[1:])
    out[:rows.shape[0]] = rows
    return out


def batch_counts(keys, gammas, c0: int, n: int, B: int, scheme: int) -> np.ndarray:
    """How often each row is in each trajectory's batch: (M, n) float array (the same draws as Numba)."""
    M = keys.size
    if scheme == 0:
        return np.ones((M, n))
    rows = np.arange(M)
    C = np.zeros((M, n))
    if scheme == 1:  # Floyd
        mark = np.zeros((M, n), bool)
        for k in range(B):
            j = n - B + k
            r = np.minimum((uniforms(keys, gammas, c0 + k) * (j + 1)).astype(np.int64), j)
            r = np.where(mark[rows, r], j, r)
            mark[rows, r] = True
        C[mark] = 1.0
    elif scheme == 2:
        for k in range(B):
            r = np.minimum((uniforms(keys, gammas, c0 + k) * n).astype(np.int64), n - 1)
            np.add.at(C, (rows, r), 1.0)
    else:
        p = B / n
        for i in range(n):
            C[:, i] = uniforms(keys, gammas, c0 + i) < p
    return C


def jacobian_residual(model, theta):
    """J (M, n, P) and z (M, n) at ``theta`` (M, P)."""
    if model.is_linear:
        J = np.broadcast_to(model.J0, (theta.shape[0],) + model.J0.shape)
        return J, model.z0 + theta @ model.J0.T
    W = np.einsum("ibc,mc->mib", model.Q, theta)
    J = model.J0[None] + W
    z = model.z0 + theta @ model.J0.T + 0.5 * np.einsum("mib,mb->mi", W, theta)
    return J, z


def hessian(model, theta):
    """Hessians (M, P, P) of the loss at ``theta`` (M, P), with J and z."""
    J, z = jacobian_residual(model, theta)
    H = np.einsum("mia,mib->mab", J, J)
    if not model.is_linear:
        H = H + np.einsum("mi,iab->mab", z, model.Q)
    return H / model.n, J, z


def exact_observables(model, theta):
    """Observables (n_obs, M) of ``theta`` from dense linear algebra (K left NaN), NTK spectra, top
    Hessian eigenvectors and NTKs (M, n, n)."""
    M = theta.shape[0]
    out = np.full((len(OBSERVABLES), M), np.nan)
    H, J, z = hessian(model, theta)
    n = model.n
    evals, evecs = np.linalg.eigh(H)
    gram = np.einsum("mia,mib->mab", J, J) if model.P <= n else np.einsum("mia,mja->mij", J, J)
    spectra = np.linalg.eigvalsh(gram / n)
    values = {
        "loss": 0.5 * np.sum(z * z, axis=1) / n,
        "sharpness": evals[:, -1],
        "ntk_max_eigenvalue": spectra[:, -1],
        "ntk_trace": np.sum(J * J, axis=(1, 2)) / n,
        "grad_norm": np.linalg.norm(np.einsum("mi,mia->ma", z, J) / n, axis=1),
    }
    for k, name in enumerate(OBSERVABLES):
        if name in values:
            out[k] = values[name]
    return out, spectra, evecs[:, :, -1], np.einsum("mia,mja->mij", J, J) / n


class QRNumpyEngine(QREngineBase):
    """Vectorised NumPy reference engine (single thread)."""

    name = "numpy"

    def _advance_kernel(self, spec, run, t0, t1, n_threads):
        model = spec.model
        if spec.method == "pgd":
            self._advance_pgd(spec, run, t0, t1)
            return
        scheme, c_init, d_step = draw_layout(spec)
        B = model.n if scheme == 0 else model.batch_size
        bound = model.divergence_bound
        for t in range(t0, t1):
            live = np.flatnonzero(run.alive)
            if live.size == 0:
                break
            C = batch_counts(run.keys[live], run.gammas[live], c_init + t * d_step, model.n, B, scheme)
            for lo in range(0, live.size, BLOCK):
                sel = live[lo:lo + BLOCK]
                th = run.theta[sel]
                J, z = jacobian_residual(model, _padded(th))
                g = np.einsum("mi,mia->ma", _padded(C[lo:lo + BLOCK]) * z, J)[:sel.size]
                upd = g * (1.0 / B)
                if model.momentum != 0.0:
                    v = model.momentum * run.velocity[sel] + upd
                    run.velocity[sel] = v
                    run.theta[sel] = th - model.eta * v
                else:
                    run.theta[sel] = th - model.eta * upd
            self._check(run, live, t, bound)

    @staticmethod
    def _check(run, live, t, bound):
        with np.errstate(invalid="ignore"):
            bad = live[~np.all(np.abs(run.theta[live]) <= bound, axis=1)]
        run.alive[bad] = 0
        run.diverged_step[bad] = t + 1
        run.theta[bad] = np.nan

    def _advance_pgd(self, spec, run, t0, t1):
        model = spec.model
        edge = 2.0 / model.eta
        n = model.n
        for t in range(t0, t1):
            live = np.flatnonzero(run.alive)
            if live.size == 0:
                break
            for m in live:
                th = run.theta[m:m + 1]
                J, z = jacobian_residual(model, th)
                th = th - model.eta * (np.einsum("mi,mia->ma", z, J) / n)
                for _ in range(model.pgd_max_projections):
                    H, J, z = hessian(model, th)
                    evals, evecs = np.linalg.eigh(H[0])
                    S, u = evals[-1], evecs[:, -1]
                    run.pgd_vec[m] = u
                    if not S > edge:
                        break
                    Jm, zm = J[0], z[0]
                    grad = zm @ Jm / n
                    Qu = model.Q @ u                     # (n, P)
                    dS = (2.0 * (Jm @ u) @ Qu + (Qu @ u) @ Jm) / n
                    uds = u @ dS
                    dS = dS - u * uds
                    nrm2 = dS @ dS
                    step = (S - edge - uds * (u @ grad) / S) / nrm2 if nrm2 > 0 else 0.0
                    th = th - (step * dS + u * (u @ grad / S))[None]
                run.theta[m] = th[0]
            self._check(run, live, t, model.divergence_bound)

    def _observe_quadratic(self, spec, run, n_threads):
        model = spec.model
        M = spec.n_traj
        out = np.full((len(OBSERVABLES), M), np.nan)
        spectra = np.full((M, min(model.n, model.P)), np.nan)
        ntks = np.full((M, model.n, model.n), np.nan) if model.records_exact_kernel() else None
        live = np.flatnonzero(run.alive)
        for lo in range(0, live.size, BLOCK):
            sel = live[lo:lo + BLOCK]
            o, sp, u, ntk = exact_observables(model, _padded(run.theta[sel]))
            out[:, sel] = o[:, :sel.size]
            spectra[sel] = sp[:sel.size]
            run.sharp_vec[sel] = u[:sel.size]
            if ntks is not None:
                ntks[sel] = ntk[:sel.size]
        return out, spectra, ntks
