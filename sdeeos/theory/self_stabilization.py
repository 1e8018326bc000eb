r"""The stochastic reduced self-stabilization model: stationary identities and the sharpness gap.

Model (Damian, Nichani & Lee 2023 reduced dynamics plus projected gradient noise, sharpness units;
docs/theory.md#reduced-model)

.. math::

    x_{t+1} = -(1+\eta y_t)\,x_t + \eta\sigma z_t,\qquad
    y_{t+1} = y_t + \eta\,(\alpha - \tfrac{\beta}{2}x_t^2),\qquad z_t\sim N(0,1),

with sharpness :math:`S_t = 2/\eta + y_t` and gap :math:`\Delta S = 2/\eta - \mathbb E S = -\mathbb E y`.

Everything below is *derived* by SymPy from these two update expressions (the same expressions the
simulation kernels are generated from), then lambdified.

* Exact: :math:`\mathbb E x^2 = 2\alpha/\beta` (stationarity of :math:`\mathbb E y`).
* Exact: :math:`\mathbb E[y x^2] + \tfrac\eta2\mathbb E[y^2x^2] = -\tfrac{\eta\sigma^2}{2}`
  (stationarity of :math:`\mathbb E x^2`).
* Exact gap identity (stationarity of :math:`\mathbb E y^2`, combined with the two above):

  .. math:: \Delta S = \frac{\eta\beta\sigma^2}{4\alpha}
            + \frac{\eta\beta}{4\alpha}\mathbb E[y^2x^2]
            + \frac{\eta}{2\alpha}\mathbb E\big[(\alpha-\tfrac\beta2x^2)^2\big]
            \;\ge\; \frac{\eta\beta\sigma^2}{4\alpha}.

  The leading-order (Liao et al.) gap is therefore a strict *lower bound* of the stationary gap.
* Frozen-coefficient + decorrelation closure: :math:`\Delta S_{\rm exact} = (1-\sqrt{1-\eta^2\beta\sigma^2/(2\alpha)})/\eta`,
  with a stationary solution only if :math:`\eta^2\beta\sigma^2 \le 2\alpha`; to leading order
  :math:`\eta\beta\sigma^2/(4\alpha)`.

* Beyond the closure (:func:`derive_gap_corrected`): the closure is the exact identity with the
  slow-variable fluctuations :math:`\operatorname{Var}y` and :math:`\operatorname{Var}x^2` set to zero.
  The linearised slow SDE of :math:`(r=x^2, y)` (:func:`derive_slow_sde`) is an Ornstein–Uhlenbeck
  process with :math:`\operatorname{Var}y=\alpha`, :math:`\operatorname{Var}x^2=2(2\alpha/\beta)^2`,
  :math:`\operatorname{Cov}=0`; inserted in the identity,

  .. math:: \Delta S_{\rm corr}=\frac{1-\sqrt{1-\eta^2\beta\sigma^2/(2\alpha)-3\eta^2\alpha}}{\eta}
            =\frac{\eta\beta\sigma^2}{4\alpha}+\frac32\eta\alpha+O(\eta^3).

>>> round(float(gap_corrected(0.01, 1.0, 100.0, 1.0)), 6)
0.265352
>>> float(gap_leading(0.01, 1.0, 100.0, 10.0))
25.0
>>> round(float(gap_exact(0.01, 1.0, 100.0, 10.0)), 6)
29.289322
"""

from __future__ import annotations

import functools

import numpy as np
import sympy as sp

from .._errors import OutsideDomainError
from ._expectation import expectation, gaussian_moment, moment_symbol
from .reduced_model import reduced_map
from .sde import derive_lyapunov_equation

__all__ = [
    "symbols",
    "reduced_update",
    "derive_stationary_x_sq",
    "derive_x_sq_identity",
    "derive_gap_identity",
    "derive_gap_closure",
    "x_sq_stationary",
    "gap_leading",
    "gap_exact",
    "gap_from_moments",
    "stationary_state_exists",
    "check_stationary_domain",
    "cycle_period",
    "derive_slow_sde",
    "derive_slow_linear_covariance",
    "derive_gap_corrected",
    "gap_corrected",
    "slow_variances_linear",
]

