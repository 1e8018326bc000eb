"""Sweep stores: where finished points go, behind one `Store` interface.

* `_MemoryStore` (``store=None``): results in memory only;
* `_ZarrStore` (``"name.zarr"``): created up front and written point by point (each chunk write is an
  atomic rename, and a point's ``point_done`` flag is written after its data), so a sweep killed at any
  moment -- SIGKILL included -- resumes where it stopped and never loses a finished point;
* `_NetCDFStore` (``"name.nc"``): finished points go to ``name.nc.parts/`` (one atomically written file
  each); the NetCDF file is assembled once every point is done and the parts are removed;
  `_FinishedNetCDFStore` is such a file whose sweep is complete (nothing left to compute).

A store made by a *different* sweep (other grid, settings or model) is never overwritten: that is an error.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import xarray as xr

from .._errors import DistExtraMissingError, ParameterError
from .._io import netcdf_safe, open_dataset, write_dataset

__all__ = ["Store", "Layout", "LONG_NAMES", "open_store"]

# Chunks of the per-point scalar variables hold at most this many points (one chunk write per
# point and variable: small grids are a single chunk, large ones stay cheap to rewrite).
_SCALAR_CHUNK_POINTS = 4096


def _import_zarr():
    try:
        import zarr
    except ImportError as exc:  # pragma: no cover - depends on extras
        raise DistExtraMissingError(
            "a .zarr sweep store needs the 'dist' extra: pip install 'sdeeos[dist]' "
            "(or use a .nc store)") from exc
    return zarr


LONG_NAMES = {
    "wall_time_s": ("wall-clock time of this point", "s"),
    "sharpness_drift": ("late-half minus early-half time mean of the sharpness (stationarity check)",
                        "1/step size"),
    "sharpness_drift_stderr": ("standard error of sharpness_drift", "1/step size"),
    "point_done": ("1 once this point's results are stored", None),
    "stationary_state_exists": ("1 if the closure has a stationary solution, else 0", None),
}


@dataclasses.dataclass
class Layout:
    dims: list[str]
    coords: dict[str, list]
    shape: tuple[int, ...]
    n_records: int
    n_paths: int
    record_every: int

    def scalar_chunks(self) -> tuple[int, ...]:
        chunks, size = [], 1
        for n in reversed(self.shape):
            c = n if size * n <= _SCALAR_CHUNK_POINTS else 1
            chunks.append(c)
            size *= c
        return tuple(reversed(chunks))

    def var_dims(self, name: str) -> tuple[str, ...]:
        if name.startswith("path_") and name.endswith("_ensemble_mean"):
            return (*self.dims, "step")
        if name.startswith("path_"):
            return (*self.dims, "path_traj", "step")
        return tuple(self.dims)

    def var_shape(self, name: str) -> tuple[int, ...]:
        extra = {"step": self.n_records, "path_traj": self.n_paths}
        return tuple(extra.get(d, 0) or dict(zip(self.dims, self.shape)).get(d) for d in self.var_dims(name))

    def var_chunks(self, name: str) -> tuple[int, ...]:
        if name.startswith("path_"):
            return tuple(1 for _ in self.dims) + self.var_shape(name)[len(self.dims):]
        return self.scalar_chunks()

    def extra_coords(self) -> dict:
        out = {}
        if self.record_every:
            out["step"] = ("step", np.arange(self.n_records) * self.record_every, {"long_name": "step"})
            if self.n_paths:
                out["path_traj"] = ("path_traj", np.arange(self.n_paths),
                                    {"long_name": "trajectory index of a kept sample path"})
        return out


def _pad_path(arr: np.ndarray, n_records: int) -> np.ndarray:
    if arr.shape[-1] == n_records:
        return arr
    out = np.full(arr.shape[:-1] + (n_records,), np.nan)
    out[..., : arr.shape[-1]] = arr
    return out


class Store(abc.ABC):
    """Where a sweep's finished points go: which are done, one point's results, the final dataset."""

    @abc.abstractmethod
    def done_mask(self) -> np.ndarray:
        """Boolean array of the grid's shape: True where the point's results are stored."""

    @abc.abstractmethod
    def write(self, result: dict) -> None:
        """Store one point's results (``index``, ``scalars``, ``paths`` as returned by `run_point`)."""

    @abc.abstractmethod
    def assemble(self, static: dict, attrs: dict, session: dict | None) -> xr.Dataset:
        """The sweep's dataset once every point is stored.

        ``attrs`` are the dataset's attributes (provenance, with ``session`` already in them); ``session``
        is what this session adds (wall time, scheduler, points computed), None when it computed nothing,
        so that a no-op re-run leaves an on-disk store as the session that computed it wrote it.
        """


