r"""`sweep`: run `simulate` over a grid of parameters and return one labelled dataset.

A sweep is a product grid over model parameters (``eta``, ``sigma``, ...), run settings (``method``,
``seed``, ``n_traj``, ``n_steps``, ``burn_in``, ``backend``) and mapped parameters (``batch_size``,
``closure_validity_ratio``, see `PARAMETER_MAPS`).  Every grid point is one `simulate` call and one
task; its scalar summaries (measurements *and* the theory's predictions) land at that point of a
dataset with one dimension per swept parameter.

Storage (``store=``):

* ``None``: results are kept in memory only;
* ``"name.zarr"``: a Zarr store created up front and written point by point (each chunk write is
  an atomic rename, and a point's ``point_done`` flag is written after its data), so a sweep killed
  at any moment -- SIGKILL included -- resumes where it stopped and never loses a finished point;
* ``"name.nc"``: finished points go to ``name.nc.parts/`` (one atomically written file each); the
  NetCDF file is assembled once every point is done and the parts are removed.

Re-running a finished sweep reads the store and computes nothing.  A store made by a *different*
sweep (other grid, settings or model) is never overwritten: that is an error.

Execution (``scheduler=``): by default a local `dask.distributed` cluster is started for the sweep
(one single-threaded worker process per core, ``NUMBA_NUM_THREADS=1``) and closed afterwards; a
scheduler address (``"tcp://host:8786"``) or a ``distributed.Client`` runs the same sweep on an
existing cluster; ``"serial"`` runs the points one after another in this process (no dask).  Points
with ``backend="cupy"`` ask for the worker resource ``GPU=1``, so they only go to GPU workers
(``dask worker ADDR --resources GPU=1``).

Results do not depend on where a point runs: every random draw is keyed by (seed, trajectory, step).
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import itertools
import json
import logging
import math
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import xarray as xr

from . import _rng
from ._rng import _as_seed
from ._checksum import STATIC_ATTR, arrays_digest, point_checksum
from ._errors import BackendUnavailableError, DamagedDataError, ParameterError, SdeeosError
from ._interrupts import SigintDeferred
from ._provenance import provenance_attrs
from ._resources import max_threads
from ._storelock import StoreLock, remove_stale_temps, unique_temp_path
from ._validation import check_int, check_nonnegative, check_positive
from .models import MODEL_REGISTRY
from .models._base import Model

__all__ = [
    "sweep",
    "PARAMETER_MAPS",
    "RUN_SETTINGS",
    "SchedulerUnreachableError",
    "NoWorkersError",
    "DistExtraMissingError",
    "sweep_parameter_names",
]

#: Run settings that may be swept like parameters (a dimension each).
RUN_SETTINGS = ("method", "seed", "n_traj", "n_steps", "burn_in", "backend")

#: Backends whose points need a GPU worker (dask resource ``GPU``).
GPU_BACKENDS = ("cupy",)

DEFAULT_CONNECT_TIMEOUT_S = 5.0
DEFAULT_NO_WORKERS_TIMEOUT_S = 60.0
_POLL_S = 1.0

_NC_SUFFIXES = (".nc", ".nc4", ".h5", ".netcdf")

# Chunks of the per-point scalar variables hold at most this many points (one chunk write per
# point and variable: small grids are a single chunk, large ones stay cheap to rewrite).
_SCALAR_CHUNK_POINTS = 4096


class SchedulerUnreachableError(SdeeosError, ConnectionError):
    """The Dask scheduler given to `sweep` could not be reached within the connect timeout."""


class NoWorkersError(SdeeosError, RuntimeError):
    """The Dask cluster had no workers for longer than ``no_workers_timeout``."""


class DistExtraMissingError(SdeeosError, ImportError):
    """dask/distributed or zarr is needed but not installed (the ``dist`` extra)."""


def _import_distributed():
    try:
        import distributed
    except ImportError as exc:  # pragma: no cover - depends on extras
        raise DistExtraMissingError(
            "running a sweep on a Dask cluster needs the 'dist' extra: pip install 'sdeeos[dist]' "
            "(or pass scheduler='serial' to run the points in this process)") from exc
    return distributed


def _import_zarr():
    try:
        import zarr
    except ImportError as exc:  # pragma: no cover - depends on extras
        raise DistExtraMissingError(
            "a .zarr sweep store needs the 'dist' extra: pip install 'sdeeos[dist]' "
            "(or use a .nc store)") from exc
    return zarr


# --------------------------------------------------------------------------- parameter maps
@dataclasses.dataclass(frozen=True)
class ParameterMap:
    """A swept quantity that is not a model parameter but sets one (e.g. batch size -> noise)."""

    name: str
    target: str
    inputs: tuple[str, ...]          # extra parameters it consumes (required unless in ``defaults``)
    defaults: Mapping[str, Any]
    needs: tuple[str, ...]           # model parameters it reads (not consumed)
    doc: str
    fn: Callable[..., float]

    def apply(self, values: dict, model_params: Sequence[str]) -> None:
        if self.target not in model_params:
            raise ParameterError(f"{self.name} sets the model parameter {self.target!r}, which this model "
                                 f"does not have (its parameters: {', '.join(model_params)})")
        if self.target in values:
            raise ParameterError(f"give either {self.name} or {self.target}, not both "
                                 f"({self.name} sets {self.target}: {self.doc})")
        args = {}
        for k in self.inputs:
            if k in values:
                args[k] = values.pop(k)
            elif k in self.defaults:
                args[k] = self.defaults[k]
            else:
                raise ParameterError(f"{self.name} needs the parameter {k!r} ({self.doc})")
        for k in self.needs:
            if k not in values:
                raise ParameterError(f"{self.name} needs the model parameter {k!r} ({self.doc})")
            args[k] = values[k]
        values[self.target] = float(self.fn(values.pop(self.name), **args))


def _sigma_from_batch(batch_size, *, n_data, sigma_1, sampling):
    from .theory import batch_noise

    coef = float(batch_noise.centred_coefficient(batch_size, n_data, sampling))
    return check_positive("sigma_1", sigma_1) * math.sqrt(max(coef, 0.0))


def _sigma_from_validity_ratio(ratio, *, alpha, beta):
    r = check_positive("closure_validity_ratio", ratio)
    return 2.0 * alpha * math.sqrt(r / beta)


def _eta_from_eta_sq_alpha(a, *, alpha):
    return math.sqrt(check_positive("eta_sq_alpha", a) / alpha)


#: name -> map.  ``batch_size`` uses the exact mini-batch noise factor of `sdeeos.theory.batch_noise`
#: (math.md §0.1): ``sigma**2 = sigma_1**2 * a(B, n)``, ``a = (n-B)/(B(n-1))`` without replacement.
PARAMETER_MAPS: dict[str, ParameterMap] = {
    m.name: m for m in (
        ParameterMap(
            name="batch_size", target="sigma", inputs=("n_data", "sigma_1", "sampling"),
            defaults={"sampling": "without_replacement"}, needs=(), fn=_sigma_from_batch,
            doc="sigma**2 = sigma_1**2 * a(batch_size, n_data) with the exact mini-batch factor a of "
                "sdeeos.theory.batch_noise; a = (n-B)/(B(n-1)) for sampling without replacement"),
        ParameterMap(
            name="closure_validity_ratio", target="sigma", inputs=(), defaults={}, needs=("alpha", "beta"),
            fn=_sigma_from_validity_ratio,
            doc="sigma**2 = ratio * 4 alpha**2 / beta: the closure holds for ratio >> 1 (math.md §9.1)"),
        ParameterMap(
            name="eta_sq_alpha", target="eta", inputs=(), defaults={}, needs=("alpha",), fn=_eta_from_eta_sq_alpha,
            doc="eta = sqrt(eta_sq_alpha / alpha); eta**2 alpha is the per-step sharpening of eta*S, with "
                "closure_validity_ratio one of the reduced model's two dimensionless parameters"),
    )
}
_MAP_INPUTS = {k for m in PARAMETER_MAPS.values() for k in m.inputs}


def _model_params(cls) -> list[str]:
    sig = inspect.signature(cls.__init__)
    return [n for n, p in list(sig.parameters.items())[1:]
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _required_params(cls) -> list[str]:
    sig = inspect.signature(cls.__init__)
    return [n for n, p in list(sig.parameters.items())[1:]
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.default is inspect.Parameter.empty]


def sweep_parameter_names(model) -> list[str]:
    """Every name a grid (or ``params``) may use for ``model`` (a class, instance or registry name)."""
    cls = _resolve_model(model, None)[0]
    own = _model_params(cls)
    maps = [m for m in PARAMETER_MAPS if m not in own and PARAMETER_MAPS[m].target in own]
    inputs = sorted({k for m in maps for k in PARAMETER_MAPS[m].inputs})
    return own + list(RUN_SETTINGS) + maps + inputs


def _resolve_model(model, params) -> tuple[type, dict]:
    params = dict(params or {})
    if isinstance(model, str):
        if model not in MODEL_REGISTRY:
            raise ParameterError(f"model must be one of {sorted(MODEL_REGISTRY)}, got {model!r}")
        return MODEL_REGISTRY[model], params
    if isinstance(model, type) and issubclass(model, Model):
        return model, params
    if isinstance(model, Model):
        base = dict(model.parameters())
        base.update(params)
        return type(model), base
    raise ParameterError(f"model must be a Model class, instance or registry name, got {model!r}")


# --------------------------------------------------------------------------- points
@dataclasses.dataclass(frozen=True)
class PointSpec:
    """Everything one task needs: picklable, and enough to reproduce the point bit for bit."""

    index: tuple[int, ...]
    label: str
    model_cls: type
    model_kwargs: dict
    method: str
    n_traj: int
    n_steps: int
    burn_in: int
    seed: int
    backend: str
    record_every: int
    n_paths: int
    path_variables: tuple[str, ...] | None
    stationarity_check: bool
    n_threads: int | None

    def identity(self) -> dict:
        """The part of the spec that determines the result (not ``n_threads`` or the label)."""
        return {
            "model": f"{self.model_cls.__module__}.{self.model_cls.__qualname__}",
            "kwargs": {k: repr(v) for k, v in sorted(self.model_kwargs.items())},
            "method": self.method, "n_traj": self.n_traj, "n_steps": self.n_steps, "burn_in": self.burn_in,
            "seed": self.seed, "backend": self.backend, "record_every": self.record_every,
            "n_paths": self.n_paths, "path_variables": self.path_variables,
            "stationarity_check": self.stationarity_check,
        }

    @property
    def resources(self) -> dict | None:
        return {"GPU": 1} if self.backend in GPU_BACKENDS else None


def _jsonable(v):
    if isinstance(v, (np.generic,)):
        return v.item()
    return v


def _normalize_grid(grid: Mapping[str, Sequence], allowed: Sequence[str]) -> dict[str, list]:
    if not isinstance(grid, Mapping) or not grid:
        raise ParameterError("grid must be a non-empty mapping {parameter: [values, ...]}")
    out = {}
    for name, values in grid.items():
        if name not in allowed:
            raise ParameterError(f"grid parameter {name!r} is unknown; allowed: {', '.join(allowed)}")
        if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
            raise ParameterError(f"grid[{name!r}] must be a list of values, got {values!r}")
        values = [_jsonable(v) for v in values]
        if not values:
            raise ParameterError(f"grid[{name!r}] must have at least one value")
        if len(set(map(repr, values))) != len(values):
            raise ParameterError(f"grid[{name!r}] has repeated values: {values!r}")
        out[name] = values
    return out


def _resolve_setting(name, value, point, default=None):
    if callable(value):
        value = value(dict(point))
    return default if value is None else value


def _make_points(cls, base, grid, settings) -> list[PointSpec]:
    model_params = _model_params(cls)
    names = list(grid)
    points = []
    for combo in itertools.product(*(range(len(v)) for v in grid.values())):
        coord = {n: grid[n][i] for n, i in zip(names, combo)}
        label = ", ".join(f"{n}={v}" for n, v in coord.items())
        values = {**base, **coord}
        run = {k: values.pop(k) for k in RUN_SETTINGS if k in values}
        try:
            for m in PARAMETER_MAPS.values():
                if m.name in values and m.name not in model_params:
                    m.apply(values, model_params)
            stray = sorted(set(values) - set(model_params))
            if stray:
                used = [k for k in stray if k in _MAP_INPUTS]
                if used:
                    raise ParameterError(f"{', '.join(used)} only apply together with batch_size")
                raise ParameterError(f"unknown parameter(s) {', '.join(stray)} for {cls.__name__}")
            missing = [k for k in _required_params(cls) if k not in values]
            if missing:
                raise ParameterError(f"missing model parameter(s) {', '.join(missing)} for {cls.__name__}: "
                                     "give them in params or grid")
            model = cls(**values)
            method = model.check_method(run.get("method", settings["method"]))
            model.validate_run(method)
            ctx = {**model.parameters(), **coord, "method": method}
            n_traj = check_int("n_traj", _resolve_setting("n_traj", run.get("n_traj", settings["n_traj"]), ctx), low=1)
            n_steps = check_int("n_steps", _resolve_setting("n_steps", run.get("n_steps", settings["n_steps"]), ctx),
                                low=1)
            ctx["n_steps"] = n_steps
            burn_in = _resolve_setting("burn_in", run.get("burn_in", settings["burn_in"]), ctx, n_steps // 2)
            burn_in = check_int("burn_in", burn_in, low=0, high=n_steps - 1)
            seed = run.get("seed", settings["seed"])
            _as_seed(seed)  # the RNG's own check: ParameterError unless an integer in [0, 2**64 - 1]
            backend = run.get("backend", settings["backend"])
            if not isinstance(backend, str):
                raise ParameterError(f"backend must be a string, got {backend!r}")
            if settings["stationarity_check"] and n_steps - burn_in < 4:
                raise ParameterError("stationarity_check needs n_steps - burn_in >= 4")
        except ParameterError as exc:
            raise ParameterError(f"grid point ({label}): {exc}") from None
        points.append(PointSpec(
            index=combo, label=label, model_cls=cls, model_kwargs=dict(values), method=method,
            n_traj=n_traj, n_steps=n_steps, burn_in=burn_in, seed=int(seed), backend=backend,
            record_every=settings["record_every"], n_paths=min(settings["n_paths"], n_traj),
            path_variables=settings["path_variables"], stationarity_check=settings["stationarity_check"],
            n_threads=settings["n_threads"]))
    return points


# --------------------------------------------------------------------------- one point (runs on a worker)
def _run_point(spec: PointSpec) -> dict:
    """Simulate one grid point; return its scalars (and kept paths) as plain numpy values."""
    from ._simulate import simulate

    start = time.perf_counter()
    model = spec.model_cls(**spec.model_kwargs)
    kw = dict(n_traj=spec.n_traj, n_steps=spec.n_steps, seed=spec.seed, backend=spec.backend,
              n_threads=spec.n_threads, progress=False)
    ds = simulate(model, spec.method, burn_in=spec.burn_in,
                  record_every=spec.record_every or None, **kw)
    scalars: dict[str, float] = {}
    for name, var in ds.data_vars.items():
        if var.ndim == 0 and np.issubdtype(var.dtype, np.number):
            scalars[name] = float(var.values)
    for k in ("closure_validity_ratio",):
        if isinstance(ds.attrs.get(k), (int, float)):
            scalars[k] = float(ds.attrs[k])
    if isinstance(ds.attrs.get("stationary_state"), str) and not ds.attrs["stationary_state"].startswith("n/a"):
        scalars["stationary_state_exists"] = float(ds.attrs["stationary_state"] == "exists")
    alive = ~ds["diverged"].values.astype(bool)
    if spec.stationarity_check and "sharpness_time_mean" in ds:
        scalars.update(_drift(model, spec, kw, ds, alive))
    paths: dict[str, np.ndarray] = {}
    if spec.record_every:
        names = [n[len("path_"):] for n in ds.data_vars if n.startswith("path_")]
        if spec.path_variables is not None:
            names = [n for n in names if n in spec.path_variables]
        for n in names:
            p = ds[f"path_{n}"].values  # (traj, step)
            if spec.n_paths:
                paths[f"path_{n}"] = np.ascontiguousarray(p[: spec.n_paths])
            with np.errstate(invalid="ignore"):
                paths[f"path_{n}_ensemble_mean"] = (p[alive].mean(axis=0) if alive.any()
                                                    else np.full(p.shape[1], np.nan))
    worker = ""
    try:  # which worker ran it (provenance); not an error outside dask
        from distributed import get_worker

        worker = get_worker().address
    except Exception:  # noqa: BLE001
        worker = "local-process"
    scalars["wall_time_s"] = time.perf_counter() - start
    return {"index": spec.index, "scalars": scalars, "paths": paths, "worker": worker}


def _drift(model, spec, kw, ds, alive) -> dict[str, float]:
    r"""Late-half minus early-half time mean of the sharpness, per trajectory, and its standard error.

    A second run with the same seed (bit-identical trajectories) averages only over the second half
    of the window; the first half follows by subtraction.  In a stationary run the difference has
    mean zero; trajectories are independent, so its standard error is std/sqrt(n).
    """
    from ._simulate import simulate

    b, t = spec.burn_in, spec.n_steps
    mid = b + (t - b) // 2
    late_ds = simulate(model, spec.method, burn_in=mid, **kw)
    full = ds["sharpness_time_mean"].values
    late = late_ds["sharpness_time_mean"].values
    early = (full * (t - b) - late * (t - mid)) / (mid - b)
    ok = alive & ~late_ds["diverged"].values.astype(bool)
    diff = (late - early)[ok]
    if diff.size < 2:
        return {"sharpness_drift": math.nan, "sharpness_drift_stderr": math.nan}
    return {"sharpness_drift": float(diff.mean()),
            "sharpness_drift_stderr": float(diff.std(ddof=1) / math.sqrt(diff.size))}


# --------------------------------------------------------------------------- layout and stores
_LONG_NAMES = {
    "wall_time_s": ("wall-clock time of this point", "s"),
    "sharpness_drift": ("late-half minus early-half time mean of the sharpness (stationarity check)",
                        "1/step size"),
    "sharpness_drift_stderr": ("standard error of sharpness_drift", "1/step size"),
    "point_done": ("1 once this point's results are stored", None),
    "point_checksum": ("checksum of this point's stored results (0: none)", None),
    "stationary_state_exists": ("1 if the closure has a stationary solution, else 0", None),
}


@dataclasses.dataclass
class _Layout:
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


class _MemoryStore:
    """Results in memory; the base of the on-disk stores' assembly."""

    def __init__(self, layout: _Layout):
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


