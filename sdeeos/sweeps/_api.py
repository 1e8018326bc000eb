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

Execution (``scheduler=``): by default a local `dask.distributed` cluster is started in this process
for the sweep (one thread per core, each point on one Numba thread; no worker processes, so a plain
script needs no ``__main__`` guard) and closed afterwards; a
scheduler address (``"tcp://host:8786"``) or a ``distributed.Client`` runs the same sweep on an
existing cluster; ``"serial"`` runs the points one after another in this process (no dask).  Points
with ``backend="cupy"`` ask for the worker resource ``GPU=1``, so they only go to GPU workers
(``dask worker ADDR --resources GPU=1``).

Results do not depend on where a point runs: every random draw is keyed by (seed, trajectory, step).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from .. import _rng
from .._errors import BackendUnavailableError, ParameterError
from .._interrupts import SigintDeferred
from .._io import NETCDF_SUFFIXES as NC_SUFFIXES
from .._labels import label_dataset, model_labels
from .._provenance import provenance_attrs
from .._resources import max_threads
from .._storelock import StoreLock
from .._validation import check_int, check_nonnegative, check_positive
from ._dask_runner import DEFAULT_NO_WORKERS_TIMEOUT_S, Runner, SchedulerUnreachableError
from ._points import GPU_BACKENDS, jsonable, make_points, normalize_grid, resolve_model, sweep_parameter_names
from ._stores import Layout, open_store

__all__ = ["sweep", "DEFAULT_CONNECT_TIMEOUT_S"]

DEFAULT_CONNECT_TIMEOUT_S = 5.0


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
        Threads of the local cluster, points run at once (default: one per core, at most one per point).
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
    cls, base = resolve_model(model, params)
    allowed = sweep_parameter_names(cls)
    for k in base:
        if k not in allowed:
            raise ParameterError(f"params has unknown parameter {k!r}; allowed: {', '.join(allowed)}")
    grid = normalize_grid(grid, allowed)
    overlap = sorted(set(grid) & set(params or {}))
    if overlap:
        raise ParameterError(f"{', '.join(overlap)} both swept and fixed: give it in grid or params, not both")
    record_every = 0 if record_every is None else check_int("record_every", record_every, low=1)
    n_paths = check_int("n_paths", n_paths, low=0)
    if path_variables is not None:
        path_variables = tuple(str(v) for v in path_variables)
    connect_timeout = check_positive("connect_timeout", connect_timeout)
    settings = dict(method=method, n_traj=n_traj, n_steps=n_steps, burn_in=burn_in, seed=seed, backend=backend,
                    record_every=record_every, n_paths=n_paths, path_variables=path_variables,
                    stationarity_check=bool(stationarity_check), n_threads=n_threads)
    if n_threads is not None:
        check_int("n_threads", n_threads, low=1, high=max_threads())
    wait_for_lock = check_nonnegative("wait_for_lock", wait_for_lock)
    no_workers_timeout = check_positive("no_workers_timeout", no_workers_timeout)
    if n_workers is not None:
        n_workers = check_int("n_workers", n_workers, low=1)
    points = make_points(cls, base, grid, settings)
    for b in {p.backend for p in points}:
        _check_backend(cls, b, points)

    digest = hashlib.sha256(json.dumps({
        "dims": list(grid), "coords": {k: [repr(v) for v in vals] for k, vals in grid.items()},
        "points": [p.identity() for p in points], "rng": _rng.RNG_SCHEME,
    }, sort_keys=True).encode()).hexdigest()
    n_records = max((-(-p.n_steps // record_every) for p in points), default=0) if record_every else 0
    layout = Layout(dims=list(grid), coords=grid, shape=tuple(len(v) for v in grid.values()),
                     n_records=n_records, n_paths=min(n_paths, min(p.n_traj for p in points)) if record_every else 0,
                     record_every=record_every)
    static, constant = _static_variables(points, layout, cls)
    attrs = provenance_attrs(
        model=cls.name, model_class=cls.__name__, swept=" ".join(grid),
        grid=json.dumps(grid), fixed_parameters=json.dumps({k: jsonable(v) for k, v in base.items()}),
        **constant, rng_scheme=_rng.RNG_SCHEME, sweep_digest=digest, n_points=len(points),
        record_every=record_every, stationarity_check=int(bool(stationarity_check)),
        seed_note="every point uses the same seed (common random numbers) unless seed is swept",
    )

    path = Path(store) if store is not None else None
    if path is not None and path.suffix not in (".zarr", *NC_SUFFIXES):
        raise ParameterError(f"store must end in .zarr or .nc, got {str(path)!r}")
    if path is not None and path.suffix != ".zarr" and path.is_dir():
        raise ParameterError(f"store {str(path)!r} is a directory; give a file name ending in .nc")
    lock = None
    # folders this call makes, and whether the store is new: an unreachable scheduler leaves neither behind
    made = [d for d in (path.parent, *path.parent.parents) if not d.exists()][::-1] if path is not None else []
    fresh = path is not None and not path.exists() and not path.with_name(path.name + ".parts").exists()
    discard = False
    if path is not None:  # one writer per store: a second one fails at once, naming this one
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = StoreLock(path, wait=wait_for_lock, what="sweep store").acquire()
    try:
        st = open_store(store, layout, digest, static, attrs, {p.index: p.label for p in points})
        done = st.done_mask()
        todo = [p for p in points if not done[p.index]]
        n_resumed = len(points) - len(todo)
        start = time.perf_counter()
        workers_used: set[str] = set()
        description = "none (every point was already done)"
        if todo:
            try:
                runner = Runner(scheduler, n_workers, connect_timeout, any(p.resources for p in todo), len(todo),
                                no_workers_timeout)
            except SchedulerUnreachableError:
                discard = fresh  # nothing was computed: remove the new, empty store
                raise
            description = runner.description
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
        ds = st.assemble(static, attrs, final if todo else None)
        ds.attrs.update(final)
        return _decorate(ds, _point_labels(cls, points))
    finally:
        if lock is not None:
            lock.release()
        if discard:
            _remove_empty_store(path, made)


def _remove_empty_store(path: Path, made: list[Path]) -> None:
    """Remove a store no point was written to, then the folders made for it (deepest first, if empty)."""
    for p in (path, path.with_name(path.name + ".parts")):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    for d in reversed(made):
        try:
            d.rmdir()
        except OSError:  # not empty (another writer's files): keep it
            break


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


def _point_labels(cls, points) -> dict:
    """The model's own labels (its observables' expressions, its predictions' formulas), from one point."""
    if not points:
        return {}
    model = cls(**points[0].model_kwargs)
    method = model.check_method(points[0].method)
    try:
        step = model.step(method)
    except (AttributeError, NotImplementedError):  # not a symbolic model
        step = None
    return model_labels(model, step, method)


def _decorate(ds: xr.Dataset, labels: dict | None = None) -> xr.Dataset:
    ds = ds[sorted(ds.data_vars)]  # the same order whichever store the sweep used
    label_dataset(ds, labels)
    if "point_done" in ds and bool(ds["point_done"].all()):
        for k in ("n_diverged", "n_alive"):
            if k in ds and np.all(np.isfinite(ds[k].values)):
                ds[k] = ds[k].astype(np.int64)
    return ds
