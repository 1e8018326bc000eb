r"""`EnsembleModel`: the base of every symbolic model; one symbolic definition drives every backend.

A model states, as SymPy objects, its state variables, parameters, per-step noise inputs (standard
normals), the update map of each method and the observables to average (a `SymbolicStep`, defined
with `Model` in the run contract `sdeeos._contract`).  Backends never see a hand-written update rule:
the NumPy backend lambdifies the expressions, the Numba backend prints them into a compiled kernel,
and the CUDA backend can print the same expressions as C.
"""

from __future__ import annotations

import abc
import dataclasses
import warnings

import numpy as np

from .._contract import Model, RunSpec, RunState, SymbolicStep, ensemble_summary
from .._errors import Float32ResolutionWarning, ParameterError
from .._rng import RNGS
from ..engines import get_engine

__all__ = ["SymbolicStep", "Model", "EnsembleModel", "collect_symbolic", "float32_gap_resolution",
           "FLOAT32_GAP_WARN_ULPS"]

#: a float32 run warns when the predicted sharpness gap is below this many float32 spacings of
#: ``S ~ 2/eta`` (fewer than 10 bits of the gap survive in each sample of S)
FLOAT32_GAP_WARN_ULPS = 2.0**10


def float32_gap_resolution(eta: float, gap: float) -> float:
    r"""The gap :math:`2/\eta - S` in units of the float32 spacing of numbers near :math:`2/\eta`.

    A sample of the sharpness :math:`S = 2/\eta - \text{gap}` stored in float32 is rounded to a
    multiple of that spacing, so below 1 the gap is not representable at all.

    >>> float32_gap_resolution(0.5, 2.0**-21)   # 2/eta = 4: spacing 2**-21
    1.0
    """
    return abs(gap) / float(np.spacing(np.float32(2.0 / eta)))


class EnsembleModel(Model):
    """A model defined by a symbolic step; every backend runs code generated from it.

    Subclasses are small final classes: they validate their parameters in ``__init__``, state their
    symbolic step per method (`step`), and may add theory predictions and ensemble summaries.
    """

    @abc.abstractmethod
    def step(self, method: str) -> SymbolicStep:
        """The symbolic step of ``method``."""

    # ------------------------------------------------------------------ generic machinery
    def symbolic_bytes(self, method: str) -> int:
        """A lower bound on the memory deriving ``step(method)`` takes (0: small); checked before deriving."""
        return 0

    def work_bytes(self, spec) -> int:
        return self.symbolic_bytes(spec.method)

    def dtypes(self, method: str) -> tuple[str, ...]:
        return ("float64", "float32")

    def rngs(self, method: str) -> tuple[str, ...]:
        return RNGS  # every engine of a symbolic step draws from either family

    def check_dtype(self, method: str, dtype: str) -> str:
        r"""As `Model.check_dtype`; float32 is refused when the predicted sharpness gap is below the
        float32 resolution of :math:`S\approx 2/\eta`, and warns while it is within
        `FLOAT32_GAP_WARN_ULPS` float32 spacings (`float32_gap_resolution`)."""
        dtype = super().check_dtype(method, dtype)
        eta = self.parameters().get("eta")
        if dtype != "float32" or eta is None:
            return dtype
        preds = self.predictions(method)
        gaps = [preds[k] for k in ("sharpness_gap_predicted_exact", "sharpness_gap_predicted_leading")
                if np.isfinite(preds.get(k, np.nan)) and preds[k] != 0.0]
        if not gaps:
            return dtype
        ulps = float32_gap_resolution(eta, gaps[0])
        if ulps < 1.0:
            raise ParameterError(
                f"dtype 'float32' cannot resolve the sharpness gap of model {self.name!r} with method {method!r}: "
                f"predicted gap {gaps[0]:.3g} is {ulps:.2g} float32 spacings of 2/eta = {2 / eta:.6g}; use float64")
        if ulps < FLOAT32_GAP_WARN_ULPS:
            warnings.warn(
                f"float32: the predicted sharpness gap {gaps[0]:.3g} is only {ulps:.0f} float32 spacings of "
                f"2/eta = {2 / eta:.6g}; each sample of the sharpness keeps fewer than 10 bits of it "
                "(float64 is safer)", Float32ResolutionWarning, stacklevel=3)
        return dtype

    def new_run(self, spec):
        return RunState.initial(spec)

    def output_names(self, spec) -> set[str]:
        """The names `collect` gives a run of ``spec``: those of a run of one trajectory and one step,
        collected before it starts (names depend on the step and on recording, not on the numbers)."""
        tiny = dataclasses.replace(spec, n_traj=1, n_steps=1, burn_in=0, first_traj=0,
                                   record_every=min(spec.record_every, 1))
        data, coords, summary = self.collect(tiny, self.new_run(tiny))
        return {*data, *coords, *summary}

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
            if k >= len(step.state) and name in step.state_names:
                continue  # an observable that is a state variable itself (`SymbolicStep`): its path is there
            data[f"path_{name}"] = (("traj", "step"), run.rec[:, k, :].T.copy())
    summary["n_diverged"] = int((~alive).sum())
    summary["n_alive"] = int(alive.sum())
    return data, coords, summary
