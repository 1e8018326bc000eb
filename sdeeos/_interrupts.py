"""Ctrl-C that never splits a state from its step counter.

Engines advance a run's arrays in place and then set its step counter.  A ``KeyboardInterrupt``
raised between the two (or in the middle of a Python-level segment) would leave a state of step
``t + segment`` labelled ``t``, and a checkpoint written from it would resume to wrong numbers.

`SigintDeferred` is a critical section: while it is active, the first SIGINT is only recorded
(and a one-line notice printed at once); the ``KeyboardInterrupt`` is raised at the next
`SigintDeferred.commit_point` -- where the caller's state is consistent -- or when the section
ends.  A second SIGINT ends the process at once (exit status 130) without running any more
Python code: whatever is on disk then is the last consistent checkpoint or store, because those
are only ever written atomically from a committed state.

The section is a no-op outside the main thread (signals are delivered to the main thread only)
and where SIGINT has a handler other than Python's default one (someone else owns it).  Sections
nest: an inner one shares the outer one's pending flag.
"""

from __future__ import annotations

import os
import select
import signal
import threading

__all__ = ["SigintDeferred", "EXIT_STATUS_INTERRUPTED"]

#: Exit status of a process ended by Ctrl-C (128 + SIGINT), the shell convention.
EXIT_STATUS_INTERRUPTED = 128 + signal.SIGINT

_NOTICE = b"\nsdeeos: Ctrl-C: stopping at the next consistent point (press Ctrl-C again to stop at once)\n"
_ABORT = b"\nsdeeos: second Ctrl-C: stopped at once; the last saved checkpoint/store is kept\n"

_active: "SigintDeferred | None" = None
_pipe: tuple[int, int] | None = None  # (read, write): the C-level wakeup fd, read by one watcher thread
_pipe_lock = threading.Lock()
# Every byte of the wakeup pipe is read and counted under this lock, by the watcher or by the
# section that ends: a byte written during one section is never counted in the next one.
_count_lock = threading.Lock()


def _read_available(r: int) -> bytes:
    try:
        return os.read(r, 64)
    except BlockingIOError:
        return b""


def _count(data: bytes) -> None:
    """Count the SIGINT bytes in ``data`` for the active section (call with `_count_lock` held)."""
    guard = _active
    if guard is None:
        return
    for byte in data:
        if byte != signal.SIGINT:
            continue
        guard._count += 1
        guard._pending = True
        if guard._count == 1:
            _write_stderr(_NOTICE)
        else:
            _write_stderr(_ABORT)
            os._exit(EXIT_STATUS_INTERRUPTED)


def _watch(r: int) -> None:
    """Count SIGINTs as they arrive (C level), even while the main thread runs a GIL-free kernel."""
    while True:
        try:
            select.select([r], [], [])
        except OSError:  # pragma: no cover
            return
        with _count_lock:
            _count(_read_available(r))


def _wakeup_pipe() -> tuple[int, int]:
    global _pipe
    with _pipe_lock:
        if _pipe is None:
            r, w = os.pipe()
            os.set_blocking(w, False)
            os.set_blocking(r, False)
            threading.Thread(target=_watch, args=(r,), name="sdeeos-sigint", daemon=True).start()
            _pipe = (r, w)
    return _pipe


class SigintDeferred:
    """``with SigintDeferred() as guard: ... guard.commit_point() ...``: see the module docstring."""

    __slots__ = ("_owner", "_pending", "_old_handler", "_old_wakeup", "_count")

    def __init__(self) -> None:
        self._owner = False
        self._pending = False
        self._old_handler = None
        self._old_wakeup = -1
        self._count = 0

    @property
    def pending(self) -> bool:
        """True once a SIGINT arrived inside this section (or an enclosing one)."""
        return self._pending if _active is None or _active is self else _active.pending

    def __enter__(self) -> "SigintDeferred":
        global _active
        if _active is not None:
            return self  # nested: the outer section owns the handler
        if threading.current_thread() is not threading.main_thread():
            return self
        if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            return self
        _, w = _wakeup_pipe()
        try:
            self._old_wakeup = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        except (ValueError, OSError):  # pragma: no cover - not the main interpreter
            return self
        # The Python-level handler runs only between bytecodes, i.e. after a compiled kernel
        # returns; the watcher reads the C-level wakeup byte at once, so a second Ctrl-C works
        # even inside a long (GIL-free) kernel.
        _active = self
        self._owner = True
        self._old_handler = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def _on_sigint(self, signum, frame) -> None:
        self._pending = True

    def commit_point(self) -> None:
        """Raise the deferred ``KeyboardInterrupt`` here, where the caller's state is consistent."""
        if self.pending:
            raise KeyboardInterrupt

    def __exit__(self, exc_type, exc, tb) -> None:
        global _active
        if not self._owner:
            return
        self._owner = False
        signal.signal(signal.SIGINT, self._old_handler)
        signal.set_wakeup_fd(self._old_wakeup)
        # no byte can be written any more: count what is still unread for this section, then end it
        r, _ = _wakeup_pipe()
        with _count_lock:
            while data := _read_available(r):
                _count(data)
            _active = None
        if self._pending and exc_type is None:
            raise KeyboardInterrupt


def _write_stderr(data: bytes) -> None:
    try:
        os.write(2, data)
    except OSError:  # pragma: no cover - no stderr
        pass
