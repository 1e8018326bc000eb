"""Exceptions raised by sdeeos.

`ParameterError` is a `ValueError` so that generic callers still catch it; the CLI turns it into a
one-line message and exit status 2.
"""

from __future__ import annotations


class SdeeosError(Exception):
    """Base class of every error sdeeos raises on purpose."""

    def __reduce__(self):
        # Unpickled as class(*args), then the attributes restored: an error raised in a study worker
        # or a Dask shard arrives whole.  Defined here, not inherited from BaseException, so that tblib
        # (which dask.distributed installs) takes the same path instead of MemoryError.__new__ and the like.
        return type(self), self.args, self.__dict__ or None


class ParameterError(SdeeosError, ValueError):
    """A parameter is outside its allowed range.  The message names the parameter and the range."""


class BackendUnavailableError(SdeeosError, RuntimeError):
    """The requested backend cannot run here (no GPU, package missing); never silently replaced."""


class OutsideDomainError(SdeeosError, ValueError):
    """A theoretical formula was evaluated where it does not hold (e.g. no stationary state)."""


class StoreMismatchError(ParameterError):
    """A sweep store holds the results of a different sweep (other grid, model or run settings)."""


class DistExtraMissingError(SdeeosError, ImportError):
    """dask/distributed or zarr is needed but not installed (the ``dist`` extra)."""


class Float32ResolutionWarning(UserWarning):
    """A float32 run resolves the quantity it measures (e.g. the sharpness gap) only coarsely."""


class DamagedDataError(SdeeosError, OSError):
    """A file or store written by sdeeos fails its checksum or cannot be read (truncated, corrupted)."""


class StoreLockedError(SdeeosError, RuntimeError):
    """Another process is writing the same store or output folder (one writer per store)."""


class ResourceError(SdeeosError, MemoryError):
    """A run would need more memory than is available; the message gives the estimate."""
