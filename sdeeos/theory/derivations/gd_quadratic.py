"""GD on a quadratic: the multiplier 1 - eta*a and the stability window 0 < eta*a < 2."""

from __future__ import annotations

import sympy as sp

from .. import gd_stability as gs


def derive(d) -> None:
    eta, a, _, _ = gs.symbols()
    ea = sp.Symbol("eta_a", positive=True)
    theta = sp.Symbol("theta", real=True)
    d.text("L(theta) = a theta^2 / 2 along one Hessian eigenvector (eigenvalue a); GD: theta' = theta - eta L'(theta).")
    update = sp.expand(gs.update_rule("gd"))
    d.step("GD update on the quadratic", sp.Eq(sp.Symbol("theta_{t+1}"), update))
    mult = sp.factor(update / gs.theta_now)
    d.step("multiplier per step (theta_t = m^t theta_0)", sp.Eq(sp.Symbol("m"), mult))
    d.check_equal("multiplier is 1 - eta*a", mult, 1 - eta * a)
    region = sp.solve_univariate_inequality(sp.Abs(1 - ea) < 1, ea, relational=False)
    d.step("|m| < 1 solved for eta*a", region)
    d.check("stable iff 0 < eta*a < 2", region == sp.Interval.open(0, 2))
    d.step("at the edge eta*a = 2 the multiplier is -1: period-2 oscillation", mult.subs(eta, 2 / a))
    d.check("m(eta*a = 2) = -1", sp.simplify(mult.subs(eta, 2 / a)) == -1)
    d.step("Schur conditions of the padded companion polynomial (each > 0)", gs.derive_stability_conditions("gd"))
    thr = gs.derive_threshold("gd")
    d.result("largest stable eta*a (sharpness threshold S < 2/eta)", sp.Eq(sp.Symbol("(eta a)_max"), thr), key="threshold")
    d.check("threshold from the Schur conditions = 2", thr == 2)
    d.check("lambdified gd_threshold() = 2.0", gs.gd_threshold() == 2.0)
    # numeric: iterate just inside and just outside
    for ea_val, grows in ((1.99, False), (2.01, True)):
        th = 1.0
        for _ in range(2000):
            th = (1 - ea_val) * th
        d.check(f"2000 GD steps at eta*a = {ea_val}: |theta| {'grows' if grows else 'decays'}", (abs(th) > 1) == grows,
                f"|theta_2000| = {abs(th):.3g}")
    d.check("is_stable (NumPy eigenvalues) agrees at 1.999 / 2.001",
            gs.is_stable("gd", 1.999) and not gs.is_stable("gd", 2.001))
