"""`simulate`: run an ensemble of trajectories and return a labelled, provenance-stamped dataset."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import xarray as xr
from tqdm.auto import tqdm

from ._checkpoint import load_run_arrays, save_run_arrays
from ._contract import FOLD, Model, RunSpec, ensemble_summary
from ._errors import DamagedDataError, ParameterError, ResourceError
from ._interrupts import SigintDeferred
from ._labels import label_dataset, model_labels
from ._io import check_checkpoint_path
from ._provenance import provenance_attrs
from ._resources import check_run_memory, check_work_memory, format_bytes, max_threads, run_memory_bytes
from ._sharded import DEFAULT_NO_WORKERS_TIMEOUT_S, SUMMARY_CHUNK_BYTES, run_sharded
from ._validation import check_int

__all__ = ["simulate", "ensemble_summary"]

# One segment is about this many trajectory-steps: short enough for a live progress bar and for
# checkpoints, long enough that the per-call overhead is invisible.
_SEGMENT_WORK = 2e8
_CHECKPOINT_EVERY_S = 30.0


def _segment_length(n_traj: int, n_steps: int, work: float = _SEGMENT_WORK) -> int:
    seg = int(work // max(n_traj, 1))
    seg = max(FOLD, seg - seg % FOLD)
    return min(seg, n_steps)


def _spec_digest(spec: RunSpec, backend: str) -> str:
    key = json.dumps({"backend": backend,
        "model": type(spec.model).__name__, "params": spec.model.parameters(),
        "init": {k: repr(v) for k, v in spec.model.initial_state().items()}, "method": spec.method, "n_traj": spec.n_traj,
        "n_steps": spec.n_steps, "burn_in": spec.burn_in, "seed": spec.seed,
        "record_every": spec.record_every, "rng": spec.rng_scheme, "dtype": spec.dtype,
    }, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()


def _save_checkpoint(path: Path, spec: RunSpec, backend: str, run) -> None:
    """Write ``run`` (a committed state: arrays and step counter of the same step) atomically."""
    save_run_arrays(path, _spec_digest(spec, backend), run.arrays(), backend=backend)


def _load_checkpoint(path: Path, spec: RunSpec, backend: str, run) -> None:
    """Overwrite the fresh ``run`` with the checkpoint at ``path``, if there is one (of this backend)."""
    arrays = load_run_arrays(path, _spec_digest(spec, backend), backend=backend)
    if arrays is None:
        return
    if set(arrays) != set(run.arrays()):
        raise DamagedDataError(f"checkpoint {str(path)!r} is damaged (wrong arrays); delete it to start the run again")
    for name, value in arrays.items():
        setattr(run, name, value)


def simulate(
    model: Model,
    method: str | None = None,
    *,
    n_traj: int = 1000,
    n_steps: int = 10_000,
    burn_in: int | None = None,
    seed: int = 0,
    backend: str = "numba",
    record_every: int | None = None,
    n_threads: int | None = None,
    progress: bool | None = None,
    checkpoint: str | os.PathLike | None = None,
    dtype: str = "float64",
    scheduler=None,
    n_shards: int | None = None,
    keep_checkpoint: bool = False,
    per_trajectory: bool | None = None,
    no_workers_timeout: float = DEFAULT_NO_WORKERS_TIMEOUT_S,
    rng: str | None = None,
) -> xr.Dataset:
    r"""Run ``n_traj`` independent trajectories of ``model`` for ``n_steps`` steps.

    Statistics are streamed per trajectory over the states :math:`\theta_t`,
    ``burn_in <= t < n_steps``: the time mean and mean square of every observable of the model.
    Trajectories that leave the model's divergence bound (or overflow) are counted, reported with
    the step at which they were caught, and excluded from every ensemble summary.

    Parameters
    ----------
    model : Model
        E.g. ``SelfStabilization(eta=0.01, alpha=1, beta=100, sigma=10)``.
    method : str, optional
        One of ``model.methods`` (default: the model's natural method).
    n_traj, n_steps : int >= 1
    burn_in : int in [0, n_steps - 1], default ``n_steps // 2``
    seed : int in [0, 2**64 - 1]
        With the trajectory index, keys every random draw (`sdeeos._rng`): the same seed gives
        the same draws on every backend, and the same bits for any thread count, segmentation or
        split into shards.  Across backends the arithmetic may differ in the last bits (libm's
        ``log`` in SplitMix64's rare tails, BLAS in quadratic regression; docs/rng.md).
    backend : {"numba", "numpy", "cupy"}
        ``"numba"`` (default): the compiled, parallel CPU kernel.  ``"numpy"``: the vectorised
        reference, same arithmetic and random draws.  ``"cupy"``: the CUDA kernel (NVIDIA GPU with
        CuPy; otherwise ``BackendUnavailableError``, never a silent fallback).  Quadratic regression
        runs on ``"numba"`` and ``"numpy"`` only.
    record_every : int >= 1, optional
        Record state and observables at steps ``0, k, 2k, ... < n_steps`` (dims ``traj, step``).
    n_threads : int, optional
        Numba threads (results do not depend on it).
    progress : bool, optional
        Show a progress bar (default: only once a run has taken more than 2 s).
    checkpoint : path, optional
        Save the run state there every 30 s and on Ctrl-C; a later call with the same arguments
        resumes from it and deletes it when done.  Ctrl-C stops at the end of the current
        segment (a second Ctrl-C at once), so a checkpoint always holds a consistent state and
        the resumed run is bit-identical to an uninterrupted one.  A sharded run keeps each
        finished shard in ``<checkpoint>.shards/`` instead.
    dtype : {"float64", "float32"}
        Precision of the state and update (``"float32"``: symbolic models on ``"numba"`` and
        ``"cupy"``, with the float32 variant of the RNG scheme; streamed sums stay float64).  Refused
        for a model/method or backend without it, and when the sharpness gap is below float32
        resolution; see docs/architecture.md#float32.
    rng : {None, "splitmix", "philox"}
        Random-number family (`sdeeos._rng`): ``None`` (default) is ``"philox"`` (Philox4x32-10) for
        float32 and ``"splitmix"`` for float64.  The scheme name is recorded in ``attrs["rng_scheme"]``;
        see docs/rng.md.
    scheduler : None, str or distributed.Client
        Run the trajectories as shards on this Dask cluster (an address such as
        ``"tcp://host:8786"``, or a client); ``None`` with ``n_shards``: the shards run in this process.
    n_shards : int >= 1, optional
        Split the trajectories into this many contiguous ranges (default with a scheduler: one per
        worker; without one the shards run one after another in this process, each on every
        core).  Per-trajectory results are bit-identical to an unsharded run (`sdeeos._sharded`).
    per_trajectory : bool, optional
        ``True``: return the per-trajectory variables (dim ``traj``); the whole ensemble is held in
        memory.  ``False`` (summary mode): every shard is reduced to exact sums where it runs, in
        chunks, and only the ensemble summaries come back (bit-identical to an unsharded run's);
        memory does not grow with ``n_traj``.  Default: ``True``, except for a sharded run
        (``n_shards`` or ``scheduler`` given) whose per-trajectory arrays would not fit in memory.
    no_workers_timeout : float > 0
        A sharded run on a scheduler stops (`NoWorkersError`, one line, finished shards kept in the
        checkpoint) once the cluster has had no worker for this many seconds.
    keep_checkpoint : bool
        Leave the checkpoint (holding the finished run; for a sharded run, its shards) in place:
        for callers that remove it only once the result is safely written (the CLI does this
        with ``--out``).

    Returns
    -------
    xarray.Dataset
        Per-trajectory ``<obs>_time_mean``/``<obs>_time_meansq`` (dim ``traj``), ensemble
        ``<obs>_mean``, ``<obs>_mean_stderr``, ``<obs>_meansq``, ``n_diverged``, the model's
        summaries and theory predictions, and provenance in ``attrs``.
    """
    spec = RunSpec.checked(model, method, n_traj=n_traj, n_steps=n_steps, burn_in=burn_in, seed=seed,
                           record_every=record_every, dtype=dtype, rng=rng)
    if n_threads is not None:
        n_threads = check_int("n_threads", n_threads, low=1, high=max_threads())
    engine = model.engine(backend)
    if spec.dtype not in engine.dtypes:
        raise ParameterError(f"dtype {spec.dtype!r} is not supported by backend {backend!r} (supported: {list(engine.dtypes)})")
    method, n_traj, n_steps = spec.method, spec.n_traj, spec.n_steps
    ckpt = check_checkpoint_path(checkpoint) if checkpoint is not None else None
    sharded = scheduler is not None or n_shards is not None
    asked = per_trajectory
    per_trajectory = _check_per_trajectory(spec, per_trajectory, sharded)
    # after the memory checks: the names come from the model's step, which may be large to derive
    _check_no_replaced_measurements(model, "predictions", model.predictions(method), model.output_names(spec))
    if sharded or not per_trajectory:
        if isinstance(no_workers_timeout, bool) or not isinstance(no_workers_timeout, (int, float)) \
                or not no_workers_timeout > 0:
            raise ParameterError(f"no_workers_timeout must be a number of seconds > 0, got {no_workers_timeout!r}")
        result, shard_attrs = run_sharded(spec, backend, n_shards=n_shards, scheduler=scheduler, checkpoint=ckpt,
                                          digest=_spec_digest(spec, backend), n_threads=n_threads,
                                          keep_shards=keep_checkpoint, per_trajectory=per_trajectory,
                                          no_workers_timeout=float(no_workers_timeout), progress=progress)
        wall = shard_attrs["sharded_wall_time_s"]
        if per_trajectory:
            return _to_dataset(spec, result, backend, wall, 0, shard_attrs)
        shard_attrs["per_trajectory"] = ("no: summaries only (per_trajectory=False), exact sums reduced on each shard"
                                         if asked is False else "no: summaries only, exact sums reduced on each shard "
                                         "(the per-trajectory arrays would not fit in memory)")
        return _to_dataset(spec, None, backend, wall, 0, shard_attrs, collected=({}, {}, result.summary()))
    run = model.new_run(spec)
    if ckpt:
        _load_checkpoint(ckpt, spec, backend, run)
    resumed_from = run.t

    # An engine may ask for longer segments (a GPU engine copies state back after each one).
    seg = _segment_length(n_traj, n_steps, max(_SEGMENT_WORK, getattr(engine, "segment_work", 0.0)))
    bar = None
    start = time.perf_counter()
    last_save = start
    # ``committed``: the run's arrays and its step counter describe the same step.  A checkpoint
    # is only ever written then; Ctrl-C is deferred to the commit point after each segment.
    committed = True
    try:
        bar = tqdm(total=n_steps * n_traj, initial=run.t * n_traj, unit="traj-step", unit_scale=True,
                   desc=f"{model.name} {method}", disable=(progress is False),
                   delay=0 if progress else 2.0, leave=False)
        with SigintDeferred() as guard:
            while run.t < n_steps:
                t1 = min(n_steps, run.t + seg)
                t0 = run.t
                committed = False
                engine.advance(spec, run, t1, n_threads=n_threads)
                if run.t != t1:  # pragma: no cover - an engine that breaks the contract
                    raise RuntimeError(f"engine {engine.name!r} did not advance the run to step {t1}")
                committed = True
                bar.update((t1 - t0) * n_traj)
                if ckpt and time.perf_counter() - last_save > _CHECKPOINT_EVERY_S:
                    _save_checkpoint(ckpt, spec, backend, run)
                    last_save = time.perf_counter()
                guard.commit_point()
            if ckpt and keep_checkpoint and run.t > resumed_from:
                _save_checkpoint(ckpt, spec, backend, run)  # the finished state: a re-run only rebuilds the output
    except KeyboardInterrupt:
        if ckpt and committed:
            _save_checkpoint(ckpt, spec, backend, run)
        raise
    finally:
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - start
    if ckpt and not keep_checkpoint:
        ckpt.unlink(missing_ok=True)
    return _to_dataset(spec, run, backend, wall, resumed_from)


def _check_per_trajectory(spec: RunSpec, per_trajectory, sharded: bool) -> bool:
    """Resolve ``per_trajectory`` and check that what it keeps fits in memory (before any work).

    Per-trajectory runs hold the whole ensemble; summary mode holds one chunk of trajectories
    (`SUMMARY_CHUNK_BYTES`) whatever ``n_traj``.  The error names the mode that fits.
    """
    if per_trajectory is not None and not isinstance(per_trajectory, bool):
        raise ParameterError(f"per_trajectory must be True, False or None, got {per_trajectory!r}")
    check_work_memory(spec)  # the model's own arrays, whatever the mode
    if per_trajectory is False:
        return False
    try:
        check_run_memory(spec)
    except ResourceError as exc:
        if per_trajectory is None and sharded:
            return False  # summary mode: a chunk at a time
        chunk = min(run_memory_bytes(spec), SUMMARY_CHUNK_BYTES)
        raise ResourceError(f"{exc}; or per_trajectory=False (summaries only, exact: about "
                            f"{format_bytes(chunk)} per running shard, whatever n_traj)") from None
    return True


def _check_no_replaced_measurements(model: Model, source: str, values: dict, measured: set) -> None:
    """Refuse in one line a model's ``source`` (its predictions or summaries) that has the name of a
    variable the run measured: the dataset would hold the model's value under the measurement's name."""
    clash = sorted(set(values) & set(measured))
    if clash:
        raise ParameterError(f"model {type(model).__name__}: its {source} {clash} have the names of measured "
                             f"variables of the dataset and would replace them; rename them")


def _to_dataset(spec: RunSpec, run, backend: str, wall: float, resumed_from: int, extra: dict | None = None,
                collected: tuple | None = None) -> xr.Dataset:
    model, method = spec.model, spec.method
    data, coords, summary = model.collect(spec, run) if collected is None else collected
    measured = {*data, *coords, *summary}
    n_div = int(summary.get("n_diverged", 0))
    if summary.get("n_alive", 1):
        derived = model.summarize(method, summary)
        _check_no_replaced_measurements(model, "summaries", derived, measured)
        summary.update(derived)
    predictions = model.predictions(method)
    _check_no_replaced_measurements(model, "predictions", predictions, {*measured, *summary})
    for name, value in {**summary, **predictions}.items():
        data[name] = ((), value)
    attrs = {
        "model": model.name,
        "model_class": type(model).__name__,
        "method": method,
        **{k: float(v) for k, v in model.parameters().items()},
        **{f"initial_{k}": v for k, v in model.initial_state().items()},
        "n_traj": spec.n_traj,
        "n_steps": spec.n_steps,
        "burn_in": spec.burn_in,
        "seed": str(spec.seed),  # NetCDF has no uint64 attribute
        "record_every": spec.record_every,
        "rng_scheme": spec.rng_scheme,
        "dtype": spec.dtype,
        "backend": backend,
        "wall_time_s": wall,
        "resumed_from_step": resumed_from,
        "n_diverged": n_div,
        **model.run_notes(method),
        "parameter_names": " ".join(model.parameters()),
        **(extra or {}),
    }
    if summary.get("n_alive", 1) == 0:
        attrs["warning"] = "every trajectory diverged: no ensemble statistics"
    elif n_div:
        attrs["warning"] = f"{n_div} of {spec.n_traj} trajectories diverged and are excluded from the summaries"
    ds = xr.Dataset(data, coords=coords, attrs=provenance_attrs(**attrs))
    return label_dataset(ds, model_labels(model, getattr(spec, "step", None), method))
