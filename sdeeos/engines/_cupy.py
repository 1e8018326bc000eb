r"""CuPy GPU engine: one fused CUDA kernel per model step, generated from the same SymPy step.

``backend="cupy"`` runs every trajectory in its own CUDA thread, with the whole time loop inside
one kernel launch, the state in registers and the per-trajectory counter-based RNG of
`sdeeos._rng` (keyed by seed and trajectory: the same streams as the CPU engines).  The kernel
source comes from `sdeeos.engines._cuda_template` (the step printed as C by the ``print_c``
printer, one template); there is no hand-written GPU update rule.

Two entry points:

* `CupyEngine` (``simulate(..., backend="cupy")``): fills the same `RunState` host arrays as the
  Numba engine, so segments, progress, checkpoints and datasets work unchanged.  While the run
  fits in device memory it stays resident on the device between ``advance`` calls; after each
  call only what changed is copied back (state, folded sums, liveness; partial sums only when the
  segment does not end on a fold; the burn-in state and recorded rows only when the segment holds
  them).  A run larger than device memory is split into chunks of trajectories automatically.
* `run_summary`: everything on the device, chunk by chunk (stream keys generated on the device,
  statistics reduced on the device); only a few scalars per chunk are copied to the host and
  merged there (`merge_moments`).  This is the path for 10^7-10^9 trajectories.

Agreement with the CPU (float64, ``fmad=False``, the default): the arithmetic is that of the Numba
kernel operation for operation, compiled without FMA contraction (``--fmad=false``); CUDA's
double ``+ - * /`` and ``sqrt`` are correctly rounded, so the only difference is CUDA's ``log``
(max. 1 ulp, vs glibc's correctly rounded one) in the AS241 tail branch.  A 1-ulp change of a
normal changes the trajectory at round-off level; `tests/engines/test_cuda_source_on_cpu.py`
measures how far that goes with a deliberately 1-ulp-wrong ``log``: ~1e-15 of an observable's rms
where the dynamics are stable, ~1e-12 where they are mildly sensitive; in a chaotic regime any
1-ulp difference eventually decorrelates a trajectory, and only ensemble statistics agree.
``fmad=True`` lets NVRTC contract multiply-adds into FMAs (137 -> 103 FP64 instructions per step of
the reduced model, so up to ~1.3x faster; results then differ from the CPU at round-off level).

``dtype="float32"``: state, update and observables in single precision (partial and total sums in
double); the normals come from the same 64-bit words.  Its error against float64 is measured by
the tests (on the CPU build of the same source) and documented there.  CuPy compiles with
``-ftz=true``, so on the GPU single-precision denormals (< 1.2e-38) flush to zero; the CPU build
does not (float64 is unaffected).

Device memory is proportional to the number of trajectories (`bytes_per_trajectory`: about
200 bytes per trajectory for the reduced model in float64), never to the number of steps, except
for recorded paths, of which only the rows of the current segment are held on the device.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import weakref
from typing import ClassVar

import numpy as np

from .._contract import FOLD, Engine, Model, RunSpec, RunState
from .._errors import BackendUnavailableError, ParameterError
from .._rng import check_rng, rng_scheme
from .._validation import check_choice, check_int
from ._cuda_template import DTYPES, KERNEL_ARGS, KERNEL_NAME, KEYS_KERNEL_NAME, KernelSource, kernel_source

__all__ = [
    "CupyEngine",
    "CupyDevice",
    "cupy_available",
    "run_summary",
    "bytes_per_trajectory",
    "plan_chunks",
    "check_launch_args",
    "chunk_moments",
    "merge_moments",
    "summary_from_moments",
    "SAFETY",
]

#: Fraction of the free device memory a run plans to use (the rest: CUDA context, fragmentation).
SAFETY = 0.8
_SUGGEST = 'use backend="numba" to run on the CPU'
_NVRTC_OPTIONS = ("--std=c++17",)


def cupy_available() -> tuple[bool, str]:
    """``(True, "")`` when CuPy can run kernels here, else ``(False, reason with a suggestion)``."""
    try:
        import cupy
    except ImportError:
        return False, ("CuPy is not installed (on a machine with an NVIDIA GPU: pip install cupy-cuda12x or "
                       f"cupy-cuda13x, matching its CUDA version); {_SUGGEST}")
    except Exception as exc:  # a broken CUDA installation can fail at import
        return False, f"CuPy failed to import ({type(exc).__name__}: {exc}); {_SUGGEST}"
    try:
        ok = bool(cupy.cuda.is_available())
    except Exception:  # pragma: no cover - is_available does not raise in CuPy >= 9
        ok = False
    if not ok:
        return False, f"CuPy is installed but no usable CUDA GPU was found (cupy.cuda.is_available() is False); {_SUGGEST}"
    return True, ""


# ---------------------------------------------------------------------------------- devices
_MODULES: dict[tuple[str, bool], dict] = {}
_LOCK = threading.Lock()


class CupyDevice:
    """Device interface over CuPy: arrays, compiled kernels, free memory (see `HostDevice`)."""

    def __init__(self):
        ok, reason = cupy_available()
        if not ok:
            raise BackendUnavailableError(f"backend 'cupy' is not available: {reason}")
        import cupy

        self.xp = cupy
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"]
        self.name = name.decode() if isinstance(name, bytes) else str(name)

    def functions(self, kernel: KernelSource, fmad: bool) -> dict:
        key = (kernel.digest, bool(fmad))
        with _LOCK:
            if key not in _MODULES:
                options = _NVRTC_OPTIONS + (f"--fmad={'true' if fmad else 'false'}",)
                module = self.xp.RawModule(code=kernel.source, options=options)
                _MODULES[key] = {n: module.get_function(n) for n in (KERNEL_NAME, KEYS_KERNEL_NAME)}
            return _MODULES[key]

    def free_bytes(self) -> int:
        free, _total = self.xp.cuda.runtime.memGetInfo()
        return int(free) + int(self.xp.get_default_memory_pool().free_bytes())

    def to_device(self, host: np.ndarray, dtype):
        return self.xp.asarray(np.ascontiguousarray(host, dtype=dtype))

    def to_host(self, dev, out: np.ndarray) -> None:
        if out.flags.c_contiguous and out.dtype == dev.dtype:
            dev.get(out=out)
        else:
            out[...] = dev.get()

    def empty(self, shape, dtype):
        return self.xp.empty(shape, dtype=dtype)

    def synchronize(self) -> None:
        self.xp.cuda.get_current_stream().synchronize()


# ---------------------------------------------------------------------------------- planning
def bytes_per_trajectory(kernel: KernelSource, rec_rows: int = 0, *, summary: bool = False) -> int:
    """Device bytes one trajectory needs: proportional to trajectories, independent of steps.

    keys and increments (16), state and burn-in state (2 * n_state * itemsize), folded and partial
    sums and squares (4 * n_obs * 8), liveness and divergence step (9), recorded rows of the
    current segment (rec_rows * (n_state + n_obs) * itemsize), and for `run_summary` three float64
    temporaries of the device-side reduction.
    """
    it = kernel.itemsize
    b = 16 + 2 * kernel.n_state * it + 4 * kernel.n_obs * 8 + 1 + 8
    b += int(rec_rows) * (kernel.n_state + kernel.n_obs) * it
    if summary:
        b += 3 * 8
    return b


def plan_chunks(n_traj: int, per_traj_bytes: int, budget_bytes: int, *, align: int = 1024) -> list[tuple[int, int]]:
    """Split ``n_traj`` trajectories into near-equal chunks ``[(lo, hi), ...]`` that fit ``budget_bytes``.

    Chunk sizes are multiples of ``align`` (full thread blocks) unless one chunk holds everything.
    Each trajectory's stream is independent, so chunking never changes a result.
    """
    n_traj = check_int("n_traj", n_traj, low=1)
    per_traj_bytes = check_int("per_traj_bytes", per_traj_bytes, low=1)
    if budget_bytes < per_traj_bytes:
        raise ParameterError(
            f"a trajectory needs {per_traj_bytes} bytes of device memory but only {int(budget_bytes)} are "
            "available; free device memory, record fewer steps (larger record_every), or use backend=\"numba\"")
    cap = int(budget_bytes // per_traj_bytes)
    if cap >= n_traj:
        return [(0, n_traj)]
    unit = align if cap >= align else 1
    n_units = -(-n_traj // unit)
    per_chunk = cap // unit
    n_chunks = -(-n_units // per_chunk)
    q, r = divmod(n_units, n_chunks)  # r chunks of q + 1 units, the others q units
    bounds, edge = [0], 0
    for c in range(n_chunks):
        edge += (q + 1 if c < r else q) * unit
        bounds.append(min(edge, n_traj))
    return [(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:])]


def _record_rows(spec: RunSpec, t0: int, t1: int) -> tuple[int, int]:
    """Record rows ``[r0, r1)`` written by steps ``[t0, t1)``."""
    k = spec.record_every
    if not k:
        return 0, 0
    return -(-t0 // k), -(-t1 // k)


def check_launch_args(kernel: KernelSource, args: tuple, m: int, rec_rows: int) -> None:
    """Check the advance kernel's arguments against `KERNEL_ARGS` (dtype, size, contiguity)."""
    real = np.float64 if kernel.dtype == "float64" else np.float32
    ns, no = kernel.n_state, kernel.n_obs
    sizes = {"state": ns * m, "params": kernel.n_params, "keys": m, "gammas": m, "acc_sum": no * m,
             "acc_sq": no * m, "part_sum": no * m, "part_sq": no * m, "alive": m, "diverged_step": m,
             "burn_state": ns * m, "rec": max(rec_rows * (ns + no) * m, 1)}
    dtypes = {"sdeeos_real*": real, "const double*": np.float64, "double*": np.float64,
              "const sdeeos_u64*": np.uint64, "unsigned char*": np.uint8, "long long*": np.int64,
              "long long": np.int64, "double": np.float64}
    if len(args) != len(KERNEL_ARGS):
        raise TypeError(f"{KERNEL_NAME} takes {len(KERNEL_ARGS)} arguments, got {len(args)}")
    for value, (name, ctype) in zip(args, KERNEL_ARGS):
        want = np.dtype(dtypes[ctype])
        if ctype.endswith("*"):
            if getattr(value, "dtype", None) != want:
                raise TypeError(f"kernel argument {name} must be a {want} array, got {getattr(value, 'dtype', type(value))}")
            if value.size != sizes[name] or not value.flags.c_contiguous:
                raise ValueError(f"kernel argument {name} must be C-contiguous with {sizes[name]} elements, "
                                 f"got shape {value.shape}")
        elif not (isinstance(value, np.generic) and value.dtype == want):
            raise TypeError(f"kernel argument {name} must be a numpy {want} scalar, got {value!r}")


