"""Every derivation runs and all its checks pass; the CLI and the runnable wrappers behave."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from sdeeos._cli import main as cli_main
from sdeeos.theory import derivations as reg

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", reg.names())
def test_derivation_checks_pass(name):
    out = io.StringIO()
    d = reg.run(name, stream=out)
    assert d.checks, f"{name} checks nothing"
    assert d.passed, out.getvalue()[-4000:]


def test_every_registered_derivation_has_a_runnable_wrapper():
    wrappers = {p.stem for p in (REPO / "derivations").glob("*.py")}
    assert set(reg.names()) <= wrappers


def test_wrapper_runs_as_a_script():
    res = subprocess.run([sys.executable, str(REPO / "derivations" / "gd_quadratic.py"), "--latex"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "$$" in res.stdout and "all 8 checks passed" in res.stdout


def test_cli_lists_derivations(capsys):
    assert cli_main(["derive"]) == 0
    out = capsys.readouterr().out
    for name in reg.names():
        assert name in out
    assert cli_main(["derive", "--list"]) == 0
    assert capsys.readouterr().out == out
    assert cli_main(["derive", "--list", "--all"]) == 2
    assert "--list lists the derivations" in capsys.readouterr().err


def test_cli_unknown_name_lists_known_ones_and_exits_2(capsys):
    assert cli_main(["derive", "no_such_derivation"]) == 2
    err = capsys.readouterr().err
    assert "unknown derivation 'no_such_derivation'" in err
    assert "gd_quadratic" in err


def test_cli_runs_one_with_latex(capsys):
    assert cli_main(["derive", "momentum_thresholds", "--latex"]) == 0
    out = capsys.readouterr().out
    assert "\\frac" in out or "\\beta" in out


def test_failed_check_exits_nonzero(monkeypatch, capsys):
    import types

    fake = types.ModuleType("sdeeos.theory.derivations.always_fails")
    fake.derive = lambda d: d.check("1 = 2", 1 == 2)
    monkeypatch.setitem(sys.modules, "sdeeos.theory.derivations.always_fails", fake)
    monkeypatch.setitem(reg.REGISTRY, "always_fails", "a derivation whose check fails")
    assert cli_main(["derive", "always_fails"]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_crash_is_reported_as_failure(monkeypatch):
    import types

    fake = types.ModuleType("sdeeos.theory.derivations.crashes")

    def derive(d):
        raise ZeroDivisionError("boom")

    fake.derive = derive
    monkeypatch.setitem(sys.modules, "sdeeos.theory.derivations.crashes", fake)
    monkeypatch.setitem(reg.REGISTRY, "crashes", "a derivation that crashes")
    d = reg.run("crashes", stream=io.StringIO())
    assert not d.passed and "boom" in d.failures[0].detail
