r"""Quadratic-regression model: bad input, the random ensemble, derivatives, and the linear model's
exact mean-square dynamics against simulated SGD ensembles.

Tolerances: float64 round-off (stated per test), finite-difference truncation (h**2 scaling), or a
multiple of a standard error across independent trajectories / entries (Z = 4: false-alarm rate
6e-5 per check).  Theory values come from `sdeeos.theory.mean_square` (lambdified SymPy).
"""

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

import sdeeos
from sdeeos import ParameterError
from sdeeos import _rng
from sdeeos._rng import normals, stream_keys
from sdeeos.models.quadratic_regression import _model as qr_model, _numba_engine as qr_numba_engine
from sdeeos.models.quadratic_regression._numpy_engine import hessian, jacobian_residual
from sdeeos.models import MODEL_REGISTRY, QuadraticRegression
from sdeeos.models.quadratic_regression import DATA_STREAM_OFFSET, OBSERVABLES
from sdeeos.theory import mean_square as ms

Z = 4.0


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(n=0, P=4, eta=0.1), "n"),
        (dict(n=8, P=0, eta=0.1), "P"),
        (dict(n=8.5, P=4, eta=0.1), "n"),
        (dict(n=8, P=4, eta=0.0), "eta"),
        (dict(n=8, P=4, eta=float("nan")), "eta"),
        (dict(n=8, P=4, eta=0.1, batch_size=0), "batch_size"),
        (dict(n=8, P=4, eta=0.1, batch_size=9), "batch_size"),
        (dict(n=8, P=4, eta=0.1, sampling="poisson"), "sampling"),
        (dict(n=8, P=4, eta=0.1, q_scale=-1.0), "q_scale"),
        (dict(n=8, P=4, eta=0.1, z0_scale=float("inf")), "z0_scale"),
        (dict(n=8, P=4, eta=0.1, theta0_scale=-0.1), "theta0_scale"),
        (dict(n=8, P=4, eta=0.1, momentum=1.0), "momentum"),
        (dict(n=8, P=4, eta=0.1, data_seed=-1), "data_seed"),
        (dict(n=8, P=4, eta=0.1, lanczos_iters=0), "lanczos_iters"),
    ],
)
def test_bad_parameters_name_the_parameter(kwargs, name):
    with pytest.raises(ParameterError, match=rf"^{name} must"):
        QuadraticRegression(**kwargs)


def test_bad_user_arrays_name_the_parameter():
    J0 = np.ones((5, 3))
    bad = [
        (dict(J0=np.ones(5)), "J0"),
        (dict(J0=np.full((5, 3), np.nan)), "J0"),
        (dict(J0=[["a"]]), "J0"),
        (dict(J0=J0, Q=np.ones((5, 3, 2))), "Q"),
        (dict(J0=J0, Q=np.ones((5, 3))), "Q"),
        (dict(J0=J0, Q=np.full((5, 3, 3), np.inf)), "Q"),
        (dict(J0=J0, z0=np.ones(4)), "z0"),
        (dict(J0=J0, z0=np.array([1, 2, np.nan, 4, 5])), "z0"),
    ]
    for kwargs, name in bad:
        with pytest.raises(ParameterError, match=rf"^{name} must"):
            QuadraticRegression.from_arrays(eta=0.1, **kwargs)
    with pytest.raises(ParameterError, match=r"^batch_size must"):
        QuadraticRegression.from_arrays(J0, eta=0.1, batch_size=6)


def test_bad_run_settings():
    lin = QuadraticRegression(n=8, P=4, eta=0.1, batch_size=2, q_scale=0.0)
    with pytest.raises(ParameterError, match="pgd"):
        sdeeos.simulate(lin, "pgd", n_traj=2, n_steps=3)
    with pytest.raises(ParameterError, match="^backend must"):
        sdeeos.simulate(lin, "sgd", n_traj=2, n_steps=3, backend="cupy-typo")
    with pytest.raises(ParameterError, match="^method must"):
        sdeeos.simulate(lin, "adam", n_traj=2, n_steps=3)
    quad = QuadraticRegression(n=8, P=4, eta=0.1, momentum=0.5)
    with pytest.raises(ParameterError, match="^momentum must be 0"):
        sdeeos.simulate(quad, "pgd", n_traj=2, n_steps=3)


