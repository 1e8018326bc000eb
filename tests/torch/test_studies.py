"""The three real-network study kinds on tiny configurations, validated like every study file."""

from __future__ import annotations

import pathlib
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sdeeos import ParameterError  # noqa: E402
from sdeeos._cli import main  # noqa: E402
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
    # the figure is redrawn from the saved dataset alone
    assert main(["study", "--replot", str(tmp_path / "out" / "real_eos.nc"), "--out", str(tmp_path / "re")]) == 0
    assert (tmp_path / "re" / "real_eos.png").stat().st_size > 1000


def test_real_gap_runs_one_setting_of_the_regime_study(tmp_path):
    """real_gap is the regime study for one setting: the GD reference, gaps from 2/eta and S_GD, each
    prediction naming its alpha."""
    p = tmp_path / "real_gap.toml"
    p.write_text(textwrap.dedent("""\
        kind = "real_gap"
        settings = [{dataset = "digits", model = "mlp-tanh", loss = "mse"}]
        batch_sizes = ["full", 16]
        lrs = [0.4]
        seeds = [0, 1]
        n_train = 48
        width = 8
        n_steps = 60
        sharpness_every = 20
        n_snapshots = 1
        k = 2
        k_scan = [1]
        gf_steps = 6
        kernel_top = 2
        bs_batches = 2
        """))
    ds = run_study(p, tmp_path / "out", progress=False)
    np.testing.assert_array_equal(ds.gap_gd.sel(batch_size="full").values, 0.0)
    sgd = ds.sel(batch_size="16")
    np.testing.assert_allclose(sgd.gap_2eta.values, 2 / 0.4 - sgd.S.values, rtol=1e-14)
    assert "alpha_used" in ds.attrs
    assert (tmp_path / "out" / "real_gap.png").exists() and (tmp_path / "out" / "real_gap.nc").exists()
    bad = tmp_path / "bad.toml"
    bad.write_text('kind = "real_gap"\nsettings = [{dataset = "cifar", model = "mlp-tanh", loss = "mse"}]\n')
    with pytest.raises(ParameterError, match=rf"{bad}:2: settings: setting dataset must be one of"):
        load_study(bad)


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


def test_old_torch_runner_forwards_to_sdeeos_study(tmp_path, capsys):
    sys.modules.pop("sdeeos.torch.studies", None)
    with pytest.warns(DeprecationWarning, match="sdeeos.torch.studies is deprecated"):
        from sdeeos.torch import studies as old
    bad = _study(tmp_path, "real_eos", "momentum = 1.0\n")
    with pytest.warns(DeprecationWarning, match="python -m sdeeos.torch.studies is deprecated"):
        assert old.main([str(bad), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.startswith(f"sdeeos: error: {bad}:7: momentum must be in")
    with pytest.warns(DeprecationWarning):
        kind, config = old.load_study_config(_study(tmp_path, "real_eos", "lr = 0.3\n"))
    assert kind == "real_eos" and config["lr"] == 0.3 and config["batch_sizes"] == ["full", 25, 50, 100, 250]
