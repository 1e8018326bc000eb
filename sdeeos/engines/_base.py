"""The engine interface and the state of a run that engines advance in place.

An engine advances every trajectory from step ``t0`` to ``t1``.  Because draws are keyed by
(seed, trajectory, step) and partial sums are folded at absolute step multiples of ``FOLD``, a run
split into any number of segments, on any number of threads, gives bit-identical results: this is
what makes progress bars, checkpoints and resume exact.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import ClassVar

import numpy as np

from ..models._base import Model, SymbolicStep

__all__ = ["FOLD", "RunSpec", "RunState", "Engine", "ensemble_summary", "collect_symbolic"]

#: Partial sums are folded into the totals every FOLD absolute steps (and at the last step); a
#: trajectory found non-finite or beyond the divergence bound at a fold is marked diverged and
#: its unfinished partial sums are dropped.
FOLD = 64


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """Everything that determines a run's result (besides the model's parameter values)."""

    model: Model
    method: str
    n_traj: int
    n_steps: int
    burn_in: int
    seed: int
    record_every: int  # 0: no recording

    @classmethod
    def checked(cls, model: Model, method, *, n_traj, n_steps, burn_in=None, seed=0, record_every=None) -> "RunSpec":
        """A spec from user input, every setting validated (one place for every entry point).

        ``burn_in`` defaults to ``n_steps // 2``; ``record_every=None`` means no recording.
        """
        from .._errors import ParameterError
        from .._rng import as_seed
        from .._validation import check_int

        if not isinstance(model, Model):
            raise ParameterError(f"model must be an sdeeos Model, got {type(model).__name__}")
        method = model.check_method(method)
        n_traj = check_int("n_traj", n_traj, low=1)
        n_steps = check_int("n_steps", n_steps, low=1)
        burn_in = n_steps // 2 if burn_in is None else check_int("burn_in", burn_in, low=0, high=n_steps - 1)
        seed = int(as_seed(seed))
        record_every = 0 if record_every is None else check_int("record_every", record_every, low=1)
        model.validate_run(method)
        return cls(model=model, method=method, n_traj=n_traj, n_steps=n_steps, burn_in=burn_in,
                   seed=seed, record_every=record_every)

    @property
    def step(self) -> SymbolicStep:
        return self.model.step(self.method)

    @property
    def n_records(self) -> int:
        return 0 if self.record_every == 0 else -(-self.n_steps // self.record_every)


@dataclasses.dataclass
class RunState:
    """Host-side arrays of a run in progress (all per trajectory; shapes in comments)."""

    t: int                       # next step to take
    state: np.ndarray            # (n_state, n_traj) float64
    params: np.ndarray           # (n_params,)
    keys: np.ndarray             # (n_traj,) uint64
    gammas: np.ndarray           # (n_traj,) uint64
    acc_sum: np.ndarray          # (n_obs, n_traj) folded sums of each observable
    acc_sq: np.ndarray           # (n_obs, n_traj) folded sums of squares
    part_sum: np.ndarray         # (n_obs, n_traj) partial sums since the last fold
    part_sq: np.ndarray          # (n_obs, n_traj)
    alive: np.ndarray            # (n_traj,) uint8
    diverged_step: np.ndarray    # (n_traj,) int64, -1 while alive
    burn_state: np.ndarray       # (n_state, n_traj) state at t == burn_in
    rec: np.ndarray              # (n_records, n_state + n_obs, n_traj), or (0, ., n_traj)

    @classmethod
    def initial(cls, spec: RunSpec) -> "RunState":
        from .._rng import stream_keys

        step = spec.step
        n, ns, no = spec.n_traj, len(step.state), len(step.observables)
        keys, gammas = stream_keys(spec.seed, n)
        state = np.repeat(spec.model.initial_vector(spec.method)[:, None], n, axis=1)
        zeros = lambda: np.zeros((no, n))  # noqa: E731
        return cls(
            t=0, state=np.ascontiguousarray(state), params=spec.model.param_vector(spec.method),
            keys=keys, gammas=gammas, acc_sum=zeros(), acc_sq=zeros(), part_sum=zeros(),
            part_sq=zeros(), alive=np.ones(n, np.uint8), diverged_step=np.full(n, -1, np.int64),
            burn_state=np.full((ns, n), np.nan),
            rec=np.full((spec.n_records, ns + no, n), np.nan),
        )

    def arrays(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


class Engine(abc.ABC):
    """A backend that advances a `RunState` in place."""

    name: ClassVar[str]

    @classmethod
    def available(cls) -> tuple[bool, str]:
        """``(True, "")`` or ``(False, reason)``."""
        return True, ""

    @abc.abstractmethod
    def advance(self, spec: RunSpec, run: RunState, t1: int, n_threads: int | None = None) -> None:
        """Advance ``run`` from ``run.t`` to ``t1`` (exclusive) and set ``run.t = t1``."""


def ensemble_summary(per_traj_mean: np.ndarray, alive: np.ndarray) -> tuple[float, float]:
    """Mean over surviving trajectories and its standard error, std(ddof=1)/sqrt(n_alive).

    Trajectories are independent, so per-trajectory time averages give an honest error bar
    whatever the autocorrelation within a trajectory.
    """
    vals = per_traj_mean[alive]
    if vals.size == 0:
        return float("nan"), float("nan")
    mean = float(np.mean(vals))
    se = float(np.std(vals, ddof=1) / np.sqrt(vals.size)) if vals.size > 1 else float("nan")
    return mean, se


def collect_symbolic(spec: RunSpec, run: RunState) -> tuple[dict, dict, dict]:
    """Data variables, coordinates and scalar summaries of a finished symbolic-model run."""
    step = spec.step
    alive = run.alive.astype(bool)
    n_avg = spec.n_steps - spec.burn_in
    obs_names = list(step.observables)
    data: dict = {}
    summary: dict[str, float] = {}
    for k, name in enumerate(obs_names):
        mean = np.where(alive, run.acc_sum[k] / n_avg, np.nan)
        meansq = np.where(alive, run.acc_sq[k] / n_avg, np.nan)
        data[f"{name}_time_mean"] = ("traj", mean, {"long_name": f"time mean of {name} after burn-in"})
        data[f"{name}_time_meansq"] = ("traj", meansq, {"long_name": f"time mean of {name}**2 after burn-in"})
        m, se = ensemble_summary(mean, alive)
        summary[f"{name}_mean"] = m
        summary[f"{name}_mean_stderr"] = se
        summary[f"{name}_meansq"] = ensemble_summary(meansq, alive)[0]
    for k, name in enumerate(step.state_names):
        data[f"final_{name}"] = ("traj", run.state[k].copy())
        data[f"burn_in_{name}"] = ("traj", run.burn_state[k].copy())
    data["diverged"] = ("traj", ~alive, {"long_name": "trajectory left the divergence bound"})
    data["diverged_step"] = ("traj", run.diverged_step.copy(),
                             {"long_name": "step at which divergence was detected (-1: never)"})
    coords = {"traj": np.arange(spec.n_traj)}
    if spec.record_every:
        coords["step"] = np.arange(spec.n_records) * spec.record_every
        for k, name in enumerate(list(step.state_names) + obs_names):
            data[f"path_{name}"] = (("traj", "step"), run.rec[:, k, :].T.copy())
    summary["n_diverged"] = int((~alive).sum())
    summary["n_alive"] = int(alive.sum())
    return data, coords, summary
