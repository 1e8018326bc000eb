r"""Abstract base of every ensemble model: one symbolic definition drives every backend.

A model states, as SymPy objects, its state variables, parameters, per-step noise inputs (standard
normals), the update map of each method and the observables to average.  Backends never see a
hand-written update rule: the NumPy backend lambdifies the expressions, the Numba backend prints
them into a compiled kernel, and the CUDA backend can print the same expressions as C.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import ClassVar, Mapping

import numpy as np
import sympy as sp

from .._errors import ParameterError
from .._validation import check_choice

__all__ = ["SymbolicStep", "Model", "EnsembleModel"]


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
        for name, expr in self.observables.items():
            if sp.sympify(expr).free_symbols & set(self.noise):
                raise ValueError(f"observable {name} must not depend on the noise")

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
        """A string that determines the generated kernel (used as a compilation cache key)."""
        return repr((self.state, self.params, self.noise, self.update, tuple(self.observables.items())))


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

    # ------------------------------------------------------------------ optional hooks
    def default_method(self) -> str:
        return self.methods[0]

    def check_method(self, method: str | None) -> str:
        method = self.default_method() if method is None else method
        return check_choice("method", method, self.methods)

    def validate_run(self, method: str) -> None:
        """Raise ``ParameterError`` when this model cannot run ``method`` with its parameters."""

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
        from ..engines._base import RunState

        return RunState.initial(spec)

    def engine(self, backend: str):
        from ..engines import get_engine

        return get_engine(backend)

    def collect(self, spec, run):
        from ..engines._base import collect_symbolic

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
