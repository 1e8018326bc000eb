"""The reduced model with k coupled edge directions: exact identities, closure, when it is the 1-D formula."""

from __future__ import annotations

import numpy as np
import sympy as sp

from .. import multi_direction as md
from .. import self_stabilization as ss


def derive(d) -> None:
    k = 2
    s = md.symbols(k)
    x, y, alpha, sigma, G, eta = s["x"], s["y"], s["alpha"], s["sigma"], s["G"], s["eta"]
    d.text("Directions u_j with eigenvalues lambda_j = 2/eta + y_j; x_j = u_j.(theta - theta_dagger); "
           "G_ij = grad lambda_i . grad lambda_j; alpha_i = -grad L . grad lambda_i; sigma_j^2 = u_j^T Sigma_B u_j. "
           "Shown for k = 2; the checks also run for k = 1 and k = 3.")
    up = md.update(k)
    d.step("the map (k = 2)", [sp.Eq(sp.Symbol(f"{v}'"), e) for v, e in zip(x + y, up)])
    d.check_equal("k = 1 is the one-direction map, symbol for symbol (x')", md.update(1)[0], ss.reduced_update()[0])
    d.check_equal("k = 1 is the one-direction map, symbol for symbol (y')", md.update(1)[1], ss.reduced_update()[1])
    # 1. E y_i
    st = md.derive_stationary_x_sq(k)
    d.step("stationarity of E[y_i] (exact)", [sp.Eq(r, 0) for r in st["relations"]])
    d.result("E[x_j^2] (exact): the solution of G E[x^2] = 2 alpha", [sp.Eq(u, v) for u, v in zip(st["unknowns"], st["solution"])],
             key="x_sq")
    for kk in (2, 3):
        sol = sp.Matrix(md.derive_stationary_x_sq(kk)["solution"])
        S = md.symbols(kk)
        diff = sp.simplify(sol - 2 * S["G"].inv() * sp.Matrix(S["alpha"]))
        d.check(f"k = {kk}: E[x^2] = 2 G^-1 alpha", diff.is_zero_matrix)
    d.check_equal("k = 1: E[x^2] = 2 alpha/beta", md.derive_stationary_x_sq(1)["solution"][0], ss.derive_stationary_x_sq())
    # 2. E x_j^2
    for ident in md.derive_x_sq_identities(k):
        d.result("stationarity of E[x_j^2] (exact)", ident)
    # 3. weighted gap
    w = md.derive_weighted_gap_identity(k)
    d.step("stationarity of E[y^T G^-1 y], times det G (exact; the cross moments E[y_i x_j^2], i != j, cancel)",
           sp.Eq(w["relation"], 0))
    d.result("weighted gap identity: sum_j m_j DeltaS_j = rhs, m = 2 G^-1 alpha", sp.Eq(w["lhs"], w["rhs"]),
             key="weighted_gap")
    for kk in (1, 2, 3):
        d.check_equal(f"k = {kk}: the relation is eta det G (rhs - lhs)", md.derive_weighted_gap_identity(kk)["residual"], 0)
    w1 = md.derive_weighted_gap_identity(1)
    m1 = md.symbols(1)
    gap_from_weighted = sp.solve(sp.Eq(w1["lhs"], w1["rhs"]), md.moment(1, m1["y"][0]))[0]
    d.check_equal("k = 1: the weighted identity (with E x^2 = 2 alpha/beta) is the one-direction exact gap identity",
                  -gap_from_weighted.subs(md.moment(1, m1["x"][0] ** 2), ss.derive_stationary_x_sq()),
                  ss.derive_gap_identity())
    d.text("a = alpha - G x^2/2, so E[a^T G^-1 a] >= 0 (G is a Gram matrix): sum_j m_j DeltaS_j >= (eta/2) sum_j sigma_j^2.")
    # 4. closure
    cl = md.derive_gap_closure(k)
    d.step("closure per direction: freeze y_j = -DeltaS_j, decorrelate: m_j = (1 - eta DeltaS_j)^2 m_j + eta^2 sigma_j^2")
    m_sym = sp.Symbol("m", positive=True)
    d.result(f"closure gap of direction {k} in terms of m = E[x_{k}^2] (the same form for every j)",
             sp.Eq(sp.Symbol(f"DeltaS_{k}"), cl["gap_in_m"]))
    d.check_equal("closure gap = (1 - sqrt(1 - eta^2 sigma_j^2/m_j))/eta", cl["gap_in_m"],
                  (1 - sp.sqrt(1 - eta**2 * sigma[-1] ** 2 / m_sym)) / eta)
    d.result("leading order per direction", [sp.Eq(sp.Symbol(f"DeltaS_{j + 1}"), cl["leading"][j]) for j in range(k)],
             key="leading")
    beff = [sp.simplify(alpha[j] / (G.inv() * sp.Matrix(alpha))[j]) for j in range(k)]
    for j in range(k):
        d.check_equal(f"leading_{j + 1} = eta beta_eff_{j + 1} sigma_{j + 1}^2/(4 alpha_{j + 1}), beta_eff = alpha_j/(G^-1 alpha)_j",
                      cl["leading"][j], eta * beff[j] * sigma[j] ** 2 / (4 * alpha[j]))
    d.check_equal("k = 1: closure = (1 - sqrt(1 - eta^2 beta sigma^2/(2 alpha)))/eta",
                  md.derive_gap_closure(1)["exact"][0], ss.derive_gap_closure()["exact"])
    # 5. reduction to the 1-D formula
    d.result("1-D formula eta beta sigma_1^2/(4 alpha_1) with beta = G_11 holds iff beta_eff_1 = G_11, i.e.",
             sp.Eq(sp.factor(beff[0] - G[0, 0]), 0), key="reduction")
    d.check_equal("k = 2: beta_eff_1 - G_11 = G_12 (G_11 alpha_2 - G_12 alpha_1)/(G_22 alpha_1 - G_12 alpha_2)",
                  beff[0] - G[0, 0], G[0, 1] * (G[0, 0] * alpha[1] - G[0, 1] * alpha[0]) / (G[1, 1] * alpha[0] - G[0, 1] * alpha[1]))
    d.check_equal("decoupled (G_12 = 0): each direction is the one-direction model, beta_eff_1 = G_11",
                  beff[0].subs(G[0, 1], 0), G[0, 0])
    d.text("So with m_2 = 2 (G^-1 alpha)_2 > 0 (both directions at the edge) and G_12 > 0, beta_eff_1 > G_11: "
           "coupled directions share the restoring force and the 1-D formula under-predicts the gap by beta_eff_1/G_11.")
    # 6. symmetric degenerate case
    for kk in (2, 3):
        sym = md.derive_symmetric_case(kk)
        a_, s_, b_, c_ = sym["symbols"]
        d.result(f"k = {kk} degenerate directions (alpha, sigma equal, G_ii = beta, G_ij = c): E[x_j^2], beta_eff",
                 [sym["x_sq"], sym["beta_eff"]])
        d.check_equal(f"k = {kk}: beta_eff = beta + (k - 1) c", sym["beta_eff"], b_ + (kk - 1) * c_)
        d.result(f"k = {kk}: corrected gap (identity with slow-mode fluctuations)", sym["gap_corrected"])
        gc = sym["gap_corrected"]
        d.check_equal(f"k = {kk}: corrected = (1 - sqrt(1 - eta^2 sigma^2 beta_eff/(2 alpha) - 3 eta^2 alpha beta/beta_eff))/eta",
                      gc, (1 - sp.sqrt(1 - eta**2 * s_**2 * (b_ + (kk - 1) * c_) / (2 * a_)
                                       - 3 * eta**2 * a_ * b_ / (b_ + (kk - 1) * c_))) / eta)
    mode = md.derive_slow_mode_covariance()
    d.step("one slow eigenmode (G eigenvalue g, amplitude r0): Var r~, Var y~, Cov", [mode["var_r"], mode["var_y"], mode["cov"]])
    sym1 = md.derive_symmetric_case(1)
    d.check_equal("k = 1: the corrected gap is that of the one-direction model",
                  sym1["gap_corrected"].subs(dict(zip(sym1["symbols"][:3], (ss.symbols()[4], ss.symbols()[6], ss.symbols()[5])))),
                  ss.derive_gap_corrected()["exact"])
    # numbers
    G2 = np.array([[100.0, 30.0], [30.0, 80.0]])
    d.check_close("x_sq_stationary([1, 1], G) solves G m = 2 alpha", float(np.max(np.abs(G2 @ md.x_sq_stationary([1, 1], G2) - 2))),
                  0.0, atol=1e-13)
    d.check_close("symmetric_gaps(k=1, c=0) corrected = gap_corrected(0.01, 1, 100, 10)",
                  md.symmetric_gaps(0.01, 1.0, 10.0, 100.0, 0.0, 1)["corrected"], float(ss.gap_corrected(0.01, 1, 100, 10)),
                  rtol=1e-13)
