"""The three real-network study kinds on tiny configurations, validated like every study file."""

from __future__ import annotations

import pathlib
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sdeeos import ParameterError  # noqa: E402
from sdeeos._cli import main  # noqa: E402
from sdeeos.studies import eos_sgd_vs_baselines as baselines_kind  # noqa: E402
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
    np.testing.assert_array_equal(ds.gap_from_gd_sharpness.sel(batch_size="full").values, 0.0)
    sgd = ds.sel(batch_size="16")
    np.testing.assert_allclose(sgd.gap_from_2_over_eta.values, 2 / 0.4 - sgd.sharpness.values, rtol=1e-14)
    assert "alpha_used" in ds.attrs
    assert (tmp_path / "out" / "real_gap.png").exists() and (tmp_path / "out" / "real_gap.nc").exists()
    bad = tmp_path / "bad.toml"
    bad.write_text('kind = "real_gap"\nsettings = [{dataset = "cifar", model = "mlp-tanh", loss = "mse"}]\n')
    with pytest.raises(ParameterError, match=rf"{bad}:2: settings: setting dataset must be one of"):
        load_study(bad)


def test_eos_sgd_vs_baselines(tmp_path):
    """A small version of the study end to end: every reported variable, intervals recomputed
    independently (scipy's t quantile), the speedup from the per-seed times."""
    from scipy import stats

    p = tmp_path / "eos_sgd_vs_baselines.toml"
    p.write_text(textwrap.dedent("""\
        kind = "eos_sgd_vs_baselines"
        datasets = ["digits"]
        architectures = [{model = "mlp-tanh", loss = "mse"}]
        batch_sizes = [16]
        seeds = [0, 1, 2]
        n_train = 120
        n_test = 60
        width = 8
        eval_every = {digits = 5}
        edge_curvature_batch_size = 32
        edge_probe_size = 16
        edge_bs_batches = 2
        eos_k = 5
        eos_curvature_batch_size = 32
        targets = {digits = 0.3}
        budgets = {digits = 40}
        [grids]
        edge-sgd = [1.0, 2.0]
        eos-sgd = [0.5, 1.0]
        sgd = [0.1, 0.2]
        adam = [0.003, 0.01]
        cosine = [1.0, 2.0]
        """))
    ds = run_study(p, tmp_path / "out", progress=False)
    comps = ["edge-sgd", "eos-sgd", "sgd", "adam", "cosine", "edge-sgd:no_noise_kernel",
             "edge-sgd:no_batch_sharpness", "edge-sgd:fixed_refresh", "edge-sgd:no_cost_budget"]
    assert list(ds.competitor.values) == comps
    assert list(ds.setting.values) == ["digits/mlp-tanh/mse/B=16"]
    assert ds.time_to_target_s.shape == (1, len(comps), 3)
    assert "2 runs per competitor" in ds.attrs["tuning_budget"]
    assert ds.attrs["summary"].startswith("digits/mlp-tanh/mse/B=16: edge-sgd vs ")
    assert ds.cosine_base.values[0] in ("sgd", "adam")
    # every timed run went to the budget (fixed_budget) and reached this easy target
    assert np.all(ds.steps_run.values == 40) and np.all(ds.reached_target.values)
    for k in ("steps_to_target", "time_to_target_s", "final_test_accuracy"):
        lo, hi = ds[k + "_ci_low"].values, ds[k + "_ci_high"].values
        assert np.all(np.isfinite(lo) & np.isfinite(hi)) and np.all(lo <= hi), k
        v = ds[k].values
        half = stats.t.ppf(0.975, 2) * v.std(axis=-1, ddof=1) / np.sqrt(3)
        np.testing.assert_allclose(hi - ds[k + "_mean"].values, half, rtol=1e-10, atol=1e-15)
        np.testing.assert_allclose(ds[k + "_mean"].values, v.mean(axis=-1), rtol=1e-12)
    edge = ds.sel(competitor="edge-sgd")
    assert np.all((edge.overhead_fraction.values > 0) & (edge.overhead_fraction.values < 1))
    np.testing.assert_allclose(edge.binding_fraction.sum("binding").values, 1.0, rtol=1e-12)
    assert np.all(np.isnan(ds.sel(competitor="sgd").binding_fraction.values))
    # the speedup over the best baseline: ratio of the mean times, inside its interval
    b = str(ds.best_baseline.values[0])
    assert b in ("sgd", "adam", "cosine")
    ratio = ds.time_to_target_s.sel(competitor=b).mean().item() / edge.time_to_target_s.mean().item()
    assert ds.speedup_time.values[0] == pytest.approx(ratio, rel=1e-12)
    assert ds.speedup_time_ci_low.values[0] <= ratio <= ds.speedup_time_ci_high.values[0]
    assert ds.goal_reached.dtype == bool and ds.limiting_term.values[0] in (
        "eta_max", "curvature", "batch_sharpness", "noise_kernel")
    # edges over training for edge-sgd, per seed and evaluation step
    lr = ds.edge_curve_learning_rate.isel(setting=0).values
    assert np.all(np.isfinite(lr[:, 1:9])) and np.all(lr[:, 1:9] <= 2.0)
    assert "flag_meanings" in ds.edge_curve_edge_binding_term.attrs
    assert (tmp_path / "out" / "eos_sgd_vs_baselines.pdf").exists()
    assert main(["study", "--replot", str(tmp_path / "out" / "eos_sgd_vs_baselines.nc"),
                 "--out", str(tmp_path / "re")]) == 0


