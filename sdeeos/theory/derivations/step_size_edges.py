"""Step-size edges of an SGD run: curvature, batch sharpness and the noise-kernel bound (docs/theory.md#step-size-edges)."""

from __future__ import annotations

import numpy as np
import sympy as sp

from .. import gd_stability as gs
from .. import mean_square as ms
from .. import step_size_edges as se


def derive(d) -> None:
    eta, n, B = ms.eta, ms.n_sym, ms.B_sym
    tau, lam, C = se.ntk_trace_symbol, se.lambda_top_symbol, se.n_outputs_symbol
    _, _, mu, _ = gs.symbols()
    d.text("Curvature and batch-sharpness edges: the heavy-ball threshold eta*a < h(mu) with a = lambda_max or "
           "a = batch sharpness (derivation momentum_thresholds).")
    d.result("h(mu)", sp.Eq(sp.Symbol("h"), gs.derive_threshold("heavy_ball")), key="h")
    d.text("Noise kernel (derivation noise_kernel, without replacement): K = (1/C) sum_a k(eta, lambda_a). Each term is "
           "convex in lambda with k(eta, 0) = 0, so k(eta, l) <= (l/lambda_top) k(eta, lambda_top) for 0 <= l <= "
           "lambda_top, and summing: K <= K_up = tau/(C lambda_top) k(eta, lambda_top), tau = tr Theta.")
    k = ms.derive_noise_kernel_term("without_replacement")["term"]
    d.check("k(eta, lambda) is convex in lambda on the domain (d2k/dlambda2 >= 0 at 2000 random points)",
            _convex_on_domain(k))
    up = se.derive_noise_kernel_upper()
    d.step("K_up(eta)", up)
    edge = se.derive_noise_kernel_edge()
    d.result("eta_K: K_up(eta_K) = 1", sp.Eq(sp.Symbol("eta_K"), edge), key="eta_K")
    d.check_equal("K_up(eta_K) = 1", sp.simplify(up.subs(eta, edge)), 1)
    d.check_equal("B = n: eta_K = 2/lambda_top (GD's edge; no batch noise)", sp.simplify(edge.subs(B, n)), 2 / lam)
    d.check_equal("B = 1: eta_K = 2C/tau (the trace alone)", sp.simplify(edge.subs(B, 1)), 2 * C / tau)
    domain_at_edge = 2 - edge * lam * n * (B - 1) / (B * (n - 1))
    d.check_equal("eta_K is inside the deterministic domain: 2 - eta_K lambda_top (1 + c_full) = eta_K tau (n - B)/(C B (n - 1)) >= 0",
                  sp.simplify(domain_at_edge - edge * tau * (n - B) / (C * B * (n - 1))), 0)
    # numeric: the bound holds on random spectra and is attained by the spectrum with all mass at the top
    rng = np.random.default_rng(3)
    worst_gap, ok = 0.0, True
    for _ in range(300):
        nn = int(rng.integers(4, 60))
        bb = int(rng.integers(1, nn + 1))
        lams = rng.uniform(0, 1, size=int(rng.integers(1, nn + 1)))
        lams[0] = 1.0
        tr = float(lams.sum())
        e = se.noise_kernel_edge(ntk_trace=tr, lambda_top=1.0, batch_size=bb, n=nn)
        for frac in (0.3, 0.7, 0.99):
            kk = ms.noise_kernel_norm(frac * e, lams, bb, nn, sampling="without_replacement", outside="nan")
            ku = se.noise_kernel_upper(frac * e, ntk_trace=tr, lambda_top=1.0, batch_size=bb, n=nn)
            ok &= bool(np.isfinite(kk) and kk <= ku * (1 + 1e-12) and ku < 1)
            worst_gap = max(worst_gap, kk / ku if ku > 0 else 0.0)
    d.check(f"300 random spectra: K(eta) <= K_up(eta) < 1 for eta = 0.3, 0.7, 0.99 x eta_K (largest K/K_up {worst_gap:.3f})", ok)
    m = 5
    vals = [1.0] * m
    e = se.noise_kernel_edge(ntk_trace=float(m), lambda_top=1.0, batch_size=3, n=20)
    d.check("bound attained: m equal eigenvalues at lambda_top give K(eta_K) = 1 (noise_kernel_norm)",
            abs(ms.noise_kernel_norm(e, vals, 3, 20, sampling="without_replacement") - 1) < 1e-12)


def _convex_on_domain(k) -> bool:
    lam = ms.curvature
    second = sp.factor(sp.diff(k, lam, 2))
    # sample the domain numerically (the sign of a rational function of five symbols)
    f = sp.lambdify((ms.eta, lam, ms.n_sym, ms.B_sym), second, "math")
    rng = np.random.default_rng(0)
    for _ in range(2000):
        nn = int(rng.integers(2, 200))
        bb = int(rng.integers(1, nn + 1))
        e = float(rng.uniform(0.01, 5))
        lim = 2 / (e * nn * (bb - 1) / (bb * (nn - 1))) if bb > 1 else 10.0 / e
        l = float(rng.uniform(0, 0.999 * lim))
        if f(e, l, nn, bb) < -1e-12:
            return False
    return True
