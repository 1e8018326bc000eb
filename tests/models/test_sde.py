r"""SDE integrators (Euler–Maruyama, weak order 2) and the stochastic modified equation.

Checked against closed forms: the SME coefficients of each model, the integrators' maps, and on an
OU process the exact moments of each (linear) scheme and of the pathwise-exact solution, jointly
(`sdeeos.theory.sde_schemes.joint_moments`), with the OU moments of `sdeeos.theory.sde`.  Tolerances
are multiples of standard errors across independent trajectories, or float64 round-off.
"""

import numpy as np
import pytest
import sympy as sp

import sdeeos
from sdeeos import ParameterError
from sdeeos.models import (CubicTaylor, CubicTaylorSME, Minimalist, MinimalistSME, OrnsteinUhlenbeck,
                           SelfStabilization, SelfStabilizationSME, StochasticModifiedEquation)
from sdeeos.models._sde import sde_step
from sdeeos.theory import minimalist as mtheory
from sdeeos.theory import sde as ou
from sdeeos.theory import sde_schemes as schemes

EPS = np.finfo(float).eps
Z = 4.0


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("dt", [0.0, -0.1, float("nan")])
def test_bad_dt(dt):
    with pytest.raises(ParameterError, match=r"^dt must"):
        OrnsteinUhlenbeck(rate=1.0, diffusion=1.0, dt=dt)
    with pytest.raises(ParameterError, match=r"^dt must"):
        MinimalistSME(eta=0.05, sigma=0.1, dt=dt)


def test_bad_sme_settings():
    with pytest.raises(ParameterError, match=r"^base_method must be one of"):
        CubicTaylorSME(eta=0.01, alpha=1.0, beta=100.0, sigma=1.0, dt=0.001, base_method="pgd")
    with pytest.raises(ParameterError, match=r"^base_method must be one of"):
        SelfStabilizationSME(eta=0.01, alpha=1.0, beta=100.0, sigma=1.0, dt=0.001, base_method="pgd")
    with pytest.raises(ParameterError, match=r"^rate must be > 0 for method 'exact'"):
        sdeeos.simulate(OrnsteinUhlenbeck(rate=0.0, diffusion=1.0, dt=0.1), "exact", n_traj=2, n_steps=2)
    with pytest.raises(ParameterError, match=r"^sigma must be > 0"):
        sdeeos.simulate(MinimalistSME(eta=0.05, dt=0.01), "em", n_traj=2, n_steps=2)


def test_weak2_needs_commutative_noise():
    x, y, z1, z2, dt = sp.symbols("x y z1 z2 dt")
    with pytest.raises(ParameterError, match="commutative noise"):
        sde_step((x, y), (dt,), (0, 0), sp.Matrix([[y, 0], [0, x]]), (z1, z2), "weak2", {}, dt=dt)
    sde_step((x, y), (dt,), (0, 0), sp.Matrix([[y, 0], [0, x]]), (z1, z2), "em", {}, dt=dt)  # EM is fine


# ---------------------------------------------------------------------------- SME coefficients (closed forms)
def test_sme_of_the_minimalist_methods():
    x, y, eta, sigma, z, z1, z2 = mtheory.symbols()
    g = x**2 * y**2 - 1
    grad = sp.Matrix([g * x * y**2, g * x**2 * y])
    for method, diffusion in (("sgd", -sp.sqrt(eta) * sigma * sp.eye(2)), ("sgd-mult", -sp.sqrt(eta) * sigma * grad)):
        step = Minimalist(eta=0.05, sigma=0.1).step(method)
        drift, B = schemes.sme_coefficients(step.state, step.update, step.noise, eta)
        assert sp.simplify(sp.Matrix(drift) + grad) == sp.zeros(2, 1)
        assert sp.simplify(B - diffusion) == sp.zeros(*B.shape)


def test_sme_of_the_reduced_model():
    step = SelfStabilization(eta=0.01, alpha=1.0, beta=100.0, sigma=1.0).step("sgd")
    x, y = step.state
    eta, alpha, beta, sigma = step.params
    drift, B = schemes.sme_coefficients(step.state, step.update, step.noise, eta)
    assert sp.simplify(drift[0] + (2 / eta + y) * x) == 0          # -S x with S = 2/eta + y
    assert sp.simplify(drift[1] - (alpha - beta * x**2 / 2)) == 0
    assert sp.simplify(B - sp.Matrix([[sp.sqrt(eta) * sigma], [0]])) == sp.zeros(2, 1)


def test_weak2_is_the_kloeden_platen_scheme_for_scalar_noise():
    """Scalar closed form (KP 14.2.3 with Gaussian increments) for a nonlinear drift and diffusion."""
    x, h, w = sp.symbols("x h w", real=True)
    a, b = -x**3 + x, sp.sin(x) + 2
    got = schemes.weak_order2((x,), (a,), sp.Matrix([[b]]), h, (w,))[0]
    d = lambda f, k=1: sp.diff(f, x, k)  # noqa: E731
    want = (x + a * h + b * w + b * d(b) * (w**2 - h) / 2 + (d(a) * b + a * d(b) + d(b, 2) * b**2 / 2) * w * h / 2
            + (a * d(a) + d(a, 2) * b**2 / 2) * h**2 / 2)
    assert sp.simplify(got - want) == 0


