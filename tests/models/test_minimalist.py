r"""The minimalist example f = (x^2 y^2 - 1)^2 / 4 against its closed forms (docs/theory.md#minimalist).

Tolerances are float64 round-off (with the number of operations stated) or multiples of a standard
error across independent trajectories.  The hand-written closed forms below are independent of the
SymPy derivation the engines run.
"""

import numpy as np
import pytest
import sympy as sp

import sdeeos
from sdeeos import ParameterError
from sdeeos._rng import normals, stream_keys
from sdeeos.models import Minimalist
from sdeeos.theory import minimalist as theory

EPS = np.finfo(float).eps
Z = 4.0


# ---------------------------------------------------------------------------- hand-written closed forms
def grad_f(x, y):
    g = x**2 * y**2 - 1
    return g * x * y**2, g * x**2 * y


def hess_f(x, y):
    return np.array([[3 * x**2 * y**4 - y**2, 4 * x**3 * y**3 - 2 * x * y],
                     [4 * x**3 * y**3 - 2 * x * y, 3 * x**4 * y**2 - x**2]])


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs, name", [
    (dict(eta=0.0), "eta"), (dict(eta=-1.0), "eta"), (dict(eta=float("nan")), "eta"),
    (dict(eta=0.1, sigma=-0.1), "sigma"), (dict(eta=0.1, x0=float("inf")), "x0"),
    (dict(eta=0.1, x0_spread=-1.0), "x0_spread"), (dict(eta=0.1, y0_spread=-1.0), "y0_spread"),
])
def test_bad_parameters_name_the_parameter(kwargs, name):
    with pytest.raises(ParameterError, match=rf"^{name} must"):
        Minimalist(**kwargs)


@pytest.mark.parametrize("method", ["sgd", "sgd-mult"])
def test_noisy_methods_need_noise(method):
    with pytest.raises(ParameterError, match="^sigma must be > 0"):
        sdeeos.simulate(Minimalist(eta=0.05), method, n_traj=2, n_steps=2)


# ---------------------------------------------------------------------------- symbolic closed forms
def test_derived_gradient_and_hessian_equal_the_closed_forms():
    x, y, *_ = theory.symbols()
    g = x**2 * y**2 - 1
    gx, gy = theory.derive_gradient()
    assert sp.simplify(gx - g * x * y**2) == 0 and sp.simplify(gy - g * x**2 * y) == 0
    H = theory.derive_hessian()
    expected = sp.Matrix([[3 * x**2 * y**4 - y**2, 4 * x**3 * y**3 - 2 * x * y],
                          [4 * x**3 * y**3 - 2 * x * y, 3 * x**4 * y**2 - x**2]])
    assert sp.simplify(H - expected) == sp.zeros(2, 2)


def test_derived_facts():
    x, y, eta, sigma, *_ = theory.symbols()
    assert sp.simplify(theory.derive_sharpness_on_minimisers() - 2 * (x**2 + x**-2)) == 0
    assert theory.derive_gf_invariant() == x**2 - y**2
    assert sp.simplify(theory.derive_eos_minimiser() - (eta**-2 - 4)) == 0
    assert sp.simplify(theory.derive_mean_square_bound() - 2 / (eta * (1 + sigma**2))) == 0
    # Zhu et al.'s eta-EoS minimiser (c^4 = eta^-2 - 4 with c^2 = x^2 - y^2, xy = 1) has S = 2/eta
    for e in (0.05, 0.1, 0.3):
        c2 = np.sqrt(theory.eos_c_squared(e))           # x^2 - y^2
        X = (c2 + np.sqrt(c2**2 + 4)) / 2               # x^2 on xy = 1
        s = theory.sharpness(np.sqrt(X), 1 / np.sqrt(X))
        assert abs(s - 2 / e) <= 16 * EPS * (2 / e)


def test_sharpness_observable_is_the_top_eigenvalue():
    rng = np.random.default_rng(0)
    pts = rng.uniform(-3, 3, size=(2, 200))
    s = theory.sharpness(*pts)
    top = np.array([np.linalg.eigvalsh(hess_f(*p))[-1] for p in pts.T])
    scale = np.array([np.abs(hess_f(*p)).max() for p in pts.T])
    assert np.all(np.abs(s - top) <= 64 * EPS * scale)


