r"""The reduced self-stabilization model with k oscillating edge directions.

Setting.  Near the edge of stability a real network has several Hessian eigenvalues
:math:`\lambda_1,\dots,\lambda_k` close to :math:`2/\eta`, with eigenvectors :math:`u_j`.  Around the
constrained trajectory :math:`\theta^\dagger` (every :math:`\lambda_i` held at :math:`2/\eta`) write
:math:`x_j=u_j\cdot(\theta-\theta^\dagger)` (the oscillation along :math:`u_j`) and
:math:`y_i=\lambda_i-2/\eta` (the deviation of eigenvalue i).  With the cubic Taylor model of the
loss, :math:`\nabla\lambda_i=\nabla^3L[u_i,u_i,\cdot]`, and the same steps as the one-direction
reduction (:mod:`sdeeos.theory.reduced_model`) give

.. math::

    x_j' = -(1+\eta y_j)\,x_j + \eta\sigma_j z_j,\qquad
    y_i' = y_i + \eta\Big(\alpha_i - \tfrac12\sum_j G_{ij}\,x_j^2\Big),\qquad z_j\sim N(0,1)\ \text{i.i.d.},

with

* :math:`G_{ij}=\nabla\lambda_i\cdot\nabla\lambda_j` (the coupling matrix; a Gram matrix, so
  positive semi-definite; :math:`G_{11}=\lVert\nabla S\rVert^2=\beta` of the one-direction model):
  the cubic term :math:`\tfrac12\nabla^3L[v,v,\cdot]` of the gradient contains
  :math:`\tfrac12x_j^2\nabla\lambda_j`, whose component along :math:`\nabla\lambda_i` is
  :math:`\tfrac12G_{ij}x_j^2`;
* :math:`\alpha_i=-\nabla L(\theta^\dagger)\cdot\nabla\lambda_i` (the sharpening rate of direction i,
  gradient taken with the span of the :math:`u_j` projected out): the constrained step shifts
  :math:`\theta^\dagger` by :math:`-\eta\nabla L-\sum_mc_m\nabla\lambda_m` with :math:`Gc=\eta\alpha`, so
  that every :math:`\lambda_i` stays at :math:`2/\eta`; seen from :math:`\theta^\dagger` that shift
  raises :math:`y_i` by :math:`(Gc)_i=\eta\alpha_i`;
* :math:`\sigma_j^2=u_j^\top\Sigma_Bu_j` the mini-batch gradient noise projected on :math:`u_j`.

Neglected (and so the assumptions of the model): the mixed terms :math:`x_jx_l\,\nabla^3L[u_j,u_l,\cdot]`
(:math:`j\ne l`; they vanish on average when the noises along different :math:`u_j` are uncorrelated),
the rotation of the eigenvectors, the transverse curvature and the noise along :math:`\nabla\lambda_i`
— the same approximations as the one-direction model, which is the case k = 1 exactly.

Exact stationary identities (derived below by SymPy from the update, for any stationary state):

* from :math:`\mathbb E y_i`: :math:`\sum_jG_{ij}\,\mathbb E x_j^2=2\alpha_i`, so
  :math:`m\equiv\mathbb E[x^2]=2G^{-1}\alpha` (every component must be positive: a direction with
  :math:`(G^{-1}\alpha)_j\le0` cannot stay at the edge);
* from :math:`\mathbb E x_j^2`: :math:`\mathbb E[x_j^2y_j]+\tfrac\eta2\mathbb E[x_j^2y_j^2]=-\tfrac\eta2\sigma_j^2`;
* from :math:`\mathbb E[y^\top G^{-1}y]` (the cross moments :math:`\mathbb E[y_ix_j^2]`, i ≠ j, cancel):

  .. math:: \sum_j m_j\,\Delta S_j=\frac\eta2\sum_j\big(\sigma_j^2+\mathbb E[x_j^2y_j^2]\big)
            +\eta\,\mathbb E[a^\top G^{-1}a]\;\ge\;\frac\eta2\sum_j\sigma_j^2,

  with :math:`\Delta S_j=-\mathbb E y_j`, :math:`a_i=\alpha_i-\tfrac12\sum_jG_{ij}x_j^2`.  For k = 1 this is
  the exact gap identity of :mod:`sdeeos.theory.self_stabilization`.

Closure (freeze :math:`y_j=-\Delta S_j`, decorrelate it from :math:`x_j`), per direction:

.. math:: \Delta S_j=\frac{1-\sqrt{1-\eta^2\sigma_j^2/m_j}}{\eta}
          =\frac{\eta\sigma_j^2}{2m_j}+O(\eta^3)=\frac{\eta\,\beta_{{\rm eff},j}\sigma_j^2}{4\alpha_j}+\dots,
          \qquad \beta_{{\rm eff},j}=\frac{\alpha_j}{(G^{-1}\alpha)_j}.

It reduces to the one-direction formula :math:`\eta\beta\sigma_u^2/(4\alpha)` for direction 1 (with
:math:`\beta=G_{11}`) iff :math:`(G^{-1}\alpha)_1=\alpha_1/G_{11}`: e.g. when :math:`G_{1j}=0` for
j ≠ 1 (direction 1 decoupled), and always for k = 1.  For k degenerate directions with equal
:math:`\alpha,\sigma`, :math:`G_{ii}=\beta`, :math:`G_{i\ne j}=c`:
:math:`\beta_{\rm eff}=\beta+(k-1)c` — the couplings add to the restoring force, the amplitude
:math:`m=2\alpha/\beta_{\rm eff}` shrinks and the gap grows by :math:`\beta_{\rm eff}/\beta`.
The closure's gap of the *top* eigenvalue is :math:`\min_j\Delta S_j`; the fluctuations of the
:math:`y_j` make :math:`\mathbb E\max_jy_j>\max_j\mathbb E y_j`, so the measured top-eigenvalue gap
is below that (the ensemble model measures it).

>>> import numpy as np
>>> G = np.array([[100.0, 0.0], [0.0, 50.0]])
>>> [round(float(v), 6) for v in x_sq_stationary([1.0, 1.0], G)]
[0.02, 0.04]
>>> [round(float(v), 6) for v in gap_leading(0.01, [1.0, 1.0], [10.0, 10.0], G)]
[25.0, 12.5]
>>> round(float(symmetric_beta_eff(100.0, 20.0, 3)), 6)
140.0
"""

