"""Faults around stores: a second writer, killed writers, damaged files, foreign files.

Every case ends either in the exact result (compared bit for bit with an uninterrupted in-memory
sweep) or in one clear line; never in wrong numbers or a traceback.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import xarray as xr

from sdeeos import SelfStabilization
from sdeeos._errors import DamagedDataError, StoreLockedError
from sdeeos._io import open_dataset, write_dataset
from sdeeos.sweeps import sweep
from sdeeos.sweeps._stores import _NetCDFStore

GRID = {"eta": [0.01, 0.02], "sigma": [1.0, 5.0]}
SETTINGS = dict(params={"alpha": 1.0, "beta": 100.0}, n_traj=8, n_steps=256, seed=4, scheduler="serial",
                progress=False)
ENV = {**os.environ, "NUMBA_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}


@pytest.fixture(scope="module")
def reference():
    return sweep(SelfStabilization, GRID, **SETTINGS)


def _same(a: xr.Dataset, b: xr.Dataset, skip=("wall_time_s",)) -> None:
    assert sorted(a.data_vars) == sorted(b.data_vars)
    for name in a.data_vars:
        if name not in skip:
            np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and text
    return text


# --------------------------------------------------------------------------- one writer
HOLDER = textwrap.dedent("""
    import sys, time
    from sdeeos._storelock import StoreLock
    lock = StoreLock(sys.argv[1], lock_file=sys.argv[2] if len(sys.argv) > 2 else None).acquire()
    print("locked", flush=True)
    time.sleep(float(sys.stdin.readline()))
    lock.release()
""")


def _holder(tmp_path, *args):
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    proc = subprocess.Popen([sys.executable, str(script), *map(str, args)], env=ENV, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
def test_second_writer_of_a_sweep_store_fails_at_once_naming_the_holder(suffix, tmp_path, reference):
    store = tmp_path / f"s{suffix}"
    holder = _holder(tmp_path, store)
    try:
        with pytest.raises(StoreLockedError) as info:
            sweep(SelfStabilization, GRID, store=store, **SETTINGS)
        assert f"pid {holder.pid}" in _one_line(info.value)
        assert not store.exists()  # the second writer touched nothing
        holder.stdin.write("0.5\n")
        holder.stdin.flush()
        # asked to wait, it runs once the holder is done
        ds = sweep(SelfStabilization, GRID, store=store, wait_for_lock=60, **SETTINGS)
    finally:
        holder.kill()
        holder.wait()
    _same(reference, ds)
    _same(reference, sweep(SelfStabilization, GRID, store=store, **SETTINGS))


TINY_STUDY = """\
kind = "sharpness_gap"
name = "tiny_gap"

[model]
alpha = 1.0
beta = 100.0
eta = 0.05

[batch_noise]
n_data = 100
sigma_1 = 4.0

[grid]
batch_size = [5, 100]

