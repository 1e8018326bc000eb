r"""The stochastic reduced self-stabilization model: stationary identities and the sharpness gap.

Model (Damian, Nichani & Lee 2023 reduced dynamics plus projected gradient noise, sharpness units;
math.md §2.5, §9.1)

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
from ._expectation import expectation, moment_symbol

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
]

eta, alpha, beta, sigma = sp.symbols("eta alpha beta sigma", positive=True)
x, y = sp.symbols("x y", real=True)
z = sp.Symbol("z", real=True)  # standard normal noise input


def symbols():
    """``(x, y, z, eta, alpha, beta, sigma)``: the shared SymPy symbols of the reduced model."""
    return x, y, z, eta, alpha, beta, sigma


def reduced_update(noisy: bool = True) -> tuple[sp.Expr, sp.Expr]:
    """The reduced map ``(x', y')``; ``noisy=False`` is full-batch GD."""
    x_next = -(1 + eta * y) * x + (eta * sigma * z if noisy else 0)
    y_next = y + eta * (alpha - beta * x**2 / 2)
    return x_next, y_next


def _stationarity(monomial) -> sp.Expr:
    """E[m(s')] - E[m(s)] for a monomial m of the state: zero in any stationary state."""
    x_next, y_next = reduced_update()
    shifted = monomial.subs({x: x_next, y: y_next}, simultaneous=True)
    return sp.expand(expectation(shifted - monomial, (x, y), (z,)))


def _m(px, py):
    return moment_symbol((x, y), (px, py))


@functools.lru_cache(maxsize=None)
def derive_stationary_x_sq() -> sp.Expr:
    """:math:`\\mathbb E x^2` from :math:`\\mathbb E y' = \\mathbb E y` (exact): ``2*alpha/beta``."""
    (sol,) = sp.solve(_stationarity(y), _m(2, 0))
    return sp.simplify(sol)


@functools.lru_cache(maxsize=None)
def derive_x_sq_identity() -> sp.Eq:
    """Stationarity of :math:`\\mathbb E x^2` (exact), as ``Eq(E[x**2*y] + eta/2 E[x**2*y**2], -eta sigma**2/2)``."""
    rel = _stationarity(x**2) / (2 * eta)
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
    rels = [_stationarity(y), _stationarity(x**2), _stationarity(y**2)]
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
    """Period (in steps) of the linearised deterministic cycle, :math:`2\\pi/(\\eta\\sqrt{2\\alpha})` (math.md §2.6)."""
    return 2 * np.pi / (eta * np.sqrt(2 * alpha))
