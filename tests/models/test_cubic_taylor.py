r"""The cubic-Taylor loss: construction, derived steps, and the full dynamics against the reduced model.

Tolerances: float64 round-off (with the operation counts stated) or multiples of standard errors
across independent trajectories.  The numeric gradient/Hessian here (`CubicTaylorLoss`, einsum) are
independent of the SymPy expressions the engines run.
"""

import numpy as np
import pytest

import sdeeos
from sdeeos import ParameterError
from sdeeos._rng import normals, stream_keys
from sdeeos.models import CubicTaylor, SelfStabilization
from sdeeos.theory import cubic_taylor_construction as cons
from sdeeos.theory import self_stabilization as reduced

EPS = np.finfo(float).eps
Z = 4.0
ETA, ALPHA, BETA = 0.01, 1.0, 100.0


def _w(m):
    return cons.damian_constants(m.loss.g, m.loss.H, m.loss.T)["grad_sharpness_perp"]


def _states(ds, d, prefix):
    return np.array([ds[f"{prefix}_th{i}"].values for i in range(d)])


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs, name", [
    (dict(d=0), "d"), (dict(d=1), "d"), (dict(d=-3), "d"), (dict(d=2.5), "d"),
    (dict(eta=0.0), "eta"), (dict(alpha=-1.0), "alpha"), (dict(beta=0.0), "beta"),
    (dict(sigma=-1.0), "sigma"), (dict(sigma_perp=-0.5), "sigma_perp"), (dict(coupling=-1.0), "coupling"),
    (dict(d=3, gap=0.0), "gap"), (dict(d=3, gap=250.0), "gap"), (dict(d=2, gap=50.0), "gap"),
    (dict(loss_seed=-1), "loss_seed"), (dict(x0=float("nan")), "x0"),
])
def test_bad_parameters_name_the_parameter(kwargs, name):
    args = dict(eta=ETA, alpha=ALPHA, beta=BETA)
    args.update(kwargs)
    with pytest.raises(ParameterError, match=rf"^{name} must"):
        CubicTaylor(**args)


def test_user_tensors_must_be_symmetric():
    loss = cons.construct(ETA, ALPHA, BETA, d=3, gap=50.0, coupling=0.4, loss_seed=2)
    H_bad = loss.H.copy()
    H_bad[0, 1] += 1e-3
    with pytest.raises(ParameterError, match=r"^H must be symmetric"):
        CubicTaylor.from_tensors(ETA, loss.g, H_bad, loss.T)
    T_bad = loss.T.copy()
    T_bad[0, 1, 2] += 1e-3
    with pytest.raises(ParameterError, match=r"^T must be symmetric"):
        CubicTaylor.from_tensors(ETA, loss.g, loss.H, T_bad)
    with pytest.raises(ParameterError, match=r"^H must be a \(3, 3\) array"):
        CubicTaylor.from_tensors(ETA, loss.g, loss.H[:2, :2], loss.T)
    with pytest.raises(ParameterError, match=r"^d must"):
        CubicTaylor.from_tensors(ETA, [1.0], [[1.0]], [[[1.0]]])
    with pytest.raises(ParameterError, match=r"^noise_cov must be positive semi-definite"):
        CubicTaylor.from_tensors(ETA, loss.g, loss.H, loss.T, noise_cov=-np.eye(3))


def test_user_tensors_give_the_constructed_model():
    a = CubicTaylor(eta=ETA, alpha=ALPHA, beta=BETA, d=3, gap=50.0, coupling=0.4, loss_seed=2, sigma=3.0, x0=0.02)
    b = CubicTaylor.from_tensors(ETA, a.loss.g, a.loss.H, a.loss.T, noise_cov=a.loss.noise_sqrt @ a.loss.noise_sqrt,
                                 theta0=a.initial_vector("sgd"))
    for k in ("alpha", "beta", "gap", "sigma"):
        assert abs(getattr(a, k) - getattr(b, k)) <= 1e3 * EPS * abs(getattr(a, k))
    ra = sdeeos.simulate(a, "sgd", n_traj=8, n_steps=50, backend="numpy")
    rb = sdeeos.simulate(b, "sgd", n_traj=8, n_steps=50, backend="numpy")
    # the same u (canonical sign), the same noise lanes: the same paths up to round-off
    np.testing.assert_allclose(ra.x_sq_time_mean, rb.x_sq_time_mean, rtol=1e-9)
    assert len(rb.attrs["initial_tensors_sha256"]) == 16


# ---------------------------------------------------------------------------- construction
@pytest.mark.parametrize("d, gap, coupling, seed", [(2, None, 0.0, 0), (3, 50.0, 0.0, 0), (4, 20.0, 0.7, 5),
                                                     (5, 150.0, 1.0, 9)])
