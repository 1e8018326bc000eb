"""Study kind ``edge_regimes``: --quick end to end, the stored gate against the gate on the stored traces,
and resume after a kill (bit-identical series)."""

from __future__ import annotations

import pathlib
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sdeeos import ParameterError  # noqa: E402
from sdeeos._stationarity import stationarity, windowed_stationarity  # noqa: E402
from sdeeos.studies import edge_regimes, load_study, run_study  # noqa: E402

STUDY = pathlib.Path(__file__).resolve().parents[2] / "studies" / "edge_regimes.toml"
EDGES = {"lambda_max", "batch_sharpness", "K", "none", "not stationary", "not run"}


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    return run_study(STUDY, tmp_path_factory.mktemp("quick"), progress=False, quick=True)


def test_quick_runs_every_part_and_describes_every_variable(quick):
    ds = quick
    assert set(ds.dims) >= {"setting", "eta", "batch_size", "label_noise", "seed", "record"}
    assert {str(s).split(":")[0] for s in ds.setting.values} == set(edge_regimes.PARTS)
    for name, v in ds.data_vars.items():
        assert v.attrs.get("long_name"), name
        if v.dtype.kind == "f" and not name.startswith(("n_", "edge")):
            assert "units" in v.attrs, name
    for label in ds.edge.values.ravel():
        assert set(label.split("+")) <= EDGES, label
    cfg = load_study(STUDY, quick=True)
    ran = np.isfinite(ds.stationary.values)
    for part in edge_regimes.PARTS:
        names = [s for s in ds.setting.values if str(s).startswith(part)]
        steps = ds.steps_run.sel(setting=names).values
        assert np.nanmax(steps) <= cfg[part]["max_steps"]
    assert ran.sum() == sum(len(cfg[p]["seeds"]) * len(cfg[p]["label_noises"]) * len(cfg[p]["batch_sizes"])
                            * len(cfg[p]["lrs"]) * len(cfg[p]["settings"]) for p in edge_regimes.PARTS)
    for p in ("verdict_ap", "verdict_eoss", "verdict_label_noise"):
        assert ds.attrs[p]


def test_stored_verdicts_are_the_gate_on_the_stored_last_window(quick):
    ds = quick
    cfg = load_study(STUDY, quick=True)
    for at in zip(*np.nonzero(np.isfinite(ds.stationary.values))):
        sub = ds.isel(dict(zip(("setting", "eta", "batch_size", "label_noise", "seed"), at)))
        part = str(sub.setting.values).split(":")[0]
        m = cfg[part]["window"] // cfg[part]["measure_every"]
        n = int(sub.n_measurements)
        lam = sub.trace_lambda_max.values[max(n - 2 * m, 0):n]  # the gate's statistics: the last two windows
        eta = float(sub.eta)
        gap = max(abs(2 / eta - np.mean(lam)), cfg["edge_tolerance"] * 2 / eta)
        v = stationarity(lam, n_blocks=cfg["n_blocks"], gap=gap)
        assert float(sub.lambda_max_mean) == pytest.approx(v.mean, rel=1e-12)
        assert float(sub.lambda_max_drift) == pytest.approx(v.drift, rel=1e-12, abs=1e-14)
        # its verdict: also the last window against the one gate_span windows back
        w = windowed_stationarity(sub.trace_lambda_max.values[:n], m, span=cfg["gate_span"], n_blocks=cfg["n_blocks"],
                                  gap=gap)
        assert float(sub.lambda_max_stationary) == float(w.stationary) and (v.stationary or not w.stationary)
        assert float(sub.gap) == pytest.approx(2 / eta - v.mean, rel=1e-12)
        gated = [bool(sub[f"{q}_stationary"]) for q in edge_regimes.GATED[part]]
        assert float(sub.stationary) == float(all(gated))
        a, be = float(sub.alpha_gf), float(sub.beta)
        if part == "label_noise" and np.isfinite(float(sub.gap_slope_pred)):
            assert float(sub.gap_slope_pred) == pytest.approx(eta * be / (4 * a), rel=1e-10)  # Liao et al.'s slope
            assert float(sub.gap_pred_leading) == pytest.approx(eta * be * float(sub.sigma_u_sq_dagger) / (4 * a),
                                                                rel=1e-10)
        if str(sub.stop_reason.values) == "stationary":
            assert all(gated) and n >= 2 * m


