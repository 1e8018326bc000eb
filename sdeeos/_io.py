"""Reading and writing datasets: NetCDF (h5netcdf) for small results, Zarr for large ones.

Every dataset written here carries ``sdeeos_data_sha256``, a checksum of its variables and
attributes; `open_dataset` recomputes it and raises `DamagedDataError` (one line) on a truncated,
bit-flipped or partly deleted file instead of returning wrong numbers.  Output paths are checked
before any work starts (`check_output_path`), files are written under unique temporary names and
renamed into place, and nothing the tool did not create is ever deleted.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import tempfile
import sys
from pathlib import Path

import numpy as np
import xarray as xr

from ._checksum import arrays_digest, damaged_points
from ._errors import DamagedDataError, ParameterError
from ._labels import label_dataset
from ._storelock import unique_temp_path

__all__ = ["write_dataset", "open_dataset", "netcdf_safe", "check_output_path", "check_checkpoint_path", "dataset_digest",
           "DIGEST_ATTR", "NETCDF_SUFFIXES"]

#: Attribute holding the checksum of a dataset's variables and attributes.
DIGEST_ATTR = "sdeeos_data_sha256"
NETCDF_SUFFIXES = (".nc", ".nc4", ".h5", ".netcdf")
# Attributes a store adds or updates after the checksum was taken (sweep stores) are not covered.
_UNCOVERED_ATTRS = (DIGEST_ATTR,)


def netcdf_safe(ds: xr.Dataset) -> xr.Dataset:
    """NetCDF attributes must be str/number/array: turn bools and None into ints and strings."""
    ds = ds.copy()
    for obj in [ds, *ds.variables.values()]:
        for k, v in list(obj.attrs.items()):
            if isinstance(v, bool):
                obj.attrs[k] = int(v)
            elif v is None:
                obj.attrs[k] = "none"
    for name, var in ds.variables.items():
        if var.dtype == bool:
            ds[name] = var.astype("int8")
            ds[name].attrs.update(var.attrs, dtype_note="boolean stored as int8")
    return ds


def _norm_attr(v):
    v = np.asarray(v).tolist() if isinstance(v, (np.ndarray, np.generic, list, tuple)) else v
    return v


def dataset_digest(ds: xr.Dataset) -> str:
    """sha256 of every variable (name, dims, values) and the dataset's attributes."""
    arrays = {}
    for name, var in ds.variables.items():
        arrays[f"v:{name}:{','.join(map(str, var.dims))}"] = var.values
    attrs = {k: _norm_attr(v) for k, v in sorted(ds.attrs.items()) if k not in _UNCOVERED_ATTRS}
    arrays["a:"] = np.frombuffer(json.dumps(attrs, sort_keys=True, default=str).encode(), np.uint8)
    return arrays_digest(arrays)


