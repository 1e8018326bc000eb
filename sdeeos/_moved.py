"""Module paths that moved, kept importable for one release: importing one warns and gives its new home.

An import hook rather than alias files, so that the moved files keep their git history under the new
path (an alias left at the old path would make git see a copy, not a rename).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

from ._deprecation import warn_moved

__all__ = ["MOVED", "install"]

#: old module path -> the module that replaces it
MOVED = {
    "sdeeos._sweep": "sdeeos.sweeps",
    "sdeeos.engines._base": "sdeeos._contract",
    # the studies: one package (the schema, loader and runner of sdeeos._study; the kinds of sdeeos._studies)
    "sdeeos._study": "sdeeos.studies",
    "sdeeos._studies": "sdeeos.studies",
    **{f"sdeeos._studies.{m}": f"sdeeos.studies.{m}"
       for m in ("_common", "gd_recovery", "sharpness_gap", "stochastic_eos", "stochastic_eos_qr", "validity_map")},
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the old paths of `MOVED`; loading one returns the new module (one object, two names)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        new = MOVED[spec.name]
        warn_moved(spec.name, new, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module) -> None:
        """Nothing to run: the new module is already imported."""


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once), before any finder that could see a stale old file."""
    if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _MovedModuleFinder())
