"""Outputs checked before any work, nothing foreign deleted, memory refused up front, and the
user errors that used to give tracebacks: each is one line and exit status 2."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import xarray as xr

from sdeeos import SelfStabilization, simulate
from sdeeos._cli import main
from sdeeos._resources import check_run_memory, run_memory_bytes
from sdeeos.sweeps import sweep
from sdeeos.engines import RunSpec
from sdeeos.models import CubicTaylor, QuadraticRegression

BASE = ["simulate", "self-stabilization", "--eta", "0.01", "--alpha", "1", "--beta", "100", "--sigma", "10",
        "--n-traj", "20", "--steps", "256", "--seed", "3", "--no-progress", "--json"]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("out, fragment", [
    ("x.txt", "must end in .nc or .zarr"),
    ("adir.nc", "is a directory"),
    ("foreign.zarr", "is not a Zarr store written by sdeeos"),
    ("ro/sub/x.nc", "cannot be written"),
])
def test_bad_out_is_refused_before_the_run_and_nothing_is_deleted(out, fragment, tmp_path, capsys, monkeypatch):
    (tmp_path / "adir.nc").mkdir()
    (tmp_path / "foreign.zarr").mkdir()
    (tmp_path / "foreign.zarr" / "mine.txt").write_text("keep me")
    (tmp_path / "ro").mkdir()
    os.chmod(tmp_path / "ro", 0o500)
    if out.startswith("ro/") and os.access(tmp_path / "ro", os.W_OK):  # root ignores permissions
        pytest.skip("running as root")
    ran = []
    monkeypatch.setattr("sdeeos._simulate.SigintDeferred.__enter__", lambda self: ran.append(1) or self)
    try:
        assert main([*BASE, "--out", str(tmp_path / out)]) == 2
    finally:
        os.chmod(tmp_path / "ro", 0o700)
    assert fragment in _error_line(capsys)
    assert not ran  # refused before any simulation started
    assert (tmp_path / "foreign.zarr" / "mine.txt").read_text() == "keep me"
    assert not [p for p in tmp_path.rglob("*") if "tmp" in p.name]


def test_foreign_zarr_folder_is_kept_even_as_root(tmp_path, capsys):
    target = tmp_path / "foreign.zarr"
    target.mkdir()
    (target / "mine.txt").write_text("keep me")
    assert main([*BASE, "--out", str(target)]) == 2
    assert "not a Zarr store written by sdeeos" in _error_line(capsys)
    assert (target / "mine.txt").read_text() == "keep me"


def test_sdeeos_zarr_output_is_replaced(tmp_path, capsys):
    target = tmp_path / "run.zarr"
    assert main([*BASE, "--out", str(target)]) == 0
    assert main([*BASE[:-4], "--seed", "4", "--no-progress", "--out", str(target)]) == 0
    capsys.readouterr()
    assert xr.open_zarr(target, consolidated=False).attrs["seed"] == "4"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.zarr"]


def test_checkpoint_in_a_missing_folder_is_refused_up_front(tmp_path, capsys):
    assert main([*BASE, "--checkpoint", str(tmp_path / "missing" / "ck.npz")]) == 2
    assert "does not exist" in _error_line(capsys)


def test_checkpoint_is_removed_only_after_the_output_is_in_place(tmp_path, capsys, monkeypatch):
    ck, out = tmp_path / "ck.npz", tmp_path / "a.nc"

    def failing_write(ds, path):
        raise KeyboardInterrupt  # Ctrl-C while the output is being written

    monkeypatch.setattr("sdeeos._cli.simulate.write_dataset", failing_write)
    assert main([*BASE, "--checkpoint", str(ck), "--out", str(out)]) == 130
    assert ck.exists() and not out.exists()  # the finished run survives in the checkpoint
    monkeypatch.undo()
    assert main([*BASE, "--checkpoint", str(ck), "--out", str(out)]) == 0
    capsys.readouterr()
    assert out.exists() and not ck.exists()
    reference = simulate(SelfStabilization(eta=0.01, alpha=1, beta=100, sigma=10), n_traj=20, n_steps=256, seed=3)
    with xr.open_dataset(out, engine="h5netcdf") as ds:
        np.testing.assert_array_equal(ds["sharpness_time_mean"].values, reference["sharpness_time_mean"].values)
        assert ds.attrs["resumed_from_step"] == 256  # nothing was recomputed


def test_too_many_trajectories_are_refused_with_the_estimate(capsys):
    args = [a if a != "20" else str(10**12) for a in BASE]
    assert main(args) == 2
    err = _error_line(capsys)
    assert "n_traj=1000000000000" in err and "needs about" in err and "available" in err


@pytest.mark.parametrize("make, record_every", [
    (lambda: SelfStabilization(eta=0.01, alpha=1, beta=100, sigma=1), 0),
    (lambda: SelfStabilization(eta=0.01, alpha=1, beta=100, sigma=1), 7),
    (lambda: QuadraticRegression(n=8, P=4, eta=0.1, batch_size=2, q_scale=0.5), 5),
    (lambda: CubicTaylor(eta=0.01, alpha=1.0, beta=100.0, d=3, sigma=1.0), 3),
])
def test_memory_estimate_is_the_measured_state_size(make, record_every):
    """The bilinear extrapolation from tiny states equals the real run state at full size (x2 for
    the dataset's copies)."""
    model = make()
    spec = RunSpec.checked(model, None, n_traj=37, n_steps=40, record_every=record_every or None)
    real = sum(getattr(a, "nbytes", 0) for a in model.new_run(spec).arrays().values())  # t is an int
    need = 2 * real + model.work_bytes(spec)  # plus the engine's transient arrays
    assert run_memory_bytes(spec) == need
    check_run_memory(spec, available=need)
    with pytest.raises(Exception, match="needs about"):
        check_run_memory(dataclasses.replace(spec), available=need - 1)


@pytest.mark.parametrize("argv, fragment", [
    ([*BASE, "--threads", "100000"], "n_threads must be an integer in [1,"),
    (["derive", "nonexistent", "--all"], "nonexistent"),
])
def test_user_errors_are_one_line(argv, fragment, capsys):
    assert main(argv) == 2
    assert fragment in _error_line(capsys)


def test_sweep_missing_model_parameter_is_one_line():
    with pytest.raises(Exception) as info:
        sweep(SelfStabilization, {"eta": [0.01]}, scheduler="serial", progress=False)
    assert "missing model parameter(s) alpha, beta" in str(info.value) and "\n" not in str(info.value)


def test_n_workers_zero_is_refused():
    with pytest.raises(Exception, match=r"n_workers must be an integer in \[1, inf\)"):
        sweep(SelfStabilization, {"eta": [0.01]}, params={"alpha": 1, "beta": 100}, n_workers=0, progress=False)
