r"""A cubic Taylor loss in :math:`d` dimensions with prescribed :math:`\alpha`, :math:`\beta` and eigengap.

.. math:: L(\theta)=L_0+g^\top\theta+\tfrac12\theta^\top H\theta+\tfrac16T[\theta,\theta,\theta].

Damian's constants (docs/theory.md#self-stabilization-constants) at the reference point :math:`\theta^\dagger=0`: :math:`S=\lambda_{\max}(H)`
with eigenvector :math:`u`, :math:`\nabla S=T[u,u]`, :math:`\nabla S^\perp=\nabla S-u(u\cdot\nabla S)`,
:math:`\alpha=-g\cdot\nabla S^\perp`, :math:`\beta=\lVert\nabla S^\perp\rVert^2` (`damian_constants`).

**Construction** (`construct`).  In an orthonormal basis :math:`(u, n, e_3,\dots,e_d)` (optionally
rotated by a random orthogonal :math:`Q`):

* :math:`H=\frac2\eta uu^\top+\sum_{k\ge3}\lambda_ke_ke_k^\top`, with :math:`\lambda_3=\frac2\eta-\text{gap}`
  and the others spread linearly down to :math:`\lambda_3/(d-2)`.  The :math:`n` direction is *flat*.
  So :math:`S(0)=2/\eta` (the reference point is on the edge of stability) and the eigengap is
  ``gap`` (:math:`2/\eta` for :math:`d=2`, where only :math:`u, n` exist).
* :math:`g=-\frac{\alpha}{\sqrt\beta}\,n`, so :math:`u\cdot\nabla L(0)=0` (stable set) and
  :math:`\alpha=-g\cdot\nabla S^\perp`.
* :math:`T=\sqrt\beta\,\mathrm{sym}(u\otimes u\otimes n)` (i.e. :math:`T_{uun}=T_{unu}=T_{nuu}=\sqrt\beta`),
  so :math:`\nabla S=T[u,u]=\sqrt\beta\,n`, :math:`\beta=\lVert\nabla S^\perp\rVert^2`; plus optional
  random symmetric couplings of size ``coupling`` :math:`\cdot\sqrt\beta` on index triples that
  contain :math:`u` at most once and never :math:`n`: they leave :math:`\alpha,\beta,\nabla S` at 0
  and the :math:`n` component of the gradient unchanged, but couple the oscillation to the other
  directions (rotating :math:`u` and changing their curvature along the trajectory).

Why the :math:`n` direction is flat: then :math:`\partial_nL=-\alpha/\sqrt\beta+\tfrac{\sqrt\beta}2x^2`
exactly (:math:`x=u\cdot\theta`), so with :math:`y=\sqrt\beta\,n\cdot\theta` (sharpness units) GD gives
:math:`y'=y+\eta(\alpha-\tfrac\beta2x^2)` *exactly*, :math:`\alpha,\beta` are the same all along the
sharpening path :math:`\theta=\theta_nn`, PGD climbs it at rate :math:`\eta\alpha` and stops at 0, and
:math:`\mathbb E x^2=2\alpha/\beta` is an exact stationary identity of the full dynamics (not only of the
reduced model).  With no couplings, no noise off :math:`u`, and :math:`d=2` the full dynamics *are* the
reduced model; couplings, noise in other directions and the exact (instead of first-order)
sharpness are what the full model adds.

Noise for SGD: :math:`\xi=\Sigma^{1/2}z` with :math:`\Sigma=\sigma_u^2uu^\top+\sigma_\perp^2(I-uu^\top)`, so
:math:`u^\top\Sigma u=\sigma_u^2` as prescribed.

>>> loss = construct(eta=0.01, alpha=1.0, beta=100.0, d=4, gap=50.0, coupling=0.3, loss_seed=3)
>>> {k: round(float(v), 10) + 0.0 for k, v in damian_constants(loss.g, loss.H, loss.T).items()
...  if k in ("sharpness", "alpha", "beta", "eigengap", "u_dot_grad")}
{'sharpness': 200.0, 'eigengap': 50.0, 'alpha': 1.0, 'beta': 100.0, 'u_dot_grad': 0.0}
"""

