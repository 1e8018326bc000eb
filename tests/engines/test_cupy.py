"""``backend="cupy"``: availability, argument checking, memory planning, host-side reductions and the
generated CUDA source (no GPU needed), then the GPU tests proper (``@pytest.mark.gpu``, skipped
without a usable CUDA GPU).

The kernel itself is also checked without a GPU in ``test_cuda_source_on_cpu.py`` (the same source
built by g++ against the Numba engine).  GPU tolerances, float64 with ``fmad=False``: every
operation is IEEE and in the Numba kernel's order, except CUDA's double ``log`` (<= 1 ulp) in the
AS241 tail branch; at (eta, alpha, beta, sigma) = (0.01, 1, 100, 10) such 1-ulp changes move
per-trajectory time means by <= ~2e-15 of the observable's rms (measured on the CPU with a
perturbed ``log``), so the GPU tests use 1e-12 of the rms; integer outputs (liveness, divergence
step) and the stream keys must be identical.
"""

from __future__ import annotations

import re
import sys
import types

import numpy as np
import pytest

import sdeeos
from sdeeos._errors import BackendUnavailableError, ParameterError
from sdeeos.engines import ENGINES, RunSpec, RunState, get_engine
from sdeeos._contract import ensemble_summary
from sdeeos.models._base import collect_symbolic
from sdeeos.engines._codegen import print_c
from sdeeos.engines._cuda_host import HostDevice
from sdeeos.engines._cuda_template import KERNEL_ARGS, KERNEL_NAME, KEYS_KERNEL_ARGS, KEYS_KERNEL_NAME, kernel_source, print_cuda
from sdeeos.engines._cupy import (
    CupyEngine,
    bytes_per_trajectory,
    check_launch_args,
    chunk_moments,
    cupy_available,
    merge_moments,
    plan_chunks,
    run_summary,
    summary_from_moments,
)

GPU_OK, GPU_REASON = cupy_available()
gpu = pytest.mark.gpu
needs_gpu = pytest.mark.skipif(not GPU_OK, reason=f"needs a CUDA GPU with CuPy ({GPU_REASON})")


def reduced(**kw):
    p = dict(eta=0.01, alpha=1.0, beta=100.0, sigma=10.0)
    p.update(kw)
    return sdeeos.SelfStabilization(**p)


