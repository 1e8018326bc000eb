r"""Mean-square (second-moment) stability of SGD: the 1-D threshold, linear regression, the noise kernel K.

**Batch model.**  One SGD step on residuals :math:`r\in\mathbb R^n` (realizable linear least squares,
or the linearisation of any model around an interpolating point) is

.. math:: r_{t+1} = (I - \eta\,\Theta\,D_t)\,r_t,\qquad D_t=\operatorname{diag}(D_{t,i}),\ D_{t,i}=\tfrac nB c_{t,i},

where :math:`\Theta` is the matrix of the full-batch (GD) residual update
:math:`r_{t+1}=(I-\eta\Theta)r_t`; for :math:`L=\frac1{2n}\lVert X\theta-y\rVert^2` it is
:math:`\Theta = XX^\top/n`, whose non-zero eigenvalues are those of the Hessian :math:`X^\top X/n`.
**Normalisation:** pass eigenvalues of *this* :math:`\Theta` (Hessian eigenvalues of the mean loss),
not of the unnormalised Gram matrix :math:`XX^\top`.  :math:`c_{t,i}` counts example :math:`i` in the
batch under one of the sampling models of :mod:`sdeeos.theory.batch_noise` (all three are covered).

**Exact recursion** (SymPy-derived, :func:`derive_second_moment_recursion`) for :math:`M=\mathbb E[rr^\top]`:

.. math:: M_{t+1}=(I-\eta\Theta)M_t(I-\eta\Theta)+\eta^2\big(c_{\rm diag}\,\Theta\operatorname{Diag}(M_t)\Theta
          + c_{\rm full}\,\Theta M_t\Theta\big),

:math:`c_{\rm diag}=\operatorname{Var}D_i-\operatorname{Cov}(D_i,D_j)`,
:math:`c_{\rm full}=\operatorname{Cov}(D_i,D_j)` (Bernoulli: :math:`n/B-1` and 0; without replacement:
:math:`\frac{n(n-B)}{B(n-1)}` and :math:`-\frac{n-B}{B(n-1)}`; with replacement :math:`n/B` and :math:`-1/B`).

**Noise kernel norm** (docs/theory.md#noise-kernel).  In the eigenbasis :math:`\Theta=Q\Lambda Q^\top` the operator is
"diagonal + positive semidefinite": :math:`T=\operatorname{diag}(A_{ab})+\operatorname{diag}(W_{ab})R^\top R`
with :math:`A_{ab}=(1-\eta\lambda_a)(1-\eta\lambda_b)+\eta^2c_{\rm full}\lambda_a\lambda_b`,
:math:`W_{ab}=\eta^2c_{\rm diag}\lambda_a\lambda_b`, :math:`R_{i,ab}=Q_{ia}Q_{ib}`.  Hence (exactly) the
top eigenvalue of :math:`T` is below 1 iff :math:`\max A<1` and the largest eigenvalue of the
:math:`n\times n` *diagonal-to-diagonal kernel*

.. math:: G_{ij}=\sum_{ab}Q_{ia}Q_{ib}Q_{ja}Q_{jb}\,\frac{W_{ab}}{1-A_{ab}}

is below 1: :math:`\mathcal K_{\rm exact}=\lambda_{\max}(G)` (:func:`noise_kernel_norm_exact`).
The delocalisation closure :math:`\operatorname{Diag}(M)\approx\frac{\operatorname{tr}M}n I` gives

.. math:: \mathcal K=\frac{\eta^2c_{\rm diag}}{n}\sum_a\frac{\lambda_a^2}{1-A_{aa}}
          =\eta\,\frac{c_{\rm diag}}{n}\sum_a\frac{\lambda_a}{2-\eta\lambda_a(1+c_{\rm full})}
          =\frac{\mathbf 1^\top G\,\mathbf 1}{n}\ \le\ \mathcal K_{\rm exact}

(:func:`noise_kernel_norm`): the closure K is the Rayleigh quotient of :math:`G` at the uniform
vector, a *lower bound* of the exact one.  So :math:`\mathcal K<1` is necessary, not sufficient,
for mean-square stability, and at the exact threshold :math:`\mathcal K\le1` (0.922 in the example of
docs/theory.md#noise-kernel).  For Bernoulli sampling :math:`\mathcal K=\eta(\frac1B-\frac1n)\sum_a\frac{\lambda_a}{2-\eta\lambda_a}`,
which vanishes at :math:`B=n` (without replacement, Bernoulli).

>>> round(float(noise_kernel_norm(1.0, [0.5, 0.25], 1, 4, sampling="bernoulli")), 12)  # (1-1/4)(0.5/1.5+0.25/1.75)
0.357142857143
>>> round(float(one_dimensional_threshold([1.0, 3.0], 1, "without_replacement")), 12)  # 2*2/(4+1)
0.8
"""

