"""Sharded ensembles (`simulate(..., scheduler=..., n_shards=...)`) against single-process runs.

Exactness: every draw is keyed by (seed, trajectory index) and trajectories do not interact, so
the concatenated per-trajectory arrays of the shards must equal a single-process run *bit for bit*
and the summaries (computed once from them) exactly; the tests compare with ``==``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import sdeeos
import sdeeos._errors
import sdeeos._resources
import sdeeos._sharded
from sdeeos import _rng, _simulate
from sdeeos._errors import ParameterError
from sdeeos._sharded import SchedulerUnreachableError, ShardFailedError, merge_shards, run_shard, shard_bounds
from sdeeos.engines import RunSpec
from sdeeos.models import QuadraticRegression, SelfStabilization

distributed = pytest.importorskip("distributed")

ROOT = Path(__file__).resolve().parents[1]
REDUCED = SelfStabilization(eta=0.01, alpha=1.0, beta=100.0, sigma=10.0)


def assert_same_dataset(a, b):
    assert set(a.data_vars) == set(b.data_vars)
    for name in a.data_vars:
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)  # NaN == NaN here
    for key in ("n_traj", "seed", "rng_scheme", "dtype", "n_diverged"):
        assert a.attrs[key] == b.attrs[key], key


def test_a_shard_draws_exactly_the_streams_of_its_trajectories():
    spec = RunSpec.checked(REDUCED, "sgd", n_traj=1000, n_steps=10)
    keys, gammas = _rng.stream_keys(spec.seed, 1000)
    for a, b in shard_bounds(1000, 7):
        run = REDUCED.new_run(spec.shard(a, b))
        np.testing.assert_array_equal(run.keys, keys[a:b])
        np.testing.assert_array_equal(run.gammas, gammas[a:b])
    assert shard_bounds(10, 3) == [(0, 3), (3, 6), (6, 10)]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_merged_shards_equal_the_single_run_in_process(dtype):
    spec = RunSpec.checked(REDUCED, "sgd", n_traj=700, n_steps=300, burn_in=100, seed=4, record_every=50, dtype=dtype)
    whole = run_shard(spec, "numba")
    merged = merge_shards(spec, [run_shard(spec.shard(a, b), "numba") for a, b in shard_bounds(700, 3)])
    for name, value in whole.items():
        np.testing.assert_array_equal(value, getattr(merged, name), err_msg=name)


def test_quadratic_regression_shards_merge_exactly():
    qr = QuadraticRegression(n=8, P=4, eta=0.1, batch_size=2)
    spec = RunSpec.checked(qr, "sgd", n_traj=50, n_steps=40, seed=2, record_every=10)
    whole = run_shard(spec, "numba")
    merged = merge_shards(spec, [run_shard(spec.shard(a, b), "numba") for a, b in shard_bounds(50, 4)])
    for name, value in whole.items():
        np.testing.assert_array_equal(value, getattr(merged, name), err_msg=name)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_quadratic_regression_shards_of_one_trajectory_merge_exactly(backend):
    # BLAS and einsum sum a single row (GEMV) in another order than a block: the engines pad their
    # blocks so that a trajectory's numbers do not depend on how many share its shard
    qr = QuadraticRegression(n=32, P=16, eta=0.05, batch_size=4)
    spec = RunSpec.checked(qr, "sgd", n_traj=5, n_steps=60, burn_in=20, seed=0, record_every=20)
    whole = run_shard(spec, backend)
    merged = merge_shards(spec, [run_shard(spec.shard(a, a + 1), backend) for a in range(5)])
    for name, value in whole.items():
        np.testing.assert_array_equal(value, getattr(merged, name), err_msg=name)


def test_bad_shard_counts_are_refused():
    with pytest.raises(ParameterError, match="^n_shards must be"):
        sdeeos.simulate(REDUCED, n_traj=10, n_steps=10, n_shards=0)
    with pytest.raises(ParameterError, match="^n_shards must be"):
        sdeeos.simulate(REDUCED, n_traj=10, n_steps=10, n_shards=11)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_scheduler_fails_within_seconds():
    start = time.perf_counter()
    with pytest.raises(SchedulerUnreachableError, match="could not reach the Dask scheduler"):
        sdeeos.simulate(REDUCED, n_traj=10, n_steps=10, scheduler=f"tcp://127.0.0.1:{_free_port()}")
    assert time.perf_counter() - start < 30  # the connect timeout is 5 s


class _FailingEngine:
    def __init__(self, engine, fail_first):
        self.engine, self.fail_first, self.dtypes = engine, fail_first, engine.dtypes

    def advance(self, spec, run, t1, n_threads=None):
        if spec.first_traj == self.fail_first:
            raise FloatingPointError("injected failure")
        self.engine.advance(spec, run, t1, n_threads=n_threads)


class FailingShard(SelfStabilization):
    """The reduced model, except that the shard starting at trajectory ``fail_first`` raises."""

    fail_first: int | None = None

    def engine(self, backend):
        engine = super().engine(backend)
        return engine if self.fail_first is None else _FailingEngine(engine, self.fail_first)


def test_failing_shard_fails_the_run_and_finished_shards_resume(tmp_path):
    model = FailingShard(eta=0.01, alpha=1.0, beta=100.0, sigma=10.0)
    kw = dict(n_traj=400, n_steps=200, seed=9)
    reference = sdeeos.simulate(model, **kw)
    ckpt = tmp_path / "run.ckpt"
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as client:
        model.fail_first = 200  # shard 2 of [0,100) [100,200) [200,300) [300,400)
        with pytest.raises(ShardFailedError, match=r"shard 2 \(trajectories \[200, 300\)\).*injected failure"):
            sdeeos.simulate(model, **kw, scheduler=client, n_shards=4, checkpoint=ckpt)
        saved = sorted(p.name for p in (tmp_path / "run.ckpt.shards").iterdir())
        assert "shard-200-300.npz" not in saved and len(saved) >= 1
        model.fail_first = None
        ds = sdeeos.simulate(model, **kw, scheduler=client, n_shards=4, checkpoint=ckpt)
    assert ds.attrs["shards_resumed"] == len(saved)
    assert not (tmp_path / "run.ckpt.shards").exists()
    assert_same_dataset(ds, reference)


@pytest.fixture(scope="module")
def dask_cluster():
    """A real ``dask scheduler`` and two ``dask worker`` processes on localhost (torn down afterwards)."""
    dask_cli = Path(sys.executable).with_name("dask")
    if not dask_cli.exists():
        pytest.skip("the dask command-line tool is not installed next to this Python")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    procs = []
    try:
        procs.append(subprocess.Popen([str(dask_cli), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                       "--no-dashboard"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for _ in range(2):
            procs.append(subprocess.Popen([str(dask_cli), "worker", address, "--nthreads", "1", "--no-dashboard",
                                           "--death-timeout", "60"], env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 120
        while True:
            try:
                with distributed.Client(address, timeout=5) as client:
                    client.wait_for_workers(2, timeout=max(1.0, deadline - time.monotonic()))
                break
            except (OSError, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        yield address
    finally:
        for p in procs[::-1]:
            p.terminate()
        for p in procs[::-1]:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_real_scheduler_and_two_workers_equal_a_single_process(dask_cluster, dtype):
    kw = dict(n_traj=1500, n_steps=600, burn_in=200, seed=12, record_every=100, dtype=dtype)
    single = sdeeos.simulate(REDUCED, **kw)
    sharded = sdeeos.simulate(REDUCED, **kw, scheduler=dask_cluster, n_shards=5)
    assert sharded.attrs["n_shards"] == 5 and "tcp://127.0.0.1" in sharded.attrs["shard_scheduler"]
    assert_same_dataset(sharded, single)
    default = sdeeos.simulate(REDUCED, **kw, scheduler=dask_cluster)  # one shard per worker
    assert default.attrs["n_shards"] == 2
    assert_same_dataset(default, single)


def test_real_scheduler_quadratic_regression(dask_cluster):
    qr = QuadraticRegression(n=8, P=4, eta=0.1, batch_size=2)
    kw = dict(n_traj=60, n_steps=50, seed=3, record_every=10)
    assert_same_dataset(sdeeos.simulate(qr, "sgd", **kw, scheduler=dask_cluster, n_shards=3),
                        sdeeos.simulate(qr, "sgd", **kw))


# ------------------------------------------------------------------ summary mode (per_trajectory=False)
def _scalars(ds) -> dict:
    return {k: ds[k].item() for k in ds.data_vars if ds[k].ndim == 0}


def assert_same_summaries(summaries, reference):
    """Every scalar of the per-trajectory reference run, bit for bit (exact sums on both sides)."""
    ref = _scalars(reference)
    got = _scalars(summaries)
    assert set(got) == set(ref)
    for name, value in ref.items():
        assert got[name] == value or (np.isnan(got[name]) and np.isnan(value)), (name, got[name], value)
    assert summaries.attrs["n_diverged"] == reference.attrs["n_diverged"]
    assert not any("traj" in summaries[k].dims for k in summaries.data_vars)


@pytest.mark.parametrize("model,method,kw", [
    (REDUCED, "sgd", dict(n_traj=2000, n_steps=300, seed=4)),
    # most trajectories diverge: they are counted, and the survivors' summaries stay finite
    (SelfStabilization(eta=0.01, alpha=1.0, beta=100.0, sigma=40.0), "sgd", dict(n_traj=600, n_steps=2000, seed=5)),
    (sdeeos.models.Minimalist(eta=0.3, x0=2.0, y0=0.5, x0_spread=0.5, y0_spread=0.15), "gd",
     dict(n_traj=300, n_steps=500, seed=2)),
    (QuadraticRegression(n=8, P=4, eta=0.1, batch_size=2), "sgd", dict(n_traj=60, n_steps=50, seed=3, record_every=10)),
], ids=["reduced", "diverging", "minimalist", "quadratic-regression"])
def test_summary_mode_equals_the_single_run_bit_for_bit(model, method, kw):
    reference = sdeeos.simulate(model, method, **kw, progress=False)
    for n_shards, chunk in [(3, None), (4, 7)]:
        monkey = pytest.MonkeyPatch()
        if chunk is not None:  # tiny chunks: many merges inside every shard
            monkey.setattr(sdeeos._sharded, "summary_chunk_traj", lambda spec, budget=None: chunk)
        try:
            summaries = sdeeos.simulate(model, method, **kw, n_shards=n_shards, per_trajectory=False, progress=False)
        finally:
            monkey.undo()
        assert_same_summaries(summaries, reference)
    unsharded = sdeeos.simulate(model, method, **kw, per_trajectory=False, progress=False)
    assert_same_summaries(unsharded, reference)
    if reference.attrs["n_diverged"]:
        assert 0 < reference.attrs["n_diverged"] < kw["n_traj"] and np.isfinite(reference["sharpness_mean"].item())


def test_summary_mode_on_a_cluster_resumes_its_shards(tmp_path):
    model = FailingShard(eta=0.01, alpha=1.0, beta=100.0, sigma=10.0)
    kw = dict(n_traj=400, n_steps=200, seed=9, per_trajectory=False)
    reference = sdeeos.simulate(model, n_traj=400, n_steps=200, seed=9)
    ckpt = tmp_path / "run.ckpt"
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0") as client:
        model.fail_first = 200
        with pytest.raises(ShardFailedError, match=r"shard 2 \(trajectories \[200, 300\)\).*kept in"):
            sdeeos.simulate(model, **kw, scheduler=client, n_shards=4, checkpoint=ckpt)
        saved = sorted(p.name for p in (tmp_path / "run.ckpt.shards").iterdir())
        assert "summary-200-300.npz" not in saved and len(saved) >= 1
        model.fail_first = None
        ds = sdeeos.simulate(model, **kw, scheduler=client, n_shards=4, checkpoint=ckpt)
    assert ds.attrs["shards_resumed"] == len(saved)
    assert not (tmp_path / "run.ckpt.shards").exists()
    assert_same_summaries(ds, reference)


def test_the_readme_example_of_1e8_trajectories_is_accepted_in_summary_mode(monkeypatch):
    """``simulate(model, n_traj=10**8, n_steps=10**4, n_shards=8)``: the per-trajectory arrays
    (~35 GiB) do not fit a 24 GiB machine, so the sharded default is summary mode, whose memory is
    one chunk of trajectories whatever n_traj.  Checked without running 10^8 trajectories."""
    monkeypatch.setattr(sdeeos._resources, "available_memory_bytes", lambda: 24 * 2**30)
    spec = RunSpec.checked(REDUCED, None, n_traj=10**8, n_steps=10**4)
    assert sdeeos._resources.run_memory_bytes(spec) > 24 * 2**30
    assert _simulate._check_per_trajectory(spec, None, sharded=True) is False
    with pytest.raises(sdeeos._errors.ResourceError, match=r"per_trajectory=False \(summaries only"):
        _simulate._check_per_trajectory(spec, None, sharded=False)
    with pytest.raises(sdeeos._errors.ResourceError, match=r"per_trajectory=False"):
        _simulate._check_per_trajectory(spec, True, sharded=True)
    # a chunk's memory does not depend on n_traj
    chunks = {n: sdeeos._sharded.summary_chunk_traj(RunSpec.checked(REDUCED, None, n_traj=n, n_steps=10**4).shard(0, n // 8))
              for n in (10**8, 10**10)}
    assert chunks[10**8] == chunks[10**10]
    one = sdeeos._resources.run_memory_bytes(spec.shard(0, chunks[10**8]))
    assert one <= sdeeos._sharded.SUMMARY_CHUNK_BYTES


def test_summary_mode_memory_does_not_grow_with_n_traj(monkeypatch):
    """Peak traced allocations of a summary-mode run with 4x more trajectories: the same up to one
    chunk (here 64 KiB, a few hundred trajectories); a per-trajectory run grows 4x."""
    import tracemalloc

    budget = 64 * 1024
    monkeypatch.setattr(sdeeos._sharded, "SUMMARY_CHUNK_BYTES", budget)
    kw = dict(n_steps=64, seed=1, progress=False)

    def peak(n_traj, per_trajectory):
        sdeeos.simulate(REDUCED, n_traj=500, n_shards=2, per_trajectory=per_trajectory, **kw)  # warm
        tracemalloc.start()
        try:
            sdeeos.simulate(REDUCED, n_traj=n_traj, n_shards=2, per_trajectory=per_trajectory, **kw)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, big = peak(20_000, False), peak(80_000, False)
    assert abs(big - small) < budget, (small, big)
    per_traj_small, per_traj_big = peak(20_000, True), peak(80_000, True)
    assert per_traj_big - per_traj_small > 60_000 * 100  # >= 100 bytes per trajectory kept on the client


def test_a_sharded_run_too_large_for_memory_switches_to_summaries(monkeypatch):
    kw = dict(n_traj=4000, n_steps=256, seed=6, progress=False)
    reference = sdeeos.simulate(REDUCED, **kw)
    need = sdeeos._resources.run_memory_bytes(RunSpec.checked(REDUCED, None, n_traj=4000, n_steps=256))
    monkeypatch.setattr(sdeeos._resources, "available_memory_bytes", lambda: need // 4)
    monkeypatch.setattr(sdeeos._sharded, "SUMMARY_CHUNK_BYTES", need // 16)
    ds = sdeeos.simulate(REDUCED, **kw, n_shards=2)
    assert "would not fit" in ds.attrs["per_trajectory"]
    assert_same_summaries(ds, reference)
    with pytest.raises(sdeeos._errors.ResourceError, match="per_trajectory=False"):
        sdeeos.simulate(REDUCED, **kw)  # unsharded: refused before any work, naming the mode that fits


@pytest.mark.parametrize("kw,match", [
    (dict(per_trajectory="no"), "per_trajectory must be True, False or None"),
    (dict(n_shards=2, no_workers_timeout=0), "no_workers_timeout must be a number of seconds > 0"),
    (dict(n_shards=2, no_workers_timeout=True), "no_workers_timeout must be a number of seconds > 0"),
])
def test_bad_summary_mode_settings_are_one_line(kw, match):
    with pytest.raises(ParameterError, match=match):
        sdeeos.simulate(REDUCED, n_traj=10, n_steps=10, **kw)
