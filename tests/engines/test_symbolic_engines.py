"""The generated engines: NumPy vs Numba agreement, and exact reproducibility across seeds,
thread counts and segmentations of a run (the RNG is keyed by seed, trajectory and step)."""

import hashlib
from pathlib import Path

import numba
import numpy as np
import pytest

import sdeeos
from sdeeos import _rng
from sdeeos.engines import FOLD, RunSpec, _simd, get_engine
from sdeeos.engines._codegen import print_c, print_numpy, print_python
from sdeeos.engines._numba import STEPS, compile_kernel, kernel_source

EPS = np.finfo(float).eps


def model():
    return sdeeos.SelfStabilization(eta=0.01, alpha=1.0, beta=100.0, sigma=5.0)


@pytest.mark.parametrize("method", ["sgd", "gd", "pgd"])
def test_numba_matches_numpy_reference(method):
    m = sdeeos.SelfStabilization(eta=0.01, alpha=1.0, beta=100.0, sigma=5.0, x0=0.05, y0=-3.0)
    kw = dict(n_traj=300, n_steps=1500, burn_in=500, seed=3, record_every=250)
    a = sdeeos.simulate(m, method, backend="numba", **kw)
    b = sdeeos.simulate(m, method, backend="numpy", **kw)
    # Same arithmetic in the same order, same draws; only the AS241 tail's log may differ by an
    # ulp (NumPy SIMD log vs libm).  The map is weakly unstable (growth ~ (1 + eta*|y|) per step
    # at most), so 1500 steps amplify an ulp by < 1e3: compare at 1e-10 relative.
    for name in a.data_vars:
        if a[name].dtype.kind == "f":
            np.testing.assert_allclose(a[name].values, b[name].values, rtol=1e-10, atol=1e-12, err_msg=name)
        else:
            np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)


def test_same_seed_bit_identical_and_different_seed_differs():
    kw = dict(n_traj=256, n_steps=1000, seed=42)
    a = sdeeos.simulate(model(), **kw)
    b = sdeeos.simulate(model(), **kw)
    c = sdeeos.simulate(model(), **{**kw, "seed": 43})
    np.testing.assert_array_equal(a.sharpness_time_mean.values, b.sharpness_time_mean.values)
    np.testing.assert_array_equal(a.final_x.values, b.final_x.values)
    assert not np.any(a.final_x.values == c.final_x.values)


def test_thread_count_does_not_change_results():
    kw = dict(n_traj=3000, n_steps=700, seed=9)  # several blocks, so threads really split the work
    results = [sdeeos.simulate(model(), n_threads=n, **kw) for n in (1, numba.config.NUMBA_NUM_THREADS)]
    for name in ("sharpness_time_mean", "x_sq_time_meansq", "final_x", "final_y"):
        np.testing.assert_array_equal(results[0][name].values, results[1][name].values)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_segmentation_does_not_change_results(backend):
    m = model()
    spec = RunSpec(model=m, method="sgd", n_traj=100, n_steps=1000, burn_in=300, seed=1, record_every=100)
    engine = get_engine(backend)
    one = m.new_run(spec)
    engine.advance(spec, one, 1000)
    many = m.new_run(spec)
    for t1 in (1, 64, 65, 299, 300, 301, 777, 1000):  # boundaries on and off the fold grid
        engine.advance(spec, many, t1)
    for name, arr in one.arrays().items():
        np.testing.assert_array_equal(arr, getattr(many, name), err_msg=name)


@pytest.mark.parametrize("dtype, rng", [("float64", "splitmix"), ("float64", "philox"), ("float32", "philox"),
                                        ("float32", "splitmix")])
