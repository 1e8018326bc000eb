"""A checkpoint belongs to the backend that wrote it.

Backends share the random draws and the law of the run but not the last bits of the arithmetic (the
Numba kernel contracts multiply-adds and orders sums differently from NumPy).  A Numba checkpoint
resumed with NumPy used to be accepted silently and gave a result equal to neither backend's
uninterrupted run; now the resume is refused in one line naming both backends.
"""

from __future__ import annotations

import numpy as np
import pytest

import sdeeos
from sdeeos import _simulate
from sdeeos._cli import main
from sdeeos._errors import ParameterError
from sdeeos.models import QuadraticRegression, SelfStabilization

N_TRAJ, N_STEPS, SEG = 6, 640, 64
MODELS = {
    "symbolic": lambda: SelfStabilization(eta=0.01, alpha=1.0, beta=100.0, sigma=10.0),
    "quadratic-regression": lambda: QuadraticRegression(n=8, P=4, eta=0.1, batch_size=2, q_scale=0.5),
}


def _interrupted_checkpoint(make, backend, ckpt, monkeypatch, kw):
    """A checkpoint of ``backend`` saved after 3 segments (Ctrl-C raised from the progress bar)."""
    monkeypatch.setattr(_simulate, "_SEGMENT_WORK", SEG * N_TRAJ)
    real = _simulate.tqdm
    calls = {"n": 0}

    class Bar(real):
        def update(self, n=1):
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt
            return super().update(n)

    monkeypatch.setattr(_simulate, "tqdm", Bar)
    with pytest.raises(KeyboardInterrupt):
        sdeeos.simulate(make(), checkpoint=ckpt, backend=backend, **kw)
    monkeypatch.setattr(_simulate, "tqdm", real)
    with np.load(ckpt) as data:
        assert int(data["t"]) == 3 * SEG and str(data["backend"]) == backend


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("written, resumed", [("numba", "numpy"), ("numpy", "numba")])
def test_checkpoint_of_another_backend_is_refused_in_one_line(model, written, resumed, tmp_path, monkeypatch):
    make = MODELS[model]
    kw = dict(n_traj=N_TRAJ, n_steps=N_STEPS, seed=9, progress=False)
    ckpt = tmp_path / "c.npz"
    _interrupted_checkpoint(make, written, ckpt, monkeypatch, kw)
    before = ckpt.read_bytes()
    with pytest.raises(ParameterError) as info:
        sdeeos.simulate(make(), checkpoint=ckpt, backend=resumed, **kw)
    msg = str(info.value)
    assert "\n" not in msg and f"backend {written!r}" in msg and repr(resumed) in msg and str(ckpt) in msg
    assert ckpt.read_bytes() == before  # the refused resume left the checkpoint as it was
    # the writer's backend resumes it to its own uninterrupted result, bit for bit
    reference = sdeeos.simulate(make(), backend=written, **kw)
    again = sdeeos.simulate(make(), checkpoint=ckpt, backend=written, **kw)
    assert again.attrs["resumed_from_step"] == 3 * SEG
    for name in reference.data_vars:
        np.testing.assert_array_equal(reference[name].values, again[name].values, err_msg=name)


def test_cli_resume_with_another_backend_is_one_line(tmp_path, monkeypatch, capsys):
    ckpt = tmp_path / "c.npz"
    kw = dict(n_traj=N_TRAJ, n_steps=N_STEPS, seed=9, progress=False)
    _interrupted_checkpoint(MODELS["symbolic"], "numba", ckpt, monkeypatch, kw)
    argv = ["simulate", "self-stabilization", "--eta", "0.01", "--alpha", "1", "--beta", "100", "--sigma", "10",
            "--n-traj", str(N_TRAJ), "--steps", str(N_STEPS), "--seed", "9", "--no-progress", "--json",
            "--backend", "numpy", "--checkpoint", str(ckpt)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "written by backend 'numba'" in err, err