class _MemoryStore(Store):
    """Results in memory; the base of the on-disk stores' assembly."""

    def __init__(self, layout: Layout):
        self.layout = layout
        self.arrays: dict[str, np.ndarray] = {}
        self.done = np.zeros(layout.shape, dtype=np.int8)

    def done_mask(self) -> np.ndarray:
        return self.done.astype(bool)

    def write(self, result: dict) -> None:
        idx = tuple(result["index"])
        for name, value in {**result["scalars"], **result["paths"]}.items():
            if name not in self.arrays:
                self.arrays[name] = np.full(self.layout.var_shape(name), np.nan)
            if name.startswith("path_"):
                value = _pad_path(np.asarray(value, float), self.layout.n_records)
            self.arrays[name][idx] = value
        self.done[idx] = 1

    def dataset(self, static: dict, attrs: dict) -> xr.Dataset:
        lay = self.layout
        coords = {d: (d, np.asarray(v)) for d, v in lay.coords.items()}
        coords.update(lay.extra_coords())
        data = {k: (lay.var_dims(k), v) for k, v in self.arrays.items()}
        data.update(static)
        data["point_done"] = (tuple(lay.dims), self.done.copy())
        return xr.Dataset(data, coords=coords, attrs=attrs)

    def assemble(self, static: dict, attrs: dict, session: dict | None) -> xr.Dataset:
        return self.dataset(static, attrs)


class _NetCDFStore(_MemoryStore):
    """``X.nc``: finished points in ``X.nc.parts/`` (atomic files); the .nc written at the end."""

    def __init__(self, layout: Layout, path: Path, digest: str):
        super().__init__(layout)
        self.path = path
        self.parts = path.with_name(path.name + ".parts")
        self.parts.mkdir(parents=True, exist_ok=True)
        ident = self.parts / "sweep.json"
        if ident.exists():
            if json.loads(ident.read_text()).get("sweep_digest") != digest:
                raise ParameterError(f"{str(self.parts)!r} holds points of a different sweep; "
                                     "delete it or choose another store path")
        else:
            tmp = ident.with_suffix(".tmp")
            tmp.write_text(json.dumps({"sweep_digest": digest}))
            os.replace(tmp, ident)
        for f in sorted(self.parts.glob("point-*.npz")):
            try:
                with np.load(f) as data:
                    result = _unpack_npz(data)
            except Exception:  # noqa: BLE001 - a damaged part is recomputed
                f.unlink(missing_ok=True)
                continue
            super().write(result)
        for f in self.parts.glob("*.tmp*"):
            f.unlink(missing_ok=True)

    def write(self, result: dict) -> None:
        flat = int(np.ravel_multi_index(result["index"], self.layout.shape))
        target = self.parts / f"point-{flat:08d}.npz"
        tmp = self.parts / f"point-{flat:08d}.tmp.npz"
        np.savez(tmp, __index__=np.asarray(result["index"], dtype=np.int64),
                 **{f"s:{k}": np.float64(v) for k, v in result["scalars"].items()},
                 **{f"p:{k}": np.asarray(v) for k, v in result["paths"].items()})
        os.replace(tmp, target)
        super().write(result)

    def finish(self, ds: xr.Dataset) -> None:
        write_dataset(ds, self.path)
        shutil.rmtree(self.parts, ignore_errors=True)

    def assemble(self, static: dict, attrs: dict, session: dict | None) -> xr.Dataset:
        ds = self.dataset(static, attrs)
        self.finish(ds)
        return ds


def _unpack_npz(data) -> dict:
    return {"index": tuple(int(i) for i in data["__index__"]),
            "scalars": {k[2:]: float(data[k]) for k in data.files if k.startswith("s:")},
            "paths": {k[2:]: data[k] for k in data.files if k.startswith("p:")}}


