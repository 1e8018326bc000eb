r"""Batched array-namespace engine of the quadratic-regression model: the same code on NumPy and CuPy.

``xp`` is ``numpy`` (CI, tests: `QRArrayEngine`) or ``cupy`` (``backend="cupy"``: `QRCupyEngine`).
Every trajectory of a chunk advances at once, and an SGD step is two GEMMs over the whole chunk
(no per-trajectory Jacobian is formed):

* residuals :math:`z_{mi} = z_{0i} + (J_0\theta_m)_i + \tfrac12\sum_{bc}Q_{ibc}\theta_{mb}\theta_{mc}`:
  the quadratic part is ``(theta (x) theta) @ Q.reshape(n, P*P).T``, a GEMM ``(M x P^2) @ (P^2 x n)``;
* minibatch gradient :math:`g_{mb}=\tfrac1B\sum_i a_{mi}\bigl(J_{0ib}+\sum_c Q_{ibc}\theta_{mc}\bigr)`
  with :math:`a = C\odot z` (``C``: batch counts): ``a @ J0`` plus ``(a (x) theta) @ Q'``, a GEMM
  ``(M x nP) @ (nP x P)`` with ``Q'[(i, c), b] = Q[i, b, c]``;
* PGD and the recorded observables: the Jacobians :math:`J = J_0 + Q\theta` (one GEMM) and batched
  ``eigh``/``eigvalsh`` (cuSOLVER's batched syevj on CuPy).

Dense rows cost n/B times the sampled-row work of the Numba engine, but on a GPU GEMMs run near
peak while gathers and per-row loops do not.

Draws: the batch of step ``t`` is sampled from the counter-based streams exactly as the Numba
engine does (`draw_layout`; Floyd's algorithm for sampling without replacement, one uniform per
draw, ``r = min(floor(u (j + 1)), j)``; with replacement ``min(floor(u n), n - 1)``; Bernoulli
``u < B/n``), with the SplitMix64 words computed in ``xp``'s wrapping uint64 arithmetic, so both
backends use the same index sets.  The arithmetic differs from the Numba engine (dense rows with
a count mask here, fused per-row loops with reassociation there), so results agree to round-off.
"""

from __future__ import annotations

import numpy as np

from ...engines import CupyEngine
from ._state import OBSERVABLES, QREngineBase, draw_layout

__all__ = ["QRArrayEngine", "QRCupyEngine", "uniforms_xp", "batch_counts_xp", "dense_gradient_flops", "CHUNK_BYTES"]

_M1, _M2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
#: trajectories per chunk are chosen so the (chunk, n, P) temporaries stay below this many bytes
CHUNK_BYTES = 1 << 28


def _mix64(xp, z):
    z = (z ^ (z >> xp.uint64(30))) * xp.uint64(_M1)
    z = (z ^ (z >> xp.uint64(27))) * xp.uint64(_M2)
    return z ^ (z >> xp.uint64(31))


def uniforms_xp(xp, keys, gammas, counter: int):
    """`sdeeos._rng.uniforms` in ``xp``: draw ``counter`` of every stream, in (0, 1)."""
    with np.errstate(over="ignore"):
        w = _mix64(xp, keys + (xp.uint64(counter) + xp.uint64(1)) * gammas)
    return ((w >> xp.uint64(11)).astype(xp.float64) + 0.5) * (2.0**-53)


def batch_counts_xp(xp, keys, gammas, c0: int, n: int, B: int, scheme: int):
    """How often each row is in each trajectory's batch, (M, n) float64: the Numba engine's draws."""
    M = keys.shape[0]
    if scheme == 0:
        return xp.ones((M, n))
    rows = xp.arange(M)
    C = xp.zeros((M, n))
    if scheme == 1:  # Floyd: for j = n-B .. n-1 draw r in [0, j]; take j instead if r is taken
        mark = xp.zeros((M, n), dtype=bool)
        for k in range(B):
            j = n - B + k
            r = xp.minimum((uniforms_xp(xp, keys, gammas, c0 + k) * (j + 1)).astype(xp.int64), j)
            r = xp.where(mark[rows, r], j, r)
            mark[rows, r] = True
        C[mark] = 1.0
    elif scheme == 2:
        for k in range(B):  # one index per trajectory per draw: no repeated (row, index) pairs
            r = xp.minimum((uniforms_xp(xp, keys, gammas, c0 + k) * n).astype(xp.int64), n - 1)
            C[rows, r] += 1.0
    else:
        p = B / n
        for i in range(n):
            C[:, i] = uniforms_xp(xp, keys, gammas, c0 + i) < p
    return C