from __future__ import annotations

import functools

import numpy as np
import sympy as sp

from .._errors import OutsideDomainError, ParameterError
from .._validation import check_choice, check_nonnegative, check_positive
from . import batch_noise
from .batch_noise import batch_size as B_sym
from .batch_noise import n_data as n_sym

__all__ = [
    "eta",
    "curvature",
    "derive_one_dimensional_factor",
    "derive_one_dimensional_threshold",
    "derive_second_moment_recursion",
    "derive_mode_recursion",
    "derive_noise_kernel_term",
    "one_dimensional_factor",
    "one_dimensional_threshold",
    "one_dimensional_stationary_second_moment",
    "noise_kernel_norm",
    "noise_kernel_norm_exact",
    "closure_spectral_radius",
    "second_moment_step",
    "second_moment_operator",
    "second_moment_spectral_radius",
    "critical_learning_rate",
    "ntk_from_jacobian",
]

eta = sp.Symbol("eta", positive=True)
curvature = sp.Symbol("lambda", nonnegative=True)  # one eigenvalue of Theta (or one curvature h)
hbar = sp.Symbol("hbar", positive=True)  # mean curvature (1-D model)
s_sq = sp.Symbol("s2", nonnegative=True)  # centred variance of the per-example curvatures
c_diag_sym, c_full_sym = sp.symbols("c_diag c_full", real=True)


# ---------------------------------------------------------------------------------------------
# 1-D multiplicative-noise model: L = (1/n) sum_i h_i theta^2 / 2
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def derive_one_dimensional_factor(sampling: str) -> sp.Expr:
    r""":math:`\mathbb E\theta_{t+1}^2/\mathbb E\theta_t^2=\mathbb E(1-\eta\hat h_B)^2` in ``eta, hbar, s2, n, B``.

    :math:`\hat h_B=\frac1n\sum_iD_ih_i`, :math:`\mathbb E\hat h_B=\bar h` and
    :math:`\operatorname{Var}\hat h_B=a\,s^2+b\,\bar h^2` (:mod:`batch_noise`), with
    :math:`s^2=\frac1n\sum_i(h_i-\bar h)^2`; :math:`\theta_t` is independent of the batch at step t.

    >>> derive_one_dimensional_factor("with_replacement")
    eta**2*(hbar**2 + s2/B) - 2*eta*hbar + 1
    """
    coeff = batch_noise.derive_noise_covariance_coefficients(sampling)
    h_hat = sp.Symbol("h_hat", real=True)
    mean_h, var_h = hbar, coeff["centred"] * s_sq + coeff["mean_outer"] * hbar**2
    # E[(1 - eta h)^2] = 1 - 2 eta E h + eta^2 (Var h + (E h)^2)
    poly = sp.Poly(sp.expand((1 - eta * h_hat) ** 2), h_hat)
    moments = {0: sp.Integer(1), 1: mean_h, 2: var_h + mean_h**2}
    factor = sum(c * moments[k] for (k,), c in poly.terms())
    return sp.collect(sp.expand(factor), eta)


@functools.lru_cache(maxsize=None)
def derive_one_dimensional_threshold(sampling: str) -> sp.Expr:
    r"""The positive root :math:`\eta_c` of :math:`\mathbb E(1-\eta\hat h_B)^2=1`: :math:`2\bar h/(\bar h^2+v_B)`."""
    roots = sp.solve(sp.Eq(derive_one_dimensional_factor(sampling), 1), eta)
    (root,) = [r for r in roots if r != 0]
    return sp.factor(sp.simplify(root))


