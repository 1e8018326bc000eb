"""The stationarity gate in the ``batch_sharpness_anchor`` and ``regime`` studies: stored verdicts are the
gate on the stored windows, and a non-stationary run is never compared with the stationary theory."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sdeeos._stationarity import stationarity, windowed_stationarity  # noqa: E402
from sdeeos import ParameterError  # noqa: E402
from sdeeos.studies import run_study  # noqa: E402


def test_batch_sharpness_anchor_verdicts_are_the_gate_on_the_last_window(tmp_path):
    p = tmp_path / "bsa.toml"
    p.write_text(textwrap.dedent("""\
        kind = "batch_sharpness_anchor"
        dataset = "digits"
        n_train = 48
        width = 8
        lrs = [0.4]
        batch_sizes = [8]
        seeds = [0, 1]
        n_steps = 160
        every = 10
        bs_batches = 2
        n_blocks = 2
        max_steps = 700
        """))
    ds = run_study(p, tmp_path / "out", progress=False)
    start = int(0.5 * (160 // 10 + 1))
    wlen = 160 // 10 + 1 - start
    for at in np.ndindex(ds.stationary.shape):
        sub = ds.isel(eta=at[0], batch_size=at[1], seed=at[2])
        w = int(sub.window_start)
        assert int(sub.steps_run) == (w + wlen - 1) * 10 <= 700
        assert (w - start) % wlen == 0 and w >= start + 3 * wlen  # the gate judges after gate_span + 1 = 4 windows
        verdicts = []
        for k in ("batch_sharpness", "sharpness"):
            v = sub[k].values[w:w + wlen]
            series = sub[k].values[start:w + wlen]
            last_two = series[-2 * wlen:]
            g = windowed_stationarity(series, wlen, span=3, n_blocks=2,
                                      gap=max(abs(2 / 0.4 - last_two.mean()), 0.05 * 2 / 0.4))
            # the span test on its own: the last window against the one 3 windows earlier
            far = stationarity(np.concatenate([series[-4 * wlen:-3 * wlen], series[-wlen:]]), n_blocks=2,
                               gap=max(abs(2 / 0.4 - last_two.mean()), 0.05 * 2 / 0.4))
            assert not g.stationary or far.stationary
            assert float(sub[f"{k}_stationary"]) == float(g.stationary)
            assert float(sub[f"{k}_drift"]) == pytest.approx(g.drift, rel=1e-12, abs=1e-14)
            verdicts.append(g.stationary)
            blocks = [b.mean() for b in np.array_split(v, 4)]  # the plateau mean: of 4 block means
            assert float(sub[f"plateau_{k}"]) == pytest.approx(np.mean(blocks), rel=1e-12)
        assert float(sub.stationary) == float(all(verdicts))
        # a run stops early only when stationary; the ratio to 2/eta exists only then
        assert all(verdicts) or int(sub.steps_run) + wlen * 10 > 700
        assert np.isfinite(float(sub.bs_over_2_over_eta)) == all(verdicts)
    for name, v in ds.data_vars.items():
        assert v.attrs.get("long_name"), name


def test_regime_labels_non_stationary_cells_and_compares_only_stationary_runs(tmp_path):
    p = tmp_path / "regime.toml"
    p.write_text(textwrap.dedent("""\
        kind = "regime"
        settings = [{dataset = "digits", model = "mlp-tanh", loss = "mse"}]
        batch_sizes = ["full", 16]
        lrs = [0.4]
        seeds = [0, 1]
        n_train = 48
        width = 8
        n_steps = 80
        sharpness_every = 5
        n_snapshots = 1
        k = 2
        k_scan = [1]
        gf_steps = 6
        kernel_top = 2
        bs_batches = 2
        n_blocks = 2
        max_steps = 200
        """))
    ds = run_study(p, tmp_path / "out", progress=False)
    sgd = ds.sel(batch_size="16")
    stat = sgd.sharpness_stationary.values  # (setting, eta, seed)
    assert np.all(np.isin(stat, (0.0, 1.0)))
    steps = ds.steps_run.values[np.isfinite(ds.steps_run.values)]
    assert np.all(steps == 200)  # max_steps = 200 is the fewest the gate can judge at: 40 + 4 windows of 40
    ratio = sgd.gap_from_2_over_eta.values / sgd.predicted_gap_1d_topk_projected_alpha.values
    for at in np.ndindex(stat.shape[:2]):
        if np.any(stat[at] == 0):
            assert sgd.regime.values[at] == "not stationary"
        finite = np.isfinite(ratio[at]) & (stat[at] == 1)
        if finite.sum() == 1:
            assert float(sgd.ratio_gap_from_2_over_eta_to_predicted_gap_1d_topk_projected_alpha_seed_mean.values[at]) == pytest.approx(ratio[at][finite][0])
        if finite.sum() == 0:
            assert np.isnan(sgd.ratio_gap_from_2_over_eta_to_predicted_gap_1d_topk_projected_alpha_seed_mean.values[at])


@pytest.mark.parametrize("kind, extra, fewest", [
    ("batch_sharpness_anchor", "n_steps = 160\nevery = 10\n", 430),
    ("regime", 'settings = [{dataset = "digits", model = "mlp-tanh", loss = "mse"}]\nn_steps = 80\n', 200),
])
def test_a_budget_too_short_for_the_gate_is_one_line_before_any_work(kind, extra, fewest, tmp_path):
    # the gate needs the plateau start plus gate_span + 1 = 4 windows: 430 steps (records 8 + 4 x 9, every 10)
    # for the first, 40 + 4 x 40 = 200 for the second; one step fewer is refused by name
    p = tmp_path / "s.toml"
    p.write_text(f'kind = "{kind}"\n' + extra + f"max_steps = {fewest - 1}\n")
    with pytest.raises(ParameterError, match=rf"^max_steps must be 0 or >= {fewest} .*got {fewest - 1}$"):
        run_study(p, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