def test_weak_orders_of_the_linear_schemes():
    x, z0, z1 = sp.symbols("x z0 z1", real=True)
    k, s, h = schemes.kappa, schemes.s_ou, schemes.h
    for method, order in (("em", 1), ("weak2", 2)):
        upd = sde_step((x,), (k, s, h), (-k * x,), sp.Matrix([[s]]), (z0,), method, {}, dt=h).update[0]
        r, c, q = schemes.linear_scheme_coefficients(upd, x, z0)
        assert schemes.derive_weak_order(r) == order
    assert schemes.derive_weak_order(schemes.derive_ou_pathwise_transition()["a"]) == 5  # exact: no error


# ---------------------------------------------------------------------------- SME runs on the engines
@pytest.mark.parametrize("backend", ["numpy"])  # engine agreement is tested in tests/engines
def test_euler_maruyama_with_dt_eta_is_sgd(backend):
    """EM of the SME with dt = eta is additive-noise SGD (same draws): 10 steps agree to round-off."""
    for base, sme, method in (
        (Minimalist(eta=0.05, sigma=0.2, x0=1.5, y0=0.5), MinimalistSME(eta=0.05, sigma=0.2, x0=1.5, y0=0.5, dt=0.05),
         "sgd"),
        (CubicTaylor(eta=0.01, alpha=1.0, beta=100.0, d=3, gap=50.0, loss_seed=2, sigma=3.0, sigma_perp=1.0),
         CubicTaylorSME(eta=0.01, alpha=1.0, beta=100.0, d=3, gap=50.0, loss_seed=2, sigma=3.0, sigma_perp=1.0,
                        dt=0.01), "sgd"),
    ):
        a = sdeeos.simulate(base, method, n_traj=32, n_steps=10, burn_in=0, backend=backend)
        b = sdeeos.simulate(sme, "em", n_traj=32, n_steps=10, burn_in=0, backend=backend)
        for name in [v for v in a.data_vars if v.startswith("final_") and v != "final_sharpness"]:
            np.testing.assert_allclose(a[name], b[name], rtol=0, atol=1e3 * EPS * float(np.abs(a[name]).max()))
        assert b.attrs["sme_of"].endswith(".sgd") and b.attrs["initial_sme_of"] == "sgd"


def test_sme_misses_the_edge_where_sgd_stops():
    """eta = 0.05 from (6, 0.05): GD/SGD end below 2/eta = 40; the SME (dt = eta/8) follows the gradient flow
    to S ~ 72.1 (docs/theory.md#ou-process: the SDE cannot represent the 2/eta resonance)."""
    m = MinimalistSME(eta=0.05, sigma=0.1, dt=0.05 / 4, base_method="sgd-mult")
    ds = sdeeos.simulate(m, "weak2", n_traj=16, n_steps=20_000, backend="numpy")
    gf = float(mtheory.gf_limit_sharpness(6.0, 0.05))
    assert float(ds.sharpness_mean) > 1.5 * 2 / 0.05
    # multiplicative noise vanishes on the minimisers: the SME converges to a minimiser near the GF limit
    assert abs(float(ds.sharpness_mean) - gf) < 0.01 * gf
    assert "discrete_sharpness_mean_square_bound" in ds


# ---------------------------------------------------------------------------- OU: exact moments of each scheme
RATE, DIFF, X0, T = 1.0, 0.5, 2.0, 1.0


@pytest.fixture(scope="module")
def ou_runs():
    out = {}
    for dt in (0.25, 0.0625):
        m = OrnsteinUhlenbeck(rate=RATE, diffusion=DIFF, dt=dt, x0=X0)
        out[dt] = (m, {s: sdeeos.simulate(m, s, n_traj=20_000, n_steps=int(T / dt), burn_in=0, seed=4,
                                          backend="numpy").final_x.values
                       for s in ("em", "weak2", "exact")})
    return out


def _mean_se(v):
    return v.mean(), v.std(ddof=1) / np.sqrt(v.size)