from __future__ import annotations

import functools

import numpy as np
import sympy as sp

from .._errors import OutsideDomainError, ParameterError
from . import self_stabilization as _one
from ._expectation import expectation, moment_symbol
from .sde import derive_lyapunov_equation

__all__ = [
    "symbols",
    "update",
    "derive_stationary_x_sq",
    "derive_x_sq_identities",
    "derive_weighted_gap_identity",
    "derive_gap_closure",
    "derive_slow_mode_covariance",
    "derive_symmetric_case",
    "symmetric_gaps",
    "x_sq_stationary",
    "beta_eff",
    "gap_leading",
    "gap_exact",
    "weighted_gap_rhs",
    "symmetric_beta_eff",
    "check_coupling",
]

eta = sp.Symbol("eta", positive=True)


@functools.lru_cache(maxsize=None)
def symbols(k: int) -> dict:
    r"""The SymPy symbols of the k-direction model.

    ``x``, ``y``, ``z``, ``alpha``, ``sigma``: tuples of length k; ``G``: the symmetric k×k matrix of
    coupling symbols (``G_ij`` with i ≤ j); ``eta``.  For k = 1 the names and assumptions are those of
    :mod:`sdeeos.theory.self_stabilization` (``x, y, z, alpha, sigma`` and ``G_11 = beta``), so the
    k = 1 model is that model symbol for symbol.
    """
    k = _check_k(k)
    if k == 1:
        x, y, z, eta_, alpha, beta, sigma = _one.symbols()
        assert eta_ == eta
        return {"x": (x,), "y": (y,), "z": (z,), "alpha": (alpha,), "sigma": (sigma,),
                "G": sp.Matrix([[beta]]), "eta": eta}
    r = range(1, k + 1)
    x = tuple(sp.Symbol(f"x{j}", real=True) for j in r)
    y = tuple(sp.Symbol(f"y{j}", real=True) for j in r)
    z = tuple(sp.Symbol(f"z{j}", real=True) for j in r)
    alpha = tuple(sp.Symbol(f"alpha{j}", real=True) for j in r)
    sigma = tuple(sp.Symbol(f"sigma{j}", nonnegative=True) for j in r)

    def g(i, j):
        i, j = min(i, j), max(i, j)
        return sp.Symbol(f"G{i + 1}{j + 1}", positive=True) if i == j else sp.Symbol(f"G{i + 1}{j + 1}", real=True)

    G = sp.Matrix(k, k, g)
    return {"x": x, "y": y, "z": z, "alpha": alpha, "sigma": sigma, "G": G, "eta": eta}


