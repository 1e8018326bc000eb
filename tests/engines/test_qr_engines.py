r"""Quadratic-regression engines: Numba against the NumPy reference, reproducibility, sampling, PGD.

* Numba vs NumPy: the same draws, different arithmetic (fused per-row kernels vs dense-mask GEMMs,
  Lanczos vs dense ``eigh``).  Round-off (1e-16 relative per operation) is amplified by at most
  ``(1 + eta*||H||)^T`` over T steps; the runs below are short and non-chaotic, so a relative
  tolerance of 1e-9 is round-off with a wide margin.
* Segmentation, thread count, checkpoint/resume: bit-identical (``array_equal``).
* Sampling: the Numba sampler and the NumPy one give identical batches; inclusion statistics are
  checked against the exact probabilities with 4 standard errors.
"""

import math

import numba
import numpy as np
import pytest

import sdeeos
from sdeeos._contract import RunSpec
from sdeeos.models.quadratic_regression._numba_engine import _advance_quadratic, _sample
from sdeeos.models.quadratic_regression._numpy_engine import batch_counts, hessian
from sdeeos.models.quadratic_regression import get_qr_engine
from sdeeos.models.quadratic_regression._state import SCHEME_CODES, draw_layout
from sdeeos.models import QuadraticRegression
from sdeeos.models.quadratic_regression import OBSERVABLES

Z = 4.0
RTOL = 1e-9


def _both(model, method, **kw):
    kw.setdefault("progress", False)
    a = sdeeos.simulate(model, method, backend="numba", **kw)
    b = sdeeos.simulate(model, method, backend="numpy", **kw)
    return a, b


def _assert_close(a, b):
    np.testing.assert_array_equal(a.diverged.values, b.diverged.values)
    np.testing.assert_array_equal(a.diverged_step.values, b.diverged_step.values)
    np.testing.assert_allclose(a.final_theta.values, b.final_theta.values, rtol=RTOL, atol=RTOL)
    for name in OBSERVABLES:
        for var in (f"path_{name}", f"final_{name}"):
            if var in a:
                np.testing.assert_allclose(a[var].values, b[var].values, rtol=RTOL, atol=RTOL * 1e-3,
                                           err_msg=var)


@pytest.mark.parametrize("sampling", ["without_replacement", "with_replacement", "bernoulli"])
@pytest.mark.parametrize("q_scale", [0.0, 0.6])
def test_numba_matches_numpy_sgd(sampling, q_scale):
    m = QuadraticRegression(n=14, P=9, eta=0.08, batch_size=4, sampling=sampling, q_scale=q_scale,
                            theta0_scale=0.5, data_seed=4)
    a, b = _both(m, "sgd", n_traj=5, n_steps=40, seed=3, record_every=8)
    _assert_close(a, b)
    assert int(a.n_diverged) == 0


@pytest.mark.parametrize("q_scale", [0.0, 0.6])
def test_numba_matches_numpy_gd_and_momentum(q_scale):
    m = QuadraticRegression(n=10, P=12, eta=0.05, batch_size=3, q_scale=q_scale, momentum=0.6, data_seed=8)
    for method in ("gd", "sgd"):
        a, b = _both(m, method, n_traj=4, n_steps=30, seed=1, record_every=10)
        _assert_close(a, b)


def test_numba_matches_numpy_pgd_and_divergence():
    m = QuadraticRegression(n=10, P=12, eta=0.3, q_scale=0.8, data_seed=2)
    a, b = _both(m, "pgd", n_traj=3, n_steps=25, seed=0, record_every=5)
    _assert_close(a, b)
    # a run where some but not all trajectories diverge (K > 1 at small B): same steps on both backends
    m = QuadraticRegression(n=10, P=12, eta=0.15, batch_size=2, q_scale=0.8, theta0_scale=1.5, data_seed=2)
    a, b = _both(m, "sgd", n_traj=8, n_steps=30, seed=0, record_every=10)
    assert 0 < int(a.n_diverged) < 8
    _assert_close(a, b)


def _advance(model, method, M, steps, cuts, n_threads=None, backend="numba", record_every=4, seed=7):
    spec = RunSpec(model=model, method=method, n_traj=M, n_steps=steps, burn_in=0, seed=seed,
                   record_every=record_every)
    run, eng = model.new_run(spec), get_qr_engine(backend)
    for t1 in list(cuts) + [steps]:
        eng.advance(spec, run, t1, n_threads=n_threads)
    return spec, run