# ---------------------------------------------------------------------------------- reductions
def chunk_moments(xp, acc_sum, acc_sq, alive, n_avg: int) -> np.ndarray:
    """Per-observable moments of one chunk, reduced on the device; returns a small host array.

    Row k = observable k: ``[n_alive, mean of time means, M2 of time means, mean of time mean squares,
    M2 of time mean squares]`` over live trajectories (M2: sum of squared deviations from the mean).
    """
    live = alive.astype(bool)
    n = int(live.sum())
    out = np.zeros((acc_sum.shape[0], 5))
    out[:, 0] = n
    if n == 0:
        out[:, 1:] = np.nan
        return out
    rows = []
    for k in range(acc_sum.shape[0]):
        for acc in (acc_sum[k], acc_sq[k]):
            v = xp.where(live, acc / n_avg, 0.0)
            mean = v.sum() / n
            m2 = xp.where(live, (v - mean) ** 2, 0.0).sum()
            rows += [mean, m2]
    vals = xp.stack(rows) if rows else xp.zeros(0)
    host = np.asarray(vals.get() if hasattr(vals, "get") else vals, dtype=np.float64)
    out[:, 1:] = host.reshape(acc_sum.shape[0], 4)
    return out


def merge_moments(parts: list[np.ndarray]) -> np.ndarray:
    """Merge chunk moments (`chunk_moments` rows) with Chan et al.'s pairwise update."""
    total = None
    for p in parts:
        p = np.asarray(p, dtype=np.float64)
        if total is None:
            total = p.copy()
            continue
        na, nb = total[:, 0], p[:, 0]
        n = na + nb
        out = total.copy()
        out[:, 0] = n
        for c in (1, 3):  # (mean, M2) pairs
            with np.errstate(invalid="ignore", divide="ignore"):
                delta = p[:, c] - total[:, c]
                mean = np.where(nb == 0, total[:, c], np.where(na == 0, p[:, c], total[:, c] + delta * nb / n))
                m2 = np.where(nb == 0, total[:, c + 1], np.where(
                    na == 0, p[:, c + 1], total[:, c + 1] + p[:, c + 1] + delta**2 * na * nb / n))
            out[:, c], out[:, c + 1] = mean, m2
        total = out
    if total is None:
        raise ValueError("no chunks to merge")
    return total