def _check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ParameterError(f"k must be an integer >= 1, got {k!r}")
    return int(k)


def coupling_symbols(k: int) -> tuple[sp.Symbol, ...]:
    """The independent entries of G (upper triangle, row by row)."""
    G = symbols(k)["G"]
    return tuple(G[i, j] for i in range(k) for j in range(i, k))


@functools.lru_cache(maxsize=None)
def update(k: int, noisy: bool = True) -> tuple[sp.Expr, ...]:
    r"""The map ``(x_1', ..., x_k', y_1', ..., y_k')``; ``noisy=False`` is full-batch GD.

    For k = 1 the expressions are those of :func:`sdeeos.theory.self_stabilization.reduced_update`.

    >>> update(2)[0]
    eta*sigma1*z1 + x1*(-eta*y1 - 1)
    """
    s = symbols(k)
    x, y, z, alpha, sigma, G = s["x"], s["y"], s["z"], s["alpha"], s["sigma"], s["G"]
    # built exactly as the one-direction map is: -(1 + eta y) x (+ eta sigma z);  y + eta (alpha - G x^2/2)
    x_next = tuple(x[j] * (-eta * y[j] - 1) + (eta * sigma[j] * z[j] if noisy else 0) for j in range(k))
    y_next = tuple(y[i] + eta * (alpha[i] - sum(G[i, j] * x[j] ** 2 for j in range(k)) / 2) for i in range(k))
    return x_next + y_next


def _state(k):
    s = symbols(k)
    return s["x"] + s["y"]


def _stationarity(k: int, monomial) -> sp.Expr:
    """E[m(s')] - E[m(s)] for a polynomial m of the state: zero in any stationary state."""
    state = _state(k)
    shifted = monomial.subs(dict(zip(state, update(k))), simultaneous=True)
    return sp.expand(expectation(shifted - monomial, state, symbols(k)["z"]))


def moment(k: int, expr) -> sp.Symbol:
    """The moment symbol ``E[expr]`` of a state monomial ``expr``."""
    state = _state(k)
    powers = sp.Poly(expr, *state).monoms()[0]
    return moment_symbol(state, powers)


@functools.lru_cache(maxsize=None)
def derive_stationary_x_sq(k: int) -> dict:
    r"""Stationarity of every :math:`\mathbb E y_i`: the linear system :math:`G\,\mathbb E[x^2]=2\alpha`.

    Returns ``relations`` (the k relations, each ``= 0``), ``solution`` (:math:`\mathbb E x_j^2` in
    terms of ``alpha`` and ``G``).
    """
    s = symbols(k)
    rels = [sp.expand(_stationarity(k, yi) / eta) for yi in s["y"]]
    unknowns = [moment(k, xj**2) for xj in s["x"]]
    sol = sp.solve(rels, unknowns, dict=True)[0]
    return {"relations": rels, "solution": [sp.factor(sol[u]) for u in unknowns], "unknowns": unknowns}


