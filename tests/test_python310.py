"""Python 3.10 (the oldest version pyproject.toml declares): the package imports, TOML is read through
`tomli`, and ``sdeeos study`` lists the kinds and validates the repository's study files.

Runs when a Python 3.10 interpreter with sdeeos's dependencies is found (``SDEEOS_PYTHON310``, or
``python3.10`` on PATH, or a pyenv 3.10); skipped otherwise.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEPENDENCIES = "import numpy, scipy, sympy, numba, xarray, h5netcdf, matplotlib, tqdm, tomli"


def _python310() -> str | None:
    candidates = [os.environ.get("SDEEOS_PYTHON310"), shutil.which("python3.10"),
                  *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.10*/bin/python")))]
    for exe in filter(None, candidates):
        try:
            ok = subprocess.run([exe, "-c", DEPENDENCIES], capture_output=True, timeout=120).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            continue
        if ok:
            return exe
    return None


def test_study_cli_under_python_310(tmp_path):
    exe = _python310()
    if exe is None:
        pytest.skip("no Python 3.10 interpreter with sdeeos's dependencies")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    script = (
        "import sys; assert sys.version_info[:2] == (3, 10)\n"
        "import sdeeos._toml as t; assert t.tomllib.__name__ == 'tomli'\n"
        "from sdeeos._cli import main\n"
        "assert main(['study', '--list']) == 0\n"
        "from sdeeos.studies import KINDS, load_study\n"
        "from pathlib import Path\n"
        "for p in sorted(Path(sys.argv[1]).glob('*.toml')):\n"
        "    kind = t.read_toml(p)[0]['kind']\n"
        "    if KINDS[kind].extra is None:\n"
        "        load_study(p); load_study(p, quick=True)\n"
        "print('validated')\n"
    )
    proc = subprocess.run([exe, "-c", script, str(ROOT / "studies")], env=env, capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "sharpness_gap" in proc.stdout and proc.stdout.rstrip().endswith("validated")