eta, alpha, beta, sigma = sp.symbols("eta alpha beta sigma", positive=True)
x, y = sp.symbols("x y", real=True)
z = sp.Symbol("z", real=True)  # standard normal noise input


def symbols():
    """``(x, y, z, eta, alpha, beta, sigma)``: the shared SymPy symbols of the reduced model."""
    return x, y, z, eta, alpha, beta, sigma


def reduced_update(noisy: bool = True) -> tuple[sp.Expr, sp.Expr]:
    """The reduced map ``(x', y')``; ``noisy=False`` is full-batch GD.

    Derived from a generic cubic Taylor model of the loss (:func:`sdeeos.theory.reduced_model.reduced_map`,
    docs/theory.md#reduced-model); SGD adds the projected gradient noise ``eta*sigma*z`` to ``x'``.

    >>> reduced_update()
    (eta*sigma*z + x*(-eta*y - 1), eta*(alpha - beta*x**2/2) + y)
    """
    x_next, y_next = reduced_map()
    if noisy:
        x_next = x_next + eta * sigma * z
    return x_next, y_next


def stationarity(monomial) -> sp.Expr:
    """E[m(s')] - E[m(s)] for a monomial m of the state: zero in any stationary state."""
    x_next, y_next = reduced_update()
    shifted = monomial.subs({x: x_next, y: y_next}, simultaneous=True)
    return sp.expand(expectation(shifted - monomial, (x, y), (z,)))


def _m(px, py):
    return moment_symbol((x, y), (px, py))


@functools.lru_cache(maxsize=None)
def derive_stationary_x_sq() -> sp.Expr:
    """:math:`\\mathbb E x^2` from :math:`\\mathbb E y' = \\mathbb E y` (exact): ``2*alpha/beta``."""
    (sol,) = sp.solve(stationarity(y), _m(2, 0))
    return sp.simplify(sol)


@functools.lru_cache(maxsize=None)
def derive_x_sq_identity() -> sp.Eq:
    """Stationarity of :math:`\\mathbb E x^2` (exact), as ``Eq(E[x**2*y] + eta/2 E[x**2*y**2], -eta sigma**2/2)``."""
    rel = stationarity(x**2) / (2 * eta)
    lhs = _m(2, 1) + eta / 2 * _m(2, 2)
    assert sp.simplify(rel - (lhs + eta * sigma**2 / 2)) == 0
    return sp.Eq(lhs, -eta * sigma**2 / 2)


@functools.lru_cache(maxsize=None)
def derive_gap_identity() -> sp.Expr:
    r"""Exact stationary gap :math:`-\mathbb E y` in terms of :math:`\mathbb E[x^2y^2]` and :math:`\mathbb E[x^4]`.

    Solves the three stationarity relations (of :math:`\mathbb E y`, :math:`\mathbb E x^2`,
    :math:`\mathbb E y^2`) for :math:`\mathbb E x^2`, :math:`\mathbb E[x^2 y]` and :math:`\mathbb E y`.
    The result is expressed in the moment symbols ``E[x**2*y**2]`` and ``E[x**4]``.
    """
    unknowns = [_m(2, 0), _m(2, 1), _m(0, 1)]
    rels = [stationarity(y), stationarity(x**2), stationarity(y**2)]
    sol = sp.solve(rels, unknowns, dict=True)[0]
    return sp.expand(-sol[_m(0, 1)])