# ------------------------------------------------------------------ availability: never a silent fallback
@pytest.fixture
def no_cupy(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # ``import cupy`` raises ImportError


@pytest.fixture
def cupy_without_gpu(monkeypatch):
    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(is_available=lambda: False)
    monkeypatch.setitem(sys.modules, "cupy", fake)


@pytest.mark.parametrize("situation", ["no_cupy", "cupy_without_gpu"])
def test_unavailable_backend_raises_with_suggestion(situation, request):
    request.getfixturevalue(situation)
    ok, reason = CupyEngine.available()
    assert not ok and 'backend="numba"' in reason
    assert ("not installed" in reason) if situation == "no_cupy" else ("no usable CUDA GPU" in reason)
    assert ENGINES["cupy"] is CupyEngine
    with pytest.raises(BackendUnavailableError, match=r"backend 'cupy' is not available.*backend=\"numba\""):
        get_engine("cupy")
    with pytest.raises(BackendUnavailableError, match="numba"):
        sdeeos.simulate(reduced(), n_traj=10, n_steps=10, backend="cupy")
    with pytest.raises(BackendUnavailableError):
        CupyEngine()
    with pytest.raises(BackendUnavailableError):
        run_summary(reduced(), n_traj=10, n_steps=10)


# ------------------------------------------------------------------ argument checking
@pytest.mark.parametrize("kw, match", [
    (dict(dtype="float16"), "dtype"),
    (dict(block=100), "block must be a multiple of 32"),
    (dict(block=2048), "block"),
    (dict(fmad="yes"), "fmad"),
    (dict(max_device_bytes=0), "max_device_bytes"),
])
def test_engine_options_checked(kw, match):
    with pytest.raises(ParameterError, match=match):
        CupyEngine(device=HostDevice(), **kw)


def test_advance_checks_t1():
    spec = RunSpec(model=reduced(), method="sgd", n_traj=4, n_steps=100, burn_in=0, seed=0, record_every=0)
    run = RunState.initial(spec)
    run.t = 50
    eng = CupyEngine(device=HostDevice())
    for t1 in (10, 101, 50.5):
        with pytest.raises(ParameterError, match="t1"):
            eng.advance(spec, run, t1)
    eng.advance(spec, run, 50)  # nothing to do: no compilation, no change
    assert run.t == 50


@pytest.mark.parametrize("kw, match", [
    (dict(n_traj=0, n_steps=10), "n_traj"),
    (dict(n_traj=10, n_steps=10, burn_in=10), "burn_in"),
    (dict(n_traj=10, n_steps=10, seed=-1), "seed"),
    (dict(n_traj=10, n_steps=10, steps_per_launch=0), "steps_per_launch"),
    (dict(n_traj=10, n_steps=10, dtype="half"), "dtype"),
])
def test_run_summary_arguments_checked(kw, match):
    with pytest.raises(ParameterError, match=match):
        run_summary(reduced(), "sgd", device=HostDevice(), **kw)


def test_run_summary_needs_a_symbolic_model():
    with pytest.raises(ParameterError, match="EnsembleModel"):
        run_summary(object(), n_traj=1, n_steps=1, device=HostDevice())
    with pytest.raises(ParameterError, match="sigma"):
        run_summary(reduced(sigma=0.0), "sgd", n_traj=1, n_steps=1, device=HostDevice())


def _args(ks, m, rec_rows=0, real=np.float64):
    ns, no = ks.n_state, ks.n_obs
    i, f = np.int64, np.float64
    return [np.zeros((ns, m), real), np.zeros(ks.n_params), np.zeros(m, np.uint64), np.zeros(m, np.uint64),
            i(0), i(1), i(1), i(0), i(64), f(1e100), np.zeros((no, m)), np.zeros((no, m)), np.zeros((no, m)),
            np.zeros((no, m)), np.ones(m, np.uint8), np.full(m, -1, np.int64), np.zeros((ns, m), real),
            np.zeros(max(rec_rows * (ns + no) * m, 1), real), i(0), i(0), i(m)]


def test_launch_arguments_checked():
    ks = kernel_source(reduced().step("sgd"))
    check_launch_args(ks, tuple(_args(ks, 10)), 10, 0)
    check_launch_args(kernel_source(reduced().step("sgd"), dtype="float32"),
                      tuple(_args(ks, 10, real=np.float32)), 10, 0)
    bad = _args(ks, 10)
    bad[0] = bad[0].astype(np.float32)
    with pytest.raises(TypeError, match="state"):
        check_launch_args(ks, tuple(bad), 10, 0)
    bad = _args(ks, 10)
    bad[10] = np.zeros((4, 9))
    with pytest.raises(ValueError, match="acc_sum"):
        check_launch_args(ks, tuple(bad), 10, 0)
    bad = _args(ks, 10)
    bad[4] = 0  # a Python int: its C type would be a guess
    with pytest.raises(TypeError, match="t0"):
        check_launch_args(ks, tuple(bad), 10, 0)
    with pytest.raises(TypeError, match="arguments"):
        check_launch_args(ks, tuple(_args(ks, 10)[:-1]), 10, 0)


# ------------------------------------------------------------------ memory planning (pure functions)
def test_device_memory_per_trajectory_does_not_depend_on_steps():
    ks = kernel_source(reduced().step("sgd"))
    b = bytes_per_trajectory(ks)
    assert b == 16 + 2 * 2 * 8 + 4 * 4 * 8 + 9  # keys, state + burn-in state, 4 sums of 4 obs, alive + step
    assert bytes_per_trajectory(ks, rec_rows=3) == b + 3 * 6 * 8  # only recorded rows of the segment add
    assert bytes_per_trajectory(kernel_source(reduced().step("sgd"), dtype="float32")) == b - 2 * 2 * 4
    eng = CupyEngine(device=HostDevice(free_bytes=10**9))
    for n_steps in (100, 10**6):
        spec = RunSpec(model=reduced(), method="sgd", n_traj=10**6, n_steps=n_steps, burn_in=0, seed=0, record_every=0)
        assert eng.plan(spec, 0, n_steps) == eng.plan(spec, 0, 100)


@pytest.mark.parametrize("n, per, budget", [(1, 100, 100), (10**6, 200, 10**9), (10**7, 201, 10**8),
                                            (12345, 97, 300_000), (5000, 220, 66_000), (3, 10, 25),
                                            (10**9 + 7, 217, 80 * 2**30), (7, 3, 20)])
def test_plan_chunks_cover_the_run_within_budget(n, per, budget):
    chunks = plan_chunks(n, per, budget)
    assert chunks[0][0] == 0 and chunks[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:]))
    assert all((hi - lo) * per <= budget and hi > lo for lo, hi in chunks)
    if len(chunks) > 1:
        sizes = [hi - lo for lo, hi in chunks]
        unit = 1024 if sizes[0] >= 1024 else 1
        assert max(sizes) - min(sizes) < 2 * unit  # near-equal chunks
        assert all(s % unit == 0 for s in sizes[:-1])  # whole thread blocks


