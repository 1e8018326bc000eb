"""Where a sweep's points run: in this process, on an embedded local Dask cluster or on a remote one.

The default local cluster runs in this process: one worker with one thread per core, each point on one
Numba thread (the compiled kernels release the GIL).  Threads, not processes: worker processes are
started with ``spawn``, which re-imports the caller's script, so a plain script without an
``if __name__ == "__main__":`` guard failed ("Nanny failed to start"); threads work from scripts,
notebooks and the CLI alike.  Its HTTP server takes a free port (no "Port 8787 is already in use").
The cluster is closed afterwards.  Points with a GPU backend ask for the worker resource ``GPU=1``,
so they only go to GPU workers (``dask worker ADDR --resources GPU=1``).  dask/distributed is optional
(the ``dist`` extra).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import importlib
import inspect
import logging
import os
import time

import numba

from .._dask_connect import (DEFAULT_NO_WORKERS_TIMEOUT_S, NoWorkersError, QuietClientLogs,
                             SchedulerUnreachableError, WorkerWatch, connect_client)
from .._errors import BackendUnavailableError, DistExtraMissingError, ParameterError, SdeeosError
from .._resources import available_cores
from .._validation import check_int
from ._points import PointSpec, run_point

__all__ = ["Runner", "SchedulerUnreachableError", "NoWorkersError", "DEFAULT_NO_WORKERS_TIMEOUT_S"]

def _import_distributed():
    try:
        import distributed
    except ImportError as exc:  # pragma: no cover - depends on extras
        raise DistExtraMissingError(
            "running a sweep on a Dask cluster needs the 'dist' extra: pip install 'sdeeos[dist]' "
            "(or pass scheduler='serial' to run the points in this process)") from exc
    return distributed


class Runner:
    """Runs point specs serially or on a dask cluster; yields results as they finish."""

    def __init__(self, scheduler, n_workers, connect_timeout, need_gpu, n_todo,
                 no_workers_timeout=DEFAULT_NO_WORKERS_TIMEOUT_S):
        self.no_workers_timeout = no_workers_timeout
        self.one_thread = False
        self.client = None
        self.cluster = None
        self.own = False
        self.description = "serial"
        if isinstance(scheduler, str) and scheduler == "serial":
            return
        distributed = _import_distributed()
        if scheduler is None or (isinstance(scheduler, str) and scheduler == "local"):
            n = n_workers or min(available_cores(), max(n_todo, 1))
            n = check_int("n_workers", n, low=1)
            if need_gpu:
                _require_local_gpu()
            # several points at once need a thread-safe Numba threading layer (omp, tbb); with
            # workqueue, one point at a time, each on every core
            self.one_thread = numba_threadsafe()
            n = n if self.one_thread else 1
            self.cluster = local_thread_cluster(distributed, n, {"GPU": 1} if need_gpu else None)
            self.client = distributed.Client(self.cluster, set_as_default=False)
            self.own = True
            self.description = f"local dask cluster (threads), {n} thread(s)"
        elif isinstance(scheduler, (str, distributed.Client)):
            self.client, self.description, self.own = connect_client(scheduler, connect_timeout)
            if self.own:
                self._quieted = QuietClientLogs()
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
                yield spec, run_point(spec)
            return
        distributed = _import_distributed()
        futures = {}
        try:
            for spec in specs:
                task = dataclasses.replace(spec, n_threads=1) if self.one_thread and spec.n_threads is None else spec
                fut = self.client.submit(run_point, task, pure=False, resources=spec.resources,
                                         key=f"sdeeos-point-{'-'.join(map(str, spec.index))}-{os.urandom(4).hex()}")
                futures[fut] = spec
            finished = distributed.as_completed(list(futures), loop=self.client.loop)
            watch = WorkerWatch(self.client, self.description, self.no_workers_timeout,
                                "finished points are stored, re-run to resume")
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
                    except (asyncio.CancelledError, concurrent.futures.CancelledError) as exc:
                        # the scheduler went away (its futures are cancelled), or someone cancelled ours
                        raise SchedulerUnreachableError(
                            f"lost the Dask scheduler ({self.description}) while grid point ({spec.label}) was "
                            f"running ({type(exc).__name__}); finished points are stored, re-run to resume") from None
                    yield spec, result
                    fut.release()
                if self.cluster is None:
                    watch.check()
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

    def close(self):
        try:
            if self.own and self.client is not None:
                self.client.close()
            if self.cluster is not None:
                self.cluster.close()
        finally:
            self.client = self.cluster = None
            quieted = getattr(self, "_quieted", None)
            if quieted is not None:
                quieted.restore()
                self._quieted = None


def _accepts_n_workers(client) -> bool:
    try:
        return "n_workers" in inspect.signature(client.scheduler_info).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return False


def local_thread_cluster(distributed, n_threads: int, resources):
    """An in-process `distributed.LocalCluster`: one worker, ``n_threads`` threads, no dashboard and its
    HTTP server on a free port (``:0``; the default ``:8787`` warns whenever that port is taken)."""
    return distributed.LocalCluster(
        n_workers=1, threads_per_worker=n_threads, processes=False, dashboard_address=":0",
        scheduler_kwargs={"dashboard": False}, resources=resources, silence_logs=logging.ERROR)


def numba_threadsafe() -> bool:
    """Whether compiled parallel kernels may run from several threads at once (Numba's omp or tbb
    threading layer is available and not overridden by ``NUMBA_THREADING_LAYER=workqueue``)."""
    if str(numba.config.THREADING_LAYER).lower() == "workqueue":
        return False
    for name in ("numba.np.ufunc.tbbpool", "numba.np.ufunc.omppool"):
        try:
            importlib.import_module(name)
            return True
        except ImportError:
            continue
    return False


def _require_local_gpu():
    try:
        import cupy

        ok = bool(cupy.cuda.is_available())
    except Exception:  # noqa: BLE001
        ok = False
    if not ok:
        raise BackendUnavailableError("GPU points (backend 'cupy') need a CUDA GPU with CuPy; none is "
                                      "available here (give the address of a cluster with GPU workers)")