from __future__ import annotations

import dataclasses
import functools
import itertools

import numpy as np
import sympy as sp

from .._errors import ParameterError
from .._rng import normals, stream_keys
from .._validation import check_int, check_nonnegative, check_positive, check_real

__all__ = [
    "CubicTaylorLoss",
    "construct",
    "damian_constants",
    "check_symmetric_matrix",
    "check_symmetric_tensor",
    "symbolic_loss",
    "unique_index_triples",
    "unique_index_pairs",
    "coefficient_values",
    "canonical_sign",
    "check_dimension",
]


@dataclasses.dataclass(frozen=True)
class CubicTaylorLoss:
    """Arrays of a cubic Taylor loss and of its SGD noise (``noise_sqrt`` is :math:`\\Sigma^{1/2}`)."""

    L0: float
    g: np.ndarray           # (d,)
    H: np.ndarray           # (d, d) symmetric
    T: np.ndarray           # (d, d, d) fully symmetric
    noise_sqrt: np.ndarray  # (d, d) symmetric square root of the noise covariance
    u: np.ndarray           # (d,) top eigenvector of H (the reference direction of x)
    n: np.ndarray           # (d,) unit vector along grad S_perp at 0

    @property
    def d(self) -> int:
        return self.g.shape[0]

    def value(self, theta: np.ndarray) -> np.ndarray:
        """:math:`L(\\theta)` for ``theta`` of shape ``(d, ...)``."""
        return (self.L0 + np.einsum("i,i...->...", self.g, theta)
                + 0.5 * np.einsum("ij,i...,j...->...", self.H, theta, theta)
                + np.einsum("ijk,i...,j...,k...->...", self.T, theta, theta, theta) / 6)

    def gradient(self, theta: np.ndarray) -> np.ndarray:
        """:math:`\\nabla L(\\theta)`, shape ``(d, ...)``."""
        return (self.g.reshape((-1,) + (1,) * (theta.ndim - 1)) + np.einsum("ij,j...->i...", self.H, theta)
                + 0.5 * np.einsum("ijk,j...,k...->i...", self.T, theta, theta))

    def hessian(self, theta: np.ndarray) -> np.ndarray:
        """:math:`\\nabla^2L(\\theta)=H+T[\\theta]`, shape ``(..., d, d)`` for ``theta`` of shape ``(d, ...)``."""
        return self.H + np.einsum("ijk,k...->...ij", self.T, theta)