def _small(tmp_path) -> pathlib.Path:
    p = tmp_path / "edge_regimes.toml"
    p.write_text(textwrap.dedent("""\
        kind = "edge_regimes"
        width = 8
        n_blocks = 2
        k = 2
        gf_steps = 6
        n_snapshots = 2
        snapshot_spacing = 20
        bs_batches = 2
        ap = {run = false}
        eoss = {run = false}
        [label_noise]
        settings = [{dataset = "digits", model = "mlp-tanh", loss = "mse"}]
        lrs = [0.2]
        batch_sizes = [8]
        label_noises = [0.2]
        seeds = [0]
        n_train = 48
        warmup_steps = 40
        window = 80
        measure_every = 10
        max_steps = 300
        """))
    return p


def test_resume_after_a_kill_gives_the_uninterrupted_result(tmp_path, monkeypatch):
    p = _small(tmp_path)
    whole = run_study(p, tmp_path / "whole", progress=False)
    calls = {"n": 0}

    def kill(spec, step):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(edge_regimes, "_after_window", kill)
    with pytest.raises(KeyboardInterrupt):
        run_study(p, tmp_path / "resumed", progress=False)
    monkeypatch.setattr(edge_regimes, "_after_window", lambda spec, step: None)
    resumed = run_study(p, tmp_path / "resumed", progress=False)
    assert int(whole.steps_run.max()) > 2 * 80  # the kill came before the run ended
    for name in whole.data_vars:
        if name.startswith(("time_", "seconds_")):
            continue  # wall times differ between any two runs
        a, b = whole[name].values, resumed[name].values
        if a.dtype.kind == "f":
            np.testing.assert_array_equal(a, b, err_msg=name)
        else:
            assert (a == b).all(), name
    # a finished study rerun reads every run back without training
    again = run_study(p, tmp_path / "resumed", progress=False)
    np.testing.assert_array_equal(again.trace_lambda_max.values, whole.trace_lambda_max.values)


def test_bad_input_names_the_key(tmp_path):
    p = _small(tmp_path)
    text = p.read_text()
    p.write_text(text.replace("measure_every = 10", "measure_every = 30"))
    with pytest.raises(ParameterError, match=r"\[label_noise\] window must be a multiple of measure_every"):
        run_study(p, tmp_path / "o", progress=False)
    p.write_text(text.replace("batch_sizes = [8]", "batch_sizes = [48]"))
    with pytest.raises(ParameterError, match=r"batch_sizes must be integers in \[1, n_train\)"):
        run_study(p, tmp_path / "o2", progress=False)
    p.write_text(text.replace('loss = "mse"}', 'loss = "ce"}'))
    with pytest.raises(ParameterError, match="setting loss must be 'mse'"):
        load_study(p)


def _tiny_ap(tmp_path, extra: str = "") -> pathlib.Path:
    """A study file of one tiny ``ap`` run (digits, width 8, B = 2, 200 steps); ``extra``: top-level keys."""
    p = tmp_path / "edge_regimes.toml"
    p.write_text(textwrap.dedent("""\
        kind = "edge_regimes"
        width = 8
        n_blocks = 2
        kernel_top = 2
        bs_batches = 2
        eoss = {run = false}
        label_noise = {run = false}
        """) + extra + textwrap.dedent("""\
        [ap]
        settings = [{dataset = "digits", model = "mlp-tanh", loss = "mse"}]
        lrs = [0.2]
        batch_sizes = [2]
        seeds = [0]
        n_train = 48
        warmup_steps = 40
        window = 80
        measure_every = 10
        max_steps = 200
        """))
    return p