@functools.lru_cache(maxsize=None)
def derive_gap_closure() -> dict[str, sp.Expr]:
    r"""Frozen-coefficient + decorrelation closure for the gap.

    Freeze :math:`y = y^*`, treat it as independent of :math:`x`: :math:`\mathbb E x^2 =
    (1+\eta y^*)^2\mathbb E x^2 + \eta^2\sigma^2`; equate with the exact :math:`2\alpha/\beta`; keep the
    root with :math:`y^*\to0` as :math:`\sigma\to0`.  Returns ``exact``, ``leading`` (first order in
    :math:`\sigma^2`), and ``discriminant`` (a stationary solution exists iff it is >= 0).
    """
    ystar = sp.Symbol("ystar", real=True)
    m2 = derive_stationary_x_sq()
    closure = sp.Eq(m2, (1 + eta * ystar) ** 2 * m2 + eta**2 * sigma**2)
    roots = sp.solve(closure, ystar)
    root = next(r for r in roots if sp.limit(r, sigma, 0) == 0)
    gap = sp.simplify(-root)
    leading = sp.series(gap, sigma, 0, 3).removeO()
    # y* is real iff the radicand under the square root is non-negative
    (radicand,) = [a.base for a in gap.atoms(sp.Pow) if a.exp == sp.Rational(1, 2)]
    return {"exact": gap, "leading": sp.simplify(leading), "discriminant": sp.expand(radicand)}


@functools.lru_cache(maxsize=None)
def _numeric():
    closure = derive_gap_closure()
    args = (eta, alpha, beta, sigma)
    e_x2y2, e_x4 = _m(2, 2), _m(4, 0)
    return {
        "x_sq": sp.lambdify((alpha, beta), derive_stationary_x_sq(), "numpy"),
        "exact": sp.lambdify(args, closure["exact"], "numpy"),
        "leading": sp.lambdify(args, closure["leading"], "numpy"),
        "disc": sp.lambdify(args, closure["discriminant"], "numpy"),
        "identity": sp.lambdify(args + (e_x2y2, e_x4), derive_gap_identity(), "numpy"),
    }


def x_sq_stationary(alpha, beta):
    """Exact stationary :math:`\\mathbb E x^2 = 2\\alpha/\\beta` (lambdified from the derivation)."""
    return _numeric()["x_sq"](alpha, beta)


def stationary_state_exists(eta, alpha, beta, sigma):
    """Whether the closure has a stationary solution: :math:`\\eta^2\\beta\\sigma^2 \\le 2\\alpha`."""
    eta, alpha, beta, sigma = (np.asarray(v, dtype=float) for v in (eta, alpha, beta, sigma))
    return (np.asarray(_numeric()["disc"](eta, alpha, beta, sigma)) >= 0)[()]


def check_stationary_domain(eta, alpha, beta, sigma) -> None:
    if not np.all(stationary_state_exists(eta, alpha, beta, sigma)):
        raise OutsideDomainError(
            "no stationary state: eta**2*beta*sigma**2 > 2*alpha "
            f"(eta={eta}, alpha={alpha}, beta={beta}, sigma={sigma}); the gap formula does not apply"
        )


def _maybe_nan(fn, eta, alpha, beta, sigma, outside):
    eta, alpha, beta, sigma = (np.asarray(v, dtype=float) for v in (eta, alpha, beta, sigma))
    if outside == "raise":
        check_stationary_domain(eta, alpha, beta, sigma)
        return np.asarray(fn(eta, alpha, beta, sigma), dtype=float)[()]
    if outside != "nan":
        raise ValueError("outside must be 'raise' or 'nan'")
    ok = stationary_state_exists(eta, alpha, beta, sigma)
    with np.errstate(invalid="ignore"):
        val = np.asarray(fn(eta, alpha, beta, np.where(ok, sigma, 0.0)), dtype=float)
    return np.where(ok, val, np.nan)[()]


def gap_leading(eta, alpha, beta, sigma, *, outside="raise"):
    """Leading-order gap :math:`\\eta\\beta\\sigma^2/(4\\alpha)` (Liao, Kolomvaki & Kyrillidis 2026).

    ``outside="raise"`` raises ``OutsideDomainError`` where no stationary state exists;
    ``outside="nan"`` returns NaN there.
    """
    return _maybe_nan(_numeric()["leading"], eta, alpha, beta, sigma, outside)


