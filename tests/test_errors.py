"""Every sdeeos exception crosses a process boundary intact (study workers, Dask shards send them back).

An exception is unpickled by calling its class with its ``args`` and then restoring its ``__dict__``;
a class whose constructor needs more than the message breaks the pool that receives it
(``BrokenProcessPool`` with a traceback instead of the one-line error).
"""

from __future__ import annotations

import copyreg
import importlib
import importlib.util
import io
import pickle
import pkgutil

import numpy as np
import pytest

import sdeeos
from sdeeos._errors import SdeeosError


def _all_subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_subclasses(sub)


def _import_everything() -> None:
    for info in pkgutil.walk_packages(sdeeos.__path__, "sdeeos."):
        if info.name == "sdeeos.__main__":  # runs the command line
            continue
        if info.name.startswith("sdeeos.torch") and importlib.util.find_spec("torch") is None:
            continue
        importlib.import_module(info.name)


_import_everything()
ERRORS = sorted({c for c in _all_subclasses(SdeeosError)}, key=lambda c: f"{c.__module__}.{c.__qualname__}")


def test_the_walk_found_the_errors():
    names = {c.__name__ for c in ERRORS}
    assert {"ParameterError", "DamagedDataError", "NoWorkersError"} <= names


def _dumps_as_dask_does(err) -> bytes:
    """Pickled with tblib's reducer, which dask.distributed installs for every exception class."""
    pickling_support = pytest.importorskip("tblib.pickling_support")
    buf = io.BytesIO()
    pickler = pickle.Pickler(buf)
    pickler.dispatch_table = {**copyreg.dispatch_table, type(err): pickling_support.pickle_exception}
    pickler.dump(err)
    return buf.getvalue()


@pytest.mark.parametrize("dumps", [pickle.dumps, _dumps_as_dask_does], ids=["pickle", "tblib"])
@pytest.mark.parametrize("cls", ERRORS, ids=lambda c: c.__name__)
def test_every_error_survives_pickling(cls, dumps):
    err = cls("what went wrong, in one line")
    err.extra = np.arange(3)  # attributes travel in __dict__
    back = pickle.loads(dumps(err))
    assert type(back) is cls and str(back) == str(err)
    np.testing.assert_array_equal(back.extra, err.extra)


@pytest.mark.torch
@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch")
def test_eigen_solve_error_keeps_how_far_the_solve_got():
    eigen_solve_error = next(c for c in ERRORS if c.__name__ == "EigenSolveError")
    err = eigen_solve_error("did not converge", values=[3.0, 2.0], residuals=[0.1, 0.2], n_hvp=40)
    back = pickle.loads(pickle.dumps(err))
    np.testing.assert_array_equal(back.values, [3.0, 2.0])
    np.testing.assert_array_equal(back.residuals, [0.1, 0.2])
    assert back.n_hvp == 40