@functools.lru_cache(maxsize=None)
def _one_dim_numeric(sampling: str):
    args = (eta, hbar, s_sq, n_sym, B_sym)
    return (sp.lambdify(args, derive_one_dimensional_factor(sampling), "numpy"),
            sp.lambdify(args[1:], derive_one_dimensional_threshold(sampling), "numpy"))


def _curvature_stats(curvatures):
    h = np.asarray(curvatures, dtype=float)
    if h.ndim != 1 or h.size < 1 or not np.all(np.isfinite(h)):
        raise ParameterError("curvatures must be a non-empty 1-D array of finite per-example curvatures")
    return float(h.mean()), float(np.mean((h - h.mean()) ** 2)), h.size


def one_dimensional_factor(eta_value, curvatures, batch_size, sampling: str):
    r"""Exact mean-square growth factor :math:`(1-\eta\bar h)^2+\eta^2v_B` of 1-D SGD (docs/theory.md#mean-square-threshold).

    ``curvatures`` are the per-example :math:`h_i` of :math:`\ell_i=\frac{h_i}2\theta^2`.
    """
    eta_value = check_positive("eta", eta_value)
    m, s2, n = _curvature_stats(curvatures)
    B, n, sampling = batch_noise.check_batch(batch_size, n, sampling)
    return float(_one_dim_numeric(sampling)[0](eta_value, m, s2, n, B))


def one_dimensional_threshold(curvatures, batch_size, sampling: str):
    r"""Mean-square critical step :math:`\eta_c=2\bar h/(\bar h^2+v_B)` (stable iff :math:`\eta<\eta_c`).

    Needs :math:`\bar h>0` (otherwise no step size is stable: ``OutsideDomainError``).
    """
    m, s2, n = _curvature_stats(curvatures)
    if m <= 0:
        raise OutsideDomainError(f"mean curvature {m} <= 0: SGD is mean-square unstable for every eta > 0")
    B, n, sampling = batch_noise.check_batch(batch_size, n, sampling)
    return float(_one_dim_numeric(sampling)[1](m, s2, n, B))


def one_dimensional_stationary_second_moment(eta_value, curvatures, batch_size, sampling: str,
                                             additive_variance, *, outside: str = "raise"):
    r"""Stationary :math:`\mathbb E\theta^2=\eta^2\sigma_g^2/(1-(1-\eta\bar h)^2-\eta^2v_B)` with additive noise.

    For :math:`\theta_{t+1}=(1-\eta\hat h_B)\theta_t-\eta\xi_t`, :math:`\operatorname{Var}\xi=\sigma_g^2`
    independent of the batch.  Exists iff the mean-square factor is < 1; otherwise
    ``outside="raise"`` raises ``OutsideDomainError`` and ``outside="nan"`` returns NaN.
    """
    check_choice("outside", outside, ("raise", "nan"))
    sigma_g_sq = check_nonnegative("additive_variance", additive_variance)
    factor = one_dimensional_factor(eta_value, curvatures, batch_size, sampling)
    if factor >= 1:
        if outside == "raise":
            raise OutsideDomainError(
                f"no stationary second moment: mean-square factor {factor:.6g} >= 1 (eta >= eta_c)")
        return float("nan")
    return float(eta_value) ** 2 * sigma_g_sq / (1 - factor)


# ---------------------------------------------------------------------------------------------
# Linear regression: exact second-moment recursion and the noise kernel
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def derive_second_moment_recursion(sampling: str) -> dict[str, sp.Expr]:
    r"""Coefficients ``c_diag``, ``c_full`` of the exact recursion (see module docstring).

    :math:`\mathbb E[D M D]=M\circ\mathbb E[DD^\top]` with :math:`\mathbb E[D_iD_j]=1+\operatorname{Cov}(D_i,D_j)`
    off the diagonal and :math:`1+\operatorname{Var}D_i` on it, so
    :math:`\mathbb E[DMD]=(1+c)M+(v-c)\operatorname{Diag}M`; expanding
    :math:`\mathbb E[(I-\eta\Theta D)M(I-\eta D\Theta)]` with :math:`\mathbb ED=I` gives the recursion.

    >>> derive_second_moment_recursion("bernoulli")
    {'c_diag': (-B + n)/B, 'c_full': 0}
    """
    w = batch_noise.derive_weight_covariance(sampling)
    if sp.simplify(w["mean"] - 1) != 0:  # pragma: no cover - guarded by batch_noise
        raise AssertionError("batch weights must be unbiased")
    return {"c_diag": sp.factor(sp.simplify(w["var"] - w["cov"])), "c_full": sp.factor(w["cov"])}


