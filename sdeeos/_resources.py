"""Memory estimates made before allocating, so a too-large run is refused with numbers, not killed.

A run's host memory is its run state (every per-trajectory array an engine advances) plus the
dataset built from it, which copies each of those arrays once, plus the engine's transient arrays
(`Model.work_bytes`).  A model whose construction allocates large arrays (a data set, a dense
tensor) checks their size with `check_allocation` before allocating them.  The run state's size is measured,
not modelled: a fresh state is built for one and two trajectories, with no and with one record,
and the size is bilinear in (trajectories, records): every array is fixed, per trajectory, per
record or per record and trajectory.
"""

from __future__ import annotations

import dataclasses
import os

from ._errors import ResourceError

__all__ = ["available_cores", "max_threads", "available_memory_bytes", "run_memory_bytes", "check_run_memory", "check_work_memory",
           "check_allocation", "format_bytes"]

#: The dataset built at the end copies every per-trajectory array of the run state once.
_COPIES_AT_PEAK = 2


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity; the machine's count off Linux)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def max_threads() -> int:
    """Most threads a compiled kernel may use: Numba's limit (``NUMBA_NUM_THREADS``, else the cores)."""
    try:
        return max(1, int(os.environ["NUMBA_NUM_THREADS"]))
    except (KeyError, ValueError):
        return os.cpu_count() or 1


def available_memory_bytes() -> int | None:
    """Memory the kernel says can be allocated without swapping (``MemAvailable``), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return None


def _state_bytes(spec, n_traj: int, with_record: bool) -> int:
    small = dataclasses.replace(spec, n_traj=n_traj, record_every=spec.n_steps if with_record else 0)
    run = spec.model.new_run(small)
    return sum(getattr(a, "nbytes", 0) for a in run.arrays().values())


# (model class, parameters, initial state, method) -> the four coefficients: sizes depend on what
# the model is, not on n_traj, n_steps or the seed, and measuring builds four small run states.
_COEFFICIENTS: dict = {}


def _coefficients(spec) -> tuple[int, int, int, int]:
    model = spec.model
    key = (type(model), repr(sorted(model.parameters().items())), repr(sorted(model.initial_state().items())),
           spec.method)
    if key not in _COEFFICIENTS:
        b10, b20 = _state_bytes(spec, 1, False), _state_bytes(spec, 2, False)
        b11, b21 = _state_bytes(spec, 1, True), _state_bytes(spec, 2, True)
        per_traj = b20 - b10
        per_rec_traj = (b21 - b20) - (b11 - b10)
        per_rec = (b11 - b10) - per_rec_traj
        if len(_COEFFICIENTS) > 1024:
            _COEFFICIENTS.clear()
        _COEFFICIENTS[key] = (b10, per_traj, per_rec, per_rec_traj)
    return _COEFFICIENTS[key]


def run_memory_bytes(spec) -> int:
    """Peak host bytes of a run of ``spec`` (run state, its dataset and the engine's transient arrays)."""
    b10, per_traj, per_rec, per_rec_traj = _coefficients(spec)
    n, r = spec.n_traj, spec.n_records
    state = b10 + per_traj * (n - 1) + r * (per_rec + per_rec_traj * n)
    return _COPIES_AT_PEAK * max(state, 0) + int(spec.model.work_bytes(spec))


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.3g} PiB"  # pragma: no cover


def check_work_memory(spec, available: int | None = None) -> int:
    """Raise `ResourceError` if the engine's own arrays (``model.work_bytes``) cannot fit in memory.

    Checked in every mode, summaries included: these arrays do not shrink with the trajectories kept."""
    have = available_memory_bytes() if available is None else available
    work = int(spec.model.work_bytes(spec))
    if have is not None and work > have:
        check_allocation(f"the {spec.method} engine of model {spec.model.name!r} (its step and work arrays)", work,
                         have, hint="a smaller model" + ("" if spec.n_traj == 1 else " or fewer trajectories"))
    return work


def check_run_memory(spec, available: int | None = None) -> int:
    """Raise `ResourceError` (with the estimate and a suggestion) if ``spec`` cannot fit in memory."""
    have = available_memory_bytes() if available is None else available
    # the engine's own arrays first: measuring the run state may itself need them (a symbolic step)
    check_work_memory(spec, have)
    need = run_memory_bytes(spec)
    if have is not None and need > have:
        hint = "fewer trajectories (n_traj), split the ensemble into several runs with different seeds"
        if spec.record_every:
            hint += ", or a larger record_every (recorded paths take " \
                    f"{format_bytes(_COPIES_AT_PEAK * 8 * spec.n_records * spec.n_traj)} per recorded variable)"
        raise ResourceError(
            f"n_traj={spec.n_traj}, n_steps={spec.n_steps}"
            + (f", record_every={spec.record_every}" if spec.record_every else "")
            + f" needs about {format_bytes(need)} of memory but {format_bytes(have)} is available; use {hint}")
    return need


def check_allocation(what: str, nbytes: int, available: int | None = None, hint: str = "") -> int:
    """Raise `ResourceError` (one line: ``what``, the estimate, what is available, ``hint``) if
    ``nbytes`` cannot fit in memory; else return ``nbytes``.  Called before allocating."""
    have = available_memory_bytes() if available is None else available
    if have is not None and nbytes > have:
        raise ResourceError(f"{what} needs about {format_bytes(nbytes)} of memory but {format_bytes(have)} "
                            "is available" + (f"; use {hint}" if hint else ""))
    return nbytes