def test_steps_per_pass_do_not_change_the_bits(dtype, rng):
    # passes before and after burn-in; burn-in, records, folds and segment ends off the grid of the
    # passes (burn-in after a fold and a segment end); and about a third of the
    # trajectories diverging (eta^2 beta sigma^2 > 2 alpha: no stationary state), each at some step
    # inside a pass, detected at the next fold
    m = sdeeos.SelfStabilization(eta=0.05, alpha=0.5, beta=10.0, sigma=16.0)
    spec = RunSpec.checked(m, "sgd", n_traj=600, n_steps=203, burn_in=70, seed=5, record_every=5, dtype=dtype,
                           rng=rng)
    runs = {}
    # 3 steps per pass (passes off the grid of folds and records) in one family: each compile costs seconds.
    # One step per pass is the plain kernel (no compaction, 256-bit vectors), the baseline of test_simd's
    # bits test too: one compile serves both
    for steps in (1, 3, STEPS) if (dtype, rng) == ("float64", "splitmix") else (1, STEPS):
        kernel = compile_kernel(spec, False, False, 1) if steps == 1 else compile_kernel(spec, steps=steps)
        run = m.new_run(spec)
        for t1 in (1, 66, 130, 203):
            kernel(run.state, run.params, run.keys, run.gammas, run.t, t1, spec.n_steps, spec.burn_in, FOLD,
                   m.divergence_bound, run.acc_sum, run.acc_sq, run.part_sum, run.part_sq, run.alive,
                   run.diverged_step, run.burn_state, run.rec, spec.record_every)
            run.t = t1
        runs[steps] = run
    assert 0 < np.count_nonzero(runs[1].alive == 0) < spec.n_traj
    for steps, run in runs.items():
        for name, arr in runs[1].arrays().items():
            np.testing.assert_array_equal(arr, getattr(run, name), err_msg=f"{name}, {steps} steps per pass")


def test_divergence_is_counted_and_excluded():
    # eta^2 beta sigma^2 = 4 > 2 alpha: no stationary state; some trajectories blow up
    m = sdeeos.SelfStabilization(eta=0.1, alpha=0.5, beta=10.0, sigma=20.0)
    ds = sdeeos.simulate(m, n_traj=200, n_steps=2000, seed=0)
    n_div = int(ds.n_diverged)
    assert n_div > 0
    assert n_div == int(ds.diverged.sum())
    assert "none" in ds.attrs["stationary_state"]
    assert np.all(ds.diverged_step.values[ds.diverged.values] > 0)
    assert np.all(ds.diverged_step.values[~ds.diverged.values] == -1)
    alive = ~ds.diverged.values
    if alive.any():
        assert np.isfinite(float(ds.sharpness_mean))
        np.testing.assert_allclose(float(ds.sharpness_mean), ds.sharpness_time_mean.values[alive].mean(), rtol=1e-12)
    else:
        assert "every trajectory diverged" in ds.attrs["warning"]


def test_kernel_source_is_generated_from_the_symbolic_step():
    m = model()
    step = m.step("sgd")
    src = kernel_source(step, print_python(step), "SelfStabilization", "sgd")
    assert "n0 = eta*sigma*z - x*(eta*y + 1.0)" in src
    assert "uniform_at_nb(ww[j])" in src
    assert "**" not in src.split("def advance", 1)[1], "integer powers must be printed as products"
    assert print_numpy(m.step("pgd")).update[1] == "numpy.minimum(0.0, alpha*eta + y)"
    assert print_c(m.step("pgd")).update[1] == "fmin(0, alpha*eta + y)"


def test_unknown_backend_is_rejected():
    with pytest.raises(sdeeos.ParameterError, match="backend must be one of"):
        sdeeos.simulate(model(), backend="fortran")


def test_kernel_source_names_the_helpers_it_inlines():
    """Numba's cache does not see changes in functions inlined from other files: the kernel source carries
    the SHA-256 of those files, so a changed helper makes a new kernel file (compiled afresh)."""
    step = model().step("sgd")
    digest = hashlib.sha256(Path(_rng.__file__).read_bytes() + Path(_simd.__file__).read_bytes()).hexdigest()
    assert f"# Numba helpers: sha256 {digest}\n" in kernel_source(step, print_python(step), "SelfStabilization", "sgd")
