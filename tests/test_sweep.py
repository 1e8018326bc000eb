"""`sdeeos.sweep` (the `sdeeos.sweeps` package): datasets, parameter maps, stores, resume after SIGKILL, dask clusters.

Checks are exact (bit-reproducibility: every draw is keyed by (seed, trajectory, step)) or
structural; the sweeps are tiny.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import xarray as xr

from sdeeos import ParameterError, SelfStabilization, simulate
from sdeeos._errors import BackendUnavailableError
from sdeeos._io import open_dataset
from sdeeos._rng import RNG_SCHEME
from sdeeos.sweeps import PointSpec, SchedulerUnreachableError, sweep
from sdeeos.sweeps import _dask_runner as sw_runner
from sdeeos.theory import self_stabilization as theory

BASE = dict(eta=0.01, alpha=1.0, beta=100.0)
SMALL = dict(n_traj=16, n_steps=2000, burn_in=1000, scheduler="serial", progress=False)


def _same(a: xr.Dataset, b: xr.Dataset, skip=("wall_time_s",)) -> None:
    """Every variable identical, to the bit (NaN == NaN)."""
    assert sorted(a.data_vars) == sorted(b.data_vars)
    for name in a.data_vars:
        if name in skip:
            continue
        x, y = a[name].values, b[name].values
        if x.dtype.kind == "f":
            np.testing.assert_array_equal(x, y, err_msg=name)
        else:
            assert np.array_equal(x, y), name


def test_dims_predictions_and_provenance():
    ds = sweep(SelfStabilization, {"sigma": [2.0, 5.0], "eta": [0.005, 0.01, 0.02]},
               params={"alpha": 1.0, "beta": 100.0}, **SMALL)
    assert ds["sharpness_gap"].dims == ("sigma", "eta")
    assert ds["sigma"].values.tolist() == [2.0, 5.0] and ds["eta"].values.tolist() == [0.005, 0.01, 0.02]
    # the theory's prediction beside every measurement (the same lambdified function)
    expected = theory.gap_exact(ds["eta"].values[None, :], 1.0, 100.0, ds["sigma"].values[:, None], outside="nan")
    np.testing.assert_array_equal(ds["sharpness_gap_predicted_exact"].values, expected)
    for name in ("sharpness_gap", "sharpness_gap_stderr", "sharpness_gap_predicted_leading", "n_diverged",
                 "wall_time_s", "point_done"):
        assert ds[name].dims == ("sigma", "eta"), name
    assert (ds["point_done"] == 1).all() and (ds["wall_time_s"] > 0).all()
    for key in ("sdeeos_version", "git_revision", "command_line", "rng_scheme", "sweep_digest", "created"):
        assert key in ds.attrs, key
    assert ds.attrs["rng_scheme"] == RNG_SCHEME
    assert ds.attrs["alpha"] == 1.0 and ds.attrs["seed"] == "0" and ds.attrs["n_traj"] == 16


def test_point_is_bit_identical_to_simulate():
    ds = sweep(SelfStabilization, {"sigma": [3.0, 7.0], "seed": [0, 5]}, params=BASE, **SMALL)
    one = simulate(SelfStabilization(**BASE, sigma=7.0), n_traj=16, n_steps=2000, burn_in=1000, seed=5,
                   progress=False)
    point = ds.sel(sigma=7.0, seed=5)
    for name, var in one.data_vars.items():
        if var.ndim == 0:
            assert float(point[name]) == float(var) or (math.isnan(float(var)) and math.isnan(float(point[name]))), name


def test_batch_size_sets_sigma_and_full_batch_is_gd():
    n, s1 = 100, 20.0
    ds = sweep(SelfStabilization, {"batch_size": [10, 50, 100]}, params={**BASE, "n_data": n, "sigma_1": s1},
               n_traj=8, n_steps=1000, scheduler="serial", progress=False)
    b = ds["batch_size"].values
    np.testing.assert_allclose(ds["sigma"].values, s1 * np.sqrt((n - b) / (b * (n - 1))), rtol=1e-14)
    assert ds["method"].values.tolist() == ["sgd", "sgd", "gd"]
    assert float(ds["sharpness_gap"].sel(batch_size=100)) == 0.0  # GD from the period-2 orbit stays on it


def test_callable_run_length_and_paths():
    ds = sweep(SelfStabilization, {"eta": [0.01, 0.02]}, params={"alpha": 1.0, "beta": 100.0, "sigma": 5.0},
               n_traj=8, n_steps=lambda p: int(0.2 / (p["eta"] ** 2 * p["alpha"])), burn_in=lambda p: p["n_steps"] // 4,
               record_every=50, n_paths=2, path_variables=["sharpness"], scheduler="serial", progress=False)
    assert ds["n_steps"].values.tolist() == [2000, 500] and ds["burn_in"].values.tolist() == [500, 125]
    assert ds["path_sharpness"].dims == ("eta", "path_traj", "step") and ds.sizes["path_traj"] == 2
    assert ds.sizes["step"] == 40  # the longest run; shorter ones are padded with NaN
    assert np.isnan(ds["path_sharpness"].sel(eta=0.02).values[:, 10:]).all()
    assert np.isfinite(ds["path_sharpness_ensemble_mean"].sel(eta=0.02).values[:10]).all()


@pytest.mark.parametrize("grid, params, match", [
    ({"sigmaa": [1.0]}, BASE, "grid parameter 'sigmaa' is unknown"),
    ({"sigma": [1.0]}, {**BASE, "sigma": 2.0}, "both swept and fixed"),
    ({"sigma": [1.0, -2.0]}, BASE, r"grid point \(sigma=-2.0\): sigma must be in"),
    ({"batch_size": [10]}, BASE, "batch_size needs the parameter 'n_data'"),
    ({"sigma": [1.0, 1.0]}, BASE, "repeated values"),
    ({"sigma": []}, BASE, "at least one value"),
])
def test_bad_grids(grid, params, match):
    with pytest.raises(ParameterError, match=match):
        sweep(SelfStabilization, grid, params=params, **SMALL)


def test_netcdf_store_resumes_and_rerun_does_nothing(tmp_path):
    store = tmp_path / "gap.nc"
    grid = {"sigma": [2.0, 4.0, 6.0]}
    ref = sweep(SelfStabilization, grid, params=BASE, **SMALL)
    first = sweep(SelfStabilization, grid, params=BASE, store=store, **SMALL)
    assert store.exists() and not (tmp_path / "gap.nc.parts").exists()
    _same(ref, first)
    with xr.open_dataset(store) as reopened:
        _same(ref, reopened.load())
    again = sweep(SelfStabilization, grid, params=BASE, store=store, **SMALL)
    assert again.attrs["n_points_computed"] == 0
    with pytest.raises(ParameterError, match="different sweep"):
        sweep(SelfStabilization, {"sigma": [2.0, 4.0]}, params=BASE, store=store, **SMALL)


@pytest.mark.parametrize("suffix", [".zarr", ".nc"])
def test_interrupted_sweep_resumes_without_losing_points(tmp_path, monkeypatch, suffix):
    grid = {"sigma": [2.0, 3.0, 4.0, 5.0, 6.0]}
    ref = sweep(SelfStabilization, grid, params=BASE, **SMALL)
    store = tmp_path / f"s{suffix}"
    real = sw_runner.run_point
    calls = []

    def flaky(spec):
        calls.append(spec.index)
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the third point
        return real(spec)

    monkeypatch.setattr(sw_runner, "run_point", flaky)
    with pytest.raises(KeyboardInterrupt):
        sweep(SelfStabilization, grid, params=BASE, store=store, **SMALL)
    monkeypatch.setattr(sw_runner, "run_point", real)
    resumed = sweep(SelfStabilization, grid, params=BASE, store=store, **SMALL)
    assert resumed.attrs["n_points_resumed"] == 2 and resumed.attrs["n_points_computed"] == 3
    _same(ref, resumed)


KILL_SCRIPT = textwrap.dedent("""
    import sys
    from sdeeos import SelfStabilization
    from sdeeos import sweep
    sweep(SelfStabilization, {"sigma": [2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0]},
          params=dict(eta=0.01, alpha=1.0, beta=100.0), n_traj=64, n_steps=300_000, n_threads=1,
          store=sys.argv[1], scheduler="serial", progress=False)