def summary_from_moments(moments: np.ndarray, obs_names, n_traj: int) -> dict:
    """The scalar summaries of `collect_symbolic` (same names) from merged moments."""
    summary: dict = {}
    n_alive = int(moments[0, 0]) if len(obs_names) else n_traj
    for k, name in enumerate(obs_names):
        n, mean, m2, meansq = moments[k, 0], moments[k, 1], moments[k, 2], moments[k, 3]
        ok = n > 0
        summary[f"{name}_mean"] = float(mean) if ok else float("nan")
        summary[f"{name}_mean_stderr"] = float(math.sqrt(m2 / (n - 1)) / math.sqrt(n)) if n > 1 else float("nan")
        summary[f"{name}_meansq"] = float(meansq) if ok else float("nan")
    summary["n_diverged"] = int(n_traj - n_alive)
    summary["n_alive"] = n_alive
    return summary


# ---------------------------------------------------------------------------------- engine
_FIELDS = ("state", "params", "keys", "gammas", "acc_sum", "acc_sq", "part_sum", "part_sq", "alive",
           "diverged_step", "burn_state")


@dataclasses.dataclass
class _DeviceRun:
    """Device copy of trajectories ``[lo, hi)`` of a run."""

    lo: int
    hi: int
    arrays: dict
    nbytes: int
    t: int = -1
    run_ref: object = None
    host: dict = dataclasses.field(default_factory=dict)
    digest: str = ""

    def current_for(self, run: RunState, digest: str) -> bool:
        return (self.run_ref is not None and self.run_ref() is run and self.t == run.t and self.digest == digest
                and all(getattr(run, f) is self.host.get(f) for f in _FIELDS))


