"""Deprecated alias of `sdeeos.sweeps` (the sweep package); kept for one release."""

import warnings

from .sweeps import (
    DEFAULT_CONNECT_TIMEOUT_S,
    GPU_BACKENDS,
    PARAMETER_MAPS,
    RUN_SETTINGS,
    DistExtraMissingError,
    ParameterMap,
    PointSpec,
    SchedulerUnreachableError,
    Store,
    sweep,
    sweep_parameter_names,
)

__all__ = ["sweep", "PARAMETER_MAPS", "RUN_SETTINGS", "GPU_BACKENDS", "DEFAULT_CONNECT_TIMEOUT_S",
           "SchedulerUnreachableError", "DistExtraMissingError", "sweep_parameter_names", "ParameterMap",
           "PointSpec", "Store"]

warnings.warn("sdeeos._sweep is deprecated and will be removed in the next release; use sdeeos.sweep or "
              "sdeeos.sweeps", DeprecationWarning, stacklevel=2)
