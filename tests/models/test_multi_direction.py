r"""The k-direction reduced model against its exact identities, k = 1 against SelfStabilization, and
the symmetric degenerate case against its closed form.

Tolerances: bit identity (k = 1), float64 round-off (telescoped identity), or Z = 4 standard errors
of independent trajectories.  Predictions come from `sdeeos.theory.multi_direction` (lambdified SymPy).
"""

import numpy as np
import pytest

import sdeeos
from sdeeos import ParameterError
from sdeeos.models import MODEL_REGISTRY, MultiDirection
from sdeeos.theory import multi_direction as theory

Z = 4.0

G3 = [[100.0, 30.0, 10.0], [30.0, 80.0, 20.0], [10.0, 20.0, 60.0]]


def _mean_se(values):
    values = np.asarray(values)
    return values.mean(), values.std(ddof=1) / np.sqrt(values.size)


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs, match", [
    (dict(eta=0.0, alpha=[1.0], sigma=[1.0], coupling=[[1.0]]), "^eta must"),
    (dict(eta=0.1, alpha=[1.0, 1.0], sigma=[1.0], coupling=np.eye(2)), "^sigma must have 2 entries"),
    (dict(eta=0.1, alpha=[1.0, 1.0], sigma=[1.0, -1.0], coupling=np.eye(2)), "^sigma must be >= 0"),
    (dict(eta=0.1, alpha=[1.0, 1.0], sigma=[1.0, 1.0], coupling=[[1.0, 2.0], [2.0, 1.0]]), "^coupling must be positive definite"),
    (dict(eta=0.1, alpha=[1.0, 1.0], sigma=[1.0, 1.0], coupling=[[1.0, 0.2], [0.1, 1.0]]), "^coupling must be symmetric"),
    (dict(eta=0.1, alpha=[1.0, 1.0], sigma=[1.0, 1.0], coupling=np.eye(3)), "^coupling must be a square 2x2"),
    (dict(eta=0.1, alpha="1,x", sigma="1", coupling="1"), "^alpha must be numbers"),
    (dict(eta=0.1, alpha=[], sigma=[], coupling=[[1.0]]), "^alpha must have at least one"),
    (dict(eta=0.1, alpha=[0.0], sigma=[1.0], coupling=[[1.0]]), "^alpha must"),
])
def test_bad_parameters_name_the_parameter(kwargs, match):
    with pytest.raises(ParameterError, match=match):
        MultiDirection(**kwargs)


def test_registered_and_cli_strings():
    assert MODEL_REGISTRY["multi-direction"] is MultiDirection
    m = MultiDirection(eta=0.01, alpha="1,0.5", sigma="2,1", coupling="100,20;20,80")
    np.testing.assert_array_equal(m.coupling, [[100.0, 20.0], [20.0, 80.0]])
    assert m.parameters()["G12"] == 20.0 and m.parameters()["alpha2"] == 0.5


