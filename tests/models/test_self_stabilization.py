r"""The reduced self-stabilization model against its exact identities and the closure theory.

Every tolerance is either float64 round-off or a multiple of a standard error measured across
independent trajectories (4 SE: a false alarm rate of 6e-5 per check).  Predictions come from
`sdeeos.theory.self_stabilization` (lambdified SymPy), never from retyped formulas.
"""

import numpy as np
import pytest

import sdeeos
from sdeeos import ParameterError
from sdeeos.theory import self_stabilization as theory

Z = 4.0  # standard errors allowed for a statistical check


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(eta=0.0, alpha=1, beta=1), "eta"),
        (dict(eta=-0.1, alpha=1, beta=1), "eta"),
        (dict(eta=0.1, alpha=0, beta=1), "alpha"),
        (dict(eta=0.1, alpha=1, beta=-2), "beta"),
        (dict(eta=0.1, alpha=1, beta=1, sigma=-1), "sigma"),
        (dict(eta=float("nan"), alpha=1, beta=1), "eta"),
        (dict(eta=0.1, alpha=float("inf"), beta=1), "alpha"),
        (dict(eta=0.1, alpha=1, beta=1, x0=float("nan")), "x0"),
    ],
)
def test_bad_model_parameters_name_the_parameter(kwargs, name):
    with pytest.raises(ParameterError, match=rf"^{name} must"):
        sdeeos.SelfStabilization(**kwargs)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(n_traj=0), "n_traj"),
        (dict(n_steps=0), "n_steps"),
        (dict(n_steps=10, burn_in=10), "burn_in"),
        (dict(burn_in=-1), "burn_in"),
        (dict(record_every=0), "record_every"),
        (dict(seed=-5), "seed"),
        (dict(method="adam"), "method"),
        (dict(n_traj=2.5), "n_traj"),
    ],
)
def test_bad_run_settings_name_the_parameter(kwargs, name):
    m = sdeeos.SelfStabilization(eta=0.01, alpha=1, beta=100, sigma=1)
    with pytest.raises(ParameterError, match=rf"^{name} must"):
        sdeeos.simulate(m, **kwargs)


def test_sgd_needs_noise():
    with pytest.raises(ParameterError, match="sigma must be > 0"):
        sdeeos.simulate(sdeeos.SelfStabilization(eta=0.01, alpha=1, beta=100), "sgd")


def test_no_stationary_state_runs_and_says_so():
    m = sdeeos.SelfStabilization(eta=0.1, alpha=0.5, beta=10.0, sigma=4.0)  # eta^2 beta sigma^2 = 1.6 > 1
    ds = sdeeos.simulate(m, n_traj=20, n_steps=200)
    assert ds.attrs["stationary_state"].startswith("none")
    assert np.isnan(float(ds.sharpness_gap_predicted_exact))
    with pytest.raises(sdeeos.OutsideDomainError, match="no stationary state"):
        theory.gap_exact(0.1, 0.5, 10.0, 4.0)


# ---------------------------------------------------------------------------- exact identities
def test_time_averaged_x_sq_identity_holds_per_trajectory_to_round_off():
    r"""Telescoping the y-update: for every trajectory, exactly,
    :math:`\overline{x^2} = 2\alpha/\beta - 2(y_T - y_B)/(\eta\beta(T-B))`."""
    eta, alpha, beta = 0.01, 1.0, 100.0
    m = sdeeos.SelfStabilization(eta=eta, alpha=alpha, beta=beta, sigma=3.0, x0=0.03, y0=-2.0)
    T, B = 5000, 1000
    ds = sdeeos.simulate(m, n_traj=500, n_steps=T, burn_in=B, seed=5, record_every=1)
    predicted = theory.x_sq_stationary(alpha, beta) - 2 * (ds.final_y - ds.burn_in_y) / (eta * beta * (T - B))
    # Worst-case round-off of N = T - B additions: N eps |term| for the x^2 sum, and N eps |y|
    # accumulated in y, divided by eta beta N / 2 in the identity.
    eps, n = np.finfo(float).eps, T - B
    tol = n * eps * (float(ds.path_x_sq.max()) + 2 * float(np.abs(ds.path_y).max()) / (eta * beta))
    np.testing.assert_allclose(ds.x_sq_time_mean, predicted, rtol=0, atol=tol)