@pytest.mark.parametrize("dt", [0.25, 0.0625])
def test_ou_final_moments_of_each_scheme(ou_runs, dt):
    m, runs = ou_runs[dt]
    n = int(T / dt)
    for s, x in runs.items():
        r, c, q = m.linear_coefficients(s)
        q_total = np.hypot(q, DIFF * m._c2) if s == "exact" else q
        mean, m2 = schemes.linear_scheme_moments(r, c, q_total, n, X0)
        mu, se = _mean_se(x)
        assert abs(mu - mean) < Z * se, s
        mu, se = _mean_se(x**2)
        assert abs(mu - m2) < Z * se, s
    # the exact transition has the OU's moments (sdeeos.theory.sde)
    mean, m2 = schemes.linear_scheme_moments(*m.linear_coefficients("exact")[:2],
                                             np.hypot(m.linear_coefficients("exact")[2], DIFF * m._c2), n, X0)
    assert abs(mean - float(ou.ou_mean(T, X0, RATE))) < 1e-12
    assert abs(m2 - mean**2 - float(ou.ou_variance(T, RATE, DIFF))) < 1e-12


@pytest.mark.parametrize("dt", [0.25, 0.0625])
def test_ou_strong_and_weak_errors_against_the_exact_solution(ou_runs, dt):
    """Same Brownian path: E(X^h - X)^2 and the paired weak errors equal the joint recursion's, within SE."""
    m, runs = ou_runs[dt]
    n = int(T / dt)
    for s in ("em", "weak2"):
        jm = schemes.joint_moments(m.linear_coefficients(s), m.exact_transition(), n, X0)
        d = runs[s] - runs["exact"]
        mu, se = _mean_se(d**2)
        assert abs(mu - jm["mse"]) < Z * se, s
        mu, se = _mean_se(d)
        assert abs(mu - (jm["mean_x"] - jm["mean_y"])) < Z * se, s
        mu, se = _mean_se(runs[s] ** 2 - runs["exact"] ** 2)
        assert abs(mu - (jm["m2_x"] - jm["m2_y"])) < Z * se, s


def test_ou_error_orders_from_two_steps(ou_runs):
    """The measured errors shrink by the scheme's order between dt = 1/4 and 1/16 (factor 4): strong
    ~4 (order 1, additive noise) for both; weak (mean) ~4 for EM and ~16 for weak order 2."""
    (m1, r1), (m2, r2) = ou_runs[0.25], ou_runs[0.0625]
    for s, weak_order in (("em", 1), ("weak2", 2)):
        rms = [np.sqrt(np.mean((r[s] - r["exact"]) ** 2)) for r in (r1, r2)]
        assert 0.8 < np.log(rms[0] / rms[1]) / np.log(4) < 1.25
        w = [abs(np.mean(r[s] - r["exact"])) for r in (r1, r2)]
        assert abs(np.log(w[0] / w[1]) / np.log(4) - weak_order) < 0.3


def test_ou_stationary_variance_of_each_scheme():
    """Time average of x^2 after burn-in: the scheme's stationary variance (EM: s^2/(kappa(2 - kappa h)),
    sdeeos.theory.sde; weak 2 and exact: q^2/(1-r^2)), not the SDE's, which they approach as h -> 0."""
    dt = 0.5
    for s in ("em", "weak2", "exact"):
        m = OrnsteinUhlenbeck(rate=RATE, diffusion=DIFF, dt=dt, x0=0.0)
        ds = sdeeos.simulate(m, s, n_traj=2000, n_steps=4000, burn_in=200, seed=9, backend="numpy")
        mu, se = float(ds.x_sq_mean), float(ds.x_sq_mean_stderr)
        assert abs(mu - float(ds.x_var_stationary_scheme)) < Z * se, s
        if s == "em":
            assert float(ds.x_var_stationary_scheme) == pytest.approx(
                ou.euler_maruyama_ou_stationary_variance(dt, RATE, DIFF), rel=1e-12)
        if s == "exact":
            assert float(ds.x_var_stationary_scheme) == pytest.approx(ou.ou_stationary_variance(RATE, DIFF), rel=1e-12)


def test_sme_classes_are_registered_with_generated_options():
    reg = sdeeos.MODEL_REGISTRY
    for name, cls in (("minimalist-sme", MinimalistSME), ("cubic-taylor-sme", CubicTaylorSME),
                      ("self-stabilization-sme", SelfStabilizationSME), ("ou", OrnsteinUhlenbeck)):
        assert reg[name] is cls
    import inspect

    params = inspect.signature(MinimalistSME.__init__).parameters
    assert list(params)[-2:] == ["dt", "base_method"] and "x0_spread" in params
    assert issubclass(MinimalistSME, StochasticModifiedEquation)


def test_cli_runs_an_sme(capsys):
    import json

    from sdeeos._cli import main

    rc = main(["simulate", "self-stabilization-sme", "--eta", "0.01", "--alpha", "1", "--beta", "100", "--sigma",
               "5", "--dt", "0.0025", "--method", "weak2", "--n-traj", "8", "--steps", "200", "--json",
               "--no-progress", "--backend", "numpy"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "self-stabilization-sme" and out["method"] == "weak2"
    assert out["parameters"]["dt"] == 0.0025
    assert main(["simulate", "ou", "--rate", "1", "--diffusion", "1", "--dt", "0"]) == 2


def test_docstring_examples():
    import doctest

    assert doctest.testmod(schemes).failed == 0