def gap_exact(eta, alpha, beta, sigma, *, outside="raise"):
    """Exact solution of the closure, :math:`(1-\\sqrt{1-\\eta^2\\beta\\sigma^2/(2\\alpha)})/\\eta`."""
    return _maybe_nan(_numeric()["exact"], eta, alpha, beta, sigma, outside)


def gap_from_moments(eta, alpha, beta, sigma, mean_x_sq_y_sq, mean_x_4):
    """The exact stationary gap identity evaluated at measured :math:`\\mathbb E[x^2y^2]`, :math:`\\mathbb E[x^4]`."""
    return _numeric()["identity"](eta, alpha, beta, sigma, mean_x_sq_y_sq, mean_x_4)


def cycle_period(eta, alpha):
    """Period (in steps) of the linearised deterministic cycle, :math:`2\\pi/(\\eta\\sqrt{2\\alpha})` (docs/theory.md#deterministic-cycle)."""
    return 2 * np.pi / (eta * np.sqrt(2 * alpha))


# ---------------------------------------------------------------------------------------------
# Beyond the closure: slow-variable fluctuations
# ---------------------------------------------------------------------------------------------
r_slow = sp.Symbol("r", positive=True)  # r = x**2, the slow amplitude variable


def _conditional_expectation_over_noise(expr) -> sp.Expr:
    """E[expr | x, y] over the step's standard normal z (polynomial in z)."""
    poly = sp.Poly(sp.expand(expr), z)
    return sp.expand(sum(c * gaussian_moment(k) for (k,), c in poly.terms()))


def _to_r(expr) -> sp.Expr:
    expr = sp.expand(expr)
    if sp.expand(expr.subs(x, -x) - expr) != 0:
        raise AssertionError("expected an even function of x")  # pragma: no cover
    return sp.expand(expr.subs(x**2, r_slow).subs(x, sp.sqrt(r_slow)))


@functools.lru_cache(maxsize=None)
def derive_slow_sde() -> dict[str, sp.Matrix]:
    r"""Diffusion approximation of the slow variables :math:`(r, y)=(x^2, y)` of the stochastic map.

    From one step of the exact map: ``drift`` :math:`b=\mathbb E[\Delta(r,y)\,|\,x,y]`,
    ``second_moment`` :math:`\mathbb E[\Delta\Delta^\top|x,y]` and ``covariance``
    (:math:`\operatorname{Cov}[\Delta|x,y]`), all functions of :math:`(r,y)` (the fast sign of
    :math:`x` drops out).  ``drift_leading`` :math:`(2\eta yr+\eta^2\sigma^2,\ \eta(\alpha-\beta r/2))`
    and ``diffusion_leading`` :math:`\operatorname{diag}(4\eta^2\sigma^2r, 0)` keep the lowest order in
    :math:`\eta` of each effect (:math:`|\eta y|\ll1`): the Itô SDE, time in steps,

    .. math:: dr=(2\eta yr+\eta^2\sigma^2)\,dt+2\eta\sigma\sqrt r\,dW,\qquad dy=\eta(\alpha-\tfrac\beta2r)\,dt.
    """
    x_next, y_next = reduced_update(noisy=True)
    dr = x_next**2 - x**2
    dy = y_next - y
    deltas = (dr, dy)
    drift = sp.Matrix([_to_r(_conditional_expectation_over_noise(d)) for d in deltas])
    second = sp.Matrix(2, 2, lambda i, j: _to_r(_conditional_expectation_over_noise(deltas[i] * deltas[j])))
    cov = sp.expand(second - drift * drift.T)
    # leading order: drift of r to O(eta) in y and O(eta^2) in the noise; diffusion to O(eta^2)
    b_r = sp.expand(drift[0])
    b_r_leading = sum(t for t in b_r.as_ordered_terms() if not (t.has(y) and sp.degree(t, eta) > 1))
    d_rr_leading = sp.series(cov[0, 0], eta, 0, 3).removeO()
    return {"drift": drift, "second_moment": second, "covariance": cov,
            "drift_leading": sp.Matrix([b_r_leading, drift[1]]),
            "diffusion_leading": sp.Matrix([[sp.expand(d_rr_leading), 0], [0, 0]])}


