r"""Shared pieces of the real-network study kinds (``real_eos``, ``real_gap``, ``eos_sgd_vs_baselines``).

Their configurations are validated by the study schema: the study's own keys plus every training
setting of `sdeeos.torch.TrainConfig` (`train_fields`), so the keys of a study file, the fields of the
dataclass and the options of ``sdeeos train`` are one list.  Importing this module imports torch.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time

import numpy as np
import xarray as xr

from .._errors import ParameterError
from .._labels import label_dataset
from .._provenance import provenance_attrs
from .._stationarity import StationarityVerdict, windowed_stationarity
from .._train_config import DATASETS, LOSSES, MODELS, TrainConfig
from ..plotting import save_figure
from ..torch import train
from ._schema import Field, StudyConfig

__all__ = ["batch_sizes_field", "gate_fields", "edge_gate", "check_gate_budget", "split_config", "batch_axis", "study_attrs",
           "run_over_batch_sizes", "combine_runs", "save_study", "study_settings", "check_settings", "TRAIN_KEYS"]

TRAIN_KEYS = frozenset(f.name for f in dataclasses.fields(TrainConfig))


def check_settings(settings: list) -> list:
    """``settings`` if each is a table {dataset, model, loss} of known values; else one line naming the key."""
    for s in settings:
        if not isinstance(s, dict) or set(s) != {"dataset", "model", "loss"}:
            raise ParameterError(f"each setting must be a table with keys dataset, model, loss; got {s!r}")
        for key, allowed in (("dataset", DATASETS), ("model", MODELS), ("loss", LOSSES)):
            if s[key] not in allowed:
                raise ParameterError(f"setting {key} must be one of {', '.join(allowed)}; got {s[key]!r}")
    return settings


def _check_batch_sizes(values: list) -> list:
    for v in values:
        if not (v == "full" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1)):
            raise ParameterError(f"each batch size must be \"full\" or a positive integer, got {v!r}")
    return values


def batch_sizes_field(default: list) -> Field:
    return Field("list[any]", default=default, min_len=1, check=_check_batch_sizes,
                 doc='batch sizes: "full" (GD, B = n) or positive integers')


def gate_fields(defaults: dict) -> dict:
    """Schema fields of the windowed stationarity gate (`sdeeos._stationarity.windowed_stationarity`) of a
    study whose runs start windows at a plateau start and are judged against :math:`2/\\eta`."""
    d = defaults
    return {
        "max_steps": Field("int", default=d["max_steps"], low=0,
                           doc="extend a non-stationary run window by window up to this many steps (0: the fewest "
                               "the gate can judge at, gate_span + 1 windows after the plateau start)"),
        "n_blocks": Field("int", default=d["n_blocks"], low=2, doc="stationarity gate: batch-means blocks per window"),
        "gate_span": Field("int", default=d["gate_span"], low=1,
                           doc="gate: also the drift from the window this many windows back to the last one "
                               "(1: neighbouring windows only; a slow drift passes those)"),
        "z_max": Field("float", default=d["z_max"], low=0.0, low_open=True, doc="gate: drift within this many SE"),
        "gap_fraction": Field("float", default=d["gap_fraction"], low=0.0, low_open=True,
                              doc="gate: drift below this fraction of the gap to 2/eta"),
        "edge_tolerance": Field("float", default=d["edge_tolerance"], low=0.0, low_open=True,
                                doc="gate: the gap is floored at this fraction of 2/eta"),
    }


def edge_gate(series, window: int, lr: float, cfg: dict) -> StationarityVerdict:
    r"""`windowed_stationarity` of a quantity judged against :math:`2/\eta` (``series`` from the plateau start on,
    ``window`` values a window), with the `gate_fields` of ``cfg``: drifts within ``z_max`` batch-means SE and
    below ``gap_fraction`` of :math:`\max(|2/\eta-\bar q|,\ \epsilon\,2/\eta)`, :math:`\bar q` over the last two
    windows (no gap test where they hold no finite value: the verdict is then "too few values")."""
    v = np.asarray(series, float)
    last_two = v[-2 * window:]
    gap = (max(abs(2 / lr - float(np.nanmean(last_two))), float(cfg["edge_tolerance"]) * 2 / lr)
           if np.isfinite(last_two).any() else None)
    return windowed_stationarity(v, window, span=int(cfg["gate_span"]), gap=gap, n_blocks=int(cfg["n_blocks"]),
                                 z_max=float(cfg["z_max"]), gap_fraction=float(cfg["gap_fraction"]))


def check_gate_budget(cfg: dict, fewest: int, window: str) -> None:
    """One line, before any work, where ``max_steps`` (0: ``fewest``) is too short for the gate to judge once."""
    if int(cfg["max_steps"]) and int(cfg["max_steps"]) < fewest:
        raise ParameterError(f"max_steps must be 0 or >= {fewest} (the plateau start plus gate_span + 1 = "
                             f"{int(cfg['gate_span']) + 1} windows of {window}: the fewest the stationarity gate "
                             f"can judge), got {cfg['max_steps']}")


def study_settings(cfg: StudyConfig) -> dict:
    """The validated study as the plain dict the runners take (less ``kind`` and ``name``)."""
    return {k: v for k, v in cfg.items() if k not in ("kind", "name")}


def save_study(ds: xr.Dataset, fig, out_dir: pathlib.Path, name: str) -> None:
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    label_dataset(ds).to_netcdf(out_dir / f"{name}.nc", engine="h5netcdf")
    save_figure(fig, out_dir, name, dpi=130)


def split_config(config: dict, study_keys: dict, name: str) -> tuple[dict, dict]:
    """Separate study-level keys (with defaults) from training settings; reject unknown keys."""
    config = dict(config)
    for key in ("study", "kind", "quick"):
        config.pop(key, None)
    study = {k: config.pop(k, v) for k, v in study_keys.items()}
    for key in ("title", "description"):  # free text allowed by every study file
        if key in config:
            study[key] = config.pop(key)
    unknown = sorted(set(config) - TRAIN_KEYS)
    if unknown:
        raise ParameterError(f"{name}: unknown config key(s) {unknown}; allowed: study keys "
                             f"{sorted(study_keys)} and training settings {sorted(TRAIN_KEYS)}")
    return study, config


def batch_axis(ax, values) -> None:
    """Log-scaled batch-size axis with the batch sizes themselves as tick labels."""
    ax.set_xscale("log")
    vals = sorted({int(v) for v in np.asarray(values).ravel()})
    ax.set_xticks(vals, [str(v) for v in vals])
    ax.minorticks_off()


def study_attrs(name, study, base, seconds) -> dict:
    attrs = {"study": name, "study_wall_time_s": float(seconds)}
    for k, v in {**study, **base}.items():
        if isinstance(v, (list, tuple, dict)):
            v = repr(v)
        attrs[k] = v
    return provenance_attrs(**attrs)


def run_over_batch_sizes(base: dict, batch_sizes, progress: bool, label: str, extra=None):
    runs = []
    n_train = None
    for b in batch_sizes:
        cfg = dict(base)
        if b in (None, "full", 0):
            cfg["optimizer"] = "gd"
            cfg["batch_size"] = None
        else:
            cfg["optimizer"] = "sgd"
            cfg["batch_size"] = int(b)
        if extra is not None:
            cfg.update(extra(b))
        t0 = time.perf_counter()
        ds = train(cfg, progress=progress, on_nonfinite="stop")
        n_train = ds.attrs["n_train_effective"]
        if progress:
            print(f"[{label}] B={ds.attrs['batch_size_effective']}: {time.perf_counter() - t0:.1f}s, "
                  f"stopped: {ds.attrs['stopped_reason']}", flush=True)
        runs.append(ds)
    return runs, n_train


def combine_runs(runs, dim="batch_size"):
    keys = [int(r.attrs["batch_size_effective"]) for r in runs]
    stripped = []
    for r in runs:
        r = r.copy()
        r.attrs = {}
        stripped.append(r)
    ds = xr.concat(stripped, dim=dim, join="outer", coords="different", compat="equals",
                   data_vars="all")
    return ds.assign_coords({dim: keys})