# ---------------------------------------------------------------------------- engines run the derived step
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_one_step_of_each_method_is_the_closed_form(backend):
    eta, sigma, n = 0.05, 0.3, 64
    kw = dict(x0=1.2, y0=0.7, x0_spread=0.5, y0_spread=0.3)
    keys, gammas = stream_keys(3, n)
    for method in ("gd", "sgd", "sgd-mult"):
        m = Minimalist(eta=eta, sigma=sigma, **kw)
        ds = sdeeos.simulate(m, method, n_traj=n, n_steps=1, burn_in=0, seed=3, backend=backend)
        x0, y0 = m.initial_points(n, seed=3)
        gx, gy = grad_f(x0, y0)
        if method == "gd":
            ex, ey = x0 - eta * gx, y0 - eta * gy
        elif method == "sgd":  # draws c = step * n_noise + lane
            ex = x0 - eta * (gx + sigma * normals(keys, gammas, 0))
            ey = y0 - eta * (gy + sigma * normals(keys, gammas, 1))
        else:
            z = normals(keys, gammas, 0)
            ex, ey = x0 - eta * (1 + sigma * z) * gx, y0 - eta * (1 + sigma * z) * gy
        # ~10 roundings per coordinate on terms of size |x| + eta |grad| (1 + sigma |z|)
        tol = 16 * EPS * (np.abs(x0) + np.abs(y0) + eta * (np.abs(gx) + np.abs(gy)) * 8)
        np.testing.assert_array_less(np.abs(ds.final_x - ex), tol)
        np.testing.assert_array_less(np.abs(ds.final_y - ey), tol)
        s = ds.sharpness_time_mean.values  # the observable at step 0
        np.testing.assert_allclose(s, theory.sharpness(x0, y0), rtol=64 * EPS)


def test_backends_agree_bit_for_bit_for_gd():
    m = Minimalist(eta=0.3, x0=2.0, y0=0.5, x0_spread=0.5, y0_spread=0.15)
    a = sdeeos.simulate(m, "gd", n_traj=300, n_steps=500, backend="numpy")
    b = sdeeos.simulate(m, "gd", n_traj=300, n_steps=500, backend="numba")
    np.testing.assert_array_equal(a.final_x, b.final_x)
    np.testing.assert_array_equal(a.sharpness_time_meansq, b.sharpness_time_meansq)


# ---------------------------------------------------------------------------- GD: reference values and exact identities
def test_s8_gd_converges_just_below_two_over_eta():
    """docs/theory.md#minimalist: eta = 0.05 from (6, 0.05) converges to S = 39.9755 (4 decimals), in (2/eta - 0.03, 2/eta)."""
    m = Minimalist(eta=0.05, x0=6.0, y0=0.05)
    ds = sdeeos.simulate(m, "gd", n_traj=1, n_steps=20_000, backend="numba")
    s = float(ds.final_sharpness[0])
    assert abs(s - 39.9755) <= 0.5e-4
    assert 2 / 0.05 - 0.03 < s < 2 / 0.05
    assert float(ds.sharpness_gf_limit) > 2 / 0.05  # the gradient-flow limit (72.1) is beyond the edge
    # converged: the late window's time mean is the final value
    assert abs(float(ds.sharpness_mean) - s) < 1e-6


def test_gd_below_the_edge_converges_on_the_minimiser_set():
    """eta = 0.02 from (6, 0.05): the gradient-flow limit 72.1 < 2/eta, GD converges (72.097) to
    a minimiser, where S = 2 sqrt(c^2 + 4) with its own c = x^2 - y^2 (to round-off)."""
    m = Minimalist(eta=0.02, x0=6.0, y0=0.05)
    ds = sdeeos.simulate(m, "gd", n_traj=1, n_steps=40_000, backend="numba")
    x, y = float(ds.final_x[0]), float(ds.final_y[0])
    s = float(ds.final_sharpness[0])
    assert abs(s - 72.097) <= 0.5e-3
    assert abs(x * y - 1) < 1e-12
    assert abs(s - 2 * np.sqrt((x**2 - y**2) ** 2 + 4)) <= 64 * EPS * s