class _NetCDFStore(_MemoryStore):
    """``X.nc``: finished points in ``X.nc.parts/`` (atomic files); the .nc written at the end."""

    def __init__(self, layout: _Layout, path: Path, digest: str, labels: dict | None = None):
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
                raise ParameterError(f"{str(self.parts)!r} holds points of a different sweep; "
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
        from ._io import write_dataset

        write_dataset(ds, self.path)  # renamed into place (with its checksum) before the parts go
        shutil.rmtree(self.parts, ignore_errors=True)


def _report(message: str) -> None:
    """One line on stderr about damage found and repaired (the run goes on)."""
    print(f"sdeeos: {message}", file=sys.stderr, flush=True)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:120]}" if text else type(exc).__name__


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


class _ZarrStore:
    """``X.zarr``: created up front, written point by point by this (single) process."""

    def __init__(self, layout: _Layout, path: Path, digest: str, static: dict, attrs: dict,
                 labels: dict | None = None):
        # The caller holds the store's lock: every temporary here is a killed writer's leftover.
        zarr = _import_zarr()
        self.layout, self.path = layout, path
        self.static = set(static)
        self.labels = labels or {}
        remove_stale_temps(path.parent, path)
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
            self.group = group
            self._repair()
        else:
            from ._io import _netcdf_safe

            coords = {d: (d, np.asarray(v)) for d, v in layout.coords.items()}
            coords.update(layout.extra_coords())
            template = xr.Dataset({**static, "point_done": (tuple(layout.dims), np.zeros(layout.shape, np.int8)),
                                   "point_checksum": (tuple(layout.dims), np.zeros(layout.shape, np.uint64))},
                                  coords=coords, attrs=attrs)
            template["point_done"].attrs["long_name"] = _LONG_NAMES["point_done"][0]
            template["point_checksum"].attrs.update(long_name=_LONG_NAMES["point_checksum"][0],
                                                    **{STATIC_ATTR: " ".join(sorted(static))})
            enc = {"point_done": {"chunks": layout.scalar_chunks()},
                   "point_checksum": {"chunks": layout.scalar_chunks()}}
            for k in static:
                enc[k] = {"chunks": layout.scalar_chunks()}
            tmp = unique_temp_path(path, ".zarr")
            try:
                _netcdf_safe(template).to_zarr(tmp, mode="w-", consolidated=False, zarr_format=2, encoding=enc)
                os.replace(tmp, path)  # a store either exists completely or not at all
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            group = zarr.open_group(str(path), mode="r+", zarr_format=2)
        self.group = group

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
                                                "long_name": _LONG_NAMES["point_checksum"][0],
                                                STATIC_ATTR: " ".join(sorted(self.static))})
        names = [n for n in self._point_arrays() if n not in ("point_done", "point_checksum")]
        done = self._read_or_drop("point_done").astype(bool)
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
        self.n_damaged = len(bad)

    def done_mask(self) -> np.ndarray:
        return np.asarray(self.group["point_done"][...]).astype(bool)

    def _array(self, name: str):
        if name in self.group:
            return self.group[name]
        attrs = {"_ARRAY_DIMENSIONS": list(self.layout.var_dims(name))}
        if name in _LONG_NAMES:
            ln, units = _LONG_NAMES[name]
            attrs["long_name"] = ln
            if units:
                attrs["units"] = units
        return self.group.create_array(name, shape=self.layout.var_shape(name), dtype="float64",
                                       chunks=self.layout.var_chunks(name), fill_value=np.nan,
                                       attributes=attrs)

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


