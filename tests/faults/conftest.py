"""Fault-suite plumbing: one seed for every randomized case, and a time bound on every test.

``SDEEOS_FAULT_SEED`` replays a run (the seed is printed in the pytest header and in every randomized
failure); unset, a fresh seed is drawn.  ``SDEEOS_FAULT_TIMEOUT`` (seconds, default 300) bounds each
test: past it the test fails (SIGALRM), and 30 s later a test stuck in native code ends the whole
run with every thread's traceback (faulthandler), so a hang fails the suite instead of stalling it.
"""

from __future__ import annotations

import faulthandler
import os
import secrets
import signal
import sys

import pytest

FAULT_SEED = int(os.environ.get("SDEEOS_FAULT_SEED") or secrets.randbits(32))
FAULT_TIMEOUT = float(os.environ.get("SDEEOS_FAULT_TIMEOUT") or 300)


def _seed_line() -> str:
    return f"sdeeos fault seed: {FAULT_SEED} (replay: SDEEOS_FAULT_SEED={FAULT_SEED})"


def pytest_report_header(config):
    return _seed_line()  # shown when pytest is started on this folder


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line(_seed_line())  # shown however pytest was started, -q included


@pytest.fixture
def fault_seed() -> int:
    """The run's fault seed (also printed, so that a captured failure shows it)."""
    print(_seed_line())
    return FAULT_SEED


@pytest.fixture(autouse=True)
def _bounded_time(request):
    if not hasattr(signal, "setitimer"):  # pragma: no cover - not POSIX
        yield
        return

    def expired(signum, frame):
        pytest.fail(f"{request.node.nodeid} ran past SDEEOS_FAULT_TIMEOUT={FAULT_TIMEOUT:g} s "
                    f"(fault seed {FAULT_SEED})", pytrace=False)

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, FAULT_TIMEOUT)
    faulthandler.dump_traceback_later(FAULT_TIMEOUT + 30, exit=True, file=sys.stderr)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
