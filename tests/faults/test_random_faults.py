"""Randomized faults, replayable: real processes stopped by SIGINT or SIGKILL at random instants, and
checkpoints damaged at random bytes, all drawn from the fault seed (``SDEEOS_FAULT_SEED``, printed
in the pytest header and in every failure).

Each case must end in the exact result of an uninterrupted run (compared bit for bit) or in one
line naming the damaged file.  A few cases per run keep the suite cheap; over many CI runs the
seeds cover the instants and bytes that fixed cases never reach.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import xarray as xr

import sdeeos
from sdeeos import SelfStabilization
from sdeeos._errors import SdeeosError
from sdeeos.sweeps import sweep

ENV = {**os.environ, "NUMBA_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
SIGNALS = (signal.SIGINT, signal.SIGKILL)
MODEL = dict(eta=0.01, alpha=1.0, beta=100.0, sigma=10.0)
RUN = dict(n_traj=512, n_steps=64 * 5000, seed=3)  # about 1 s: a random instant lands inside it
GRID = {"eta": [0.01, 0.02], "sigma": [1.0, 5.0]}
SWEEP = dict(params={"alpha": 1.0, "beta": 100.0}, n_traj=32, n_steps=100000, seed=4, scheduler="serial",
             progress=False)
COMPARED = ("sharpness_time_mean", "final_x", "final_y", "diverged_step", "sharpness_mean")

SCRIPT = textwrap.dedent("""
    import json, sys
    import sdeeos
    from sdeeos import _simulate
    from sdeeos.sweeps import sweep
    kind, path, model, run, grid, settings = sys.argv[1], sys.argv[2], *map(json.loads, sys.argv[3:])
    sdeeos.simulate(sdeeos.SelfStabilization(**model), n_traj=2, n_steps=64, progress=False)  # load kernels
    _simulate._CHECKPOINT_EVERY_S = 0.0  # a checkpoint after every segment: kills land anywhere
    print("ready", flush=True)
    if kind == "simulate":
        ds = sdeeos.simulate(sdeeos.SelfStabilization(**model), checkpoint=path, keep_checkpoint=True,
                             progress=False, **run)
    else:
        sweep(sdeeos.SelfStabilization, grid, store=path, **settings)
""")


@pytest.fixture(scope="module")
def references():
    return (sdeeos.simulate(SelfStabilization(**MODEL), progress=False, **RUN),
            sweep(SelfStabilization, GRID, **SWEEP))


def _same(a, b, names, where) -> None:
    for name in names:
        if name in a:
            assert a[name].dtype == b[name].dtype, f"{where}: {name}"
            np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=f"{where}: {name}")


@pytest.mark.parametrize("case", range(2))
def test_random_signal_then_resume_is_exact(case, tmp_path, references, fault_seed):
    rng = np.random.default_rng([fault_seed, 100 + case])
    kind = ("simulate", "sweep-zarr", "sweep-nc")[int(rng.integers(3))]
    sig = SIGNALS[int(rng.integers(2))]
    delay = float(rng.uniform(0.0, 1.0))
    where = f"{kind}, {sig.name} after {delay:.3f} s (SDEEOS_FAULT_SEED={fault_seed}, case {case})"
    path = tmp_path / {"simulate": "run.ckpt.npz", "sweep-zarr": "s.zarr", "sweep-nc": "s.nc"}[kind]
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), kind.split("-")[0], str(path), json.dumps(MODEL),
                             json.dumps(RUN), json.dumps(GRID), json.dumps(SWEEP)], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready", where
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    print(f"{where}: exit {proc.returncode}")
    if proc.returncode != 0:
        assert proc.returncode in (-sig, 1), f"{where}: exit {proc.returncode}: {err}"
        assert "Traceback" not in err or err.rstrip().endswith("KeyboardInterrupt"), f"{where}: {err}"
    run_ref, sweep_ref = references
    if kind == "simulate":
        resumed = sdeeos.simulate(SelfStabilization(**MODEL), checkpoint=path, progress=False, **RUN)
        _same(run_ref, resumed, COMPARED, where)
    else:
        resumed = sweep(SelfStabilization, GRID, store=path, **SWEEP)
        _same(sweep_ref, resumed, [n for n in sweep_ref.data_vars if n != "wall_time_s"], where)


@pytest.mark.parametrize("case", range(2))
def test_random_checkpoint_damage_is_exact_or_one_line(case, tmp_path, fault_seed):
    """A finished checkpoint with random bits flipped (or cut short) resumes exactly or is refused."""
    rng = np.random.default_rng([fault_seed, 200 + case])
    kw = dict(n_traj=8, n_steps=640, seed=2, progress=False)
    ckpt = tmp_path / "c.npz"
    reference = sdeeos.simulate(SelfStabilization(**MODEL), checkpoint=ckpt, keep_checkpoint=True, **kw)
    raw = bytearray(ckpt.read_bytes())
    if rng.random() < 0.25:
        cut = int(rng.integers(len(raw)))
        raw = raw[:cut]
        where = f"cut at byte {cut}"
    else:
        flips = [(int(rng.integers(len(raw))), int(rng.integers(8))) for _ in range(int(rng.integers(1, 4)))]
        for i, bit in flips:
            raw[i] ^= 1 << bit
        where = f"bits flipped {flips}"
    where += f" (SDEEOS_FAULT_SEED={fault_seed}, case {case})"
    ckpt.write_bytes(bytes(raw))
    try:
        resumed = sdeeos.simulate(SelfStabilization(**MODEL), checkpoint=ckpt, **kw)
    except SdeeosError as exc:
        assert "\n" not in str(exc) and str(ckpt) in str(exc), f"{where}: {exc}"
        return
    _same(reference, resumed, [n for n in reference.data_vars], where)
    assert isinstance(resumed, xr.Dataset)
