"""Damaged Zarr sweep stores: every kind of file, every kind of damage.

A finished store is damaged -- one file deleted, truncated, emptied, or one bit flipped -- and the
sweep resumed.  Each case must end in one of two ways: the resumed sweep equals the undamaged
result exactly (values, dtypes, dims and the sweep's attributes; a damaged point recomputed, a
damaged skeleton rewritten), or one line naming the store.  Never a traceback, never other numbers.

`test_every_kind_of_file_and_damage` covers one file of each kind with each damage;
`test_random_damage` draws files, damages and bytes from the fault seed (``SDEEOS_FAULT_SEED``).
"""

from __future__ import annotations

import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
import zarr

from sdeeos import SelfStabilization
from sdeeos._errors import SdeeosError
from sdeeos._io import open_dataset
from sdeeos.sweeps import sweep

GRID = {"eta": [0.01, 0.02], "sigma": [1.0, 5.0]}
SETTINGS = dict(params={"alpha": 1.0, "beta": 100.0}, n_traj=4, n_steps=128, seed=4, scheduler="serial",
                progress=False, record_every=64, n_paths=2, path_variables=("x",))
DAMAGES = ("delete", "truncate", "empty", "flip")
#: attributes a session sets (its time stamp, wall time, scheduler, counts): not part of the result
SESSION_ATTRS = {"created", "sweep_wall_time_s", "scheduler", "n_points_resumed", "n_points_computed",
                 "n_workers_used"}
#: one file of each kind: root metadata, a coordinate, the done flags and checksums, a float and an
#: integer-valued result, a kept sample path and the path coordinates
KINDS = [".zattrs", ".zgroup",
         "eta/.zarray", "eta/.zattrs", "eta/0",
         "step/.zarray", "step/0", "path_traj/.zattrs",
         "point_done/.zarray", "point_done/.zattrs", "point_done/0.0",
         "point_checksum/.zarray", "point_checksum/.zattrs", "point_checksum/0.0",
         "sharpness_mean/.zarray", "sharpness_mean/.zattrs", "sharpness_mean/0.0",
         "n_alive/.zarray", "n_alive/.zattrs", "n_alive/0.0",
         "path_x/.zarray", "path_x/0.1.0.0"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """The in-memory reference and a finished, undamaged store of the same sweep."""
    root = tmp_path_factory.mktemp("pristine")
    reference = sweep(SelfStabilization, GRID, **SETTINGS)
    store = root / "s.zarr"
    sweep(SelfStabilization, GRID, store=store, **SETTINGS)
    return reference, store


def _differences(ref, ds) -> list[str]:
    if sorted(ref.data_vars) != sorted(ds.data_vars):
        return [f"variables {sorted(set(ref.data_vars) ^ set(ds.data_vars))}"]
    bad = []
    for name in [*ref.data_vars, *ref.coords]:
        a, b = ref[name], ds[name]
        if name == "wall_time_s":
            continue
        if a.dtype != b.dtype or a.dims != b.dims:
            bad.append(f"{name}: {a.dtype}{a.dims} -> {b.dtype}{b.dims}")
        elif not np.array_equal(a.values, b.values, equal_nan=a.dtype.kind == "f"):
            bad.append(f"{name}: values")
    for key, value in ref.attrs.items():
        if key not in SESSION_ATTRS and str(ds.attrs.get(key)) != str(value):
            bad.append(f"attribute {key}")
    return bad


def _damage(path: Path, how: str, rng: np.random.Generator) -> str:
    raw = path.read_bytes()
    if how == "delete":
        path.unlink()
    elif how == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    else:
        flipped = bytearray(raw)
        i, bit = int(rng.integers(len(raw))), int(rng.integers(8))
        flipped[i] ^= 1 << bit
        path.write_bytes(bytes(flipped))
        return f"flip bit {bit} of byte {i}"
    return how


def _check_case(finished, tmp_path, rel: str, how: str, rng, capfd, context: str) -> str:
    reference, pristine = finished
    store = tmp_path / "s.zarr"
    shutil.copytree(pristine, store)
    what = _damage(store / rel, how, rng)
    where = f"{rel}, {what} ({context})"
    try:
        resumed = sweep(SelfStabilization, GRID, store=store, **SETTINGS)
    except SdeeosError as exc:  # refused: one line naming the store
        text = str(exc)
        assert "\n" not in text and str(store) in text, f"{where}: {text}"
        return "refused"
    err = capfd.readouterr().err
    assert "Traceback" not in err, f"{where}: {err}"
    assert all(line.startswith("sdeeos: ") for line in err.splitlines()), f"{where}: {err}"
    assert not _differences(reference, resumed), f"{where}: {_differences(reference, resumed)}"
    # what is on disk now is whole: read back and verified, and a second resume computes nothing
    assert not _differences(reference, open_dataset(store)), where
    again = sweep(SelfStabilization, GRID, store=store, **SETTINGS)
    assert again.attrs["n_points_computed"] == 0 and not _differences(reference, again), where
    return "exact"


@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("rel", KINDS)
def test_every_kind_of_file_and_damage(rel, how, finished, tmp_path, capfd, fault_seed):
    # the flipped bit is drawn from the fault seed (printed, replayable), not from hash() of strings,
    # which differs from process to process
    rng = np.random.default_rng([fault_seed, zlib.crc32(f"{rel}|{how}".encode())])
    outcome = _check_case(finished, tmp_path, rel, how, rng, capfd, f"systematic, SDEEOS_FAULT_SEED={fault_seed}")
    # only the root attributes, which identify the sweep, are reason to refuse a store
    assert outcome == "exact" or rel == ".zattrs", (rel, how, outcome)


@pytest.mark.parametrize("case", range(3))
def test_random_damage(case, finished, tmp_path, capfd, fault_seed):
    """Any file of the store, any damage, any byte: drawn from the fault seed."""
    rng = np.random.default_rng([fault_seed, case])
    files = sorted(str(p.relative_to(finished[1])) for p in finished[1].rglob("*") if p.is_file())
    rel = files[int(rng.integers(len(files)))]
    how = DAMAGES[int(rng.integers(len(DAMAGES)))]
    _check_case(finished, tmp_path, rel, how, rng, capfd, f"SDEEOS_FAULT_SEED={fault_seed}, case {case}")


@pytest.mark.parametrize("flag", [33, -1, 2])
def test_a_done_flag_that_is_neither_0_nor_1_recomputes_its_point(flag, finished, tmp_path, capfd):
    """A flipped bit in the uncompressed flag byte reads as another nonzero value: not 'done'."""
    reference, pristine = finished
    store = tmp_path / "s.zarr"
    shutil.copytree(pristine, store)
    zarr.open_array(str(store / "point_done"), mode="r+", zarr_format=2)[0, 1] = flag
    resumed = sweep(SelfStabilization, GRID, store=store, **SETTINGS)
    assert "done flag of point" in capfd.readouterr().err
    assert resumed.attrs["n_points_computed"] == 1 and not _differences(reference, resumed)