@functools.lru_cache(maxsize=None)
def derive_slow_linear_covariance() -> dict[str, sp.Expr]:
    r"""Stationary covariance of the leading slow SDE linearised at its fixed point.

    Fixed point :math:`r_0=2\alpha/\beta`, :math:`y_0=-\eta\beta\sigma^2/(4\alpha)`; drift matrix
    :math:`-A` (the Jacobian) and diffusion :math:`D` there; :math:`AC+CA^\top=D` solved with
    :func:`sdeeos.theory.sde.derive_lyapunov_equation`.  Returns ``fixed_point``, ``A``, ``D``,
    ``var_r``, ``var_y``, ``cov_ry``.
    """
    sde_ = derive_slow_sde()
    b, D = sde_["drift_leading"], sde_["diffusion_leading"]
    (fp,) = sp.solve(list(b), [r_slow, y], dict=True)
    jac = b.jacobian([r_slow, y]).subs(fp)
    A = sp.simplify(-jac)
    Dfp = sp.simplify(D.subs(fp))
    A_sym, C_sym = derive_lyapunov_equation(2)
    sub = {sp.Symbol(f"a{i}{j}", real=True): A[i, j] for i in range(2) for j in range(2)}
    sub.update({sp.Symbol("d00", real=True): Dfp[0, 0], sp.Symbol("d01", real=True): Dfp[0, 1],
                sp.Symbol("d11", real=True): Dfp[1, 1]})
    C = sp.simplify(C_sym.subs(sub))
    return {"fixed_point": fp, "A": A, "D": Dfp, "var_r": sp.factor(C[0, 0]), "var_y": sp.factor(C[1, 1]),
            "cov_ry": sp.factor(C[0, 1])}


@functools.lru_cache(maxsize=None)
def derive_gap_corrected() -> dict[str, sp.Expr]:
    r"""The exact gap identity with the linear-SDE slow fluctuations: first correction beyond the closure.

    In the exact identity, write :math:`\mathbb E[x^2y^2]=\mathbb E[r]\,(\Delta S^2+\operatorname{Var}y)
    -2\Delta S\operatorname{Cov}(r,y)+\mathbb E[\tilde r\tilde y^2]` and
    :math:`\mathbb E x^4=r_0^2+\operatorname{Var}r`; insert the Gaussian (linear-SDE) values (third
    central moment 0) and solve the quadratic for :math:`\Delta S` (root continuous with the closure).
    Setting ``var_y = var_r = 0`` recovers the closure exactly.  Returns ``exact``, ``leading``
    (to first order in :math:`\eta` at fixed :math:`\eta\sigma^2`), ``discriminant``, ``equation``.
    """
    lin = derive_slow_linear_covariance()
    gap = sp.Symbol("DeltaS", positive=True)
    r0 = derive_stationary_x_sq()
    e_x2y2 = r0 * (gap**2 + lin["var_y"]) - 2 * gap * lin["cov_ry"]
    e_x4 = r0**2 + lin["var_r"]
    identity = derive_gap_identity().subs({_m(2, 2): e_x2y2, _m(4, 0): e_x4})
    equation = sp.expand(identity - gap)
    roots = sp.solve(sp.Eq(equation, 0), gap)
    closure = derive_gap_closure()["exact"]
    # the root that tends to the closure's root when the fluctuation terms are switched off
    eps = sp.Symbol("eps", positive=True)
    eq_eps = sp.expand(derive_gap_identity().subs({
        _m(2, 2): r0 * (gap**2 + eps * lin["var_y"]), _m(4, 0): r0**2 + eps * lin["var_r"]}) - gap)
    roots_eps = sp.solve(sp.Eq(eq_eps, 0), gap)
    (chosen,) = [r for r in roots_eps if sp.simplify(r.subs(eps, 0) - closure) == 0]
    exact = sp.simplify(chosen.subs(eps, 1))
    if not any(sp.simplify(exact - r) == 0 for r in roots):  # pragma: no cover
        raise AssertionError("corrected root not found")
    (radicand,) = [a.base for a in exact.atoms(sp.Pow) if a.exp == sp.Rational(1, 2)]
    # leading order: series in eta with eta*sigma**2 held fixed
    w = sp.Symbol("w", positive=True)  # w = eta * sigma**2
    leading = sp.series(exact.subs(sigma, sp.sqrt(w / eta)), eta, 0, 2).removeO().subs(w, eta * sigma**2)
    return {"exact": exact, "leading": sp.expand(leading), "discriminant": sp.expand(radicand),
            "equation": equation}