def test_cli_runs(capsys):
    import json

    from sdeeos._cli import main

    rc = main(["simulate", "multi-direction", "--eta", "0.01", "--alpha", "1,1", "--sigma", "3,2", "--coupling",
               "100,20;20,80", "--n-traj", "8", "--steps", "300", "--json", "--no-progress", "--backend", "numpy"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "multi-direction" and out["parameters"]["G12"] == 20.0


# ---------------------------------------------------------------------------- k = 1
@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("method", ["sgd", "gd"])
def test_k1_is_bit_identical_to_self_stabilization(backend, method):
    """Same symbols, same expressions, same seed -> the same draws and the same per-trajectory arrays."""
    a = sdeeos.SelfStabilization(eta=0.01, alpha=1.0, beta=100.0, sigma=10.0)
    b = MultiDirection(eta=0.01, alpha=[1.0], sigma=[10.0], coupling=[[100.0]])
    kw = dict(n_traj=64, n_steps=3000, burn_in=1000, seed=11, backend=backend, progress=False, record_every=50)
    da, db = sdeeos.simulate(a, method, **kw), sdeeos.simulate(b, method, **kw)
    names = [v for v in da.data_vars if "traj" in da[v].dims]
    assert len(names) >= 10
    for v in names:
        np.testing.assert_array_equal(da[v].values, db[v].values, err_msg=v)
    assert float(da.sharpness_gap) == float(db.sharpness_gap)
    if method == "sgd":
        for key in ("exact", "leading"):
            assert float(db[f"sharpness_gap_predicted_{key}"]) == pytest.approx(
                float(da[f"sharpness_gap_predicted_{key}"]), rel=1e-14)


# ---------------------------------------------------------------------------- exact identities, k = 3
def test_time_averaged_amplitude_identity_to_round_off():
    r"""Telescoping the y-updates, per trajectory and exactly: :math:`G\,\overline{x^2}=2\alpha-2(y_T-y_B)/(\eta(T-B))`."""
    eta, alpha = 0.01, np.asarray([1.0, 0.7, 0.5])
    m = MultiDirection(eta=eta, alpha=alpha, sigma=[3.0, 2.0, 1.0], coupling=G3)
    T, B = 4000, 1000
    ds = sdeeos.simulate(m, n_traj=100, n_steps=T, burn_in=B, seed=5, progress=False, record_every=1)
    G = np.asarray(G3)
    xbar = np.stack([ds[f"x_sq{j}_time_mean"].values for j in (1, 2, 3)])
    dy = np.stack([(ds[f"final_y{j}"] - ds[f"burn_in_y{j}"]).values for j in (1, 2, 3)])
    lhs = G @ xbar
    rhs = 2 * alpha[:, None] - 2 * dy / (eta * (T - B))
    # Worst-case round-off of N = T - B steps: N eps |G x^2| for the sums, and N eps |y| accumulated
    # in each y, divided by eta N / 2 in the identity (as for the one-direction model).
    eps, n = np.finfo(float).eps, T - B
    x2max = max(float(ds[f"path_x_sq{j}"].max()) for j in (1, 2, 3))
    ymax = max(float(np.abs(ds[f"path_y{j}"]).max()) for j in (1, 2, 3))
    tol = n * eps * (np.abs(G).sum(axis=1).max() * x2max + 2 * ymax / eta)
    np.testing.assert_allclose(lhs, rhs, rtol=0, atol=tol)


@pytest.fixture(scope="module")
def run3():
    # sigma^2 beta_eff/(4 alpha^2) ~ 200-400: inside the closure regime; slow relaxation time
    # ~ Delta S/(eta alpha) ~ 10^3 steps, burn-in 30x that; y starts at the closure's stationary value
    eta, alpha, sigma = 0.01, [1.0, 0.7, 0.5], [3.0, 2.5, 2.0]
    y0 = -theory.gap_exact(eta, alpha, sigma, G3)
    m = MultiDirection(eta=eta, alpha=alpha, sigma=sigma, coupling=G3, y0=y0)
    return m, sdeeos.simulate(m, n_traj=600, n_steps=60_000, burn_in=30_000, seed=2, progress=False)


def test_identities_k3_within_standard_errors(run3):
    m, ds = run3
    eta, alpha, sigma, G = m.eta, m.alpha, m.sigma, m.coupling
    assert int(ds.n_diverged) == 0
    x_sq = np.stack([ds[f"x_sq{j}_time_mean"].values for j in (1, 2, 3)])
    # G E[x^2] = 2 alpha, each row
    for i in range(3):
        mean, se = _mean_se(G[i] @ x_sq - 2 * alpha[i])
        assert abs(mean) < Z * se, (i, mean, se)
    # E[x_j^2 y_j] + eta/2 E[x_j^2 y_j^2] = -eta sigma_j^2/2
    for j in (1, 2, 3):
        v = ds[f"y_x_sq{j}_time_mean"] + eta / 2 * ds[f"y_x{j}_time_meansq"] + eta * sigma[j - 1] ** 2 / 2
        mean, se = _mean_se(v)
        assert abs(mean) < Z * se, (j, mean, se)
    # the weighted gap identity
    mvec = theory.x_sq_stationary(alpha, G)
    lhs = sum(mvec[j - 1] * (2 / eta - ds[f"sharpness{j}_time_mean"].values) for j in (1, 2, 3))
    rhs = theory.weighted_gap_rhs(eta, alpha, sigma, G, np.stack([ds[f"y_x{j}_time_meansq"].values for j in (1, 2, 3)]),
                                  x_sq, ds["r_G_r_time_mean"].values)
    mean, se = _mean_se(lhs - rhs)
    assert abs(mean) < Z * se, (mean, se)
    # the identity's lower bound and the dataset's own summary
    assert float(ds.weighted_gap) > eta / 2 * np.sum(sigma**2)
    assert float(ds.weighted_gap) == pytest.approx(float(lhs.mean()), rel=1e-12)


def test_k3_gaps_against_closure(run3):
    """Per direction the closure must not overestimate the gap (the fluctuation terms of the identity are
    >= 0); the top eigenvalue's gap is at most the smallest per-direction gap (E max >= max E)."""
    m, ds = run3
    exact = theory.gap_exact(m.eta, m.alpha, m.sigma, m.coupling)
    for j in (1, 2, 3):
        gap, se = float(ds[f"sharpness_gap{j}"]), float(ds[f"sharpness_gap{j}_stderr"])
        assert gap > exact[j - 1] - Z * se
        assert float(ds[f"sharpness_gap{j}_predicted_exact"]) == pytest.approx(exact[j - 1], rel=1e-14)
    top = float(ds.sharpness_gap)
    assert top <= min(float(ds[f"sharpness_gap{j}"]) for j in (1, 2, 3)) + 1e-12


# ---------------------------------------------------------------------------- symmetric degenerate case
@pytest.mark.parametrize("k, c", [(2, 0.0), (3, 30.0)])
def test_symmetric_case_matches_closed_form(k, c):
    r"""k equal directions, G = (beta - c) I + c 11^T: E[x_j^2] = 2 alpha/(beta + (k-1) c) (exact) and the
    gap of each direction = the corrected closed form (1 - sqrt(1 - eta^2 sigma^2 beta_eff/(2 alpha)
    - 3 eta^2 alpha beta/beta_eff))/eta, within Z standard errors (as for the one-direction model)."""
    eta, alpha, beta, sigma = 0.01, 1.0, 100.0, 4.0
    G = (beta - c) * np.eye(k) + c * np.ones((k, k))
    gaps = theory.symmetric_gaps(eta, alpha, sigma, beta, c, k)
    m = MultiDirection(eta=eta, alpha=[alpha] * k, sigma=[sigma] * k, coupling=G, y0=-gaps["exact"])
    ds = sdeeos.simulate(m, n_traj=1000, n_steps=60_000, burn_in=30_000, seed=4, progress=False)
    beta_eff = float(theory.symmetric_beta_eff(beta, c, k))
    assert beta_eff == pytest.approx(beta + (k - 1) * c, rel=1e-15)
    for j in range(1, k + 1):
        mean, se = _mean_se(ds[f"x_sq{j}_time_mean"])
        assert abs(mean - 2 * alpha / beta_eff) < Z * se
        gap, se = float(ds[f"sharpness_gap{j}"]), float(ds[f"sharpness_gap{j}_stderr"])
        assert abs(gap - gaps["corrected"]) < Z * se, (j, gap, gaps, se)
    if c > 0:
        # the coupling raises the gap above the uncoupled one-direction value by about beta_eff/beta
        one_d = float(sdeeos.theory.self_stabilization.gap_corrected(eta, alpha, beta, sigma))
        assert gaps["corrected"] > 1.4 * one_d


def test_docstring_examples():
    import doctest

    from sdeeos.models import _multi_direction

    for mod in (theory, _multi_direction):
        assert doctest.testmod(mod, optionflags=doctest.ELLIPSIS).failed == 0, mod.__name__


def test_theory_reduces_to_one_direction_when_decoupled():
    """Diagonal G: each direction's closure gap is the one-direction model's with beta = G_jj."""
    from sdeeos.theory import self_stabilization as ss

    eta, alpha, sigma, G = 0.01, [1.0, 0.5], [10.0, 3.0], np.diag([100.0, 40.0])
    exact = theory.gap_exact(eta, alpha, sigma, G)
    for j in range(2):
        assert exact[j] == pytest.approx(float(ss.gap_exact(eta, alpha[j], G[j, j], sigma[j])), rel=1e-13)
    np.testing.assert_allclose(theory.beta_eff(alpha, G), [100.0, 40.0], rtol=1e-14)


def test_gap_outside_domain_raises_or_nans():
    G = [[100.0, 90.0], [90.0, 100.0]]
    with pytest.raises(sdeeos.OutsideDomainError, match="no stationary closure state"):
        theory.gap_exact(0.01, [1.0, 0.1], [1.0, 1.0], G)  # (G^-1 alpha)_2 < 0
    out = theory.gap_exact(0.01, [1.0, 0.1], [1.0, 1.0], G, outside="nan")
    assert np.isnan(out[1]) and np.isfinite(out[0])


def test_cuda_source_bit_identical_to_numba_on_cpu():
    """The CUDA kernel generated from the same symbolic step, compiled by g++ on the CPU (no GPU), gives
    the Numba engine's run bit for bit (float64, no FMA contraction; see tests/engines/test_cuda_source_on_cpu.py)."""
    from sdeeos.engines import RunSpec, RunState, get_engine
    from sdeeos.engines._cuda_host import HostDevice, find_cxx
    from sdeeos.engines._cupy import CupyEngine

    if find_cxx() is None:
        pytest.skip("needs a C++ compiler (g++) to build the CUDA source on the CPU")
    m = MultiDirection(eta=0.01, alpha=[1.0, 0.7, 0.5], sigma=[3.0, 2.0, 1.0], coupling=G3)
    spec = RunSpec(model=m, method="sgd", n_traj=200, n_steps=1200, burn_in=400, seed=3, record_every=37)
    runs = []
    for engine, cuts in ((get_engine("numba"), [1200]), (CupyEngine(device=HostDevice()), [500, 1200])):
        r = RunState.initial(spec)
        for t1 in cuts:
            engine.advance(spec, r, t1)
        runs.append(r)
    for name, x in runs[0].arrays().items():
        y = getattr(runs[1], name)
        if isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y, err_msg=name)
        else:
            assert x == y, name