@functools.lru_cache(maxsize=None)
def derive_x_sq_identities(k: int) -> list[sp.Eq]:
    r"""Stationarity of each :math:`\mathbb E x_j^2`: ``Eq(E[x_j^2 y_j] + eta/2 E[x_j^2 y_j^2], -eta sigma_j^2/2)``."""
    s = symbols(k)
    out = []
    for j in range(k):
        xj, yj = s["x"][j], s["y"][j]
        rel = sp.expand(_stationarity(k, xj**2) / (2 * eta))
        lhs = moment(k, xj**2 * yj) + eta / 2 * moment(k, xj**2 * yj**2)
        if sp.expand(rel - (lhs + eta * s["sigma"][j] ** 2 / 2)) != 0:  # pragma: no cover
            raise AssertionError(f"x_{j + 1}^2 identity does not have the expected form: {rel}")
        out.append(sp.Eq(lhs, -eta * s["sigma"][j] ** 2 / 2))
    return out


@functools.lru_cache(maxsize=None)
def derive_weighted_gap_identity(k: int) -> dict:
    r"""Stationarity of :math:`\mathbb E[y^\top G^{-1}y]`, with the x identities inserted.

    Returns ``relation`` (the combination :math:`\sum_{il}(G^{-1})_{il}\,(\mathbb E[y_i'y_l']-\mathbb E[y_iy_l])`,
    times ``det G``, in moment symbols), ``lhs`` :math:`\sum_j m_j\Delta S_j` with :math:`m=2G^{-1}\alpha`,
    ``rhs`` the claimed :math:`\tfrac\eta2\sum_j(\sigma_j^2+\mathbb E[x_j^2y_j^2])+\eta\,\mathbb E[a^\top G^{-1}a]`
    (the last term written as :math:`\alpha^\top G^{-1}\alpha-\alpha\cdot\mathbb E[x^2]+\tfrac14\sum_{ij}G_{ij}\mathbb E[x_i^2x_j^2]`),
    and ``residual`` = relation rewritten with the x identities, minus eta det G (rhs - lhs) (zero when the
    identity holds).
    """
    s = symbols(k)
    x, y, alpha, sigma, G = s["x"], s["y"], s["alpha"], s["sigma"], s["G"]
    det = G.det()
    adj = G.adjugate()  # G^{-1} det G: polynomial
    rel = sp.Integer(0)
    for i in range(k):
        for l_ in range(k):
            rel += adj[i, l_] * _stationarity(k, y[i] * y[l_])
    rel = sp.expand(rel)
    # replace E[x_j^2 y_j] by the x identities
    subs = {}
    for j, ident in enumerate(derive_x_sq_identities(k)):
        subs[moment(k, x[j] ** 2 * y[j])] = ident.rhs - eta / 2 * moment(k, x[j] ** 2 * y[j] ** 2)
    rel_x = sp.expand(rel.subs(subs))
    ginv_alpha = G.inv() * sp.Matrix(alpha)
    m = [2 * ginv_alpha[j] for j in range(k)]
    gap = [-moment(k, yj) for yj in y]
    lhs = sum(m[j] * gap[j] for j in range(k))
    a_term = (sp.Matrix(alpha).T * G.inv() * sp.Matrix(alpha))[0, 0] \
        - sum(alpha[i] * moment(k, x[i] ** 2) for i in range(k)) \
        + sp.Rational(1, 4) * sum(G[i, j] * moment(k, x[i] ** 2 * x[j] ** 2) for i in range(k) for j in range(k))
    rhs = eta / 2 * sum(sigma[j] ** 2 + moment(k, x[j] ** 2 * y[j] ** 2) for j in range(k)) + eta * a_term
    # sum_il (G^-1)_il stat(y_i y_l) = 2 eta E[y^T G^-1 a] + eta^2 E[a^T G^-1 a], y^T G^-1 a = y^T G^-1 alpha
    # - y.x^2/2: with the x identities this is eta (rhs - lhs); the relation carries the factor det G
    residual = sp.simplify(sp.together(rel_x - eta * det * (rhs - lhs)))
    return {"relation": rel, "relation_with_x_identities": rel_x, "lhs": lhs, "rhs": rhs, "residual": residual,
            "m": m}