def test_gd_invariant_decays_by_the_exact_factor():
    """c_{t+1} = c_t (1 - eta^2 g_t^2 x_t^2 y_t^2) for every GD step (derived), checked on the recorded path."""
    eta, n = 0.05, 400
    m = Minimalist(eta=eta, x0=6.0, y0=0.05)
    ds = sdeeos.simulate(m, "gd", n_traj=1, n_steps=n, burn_in=0, record_every=1, backend="numpy")
    x, y = ds.path_x.values[0], ds.path_y.values[0]
    c = x**2 - y**2
    g = x**2 * y**2 - 1
    factor = 1 - eta**2 * g**2 * x**2 * y**2
    # each c_t carries ~3 roundings relative to x^2 + y^2 (the cancellation in x^2 - y^2)
    err = np.abs(c[1:] - c[:-1] * factor[:-1])
    tol = 16 * EPS * (x[1:] ** 2 + y[1:] ** 2 + np.abs(c[:-1]) * (1 + np.abs(factor[:-1])))
    assert np.all(err <= tol)


# ---------------------------------------------------------------------------- multiplicative noise theory
def test_lyapunov_exponent_against_monte_carlo():
    keys, gammas = stream_keys(11, 400_000)
    z = normals(keys, gammas, 0)
    for s, sig in [(2.0, 0.1), (1.5, 1.0), (0.3, 0.5), (2.1, 0.2)]:
        v = np.log(np.abs(1 - s * (1 + sig * z)))
        assert abs(theory.lyapunov_exponent(s, sig) - v.mean()) < Z * v.std() / np.sqrt(v.size)
    assert theory.lyapunov_sharpness_bound(0.05, 0.0) == 40.0
    b = theory.lyapunov_sharpness_bound(0.05, 0.1)
    assert abs(theory.lyapunov_exponent(b * 0.05, 0.1)) < 1e-9
    assert b > 2 / 0.05 > theory.mean_square_sharpness_bound(0.05, 0.1)


def test_multiplicative_sgd_settles_above_two_over_eta():
    """Multiplicative noise lets SGD hold minimisers sharper than 2/eta (almost-sure, not mean-square,
    stability): the final sharpness of the surviving trajectories exceeds 2/eta by many standard errors."""
    m = Minimalist(eta=0.05, sigma=0.1)
    ds = sdeeos.simulate(m, "sgd-mult", n_traj=256, n_steps=20_000, seed=1)
    s, se = float(ds.final_sharpness_mean), float(ds.final_sharpness_mean_stderr)
    assert int(ds.n_alive) > 100
    assert s - 2 / 0.05 > Z * se
    assert float(ds.sharpness_mean_square_bound) < 2 / 0.05


def test_additive_sgd_stays_below_two_over_eta():
    m = Minimalist(eta=0.05, sigma=0.01)
    ds = sdeeos.simulate(m, "sgd", n_traj=256, n_steps=20_000, seed=2)
    assert int(ds.n_diverged) == 0
    assert float(ds.sharpness_gap) > Z * float(ds.sharpness_gap_stderr)


def test_cli_runs_the_minimalist_model(capsys):
    import json

    from sdeeos._cli import main

    rc = main(["simulate", "minimalist", "--eta", "0.05", "--n-traj", "1", "--steps", "20000", "--json",
               "--no-progress", "--backend", "numpy"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert abs(out["final_sharpness_mean"] - 39.9755) <= 0.5e-4
    assert out["method"] == "gd" and out["sharpness_eos"] == 40.0


def test_docstring_examples():
    import doctest

    from sdeeos.models import _minimalist
    from sdeeos.theory import _symbolic_loss

    for mod in (theory, _symbolic_loss, _minimalist):
        assert doctest.testmod(mod, optionflags=doctest.ELLIPSIS).failed == 0, mod.__name__


def test_sweep_over_eta():
    from sdeeos import sweep

    ds = sweep("minimalist", {"eta": [0.05, 0.02]}, params={"x0": 6.0, "y0": 0.05}, method="gd", n_traj=1,
               n_steps=20_000, scheduler="serial", backend="numba", progress=False)
    assert abs(float(ds.final_sharpness_mean.sel(eta=0.05)) - 39.9755) <= 0.5e-4
    assert float(ds.sharpness_gf_limit.sel(eta=0.02)) == pytest.approx(72.10603320804717, rel=1e-12)
