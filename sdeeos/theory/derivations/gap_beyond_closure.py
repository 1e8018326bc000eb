"""First correction beyond the frozen-coefficient closure: slow-variable fluctuations (docs/theory.md#gap-beyond-closure)."""

from __future__ import annotations

import numpy as np
import sympy as sp

from .. import self_stabilization as ss
from .._expectation import moment_symbol


def derive(d) -> None:
    x, y, z, eta, alpha, beta, sigma = ss.symbols()
    r = ss.r_slow
    m = lambda px, py: moment_symbol((x, y), (px, py))  # noqa: E731
    gap_id = ss.derive_gap_identity()
    d.text("The exact identity (derivation stochastic_gap) needs E[x^2 y^2] and E[x^4].  The closure sets "
           "Var(y) = 0 and Var(x^2) = 0.  Here they come from the slow variables r = x^2, y, treated as a diffusion.")
    sde = ss.derive_slow_sde()
    d.step("one-step conditional drift of (r, y) = (x^2, y), exact (the sign of x drops out)", list(sde["drift"]))
    d.step("one-step conditional covariance of (r, y), exact", sde["covariance"])
    d.step("leading-order slow SDE (time in steps): drift", list(sde["drift_leading"]))
    d.step("leading-order slow SDE: diffusion matrix", sde["diffusion_leading"])
    lin = ss.derive_slow_linear_covariance()
    d.step("fixed point of the leading drift", lin["fixed_point"])
    r0 = ss.derive_stationary_x_sq()
    d.check_equal("fixed point r0 = E[x^2] = 2 alpha/beta", lin["fixed_point"][r], r0)
    d.check_equal("fixed point y0 = -eta beta sigma^2/(4 alpha) (the leading-order gap)", lin["fixed_point"][y],
                  -eta * beta * sigma**2 / (4 * alpha))
    d.step("linearisation d(r, y) = -A (r - r0, y - y0) dt + noise, A =", lin["A"])
    d.step("diffusion at the fixed point D =", lin["D"])
    tr, det = sp.simplify(lin["A"].trace()), sp.simplify(lin["A"].det())
    d.step("trace and determinant of A (stable focus: both > 0; rotation eta sqrt(2 alpha) per step)", [tr, det])
    d.check_equal("det A = 2 eta^2 alpha: the cycle frequency eta sqrt(2 alpha) (period 2 pi/(eta sqrt(2 alpha)))",
                  det, 2 * eta**2 * alpha)
    d.check("trace A = 2 eta DeltaS_lead > 0: damping of the slow cycle by the gap",
            sp.simplify(tr - 2 * eta * eta * beta * sigma**2 / (4 * alpha)) == 0)
    d.result("stationary covariance (Lyapunov A C + C A^T = D)",
             [sp.Eq(sp.Symbol("Var(y)"), lin["var_y"]), sp.Eq(sp.Symbol("Var(x^2)"), lin["var_r"]),
              sp.Eq(sp.Symbol("Cov(x^2,y)"), lin["cov_ry"])], key="covariance")
    d.check_equal("Var(y) = alpha (independent of eta and sigma)", lin["var_y"], alpha)
    d.check_equal("Var(x^2) = 2 (E x^2)^2: the Gaussian value for x with variance 2 alpha/beta", lin["var_r"], 2 * r0**2)
    d.check("Cov(x^2, y) = 0", lin["cov_ry"] == 0)
    C = sp.Matrix([[lin["var_r"], lin["cov_ry"]], [lin["cov_ry"], lin["var_y"]]])
    d.check("A C + C A^T = D holds", sp.simplify(lin["A"] * C + C * lin["A"].T - lin["D"]) == sp.zeros(2, 2))
    corr = ss.derive_gap_corrected()
    d.step("gap identity with E[x^2 y^2] = r0 (DeltaS^2 + Var y), E[x^4] = r0^2 + Var(x^2): DeltaS solves",
           sp.Eq(corr["equation"], 0))
    d.result("corrected gap", sp.Eq(sp.Symbol("DeltaS_corr"), corr["exact"]), key="corrected")
    lead = eta * beta * sigma**2 / (4 * alpha)
    d.check_equal("DeltaS_corr = (1 - sqrt(1 - eta^2 beta sigma^2/(2 alpha) - 3 eta^2 alpha))/eta",
                  corr["exact"], (1 - sp.sqrt(1 - eta**2 * beta * sigma**2 / (2 * alpha) - 3 * eta**2 * alpha)) / eta)
    d.step("expansion at fixed eta sigma^2 (to first order in eta)", corr["leading"])
    d.check_equal("first correction: + (3/2) eta alpha = (eta/2) Var(y) + eta beta^2 Var(x^2)/(8 alpha)",
                  corr["leading"] - lead - eta / 2 * lead**2, sp.Rational(3, 2) * eta * alpha)
    closure = ss.derive_gap_closure()["exact"]
    d.check_equal("switching the fluctuations off (Var y = Var x^2 = 0) gives back the closure",
                  gap_id.subs({m(2, 2): r0 * closure**2, m(4, 0): r0**2}), closure)
    d.result("existence of the corrected solution: radicand >= 0", sp.GreaterThan(corr["discriminant"], 0), key="existence")
    # validity: discrete-time linearisation of the mean map around (r0, -Delta)
    Delta = sp.Symbol("Delta", positive=True)
    mean_map = sp.Matrix([(1 + eta * y) ** 2 * r + eta**2 * sigma**2, y + eta * (alpha - beta * r / 2)])
    F = mean_map.jacobian([r, y]).subs({r: r0, y: -Delta})
    d.step("validity: one-step Jacobian of the conditional-mean map at (r0, -Delta)", F)
    detF = sp.expand(F.det())
    d.step("det F = |eigenvalue|^2 of the slow rotation", detF)
    crit = sp.solve(sp.Eq(detF, 1), Delta)
    crit = [c for c in crit if c.is_positive is not False]
    crit_series = [sp.series(c, eta, 0, 3).removeO() for c in crit]
    d.step("det F = 1 (no net damping) at Delta =", crit_series)
    d.check("the slow cycle is damped only if Delta > eta alpha + O(eta^2): discrete-time anti-damping 2 eta^2 alpha "
            "(the weak instability of the deterministic cycle) competes with the gap's damping 2 eta Delta",
            any(sp.simplify(c - eta * alpha) == 0 or sp.simplify(sp.series(c, eta, 0, 2).removeO() - eta * alpha) == 0
                for c in crit))
    d.check_equal("DeltaS_lead = eta alpha  <=>  sigma^2 = 4 alpha^2/beta (the validity floor, derived)",
                  sp.solve(sp.Eq(lead, eta * alpha), sigma)[0] ** 2, 4 * alpha**2 / beta)
    d.text("So both the closure and its linear correction need sigma^2 >> 4 alpha^2/beta; below it the stationary "
           "state is made of large relaxation cycles (x^2 far from r0) and neither applies.")
    # numbers: how the predictions compare (simulation comparison is in tests/theory/test_gap_simulation.py)
    rows = []
    for s in (0.2, 0.5, 1.0, 2.0, 5.0, 10.0):
        args = (0.01, 1.0, 100.0, s)
        rows.append(f"sigma={s:5.1f}: leading {float(ss.gap_leading(*args)):.5f}  closure {float(ss.gap_exact(*args)):.5f}"
                    f"  corrected {float(ss.gap_corrected(*args)):.5f}  sigma^2 beta/(4 alpha^2) = {s * s * 100 / 4:.2f}")
    d.step("predictions at eta = 0.01, alpha = 1, beta = 100", "\n".join(rows))
    d.check_close("gap_corrected(0.01, 1, 100, 1) = (1 - sqrt(1 - 0.005 - 0.0003))/0.01",
                  ss.gap_corrected(0.01, 1.0, 100.0, 1.0), (1 - np.sqrt(1 - 0.005 - 0.0003)) / 0.01, rtol=1e-13)
    v = ss.slow_variances_linear(0.01, 1.0, 100.0, 1.0)
    d.check("slow_variances_linear(0.01, 1, 100, 1) = {var_y: 1, var_x_sq: 8e-4, cov: 0}",
            abs(v["var_y"] - 1) < 1e-15 and abs(v["var_x_sq"] - 8e-4) < 1e-18 and v["cov_x_sq_y"] == 0)
