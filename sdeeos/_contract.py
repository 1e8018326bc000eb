"""The run contract: what a model, a run and an engine are, in one bottom module.

`SymbolicStep` is a method's update written in SymPy; `Model` is anything `simulate` can run (it makes a
run state, names an engine and collects results); `RunSpec` is everything that determines a run's
result; `RunState` holds the host arrays of a run in progress; an `Engine` advances a run state in place.

Engines import only this module (and the RNG); models import it and may import engines; `simulate` and
`sweep` sit above both.  An engine advances every trajectory from step ``t0`` to ``t1``.  Because draws
are keyed by (seed, trajectory, step) and partial sums are folded at absolute step multiples of
``FOLD``, a run split into any number of segments, on any number of threads, gives bit-identical
results: this is what makes progress bars, checkpoints and resume exact.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import ClassVar, Mapping

import numpy as np
import sympy as sp

from ._errors import ParameterError
from ._exact_sums import EnsembleStat
from ._rng import as_seed, check_rng, rng_scheme, stream_keys
from ._validation import check_choice, check_int

__all__ = ["SymbolicStep", "Model", "FOLD", "DTYPES", "RunSpec", "RunState", "Engine", "ensemble_summary"]

#: Largest step count or recording interval: the engines' step counters are int64.
INT64_MAX = 2**63 - 1

#: State precisions a run may ask for (streamed sums are float64 in both).
DTYPES = ("float64", "float32")


@dataclasses.dataclass(frozen=True)
class SymbolicStep:
    r"""One step of a method, symbolically.

    ``update[i]`` is the new value of ``state[i]`` as an expression in ``state``, ``params`` and
    ``noise`` (independent standard normals, fresh at every step).  ``observables`` are expressions
    in ``state`` and ``params`` whose time averages and mean squares are streamed per trajectory.
    """

    state: tuple[sp.Symbol, ...]
    params: tuple[sp.Symbol, ...]
    noise: tuple[sp.Symbol, ...]
    update: tuple[sp.Expr, ...]
    observables: Mapping[str, sp.Expr]

    def __post_init__(self):
        if len(self.update) != len(self.state):
            raise ValueError("one update expression per state variable")
        allowed = set(self.state) | set(self.params) | set(self.noise)
        for expr in tuple(self.update) + tuple(self.observables.values()):
            extra = sp.sympify(expr).free_symbols - allowed
            if extra:
                raise ValueError(f"expression {expr} uses undeclared symbols {extra}")
        state_of = dict(zip(self.state_names, self.state))
        for name, expr in self.observables.items():
            if sp.sympify(expr).free_symbols & set(self.noise):
                raise ValueError(f"observable {name} must not depend on the noise")
            # a recorded run names both paths path_<name>: the same name must be the same quantity
            if name in state_of and sp.sympify(expr) != state_of[name]:
                raise ValueError(f"observable {name} = {expr} has the name of state variable {name} but is not it; "
                                 f"rename the observable")

    @property
    def state_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.state)

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.params)

    @property
    def n_noise(self) -> int:
        return len(self.noise)

    def signature(self) -> str:
        """A string that determines the generated kernel (used as a compilation cache key).

        It is ``sympy.srepr`` of the whole step: equal signatures are equal expression trees (srepr
        keeps every node, symbol assumption and number exactly; ``repr`` drops assumptions and
        ``Float`` precision), so they print to the same code.  Computed once per step object:
        models return one shared step per structure, so engines look their code up in O(1).
        """
        cached = self.__dict__.get("_signature")
        if cached is None:
            cached = sp.srepr((self.state, self.params, self.noise, self.update, tuple(self.observables.items())))
            self.__dict__["_signature"] = cached  # frozen dataclass: bypass __setattr__, not a field
        return cached


class Model(abc.ABC):
    """Anything `simulate` can run: it makes a run state, names an engine, and collects results.

    Symbolic models derive from `EnsembleModel`, which implements the three hooks once for all of
    them.  Models whose step is linear algebra (e.g. quadratic regression) implement them with their
    own run state and engines, and still get segmentation, progress, checkpoints and provenance
    from `simulate`.
    """

    #: CLI / dataset name, e.g. ``"self-stabilization"``.
    name: ClassVar[str]
    #: methods this model supports, e.g. ``("gd", "sgd", "pgd")``.
    methods: ClassVar[tuple[str, ...]]
    #: state magnitude above which a trajectory counts as diverged.
    divergence_bound: ClassVar[float] = 1e100

    # ------------------------------------------------------------------ to implement
    @abc.abstractmethod
    def parameters(self) -> dict[str, float]:
        """Parameter values by name (all numeric attributes that identify the model)."""

    @abc.abstractmethod
    def initial_state(self) -> dict[str, float]:
        """Initial conditions that identify the run (recorded in the dataset's attrs)."""

    @abc.abstractmethod
    def new_run(self, spec):
        """A fresh run state for ``spec`` (an object with ``t`` and ``arrays()``, see `RunState`)."""

    @abc.abstractmethod
    def engine(self, backend: str):
        """The engine (with ``advance(spec, run, t1, n_threads)``) that runs this model on ``backend``."""

    @abc.abstractmethod
    def collect(self, spec, run) -> tuple[dict, dict, dict]:
        """``(data_vars, coords, summary)`` of a finished run; ``summary`` holds the scalars."""

    def output_names(self, spec) -> set[str]:
        """The names `collect` gives a run of ``spec``, known before it starts (default: none known; the
        dataset still refuses a prediction or summary that would replace a measured variable)."""
        return set()

    # ------------------------------------------------------------------ optional hooks
    def default_method(self) -> str:
        return self.methods[0]

    def check_method(self, method: str | None) -> str:
        methods = getattr(self, "methods", None)
        if not (isinstance(methods, tuple) and methods and all(isinstance(m, str) for m in methods)):
            raise ParameterError(f"model class {type(self).__name__} must declare its update rules as a class "
                                 f"attribute, e.g. methods = ('gd', 'sgd'); got {methods!r}")
        method = self.default_method() if method is None else method
        return check_choice("method", method, self.methods)

    def validate_run(self, method: str) -> None:
        """Raise ``ParameterError`` when this model cannot run ``method`` with its parameters."""

    def dtypes(self, method: str) -> tuple[str, ...]:
        """State precisions this model runs ``method`` in (default: float64 only)."""
        return ("float64",)

    def check_dtype(self, method: str, dtype: str) -> str:
        """``dtype`` if this model runs ``method`` in it; else ``ParameterError`` naming both."""
        dtype = check_choice("dtype", dtype, DTYPES)
        if dtype not in self.dtypes(method):
            raise ParameterError(
                f"dtype {dtype!r} is not supported by model {self.name!r} with method {method!r} "
                f"(supported: {list(self.dtypes(method))})")
        return dtype

    def work_bytes(self, spec) -> int:
        """Peak bytes of the engine's transient arrays in a run of ``spec`` that are not part of the
        run state (workspaces, blocks of Jacobians or Hessians); counted by the memory check."""
        return 0

    def rngs(self, method: str) -> tuple[str, ...]:
        """Random-number families this model runs ``method`` with (default: SplitMix64 only)."""
        return ("splitmix",)

    def check_rng(self, method: str, rng: str) -> str:
        """``rng`` if this model runs ``method`` with it; else ``ParameterError`` naming both."""
        if rng not in self.rngs(method):
            raise ParameterError(f"rng {rng!r} is not supported by model {self.name!r} with method {method!r} "
                                 f"(supported: {list(self.rngs(method))})")
        return rng

    def run_notes(self, method: str) -> dict[str, object]:
        """Attributes describing the regime of this run (e.g. whether a stationary state exists)."""
        return {}

    def predictions(self, method: str) -> dict[str, float]:
        """Theory predictions (from the SymPy-derived formulas) for the ensemble summaries."""
        return {}

    def summarize(self, method: str, summary: dict[str, float]) -> dict[str, float]:
        """Model-specific ensemble summaries computed from the generic ones (``summary``)."""
        return {}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in {**self.parameters(), **self.initial_state()}.items())
        return f"{type(self).__name__}({params})"


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
    dtype: str = "float64"  # precision of the state and update (sums are float64)
    #: index of this run's first trajectory: a shard of trajectories [a, b) of a larger run has
    #: ``first_traj = a`` and ``n_traj = b - a`` and draws exactly the streams of those indices
    first_traj: int = 0
    #: random-number family (`sdeeos._rng.RNGS`); `checked` picks `sdeeos._rng.default_rng` of the dtype
    rng: str = "splitmix"

    @classmethod
    def checked(cls, model: Model, method, *, n_traj, n_steps, burn_in=None, seed=0, record_every=None,
                dtype="float64", rng=None) -> "RunSpec":
        """A spec from user input, every setting validated (one place for every entry point).

        ``burn_in`` defaults to ``n_steps // 2``; ``record_every=None`` means no recording;
        ``rng=None`` is ``"philox"`` for float32 and ``"splitmix"`` for float64.
        """
        if not isinstance(model, Model):
            raise ParameterError(f"model must be an sdeeos Model, got {type(model).__name__}")
        method = model.check_method(method)
        n_traj = check_int("n_traj", n_traj, low=1)
        # the engines count steps in int64 (Numba and CUDA kernels): a larger record_every wrapped negative
        n_steps = check_int("n_steps", n_steps, low=1, high=INT64_MAX)
        burn_in = n_steps // 2 if burn_in is None else check_int("burn_in", burn_in, low=0, high=n_steps - 1)
        seed = int(as_seed(seed))
        record_every = 0 if record_every is None else check_int("record_every", record_every, low=1, high=INT64_MAX)
        dtype = model.check_dtype(method, dtype)
        rng = model.check_rng(method, check_rng(rng, dtype))
        model.validate_run(method)
        return cls(model=model, method=method, n_traj=n_traj, n_steps=n_steps, burn_in=burn_in,
                   seed=seed, record_every=record_every, dtype=dtype, rng=rng)

    def shard(self, first: int, stop: int) -> "RunSpec":
        """The spec of trajectories ``[first, stop)`` of this run (same streams, same everything else)."""
        return dataclasses.replace(self, n_traj=stop - first, first_traj=self.first_traj + first)

    @property
    def step(self) -> SymbolicStep:
        return self.model.step(self.method)

    @property
    def rng_scheme(self) -> str:
        """The scheme name of this run's draws (recorded in provenance)."""
        return rng_scheme(self.dtype, self.rng)

    @property
    def n_records(self) -> int:
        return 0 if self.record_every == 0 else -(-self.n_steps // self.record_every)


@dataclasses.dataclass
class RunState:
    """Host-side arrays of a run in progress (all per trajectory; shapes in comments)."""

    #: axis of each array that runs over trajectories (to split and merge shards of a run); None:
    #: the same for every trajectory.  Arrays not named use ``TRAJ_AXIS_DEFAULT``.
    TRAJ_AXES: ClassVar[dict[str, int | None]] = {"params": None}
    TRAJ_AXIS_DEFAULT: ClassVar[int] = -1

    t: int                       # next step to take
    state: np.ndarray            # (n_state, n_traj) float64 (float32-exact values in a float32 run)
    params: np.ndarray           # (n_params,)
    keys: np.ndarray             # (n_traj,) uint64: splitmix key, or the seed (philox)
    gammas: np.ndarray           # (n_traj,) uint64: splitmix Weyl increment, or the trajectory index (philox)
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
        step = spec.step
        n, ns, no = spec.n_traj, len(step.state), len(step.observables)
        keys, gammas = stream_keys(spec.seed, n, first=spec.first_traj, rng=spec.rng)
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
    #: state precisions this engine runs
    dtypes: ClassVar[tuple[str, ...]] = ("float64",)

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
    whatever the autocorrelation within a trajectory.  Both come from exact sums
    (`sdeeos._exact_sums.EnsembleStat`): the mean is correctly rounded, and a sharded run that
    reduces each shard to its sums gives the same two numbers bit for bit.
    """
    stat = EnsembleStat.of(per_traj_mean, alive)
    return stat.mean(), stat.stderr()
