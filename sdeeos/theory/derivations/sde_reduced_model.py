"""SDE and Fokker-Planck form of the stochastic reduced model (slow-fast system)."""

from __future__ import annotations

import sympy as sp

from .. import self_stabilization as ss
from .._expectation import moment_symbol


def _generator(f, drift, diffusion, state):
    """Ito generator sum_i b_i d_i f + (1/2) sum_ij a_ij d_i d_j f."""
    out = sum(b * sp.diff(f, s) for b, s in zip(drift, state))
    out += sum(diffusion[i, j] * sp.diff(f, state[i], state[j]) for i in range(len(state)) for j in range(len(state))) / 2
    return sp.expand(out)


def _expect(expr, state):
    """Replace monomials in the state by moment symbols E[...] (the constant by 1)."""
    poly = sp.Poly(sp.expand(expr), *state)
    return sp.expand(sum(c * (moment_symbol(state, p) if any(p) else 1) for p, c in poly.terms()))


def derive(d) -> None:
    x, y, z, eta, alpha, beta, sigma = ss.symbols()
    X = sp.Symbol("X", real=True)
    x1, y1 = ss.reduced_update(noisy=True)
    d.text("x alternates sign (x' ~ -x): demodulate, X_t = (-1)^t x_t.  Then X' = -x' with x = X, and since z and -z "
           "have the same law, X' = (1 + eta y) X + eta sigma z: X and y are both slow (change O(eta) per step).")
    X_next = sp.expand(-x1.subs(x, X).subs(z, -z))
    d.step("demodulated map", [sp.Eq(sp.Symbol("X'"), X_next), sp.Eq(sp.Symbol("y'"), y1.subs(x, X))])
    d.check_equal("X' = (1 + eta y) X + eta sigma z", X_next, (1 + eta * y) * X + eta * sigma * z)
    drift = sp.Matrix([sp.expand(X_next - X).coeff(z, 0), sp.expand(y1.subs(x, X) - y)])
    noise_amp = sp.expand(X_next - X).coeff(z, 1)
    diff = sp.Matrix([[noise_amp**2, 0], [0, 0]])
    d.result("Ito SDE (diffusion approximation: drift = one-step conditional mean, diffusion = conditional variance; "
             "time in steps)", [sp.Eq(sp.Symbol("dX"), drift[0] * sp.Symbol("dt") + noise_amp * sp.Symbol("dW")),
                                sp.Eq(sp.Symbol("dy"), drift[1] * sp.Symbol("dt"))], key="sde")
    p = sp.Function("p")(X, y, sp.Symbol("t"))
    fp = -sp.diff(drift[0] * p, X) - sp.diff(drift[1] * p, y) + sp.diff(diff[0, 0] * p, X, 2) / 2
    d.result("Fokker-Planck equation", sp.Eq(sp.Derivative(p, sp.Symbol("t")), fp), key="fokker_planck")
    state = (X, y)
    r = ss.r_slow
    gen_r = _generator(X**2, drift, diff, state)
    d.step("Ito for r = X^2: drift of r", gen_r)
    slow = ss.derive_slow_sde()
    d.check_equal("r-drift = 2 eta y r + eta^2 sigma^2 = the leading slow drift of gap_beyond_closure",
                  gen_r.subs(X**2, r), slow["drift_leading"][0])
    d.check_equal("r-diffusion (2 X * eta sigma)^2 = 4 eta^2 sigma^2 r = the leading slow diffusion",
                  (2 * X * noise_amp) ** 2, slow["diffusion_leading"][0, 0].subs(r, X**2))
    d.text("Stationary identities of the SDE: E[L f] = 0 for f = y, X^2, y^2.")
    rel = {f: _expect(_generator(f, drift, diff, state), state) for f in (y, X**2, y**2)}
    for f, e in rel.items():
        d.step(f"E[L {f}] = 0", sp.Eq(e, 0))
    m = lambda px, py: moment_symbol(state, (px, py))  # noqa: E731
    sol = sp.solve(list(rel.values()), [m(2, 0), m(2, 1), m(0, 1)], dict=True)[0]
    gap_sde = sp.simplify(-sol[m(0, 1)])
    d.result("SDE stationary gap -E[y] (exact for the SDE)", sp.Eq(sp.Symbol("DeltaS_SDE"), gap_sde), key="gap_sde")
    d.check_equal("E[X^2] = 2 alpha/beta, as for the map", sol[m(2, 0)], 2 * alpha / beta)
    d.check_equal("DeltaS_SDE = eta beta sigma^2/(4 alpha) exactly: the diffusion approximation gives the leading-order "
                  "(Liao et al.) gap with no fluctuation correction", gap_sde, eta * beta * sigma**2 / (4 * alpha))
    gap_map = ss.derive_gap_identity()
    mx = lambda px, py: moment_symbol((x, y), (px, py))  # noqa: E731
    d.step("map's exact gap minus the SDE's: the discrete-time (second Kramers-Moyal moment) terms",
           sp.expand(gap_map - gap_sde))
    d.check_equal("difference = (eta beta/(4 alpha)) E[x^2 y^2] + (eta beta^2/(8 alpha)) Var(x^2)  (>= 0)",
                  sp.expand(gap_map - gap_sde).subs(mx(4, 0), sp.Symbol("V") + (2 * alpha / beta) ** 2),
                  eta * beta / (4 * alpha) * mx(2, 2) + eta * beta**2 / (8 * alpha) * sp.Symbol("V"))
    # Euler-Maruyama with step h (in steps) is the reduced map with rescaled parameters
    hh = sp.Symbol("h", positive=True)
    em = [X + hh * drift[0] + sp.sqrt(hh) * noise_amp * z, y + hh * drift[1]]
    eta_t, sigma_t = hh * eta, sigma / sp.sqrt(hh)
    mapped = [sp.expand(-x1.subs(x, X).subs(z, -z).subs({eta: eta_t, sigma: sigma_t}, simultaneous=True)),
              sp.expand(y1.subs(x, X).subs({eta: eta_t, sigma: sigma_t}, simultaneous=True))]
    d.check("Euler-Maruyama of this SDE with step h = the reduced map with eta -> h eta, sigma -> sigma/sqrt(h) "
            "(so the map itself is EM with h = 1)", all(sp.expand(a - b) == 0 for a, b in zip(em, mapped)))
    corr = ss.derive_gap_corrected()["exact"]
    corr_h = corr.subs({eta: eta_t, sigma: sigma_t}, simultaneous=True)
    d.step("corrected gap of the EM chain with step h", corr_h)
    d.check_equal("h -> 0: the EM chain's corrected gap -> eta beta sigma^2/(4 alpha) = DeltaS_SDE",
                  sp.limit(corr_h, hh, 0), gap_sde)
    d.check_equal("the leading gap is invariant under the rescaling", ss.derive_gap_closure()["leading"].subs(
        {eta: eta_t, sigma: sigma_t}, simultaneous=True), gap_sde)
    # second-order Kramers-Moyal generator (raw second moments) reproduces the map exactly for quadratics in (X^2, y)
    d.text("With raw one-step second moments B = E[dd^T | state] in place of the covariance (second-order "
           "Kramers-Moyal), E[L f] = 0 reproduces the map's identities for f = y, x^2, y^2 exactly:")
    second = slow["second_moment"]
    km_drift = slow["drift"]
    ok = True
    for f_r, f_x in ((y, y), (r, x**2), (y**2, y**2)):
        lf = sum(km_drift[i] * sp.diff(f_r, v) for i, v in enumerate((r, y)))
        lf += sum(second[i, j] * sp.diff(f_r, a, b) for i, a in enumerate((r, y)) for j, b in enumerate((r, y))) / 2
        lf_x = sp.expand(lf.subs(r, x**2))
        ok &= sp.expand(_expect(lf_x, (x, y)) - ss.stationarity(f_x)) == 0
    d.check("second-order KM generator = exact one-step change of E f for f = y, x^2, y^2", ok)
    # energy
    H = y**2 + beta / 2 * X**2 - alpha * sp.log(X**2)
    det_drift = drift.subs(sigma, 0)
    lead_drift = sp.Matrix([sp.expand(det_drift[0]), det_drift[1]])
    d.step("H = y^2 + (beta/2) X^2 - alpha log X^2 (conserved by the deterministic drift)", H)
    d.check_equal("H is conserved by the deterministic drift (dH/dt = b . grad H = 0)",
                  sum(lead_drift[i] * sp.diff(H, v) for i, v in enumerate(state)), 0)
    LH = sp.simplify(_generator(H, drift, diff, state))
    d.result("Ito drift of H (for X != 0): noise pumps energy into the slow cycle", sp.Eq(sp.Symbol("L H"), LH), key="energy_drift")
    d.check_equal("L H = eta^2 sigma^2 (beta/2 + alpha/X^2) > 0", LH, eta**2 * sigma**2 * (beta / 2 + alpha / X**2))
    v = sp.Symbol("v", positive=True)
    gauss = sp.exp(-X**2 / (2 * v)) / sp.sqrt(2 * sp.pi * v)
    finite_part = sp.simplify(sp.integrate((gauss - gauss.subs(X, 0)) / X**2, (X, -sp.oo, sp.oo)))
    d.step("H is not C^2 at X = 0: E[1/X^2] is a Hadamard finite part, for X ~ N(0, v)", sp.Eq(sp.Symbol("fp E[1/X^2]"), finite_part))
    d.check_equal("finite part = -1/v (negative: the zero crossings of X remove energy)", finite_part, -1 / v)
    balance = sp.simplify((eta**2 * sigma**2 * (beta / 2 + alpha * finite_part)).subs(v, 2 * alpha / beta))
    d.check("for Gaussian X with E X^2 = 2 alpha/beta the energy balance E[L H] = 0 closes exactly", balance == 0)
    d.text("L H > 0 away from X = 0, so the slow cycle gains energy everywhere except at the passages of X through "
           "0, which remove it (finite part above).  When the cycles are large (sigma^2 <~ 4 alpha^2/beta) X is far "
           "from Gaussian, and closures in smooth slow variables (the closure, its linear correction) fail.")
