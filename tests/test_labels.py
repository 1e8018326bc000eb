"""Every variable and coordinate of every dataset sdeeos writes carries a ``long_name``, and every
prediction the formula it comes from (`sdeeos._labels`).

The walk covers the ``--quick`` output of every study file (datasets and sweep stores), ``sdeeos
simulate --out`` for every registered model and ``sdeeos train --out``.  The studies run once per
session (serial, in this process): about 3 minutes of CPU on one core.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import xarray as xr

from sdeeos._cli import main
from sdeeos._labels import LABELS, describe, is_prediction, label_dataset, unlabelled
from sdeeos.studies import KINDS, load_study, run_study

ROOT = Path(__file__).resolve().parents[1]
STUDY_FILES = sorted((ROOT / "studies").glob("*.toml"))
HAVE_TORCH = importlib.util.find_spec("torch") is not None


def _open(path: Path) -> xr.Dataset:
    return xr.open_dataset(path, engine="zarr" if path.suffix == ".zarr" else "h5netcdf")


def _written(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix in (".nc", ".zarr") and ".zarr/" not in str(p))


@pytest.fixture(scope="session")
def quick_outputs(tmp_path_factory) -> dict[str, list[Path]]:
    """Every study file's ``--quick`` run, once per session: study name -> the datasets it wrote."""
    out = {}
    for path in STUDY_FILES:
        cfg = load_study(path, quick=True)
        row = KINDS.get(cfg.kind)
        if row is not None and row.extra == "torch" and not HAVE_TORCH:
            continue
        folder = tmp_path_factory.mktemp(path.stem)
        run_study(cfg, folder, progress=False, scheduler="serial")
        out[path.stem] = _written(folder)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("study", [p.stem for p in STUDY_FILES])
def test_every_quick_study_output_is_labelled(study, quick_outputs):
    if study not in quick_outputs:
        pytest.skip("needs the torch extra")
    assert quick_outputs[study], f"{study} wrote no dataset"
    for path in quick_outputs[study]:
        with _open(path) as ds:
            assert unlabelled(ds) == [], path.relative_to(path.parents[1])


MODEL_ARGS = {
    "self-stabilization": ["--eta", "0.01", "--alpha", "1", "--beta", "1", "--sigma", "2"],
    "quadratic-regression": ["--n", "8", "--n-params", "4", "--eta", "0.1", "--batch-size", "2"],
    "multi-direction": ["--eta", "0.01", "--alpha", "1,0.5", "--sigma", "2,1", "--coupling", "1,0.2;0.2,1"],
    "minimalist": ["--eta", "0.1", "--sigma", "0.1"],
    "cubic-taylor": ["--eta", "0.01", "--alpha", "1", "--beta", "1", "--sigma", "2"],
    "ou": ["--rate", "1", "--diffusion", "0.5", "--dt", "0.01"],
    "minimalist-sme": ["--eta", "0.1", "--sigma", "0.1", "--dt", "0.05"],
    "cubic-taylor-sme": ["--eta", "0.01", "--alpha", "1", "--beta", "1", "--sigma", "2", "--dt", "0.005"],
    "self-stabilization-sme": ["--eta", "0.01", "--alpha", "1", "--beta", "1", "--sigma", "2", "--dt", "0.005"],
}


@pytest.mark.parametrize("model", sorted(MODEL_ARGS))
def test_simulate_output_is_labelled(model, tmp_path, capsys):
    out = tmp_path / "run.nc"
    rc = main(["simulate", model, *MODEL_ARGS[model], "--n-traj", "4", "--steps", "40", "--record-every", "10",
               "--backend", "numpy", "--no-progress", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    with _open(out) as ds:
        assert unlabelled(ds) == []


def test_every_registered_model_is_walked():
    from sdeeos.models import MODEL_REGISTRY

    assert sorted(MODEL_REGISTRY) == sorted(MODEL_ARGS)


@pytest.mark.torch
@pytest.mark.skipif(not HAVE_TORCH, reason="needs the torch extra")
def test_train_output_is_labelled(tmp_path, capsys):
    out = tmp_path / "train.nc"
    rc = main(["train", "--dataset", "digits", "--model", "mlp-tanh", "--n-steps", "30", "--sharpness-every", "10",
               "--no-progress", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    with _open(out) as ds:
        assert unlabelled(ds) == []


def test_a_label_set_where_the_variable_is_made_wins_and_derived_names_build_on_it():
    ds = xr.Dataset({"sharpness_gap": ((), 1.0, {"long_name": "own"}), "sharpness_gap_stderr": ((), 0.1),
                     "mystery": ((), 0.0)})
    label_dataset(ds)
    assert ds.sharpness_gap.attrs == {"long_name": "own"}
    assert ds.sharpness_gap_stderr.attrs["long_name"] == "standard error of: own"
    assert "units" not in ds.sharpness_gap_stderr.attrs  # the variable's own label says none
    assert unlabelled(ds) == ["mystery"]


def test_predictions_carry_their_formula():
    preds = [n for n in LABELS if is_prediction(n)]
    assert "sharpness_gap_predicted_exact" in preds and "predicted_gap_k_direction" in preds
    assert [n for n in preds if not describe(n).formula] == []
    ds = xr.Dataset({"sharpness_gap_predicted_unknown": ((), 1.0, {"long_name": "a prediction"})})
    assert unlabelled(ds) == ["sharpness_gap_predicted_unknown (no formula)"]