class QRArrayEngine(QREngineBase):
    """Batched engine in the array namespace ``xp`` (default NumPy; `QRCupyEngine` uses CuPy)."""

    name = "array"

    def __init__(self, xp=np, chunk: int | None = None):
        self.xp = xp
        self.chunk = chunk
        self._data = None

    # ------------------------------------------------------------------ device copies
    def _model_arrays(self, model):
        if self._data is None or self._data[0] is not model:
            xp = self.xp
            Q = None if model.is_linear else xp.asarray(model.Q)
            n, P = model.n, model.P
            Qflat = None if Q is None else Q.reshape(n * P, P)  # rows (i, b), columns c
            Qz = None if Q is None else Q.reshape(n, P * P).T.copy()  # (P^2, n): rows (b, c)
            Qg = None if Q is None else xp.ascontiguousarray(Q.transpose(0, 2, 1)).reshape(n * P, P)  # rows (i, c)
            self._data = (model, xp.asarray(model.J0), xp.asarray(model.z0), Q, Qflat, Qz, Qg)
        return self._data[1:5]

    def _gemm_arrays(self, model):
        self._model_arrays(model)
        return self._data[5:]

    def _chunk(self, model) -> int:
        return self.chunk or max(1, CHUNK_BYTES // (8 * 4 * model.n * model.P + 8 * model.P * model.P))

    def _get(self, a) -> np.ndarray:
        return a.get() if hasattr(a, "get") else np.asarray(a)

    # ------------------------------------------------------------------ linear algebra
    def _jz(self, model, theta):
        """J (M, n, P) and z (M, n) at ``theta`` (M, P)."""
        xp = self.xp
        J0, z0, Q, Qflat = self._model_arrays(model)
        zlin = z0 + theta @ J0.T
        if Q is None:
            return xp.broadcast_to(J0, (theta.shape[0],) + J0.shape), zlin
        W = (theta @ Qflat.T).reshape(theta.shape[0], model.n, model.P)  # one GEMM
        z = zlin + 0.5 * (W @ theta[:, :, None])[:, :, 0]
        return J0[None] + W, z

    def _hessian(self, model, theta):
        J, z = self._jz(model, theta)
        H = J.transpose(0, 2, 1) @ J
        if not model.is_linear:
            _, _, Q, Qflat = self._model_arrays(model)
            H = H + (z @ Q.reshape(model.n, model.P * model.P)).reshape(-1, model.P, model.P)
        return H / model.n, J, z

    def _residual(self, model, theta):
        """z (M, n) at ``theta`` (M, P) without forming J: one GEMM for the quadratic part."""
        J0, z0, Q, _ = self._model_arrays(model)
        z = z0 + theta @ J0.T
        if Q is None:
            return z
        Qz, _ = self._gemm_arrays(model)
        M, P = theta.shape
        return z + 0.5 * ((theta[:, :, None] * theta[:, None, :]).reshape(M, P * P) @ Qz)

    def _gradient(self, model, theta, a):
        """sum_i a_mi J_mi. (M, P) at ``theta`` without forming J: one GEMM for the quadratic part."""
        J0, _, Q, _ = self._model_arrays(model)
        g = a @ J0
        if Q is None:
            return g
        _, Qg = self._gemm_arrays(model)
        M, P = theta.shape
        return g + (a[:, :, None] * theta[:, None, :]).reshape(M, model.n * P) @ Qg

    @staticmethod
    def _rowvec(a, J):
        """sum_i a_mi J_mi. (M, P): batched GEMV."""
        return (a[:, None, :] @ J)[:, 0, :]

    # ------------------------------------------------------------------ stepping
    def _advance_kernel(self, spec, run, t0, t1, n_threads):
        xp = self.xp
        model = spec.model
        step = max(1, self._chunk(model))
        for lo in range(0, spec.n_traj, step):
            hi = min(spec.n_traj, lo + step)
            if not run.alive[lo:hi].any():
                continue
            th = xp.asarray(run.theta[lo:hi])
            vel = xp.asarray(run.velocity[lo:hi])
            alive = xp.asarray(run.alive[lo:hi]).astype(bool)
            div = xp.asarray(run.diverged_step[lo:hi])
            keys, gammas = xp.asarray(run.keys[lo:hi]), xp.asarray(run.gammas[lo:hi])
            pgd_vec = xp.asarray(run.pgd_vec[lo:hi]) if spec.method == "pgd" else None
            for t in range(t0, t1):
                if spec.method == "pgd":
                    new = self._pgd_step(model, th, pgd_vec, alive)
                else:
                    new = self._sgd_step(spec, model, th, vel, keys, gammas, t, alive)
                th = xp.where(alive[:, None], new, th)
                with np.errstate(invalid="ignore"):
                    bad = alive & ~xp.all(xp.abs(th) <= model.divergence_bound, axis=1)
                div = xp.where(bad, t + 1, div)
                alive = alive & ~bad
                th = xp.where(bad[:, None], xp.nan, th)
            run.theta[lo:hi] = self._get(th)
            run.velocity[lo:hi] = self._get(vel)
            run.alive[lo:hi] = self._get(alive).astype(np.uint8)
            run.diverged_step[lo:hi] = self._get(div)
            if pgd_vec is not None:
                run.pgd_vec[lo:hi] = self._get(pgd_vec)

    def _sgd_step(self, spec, model, th, vel, keys, gammas, t, alive):
        scheme, c_init, d_step = draw_layout(spec)
        B = model.n if scheme == 0 else model.batch_size
        C = batch_counts_xp(self.xp, keys, gammas, c_init + t * d_step, model.n, B, scheme)
        upd = self._gradient(model, th, C * self._residual(model, th)) * (1.0 / B)
        if model.momentum != 0.0:
            v = model.momentum * vel + upd
            vel[...] = self.xp.where(alive[:, None], v, vel)
            return th - model.eta * v
        return th - model.eta * upd

    def _pgd_step(self, model, th, pgd_vec, alive):
        """GD step, then up to ``pgd_max_projections`` linearised projections onto S <= 2/eta (masked)."""
        xp = self.xp
        n, edge = model.n, 2.0 / model.eta
        _, _, Q, _ = self._model_arrays(model)
        J, z = self._jz(model, th)
        th = th - model.eta * (self._rowvec(z, J) / n)
        active = alive.copy()
        for _ in range(model.pgd_max_projections):
            H, J, z = self._hessian(model, th)
            evals, evecs = xp.linalg.eigh(H)
            S, u = evals[:, -1], evecs[:, :, -1]
            pgd_vec[...] = xp.where(active[:, None], u, pgd_vec)
            with np.errstate(invalid="ignore"):
                active = active & (S > edge)
            if not bool(active.any()):
                break
            grad = self._rowvec(z, J) / n
            Qu = (Q.reshape(n * model.P, model.P) @ u.T).T.reshape(-1, n, model.P)  # (M, n, P): Q_i u
            Ju = (J @ u[:, :, None])[:, :, 0]
            uQu = (Qu @ u[:, :, None])[:, :, 0]
            dS = (2.0 * self._rowvec(Ju, Qu) + self._rowvec(uQu, J)) / n
            uds = xp.sum(u * dS, axis=1)
            dS = dS - u * uds[:, None]
            nrm2 = xp.sum(dS * dS, axis=1)
            ug = xp.sum(u * grad, axis=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                step = xp.where(nrm2 > 0, (S - edge - uds * ug / S) / nrm2, 0.0)
            move = step[:, None] * dS + u * (ug / S)[:, None]
            th = xp.where(active[:, None], th - move, th)
        return th

    # ------------------------------------------------------------------ observables
    def _observe_quadratic(self, spec, run, n_threads):
        xp = self.xp
        model = spec.model
        M, n = spec.n_traj, model.n
        out = np.full((len(OBSERVABLES), M), np.nan)
        spectra = np.full((M, min(n, model.P)), np.nan)
        ntks = np.full((M, n, n), np.nan) if model.records_exact_kernel() else None
        live = np.flatnonzero(run.alive)
        step = max(1, self._chunk(model))
        for lo in range(0, live.size, step):
            sel = live[lo:lo + step]
            th = xp.asarray(run.theta[sel])
            H, J, z = self._hessian(model, th)
            evals, evecs = xp.linalg.eigh(H)
            JT = J.transpose(0, 2, 1)
            gram = (JT @ J) if model.P <= n else (J @ JT)
            spec_ = xp.linalg.eigvalsh(gram / n)
            values = {
                "loss": 0.5 * xp.sum(z * z, axis=1) / n,
                "sharpness": evals[:, -1],
                "ntk_max_eigenvalue": spec_[:, -1],
                "ntk_trace": xp.sum(J * J, axis=(1, 2)) / n,
                "grad_norm": xp.linalg.norm(self._rowvec(z, J) / n, axis=1),
            }
            for k, name in enumerate(OBSERVABLES):
                if name in values:
                    out[k, sel] = self._get(values[name])
            spectra[sel] = self._get(spec_)
            run.sharp_vec[sel] = self._get(evecs[:, :, -1])
            if ntks is not None:
                ntks[sel] = self._get((J @ JT) / n)
        return out, spectra, ntks


class QRCupyEngine(QRArrayEngine):
    """`QRArrayEngine` on CuPy (``backend="cupy"``): batched cuBLAS GEMMs and cuSOLVER ``eigh`` per step."""

    name = "cupy"

    def __init__(self, chunk: int | None = None):
        import cupy

        super().__init__(cupy, chunk)

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return CupyEngine.available()  # the same check and message as the reduced model's GPU engine


def dense_gradient_flops(model, n_traj: int) -> float:
    """Floating-point operations of one SGD step of `QRArrayEngine` over all n rows (its two GEMMs
    of 2 n P^2 each for the quadratic model, plus the 2 n P of each linear part).

    >>> from sdeeos.models import QuadraticRegression
    >>> dense_gradient_flops(QuadraticRegression(n=8, P=4, eta=0.1, q_scale=1.0), 1)   # 2*(2*8*16) + 2*(2*8*4)
    640.0
    """
    n, P = model.n, model.P
    per = 2 * (2 * n * P)  # z0 + J0 theta, a J0
    if not model.is_linear:
        per += 2 * (2 * n * P * P)  # (theta x theta) Q, (a x theta) Q'
    return float(per) * n_traj

