"""`sdeeos.engines._simd`: the vector compaction of tail lanes finds exactly the lanes the scalar loop
finds, and the Numba kernels give the same bits with and without it."""

from __future__ import annotations

import llvmlite.binding as llvm
import numpy as np
import pytest
from numba import config, njit

import sdeeos
from sdeeos.engines import FOLD, RunSpec
from sdeeos.engines._numba import compile_kernel
from sdeeos.engines._simd import compress_beyond, compress_lanes, has_vector_compress

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


@pytest.mark.parametrize("dtype, rng", [("float32", "philox"), ("float32", "splitmix"),
                                        ("float64", "philox"), ("float64", "splitmix")])
def test_kernel_bits_do_not_depend_on_the_compaction(dtype, rng):
    # 1037 trajectories: two full blocks and one of 13 lanes (shorter than one vector)
    model = sdeeos.SelfStabilization(eta=0.01, alpha=1.0, beta=100.0, sigma=10.0)
    spec = RunSpec.checked(model, "sgd", n_traj=1037, n_steps=130, burn_in=7, seed=3, dtype=dtype, rng=rng)
    runs = []
    for compress in (False, True):
        kernel, run = compile_kernel(spec, compress), model.new_run(spec)
        kernel(run.state, run.params, run.keys, run.gammas, 0, spec.n_steps, spec.n_steps, spec.burn_in, FOLD,
               model.divergence_bound, run.acc_sum, run.acc_sq, run.part_sum, run.part_sq, run.alive,
               run.diverged_step, run.burn_state, run.rec, 0)
        runs.append(run)
    for name in ("state", "acc_sum", "acc_sq", "alive"):
        np.testing.assert_array_equal(getattr(runs[0], name), getattr(runs[1], name), err_msg=name)


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
    monkeypatch.setattr(config, "CPU_FEATURES", "+sse2,+avx512f,-prefer-256-bit")  # the 512-bit opt-in
    assert has_vector_compress()
