"""SDE view of SGD on a 1-D quadratic: SME, Fokker-Planck, discrete vs continuous variance, no 2/eta boundary."""

from __future__ import annotations

import numpy as np
import sympy as sp

from .. import sde


def derive(d) -> None:
    t, x, x0, v0, kappa, mu, s, h, k = sde.ou_symbols()
    eta, lam, sg = sp.symbols("eta lambda sigma_g", positive=True)
    theta, zeta = sp.Symbol("theta", real=True), sp.Symbol("z", real=True)
    d.text("SGD on L = lambda theta^2/2 with additive gradient noise xi = sigma_g z: theta' = (1 - eta lambda) theta - eta xi.")
    step = (1 - eta * lam) * theta - eta * sg * zeta
    mean_inc = sp.expand(step - theta).coeff(zeta, 0)
    var_inc = sp.expand(step - theta).coeff(zeta, 1) ** 2
    d.step("one step: E[d theta | theta], Var[d theta | theta]", [mean_inc, var_inc])
    d.text("SME (Li, Tai & E), time t = k eta: match drift b and diffusion s^2 of dtheta = b dt + s dW over dt = eta.")
    b_sme, s2_sme = sp.simplify(mean_inc / eta), sp.simplify(var_inc / eta)
    d.result("stochastic modified equation", sp.Eq(sp.Symbol("d theta"), sp.Symbol("dt") * b_sme + sp.sqrt(s2_sme) * sp.Symbol("dW")),
             key="sme")
    d.check_equal("SME drift = -lambda theta", b_sme, -lam * theta)
    d.check_equal("SME diffusion^2 = eta sigma_g^2 (the mini-batch covariance times eta)", s2_sme, eta * sg**2)
    d.text("OU process dX = -kappa (X - mu) dt + s dW; generator L f = -kappa (x - mu) f' + s^2 f''/2.")
    mom = sde.derive_ou_moments()
    d.step("moment ODEs solved (dsolve): mean", sp.Eq(sp.Symbol("E X_t"), mom["mean"]))
    d.step("variance", sp.Eq(sp.Symbol("Var X_t"), mom["variance"]))
    d.check_equal("mean = mu + (x0 - mu) exp(-kappa t)", mom["mean"], mu + (x0 - mu) * sp.exp(-kappa * t))
    d.check_equal("variance = v0 exp(-2 kappa t) + s^2 (1 - exp(-2 kappa t))/(2 kappa)", mom["variance"],
                  v0 * sp.exp(-2 * kappa * t) + s**2 * (1 - sp.exp(-2 * kappa * t)) / (2 * kappa))
    d.check_equal("kappa -> 0: Brownian variance v0 + s^2 t", mom["variance_zero_rate"], v0 + s**2 * t)
    dens = sde.derive_ou_stationary_density()
    d.result("Fokker-Planck stationary density (zero flux, kappa > 0)", sp.Eq(sp.Symbol("p_inf(x)"), dens), key="density")
    kp = sp.Symbol("kp", positive=True)
    dens_p = dens.subs(kappa, kp)
    flux = -kp * (x - mu) * dens_p - s**2 / 2 * sp.diff(dens_p, x)
    d.check("density solves the stationary Fokker-Planck equation with zero flux", sp.simplify(flux) == 0)
    d.check("density is normalised", sp.simplify(sp.integrate(dens_p, (x, -sp.oo, sp.oo))) == 1)
    var_inf = sp.simplify(sp.integrate((x - mu) ** 2 * dens_p, (x, -sp.oo, sp.oo)))
    d.check_equal("stationary variance s^2/(2 kappa) = the t -> oo limit of the transient variance", var_inf, s**2 / (2 * kp))
    acov = sde.derive_ou_autocovariance()
    d.step("stationary autocovariance", sp.Eq(sp.Symbol("C(tau)"), acov))
    d.check_equal("C(tau) = s^2 exp(-kappa tau)/(2 kappa)", acov, s**2 * sp.exp(-kappa * sde.tau) / (2 * kappa))
    em = sde.derive_euler_maruyama_ou()
    d.step("Euler-Maruyama chain (rsolve): mean, variance", [em["mean"], em["variance"]])
    d.check_equal("EM mean = mu + (x0 - mu)(1 - kappa h)^k", em["mean"], mu + (x0 - mu) * (1 - kappa * h) ** k)
    d.check_equal("EM variance at k = 0 is v0 and obeys v' = (1 - kappa h)^2 v + s^2 h",
                  sp.simplify(em["variance"].subs(k, k + 1) - (1 - kappa * h) ** 2 * em["variance"] - s**2 * h), 0)
    d.check_equal("EM variance at k = 0", em["variance"].subs(k, 0), v0)
    subs_sgd = {kappa: lam, mu: 0, s: sp.sqrt(eta) * sg, h: eta}
    em_step = (x - kappa * (x - mu) * h + s * sp.sqrt(h) * zeta).subs(subs_sgd)
    d.check_equal("SGD step = Euler-Maruyama step of the SME with h = eta (noise sign is immaterial)",
                  em_step.subs(x, theta), step.subs(zeta, -zeta))
    disc = sp.simplify(em["stationary_variance"].subs(subs_sgd))
    cont = sp.simplify((s**2 / (2 * kappa)).subs(subs_sgd))
    d.result("stationary variance: discrete SGD vs SDE", [sp.Eq(sp.Symbol("Var_disc"), disc), sp.Eq(sp.Symbol("Var_SDE"), cont)],
             key="variances")
    d.check_equal("discrete = eta^2 sigma_g^2/(1 - (1 - eta lambda)^2) = eta sigma_g^2/(lambda (2 - eta lambda))",
                  disc, eta**2 * sg**2 / (1 - (1 - eta * lam) ** 2))
    ratio = sp.simplify(disc / cont)
    d.result("ratio discrete/continuous", ratio, key="ratio")
    d.check_equal("ratio = 2/(2 - eta lambda)", ratio, 2 / (2 - eta * lam))
    poles_disc = sp.solve(sp.denom(sp.together(disc)), eta)
    poles_cont = sp.solve(sp.denom(sp.together(cont)), eta)
    d.step("poles in eta of the stationary variance: discrete, SDE", [poles_disc, poles_cont])
    d.check("the discrete variance diverges at eta = 2/lambda (the GD edge); the SDE's has no pole in eta > 0 and "
            "its stationary density exists for every eta: the SDE has no 2/eta boundary",
            poles_disc == [2 / lam] and poles_cont == [])
    # multiplicative noise: 1-D mean-square threshold in the SDE
    hb, vb = sp.symbols("hbar v_B", positive=True)
    m2 = sp.Function("m2")
    gen = sde.ou_generator(x**2, drift=-hb * x, diffusion=sp.sqrt(eta * vb) * x)
    d.step("multiplicative batch noise, SME dtheta = -hbar theta dt + sqrt(eta v_B) theta dW: L theta^2 =", gen)
    rate = sp.simplify(gen / x**2)
    thr_sde = sp.solve(sp.Eq(rate, 0), eta)[0]
    d.result("SDE mean-square stable iff eta < 2 hbar / v_B", sp.Eq(sp.Symbol("eta_c_SDE"), thr_sde), key="sde_threshold")
    thr_disc = 2 * hb / (hb**2 + vb)
    d.check_equal("SDE threshold = 2 hbar/v_B (discrete: 2 hbar/(hbar^2 + v_B), derivation mean_square_1d)", thr_sde, 2 * hb / vb)
    d.check("as v_B -> 0 the SDE threshold -> infinity while the discrete one -> 2/hbar: the h^2 term that makes the "
            "2/eta edge is missing from the SDE", sp.limit(thr_sde, vb, 0) == sp.oo and sp.limit(thr_disc, vb, 0) == 2 / hb)
    per_step_sde = sp.series(sp.exp(eta * rate), eta, 0, 3).removeO()
    per_step_disc = sp.expand((1 - eta * hb) ** 2 + eta**2 * vb)
    d.step("per-step mean-square factor: SDE exp(eta rate) vs discrete", [sp.expand(per_step_sde), per_step_disc])
    d.check_equal("they agree to first order in eta (weak order 1) and differ by eta^2 hbar^2 at second order",
                  sp.expand(per_step_sde - per_step_disc), eta**2 * hb**2)
    # numeric: lambdified transients; EM -> OU as h -> 0
    rate_v, diff_v = 2.0, 1.5
    errs = [abs(float(sde.euler_maruyama_ou_variance(int(round(1 / hh)), hh, rate_v, diff_v, 0.3))
                - float(sde.ou_variance(1.0, rate_v, diff_v, 0.3))) for hh in (1e-2, 1e-3)]
    d.check("EM variance at t = 1 converges to the OU variance at first order in h (error ratio ~10 for h/10)",
            6 < errs[0] / errs[1] < 14, f"errors {errs[0]:.3g}, {errs[1]:.3g}")
    a_, b_ = sde.ou_transition(0.1, rate_v, diff_v)
    d.check_close("exact transition: a^2 v_inf + b^2 = v_inf (stationarity preserved)", a_**2 * sde.ou_stationary_variance(rate_v, diff_v) + b_**2,
                  sde.ou_stationary_variance(rate_v, diff_v), rtol=1e-14)
    A, C = sde.derive_lyapunov_equation(2)
    Dm = sp.Matrix(2, 2, lambda i, j: sp.Symbol(f"d{min(i, j)}{max(i, j)}", real=True))
    d.check("2-D Lyapunov solution satisfies A C + C A^T = D (symbolic)", sp.simplify(A * C + C * A.T - Dm) == sp.zeros(2, 2))
    An = np.array([[1.0, -2.0], [0.5, 0.3]])
    Gn = np.array([[0.7], [0.2]])
    Cs = np.array(C.subs({**{sp.Symbol(f"a{i}{j}", real=True): An[i, j] for i in range(2) for j in range(2)},
                          sp.Symbol("d00", real=True): (Gn @ Gn.T)[0, 0], sp.Symbol("d01", real=True): (Gn @ Gn.T)[0, 1],
                          sp.Symbol("d11", real=True): (Gn @ Gn.T)[1, 1]}), dtype=float)
    d.check("symbolic 2-D stationary covariance = ou_stationary_covariance (SciPy)",
            np.allclose(Cs, sde.ou_stationary_covariance(An, Gn), rtol=1e-12, atol=1e-14))
