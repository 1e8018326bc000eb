"""One writer per store: an exclusive lock, and temporary names no other process uses.

Two processes writing the same sweep store (or study folder) used to share temp names and delete
each other's files.  `StoreLock` takes an exclusive ``flock`` on a lock file beside the target,
holding the owner's pid, host and start time; a second writer fails at once with a one-line
message naming the holder, or waits up to ``wait`` seconds when asked.  The kernel drops the lock
when its holder dies (SIGKILL included), so a stale lock never blocks a later run.

Temporary names (`unique_temp_path`) carry the pid and a random suffix; stale temporaries are only
removed by the lock holder (`remove_stale_temps`), which knows no other writer exists.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import secrets
import shutil
import socket
import time
from pathlib import Path

from ._errors import StoreLockedError

__all__ = ["StoreLock", "lock_path_for", "unique_temp_path", "TEMP_MARK", "remove_stale_temps"]

#: Every temporary file or folder sdeeos creates has this in its name (and nothing else has).
TEMP_MARK = ".sdeeos-tmp-"

_POLL_S = 0.2


def lock_path_for(target: str | os.PathLike) -> Path:
    """The lock file of ``target``: ``X.lock`` beside a store ``X``."""
    target = Path(target)
    return target.with_name(target.name + ".lock")


def unique_temp_path(target: str | os.PathLike, suffix: str = "") -> Path:
    """A temporary name beside ``target`` that no other process (or call) uses.

    ``suffix`` keeps extensions libraries insist on (``np.savez`` appends ``.npz`` otherwise).
    """
    target = Path(target)
    return target.with_name(f".{target.name}{TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}{suffix}")


def remove_stale_temps(folder: str | os.PathLike, target: str | os.PathLike | None = None) -> list[Path]:
    """Delete sdeeos temporaries in ``folder`` (only those of ``target``, if given).

    Call only while holding the lock of the store they belong to: then no other process is
    writing them, and they are leftovers of a killed writer.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = folder.glob(f".{Path(target).name}{TEMP_MARK}*" if target is not None else f"*{TEMP_MARK}*")
    removed = []
    for p in found:
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
        except FileNotFoundError:
            pass
    return removed


class StoreLock:
    """Exclusive lock on ``target`` (``with StoreLock(path): ...``), see the module docstring."""

    def __init__(self, target: str | os.PathLike, *, wait: float = 0.0, what: str = "store",
                 lock_file: str | os.PathLike | None = None):
        self.target = Path(target)
        self.path = Path(lock_file) if lock_file is not None else lock_path_for(self.target)
        self.wait = float(wait)
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> "StoreLock":
        deadline = time.monotonic() + self.wait
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                if time.monotonic() >= deadline:
                    raise StoreLockedError(
                        f"{self.what} {str(self.target)!r} is being written by another sdeeos process "
                        f"({holder}); wait for it to finish"
                        + ("" if self.wait else " or ask to wait for the lock (wait_for_lock / --wait-lock SECONDS)")
                    ) from None
                time.sleep(_POLL_S)
                continue
            # The previous holder may have removed the file between our open and our lock: then
            # we hold a lock on a file nobody else will see; start again.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            info = {"pid": os.getpid(), "host": socket.gethostname(),
                    "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
            self._fd = fd
            return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # still locked: a waiter re-checks the inode (above)
        finally:
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "StoreLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"pid {info['pid']} on {info['host']}, since {info['started']}"
    except (ValueError, KeyError, OSError, UnicodeDecodeError):
        return "holder unknown: it is still starting"
