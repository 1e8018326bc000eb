"""Training harness, CLI, data and networks: behaviour and bad input (no timings asserted)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sdeeos import ParameterError  # noqa: E402
from sdeeos.torch import (  # noqa: E402
    EoSSGD,
    NonFiniteLossError,
    TrainConfig,
    build_model,
    load_data,
    per_example_loss,
    train,
)

SMALL = dict(dataset="digits", n_train=120, n_test=60, width=16, n_steps=20, eval_every=5,
             sharpness_every=10, sharpness_dtype="float64", threads=1)


def test_gd_run_dataset_schema_and_provenance():
    ds = train(dict(SMALL, optimizer="gd", lr=0.05), progress=False)
    assert list(ds.step.values) == [0, 5, 10, 15, 20]
    assert list(ds.sharpness_step.values) == [0, 10, 20]
    for v in ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "learning_rate"):
        assert v in ds and np.all(np.isfinite(ds[v].values))
    assert np.all(ds.sharpness.values > 0) and np.all(ds.sharpness_n_hvp.values >= 1)
    a = ds.attrs
    for k in ("sdeeos_version", "git_revision", "command_line", "torch_version", "seed", "lr",
              "optimizer", "loss_convention", "tracking_overhead", "total_hvp"):
        assert k in a
    assert a["seed"] == "0" and a["stopped_reason"] == "completed"
    assert a["total_hvp"] == int(ds.sharpness_n_hvp.sum())


def test_sharpness_matches_exact_hessian_of_full_training_loss():
    """The tracked sharpness at the last step equals eigvalsh of the exact Hessian (float64)."""
    cfg = dict(SMALL, n_train=40, width=4, depth=1, optimizer="gd", lr=0.05, dtype="float64",
               sharpness_tol=1e-10)
    ds = train(cfg, progress=False)
    # rebuild the same run by hand and compare with the exact Hessian at the end
    data = load_data("digits", loss="mse", n_train=40, n_test=60, dtype=torch.float64)
    model = build_model("mlp-tanh", data.input_shape, 10, width=4, depth=1, seed=0, dtype=torch.float64)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(cfg["n_steps"]):
        opt.zero_grad()
        per_example_loss(model(data.x_train), data.targets_train, "mse").mean().backward()
        opt.step()
    from sdeeos.torch import FlatParams, loss_function

    flat = FlatParams(model)
    fn = loss_function(flat, data.x_train, data.targets_train, "mse")
    H = torch.autograd.functional.hessian(fn, flat.flat()).numpy()
    top = np.linalg.eigvalsh(H)[-1]
    assert float(ds.sharpness[-1]) == pytest.approx(top, rel=1e-9)


@pytest.mark.parametrize("opt,extra", [("sgd", dict(batch_size=16)), ("momentum", dict(batch_size=16)),
                                       ("adam", dict(batch_size=16, lr=1e-3)),
                                       ("eos-sgd", dict(batch_size=16, eos_k=5, eos_curvature_batch_size=32))])
def test_every_optimizer_runs(opt, extra):
    ds = train(dict(SMALL, optimizer=opt, **extra), progress=False)
    assert ds.attrs["stopped_reason"] == "completed"
    assert np.all(np.isfinite(ds.train_loss.values))
    if opt == "eos-sgd":
        assert "eos_lambda_hat" in ds and ds.attrs["eos_sgd_total_hvp"] > 0
        assert np.all(ds.learning_rate.values[1:] <= ds.attrs["eos_eta_max"])


def test_measure_theory_records_quantities():
    ds = train(dict(SMALL, optimizer="sgd", batch_size=16, lr=0.05, measure_theory=True,
                    theory_start=10, batch_sharpness_batches=2), progress=False)
    assert list(ds.theory_step.values) == [10, 20]
    for v in ("alpha", "beta", "sigma_u_sq", "sigma1_sq", "batch_sharpness", "sharpness_projected"):
        assert np.all(np.isfinite(ds[v].values))
    n, b = 120, 16
    assert np.allclose(ds.sigma_u_sq, (n - b) / (b * (n - 1)) * ds.sigma1_sq, rtol=1e-12)


def test_target_accuracy_stops_early():
    ds = train(dict(SMALL, optimizer="gd", lr=0.05, target_test_accuracy=0.0), progress=False)
    assert ds.attrs["target_step"] == 0 and ds.attrs["stopped_reason"].startswith("target")


def test_non_finite_loss_reports_step_and_last_sharpness():
    cfg = dict(SMALL, optimizer="gd", lr=1e5, sharpness_every=1)
    with pytest.raises(NonFiniteLossError) as info:
        train(cfg, progress=False)
    msg = str(info.value)
    assert "non-finite" in msg and "at step" in msg and "last sharpness" in msg
    part = info.value.dataset
    assert part is not None and part.attrs["diverged_step"] >= 0
    ds = train(cfg, progress=False, on_nonfinite="stop")
    assert ds.attrs["diverged_step"] == part.attrs["diverged_step"]
    assert f"at step {ds.attrs['diverged_step']}" in ds.attrs["stopped_reason"]


@pytest.mark.parametrize("bad,name", [
    (dict(optimizer="lbfgs"), "optimizer"),
    (dict(lr=0.0), "lr"),
    (dict(eos_c=-1.0), "eos_c"),
    (dict(eos_eta_max=0.0), "eos_eta_max"),
    (dict(eos_k=0), "eos_k"),
    (dict(batch_size=0), "batch_size"),
    (dict(batch_size=10_000), "batch_size"),
    (dict(dataset="cifar10"), "dataset"),
    (dict(not_a_setting=1), "unknown"),
])
def test_bad_settings_raise_parameter_error(bad, name):
    with pytest.raises(ParameterError, match=name):
        train(dict(SMALL, **bad), progress=False)


def test_config_from_dict_round_trip():
    c = TrainConfig.from_dict({"lr": 0.3, "optimizer": "sgd"}).validated()
    assert c.lr == 0.3 and c.optimizer == "sgd"


# ----------------------------------------------------------------------------- data and networks
def test_mnist1d_is_generated_offline_and_preserves_numpy_state():
    state = np.random.get_state()[1].copy()
    d = load_data("mnist1d", loss="mse")
    assert np.array_equal(np.random.get_state()[1], state)
    assert tuple(d.x_train.shape) == (4000, 40) and tuple(d.x_test.shape) == (1000, 40)
    assert d.targets_train.shape == (4000, 10)
    assert torch.equal(d.targets_train.argmax(1), d.y_train)
    assert set(d.y_train.tolist()) == set(range(10))


def test_digits_split_and_standardisation():
    d = load_data("digits", loss="ce", dtype=torch.float64)
    assert d.x_train.shape[1:] == (8, 8) and d.x_train.shape[0] + d.x_test.shape[0] == 1797
    assert torch.equal(d.targets_train, d.y_train)
    means = d.x_train.reshape(len(d.x_train), -1).mean(0)
    assert float(means.abs().max()) < 1e-12


def test_mse_convention_is_half_sum_over_outputs_mean_over_examples():
    out = torch.tensor([[1.0, 2.0], [0.0, -1.0]], dtype=torch.float64)
    tgt = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    assert per_example_loss(out, tgt, "mse").tolist() == [2.0, 2.0]  # 0.5*(0+4), 0.5*(0+4)


@pytest.mark.parametrize("name,shape", [("mlp-relu", (40,)), ("cnn-tanh", (40,)), ("cnn-relu", (8, 8))])
def test_models_build_for_both_datasets(name, shape):
    m = build_model(name, shape, 10, width=8, channels=3)
    assert m(torch.zeros((2,) + shape)).shape == (2, 10)


# ----------------------------------------------------------------------------- CLI
def test_cli_train_writes_dataset(tmp_path):
    import xarray as xr

    from sdeeos._cli import main

    out = tmp_path / "run.nc"
    rc = main(["train", "--dataset", "digits", "--n-train", "60", "--n-steps", "4", "--eval-every", "2",
               "--sharpness-every", "2", "--width", "8", "--lr", "0.05", "--out", str(out), "--no-progress"])
    assert rc == 0
    ds = xr.open_dataset(out, engine="h5netcdf")
    assert ds.sizes["sharpness_step"] == 3 and ds.attrs["lr"] == 0.05
    ds.close()


def test_cli_bad_input_exits_2(tmp_path, capsys):
    from sdeeos._cli import main

    rc = main(["train", "--optimizer", "eos-sgd", "--eos-c", "-1", "--out", str(tmp_path / "x.nc")])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "eos_c" in err and "[0.0, inf)" in err


def test_cli_non_finite_writes_partial_and_exits_1(tmp_path, capsys):
    from sdeeos._cli import main

    out = tmp_path / "div.nc"
    rc = main(["train", "--dataset", "digits", "--n-train", "60", "--lr", "1e5", "--n-steps", "20",
               "--sharpness-every", "1", "--width", "8", "--out", str(out), "--no-progress"])
    assert rc == 1 and out.exists()
    assert "last sharpness" in capsys.readouterr().err


def test_importing_sdeeos_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, sdeeos, sdeeos._cli as c; c.build_parser(); print('torch' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "False"


def test_runs_are_reproducible_for_a_seed():
    cfg = dict(SMALL, optimizer="eos-sgd", batch_size=16, eos_k=3, eos_curvature_batch_size=32)
    a = train(cfg, progress=False)
    torch.randn(5)  # consume the global generator: results must not depend on it
    b = train(cfg, progress=False)
    assert np.array_equal(a.train_loss.values, b.train_loss.values)
    assert np.array_equal(a.sharpness.values, b.sharpness.values)


def test_eos_sgd_trains_with_one_example_per_batch():
    """B = 1 is allowed (the noise comes from per-example gradients on the curvature batch, not from
    splitting the batch); with one refresh (at step 0, same parameters) the noise variance at B = 1
    and B = 2 differ by exactly the batch-noise factors of the theory."""
    cfg = dict(SMALL, optimizer="eos-sgd", eos_k=100, eos_curvature_batch_size=32)
    one, two = (train(dict(cfg, batch_size=b), progress=False) for b in (1, 2))
    assert np.all(np.isfinite(one.train_loss.values))
    n = SMALL["n_train"]
    ratio = EoSSGD.batch_noise_factor(1, n) / EoSSGD.batch_noise_factor(2, n)
    assert one.eos_noise_variance.values[-1] > 0
    assert one.eos_noise_variance.values[-1] / two.eos_noise_variance.values[-1] == pytest.approx(ratio, rel=1e-12)