_KERNEL_SOURCES: dict[tuple[str, str, str], KernelSource] = {}


def _kernel_for(spec: RunSpec, dtype: str) -> KernelSource:
    step = spec.step
    key = (step.signature(), dtype, spec.rng)
    if key not in _KERNEL_SOURCES:
        _KERNEL_SOURCES[key] = kernel_source(step, dtype=dtype, model_name=type(spec.model).__name__,
                                             method=spec.method, rng=spec.rng)
    return _KERNEL_SOURCES[key]


def _check_options(dtype, fmad, block, max_device_bytes):
    dtype = None if dtype is None else check_choice("dtype", dtype, DTYPES)
    if not isinstance(fmad, (bool, np.bool_)):
        raise ParameterError(f"fmad must be True or False, got {fmad!r}")
    block = check_int("block", block, low=32, high=1024)
    if block % 32:
        raise ParameterError(f"block must be a multiple of 32 (a whole number of warps) in [32, 1024], got {block}")
    if max_device_bytes is not None:
        max_device_bytes = check_int("max_device_bytes", max_device_bytes, low=1)
    return dtype, bool(fmad), block, max_device_bytes


class CupyEngine(Engine):
    """GPU engine: one thread per trajectory, the time loop inside one fused kernel.

    Parameters
    ----------
    dtype : {None, "float64", "float32"}
        Precision of state, update and observables (sums are always float64).  ``None`` (default):
        the run's ``RunSpec.dtype`` (what ``simulate(..., dtype=...)`` sets).
    fmad : bool
        Let NVRTC contract multiply-adds into FMAs (faster; no longer bit-identical to the CPU).
    block : int
        Threads per block (multiple of 32).
    max_device_bytes : int, optional
        Cap on the device memory a run uses (default: 80 % of what is free); smaller runs chunk.
    device : optional
        Device interface (default: `CupyDevice`; tests pass `sdeeos.engines._cuda_host.HostDevice`).
    """

    name: ClassVar[str] = "cupy"
    #: Trajectory-steps per `simulate` segment this engine would like (a GPU does ~5e10/s; the
    #: default segments of 2e8 make per-segment copies dominate).  Read by simulate if it supports it.
    segment_work: ClassVar[float] = 1e12
    dtypes: ClassVar[tuple[str, ...]] = DTYPES

    def __init__(self, dtype: str | None = None, *, fmad: bool = False, block: int = 128,
                 max_device_bytes: int | None = None, device=None):
        self.dtype, self.fmad, self.block, self.max_device_bytes = _check_options(dtype, fmad, block, max_device_bytes)
        self.device = CupyDevice() if device is None else device
        self._resident: _DeviceRun | None = None

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return cupy_available()

    # -------------------------------------------------------------- memory
    def _budget(self, reclaimable: int = 0) -> int:
        budget = int((self.device.free_bytes() + reclaimable) * SAFETY)
        if self.max_device_bytes is not None:
            budget = min(budget, self.max_device_bytes)
        return budget

    def plan(self, spec: RunSpec, t0: int, t1: int) -> list[tuple[int, int]]:
        """Trajectory chunks ``advance(spec, run, t1)`` from ``t0`` would use."""
        kernel = _kernel_for(spec, self.dtype or spec.dtype)
        r0, r1 = _record_rows(spec, t0, t1)
        reclaim = self._resident.nbytes if self._resident is not None else 0
        return plan_chunks(spec.n_traj, bytes_per_trajectory(kernel, r1 - r0), self._budget(reclaim))

    # -------------------------------------------------------------- transfers
    def _upload(self, spec: RunSpec, run: RunState, kernel: KernelSource, lo: int, hi: int) -> _DeviceRun:
        real = np.float64 if kernel.dtype == "float64" else np.float32
        dev = self.device
        dtypes = {"state": real, "params": np.float64, "keys": np.uint64, "gammas": np.uint64,
                  "acc_sum": np.float64, "acc_sq": np.float64, "part_sum": np.float64, "part_sq": np.float64,
                  "alive": np.uint8, "diverged_step": np.int64, "burn_state": real}
        arrays = {}
        for f in _FIELDS:
            host = getattr(run, f)
            arrays[f] = dev.to_device(host if f == "params" else host[..., lo:hi], dtypes[f])
        nbytes = sum(int(a.nbytes) for a in arrays.values())
        return _DeviceRun(lo=lo, hi=hi, arrays=arrays, nbytes=nbytes, t=run.t, run_ref=weakref.ref(run),
                          host={f: getattr(run, f) for f in _FIELDS}, digest=kernel.digest)

    def _get(self, dev_array, host_view: np.ndarray) -> None:
        if host_view.flags.c_contiguous and host_view.dtype == dev_array.dtype:
            self.device.to_host(dev_array, host_view)
        else:
            tmp = np.empty(dev_array.shape, dtype=dev_array.dtype)
            self.device.to_host(dev_array, tmp)
            host_view[...] = tmp

    def _download(self, spec: RunSpec, run: RunState, d: _DeviceRun, t0: int, t1: int, rec, r0: int, r1: int):
        lo, hi, a = d.lo, d.hi, d.arrays
        self._get(a["state"], run.state[:, lo:hi])
        if t1 > spec.burn_in:
            self._get(a["acc_sum"], run.acc_sum[:, lo:hi])
            self._get(a["acc_sq"], run.acc_sq[:, lo:hi])
        if t1 % FOLD == 0 or t1 == spec.n_steps:  # the kernel just folded: every partial sum is zero
            run.part_sum[:, lo:hi] = 0.0
            run.part_sq[:, lo:hi] = 0.0
        else:
            self._get(a["part_sum"], run.part_sum[:, lo:hi])
            self._get(a["part_sq"], run.part_sq[:, lo:hi])
        alive = np.empty(hi - lo, dtype=np.uint8)
        self.device.to_host(a["alive"], alive)
        if not np.array_equal(alive, run.alive[lo:hi]):
            run.alive[lo:hi] = alive
            self._get(a["diverged_step"], run.diverged_step[lo:hi])
        if t0 <= spec.burn_in < t1:
            self._get(a["burn_state"], run.burn_state[:, lo:hi])
        if r1 > r0:
            self._get(rec, run.rec[r0:r1, :, lo:hi])

    # -------------------------------------------------------------- kernel
    def _launch(self, fns, kernel: KernelSource, spec: RunSpec, d: _DeviceRun, t0: int, t1: int, r0: int, r1: int):
        real = np.float64 if kernel.dtype == "float64" else np.float32
        m = d.hi - d.lo
        ns, no = kernel.n_state, kernel.n_obs
        rec = self.device.empty((r1 - r0, ns + no, m) if r1 > r0 else (1,), real)
        a = d.arrays
        i64, f64 = np.int64, np.float64
        args = (a["state"], a["params"], a["keys"], a["gammas"], i64(t0), i64(t1), i64(spec.n_steps),
                i64(spec.burn_in), i64(FOLD), f64(spec.model.divergence_bound), a["acc_sum"], a["acc_sq"],
                a["part_sum"], a["part_sq"], a["alive"], a["diverged_step"], a["burn_state"], rec,
                i64(spec.record_every), i64(r0), i64(m))
        check_launch_args(kernel, args, m, r1 - r0)
        grid = -(-m // self.block)
        fns[KERNEL_NAME]((grid,), (self.block,), args)
        return rec

    def advance(self, spec: RunSpec, run: RunState, t1: int, n_threads: int | None = None) -> None:
        """Advance ``run`` to ``t1`` on the device (``n_threads`` is ignored: one thread per trajectory)."""
        t0 = run.t
        t1 = check_int("t1", t1, low=t0, high=spec.n_steps)
        if t1 == t0:
            return
        kernel = _kernel_for(spec, self.dtype or spec.dtype)
        fns = self.device.functions(kernel, self.fmad)
        r0, r1 = _record_rows(spec, t0, t1)
        chunks = self.plan(spec, t0, t1)
        if len(chunks) == 1:
            d = self._resident
            if d is None or not d.current_for(run, kernel.digest):
                self._resident = d = None  # free the stale copy before uploading
                d = self._upload(spec, run, kernel, 0, spec.n_traj)
            rec = self._launch(fns, kernel, spec, d, t0, t1, r0, r1)
            self._download(spec, run, d, t0, t1, rec, r0, r1)
            d.t = t1
            self._resident = d
        else:
            self._resident = None
            for lo, hi in chunks:
                d = self._upload(spec, run, kernel, lo, hi)
                rec = self._launch(fns, kernel, spec, d, t0, t1, r0, r1)
                self._download(spec, run, d, t0, t1, rec, r0, r1)
                del d, rec
        self.device.synchronize()
        run.t = t1


# ---------------------------------------------------------------------------------- summaries
def run_summary(model, method: str | None = None, *, n_traj: int, n_steps: int, burn_in: int | None = None,
                seed: int = 0, dtype: str = "float64", fmad: bool = False, block: int = 128,
                max_device_bytes: int | None = None, steps_per_launch: int | None = None,
                device=None, rng: str | None = None) -> dict:
    r"""Run an ensemble entirely on the device and return only its scalar summaries.

    The same trajectories as ``simulate(model, method, n_traj=..., n_steps=..., burn_in=...,
    seed=...)``: the returned ``<obs>_mean``, ``<obs>_mean_stderr``, ``<obs>_meansq``,
    ``n_diverged``, ``n_alive`` are `collect_symbolic`'s summaries up to the summation order of the
    reduction (relative differences ~1e-15), plus the model's summaries and predictions.  Device
    memory holds one chunk of trajectories at a time (keys generated on the device, statistics
    reduced there); per chunk a few scalars per observable come back to the host.

    ``steps_per_launch`` splits the time loop into several kernel launches (results do not change;
    useful on GPUs with a display watchdog).  Default: one launch per chunk.  ``rng``: the random-number
    family, as in `simulate` (default: Philox for float32, SplitMix64 for float64).
    """
    if not isinstance(model, Model) or not callable(getattr(model, "step", None)):  # a symbolic model
        raise ParameterError(f"model must be a symbolic sdeeos EnsembleModel, got {type(model).__name__}")
    dtype, fmad, block, max_device_bytes = _check_options(dtype, fmad, block, max_device_bytes)
    dtype = dtype or "float64"
    spec = RunSpec.checked(model, method, n_traj=n_traj, n_steps=n_steps, burn_in=burn_in, seed=seed,
                           rng=check_rng(rng, dtype))
    method, n_traj, n_steps, burn_in = spec.method, spec.n_traj, spec.n_steps, spec.burn_in
    steps_per_launch = n_steps if steps_per_launch is None else check_int("steps_per_launch", steps_per_launch, low=1)
    device = CupyDevice() if device is None else device

    kernel = _kernel_for(spec, dtype)
    fns = device.functions(kernel, fmad)
    xp = device.xp
    real = np.float64 if dtype == "float64" else np.float32
    budget = int(device.free_bytes() * SAFETY)
    if max_device_bytes is not None:
        budget = min(budget, max_device_bytes)
    chunks = plan_chunks(n_traj, bytes_per_trajectory(kernel, 0, summary=True), budget)
    init = model.initial_vector(method)
    params = device.to_device(model.param_vector(method), np.float64)
    ns, no = kernel.n_state, kernel.n_obs
    parts = []
    n_alive_total = 0
    for lo, hi in chunks:
        m = hi - lo
        grid = (-(-m // block),)
        keys, gammas = device.empty(m, np.uint64), device.empty(m, np.uint64)
        fns[KEYS_KERNEL_NAME](grid, (block,), (np.uint64(int(seed)), np.uint64(lo), keys, gammas, np.int64(m)))
        state = device.empty((ns, m), real)
        for k in range(ns):
            state[k] = init[k]
        acc_sum, acc_sq = xp.zeros((no, m)), xp.zeros((no, m))
        part_sum, part_sq = xp.zeros((no, m)), xp.zeros((no, m))
        alive = xp.ones(m, dtype=np.uint8)
        diverged = xp.full(m, -1, dtype=np.int64)
        burn = device.empty((ns, m), real)
        rec = device.empty((1,), real)
        for t0 in range(0, n_steps, steps_per_launch):
            t1 = min(n_steps, t0 + steps_per_launch)
            args = (state, params, keys, gammas, np.int64(t0), np.int64(t1), np.int64(n_steps), np.int64(burn_in),
                    np.int64(FOLD), np.float64(model.divergence_bound), acc_sum, acc_sq, part_sum, part_sq,
                    alive, diverged, burn, rec, np.int64(0), np.int64(0), np.int64(m))
            check_launch_args(kernel, args, m, 0)
            fns[KERNEL_NAME](grid, (block,), args)
        if no:
            parts.append(chunk_moments(xp, acc_sum, acc_sq, alive, n_steps - burn_in))
        else:
            n_alive_total += int(alive.sum())
        del keys, gammas, state, acc_sum, acc_sq, part_sum, part_sq, alive, diverged, burn, rec
    device.synchronize()
    if no:
        summary = summary_from_moments(merge_moments(parts), kernel.obs_names, n_traj)
    else:
        summary = {"n_diverged": n_traj - n_alive_total, "n_alive": n_alive_total}
    if summary["n_alive"]:
        summary.update(model.summarize(method, summary))
    summary.update(model.predictions(method))
    summary.update(n_traj=n_traj, n_steps=n_steps, burn_in=burn_in, seed=str(seed), dtype=dtype, fmad=fmad,
                   rng_scheme=rng_scheme(dtype, spec.rng),
                   n_chunks=len(chunks), device=getattr(device, "name", ""))
    return summary
