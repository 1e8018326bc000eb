"""Batch-size dependence of the mini-batch noise (sigma_u^2) under three sampling models (docs/theory.md#batch-noise)."""

from __future__ import annotations

import itertools

import numpy as np
import sympy as sp

from .. import batch_noise as bn
from .. import self_stabilization as ss


def enumerate_variance(scheme: str, n: int, B: int, g):
    """Exact Var of the batch mean by enumerating every batch (exact rational probabilities)."""
    outcomes = []
    if scheme == "without_replacement":
        subsets = list(itertools.combinations(range(n), B))
        outcomes = [([1 if i in s else 0 for i in range(n)], sp.Rational(1, len(subsets))) for s in subsets]
    elif scheme == "with_replacement":
        for draws in itertools.product(range(n), repeat=B):
            outcomes.append(([draws.count(i) for i in range(n)], sp.Rational(1, n**B)))
    else:
        p = sp.Rational(B, n)
        for bits in itertools.product((0, 1), repeat=n):
            k = sum(bits)
            outcomes.append((list(bits), p**k * (1 - p) ** (n - k)))
    mean = sum(w * sum(c * gi for c, gi in zip(cs, g)) / B for cs, w in outcomes)
    second = sum(w * (sum(c * gi for c, gi in zip(cs, g)) / B) ** 2 for cs, w in outcomes)
    return sp.expand(mean), sp.expand(second - mean**2)


def derive(d) -> None:
    n, B = bn.n_data, bn.batch_size
    d.text("Batch mean g_hat = (1/n) sum_i D_i g_i, D_i = (n/B) c_i, c_i = multiplicity of example i in the batch.")
    expected_a = {"without_replacement": (n - B) / (B * (n - 1)), "with_replacement": 1 / B, "bernoulli": 1 / B - 1 / n}
    expected_b = {"without_replacement": 0, "with_replacement": 0, "bernoulli": 1 / B - 1 / n}
    for scheme in bn.SAMPLING_SCHEMES:
        mom = bn.derive_count_moments(scheme)
        d.step(f"{scheme}: moments of the counts", [sp.Eq(sp.Symbol(k), v) for k, v in mom.items()])
        w = bn.derive_weight_covariance(scheme)
        d.step(f"{scheme}: E D_i, Var D_i, Cov(D_i, D_j)", [w["mean"], w["var"], w["cov"]])
        d.check(f"{scheme}: unbiased (E D_i = 1)", sp.simplify(w["mean"] - 1) == 0)
        coef = bn.derive_noise_covariance_coefficients(scheme)
        d.result(f"{scheme}: Cov(g_hat) = a Sigma_1 + b g_bar g_bar^T",
                 [sp.Eq(sp.Symbol("a"), coef["centred"]), sp.Eq(sp.Symbol("b"), coef["mean_outer"])], key=scheme)
        d.check_equal(f"{scheme}: a = {expected_a[scheme]}", coef["centred"], expected_a[scheme])
        d.check_equal(f"{scheme}: b = {expected_b[scheme]}", coef["mean_outer"], expected_b[scheme])
        at_full = sp.simplify((coef["centred"]).subs(B, n))
        d.step(f"{scheme}: a at B = n", at_full)
        # exact enumeration with symbolic per-example gradients
        for nn, bb in ((4, 2), (4, 3)):
            g = sp.symbols(f"g1:{nn + 1}", real=True)
            mean, var = enumerate_variance(scheme, nn, bb, g)
            gbar = sum(g) / nn
            s2 = sum((gi - gbar) ** 2 for gi in g) / nn
            formula = coef["centred"].subs({n: nn, B: bb}) * s2 + coef["mean_outer"].subs({n: nn, B: bb}) * gbar**2
            d.check(f"{scheme}: enumeration of every batch (n={nn}, B={bb}) with symbolic g_i: unbiased and "
                    "Var = a s^2 + b g_bar^2", sp.expand(mean - gbar) == 0 and sp.expand(var - formula) == 0)
    d.check("noise vanishes at B = n without replacement and for Bernoulli, not with replacement",
            sp.simplify(bn.derive_noise_covariance_coefficients("without_replacement")["centred"].subs(B, n)) == 0
            and sp.simplify(bn.derive_noise_covariance_coefficients("bernoulli")["centred"].subs(B, n)) == 0
            and sp.simplify(bn.derive_noise_covariance_coefficients("with_replacement")["centred"].subs(B, n)) != 0)
    # gap vs batch size
    x, y, z, eta, alpha, beta, sigma = ss.symbols()
    s1 = sp.Symbol("s_u1", positive=True)  # single-example projected noise std
    lead = ss.derive_gap_closure()["leading"]
    gapB = sp.simplify(lead.subs(sigma, sp.sqrt(expected_a["without_replacement"]) * s1))
    d.result("leading gap vs batch size (without replacement, sigma_u^2 = a(B) s_u1^2)", sp.Eq(sp.Symbol("DeltaS_lead"), gapB),
             key="gap_vs_B")
    d.check_equal("DeltaS_lead = (eta beta s_u1^2/(4 alpha)) n/(n-1) (1/B - 1/n): not a pure 1/B power",
                  gapB, eta * beta * s1**2 / (4 * alpha) * n / (n - 1) * (1 / B - 1 / n))
    sizes = np.array([50, 75, 100, 150, 200, 300, 500, 750, 1000, 1500, 2500], dtype=float)
    a_num = np.array([bn.centred_coefficient(int(b), 5000, "without_replacement") for b in sizes])
    slope = np.polyfit(np.log(sizes), np.log(a_num), 1)[0]
    d.step("least-squares slope of log a(B) vs log B, n = 5000, the 11 batch sizes of Liao et al. Fig. 2A", sp.Float(slope, 6))
    d.check_close("slope = -1.14 (the 2-digit reference value)", slope, -1.14, atol=0.005)
    d.check("every lambdified coefficient equals the symbolic one at (B, n) = (7, 50)",
            all(abs(bn.centred_coefficient(7, 50, s) - float(bn.derive_noise_covariance_coefficients(s)["centred"].subs({B: 7, n: 50}))) < 1e-15
                and abs(bn.mean_outer_coefficient(7, 50, s) - float(bn.derive_noise_covariance_coefficients(s)["mean_outer"].subs({B: 7, n: 50}))) < 1e-15
                for s in bn.SAMPLING_SCHEMES))
