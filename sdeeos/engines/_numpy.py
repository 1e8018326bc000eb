"""NumPy reference engine: the same algorithm as the Numba kernel, vectorised over trajectories.

It evaluates the same printed expressions (same operation order) and the same RNG, so it agrees
with the Numba engine bit for bit except where the AS241 tail branch calls ``log`` (NumPy's SIMD
``log`` and libm may differ in the last bit).  It exists as an independent check of the generated
kernels and as the plainest possible baseline.
"""

from __future__ import annotations

import hashlib
import math
from typing import ClassVar

import numpy

from .._contract import FOLD, Engine, RunSpec, RunState
from .._rng import normals
from ._codegen import code_names, print_numpy

__all__ = ["NumpyEngine"]


#: step signature -> (update, observe): skips printing (SymPy CSE) for a step seen before
_COMPILED: dict[str, tuple] = {}
#: sha256 of the generated source -> (update, observe): one function pair per distinct source
_BY_SOURCE: dict[str, tuple] = {}


def step_source(step) -> str:
    """Python source of ``update(state..., params..., noise...)`` and ``observe(state..., params...)``
    for one symbolic step: parameters are arguments, so one source serves every parameter value.  The
    symbols go by their `code_names`, so any SymPy name works."""
    step = code_names(step)
    printed = print_numpy(step)
    names = step.state_names + step.param_names + tuple(s.name for s in step.noise)
    body = [f"{n} = {c}" for n, c in printed.update_temps]
    body += [f"return ({', '.join(printed.update)},)"]
    obs_body = [f"{n} = {c}" for n, c in printed.obs_temps]
    obs_body += [f"return ({', '.join(printed.observables)},)"]
    return (f"def update({', '.join(names)}):\n    " + "\n    ".join(body) + "\n"
            f"def observe({', '.join(step.state_names + step.param_names)}):\n    " + "\n    ".join(obs_body) + "\n")


def _compile(signature: str, step):
    """``(update, observe)`` of ``step`` (whose `SymbolicStep.signature` is ``signature``), compiled
    once per distinct generated source in this process."""
    if signature in _COMPILED:
        return _COMPILED[signature]
    src = step_source(step)
    digest = hashlib.sha256(src.encode()).hexdigest()
    if digest not in _BY_SOURCE:
        namespace = {"numpy": numpy, "math": math}
        exec(compile(src, f"<sdeeos numpy step {digest[:20]}>", "exec"), namespace)
        namespace["update"].n_noise = len(step.noise)  # the same for every step with this source
        _BY_SOURCE[digest] = namespace["update"], namespace["observe"]
    _COMPILED[signature] = _BY_SOURCE[digest]
    return _COMPILED[signature]


class NumpyEngine(Engine):
    """Vectorised NumPy engine (single thread; for tests and as a baseline)."""

    name: ClassVar[str] = "numpy"

    def next_state(self, spec: RunSpec, run: RunState, t: int, state: list, params: tuple, update) -> list:
        """The state after step ``t`` (one array over trajectories per state variable): the generated
        ``update`` with step ``t``'s normals.  A model whose step is not a symbolic map overrides this
        and inherits the rest of the loop (recording, burn-in, streamed sums, folds, divergence).
        The step is not asked of the model here: a model whose ``step()`` builds SymPy expressions on
        every call would rebuild them at every time step."""
        nz = update.n_noise
        noise = [normals(run.keys, run.gammas, t * nz + k, spec.rng) for k in range(nz)]
        with numpy.errstate(all="ignore"):
            new = update(*state, *params, *noise)
        ones = numpy.ones(spec.n_traj)
        return [numpy.asarray(v, dtype=numpy.float64) * ones if numpy.ndim(v) == 0 else v for v in new]

    def advance(self, spec: RunSpec, run: RunState, t1: int, n_threads: int | None = None) -> None:
        step = spec.step
        update, observe = _compile(step.signature(), step)
        params = tuple(run.params)
        ns = len(step.state)
        bound = spec.model.divergence_bound
        state = [run.state[k].copy() for k in range(ns)]
        ones = numpy.ones(spec.n_traj)
        # a diverging trajectory overflows to inf/NaN in the observables before the fold detects it
        # (and counts it); as in the compiled engines, that is not a warning
        with numpy.errstate(all="ignore"):
            for t in range(run.t, t1):
                if spec.record_every and t % spec.record_every == 0:
                    obs = observe(*state, *params)
                    r = t // spec.record_every
                    for k in range(ns):
                        run.rec[r, k] = state[k]
                    for k, o in enumerate(obs):
                        run.rec[r, ns + k] = o * ones
                if t == spec.burn_in:
                    for k in range(ns):
                        run.burn_state[k] = state[k]
                if t >= spec.burn_in:
                    for k, o in enumerate(observe(*state, *params)):
                        run.part_sum[k] += o
                        run.part_sq[k] += o * o
                state = self.next_state(spec, run, t, state, params, update)
                if (t + 1) % FOLD == 0 or t + 1 == spec.n_steps:
                    ok = run.alive.astype(bool)
                    for k in range(ns):
                        ok &= numpy.abs(state[k]) <= bound
                    for k in range(run.part_sq.shape[0]):
                        ok &= numpy.abs(run.part_sq[k]) < numpy.inf
                    keep = run.alive.astype(bool) & ok
                    run.acc_sum[:, keep] += run.part_sum[:, keep]
                    run.acc_sq[:, keep] += run.part_sq[:, keep]
                    died = run.alive.astype(bool) & ~ok
                    run.alive[died] = 0
                    run.diverged_step[died] = t + 1
                    for k in range(ns):
                        state[k] = numpy.where(died, numpy.nan, state[k])
                    run.part_sum[:] = 0.0
                    run.part_sq[:] = 0.0
        for k in range(ns):
            run.state[k] = state[k]
        run.t = t1