@pytest.mark.parametrize("q_scale, sampling", [(0.0, "without_replacement"), (0.7, "bernoulli"),
                                               (0.7, "with_replacement")])
def test_bit_identical_across_segments_and_threads(q_scale, sampling):
    m = QuadraticRegression(n=16, P=10, eta=0.1, batch_size=5, sampling=sampling, q_scale=q_scale, data_seed=1)
    _, ref = _advance(m, "sgd", 7, 30, [], n_threads=1)
    threads = min(2, numba.config.NUMBA_NUM_THREADS)
    for cuts, nt in (([3, 4, 17], threads), ([12], None), ([1, 29], 1)):
        _, run = _advance(m, "sgd", 7, 30, cuts, n_threads=nt)
        for name, arr in ref.arrays().items():
            np.testing.assert_array_equal(getattr(run, name), arr, err_msg=name)


def test_checkpoint_roundtrip_is_exact(tmp_path):
    m = QuadraticRegression(n=12, P=8, eta=0.1, batch_size=3, q_scale=0.5, data_seed=1)
    spec, ref = _advance(m, "sgd", 4, 20, [])
    spec, run = _advance(m, "sgd", 4, 9, [])  # a shorter run's state at t = 9 ...
    spec20 = RunSpec(model=m, method="sgd", n_traj=4, n_steps=20, burn_in=0, seed=7, record_every=4)
    eng = get_qr_engine("numba")
    first = m.new_run(spec20)
    eng.advance(spec20, first, 9)
    np.savez(tmp_path / "ck.npz", **first.arrays())
    resumed = m.new_run(spec20)
    with np.load(tmp_path / "ck.npz") as data:  # what sdeeos._simulate does on resume
        for name in data.files:
            setattr(resumed, name, int(data[name]) if name == "t" else data[name])
    eng.advance(spec20, resumed, 20)
    for name, arr in ref.arrays().items():
        np.testing.assert_array_equal(getattr(resumed, name), arr, err_msg=name)


@pytest.mark.parametrize("sampling", ["without_replacement", "with_replacement"])
def test_quadratic_kernel_is_bit_identical_for_any_trajectory_blocking(sampling):
    """Trajectories are processed in blocks (one per thread); pairs are grouped four at a time per
    data row across the block, so the blocking changes the groups: results must not change."""
    m = QuadraticRegression(n=8, P=7, eta=0.1, batch_size=5, sampling=sampling, q_scale=0.5, data_seed=3)
    spec = RunSpec(model=m, method="sgd", n_traj=11, n_steps=12, burn_in=0, seed=5, record_every=0)
    scheme, c_init, d_step = draw_layout(spec)
    out = []
    for n_blocks in (1, 2, 3, 5, 11):
        run = m.new_run(spec)
        _advance_quadratic(run.theta, run.velocity, m.J0, m.Q, m.z0, run.keys, run.gammas, run.alive,
                           run.diverged_step, 0, 12, m.eta, 0.0, 5, scheme, c_init, d_step, 1e6,
                           np.empty((11, 8), np.int64), np.zeros((11, 8), np.uint8), np.empty((11, 7)), n_blocks, 5)
        out.append(run.theta.copy())
    for other in out[1:]:
        np.testing.assert_array_equal(other, out[0])


def test_bernoulli_pair_buffer_growth_is_exact():
    """Forcing the per-step pair buffer to grow (capacity 1 pair per trajectory) changes nothing."""
    m = QuadraticRegression(n=16, P=6, eta=0.1, batch_size=8, sampling="bernoulli", q_scale=0.5)
    spec = RunSpec(model=m, method="sgd", n_traj=5, n_steps=10, burn_in=0, seed=2, record_every=0)
    runs = []
    for cap in (1, 16):
        run = m.new_run(spec)
        scheme, c_init, d_step = draw_layout(spec)
        _advance_quadratic(run.theta, run.velocity, m.J0, m.Q, m.z0, run.keys, run.gammas, run.alive,
                           run.diverged_step, 0, 10, m.eta, 0.0, 8, scheme, c_init, d_step, 1e6,
                           np.empty((5, 16), np.int64), np.zeros((5, 16), np.uint8), np.empty((5, 6)), 2, cap)
        runs.append(run.theta.copy())
    np.testing.assert_array_equal(runs[0], runs[1])