@functools.lru_cache(maxsize=None)
def derive_gap_closure(k: int) -> dict:
    r"""Per-direction frozen-coefficient closure.

    Freeze :math:`y_j=y_j^*`, decorrelate it from :math:`x_j`: :math:`m_j=(1+\eta y_j^*)^2m_j+\eta^2\sigma_j^2`
    with the exact :math:`m_j=\mathbb E x_j^2=2(G^{-1}\alpha)_j`; keep the root with :math:`y_j^*\to0` as
    :math:`\sigma_j\to0`.  Returns lists ``exact``, ``leading``, ``discriminant`` (one per direction)
    and ``m``.
    """
    s = symbols(k)
    sol = derive_stationary_x_sq(k)["solution"]
    out = {"exact": [], "leading": [], "discriminant": [], "m": sol}
    for j in range(k):
        ystar = sp.Symbol("ystar", real=True)
        mj = sp.Symbol("m", positive=True)
        sj = s["sigma"][j]
        roots = sp.solve(sp.Eq(mj, (1 + eta * ystar) ** 2 * mj + eta**2 * sj**2), ystar)
        root = next(r for r in roots if sp.limit(r, sj, 0) == 0)
        gap_m = sp.simplify(-root)
        lead_m = sp.series(gap_m, sj, 0, 3).removeO()
        (radicand,) = [a.base for a in gap_m.atoms(sp.Pow) if a.exp == sp.Rational(1, 2)]
        out["exact"].append(gap_m.subs(mj, sol[j]))
        out["leading"].append(sp.simplify(lead_m.subs(mj, sol[j])))
        out["discriminant"].append(sp.simplify(radicand.subs(mj, sol[j])))
    out["gap_in_m"] = gap_m
    return out


@functools.lru_cache(maxsize=None)
def derive_slow_mode_covariance() -> dict:
    r"""Stationary covariance of one eigenmode of the linearised slow SDE (equal amplitudes :math:`r_0`).

    For :math:`r_j=x_j^2` the leading slow SDE (as for one direction,
    :func:`sdeeos.theory.self_stabilization.derive_slow_sde`) is
    :math:`dr_j=(2\eta y_jr_j+\eta^2\sigma^2)dt+2\eta\sigma\sqrt{r_j}\,dW_j`,
    :math:`dy_i=\eta(\alpha_i-\tfrac12\sum_jG_{ij}r_j)dt`.  When every :math:`r_j` sits at the same
    :math:`r_0` (and so :math:`y_j` at :math:`y_0=-\eta\sigma^2/(2r_0)`), the linearisation splits into the
    eigenmodes of G (eigenvalue g); each is a 2-D Ornstein–Uhlenbeck process
    :math:`d\tilde r=(2\eta y_0\tilde r+2\eta r_0\tilde y)dt+2\eta\sigma\sqrt{r_0}dW`,
    :math:`d\tilde y=-\tfrac{\eta g}2\tilde r\,dt`.  Returns ``var_r`` (:math:`2r_0^2`), ``var_y``
    (:math:`gr_0/2`), ``cov`` (0) and the symbols ``(g, r0, sigma)``.
    """
    g, r0, s_ = sp.symbols("g r0 sigma", positive=True)
    y0 = -eta * s_**2 / (2 * r0)
    A = sp.Matrix([[-2 * eta * y0, -2 * eta * r0], [eta * g / 2, 0]])  # drift = -A (r~, y~)
    D = sp.Matrix([[4 * eta**2 * s_**2 * r0, 0], [0, 0]])
    A_sym, C_sym = derive_lyapunov_equation(2)
    sub = {sp.Symbol(f"a{i}{j}", real=True): A[i, j] for i in range(2) for j in range(2)}
    sub.update({sp.Symbol("d00", real=True): D[0, 0], sp.Symbol("d01", real=True): 0,
                sp.Symbol("d11", real=True): D[1, 1]})
    C = sp.simplify(C_sym.subs(sub))
    return {"var_r": sp.factor(C[0, 0]), "var_y": sp.factor(C[1, 1]), "cov": sp.factor(C[0, 1]),
            "symbols": (g, r0, s_)}


