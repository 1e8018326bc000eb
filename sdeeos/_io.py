"""Reading and writing datasets: NetCDF (h5netcdf) for small results, Zarr for large ones."""

from __future__ import annotations

import os
from pathlib import Path

import xarray as xr

from ._errors import ParameterError

__all__ = ["write_dataset", "open_dataset", "netcdf_safe"]


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


def write_dataset(ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """Write ``ds`` to ``path``: ``.zarr`` -> Zarr (format 2, no consolidated metadata), else NetCDF4."""
    path = Path(path)
    if path.suffix == ".zarr":
        try:
            import zarr  # noqa: F401
        except ImportError as exc:  # pragma: no cover - depends on extras
            raise ParameterError("writing .zarr needs the 'dist' extra (pip install 'sdeeos[dist]')") from exc
        netcdf_safe(ds).to_zarr(path, mode="w", consolidated=False, zarr_format=2)
    elif path.suffix in (".nc", ".nc4", ".h5", ".netcdf", ""):
        if path.parent and not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        netcdf_safe(ds).to_netcdf(tmp, engine="h5netcdf")
        os.replace(tmp, path)
    else:
        raise ParameterError(f"out must end in .nc or .zarr, got {str(path)!r}")
    return path


def open_dataset(path: str | os.PathLike) -> xr.Dataset:
    """Open a dataset written by `write_dataset` (loads it into memory)."""
    path = Path(path)
    if path.suffix == ".zarr":
        return xr.open_zarr(path, consolidated=False).load()
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        return ds.load()
