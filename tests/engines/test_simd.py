"""`sdeeos.engines._simd`: the vector compaction of tail lanes finds exactly the lanes the scalar loop
finds; 512-bit vectors reach the kernel's LLVM function and no other; the Numba kernels give the same
bits with and without either."""

from __future__ import annotations

import re

import llvmlite.binding as llvm
import numpy as np
import pytest
from numba import config, njit, prange

import sdeeos
from sdeeos.engines import FOLD, RunSpec
from sdeeos.engines._codegen import print_python
from sdeeos.engines._numba import STEPS, compile_kernel, kernel_source
from sdeeos._errors import ParameterError
from sdeeos.engines import _simd
from sdeeos.engines._simd import (VECTOR_BITS_ENV, compress_beyond, compress_lanes, has_vector_compress,
                                  fma, has_wide_vectors, prefer_wide_vectors)

pytestmark = pytest.mark.skipif(llvm.llvm_version_info < (19,),
                                reason="llvm.experimental.vector.compress needs LLVM >= 19")


@njit
def _compact(values, centre, bound, idx, lanes):
    # the kernels' loop: whole vectors by compress_beyond, the remainder lane by lane
    n = 0
    j = 0
    while j + lanes <= values.size:
        n = compress_beyond(values, j, centre, bound, idx, n)
        j += lanes
    for j in range(j, values.size):
        idx[n] = j
        n += abs(values[j] - centre) > bound
    return n


@pytest.mark.parametrize("dtype, centre", [("float32", 0.0), ("float64", 0.5)])
@pytest.mark.parametrize("size", [0, 1, 7, 8, 15, 16, 17, 512, 517])
def test_compress_finds_the_same_lanes_as_numpy(dtype, centre, size):
    real = np.dtype(dtype).type
    g = np.random.default_rng(size)
    values = (g.uniform(-0.5, 0.5, size) + centre).astype(dtype)
    # values exactly at the bound, just beyond it, and NaN (never a tail lane, as in the scalar test)
    special = np.array([centre + 0.425, centre - 0.425, np.nextafter(real(centre + 0.425), real(1)),
                        np.nan], dtype=dtype)
    values[: min(size, 4)] = special[: min(size, 4)]
    idx = np.full(max(size, 1), -1, dtype=np.int32)
    n = _compact(values, real(centre), real(0.425), idx, compress_lanes(dtype))
    want = np.flatnonzero(np.abs(values - real(centre)) > real(0.425))
    np.testing.assert_array_equal(idx[:n], want)


def _run(spec, model, compress, wide, steps=STEPS):
    kernel, run = compile_kernel(spec, compress, wide, steps), model.new_run(spec)
    kernel(run.state, run.params, run.keys, run.gammas, 0, spec.n_steps, spec.n_steps, spec.burn_in, FOLD,
           model.divergence_bound, run.acc_sum, run.acc_sq, run.part_sum, run.part_sq, run.alive,
           run.diverged_step, run.burn_state, run.rec, 0)
    return kernel, run


@pytest.mark.parametrize("dtype, rng", [("float32", "philox"), ("float32", "splitmix"),
                                        ("float64", "philox"), ("float64", "splitmix")])
def test_kernel_bits_do_not_depend_on_the_compaction_or_the_vector_width(dtype, rng):
    # 1037 trajectories: two full blocks and one of 13 lanes (shorter than one vector)
    model = sdeeos.SelfStabilization(eta=0.01, alpha=1.0, beta=100.0, sigma=10.0)
    spec = RunSpec.checked(model, "sgd", n_traj=1037, n_steps=130, burn_in=7, seed=3, dtype=dtype, rng=rng)
    # the plain kernel (no compaction, 256-bit vectors, one step per pass: the same kernel as the baseline of
    # test_symbolic_engines' steps-per-pass test, compiled once) against compaction and 512-bit vectors (each
    # kernel takes seconds to compile; 512 bits alone changes no operation and has no kernel of its own)
    plain = _run(spec, model, False, False, 1)[1]
    run = _run(spec, model, True, True)[1]
    for name in ("state", "acc_sum", "acc_sq", "alive"):
        np.testing.assert_array_equal(getattr(plain, name), getattr(run, name), err_msg=name)


@njit(parallel=True, error_model="numpy")
def _scale_rows(x):
    for b in prange(x.shape[0]):
        prefer_wide_vectors()
        for j in range(x.shape[1]):
            x[b, j] = x[b, j] * 1.5 + 0.25