@functools.lru_cache(maxsize=None)
def derive_symmetric_case(k: int) -> dict:
    r"""k degenerate directions: :math:`\alpha_i=\alpha`, :math:`\sigma_j=\sigma`, :math:`G=(\beta-c)I+c\,\mathbf 1\mathbf 1^\top`.

    Returns ``x_sq`` (:math:`2\alpha/(\beta+(k-1)c)`), ``beta_eff``, ``gap_exact`` and ``gap_leading``
    (closure, the same for every direction), ``gap_identity`` (the weighted identity divided by
    :math:`k\,m`, in the moment symbols of direction 1 and the symbol ``A`` for
    :math:`\mathbb E[a^\top G^{-1}a]`), and ``gap_corrected``: that identity with the slow-mode
    fluctuations of :func:`derive_slow_mode_covariance` (G has the eigenvalue :math:`\beta+(k-1)c` once
    and :math:`\beta-c` k−1 times; :math:`\operatorname{Var}y_j` and :math:`\operatorname{Var}x_j^2` are
    the mode averages, :math:`\mathbb E[a^\top G^{-1}a]=\tfrac14\sum_mg_m\operatorname{Var}\tilde r_m`),
    solved for the gap (root continuous with the closure).  For k = 1 it is
    :func:`sdeeos.theory.self_stabilization.gap_corrected`.
    """
    s = symbols(k)
    a_, s_, b_, c_ = sp.symbols("alpha sigma beta c", positive=True)
    sub = {ai: a_ for ai in s["alpha"]}
    sub.update({si: s_ for si in s["sigma"]})
    for i in range(k):
        for j in range(k):
            sub[s["G"][i, j]] = b_ if i == j else c_
    cl = derive_gap_closure(k)
    x_sq = sp.simplify(derive_stationary_x_sq(k)["solution"][0].subs(sub, simultaneous=True))
    A = sp.Symbol("A", nonnegative=True)
    x1, y1 = s["x"][0], s["y"][0]
    m = x_sq
    gap_id = sp.expand(eta / (2 * m) * (s_**2 + moment(k, x1**2 * y1**2)) + eta / (k * m) * A)
    # slow-mode fluctuations
    mode = derive_slow_mode_covariance()
    g, r0, sm = mode["symbols"]
    eig = [b_ + (k - 1) * c_] + [b_ - c_] * (k - 1)
    at = {r0: m, sm: s_}
    var_y = sp.simplify(sum(mode["var_y"].subs(g, e) for e in eig) / k).subs(at)
    var_r = sp.simplify(sum(mode["var_r"].subs(g, e) for e in eig) / k).subs(at)
    e_a = sp.simplify(sum(e * mode["var_r"].subs(g, e) for e in eig) / 4).subs(at)
    gap = sp.Symbol("DeltaS", positive=True)
    eps = sp.Symbol("eps", nonnegative=True)  # eps = 0: no fluctuations (the closure)
    eq = sp.expand(gap_id.subs({moment(k, x1**2 * y1**2): m * (gap**2 + eps * var_y), A: eps * e_a}) - gap)
    closure = sp.simplify(cl["exact"][0].subs(sub, simultaneous=True))
    roots = sp.solve(sp.Eq(eq, 0), gap)
    # the root continuous with the closure (compared at a generic point inside the domain)
    point = {eta: sp.Rational(1, 100), a_: 1, s_: 3, b_: 100, c_: sp.Rational(37, 3)}
    (chosen,) = [r for r in roots if abs(sp.N((r.subs(eps, 0) - closure).subs(point))) < 1e-12]
    return {"x_sq": x_sq, "gap_exact": closure,
            "gap_leading": sp.simplify(cl["leading"][0].subs(sub, simultaneous=True)),
            "beta_eff": sp.simplify(2 * a_ / x_sq), "gap_identity": gap_id, "symbols": (a_, s_, b_, c_),
            "A": A, "var_y": sp.simplify(var_y), "var_x_sq": sp.simplify(var_r), "mean_a_Ginv_a": sp.simplify(e_a),
            "gap_corrected": sp.simplify(chosen.subs(eps, 1))}


