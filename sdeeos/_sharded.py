"""Sharded ensembles: one run's trajectories split into ranges, run on a Dask cluster or in this
process, merged exactly.

Every random draw is keyed by (seed, trajectory index) (`sdeeos._rng`), so shard ``[a, b)``
(`RunSpec.shard`) draws exactly the streams of trajectories ``a .. b-1`` of the whole run, and each
trajectory's arithmetic does not depend on its neighbours.  Two ways to merge:

* per-trajectory (``per_trajectory=True``): the shards' arrays come back and are concatenated in
  index order: bit for bit the arrays of a single-process run; the summaries are computed once
  from them.  The client holds the whole ensemble.
* summaries only (``per_trajectory=False``): each shard is run in chunks of trajectories where it
  runs, and every chunk is reduced to exact sums (`sdeeos._shard_summary`); only those come back.
  The summaries equal a single-process run's bit for bit (exact sums, `sdeeos._exact_sums`), and
  memory no longer grows with ``n_traj``: a chunk's state (about `SUMMARY_CHUNK_BYTES`) where it
  runs, a few kilobytes per shard on the client.

Where shards run:

* ``scheduler=None``: in this process, one shard after another, each on every core (the Numba
  kernels are parallel over trajectories).  No worker processes: a plain script without a
  ``__main__`` guard, a notebook and the CLI all work, and Ctrl-C behaves as in `simulate` (one
  notice; the finished shards stay in the checkpoint).
* ``scheduler="tcp://host:port"`` or a `distributed.Client`: that cluster.  An unreachable address
  fails within ``connect_timeout`` seconds (`SchedulerUnreachableError`); a cluster that has had
  no worker for ``no_workers_timeout`` seconds ends the run (`NoWorkersError`), a lost scheduler
  within seconds (`SchedulerUnreachableError`), each in one line.
* ``backend="cupy"``: every shard asks for the worker resource ``GPU=1`` (start GPU workers with
  ``dask worker ADDRESS --resources GPU=1``).
* ``checkpoint=path``: each finished shard is saved (on the client) as
  ``<path>.shards/shard-<a>-<b>.npz`` (summary mode: ``summary-<a>-<b>.npz``) the moment it
  arrives; a later call with the same run resumes without recomputing them (each file carries
  its run digest and checksum, `sdeeos._checkpoint`), and the directory is deleted once the
  merged run is returned.  A run that ends early (failed shard, no workers, lost scheduler,
  Ctrl-C) keeps them.
* A shard that raises fails the whole run with `ShardFailedError`, naming the shard; nothing is
  merged from a run with a failed shard.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import os
import shutil
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ._checkpoint import load_run_arrays, save_run_arrays
from ._contract import FOLD, RunSpec
from ._dask_connect import (DEFAULT_NO_WORKERS_TIMEOUT_S, NoWorkersError, QuietClientLogs,
                            SchedulerUnreachableError, WorkerWatch, connect_client)
from ._errors import BackendUnavailableError, DistExtraMissingError, ParameterError, SdeeosError
from ._interrupts import SigintDeferred
from ._resources import check_run_memory, run_memory_bytes
from ._shard_summary import ShardSummary
from ._validation import check_int

__all__ = ["ShardFailedError", "SchedulerUnreachableError", "NoWorkersError", "shard_bounds", "run_shard",
           "run_shard_summary", "summary_chunk_traj", "merge_shards", "run_sharded", "DEFAULT_CONNECT_TIMEOUT_S",
           "DEFAULT_NO_WORKERS_TIMEOUT_S", "SUMMARY_CHUNK_BYTES"]

#: seconds to wait for a scheduler to answer before `SchedulerUnreachableError`
DEFAULT_CONNECT_TIMEOUT_S = 5.0
#: summary mode runs a shard in chunks of trajectories whose run state takes about this much memory
SUMMARY_CHUNK_BYTES = 256 * 2**20
# steps per segment ~ this many trajectory-steps / n_traj (as in `simulate`): Ctrl-C and progress
_SEGMENT_WORK = 2e8


class ShardFailedError(SdeeosError, RuntimeError):
    """A shard of a sharded run failed; the run returns nothing (no partial statistics)."""


def shard_bounds(n_traj: int, n_shards: int) -> list[tuple[int, int]]:
    """``n_shards`` contiguous, nearly equal ranges ``[a, b)`` covering ``0 .. n_traj - 1``.

    >>> shard_bounds(10, 3)
    [(0, 3), (3, 6), (6, 10)]
    """
    cuts = [i * n_traj // n_shards for i in range(n_shards + 1)]
    return [(a, b) for a, b in zip(cuts[:-1], cuts[1:])]


def _advance(spec: RunSpec, run, backend: str, n_threads, on_segment=None) -> None:
    """Advance ``run`` to ``spec.n_steps`` in segments (bit-identical to one call), calling
    ``on_segment(trajectory-steps done)`` after each: a commit point for Ctrl-C and a progress update."""
    engine = spec.model.engine(backend)
    # an engine may ask for longer segments (a GPU engine copies the state back after each one)
    seg = int(max(_SEGMENT_WORK, getattr(engine, "segment_work", 0.0)) // max(spec.n_traj, 1))
    seg = max(FOLD, seg - seg % FOLD)
    while run.t < spec.n_steps:
        t0 = run.t
        engine.advance(spec, run, min(spec.n_steps, t0 + seg), n_threads=n_threads)
        if on_segment is not None:
            on_segment((run.t - t0) * spec.n_traj)


def run_shard(spec: RunSpec, backend: str, n_threads: int | None = None, on_segment=None) -> dict:
    """Run ``spec`` (one shard) to the end on this process; its arrays by name (a Dask task)."""
    run = spec.model.new_run(spec)
    _advance(spec, run, backend, n_threads, on_segment)
    return {name: value for name, value in run.arrays().items()}


def summary_chunk_traj(spec: RunSpec, budget: int | None = None) -> int:
    """Trajectories per chunk in summary mode: as many as fit in ``budget`` bytes (default
    `SUMMARY_CHUNK_BYTES`), at least one."""
    budget = SUMMARY_CHUNK_BYTES if budget is None else budget
    one = run_memory_bytes(spec.shard(0, 1))
    per_traj = max(1, run_memory_bytes(spec.shard(0, 2)) - one)
    return int(min(spec.n_traj, max(1, (budget - one) // per_traj)))


def run_shard_summary(spec: RunSpec, backend: str, n_threads: int | None = None, on_segment=None,
                      chunk: int | None = None) -> ShardSummary:
    """Run ``spec`` (one shard) in chunks of ``chunk`` trajectories, each reduced to exact sums at
    once (`ShardSummary`): memory of one chunk, whatever the shard's size (a Dask task)."""
    chunk = summary_chunk_traj(spec) if chunk is None else chunk
    total = None
    for a, b in shard_bounds(spec.n_traj, -(-spec.n_traj // chunk)):  # equal chunks, none of one stray trajectory
        part = spec.shard(a, b)
        check_run_memory(part)
        run = spec.model.new_run(part)
        _advance(part, run, backend, n_threads, on_segment)
        reduced = ShardSummary.of_run(part, run)
        total = reduced if total is None else total + reduced
    return total


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
    """The client of the Dask cluster a sharded run uses (a given client, or one made for an address)."""

    def __init__(self, scheduler, need_gpu: bool, connect_timeout: float):
        distributed = _import_distributed()
        if not isinstance(scheduler, (str, distributed.Client)):
            raise ParameterError(f"scheduler must be None, an address or a distributed.Client, got {scheduler!r}")
        self.client, self.description, self.own_client = connect_client(scheduler, connect_timeout)
        self.quiet = QuietClientLogs() if self.own_client else None
        if need_gpu:
            workers = self.client.scheduler_info().get("workers", {})
            if not any(w.get("resources", {}).get("GPU", 0) >= 1 for w in workers.values()):
                self.close()
                raise BackendUnavailableError(
                    "backend 'cupy' shards need a worker with the resource GPU=1, and no worker of this cluster "
                    "has one (start GPU workers with: dask worker ADDRESS --resources GPU=1)")

    def n_workers(self) -> int:
        return max(1, len(self.client.scheduler_info().get("workers", {})))

    def close(self) -> None:
        try:
            if self.own_client:
                self.client.close(timeout=5)
        except Exception:  # noqa: BLE001 - the scheduler may be gone; the run's own error is what matters
            pass
        finally:
            if self.quiet is not None:
                self.quiet.restore()
                self.quiet = None


def _shard_path(directory: Path, a: int, b: int, per_trajectory: bool) -> Path:
    return directory / (f"shard-{a}-{b}.npz" if per_trajectory else f"summary-{a}-{b}.npz")


def _load_shard(path: Path, digest: str, per_trajectory: bool):
    arrays = load_run_arrays(path, digest, what="shard checkpoint")
    if arrays is None or per_trajectory:
        return arrays
    return ShardSummary.from_arrays(arrays)


def _save_shard(path: Path, digest: str, result, per_trajectory: bool) -> None:
    save_run_arrays(path, digest, result if per_trajectory else result.to_arrays())


def run_sharded(spec: RunSpec, backend: str, *, n_shards: int | None, scheduler=None, checkpoint=None,
                digest: str = "", n_threads: int | None = None, keep_shards: bool = False,
                connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S, per_trajectory: bool = True,
                no_workers_timeout: float = DEFAULT_NO_WORKERS_TIMEOUT_S, progress: bool | None = None,
                summary_chunk: int | None = None) -> tuple[object, dict]:
    """Run ``spec`` as shards; ``(merged run state or merged ShardSummary, provenance attrs)``.

    ``n_shards`` defaults to the number of workers of the cluster (one without a scheduler);
    ``digest`` identifies the run in shard checkpoints (`simulate` passes its checkpoint digest);
    ``keep_shards`` leaves the finished shards on disk for a caller that removes them once its
    output is written; ``summary_chunk`` overrides the trajectories per chunk of summary mode.
    """
    if n_shards is not None:
        n_shards = check_int("n_shards", n_shards, low=1, high=spec.n_traj)
    need_gpu = backend == "cupy"
    start = time.perf_counter()
    directory = Path(str(checkpoint) + ".shards") if checkpoint is not None else None
    cluster = None if scheduler is None else _Cluster(scheduler, need_gpu, connect_timeout)
    try:
        n_shards = n_shards or (min(cluster.n_workers(), spec.n_traj) if cluster is not None else 1)
        bounds = shard_bounds(spec.n_traj, n_shards)
        parts: dict[int, object] = {}
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            for i, (a, b) in enumerate(bounds):
                loaded = _load_shard(_shard_path(directory, a, b, per_trajectory), digest, per_trajectory)
                if loaded is not None:
                    parts[i] = loaded
        resumed = len(parts)
        todo = [i for i in range(len(bounds)) if i not in parts]
        job = _Job(spec, bounds, backend, n_threads, per_trajectory, summary_chunk, directory, digest, parts)
        if cluster is None:
            _run_here(job, todo, progress)
        else:
            _run_on_cluster(cluster, job, todo, need_gpu, no_workers_timeout)
        ordered = [parts[i] for i in range(len(bounds))]
        if per_trajectory:
            result = merge_shards(spec, ordered)
        else:
            result = ordered[0]
            for part in ordered[1:]:
                result = result + part
    finally:
        if cluster is not None:
            cluster.close()
    if directory is not None and not keep_shards:
        shutil.rmtree(directory, ignore_errors=True)
    attrs = {"n_shards": len(bounds), "shards_resumed": resumed,
             "shard_scheduler": cluster.description if cluster is not None else "this process",
             "sharded_wall_time_s": time.perf_counter() - start}
    return result, attrs


@dataclasses.dataclass
class _Job:
    """What every shard of one sharded run shares, and where finished shards go."""

    spec: RunSpec
    bounds: list
    backend: str
    n_threads: int | None
    per_trajectory: bool
    summary_chunk: int | None
    directory: Path | None
    digest: str
    parts: dict

    def task(self, i: int):
        """``(function, args, kwargs)`` running shard ``i`` (a Dask task or a call here)."""
        a, b = self.bounds[i]
        args = (self.spec.shard(a, b), self.backend, self.n_threads)
        if self.per_trajectory:
            return run_shard, args, {}
        return run_shard_summary, args, {"chunk": self.summary_chunk}

    def done(self, i: int, result) -> None:
        self.parts[i] = result
        if self.directory is not None:
            _save_shard(_shard_path(self.directory, *self.bounds[i], self.per_trajectory), self.digest, result,
                        self.per_trajectory)

    def kept(self) -> str:
        if self.directory is None:
            return "finished shards are not kept (pass checkpoint= to resume a run)"
        return f"finished shards are kept in {str(self.directory)!r}, re-run to resume"

    def failed(self, i: int, exc: BaseException, where: str = "") -> ShardFailedError:
        a, b = self.bounds[i]
        text = str(exc).strip().splitlines()
        return ShardFailedError(f"shard {i} (trajectories [{a}, {b})) failed{where}: {type(exc).__name__}: "
                                f"{text[0][:300] if text else ''}; no statistics were merged; {self.kept()}")


def _run_here(job: _Job, todo: list[int], progress: bool | None) -> None:
    """Shards one after another in this process, each on every core; Ctrl-C as in `simulate`."""
    spec = job.spec
    remaining = sum(job.bounds[i][1] - job.bounds[i][0] for i in todo)
    bar = tqdm(total=remaining * spec.n_steps, unit="traj-step", unit_scale=True,
               desc=f"{spec.model.name} {spec.method} ({len(job.bounds)} shard{'s' * (len(job.bounds) > 1)})", disable=(progress is False),
               delay=0 if progress else 2.0, leave=False)
    try:
        with SigintDeferred() as guard:
            def on_segment(work):
                bar.update(work)
                guard.commit_point()  # Ctrl-C stops here; the finished shards are saved

            for i in todo:
                func, args, kwargs = job.task(i)
                try:
                    result = func(*args, on_segment=on_segment, **kwargs)
                except (SdeeosError, KeyboardInterrupt):
                    raise
                except Exception as exc:  # noqa: BLE001 - whatever a shard raised, it is named
                    raise job.failed(i, exc) from exc
                job.done(i, result)
    finally:
        bar.close()


def _run_on_cluster(cluster: _Cluster, job: _Job, todo: list[int], need_gpu: bool, no_workers_timeout: float) -> None:
    distributed = _import_distributed()
    client = cluster.client
    futures = {}
    token = os.urandom(4).hex()
    watch = WorkerWatch(client, cluster.description, no_workers_timeout, job.kept())
    try:
        for i in todo:
            a, b = job.bounds[i]
            func, args, kwargs = job.task(i)
            fut = client.submit(func, *args, **kwargs, pure=False, resources={"GPU": 1} if need_gpu else None,
                                key=f"sdeeos-shard-{i}-{a}-{b}-{token}")
            futures[fut] = i
        finished = distributed.as_completed(list(futures), loop=client.loop)
        with SigintDeferred() as guard:
            # never block for good: between polls, notice a cluster without workers or a lost scheduler
            while not finished.is_empty():
                done = finished.next_batch(block=False)
                if not done:
                    time.sleep(0.05)
                for fut in done:
                    i = futures[fut]
                    try:
                        result = fut.result()
                    except (asyncio.CancelledError, concurrent.futures.CancelledError):
                        raise SchedulerUnreachableError(
                            f"lost the Dask scheduler ({cluster.description}) while shard {i} was running; "
                            f"{job.kept()}") from None
                    except Exception as exc:  # noqa: BLE001 - whatever a worker raised, the shard is named
                        raise job.failed(i, exc, " on its Dask worker") from None
                    job.done(i, result)
                    fut.release()
                watch.check()
                guard.commit_point()
    except SdeeosError:
        raise
    except OSError as exc:  # CommClosedError included
        raise SchedulerUnreachableError(
            f"lost the connection to the Dask scheduler ({cluster.description}): {type(exc).__name__}: "
            f"{str(exc).strip()[:160]}; {job.kept()}") from None
    finally:
        for fut in futures:
            if not fut.done():
                try:
                    fut.cancel()
                except Exception:  # noqa: BLE001 - the scheduler may be gone
                    pass
