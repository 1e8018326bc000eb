r"""The reduced self-stabilization map, derived from a generic cubic Taylor model of the loss.

Setting (Damian, Nichani & Lee 2023; docs/theory.md#reduced-model).  Around a point :math:`\theta^\dagger` of the constrained trajectory,
in an orthonormal frame :math:`(u, w, e)` — :math:`u` the top Hessian eigenvector, :math:`w` the
direction of :math:`\nabla S^\perp`, :math:`e` any further direction — write the displacement
:math:`v=\theta-\theta^\dagger=x\,u+p\,w+q\,e` and take the generic cubic model

.. math:: L(\theta^\dagger+v)=L_0+g\cdot v+\tfrac12v^\top Hv+\tfrac16T[v,v,v],

with :math:`Hu=Su` and a generic symmetric third-derivative tensor :math:`T`.  Then
:math:`\nabla S=T[u,u,\cdot]` (first-order eigenvalue perturbation), so the frame fixes
:math:`T_{uue}=0` and :math:`\nabla S^\perp=T_{uuw}\,w`, :math:`\beta=\lVert\nabla S^\perp\rVert^2=T_{uuw}^2`,
:math:`\alpha=-g\cdot\nabla S^\perp=-g_wT_{uuw}`, and on the stable set :math:`g_u=0`,
:math:`S=2/\eta`.  Define :math:`y=\nabla S^\perp\cdot v=T_{uuw}\,p`.

1. PGD step (first order): :math:`\theta^\dagger_{t+1}=\theta^\dagger_t-\eta g-c\nabla S^\perp` keeps
   :math:`S=2/\eta` iff :math:`c=\eta\alpha/\beta` (:func:`derive_pgd_shift`).
2. GD displacement map: :math:`v'=v-\eta(\nabla L(\theta^\dagger+v)-g)+c\,\nabla S^\perp`, exact for
   the cubic model with the frame frozen over one step (:func:`derive_displacement_map`).
3. Projections (:func:`derive_reduced_map`): :math:`x'=u\cdot v'`, :math:`y'=\nabla S^\perp\cdot v'` give

   .. math:: x'=-(1+\eta y)x+R_x,\qquad y'=y+\eta(\alpha-\tfrac\beta2x^2)+R_y,

   with remainders :math:`R_x` (even in :math:`x`: non-resonant with the period-2 oscillation of
   :math:`x`, or of second order in the transverse displacement) and :math:`R_y` (the transverse
   curvature term :math:`-\eta\nabla S^{\perp\top}Hv` that the reduced model neglects, terms odd in
   :math:`x`, and second order in :math:`p, q`).  Dropping them gives exactly the map the
   simulation uses (:func:`sdeeos.theory.self_stabilization.reduced_update`).
4. SGD adds :math:`-\eta\varepsilon_B` to :math:`v'`: :math:`x'` gains :math:`-\eta\,u\cdot\varepsilon_B`, variance
   :math:`\eta^2\sigma_u^2`, i.e. the :math:`\eta\sigma z` of the stochastic model (noise along
   :math:`\nabla S^\perp` enters :math:`y'` and is neglected in that model).
"""

from __future__ import annotations

import functools
import itertools

import sympy as sp

__all__ = [
    "frame_symbols",
    "cubic_loss",
    "derive_pgd_shift",
    "derive_displacement_map",
    "derive_reduced_map",
    "derive_sharpness_along_displacement",
    "reduced_map",
]

# The reduced model's symbols (identical, as SymPy symbols, to those of self_stabilization).
eta, alpha, beta = sp.symbols("eta alpha beta", positive=True)
x, y = sp.symbols("x y", real=True)

# Cubic-model symbols
p, q = sp.symbols("p q", real=True)
S = sp.Symbol("S", positive=True)
g_w, g_e = sp.symbols("g_w g_e", real=True)
h_ww, h_we, h_ee = sp.symbols("h_ww h_we h_ee", real=True)
_AXES = ("u", "w", "e")


def _T(*idx) -> sp.Symbol:
    """Entry of the symmetric third-derivative tensor, e.g. ``T_uuw`` (sorted index names)."""
    key = "".join(sorted(idx, key=_AXES.index))
    if key == "uue":
        return sp.Integer(0)  # the frame: w is the direction of grad S_perp, so T_uue = 0
    if key == "uuw":
        return sp.sqrt(beta)  # |grad S_perp| = sqrt(beta) > 0
    return sp.Symbol(f"T_{key}", real=True)


def frame_symbols():
    """``(x, p, q)`` coordinates, and the dict of model coefficients (``S``, gradient, Hessian, tensor)."""
    coeffs = {"S": S, "g_w": g_w, "g_e": g_e, "h_ww": h_ww, "h_we": h_we, "h_ee": h_ee}
    for idx in itertools.combinations_with_replacement(_AXES, 3):
        coeffs["T_" + "".join(idx)] = _T(*idx)
    return (x, p, q), coeffs


def _vec():
    return sp.Matrix([x, p, q])


def _gradient_at_reference():
    # u . grad L = 0 on the stable set; alpha = -g . grad S_perp = -g_w sqrt(beta)
    return sp.Matrix([0, -alpha / sp.sqrt(beta), g_e])


def _hessian_at_reference():
    return sp.Matrix([[S, 0, 0], [0, h_ww, h_we], [0, h_we, h_ee]])


