"""`sdeeos simulate`: JSON summary, dataset written with provenance, bad input -> exit 2, one line."""

import json
import subprocess
import sys

import pytest
import xarray as xr

import sdeeos
from sdeeos._cli import main
from sdeeos._rng import check_rng, rng_scheme
from sdeeos.theory import self_stabilization as theory


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "sdeeos", *args], capture_output=True, text=True, timeout=300)


def test_json_summary_and_netcdf(tmp_path, capsys):
    out = tmp_path / "run.nc"
    rc = main(["simulate", "self-stabilization", "--eta", "0.01", "--alpha", "1", "--beta", "100", "--sigma", "5",
               "--n-traj", "200", "--steps", "4000", "--seed", "7", "--out", str(out), "--json", "--no-progress"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["sharpness_gap_predicted_exact"] == pytest.approx(theory.gap_exact(0.01, 1, 100, 5), rel=1e-15)
    assert summary["sharpness_gap_predicted_leading"] == pytest.approx(6.25, rel=1e-15)
    assert summary["n_diverged"] == 0 and summary["seed"] == "7"
    with xr.open_dataset(out, engine="h5netcdf") as ds:
        for key in ("sdeeos_version", "git_revision", "rng_scheme", "seed", "eta", "alpha", "beta", "sigma",
                    "command_line", "n_traj", "n_steps", "burn_in", "method"):
            assert key in ds.attrs, key
        assert ds.sizes["traj"] == 200
        assert float(ds.sharpness_gap) == pytest.approx(summary["sharpness_gap"], rel=1e-15)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--eta", "-1", "--alpha", "1", "--beta", "1"], "eta must be in (0.0, inf)"),
        (["--eta", "0.1", "--alpha", "1", "--beta", "1", "--sigma", "nan"], "sigma must be finite"),
        (["--eta", "0.1", "--alpha", "1", "--beta", "1", "--n-traj", "0"], "n_traj must be"),
        (["--eta", "0.1", "--alpha", "1", "--beta", "1", "--steps", "10", "--burn-in", "10"], "burn_in must be"),
        (["--eta", "0.1", "--alpha", "1", "--beta", "1", "--n-shards", "0"], "n_shards must be"),
        (["--eta", "0.1", "--alpha", "1", "--beta", "1", "--sigma", "1", "--dtype", "float32", "--backend", "numpy"],
         "dtype 'float32' is not supported by backend 'numpy'"),
    ],
)
def test_bad_input_exits_2_with_one_line(args, fragment):
    proc = run_cli("simulate", "self-stabilization", *args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in proc.stderr


@pytest.mark.parametrize("dtype, rng", [("float64", "philox"), ("float32", "splitmix"), ("float32", None)])
def test_rng_option_runs_the_family_the_api_runs(capsys, dtype, rng):
    args = ["simulate", "self-stabilization", "--eta", "0.01", "--alpha", "1", "--beta", "100", "--sigma", "5",
            "--n-traj", "64", "--steps", "512", "--seed", "3", "--dtype", dtype, "--json", "--no-progress"]
    assert main(args + (["--rng", rng] if rng else [])) == 0
    summary = json.loads(capsys.readouterr().out)
    ds = sdeeos.simulate(sdeeos.SelfStabilization(eta=0.01, alpha=1.0, beta=100.0, sigma=5.0), n_traj=64,
                         n_steps=512, seed=3, dtype=dtype, rng=rng, progress=False)
    assert summary["rng_scheme"] == ds.attrs["rng_scheme"] == rng_scheme(dtype, check_rng(rng, dtype))
    assert summary["sharpness_gap"] == float(ds.sharpness_gap)  # the same draws: the same bits


def test_rng_a_model_does_not_support_is_one_line():
    proc = run_cli("simulate", "quadratic-regression", "--n", "8", "--n-params", "4", "--eta", "0.1",
                   "--rng", "philox", "--n-traj", "2", "--steps", "10")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "rng 'philox' is not supported by model" in lines[0], proc.stderr
