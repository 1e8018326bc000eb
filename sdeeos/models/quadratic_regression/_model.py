r"""Quadratic ("second-order") regression: mini-batch SGD ensembles, sharpness and the noise kernel K.

Outputs on :math:`n` data points (docs/theory.md#quadratic-regression)

.. math:: z(\theta) = z_0 + J_0\theta + \tfrac12 Q(\theta,\theta)\in\mathbb R^n,\qquad
          Q(\theta,\theta)_i = \theta^\top Q_i\theta,\quad Q_i = Q_i^\top\in\mathbb R^{P\times P},

with the **mean** squared loss :math:`L(\theta)=\frac1{2n}\lVert z(\theta)\rVert^2` (per-example loss
:math:`\ell_i=\frac12z_i^2`, the Cohen et al. convention, docs/theory.md#loss-conventions: a loss without the
:math:`\frac12`, or summed instead of averaged, has a 2x or n-x larger sharpness).  Then

* Jacobian :math:`J(\theta)=J_0+Q(\theta,\cdot)` (row :math:`i`: :math:`J_{0,i}+Q_i\theta`);
* gradient :math:`\nabla L=\frac1nJ^\top z`; Hessian :math:`H=\frac1n\big(J^\top J+\sum_iz_iQ_i\big)`;
  **sharpness** :math:`S=\lambda_{\max}(H)` (largest *algebraic* eigenvalue);
* NTK :math:`\Theta=\frac1nJJ^\top` (n x n): GD moves residuals by
  :math:`z_{t+1}=(I-\eta\Theta)z_t+O(\eta^2)`; its non-zero eigenvalues are those of the
  Gauss-Newton matrix :math:`\frac1nJ^\top J`, the same normalisation `sdeeos.theory.mean_square`
  expects for the noise kernel :math:`\mathcal K`.

**Random ensemble** (``data_seed``; every entry an independent standard normal :math:`g` of the
package's counter-based RNG, data point :math:`i` being stream ``(data_seed, 2**63 + i)``)::

    z0_i      = z0_scale * g                           (draw 0 of stream i)
    J0_{i,a}  = g                                      (draws 1 .. P)
    Q_{i,ab}  = q_scale * g   (a < b),  Q_{i,aa} = sqrt(2) q_scale * g   (upper triangle, row-major)

so :math:`Q_i` is a GOE matrix.  **Scaling:** :math:`\Theta_0=J_0J_0^\top/n` is a Wishart matrix; its
non-zero eigenvalues fill the Marchenko-Pastur bulk with ratio :math:`\gamma=P/n`, edges
:math:`(1\pm\sqrt\gamma)^2` (:math:`\gamma\le1`) or :math:`(\sqrt\gamma\pm1)^2` (:math:`\gamma>1`): O(1) as
:math:`n,P\to\infty` at fixed :math:`\gamma`, with :math:`\operatorname{tr}\Theta_0\approx P`.  For
:math:`\lVert\theta\rVert=O(1)` the quadratic part :math:`Q(\theta,\cdot)` has entries of size
:math:`q\lVert\theta\rVert`, like those of :math:`J_0`, so the NTK stays O(1) during training, and
:math:`z=O(1)`.  ``q_scale = 0`` is the **linear model** :math:`z=z_0+J_0\theta` (no Q is stored).

Trajectories share the data and differ by initialisation and batch sequence: trajectory ``m`` of a run
with ``seed`` uses stream ``(seed, m)``: draws ``0 .. P-1`` give
:math:`\theta_0=\frac{\text{theta0\_scale}}{\sqrt P}g`, and step ``t`` uses draws
``P + t*D .. P + t*D + D - 1`` (``D = B`` without/with replacement, ``n`` for Bernoulli, 0 for GD).

Methods
-------
``"sgd"``: :math:`\theta_{t+1}=\theta_t-\eta\,b_t`, :math:`b_t=\frac1B\sum_{i\in\mathcal B_t}z_iJ_i`
(heavy-ball momentum :math:`\mu`: :math:`v_{t+1}=\mu v_t+b_t`, :math:`\theta_{t+1}=\theta_t-\eta v_{t+1}`),
batches ``"without_replacement"`` (exactly B distinct points, Floyd's algorithm), ``"with_replacement"``
(B independent uniform draws) or ``"bernoulli"`` (each point with probability B/n, still divided by B).
``"gd"``: full batch.  ``"pgd"``: projected GD on :math:`\{S\le2/\eta\}` (Damian et al.; docs/theory.md#projected-gd):
a GD step, then while :math:`S>2/\eta` (at most ``pgd_max_projections`` times) the linearised
projection :math:`\theta\leftarrow\theta-c\,\nabla S^\perp/\lVert\nabla S^\perp\rVert^2-u\,(u\cdot\nabla L)/S`
with the exact :math:`\nabla S=\nabla^3L[u,u]`.  Damian's code takes :math:`c=S-2/\eta` and 3 steps;
here :math:`c=S-2/\eta-(u\cdot\nabla S)(u\cdot\nabla L)/S`, so that the *combined* move (including the
Newton step along :math:`u`) has linearised sharpness exactly :math:`2/\eta`, and the steps are repeated
until :math:`S\le2/\eta` (a handful to ~20 per step when the GD step overshoots by 10-20 %).
Quadratic model only, no momentum.
"""

