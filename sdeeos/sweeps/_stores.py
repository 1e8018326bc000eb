"""Sweep stores: where finished points go, behind one `Store` interface.

* `_MemoryStore` (``store=None``): results in memory only;
* `_ZarrStore` (``"name.zarr"``): created up front and written point by point (each chunk write is an
  atomic rename, and a point's ``point_done`` flag is written after its data), so a sweep killed at any
  moment -- SIGKILL included -- resumes where it stopped and never loses a finished point;
* `_NetCDFStore` (``"name.nc"``): finished points go to ``name.nc.parts/`` (one atomically written file
  each); the NetCDF file is assembled once every point is done and the parts are removed;
  `_FinishedNetCDFStore` is such a file whose sweep is complete (nothing left to compute).

A store made by a *different* sweep (other grid, settings or model) is never overwritten: that is an error.

Damage is detected: every finished point carries a checksum (in its part file, or in the Zarr
store's ``point_checksum``); on resume each finished point is verified, and one that fails -- a
truncated or deleted chunk, a corrupt part -- is recomputed and reported in one line on stderr.
A Zarr store's skeleton -- every array's metadata (``.zarray``, ``.zattrs``), the coordinates and the
variables known before running -- is compared with the one this sweep would write and rewritten
where it differs (reported in one line); only a store whose root attributes (which identify the
sweep) cannot be read is refused, in one line naming it.
The caller holds the store's lock (`sdeeos._storelock`) for as long as a store object is open.
"""

from __future__ import annotations

import abc
import dataclasses
import itertools
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import xarray as xr

from .._checksum import STATIC_ATTR, arrays_digest, point_checksum
from .._errors import DamagedDataError, DistExtraMissingError, ParameterError, StoreMismatchError
from .._io import netcdf_safe, open_dataset, write_dataset
from .._labels import describe, label_dataset
from .._storelock import remove_stale_temps, unique_temp_path

__all__ = ["Store", "Layout", "LONG_NAMES", "open_store"]

#: Per-point results that are counts: stored as int64, so that they read back as integers.
INTEGER_RESULTS = ("n_alive", "n_diverged")

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
    "point_checksum": ("checksum of this point's stored results (0: none)", None),
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

    def __init__(self, layout: Layout, path: Path, digest: str, labels: dict | None = None):
        # The caller holds the store's lock: every temporary here is a killed writer's leftover.
        super().__init__(layout)
        self.path = path
        self.digest = digest
        self.parts = path.with_name(path.name + ".parts")
        self.parts.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(self.parts)
        remove_stale_temps(path.parent, path)
        for f in self.parts.glob("*.tmp*"):  # names used before temporaries were per process
            f.unlink(missing_ok=True)
        ident = self.parts / "sweep.json"
        found = None
        if ident.exists():
            try:
                found = json.loads(ident.read_text()).get("sweep_digest")
            except (ValueError, UnicodeDecodeError, AttributeError):
                _report(f"{str(ident)!r} is damaged; rewriting it (each finished point is checked on its own)")
                found = digest
            if found != digest:
                raise StoreMismatchError(f"{str(self.parts)!r} holds points of a different sweep; "
                                     "delete it or choose another store path")
        if found is None or not _json_ok(ident):
            tmp = unique_temp_path(ident)
            tmp.write_text(json.dumps({"sweep_digest": digest}))
            os.replace(tmp, ident)
        labels = labels or {}
        for f in sorted(self.parts.glob("point-*.npz")):
            try:
                with np.load(f) as data:
                    result = _unpack_npz(data, digest)
            except Exception as exc:  # noqa: BLE001 - a damaged part is recomputed
                flat = f.stem.split("-")[-1]
                try:
                    label = labels.get(tuple(int(i) for i in np.unravel_index(int(flat), layout.shape)), flat)
                except ValueError:
                    label = flat
                _report(f"sweep store {str(path)!r}: finished point ({label}) is damaged "
                        f"({_reason(exc)}); recomputing it")
                f.unlink(missing_ok=True)
                continue
            super().write(result)

    def write(self, result: dict) -> None:
        flat = int(np.ravel_multi_index(result["index"], self.layout.shape))
        target = self.parts / f"point-{flat:08d}.npz"
        tmp = unique_temp_path(target, ".npz")
        entries = {"__index__": np.asarray(result["index"], dtype=np.int64),
                   "__sweep__": np.asarray(self.digest),
                   **{f"s:{k}": np.float64(v) for k, v in result["scalars"].items()},
                   **{f"p:{k}": np.asarray(v) for k, v in result["paths"].items()}}
        try:
            np.savez(tmp, __sha256__=np.asarray(arrays_digest(entries)), **entries)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        super().write(result)

    def finish(self, ds: xr.Dataset) -> None:
        write_dataset(ds, self.path)  # renamed into place (with its checksum) before the parts go
        shutil.rmtree(self.parts, ignore_errors=True)

    def assemble(self, static: dict, attrs: dict, session: dict | None) -> xr.Dataset:
        ds = self.dataset(static, attrs)
        self.finish(ds)
        return ds


