"""Stationary identities of the stochastic reduced model and the closure gap (docs/theory.md#stochastic-gap)."""

from __future__ import annotations

import numpy as np
import sympy as sp

from .. import self_stabilization as ss
from .._expectation import moment_symbol


def derive(d) -> None:
    x, y, z, eta, alpha, beta, sigma = ss.symbols()
    m = lambda px, py: moment_symbol((x, y), (px, py))  # noqa: E731
    x1, y1 = ss.reduced_update(noisy=True)
    d.step("stochastic reduced map (z ~ N(0,1) independent of the state)", [sp.Eq(sp.Symbol("x'"), x1), sp.Eq(sp.Symbol("y'"), y1)])
    d.text("Stationarity: E[f(x', y')] = E[f(x, y)] for f = y, x^2, y^2; expectations over z by Gaussian moments.")
    for f in (y, x**2, y**2):
        d.step(f"E[f'] - E[f] for f = {f}", sp.Eq(ss.stationarity(f), 0))
    ex2 = ss.derive_stationary_x_sq()
    d.result("E[x^2] (exact)", sp.Eq(m(2, 0), ex2), key="x_sq")
    d.check_equal("E[x^2] = 2 alpha / beta", ex2, 2 * alpha / beta)
    d.check("E[x^2] does not depend on eta or sigma", not ex2.has(eta) and not ex2.has(sigma))
    ident = ss.derive_x_sq_identity()
    d.result("x^2 identity (exact)", ident, key="x_sq_identity")
    d.check_equal("E[x^2 y] + (eta/2) E[x^2 y^2] = -eta sigma^2 / 2", ident.lhs - ident.rhs,
                  m(2, 1) + eta / 2 * m(2, 2) + eta * sigma**2 / 2)
    gap = ss.derive_gap_identity()
    d.result("exact stationary gap -E[y]", sp.Eq(sp.Symbol("DeltaS"), gap), key="gap_identity")
    lead = eta * beta * sigma**2 / (4 * alpha)
    d.check_equal("DeltaS = eta beta sigma^2/(4 alpha) + eta beta/(4 alpha) E[x^2 y^2] + eta beta^2/(8 alpha) E[x^4] - eta alpha/2",
                  gap, lead + eta * beta / (4 * alpha) * m(2, 2) + eta * beta**2 / (8 * alpha) * m(4, 0) - eta * alpha / 2)
    excess = eta * beta / (4 * alpha) * m(2, 2) + eta / (2 * alpha) * (
        alpha**2 - alpha * beta * m(2, 0) + beta**2 / 4 * m(4, 0))
    d.step("DeltaS - leading = (eta beta/(4 alpha)) E[x^2 y^2] + (eta/(2 alpha)) E[(alpha - beta x^2/2)^2] (using E x^2 = 2 alpha/beta)",
           excess.subs(m(2, 0), ex2))
    d.check_equal("so DeltaS - eta beta sigma^2/(4 alpha) is a sum of non-negative terms: DeltaS >= leading (exact)",
                  gap - lead, sp.expand(excess.subs(m(2, 0), ex2)))
    closure = ss.derive_gap_closure()
    ystar = sp.Symbol("ystar", real=True)
    d.step("closure: freeze y = y*, decorrelate from x: E x^2 = (1 + eta y*)^2 E x^2 + eta^2 sigma^2, with E x^2 = 2 alpha/beta",
           sp.Eq(ex2, (1 + eta * ystar) ** 2 * ex2 + eta**2 * sigma**2))
    d.result("closure gap (exact root with y* -> 0 as sigma -> 0)", sp.Eq(sp.Symbol("DeltaS_closure"), closure["exact"]), key="closure")
    d.check_equal("closure gap = (1 - sqrt(1 - eta^2 beta sigma^2/(2 alpha)))/eta",
                  closure["exact"], (1 - sp.sqrt(1 - eta**2 * beta * sigma**2 / (2 * alpha))) / eta)
    d.result("leading order", sp.Eq(sp.Symbol("DeltaS_lead"), closure["leading"]), key="leading")
    d.check_equal("leading = eta beta sigma^2 / (4 alpha) (Liao et al.)", closure["leading"], lead)
    d.check_equal("the closure is the exact identity with E[x^2 y^2] = E[x^2] DeltaS^2 and E[x^4] = E[x^2]^2 (no fluctuations)",
                  gap.subs({m(2, 2): ex2 * closure["exact"] ** 2, m(4, 0): ex2**2}), closure["exact"])
    d.result("existence of a stationary closure solution: radicand >= 0",
             sp.GreaterThan(closure["discriminant"], 0), key="existence")
    d.check_equal("radicand = 4 alpha (1 - eta^2 beta sigma^2/(2 alpha)): exists iff eta^2 beta sigma^2 <= 2 alpha",
                  closure["discriminant"], 4 * alpha * (1 - eta**2 * beta * sigma**2 / (2 * alpha)))
    d.check_equal("equivalently eta^2 sigma^2 <= delta^2 = 2 alpha/beta: the noise kick must not exceed the amplitude",
                  sp.solve(closure["discriminant"], sigma)[0] ** 2 * eta**2, 2 * alpha / beta)
    # reference values of docs/theory.md#gap-closure (29.289 closure, 25 leading), lambdified functions
    args = (0.01, 1.0, 100.0, 10.0)
    d.check_close("gap_leading(0.01, 1, 100, 10) = 25", ss.gap_leading(*args), 25.0, rtol=1e-14)
    d.check_close("gap_exact(0.01, 1, 100, 10) = 100 (1 - sqrt(1/2)) = 29.2893", ss.gap_exact(*args),
                  float(100 * (1 - np.sqrt(0.5))), rtol=1e-13)
    d.check_close("x_sq_stationary(1, 100) = 0.02", ss.x_sq_stationary(1.0, 100.0), 0.02, rtol=1e-15)
    d.check("outside the domain (eta^2 beta sigma^2 > 2 alpha) gap_exact(outside='nan') is NaN",
            bool(np.isnan(ss.gap_exact(0.01, 1.0, 100.0, 15.0, outside="nan"))))
    d.check_close("cycle_period(0.01, 1) = 2 pi/(eta sqrt(2 alpha)) = 444.29", ss.cycle_period(0.01, 1.0),
                  2 * np.pi / (0.01 * np.sqrt(2.0)), rtol=1e-15)
