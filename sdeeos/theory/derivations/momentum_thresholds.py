"""Heavy-ball and Nesterov thresholds from the companion matrices and the degree-2 Schur criterion."""

from __future__ import annotations

import numpy as np
import sympy as sp

from .. import gd_stability as gs


def derive(d) -> None:
    _, _, beta, _ = gs.symbols()
    d.text("Degree-2 Schur criterion: map the unit disk to the left half-plane by z = (1+w)/(1-w) and apply "
           "Routh-Hurwitz (a real quadratic is Hurwitz iff its coefficients share one sign).")
    coeffs = gs.derive_schur_conditions_degree2()
    c0, c1, w = sp.symbols("c0 c1 w", real=True)
    d.step("(1-w)^2 p((1+w)/(1-w)) for p(z) = z^2 + c1 z + c0: coefficients of w^2, w, 1",
           [coeffs["w^2"], coeffs["w^1"], coeffs["w^0"]])
    p = lambda v: v**2 + c1 * v + c0  # noqa: E731
    d.check_equal("w^2 coefficient = p(-1)", coeffs["w^2"], p(-1))
    d.check_equal("w^0 coefficient = p(1)", coeffs["w^0"], p(1))
    d.check_equal("sum of the three coefficients = 4 (so they cannot all be negative)",
                  coeffs["w^2"] + coeffs["w^1"] + coeffs["w^0"], 4)
    # numeric check of the criterion itself on random quadratics
    rng = np.random.default_rng(1)
    cs = rng.uniform(-2.5, 2.5, size=(4000, 2))
    inside = np.array([np.max(np.abs(np.roots([1, c[1], c[0]]))) < 1 for c in cs])
    crit = (1 - cs[:, 1] + cs[:, 0] > 0) & (1 - cs[:, 0] > 0) & (1 + cs[:, 1] + cs[:, 0] > 0)
    d.check("criterion = 'both roots inside the unit disk' on 4000 random (c1, c0)", np.array_equal(inside, crit))

    expected = {"heavy_ball": 2 + 2 * beta, "nesterov": (2 + 2 * beta) / (1 + 2 * beta)}
    for method in ("heavy_ball", "nesterov"):
        d.step(f"{method}: update theta_(t+1)", sp.expand(gs.update_rule(method)))
        d.step(f"{method}: companion matrix of (theta_t, theta_(t-1))", gs.companion_matrix(method))
        d.step(f"{method}: characteristic polynomial", gs.characteristic_polynomial(method).as_expr())
        conds = gs.derive_stability_conditions(method)
        d.step(f"{method}: Schur conditions p(-1) > 0, 2(1 - c0) > 0, p(1) > 0", conds)
        thr = gs.derive_threshold(method)
        d.result(f"{method}: largest stable eta*a for 0 <= beta < 1", sp.Eq(sp.Symbol("(eta a)_max"), thr),
                 key=method)
        d.check_equal(f"{method} threshold = {expected[method]}", thr, expected[method])
        b = sp.Symbol("b", positive=True)
        d.check(f"{method}: 1 - c0 > 0 for every eta*a in (0, threshold) when 0 <= beta < 1",
                _holds_on_window(conds[1], thr, beta, b))
        f = {"heavy_ball": gs.heavy_ball_threshold, "nesterov": gs.nesterov_threshold}[method]
        for bv in (0.0, 0.5, 0.9):
            t = f(bv)
            ok = gs.is_stable(method, t * (1 - 1e-6), bv) and not gs.is_stable(method, t * (1 + 1e-6), bv)
            d.check(f"{method}, beta = {bv}: companion eigenvalues cross |z| = 1 at eta*a = {t:.6g}", ok)
    d.check("beta = 0: both reduce to GD's threshold 2",
            gs.heavy_ball_threshold(0.0) == 2.0 and gs.nesterov_threshold(0.0) == 2.0)


def _holds_on_window(cond, thr, beta, b) -> bool:
    """cond(eta*a) > 0 on (0, thr] for beta in [0, 1): it is linear in eta*a, so check both ends."""
    eta, a, _, _ = gs.symbols()
    ends = [cond.subs(eta, 0), cond.subs(eta, thr / a)]
    return all(sp.simplify(e.subs(beta, b / (1 + b))).is_positive or sp.simplify(e.subs(beta, b / (1 + b))).is_nonnegative
               for e in ends) and all(sp.simplify(e.subs(beta, 0)) > 0 for e in ends)