def test_plan_chunks_refuses_what_cannot_fit():
    with pytest.raises(ParameterError, match="record_every"):
        plan_chunks(10, 1000, 999)


# ------------------------------------------------------------------ host-side reductions
@pytest.mark.parametrize("splits", [[500], [1, 0, 200, 299], [250, 250], [0, 500]])
def test_chunk_moments_merge_to_ensemble_summary(splits):
    rng = np.random.default_rng(0)
    n, n_avg = sum(splits), 37
    acc_sum = rng.normal(3.0, 2.0, (3, n)) * n_avg
    acc_sq = acc_sum**2 / n_avg + rng.random((3, n))
    alive = (rng.random(n) > 0.1).astype(np.uint8)
    acc_sum[:, alive == 0] = np.nan  # dead trajectories never leak into summaries
    bounds = np.cumsum([0] + splits)
    parts = [chunk_moments(np, acc_sum[:, a:b], acc_sq[:, a:b], alive[a:b], n_avg)
             for a, b in zip(bounds[:-1], bounds[1:])]
    s = summary_from_moments(merge_moments(parts), ["a", "b", "c"], n)
    live = alive.astype(bool)
    for k, name in enumerate("abc"):
        m, se = ensemble_summary(acc_sum[k] / n_avg, live)
        np.testing.assert_allclose(s[f"{name}_mean"], m, rtol=1e-13)
        np.testing.assert_allclose(s[f"{name}_mean_stderr"], se, rtol=1e-12)
        np.testing.assert_allclose(s[f"{name}_meansq"], ensemble_summary(acc_sq[k] / n_avg, live)[0], rtol=1e-13)
    assert s["n_alive"] == live.sum() and s["n_diverged"] == n - live.sum()


def test_summary_of_no_or_one_survivor():
    dead = chunk_moments(np, np.ones((1, 4)), np.ones((1, 4)), np.zeros(4, np.uint8), 1)
    s = summary_from_moments(merge_moments([dead]), ["a"], 4)
    assert s["n_alive"] == 0 and s["n_diverged"] == 4 and np.isnan(s["a_mean"]) and np.isnan(s["a_mean_stderr"])
    one = chunk_moments(np, np.full((1, 4), 2.0), np.ones((1, 4)), np.array([0, 1, 0, 0], np.uint8), 1)
    s = summary_from_moments(merge_moments([dead, one]), ["a"], 8)
    assert s["a_mean"] == 2.0 and np.isnan(s["a_mean_stderr"]) and s["n_alive"] == 1


# ------------------------------------------------------------------ generated source (no compiler needed)
def _signature(source, name):
    m = re.search(r'extern "C" __global__ void ' + name + r"\((.*?)\)\s*\{", source, re.S)
    return [p.split()[-1].removeprefix("sd_") for p in m.group(1).split(",")]


def test_kernel_signature_follows_the_argument_table():
    src = kernel_source(reduced().step("sgd")).source
    assert _signature(src, KERNEL_NAME) == [n for n, _ in KERNEL_ARGS]
    assert _signature(src, KEYS_KERNEL_NAME) == [n for n, _ in KEYS_KERNEL_ARGS]


def test_source_is_deterministic_and_self_contained():
    a = kernel_source(reduced().step("sgd"), model_name="M", method="sgd")
    b = kernel_source(reduced(eta=0.5).step("sgd"), model_name="M", method="sgd")
    assert a.source == b.source and a.digest == b.digest  # parameters are kernel arguments
    for bad in ("#include", "M_PI", "fmin(", "fmax(", "curand", "std::"):
        assert bad not in a.source
    from sdeeos import _rng
    for const in (_rng.GOLDEN, _rng._M1, _rng._M2, _rng._GM1, _rng._GM2):
        assert f"{int(const):#x}ULL" in a.source
    assert kernel_source(reduced().step("gd")).n_noise == 0 and "sdeeos_normal_f64(" not in \
        kernel_source(reduced().step("gd")).source.split("extern \"C\"")[2]


