r"""Study ``batch_sharpness_anchor``: does batch sharpness settle at :math:`2/\eta` (Andreyev & Beneventano)?

Definition (identical to the reference code's default estimator and to
:func:`sdeeos.torch.batch_sharpness`): :math:`\mathrm{BS}=\mathbb E_B\big[g_B^\top H_Bg_B/\lVert g_B\rVert^2\big]`,
:math:`g_B,H_B` the gradient and Hessian of the *batch* mean loss, batches of size B drawn uniformly
without replacement, the mean of the ratio over ``bs_batches`` batches, with a 95 % Student-t
interval.  The loss convention (MSE :math:`\tfrac12\lVert f-e_y\rVert^2` summed over outputs, averaged over
examples) is the one used for training, so :math:`2/\eta` is the right reference whatever the scale.

Their regime: MSE, initial parameters scaled by ``init_scale`` (≈ 0.2 of PyTorch's default), SGD
trained until the training loss plateaus.  For each (η, B, seed): every ``every`` steps the training
loss, :math:`\lambda_{\max}` (warm-started Lanczos, full training set) and batch sharpness; on the last
``1 - plateau_start_fraction`` of ``n_steps`` (the window), plateau means.  Batch sharpness and
:math:`\lambda_{\max}` go through the stationarity gate (`sdeeos._stationarity.windowed_stationarity`): the
last window against the one before it and against the one ``gate_span`` windows before it (a slow drift
passes neighbouring windows); a run that fails is extended window by window up to ``max_steps``; the ratios
to :math:`2/\eta` are reported for stationary runs only (drift and verdict are stored for all).  Reported: BS/(2/η) and
:math:`\lambda_{\max}`/(2/η) with 95 % intervals over the plateau measurements (block means) and over seeds.
"""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import torch
import xarray as xr
from scipy import stats
from torch.func import grad

from .._errors import ParameterError
from .._provenance import provenance_attrs
from .._train_config import DATASETS, LOSSES, MODELS
from ._real import check_gate_budget, edge_gate, gate_fields, save_study
from ._schema import Field
from ..torch import FlatParams, HessianOperator, batch_sharpness_ratios, build_model, lanczos_top, load_data, loss_function

__all__ = ["SCHEMA", "run", "plot", "DEFAULTS", "batch_sharpness_ci"]

DEFAULTS = {
    "dataset": "digits", "model": "mlp-tanh", "loss": "mse", "n_train": 512, "width": 64, "depth": 2,
    "init_scale": 0.2, "lrs": [0.2, 0.4], "batch_sizes": [16, 64], "seeds": [0, 1, 2], "n_steps": 4000,
    "every": 100, "plateau_start_fraction": 0.5, "bs_batches": 16, "threads": 1, "title": "", "description": "",
    "max_steps": 0, "n_blocks": 3, "gate_span": 3, "z_max": 2.0, "gap_fraction": 0.1, "edge_tolerance": 0.05,
}


SCHEMA = {
    "dataset": Field("str", default=DEFAULTS["dataset"], choices=DATASETS, doc="data set"),
    "model": Field("str", default=DEFAULTS["model"], choices=MODELS, doc="network"),
    "loss": Field("str", default=DEFAULTS["loss"], choices=LOSSES, doc="loss"),
    "n_train": Field("int", default=DEFAULTS["n_train"], low=2, doc="training examples"),
    "width": Field("int", default=DEFAULTS["width"], low=1, doc="hidden width"),
    "depth": Field("int", default=DEFAULTS["depth"], low=1, doc="hidden layers"),
    "init_scale": Field("float", default=DEFAULTS["init_scale"], low=0.0, low_open=True,
                        doc="initial parameters times this (their regime: about 0.2)"),
    "lrs": Field("list[float]", default=DEFAULTS["lrs"], min_len=1, low=0.0, low_open=True, doc="step sizes eta"),
    "batch_sizes": Field("list[int]", default=DEFAULTS["batch_sizes"], min_len=1, low=2, doc="batch sizes (< n_train)"),
    "seeds": Field("list[int]", default=DEFAULTS["seeds"], min_len=1, low=0, doc="seeds"),
    "n_steps": Field("int", default=DEFAULTS["n_steps"], low=1, doc="SGD steps per run"),
    "every": Field("int", default=DEFAULTS["every"], low=1, doc="steps between measurements"),
    "plateau_start_fraction": Field("float", default=DEFAULTS["plateau_start_fraction"], low=0.0, high=1.0,
                                    low_open=True, high_open=True, doc="plateau = steps >= this fraction"),
    "bs_batches": Field("int", default=DEFAULTS["bs_batches"], low=2, doc="batches per batch-sharpness estimate"),
    "threads": Field("int", default=DEFAULTS["threads"], low=1, doc="torch threads"),
    **gate_fields(DEFAULTS),
}


