r"""What the models predict for the "corrected boundary" :math:`\eta\lambda_{\max}\approx2+c\sqrt{\eta\sigma^2}`.

The proposal's form has a shift :math:`\propto\sqrt{\eta\sigma^2}` of unspecified sign.  Every model
derived in :mod:`sdeeos.theory` predicts instead a shift that is **negative** and **analytic in**
:math:`\sigma^2` (leading term linear in the noise variance, no square root):

* stochastic reduced model (stationary mean sharpness :math:`\langle S\rangle=2/\eta-\Delta S`):
  :math:`\eta\langle S\rangle=2-\eta\Delta S\le2-\eta^2\beta\sigma^2/(4\alpha)` exactly
  (the exact gap identity gives :math:`\Delta S\ge\eta\beta\sigma^2/(4\alpha)`); closure and
  corrected gap as in :mod:`self_stabilization`;
* 1-D SGD with multiplicative batch noise (curvature variance :math:`v_B`): largest stable
  :math:`\eta\bar h=1+\sqrt{1-\eta^2v_B}=2-\eta^2v_B/2+O(v_B^2)`;
* linear regression: the stochastic edge :math:`\mathcal K=1` binds at :math:`\eta\lambda_{\max}\ll2`;
* the SDE (SME): no :math:`2/\eta` boundary at all.

So a constant :math:`c` does not exist: matching :math:`2+c\sqrt{\eta\sigma^2}` to the reduced model
at one :math:`\sigma` needs :math:`c=-\eta\Delta S/\sqrt{\eta\sigma^2}\approx-\eta^{3/2}\beta\sigma/(4\alpha)`,
which depends on :math:`\sigma` and vanishes as :math:`\sigma\to0`.

>>> round(float(implied_c(0.01, 1.0, 100.0, 10.0, gap="leading")), 12)  # -0.01**1.5 * 100 * 10 / 4
-0.25
"""

from __future__ import annotations

import functools

import numpy as np
import sympy as sp

from .._validation import check_choice
from . import self_stabilization as ss

__all__ = ["derive_edge_reduced_model", "derive_implied_c", "derive_edge_one_dimensional",
           "sharpness_edge", "implied_c", "GAPS"]

GAPS = ("leading", "closure", "corrected")


@functools.lru_cache(maxsize=None)
def derive_edge_reduced_model() -> dict[str, sp.Expr]:
    r""":math:`\eta\langle S\rangle=2-\eta\Delta S` for the three gap predictions (keys of ``GAPS``)."""
    _, _, _, eta, _, _, _ = ss.symbols()
    gaps = {"leading": ss.derive_gap_closure()["leading"], "closure": ss.derive_gap_closure()["exact"],
            "corrected": ss.derive_gap_corrected()["exact"]}
    return {k: sp.expand(2 - eta * g) for k, g in gaps.items()}


@functools.lru_cache(maxsize=None)
def derive_implied_c() -> dict[str, sp.Expr]:
    r""":math:`c=(\eta\langle S\rangle-2)/\sqrt{\eta\sigma^2}` that the proposal's form would need, per gap."""
    _, _, _, eta, _, _, sigma = ss.symbols()
    return {k: sp.simplify((e - 2) / sp.sqrt(eta * sigma**2)) for k, e in derive_edge_reduced_model().items()}


@functools.lru_cache(maxsize=None)
def derive_edge_one_dimensional() -> sp.Expr:
    r"""Largest mean-square-stable :math:`\eta\bar h` of 1-D SGD at curvature variance :math:`v_B`: :math:`1+\sqrt{1-\eta^2v_B}`."""
    eta, hbar, v = sp.symbols("eta hbar v_B", positive=True)
    roots = sp.solve(sp.Eq((1 - eta * hbar) ** 2 + eta**2 * v, 1), hbar)
    top = max(roots, key=lambda r: r.subs({eta: 1, v: sp.Rational(1, 10)}))
    return sp.expand(eta * top)


@functools.lru_cache(maxsize=None)
def _numeric():
    _, _, _, eta, alpha, beta, sigma = ss.symbols()
    args = (eta, alpha, beta, sigma)
    return {k: sp.lambdify(args, e, "numpy") for k, e in derive_implied_c().items()}


def _gap(gap, eta, alpha, beta, sigma, outside):
    check_choice("gap", gap, GAPS)
    fn = {"leading": ss.gap_leading, "closure": ss.gap_exact, "corrected": ss.gap_corrected}[gap]
    return fn(eta, alpha, beta, sigma, outside=outside)


def sharpness_edge(eta, alpha, beta, sigma, *, gap: str = "closure", outside: str = "raise"):
    r""":math:`\eta\langle S\rangle=2-\eta\Delta S` of the stochastic reduced model (always < 2 for sigma > 0)."""
    return 2 - np.asarray(eta, dtype=float) * _gap(gap, eta, alpha, beta, sigma, outside)


def implied_c(eta, alpha, beta, sigma, *, gap: str = "closure", outside: str = "raise"):
    r"""The :math:`c` with :math:`2+c\sqrt{\eta\sigma^2}=\eta\langle S\rangle` (negative; depends on sigma, -> 0 as sigma -> 0).

    Evaluated from the lambdified :func:`derive_implied_c` inside the gap's domain.
    """
    _gap(gap, eta, alpha, beta, sigma, outside)  # domain check (raises or tells where NaN)
    e, a, b, s = (np.asarray(v, dtype=float) for v in (eta, alpha, beta, sigma))
    with np.errstate(invalid="ignore"):
        val = np.asarray(_numeric()[gap](e, a, b, s), dtype=float)
    ok = np.isfinite(np.asarray(_gap(gap, eta, alpha, beta, sigma, "nan"), dtype=float))
    return np.where(ok, val, np.nan)[()]
