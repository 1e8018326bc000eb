"""Where a sweep's points run: in this process, on an embedded local Dask cluster or on a remote one.

The default local cluster has one single-threaded worker process per core (``NUMBA_NUM_THREADS=1``) and is
closed afterwards; points with a GPU backend ask for the worker resource ``GPU=1``, so they only go to GPU
workers (``dask worker ADDR --resources GPU=1``).  dask/distributed is optional (the ``dist`` extra).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import os
import time

from .._dask_connect import SchedulerUnreachableError, connect_client
from .._errors import BackendUnavailableError, DistExtraMissingError, ParameterError, SdeeosError
from .._resources import available_cores
from .._validation import check_int
from ._points import PointSpec, run_point

__all__ = ["Runner", "SchedulerUnreachableError", "NoWorkersError", "DEFAULT_NO_WORKERS_TIMEOUT_S"]

DEFAULT_NO_WORKERS_TIMEOUT_S = 60.0
_POLL_S = 1.0


class NoWorkersError(SdeeosError, RuntimeError):
    """The Dask cluster had no workers for longer than ``no_workers_timeout``."""


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
            self.cluster = distributed.LocalCluster(
                n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                env={"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                     "OPENBLAS_NUM_THREADS": "1", "TQDM_DISABLE": "1"},
                resources={"GPU": 1} if need_gpu else None, silence_logs=logging.ERROR)
            self.client = distributed.Client(self.cluster, set_as_default=False)
            self.own = True
            self.description = f"local dask cluster, {n} worker(s) x 1 thread"
        elif isinstance(scheduler, (str, distributed.Client)):
            self.client, self.description, self.own = connect_client(scheduler, connect_timeout)
            if self.own:
                # a lost scheduler is reported by `run` in one line; the client's reconnect attempts
                # would log tracebacks meanwhile
                self._quieted = _ClientLogQuiet()
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
                fut = self.client.submit(run_point, spec, pure=False, resources=spec.resources,
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
                    except (asyncio.CancelledError, concurrent.futures.CancelledError) as exc:
                        # the scheduler went away (its futures are cancelled), or someone cancelled ours
                        raise SchedulerUnreachableError(
                            f"lost the Dask scheduler ({self.description}) while grid point ({spec.label}) was "
                            f"running ({type(exc).__name__}); finished points are stored, re-run to resume") from None
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


class _ClientLogQuiet:
    """Raise the ``distributed.client`` logger to CRITICAL until `restore`."""

    def __init__(self):
        self.logger = logging.getLogger("distributed.client")
        self.level = self.logger.level
        self.logger.setLevel(logging.CRITICAL)

    def restore(self):
        self.logger.setLevel(self.level)


def _accepts_n_workers(client) -> bool:
    try:
        return "n_workers" in inspect.signature(client.scheduler_info).parameters
    except (TypeError, ValueError):  # pragma: no cover
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