def _stationary_run(eta, alpha, beta, sigma, n_traj=2000, n_steps=60_000, seed=0):
    m = sdeeos.SelfStabilization(eta=eta, alpha=alpha, beta=beta, sigma=sigma)
    return sdeeos.simulate(m, n_traj=n_traj, n_steps=n_steps, burn_in=n_steps // 2, seed=seed)


def _mean_se(values):
    values = np.asarray(values)
    return values.mean(), values.std(ddof=1) / np.sqrt(values.size)


CASES = [  # (eta, alpha, beta, sigma): sigma^2 / (4 alpha^2 / beta) from 100 to 2500
    (0.01, 1.0, 100.0, 2.0),
    (0.01, 1.0, 100.0, 5.0),
    (0.01, 1.0, 100.0, 10.0),
    (0.05, 0.5, 10.0, 4.0),
    (0.002, 3.0, 2000.0, 3.0),
]


@pytest.fixture(scope="module")
def stationary_runs():
    return {case: _stationary_run(*case) for case in CASES}


@pytest.mark.parametrize("case", CASES)
def test_stationary_moment_identities(stationary_runs, case):
    """E x^2 = 2 alpha / beta; E[y x^2] + eta/2 E[x^2 y^2] = -eta sigma^2/2; and the exact gap identity."""
    eta, alpha, beta, sigma = case
    ds = stationary_runs[case]
    assert int(ds.n_diverged) == 0

    m, se = _mean_se(ds.x_sq_time_mean)
    assert abs(m - theory.x_sq_stationary(alpha, beta)) < Z * se

    lhs = ds.y_x_sq_time_mean + eta / 2 * ds.y_x_time_meansq
    m, se = _mean_se(lhs + eta * sigma**2 / 2)
    assert abs(m) < Z * se

    gap_identity = theory.gap_from_moments(eta, alpha, beta, sigma, ds.y_x_time_meansq, ds.x_sq_time_meansq)
    gap = 2 / eta - ds.sharpness_time_mean
    m, se = _mean_se(gap_identity - gap)
    assert abs(m) < Z * se


@pytest.mark.parametrize("case", CASES)
def test_gap_against_closure_inside_its_regime(stationary_runs, case):
    r"""Inside the closure's regime (sigma^2 >> 4 alpha^2/beta) the gap is the closure's up to the
    fluctuation terms of the exact identity, which are positive: the closure must not overestimate.
    With the slow-variable fluctuations of the linearised slow SDE (Var y = alpha,
    Var x^2 = 2 (2 alpha/beta)^2) the corrected gap ~ closure + 3/2 eta alpha must agree within
    4 standard errors.  The leading-order formula is an exact lower bound (identity)."""
    eta, alpha, beta, sigma = case
    ds = stationary_runs[case]
    gap, se = float(ds.sharpness_gap), float(ds.sharpness_gap_stderr)
    exact = theory.gap_exact(eta, alpha, beta, sigma)
    corrected = theory.gap_corrected(eta, alpha, beta, sigma)
    leading = theory.gap_leading(eta, alpha, beta, sigma)
    assert gap > leading - Z * se
    assert gap > exact - Z * se, "the closure must not overestimate the gap"
    assert abs(gap - corrected) < Z * se
    # the dataset carries the same lambdified predictions
    assert float(ds.sharpness_gap_predicted_exact) == pytest.approx(exact, rel=1e-15)
    assert float(ds.sharpness_gap_predicted_corrected) == pytest.approx(corrected, rel=1e-15)
    assert float(ds.sharpness_gap_predicted_leading) == pytest.approx(leading, rel=1e-15)


def test_gap_scales_like_sigma_squared_only_inside_the_regime():
    """Above the validity floor gap/sigma^2 tends to eta*beta/(4 alpha); below it (sigma^2 ~ 4 alpha^2/beta)
    the gap is several times the leading-order value (docs/theory.md#closure-validity)."""
    eta, alpha, beta = 0.01, 1.0, 100.0
    small = _stationary_run(eta, alpha, beta, 0.2, n_traj=1000, n_steps=40_000, seed=1)
    ratio = float(small.sharpness_gap) / theory.gap_leading(eta, alpha, beta, 0.2)
    assert ratio > 2.0
    # the exact identity still holds there: the excess is the fluctuation terms, not noise
    gap_identity = theory.gap_from_moments(eta, alpha, beta, 0.2, small.y_x_time_meansq, small.x_sq_time_meansq)
    m, se = _mean_se(gap_identity - (2 / eta - small.sharpness_time_mean))
    assert abs(m) < Z * se


# ---------------------------------------------------------------------------- deterministic methods
def test_pgd_is_the_constrained_reference_trajectory():
    eta, alpha = 0.01, 2.0
    m = sdeeos.SelfStabilization(eta=eta, alpha=alpha, beta=50.0, x0=0.3, y0=-5.0)
    ds = sdeeos.simulate(m, "pgd", n_traj=3, n_steps=400, burn_in=0, record_every=1)
    t = ds.step.values
    expected_y = np.minimum(0.0, -5.0 + eta * alpha * t)  # y_t = min(0, y_0 + t eta alpha) for t >= 1
    expected_y[0] = -5.0
    np.testing.assert_allclose(ds.path_y.values[0], expected_y, rtol=0, atol=400 * np.finfo(float).eps * 5)
    assert np.all(ds.path_x.values[:, 1:] == 0.0)
    assert np.all(ds.path_sharpness.values <= 2 / eta + 1e-12)


def test_gd_from_the_period_two_orbit_stays_there_for_short_times():
    # x = +-sqrt(2 alpha/beta), y = 0 is an exact period-2 orbit; it is weakly unstable (growth
    # sqrt(1 + 2 eta^2 alpha) per step) so round-off grows by < e^{eta^2 alpha T} = e^{0.2} here.
    eta, alpha, beta = 0.01, 1.0, 100.0
    m = sdeeos.SelfStabilization(eta=eta, alpha=alpha, beta=beta)
    ds = sdeeos.simulate(m, "gd", n_traj=1, n_steps=2000, record_every=1)
    assert np.max(np.abs(ds.path_y.values)) < 1e-12
    np.testing.assert_allclose(np.abs(ds.path_x.values), np.sqrt(2 * alpha / beta), rtol=1e-12)
    assert int(ds.n_x_underflow) == 0


def test_gd_reports_x_underflow_of_growing_cycles():
    # Started away from the orbit, deterministic cycles grow until x underflows to 0.0 in float64;
    # then the sharpness grows without bound: the result says so instead of averaging it silently.
    m = sdeeos.SelfStabilization(eta=0.01, alpha=1.0, beta=100.0, x0=1e-3)
    ds = sdeeos.simulate(m, "gd", n_traj=1, n_steps=200_000)
    assert int(ds.n_x_underflow) == 1
    assert float(ds.final_y[0]) > 100.0
