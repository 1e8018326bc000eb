"""Study files: strict validation with file:line errors, the runner registry, and the CLI end to end."""

from __future__ import annotations

import json
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from sdeeos import ParameterError
from sdeeos._cli import main
from sdeeos.studies import KINDS, Field, load_study, register_study_kind, run_study, toml_key_lines
from sdeeos.studies import _runner

STUDIES = Path(__file__).resolve().parents[1] / "studies"

TINY_GAP = """\
kind = "sharpness_gap"
name = "tiny_gap"

[model]
alpha = 1.0
beta = 100.0
eta = 0.05

[batch_noise]
n_data = 100
sigma_1 = 4.0

[grid]
batch_size = [5, 20, 100]

[run]
n_traj = 16
duration_tau = 1.0
burn_in_tau = 0.3
record_every = 10
n_paths = 1
"""


def _write(tmp_path, text, name="study.toml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def _line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


# --------------------------------------------------------------------------- line numbers
def test_toml_key_lines():
    doc = textwrap.dedent('''\
        kind = "x"            # 1
        text = """            # 2
        [not.a.table]
        key = 1
        """
        arr = [               # 6
          1, 2,
          [3, 4],
        ]
        [run]                 # 10
        n_traj = 5
        "quoted key" = 1
        inline = { a = 1, b = { c = 2 } }
        [grid.sub]            # 14
        x.y = 3
        [[points]]            # 16
        v = 1
        [[points]]
        v = 2
        ''')
    lines = toml_key_lines(doc)
    assert lines[("kind",)] == 1 and lines[("text",)] == 2 and lines[("arr",)] == 6
    assert ("not", "a", "table") not in lines and ("key",) not in lines
    assert lines[("run",)] == 10 and lines[("run", "n_traj")] == 11 and lines[("run", "quoted key")] == 12
    assert lines[("run", "inline", "a")] == 13 and lines[("run", "inline", "b")] == 13
    assert lines[("grid", "sub")] == 14 and lines[("grid", "sub", "x", "y")] == 15
    assert lines[("points", 0, "v")] == 17 and lines[("points", 1, "v")] == 19


# --------------------------------------------------------------------------- bad input
def test_unknown_key_names_key_line_and_suggestion(tmp_path):
    p = _write(tmp_path, TINY_GAP.replace("n_traj = 16", "n_trajs = 16"))
    with pytest.raises(ParameterError) as exc:
        load_study(p)
    line = _line_of(p, "n_trajs")
    assert str(exc.value).startswith(f"{p}:{line}: unknown key 'n_trajs' in [run]")
    assert "did you mean 'n_traj'" in str(exc.value)


def test_unknown_table_and_top_level_key(tmp_path):
    p = _write(tmp_path, TINY_GAP + "\n[plot]\ndpi = 100\n")
    with pytest.raises(ParameterError, match=rf"{p}:{_line_of(p, '[plot]')}: unknown key 'plot' at the top level"):
        load_study(p)


def test_wrong_type_names_key_and_line(tmp_path):
    p = _write(tmp_path, TINY_GAP.replace("n_traj = 16", 'n_traj = "many"'))
    with pytest.raises(ParameterError, match=rf"{p}:{_line_of(p, 'n_traj')}: \[run\] n_traj must be an integer, "
                                             r"got 'many' \(str\)"):
        load_study(p)
    p = _write(tmp_path, TINY_GAP.replace("batch_size = [5, 20, 100]", "batch_size = [5, 20.5]"))
    with pytest.raises(ParameterError, match=rf":{_line_of(p, 'batch_size')}: \[grid\] batch_size must be a list of "
                                             "integers"):
        load_study(p)
    p = _write(tmp_path, TINY_GAP.replace("alpha = 1.0", "alpha = -1.0"))
    with pytest.raises(ParameterError, match=rf":{_line_of(p, 'alpha')}: \[model\] alpha must be in \(0.0, inf\]"):
        load_study(p)


def test_missing_required_key_names_table_line(tmp_path):
    p = _write(tmp_path, TINY_GAP.replace("sigma_1 = 4.0\n", ""))
    with pytest.raises(ParameterError, match=rf"{p}:{_line_of(p, '[batch_noise]')}: \[batch_noise\] is missing "
                                             "the required key 'sigma_1'"):
        load_study(p)


def test_missing_model_parameter(tmp_path):
    p = _write(tmp_path, TINY_GAP.replace("beta = 100.0\n", ""))
    with pytest.raises(ParameterError, match=rf"{p}:{_line_of(p, '[model]')}: \[model\] is missing the required "
                                             "key 'beta'"):
        run_study(p, tmp_path / "out", progress=False)


def test_kind_and_toml_errors(tmp_path):
    with pytest.raises(ParameterError, match="unknown study kind 'sharpness_gapp'.*did you mean 'sharpness_gap'"):
        load_study(_write(tmp_path, 'kind = "sharpness_gapp"\n'))
    with pytest.raises(ParameterError, match="has no 'kind'"):
        load_study(_write(tmp_path, "x = 1\n"))
    with pytest.raises(ParameterError, match="invalid TOML"):
        load_study(_write(tmp_path, "kind = \n"))
    with pytest.raises(ParameterError, match="cannot read study file"):
        load_study(tmp_path / "missing.toml")


def test_cli_prints_one_line_and_exits_2(tmp_path, capsys):
    p = _write(tmp_path, TINY_GAP.replace("n_traj = 16", "n_traj = 1.5"))
    assert main(["study", str(p), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"sdeeos: error: {p}:{_line_of(p, 'n_traj')}: ")


def test_cli_unreachable_scheduler_exits_2(tmp_path, capsys):
    pytest.importorskip("distributed")
    p = _write(tmp_path, TINY_GAP)
    assert main(["study", str(p), "--out", str(tmp_path / "out"), "--no-progress",
                 "--scheduler", "tcp://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "could not reach the Dask scheduler" in err


# --------------------------------------------------------------------------- registry
def test_every_kind_row_names_its_module_and_file():
    # one module per kind, named like its study file: <stem>.py for studies/<stem>.toml
    stems = {p.stem for p in STUDIES.glob("*.toml")}
    for kind, row in KINDS.items():
        assert row.module.startswith("sdeeos.studies.") and row.module.rsplit(".", 1)[1] in stems, kind


def test_added_kinds_are_run_with_and_without_scheduler(tmp_path, monkeypatch):
    seen = {}

    def plain(config, out_dir, *, progress=True):
        seen["plain"] = (dict(config), out_dir, progress)
        return "plain-result"

    def scheduled(config, out_dir, *, progress=True, scheduler=None):
        seen["scheduled"] = scheduler
        return "scheduled-result"

    monkeypatch.setattr(_runner, "_ADDED", {})
    register_study_kind("test_plain", types.SimpleNamespace(SCHEMA={"lr": Field("float", low=0.0)}, run=plain))
    register_study_kind("test_scheduled", types.SimpleNamespace(SCHEMA={"n": Field("int", required=True)},
                                                                run=scheduled))
    with pytest.raises(ParameterError, match="built in"):
        register_study_kind("sharpness_gap", "x")
    p = _write(tmp_path, 'kind = "test_plain"\nlr = 0.1\n[quick]\nlr = 0.5\n', "plain.toml")
    assert run_study(p, tmp_path / "o", progress=False) == "plain-result"
    assert seen["plain"][0] == {"kind": "test_plain", "name": "plain", "lr": 0.1, "title": "", "description": ""}
    run_study(p, tmp_path / "o", progress=False, quick=True)
    assert seen["plain"][0]["lr"] == 0.5
    with pytest.raises(ParameterError, match="takes no scheduler"):
        run_study(p, tmp_path / "o", scheduler="tcp://x:1")
    assert run_study(p, tmp_path / "o", progress=False, scheduler="serial") == "plain-result"  # in process anyway
    q = _write(tmp_path, 'kind = "test_scheduled"\nn = 3\n', "scheduled.toml")
    assert run_study(q, tmp_path / "o", scheduler="serial") == "scheduled-result" and seen["scheduled"] == "serial"
    bad = _write(tmp_path, 'kind = "test_scheduled"\nn = 3\nm = 4\n', "bad.toml")
    with pytest.raises(ParameterError, match=rf"{bad}:3: unknown key 'm'"):
        load_study(bad)


# --------------------------------------------------------------------------- end to end
def _figures(out: Path, name: str, kinds) -> None:
    for k in kinds:
        for ext in ("png", "pdf"):
            f = out / f"{name}_{k}.{ext}"
            assert f.exists() and f.stat().st_size > 1000, f


def test_cli_sharpness_gap_on_the_default_local_cluster(tmp_path, capsys):
    pytest.importorskip("distributed")
    p = _write(tmp_path, TINY_GAP)
    out = tmp_path / "out"
    assert main(["study", str(p), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "fit_gap_vs_batch_size" in printed and "tiny_gap_gap_vs_batch.png" in printed
    _figures(out, "tiny_gap", ["gap_vs_batch", "gap_vs_sigma2", "sharpness_traces"])
    with xr.open_dataset(out / "tiny_gap.nc") as ds:
        assert ds["sharpness_gap"].dims == ("batch_size", "eta")
        assert ds["method"].values.ravel().tolist() == ["sgd", "sgd", "gd"]
        assert "local dask cluster" in ds.attrs["scheduler"]
        assert ds.attrs["n_points_computed"] == 3
        first = ds["sharpness_gap"].values.copy()
    summary = json.loads((out / "tiny_gap_summary.json").read_text())
    assert set(summary["fit_gap_vs_batch_size"]) == {"0.05"}
    # re-running a finished study recomputes nothing (and needs no cluster)
    assert main(["study", str(p), "--out", str(out), "--no-progress", "--json"]) == 0
    with xr.open_dataset(out / "tiny_gap.nc") as ds:
        assert ds.attrs["n_points_computed"] == 0
        np.testing.assert_array_equal(ds["sharpness_gap"].values, first)


def test_validity_map_to_zarr(tmp_path):
    pytest.importorskip("zarr")
    p = _write(tmp_path, """\
        kind = "validity_map"
        name = "tiny_map"
        levels = [0.1, 0.25]
        [model]
        alpha = 1.0
        beta = 100.0
        [grid]
        eta_sq_alpha = [1e-3, 4e-3]
        closure_validity_ratio = [0.3, 3.0, 30.0]
        [collapse]
        alpha = [4.0]
        beta = [10.0]
        eta_sq_alpha = [4e-3]
        closure_validity_ratio = [3.0]
        [run]
        n_traj = 16
        duration_tau = 1.0
        burn_in_tau = 0.3
        [output]
        format = "zarr"
        figure_formats = ["png"]
        """)
    out = tmp_path / "out"
    ds = run_study(p, out, progress=False, scheduler="serial")
    assert (out / "sweeps" / "tiny_map__map.zarr").is_dir()
    reopened = xr.open_zarr(out / "tiny_map.zarr", consolidated=False)
    assert reopened["gap_rel_error_exact"].dims == ("eta_sq_alpha", "closure_validity_ratio")
    np.testing.assert_array_equal(reopened["sharpness_gap"].values, ds["sharpness_gap"].values)
    # sigma follows from r, eta from a: sigma**2 beta / (4 alpha**2) = r and eta**2 alpha = a
    np.testing.assert_allclose(ds["sigma"].values[0] ** 2 * 100 / 4, [0.3, 3.0, 30.0], rtol=1e-12)
    np.testing.assert_allclose(ds["eta"].values[:, 0] ** 2, [1e-3, 4e-3], rtol=1e-12)
    summary = json.loads(ds.attrs["study_summary"])
    assert set(summary["boundary_r_exact"]) == {"0.001", "0.004"}
    assert "collapse_max_abs_z" in summary
    for k in ("map", "relative_error", "collapse"):
        assert (out / f"tiny_map_{k}.png").exists()


def test_gd_recovery(tmp_path):
    p = _write(tmp_path, """\
        kind = "gd_recovery"
        name = "tiny_gd"
        [model]
        eta = 0.05
        alpha = 1.0
        beta = 100.0
        [batch_noise]
        n_data = 50
        sigma_1 = 2.0
        [grid]
        batch_size = [5, 49, 50]
        [gd]
        x0_over_delta = [1.0, 0.99]
        n_cycles = 6
        record_every = 1
        [run]
        n_traj = 8
        duration_tau = 1.0
        burn_in_tau = 0.3
        record_every = 5
        n_paths = 1
        [output]
        figure_formats = ["png"]
        """)
    out = tmp_path / "out"
    ds = run_study(p, out, progress=False, scheduler="serial")
    assert float(ds["sharpness_gap"].sel(batch_size=50)) == 0.0  # B = n: GD on the period-2 orbit
    summary = json.loads(ds.attrs["study_summary"])
    # GD 1% off the orbit: cycles grow by the linearised two-step map's factor per cycle; the
    # nonlinear correction is O(0.01**2) and sampling each peak to the step is a 0.1% effect
    assert summary["gd_from_x0_over_delta"]["1"]["growth_per_cycle"] is None  # on the orbit: no cycle at all
    grow, theory = summary["gd_from_x0_over_delta"]["0.99"]["growth_per_cycle"], summary["gd_growth_per_cycle_theory"]
    assert theory > 1 and abs(grow - theory) < 0.05 * (theory - 1)
    for k in ("gap_to_gd", "traces"):
        assert (out / f"tiny_gd_{k}.png").exists()


def test_stochastic_eos_wires_quadratic_regression(tmp_path):
    p = _write(tmp_path, """\
        kind = "stochastic_eos"
        name = "tiny_eos"
        [model]
        n = 16
        P = 8
        eta = 0.05
        [grid]
        batch_size = [4, 16]
        [run]
        n_traj = 4
        n_steps = 400
        burn_in = 200
        record_every = 50
        [output]
        figure_formats = ["png"]
        """)
    out = tmp_path / "out"
    ds = run_study(p, out, progress=False, scheduler="serial")
    assert ds["noise_kernel_norm_exact_mean"].dims == ("batch_size",)
    assert float(ds["noise_kernel_norm_exact_mean"].sel(batch_size=16)) == 0.0  # B = n: GD, no batch noise
    np.testing.assert_allclose(ds["eta_sharpness_mean"].values, 0.05 * ds["sharpness_mean"].values, rtol=1e-15)
    for k in ("k_and_sharpness", "traces"):
        assert (out / f"tiny_eos_{k}.png").exists()
    bad = _write(tmp_path, 'kind = "stochastic_eos"\n[model]\nn = 16\nP = 8\neta = "0.1"\n[grid]\nbatch_size = [4, 8]\n',
                 "bad.toml")
    with pytest.raises(ParameterError, match=rf"{bad}:5: \[model\] eta must be a number"):
        load_study(bad)


