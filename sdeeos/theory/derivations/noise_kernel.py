"""Linear regression under mini-batch SGD: exact second-moment recursion, noise kernel K (docs/theory.md#noise-kernel)."""

from __future__ import annotations

import itertools

import numpy as np
import sympy as sp

from .. import batch_noise as bn
from .. import mean_square as ms


def _batch_outcomes(scheme, n, B):
    if scheme == "without_replacement":
        subsets = list(itertools.combinations(range(n), B))
        return [([1 if i in s else 0 for i in range(n)], sp.Rational(1, len(subsets))) for s in subsets]
    if scheme == "with_replacement":
        return [([dr.count(i) for i in range(n)], sp.Rational(1, n**B)) for dr in itertools.product(range(n), repeat=B)]
    p = sp.Rational(B, n)
    return [(list(bits), p ** sum(bits) * (1 - p) ** (n - sum(bits))) for bits in itertools.product((0, 1), repeat=n)]


def derive(d) -> None:
    eta, lam = ms.eta, ms.curvature
    n, B = bn.n_data, bn.batch_size
    d.text("Residuals r = X theta - y (realizable); one SGD step r' = (I - eta Theta D) r with Theta = X X^T/n (GD: "
           "r' = (I - eta Theta) r) and D = diag(n c_i / B).  M = E[r r^T]; the batch is independent of r.")
    nn, bb = 3, 2
    Th = sp.Matrix(nn, nn, lambda i, j: sp.Symbol(f"t{min(i, j)}{max(i, j)}", real=True))
    M = sp.Matrix(nn, nn, lambda i, j: sp.Symbol(f"m{min(i, j)}{max(i, j)}", real=True))
    I = sp.eye(nn)
    for scheme in bn.SAMPLING_SCHEMES:
        rec = ms.derive_second_moment_recursion(scheme)
        d.step(f"{scheme}: M' = (I - eta Theta) M (I - eta Theta) + eta^2 (c_diag Theta Diag(M) Theta + c_full Theta M Theta)",
               [sp.Eq(sp.Symbol("c_diag"), rec["c_diag"]), sp.Eq(sp.Symbol("c_full"), rec["c_full"])])
        exact = sp.zeros(nn, nn)
        for counts, w in _batch_outcomes(scheme, nn, bb):
            Dm = sp.diag(*[sp.Rational(nn, bb) * c for c in counts])
            exact += w * (I - eta * Th * Dm) * M * (I - eta * Dm * Th)
        cd, cf = rec["c_diag"].subs({n: nn, B: bb}), rec["c_full"].subs({n: nn, B: bb})
        formula = (I - eta * Th) * M * (I - eta * Th) + eta**2 * (cd * Th * sp.diag(*M.diagonal()) * Th + cf * Th * M * Th)
        d.check(f"{scheme}: recursion equals the exact average over every batch (n = 3, B = 2, symbolic Theta and M)",
                sp.expand(exact - formula) == sp.zeros(nn, nn))
    d.text("Delocalisation closure Diag(M) ~ (tr M/n) I; in the eigenbasis m_a = q_a^T M q_a.")
    for scheme in bn.SAMPLING_SCHEMES:
        mode = ms.derive_mode_recursion(scheme)
        d.step(f"{scheme}: m_a' = A(lambda_a) m_a + u(lambda_a) sum_b m_b", [sp.Eq(sp.Symbol("A"), mode["A"]),
                                                                              sp.Eq(sp.Symbol("u"), mode["u"])])
        term = ms.derive_noise_kernel_term(scheme)
        d.step(f"{scheme}: diagonal + rank one: top eigenvalue < 1 iff max A < 1 and sum_a u_a/(1 - A_a) < 1; one term",
               term["term"])
        d.result(f"{scheme}: K = sum over modes of", sp.Eq(sp.Symbol("K_a"), term["term"]), key=f"K_{scheme}")
    d.check_equal("Bernoulli: K_a = eta (1/B - 1/n) lambda/(2 - eta lambda) (docs/theory.md#noise-kernel)",
                  ms.derive_noise_kernel_term("bernoulli")["term"], eta * (1 / B - 1 / n) * lam / (2 - eta * lam))
    d.check_equal("with replacement: K_a = (eta/B) lambda / (2 - eta lambda (B - 1)/B)",
                  ms.derive_noise_kernel_term("with_replacement")["term"], eta / B * lam / (2 - eta * lam * (B - 1) / B))
    d.check_equal("without replacement: K_a = eta (n - B)/(B (n - 1)) lambda/(2 - eta lambda n (B - 1)/(B (n - 1)))",
                  ms.derive_noise_kernel_term("without_replacement")["term"],
                  eta * (n - B) / (B * (n - 1)) * lam / (2 - eta * lam * n * (B - 1) / (B * (n - 1))))
    d.step("small eta lambda: K ~ (eta/2) (1/B - 1/n) tr Theta (Bernoulli): trace-dominated, zero at B = n",
           sp.series(ms.derive_noise_kernel_term("bernoulli")["term"], eta, 0, 2).removeO())
    d.text("Exact criterion: T = diag(A_ab) + diag(W_ab) R^T R in the eigenbasis (R_{i,ab} = Q_ia Q_ib); its top "
           "eigenvalue is < 1 iff max A < 1 and lambda_max(G) < 1, G = R diag(W/(1 - A)) R^T (n x n).  The closure K "
           "is the Rayleigh quotient 1^T G 1 / n (sum_i Q_ia Q_ib = delta_ab), hence K <= K_exact.")
    rng = np.random.default_rng(7)
    ok_rq, ok_le = True, True
    for scheme in bn.SAMPLING_SCHEMES:
        for _ in range(3):
            X = rng.normal(size=(8, 12)) / np.sqrt(12)
            theta = X @ X.T / 8
            e = 0.5 / np.linalg.eigvalsh(theta).max()
            k_cl = ms.noise_kernel_norm(e, np.linalg.eigvalsh(theta), 2, 8, scheme)
            k_ex = ms.noise_kernel_norm_exact(e, theta, 2, scheme)
            ok_le &= k_cl <= k_ex * (1 + 1e-12)
            lam_, Q = np.linalg.eigh(theta)
            c = ms._kernel_numeric(scheme)
            A = np.outer(1 - e * lam_, 1 - e * lam_) + e**2 * float(c["c_full"](8, 2)) * np.outer(lam_, lam_)
            W = e**2 * float(c["c_diag"](8, 2)) * np.outer(lam_, lam_)
            G = np.einsum("ia,ib,ja,jb,ab->ij", Q, Q, Q, Q, W / (1 - A))
            ok_rq &= abs(np.ones(8) @ G @ np.ones(8) / 8 - k_cl) < 1e-12 * max(1.0, k_cl)
    d.check("numeric (3 random Theta per scheme): K_closure = 1^T G 1 / n to round-off", ok_rq)
    d.check("numeric: K_closure <= K_exact", ok_le)
    X = rng.normal(size=(10, 30)) / np.sqrt(30)
    theta = X @ X.T / 10
    ok = True
    for scheme in bn.SAMPLING_SCHEMES:
        e_c = ms.critical_learning_rate(theta, 2, scheme, rtol=1e-9)
        rho = ms.second_moment_spectral_radius(e_c, theta, 2, scheme)
        dense = np.max(np.abs(np.linalg.eigvals(ms.second_moment_operator(e_c, theta, 2, scheme))))
        ok &= abs(rho - 1) < 1e-6 and abs(dense - 1) < 1e-6
    d.check("numeric (n = 10): at eta_c (K_exact = 1) the exact operator's spectral radius is 1 (symmetric-basis "
            "and dense n^2 x n^2 forms, to 1e-6)", ok)
    # reference values of docs/theory.md#noise-kernel: n = 50, d = 200, Gaussian data with |x_i|^2 ~ 1, numpy default_rng(0), Bernoulli
    X = np.random.default_rng(0).normal(size=(50, 200)) / np.sqrt(200)
    theta = X @ X.T / 50
    lam_all = np.linalg.eigvalsh(theta)
    e_c = ms.critical_learning_rate(theta, 1, "bernoulli", rtol=1e-7)
    k = ms.noise_kernel_norm(e_c, lam_all, 1, 50, "bernoulli")
    d.step("n = 50, d = 200 (default_rng(0)), B = 1, Bernoulli: eta_c, eta_c lambda_max, K(eta_c)",
           f"{e_c:.4f}, {e_c * lam_all.max():.4f}, {k:.4f}")
    d.check("matches the reference values (eta_c = 1.846, K = 0.922) to the quoted digits",
            abs(e_c - 1.846) < 5e-4 and abs(k - 0.922) < 5e-4)
    d.check("S-EOS: instability at eta_c lambda_max << 2 (here < 0.1)", e_c * lam_all.max() < 0.1)
    _quadratic_regression(d)


