"""Ctrl-C inside a segment, then resume: bit-identical to an uninterrupted run, for every engine.

Engines advance a run's arrays in place and then set its step counter.  These tests interrupt in
exactly that window -- after the arrays moved, before the counter did -- with a raised
``KeyboardInterrupt`` and with a real SIGINT, and in subprocesses with SIGINT sent by a timer at
random instants.  The resumed run must equal the uninterrupted run of the same seed to the bit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import sdeeos
from sdeeos import _simulate
from sdeeos.models import CubicTaylor, OrnsteinUhlenbeck, QuadraticRegression, SelfStabilization

CASES = {
    "symbolic-numba": (lambda: SelfStabilization(eta=0.01, alpha=1.0, beta=100.0, sigma=10.0), None, "numba"),
    "symbolic-numpy": (lambda: SelfStabilization(eta=0.01, alpha=1.0, beta=100.0, sigma=10.0), None, "numpy"),
    "qr-numba": (lambda: QuadraticRegression(n=8, P=4, eta=0.1, batch_size=2, q_scale=0.5), None, "numba"),
    "qr-numpy": (lambda: QuadraticRegression(n=8, P=4, eta=0.1, batch_size=2, q_scale=0.5), None, "numpy"),
    "cubic-taylor-pgd": (lambda: CubicTaylor(eta=0.01, alpha=1.0, beta=100.0, d=2, sigma=3.0), "pgd", "numba"),
    "sde": (lambda: OrnsteinUhlenbeck(rate=1.0, diffusion=1.0, dt=0.01), None, "numba"),
}
N_TRAJ, N_STEPS, SEG = 6, 640, 64


def _same(a, b) -> None:
    assert sorted(a.data_vars) == sorted(b.data_vars)
    for name in a.data_vars:
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)


def _interrupting_advance(original, at_call: int, how: str):
    calls = {"n": 0}

    def advance(self, spec, run, t1, n_threads=None):
        calls["n"] += 1
        t0 = run.t
        original(self, spec, run, t1, n_threads=n_threads)  # arrays and counter now at t1
        if calls["n"] != at_call:
            return
        run.t = t0  # the window: arrays of step t1, counter still t0
        if how == "raise":
            raise KeyboardInterrupt  # e.g. from a callback inside the engine
        os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C mid-segment
        for _ in range(1000):  # give the signal time to arrive while the window is open
            sum(range(100))
        run.t = t1

    return advance


@pytest.mark.parametrize("how", ["raise", "sigint"])
@pytest.mark.parametrize("case", list(CASES))
def test_interrupt_inside_a_segment_resumes_bit_identically(case, how, tmp_path, monkeypatch):
    make, method, backend = CASES[case]
    kw = dict(n_traj=N_TRAJ, n_steps=N_STEPS, burn_in=N_STEPS // 4, seed=5, backend=backend)
    if case.startswith("qr"):
        kw["record_every"] = 32
    reference = sdeeos.simulate(make(), method, **kw)

    monkeypatch.setattr(_simulate, "_SEGMENT_WORK", SEG * N_TRAJ)
    monkeypatch.setattr(_simulate, "_CHECKPOINT_EVERY_S", 0.0)
    engine_cls = type(make().engine(backend))
    original = engine_cls.advance
    monkeypatch.setattr(engine_cls, "advance", _interrupting_advance(original, 4, how))
    ckpt = tmp_path / "run.ckpt.npz"
    with pytest.raises(KeyboardInterrupt):
        sdeeos.simulate(make(), method, checkpoint=ckpt, **kw)
    monkeypatch.setattr(engine_cls, "advance", original)
    with np.load(ckpt) as data:
        saved_t = int(data["t"])
    # raised inside the window: the state is not committed, the checkpoint of segment 3 stays;
    # a real SIGINT is deferred to the commit point after segment 4
    assert saved_t == (3 if how == "raise" else 4) * SEG
    resumed = sdeeos.simulate(make(), method, checkpoint=ckpt, **kw)
    assert resumed.attrs["resumed_from_step"] == saved_t
    assert not ckpt.exists()
    _same(reference, resumed)


def test_keyboard_interrupt_from_the_progress_callback_saves_a_consistent_checkpoint(tmp_path, monkeypatch):
    model = lambda: SelfStabilization(eta=0.01, alpha=1.0, beta=100.0, sigma=10.0)  # noqa: E731
    kw = dict(n_traj=N_TRAJ, n_steps=N_STEPS, seed=9)
    reference = sdeeos.simulate(model(), **kw)
    monkeypatch.setattr(_simulate, "_SEGMENT_WORK", SEG * N_TRAJ)
    calls = {"n": 0}
    real = _simulate.tqdm

    class Bar(real):
        def update(self, n=1):
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt
            return super().update(n)

    monkeypatch.setattr(_simulate, "tqdm", Bar)
    ckpt = tmp_path / "c.npz"
    with pytest.raises(KeyboardInterrupt):
        sdeeos.simulate(model(), checkpoint=ckpt, **kw)
    monkeypatch.setattr(_simulate, "tqdm", real)
    resumed = sdeeos.simulate(model(), checkpoint=ckpt, **kw)
    assert resumed.attrs["resumed_from_step"] == 3 * SEG  # after segment 3: committed
    _same(reference, resumed)


SCRIPT = textwrap.dedent("""
    import os, sys, time
    import sdeeos
    from sdeeos import _simulate
    from sdeeos.engines._numba import NumbaEngine

    _simulate._SEGMENT_WORK = 64 * 200
    _simulate._CHECKPOINT_EVERY_S = 0.0
    original = NumbaEngine.advance

    def slow(self, spec, run, t1, n_threads=None):
        t0 = run.t
        original(self, spec, run, t1, n_threads)
        run.t = t0          # widen the window between the state update and the counter update
        time.sleep(0.004)
        run.t = t1

    NumbaEngine.advance = slow
    model = sdeeos.SelfStabilization(eta=0.01, alpha=1.0, beta=100.0, sigma=10.0)
    sdeeos.simulate(model, n_traj=2, n_steps=64, seed=3)  # build and load the engine first
    print("ready", flush=True)
    ds = sdeeos.simulate(model, n_traj=200, n_steps=64 * 150, seed=3, checkpoint=sys.argv[1])
    # write, then rename: a Ctrl-C while writing (after simulate returned) leaves no partial output
    ds.to_netcdf(sys.argv[2] + ".part", engine="h5netcdf")
    os.replace(sys.argv[2] + ".part", sys.argv[2])