# --------------------------------------------------------------------------- scheduling
class _Runner:
    """Runs point specs serially or on a dask cluster; yields results as they finish."""

    def __init__(self, scheduler, n_workers, connect_timeout, need_gpu, n_todo,
                 no_workers_timeout=DEFAULT_NO_WORKERS_TIMEOUT_S):
        self.no_workers_timeout = no_workers_timeout
        self.client = None
        self.cluster = None
        self.own = False
        self.description = "serial"
        if isinstance(scheduler, str) and scheduler == "serial":
            return
        distributed = _import_distributed()
        if scheduler is None or (isinstance(scheduler, str) and scheduler == "local"):
            n = n_workers or min(_n_cores(), max(n_todo, 1))
            n = check_int("n_workers", n, low=1)
            if need_gpu:
                _require_local_gpu()
            self.cluster = distributed.LocalCluster(
                n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                env={"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                     "OPENBLAS_NUM_THREADS": "1", "TQDM_DISABLE": "1"},
                resources={"GPU": 1} if need_gpu else None, silence_logs=logging.ERROR)
            self.client = distributed.Client(self.cluster, set_as_default=False)
            self.own = True
            self.description = f"local dask cluster, {n} worker(s) x 1 thread"
        elif isinstance(scheduler, distributed.Client):
            self.client = scheduler
            self.description = f"dask cluster at {scheduler.scheduler.address}"
        elif isinstance(scheduler, str):
            _probe_scheduler(scheduler, connect_timeout)
            try:
                self.client = distributed.Client(scheduler, timeout=connect_timeout, set_as_default=False)
            except Exception as exc:  # noqa: BLE001 - any failure to connect is reported the same way
                raise SchedulerUnreachableError(
                    f"could not connect to the Dask scheduler at {scheduler!r} within {connect_timeout:g} s "
                    f"({type(exc).__name__}: {exc})") from None
            self.own = True
            self.description = f"dask cluster at {scheduler}"
        else:
            raise ParameterError(f"scheduler must be None, 'local', 'serial', an address or a "
                                 f"distributed.Client, got {scheduler!r}")
        if need_gpu and self.cluster is None:
            info = (self.client.scheduler_info(n_workers=-1) if _accepts_n_workers(self.client)
                    else self.client.scheduler_info())
            workers = info.get("workers", {})
            if not any(w.get("resources", {}).get("GPU", 0) >= 1 for w in workers.values()):
                self.close()
                raise BackendUnavailableError(
                    "GPU points need a worker with the resource GPU=1, and no worker of this cluster has one "
                    "(start GPU workers with: dask worker ADDRESS --resources GPU=1)")

    def run(self, specs: list[PointSpec]):
        if self.client is None:
            for spec in specs:
                yield spec, _run_point(spec)
            return
        distributed = _import_distributed()
        futures = {}
        try:
            for spec in specs:
                fut = self.client.submit(_run_point, spec, pure=False, resources=spec.resources,
                                         key=f"sdeeos-point-{'-'.join(map(str, spec.index))}-{os.urandom(4).hex()}")
                futures[fut] = spec
            finished = distributed.as_completed(list(futures), loop=self.client.loop)
            idle_since, last_check = None, time.monotonic()
            while not finished.is_empty():
                # never block for good: between polls, notice a cluster without workers or a lost scheduler
                done = finished.next_batch(block=False)
                if not done:
                    time.sleep(0.05)
                for fut in done:
                    spec = futures[fut]
                    try:
                        result = fut.result()
                    except SdeeosError as exc:
                        raise type(exc)(f"grid point ({spec.label}): {exc}") from exc
                    yield spec, result
                    fut.release()
                if self.cluster is None and time.monotonic() - last_check > _POLL_S:
                    idle_since, last_check = self._check_workers(idle_since), time.monotonic()
        except SdeeosError:
            raise
        except OSError as exc:  # CommClosedError included
            raise SchedulerUnreachableError(
                f"lost the connection to the Dask scheduler ({self.description}): {type(exc).__name__}: "
                f"{str(exc).strip()[:160]}; finished points are stored, re-run to resume") from None
        finally:
            for fut in futures:
                if not fut.done():
                    try:
                        fut.cancel()
                    except Exception:  # noqa: BLE001 - the scheduler may be gone
                        pass

    def _check_workers(self, idle_since):
        try:
            n = len(self.client.nthreads())
        except Exception as exc:  # noqa: BLE001 - the scheduler died
            raise SchedulerUnreachableError(
                f"lost the connection to the Dask scheduler ({self.description}): {type(exc).__name__}; "
                "finished points are stored, re-run to resume") from None
        if n:
            return None
        now = time.monotonic()
        if idle_since is None:
            return now
        if now - idle_since > self.no_workers_timeout:
            raise NoWorkersError(
                f"the Dask cluster ({self.description}) has had no workers for {self.no_workers_timeout:g} s; "
                "start workers (dask worker ADDRESS) or raise no_workers_timeout; finished points are stored")
        return idle_since

    def close(self):
        if self.own and self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()
        self.client = self.cluster = None


def _probe_scheduler(address: str, timeout: float) -> None:
    """Open (and close) one comm to ``address`` within ``timeout`` s, or raise `SchedulerUnreachableError`.

    Done before creating a ``Client``, whose failed construction leaves a half-made object that
    complains when garbage-collected; the probe runs its own event loop in a helper thread, so it
    also works where a loop is already running (Jupyter).
    """
    import asyncio
    import concurrent.futures

    from distributed.comm import connect

    async def probe():
        # the whole exchange is bounded: a peer that accepts and then says nothing (an HTTP server)
        # or answers with junk must not hold us
        comm = await asyncio.wait_for(connect(address, timeout=timeout), timeout)
        await comm.close()

    result: concurrent.futures.Future = concurrent.futures.Future()

    def target():
        try:
            asyncio.run(probe())
            result.set_result(None)
        except BaseException as exc:  # noqa: BLE001 - MemoryError from junk bytes included
            result.set_exception(exc if isinstance(exc, Exception) else RuntimeError(repr(exc)))

    # a daemon thread, never joined: a stuck peer can delay neither the error nor the exit
    threading.Thread(target=target, name="sdeeos-probe", daemon=True).start()
    try:
        result.result(timeout=timeout + 1)
    except Exception as exc:  # noqa: BLE001 - refused, unresolvable, timed out, not a scheduler...
        text = str(exc).strip().splitlines()
        reason = f"{type(exc).__name__}: {text[0][:160]}" if text else type(exc).__name__
        raise SchedulerUnreachableError(
            f"could not reach the Dask scheduler at {address!r} within {timeout:g} s ({reason}); is it "
            "running, and is it a Dask scheduler? (omit the scheduler to use a local cluster)") from None


def _accepts_n_workers(client) -> bool:
    try:
        return "n_workers" in inspect.signature(client.scheduler_info).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return False


def _n_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _require_local_gpu():
    try:
        import cupy

        ok = bool(cupy.cuda.is_available())
    except Exception:  # noqa: BLE001
        ok = False
    if not ok:
        raise BackendUnavailableError("GPU points (backend 'cupy') need a CUDA GPU with CuPy; none is "
                                      "available here (give the address of a cluster with GPU workers)")


# --------------------------------------------------------------------------- the API
def sweep(
    model,
    grid: Mapping[str, Sequence],
    *,
    params: Mapping[str, Any] | None = None,
    method: str | None = None,
    n_traj: int | Callable = 1000,
    n_steps: int | Callable = 10_000,
    burn_in: int | Callable | None = None,
    seed: int = 0,
    backend: str = "numba",
    record_every: int | None = None,
    n_paths: int = 4,
    path_variables: Sequence[str] | None = None,
    stationarity_check: bool = False,
    store: str | os.PathLike | None = None,
    scheduler=None,
    n_workers: int | None = None,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S,
    n_threads: int | None = None,
    progress: bool | None = None,
    wait_for_lock: float = 0.0,
    no_workers_timeout: float = DEFAULT_NO_WORKERS_TIMEOUT_S,
) -> xr.Dataset:
    r"""Run `simulate` at every point of a product grid; one dimension per swept parameter.

    Parameters
    ----------
    model : Model class, Model instance or registry name
        An instance supplies its parameter values as the base point (``params`` and ``grid``
        override them).
    grid : mapping name -> list of values
        Swept quantities, in dimension order: model parameters (``eta``, ``alpha``, ``beta``,
        ``sigma``, ...), run settings (`RUN_SETTINGS`: ``method``, ``seed``, ``n_traj``,
        ``n_steps``, ``burn_in``, ``backend``) or mapped parameters (`PARAMETER_MAPS`:
        ``batch_size`` with ``n_data``, ``sigma_1``, ``sampling``; ``closure_validity_ratio``).
    params : mapping, optional
        Fixed values for any of those names (e.g. ``{"eta": 0.01, "n_data": 5000}``).
    method : str, optional
        Default: the model's natural method at each point (e.g. ``"gd"`` where ``sigma == 0``).
    n_traj, n_steps, burn_in : int or callable
        A callable gets the point's parameters (a dict with the model parameters, the swept values,
        ``method`` and, for ``burn_in``, ``n_steps``) and returns the int, e.g. a run length that
        scales like :math:`1/(\eta^2\alpha)`.  ``burn_in`` defaults to ``n_steps // 2``.
    seed : int
        The same seed at every point (common random numbers) unless ``seed`` is swept.
    backend : str
        ``"numba"``, ``"numpy"`` or a GPU backend (``"cupy"``: such points go to GPU workers).
    record_every, n_paths, path_variables
        Record paths every ``record_every`` steps; keep the first ``n_paths`` trajectories of
        each recorded variable (``path_<name>``, dims ``..., path_traj, step``) and the ensemble
        mean over surviving trajectories (``path_<name>_ensemble_mean``).  ``path_variables``
        limits the variables kept (default: all).
    stationarity_check : bool
        Also run each point with the averaging window's second half only (same seed, so the same
        trajectories) and store ``sharpness_drift`` (late-half minus early-half mean sharpness) with
        its standard error: a stationary run has zero drift.  Doubles the cost.
    store : path, optional
        ``.zarr`` (written point by point; resumable after any kill) or ``.nc`` (parts kept in
        ``.nc.parts/`` until the end; resumable too).  Re-running a finished sweep computes nothing.
    scheduler : None, "local", "serial", address or distributed.Client
        Where points run (default: an embedded local Dask cluster).
    n_workers : int, optional
        Workers of the local cluster (default: one per core, at most one per point).
    connect_timeout : float
        Seconds to wait for a scheduler given by address before raising `SchedulerUnreachableError`.
    n_threads : int, optional
        Numba threads per point (local-cluster workers default to 1).
    progress : bool, optional
        Progress bar over points (default: shown once the sweep has taken 2 s).
    wait_for_lock : float >= 0
        One process writes a store at a time (an exclusive lock beside it, ``<store>.lock``).  If
        another process holds it, wait up to this many seconds (default 0: fail at once with a
        message naming the holder).
    no_workers_timeout : float > 0
        On a cluster given by address or client: stop with an error once it has had no worker
        for this many seconds (no workers yet, or all of them died).

    Reliability: a store's points each carry a checksum; on resume every finished point is
    verified and any damaged one is recomputed (reported on stderr), so a store never gives
    wrong numbers for a point marked done.

    Returns
    -------
    xarray.Dataset
        Every scalar of `simulate` (measurements, standard errors, ``n_diverged`` and the theory's
        predictions such as ``sharpness_gap_predicted_exact``) with the grid's dims; per-point
        ``wall_time_s``; ``point_done``; model parameters set by a map (e.g. ``sigma``) as
        variables; provenance in ``attrs`` (version, git revision, RNG scheme, command line, grid,
        settings, ``sweep_digest``, scheduler).
    """
    cls, base = _resolve_model(model, params)
    allowed = sweep_parameter_names(cls)
    for k in base:
        if k not in allowed:
            raise ParameterError(f"params has unknown parameter {k!r}; allowed: {', '.join(allowed)}")
    grid = _normalize_grid(grid, allowed)
    overlap = sorted(set(grid) & set(params or {}))
    if overlap:
        raise ParameterError(f"{', '.join(overlap)} both swept and fixed: give it in grid or params, not both")
    record_every = 0 if record_every is None else check_int("record_every", record_every, low=1)
    n_paths = check_int("n_paths", n_paths, low=0)
    if path_variables is not None:
        path_variables = tuple(str(v) for v in path_variables)
    connect_timeout = check_positive("connect_timeout", connect_timeout)
    wait_for_lock = check_nonnegative("wait_for_lock", wait_for_lock)
    no_workers_timeout = check_positive("no_workers_timeout", no_workers_timeout)
    if n_workers is not None:
        n_workers = check_int("n_workers", n_workers, low=1)
    settings = dict(method=method, n_traj=n_traj, n_steps=n_steps, burn_in=burn_in, seed=seed, backend=backend,
                    record_every=record_every, n_paths=n_paths, path_variables=path_variables,
                    stationarity_check=bool(stationarity_check), n_threads=n_threads)
    if n_threads is not None:
        check_int("n_threads", n_threads, low=1, high=max_threads())
    points = _make_points(cls, base, grid, settings)
    for b in {p.backend for p in points}:
        _check_backend(cls, b, points)

    digest = hashlib.sha256(json.dumps({
        "dims": list(grid), "coords": {k: [repr(v) for v in vals] for k, vals in grid.items()},
        "points": [p.identity() for p in points], "rng": _rng.RNG_SCHEME,
    }, sort_keys=True).encode()).hexdigest()
    n_records = max((-(-p.n_steps // record_every) for p in points), default=0) if record_every else 0
    layout = _Layout(dims=list(grid), coords=grid, shape=tuple(len(v) for v in grid.values()),
                     n_records=n_records, n_paths=min(n_paths, min(p.n_traj for p in points)) if record_every else 0,
                     record_every=record_every)
    static, constant = _static_variables(points, layout, cls)
    attrs = provenance_attrs(
        model=cls.name, model_class=cls.__name__, swept=" ".join(grid),
        grid=json.dumps(grid), fixed_parameters=json.dumps({k: _jsonable(v) for k, v in base.items()}),
        **constant, rng_scheme=_rng.RNG_SCHEME, sweep_digest=digest, n_points=len(points),
        record_every=record_every, stationarity_check=int(bool(stationarity_check)),
        seed_note="every point uses the same seed (common random numbers) unless seed is swept",
    )

    path = Path(store) if store is not None else None
    if path is not None and path.suffix not in (".zarr", *_NC_SUFFIXES):
        raise ParameterError(f"store must end in .zarr or .nc, got {str(path)!r}")
    if path is not None and path.exists() and path.suffix != ".zarr" and path.is_dir():
        raise ParameterError(f"store {str(path)!r} is a directory; give a file name ending in .nc")
    labels = {p.index: p.label for p in points}
    lock = None
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = StoreLock(path, wait=wait_for_lock, what="sweep store").acquire()
    try:
        if path is None:
            st = _MemoryStore(layout)
        elif path.suffix == ".zarr":
            st = _ZarrStore(layout, path, digest, static, attrs, labels)
        elif path.suffix in _NC_SUFFIXES:
            if path.exists():
                from ._io import open_dataset

                ds = open_dataset(path)
                if ds.attrs.get("sweep_digest") != digest:
                    raise ParameterError(f"{str(path)!r} holds a different sweep (other grid, model or settings); "
                                         "delete it or choose another store path")
                ds.attrs.update(n_points_resumed=len(points), n_points_computed=0)
                return _decorate(ds)  # finished: nothing to do
            path.parent.mkdir(parents=True, exist_ok=True)
            st = _NetCDFStore(layout, path, digest, labels)
        else:
            raise ParameterError(f"store must end in .zarr or .nc, got {str(path)!r}")

        done = st.done_mask()
        todo = [p for p in points if not done[p.index]]
        n_resumed = len(points) - len(todo)
        start = time.perf_counter()
        workers_used: set[str] = set()
        description = "none (every point was already done)"
        if todo:
            runner = _Runner(scheduler, n_workers, connect_timeout, any(p.resources for p in todo), len(todo),
                             no_workers_timeout)
            description = runner.description
            from tqdm.auto import tqdm

            bar = tqdm(total=len(points), initial=n_resumed, unit="point", desc=f"sweep {cls.name}",
                       disable=(progress is False), delay=0 if progress else 2.0, leave=bool(progress))
            try:
                reserved = set(layout.dims) | set(static) | {"point_done", "point_checksum", "step", "path_traj"}
                for spec, result in runner.run(todo):
                    # a measured scalar named like a swept parameter (e.g. closure_validity_ratio) is that
                    # parameter: the coordinate already holds it
                    result["scalars"] = {k: v for k, v in result["scalars"].items() if k not in reserved}
                    with SigintDeferred():  # a point's data, checksum and done flag go together
                        st.write(result)
                    workers_used.add(result["worker"])
                    bar.set_postfix_str(spec.label, refresh=False)
                    bar.update(1)
            finally:
                bar.close()
                runner.close()
        final = {"sweep_wall_time_s": time.perf_counter() - start, "scheduler": description,
                 "n_points_resumed": n_resumed, "n_points_computed": len(todo),
                 "n_workers_used": len(workers_used)}
        attrs.update(final)
        if isinstance(st, _ZarrStore):
            # a no-op re-run leaves the store untouched: its attrs describe the session that computed it
            ds = st.finish(final if todo else None)
        else:
            ds = st.dataset(static, attrs)
            if isinstance(st, _NetCDFStore):
                st.finish(ds)
        ds.attrs.update(final)
        return _decorate(ds)
    finally:
        if lock is not None:
            lock.release()


def _check_backend(cls, backend, points) -> None:
    try:
        cls(**points[0].model_kwargs).engine(backend)
    except BackendUnavailableError:
        if backend in GPU_BACKENDS:
            return  # may exist on the cluster's GPU workers; checked when the cluster is known
        raise


def _static_variables(points, layout, cls) -> tuple[dict, dict]:
    """Per-point values known before running: varying ones become variables, constant ones attrs."""
    static, constant = {}, {}
    keys = ["method", "n_traj", "n_steps", "burn_in", "seed", "backend"]
    model_keys = sorted({k for p in points for k in p.model_kwargs})
    for k in keys + model_keys:
        if k in layout.dims:
            continue
        vals = [getattr(p, k) if k in keys else p.model_kwargs.get(k) for p in points]
        if all(repr(v) == repr(vals[0]) for v in vals):
            v = vals[0]
            constant[k if k in keys else k] = str(v) if k == "seed" else ("none" if v is None else v)
            continue
        arr = np.empty(layout.shape, dtype=object)
        for p, v in zip(points, vals):
            arr[p.index] = v
        if all(isinstance(v, str) for v in vals):
            arr = arr.astype(str)
        elif all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in vals):
            arr = arr.astype(np.int64)
        else:
            arr = arr.astype(float)
        static[k] = (tuple(layout.dims), arr)
    return static, constant


def _decorate(ds: xr.Dataset) -> xr.Dataset:
    ds = ds[sorted(ds.data_vars)]  # the same order whichever store the sweep used
    for name, (ln, units) in _LONG_NAMES.items():
        if name in ds:
            ds[name].attrs.setdefault("long_name", ln)
            if units:
                ds[name].attrs.setdefault("units", units)
    if "sharpness_gap" in ds:
        ds["sharpness_gap"].attrs.setdefault("long_name", "sharpness gap 2/eta - <S>")
    if "point_done" in ds and bool(ds["point_done"].all()):
        for k in ("n_diverged", "n_alive"):
            if k in ds and np.all(np.isfinite(ds[k].values)):
                ds[k] = ds[k].astype(np.int64)
    return ds
