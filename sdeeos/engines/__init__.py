"""Ensemble engines: backends that advance every trajectory of a run.

``ENGINES`` maps a backend name to its class; `get_engine` checks availability and never
substitutes another backend.
"""

from __future__ import annotations

from .._errors import BackendUnavailableError, ParameterError
from .._contract import FOLD, Engine, RunSpec, RunState
from ._cupy import CupyEngine
from ._numba import NumbaEngine
from ._numpy import NumpyEngine

ENGINES: dict[str, type[Engine]] = {"numba": NumbaEngine, "numpy": NumpyEngine, "cupy": CupyEngine}


def get_engine(name: str) -> Engine:
    """The engine called ``name``; a clear error if it is unknown or cannot run here."""
    if name not in ENGINES:
        raise ParameterError(f"backend must be one of {sorted(ENGINES)}, got {name!r}")
    cls = ENGINES[name]
    ok, reason = cls.available()
    if not ok:
        raise BackendUnavailableError(f"backend {name!r} is not available: {reason}")
    return cls()


__all__ = ["ENGINES", "FOLD", "Engine", "RunSpec", "RunState", "get_engine", "NumbaEngine", "NumpyEngine", "CupyEngine"]
