"""Smoke tests of the three study runners on tiny configurations, and their helpers."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sdeeos import ParameterError  # noqa: E402
from sdeeos.torch import STUDY_RUNNERS  # noqa: E402
from sdeeos.torch._studies import block_mean_stderr, loglog_slope  # noqa: E402
from sdeeos.torch.studies import load_study_config  # noqa: E402

STUDIES = pathlib.Path(__file__).resolve().parents[2] / "studies"
TINY = dict(dataset="digits", n_train=80, n_test=40, width=8, threads=1)


def test_loglog_slope_recovers_power_law():
    x = np.array([10.0, 20, 40, 80])
    slope, icpt, r2 = loglog_slope(x, 3 * x**-1.3)
    assert slope == pytest.approx(-1.3, rel=1e-12) and icpt == pytest.approx(np.log(3)) and r2 == pytest.approx(1)


def test_block_mean_stderr_of_constant_series():
    m, se = block_mean_stderr(np.full(20, 2.5))
    assert m == 2.5 and se == 0.0


@pytest.mark.parametrize("name, kind", [("real_eos", "real_eos"), ("real_gap", "regime"),
                                        ("eos_sgd_vs_baselines", "eos_sgd_vs_baselines"), ("regime", "regime"),
                                        ("batch_sharpness_anchor", "batch_sharpness_anchor")])
def test_study_toml_files_load(name, kind):
    study, cfg = load_study_config(STUDIES / f"{name}.toml", quick=True)
    assert study == kind and study in STUDY_RUNNERS


def test_real_eos_runner(tmp_path):
    cfg = dict(TINY, batch_sizes=["full", 20], lr=0.05, n_steps=30, sharpness_every=10, eval_every=10)
    ds = STUDY_RUNNERS["real_eos"](cfg, tmp_path, progress=False)
    assert list(ds.batch_size.values) == [80, 20]
    assert np.all(np.isfinite(ds.plateau_sharpness.values))
    for ext in ("nc", "png", "pdf"):
        assert (tmp_path / f"real_eos.{ext}").stat().st_size > 0


def test_real_gap_runner(tmp_path):
    cfg = dict(TINY, batch_sizes=["full", 10, 40], lr=0.05, n_steps=40, sharpness_every=10,
               eval_every=10, theory_start=20, batch_sharpness_batches=2)
    ds = STUDY_RUNNERS["real_gap"](cfg, tmp_path, progress=False)
    assert "gap_measured" in ds and "gap_predicted_sharpening_alpha_leading" in ds
    assert "slope_gap_measured" in ds.attrs
    assert (tmp_path / "real_gap.png").exists()


def test_eos_sgd_vs_baselines_runner(tmp_path):
    cfg = dict(TINY, batch_size=16, n_steps=20, eval_every=5, target_test_accuracy=0.2, seeds=[0, 1],
               grids={"sgd": [0.05], "adam": [0.003], "eos-sgd": [0.5]}, eos_k=5,
               eos_curvature_batch_size=32)
    ds = STUDY_RUNNERS["eos_sgd_vs_baselines"](cfg, tmp_path, progress=False)
    assert list(ds.optimizer.values) == ["sgd", "adam", "eos-sgd"]
    assert ds.time_to_target_s.shape == (3, 2)
    assert "tuning_budget" in ds.attrs
    assert (tmp_path / "eos_sgd_vs_baselines.pdf").exists()


def test_unknown_study_key_is_rejected(tmp_path):
    with pytest.raises(ParameterError, match="unknown config key"):
        STUDY_RUNNERS["real_eos"](dict(TINY, bogus=1), tmp_path, progress=False)