@pytest.mark.parametrize("body, line, message", [
    ("[grids]\nsgd = [0.1, 0.2]\nadam = [0.01]\n", 2, r"grids must all have the same length"),
    ("ablations = [\"no_noise_kernel\"]\n[grids]\nsgd = [0.1]\n", 2, r"ablations need grids.edge-sgd"),
    ('edge_terms = "curvature,noise_kernel"\n', 2, r"ablation no_batch_sharpness needs batch_sharpness"),
    ('edge_terms = "curvature,bs"\n', 2, r"edge_terms: edge_terms must be a comma-separated non-empty subset"),
    ("edge_margin = 1.0\n", 2, r"edge_margin must be in \(0.0, 1.0\)"),
    ("[grids]\ncosine = [1.0]\n", 3, r"grids.cosine needs at least one of"),
    ("batch_size = 16\n", 2, r"unknown key 'batch_size'"),
])
def test_eos_sgd_vs_baselines_bad_files(tmp_path, body, line, message):
    p = tmp_path / "bad.toml"
    p.write_text('kind = "eos_sgd_vs_baselines"\n' + body)
    with pytest.raises(ParameterError, match=rf"{p}:{line}: .*{message}"):
        run_study(p, tmp_path / "out", progress=False)


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


def test_edge_sgd_ablations_change_exactly_their_setting():
    base = {"dataset": "digits", "edge_terms": "curvature,batch_sharpness,noise_kernel"}
    tuned = {"fixed_refresh_every": 7}
    cfg = {a: baselines_kind._run_cfg(base, f"edge-sgd:{a}", 0.5, 3, tuned, {}, True) for a in baselines_kind.ABLATIONS}
    plain = baselines_kind._run_cfg(base, "edge-sgd", 0.5, 3, tuned, {}, True)
    changed = {a: {k: v for k, v in c.items() if plain.get(k) != v} for a, c in cfg.items()}
    assert changed == {
        "no_noise_kernel": {"edge_terms": "curvature,batch_sharpness"},
        "no_batch_sharpness": {"edge_terms": "curvature,noise_kernel"},
        "fixed_refresh": {"edge_refresh": "fixed", "edge_refresh_every": 7},
        "no_cost_budget": {"edge_max_overhead": 1.0},
    }
    assert plain["edge_eta_max"] == 0.5 and plain["optimizer"] == "edge-sgd" and plain["seed"] == 3