@functools.lru_cache(maxsize=None)
def derive_mode_recursion(sampling: str) -> dict[str, sp.Expr]:
    r"""Closure mode recursion :math:`m_a'=A(\lambda_a)m_a+u(\lambda_a)\sum_bm_b`.

    Returns ``"A"`` :math:`=(1-\eta\lambda)^2+\eta^2c_{\rm full}\lambda^2` and ``"u"``
    :math:`=\eta^2\frac{c_{\rm diag}}n\lambda^2`, in ``eta, lambda, n, B``.
    """
    rec = derive_second_moment_recursion(sampling)
    lam = curvature
    A = sp.expand((1 - eta * lam) ** 2 + eta**2 * rec["c_full"] * lam**2)
    u = sp.factor(eta**2 * rec["c_diag"] / n_sym * lam**2)
    return {"A": A, "u": u}


@functools.lru_cache(maxsize=None)
def derive_noise_kernel_term(sampling: str) -> dict[str, sp.Expr]:
    r"""One mode's contribution :math:`u/(1-A)` to :math:`\mathcal K`, simplified, and its domain.

    The secular function of "diagonal + rank one" at :math:`\mu=1`; ``"domain"`` is the expression
    :math:`1-A(\lambda)` divided by :math:`\eta\lambda`, which must be > 0 for every mode.

    >>> term = derive_noise_kernel_term("bernoulli")["term"]
    >>> sp.simplify(term - eta * curvature * (1 / B_sym - 1 / n_sym) / (2 - eta * curvature))
    0
    """
    mode = derive_mode_recursion(sampling)
    lam = curvature
    term = sp.factor(sp.cancel(mode["u"] / (1 - mode["A"])))
    domain = sp.factor(sp.cancel((1 - mode["A"]) / (eta * lam)))
    return {"term": term, "domain": domain}


@functools.lru_cache(maxsize=None)
def _kernel_numeric(sampling: str):
    args = (eta, curvature, n_sym, B_sym)
    t = derive_noise_kernel_term(sampling)
    rec = derive_second_moment_recursion(sampling)
    mode = derive_mode_recursion(sampling)
    return {
        "term": sp.lambdify(args, t["term"], "numpy"),
        "domain": sp.lambdify(args, t["domain"], "numpy"),
        "A": sp.lambdify(args, mode["A"], "numpy"),
        "u": sp.lambdify(args, mode["u"], "numpy"),
        "c_diag": sp.lambdify((n_sym, B_sym), rec["c_diag"], "numpy"),
        "c_full": sp.lambdify((n_sym, B_sym), rec["c_full"], "numpy"),
    }


def _eigenvalues(values) -> np.ndarray:
    lam = np.asarray(values, dtype=float)
    if lam.ndim != 1 or lam.size < 1 or not np.all(np.isfinite(lam)):
        raise ParameterError("ntk_eigenvalues must be a non-empty 1-D array of finite numbers")
    if np.any(lam < -1e-12 * max(1.0, float(np.abs(lam).max()))):
        raise ParameterError("ntk_eigenvalues must be >= 0 (Theta is positive semidefinite)")
    return np.clip(lam, 0.0, None)


