"""Numba engine of the quadratic-regression model: fused, parallel kernels that touch only sampled rows.

* **Sampling** (per trajectory, counter-based draws ``uniform_nb(key, gamma, c)``): Floyd's algorithm for
  B distinct rows (B draws, a per-trajectory mark array), B independent rows, or n Bernoulli(B/n) draws.
* **Linear model** (``_advance_linear``): one ``prange`` over trajectories, time loop inside: per step
  the B sampled rows give ``r_k = z0_i + J0_i . theta`` and ``g = sum_k r_k J0_i`` (4BP flops), four
  rows per pass so that theta and g are loaded once per four rows; the trajectory's state never
  leaves L1.
* **Quadratic model** (``_advance_quadratic``): trajectories are cut into one block per thread; each
  block runs its own time loop (no barrier per step, which matters on a loaded machine).  Per step
  a block (1) samples its trajectories' batches, (2) buckets the (trajectory, slot) pairs by data
  row (counting sort), (3) for each row i reads each row of ``Q_i`` once and applies it to every
  trajectory of the block that sampled i (about M B / (n T) of them), writing
  ``r (J0_i + Q_i theta)`` per pair, (4) sums each trajectory's pairs in slot order and updates.
  Each pair's arithmetic and each trajectory's sum are fixed, so results do not depend on the
  thread count, the blocking or the segmentation of the run.
* **Observables**: ``Q(theta, .)`` and ``sum_i z_i Q_i`` for blocks of trajectories as GEMMs, then per
  trajectory (``prange``): loss, gradient, NTK trace, NTK spectrum (``eigvalsh`` of the smaller Gram
  matrix) and the sharpness by Lanczos with full reorthogonalisation on the exact Hessian-vector
  product ``(J^T (J v) + A v)/n``, warm-started from the previous top eigenvector.

``fastmath`` is limited to ``reassoc``/``contract`` (SIMD reductions, FMA): NaN/inf semantics are kept
for divergence detection.  All kernels are cached on disk (``cache=True``).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange

from ..._rng import uniform_nb
from ._state import OBSERVABLES, QREngineBase, draw_layout

#: SHA-256 of ``sdeeos/_rng.py``, whose functions the cached (``cache=True``) kernels below inline.
#: Numba's on-disk cache is keyed by this file alone and does not see a change in ``_rng.py``; a test
#: fails until this line is updated, and updating it changes this file, so stale machine code is
#: never loaded.
RNG_SOURCE_SHA256 = "a4265c306c8fae4b4ef2a44a6f0e99ae30ee57c2bde008f8882d9e0cca89cbc3"

__all__ = ["QRNumbaEngine", "lanczos_top", "hessian_top_lanczos"]

_FM = {"reassoc", "contract"}
#: Trajectories per block in the observable GEMMs.
OBS_BLOCK = 32


# --------------------------------------------------------------------------- sampling
@njit(cache=True)
def _sample(key, gamma, c0, n, B, scheme, idx, mark, ubuf):
    """Row indices of one batch into ``idx``; returns their number.

    ``mark`` (n,) is left all zero; ``ubuf`` (>= n) receives the uniforms, drawn first in a loop of
    independent draws (they pipeline/vectorise), then consumed.
    """
    if scheme == 0:
        for k in range(n):
            idx[k] = k
        return n
    if scheme == 1:  # without replacement: Floyd's algorithm
        for k in range(B):
            ubuf[k] = uniform_nb(key, gamma, c0 + k)
        for k in range(B):
            j = n - B + k
            r = int(ubuf[k] * (j + 1))
            if r > j:
                r = j
            if mark[r]:
                r = j
            mark[r] = 1
            idx[k] = r
        for k in range(B):
            mark[idx[k]] = 0
        return B
    if scheme == 2:  # with replacement
        for k in range(B):
            ubuf[k] = uniform_nb(key, gamma, c0 + k)
        for k in range(B):
            r = int(ubuf[k] * n)
            if r >= n:
                r = n - 1
            idx[k] = r
        return B
    p = B / n  # Bernoulli
    for i in range(n):
        ubuf[i] = uniform_nb(key, gamma, c0 + i)
    cnt = 0
    for i in range(n):
        if ubuf[i] < p:
            idx[cnt] = i
            cnt += 1
    return cnt


@njit(cache=True, fastmath=_FM)
def _update(th, v, g, eta, mom, inv_b, bound):
    """theta -= eta * (g / B) (heavy ball if mom > 0); False if theta left the bound."""
    P = th.shape[0]
    if mom != 0.0:
        for a in range(P):
            v[a] = mom * v[a] + g[a] * inv_b
            th[a] -= eta * v[a]
    else:
        for a in range(P):
            th[a] -= eta * (g[a] * inv_b)
    ok = True
    for a in range(P):
        if not (abs(th[a]) <= bound):
            ok = False
    return ok


# --------------------------------------------------------------------------- linear model
@njit(parallel=True, cache=True, fastmath=_FM)
def _advance_linear(theta, vel, J0, z0, keys, gammas, alive, diverged_step, t0, t1, eta, mom, B, scheme,
                    c_init, d_step, bound, idx_ws, mark_ws, g_ws):
    M, P = theta.shape
    n = J0.shape[0]
    inv_b = 1.0 / B
    for m in prange(M):
        if alive[m] == 0:
            continue
        th = theta[m]
        v = vel[m]
        g = g_ws[m]
        idx = idx_ws[m]
        mark = mark_ws[m]
        key = keys[m]
        gam = gammas[m]
        ubuf = np.empty(n)
        for t in range(t0, t1):
            cnt = _sample(key, gam, c_init + t * d_step, n, B, scheme, idx, mark, ubuf)
            for a in range(P):
                g[a] = 0.0
            # four sampled rows per pass: theta and g are loaded once for four rows
            k = 0
            while k + 4 <= cnt:
                i0 = idx[k]
                i1 = idx[k + 1]
                i2 = idx[k + 2]
                i3 = idx[k + 3]
                r0 = 0.0
                r1 = 0.0
                r2 = 0.0
                r3 = 0.0
                for a in range(P):
                    ta = th[a]
                    r0 += J0[i0, a] * ta
                    r1 += J0[i1, a] * ta
                    r2 += J0[i2, a] * ta
                    r3 += J0[i3, a] * ta
                r0 += z0[i0]
                r1 += z0[i1]
                r2 += z0[i2]
                r3 += z0[i3]
                for a in range(P):
                    g[a] += r0 * J0[i0, a] + r1 * J0[i1, a] + r2 * J0[i2, a] + r3 * J0[i3, a]
                k += 4
            while k < cnt:
                i = idx[k]
                r = 0.0
                for a in range(P):
                    r += J0[i, a] * th[a]
                r += z0[i]
                for a in range(P):
                    g[a] += r * J0[i, a]
                k += 1
            if not _update(th, v, g, eta, mom, inv_b, bound):
                alive[m] = 0
                diverged_step[m] = t + 1
                for a in range(P):
                    th[a] = np.nan
                break


# --------------------------------------------------------------------------- quadratic model
@njit(cache=True, fastmath=_FM)
def _advance_quadratic_block(theta, vel, J0, Q, z0, keys, gammas, alive, diverged_step, t0, t1, eta, mom, B,
                             scheme, c_init, d_step, bound, idx_ws, mark_ws, g_ws, lo, hi, cap):
    """Trajectories lo .. hi-1 from t0 to t1 (one thread; pairs bucketed by data row each step)."""
    P = theta.shape[1]
    n = J0.shape[0]
    Mb = hi - lo
    inv_b = 1.0 / B
    cnt = np.zeros(Mb, np.int64)
    off = np.zeros(Mb + 1, np.int64)
    row_start = np.zeros(n + 1, np.int64)
    pos = np.zeros(n, np.int64)
    contrib = np.empty((cap, P))
    perm = np.empty(cap, np.int64)
    pair_traj = np.empty(cap, np.int64)
    ubuf = np.empty(n)
    for t in range(t0, t1):
        # (1) batches
        for j in range(Mb):
            m = lo + j
            if alive[m]:
                cnt[j] = _sample(keys[m], gammas[m], c_init + t * d_step, n, B, scheme, idx_ws[m], mark_ws[m],
                                 ubuf)
            else:
                cnt[j] = 0
        # (2) pairs bucketed by row (counting sort)
        off[0] = 0
        for j in range(Mb):
            off[j + 1] = off[j] + cnt[j]
        total = off[Mb]
        if total == 0:
            break
        if total > cap:
            cap = total
            contrib = np.empty((cap, P))
            perm = np.empty(cap, np.int64)
            pair_traj = np.empty(cap, np.int64)
        for i in range(n + 1):
            row_start[i] = 0
        for j in range(Mb):
            for k in range(cnt[j]):
                row_start[idx_ws[lo + j, k] + 1] += 1
        for i in range(n):
            row_start[i + 1] += row_start[i]
            pos[i] = row_start[i]
        for j in range(Mb):
            for k in range(cnt[j]):
                i = idx_ws[lo + j, k]
                p = off[j] + k
                perm[pos[i]] = p
                pair_traj[p] = lo + j
                pos[i] += 1
        # (3) per row: each row of Q_i is read once for all pairs of that row
        for i in range(n):
            s0 = row_start[i]
            s1 = row_start[i + 1]
            if s0 == s1:
                continue
            for b in range(P):
                # four trajectories per loaded row of Q_i.  Every pair goes through this same 4-lane
                # code (a short last group repeats its last pair in the spare lanes and discards
                # them), so a pair's rounding does not depend on which group it falls in, i.e. on
                # the blocking of trajectories (= thread count).
                for s in range(s0, s1, 4):
                    p0 = perm[s]
                    p1 = perm[min(s + 1, s1 - 1)]
                    p2 = perm[min(s + 2, s1 - 1)]
                    p3 = perm[min(s + 3, s1 - 1)]
                    m0 = pair_traj[p0]
                    m1 = pair_traj[p1]
                    m2 = pair_traj[p2]
                    m3 = pair_traj[p3]
                    a0 = 0.0
                    a1 = 0.0
                    a2 = 0.0
                    a3 = 0.0
                    for a in range(P):
                        qa = Q[i, b, a]
                        a0 += qa * theta[m0, a]
                        a1 += qa * theta[m1, a]
                        a2 += qa * theta[m2, a]
                        a3 += qa * theta[m3, a]
                    contrib[p3, b] = a3  # reverse order: a padded lane never overwrites a real one
                    contrib[p2, b] = a2
                    contrib[p1, b] = a1
                    contrib[p0, b] = a0
            for s in range(s0, s1):
                p = perm[s]
                m = pair_traj[p]
                r = z0[i]
                h = 0.0
                for a in range(P):
                    r += J0[i, a] * theta[m, a]
                    h += contrib[p, a] * theta[m, a]
                r += 0.5 * h
                for a in range(P):
                    contrib[p, a] = r * (J0[i, a] + contrib[p, a])
        # (4) per trajectory: gradient in slot order, update
        for j in range(Mb):
            m = lo + j
            if alive[m] == 0:
                continue
            g = g_ws[m]
            for a in range(P):
                g[a] = 0.0
            for k in range(cnt[j]):
                p = off[j] + k
                for a in range(P):
                    g[a] += contrib[p, a]
            if not _update(theta[m], vel[m], g, eta, mom, inv_b, bound):
                alive[m] = 0
                diverged_step[m] = t + 1
                for a in range(P):
                    theta[m, a] = np.nan


@njit(parallel=True, cache=True)
def _advance_quadratic(theta, vel, J0, Q, z0, keys, gammas, alive, diverged_step, t0, t1, eta, mom, B, scheme,
                       c_init, d_step, bound, idx_ws, mark_ws, g_ws, n_blocks, per_traj_cap):
    """Independent blocks of trajectories in parallel (no barrier per step); results do not depend on
    ``n_blocks`` because each pair's arithmetic and each trajectory's sum order are fixed."""
    M = theta.shape[0]
    for blk in prange(n_blocks):
        lo = blk * M // n_blocks
        hi = (blk + 1) * M // n_blocks
        if hi > lo:
            _advance_quadratic_block(theta, vel, J0, Q, z0, keys, gammas, alive, diverged_step, t0, t1, eta, mom,
                                     B, scheme, c_init, d_step, bound, idx_ws, mark_ws, g_ws, lo, hi,
                                     (hi - lo) * per_traj_cap)


# --------------------------------------------------------------------------- curvature helpers
@njit(cache=True, fastmath=_FM)
def _jacobian_residual(J0, Q, z0, th, J, z):
    """J = J0 + Q(theta, .), z = z0 + J0 theta + theta^T Q theta / 2 for one trajectory."""
    n, P = J0.shape
    for i in range(n):
        r = z0[i]
        h = 0.0
        for b in range(P):
            acc = 0.0
            for a in range(P):
                acc += Q[i, b, a] * th[a]
            J[i, b] = J0[i, b] + acc
            r += J0[i, b] * th[b]
            h += acc * th[b]
        z[i] = r + 0.5 * h


@njit(cache=True, fastmath=_FM)
def _hvp(J, A, v, out, jv):
    """out = (J^T (J v) + A v) / n: the exact Hessian-vector product (A = sum_i z_i Q_i)."""
    n, P = J.shape
    for i in range(n):
        s = 0.0
        for a in range(P):
            s += J[i, a] * v[a]
        jv[i] = s
    for a in range(P):
        s = 0.0
        for b in range(P):
            s += A[a, b] * v[b]
        out[a] = s
    for i in range(n):
        c = jv[i]
        for a in range(P):
            out[a] += c * J[i, a]
    inv = 1.0 / n
    for a in range(P):
        out[a] *= inv


@njit(cache=True, fastmath=_FM)
def lanczos_top(J, A, v0, kmax, u_out):
    """Largest algebraic eigenvalue of H = (J^T J + A)/n and its unit eigenvector (into ``u_out``).

    Lanczos from ``v0`` with full reorthogonalisation (classical Gram-Schmidt, twice) for
    ``min(kmax, P)`` steps or until an invariant subspace is found; exact (to round-off) when
    ``kmax >= P``.
    """
    n, P = J.shape
    k = min(kmax, P)
    V = np.zeros((k, P))
    w = np.empty(P)
    jv = np.empty(n)
    alpha = np.zeros(k)
    beta = np.zeros(k)
    nrm = 0.0
    for a in range(P):
        nrm += v0[a] * v0[a]
    nrm = math.sqrt(nrm)
    for a in range(P):
        V[0, a] = v0[a] / nrm
    m = 0
    scale = 0.0
    for j in range(k):
        _hvp(J, A, V[j], w, jv)
        al = 0.0
        for a in range(P):
            al += w[a] * V[j, a]
        alpha[j] = al
        for _rep in range(2):
            for l in range(j + 1):
                c = 0.0
                for a in range(P):
                    c += w[a] * V[l, a]
                for a in range(P):
                    w[a] -= c * V[l, a]
        b = 0.0
        for a in range(P):
            b += w[a] * w[a]
        b = math.sqrt(b)
        m = j + 1
        scale = max(scale, abs(al) + b)
        if j + 1 == k or b <= 1e-12 * scale:
            break
        beta[j] = b
        for a in range(P):
            V[j + 1, a] = w[a] / b
    T = np.zeros((m, m))
    for j in range(m):
        T[j, j] = alpha[j]
    for j in range(m - 1):
        T[j, j + 1] = beta[j]
        T[j + 1, j] = beta[j]
    ev, evec = np.linalg.eigh(T)
    for a in range(P):
        u_out[a] = 0.0
    for j in range(m):
        c = evec[j, m - 1]
        for a in range(P):
            u_out[a] += c * V[j, a]
    nu = 0.0
    for a in range(P):
        nu += u_out[a] * u_out[a]
    nu = math.sqrt(nu)
    for a in range(P):
        u_out[a] /= nu
    return ev[m - 1]


@njit(cache=True, fastmath=_FM)
def _curvature_matrix(Q, z, A):
    """A = sum_i z_i Q_i."""
    n, P, _ = Q.shape
    for a in range(P):
        for b in range(P):
            A[a, b] = 0.0
    for i in range(n):
        c = z[i]
        for a in range(P):
            for b in range(P):
                A[a, b] += c * Q[i, a, b]


@njit(cache=True)
def hessian_top_lanczos(J0, Q, z0, th, v0, kmax):
    """``(S, u)``: Lanczos top eigenpair of the Hessian at ``th`` (one trajectory; used by tests)."""
    n, P = J0.shape
    J = np.empty((n, P))
    z = np.empty(n)
    A = np.empty((P, P))
    _jacobian_residual(J0, Q, z0, th, J, z)
    _curvature_matrix(Q, z, A)
    u = np.empty(P)
    S = lanczos_top(J, A, v0, kmax, u)
    return S, u


# --------------------------------------------------------------------------- PGD
@njit(parallel=True, cache=True, fastmath=_FM)
def _advance_pgd(theta, J0, Q, z0, alive, diverged_step, t0, t1, eta, bound, pgd_vec, start_vec, kmax, n_proj):
    M, P = theta.shape
    n = J0.shape[0]
    edge = 2.0 / eta
    inv_n = 1.0 / n
    for m in prange(M):
        if alive[m] == 0:
            continue
        th = theta[m]
        J = np.empty((n, P))
        z = np.empty(n)
        A = np.empty((P, P))
        g = np.empty(P)
        u = np.empty(P)
        v0 = np.empty(P)
        ds = np.empty(P)
        qu = np.empty(P)
        for t in range(t0, t1):
            _jacobian_residual(J0, Q, z0, th, J, z)
            for a in range(P):
                g[a] = 0.0
            for i in range(n):
                for a in range(P):
                    g[a] += z[i] * J[i, a]
            for a in range(P):
                th[a] -= eta * (g[a] * inv_n)
            for _it in range(n_proj):
                _jacobian_residual(J0, Q, z0, th, J, z)
                _curvature_matrix(Q, z, A)
                for a in range(P):
                    v0[a] = pgd_vec[m, a] + 0.1 * start_vec[m, a]
                S = lanczos_top(J, A, v0, kmax, u)
                for a in range(P):
                    pgd_vec[m, a] = u[a]
                if not (S > edge):
                    break
                # grad L, grad S = (2 sum_i (J_i.u) Q_i u + sum_i (u.Q_i u) J_i) / n
                for a in range(P):
                    g[a] = 0.0
                    ds[a] = 0.0
                for i in range(n):
                    ju = 0.0
                    for a in range(P):
                        ju += J[i, a] * u[a]
                    uqu = 0.0
                    for b in range(P):
                        acc = 0.0
                        for a in range(P):
                            acc += Q[i, b, a] * u[a]
                        qu[b] = acc
                        uqu += acc * u[b]
                    for a in range(P):
                        g[a] += z[i] * J[i, a]
                        ds[a] += 2.0 * ju * qu[a] + uqu * J[i, a]
                ug = 0.0
                uds = 0.0
                for a in range(P):
                    g[a] *= inv_n
                    ds[a] *= inv_n
                    ug += u[a] * g[a]
                    uds += u[a] * ds[a]
                nrm2 = 0.0
                for a in range(P):
                    ds[a] -= uds * u[a]
                    nrm2 += ds[a] * ds[a]
                excess = S - edge - uds * ug / S  # S after the combined linearised move is 2/eta
                step = excess / nrm2 if nrm2 > 0 else 0.0
                for a in range(P):
                    th[a] -= step * ds[a] + u[a] * (ug / S)
            ok = True
            for a in range(P):
                if not (abs(th[a]) <= bound):
                    ok = False
            if not ok:
                alive[m] = 0
                diverged_step[m] = t + 1
                for a in range(P):
                    th[a] = np.nan
                break


# --------------------------------------------------------------------------- observables
@njit(parallel=True, cache=True, fastmath=_FM)
def _observe_jz(theta, alive, J0, z0, W, J_out, z_out, out):
    """From W = Q(theta, .) (block of trajectories): J, z, loss, gradient norm, NTK trace."""
    Mb, n, P = W.shape
    inv_n = 1.0 / n
    for m in prange(Mb):
        if alive[m] == 0:
            continue
        th = theta[m]
        loss = 0.0
        tr = 0.0
        g = np.zeros(P)
        for i in range(n):
            r = z0[i]
            h = 0.0
            for a in range(P):
                J_out[m, i, a] = J0[i, a] + W[m, i, a]
                r += J0[i, a] * th[a]
                h += W[m, i, a] * th[a]
            r += 0.5 * h
            z_out[m, i] = r
            loss += r * r
            for a in range(P):
                g[a] += r * J_out[m, i, a]
                tr += J_out[m, i, a] * J_out[m, i, a]
        gn = 0.0
        for a in range(P):
            gn += g[a] * g[a]
        out[0, m] = 0.5 * loss * inv_n
        out[3, m] = tr * inv_n
        out[5, m] = math.sqrt(gn) * inv_n


@njit(parallel=True, cache=True, fastmath=_FM)
def _observe_curvature(alive, J, A, sharp_vec, start_vec, kmax, out, spectra):
    """Per trajectory: NTK spectrum (eigvalsh of the smaller Gram matrix) and Lanczos sharpness."""
    Mb, n, P = J.shape
    r = min(n, P)
    inv_n = 1.0 / n
    for m in prange(Mb):
        if alive[m] == 0:
            continue
        Jm = J[m]
        G = np.zeros((r, r))
        if P <= n:
            for i in range(n):
                for a in range(P):
                    c = Jm[i, a]
                    for b in range(P):
                        G[a, b] += c * Jm[i, b]
        else:
            for i in range(n):
                for j in range(i, n):
                    s = 0.0
                    for a in range(P):
                        s += Jm[i, a] * Jm[j, a]
                    G[i, j] = s
                    G[j, i] = s
        for a in range(r):
            for b in range(r):
                G[a, b] *= inv_n
        ev = np.linalg.eigvalsh(G)
        for a in range(r):
            spectra[m, a] = ev[a]
        out[2, m] = ev[r - 1]
        v0 = np.empty(P)
        for a in range(P):
            v0[a] = sharp_vec[m, a] + 0.1 * start_vec[m, a]
        u = np.empty(P)
        out[1, m] = lanczos_top(Jm, A[m], v0, kmax, u)
        for a in range(P):
            sharp_vec[m, a] = u[a]


# --------------------------------------------------------------------------- engine
class QRNumbaEngine(QREngineBase):
    """Compiled, parallel engine (batched over trajectories; results independent of thread count)."""

    name = "numba"

    @staticmethod
    def _threads(n_threads):
        previous = numba.get_num_threads()
        if n_threads is not None:
            numba.set_num_threads(min(n_threads, numba.config.NUMBA_NUM_THREADS))
        return previous

    def _advance_kernel(self, spec, run, t0, t1, n_threads):
        if t1 <= t0:
            return
        model = spec.model
        previous = self._threads(n_threads)
        try:
            M, n = spec.n_traj, model.n
            if spec.method == "pgd":
                _advance_pgd(run.theta, model.J0, model.Q, model.z0, run.alive, run.diverged_step, t0, t1,
                             model.eta, model.divergence_bound, run.pgd_vec, run.start_vec, model.lanczos_iters,
                             model.pgd_max_projections)
                return
            scheme, c_init, d_step = draw_layout(spec)
            B = model.n if scheme == 0 else model.batch_size
            idx_ws = np.empty((M, n), np.int64)
            mark_ws = np.zeros((M, n), np.uint8)
            g_ws = np.empty((M, model.P))
            args = (run.keys, run.gammas, run.alive, run.diverged_step, t0, t1, model.eta, model.momentum, B,
                    scheme, c_init, d_step, model.divergence_bound, idx_ws, mark_ws, g_ws)
            if model.is_linear:
                _advance_linear(run.theta, run.velocity, model.J0, model.z0, *args)
            else:
                per = n if scheme == 0 else (min(n, 2 * B + 16) if scheme == 3 else B)
                n_blocks = max(1, min(M, numba.get_num_threads()))
                _advance_quadratic(run.theta, run.velocity, model.J0, model.Q, model.z0, *args, n_blocks, per)
        finally:
            numba.set_num_threads(previous)

    def _observe_quadratic(self, spec, run, n_threads):
        model = spec.model
        M, n, P = spec.n_traj, model.n, model.P
        out = np.full((len(OBSERVABLES), M), np.nan)
        spectra = np.full((M, min(n, P)), np.nan)
        ntks = np.full((M, n, n), np.nan) if model.records_exact_kernel() else None
        Qr = model.Q.reshape(n * P, P)
        Qf = model.Q.reshape(n, P * P)
        previous = self._threads(n_threads)
        try:
            for lo in range(0, M, OBS_BLOCK):
                hi = min(M, lo + OBS_BLOCK)
                alive = run.alive[lo:hi]
                if not alive.any():
                    continue
                # BLAS products always of OBS_BLOCK trajectories (zero rows pad the last block): BLAS
                # takes another summation order for one column (GEMV) than for several (GEMM), and a
                # trajectory's observables must not depend on how many share its block (a shard of one)
                th = np.zeros((OBS_BLOCK, P))
                th[:hi - lo] = np.where(alive[:, None].astype(bool), run.theta[lo:hi], 0.0)
                W = np.ascontiguousarray((Qr @ th.T)[:, :hi - lo].reshape(n, P, hi - lo).transpose(2, 0, 1))
                th = th[:hi - lo]
                J = np.zeros_like(W)
                z = np.zeros((OBS_BLOCK, n))
                o = np.full((len(OBSERVABLES), hi - lo), np.nan)
                _observe_jz(th, alive, model.J0, model.z0, W, J, z[:hi - lo], o)
                A = np.ascontiguousarray((z @ Qf)[:hi - lo].reshape(hi - lo, P, P))
                sv = run.sharp_vec[lo:hi].copy()
                sp = np.full((hi - lo, min(n, P)), np.nan)
                _observe_curvature(alive, J, A, sv, run.start_vec[lo:hi], model.lanczos_iters, o, sp)
                run.sharp_vec[lo:hi] = sv
                out[:, lo:hi] = o
                spectra[lo:hi] = sp
                if ntks is not None:
                    ntks[lo:hi] = np.matmul(J, J.transpose(0, 2, 1)) / n
        finally:
            numba.set_num_threads(previous)
        return out, spectra, ntks