@pytest.mark.parametrize("method", ["sgd", "gd"])
def test_float64_update_printed_as_print_c(method):
    step = reduced().step(method)
    assert print_cuda(step, "float64") == print_c(step)  # no Min/Max or constants: exactly print_c


def test_float32_source_is_single_precision():
    ks = kernel_source(reduced().step("sgd"), dtype="float32")
    kernel = ks.source.split('extern "C" __global__ void sdeeos_advance')[1]
    assert "typedef float sdeeos_real;" in ks.source
    # every floating literal of the generated step is a float literal (1.0F), none is a double
    body_lines = [ln for ln in kernel.splitlines() if "const sdeeos_real" in ln]
    literals = re.findall(r"(?<![\w.])\d+\.\d*(?:[eE][-+]?\d+)?[fF]?", "\n".join(body_lines))
    assert literals and all(x.endswith(("F", "f")) for x in literals), literals
    # the splitmix float32 normal (its core is sdeeos_ndtri32_n2) calls single-precision logf/sqrtf
    rng_f32 = kernel_source(reduced().step("sgd"), dtype="float32", rng="splitmix").source
    rng_f32 = rng_f32.split("sdeeos_ndtri32_n2(long long n2)")[1].split("sdeeos_normal_f32")[0]
    assert "logf(" in rng_f32 and "sqrtf(" in rng_f32
    # the Philox float32 normal (the default) calls no libm log at all (sdeeos_neglog_int), and sqrtf
    philox = kernel_source(reduced().step("sgd"), dtype="float32", rng="philox").source
    philox = philox.split("float sdeeos_normal_philox_f32")[1]
    assert "sdeeos_neglog_int(" in philox and "sqrtf(" in philox and "log(" not in philox.replace("neglog_int(", "")


# ------------------------------------------------------------------ GPU (skipped without one)
def _runs(engine, spec, cuts):
    r = RunState.initial(spec)
    for t1 in cuts:
        engine.advance(spec, r, t1)
    return r


def _assert_close_runs(a, b, rtol_rms):
    """Integer outputs identical; float outputs within ``rtol_rms`` of each quantity's rms."""
    for name, x in a.arrays().items():
        y = getattr(b, name)
        if not isinstance(x, np.ndarray):
            assert x == y
        elif x.dtype.kind != "f":
            np.testing.assert_array_equal(x, y, err_msg=name)
        else:
            np.testing.assert_array_equal(np.isnan(x), np.isnan(y), err_msg=name)
            fin = np.isfinite(x)
            scale = np.sqrt(np.mean(x[fin] ** 2)) if fin.any() else 0.0
            np.testing.assert_allclose(x[fin], y[fin], rtol=0, atol=rtol_rms * scale + 1e-300, err_msg=name)


@gpu
@needs_gpu
@pytest.mark.parametrize("method", ["sgd", "gd", "pgd"])
def test_gpu_float64_matches_numba(method):
    spec = RunSpec(model=reduced(), method=method, n_traj=4096, n_steps=3000, burn_in=1000, seed=3, record_every=100)
    a = _runs(get_engine("numba"), spec, [3000])
    b = _runs(CupyEngine(), spec, [1000, 2000, 3000])
    _assert_close_runs(a, b, 1e-12)
    same = np.mean(np.all(a.state == b.state, axis=0))
    print(f"{method}: {same:.1%} of trajectories bit-identical to Numba")


@gpu
@needs_gpu
def test_gpu_divergence_matches_numba():
    m = reduced(eta=0.05, alpha=1.0, beta=100.0, sigma=3.0)
    spec = RunSpec(model=m, method="sgd", n_traj=2000, n_steps=2500, burn_in=100, seed=3, record_every=100)
    a = _runs(get_engine("numba"), spec, [2500])
    b = _runs(CupyEngine(), spec, [2500])
    # diverging trajectories amplify a 1-ulp log difference before they die: compare what is robust
    np.testing.assert_array_equal(a.keys, b.keys)
    agree = np.mean((a.alive == b.alive) & (a.diverged_step == b.diverged_step))
    assert agree > 0.99, agree