# ---------------------------------------------------------------------------- the data
def test_ensemble_uses_the_rng_scheme_and_is_reproducible():
    m = QuadraticRegression(n=6, P=5, eta=0.1, q_scale=0.7, z0_scale=2.0, data_seed=123)
    keys, gammas = stream_keys(123, 6, first=DATA_STREAM_OFFSET)
    np.testing.assert_array_equal(m.z0, 2.0 * normals(keys, gammas, 0))
    np.testing.assert_array_equal(m.J0[:, 3], normals(keys, gammas, 4))
    # upper triangle in row-major order after the P + 1 draws of z0 and J0: Q[0,1] is draw 1 + P + 1
    np.testing.assert_array_equal(m.Q[:, 0, 1], 0.7 * normals(keys, gammas, 1 + 5 + 1))
    np.testing.assert_array_equal(m.Q[:, 0, 0], 0.7 * (math.sqrt(2) * normals(keys, gammas, 1 + 5)))
    np.testing.assert_array_equal(m.Q, m.Q.transpose(0, 2, 1))
    again = QuadraticRegression(n=6, P=5, eta=0.3, q_scale=0.7, z0_scale=2.0, data_seed=123)
    np.testing.assert_array_equal(m.Q, again.Q)
    other = QuadraticRegression(n=6, P=5, eta=0.1, q_scale=0.7, z0_scale=2.0, data_seed=124)
    assert not np.any(other.J0 == m.J0)
    assert QuadraticRegression(n=6, P=5, eta=0.1, q_scale=0.0).Q is None


def test_ensemble_statistics():
    """J0 ~ N(0,1); GOE Q: off-diagonal variance q^2, diagonal 2 q^2 (4 SE of the variance estimates)."""
    q = 0.5
    m = QuadraticRegression(n=64, P=48, eta=0.1, q_scale=q, data_seed=7)

    def check_var(x, var):
        x = np.ravel(x)
        est = np.mean(x**2)
        se = var * math.sqrt(2.0 / x.size)  # Var(x^2) = 2 var^2 for a centred normal
        assert abs(est - var) < Z * se
        assert abs(np.mean(x)) < Z * math.sqrt(var / x.size)

    check_var(m.J0, 1.0)
    iu = np.triu_indices(48, 1)
    check_var(m.Q[:, iu[0], iu[1]], q**2)
    check_var(np.diagonal(m.Q, axis1=1, axis2=2), 2 * q**2)
    # O(1) NTK: tr(Theta_0) = ||J0||_F^2 / n has mean P and variance 2P/n
    lam = m.initial_ntk_eigenvalues
    assert abs(lam.sum() - 48) < Z * math.sqrt(2 * 48 / 64)
    # Marchenko-Pastur upper edge (1 + sqrt(P/n))^2 = 3.48; finite-size fluctuations are O(n^(-2/3))
    assert lam.max() < (1 + math.sqrt(48 / 64)) ** 2 * 1.25


def test_user_arrays_and_symmetrisation():
    rng = np.random.default_rng(0)
    J0, Q, z0 = rng.standard_normal((7, 4)), rng.standard_normal((7, 4, 4)), rng.standard_normal(7)
    m = QuadraticRegression.from_arrays(J0, Q, z0, eta=0.1, batch_size=3)
    np.testing.assert_array_equal(m.Q, 0.5 * (Q + Q.transpose(0, 2, 1)))
    theta = rng.standard_normal((2, 4))
    _, z = jacobian_residual(m, theta)
    direct = z0 + theta @ J0.T + 0.5 * np.einsum("mb,ibc,mc->mi", theta, Q, theta)  # non-symmetric Q: same z
    np.testing.assert_allclose(z, direct, rtol=1e-12, atol=1e-12)
    assert "sha256" in m.initial_state()["data"]
    lin = QuadraticRegression.from_arrays(J0, eta=0.1)
    assert lin.is_linear and lin.batch_size == 7 and np.all(lin.z0 == 0)


