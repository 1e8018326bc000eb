"""Provenance attributes carried by every dataset sdeeos writes."""

from __future__ import annotations

import datetime as _dt
import functools
import os
import platform
import shlex
import subprocess
import sys

from ._version import __version__

__all__ = ["provenance_attrs", "git_revision"]


@functools.lru_cache(maxsize=1)
def git_revision() -> str:
    """The git revision of the sdeeos source tree (``+dirty`` when modified), or ``"unknown"``."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
        if rev.returncode != 0:
            return "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here, capture_output=True, text=True, timeout=5,
        )
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _versions() -> dict[str, str]:
    out = {}
    for mod in ("numpy", "numba", "sympy", "xarray", "scipy", "torch", "cupy"):
        m = sys.modules.get(mod)
        if m is not None:
            out[f"{mod}_version"] = str(getattr(m, "__version__", "?"))
    return out


def provenance_attrs(**extra) -> dict:
    """Attributes for ``Dataset.attrs``: package version, git revision, command line, time, host.

    Values are plain ``str``/``int``/``float`` so that NetCDF and Zarr store them unchanged.
    """
    attrs = {
        "sdeeos_version": __version__,
        "git_revision": git_revision(),
        "command_line": shlex.join(sys.argv),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python_version": platform.python_version(),
        "platform": platform.platform(),
    }
    attrs.update(_versions())
    for k, v in extra.items():
        if isinstance(v, bool):
            v = int(v)
        elif v is None:
            v = "none"
        attrs[k] = v
    return attrs
