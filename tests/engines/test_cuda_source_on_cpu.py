"""The CUDA kernel source, compiled as plain C++ by g++ (no GPU), against the Numba engine.

`sdeeos.engines._cuda_host` builds the exact source NVRTC compiles on a GPU through a shim header
and runs the unmodified ``__global__`` function for every (block, thread).  `CupyEngine` and
`run_summary` run on top of it unchanged (residency, chunking, host sync, device-side reductions).

Tolerances:

* float64, no FMA contraction: **bit-identical** to the Numba engine (same operations in the same
  order, both call glibc's ``log``/``sqrt``; ``-ffp-contract=off``, no fast-math).
* ``log`` off by 1 ulp on half the arguments (stand-in for CUDA's double ``log``, max. 1 ulp):
  measured effect on per-trajectory time means, relative to the observable's rms along the path,
  after 10^4 steps: <= 2e-15 at (eta, alpha, beta, sigma) = (0.01, 1, 100, 10) (tests: < 1e-13),
  ~1e-12 at (0.01, 1, 1, 1); in the strongly unstable (0.1, 1, 10, 1) regime trajectories
  decorrelate (O(1) differences): there only ensemble statistics agree, within standard errors.
* float32 mode vs float64 at (0.01, 1, 100, 10), 10^4 steps: per-trajectory time means within
  ~1e-6 of the rms scale, ensemble means within 1e-3 standard errors (tests: 1e-5 and 0.01).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import sympy as sp

import sdeeos
from sdeeos import _rng
from sdeeos.engines import ENGINES, RunSpec, RunState, get_engine
from sdeeos.models._base import collect_symbolic
from sdeeos.engines._cuda_host import (HostDevice, build_host_library, cpu_has_fma, find_cxx, find_nvrtc,
                                      nvrtc_compile, nvrtc_libraries)
from sdeeos.engines._cuda_template import KEYS_KERNEL_NAME, kernel_source
from sdeeos.engines._cupy import CupyEngine, run_summary
from sdeeos.models import EnsembleModel, SymbolicStep

pytestmark = pytest.mark.skipif(find_cxx() is None, reason="needs a C++ compiler (g++) to build the CUDA source on the CPU")


def reduced(eta=0.01, alpha=1.0, beta=100.0, sigma=10.0, **kw):
    return sdeeos.SelfStabilization(eta=eta, alpha=alpha, beta=beta, sigma=sigma, **kw)


class Toy(EnsembleModel):
    """Exercises the printer: Min/Max, Abs, exp, pi, rationals, a negative power, two noises, a custom
    divergence bound, and symbol names that are no identifiers in C or Python, or are the Numba kernel's
    own (``w_{1}``, ``lambda``, ``double``, ``m``: `sdeeos.engines._codegen.code_names`).  |v| is a log-normal random walk, so some trajectories diverge and some
    do not.  After a divergence the state is NaN and Python's min/max semantics (the Numba kernel's)
    must be kept: ``min(v, zeta)`` stays NaN (C's ``fmin`` would give zeta), while ``min(zeta, NaN)``
    is zeta, so w becomes finite again."""

    name = "toy-cuda-source"
    methods = ("mix",)
    divergence_bound = 50.0

    def __init__(self, xi=0.3, zeta=2.0):
        self.xi, self.zeta = xi, zeta

    def parameters(self):
        return {"lambda": self.xi, "zeta": self.zeta}

    def initial_state(self):
        return {"w_{1}": 0.5, "v": -0.25}

    def step(self, method):
        w, v, xi, zeta, z1, z2 = sp.symbols("w_{1} v lambda zeta double m")
        update = (sp.Max(-zeta, sp.Min(zeta, w - xi * w / (1 + w**2) + sp.pi / 10 * z1)),
                  sp.Min(v, zeta) * sp.exp(xi * z2) - sp.Rational(1, 300) * xi * sp.Abs(w))
        return SymbolicStep(state=(w, v), params=(xi, zeta), noise=(z1, z2), update=update,
                            observables={"w_sq": w**2, "inv": 1 / (1 + w**2), "wv": w * v})


def run(engine, spec, cuts):
    r = RunState.initial(spec)
    for t1 in cuts:
        engine.advance(spec, r, t1)
    return r


def assert_runs_identical(a, b):
    for name, x in a.arrays().items():
        y = getattr(b, name)
        if isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y, err_msg=name)  # NaN == NaN here
        else:
            assert x == y, name


def host_engine(**kw):
    return CupyEngine(device=HostDevice(), **kw)


# ------------------------------------------------------------------ bit-identity with Numba
@pytest.mark.parametrize("method", ["sgd", "gd", "pgd"])
def test_reduced_model_bit_identical_to_numba(method):
    m = reduced(x0=0.05, y0=-3.0)
    spec = RunSpec(model=m, method=method, n_traj=300, n_steps=1500, burn_in=500, seed=3, record_every=37)
    a = run(get_engine("numba"), spec, [1500])
    b = run(host_engine(), spec, [50, 64, 500, 777, 1500])  # segments on and off fold boundaries
    assert_runs_identical(a, b)


def test_divergence_bit_identical_to_numba():
    m = reduced(eta=0.05, alpha=1.0, beta=100.0, sigma=3.0)  # eta^2 beta sigma^2 > 2 alpha: no stationary state
    spec = RunSpec(model=m, method="sgd", n_traj=400, n_steps=2500, burn_in=100, seed=3, record_every=100)
    a = run(get_engine("numba"), spec, [2500])
    assert 0 < (a.alive == 0).sum() < spec.n_traj  # both outcomes present
    b = run(host_engine(), spec, [1000, 2500])
    assert_runs_identical(a, b)


def test_printer_features_bit_identical_to_numba():
    spec = RunSpec(model=Toy(), method="mix", n_traj=300, n_steps=600, burn_in=100, seed=5, record_every=10)
    a = run(get_engine("numba"), spec, [600])
    dead = a.alive == 0
    assert 0 < dead.sum() < spec.n_traj
    gone = dead & (a.diverged_step <= 580)  # dead before the last record (t = 590)
    # v stays NaN through min(v, zeta); w comes back through min(zeta, NaN) = zeta (Python semantics)
    assert gone.any() and np.isnan(a.rec[-1, 1, gone]).all() and np.isfinite(a.rec[-1, 0, gone]).all()
    b = run(host_engine(), spec, [300, 600])
    assert_runs_identical(a, b)


@pytest.mark.parametrize("rng", ["splitmix", "philox"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_generated_source_compiles_without_warnings(dtype, rng):
    for model, method in [(reduced(), "sgd"), (reduced(), "pgd"), (Toy(), "mix"), (Noise(), "draw")]:
        lib = build_host_library(kernel_source(model.step(method), dtype=dtype, rng=rng))
        assert lib.sdeeos_warnings == "", lib.sdeeos_warnings  # g++ -Wall


@pytest.mark.skipif(find_nvrtc() is None, reason="needs an NVRTC library (the test extra: nvidia-cuda-nvrtc-cu12, "
                                                  "nvidia-cuda-nvrtc)")
@pytest.mark.parametrize("library", nvrtc_libraries() or [None], ids=lambda p: "none" if p is None else p.rsplit("/", 1)[-1])
def test_source_compiles_with_nvrtc_as_cupy_would(library):
    """NVRTC runs on the CPU: the options `CupyDevice` passes, plus the ``-ftz=true`` CuPy appends,
    for an H100 (sm_90)."""
    from sdeeos.engines._cupy import _NVRTC_OPTIONS

    for model, method in [(reduced(), "sgd"), (reduced(), "pgd"), (Toy(), "mix")]:
        for dtype, rng in (("float64", "splitmix"), ("float32", "splitmix"), ("float64", "philox"), ("float32", "philox")):
            ks = kernel_source(model.step(method), dtype=dtype, rng=rng)
            ptx = {}
            for fmad in ("false", "true"):
                ok, log, out = nvrtc_compile(ks.source, [*_NVRTC_OPTIONS, f"--fmad={fmad}", "-arch=compute_90", "-ftz=true"],
                                             library=library)
                assert ok, log
                ptx[fmad] = out.decode()
            kind = "f64" if dtype == "float64" else "f32"
            mul_rn, fma = (re.compile(rf"\b{op}\.rn(?:\.ftz)?\.{kind}\b") for op in ("mul", "fma"))
            # --fmad=false: NVRTC emits explicitly rounded mul/add (never contracted into fma);
            # --fmad=true: it contracts, so there are more fma and no .rn on mul/add
            assert mul_rn.search(ptx["false"]) and not mul_rn.search(ptx["true"])
            if ks.n_noise:  # the AS241 polynomials at least
                assert len(fma.findall(ptx["true"])) > len(fma.findall(ptx["false"]))


def test_stream_keys_kernel_matches_host():
    dev = HostDevice()
    ks = kernel_source(reduced().step("sgd"))
    fn = dev.functions(ks, fmad=False)[KEYS_KERNEL_NAME]
    for seed, first, m in [(0, 0, 300), (2**64 - 1, 10**12, 129), (12345, 7, 1)]:
        keys, gammas = np.empty(m, np.uint64), np.empty(m, np.uint64)
        fn(((m + 127) // 128,), (128,), (np.uint64(seed), np.uint64(first), keys, gammas, np.int64(m)))
        ref_k, ref_g = _rng.stream_keys(seed, m, first=first)
        np.testing.assert_array_equal(keys, ref_k)
        np.testing.assert_array_equal(gammas, ref_g)


class Noise(EnsembleModel):
    """x_{t+1} = z_t: the recorded path is the normal stream itself."""

    name = "noise-probe"
    methods = ("draw",)

    def parameters(self):
        return {}

    def initial_state(self):
        return {"x": 0.0}

    def step(self, method):
        x, z = sp.symbols("x z")
        return SymbolicStep(state=(x,), params=(), noise=(z,), update=(z,), observables={})


def test_normals_of_kernel_rng():
    n_traj, n_steps = 64, 400
    spec = RunSpec(model=Noise(), method="draw", n_traj=n_traj, n_steps=n_steps, burn_in=0, seed=99, record_every=1)
    r64 = run(host_engine(), spec, [n_steps])
    r32 = run(host_engine(dtype="float32"), spec, [n_steps])
    keys, gammas = _rng.stream_keys(99, n_traj)
    ref = np.stack([_rng.normals(keys, gammas, t) for t in range(n_steps - 1)])
    z64, z32 = r64.rec[1:, 0, :], r32.rec[1:, 0, :]
    # float64: NumPy's own log may differ from glibc's by 1 ulp in the tail: allow 4 ulp.
    np.testing.assert_allclose(z64, ref, rtol=4 * np.finfo(float).eps, atol=0)
    tail = np.abs(_rng.uniforms(keys, gammas, 0) - 0.5) > 0.425
    assert tail.any() and (~tail).any()
    # float32 normals: the same draws to single precision (a few float ulps, AS241 in float).
    np.testing.assert_allclose(z32, ref, rtol=8 * np.finfo(np.float32).eps, atol=1e-30)
    assert np.abs(ref).max() > 3.0


# ------------------------------------------------------------------ engine machinery on the CPU build
def test_chunking_and_residency_do_not_change_results():
    m = reduced()
    spec = RunSpec(model=m, method="sgd", n_traj=3000, n_steps=400, burn_in=100, seed=11, record_every=50)
    a = run(get_engine("numba"), spec, [400])
    small = host_engine(max_device_bytes=300 * 220)  # forces ~10 chunks
    assert len(small.plan(spec, 0, 400)) > 3
    assert_runs_identical(a, run(small, spec, [130, 400]))
    # resident run, then a checkpoint-style reload (arrays replaced): the stale device copy is not used
    eng = host_engine()
    r = run(eng, spec, [64])
    saved = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in r.arrays().items()}
    eng.advance(spec, r, 400)
    fresh = RunState.initial(spec)
    for k, v in saved.items():
        setattr(fresh, k, v)
    eng.advance(spec, fresh, 400)
    assert_runs_identical(a, fresh)
    assert_runs_identical(a, r)


class CountingDevice(HostDevice):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.up = self.down = 0

    def to_device(self, host, dtype):
        self.up += 1
        return super().to_device(host, dtype)

    def to_host(self, dev, out):
        self.down += 1
        super().to_host(dev, out)


def test_resident_run_copies_only_what_changed():
    spec = RunSpec(model=reduced(), method="sgd", n_traj=100, n_steps=640, burn_in=0, seed=1, record_every=0)
    dev = CountingDevice()
    eng = CupyEngine(device=dev)
    r = RunState.initial(spec)
    eng.advance(spec, r, 64)
    first_up = dev.up
    assert first_up == 11  # every array once
    dev.up = dev.down = 0
    eng.advance(spec, r, 128)  # ends on a fold, no deaths, no burn-in, no records
    assert dev.up == 0
    assert dev.down == 4  # state, acc_sum, acc_sq, alive


def test_simulate_with_cpu_build_as_cupy_backend(monkeypatch, tmp_path):
    class HostCupy(CupyEngine):
        def __init__(self):
            super().__init__(device=HostDevice())

        @classmethod
        def available(cls):
            return True, ""

    monkeypatch.setitem(ENGINES, "cupy", HostCupy)
    kw = dict(n_traj=200, n_steps=700, burn_in=200, seed=4, record_every=100)
    a = sdeeos.simulate(reduced(), "sgd", backend="numba", **kw)
    b = sdeeos.simulate(reduced(), "sgd", backend="cupy", checkpoint=tmp_path / "ck.npz", **kw)
    assert b.attrs["backend"] == "cupy"
    for name in a.data_vars:
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)


def test_run_summary_matches_collect():
    m = reduced()
    spec = RunSpec(model=m, method="sgd", n_traj=2000, n_steps=500, burn_in=100, seed=11, record_every=0)
    _, _, ref = collect_symbolic(spec, run(get_engine("numba"), spec, [500]))
    s = run_summary(m, "sgd", n_traj=2000, n_steps=500, burn_in=100, seed=11, device=HostDevice(),
                    max_device_bytes=700 * 250, steps_per_launch=77)
    assert s["n_chunks"] > 1
    for k, v in ref.items():  # summation order only: a few ulp
        np.testing.assert_allclose(s[k], v, rtol=1e-14, atol=0, err_msg=k)
    assert "sharpness_gap" in s and "sharpness_gap_predicted_exact" in s


# ------------------------------------------------------------------ measured error budgets
def _traj_err(a, b, n_avg):
    """Per-trajectory |time-mean difference| relative to each observable's rms along the path."""
    out = []
    for k in range(a.acc_sum.shape[0]):
        scale = np.sqrt(a.acc_sq[k] / n_avg)
        out.append(np.max(np.abs(a.acc_sum[k] - b.acc_sum[k]) / n_avg / scale))
    return max(out)


def test_one_ulp_log_differences_stay_at_round_off_in_the_stable_regime():
    spec = RunSpec(model=reduced(), method="sgd", n_traj=100, n_steps=10_000, burn_in=5_000, seed=5, record_every=0)
    a = run(get_engine("numba"), spec, [10_000])
    b = run(CupyEngine(device=HostDevice(perturb_log=True)), spec, [10_000])
    assert not np.array_equal(a.state, b.state)  # the perturbation did change draws
    assert _traj_err(a, b, 5_000) < 1e-13
    if cpu_has_fma():
        c = run(host_engine(fmad=True), spec, [10_000])  # FMA contraction (indicative of --fmad=true)
        assert _traj_err(a, c, 5_000) < 1e-13


def test_float32_error_against_float64():
    spec = RunSpec(model=reduced(), method="sgd", n_traj=200, n_steps=10_000, burn_in=5_000, seed=5, record_every=0)
    a = run(get_engine("numba"), spec, [10_000])
    b = run(host_engine(dtype="float32"), spec, [10_000])
    assert _traj_err(a, b, 5_000) < 1e-5
    _, _, s64 = collect_symbolic(spec, a)
    _, _, s32 = collect_symbolic(spec, b)
    for name in ("sharpness", "x_sq", "y_x", "y_x_sq"):
        assert abs(s32[f"{name}_mean"] - s64[f"{name}_mean"]) < 0.01 * s64[f"{name}_mean_stderr"], name


class FloatConst(EnsembleModel):
    name = "float-constant"
    methods = ("step",)

    def parameters(self):
        return {}

    def initial_state(self):
        return {"x": 1.0}

    def step(self, method):
        x, z = sp.symbols("x z")
        return SymbolicStep(state=(x,), params=(), noise=(z,), update=(sp.Float(1 / 3) * x + z,), observables={})


def test_float_literals_printed_exactly_for_numba():
    from sdeeos.engines._codegen import print_python
    from sdeeos.engines._cuda_template import print_cuda

    step = FloatConst().step("step")
    assert "0.33333333333333331*x" in print_cuda(step).update[0]  # C: 17 digits, exact
    assert "0.3333333333333333*x" in print_python(step).update[0]  # Numba: repr(1/3) would be exact
