"""`sweep`: run `simulate` over a grid of parameters and return one labelled dataset.

One module per concern: `_api` (`sweep` itself), `_points` (grid -> picklable point specs, one point's
run), `_parameter_maps` (swept quantities that set a model parameter, e.g. ``batch_size``), `_stores`
(the `Store` interface and its memory, NetCDF and Zarr stores), `_dask_runner` (serial, local or
remote Dask execution).
"""

from .._errors import DistExtraMissingError
from ._api import DEFAULT_CONNECT_TIMEOUT_S, sweep
from ._dask_runner import DEFAULT_NO_WORKERS_TIMEOUT_S, NoWorkersError, SchedulerUnreachableError
from ._parameter_maps import PARAMETER_MAPS, ParameterMap
from ._points import GPU_BACKENDS, RUN_SETTINGS, PointSpec, sweep_parameter_names
from ._stores import Store

__all__ = [
    "sweep",
    "PARAMETER_MAPS",
    "RUN_SETTINGS",
    "GPU_BACKENDS",
    "DEFAULT_CONNECT_TIMEOUT_S",
    "SchedulerUnreachableError",
    "NoWorkersError",
    "DEFAULT_NO_WORKERS_TIMEOUT_S",
    "DistExtraMissingError",
    "sweep_parameter_names",
    "ParameterMap",
    "PointSpec",
    "Store",
]