# ---------------------------------------------------------------------------- sampling
def _numba_batches(keys, gammas, c0, n, B, scheme):
    idx, mark, ubuf = np.empty(n, np.int64), np.zeros(n, np.uint8), np.empty(n)
    counts = np.zeros((keys.size, n))
    for m in range(keys.size):
        k = _sample(keys[m], gammas[m], c0, n, B, scheme, idx, mark, ubuf)
        assert not mark.any()
        for i in idx[:k]:
            counts[m, i] += 1
    return counts


@pytest.mark.parametrize("sampling", ["without_replacement", "with_replacement", "bernoulli"])
def test_sampling_statistics(sampling):
    """Per-row and pairwise inclusion against the exact probabilities (4 SE), Numba == NumPy draws."""
    from sdeeos._rng import stream_keys

    n, B, M = 9, 4, 4000
    keys, gammas = stream_keys(2024, M)
    scheme = SCHEME_CODES[sampling]
    C = batch_counts(keys, gammas, 1000, n, B, scheme)
    np.testing.assert_array_equal(_numba_batches(keys[:200], gammas[:200], 1000, n, B, scheme), C[:200])
    # E c_i = B/n for every scheme (unbiased batch gradient)
    mean, se = C.mean(0), C.std(0, ddof=1) / math.sqrt(M)
    assert np.all(np.abs(mean - B / n) < Z * se)
    pair = (C[:, 0] * C[:, 1]).mean()
    pair_se = (C[:, 0] * C[:, 1]).std(ddof=1) / math.sqrt(M)
    size = C.sum(1)
    if sampling == "without_replacement":
        assert np.all((C == 0) | (C == 1)) and np.all(size == B)
        assert abs(pair - B * (B - 1) / (n * (n - 1))) < Z * pair_se
    elif sampling == "with_replacement":
        assert np.all(size == B)
        assert abs(pair - B * (B - 1) / n**2) < Z * pair_se
        sq = (C[:, 0] ** 2).mean()  # E c_i^2 = B/n + B(B-1)/n^2
        assert abs(sq - (B / n + B * (B - 1) / n**2)) < Z * (C[:, 0] ** 2).std(ddof=1) / math.sqrt(M)
    else:
        assert abs(size.mean() - B) < Z * math.sqrt(B * (1 - B / n) / M)
        assert abs(pair - (B / n) ** 2) < Z * pair_se


# ---------------------------------------------------------------------------- observables, PGD
def test_numba_observables_match_dense_linear_algebra():
    """Lanczos (kmax >= P: exact to round-off) and the NTK spectrum vs the NumPy engine's eigh."""
    m = QuadraticRegression(n=11, P=14, eta=0.1, batch_size=3, q_scale=1.5, theta0_scale=1.0, data_seed=6)
    spec = RunSpec(model=m, method="sgd", n_traj=6, n_steps=1, burn_in=0, seed=4, record_every=0)
    run = m.new_run(spec)
    a = get_qr_engine("numba").observe(spec, run)
    b = get_qr_engine("numpy").observe(spec, m.new_run(spec))
    np.testing.assert_allclose(a, b, rtol=1e-10)
    H, _, _ = hessian(m, run.theta)
    np.testing.assert_allclose(a[OBSERVABLES.index("sharpness")], np.linalg.eigvalsh(H)[:, -1], rtol=1e-10)


def test_pgd_equals_gd_until_the_constraint_binds_then_holds_it():
    m = QuadraticRegression(n=16, P=24, eta=0.35, q_scale=1.0, theta0_scale=0.0, data_seed=3)
    gd = sdeeos.simulate(m, "gd", n_traj=1, n_steps=60, record_every=1, progress=False)
    pgd = sdeeos.simulate(m, "pgd", n_traj=1, n_steps=60, record_every=1, progress=False)
    edge = 2 / m.eta
    s_gd = gd.path_sharpness.values[0]
    first = int(np.argmax(s_gd > edge))
    assert 0 < first < 59  # GD crosses 2/eta inside the run (progressive sharpening)
    np.testing.assert_allclose(pgd.path_loss.values[0, :first], gd.path_loss.values[0, :first], rtol=1e-12)
    s_pgd = pgd.path_sharpness.values[0]
    # the projection loop stops only once S <= 2/eta; the observer recomputes S at the same point
    # (round-off of two eigen-solvers: 1e-10 relative)
    assert np.all(s_pgd <= edge * (1 + 1e-10)), (s_pgd.max() - edge) / edge
    assert np.max(s_gd) > edge * 1.01
    assert int(pgd.n_diverged) == 0