def symmetric_gaps(eta_, alpha, sigma, beta, c, k) -> dict[str, float]:
    """``exact`` (closure), ``leading`` and ``corrected`` gap of the symmetric case, lambdified."""
    sym = derive_symmetric_case(int(k))
    args = (eta,) + sym["symbols"][:3] + (sym["symbols"][3],)
    vals = (eta_, alpha, sigma, beta, c)
    return {key: float(sp.lambdify(args, sym[f"gap_{key}"], "numpy")(*vals))
            for key in ("exact", "leading", "corrected")}


# ---------------------------------------------------------------------------------------------
# Numbers: the closure in terms of m = 2 G^{-1} alpha (lambdified once from the k = 1 derivation's
# per-direction root, which is the same expression for every direction)
# ---------------------------------------------------------------------------------------------
def check_coupling(G, k: int | None = None) -> np.ndarray:
    """G as a float array: square, symmetric, finite, positive definite (a Gram matrix of independent ∇λ)."""
    G = np.atleast_2d(np.asarray(G, dtype=float))
    if G.ndim != 2 or G.shape[0] != G.shape[1] or (k is not None and G.shape[0] != k):
        raise ParameterError(f"coupling must be a square {k or 'k'}x{k or 'k'} matrix, got shape {G.shape}")
    if not np.all(np.isfinite(G)):
        raise ParameterError("coupling must be finite")
    if not np.allclose(G, G.T, rtol=1e-12, atol=0.0):
        raise ParameterError("coupling must be symmetric (G_ij = grad lambda_i . grad lambda_j)")
    if np.linalg.eigvalsh(G)[0] <= 0:
        raise ParameterError("coupling must be positive definite (independent sharpness gradients)")
    return G


@functools.lru_cache(maxsize=None)
def _per_direction():
    cl = derive_gap_closure(1)
    mj = sp.Symbol("m", positive=True)
    s1 = symbols(1)["sigma"][0]
    gap_m = cl["gap_in_m"]
    lead = sp.series(gap_m, s1, 0, 3).removeO()
    (radicand,) = [a.base for a in gap_m.atoms(sp.Pow) if a.exp == sp.Rational(1, 2)]
    args = (eta, s1, mj)
    return {"exact": sp.lambdify(args, gap_m, "numpy"), "leading": sp.lambdify(args, lead, "numpy"),
            "disc": sp.lambdify(args, radicand, "numpy")}


def x_sq_stationary(alpha, G) -> np.ndarray:
    r"""Exact stationary amplitudes :math:`\mathbb E x_j^2 = 2(G^{-1}\alpha)_j` (solution of the derived system)."""
    alpha = np.asarray(alpha, dtype=float).reshape(-1)
    G = check_coupling(G, alpha.size)
    return 2.0 * np.linalg.solve(G, alpha)