from __future__ import annotations

import functools
import hashlib
import math
from typing import ClassVar

import numpy as np
from numba import njit, prange

from ..._contract import Model
from ..._errors import BackendUnavailableError, OutsideDomainError, ParameterError
from ..._resources import check_allocation, max_threads
from ..._rng import normals, stream_keys, uniform_nb, ndtri_nb
from ..._validation import check_choice, check_int, check_nonnegative, check_positive, check_real
from ...theory import mean_square as ms
from ._numba_engine import QRNumbaEngine
from ._numpy_engine import QRNumpyEngine
from ._xp_engine import QRCupyEngine
from ._state import LANCZOS_DRAW_OFFSET, OBSERVABLE_DOCS, OBSERVABLES, QRRunState, collect_qr

#: SHA-256 of ``sdeeos/_rng.py``, whose functions the cached (``cache=True``) kernels below inline.
#: Numba's on-disk cache is keyed by this file alone and does not see a change in ``_rng.py``; a test
#: fails until this line is updated, and updating it changes this file, so stale machine code is
#: never loaded.
RNG_SOURCE_SHA256 = "a4265c306c8fae4b4ef2a44a6f0e99ae30ee57c2bde008f8882d9e0cca89cbc3"

__all__ = ["QuadraticRegression", "SAMPLING_SCHEMES", "OBSERVABLES", "OBSERVABLE_DOCS", "DATA_STREAM_OFFSET",
           "LANCZOS_DRAW_OFFSET", "QR_ENGINES", "get_qr_engine"]

SAMPLING_SCHEMES = ("without_replacement", "with_replacement", "bernoulli")

#: Data point i of a random ensemble uses RNG stream (data_seed, DATA_STREAM_OFFSET + i), which no
#: trajectory stream (seed, m < 2**63) can coincide with.
DATA_STREAM_OFFSET = 2**63
#: Largest number of stored Q entries (n * P * P) accepted (32 GiB of float64).
MAX_Q_ENTRIES = 2**32
#: Trajectories per block of the observation step (the larger of the two engines' blocks).
_OBSERVE_BLOCK = 32
#: Trajectories per block of the NumPy engine's SGD step.
_NUMPY_STEP_BLOCK = 16
#: Largest n for which exact mean-square predictions (bisection on the exact operator) are computed.
EXACT_PREDICTION_MAX_N = 128
#: Largest NTK rank for which the exact operator's spectral radius is predicted (dense, O(rank^6)).
EXACT_RADIUS_MAX_RANK = 40
#: Default largest n for which the exact noise kernel is recorded (O(n^4) per trajectory and record).
EXACT_KERNEL_MAX_N = 64