def noise_kernel_norm(eta_value, ntk_eigenvalues, batch_size, n, sampling: str = "bernoulli",
                      *, outside: str = "raise"):
    r"""Closure noise kernel norm :math:`\mathcal K` (docs/theory.md#noise-kernel), lambdified from the derivation.

    .. math:: \mathcal K=\eta\frac{c_{\rm diag}}n\sum_a\frac{\lambda_a}{2-\eta\lambda_a(1+c_{\rm full})}

    Bernoulli (default): :math:`\eta(\frac1B-\frac1n)\sum\frac{\lambda_a}{2-\eta\lambda_a}`;
    without replacement :math:`\eta\frac{n-B}{B(n-1)}\sum\frac{\lambda_a}{2-\eta\lambda_a\frac{n(B-1)}{B(n-1)}}`;
    with replacement :math:`\frac\eta B\sum\frac{\lambda_a}{2-\eta\lambda_a\frac{B-1}B}`.

    Parameters
    ----------
    eta_value : float > 0
    ntk_eigenvalues : 1-D array, >= 0
        Eigenvalues of :math:`\Theta` normalised so that GD reads :math:`r_{t+1}=(I-\eta\Theta)r_t`
        (:math:`XX^\top/n` for the mean squared loss; zero eigenvalues contribute nothing).
    batch_size, n : int
        Batch size and number of examples (:math:`n\ge` number of eigenvalues).
    sampling : {"bernoulli", "without_replacement", "with_replacement"}
    outside : {"raise", "nan"}
        Outside the domain :math:`\max_a A(\lambda_a)<1` (the deterministic/EOS condition,
        :math:`\eta\lambda_{\max}<2` for Bernoulli) the secular characterisation fails:
        ``OutsideDomainError`` or NaN.

    Notes
    -----
    Mean-square stability of the closure operator needs :math:`\mathcal K<1` *and* the domain
    condition; the exact operator needs :math:`\mathcal K_{\rm exact}<1`, and
    :math:`\mathcal K\le\mathcal K_{\rm exact}` (see :func:`noise_kernel_norm_exact`).
    """
    check_choice("outside", outside, ("raise", "nan"))
    eta_value = check_positive("eta", eta_value)
    lam = _eigenvalues(ntk_eigenvalues)
    B, n, sampling = batch_noise.check_batch(batch_size, n, sampling)
    if lam.size > n:
        raise ParameterError(f"at most n = {n} eigenvalues expected (Theta is n x n), got {lam.size}")
    f = _kernel_numeric(sampling)
    active = lam[lam > 0]
    if active.size == 0:
        return 0.0
    domain = np.asarray(f["domain"](eta_value, active, n, B), dtype=float)
    if np.any(domain <= 0):
        msg = (f"eta*lambda_max = {eta_value * active.max():.6g} is outside the domain of the noise kernel "
               f"(a mode's deterministic factor A >= 1; for Bernoulli sampling this is eta*lambda >= 2): "
               "the deterministic edge of stability is crossed, K is undefined")
        if outside == "raise":
            raise OutsideDomainError(msg)
        return float("nan")
    return float(np.sum(f["term"](eta_value, active, n, B)))


def closure_spectral_radius(eta_value, ntk_eigenvalues, batch_size, n, sampling: str = "bernoulli"):
    r"""Spectral radius of the closure mode operator :math:`\operatorname{diag}(A_a)+u\mathbf 1^\top` (NumPy eigvals)."""
    eta_value = check_positive("eta", eta_value)
    lam = _eigenvalues(ntk_eigenvalues)
    B, n, sampling = batch_noise.check_batch(batch_size, n, sampling)
    f = _kernel_numeric(sampling)
    A = np.broadcast_to(np.asarray(f["A"](eta_value, lam, n, B), dtype=float), lam.shape)
    u = np.broadcast_to(np.asarray(f["u"](eta_value, lam, n, B), dtype=float), lam.shape)
    # similar to the symmetric matrix diag(A) + sqrt(u) sqrt(u)^T (u >= 0)
    su = np.sqrt(u)
    return float(np.max(np.abs(np.linalg.eigvalsh(np.diag(A) + np.outer(su, su)))))


def _check_ntk(ntk) -> np.ndarray:
    theta = np.asarray(ntk, dtype=float)
    if theta.ndim != 2 or theta.shape[0] != theta.shape[1] or not np.all(np.isfinite(theta)):
        raise ParameterError("ntk must be a finite square matrix Theta (n x n)")
    if not np.allclose(theta, theta.T, rtol=1e-10, atol=1e-12 * max(1.0, float(np.abs(theta).max()))):
        raise ParameterError("ntk must be symmetric")
    return (theta + theta.T) / 2


def second_moment_step(eta_value, ntk, second_moment, batch_size, sampling: str):
    r"""One step of the exact recursion :math:`M\mapsto M'` (module docstring), in O(n^3)."""
    eta_value = check_positive("eta", eta_value)
    theta = _check_ntk(ntk)
    n = theta.shape[0]
    B, n, sampling = batch_noise.check_batch(batch_size, n, sampling)
    f = _kernel_numeric(sampling)
    c_diag, c_full = float(f["c_diag"](n, B)), float(f["c_full"](n, B))
    M = np.asarray(second_moment, dtype=float)
    P = np.eye(n) - eta_value * theta
    return (P @ M @ P + eta_value**2 * (c_diag * theta @ np.diag(np.diag(M)) @ theta
                                        + c_full * theta @ M @ theta))