def batch_sharpness_ci(flat, x, t, loss, theta, batch_size, n_batches, generator) -> tuple[float, float, np.ndarray]:
    """Mean of :math:`g_B^\\top H_Bg_B/\\lVert g_B\\rVert^2` over batches, its 95 % t half-width, the ratios."""
    r = batch_sharpness_ratios(flat, x, t, loss, theta, batch_size, n_batches=n_batches, generator=generator)
    half = float(stats.t.ppf(0.975, len(r) - 1) * r.std(ddof=1) / math.sqrt(len(r))) if len(r) > 1 else np.nan
    return float(r.mean()), half, r


def _block_ci(values, n_blocks=4):
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size < n_blocks:
        return (float(v.mean()) if v.size else np.nan), np.nan
    blocks = np.array([b.mean() for b in np.array_split(v, n_blocks)])
    return float(blocks.mean()), float(stats.t.ppf(0.975, n_blocks - 1) * blocks.std(ddof=1) / math.sqrt(n_blocks))


def _windows(cfg) -> tuple[int, int, int]:
    """(plateau start record, records per window, the fewest steps the gate can judge at: start + gate_span + 1
    windows)."""
    n_rec = int(cfg["n_steps"]) // int(cfg["every"]) + 1
    start = int(float(cfg["plateau_start_fraction"]) * n_rec)
    wlen = n_rec - start
    return start, wlen, (start + (int(cfg["gate_span"]) + 1) * wlen - 1) * int(cfg["every"])


def run(cfg, out_dir, *, progress: bool = True) -> xr.Dataset:
    """Run a validated study file (`SCHEMA`)."""
    return run_config({k: v for k, v in cfg.items() if k in DEFAULTS}, out_dir, progress=progress,
                      name=getattr(cfg, "name", "batch_sharpness_anchor"))


