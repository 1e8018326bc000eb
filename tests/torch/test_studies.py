"""The three real-network study kinds on tiny configurations, validated like every study file."""

from __future__ import annotations

import pathlib
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sdeeos import ParameterError  # noqa: E402
from sdeeos.studies import load_study, run_study  # noqa: E402

TINY = """\
dataset = "digits"
n_train = 80
n_test = 40
width = 8
threads = 1
"""


def _study(tmp_path, kind: str, body: str) -> pathlib.Path:
    p = tmp_path / f"{kind}.toml"
    p.write_text(f'kind = "{kind}"\n' + TINY + textwrap.dedent(body))
    return p


def test_real_eos(tmp_path):
    p = _study(tmp_path, "real_eos", """\
        batch_sizes = ["full", 20]
        lr = 0.05
        n_steps = 30
        sharpness_every = 10
        eval_every = 10
        """)
    ds = run_study(p, tmp_path / "out", progress=False)
    assert list(ds.batch_size.values) == [80, 20]
    assert np.all(np.isfinite(ds.plateau_sharpness.values))
    for ext in ("nc", "png", "pdf"):
        assert (tmp_path / "out" / f"real_eos.{ext}").stat().st_size > 0


def test_real_gap(tmp_path):
    p = _study(tmp_path, "real_gap", """\
        batch_sizes = ["full", 10, 40]
        lr = 0.05
        n_steps = 40
        sharpness_every = 10
        eval_every = 10
        theory_start = 20
        batch_sharpness_batches = 2
        """)
    ds = run_study(p, tmp_path / "out", progress=False)
    assert "gap_measured" in ds and "gap_predicted_sharpening_alpha_leading" in ds
    # the finite-population factor 1/B - 1/n is exactly a power law only as n -> oo; its fitted slope
    # over B = 10, 40 of n = 80 is the closed-form log-ratio
    expected = np.log((1 / 40 - 1 / 80) / (1 / 10 - 1 / 80)) / np.log(4)
    assert ds.attrs["slope_finite_population_factor"] == pytest.approx(expected, rel=1e-12)
    assert (tmp_path / "out" / "real_gap.png").exists()


def test_eos_sgd_vs_baselines(tmp_path):
    p = _study(tmp_path, "eos_sgd_vs_baselines", """\
        batch_size = 16
        n_steps = 20
        eval_every = 5
        target_test_accuracy = 0.2
        seeds = [0, 1]
        eos_k = 5
        eos_curvature_batch_size = 32
        [grids]
        sgd = [0.05]
        adam = [0.003]
        eos-sgd = [0.5]
        """)
    ds = run_study(p, tmp_path / "out", progress=False)
    assert list(ds.optimizer.values) == ["sgd", "adam", "eos-sgd"]
    assert ds.time_to_target_s.shape == (3, 2)
    assert "tuning_budget" in ds.attrs
    assert (tmp_path / "out" / "eos_sgd_vs_baselines.pdf").exists()


def test_training_settings_are_checked_with_file_and_line(tmp_path):
    p = _study(tmp_path, "real_eos", "bogus = 1\n")
    with pytest.raises(ParameterError, match=rf"{p}:7: unknown key 'bogus'"):
        load_study(p)
    p = _study(tmp_path, "real_eos", "momentum = 1.0\n")
    with pytest.raises(ParameterError, match=rf"{p}:7: momentum must be in \[0.0, 1.0\), got 1.0"):
        load_study(p)
    p = _study(tmp_path, "real_eos", 'batch_sizes = ["full", "half"]\n')
    with pytest.raises(ParameterError, match=r':7: batch_sizes: each batch size must be "full" or a positive integer'):
        load_study(p)


def test_deprecated_paths_warn_and_forward(tmp_path):
    sys.modules.pop("sdeeos.torch._studies", None)  # the warning fires on the first import
    with pytest.warns(DeprecationWarning, match="sdeeos.torch._studies is deprecated"):
        from sdeeos.torch._studies import block_mean_stderr, loglog_slope
    assert block_mean_stderr(np.full(20, 2.5)) == (2.5, 0.0)
    x = np.array([10.0, 20, 40, 80])
    slope, icpt, r2 = loglog_slope(x, 3 * x**-1.3)
    assert slope == pytest.approx(-1.3, rel=1e-12) and icpt == pytest.approx(np.log(3)) and r2 == pytest.approx(1)
    import sdeeos.torch

    assert sdeeos.torch.STUDY_RUNNERS["real_eos"].__module__ == "sdeeos.studies.real_eos"