[run]
n_traj = 8
duration_tau = 0.5
burn_in_tau = 0.2
"""


def test_second_study_writing_the_same_folder_fails_with_one_line(tmp_path):
    study = tmp_path / "tiny.toml"
    study.write_text(TINY_STUDY)
    out = tmp_path / "out"
    out.mkdir()
    holder = _holder(tmp_path, out, out / ".sdeeos-study.lock")
    cmd = [sys.executable, "-m", "sdeeos", "study", str(study), "--out", str(out), "--scheduler", "serial",
           "--no-progress"]
    try:
        second = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
        assert second.returncode == 2, second.stderr
        assert second.stderr.count("\n") == 1 and f"pid {holder.pid}" in second.stderr
        assert "Traceback" not in second.stderr
        holder.stdin.write("0.5\n")
        holder.stdin.flush()
        waited = subprocess.run(cmd + ["--wait-lock", "120"], env=ENV, capture_output=True, text=True, timeout=300)
        assert waited.returncode == 0, waited.stderr
    finally:
        holder.kill()
        holder.wait()


def test_temporaries_are_per_process_and_foreign_files_are_kept(tmp_path, reference):
    store = tmp_path / "s.nc"
    foreign = [tmp_path / "notes.txt", tmp_path / ".other.nc.sdeeos-tmp-1-abcd.npz", tmp_path / "s.nc.tmp"]
    for f in foreign:
        f.write_text("not sdeeos's to delete")
    ds = sweep(SelfStabilization, GRID, store=store, **SETTINGS)
    _same(reference, ds)
    for f in foreign:
        assert f.read_text() == "not sdeeos's to delete"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["s.nc", *(f.name for f in foreign)])


# --------------------------------------------------------------------------- damage
def _chunk_files(store, name):
    return sorted(p for p in (store / name).iterdir() if not p.name.startswith("."))


@pytest.mark.parametrize("damage", ["truncate-data", "delete-data", "truncate-done", "flip-data"])
def test_damaged_zarr_points_are_detected_and_recomputed(damage, tmp_path, reference, capfd):
    store = tmp_path / "s.zarr"
    sweep(SelfStabilization, GRID, store=store, **SETTINGS)
    target = _chunk_files(store, "point_done" if damage == "truncate-done" else "sharpness_mean")[0]
    raw = target.read_bytes()
    if damage.startswith("truncate"):
        target.write_bytes(raw[: len(raw) // 2])
    elif damage == "delete-data":
        target.unlink()
    else:
        shutil.rmtree(store / "sharpness_mean")  # rewrite the chunk uncompressed-equivalent: a valid,
        sweep_arr = reference["sharpness_mean"].values.copy()  # wrong value written through zarr itself
        import zarr

        sweep(SelfStabilization, GRID, store=store, **SETTINGS)  # recreates the missing array
        capfd.readouterr()
        group = zarr.open_group(str(store), mode="r+", zarr_format=2)
        sweep_arr[0, 0] += 1e-9
        group["sharpness_mean"][...] = sweep_arr
    if damage != "truncate-done":
        with pytest.raises(DamagedDataError) as info:
            open_dataset(store)
        _one_line(info.value)
    resumed = sweep(SelfStabilization, GRID, store=store, **SETTINGS)
    err = capfd.readouterr().err
    assert "damaged" in err or "fails its checksum" in err
    assert resumed.attrs["n_points_computed"] >= 1
    _same(reference, resumed)
    _same(reference, open_dataset(store))


def test_damaged_netcdf_parts_and_sweep_json_are_recomputed(tmp_path, reference, monkeypatch, capfd):
    store = tmp_path / "s.nc"

    def interrupted(self, ds):
        raise KeyboardInterrupt

    monkeypatch.setattr(_NetCDFStore, "finish", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sweep(SelfStabilization, GRID, store=store, **SETTINGS)
    monkeypatch.undo()
    parts = store.with_name("s.nc.parts")
    (parts / "sweep.json").write_bytes(b"{\x00garbage")
    part = sorted(parts.glob("point-*.npz"))[1]
    part.write_bytes(part.read_bytes()[:100])
    resumed = sweep(SelfStabilization, GRID, store=store, **SETTINGS)
    err = capfd.readouterr().err
    assert "sweep.json" in err and "damaged" in err and "eta=" in err
    assert resumed.attrs["n_points_computed"] == 1
    _same(reference, resumed)


def test_truncated_final_netcdf_gives_one_line(tmp_path, reference):
    store = tmp_path / "s.nc"
    sweep(SelfStabilization, GRID, store=store, **SETTINGS)
    raw = store.read_bytes()
    store.write_bytes(raw[: len(raw) * 2 // 3])
    with pytest.raises(DamagedDataError) as info:
        sweep(SelfStabilization, GRID, store=store, **SETTINGS)
    assert "damaged" in _one_line(info.value)
    with pytest.raises(DamagedDataError):
        open_dataset(store)


def test_bit_flips_in_a_netcdf_file_never_load_as_data(tmp_path, reference):
    """Each flipped byte either is reported as damage or leaves every value and attribute unchanged."""
    clean = tmp_path / "clean.nc"
    write_dataset(reference, clean)
    original = open_dataset(clean)
    raw = clean.read_bytes()
    rng = np.random.default_rng(0)
    detected = 0
    for trial in range(30):
        pos = int(rng.integers(len(raw)))
        flipped = bytearray(raw)
        flipped[pos] ^= 1 << int(rng.integers(8))
        path = tmp_path / f"flip{trial}.nc"
        path.write_bytes(bytes(flipped))
        try:
            ds = open_dataset(path)
        except DamagedDataError as exc:
            _one_line(exc)
            detected += 1
            continue
        _same(original, ds, skip=())
        assert ds.attrs == original.attrs
    assert detected >= 1  # the 30 flips include some that hit data


# --------------------------------------------------------------------------- killed writers
KILL_SCRIPT = textwrap.dedent("""
    import sys
    from sdeeos import SelfStabilization
    from sdeeos.sweeps import sweep
    grid = {"eta": [0.01, 0.02, 0.03], "sigma": [1.0, 3.0, 5.0]}
    sweep(SelfStabilization, grid, params={"alpha": 1.0, "beta": 100.0}, n_traj=64, n_steps=40000, seed=4,
          scheduler="serial", progress=False, store=sys.argv[1])
""")
KILL_GRID = {"eta": [0.01, 0.02, 0.03], "sigma": [1.0, 3.0, 5.0]}
KILL_SETTINGS = dict(params={"alpha": 1.0, "beta": 100.0}, n_traj=64, n_steps=40000, seed=4, scheduler="serial",
                     progress=False)


@pytest.fixture(scope="module")
def kill_reference():
    return sweep(SelfStabilization, KILL_GRID, **KILL_SETTINGS)


def _n_done(store) -> int:
    if store.suffix == ".nc":
        return len(list(store.with_name(store.name + ".parts").glob("point-*.npz")))
    try:
        import zarr

        return int(np.asarray(zarr.open_group(str(store), mode="r", zarr_format=2)["point_done"][...]).sum())
    except Exception:  # noqa: BLE001 - not created yet
        return 0


@pytest.mark.parametrize("suffix,sig,seed", [(".zarr", signal.SIGKILL, 0), (".nc", signal.SIGKILL, 1),
                                             (".zarr", signal.SIGINT, 2)])
def test_killed_sweep_resumes_exactly(suffix, sig, seed, tmp_path, kill_reference):
    """Killed at a random instant after its first point, a sweep resumes to the exact result."""
    rng = np.random.default_rng(seed)
    store = tmp_path / f"k{suffix}"
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(store)], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    while proc.poll() is None and _n_done(store) < 1:
        time.sleep(0.01)
    time.sleep(float(rng.uniform(0.0, 0.2)))
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0, "the sweep finished before it could be killed"
    assert "Traceback" not in err or err.rstrip().endswith("KeyboardInterrupt"), err
    resumed = sweep(SelfStabilization, KILL_GRID, store=store, **KILL_SETTINGS)
    assert resumed.attrs["n_points_resumed"] >= 1
    _same(kill_reference, resumed)
    assert not list(tmp_path.glob("*sdeeos-tmp*")) and not list(tmp_path.glob("*.parts"))
