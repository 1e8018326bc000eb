"""`simulate`: dataset schema, provenance, and exact resume after an interrupt."""

import numpy as np
import pytest

import sdeeos
from sdeeos import _simulate
from sdeeos.engines._numba import NumbaEngine


def model():
    return sdeeos.SelfStabilization(eta=0.01, alpha=1.0, beta=100.0, sigma=5.0)


def test_dataset_schema_and_provenance():
    ds = sdeeos.simulate(model(), n_traj=64, n_steps=512, seed=3, record_every=128)
    assert ds.sizes == {"traj": 64, "step": 4}
    for name in ("sharpness_time_mean", "x_sq_time_mean", "final_x", "diverged", "path_sharpness",
                 "sharpness_gap", "sharpness_gap_stderr", "sharpness_gap_predicted_exact", "n_diverged"):
        assert name in ds, name
    assert ds.attrs["rng_scheme"] == sdeeos.RNG_SCHEME
    assert ds.attrs["seed"] == "3" and ds.attrs["method"] == "sgd" and ds.attrs["eta"] == 0.01
    assert ds.attrs["sdeeos_version"] == sdeeos.__version__
    assert ds.attrs["git_revision"]
    # the ensemble mean is the mean of per-trajectory time means, its error the standard error
    per_traj = ds.sharpness_time_mean.values
    assert float(ds.sharpness_mean) == pytest.approx(per_traj.mean(), rel=1e-14)
    assert float(ds.sharpness_mean_stderr) == pytest.approx(per_traj.std(ddof=1) / 8, rel=1e-12)


def test_interrupted_run_resumes_exactly(tmp_path, monkeypatch):
    monkeypatch.setattr(_simulate, "_SEGMENT_WORK", 64 * 100)  # 64-step segments for 100 trajectories
    monkeypatch.setattr(_simulate, "_CHECKPOINT_EVERY_S", 0.0)
    kw = dict(n_traj=100, n_steps=1000, burn_in=200, seed=11)
    reference = sdeeos.simulate(model(), **kw)

    calls = {"n": 0}
    original = NumbaEngine.advance

    def interrupting(self, spec, run, t1, n_threads=None):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        return original(self, spec, run, t1, n_threads)

    ckpt = tmp_path / "run.ckpt.npz"
    monkeypatch.setattr(NumbaEngine, "advance", interrupting)
    with pytest.raises(KeyboardInterrupt):
        sdeeos.simulate(model(), checkpoint=ckpt, **kw)
    assert ckpt.exists()
    monkeypatch.setattr(NumbaEngine, "advance", original)
    resumed = sdeeos.simulate(model(), checkpoint=ckpt, **kw)
    assert resumed.attrs["resumed_from_step"] == 6 * 64
    assert not ckpt.exists()
    for name in reference.data_vars:
        np.testing.assert_array_equal(reference[name].values, resumed[name].values, err_msg=name)


def test_checkpoint_of_another_run_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(_simulate, "_SEGMENT_WORK", 64 * 10)
    monkeypatch.setattr(_simulate, "_CHECKPOINT_EVERY_S", 0.0)
    ckpt = tmp_path / "c.npz"
    original = NumbaEngine.advance

    def interrupting(self, spec, run, t1, n_threads=None):
        if run.t >= 128:
            raise KeyboardInterrupt
        return original(self, spec, run, t1, n_threads)

    monkeypatch.setattr(NumbaEngine, "advance", interrupting)
    with pytest.raises(KeyboardInterrupt):
        sdeeos.simulate(model(), n_traj=10, n_steps=1000, checkpoint=ckpt)
    monkeypatch.setattr(NumbaEngine, "advance", original)
    with pytest.raises(sdeeos.ParameterError, match="checkpoint"):
        sdeeos.simulate(model(), n_traj=10, n_steps=1000, seed=1, checkpoint=ckpt)
