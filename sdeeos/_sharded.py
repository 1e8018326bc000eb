"""Sharded ensembles: one run's trajectories split into ranges that run as Dask tasks, merged exactly.

Every random draw is keyed by (seed, trajectory index) (`sdeeos._rng`), so shard ``[a, b)``
(`RunSpec.shard`) draws exactly the streams of trajectories ``a .. b-1`` of the whole run, and each
trajectory's arithmetic does not depend on its neighbours.  Concatenating the shards' per-trajectory
arrays in index order therefore gives, bit for bit, the arrays of a single-process run; the
ensemble summaries are then computed once from the merged arrays (by `simulate`'s own dataset
code), so they are exact too.

* ``scheduler=None`` with ``n_shards > 1``: an embedded `distributed.LocalCluster` (one worker
  process per shard up to the number of cores, Numba threads split between them), closed afterwards.
* ``scheduler="tcp://host:port"`` or a `distributed.Client`: that cluster.  An unreachable address
  fails within ``connect_timeout`` seconds (`SchedulerUnreachableError`).
* ``backend="cupy"``: every shard asks for the worker resource ``GPU=1`` (start GPU workers with
  ``dask worker ADDRESS --resources GPU=1``); the embedded cluster then has one GPU worker.
* ``checkpoint=path``: each finished shard is saved (on the client) as
  ``<path>.shards/shard-<a>-<b>.npz`` the moment it arrives; a later call with the same run resumes
  without recomputing them (each shard file carries its run digest and checksum, `sdeeos._checkpoint`),
  and the directory is deleted once the merged run is returned.
* A shard that raises fails the whole run with `ShardFailedError`, naming the shard; nothing is
  merged from a run with a failed shard.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np

from ._checkpoint import load_run_arrays, save_run_arrays
from ._contract import RunSpec
from ._dask_connect import SchedulerUnreachableError, connect_client
from ._errors import BackendUnavailableError, DistExtraMissingError, ParameterError, SdeeosError
from ._resources import available_cores
from ._validation import check_int

__all__ = ["ShardFailedError", "SchedulerUnreachableError", "shard_bounds", "run_shard", "merge_shards",
           "run_sharded", "DEFAULT_CONNECT_TIMEOUT_S"]

#: seconds to wait for a scheduler to answer before `SchedulerUnreachableError`
DEFAULT_CONNECT_TIMEOUT_S = 5.0


class ShardFailedError(SdeeosError, RuntimeError):
    """A shard of a sharded run failed; the run returns nothing (no partial statistics)."""


def shard_bounds(n_traj: int, n_shards: int) -> list[tuple[int, int]]:
    """``n_shards`` contiguous, nearly equal ranges ``[a, b)`` covering ``0 .. n_traj - 1``.

    >>> shard_bounds(10, 3)
    [(0, 3), (3, 6), (6, 10)]
    """
    cuts = [i * n_traj // n_shards for i in range(n_shards + 1)]
    return [(a, b) for a, b in zip(cuts[:-1], cuts[1:])]


def run_shard(spec: RunSpec, backend: str, n_threads: int | None = None) -> dict:
    """Run ``spec`` (one shard) to the end on this process; its arrays by name (a Dask task)."""
    engine = spec.model.engine(backend)
    run = spec.model.new_run(spec)
    engine.advance(spec, run, spec.n_steps, n_threads=n_threads)
    return {name: value for name, value in run.arrays().items()}


def _traj_axis(run_type, name: str):
    return run_type.TRAJ_AXES.get(name, run_type.TRAJ_AXIS_DEFAULT)


def merge_shards(spec: RunSpec, parts: list[dict]):
    """The run state of the whole run from its shards' arrays, in trajectory order (concatenated)."""
    run_type = type(spec.model.new_run(spec.shard(0, 1)))
    merged = {}
    for name, first in parts[0].items():
        if not isinstance(first, np.ndarray):
            merged[name] = first  # the step counter: every shard finished at n_steps
            continue
        axis = _traj_axis(run_type, name)
        merged[name] = first if axis is None else np.concatenate([p[name] for p in parts], axis=axis)
    return run_type(**merged)


def _import_distributed():
    try:
        import distributed
    except ImportError as exc:  # pragma: no cover - depends on extras
        raise DistExtraMissingError(
            "a sharded run (n_shards > 1 or a scheduler) needs the 'dist' extra: pip install 'sdeeos[dist]'") from exc
    return distributed