@njit(parallel=True, cache=True)
def _generate_data_nb(keys, gammas, q_scale, z0_scale, J0, Q, z0, with_q):
    n, P = J0.shape
    sqrt2 = math.sqrt(2.0)
    for i in prange(n):
        k = keys[i]
        g = gammas[i]
        z0[i] = z0_scale * ndtri_nb(uniform_nb(k, g, 0))
        for a in range(P):
            J0[i, a] = ndtri_nb(uniform_nb(k, g, 1 + a))
        if with_q:
            c = 1 + P
            for a in range(P):
                for b in range(a, P):
                    x = ndtri_nb(uniform_nb(k, g, c))
                    c += 1
                    v = q_scale * (sqrt2 * x if a == b else x)
                    Q[i, a, b] = v
                    Q[i, b, a] = v


def random_ensemble(n: int, P: int, q_scale: float, z0_scale: float, data_seed: int):
    """``(J0, Q, z0)`` of the documented random ensemble (``Q`` is None when ``q_scale == 0``)."""
    keys, gammas = stream_keys(data_seed, n, first=DATA_STREAM_OFFSET)
    J0 = np.empty((n, P))
    z0 = np.empty(n)
    with_q = q_scale != 0
    Q = np.empty((n, P, P)) if with_q else np.empty((0, 0, 0))
    _generate_data_nb(keys, gammas, float(q_scale), float(z0_scale), J0, Q, z0, with_q)
    return J0, (Q if with_q else None), z0


def data_bytes(n: int, P: int, with_q: bool) -> int:
    """Bytes of the float64 data ``J0`` (n, P), ``z0`` (n,), if ``with_q`` ``Q`` (n, P, P), and the data
    points' RNG keys (two uint64 per point)."""
    return 8 * (n * P + 3 * n + (n * P * P if with_q else 0))


def _check_data_memory(n: int, P: int, with_q: bool, copies: int = 1) -> None:
    arrays = "J0 (n x P)" + (", Q (n x P x P)" if with_q else "")
    check_allocation(f"quadratic-regression data {arrays} with n={n}, P={P}", copies * data_bytes(n, P, with_q),
                     hint="a smaller n or P")


def _array_digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        if a is None:
            h.update(b"none")
        else:
            h.update(str(a.shape).encode())
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