@functools.lru_cache(maxsize=None)
def _numeric_corrected():
    c = derive_gap_corrected()
    lin = derive_slow_linear_covariance()
    args = (eta, alpha, beta, sigma)
    return {"exact": sp.lambdify(args, c["exact"], "numpy"),
            "disc": sp.lambdify(args, c["discriminant"], "numpy"),
            "var_y": sp.lambdify(args, lin["var_y"], "numpy"),
            "var_r": sp.lambdify(args, lin["var_r"], "numpy"),
            "cov_ry": sp.lambdify(args, lin["cov_ry"], "numpy")}


def gap_corrected(eta, alpha, beta, sigma, *, outside="raise"):
    r"""Gap with the first slow-fluctuation correction, :math:`(1-\sqrt{1-\eta^2\beta\sigma^2/(2\alpha)-3\eta^2\alpha})/\eta`.

    Valid when :math:`\sigma^2\gtrsim 4\alpha^2/\beta` (fluctuations around the fixed point are
    linear; the closure itself needs :math:`\sigma^2\gg4\alpha^2/\beta`).  Where the square root is
    not real (no stationary solution of the corrected equation), ``outside="raise"`` raises
    ``OutsideDomainError`` and ``outside="nan"`` returns NaN.
    """
    f = _numeric_corrected()
    e, a, b, s = (np.asarray(v, dtype=float) for v in (eta, alpha, beta, sigma))
    ok = np.asarray(f["disc"](e, a, b, s)) >= 0
    if outside == "raise":
        if not np.all(ok):
            raise OutsideDomainError(
                "no stationary solution of the corrected gap equation: "
                f"eta**2*beta*sigma**2/(2*alpha) + 3*eta**2*alpha > 1 (eta={eta}, alpha={alpha}, beta={beta}, "
                f"sigma={sigma})")
        return np.asarray(f["exact"](e, a, b, s), dtype=float)[()]
    if outside != "nan":
        raise ValueError("outside must be 'raise' or 'nan'")
    with np.errstate(invalid="ignore"):
        val = np.asarray(f["exact"](e, a, b, np.where(ok, s, 0.0)), dtype=float)
    return np.where(ok, val, np.nan)[()]


def slow_variances_linear(eta, alpha, beta, sigma) -> dict[str, float]:
    r"""Linear-SDE stationary ``var_y`` (:math:`\alpha`), ``var_x_sq`` (:math:`2(2\alpha/\beta)^2`), ``cov_x_sq_y`` (0)."""
    f = _numeric_corrected()
    args = tuple(float(v) for v in (eta, alpha, beta, sigma))
    return {"var_y": float(f["var_y"](*args)), "var_x_sq": float(f["var_r"](*args)),
            "cov_x_sq_y": float(f["cov_ry"](*args))}