# ---------------------------------------------------------------------------- derivatives
def test_gradient_and_hessian_against_finite_differences():
    """Central differences: truncation error ~ h^2 * (third derivative) ~ 1e-10 at h = 1e-5."""
    m = QuadraticRegression(n=9, P=6, eta=0.1, q_scale=0.8, data_seed=3)
    rng = np.random.default_rng(1)
    theta = 0.3 * rng.standard_normal(6)

    def loss(th):
        _, z = jacobian_residual(m, th[None])
        return 0.5 * np.sum(z**2) / m.n

    def grad(th):
        J, z = jacobian_residual(m, th[None])
        return (z @ J[0] / m.n)[0]

    h = 1e-5
    eye = np.eye(6)
    g_fd = np.array([(loss(theta + h * e) - loss(theta - h * e)) / (2 * h) for e in eye])
    np.testing.assert_allclose(grad(theta), g_fd, rtol=1e-7, atol=1e-9)
    H, _, _ = hessian(m, theta[None])
    H_fd = np.array([(grad(theta + h * e) - grad(theta - h * e)) / (2 * h) for e in eye])
    np.testing.assert_allclose(H[0], H_fd, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(H[0], H[0].T, rtol=0, atol=1e-14)


def test_lanczos_sharpness_is_the_largest_algebraic_eigenvalue():
    """With kmax >= P the Krylov space is the whole space: Lanczos is exact up to round-off (1e-10 rel)."""
    from sdeeos.models.quadratic_regression._numba_engine import hessian_top_lanczos

    m = QuadraticRegression(n=12, P=10, eta=0.1, q_scale=2.0, z0_scale=3.0, data_seed=5)
    rng = np.random.default_rng(2)
    for _ in range(3):
        theta = rng.standard_normal(10)
        H, _, _ = hessian(m, theta[None])
        ev = np.linalg.eigvalsh(H[0])
        S, u = hessian_top_lanczos(m.J0, m.Q, m.z0, theta, rng.standard_normal(10), 40)
        assert abs(S - ev[-1]) < 1e-10 * np.abs(ev).max()
        np.testing.assert_allclose(H[0] @ u, S * u, atol=1e-8 * np.abs(ev).max())
    # an indefinite Hessian whose most negative eigenvalue is the largest in magnitude
    theta = np.zeros(10)
    J0 = 0.1 * rng.standard_normal((12, 10))
    Q = np.zeros((12, 10, 10))
    Q[:, 0, 0] = -50.0
    Q[:, 1, 1] = 1.0
    neg = QuadraticRegression.from_arrays(J0, Q, np.ones(12), eta=0.1)
    H, _, _ = hessian(neg, theta[None])
    ev = np.linalg.eigvalsh(H[0])
    assert abs(ev[0]) > abs(ev[-1])
    S, _ = hessian_top_lanczos(neg.J0, neg.Q, neg.z0, theta, np.ones(10), 40)
    assert abs(S - ev[-1]) < 1e-10 * np.abs(ev).max()


# ---------------------------------------------------------------------------- datasets, CLI
def test_dataset_schema_and_attrs(tmp_path):
    m = QuadraticRegression(n=10, P=6, eta=0.05, batch_size=3, q_scale=0.5, sampling="bernoulli")
    ds = sdeeos.simulate(m, n_traj=4, n_steps=30, seed=9, record_every=10, progress=False)
    assert ds.attrs["model"] == "quadratic-regression" and ds.attrs["method"] == "sgd"
    for k in ("n", "P", "eta", "batch_size", "q_scale", "momentum"):
        assert k in ds.attrs
    assert ds.attrs["sampling"] == "bernoulli" and ds.attrs["seed"] == "9"
    assert "rng_scheme" in ds.attrs and "loss_convention" in ds.attrs
    for name in OBSERVABLES:
        assert ds[f"path_{name}"].dims == ("traj", "step")
        assert ds[f"final_{name}"].dims == ("traj",)
        assert f"{name}_final_mean" in ds
    assert list(ds.step.values) == [0, 10, 20]
    assert ds.final_theta.dims == ("traj", "param")
    assert int(ds.n_diverged) == 0
    np.testing.assert_allclose(float(ds.eta_sharpness_final_mean), 0.05 * float(ds.sharpness_final_mean))
    from sdeeos._io import write_dataset

    path = tmp_path / "qr.nc"
    write_dataset(ds, str(path))
    import xarray as xr

    back = xr.load_dataset(path)
    np.testing.assert_array_equal(back.path_loss.values, ds.path_loss.values)


def test_cli_runs_and_reports_bad_input(capsys):
    from sdeeos._cli import main

    assert "quadratic-regression" in MODEL_REGISTRY
    rc = main(["simulate", "quadratic-regression", "--n", "8", "--P", "4", "--eta", "0.05", "--batch-size", "2",
               "--sampling", "with_replacement", "--q-scale", "0.5", "--steps", "20", "--n-traj", "3",
               "--record-every", "5", "--json", "--no-progress"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "quadratic-regression" and out["n_diverged"] == 0
    assert out["parameters"]["batch_size"] == 2.0
    rc = main(["simulate", "quadratic-regression", "--n", "8", "--P", "4", "--eta", "0.05", "--batch-size", "9",
               "--steps", "5", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "batch_size must be an integer in [1, 8]" in err and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------------------- divergence
def test_divergence_is_detected_per_trajectory_and_reported():
    """GD on the linear model with eta*lambda_max = 2.6: every trajectory leaves the bound."""
    m = QuadraticRegression(n=8, P=6, eta=1.0, q_scale=0.0, data_seed=1)
    m_eta = 2.6 / m.initial_ntk_eigenvalues.max()
    m = QuadraticRegression(n=8, P=6, eta=m_eta, q_scale=0.0, data_seed=1)
    ds = sdeeos.simulate(m, "gd", n_traj=3, n_steps=400, seed=0, record_every=50, progress=False)
    assert int(ds.n_diverged) == 3 and ds.diverged.all()
    assert (ds.diverged_step > 0).all() and "warning" in ds.attrs
    # |theta| grows by |1 - eta lambda_max| = 1.6 per step from O(0.1): the bound 1e6 is passed in
    # log(1e7)/log(1.6) ~ 34 steps (+- a few for the projection of theta0 on the top mode)
    assert (ds.diverged_step < 60).all()
    assert np.isnan(ds.final_theta).all()


# ---------------------------------------------------------------------------- linear theory
def _exact_mean_loss(m, t_steps, eta, B, sampling):
    """E[L_t] = tr(M_t)/(2n) from the exact second-moment recursion (mean_square.second_moment_step)."""
    s2 = m.theta0_scale**2 / m.P
    M = np.outer(m.z0, m.z0) + s2 * m.J0 @ m.J0.T   # E[z_0 z_0^T] for theta_0 ~ N(0, s2 I)
    theta_ntk = m.J0 @ m.J0.T / m.n
    out = []
    for _ in range(t_steps):
        out.append(np.trace(M) / (2 * m.n))
        M = ms.second_moment_step(eta, theta_ntk, M, B, sampling)
    return np.array(out)


@pytest.mark.parametrize("sampling", ["without_replacement", "with_replacement", "bernoulli"])
def test_linear_sgd_mean_loss_follows_the_exact_second_moment_recursion(sampling):
    """Ensemble mean of the loss at every recorded step vs tr(M_t)/(2n) (4 SE, 3000 trajectories).

    z_{t+1} = (I - eta Theta D_t) z_t exactly for the linear model, so E[z z^T] obeys the recursion of
    `mean_square` whatever the (non-realizable, here n > P) z0: this checks sampling, normalisation
    and update of the engine against the SymPy-derived coefficients.
    """
    m = QuadraticRegression(n=12, P=8, eta=0.2, batch_size=3, sampling=sampling, q_scale=0.0, theta0_scale=1.0,
                            data_seed=11)
    ds = sdeeos.simulate(m, n_traj=3000, n_steps=24, seed=5, record_every=4, progress=False)
    exact = _exact_mean_loss(m, 24, m.eta, 3, sampling)[::4]
    mean = ds.path_loss.mean("traj").values
    se = ds.path_loss.std("traj", ddof=1).values / math.sqrt(3000)
    assert np.all(np.abs(mean - exact) < Z * se), (mean, exact, se)
    # the noise really matters here: GD's mean loss differs from SGD's by many SE at the last record
    gd = _exact_mean_loss(m, 24, m.eta, 12, "without_replacement")[::4]
    assert abs(gd[-1] - exact[-1]) > 10 * se[-1]


def test_linear_model_predictions_match_mean_square_theory():
    m = QuadraticRegression(n=16, P=24, eta=0.15, batch_size=2, sampling="bernoulli", q_scale=0.0, data_seed=2)
    pred = m.predictions("sgd")
    lam = np.linalg.eigvalsh(m.J0 @ m.J0.T / m.n)
    assert pred["noise_kernel_norm_predicted"] == pytest.approx(
        ms.noise_kernel_norm(0.15, lam, 2, 16, "bernoulli"), rel=1e-12)
    assert pred["sharpness_predicted"] == pytest.approx(lam.max(), rel=1e-12)
    theta = m.J0 @ m.J0.T / m.n
    eta_c = pred["eta_critical_exact"]
    assert ms.second_moment_spectral_radius(eta_c * (1 - 1e-6), theta, 2, "bernoulli") < 1
    assert ms.second_moment_spectral_radius(eta_c * (1 + 1e-6), theta, 2, "bernoulli") > 1
    # rho = 1 exactly at eta_c: rho(eta) - 1 changes sign there (monotone near eta_c)
    below = QuadraticRegression(n=16, P=24, eta=0.98 * eta_c, batch_size=2, sampling="bernoulli", q_scale=0.0,
                                data_seed=2).predictions("sgd")["ms_spectral_radius_exact"]
    above = QuadraticRegression(n=16, P=24, eta=1.02 * eta_c, batch_size=2, sampling="bernoulli", q_scale=0.0,
                                data_seed=2).predictions("sgd")["ms_spectral_radius_exact"]
    assert below < 1 < above
    ds = sdeeos.simulate(m, n_traj=2, n_steps=4, record_every=2, progress=False)
    assert float(ds.noise_kernel_norm_final_mean) == pytest.approx(pred["noise_kernel_norm_predicted"], rel=1e-12)
    assert float(ds.noise_kernel_norm_exact_final_mean) == pytest.approx(
        pred["noise_kernel_norm_exact_predicted"], rel=1e-12)


def test_cached_kernels_pin_the_rng_source():
    """Numba's cache of a ``cache=True`` function does not see changes in another file: the modules whose
    cached kernels inline `sdeeos._rng` pin its SHA-256, so a change there must touch them (and so
    invalidates their cache)."""
    digest = hashlib.sha256(Path(_rng.__file__).read_bytes()).hexdigest()
    for module in (qr_numba_engine, qr_model):
        assert module.RNG_SOURCE_SHA256 == digest, (
            f"sdeeos/_rng.py changed: set RNG_SOURCE_SHA256 = {digest!r} in {module.__file__} (Numba's "
            "on-disk cache of its kernels does not see changes in _rng.py)")