def second_moment_operator(eta_value, ntk, batch_size, sampling: str) -> np.ndarray:
    r"""The exact recursion as an :math:`n^2\times n^2` matrix acting on ``M.reshape(-1)`` (row-major).

    :math:`T=P\otimes P+\eta^2\big(c_{\rm diag}(\Theta\otimes\Theta)\operatorname{diag}(\operatorname{vec}I)
    + c_{\rm full}\,\Theta\otimes\Theta\big)`, :math:`P=I-\eta\Theta`.  Small n only (memory n^4).
    """
    eta_value = check_positive("eta", eta_value)
    theta = _check_ntk(ntk)
    n = theta.shape[0]
    if n > 40:
        raise ParameterError(f"ntk must be at most 40 x 40 for the dense n^2 x n^2 operator, got n = {n}")
    B, n, sampling = batch_noise.check_batch(batch_size, n, sampling)
    f = _kernel_numeric(sampling)
    c_diag, c_full = float(f["c_diag"](n, B)), float(f["c_full"](n, B))
    P = np.eye(n) - eta_value * theta
    tt = np.kron(theta, theta)
    return np.kron(P, P) + eta_value**2 * (c_diag * tt * np.eye(n).reshape(-1)[None, :] + c_full * tt)


def _eigen_pieces(eta_value, theta, batch_size, sampling, rank_rtol):
    n = theta.shape[0]
    B, n, sampling = batch_noise.check_batch(batch_size, n, sampling)
    f = _kernel_numeric(sampling)
    c_diag, c_full = float(f["c_diag"](n, B)), float(f["c_full"](n, B))
    lam, Q = np.linalg.eigh(theta)
    if lam.min() < -1e-10 * max(1.0, abs(lam).max()):
        raise ParameterError("ntk must be positive semidefinite")
    keep = lam > rank_rtol * max(lam.max(), 0.0)  # residuals live in range(Theta)
    lam, Q = lam[keep], Q[:, keep]
    A = np.outer(1 - eta_value * lam, 1 - eta_value * lam) + eta_value**2 * c_full * np.outer(lam, lam)
    W = eta_value**2 * c_diag * np.outer(lam, lam)
    return lam, Q, A, W


def noise_kernel_norm_exact(eta_value, ntk, batch_size, sampling: str = "bernoulli", *,
                            outside: str = "raise", rank_rtol: float = 1e-10):
    r""":math:`\mathcal K_{\rm exact}=\lambda_{\max}(G)`, the exact counterpart of :func:`noise_kernel_norm`.

    The exact operator's top eigenvalue is < 1 iff :math:`\max A<1` and :math:`\mathcal K_{\rm exact}<1`.
    Always :math:`\mathcal K=\mathbf 1^\top G\mathbf 1/n\le\mathcal K_{\rm exact}`.  Needs the full
    :math:`\Theta` (eigenvectors matter).  Outside :math:`\max A<1`: ``OutsideDomainError`` or NaN.
    """
    check_choice("outside", outside, ("raise", "nan"))
    eta_value = check_positive("eta", eta_value)
    theta = _check_ntk(ntk)
    lam, Q, A, W = _eigen_pieces(eta_value, theta, batch_size, sampling, rank_rtol)
    if lam.size == 0:
        return 0.0
    if A.max() >= 1:
        msg = (f"max deterministic factor A = {A.max():.6g} >= 1 (eta*lambda_max = {eta_value * lam.max():.6g}): "
               "outside the domain of the noise kernel")
        if outside == "raise":
            raise OutsideDomainError(msg)
        return float("nan")
    F = W / (1 - A)
    # G_ij = sum_ab P_(ij),a F_ab P_(ij),b with P_(ij),a = Q_ia Q_ja: one (n^2 x k) @ (k x k) product
    P = (Q[:, None, :] * Q[None, :, :]).reshape(-1, lam.size)
    G = np.einsum("pb,pb->p", P @ F, P).reshape(Q.shape[0], Q.shape[0])
    return float(np.linalg.eigvalsh((G + G.T) / 2).max())