def _quadratic_regression(d) -> None:
    """K for the quadratic-regression model: SGD linearised at the current point is the linear case with Theta(theta)."""
    eta = ms.eta
    P, Dn = 2, 2
    th = sp.Matrix(sp.symbols("th1:3", real=True))
    z0 = sp.Matrix(sp.symbols("z01:3", real=True))
    J0 = sp.Matrix(Dn, P, lambda i, j: sp.Symbol(f"J{i}{j}", real=True))
    Qt = [sp.Matrix(P, P, lambda j, k: sp.Symbol(f"Q{i}{min(j, k)}{max(j, k)}", real=True)) for i in range(Dn)]
    zf = lambda t: z0 + J0 * t + sp.Matrix([(t.T * Qt[i] * t)[0] / 2 for i in range(Dn)])  # noqa: E731
    z = zf(th)
    J = z.jacobian(th)
    delta = sp.Matrix(sp.symbols("delta1:3", real=True))
    quad = lambda v: sp.Matrix([(v.T * Qt[i] * v)[0] / 2 for i in range(Dn)])  # noqa: E731
    d.step("quadratic model z(theta) = z0 + J0 theta + Q(theta, theta)/2 (n = P = 2, symbolic): exact Taylor step",
           "z(theta + delta) = z(theta) + J(theta) delta + Q(delta, delta)/2")
    d.check("z(theta + delta) - z - J delta - Q(delta, delta)/2 = 0 (no cubic term)",
            sp.expand(zf(th + delta) - z - J * delta - quad(delta)) == sp.zeros(Dn, 1))
    c = sp.symbols("c1:3", nonnegative=True)
    Dw = sp.diag(*c)  # batch weights D_i (E D = I)
    g = J.T * Dw * z / Dn  # mini-batch gradient of (1/(2n)) sum_i D_i z_i^2
    Theta = J * J.T / Dn
    d.check("with delta = -eta g, g = J^T D z / n: J delta = -eta Theta D z, Theta = J J^T / n",
            sp.expand(J * (-eta * g) + eta * Theta * Dw * z) == sp.zeros(Dn, 1))
    d.text("The eta^2 Q(g, g) term is quadratic in z, so E[z z^T] obeys the linear-regression recursion with "
           "Theta(theta) up to O(|z|^3): K for the quadratic model is noise_kernel_norm at the eigenvalues of "
           "J(theta) J(theta)^T / n (ntk_from_jacobian), exact in the limit z -> 0 (near an interpolating minimum).")