""")


@pytest.mark.parametrize("seed", [0, 1])
def test_sigint_at_random_instants_then_resume_is_bit_identical(seed, tmp_path):
    rng = np.random.default_rng(seed)
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    ckpt, out = tmp_path / "ck.npz", tmp_path / "out.nc"
    env = {**os.environ, "NUMBA_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    saved_steps = []
    for _ in range(4):  # several Ctrl-C's at random instants, each followed by a resume
        proc = subprocess.Popen([sys.executable, str(script), str(ckpt), str(out)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        try:
            proc.wait(timeout=float(rng.uniform(0.05, 0.6)))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        if proc.returncode == 0 or out.exists():
            # out.exists(): the script had finished (the rename is its last statement) and the
            # Ctrl-C landed in interpreter shutdown, after Python's handler was gone: the default
            # action ends the process silently with -SIGINT, and nothing is lost
            break
        assert "KeyboardInterrupt" in err, (proc.returncode, err)
        if not ckpt.exists():
            # Ctrl-C before the first segment began (nothing done, nothing to save), or after
            # simulate returned and removed its checkpoint (while the script writes its output)
            continue
        with np.load(ckpt) as data:
            saved_steps.append(int(data["t"]))
        if len(saved_steps) == 2:
            break
    assert saved_steps and 0 < saved_steps[0] < 64 * 150, "no Ctrl-C landed inside the run"
    if not out.exists():
        subprocess.run([sys.executable, str(script), str(ckpt), str(out)], env=env, check=True,
                       stdout=subprocess.DEVNULL)
    import xarray as xr

    resumed = xr.open_dataset(out, engine="h5netcdf").load()
    reference = sdeeos.simulate(sdeeos.SelfStabilization(eta=0.01, alpha=1.0, beta=100.0, sigma=10.0),
                                n_traj=200, n_steps=64 * 150, seed=3)
    for name in ("sharpness_time_mean", "final_x", "final_y", "diverged_step", "sharpness_mean"):
        np.testing.assert_array_equal(reference[name].values, resumed[name].values, err_msg=name)
    if "sharpness_gap" in reference:
        np.testing.assert_array_equal(reference["sharpness_gap"].values, resumed["sharpness_gap"].values)


@pytest.mark.parametrize("damage", ["truncate", "rewrite"])
def test_damaged_checkpoint_is_reported_in_one_line(damage, tmp_path, monkeypatch):
    model = lambda: SelfStabilization(eta=0.01, alpha=1.0, beta=100.0, sigma=10.0)  # noqa: E731
    kw = dict(n_traj=N_TRAJ, n_steps=N_STEPS, seed=2)
    monkeypatch.setattr(_simulate, "_SEGMENT_WORK", SEG * N_TRAJ)
    ckpt = tmp_path / "c.npz"
    sdeeos.simulate(model(), checkpoint=ckpt, keep_checkpoint=True, **kw)
    if damage == "truncate":
        ckpt.write_bytes(ckpt.read_bytes()[:-300])
    else:  # a valid file whose state was changed after the checksum was taken
        with np.load(ckpt) as data:
            arrays = {k: data[k] for k in data.files}
        arrays["state"] = arrays["state"] + 1e-12
        np.savez(ckpt, **arrays)
    with pytest.raises(sdeeos.SdeeosError) as info:
        sdeeos.simulate(model(), checkpoint=ckpt, **kw)
    assert "damaged" in str(info.value) and "\n" not in str(info.value)