class _Cluster:
    """The client of the cluster a sharded run uses (and the embedded cluster, when it made one)."""

    def __init__(self, scheduler, n_shards: int, need_gpu: bool, connect_timeout: float):
        distributed = _import_distributed()
        self.cluster = None
        self.own_client = True
        if scheduler is None:
            n_workers = 1 if need_gpu else min(n_shards, available_cores())
            self.threads = 1 if need_gpu else max(1, available_cores() // n_workers)
            threads = str(self.threads)
            self.cluster = distributed.LocalCluster(
                n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None,
                env={"NUMBA_NUM_THREADS": threads, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"},
                resources={"GPU": 1} if need_gpu else None, silence_logs=logging.ERROR)
            self.client = distributed.Client(self.cluster, set_as_default=False)
            self.description = f"local dask cluster, {n_workers} worker(s)"
        elif isinstance(scheduler, (str, distributed.Client)):
            self.client, self.description, self.own_client = connect_client(scheduler, connect_timeout)
            self.threads = None
        else:
            raise ParameterError(f"scheduler must be None, an address or a distributed.Client, got {scheduler!r}")
        if need_gpu and self.cluster is None:
            workers = self.client.scheduler_info().get("workers", {})
            if not any(w.get("resources", {}).get("GPU", 0) >= 1 for w in workers.values()):
                self.close()
                raise BackendUnavailableError(
                    "backend 'cupy' shards need a worker with the resource GPU=1, and no worker of this cluster "
                    "has one (start GPU workers with: dask worker ADDRESS --resources GPU=1)")

    def n_workers(self) -> int:
        return max(1, len(self.client.scheduler_info().get("workers", {})))

    def close(self) -> None:
        if self.own_client:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def _shard_path(directory: Path, a: int, b: int) -> Path:
    return directory / f"shard-{a}-{b}.npz"


def _load_shard(path: Path, digest: str) -> dict | None:
    return load_run_arrays(path, digest, what="shard checkpoint")


def _save_shard(path: Path, digest: str, arrays: dict) -> None:
    save_run_arrays(path, digest, arrays)


def run_sharded(spec: RunSpec, backend: str, *, n_shards: int | None, scheduler=None, checkpoint=None,
                digest: str = "", n_threads: int | None = None, keep_shards: bool = False,
                connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S) -> tuple[object, dict]:
    """Run ``spec`` as shards on a Dask cluster; ``(merged run state, provenance attrs)``.

    ``n_shards`` defaults to the number of workers of the cluster; ``digest`` identifies the run
    in shard checkpoints (`simulate` passes its checkpoint digest); ``keep_shards`` leaves the
    finished shards on disk for a caller that removes them once its output is written.
    """
    if n_shards is not None:
        n_shards = check_int("n_shards", n_shards, low=1, high=spec.n_traj)
    if n_shards == 1 and scheduler is None:
        bounds = [(0, spec.n_traj)]
    need_gpu = backend == "cupy"
    start = time.perf_counter()
    directory = Path(str(checkpoint) + ".shards") if checkpoint is not None else None
    cluster = None if (n_shards == 1 and scheduler is None) else _Cluster(scheduler, n_shards or 1, need_gpu,
                                                                          connect_timeout)
    try:
        if cluster is not None:
            n_shards = n_shards or min(cluster.n_workers(), spec.n_traj)
            bounds = shard_bounds(spec.n_traj, n_shards)
            if n_threads is None:
                n_threads = cluster.threads
        parts: dict[int, dict] = {}
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            for i, (a, b) in enumerate(bounds):
                loaded = _load_shard(_shard_path(directory, a, b), digest)
                if loaded is not None:
                    parts[i] = loaded
        resumed = len(parts)
        todo = [i for i in range(len(bounds)) if i not in parts]
        if cluster is None:
            for i in todo:
                parts[i] = _run_one(spec, bounds, i, backend, n_threads)
                if directory is not None:
                    _save_shard(_shard_path(directory, *bounds[i]), digest, parts[i])
        else:
            _run_on_cluster(cluster, spec, bounds, todo, backend, n_threads, need_gpu, directory, digest, parts)
        run = merge_shards(spec, [parts[i] for i in range(len(bounds))])
    finally:
        if cluster is not None:
            cluster.close()
    if directory is not None and not keep_shards:
        shutil.rmtree(directory, ignore_errors=True)
    attrs = {"n_shards": len(bounds), "shards_resumed": resumed,
             "shard_scheduler": cluster.description if cluster is not None else "this process",
             "sharded_wall_time_s": time.perf_counter() - start}
    return run, attrs


def _run_one(spec, bounds, i, backend, n_threads) -> dict:
    a, b = bounds[i]
    try:
        return run_shard(spec.shard(a, b), backend, n_threads)
    except Exception as exc:
        raise ShardFailedError(f"shard {i} (trajectories [{a}, {b})) failed: {type(exc).__name__}: {exc}") from exc


def _run_on_cluster(cluster, spec, bounds, todo, backend, n_threads, need_gpu, directory, digest, parts) -> None:
    distributed = _import_distributed()
    client = cluster.client
    futures = {}
    token = os.urandom(4).hex()
    for i in todo:
        a, b = bounds[i]
        fut = client.submit(run_shard, spec.shard(a, b), backend, n_threads, pure=False,
                            resources={"GPU": 1} if need_gpu else None, key=f"sdeeos-shard-{i}-{a}-{b}-{token}")
        futures[fut] = i
    try:
        for fut in distributed.as_completed(list(futures), loop=client.loop):
            i = futures[fut]
            a, b = bounds[i]
            try:
                arrays = fut.result()
            except Exception as exc:  # noqa: BLE001 - whatever a worker raised, the shard is named
                raise ShardFailedError(
                    f"shard {i} (trajectories [{a}, {b})) failed on its Dask worker: {type(exc).__name__}: {exc}; "
                    "no statistics were merged") from exc
            parts[i] = arrays
            if directory is not None:
                _save_shard(_shard_path(directory, a, b), digest, arrays)
            fut.release()
    finally:
        for fut in futures:
            if not fut.done():
                fut.cancel()