def second_moment_spectral_radius(eta_value, ntk, batch_size, sampling: str = "bernoulli", *,
                                  rank_rtol: float = 1e-10):
    r"""Spectral radius of the exact recursion restricted to symmetric :math:`M` on :math:`\operatorname{range}\Theta`.

    Built in the eigenbasis on the orthonormal basis of symmetric matrices
    (:math:`E_{aa}`, :math:`(E_{ab}+E_{ba})/\sqrt2`), where it is ``diag(A) + diag(W) Rs^T Rs``,
    similar to a symmetric matrix; ``eigvalsh`` of size k(k+1)/2 (k = rank): use for k <= ~60.
    Mean-square stable iff the result is < 1.
    """
    eta_value = check_positive("eta", eta_value)
    theta = _check_ntk(ntk)
    lam, Q, A, W = _eigen_pieces(eta_value, theta, batch_size, sampling, rank_rtol)
    k = lam.size
    if k == 0:
        return 0.0
    if k > 80:
        raise ParameterError(f"rank of ntk must be <= 80 for the dense operator, got {k}")
    ia, ib = np.triu_indices(k)
    scale = np.where(ia == ib, 1.0, np.sqrt(2.0))
    Rs = Q[:, ia] * Q[:, ib] * scale  # n x k(k+1)/2
    a, w = A[ia, ib], W[ia, ib]
    if np.any(w < 0):
        raise AssertionError("noise weights must be >= 0")  # pragma: no cover
    Z = Rs * np.sqrt(w)
    S = np.diag(a) + Z.T @ Z
    return float(np.max(np.abs(np.linalg.eigvalsh(S))))


def critical_learning_rate(ntk, batch_size, sampling: str = "bernoulli", *, rtol: float = 1e-10,
                           rank_rtol: float = 1e-10):
    r"""The step size :math:`\eta_c` at which the exact second-moment operator becomes unstable.

    Bisection on "unstable" = :math:`\max A\ge1` (deterministic edge) or
    :math:`\mathcal K_{\rm exact}\ge1` (stochastic edge), which is equivalent to the top eigenvalue
    of the exact operator reaching 1 (assumes a single crossing, as for every case we know of;
    check with :func:`second_moment_spectral_radius` if in doubt).
    """
    theta = _check_ntk(ntk)
    lam_max = float(np.linalg.eigvalsh(theta).max())
    if lam_max <= 0:
        raise OutsideDomainError("ntk is zero: every step size is (marginally) stable")

    def unstable(e):
        lam, Q, A, W = _eigen_pieces(e, theta, batch_size, sampling, rank_rtol)
        if A.max() >= 1:
            return True
        return noise_kernel_norm_exact(e, theta, batch_size, sampling, rank_rtol=rank_rtol) >= 1

    lo, hi = 0.0, 1.0 / lam_max
    while not unstable(hi):
        lo, hi = hi, 2 * hi
        if hi > 1e6 / lam_max:  # pragma: no cover - cannot happen for Theta != 0
            raise OutsideDomainError("no mean-square instability found")
    while hi - lo > rtol * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if unstable(mid) else (mid, hi)
    return 0.5 * (lo + hi)


def ntk_from_jacobian(jacobian, *, mean_loss: bool = True) -> np.ndarray:
    r""":math:`\Theta=JJ^\top/n` (mean loss :math:`\frac1{2n}\lVert z\rVert^2`) or :math:`JJ^\top` (sum loss).

    For a model with residuals :math:`z(\theta)` and Jacobian :math:`J` (n x P), GD on the loss gives
    :math:`z_{t+1}=(I-\eta\Theta)z_t+O(\eta^2\lVert z\rVert^2)`; use this :math:`\Theta` with the
    functions above (the quadratic-regression model, docs/theory.md#quadratic-regression, linearised at the current point).
    """
    J = np.asarray(jacobian, dtype=float)
    if J.ndim != 2:
        raise ParameterError("jacobian must be a 2-D array (n residuals x P parameters)")
    gram = J @ J.T
    return gram / J.shape[0] if mean_loss else gram
