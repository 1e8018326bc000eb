r"""Symbolic helpers shared by the toy losses: gradient steps, Hessians and the 2x2 top eigenvalue.

The toy models (`sdeeos.models.Minimalist`, `sdeeos.models.CubicTaylor`) write their loss once as a
SymPy expression; the update maps and observables the engines run are derived here from it.

>>> import sympy as sp
>>> a, b, c = sp.symbols("a b c", real=True)
>>> top_eigenvalue_2x2(sp.Matrix([[a, b], [b, c]]))
a/2 + c/2 + sqrt(b**2 + (a/2 - c/2)**2)
"""

from __future__ import annotations

import sympy as sp

__all__ = ["gradient", "hessian", "top_eigenvalue_2x2", "gradient_step"]


def gradient(loss: sp.Expr, state) -> tuple[sp.Expr, ...]:
    """:math:`\\nabla L` with respect to ``state`` (a tuple of symbols)."""
    return tuple(sp.diff(loss, s) for s in state)


def hessian(loss: sp.Expr, state) -> sp.Matrix:
    """:math:`\\nabla^2 L` with respect to ``state``."""
    return sp.hessian(loss, state)


def top_eigenvalue_2x2(H: sp.Matrix) -> sp.Expr:
    r"""Largest eigenvalue of a symmetric 2x2 matrix, :math:`\tfrac{a+c}2+\sqrt{(\tfrac{a-c}2)^2+b^2}`.

    Derived as the larger root of the characteristic polynomial :math:`\lambda^2-(a+c)\lambda+ac-b^2`;
    the radicand is written as a sum of squares, so round-off can never make it negative, and there
    is no cancellation for the top eigenvalue.  Checked symbolically to be a root.
    """
    if H.shape != (2, 2):
        raise ValueError("top_eigenvalue_2x2 needs a 2x2 matrix")
    a, b, c = H[0, 0], H[0, 1], H[1, 1]
    lam = sp.Symbol("lambda")
    charpoly = lam**2 - (a + c) * lam + (a * c - b**2)
    top = (a + c) / 2 + sp.sqrt(((a - c) / 2) ** 2 + b**2)
    assert sp.expand(charpoly.subs(lam, top)) == 0, "not a root of the characteristic polynomial"
    return top


def gradient_step(loss: sp.Expr, state, eta, noise_terms=None, gradient_scale=1) -> tuple[sp.Expr, ...]:
    r"""One stochastic gradient step :math:`\theta-\eta\,(s\,\nabla L+\xi)`.

    ``gradient_scale`` :math:`s` (e.g. :math:`1+\sigma z` for multiplicative noise) and
    ``noise_terms`` :math:`\xi` (one expression per state variable, e.g. :math:`\sigma z_i`).
    """
    grad = gradient(loss, state)
    noise_terms = noise_terms or (0,) * len(state)
    return tuple(s - eta * (gradient_scale * g + n) for s, g, n in zip(state, grad, noise_terms))