def _report(message: str) -> None:
    """One line on stderr about damage found and repaired (the run goes on)."""
    print(f"sdeeos: {message}", file=sys.stderr, flush=True)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:120]}" if text else type(exc).__name__


def _read_json(path: Path):
    """The JSON value stored at ``path``, or None if it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def _is_result_name(name: str) -> bool:
    """A name `run_point` can give a result variable (no metadata-like or hidden names)."""
    return bool(name) and not name.startswith(".") and name.replace("_", "a").isalnum()


def _json_ok(path: Path) -> bool:
    try:
        json.loads(path.read_text())
        return True
    except (OSError, ValueError, UnicodeDecodeError):
        return False


class _PartDamaged(Exception):
    pass


def _unpack_npz(data, digest: str | None = None) -> dict:
    entries = {k: data[k] for k in data.files if k != "__sha256__"}
    if "__sha256__" not in data.files or str(data["__sha256__"]) != arrays_digest(entries):
        raise _PartDamaged("checksum mismatch")
    if digest is not None and str(data["__sweep__"]) != digest:
        raise _PartDamaged("belongs to another sweep")
    return {"index": tuple(int(i) for i in data["__index__"]),
            "scalars": {k[2:]: float(data[k]) for k in data.files if k.startswith("s:")},
            "paths": {k[2:]: data[k] for k in data.files if k.startswith("p:")}}


class _ZarrStore(Store):
    """``X.zarr``: created up front, written point by point by this (single) process."""

    def __init__(self, layout: Layout, path: Path, digest: str, static: dict, attrs: dict,
                 labels: dict | None = None):
        # The caller holds the store's lock: every temporary here is a killed writer's leftover.
        zarr = _import_zarr()
        self.layout, self.path = layout, path
        self.static = set(static)
        self.labels = labels or {}
        remove_stale_temps(path.parent, path)
        if path.exists():
            root = _read_json(path / ".zattrs")
            if not path.is_dir() or (root is None and not (path / ".zarray").exists() and _read_json(path / ".zgroup") is None):
                raise ParameterError(f"{str(path)!r} exists but is not a sweep store; delete it or choose another path")
            if not isinstance(root, dict) or not isinstance(root.get("sweep_digest"), str):
                raise DamagedDataError(f"sweep store {str(path)!r} is damaged: its root attributes (.zattrs), which "
                                       "identify the sweep, cannot be read; delete it to compute the sweep again")
            if root["sweep_digest"] != digest:
                raise StoreMismatchError(f"{str(path)!r} holds a different sweep (other grid, model or settings); "
                                     "delete it or choose another store path")
            for f in path.rglob("*.partial"):  # temp files of a killed write
                f.unlink(missing_ok=True)
            self._repair_skeleton(static, attrs)
            try:
                self.group = zarr.open_group(str(path), mode="r+", zarr_format=2)
            except Exception as exc:  # noqa: BLE001 - the skeleton was just rewritten: should not happen
                raise DamagedDataError(f"sweep store {str(path)!r} is damaged and cannot be opened "
                                       f"({_reason(exc)}); delete it to compute the sweep again") from None
            self._repair()
        else:
            tmp = unique_temp_path(path, ".zarr")
            try:
                self._write_template(tmp, static, attrs)
                os.replace(tmp, path)  # a store either exists completely or not at all
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            self.group = zarr.open_group(str(path), mode="r+", zarr_format=2)

    def _write_template(self, target: Path, static: dict, attrs: dict) -> None:
        """The store before any point: coordinates, the variables known before running, done flags."""
        layout = self.layout
        coords = {d: (d, np.asarray(v)) for d, v in layout.coords.items()}
        coords.update(layout.extra_coords())
        template = xr.Dataset({**static, "point_done": (tuple(layout.dims), np.zeros(layout.shape, np.int8)),
                               "point_checksum": (tuple(layout.dims), np.zeros(layout.shape, np.uint64))},
                              coords=coords, attrs=attrs)
        template["point_done"].attrs["long_name"] = LONG_NAMES["point_done"][0]
        template["point_checksum"].attrs.update(long_name=LONG_NAMES["point_checksum"][0],
                                                **{STATIC_ATTR: " ".join(sorted(static))})
        enc = {"point_done": {"chunks": layout.scalar_chunks()},
               "point_checksum": {"chunks": layout.scalar_chunks()}}
        for k in static:
            enc[k] = {"chunks": layout.scalar_chunks()}
        label_dataset(netcdf_safe(template)).to_zarr(target, mode="w-", consolidated=False, zarr_format=2, encoding=enc)

    # -- the skeleton: what this sweep writes before any point, and the metadata of the result arrays.
    def _repair_skeleton(self, static: dict, attrs: dict) -> None:
        """Compare every metadata file, coordinate and pre-known variable with what this sweep writes;
        rewrite what differs (one line each).  Result arrays keep their chunks, which the points'
        checksums verify; an array whose metadata had to be rewritten may fail them and be recomputed."""
        zarr = _import_zarr()
        fresh = unique_temp_path(self.path, ".zarr")
        try:
            self._write_template(fresh, static, attrs)
            group = zarr.open_group(str(fresh), mode="r+", zarr_format=2)
            if _read_json(self.path / ".zgroup") != _read_json(fresh / ".zgroup"):
                _report(f"sweep store {str(self.path)!r}: metadata .zgroup is damaged; rewriting it")
                self._replace_file(fresh / ".zgroup", ".zgroup")
            root, expected = _read_json(self.path / ".zattrs"), _read_json(fresh / ".zattrs")
            if any(root.get(k) != v for k, v in expected.items()):
                # the sweep's own attributes; a later session's (wall time, scheduler) are not rebuilt
                _report(f"sweep store {str(self.path)!r}: root attributes .zattrs are damaged; rewriting them")
                self._replace_file(fresh / ".zattrs", ".zattrs")
            templated = sorted(p.name for p in fresh.iterdir() if p.is_dir())
            for name in templated:  # coordinates, static variables, point_done, point_checksum
                meta_ok = self._repair_metadata(fresh, name)
                if name in ("point_done", "point_checksum"):
                    continue  # their chunks are verified point by point in _repair
                if not meta_ok or not self._same_array(fresh, name):
                    _report(f"sweep store {str(self.path)!r}: {name!r} is damaged; rewriting it")
                    shutil.rmtree(self.path / name, ignore_errors=True)
                    shutil.copytree(fresh / name, self.path / name)
            for sub in sorted(p for p in self.path.iterdir() if p.is_dir() and p.name not in templated):
                name = sub.name
                if not _is_result_name(name):
                    continue  # not an array this sweep writes: left alone
                found = _read_json(sub / ".zarray")
                # stores written before the counts were int64 keep their float64 counts
                old_float = isinstance(found, dict) and found.get("dtype") == "<f8" and name in INTEGER_RESULTS
                self._create(group, name, "float64" if old_float else None)
                self._repair_metadata(fresh, name)
        finally:
            shutil.rmtree(fresh, ignore_errors=True)

    def _replace_file(self, source: Path, rel: str) -> None:
        target = self.path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = unique_temp_path(target)
        try:
            shutil.copyfile(source, tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    def _repair_metadata(self, fresh: Path, name: str) -> bool:
        """Rewrite ``name``'s ``.zarray``/``.zattrs`` where they differ from ``fresh``'s; True if none did."""
        ok = True
        for meta in (".zarray", ".zattrs"):
            expected = _read_json(fresh / name / meta)
            if expected is not None and _read_json(self.path / name / meta) != expected:
                _report(f"sweep store {str(self.path)!r}: metadata {name}/{meta} is damaged; rewriting it")
                self._replace_file(fresh / name / meta, f"{name}/{meta}")
                ok = False
        return ok

    def _same_array(self, fresh: Path, name: str) -> bool:
        zarr = _import_zarr()
        want = np.asarray(zarr.open_array(str(fresh / name), mode="r", zarr_format=2)[...])
        try:
            got = np.asarray(zarr.open_array(str(self.path / name), mode="r", zarr_format=2)[...])
        except Exception:  # noqa: BLE001 - unreadable: rewritten
            return False
        return got.dtype == want.dtype and got.shape == want.shape and \
            bool(np.array_equal(got, want, equal_nan=want.dtype.kind == "f"))

    # -- damage: unreadable chunks are removed (their points read as missing), then every point
    # marked done is checked against its checksum; failures are recomputed, each one reported.
    def _point_arrays(self) -> list[str]:
        n = len(self.layout.dims)
        return [k for k, a in self.group.arrays()
                if len(a.shape) >= n and tuple(a.attrs.get("_ARRAY_DIMENSIONS", ())[:n]) == tuple(self.layout.dims)
                and k not in self.static and k not in self.layout.dims]

    def _read_or_drop(self, name: str) -> np.ndarray:
        arr = self.group[name]
        try:
            return np.asarray(arr[...])
        except Exception:  # noqa: BLE001 - find the unreadable chunks
            pass
        out = np.full(arr.shape, arr.fill_value if arr.fill_value is not None else 0, dtype=arr.dtype)
        grid = [range(-(-s // c)) for s, c in zip(arr.shape, arr.chunks)]
        for coords in itertools.product(*grid):
            sl = tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(coords, arr.chunks, arr.shape))
            try:
                out[sl] = arr[sl]
            except Exception as exc:  # noqa: BLE001
                _report(f"sweep store {str(self.path)!r}: chunk {'.'.join(map(str, coords))} of {name!r} is "
                        f"damaged ({_reason(exc)}); its points will be recomputed")
                (self.path / name / ".".join(map(str, coords))).unlink(missing_ok=True)
        return out

    def _repair(self) -> None:
        dims = tuple(self.layout.dims)
        if "point_checksum" not in self.group:
            self.group.create_array("point_checksum", shape=self.layout.shape, dtype="uint64",
                                    chunks=self.layout.scalar_chunks(), fill_value=0,
                                    attributes={"_ARRAY_DIMENSIONS": list(dims),
                                                "long_name": LONG_NAMES["point_checksum"][0],
                                                STATIC_ATTR: " ".join(sorted(self.static))})
        names = [n for n in self._point_arrays() if n not in ("point_done", "point_checksum")]
        flags = self._read_or_drop("point_done")
        damaged_flags = (flags != 0) & (flags != 1)
        for idx in zip(*np.nonzero(damaged_flags)):  # a flag is 0 or 1; anything else is damage
            idx = tuple(int(i) for i in idx)
            _report(f"sweep store {str(self.path)!r}: the done flag of point ({self.labels.get(idx, idx)}) is "
                    f"damaged ({int(flags[idx])}); recomputing the point")
            self.group["point_done"][idx] = 0
        done = flags == 1
        sums = self._read_or_drop("point_checksum").astype(np.uint64)
        values = {n: self._read_or_drop(n).astype(np.float64) for n in names}
        bad = []
        for idx in zip(*np.nonzero(done)):
            idx = tuple(int(i) for i in idx)
            if int(sums[idx]) != point_checksum({n: v[idx] for n, v in values.items()}):
                bad.append(idx)
        for idx in bad:
            _report(f"sweep store {str(self.path)!r}: finished point ({self.labels.get(idx, idx)}) fails its "
                    "checksum; recomputing it")
            self.group["point_done"][idx] = 0
        self.n_damaged = len(bad) + int(damaged_flags.sum())

    def done_mask(self) -> np.ndarray:
        return np.asarray(self.group["point_done"][...]).astype(bool)

    def _array(self, name: str):
        if name in self.group:
            return self.group[name]
        return self._create(self.group, name)

    def _create(self, group, name: str, dtype: str | None = None):
        """Result array ``name`` in ``group``: float64, NaN where no point wrote it; the counts
        (`INTEGER_RESULTS`) int64 without a fill value (a fill value would make readers mask it and
        turn them into floats), 0 where no point wrote them (``point_done`` tells)."""
        dtype = dtype or ("int64" if name in INTEGER_RESULTS else "float64")
        fill = None if dtype == "int64" else np.nan
        attrs = {"_ARRAY_DIMENSIONS": list(self.layout.var_dims(name))}
        label = describe(name)  # the registry of sdeeos._labels (arrays are made point by point)
        if label is not None:
            attrs.update(label.attrs())
        return group.create_array(name, shape=self.layout.var_shape(name), dtype=dtype,
                                  chunks=self.layout.var_chunks(name), fill_value=fill, attributes=attrs)

    def write(self, result: dict) -> None:
        idx = tuple(result["index"])
        values = {k: np.float64(v) for k, v in result["scalars"].items()}
        values.update({k: _pad_path(np.asarray(v, float), self.layout.n_records) for k, v in result["paths"].items()})
        for name, value in values.items():
            self._array(name)[idx] = value
        self.group["point_checksum"][idx] = point_checksum(values)
        self.group["point_done"][idx] = 1  # last: the point counts as done only after its data

    def finish(self, attrs_update: dict | None) -> xr.Dataset:
        if attrs_update:
            self.group.attrs.update(attrs_update)
        with xr.open_zarr(self.path, consolidated=False) as ds:
            return ds.load().drop_vars("point_checksum", errors="ignore")

    def assemble(self, static: dict, attrs: dict, session: dict | None) -> xr.Dataset:
        return self.finish(session)


class _FinishedNetCDFStore(Store):
    """``X.nc`` of a finished sweep: read back, nothing left to compute."""

    def __init__(self, layout: Layout, path: Path, digest: str):
        ds = open_dataset(path)
        if ds.attrs.get("sweep_digest") != digest:
            raise StoreMismatchError(f"{str(path)!r} holds a different sweep (other grid, model or settings); "
                                 "delete it or choose another store path")
        self.layout, self.ds = layout, ds

    def done_mask(self) -> np.ndarray:
        return np.ones(self.layout.shape, dtype=bool)

    def write(self, result: dict) -> None:
        raise RuntimeError("a finished NetCDF sweep store is read-only")  # done_mask leaves nothing to write

    def assemble(self, static: dict, attrs: dict, session: dict | None) -> xr.Dataset:
        return self.ds


def open_store(store: str | os.PathLike | None, layout: Layout, digest: str, static: dict, attrs: dict,
               labels: dict | None = None) -> Store:
    """The store for ``sweep(store=...)``: None (memory), ``.zarr`` or ``.nc``; resumes what a store holds."""
    path = Path(store) if store is not None else None
    if path is None:
        st = _MemoryStore(layout)
    elif path.suffix == ".zarr":
        st = _ZarrStore(layout, path, digest, static, attrs, labels)
    elif path.suffix in (".nc", ".nc4", ".h5", ".netcdf"):
        if path.exists():
            return _FinishedNetCDFStore(layout, path, digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        st = _NetCDFStore(layout, path, digest, labels)
    else:
        raise ParameterError(f"store must end in .zarr or .nc, got {str(path)!r}")
    return st
