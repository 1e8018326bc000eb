"""Training harness for issue 15: the edge-sgd optimizer choice, the cosine schedule, continue_after_target,
and their bad input (one ParameterError line naming the setting, before any work)."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import sdeeos.torch._train as train_module  # noqa: E402
from sdeeos import ParameterError  # noqa: E402
from sdeeos._cli import main  # noqa: E402
from sdeeos.torch import (  # noqa: E402
    FlatParams,
    TrainConfig,
    build_model,
    load_data,
    loss_function,
    train,
)

SMALL = dict(dataset="digits", n_train=120, n_test=60, width=16, n_steps=20, eval_every=5,
             sharpness_every=0, threads=1)
# edge_max_overhead = 1: no cost budget, so the measurement schedule does not depend on timing
EDGE = dict(SMALL, optimizer="edge-sgd", batch_size=16, edge_curvature_batch_size=48, edge_probe_size=16,
            edge_bs_batches=2, edge_refresh_every=3, edge_max_overhead=1.0)


def test_cosine_schedule_is_the_closed_form_and_drives_the_update():
    """GD with lr_schedule = "cosine": the recorded step sizes are lr (1 + cos(pi t/T))/2 of the last step,
    and the trajectory equals a hand-written loop with that step size (float64, same operations)."""
    lr, n_steps = 0.3, 12
    cfg = dict(SMALL, n_train=40, width=6, optimizer="gd", lr=lr, lr_schedule="cosine", n_steps=n_steps,
               eval_every=1, dtype="float64")
    ds = train(cfg, progress=False)
    steps = ds.step.values
    expected = [lr] + [lr * 0.5 * (1 + math.cos(math.pi * (s - 1) / n_steps)) for s in steps[1:]]
    np.testing.assert_allclose(ds.learning_rate.values, expected, rtol=1e-15)
    assert ds.learning_rate.values[-1] == pytest.approx(lr * 0.5 * (1 + math.cos(math.pi * (n_steps - 1) / n_steps)),
                                                        rel=1e-15)
    # the same run by hand: theta <- theta - lr_t grad L(theta)
    data = load_data("digits", loss="mse", n_train=40, n_test=60, dtype=torch.float64)
    model = build_model("mlp-tanh", data.input_shape, 10, width=6, depth=2, seed=0, dtype=torch.float64)
    flat = FlatParams(model)
    fn = loss_function(flat, data.x_train, data.targets_train, "mse")
    theta = flat.flat().detach().clone()
    losses = [float(fn(theta))]
    for t in range(n_steps):
        g = torch.autograd.grad(fn(theta.requires_grad_(True)), theta)[0]
        theta = (theta - lr * 0.5 * (1 + math.cos(math.pi * t / n_steps)) * g).detach()
        losses.append(float(fn(theta)))
    # float64: the two loops differ only in summation order, ~1e-16 relative per step
    np.testing.assert_allclose(ds.train_loss.values, losses, rtol=1e-10)


def test_cosine_schedule_differs_from_constant():
    base = dict(SMALL, optimizer="sgd", batch_size=16, lr=0.2)
    const = train(base, progress=False)
    cos = train(dict(base, lr_schedule="cosine"), progress=False)
    assert np.all(const.learning_rate.values == 0.2)
    assert cos.learning_rate.values[-1] < 0.2 * 0.5 and cos.train_loss.values[-1] != const.train_loss.values[-1]


def _record_batches(monkeypatch):
    """Record every call of the harness's batch sampler, keyed by the generator's seed."""
    streams: dict[int, list] = {}
    original = train_module.batch_indices

    def recording(n, b, generator):
        idx = original(n, b, generator)
        streams.setdefault(generator.initial_seed(), []).append(idx.tolist())
        return idx

    monkeypatch.setattr(train_module, "batch_indices", recording)
    return streams


def test_edge_sgd_sampling_leaves_the_training_batch_stream_unchanged(monkeypatch):
    streams = _record_batches(monkeypatch)
    train(dict(EDGE, optimizer="sgd", lr=0.1), progress=False)
    sgd = dict(streams)
    assert len(sgd) == 1 and len(next(iter(sgd.values()))) == EDGE["n_steps"]
    streams.clear()
    ds = train(EDGE, progress=False)
    (seed,) = sgd
    # the training stream: the same batches in the same order; the controller's draws: another stream
    assert streams[seed] == sgd[seed]
    others = [k for k in streams if k != seed]
    assert len(others) == 1
    assert len(streams[others[0]]) == EDGE["edge_bs_batches"] * ds.attrs["edge_refresh_count"]


def test_edge_sgd_records_its_edges_and_the_step_follows_them():
    ds = train(EDGE, progress=False)
    a = ds.attrs
    assert a["stopped_reason"] == "completed" and a["edge_refresh_count"] >= 1 and a["edge_total_hvp"] > 0
    assert 0 < a["edge_overhead_s"] <= a["time_train_s"]
    assert a["edge_overhead_fraction"] == pytest.approx(a["edge_overhead_s"] / a["time_train_s"], rel=1e-12)
    assert sum(a[f"edge_binding_steps_{b}"] for b in ("eta_max", "curvature", "batch_sharpness", "noise_kernel")) \
        == a["steps_run"]
    code = ds.edge_binding_term
    assert list(code.attrs["flag_values"]) == [-1, 0, 1, 2, 3]
    assert code.attrs["flag_meanings"].split() == ["none", "eta_max", "curvature", "batch_sharpness", "noise_kernel"]
    assert code.values[0] == -1 and np.isnan(ds.learning_rate.values[0])
    later = ds.isel(step=slice(1, None))
    edges = np.stack([later[f"edge_step_{t}"].values for t in ("curvature", "batch_sharpness", "noise_kernel")])
    assert np.all(edges > 0)
    for v in ("edge_lambda_max", "edge_lambda_residual", "edge_batch_sharpness", "edge_batch_sharpness_stderr",
              "edge_ntk_trace", "edge_ntk_trace_stderr", "edge_noise_kernel"):
        assert np.all(np.isfinite(later[v].values)), v
    # the recorded eta_t is the rule applied to the recorded edges of the same step
    rule = np.minimum(TrainConfig.edge_eta_max, TrainConfig.edge_margin * edges.min(axis=0))
    np.testing.assert_allclose(later.learning_rate.values, rule, rtol=1e-12)
    names = code.attrs["flag_meanings"].split()
    for k, c in enumerate(later.edge_binding_term.values):
        name = names[int(c) + 1]
        if name != "eta_max":
            assert later[f"edge_step_{name}"].values[k] == edges[:, k].min()


def test_edge_sgd_with_momentum_without_the_noise_kernel_term():
    ds = train(dict(EDGE, edge_momentum=0.5, edge_terms="curvature,batch_sharpness"), progress=False)
    later = ds.isel(step=slice(1, None))
    assert np.all(np.isinf(later.edge_step_noise_kernel.values))
    # heavy ball's edge on a quadratic: eta lambda = 2 (1 + mu)
    np.testing.assert_allclose(later.edge_step_curvature.values, 3.0 / later.edge_lambda_max.values, rtol=1e-12)


def test_edge_sgd_without_a_cost_budget_is_reproducible_bit_for_bit():
    a, b = (train(EDGE, progress=False) for _ in range(2))
    for v in ("learning_rate", "train_loss", "edge_lambda_max", "edge_ntk_trace", "edge_batch_sharpness"):
        np.testing.assert_array_equal(a[v].values, b[v].values)
    assert a.attrs["edge_deferred_steps"] == 0 and a.attrs["edge_max_overhead"] == 1.0


def test_edge_sgd_term_subset_and_fixed_refresh():
    ds = train(dict(EDGE, edge_terms="curvature", edge_refresh="fixed", edge_refresh_every=4), progress=False)
    assert np.all(np.isinf(ds.edge_step_batch_sharpness.values[1:]))
    assert np.all(np.isinf(ds.edge_step_noise_kernel.values[1:]))
    assert ds.attrs["edge_refresh_count"] == math.ceil(EDGE["n_steps"] / 4)
    assert ds.attrs["edge_refresh_interval_final"] == 4


def test_non_finite_curvature_stops_the_run_with_the_step():
    data = load_data("digits", loss="mse", n_train=120, n_test=60)
    model = build_model("mlp-tanh", data.input_shape, 10, width=16, depth=2, seed=0)
    theta = FlatParams(model).flat().detach().clone()
    theta[0] = float("nan")
    ds = train(EDGE, progress=False, on_nonfinite="stop", init_params=theta)
    assert ds.attrs["stopped_reason"].startswith("non-finite curvature at step 0")
    assert ds.attrs["diverged_step"] == 0
    with pytest.raises(FloatingPointError, match="non-finite"):
        train(EDGE, progress=False, init_params=theta)


def test_continue_after_target_records_the_target_and_runs_the_budget():
    stop = train(dict(SMALL, optimizer="sgd", batch_size=16, lr=0.2, target_test_accuracy=0.2), progress=False)
    go = train(dict(SMALL, optimizer="sgd", batch_size=16, lr=0.2, target_test_accuracy=0.2,
                    continue_after_target=True), progress=False)
    assert 0 <= stop.attrs["target_step"] < SMALL["n_steps"]
    assert go.attrs["target_step"] == stop.attrs["target_step"] and go.attrs["steps_run"] == SMALL["n_steps"]
    # the same run up to the target (same seed, same batches)
    m = stop.step.size
    np.testing.assert_array_equal(go.train_loss.values[:m], stop.train_loss.values)


@pytest.mark.parametrize("bad, message", [
    (dict(edge_margin=0.0), r"edge_margin must be in \(0.0, 1.0\), got 0.0"),
    (dict(edge_margin=1.0), r"edge_margin must be in \(0.0, 1.0\), got 1.0"),
    (dict(edge_probe_size=121), r"edge_probe_size must be an integer in \[1, 120\] \(n_train\), got 121"),
    (dict(n_train=None, edge_probe_size=100_000),
     r"edge_probe_size must be an integer in \[1, \d+\] \(the training-set size\), got 100000"),
    (dict(edge_refresh_every=0), r"edge_refresh_every must be an integer in \[1, inf\), got 0"),
    (dict(edge_refresh_every=50, edge_refresh_max=20), r"edge_refresh_max must be an integer in \[50, inf\)"),
    (dict(edge_terms="curvature,sharpness"), r"edge_terms must be a comma-separated non-empty subset .*'sharpness' is not a term"),
    (dict(edge_terms=""), r"edge_terms must be a comma-separated non-empty subset .*\(empty\)"),
    (dict(edge_terms="curvature,curvature"), r"edge_terms .*\(a term named twice\)"),
    (dict(edge_terms="curvature,,noise_kernel"), r"edge_terms .*\(an empty name\)"),
    (dict(edge_refresh="sometimes"), r"edge_refresh must be one of \['adaptive', 'fixed'\]"),
    (dict(edge_momentum=0.5), r"edge_momentum must be 0 with the noise_kernel term .*got 0.5"),
    (dict(lr_schedule="cosine"), r"lr_schedule must be 'constant' for optimizer edge-sgd"),
    (dict(optimizer="eos-sgd", lr_schedule="cosine"), r"lr_schedule must be 'constant' for optimizer eos-sgd"),
    (dict(optimizer="sgd", lr_schedule="linear"), r"lr_schedule must be one of \['constant', 'cosine'\]"),
])
def test_bad_edge_settings_raise_one_line_naming_the_setting(bad, message, monkeypatch):
    def no_work(*args, **kwargs):  # nothing may be built before the settings are checked
        raise AssertionError("a model was built before the bad setting was reported")

    if "n_train" not in bad:
        monkeypatch.setattr(train_module, "build_model", no_work)
    with pytest.raises(ParameterError, match=message) as info:
        train(dict(EDGE, **bad), progress=False)
    assert "\n" not in str(info.value)


def test_edge_sgd_cli_bad_margin_exits_2(capsys, tmp_path):
    rc = main(["train", "--optimizer", "edge-sgd", "--edge-margin", "1.5", "--out", str(tmp_path / "x.nc")])
    assert rc == 2
    assert "edge_margin must be in (0.0, 1.0), got 1.5" in capsys.readouterr().err