def check_symmetric_matrix(name: str, a, d: int) -> np.ndarray:
    """A finite ``(d, d)`` array equal to its transpose up to float64 round-off, else ``ParameterError``."""
    a = np.asarray(a, dtype=float)
    if a.shape != (d, d):
        raise ParameterError(f"{name} must be a ({d}, {d}) array, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ParameterError(f"{name} must be finite")
    asym = np.max(np.abs(a - a.T))
    if asym > 8 * np.finfo(float).eps * max(np.max(np.abs(a)), np.finfo(float).tiny):
        raise ParameterError(f"{name} must be symmetric (max |{name} - {name}^T| = {asym:.3g} > round-off)")
    return 0.5 * (a + a.T)


def check_symmetric_tensor(name: str, t, d: int) -> np.ndarray:
    """A finite ``(d, d, d)`` array invariant under all index permutations (to round-off)."""
    t = np.asarray(t, dtype=float)
    if t.shape != (d, d, d):
        raise ParameterError(f"{name} must be a ({d}, {d}, {d}) array, got shape {t.shape}")
    if not np.all(np.isfinite(t)):
        raise ParameterError(f"{name} must be finite")
    perms = [np.transpose(t, p) for p in itertools.permutations(range(3))]
    asym = max(np.max(np.abs(p - t)) for p in perms)
    if asym > 8 * np.finfo(float).eps * max(np.max(np.abs(t)), np.finfo(float).tiny):
        raise ParameterError(f"{name} must be symmetric under every index permutation "
                             f"(max deviation {asym:.3g} > round-off)")
    return sum(perms) / 6


def canonical_sign(v: np.ndarray) -> np.ndarray:
    """``v`` with the sign that makes its largest-magnitude component positive (fixes the sign of ``u``)."""
    v = np.asarray(v, dtype=float)
    return v if v[np.argmax(np.abs(v))] >= 0 else -v


def check_dimension(d) -> int:
    """``d`` as an int >= 2, else a `ParameterError` saying why 1 is not enough."""
    try:
        return check_int("d", d, low=2)
    except ParameterError as exc:
        raise ParameterError(f"{exc} (beta > 0 needs a direction orthogonal to the top eigenvector u, "
                             "so d = 1 has none)") from None


def damian_constants(g, H, T) -> dict:
    r"""Sharpness, :math:`u`, :math:`\nabla S`, :math:`\nabla S^\perp`, :math:`\alpha`, :math:`\beta`, eigengap at :math:`\theta=0`.

    :math:`u` has the sign of `canonical_sign` (all these quantities are even in :math:`u`).
    """
    g, H, T = (np.asarray(a, dtype=float) for a in (g, H, T))
    lam, vec = np.linalg.eigh(H)
    u = canonical_sign(vec[:, -1])
    grad_s = np.einsum("ijk,i,j->k", T, u, u)
    grad_s_perp = grad_s - u * (u @ grad_s)
    return {
        "sharpness": lam[-1],
        "eigengap": lam[-1] - lam[-2],
        "u": u,
        "grad_sharpness": grad_s,
        "grad_sharpness_perp": grad_s_perp,
        "alpha": -(g @ grad_s_perp),
        "beta": grad_s_perp @ grad_s_perp,
        "u_dot_grad": u @ g,
    }


def _random_orthogonal(d: int, seed: int) -> np.ndarray:
    """Haar-random orthogonal matrix from the package's RNG scheme (QR of a Gaussian matrix, sign-fixed)."""
    keys, gammas = stream_keys(seed, d * d)
    a = normals(keys, gammas, 0).reshape(d, d)
    q, r = np.linalg.qr(a)
    return q * np.sign(np.diag(r))


def construct(eta, alpha, beta, d: int = 2, gap=None, *, coupling=0.0, loss_seed: int = 0,
              sigma=0.0, sigma_perp=0.0, L0=0.0) -> CubicTaylorLoss:
    """The cubic Taylor loss of the module docstring.  ``loss_seed`` > 0 also rotates the basis."""
    eta = check_positive("eta", eta)
    alpha = check_positive("alpha", alpha)
    beta = check_positive("beta", beta)
    d = check_dimension(d)
    if gap is None:
        gap = 2 / eta if d == 2 else 1 / eta
    gap = check_positive("gap", gap)
    if d == 2 and gap != 2 / eta:
        raise ParameterError(f"gap must be 2/eta = {2 / eta!r} for d = 2 (the second direction is the flat "
                             f"sharpening direction), got {gap!r}; use d >= 3 to prescribe it")
    if gap > 2 / eta:
        raise ParameterError(f"gap must be in (0, 2/eta] = (0, {2 / eta!r}], got {gap!r}")
    coupling = check_nonnegative("coupling", coupling)
    loss_seed = check_int("loss_seed", loss_seed, low=0, high=2**64 - 1)
    sigma = check_nonnegative("sigma", sigma)
    sigma_perp = check_nonnegative("sigma_perp", sigma_perp)
    L0 = check_real("L0", L0)

    sb = np.sqrt(beta)
    lam = np.zeros(d)
    lam[0] = 2 / eta
    if d > 2:
        top = 2 / eta - gap
        lam[2:] = top * (1 - np.arange(d - 2) / (d - 2))
    H = np.diag(lam)
    g = np.zeros(d)
    g[1] = -alpha / sb
    T = np.zeros((d, d, d))
    for p in set(itertools.permutations((0, 0, 1))):
        T[p] = sb
    if coupling > 0 and d > 2:
        allowed = [t for t in unique_index_triples(d) if 1 not in t and t.count(0) <= 1]
        keys, gammas = stream_keys(loss_seed, len(allowed))
        draws = normals(keys, gammas, 1) * coupling * sb
        for t, v in zip(allowed, draws):
            for p in set(itertools.permutations(t)):
                T[p] = v
    noise = np.diag(np.r_[sigma, np.full(d - 1, sigma_perp)])
    if loss_seed > 0:
        Q = _random_orthogonal(d, loss_seed)
        g = Q @ g
        H = Q @ H @ Q.T
        T = np.einsum("ia,jb,kc,abc->ijk", Q, Q, Q, T)
        noise = Q @ noise @ Q.T
        # symmetrise away the round-off of the rotation
        H = 0.5 * (H + H.T)
        T = sum(np.transpose(T, p) for p in itertools.permutations(range(3))) / 6
        noise = 0.5 * (noise + noise.T)
        basis = Q
    else:
        basis = np.eye(d)
    basis = basis.copy()
    basis[:, 0] = canonical_sign(basis[:, 0])
    return CubicTaylorLoss(L0=L0, g=g, H=H, T=T, noise_sqrt=noise, u=basis[:, 0].copy(), n=basis[:, 1].copy())


# --------------------------------------------------------------------------------------------- symbolic
def unique_index_pairs(d: int):
    return [(i, j) for i in range(d) for j in range(i, d)]


def unique_index_triples(d: int):
    return [(i, j, k) for i in range(d) for j in range(i, d) for k in range(j, d)]


@functools.lru_cache(maxsize=None)
def symbolic_loss(d: int):
    r"""The loss with symbolic entries: ``(theta, coeffs, L)``.

    ``theta``: state symbols ``th0..th{d-1}``; ``coeffs``: dict of the coefficient symbols, keys
    ``"L0"``, ``("g", i)``, ``("H", i, j)`` for :math:`i\le j` and ``("T", i, j, k)`` for :math:`i\le j\le k`
    (one symbol per distinct entry of the symmetric arrays); ``L`` the SymPy loss.
    """
    theta = sp.symbols(f"th0:{d}", real=True)
    coeffs = {"L0": sp.Symbol("L0", real=True)}
    for i in range(d):
        coeffs[("g", i)] = sp.Symbol(f"g_{i}", real=True)
    for i, j in unique_index_pairs(d):
        coeffs[("H", i, j)] = sp.Symbol(f"H_{i}_{j}", real=True)
    for t in unique_index_triples(d):
        coeffs[("T",) + t] = sp.Symbol("T_" + "_".join(map(str, t)), real=True)
    L = coeffs["L0"] + sum(coeffs[("g", i)] * theta[i] for i in range(d))
    L += sum(coeffs[("H",) + tuple(sorted((i, j)))] * theta[i] * theta[j]
             for i in range(d) for j in range(d)) / 2
    L += sum(coeffs[("T",) + tuple(sorted(t))] * theta[t[0]] * theta[t[1]] * theta[t[2]]
             for t in itertools.product(range(d), repeat=3)) / 6
    return theta, coeffs, sp.expand(L)


def coefficient_values(loss: CubicTaylorLoss) -> dict:
    """Numeric values of the coefficient symbols of `symbolic_loss` for ``loss``, keyed like ``coeffs``."""
    d = loss.d
    out = {"L0": float(loss.L0)}
    out.update({("g", i): float(loss.g[i]) for i in range(d)})
    out.update({("H", i, j): float(loss.H[i, j]) for i, j in unique_index_pairs(d)})
    out.update({("T",) + t: float(loss.T[t]) for t in unique_index_triples(d)})
    return out