def test_wide_vectors_reach_the_prange_body_only():
    x = np.ones((2, 64))
    _scale_rows(x)
    np.testing.assert_array_equal(x, 1.75)
    ir_text = _scale_rows.inspect_llvm(_scale_rows.signatures[0])
    groups = dict(re.findall(r"^attributes (#\d+) = \{(.*)\}$", ir_text, flags=re.M))
    wide = []  # the functions whose own or grouped attributes ask for 512-bit vectors
    for line in ir_text.splitlines():
        if line.startswith("define"):
            attrs = line + " ".join(groups.get(g, "") for g in re.findall(r"#\d+", line))
            name = re.search(r"@([\w.$]+)\(", line).group(1)
            if '"prefer-vector-width"="512"' in attrs:
                wide.append(name)
    # the function Numba outlines the prange body into (where the loops are), not its wrappers
    assert len(wide) == 1 and "numba_parfor_gufunc" in wide[0] and not wide[0].startswith("__gufunc__"), wide
    if _simd._target_has_avx512():  # and LLVM uses 512-bit registers there
        assert "zmm" in _scale_rows.inspect_asm(_scale_rows.signatures[0])


def test_kernel_asks_for_wide_vectors_inside_its_prange_body():
    model = sdeeos.SelfStabilization(eta=0.01, alpha=1.0, beta=100.0, sigma=10.0)
    step = model.step("sgd")
    for wide in (False, True):
        source = kernel_source(step, print_python(step), "SelfStabilization", "sgd", wide=wide)
        body = source[source.index("for b in prange(n_blocks):"):]
        assert ("prefer_wide_vectors()" in body) == wide


def test_vector_width_setting(monkeypatch):
    monkeypatch.setattr(config, "CPU_NAME", None)
    monkeypatch.setattr(config, "CPU_FEATURES", "")
    host_has_it = bool(llvm.get_host_cpu_features().get("avx512f", False))
    monkeypatch.setenv(VECTOR_BITS_ENV, "256")
    assert not has_wide_vectors()
    monkeypatch.setenv(VECTOR_BITS_ENV, "512")
    assert has_wide_vectors() == host_has_it
    monkeypatch.setenv(VECTOR_BITS_ENV, "1024")
    with pytest.raises(ParameterError, match=f"^{VECTOR_BITS_ENV} must be 256 or 512"):
        has_wide_vectors()
    monkeypatch.delenv(VECTOR_BITS_ENV)
    monkeypatch.setattr(_simd.llvm, "get_host_cpu_name", lambda: "cascadelake")  # 512-bit work lowers its clock
    monkeypatch.setattr(_simd.llvm, "get_host_cpu_features", lambda: {"avx512f": True})
    assert not has_wide_vectors()
    monkeypatch.setattr(_simd.llvm, "get_host_cpu_name", lambda: "sapphirerapids")
    assert has_wide_vectors()
    monkeypatch.setattr(config, "CPU_NAME", "generic")  # NUMBA_CPU_NAME: another CPU than the host
    assert not has_wide_vectors()


def test_vector_compress_only_for_the_host_cpu_with_avx512(monkeypatch):
    host_has_it = bool(llvm.get_host_cpu_features().get("avx512f", False))
    monkeypatch.setattr(config, "CPU_NAME", None)  # no NUMBA_CPU_NAME / NUMBA_CPU_FEATURES: the host
    monkeypatch.setattr(config, "CPU_FEATURES", "")
    assert has_vector_compress() == host_has_it
    monkeypatch.setattr(config, "CPU_NAME", "generic")  # NUMBA_CPU_NAME=generic: portable code, no AVX-512
    assert not has_vector_compress()
    monkeypatch.setattr(config, "CPU_NAME", llvm.get_host_cpu_name())
    monkeypatch.setattr(config, "CPU_FEATURES", "+sse2,-avx512f")
    assert not has_vector_compress()
    monkeypatch.setattr(config, "CPU_FEATURES", "+sse2,+avx512f,-prefer-256-bit")  # the process-wide 512-bit setting
    assert has_vector_compress()


@njit
def _square_added(w, s):
    out = np.empty_like(s)
    for i in range(s.size):
        out[i] = fma(w[i], w[i], s[i])
    return out


@njit
def _fused(a, b, c):
    return fma(a, b, c)


def test_fma_of_a_widened_float32_square_is_the_plain_sum():
    # w * w is exact in float64 for every float32 w: one rounding either way, so the same bits
    g = np.random.default_rng(0)
    f32 = np.finfo(np.float32)
    w = np.concatenate([g.standard_normal(10_000) * 10.0 ** g.integers(-40, 38, 10_000),
                        [f32.max, -f32.max, f32.tiny, f32.smallest_subnormal, 0.0, -0.0, np.inf, -np.inf, np.nan]])
    w = w.astype(np.float32).astype(np.float64)
    s = np.concatenate([g.standard_normal(10_000) * 10.0 ** g.integers(-300, 300, 10_000),
                        [1e300, -1e300, 1e-300, 0.0, -0.0, 5.0, -np.inf, np.inf, 1.0]])
    with np.errstate(invalid="ignore", over="ignore"):
        np.testing.assert_array_equal(_square_added(w, s), s + w * w)


def test_fma_rounds_once():
    # (1 + 2^-30)(1 - 2^-30) - 1 = -2^-60 exactly; a separate multiply rounds the product to 1 first
    a, b = 1.0 + 2.0**-30, 1.0 - 2.0**-30
    assert _fused(a, b, -1.0) == -(2.0**-60)
    assert a * b - 1.0 == 0.0
