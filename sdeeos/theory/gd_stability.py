r"""Linear stability of GD, heavy-ball and Nesterov momentum on a quadratic, derived from the updates.

On one eigen-direction of a quadratic, :math:`L=\frac a2\theta^2`, each method is a linear recursion.
SymPy builds its companion matrix from the update rule, takes the characteristic polynomial
:math:`p(z)=z^2+c_1z+c_0` and applies the Schur stability criterion for degree 2 (both roots in
the open unit disk), itself derived here from the Möbius map :math:`z=(1+w)/(1-w)` (unit disk to
left half-plane) and Routh–Hurwitz for a quadratic (all coefficients of one sign):

.. math:: p(1)>0,\qquad p(-1)>0,\qquad 1-c_0>0 .

Results (with :math:`0\le\beta<1`): GD :math:`0<\eta a<2`; heavy ball
:math:`\theta_{t+1}=\theta_t-\eta\nabla L+\beta(\theta_t-\theta_{t-1})`: :math:`0<\eta a<2+2\beta`;
Nesterov :math:`\theta_{t+1}=y_t-\eta\nabla L(y_t)`, :math:`y_t=\theta_t+\beta(\theta_t-\theta_{t-1})`:
:math:`0<\eta a<\frac{2+2\beta}{1+2\beta}`.

>>> float(gd_threshold())
2.0
>>> float(heavy_ball_threshold(0.9))
3.8
>>> round(float(nesterov_threshold(0.9)), 12)  # 3.8/2.8
1.357142857143
"""

from __future__ import annotations

import functools

import numpy as np
import sympy as sp

from .._validation import check_real

__all__ = [
    "symbols",
    "METHODS",
    "update_rule",
    "companion_matrix",
    "characteristic_polynomial",
    "derive_schur_conditions_degree2",
    "derive_stability_conditions",
    "derive_threshold",
    "gd_threshold",
    "heavy_ball_threshold",
    "nesterov_threshold",
    "is_stable",
]

eta = sp.Symbol("eta", positive=True)
a = sp.Symbol("a", positive=True)  # curvature (Hessian eigenvalue)
momentum = sp.Symbol("beta", nonnegative=True)
z = sp.Symbol("z")
theta_now, theta_prev = sp.symbols("theta_t theta_tm1", real=True)

METHODS = ("gd", "heavy_ball", "nesterov")


def symbols():
    """``(eta, a, beta, z)``: step size, curvature, momentum, polynomial variable."""
    return eta, a, momentum, z


def update_rule(method: str) -> sp.Expr:
    r""":math:`\theta_{t+1}` as an expression in :math:`\theta_t`, :math:`\theta_{t-1}` for :math:`L=\frac a2\theta^2`."""
    grad = lambda th: a * th  # noqa: E731  (gradient of the quadratic)
    if method == "gd":
        return theta_now - eta * grad(theta_now)
    if method == "heavy_ball":
        return theta_now - eta * grad(theta_now) + momentum * (theta_now - theta_prev)
    if method == "nesterov":
        look_ahead = theta_now + momentum * (theta_now - theta_prev)
        return look_ahead - eta * grad(look_ahead)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def companion_matrix(method: str) -> sp.Matrix:
    r"""Matrix of :math:`(\theta_{t+1},\theta_t)^\top = M(\theta_t,\theta_{t-1})^\top`."""
    nxt = sp.expand(update_rule(method))
    row = [nxt.coeff(theta_now), nxt.coeff(theta_prev)]
    return sp.Matrix([row, [1, 0]])


def characteristic_polynomial(method: str) -> sp.Poly:
    r""":math:`\det(zI-M)` (degree 2; for GD the extra root :math:`z=0` of the padded state is harmless)."""
    return sp.Poly(companion_matrix(method).charpoly(z).as_expr(), z)


