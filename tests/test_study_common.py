"""Helpers shared by the study kinds."""

from __future__ import annotations

import numpy as np
import xarray as xr

from sdeeos.studies._common import converged


def _gap_dataset(with_drift: bool) -> xr.Dataset:
    ds = xr.Dataset({"sharpness_gap": ("batch_size", [1.0, 2.0, np.nan])})
    if with_drift:
        ds["sharpness_drift"] = ("batch_size", [0.1, 0.5, 0.0])
        ds["sharpness_drift_stderr"] = ("batch_size", [0.1, 0.1, 0.1])
    for name in ds.data_vars:
        ds[name].attrs.update(long_name=name, units="1/step size")
    return ds


def test_converged_is_a_unitless_flag_with_its_own_long_name():
    # the flag used to inherit the drift's attrs: units='1/step size', long_name='sharpness_drift'
    for with_drift in (True, False):
        ok = converged(_gap_dataset(with_drift))
        assert "units" not in ok.attrs
        assert ok.attrs["long_name"] not in ("sharpness_gap", "sharpness_drift")
        assert ok.dtype == bool


def test_converged_values():
    # |d| <= 3 se: 0.1 <= 0.3 yes; 0.5 > 0.3 and 0.5 > 0.02*2: no; NaN gap: no
    assert converged(_gap_dataset(True)).values.tolist() == [True, False, False]
