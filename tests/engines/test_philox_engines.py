"""The Philox family in every engine: the Numba kernel, the CUDA kernel (built by g++ on the CPU) and
the NumPy reference draw the same normals, bit for bit (the scheme calls no libm function), however a
run is cut into segments (a segment may start in the middle of a Philox block); runs record the
scheme they used.  One test checks the Numba kernel's splitmix draws the same way."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from numba import njit

import sdeeos
from sdeeos import _rng
from sdeeos._errors import ParameterError
from sdeeos.engines import RunSpec, get_engine
from sdeeos.engines._cuda_host import HostDevice, find_cxx
from sdeeos.engines._cuda_template import KEYS_KERNEL_NAME, kernel_source
from sdeeos.engines._cupy import CupyEngine
from sdeeos.models import EnsembleModel, QuadraticRegression, SelfStabilization, SymbolicStep

needs_cxx = pytest.mark.skipif(find_cxx() is None, reason="needs g++ to build the CUDA source on the CPU")


class TwoNoises(EnsembleModel):
    """x_{t+1} = z1_t, y_{t+1} = z2_t: the recorded path is the stream itself (two draws per step)."""

    name = "two-noises-probe"
    methods = ("draw",)

    def parameters(self):
        return {}

    def initial_state(self):
        return {"x": 0.0, "y": 0.0}

    def step(self, method):
        x, y, z1, z2 = sp.symbols("x y z1 z2")
        return SymbolicStep(state=(x, y), params=(), noise=(z1, z2), update=(z1, z2), observables={})


def _run(engine, spec, cuts):
    r = spec.model.new_run(spec)
    for t1 in cuts:
        engine.advance(spec, r, t1)
    return r


@njit
def _splitmix_normals_nb(keys, gammas, counter):
    # lane by lane from the scalar functions, with the kernel's libm `log` (NumPy's may differ in the
    # tails' last bit, as the scheme's documentation says)
    out = np.empty(keys.size)
    for i in range(keys.size):
        out[i] = _rng.ndtri_nb(_rng.uniform_nb(keys[i], gammas[i], counter))
    return out


def _reference(spec):
    """The recorded normals from `sdeeos._rng` directly: (step, state, traj)."""
    keys, trajs = _rng.stream_keys(spec.seed, spec.n_traj, rng=spec.rng)
    draw = _rng.normals32 if spec.dtype == "float32" else _rng.normals
    if spec.dtype == "float64" and spec.rng == "splitmix":
        draw = lambda k, g, c, rng: _splitmix_normals_nb(k, g, c)  # noqa: E731
    nz = spec.step.n_noise
    return np.stack([np.stack([draw(keys, trajs, t * nz + k, rng=spec.rng) for k in range(nz)])
                     for t in range(spec.n_steps - 1)])


@pytest.mark.parametrize("rng", ["philox", "splitmix"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_numba_draws_are_the_reference_normals(dtype, rng):
    # two draws per step and odd cuts: segments start inside Philox blocks, and the splitmix kernel's
    # running Weyl sum restarts at t0 * n_noise
    spec = RunSpec.checked(TwoNoises(), "draw", n_traj=600, n_steps=40, burn_in=0, seed=2**64 - 3, record_every=1,
                           dtype=dtype, rng=rng)
    a = _run(get_engine("numba"), spec, [3, 10, 11, 40])
    # Philox: no libm call anywhere (the tails' log is `neglog_int`), so NumPy's draws are the same bits
    np.testing.assert_array_equal(a.rec[1:, :2], _reference(spec))


@needs_cxx
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_cuda_source_bit_identical_to_numba(dtype):
    m = SelfStabilization(eta=0.01, alpha=1.0, beta=100.0, sigma=10.0, x0=0.05, y0=-3.0)
    for model, method, cuts in ((TwoNoises(), "draw", [5, 6, 40]), (m, "sgd", [50, 64, 777, 1500])):
        spec = RunSpec.checked(model, method, n_traj=300, n_steps=cuts[-1], burn_in=cuts[-1] // 3, seed=3,
                               record_every=1 if method == "draw" else 37, dtype=dtype, rng="philox")
        a = _run(get_engine("numba"), spec, [cuts[-1]])
        b = _run(CupyEngine(device=HostDevice()), spec, cuts)
        for name, x in a.arrays().items():
            if isinstance(x, np.ndarray):
                np.testing.assert_array_equal(x, getattr(b, name), err_msg=f"{method} {name}")


@needs_cxx
def test_cuda_stream_ids_kernel_for_philox():
    fn = HostDevice().functions(kernel_source(TwoNoises().step("draw"), rng="philox"), fmad=False)[KEYS_KERNEL_NAME]
    seed, first, m = 2**64 - 1, 10**12, 129
    keys, trajs = np.empty(m, np.uint64), np.empty(m, np.uint64)
    fn(((m + 127) // 128,), (128,), (np.uint64(seed), np.uint64(first), keys, trajs, np.int64(m)))
    ref_k, ref_t = _rng.stream_keys(seed, m, first=first, rng="philox")
    np.testing.assert_array_equal(keys, ref_k)
    np.testing.assert_array_equal(trajs, ref_t)


def test_numpy_engine_matches_numba_for_philox_float64():
    m = SelfStabilization(eta=0.01, alpha=1.0, beta=100.0, sigma=10.0)
    spec = RunSpec.checked(m, "sgd", n_traj=500, n_steps=300, burn_in=100, seed=9, record_every=25, rng="philox")
    a = _run(get_engine("numba"), spec, [77, 300])
    b = _run(get_engine("numpy"), spec, [300])
    # the same normals to the bit (no libm log) and the same printed update: identical runs
    for name, x in a.arrays().items():
        if isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, getattr(b, name), err_msg=name)


def test_shards_draw_the_streams_of_their_trajectories():
    m = SelfStabilization(eta=0.01, alpha=1.0, beta=100.0, sigma=10.0)
    spec = RunSpec.checked(m, "sgd", n_traj=1000, n_steps=200, burn_in=50, seed=4, dtype="float32")
    whole = _run(get_engine("numba"), spec, [200])
    part = _run(get_engine("numba"), spec.shard(300, 700), [200])
    np.testing.assert_array_equal(whole.acc_sum[:, 300:700], part.acc_sum)
    np.testing.assert_array_equal(whole.state[:, 300:700], part.state)


def test_simulate_records_the_scheme_and_validates_rng():
    m = SelfStabilization(eta=0.01, alpha=1.0, beta=100.0, sigma=10.0)
    kw = dict(n_traj=8, n_steps=64, progress=False)
    assert sdeeos.simulate(m, **kw).attrs["rng_scheme"] == _rng.RNG_SCHEME  # float64 default: unchanged
    assert sdeeos.simulate(m, dtype="float32", **kw).attrs["rng_scheme"] == _rng.RNG_SCHEME_PHILOX_F32
    assert sdeeos.simulate(m, rng="philox", **kw).attrs["rng_scheme"] == _rng.RNG_SCHEME_PHILOX
    d = sdeeos.simulate(m, dtype="float32", rng="splitmix", **kw)
    assert d.attrs["rng_scheme"] == _rng.RNG_SCHEME_F32
    with pytest.raises(ParameterError, match="^rng must be one of \\['splitmix', 'philox'\\], got 'pcg'"):
        sdeeos.simulate(m, rng="pcg", **kw)
    with pytest.raises(ParameterError, match="rng 'philox' is not supported by model 'quadratic-regression'"):
        sdeeos.simulate(QuadraticRegression(n=8, P=4, eta=0.1), rng="philox", **kw)


def test_float32_and_float64_philox_runs_agree_statistically():
    """One word per float32 normal, two per float64 normal: the ensembles share some words (positively
    correlated), so the combined standard error of independent ensembles bounds the SE of the
    difference from above; the sharpness means agree within 4 of it."""
    m = SelfStabilization(eta=0.01, alpha=1.0, beta=100.0, sigma=10.0)
    kw = dict(n_traj=2000, n_steps=4000, seed=1, progress=False, rng="philox")
    d64, d32 = sdeeos.simulate(m, **kw), sdeeos.simulate(m, dtype="float32", **kw)
    diff = float(d32.sharpness_mean - d64.sharpness_mean)
    se = float(np.hypot(d32.sharpness_mean_stderr, d64.sharpness_mean_stderr))
    assert abs(diff) < 4 * se, (diff, se)