class QuadraticRegression(Model):
    r"""Quadratic regression z = z0 + J0 theta + Q(theta, theta)/2 trained by GD/SGD/PGD (docs/theory.md#quadratic-regression).

    Parameters
    ----------
    n, P : int >= 1
        Number of data points and of parameters.
    eta : float > 0
        Step size.
    batch_size : int in [1, n], optional
        Batch size B of ``"sgd"`` (default n).  ``"gd"`` and ``"pgd"`` use the full batch; the
        recorded noise kernel K is always evaluated at this B and ``sampling``.
    sampling : {"without_replacement", "with_replacement", "bernoulli"}
    q_scale : float >= 0
        Scale of the GOE tensors Q_i (0: the linear model).
    z0_scale : float >= 0
        Standard deviation of the residuals z0 at theta = 0.
    theta0_scale : float >= 0
        Initial parameters theta_0 ~ N(0, theta0_scale**2 / P) per coordinate, drawn per trajectory.
    momentum : float in [0, 1)
        Heavy-ball momentum of ``"sgd"``/``"gd"`` (K and the exact mean-square predictions assume 0).
    data_seed : int in [0, 2**64 - 1]
        Seed of the random data (J0, Q, z0), shared by all trajectories.
    lanczos_iters : int >= 1
        Krylov dimension (capped at P) of the Lanczos sharpness estimate of the Numba engine.

    Notes
    -----
    Use :meth:`from_arrays` to supply your own ``J0``, ``Q``, ``z0``.

    >>> m = QuadraticRegression(n=8, P=4, eta=0.1, batch_size=2, q_scale=0.5)
    >>> m.J0.shape, m.Q.shape, m.z0.shape
    ((8, 4), (8, 4, 4), (8,))
    >>> QuadraticRegression(n=8, P=4, eta=0.1, batch_size=9)
    Traceback (most recent call last):
    ...
    sdeeos._errors.ParameterError: batch_size must be an integer in [1, 8], got 9
    """

    name: ClassVar[str] = "quadratic-regression"
    methods: ClassVar[tuple[str, ...]] = ("sgd", "gd", "pgd")
    #: ``abs(theta_a)`` above which a trajectory counts as diverged (checked after every step).
    divergence_bound: ClassVar[float] = 1e6
    #: Most linearised projection steps of PGD per step (it stops as soon as S <= 2/eta).
    pgd_max_projections: ClassVar[int] = 50
    #: The exact noise kernel K_exact is recorded only for n up to this (cost O(n^4) per trajectory).
    exact_kernel_max_n: ClassVar[int] = EXACT_KERNEL_MAX_N
    #: the command line's names and choices (``--n-params``; ``--P`` still works, unlisted)
    cli_names: ClassVar[dict[str, str]] = {"P": "n-params"}
    cli_choices: ClassVar[dict[str, tuple[str, ...]]] = {"sampling": SAMPLING_SCHEMES}
    cli_help: ClassVar[dict[str, str]] = {
        "n": "number of data points",
        "P": "number of parameters",
        "eta": "step size",
        "batch_size": "SGD batch size B in [1, n]; omitted: B = n",
        "sampling": "how a batch is drawn",
        "q_scale": "scale of the GOE tensors Q_i (0: linear model)",
        "z0_scale": "standard deviation of z0",
        "theta0_scale": "norm scale of the random initial parameters",
        "momentum": "heavy-ball momentum in [0, 1)",
        "data_seed": "seed of the random data J0, Q, z0",
        "lanczos_iters": "Lanczos iterations for the sharpness",
    }

    def __init__(self, n: int, P: int, eta: float, batch_size: int = None, sampling: str = "without_replacement",
                 q_scale: float = 1.0, z0_scale: float = 1.0, theta0_scale: float = 0.1, momentum: float = 0.0,
                 data_seed: int = 0, lanczos_iters: int = 40):
        n = check_int("n", n, low=1)
        P = check_int("P", P, low=1)
        q_scale = check_nonnegative("q_scale", q_scale)
        z0_scale = check_nonnegative("z0_scale", z0_scale)
        data_seed = check_int("data_seed", data_seed, low=0, high=2**64 - 1)
        if q_scale > 0:
            self._check_q_size(n, P)
        _check_data_memory(n, P, q_scale > 0)
        J0, Q, z0 = random_ensemble(n, P, q_scale, z0_scale, data_seed)
        self._setup(J0, Q, z0, eta=eta, batch_size=batch_size, sampling=sampling, theta0_scale=theta0_scale,
                    momentum=momentum, lanczos_iters=lanczos_iters)
        self.q_scale = q_scale
        self.z0_scale = z0_scale
        self.data_seed = data_seed
        self.data_source = f"random ensemble, data_seed={data_seed}"

    @classmethod
    def from_arrays(cls, J0, Q=None, z0=None, *, eta: float, batch_size: int | None = None,
                    sampling: str = "without_replacement", theta0_scale: float = 0.1, momentum: float = 0.0,
                    lanczos_iters: int = 40) -> "QuadraticRegression":
        """A model on user data: ``J0`` (n, P), ``Q`` (n, P, P) or None (linear), ``z0`` (n,) or None (zeros).

        Only the symmetric part of each ``Q[i]`` enters ``z``; it is used throughout (the Jacobian is
        ``J0 + Q_sym(theta, .)``).  Arrays are copied to float64.
        """
        J0 = cls._check_array("J0", J0, ndim=2)
        n, P = J0.shape
        if n < 1 or P < 1:
            raise ParameterError(f"J0 must have shape (n, P) with n, P >= 1, got {J0.shape}")
        if Q is not None:
            if np.shape(Q) != (n, P, P):
                raise ParameterError(f"Q must have shape (n, P, P) = {(n, P, P)} to match J0, got {np.shape(Q)}")
            cls._check_q_size(n, P)
            # the float64 copy, Q + Q^T and its half exist together
            _check_data_memory(n, P, True, copies=3)
            Q = cls._check_array("Q", Q, ndim=3)
            Q = np.ascontiguousarray(0.5 * (Q + Q.transpose(0, 2, 1)))
        if z0 is None:
            z0 = np.zeros(n)
        else:
            z0 = cls._check_array("z0", z0, ndim=1)
            if z0.shape != (n,):
                raise ParameterError(f"z0 must have shape (n,) = ({n},) to match J0, got {z0.shape}")
        self = cls.__new__(cls)
        self._setup(J0, Q, z0, eta=eta, batch_size=batch_size, sampling=sampling, theta0_scale=theta0_scale,
                    momentum=momentum, lanczos_iters=lanczos_iters)
        self.q_scale = float("nan")
        self.z0_scale = float("nan")
        self.data_seed = None
        self.data_source = f"user arrays, sha256={_array_digest(J0, Q, z0)}"
        return self

    # ------------------------------------------------------------------ construction helpers
    @staticmethod
    def _check_q_size(n, P):
        if n * P * P > MAX_Q_ENTRIES:
            raise ParameterError(f"n * P**2 must be <= {MAX_Q_ENTRIES} (Q is stored densely), got n={n}, P={P}")

    @staticmethod
    def _check_array(name, value, ndim):
        try:
            arr = np.array(value, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ParameterError(f"{name} must be a real array, got {type(value).__name__}") from exc
        if arr.ndim != ndim:
            raise ParameterError(f"{name} must be a {ndim}-D array, got shape {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ParameterError(f"{name} must be finite (it contains NaN or inf)")
        return np.ascontiguousarray(arr)

    def _setup(self, J0, Q, z0, *, eta, batch_size, sampling, theta0_scale, momentum, lanczos_iters):
        n, P = J0.shape
        self.n, self.P = n, P
        self.eta = check_positive("eta", eta)
        self.batch_size = n if batch_size is None else check_int("batch_size", batch_size, low=1, high=n)
        self.sampling = check_choice("sampling", sampling, SAMPLING_SCHEMES)
        self.theta0_scale = check_nonnegative("theta0_scale", theta0_scale)
        self.momentum = check_real("momentum", momentum, low=0.0, high=1.0, high_open=True)
        self.lanczos_iters = check_int("lanczos_iters", lanczos_iters, low=1)
        self.J0 = J0
        self.Q = Q
        self.z0 = z0
        self.J0.setflags(write=False)
        self.z0.setflags(write=False)
        if Q is not None:
            self.Q.setflags(write=False)

    @property
    def is_linear(self) -> bool:
        """True for the linear model (no Q)."""
        return self.Q is None

    # ------------------------------------------------------------------ Model interface
    def default_method(self) -> str:
        noisy = self.batch_size < self.n or self.sampling == "with_replacement"
        return "sgd" if noisy else "gd"

    def parameters(self) -> dict[str, float]:
        return {"n": self.n, "P": self.P, "eta": self.eta, "batch_size": self.batch_size, "q_scale": self.q_scale,
                "z0_scale": self.z0_scale, "momentum": self.momentum, "lanczos_iters": self.lanczos_iters}

    def initial_state(self) -> dict[str, object]:
        return {"theta0_scale": self.theta0_scale, "sampling": self.sampling, "data": self.data_source}

    def validate_run(self, method: str) -> None:
        if method == "pgd":
            if self.is_linear:
                raise ParameterError("method 'pgd' needs a quadratic model (q_scale > 0 or a Q array): "
                                     "the sharpness of the linear model is constant")
            if self.momentum != 0:
                raise ParameterError("momentum must be 0 for method 'pgd'")

    def new_run(self, spec):
        return QRRunState.initial(spec)

    def work_bytes(self, spec) -> int:
        r"""Peak bytes of the engines' transient arrays (the larger of the Numba and NumPy engines).

        With :math:`M` trajectories, blocks of :math:`b=\min(M, 32)` and :math:`r=\min(n,P)`, float64:

        * observation of the linear model: residuals and their squares (M, n), gradients (M, P), the
          Gram matrix of :math:`J_0` and its eigen-workspace (r, r) twice;
        * observation (every record and the end): the BLAS products :math:`Q\theta` (32, n, P) and
          :math:`zQ` (32, P, P) of a full (padded) block, :math:`W, J` (b, n, P), curvature or Hessian,
          its eigenvectors and a temporary (b, P, P), the Gram matrix (b, r, r), the block's NTKs (b, n, n),
          and the NTKs of all trajectories (M, n, n) when K_exact is recorded;
        * SGD/GD step: batch indices and marks (M, n), gradients (M, P), per-pair contributions of the
          quadratic model (M x rows per step, P), the NumPy engine's (16, n, P) J and W;
        * PGD: per thread (Numba) a Jacobian (n, P), ``Q u`` (n, P) and a curvature matrix (P, P).
        """
        M, n, P = spec.n_traj, self.n, self.P
        b = min(M, _OBSERVE_BLOCK)
        if self.is_linear:
            observe = 8 * (2 * M * n + M * P + 2 * min(n, P) ** 2)
        else:
            # + the BLAS products, always of a full block (padded; see the Numba engine)
            observe = 8 * b * (2 * n * P + 3 * P * P + min(n, P) ** 2 + n * n) \
                + 8 * _OBSERVE_BLOCK * (n * P + P * P)
        if self.records_exact_kernel():
            observe += 8 * M * n * n
        if spec.method == "pgd":
            step = 8 * max_threads() * (2 * n * P + P * P)
        else:
            step = 9 * M * n + 8 * M * P
            if not self.is_linear:
                rows = n if spec.method == "gd" else min(n, 2 * self.batch_size + 16)
                step += 8 * M * rows * P + 8 * 2 * min(M, _NUMPY_STEP_BLOCK) * n * P
        return observe + step

    def engine(self, backend: str):
        return get_qr_engine(backend)

    def collect(self, spec, run):
        return collect_qr(spec, run)

    def initial_theta(self, keys, gammas) -> np.ndarray:
        """theta_0 of the trajectories with RNG streams ``(keys, gammas)``: shape (n_traj, P)."""
        theta = np.empty((keys.size, self.P))
        for a in range(self.P):
            theta[:, a] = normals(keys, gammas, a)
        return theta * (self.theta0_scale / math.sqrt(self.P))

    # ------------------------------------------------------------------ theory
    @functools.cached_property
    def initial_ntk_eigenvalues(self) -> np.ndarray:
        """Non-zero-block eigenvalues (ascending, min(n, P) of them) of Theta_0 = J0 J0^T / n."""
        J0 = self.J0
        gram = J0.T @ J0 if self.P <= self.n else J0 @ J0.T
        return np.clip(np.linalg.eigvalsh(gram / self.n), 0.0, None)

    def noise_kernel_norm(self, ntk_eigenvalues) -> float:
        """K (closure, `sdeeos.theory.mean_square.noise_kernel_norm`) at this eta, B and sampling; NaN off-domain."""
        if self.batch_size == self.n and self.sampling != "with_replacement":
            return 0.0  # no batch noise (also avoids n - 1 = 0 for n = 1)
        return ms.noise_kernel_norm(self.eta, ntk_eigenvalues, self.batch_size, self.n, self.sampling, outside="nan")

    def noise_kernel_norm_exact(self, ntk) -> float:
        """K_exact of the n x n NTK ``ntk`` (`sdeeos.theory.mean_square.noise_kernel_norm_exact`); NaN off-domain."""
        if self.batch_size == self.n and self.sampling != "with_replacement":
            return 0.0
        return ms.noise_kernel_norm_exact(self.eta, ntk, self.batch_size, self.sampling, outside="nan")

    def records_exact_kernel(self) -> bool:
        """Whether K_exact is recorded (n <= exact_kernel_max_n)."""
        return self.n <= self.exact_kernel_max_n

    def run_notes(self, method: str) -> dict[str, object]:
        notes = {
            "sampling": self.sampling,
            "data_source": self.data_source,
            "linear_model": int(self.is_linear),
            "loss_convention": "L = ||z||^2/(2n) (mean over data points, per-example loss z_i^2/2); "
                               "sharpness = lambda_max of the Hessian of L; NTK = J J^T/n",
            "ensemble": "J0 ~ N(0,1); Q_i GOE, off-diagonal N(0, q_scale^2), diagonal N(0, 2 q_scale^2); "
                        "z0 ~ N(0, z0_scale^2); theta0 ~ N(0, theta0_scale^2/P); data point i = RNG stream "
                        "(data_seed, 2**63 + i)",
            "observables": "; ".join(f"{k}: {v}" for k, v in OBSERVABLE_DOCS.items()),
        }
        if self.momentum:
            notes["momentum_note"] = "K and the mean-square predictions assume no momentum"
        return notes

    def predictions(self, method: str) -> dict[str, float]:
        """Linear model: K, the exact mean-square criterion and critical step sizes (constant in time).

        ``noise_kernel_norm_exact_predicted`` and ``eta_critical_exact`` for n <= 128 (O(n^4) each),
        ``ms_spectral_radius_exact`` (spectral radius of the exact second-moment recursion: the mean
        loss grows or decays like its powers) for rank min(n, P) <= 40.
        """
        if not self.is_linear:
            return {}
        lam = self.initial_ntk_eigenvalues
        out = {
            "sharpness_predicted": float(lam.max()),
            "ntk_trace_predicted": float(lam.sum()),
            "noise_kernel_norm_predicted": float(self.noise_kernel_norm(lam)),
        }
        noisy = self.batch_size < self.n or self.sampling == "with_replacement"
        if noisy and self.n <= EXACT_PREDICTION_MAX_N and self.momentum == 0:
            theta = self.J0 @ self.J0.T / self.n
            out["noise_kernel_norm_exact_predicted"] = float(
                ms.noise_kernel_norm_exact(self.eta, theta, self.batch_size, self.sampling, outside="nan"))
            try:
                out["eta_critical_exact"] = float(ms.critical_learning_rate(theta, self.batch_size, self.sampling))
            except OutsideDomainError:
                out["eta_critical_exact"] = float("nan")
            if min(self.n, self.P) <= EXACT_RADIUS_MAX_RANK:
                out["ms_spectral_radius_exact"] = float(
                    ms.second_moment_spectral_radius(self.eta, theta, self.batch_size, self.sampling))
        return out

    def summarize(self, method: str, summary: dict[str, float]) -> dict[str, float]:
        out = {}
        if "sharpness_final_mean" in summary:
            out["eta_sharpness_final_mean"] = self.eta * summary["sharpness_final_mean"]
        if "sharpness_mean" in summary:
            out["eta_sharpness_mean"] = self.eta * summary["sharpness_mean"]
        return out


#: backend -> quadratic-regression engine class
QR_ENGINES = {"numba": QRNumbaEngine, "numpy": QRNumpyEngine, "cupy": QRCupyEngine}


def get_qr_engine(backend: str):
    """The quadratic-regression engine for ``backend`` ("numba", "numpy" or "cupy": NVIDIA GPU, else
    ``BackendUnavailableError`` as for the symbolic models)."""
    if backend not in QR_ENGINES:
        raise ParameterError(f"backend must be one of {sorted(QR_ENGINES)} for quadratic-regression, got {backend!r}")
    cls = QR_ENGINES[backend]
    ok, reason = cls.available()
    if not ok:
        raise BackendUnavailableError(f"backend {backend!r} is not available: {reason}")
    return cls()
