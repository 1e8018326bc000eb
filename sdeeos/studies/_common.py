"""Pieces shared by the built-in studies: schema tables, run-length rules, storage and summaries."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import xarray as xr

from .._io import write_dataset
from .._train_config import TrainConfig, setting_type
from ._schema import Field, StudyConfig, Table

__all__ = [
    "RUN_TABLE", "OUTPUT_TABLE", "model_table", "batch_noise_table", "TauSteps", "sweep_kwargs",
    "sweep_store", "require_model", "write_outputs", "converged", "figure_formats", "tau_steps",
    "BACKENDS", "backend_field", "run_table", "train_fields",
]

#: The simulation backends a study's ``[run] backend`` may name.
BACKENDS = ("numba", "numpy", "cupy")


def backend_field() -> Field:
    return Field("str", default="numba", choices=BACKENDS, doc="simulation backend")


def run_table(**fields: Field) -> Table:
    """A ``[run]`` table of the toy studies: ``n_traj``, ``seed``, ``backend`` and the given fields."""
    base = {
        "n_traj": Field("int", default=256, low=1, doc="trajectories per ensemble"),
        "seed": Field("int", default=0, low=0, high=2**64 - 1),
        "backend": backend_field(),
    }
    return Table(doc="simulation settings", fields={**base, **fields})


def _positive(name):
    return Field("float", low=0.0, low_open=True, doc=f"model parameter {name} (> 0)")


def model_table(names=("eta", "alpha", "beta"), doc="reduced-model parameters at the reference point") -> Table:
    return Table(fields={n: _positive(n) for n in names}, required=True, doc=doc)


def batch_noise_table(required: bool = True) -> Table:
    return Table(required=required, doc="sigma_u**2 = sigma_1**2 * a(B, n) (sdeeos.theory.batch_noise)", fields={
        "n_data": Field("int", required=True, low=2, doc="number of training examples n"),
        "sigma_1": Field("float", required=True, low=0.0, low_open=True,
                         doc="projected single-example gradient noise std"),
        "sampling": Field("str", default="without_replacement",
                          choices=("without_replacement", "with_replacement", "bernoulli")),
    })


RUN_TABLE = Table(doc="simulation settings", fields={
    "n_traj": Field("int", default=256, low=1, doc="trajectories per point"),
    "duration_tau": Field("float", default=8.0, low=0.0, low_open=True,
                          doc="run length in units tau = 1/(eta**2 alpha) steps"),
    "burn_in_tau": Field("float", default=3.0, low=0.0, doc="burn-in in units of tau"),
    "max_steps": Field("int", default=4_000_000, low=2, doc="cap on the run length (burn-in scaled with it)"),
    "seed": Field("int", default=0, low=0, high=2**64 - 1),
    "backend": backend_field(),
    "record_every": Field("int", default=0, low=0, doc="record paths every K steps (0: none)"),
    "n_paths": Field("int", default=3, low=0, doc="sample paths kept per point"),
    "stationarity_check": Field("bool", default=True, doc="measure the drift between the window's halves"),
})

OUTPUT_TABLE = Table(doc="what is written", fields={
    "format": Field("str", default="netcdf", choices=("netcdf", "zarr"),
                    doc="netcdf for small results, zarr for large ones (written point by point)"),
    "figure_formats": Field("list[str]", default=["png", "pdf"], choices=("png", "pdf", "svg"), min_len=1),
})


def tau_steps(eta: float, alpha: float) -> float:
    r"""The reduced model's slow time unit :math:`\tau = 1/(\eta^2\alpha)` steps.

    In :math:`\tilde y=\eta y` the sharpening is :math:`\eta^2\alpha` per step; the gap relaxes over
    a few :math:`\tau` (2 tau = 20k steps at eta = 0.01, alpha = 1).
    """
    return 1.0 / (eta * eta * alpha)


class TauSteps:
    """``n_steps`` / ``burn_in`` rule: a duration in units of tau, capped at ``max_steps``."""

    def __init__(self, duration_tau: float, burn_in_tau: float, max_steps: int, what: str):
        self.duration, self.burn, self.cap, self.what = duration_tau, burn_in_tau, max_steps, what

    def __call__(self, p: dict) -> int:
        tau = tau_steps(p["eta"], p["alpha"])
        n = min(self.cap, max(64, int(math.ceil(self.duration * tau))))
        if self.what == "n_steps":
            return n
        return min(p["n_steps"] - 4, int(round(p["n_steps"] * self.burn / self.duration)))


def sweep_kwargs(cfg: StudyConfig, run: dict | None = None) -> dict:
    run = cfg["run"] if run is None else run
    if run["burn_in_tau"] >= run["duration_tau"]:
        raise cfg.error(("run", "burn_in_tau"), "[run] burn_in_tau must be smaller than duration_tau")
    return dict(
        n_traj=run["n_traj"], seed=run["seed"], backend=run["backend"],
        n_steps=TauSteps(run["duration_tau"], run["burn_in_tau"], run["max_steps"], "n_steps"),
        burn_in=TauSteps(run["duration_tau"], run["burn_in_tau"], run["max_steps"], "burn_in"),
        record_every=run["record_every"] or None, n_paths=run["n_paths"], path_variables=("sharpness",),
        stationarity_check=run["stationarity_check"],
    )


def sweep_store(cfg: StudyConfig, out_dir: Path, part: str) -> Path:
    ext = ".zarr" if cfg["output"]["format"] == "zarr" else ".nc"
    return out_dir / "sweeps" / f"{cfg['name']}__{part}{ext}"


def require_model(cfg: StudyConfig, names, swept=()) -> None:
    for n in names:
        if n not in cfg["model"] and n not in swept:
            raise cfg.error(("model",), f"[model] is missing the required key {n!r}"
                            + (" (give it here or sweep it in [grid])" if swept is not None else ""))


def converged(ds: xr.Dataset, rel: float = 0.02, z: float = 3.0) -> xr.DataArray:
    """Points whose window-half drift is within ``z`` standard errors or ``rel`` of the gap."""
    if "sharpness_drift" not in ds:
        ok = xr.ones_like(ds["sharpness_gap"], dtype=bool)
        ok.attrs = {"long_name": "no drift measured: every point counted as converged"}
        return ok
    d, se, gap = abs(ds["sharpness_drift"]), ds["sharpness_drift_stderr"], abs(ds["sharpness_gap"])
    ok = ((d <= z * se) | (d <= rel * gap)) & np.isfinite(ds["sharpness_gap"])
    # a flag has no units: xarray's comparisons keep the operands' attrs (units='1/step size')
    ok.attrs = {"long_name": f"window-half drift within {z:g} standard errors or {rel:.0%} of the gap"}
    return ok


def figure_formats(cfg: StudyConfig) -> list[str]:
    return list(cfg["output"]["figure_formats"])


def _clean(v):
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, (np.generic,)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, Path):
        return str(v)
    return v


def write_outputs(cfg: StudyConfig, out_dir: Path, ds: xr.Dataset, summary: dict, figures: list[Path]) -> xr.Dataset:
    """Write the study's dataset (with the summary in its attrs) and ``<name>_summary.json``; return it."""
    summary = _clean({"study": cfg["name"], "kind": cfg["kind"], "file": str(cfg.path), **summary,
                      "figures": [str(p) for p in figures]})
    ds = ds.copy()
    ds.attrs.update(study=cfg["name"], study_kind=cfg["kind"], study_file=str(cfg.path),
                    study_title=cfg.get("title", ""), study_description=cfg.get("description", ""),
                    )
    ext = ".zarr" if cfg["output"]["format"] == "zarr" else ".nc"
    path = out_dir / f"{cfg['name']}{ext}"
    summary["dataset"] = str(path)
    ds.attrs["study_summary"] = json.dumps(summary)
    write_dataset(ds, path)
    (out_dir / f"{cfg['name']}_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return ds


_FIELD_TYPES = {int: "int", float: "float", str: "str", bool: "bool"}


def train_fields(**overrides) -> dict[str, Field]:
    """One schema field per `TrainConfig` setting (its type, choices, range and help); ``overrides``
    replace some (e.g. a study's own default)."""
    out = {}
    for f in dataclasses.fields(TrainConfig):
        m = f.metadata
        out[f.name] = Field(_FIELD_TYPES[setting_type(f.name)], doc=m["help"], choices=m["choices"],
                            low=m["low"], high=m["high"], low_open=m["low_open"],
                            high_open=m["high_open"], check=m.get("check"))
    out.update(overrides)
    return out
