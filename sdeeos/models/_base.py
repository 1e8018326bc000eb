r"""`EnsembleModel`: the base of every symbolic model; one symbolic definition drives every backend.

A model states, as SymPy objects, its state variables, parameters, per-step noise inputs (standard
normals), the update map of each method and the observables to average (a `SymbolicStep`, defined
with `Model` in the run contract `sdeeos._contract`).  Backends never see a hand-written update rule:
the NumPy backend lambdifies the expressions, the Numba backend prints them into a compiled kernel,
and the CUDA backend can print the same expressions as C.
"""

from __future__ import annotations

import abc

import numpy as np

from .._contract import Model, RunSpec, RunState, SymbolicStep, ensemble_summary
from .._errors import ParameterError
from ..engines import get_engine

__all__ = ["SymbolicStep", "Model", "EnsembleModel", "collect_symbolic"]


class EnsembleModel(Model):
    """A model defined by a symbolic step; every backend runs code generated from it.

    Subclasses are small final classes: they validate their parameters in ``__init__``, state their
    symbolic step per method (`step`), and may add theory predictions and ensemble summaries.
    """

    @abc.abstractmethod
    def step(self, method: str) -> SymbolicStep:
        """The symbolic step of ``method``."""

    # ------------------------------------------------------------------ generic machinery
    def new_run(self, spec):
        return RunState.initial(spec)

    def engine(self, backend: str):
        return get_engine(backend)

    def collect(self, spec, run):
        return collect_symbolic(spec, run)

    def param_vector(self, method: str) -> np.ndarray:
        """Parameter values in the order of ``step(method).params``."""
        values = self.parameters()
        return np.array([values[s.name] for s in self.step(method).params], dtype=np.float64)

    def initial_vector(self, method: str) -> np.ndarray:
        init = self.initial_state()
        names = self.step(method).state_names
        missing = set(names) - set(init)
        if missing:
            raise ParameterError(f"initial state misses {sorted(missing)}")
        return np.array([init[n] for n in names], dtype=np.float64)


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
