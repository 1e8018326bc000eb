"""`benchmarks/gpu_acceptance.py --cpu-smoke`: the one-command GPU acceptance run, checked on the CPU.

It runs from a plain checkout (``PYTHONPATH=.``, no install) and must write one JSON file whose
sections all passed (or were skipped with a reason); the sharded section must find the sharded run
bit-identical to the unsharded one.  Its numbers are meaningless on the CPU and are not checked.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_cpu_smoke_runs_every_section(tmp_path):
    out = tmp_path / "acceptance.json"
    env = {**os.environ, "PYTHONPATH": "."}
    proc = subprocess.run([sys.executable, "benchmarks/gpu_acceptance.py", "--cpu-smoke", "--json", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["mode"].startswith("cpu-smoke") and res["passed"] is True
    assert set(res["sections"]) == {"tests", "reduced", "qr", "sharded"}
    for name, section in res["sections"].items():
        assert section["status"] in ("passed", "skipped"), (name, section)
        if section["status"] == "skipped":
            assert section["reason"]
    assert {(r["n_traj"], r["dtype"]) for r in res["sections"]["reduced"]["rows"]} >= {(2000, "float64"), (2000, "float32")}
    if res["sections"]["sharded"]["status"] == "passed":
        assert res["sections"]["sharded"]["bit_identical"] is True
    assert "| section | status |" in proc.stdout


def test_cpu_smoke_writes_no_file_unless_asked():
    spec = importlib.util.spec_from_file_location("gpu_acceptance", ROOT / "benchmarks" / "gpu_acceptance.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.json_output(None, smoke=True) is None
    assert module.json_output(None, smoke=False) == "gpu_acceptance.json"
    assert module.json_output("x.json", smoke=True) == "x.json"
