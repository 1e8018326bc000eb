"""Derive the reduced (x, y) map of self-stabilization from a generic cubic Taylor model of the loss."""

from __future__ import annotations

import numpy as np
import sympy as sp

from .. import reduced_model as rm
from .. import self_stabilization as ss


def derive(d) -> None:
    (x, p, q), coeffs = rm.frame_symbols()
    eta, alpha, beta, y = rm.eta, rm.alpha, rm.beta, rm.y
    d.text("Frame at theta_dagger: u (top eigenvector, H u = S u), w = grad S_perp / |grad S_perp|, e (any other "
           "direction).  v = x u + p w + q e.  Generic symmetric third-derivative tensor T; the frame fixes "
           "T_uue = 0 and T_uuw = |grad S_perp| = sqrt(beta); alpha = -grad L . grad S_perp (so g_w = -alpha/sqrt(beta)); "
           "stable set: u . grad L = 0 and S = 2/eta.")
    d.step("cubic model L(theta_dagger + v) - L0", rm.cubic_loss())
    sharp = rm.derive_sharpness_along_displacement()
    d.step("first-order sharpness change u^T (Hess(v) - H) u = grad S . v", sharp["dS"])
    d.check_equal("grad S . v = T_uuu x + sqrt(beta) p  (so y := grad S_perp . v = sqrt(beta) p)",
                  sharp["dS"], coeffs["T_uuu"] * x + sp.sqrt(beta) * p)
    _check_sharpness_numerically(d)
    c = rm.derive_pgd_shift()
    d.step("PGD: theta_dagger' = theta_dagger - eta g - c grad S_perp keeps S = 2/eta to first order iff", sp.Eq(sp.Symbol("c"), c))
    d.check_equal("projection coefficient c = eta*alpha/beta (so the constrained step adds +eta*(delta^2/2)*grad S_perp, delta^2 = 2 alpha/beta)",
                  c, eta * alpha / beta)
    vmap = rm.derive_displacement_map()
    d.step("GD displacement map v' = v - eta (grad L(theta_dagger + v) - g) + c grad S_perp at S = 2/eta (components x', p', q')",
           list(vmap))
    red = rm.derive_reduced_map()
    d.step("x' = u . v' (with p = y/sqrt(beta))", sp.Eq(sp.Symbol("x'"), red["x_next"]))
    d.step("y' = grad S_perp . v'", sp.Eq(sp.Symbol("y'"), red["y_next"]))
    d.step("remainder R_x (dropped)", red["R_x"])
    d.step("remainder R_y (dropped)", red["R_y"])
    d.check("R_x is even in x: non-resonant with the period-2 oscillation of x (x alternates sign)",
            sp.expand(red["R_x"].subs(x, -x) - red["R_x"]) == 0)
    h_syms = {coeffs["h_ww"], coeffs["h_we"], coeffs["h_ee"]}
    ok = True
    for term in sp.Add.make_args(red["R_y"]):
        odd_in_x = sp.expand(term.subs(x, -x) + term) == 0
        curvature = bool(term.free_symbols & h_syms)
        second_order_transverse = sp.Poly(term, y, q).total_degree() >= 2 or term.has(q)
        ok &= odd_in_x or curvature or second_order_transverse
    d.check("every term of R_y is odd in x, or the transverse curvature term -eta grad S_perp^T H v (h_ww, h_we), "
            "or involves the other directions / is quadratic in the transverse displacement", ok)
    d.check_equal("the curvature part of R_y is -eta * grad S_perp^T H v (the term the reduced model neglects)",
                  sum(t for t in sp.Add.make_args(red["R_y"]) if t.free_symbols & h_syms),
                  -eta * (coeffs["h_ww"] * y + sp.sqrt(beta) * coeffs["h_we"] * q))
    d.result("reduced map (remainders dropped)",
             [sp.Eq(sp.Symbol("x'"), red["x_reduced"]), sp.Eq(sp.Symbol("y'"), red["y_reduced"])], key="reduced_map")
    x_sim, y_sim = ss.reduced_update(noisy=False)
    d.check_equal("x' = -(1 + eta y) x", red["x_reduced"], -(1 + eta * y) * x)
    d.check_equal("y' = y + eta (alpha - beta x^2 / 2)", red["y_reduced"], y + eta * (alpha - beta * x**2 / 2))
    d.check("the simulated model (SelfStabilization 'gd') uses exactly these expressions",
            sp.srepr((x_sim, y_sim)) == sp.srepr((red["x_reduced"], red["y_reduced"])))
    eq = sp.solve(red["y_reduced"] - y, x**2)
    d.step("y-drift vanishes at x^2 = delta^2", sp.Eq(sp.Symbol("delta^2"), eq[0]))
    d.check_equal("delta^2 = 2 alpha / beta", eq[0], 2 * alpha / beta)
    # SGD noise
    eps_u, sigma = sp.Symbol("epsilon_u", real=True), ss.sigma
    d.step("SGD: theta' gains -eta eps_B; its u-component adds to x'", sp.Eq(sp.Symbol("x'"), red["x_reduced"] - eta * eps_u))
    d.text("With eps_u = u . eps_B of variance sigma_u^2, taken Gaussian by the model, -eta eps_u has the law of "
           "eta sigma z, z ~ N(0,1): the stochastic reduced model's eta*sigma*z with sigma = sigma_u.  The "
           "component along grad S_perp (-eta grad S_perp . eps_B in y') is neglected by that model.")
    x_noisy, _ = ss.reduced_update(noisy=True)
    d.check_equal("noisy model's x' - deterministic x' = eta*sigma*z", x_noisy - x_sim, eta * sigma * ss.z)


def _check_sharpness_numerically(d) -> None:
    """lambda_max(H + T[v]) - S vs grad S . v for a random cubic model and a small v."""
    rng = np.random.default_rng(3)
    (x, p, q), coeffs = rm.frame_symbols()
    vals = {rm.S: 5.0, rm.beta: 2.0, rm.alpha: 1.0}
    for name, sym in coeffs.items():
        if isinstance(sym, sp.Symbol) and sym not in vals and name != "S":
            vals[sym] = float(rng.normal()) if name.startswith("T_") else float(rng.uniform(-1, 1))
    hess = sp.hessian(rm.cubic_loss(), (x, p, q))
    v = np.array([1e-4, -2e-4, 1.5e-4])
    H_v = np.array(hess.subs(vals).subs({x: v[0], p: v[1], q: v[2]}), dtype=float)
    lam = np.linalg.eigvalsh(H_v).max()
    ds = float(rm.derive_sharpness_along_displacement()["dS"].subs(vals).subs({x: v[0], p: v[1], q: v[2]}))
    # second-order error ~ |T v|^2 / (S - other eigenvalues) ~ 1e-7 here
    d.check_close("numeric: lambda_max(Hess(v)) - S = grad S . v + O(|v|^2)", lam - 5.0, ds, atol=1e-6)