def test_kernel_on_a_stride_is_measured_every_kth_time_and_still_gated(tmp_path):
    p = _tiny_ap(tmp_path, "kernel_every = 2\n")
    ds = run_study(p, tmp_path / "out", progress=False)
    c = ds.isel(setting=0, eta=0, batch_size=0, label_noise=0, seed=0)
    n = int(c.n_measurements)
    k = c.trace_K_trace.values[:n]
    assert np.all(np.isfinite(k[::2])) and np.all(np.isnan(k[1::2]))
    assert np.all(np.isfinite(c.trace_lambda_max.values[:n]))
    gap = max(abs(1 - np.nanmean(k[max(n - 16, 0):])), 0.05)
    v = stationarity(k[max(n - 16, 0):], n_blocks=2, gap=gap)
    w = windowed_stationarity(k, 8, span=3, n_blocks=2, gap=gap)
    assert float(c.K_trace_stationary) == float(w.stationary)
    assert float(c.K_trace_mean) == pytest.approx(v.mean, rel=1e-12)
    p.write_text(p.read_text().replace("kernel_every = 2", "kernel_every = 3"))
    with pytest.raises(ParameterError, match=r"kernel_every must be an integer in \[1, 2\]"):
        run_study(p, tmp_path / "o2", progress=False)


def test_a_failed_kernel_solve_is_a_missing_value_not_the_end_of_the_study(tmp_path, monkeypatch):
    """Near divergence the top Gauss-Newton modes may not converge: that K is NaN (the gate reads it as
    not stationary) and the run, and the study, go on."""
    calls = {"n": 0}
    real = edge_regimes.noise_kernel

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise edge_regimes.EigenSolveError("did not converge", values=[1.0], residuals=[1.0], n_hvp=9)
        return real(*args, **kwargs)

    monkeypatch.setattr(edge_regimes, "noise_kernel", flaky)
    p = _tiny_ap(tmp_path)
    ds = run_study(p, tmp_path / "out", progress=False)
    c = ds.isel(setting=0, eta=0, batch_size=0, label_noise=0, seed=0)
    n = int(c.n_measurements)
    k = c.trace_K_trace.values[:n]
    assert np.isnan(k[2]) and np.all(np.isfinite(np.delete(k, 2)))
    assert np.all(np.isfinite(c.trace_lambda_max.values[:n]))
    assert str(c.stop_reason.values) != "diverged" and calls["n"] == n


@pytest.mark.parametrize("path", sorted((STUDY.parent / "pilots").glob("*.toml")), ids=lambda p: p.name)
def test_the_pilot_files_of_the_findings_page_are_valid_study_files(path):
    cfg = load_study(path)
    assert cfg.kind == "edge_regimes" and sum(cfg[part]["run"] for part in edge_regimes.PARTS) >= 1


def test_a_setting_may_set_its_own_n_train(tmp_path):
    # the same network on 40 and 48 examples in one part: two settings, each run on its own n
    p = _tiny_ap(tmp_path)
    p.write_text(p.read_text().replace(
        'settings = [{dataset = "digits", model = "mlp-tanh", loss = "mse"}]',
        'settings = [{dataset = "digits", model = "mlp-tanh", loss = "mse", n_train = 40},\n'
        '            {dataset = "digits", model = "mlp-tanh", loss = "mse"}]').replace("max_steps = 200", "max_steps = 120"))
    cfg = load_study(p)
    jobs = edge_regimes._jobs(dict(cfg))
    assert [j["spec"]["n_train"] for j in jobs] == [40, 48]
    assert [j["name"] for j in jobs] == ["ap:digits/mlp-tanh/n=40/init=1", "ap:digits/mlp-tanh/n=48/init=1"]
    assert all(set(j["spec"]["setting"]) == {"dataset", "model", "loss"} for j in jobs)
    # a setting without n_train has the digest (the resume key) of the same file without the other setting
    plain = tmp_path / "plain.toml"
    plain.write_text(p.read_text().replace(
        '{dataset = "digits", model = "mlp-tanh", loss = "mse", n_train = 40},\n            ', ""))
    assert edge_regimes._jobs(dict(load_study(plain)))[0]["digest"] == jobs[1]["digest"]
    ds = run_study(p, tmp_path / "out", progress=False)
    assert list(ds.setting.values) == ["ap:digits/mlp-tanh/n=40/init=1", "ap:digits/mlp-tanh/n=48/init=1"]
    p.write_text(p.read_text().replace("n_train = 40}", "n_train = 3}"))
    with pytest.raises(ParameterError, match="setting n_train must be an integer >= 4, got 3"):
        load_study(p)
