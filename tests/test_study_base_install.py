"""The base install (no extras) runs a study: without dask the points run in this process, without
zarr a Zarr output is written as NetCDF, each with a one-line notice, and the numbers do not change."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import xarray as xr

from sdeeos.studies import run_study

ROOT = Path(__file__).resolve().parents[1]

STUDY = """\
kind = "sharpness_gap"
name = "base"
[model]
alpha = 1.0
beta = 100.0
eta = 0.05
[batch_noise]
n_data = 100
sigma_1 = 4.0
[grid]
batch_size = [5, 100]
[run]
n_traj = 8
duration_tau = 1.0
burn_in_tau = 0.3
[output]
format = "zarr"
figure_formats = ["png"]
"""

# the extras made unimportable, as in `pip install sdeeos` without [dist]
WITHOUT_DIST = textwrap.dedent("""\
    import sys
    for name in ("dask", "distributed", "zarr"):
        sys.modules[name] = None
    from sdeeos._cli import main
    sys.exit(main(sys.argv[1:]))
    """)


def test_study_runs_without_the_dist_extra(tmp_path):
    (tmp_path / "base.toml").write_text(STUDY)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", WITHOUT_DIST, "study", "base.toml", "--out", "out", "--no-progress"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    notices = [line for line in proc.stderr.splitlines() if line.startswith("sdeeos study:")]
    assert notices == [
        "sdeeos study: dask.distributed is not installed (the 'dist' extra): running the points in this process",
        "sdeeos study: zarr is not installed (the 'dist' extra): writing NetCDF instead of Zarr",
    ]
    # the same study in this process (counter-based random numbers: the same numbers on any scheduler)
    (tmp_path / "ref.toml").write_text(STUDY.replace('format = "zarr"', 'format = "netcdf"'))
    ref = run_study(tmp_path / "ref.toml", tmp_path / "ref", progress=False, scheduler="serial")
    with xr.open_dataset(tmp_path / "out" / "base.nc") as ds:
        np.testing.assert_array_equal(ds["sharpness_gap"].values, ref["sharpness_gap"].values)
        assert ds["sharpness_gap"].sel(batch_size=100).values.ravel().tolist() == [0.0]  # B = n: GD, no noise
