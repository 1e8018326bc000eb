"""Connecting to a Dask scheduler: one reachability probe and one error for every entry point
(`sweep`'s runner and sharded `simulate`).  dask/distributed is optional (the ``dist`` extra)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

from ._errors import SdeeosError

__all__ = ["SchedulerUnreachableError", "probe_scheduler", "connect_client"]


class SchedulerUnreachableError(SdeeosError, ConnectionError):
    """A Dask scheduler could not be reached within the connect timeout, or was lost mid-run."""


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