def _is_sdeeos_zarr(path: Path) -> bool:
    """A Zarr store written by sdeeos (its root attributes carry sdeeos provenance)."""
    try:
        attrs = json.loads((path / ".zattrs").read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(attrs, dict) and "sdeeos_version" in attrs


def check_output_path(path: str | os.PathLike, name: str = "out") -> Path:
    """Check ``path`` can receive a dataset, before any work: suffix, folder, no foreign data.

    ``.zarr``: a missing path, or a Zarr store sdeeos wrote (it is replaced); never another folder.
    NetCDF: a missing path or a regular file (replaced); the folder must exist or be creatable.
    """
    p = Path(path)
    if p.suffix == ".zarr":
        if p.exists() and not (p.is_dir() and _is_sdeeos_zarr(p)):
            raise ParameterError(f"{name} {str(p)!r} exists and is not a Zarr store written by sdeeos; "
                                 "choose another path (nothing was deleted)")
    elif p.suffix in NETCDF_SUFFIXES:
        if p.is_dir():
            raise ParameterError(f"{name} {str(p)!r} is a directory; give a file name ending in .nc")
    else:
        raise ParameterError(f"{name} must end in .nc or .zarr, got {str(p)!r}")
    _check_parent_writable(p, name)
    return p


def check_checkpoint_path(path: str | os.PathLike, name: str = "checkpoint") -> Path:
    """A checkpoint path whose folder exists and is writable (checked before the run starts)."""
    p = Path(path)
    if p.is_dir():
        raise ParameterError(f"{name} {str(p)!r} is a directory; give a file name (e.g. run.ckpt.npz)")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise ParameterError(f"{name} folder {str(parent)!r} does not exist; create it first")
    _check_parent_writable(p, name)
    return p


def _check_parent_writable(p: Path, name: str) -> None:
    parent = p.parent if str(p.parent) else Path(".")
    probe = parent
    while not probe.exists():  # the nearest existing ancestor must let us create the rest
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise ParameterError(f"{name} {str(p)!r} cannot be written: {str(probe)!r} is not a writable folder")
    # permission bits do not tell (root, read-only mounts, /proc): create and remove a file there
    try:
        fd, tmp = tempfile.mkstemp(prefix=".sdeeos-probe-", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise ParameterError(f"{name} {str(p)!r} cannot be written: creating a file in {str(probe)!r} failed "
                             f"({exc.strerror or exc})") from None


def write_dataset(ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """Write ``ds`` to ``path``: ``.zarr`` -> Zarr (format 2, no consolidated metadata), else NetCDF4.

    The file is written under a unique temporary name and renamed into place, so a reader never
    sees half a file and two writers never share a temporary.
    """
    path = check_output_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    safe = label_dataset(netcdf_safe(ds))  # every variable written carries its long_name
    safe.attrs[DIGEST_ATTR] = dataset_digest(safe)
    tmp = unique_temp_path(path, path.suffix)
    try:
        if path.suffix == ".zarr":
            try:
                import zarr  # noqa: F401
            except ImportError as exc:  # pragma: no cover - depends on extras
                raise ParameterError("writing .zarr needs the 'dist' extra (pip install 'sdeeos[dist]')") from exc
            safe.to_zarr(tmp, mode="w-", consolidated=False, zarr_format=2)
            old = None
            if path.exists():  # an sdeeos store (checked): move it aside, then swap
                old = unique_temp_path(path, ".old")
                os.replace(path, old)
            os.replace(tmp, path)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        else:
            safe.to_netcdf(tmp, engine="h5netcdf")
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
    return path


def open_dataset(path: str | os.PathLike, *, verify: bool = True) -> xr.Dataset:
    """Open a dataset written by sdeeos (loads it into memory), checking it is undamaged.

    Raises `DamagedDataError` (one line) if the file cannot be read or its checksum does not match.
    """
    path = Path(path)
    if not path.exists():
        raise ParameterError(f"{str(path)!r} does not exist")
    failure = None
    hook = sys.unraisablehook  # a failed h5netcdf open complains from File.__del__: not news to the user
    sys.unraisablehook = _quiet_unraisable
    try:
        if path.suffix == ".zarr":
            with xr.open_zarr(path, consolidated=False) as ds:
                ds = ds.load()
        else:
            with xr.open_dataset(path, engine="h5netcdf") as ds:
                ds = ds.load()
    except Exception as exc:  # noqa: BLE001 - truncated/garbled files fail in many ways
        failure = f"{type(exc).__name__}: {_first_line(exc)}"
    finally:
        if failure is not None:
            gc.collect()
        sys.unraisablehook = hook
    if failure is not None:  # outside the except block: the failed objects are unreferenced now
        raise DamagedDataError(f"{str(path)!r} is damaged and cannot be read ({failure}); recompute it")
    if verify:
        verify_dataset(ds, path)
    return ds.drop_vars("point_checksum", errors="ignore")  # store bookkeeping, verified above


def verify_dataset(ds: xr.Dataset, path) -> None:
    """Raise `DamagedDataError` if ``ds`` does not match its stored checksum(s)."""
    stored = ds.attrs.get(DIGEST_ATTR)
    if stored is not None and dataset_digest(ds) != stored:
        raise DamagedDataError(f"{str(path)!r} is damaged: its data does not match the checksum written "
                               "with it; recompute it")
    if "point_checksum" in ds and "point_done" in ds:
        bad = damaged_points(ds)
        if bad:
            raise DamagedDataError(f"{str(path)!r} is damaged: {len(bad)} finished point(s) fail their checksum "
                                   f"(first: {bad[0]}); re-run the sweep to recompute them")


def _quiet_unraisable(unraisable) -> None:
    """Drop the "Exception ignored" reports of half-opened files (see `open_dataset`)."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0][:200] if text else "")
