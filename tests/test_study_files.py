"""Every study file of the repository loads and validates; bad files fail before any work with file:line."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from sdeeos import ParameterError
from sdeeos._cli import main
from sdeeos._toml import read_toml
from sdeeos.studies import KINDS, load_study, study_module

STUDIES = Path(__file__).resolve().parents[1] / "studies"
STUDY_FILES = sorted(STUDIES.glob("*.toml"))

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
batch_size = [5, 20]

[run]
n_traj = 8
duration_tau = 1.0
burn_in_tau = 0.3
record_every = 10
n_paths = 1

[output]
figure_formats = ["png"]
"""


def _needs_extra(kind: str) -> None:
    extra = KINDS[kind].extra
    if extra == "torch" and importlib.util.find_spec("torch") is None:
        pytest.skip("needs the torch extra")


def _line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def test_every_kind_has_a_study_file():
    kinds = {read_toml(p)[0]["kind"] for p in STUDY_FILES}
    assert kinds == set(KINDS)


@pytest.mark.parametrize("path", STUDY_FILES, ids=lambda p: p.stem)
def test_study_file_validates(path):
    kind = read_toml(path)[0]["kind"]
    _needs_extra(kind)
    cfg = load_study(path)
    assert cfg.kind == kind and cfg.name == read_toml(path)[0].get("name", path.stem)
    quick = load_study(path, quick=True)  # every file has a smoke-test configuration
    assert quick.quick and quick.kind == kind
    # the schema is the kind module's: every top-level key of the file is one of its keys
    module = study_module(kind)
    assert set(cfg) <= {"kind", "name", "title", "description", *module.SCHEMA}


# --------------------------------------------------------------------------- bad values, before any work
@pytest.mark.parametrize("old, new, needle, message", [
    ("alpha = 1.0", "alpha = nan", "alpha", r"\[model\] alpha must be a finite number, got nan"),
    ("sigma_1 = 4.0", "sigma_1 = inf", "sigma_1", r"\[batch_noise\] sigma_1 must be a finite number, got inf"),
    ("batch_size = [5, 20]", "batch_size = [5, 20, 5]", "batch_size", r"\[grid\] batch_size lists 5 more than once"),
    ('figure_formats = ["png"]', 'figure_formats = ["png", "png"]', "figure_formats",
     r"\[output\] figure_formats lists 'png' more than once"),
    ("n_paths = 1", 'n_paths = 1\nbackend = "cuda"', "backend",
     r"\[run\] backend must be one of 'numba', 'numpy', 'cupy', got 'cuda'"),
    ('name = "tiny_gap"', 'name = ".."', "name", r"name: must be a plain file name .* got '\.\.'"),
    ('name = "tiny_gap"', 'name = "../escape"', "name", "name: must be a plain file name"),
])
def test_bad_value_names_file_line_and_range(tmp_path, old, new, needle, message):
    p = tmp_path / "study.toml"
    p.write_text(TINY_GAP.replace(old, new))
    with pytest.raises(ParameterError, match=rf"^{p}:{_line_of(p, needle)}: {message}"):
        load_study(p)


def test_non_utf8_file_is_one_clear_line(tmp_path):
    p = tmp_path / "latin1.toml"
    p.write_bytes(TINY_GAP.replace('title = ""', "").encode() + "# caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ParameterError, match=rf"^{p}:{TINY_GAP.count(chr(10)) + 1}: study file must be UTF-8 text"):
        load_study(p)


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(ParameterError, match="is a directory, not a file"):
        load_study(tmp_path)


def test_out_pointing_at_a_file_exits_2_before_work(tmp_path, capsys):
    p = tmp_path / "study.toml"
    p.write_text(TINY_GAP)
    out = tmp_path / "taken"
    out.write_text("not a directory")
    assert main(["study", str(p), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out must be a directory" in err
    assert not (tmp_path / "sweeps").exists()


def test_sharpness_gap_without_a_gd_point_draws_its_traces(tmp_path):
    # all points SGD (no B = n): "method" is then an attribute, not a variable of the dataset
    p = tmp_path / "study.toml"
    p.write_text(TINY_GAP)
    assert main(["study", str(p), "--out", str(tmp_path / "out"), "--no-progress", "--scheduler", "serial"]) == 0
    assert (tmp_path / "out" / "tiny_gap_sharpness_traces.png").stat().st_size > 1000
