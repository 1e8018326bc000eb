"""The proposal's 'corrected boundary' eta*lambda_max ~ 2 + c sqrt(eta sigma^2), against the derived models."""

from __future__ import annotations

import numpy as np
import sympy as sp

from .. import corrected_boundary as cb
from .. import self_stabilization as ss


def derive(d) -> None:
    x, y, z, eta, alpha, beta, sigma = ss.symbols()
    d.text("Proposal: eta lambda_max ~ 2 + c sqrt(eta sigma^2).  Below: what each derived model gives for the edge.")
    edges = cb.derive_edge_reduced_model()
    for k, e in edges.items():
        d.step(f"reduced model, {k} gap: eta <S> = 2 - eta DeltaS", e)
    lead = eta * beta * sigma**2 / (4 * alpha)
    d.result("exact bound (gap identity: DeltaS >= eta beta sigma^2/(4 alpha))",
             sp.LessThan(sp.Symbol("eta <S>"), 2 - eta * lead), key="bound")
    d.check_equal("leading edge = 2 - eta^2 beta sigma^2/(4 alpha): shift linear in sigma^2, negative",
                  edges["leading"], 2 - eta**2 * beta * sigma**2 / (4 * alpha))
    for k, e in edges.items():
        ser = sp.series(e, sigma, 0, 3).removeO()
        d.step(f"{k}: expansion in sigma", ser)
        d.check(f"{k}: no odd powers of sigma (no sqrt(sigma^2) term): the edge is analytic in sigma^2",
                sp.expand(e.subs(sigma, -sigma) - e) == 0)
        expected = -eta**2 * beta / (4 * alpha) * (1 if k != "corrected" else 1 / sp.sqrt(1 - 3 * eta**2 * alpha))
        d.check_equal(f"{k}: coefficient of sigma^2 is {sp.sstr(expected)} < 0", ser.coeff(sigma, 2), expected)
    cs = cb.derive_implied_c()
    for k, c in cs.items():
        d.step(f"{k}: c that 2 + c sqrt(eta sigma^2) would need", sp.Eq(sp.Symbol("c"), c))
    d.check_equal("leading: c = -eta^(3/2) beta sigma/(4 alpha), not a constant", cs["leading"],
                  -eta ** sp.Rational(3, 2) * beta * sigma / (4 * alpha))
    d.check("leading and closure: c -> 0 as sigma -> 0 (no sqrt law at small noise)",
            sp.limit(cs["leading"], sigma, 0) == 0 and sp.limit(cs["closure"], sigma, 0) == 0)
    u = sp.Symbol("u", positive=True)  # u = 3 eta^2 alpha in (0, 1): the corrected solution exists at sigma = 0
    lim = sp.limit(cs["corrected"], sigma, 0).subs(eta, sp.sqrt(u / (3 * alpha)))
    d.check("corrected gap: c -> -infinity as sigma -> 0 (the (3/2) eta alpha term does not vanish), so again no "
            "constant c", sp.simplify(lim.subs(u, sp.Rational(1, 2))) == -sp.oo
            and sp.simplify(sp.sqrt(1 - u) - 1).is_negative is not False)
    e1 = cb.derive_edge_one_dimensional()
    v = sp.Symbol("v_B", positive=True)
    d.step("1-D SGD, multiplicative noise of variance v_B: largest stable eta hbar", e1)
    d.check_equal("= 2 - eta^2 v_B/2 + O(v_B^2): negative, linear in the variance",
                  sp.series(e1, v, 0, 2).removeO(), 2 - eta**2 * v / 2)
    d.text("Linear regression: the stochastic edge K = 1 binds at eta lambda_max << 2 (derivation noise_kernel); "
           "the SDE has no 2/eta boundary (derivation sde_ou).  Conclusion: every model puts the edge BELOW 2/eta, "
           "by an amount analytic in the noise variance (leading -eta^2 beta sigma_u^2/(4 alpha) for the mean "
           "sharpness); a law 2 + c sqrt(eta sigma^2) with constant c (of either sign) is not supported.  Matching it at "
           "one sigma needs c = -eta DeltaS/sqrt(eta sigma^2).")
    vals = [f"sigma={s:4.1f}: eta<S> = {float(cb.sharpness_edge(0.01, 1.0, 100.0, s)):.6f}, "
            f"c = {float(cb.implied_c(0.01, 1.0, 100.0, s)):.5f}" for s in (0.5, 1.0, 2.0, 5.0, 10.0)]
    d.step("numbers, eta = 0.01, alpha = 1, beta = 100 (closure gap)", "\n".join(vals))
    d.check_close("implied_c(0.01, 1, 100, 10, leading) = -0.25", cb.implied_c(0.01, 1.0, 100.0, 10.0, gap="leading"),
                  -0.25, rtol=1e-13)
    d.check("implied_c outside the stationary domain is NaN with outside='nan'",
            bool(np.isnan(cb.implied_c(0.01, 1.0, 100.0, 20.0, outside="nan"))))
