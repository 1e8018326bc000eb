"""Connecting to a Dask scheduler and watching it: one reachability probe, one watch for a cluster
that lost its workers or its scheduler mid-run, and one error for each, for every entry point
(`sweep`'s runner and sharded `simulate`).  dask/distributed is optional (the ``dist`` extra)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time

from ._errors import SdeeosError

__all__ = ["SchedulerUnreachableError", "NoWorkersError", "probe_scheduler", "connect_client", "WorkerWatch",
           "QuietClientLogs", "DEFAULT_NO_WORKERS_TIMEOUT_S"]

#: seconds a cluster may have no worker before a run on it stops (`NoWorkersError`)
DEFAULT_NO_WORKERS_TIMEOUT_S = 60.0
_POLL_S = 1.0


class SchedulerUnreachableError(SdeeosError, ConnectionError):
    """A Dask scheduler could not be reached within the connect timeout, or was lost mid-run."""


class NoWorkersError(SdeeosError, RuntimeError):
    """The Dask cluster had no workers for longer than ``no_workers_timeout``."""


def probe_scheduler(address: str, timeout: float) -> None:
    """Open (and close) one comm to ``address`` within ``timeout`` s, or raise `SchedulerUnreachableError`.

    Done before creating a ``Client``, whose failed construction leaves a half-made object that
    complains when garbage-collected.  The probe runs its own event loop in a daemon thread that
    is never joined, and the whole exchange is bounded: a peer that accepts and then says nothing
    (an HTTP server, a dashboard port) or answers with junk bytes can delay neither the error nor
    the exit, and it works where a loop is already running (Jupyter).
    """
    from distributed.comm import connect

    async def probe():
        comm = await asyncio.wait_for(connect(address, timeout=timeout), timeout)
        await comm.close()

    result: concurrent.futures.Future = concurrent.futures.Future()

    def target():
        try:
            asyncio.run(probe())
            result.set_result(None)
        except BaseException as exc:  # noqa: BLE001 - MemoryError from junk bytes included
            result.set_exception(exc if isinstance(exc, Exception) else RuntimeError(repr(exc)))

    threading.Thread(target=target, name="sdeeos-probe", daemon=True).start()
    try:
        result.result(timeout=timeout + 1)
    except Exception as exc:  # noqa: BLE001 - refused, unresolvable, timed out, not a scheduler...
        text = str(exc).strip().splitlines()
        reason = f"{type(exc).__name__}: {text[0][:160]}" if text else type(exc).__name__
        raise SchedulerUnreachableError(
            f"could not reach the Dask scheduler at {address!r} within {timeout:g} s ({reason}); is it "
            "running, and is it a Dask scheduler? (omit the scheduler to use a local cluster)") from None


def connect_client(scheduler, timeout: float):
    """``(client, description, owned)`` for a scheduler address (probed first) or a given ``Client``.

    ``owned`` says whether the caller created the client and so must close it.  An address that
    cannot be reached, or whose client cannot be made, raises `SchedulerUnreachableError`.
    """
    import distributed

    if isinstance(scheduler, distributed.Client):
        return scheduler, f"dask cluster at {scheduler.scheduler.address}", False
    probe_scheduler(scheduler, timeout)
    try:
        client = distributed.Client(scheduler, timeout=timeout, set_as_default=False)
    except Exception as exc:  # noqa: BLE001 - any failure to connect is reported the same way
        raise SchedulerUnreachableError(
            f"could not connect to the Dask scheduler at {scheduler!r} within {timeout:g} s "
            f"({type(exc).__name__}: {exc})") from None
    return client, f"dask cluster at {scheduler}", True


class WorkerWatch:
    """Polled between a run's futures: a cluster without workers for ``timeout`` seconds raises
    `NoWorkersError`, a scheduler that stopped answering `SchedulerUnreachableError`; ``kept``
    ends both messages (what the caller keeps for a resume).

    A scheduler keeps the tasks of dead workers waiting for new ones, forever: without this
    watch, a run whose workers were all killed would never end.  With it, it ends at most
    ``timeout + 1`` s (one poll) after the last worker left.
    """

    def __init__(self, client, description: str, timeout: float, kept: str):
        self.client, self.description, self.timeout, self.kept = client, description, timeout, kept
        self.idle_since: float | None = None
        self.last_check = time.monotonic()

    def check(self) -> None:
        now = time.monotonic()
        if now - self.last_check < _POLL_S:
            return
        self.last_check = now
        try:
            n = len(self.client.nthreads())
        except Exception as exc:  # noqa: BLE001 - the scheduler died
            raise SchedulerUnreachableError(
                f"lost the connection to the Dask scheduler ({self.description}): {type(exc).__name__}; "
                f"{self.kept}") from None
        if n:
            self.idle_since = None
            return
        if self.idle_since is None:
            self.idle_since = now
        elif now - self.idle_since > self.timeout:
            raise NoWorkersError(
                f"the Dask cluster ({self.description}) has had no workers for {self.timeout:g} s; start workers "
                f"(dask worker ADDRESS) or raise no_workers_timeout; {self.kept}")


class QuietClientLogs:
    """Raise the ``distributed.client`` logger to CRITICAL until `restore`: a lost scheduler is
    reported in one line by the run, and the client's reconnect attempts would log tracebacks."""

    def __init__(self):
        self.logger = logging.getLogger("distributed.client")
        self.level = self.logger.level
        self.logger.setLevel(logging.CRITICAL)

    def restore(self):
        self.logger.setLevel(self.level)