def run_config(config: dict, out_dir, *, progress: bool = True, name: str = "batch_sharpness_anchor") -> xr.Dataset:
    """Run the study from a plain dict of `DEFAULTS` keys; outputs ``<out_dir>/<name>.{nc,png,pdf}``."""
    t_start = time.perf_counter()
    unknown = set(config) - set(DEFAULTS)
    if unknown:
        raise ParameterError(f"unknown batch_sharpness_anchor keys {sorted(unknown)}; allowed: {sorted(DEFAULTS)}")
    cfg = {**DEFAULTS, **config}
    start, wlen, fewest = _windows(cfg)
    check_gate_budget(cfg, fewest, f"{wlen} records every {cfg['every']} steps")
    torch.set_num_threads(int(cfg["threads"]))
    data = load_data(cfg["dataset"], loss=cfg["loss"], n_train=int(cfg["n_train"]), dtype=torch.float64)
    x, t, n = data.x_train, data.targets_train, data.n_train
    lrs, bsz, seeds = [float(v) for v in cfg["lrs"]], [int(b) for b in cfg["batch_sizes"]], [int(s) for s in cfg["seeds"]]
    n_steps, every = int(cfg["n_steps"]), int(cfg["every"])
    max_steps = int(cfg["max_steps"]) or fewest
    n_rec = max_steps // every + 1
    shape = (len(lrs), len(bsz), len(seeds))
    rec = {k: np.full(shape + (n_rec,), np.nan) for k in ("loss", "sharpness", "batch_sharpness", "batch_sharpness_ci95")}
    gate = {f"{k}_{f}": np.full(shape, np.nan) for k in ("batch_sharpness", "sharpness") for f in
            ("drift", "drift_stderr", "stationary")}
    gate.update(stationary=np.full(shape, np.nan), steps_run=np.full(shape, np.nan), window_start=np.full(shape, np.nan))
    for (i, lr), (j, b), (m, seed) in itertools.product(enumerate(lrs), enumerate(bsz), enumerate(seeds)):
        net = build_model(cfg["model"], data.input_shape, data.n_classes, width=int(cfg["width"]),
                          depth=int(cfg["depth"]), seed=seed, dtype=torch.float64)
        flat = FlatParams(net)
        theta = flat.flat() * float(cfg["init_scale"])
        fn = loss_function(flat, x, t, cfg["loss"])
        gen = torch.Generator().manual_seed(100 + seed)
        bs_gen = torch.Generator().manual_seed(200 + seed)
        v = None
        t0 = time.perf_counter()
        for step in range(max_steps + 1):
            if step % every == 0:
                r = step // every
                rec["loss"][i, j, m, r] = float(fn(theta))
                op = HessianOperator(fn, theta)
                e = lanczos_top(op, op.dim, v0=v, tol=1e-4, max_iter=100)
                v = e.vector
                rec["sharpness"][i, j, m, r] = e.value
                bs, half, _ = batch_sharpness_ci(flat, x, t, cfg["loss"], theta, b, int(cfg["bs_batches"]), bs_gen)
                rec["batch_sharpness"][i, j, m, r] = bs
                rec["batch_sharpness_ci95"][i, j, m, r] = half
                if r + 1 - start >= wlen and (r + 1 - start) % wlen == 0:  # a window ends: the gate
                    verdicts = {k: edge_gate(rec[k][i, j, m, start:r + 1], wlen, lr, cfg)
                                for k in ("batch_sharpness", "sharpness")}
                    done = all(v.stationary for v in verdicts.values())
                    if done or step + wlen * every > max_steps:  # stationary, or the next window would pass the budget
                        for k, v in verdicts.items():
                            gate[f"{k}_drift"][i, j, m], gate[f"{k}_drift_stderr"][i, j, m] = v.drift, v.drift_stderr
                            gate[f"{k}_stationary"][i, j, m] = float(v.stationary)
                        gate["stationary"][i, j, m] = float(done)
                        gate["steps_run"][i, j, m] = step
                        gate["window_start"][i, j, m] = r + 1 - wlen
                        break
            idx = torch.randperm(n, generator=gen)[:b]
            theta = (theta - lr * grad(loss_function(flat, x[idx], t[idx], cfg["loss"]))(theta)).detach()
            if not bool(torch.isfinite(theta).all()):
                break
        if progress:
            last = int(np.flatnonzero(np.isfinite(rec["loss"][i, j, m]))[-1])
            print(f"[batch_sharpness_anchor] eta={lr} B={b} seed={seed}: loss {rec['loss'][i, j, m, last]:.4g}, "
                  f"BS/(2/eta) {rec['batch_sharpness'][i, j, m, last] * lr / 2:.3f} ({time.perf_counter() - t0:.0f}s), "
                  f"stationary: {gate['stationary'][i, j, m] == 1} at step {gate['steps_run'][i, j, m]:.0f}", flush=True)
    steps = np.arange(n_rec) * every
    dims = ("eta", "batch_size", "seed")
    ds = xr.Dataset({k: (dims + ("step",), v) for k, v in rec.items()},
                    coords={"eta": lrs, "batch_size": bsz, "seed": seeds, "step": steps})
    window = np.full(shape + (n_rec,), False)
    for at in np.ndindex(shape):
        if np.isfinite(gate["window_start"][at]):
            w = int(gate["window_start"][at])
            window[at + (slice(w, w + wlen),)] = True
    for key in ("batch_sharpness", "sharpness", "loss"):
        mean = np.full(shape, np.nan)
        half = np.full(shape, np.nan)
        for at in np.ndindex(shape):
            mean[at], half[at] = _block_ci(rec[key][at][window[at]])
        ds[f"plateau_{key}"] = (dims, mean)
        ds[f"plateau_{key}_ci95"] = (dims, half)
    for k, v in gate.items():
        ds[k] = (dims, v)
    two = np.asarray(lrs)[:, None, None] / 2
    stat = gate["stationary"] == 1  # never compared with 2/eta where the run is not stationary
    ds["bs_over_2_over_eta"] = (dims, np.where(stat, ds.plateau_batch_sharpness.values * two, np.nan))
    ds["lmax_over_2_over_eta"] = (dims, np.where(stat, ds.plateau_sharpness.values * two, np.nan))
    late = np.where(window, rec["loss"], np.nan)
    rel = np.full(shape, np.nan)
    for at in np.ndindex(shape):
        v = late[at][window[at]]
        if v.size >= 2:
            rel[at] = (v[v.size - v.size // 2:].mean() - v[:v.size // 2].mean()) / v.mean()
    ds["loss_plateau_relative_drift"] = (dims, rel)
    _describe(ds)
    ds.attrs = provenance_attrs(study="batch_sharpness_anchor", study_wall_time_s=time.perf_counter() - t_start,
                                config=repr(cfg), definition="mean over batches (without replacement) of "
                                "g_B^T H_B g_B / |g_B|^2; 95% t-intervals", reference="2/eta")
    save_study(ds, plot(ds), out_dir, name)
    return ds


_LONG_NAMES = {
    "loss": ("training loss, every `every` steps", "loss"),
    "sharpness": ("lambda_max of the training loss, every `every` steps", "loss/parameter^2"),
    "batch_sharpness": ("batch sharpness E_B[g_B.H_B g_B/|g_B|^2], every `every` steps", "loss/parameter^2"),
    "batch_sharpness_ci95": ("95 % t half-width of that batch sharpness over its batches", "loss/parameter^2"),
    "plateau_batch_sharpness": ("batch sharpness, mean over the last window", "loss/parameter^2"),
    "plateau_sharpness": ("lambda_max, mean over the last window", "loss/parameter^2"),
    "plateau_loss": ("training loss, mean over the last window", "loss"),
    "batch_sharpness_drift": ("drift of batch sharpness from the window before the last to the last",
                              "loss/parameter^2"),
    "batch_sharpness_drift_stderr": ("batch-means SE of that drift", "loss/parameter^2"),
    "batch_sharpness_stationary": ("batch sharpness stationary on the last windows (1) or not (0)", "1"),
    "sharpness_drift": ("drift of lambda_max from the window before the last to the last", "loss/parameter^2"),
    "sharpness_drift_stderr": ("batch-means SE of that drift", "loss/parameter^2"),
    "sharpness_stationary": ("lambda_max stationary on the last windows (1) or not (0)", "1"),
    "stationary": ("run stationary: batch sharpness and lambda_max both pass the gate", "1"),
    "steps_run": ("steps run: the plateau start, then windows until stationary or max_steps", "steps"),
    "window_start": ("record index where the last window starts", "1"),
    "bs_over_2_over_eta": ("plateau batch sharpness over 2/eta (stationary runs only)", "1"),
    "lmax_over_2_over_eta": ("plateau lambda_max over 2/eta (stationary runs only)", "1"),
    "loss_plateau_relative_drift": ("relative drift of the loss over the last window", "1"),
}


def _describe(ds: xr.Dataset) -> None:
    for k, (name, units) in _LONG_NAMES.items():
        ds[k].attrs.update(long_name=name, units=units)
    for k in ("plateau_batch_sharpness", "plateau_sharpness", "plateau_loss"):
        ds[f"{k}_ci95"].attrs.update(long_name=f"95 % block-means half-width of {k}", units=ds[k].attrs["units"])


def plot(ds: xr.Dataset):
    """Batch sharpness and λ_max (in units of 2/η) and the training loss along training, per (η, B)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for (i, lr), (j, b) in itertools.product(enumerate(ds.eta.values), enumerate(ds.batch_size.values)):
        c = f"C{i * ds.sizes['batch_size'] + j}"
        bs = ds.batch_sharpness.isel(eta=i, batch_size=j).mean("seed") * lr / 2
        lm = ds.sharpness.isel(eta=i, batch_size=j).mean("seed") * lr / 2
        axes[0].plot(ds.step, bs, "-", color=c, label=f"BS, η={lr}, B={b}")
        axes[0].plot(ds.step, lm, ":", color=c, label=f"λ_max, η={lr}, B={b}")
        axes[1].plot(ds.step, ds.loss.isel(eta=i, batch_size=j).mean("seed"), color=c, label=f"η={lr}, B={b}")
    axes[0].axhline(1.0, color="k", lw=0.8)
    axes[0].set_ylabel("value × η/2 (1 = 2/η)")
    axes[0].set_xlabel("step")
    axes[0].legend(fontsize=6)
    axes[1].set_yscale("log")
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("training loss")
    axes[1].legend(fontsize=6)
    fig.tight_layout()
    return fig
