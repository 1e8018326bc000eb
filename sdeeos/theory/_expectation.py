r"""Expectations of polynomials in state variables and independent Gaussian noise.

Used to derive exact stationary-moment identities: for a polynomial map :math:`s' = F(s, z)` with
:math:`z \sim N(0, 1)` independent of :math:`s`, stationarity of :math:`\mathbb E[m(s)]` for a monomial
:math:`m` gives a linear relation between moments :math:`\mathbb E[s^k]`, which SymPy solves.
"""

from __future__ import annotations

import sympy as sp

__all__ = ["gaussian_moment", "expectation", "moment_symbol"]


def gaussian_moment(k: int) -> sp.Integer:
    """:math:`\\mathbb E[z^k]` for :math:`z \\sim N(0,1)`: 0 for odd k, (k-1)!! for even k."""
    return sp.Integer(0) if k % 2 else sp.factorial2(k - 1) if k > 0 else sp.Integer(1)


def moment_symbol(state, powers) -> sp.Symbol:
    """The symbol standing for :math:`\\mathbb E[\\prod_i s_i^{k_i}]`, e.g. ``E[x**2*y]``."""
    mono = sp.Mul(*[s**k for s, k in zip(state, powers)])
    return sp.Symbol(f"E[{sp.sstr(mono)}]")


def expectation(expr, state, noise) -> sp.Expr:
    """Expectation of a polynomial ``expr`` in ``state`` and independent standard normals ``noise``.

    Noise powers are replaced by their Gaussian moments; each state monomial becomes a moment symbol
    (``moment_symbol``); the constant monomial becomes 1.
    """
    poly = sp.Poly(sp.expand(expr), *state, *noise)
    total = sp.Integer(0)
    n_state = len(state)
    for powers, coeff in poly.terms():
        weight = sp.Integer(1)
        for k in powers[n_state:]:
            weight *= gaussian_moment(k)
        if weight == 0:
            continue
        s_pows = powers[:n_state]
        term = sp.Integer(1) if not any(s_pows) else moment_symbol(state, s_pows)
        total += coeff * weight * term
    return sp.expand(total)