@functools.lru_cache(maxsize=None)
def cubic_loss() -> sp.Expr:
    r""":math:`g\cdot v+\frac12v^\top Hv+\frac16T[v,v,v]` (constant dropped) in the frame coordinates."""
    v = _vec()
    g, H = _gradient_at_reference(), _hessian_at_reference()
    cubic = sum(_T(_AXES[i], _AXES[j], _AXES[k]) * v[i] * v[j] * v[k]
                for i in range(3) for j in range(3) for k in range(3))
    return sp.expand((g.T * v)[0] + (v.T * H * v)[0] / 2 + cubic / 6)


def _grad(expr) -> sp.Matrix:
    return sp.Matrix([sp.diff(expr, c) for c in (x, p, q)])


@functools.lru_cache(maxsize=None)
def derive_sharpness_along_displacement() -> dict[str, sp.Expr]:
    r"""First-order sharpness :math:`S(\theta^\dagger+v)=S+u^\top(\partial_vH)u` and :math:`\nabla S=T[u,u,\cdot]`.

    The Hessian of the cubic model at :math:`v` is :math:`H+T[v]`; for a simple top eigenvalue the
    first-order change is :math:`u^\top T[v]u`.  Returns ``"grad_S"`` (vector in the frame) and
    ``"dS"`` (:math:`\nabla S\cdot v`).
    """
    hess_v = sp.hessian(cubic_loss(), (x, p, q))
    u = sp.Matrix([1, 0, 0])
    dS = sp.expand((u.T * (hess_v - _hessian_at_reference()) * u)[0])
    grad_S = _grad(dS)
    return {"grad_S": grad_S, "dS": dS}


@functools.lru_cache(maxsize=None)
def derive_pgd_shift() -> sp.Expr:
    r"""Coefficient :math:`c` of the projection :math:`-c\nabla S^\perp` keeping :math:`S(\theta^\dagger_{t+1})=2/\eta`.

    To first order :math:`S(\theta^\dagger+\delta)=S+\nabla S\cdot\delta`; with :math:`S=2/\eta` and
    :math:`\delta=-\eta g-c\nabla S^\perp`, solve :math:`\nabla S\cdot\delta=0`: :math:`c=\eta\alpha/\beta`.
    """
    c = sp.Symbol("c", real=True)
    grad_S = derive_sharpness_along_displacement()["grad_S"]
    grad_S_perp = grad_S - sp.Matrix([grad_S[0], 0, 0])
    delta = -eta * _gradient_at_reference() - c * grad_S_perp
    (sol,) = sp.solve(sp.Eq((grad_S.T * delta)[0], 0), c)
    return sp.simplify(sol)


@functools.lru_cache(maxsize=None)
def derive_displacement_map() -> sp.Matrix:
    r""":math:`v'=v-\eta(\nabla L(\theta^\dagger+v)-g)+c\,\nabla S^\perp` at :math:`S=2/\eta`, in the frame."""
    grad_S = derive_sharpness_along_displacement()["grad_S"]
    grad_S_perp = grad_S - sp.Matrix([grad_S[0], 0, 0])
    grad_L = _grad(cubic_loss())
    g = _gradient_at_reference()
    v_next = _vec() - eta * (grad_L - g) + derive_pgd_shift() * grad_S_perp
    return sp.expand(v_next.subs(S, 2 / eta))


@functools.lru_cache(maxsize=None)
def derive_reduced_map() -> dict[str, sp.Expr]:
    r"""Project the displacement map on :math:`u` and :math:`\nabla S^\perp`; split kept terms and remainders.

    Returns ``x_next``/``y_next`` (full projections in ``x, y, q``), the kept reduced map
    ``x_reduced``/``y_reduced`` and the remainders ``R_x``/``R_y`` (full minus kept).  A term is kept
    iff it survives setting every neglected coefficient (transverse curvature ``h_*``, tensor
    entries other than ``T_uuw``) to zero and ``q`` to zero.
    """
    v_next = derive_displacement_map()
    grad_S_perp = sp.Matrix([0, sp.sqrt(beta), 0])
    to_y = {p: y / sp.sqrt(beta)}
    x_next = sp.expand(v_next[0].subs(to_y))
    y_next = sp.expand((grad_S_perp.T * v_next)[0].subs(to_y))
    _, coeffs = frame_symbols()
    neglect = {sym: 0 for name, sym in coeffs.items()
               if isinstance(sym, sp.Symbol) and name not in ("S",) and (name.startswith("h_") or name.startswith("T_"))}
    neglect[q] = 0
    # kept x-terms are all proportional to x: write them as x * (multiplier)
    x_red = x * sp.expand(sp.cancel(x_next.subs(neglect) / x))
    drift = sp.expand((y_next.subs(neglect) - y) / eta)
    y_red = y + eta * drift
    return {"x_next": x_next, "y_next": y_next, "x_reduced": x_red, "y_reduced": y_red,
            "R_x": sp.expand(x_next - x_red), "R_y": sp.expand(y_next - y_red)}


def reduced_map() -> tuple[sp.Expr, sp.Expr]:
    """``(x', y')`` of the deterministic reduced map, as derived (used by ``reduced_update``)."""
    r = derive_reduced_map()
    return r["x_reduced"], r["y_reduced"]