def test_construction_has_the_prescribed_constants(d, gap, coupling, seed):
    loss = cons.construct(ETA, ALPHA, BETA, d=d, gap=gap, coupling=coupling, loss_seed=seed, sigma=2.0, sigma_perp=0.5)
    c = cons.damian_constants(loss.g, loss.H, loss.T)
    tol = 64 * EPS
    assert abs(c["sharpness"] - 2 / ETA) <= tol * 2 / ETA
    assert abs(c["alpha"] - ALPHA) <= tol * 2 / ETA          # round-off of the rotation, relative to |H|
    assert abs(c["beta"] - BETA) <= tol * BETA
    assert abs(c["eigengap"] - (2 / ETA if gap is None else gap)) <= tol * 2 / ETA
    assert abs(c["u_dot_grad"]) <= tol
    assert abs(loss.u @ (loss.noise_sqrt @ loss.noise_sqrt) @ loss.u - 4.0) <= tol * 4
    # the sharpening direction is flat and the n-slice of T is only sqrt(beta) sym(u u n)
    n = loss.n
    assert np.abs(loss.H @ n).max() <= tol * 2 / ETA
    Tn = np.einsum("ijk,k->ij", loss.T, n)
    assert np.abs(Tn - np.sqrt(BETA) * np.outer(loss.u, loss.u)).max() <= tol * np.sqrt(BETA) * max(1, coupling) * d


@pytest.mark.parametrize("d, backend", [(2, "numpy"), (3, "numpy"), (2, "numba")])
def test_one_step_is_the_gradient_step(d, backend):
    m = CubicTaylor(eta=ETA, alpha=ALPHA, beta=BETA, d=d, coupling=0.5, loss_seed=4, sigma=2.0, sigma_perp=1.0,
                    x0=0.05, y0=-1.0)
    n = 16
    ds = sdeeos.simulate(m, "sgd", n_traj=n, n_steps=1, burn_in=0, seed=8, backend=backend)
    th0 = np.repeat(m.initial_vector("sgd")[:, None], n, axis=1)
    keys, gammas = stream_keys(8, n)
    z = np.array([normals(keys, gammas, k) for k in range(d)])       # draws c = 0 * d + lane
    expected = th0 - ETA * (m.loss.gradient(th0) + m.loss.noise_sqrt @ z)
    scale = np.abs(th0).max() + ETA * (np.abs(m.loss.gradient(th0)).max() + np.abs(m.loss.noise_sqrt @ z).max())
    # each coordinate is a sum of ~d^3 terms
    np.testing.assert_allclose(_states(ds, d, "final"), expected, rtol=0, atol=8 * d**3 * EPS * scale)
    if d == 2:
        top = np.linalg.eigvalsh(m.loss.hessian(th0))[:, -1]
        np.testing.assert_allclose(ds.sharpness_time_mean, top, rtol=64 * EPS)
    u = m.loss.u
    np.testing.assert_allclose(ds.sharpness_u_time_mean, u @ m.loss.hessian(th0) @ u, rtol=64 * EPS)


# ---------------------------------------------------------------------------- full dynamics vs reduced model
def test_x_sq_identity_holds_per_trajectory_in_the_full_model():
    r"""Telescoping y' = y + eta (alpha - beta x^2 / 2), exact in the full d-dim model by construction:
    :math:`\overline{x^2} = 2\alpha/\beta - 2(y_T - y_B)/(\eta\beta(T-B))` per trajectory, to round-off."""
    d, T, B = 4, 5000, 1000
    m = CubicTaylor(eta=ETA, alpha=ALPHA, beta=BETA, d=d, gap=50.0, coupling=0.5, loss_seed=7, sigma=3.0,
                    x0=0.03, y0=-2.0)
    ds = sdeeos.simulate(m, "sgd", n_traj=200, n_steps=T, burn_in=B, seed=5, record_every=10, backend="numpy")
    w = _w(m)
    y_t, y_b = w @ _states(ds, d, "final"), w @ _states(ds, d, "burn_in")
    predicted = float(reduced.x_sq_stationary(ALPHA, BETA)) - 2 * (y_t - y_b) / (ETA * BETA * (T - B))
    # N steps, each with ~d^2 roundings of terms of size max x^2 or |y| / (eta beta) (as in the reduced test)
    tol = (T - B) * d**2 * EPS * (float(ds.path_x_sq.max()) + 2 * float(np.abs(ds.path_y).max()) / (ETA * BETA))
    np.testing.assert_allclose(ds.x_sq_time_mean, predicted, rtol=0, atol=tol)


