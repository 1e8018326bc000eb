"""The command line's details: lazy subcommand imports, option names and help, and what a failed run
leaves behind (docs/cli.md)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import xarray as xr

from sdeeos._cli import SUBCOMMANDS, build_parser, main
from sdeeos.sweeps import SchedulerUnreachableError, sweep
from sdeeos import SelfStabilization

HEAVY = ("sympy", "numba", "xarray", "dask", "distributed", "torch", "sdeeos.sweeps", "sdeeos.studies",
         "sdeeos.theory", "sdeeos._simulate")


def _imported_after(code: str) -> list[str]:
    probe = f"import sys\n{code}\nprint('HEAVY:', *(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.rsplit("HEAVY:", 1)[1].split()


def test_top_level_help_and_import_sdeeos_import_nothing_heavy():
    assert _imported_after("import sdeeos") == []
    code = "from sdeeos._cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass"
    assert _imported_after(code) == []
    # a subcommand imports what it needs, and only that
    code = "from sdeeos._cli import main\ntry:\n    main(['derive', '--help'])\nexcept SystemExit:\n    pass"
    assert "sympy" in _imported_after(code) and "sdeeos.sweeps" not in _imported_after(code)


def test_the_registry_help_is_each_subcommands_own():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    helps = {c.dest: c.help for c in sub._choices_actions}
    assert helps == {name: help_text for name, (_, help_text) in SUBCOMMANDS.items()}


def test_quadratic_regression_options_n_params_and_sampling(capsys):
    sub = next(a for a in build_parser("simulate", lazy=True)._actions if a.dest == "command")
    qr = next(a for a in sub.choices["simulate"]._actions if a.dest == "model").choices["quadratic-regression"]
    opts = {s: a for a in qr._actions for s in a.option_strings}
    assert opts["--n-params"].help == "number of parameters" and opts["--P"].help == "==SUPPRESS=="
    assert opts["--sampling"].choices == ("without_replacement", "with_replacement", "bernoulli")
    assert opts["--backend"].choices == ("numba", "numpy", "cupy")
    base = ["simulate", "quadratic-regression", "--n", "4", "--eta", "0.1", "--steps", "6", "--n-traj", "2",
            "--backend", "numpy", "--no-progress", "--json"]
    assert main([*base, "--n-params", "3"]) == 0
    new = capsys.readouterr().out
    assert main([*base, "--P", "3"]) == 0  # the old spelling, unlisted, gives the same run
    old = capsys.readouterr().out
    strip = lambda s: s.split('"wall_time_s"')[0]  # noqa: E731 - the wall time differs
    assert strip(new) == strip(old) and '"P": 3' in new
    assert main(base) == 2
    assert capsys.readouterr().err == "sdeeos: error: the option --n-params is required\n"
    with pytest.raises(SystemExit):
        main([*base, "--n-params", "3", "--sampling", "stratified"])
    assert "invalid choice: 'stratified'" in capsys.readouterr().err


def test_a_shared_parameter_description_is_given_once(capsys):
    with pytest.raises(SystemExit):
        main(["simulate", "minimalist", "--help"])
    out = capsys.readouterr().out
    assert out.count("Initial point (default (6, 0.05)") == 1
    assert "y0; see --x0" in out


def test_train_help_names_each_choice_once(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "| ce: mse | ce" not in out and "mse | ce (default: mse)" not in out.replace("examples) | ce", "")
    assert out.count("constant | cosine") == 1


TINY = ('kind = "sharpness_gap"\n[model]\neta = 0.01\nalpha = 1.0\nbeta = 1.0\n'
        '[batch_noise]\nn_data = 64\nsigma_1 = 4.0\n[grid]\nbatch_size = [8, 16]\n'
        '[run]\nn_traj = 4\nduration_tau = 2.0\nburn_in_tau = 1.0\nmax_steps = 200\n')


def test_an_edited_study_stops_naming_out_and_force_recomputes(tmp_path, capsys):
    study, out = tmp_path / "s.toml", tmp_path / "out"
    study.write_text(TINY)
    run = ["study", str(study), "--scheduler", "serial", "--out", str(out), "--no-progress", "--json"]
    assert main(run) == 0
    study.write_text(TINY.replace("batch_size = [8, 16]", "batch_size = [8, 16, 32]"))
    capsys.readouterr()
    assert main(run) == 2
    assert capsys.readouterr().err == (
        f"sdeeos: error: --out {str(out)!r} holds sweep points of an earlier version of study 's' (its grid, model "
        "or run settings differ); re-run with --force to discard them and recompute, or choose another --out\n")
    assert main([*run, "--force"]) == 0
    with xr.open_dataset(out / "s.nc") as ds:
        assert list(ds.batch_size.values) == [8, 16, 32] and bool(ds.point_done.all())


def test_an_unreachable_scheduler_leaves_no_folder(tmp_path, capsys):
    out = tmp_path / "a" / "b"
    study = tmp_path / "s.toml"
    study.write_text(TINY)
    assert main(["study", str(study), "--scheduler", "tcp://127.0.0.1:1", "--out", str(out), "--no-progress"]) == 2
    assert "could not reach the Dask scheduler" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]
    store = tmp_path / "x" / "y.nc"
    with pytest.raises(SchedulerUnreachableError):
        sweep(SelfStabilization(eta=0.01, alpha=1.0, beta=1.0, sigma=1.0), {"sigma": [1.0, 2.0]}, n_traj=2,
              n_steps=10, store=store, scheduler="tcp://127.0.0.1:1", connect_timeout=1.0, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]


def test_replot_redraws_every_sharpness_gap_figure(tmp_path, capsys):
    study, out, again = tmp_path / "s.toml", tmp_path / "out", tmp_path / "again"
    study.write_text(TINY)
    assert main(["study", str(study), "--scheduler", "serial", "--out", str(out), "--no-progress", "--json"]) == 0
    drawn = sorted(p.name for p in out.iterdir() if p.suffix in (".png", ".pdf"))
    assert "s_gap_vs_batch.png" in drawn and "s_gap_vs_sigma2.pdf" in drawn
    assert main(["study", "--replot", str(out / "s.nc"), "--out", str(again)]) == 0
    assert sorted(p.name for p in again.iterdir()) == drawn