def beta_eff(alpha, G) -> np.ndarray:
    r""":math:`\beta_{{\rm eff},j}=\alpha_j/(G^{-1}\alpha)_j`: the β that puts direction j into the one-direction formula."""
    alpha = np.asarray(alpha, dtype=float).reshape(-1)
    return 2.0 * alpha / x_sq_stationary(alpha, G)


def _gap(kind, eta_, alpha, sigma, G, outside):
    alpha = np.asarray(alpha, dtype=float).reshape(-1)
    sigma = np.asarray(sigma, dtype=float).reshape(-1)
    if sigma.shape != alpha.shape:
        raise ParameterError(f"sigma must have one entry per direction ({alpha.size}), got {sigma.size}")
    m = x_sq_stationary(alpha, G)
    f = _per_direction()
    ok = (m > 0) & (np.asarray(f["disc"](eta_, sigma, np.where(m > 0, m, 1.0))) >= 0)
    if outside == "raise" and not np.all(ok):
        raise OutsideDomainError(
            "no stationary closure state for every direction: needs m_j = 2 (G^-1 alpha)_j > 0 and "
            f"eta^2 sigma_j^2 <= m_j (m = {m}, eta^2 sigma^2 = {eta_**2 * sigma**2})")
    if outside not in ("raise", "nan"):
        raise ValueError("outside must be 'raise' or 'nan'")
    with np.errstate(invalid="ignore", divide="ignore"):
        val = np.asarray(f[kind](eta_, np.where(ok, sigma, 0.0), np.where(ok, m, 1.0)), dtype=float)
    return np.where(ok, val, np.nan)


def gap_exact(eta_, alpha, sigma, G, *, outside="raise") -> np.ndarray:
    r"""Closure gap per direction, :math:`(1-\sqrt{1-\eta^2\sigma_j^2/m_j})/\eta`, :math:`m=2G^{-1}\alpha`."""
    return _gap("exact", eta_, alpha, sigma, G, outside)


def gap_leading(eta_, alpha, sigma, G, *, outside="raise") -> np.ndarray:
    r"""Leading-order gap per direction, :math:`\eta\sigma_j^2/(2m_j)=\eta\beta_{{\rm eff},j}\sigma_j^2/(4\alpha_j)`."""
    return _gap("leading", eta_, alpha, sigma, G, outside)


def weighted_gap_rhs(eta_, alpha, sigma, G, mean_x_sq_y_sq, mean_x_sq, mean_r_G_r) -> float:
    r"""Right side of the exact weighted identity, from measured moments.

    :math:`\tfrac\eta2\sum_j(\sigma_j^2+\mathbb E[x_j^2y_j^2])+\eta(\alpha^\top G^{-1}\alpha-\alpha\cdot\mathbb E[x^2]
    +\tfrac14\mathbb E[\sum_{ij}G_{ij}x_i^2x_j^2])`; equals :math:`\sum_jm_j\Delta S_j` in a stationary state.
    """
    alpha = np.asarray(alpha, dtype=float).reshape(-1)
    sigma = np.asarray(sigma, dtype=float).reshape(-1)
    G = check_coupling(G, alpha.size)
    ginv_a = np.linalg.solve(G, alpha)
    a_term = alpha @ ginv_a - alpha @ np.asarray(mean_x_sq, float) + 0.25 * np.asarray(mean_r_G_r, float)
    return eta_ / 2 * (np.sum(sigma**2) + np.sum(np.asarray(mean_x_sq_y_sq, float), axis=0)) + eta_ * a_term


def symmetric_beta_eff(beta, c, k):
    r""":math:`\beta+(k-1)c`, lambdified from :func:`derive_symmetric_case`."""
    sym = derive_symmetric_case(int(k))
    a_, s_, b_, c_ = sym["symbols"]
    return sp.lambdify((b_, c_), sym["beta_eff"], "numpy")(beta, c)