class _ZarrStore(Store):
    """``X.zarr``: created up front, written point by point by this (single) process."""

    def __init__(self, layout: Layout, path: Path, digest: str, static: dict, attrs: dict):
        zarr = _import_zarr()
        self.layout, self.path = layout, path
        if path.exists():
            try:
                group = zarr.open_group(str(path), mode="r+", zarr_format=2)
                found = group.attrs.get("sweep_digest")
            except Exception as exc:  # noqa: BLE001
                raise ParameterError(f"{str(path)!r} exists but is not a sweep store ({exc}); "
                                     "delete it or choose another path") from None
            if found != digest:
                raise ParameterError(f"{str(path)!r} holds a different sweep (other grid, model or settings); "
                                     "delete it or choose another store path")
            for f in path.rglob("*.partial"):  # temp files of a killed write
                f.unlink(missing_ok=True)
        else:
            coords = {d: (d, np.asarray(v)) for d, v in layout.coords.items()}
            coords.update(layout.extra_coords())
            template = xr.Dataset({**static, "point_done": (tuple(layout.dims), np.zeros(layout.shape, np.int8))},
                                  coords=coords, attrs=attrs)
            template["point_done"].attrs["long_name"] = LONG_NAMES["point_done"][0]
            enc = {"point_done": {"chunks": layout.scalar_chunks()}}
            for k in static:
                enc[k] = {"chunks": layout.scalar_chunks()}
            tmp = path.with_name(path.name + ".creating")
            shutil.rmtree(tmp, ignore_errors=True)
            netcdf_safe(template).to_zarr(tmp, mode="w-", consolidated=False, zarr_format=2, encoding=enc)
            os.replace(tmp, path)  # a store either exists completely or not at all
            group = zarr.open_group(str(path), mode="r+", zarr_format=2)
        self.group = group

    def done_mask(self) -> np.ndarray:
        return np.asarray(self.group["point_done"][...]).astype(bool)

    def _array(self, name: str):
        if name in self.group:
            return self.group[name]
        attrs = {"_ARRAY_DIMENSIONS": list(self.layout.var_dims(name))}
        if name in LONG_NAMES:
            ln, units = LONG_NAMES[name]
            attrs["long_name"] = ln
            if units:
                attrs["units"] = units
        return self.group.create_array(name, shape=self.layout.var_shape(name), dtype="float64",
                                       chunks=self.layout.var_chunks(name), fill_value=np.nan,
                                       attributes=attrs)

    def write(self, result: dict) -> None:
        idx = tuple(result["index"])
        for name, value in result["scalars"].items():
            self._array(name)[idx] = value
        for name, value in result["paths"].items():
            self._array(name)[idx] = _pad_path(np.asarray(value, float), self.layout.n_records)
        self.group["point_done"][idx] = 1  # last: the point counts as done only after its data

    def finish(self, attrs_update: dict | None) -> xr.Dataset:
        if attrs_update:
            self.group.attrs.update(attrs_update)
        with xr.open_zarr(self.path, consolidated=False) as ds:
            return ds.load()

    def assemble(self, static: dict, attrs: dict, session: dict | None) -> xr.Dataset:
        return self.finish(session)


class _FinishedNetCDFStore(Store):
    """``X.nc`` of a finished sweep: read back, nothing left to compute."""

    def __init__(self, layout: Layout, path: Path, digest: str):
        ds = open_dataset(path)
        if ds.attrs.get("sweep_digest") != digest:
            raise ParameterError(f"{str(path)!r} holds a different sweep (other grid, model or settings); "
                                 "delete it or choose another store path")
        self.layout, self.ds = layout, ds

    def done_mask(self) -> np.ndarray:
        return np.ones(self.layout.shape, dtype=bool)

    def write(self, result: dict) -> None:
        raise RuntimeError("a finished NetCDF sweep store is read-only")  # done_mask leaves nothing to write

    def assemble(self, static: dict, attrs: dict, session: dict | None) -> xr.Dataset:
        return self.ds


def open_store(store: str | os.PathLike | None, layout: Layout, digest: str, static: dict, attrs: dict) -> Store:
    """The store for ``sweep(store=...)``: None (memory), ``.zarr`` or ``.nc``; resumes what a store holds."""
    path = Path(store) if store is not None else None
    if path is None:
        st = _MemoryStore(layout)
    elif path.suffix == ".zarr":
        st = _ZarrStore(layout, path, digest, static, attrs)
    elif path.suffix in (".nc", ".nc4", ".h5", ".netcdf"):
        if path.exists():
            return _FinishedNetCDFStore(layout, path, digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        st = _NetCDFStore(layout, path, digest)
    else:
        raise ParameterError(f"store must end in .zarr or .nc, got {str(path)!r}")
    return st
