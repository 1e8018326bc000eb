"""Study files: optional grid points (no GD point), and the study-file errors that used to crash."""

from __future__ import annotations

import json

import pytest

from sdeeos._errors import ParameterError
from sdeeos.studies import load_study, run_study

NO_GD = """\
kind = "sharpness_gap"
name = "no_gd"

[model]
alpha = 1.0
beta = 100.0
eta = 0.05

[batch_noise]
n_data = 100
sigma_1 = 4.0

[grid]
batch_size = [5, 10, 20]

[run]
n_traj = 8
duration_tau = 0.5
burn_in_tau = 0.2
record_every = 10
n_paths = 1
"""


def test_sharpness_gap_without_a_gd_point_and_with_paths_writes_its_outputs(tmp_path):
    """Every point SGD: `method` is an attribute, not a variable; the study used to crash after the sweep."""
    study = tmp_path / "no_gd.toml"
    study.write_text(NO_GD)
    out = tmp_path / "out"
    ds = run_study(study, out, progress=False, scheduler="serial")
    assert "method" not in ds and ds.attrs["method"] == "sgd"
    assert (out / "no_gd_sharpness_traces.png").exists()
    summary = json.loads(ds.attrs["study_summary"])
    # the fit uses exactly the converged points with a positive gap, as when the grid has a GD point
    sub = ds.isel(eta=0)
    usable = sub["converged"].values & (sub["sharpness_gap"].values > 0)
    (fit,) = summary["fit_gap_vs_batch_size"].values()
    assert fit["batch_sizes"] == [int(b) for b in sub["batch_size"].values[usable]]


@pytest.mark.parametrize("edit, fragment", [
    (("alpha = 1.0", "alpha = nan"), "no_gd.toml:5"),
    (("eta = 0.05", "eta = inf"), "no_gd.toml:7"),
    (("batch_size = [5, 10, 20]", "batch_size = [5, 5]"), "no_gd.toml:14"),
    (("n_paths = 1", 'n_paths = 1\nbackend = "bogus"'), "no_gd.toml:22"),
    (('name = "no_gd"', 'name = ".."'), "no_gd.toml:2"),
])
def test_bad_study_values_name_file_and_line(edit, fragment, tmp_path):
    study = tmp_path / "no_gd.toml"
    study.write_text(NO_GD.replace(*edit))
    with pytest.raises(ParameterError) as info:
        load_study(study)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_non_utf8_study_file_and_out_file_are_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b'kind = "sharpness_gap"\nname = "caf\xe9"\n')
    with pytest.raises(ParameterError, match="UTF-8"):
        load_study(bad)
    study = tmp_path / "no_gd.toml"
    study.write_text(NO_GD)
    afile = tmp_path / "afile"
    afile.write_text("mine")
    with pytest.raises(ParameterError, match="directory"):
        run_study(study, afile, progress=False, scheduler="serial")
    assert afile.read_text() == "mine"
