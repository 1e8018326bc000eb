"""Connecting to a Dask scheduler: one reachability probe and one error for every entry point
(`sweep`'s runner and sharded `simulate`).  dask/distributed is optional (the ``dist`` extra)."""

from __future__ import annotations

import asyncio
import concurrent.futures

from ._errors import SdeeosError

__all__ = ["SchedulerUnreachableError", "probe_scheduler"]


class SchedulerUnreachableError(SdeeosError, ConnectionError):
    """A Dask scheduler could not be reached within the connect timeout."""


def probe_scheduler(address: str, timeout: float) -> None:
    """Open (and close) one comm to ``address`` within ``timeout`` s, or raise `SchedulerUnreachableError`.

    Done before creating a ``Client``, whose failed construction leaves a half-made object that
    complains when garbage-collected; the probe runs its own event loop in a helper thread, so it
    also works where a loop is already running (Jupyter).
    """
    from distributed.comm import connect

    async def probe():
        comm = await connect(address, timeout=timeout)
        await comm.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        fut = pool.submit(asyncio.run, probe())
        try:
            fut.result(timeout=timeout + 5)
        except Exception as exc:  # noqa: BLE001 - refused, unresolvable, timed out, not a scheduler...
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise SchedulerUnreachableError(
                f"could not reach the Dask scheduler at {address!r} within {timeout:g} s ({reason}); is it "
                "running? (omit the scheduler to use a local cluster)") from None
