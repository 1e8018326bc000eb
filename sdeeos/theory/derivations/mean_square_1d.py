"""Exact mean-square stability of 1-D SGD with multiplicative batch noise (docs/theory.md#mean-square-threshold)."""

from __future__ import annotations

import numpy as np
import sympy as sp

from .. import batch_noise as bn
from .. import mean_square as ms
from .batch_noise_scaling import enumerate_variance


def derive(d) -> None:
    eta, hbar, s2 = ms.eta, ms.hbar, ms.s_sq
    n, B = bn.n_data, bn.batch_size
    d.text("l_i(theta) = h_i theta^2/2; SGD: theta' = (1 - eta h_hat_B) theta with h_hat_B = (1/n) sum D_i h_i, the batch "
           "drawn independently of theta, so E theta'^2 = E(1 - eta h_hat_B)^2 E theta^2.")
    for scheme in bn.SAMPLING_SCHEMES:
        fac = ms.derive_one_dimensional_factor(scheme)
        d.step(f"{scheme}: mean-square factor E(1 - eta h_hat)^2 (s2 = centred variance of the h_i)", fac)
        coef = bn.derive_noise_covariance_coefficients(scheme)
        vB = coef["centred"] * s2 + coef["mean_outer"] * hbar**2
        d.check_equal(f"{scheme}: factor = (1 - eta hbar)^2 + eta^2 v_B", fac, (1 - eta * hbar) ** 2 + eta**2 * vB)
        h = sp.symbols("h1:4", positive=True)
        _, var = enumerate_variance(scheme, 3, 2, h)
        hb = sum(h) / 3
        d.check(f"{scheme}: v_B equals the variance of h_hat by enumerating every batch (n = 3, B = 2, symbolic h_i)",
                sp.expand(var - vB.subs({n: 3, B: 2, hbar: hb, s2: sum((hi - hb) ** 2 for hi in h) / 3})) == 0)
        thr = ms.derive_one_dimensional_threshold(scheme)
        d.result(f"{scheme}: mean-square stable iff eta < eta_c", sp.Eq(sp.Symbol("eta_c"), thr), key=scheme)
        d.check_equal(f"{scheme}: eta_c = 2 hbar/(hbar^2 + v_B)", thr, 2 * hbar / (hbar**2 + vB))
    v = sp.Symbol("v_B", positive=True)
    gen = (1 - eta * hbar) ** 2 + eta**2 * v
    roots = sp.solve(sp.Eq(gen, 1), hbar)
    hmax = max(roots, key=lambda r: r.subs({eta: 1, v: sp.Rational(1, 10)}))
    d.step("at fixed eta and v_B: the largest stable mean curvature", sp.Eq(sp.Symbol("hbar_max"), hmax))
    d.check_equal("hbar_max = (1 + sqrt(1 - eta^2 v_B))/eta", hmax, (1 + sp.sqrt(1 - eta**2 * v)) / eta)
    u = sp.Symbol("u", real=True)  # u = eta^2 v_B, in (0, 1] where hbar_max is real
    gap_to_edge = sp.simplify(2 - eta * hmax).subs(eta**2 * v, u)
    region = sp.solve_univariate_inequality(gap_to_edge > 0, u, relational=False)
    d.check("2 - eta hbar_max = 1 - sqrt(1 - eta^2 v_B) > 0 for every 0 < eta^2 v_B <= 1: strictly below the GD edge",
            sp.Interval.Lopen(0, 1).is_subset(region))
    d.step("expansion: eta hbar_max = 2 - eta^2 v_B/2 + ... (a shift linear in the noise variance, negative)",
           sp.series(eta * hmax, v, 0, 2).removeO())
    # reference values of docs/theory.md#mean-square-threshold (n = 20 curvatures U(0.5, 3), numpy default_rng(0))
    h = np.random.default_rng(0).uniform(0.5, 3.0, 20)
    table = {1: 0.933, 2: 1.024, 5: 1.088, 10: 1.111, 20: 1.123}
    got = {b: ms.one_dimensional_threshold(h, b, "without_replacement") for b in table}
    d.step("eta_c for n = 20 curvatures ~ U(0.5, 3) (default_rng(0)), without replacement",
           ", ".join(f"B={b}: {got[b]:.4f}" for b in table))
    d.check("matches the reference values to 3 digits", all(abs(got[b] - table[b]) <= 5e-4 for b in table))
    d.check_close("B = n: eta_c = 2/hbar (GD)", got[20], 2 / h.mean(), rtol=1e-14)
    sg = sp.Symbol("sigma_g", positive=True)
    m2 = sp.Symbol("m2", positive=True)
    (stat,) = sp.solve(sp.Eq(m2, gen * m2 + eta**2 * sg**2), m2)
    d.result("with additive noise xi (variance sigma_g^2): stationary E theta^2", sp.Eq(sp.Symbol("E[theta^2]"), stat),
             key="stationary")
    d.check_equal("E theta^2 = eta^2 sigma_g^2 / (1 - (1 - eta hbar)^2 - eta^2 v_B)", stat,
                  eta**2 * sg**2 / (1 - gen))
    val = ms.one_dimensional_stationary_second_moment(0.9, h, 5, "without_replacement", 1.0)
    fac = ms.one_dimensional_factor(0.9, h, 5, "without_replacement")
    d.check_close("numeric stationary second moment = eta^2 sigma_g^2/(1 - factor)", val, 0.81 / (1 - fac), rtol=1e-14)
    d.check("beyond eta_c there is no stationary state (NaN with outside='nan')",
            bool(np.isnan(ms.one_dimensional_stationary_second_moment(1.0, h, 1, "without_replacement", 1.0, outside="nan"))))