@functools.lru_cache(maxsize=None)
def derive_schur_conditions_degree2() -> dict[str, sp.Expr]:
    r"""Schur conditions for :math:`z^2+c_1z+c_0`, from the Möbius map and Routh–Hurwitz.

    :math:`(1-w)^2p\big(\frac{1+w}{1-w}\big)=p(-1)\,w^2+2(1-c_0)\,w+p(1)`; a real quadratic has both
    roots in the left half-plane iff its three coefficients have one sign, and they cannot all be
    negative (their sum is :math:`p(1)+p(-1)+2(1-c_0)=4`), so: all three > 0.
    Returns the three coefficients (in ``c1, c0``) keyed ``"w^2"``, ``"w^1"``, ``"w^0"``.
    """
    c0, c1, w = sp.symbols("c0 c1 w", real=True)
    p = lambda v: v**2 + c1 * v + c0  # noqa: E731
    mapped = sp.Poly(sp.expand(sp.cancel((1 - w) ** 2 * p((1 + w) / (1 - w)))), w)
    coeffs = {f"w^{k}": mapped.coeff_monomial(w**k) for k in (2, 1, 0)}
    return coeffs


@functools.lru_cache(maxsize=None)
def derive_stability_conditions(method: str) -> list[sp.Expr]:
    """The three Schur expressions (each must be > 0) for ``method``, in ``eta, a, beta``."""
    poly = characteristic_polynomial(method)
    coeffs = poly.all_coeffs()
    c0s, c1s = sp.symbols("c0 c1", real=True)
    if poly.degree() != 2 or coeffs[0] != 1:
        raise AssertionError("expected a monic quadratic")  # pragma: no cover
    conds = derive_schur_conditions_degree2()
    sub = {c1s: coeffs[1], c0s: coeffs[2]}
    return [sp.factor(sp.expand(conds[k].subs(sub))) for k in ("w^2", "w^1", "w^0")]


@functools.lru_cache(maxsize=None)
def derive_threshold(method: str) -> sp.Expr:
    r"""The largest stable :math:`\eta a` (for :math:`0\le\beta<1`): the binding Schur condition.

    Solves each condition = 0 for :math:`\eta a`; conditions that hold for every :math:`\eta a>0`
    when :math:`0\le\beta<1` (checked symbolically by the derivation script) do not bind.
    """
    ea = sp.Symbol("eta_a", positive=True)
    b = sp.Symbol("b", positive=True)  # beta = b/(1+b) sweeps 0 < beta < 1
    binding = []
    for cond in derive_stability_conditions(method):
        expr = sp.expand(cond.subs(eta, ea / a))
        for r in sp.solve(sp.Eq(expr, 0), ea):
            if sp.simplify(r.subs(momentum, b / (1 + b))).is_positive:
                binding.append(r)
    # the threshold is the smallest positive root (all conditions hold at eta*a -> 0+)
    if len(binding) == 1:
        return sp.simplify(binding[0])
    return sp.simplify(sp.Min(*binding))


@functools.lru_cache(maxsize=None)
def _numeric():
    return {m: sp.lambdify((momentum,), derive_threshold(m), "numpy") for m in METHODS}


def gd_threshold():
    r"""Largest stable :math:`\eta a` for GD: 2 (lambdified from :func:`derive_threshold`)."""
    return float(_numeric()["gd"](0.0))


def heavy_ball_threshold(beta):
    r"""Largest stable :math:`\eta a` for heavy-ball momentum :math:`\beta\in[0,1)`: :math:`2+2\beta`."""
    beta = check_real("beta", beta, low=0.0, high=1.0, high_open=True)
    return float(_numeric()["heavy_ball"](beta))


def nesterov_threshold(beta):
    r"""Largest stable :math:`\eta a` for Nesterov momentum :math:`\beta\in[0,1)`: :math:`(2+2\beta)/(1+2\beta)`."""
    beta = check_real("beta", beta, low=0.0, high=1.0, high_open=True)
    return float(_numeric()["nesterov"](beta))


def is_stable(method: str, eta_a, beta=0.0) -> bool:
    """Spectral radius of the companion matrix < 1 (NumPy roots; independent check of the thresholds)."""
    M = companion_matrix(method).subs({eta: sp.Float(eta_a), a: 1, momentum: sp.Float(beta)})
    return bool(np.max(np.abs(np.linalg.eigvals(np.array(M, dtype=float)))) < 1)
