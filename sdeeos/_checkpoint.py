"""Checkpoint files of a run in progress: a run state's arrays, the run they belong to, a checksum.

One format for `simulate`'s checkpoint and for the finished shards of a sharded run
(`sdeeos._sharded`): an ``.npz`` holding the arrays, ``spec_digest`` (the sha256 of everything
that determines the run, the backend included: backends agree in law and in the random draws but
not in the last bits of the arithmetic, so a run resumed on another backend would match neither
backend's uninterrupted run), ``backend`` (the backend that wrote it, named in the refusal) and
``arrays_sha256`` (`arrays_digest` of the arrays).  Files are written
under a unique temporary name and renamed into place, so a kill never leaves half a file; a file
that cannot be read, lacks its checksum or fails it raises `DamagedDataError`, and one that
belongs to another run raises `ParameterError` -- never is it read as data.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ._checksum import arrays_digest
from ._errors import DamagedDataError, ParameterError
from ._storelock import unique_temp_path

__all__ = ["save_run_arrays", "load_run_arrays"]

_META = ("spec_digest", "arrays_sha256", "backend")


def save_run_arrays(path: str | os.PathLike, spec_digest: str, arrays: dict[str, np.ndarray],
                    backend: str | None = None) -> None:
    """Write ``arrays`` (of a committed run state) with its run digest and checksum, atomically."""
    path = Path(path)
    tmp = unique_temp_path(path, ".npz")
    meta = {"backend": np.array(backend)} if backend is not None else {}
    try:
        np.savez(tmp, spec_digest=np.array(spec_digest), arrays_sha256=np.array(arrays_digest(arrays)), **meta,
                 **arrays)
        os.replace(tmp, path)  # atomic: a kill never leaves a half-written checkpoint
    finally:
        tmp.unlink(missing_ok=True)


def load_run_arrays(path: str | os.PathLike, spec_digest: str, what: str = "checkpoint",
                    backend: str | None = None) -> dict | None:
    """The verified arrays saved at ``path`` for the run ``spec_digest``; ``None`` if there is no file.

    ``t`` (the step counter) comes back as an ``int``.  A file another ``backend`` wrote is refused
    naming both backends.
    """
    path = Path(path)
    if not path.exists():
        return None
    stored_digest = stored_sum = stored_backend = None
    arrays: dict = {}
    try:
        with np.load(path) as data:
            files = set(data.files)
            stored_digest = str(data["spec_digest"]) if "spec_digest" in files else None
            stored_backend = str(data["backend"]) if "backend" in files else None
            if stored_digest == spec_digest:
                arrays = {name: data[name] for name in files - set(_META)}
                stored_sum = str(data["arrays_sha256"]) if "arrays_sha256" in files else None
    except Exception as exc:  # noqa: BLE001 - any unreadable file is reported the same way
        raise DamagedDataError(f"{what} {str(path)!r} is damaged ({type(exc).__name__}); "
                               "delete it to start the run again") from None
    if stored_digest != spec_digest and backend is not None and stored_backend not in (None, backend):
        raise ParameterError(f"{what} {str(path)!r} was written by backend {stored_backend!r}, not {backend!r}: "
                             f"resume it with backend {stored_backend!r} (backends differ in the last bits), "
                             "or delete it to start again")
    if stored_digest != spec_digest:
        raise ParameterError(f"{what} {str(path)!r} belongs to a different run; delete it or choose another path")
    if stored_sum is None:
        raise DamagedDataError(f"{what} {str(path)!r} has no checksum (an older sdeeos wrote it) and cannot "
                               "be verified; delete it to start the run again")
    if stored_sum != arrays_digest(arrays):
        raise DamagedDataError(f"{what} {str(path)!r} is damaged (checksum mismatch); delete it to start the run again")
    if "t" in arrays:
        arrays["t"] = int(arrays["t"])
    return arrays