""")
KILL_GRID = {"sigma": [2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0]}
KILL_SETTINGS = dict(params=BASE, n_traj=64, n_steps=300_000, n_threads=1, scheduler="serial", progress=False)


def _done(store) -> np.ndarray:
    import zarr

    try:
        return np.asarray(zarr.open_group(str(store), mode="r", zarr_format=2)["point_done"][...])
    except Exception:  # noqa: BLE001 - not created yet
        return np.zeros(0)


def test_sigkill_mid_sweep_then_resume_is_bit_identical(tmp_path):
    """A sweep killed with SIGKILL resumes where it stopped; finished points are kept, not recomputed."""
    pytest.importorskip("zarr")
    store = tmp_path / "killed.zarr"
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT)
    env = {**os.environ, "NUMBA_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(script), str(store)], env=env)
    try:
        while proc.poll() is None and _done(store).sum() < 2:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the sweep finished before it could be killed"
    done_at_kill = _done(store).astype(bool)
    assert 2 <= done_at_kill.sum() < done_at_kill.size
    before = xr.open_zarr(store, consolidated=False).load()

    resumed = sweep(SelfStabilization, KILL_GRID, store=store, **KILL_SETTINGS)
    assert resumed.attrs["n_points_resumed"] >= done_at_kill.sum()
    # finished points were kept as they were (the same wall time: not recomputed)
    np.testing.assert_array_equal(resumed["wall_time_s"].values[done_at_kill],
                                  before["wall_time_s"].values[done_at_kill])
    uninterrupted = sweep(SelfStabilization, KILL_GRID, **KILL_SETTINGS)
    _same(uninterrupted, resumed)
    reopened = open_dataset(store)  # verifies every point's checksum
    _same(uninterrupted, reopened)
    assert not list(store.rglob("*.partial"))


def test_unreachable_scheduler_fails_fast_with_a_clear_error():
    pytest.importorskip("distributed")
    with pytest.raises(SchedulerUnreachableError, match="could not reach the Dask scheduler at 'tcp://127.0.0.1:1'"):
        sweep(SelfStabilization, {"sigma": [1.0]}, params=BASE, n_traj=4, n_steps=100, progress=False,
              scheduler="tcp://127.0.0.1:1", connect_timeout=1.0)


def test_gpu_points_ask_for_a_gpu_worker():
    spec = PointSpec(index=(0,), label="", model_cls=SelfStabilization, model_kwargs={}, method="sgd", n_traj=1,
                     n_steps=1, burn_in=0, seed=0, backend="cupy", record_every=0, n_paths=0, path_variables=None,
                     stationarity_check=False, n_threads=None)
    assert spec.resources == {"GPU": 1}
    assert PointSpec(**{**spec.__dict__, "backend": "numba"}).resources is None


@pytest.fixture(scope="module")
def two_worker_cluster():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None,
                                       env={"NUMBA_NUM_THREADS": "1"}, silence_logs=40)
    try:
        yield cluster
    finally:
        cluster.close()


def test_runs_on_an_existing_two_worker_cluster(two_worker_cluster, tmp_path):
    grid = {"sigma": [2.0, 3.0, 4.0, 5.0, 6.0, 7.0]}
    settings = dict(params=BASE, n_traj=64, n_steps=100_000, progress=False)
    serial = sweep(SelfStabilization, grid, scheduler="serial", **settings)
    dist = sweep(SelfStabilization, grid, scheduler=two_worker_cluster.scheduler_address,
                 store=tmp_path / "d.zarr", **settings)
    _same(serial, dist)
    assert dist.attrs["n_workers_used"] == 2
    assert "dask cluster at tcp://" in dist.attrs["scheduler"]


def test_gpu_points_on_a_cluster_without_gpu_workers_fail_clearly(two_worker_cluster):
    with pytest.raises(BackendUnavailableError, match="GPU=1"):
        sweep(SelfStabilization, {"sigma": [1.0]}, params=BASE, n_traj=4, n_steps=100, backend="cupy",
              scheduler=two_worker_cluster.scheduler_address, progress=False)


