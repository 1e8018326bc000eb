"""Grid points: the names a grid may use, one picklable `PointSpec` per point, and `run_point` (runs on a worker)."""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import math
import time
from typing import Mapping, Sequence

import numpy as np

from .._errors import ParameterError
from .._rng import as_seed
from .._simulate import simulate
from .._validation import check_int
from ..models import MODEL_REGISTRY, Model
from ._parameter_maps import MAP_INPUTS, PARAMETER_MAPS

__all__ = ["RUN_SETTINGS", "GPU_BACKENDS", "PointSpec", "sweep_parameter_names", "resolve_model",
           "normalize_grid", "make_points", "run_point", "jsonable"]

#: Run settings that may be swept like parameters (a dimension each).
RUN_SETTINGS = ("method", "seed", "n_traj", "n_steps", "burn_in", "backend")

#: Backends whose points need a GPU worker (dask resource ``GPU``).
GPU_BACKENDS = ("cupy",)


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
    cls = resolve_model(model, None)[0]
    own = _model_params(cls)
    maps = [m for m in PARAMETER_MAPS if m not in own and PARAMETER_MAPS[m].target in own]
    inputs = sorted({k for m in maps for k in PARAMETER_MAPS[m].inputs})
    return own + list(RUN_SETTINGS) + maps + inputs


def resolve_model(model, params) -> tuple[type, dict]:
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


def jsonable(v):
    if isinstance(v, (np.generic,)):
        return v.item()
    return v


def normalize_grid(grid: Mapping[str, Sequence], allowed: Sequence[str]) -> dict[str, list]:
    if not isinstance(grid, Mapping) or not grid:
        raise ParameterError("grid must be a non-empty mapping {parameter: [values, ...]}")
    out = {}
    for name, values in grid.items():
        if name not in allowed:
            raise ParameterError(f"grid parameter {name!r} is unknown; allowed: {', '.join(allowed)}")
        if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
            raise ParameterError(f"grid[{name!r}] must be a list of values, got {values!r}")
        values = [jsonable(v) for v in values]
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


def make_points(cls, base, grid, settings) -> list[PointSpec]:
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
                used = [k for k in stray if k in MAP_INPUTS]
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
            as_seed(seed)  # the RNG's own check: ParameterError unless an integer in [0, 2**64 - 1]
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


def run_point(spec: PointSpec) -> dict:
    """Simulate one grid point; return its scalars (and kept paths) as plain numpy values."""
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
    try:  # which worker ran it (provenance); not an error outside dask (distributed is optional)
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