@gpu
@needs_gpu
def test_gpu_stream_keys_and_chunking_and_segmentation_exact():
    spec = RunSpec(model=reduced(), method="sgd", n_traj=20_000, n_steps=700, burn_in=100, seed=8, record_every=70)
    a = _runs(CupyEngine(), spec, [700])
    small = CupyEngine(max_device_bytes=5_000 * 300)
    assert len(small.plan(spec, 0, 700)) > 2
    b = _runs(small, spec, [64, 300, 700])
    for name, x in a.arrays().items():  # same device, same kernel: bit for bit
        if isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, getattr(b, name), err_msg=name)


@gpu
@needs_gpu
def test_gpu_run_summary_matches_simulate():
    m = reduced()
    kw = dict(n_traj=50_000, n_steps=2000, burn_in=500, seed=2)
    ds = sdeeos.simulate(m, "sgd", backend="numba", **kw)
    s = run_summary(m, "sgd", max_device_bytes=20_000 * 250, **kw)
    assert s["n_chunks"] >= 3
    for name in ("sharpness", "x_sq", "y_x", "y_x_sq"):
        np.testing.assert_allclose(s[f"{name}_mean"], float(ds[f"{name}_mean"]), rtol=1e-12,
                                   atol=1e-12 * float(ds[f"{name}_mean_stderr"]) * np.sqrt(kw["n_traj"]))
        np.testing.assert_allclose(s[f"{name}_mean_stderr"], float(ds[f"{name}_mean_stderr"]), rtol=1e-9)
    assert s["n_diverged"] == int(ds.n_diverged)


@gpu
@needs_gpu
def test_gpu_float32_error_against_float64():
    spec = RunSpec(model=reduced(), method="sgd", n_traj=20_000, n_steps=10_000, burn_in=5_000, seed=5, record_every=0)
    a = _runs(CupyEngine(), spec, [10_000])
    b = _runs(CupyEngine(dtype="float32"), spec, [10_000])
    n_avg = 5_000
    errs = [np.max(np.abs(a.acc_sum[k] - b.acc_sum[k]) / n_avg / np.sqrt(a.acc_sq[k] / n_avg)) for k in range(4)]
    _, _, s64 = collect_symbolic(spec, a)
    _, _, s32 = collect_symbolic(spec, b)
    ens = {n: abs(s32[f"{n}_mean"] - s64[f"{n}_mean"]) / s64[f"{n}_mean_stderr"] for n in ("sharpness", "x_sq", "y_x", "y_x_sq")}
    print(f"float32 vs float64: per-trajectory {max(errs):.2e} of rms; ensemble |diff|/stderr {ens}")
    assert max(errs) < 1e-4
    assert max(ens.values()) < 0.05


@gpu
@needs_gpu
def test_gpu_memory_does_not_grow_with_steps():
    import cupy

    pool = cupy.get_default_memory_pool()
    peaks = []
    for n_steps in (64, 6400):
        pool.free_all_blocks()
        run_summary(reduced(), "sgd", n_traj=100_000, n_steps=n_steps, seed=1)
        peaks.append(pool.total_bytes())  # blocks the pool kept = what the run allocated
    assert peaks[0] == peaks[1]
    assert peaks[0] < 100_000 * 400


@gpu
@needs_gpu
def test_gpu_simulate_backend_cupy(tmp_path):
    kw = dict(n_traj=3000, n_steps=1500, burn_in=300, seed=4, record_every=150)
    a = sdeeos.simulate(reduced(), "sgd", backend="numba", **kw)
    b = sdeeos.simulate(reduced(), "sgd", backend="cupy", checkpoint=tmp_path / "ck.npz", **kw)
    for name in a.data_vars:
        x, y = a[name].values, b[name].values
        if x.dtype.kind == "f":
            scale = np.sqrt(np.nanmean(x.astype(float) ** 2)) if np.isfinite(x).any() else 0.0
            np.testing.assert_allclose(y, x, rtol=0, atol=1e-12 * scale + 1e-300, err_msg=name)
        else:
            np.testing.assert_array_equal(x, y, err_msg=name)


@gpu
@needs_gpu
def test_gpu_fmad_close_to_round_off():
    spec = RunSpec(model=reduced(), method="sgd", n_traj=4096, n_steps=3000, burn_in=1000, seed=3, record_every=0)
    a = _runs(get_engine("numba"), spec, [3000])
    b = _runs(CupyEngine(fmad=True), spec, [3000])
    _assert_close_runs(a, b, 1e-11)