@pytest.fixture(scope="module")
def stationary_pair():
    """The full model (d = 3, rotated, coupled, noise only along u) and the reduced model, same law."""
    sigma, n_traj, n_steps = 10.0, 256, 60_000
    start = dict(x0=np.sqrt(2 * ALPHA / BETA), y0=-float(reduced.gap_exact(ETA, ALPHA, BETA, sigma)))
    full = CubicTaylor(eta=ETA, alpha=ALPHA, beta=BETA, d=3, gap=50.0, coupling=0.5, loss_seed=3, sigma=sigma, **start)
    red = SelfStabilization(eta=ETA, alpha=ALPHA, beta=BETA, sigma=sigma, **start)
    kw = dict(n_traj=n_traj, n_steps=n_steps, burn_in=n_steps // 2)
    return sigma, sdeeos.simulate(full, "sgd", seed=1, **kw), sdeeos.simulate(red, "sgd", seed=2, **kw)


def _mean_se(v):
    v = np.asarray(v)
    return v.mean(), v.std(ddof=1) / np.sqrt(v.size)


def test_full_model_obeys_the_reduced_models_exact_identities(stationary_pair):
    sigma, full, _ = stationary_pair
    assert int(full.n_diverged) == 0
    m, se = _mean_se(full.x_sq_time_mean)
    assert abs(m - reduced.x_sq_stationary(ALPHA, BETA)) < Z * se
    gap = 2 / ETA - full.sharpness_u_time_mean
    ident = reduced.gap_from_moments(ETA, ALPHA, BETA, sigma, full.y_x_time_meansq, full.x_sq_time_meansq)
    m, se = _mean_se(ident - gap)
    assert abs(m) < Z * se


def test_full_model_gap_equals_the_reduced_models(stationary_pair):
    """Same law (x = u.theta, y = grad S_perp.theta follow the reduced map exactly): equal gaps within
    the combined standard error; both near the closure (29.289 here, docs/theory.md#gap-closure)."""
    sigma, full, red = stationary_pair
    g1, s1 = float(full.sharpness_gap), float(full.sharpness_gap_stderr)
    g2, s2 = float(red.sharpness_gap), float(red.sharpness_gap_stderr)
    assert abs(g1 - g2) < Z * np.hypot(s1, s2)
    assert float(full.sharpness_gap_predicted_exact) == pytest.approx(29.289321881345245, rel=1e-12)
    # the leading-order gap is an exact lower bound (identity); the closure is within a few per cent here
    assert g1 > float(full.sharpness_gap_predicted_leading)
    assert abs(g1 - float(full.sharpness_gap_predicted_exact)) < 0.02 * g1 + Z * s1


def test_exact_eigenvalue_exceeds_the_first_order_sharpness():
    r"""d = 2: :math:`\lambda_{\max}\ge u^\top\nabla^2L\,u` (Rayleigh) at every state, so the exact-eigenvalue
    gap is smaller; the difference is second order, :math:`\approx\beta x^2\eta/2\approx\eta\alpha` on average."""
    m = CubicTaylor(eta=ETA, alpha=ALPHA, beta=BETA, d=2, sigma=10.0)
    ds = sdeeos.simulate(m, "sgd", n_traj=64, n_steps=4000, record_every=7, backend="numpy")
    diff = ds.path_sharpness - ds.path_sharpness_u
    assert float(diff.min()) >= -64 * EPS * 2 / ETA
    assert float(ds.sharpness_gap) > float(ds.sharpness_gap_exact_eigenvalue)


# ---------------------------------------------------------------------------- PGD
@pytest.mark.parametrize("backend", ["numpy", "numba"])  # pgd runs in NumPy on every backend (no compile)
def test_pgd_follows_the_reduced_constrained_trajectory(backend):
    """From y0 < 0, PGD climbs the flat sharpening direction at eta*alpha per step and stops at S = 2/eta:
    y_t = min(0, y0 + t eta alpha) (the reduced model's pgd), x = 0."""
    y0, n = -3.0, 600
    m = CubicTaylor(eta=ETA, alpha=ALPHA, beta=BETA, d=4, gap=40.0, coupling=0.6, loss_seed=11, x0=0.0, y0=y0)
    ds = sdeeos.simulate(m, "pgd", n_traj=2, n_steps=n, burn_in=0, record_every=1, backend=backend)
    t = ds.step.values
    expected = np.minimum(0.0, y0 + t * ETA * ALPHA)
    # per step: a gradient step and projections with an eigendecomposition (~d^3 roundings on |theta|)
    tol = t * 4**3 * EPS * 2 / ETA * np.abs(y0) / np.sqrt(BETA) + 1e-12
    np.testing.assert_array_less(np.abs(ds.path_y.values[0] - expected), tol + 64 * EPS * np.abs(y0))
    assert np.abs(ds.path_x_sq.values).max() < 1e-20
    np.testing.assert_allclose(ds.path_sharpness_u.values[0, -1], 2 / ETA, rtol=1e-12)
    assert ds.attrs["pgd_engine"].startswith("NumPy")


def test_cli_runs_the_cubic_taylor_model(capsys):
    import json

    from sdeeos._cli import main

    rc = main(["simulate", "cubic-taylor", "--eta", "0.01", "--alpha", "1", "--beta", "100", "--d", "3",
               "--gap", "50", "--sigma", "5", "--loss-seed", "2", "--n-traj", "16", "--steps", "400", "--json",
               "--no-progress", "--backend", "numpy"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["parameters"]["d"] == 3 and out["parameters"]["loss_seed"] == 2
    assert out["x_sq_predicted"] == pytest.approx(0.02, rel=1e-15)
    assert main(["simulate", "cubic-taylor", "--eta", "0.01", "--alpha", "1", "--beta", "100", "--d", "0"]) == 2


def test_docstring_examples():
    import doctest

    assert doctest.testmod(cons).failed == 0
