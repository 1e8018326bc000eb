r"""Study ``regime``: the measured SGD sharpness gap on real networks against the 1-D and k-direction models.

For every setting (data set × network × loss), step size η, seed and batch size B (``"full"`` = GD),
one run of plain GD/SGD (batches uniformly without replacement, as in :mod:`sdeeos.torch._train`),
float64 throughout.  On the plateau window (the last ``1 - plateau_start_fraction`` of ``n_steps``; if
:math:`\lambda_1` there is not stationary by the gate of `sdeeos._stationarity` -- the drift from the
window before to the last one within ``z_max`` batch-means SE and below ``gap_fraction`` of
:math:`\max(|2/\eta-\bar S|,\epsilon\,2/\eta)`, and the same for the last window against the one
``gate_span`` windows before it (a slow drift passes neighbouring windows) -- the run is extended
window by window up to ``max_steps`` and judged on its last windows; the drift, its standard error and
the verdict are stored as ``sharpness_drift``, ``sharpness_drift_stderr``, ``sharpness_stationary``):

* :math:`\lambda_1,\lambda_2` every ``sharpness_every`` steps (warm-started block Lanczos, k = 2);
* at ``n_snapshots`` snapshots: the number of the top-k eigenvalues above :math:`2/\eta`, α₁ with
  only ``k_scan`` directions projected out (how α depends on k), the k-direction constants
  (:func:`sdeeos.torch.edge_constants`:
  :math:`\lambda_j`, G, :math:`\alpha_j` at :math:`\theta^\dagger` with the top-k eigenspace projected out,
  :math:`\Sigma_1`), the gradient-flow sharpening rate (:func:`sdeeos.torch.gradient_flow_rate`),
  batch sharpness, and the noise kernel K (MSE only).

Per run: the measured gaps :math:`2/\eta-\bar\lambda_1` and :math:`\bar S_{\rm GD}-\bar\lambda_1` (same seed
and η), and the predictions, each naming its α:

* ``pred_1d_kproj``: :math:`\eta G_{11}\sigma_1^2/(4\alpha_1)` with :math:`\alpha_1` from the top-k projection;
* ``pred_1d_gf``: the same with α = the gradient-flow rate;
* ``pred_k``: the k-direction closure's top-eigenvalue gap :math:`\min_j\Delta S_j` (closure gap per
  direction, :mod:`sdeeos.theory.multi_direction`), on the active set of directions with
  :math:`(G^{-1}\alpha)_j>0` (directions that cannot sit at the edge are dropped one at a time);
  ``pred_k_dir1``: that model's gap of direction 1, :math:`\approx\eta\beta_{{\rm eff},1}\sigma_1^2/(4\alpha_1)`.

Across seeds: means with 95 % Student-t confidence intervals; the ratios measured/predicted only
over stationary runs.  The regime label per (setting, η, B): ``"not stationary"`` where a seed's
run is not, ``"nonlinear"`` where :math:`\eta\Delta S>0.5` (outside the small-gap expansion), ``"stochastic-edge"``
where the trace form of K (``K_trace``; the full K diverges at the deterministic edge) is ≥ 0.5, else ``"1-D"``/``"k-direction"``/``"neither"`` by which prediction's 95 % interval of the
ratio measured/predicted contains 1 (within a factor 1.5 when the interval is wider).

The short names above are those of the formulas; the dataset names say what each field is
(`OUTPUT_NAMES`, `output_name`: ``pred_k`` is written as ``predicted_gap_k_direction``, across-seed
statistics end in ``_seed_mean`` and ``_seed_ci95``; docs/datasets.md).
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
from ..theory import multi_direction as md
from ._real import batch_sizes_field, check_gate_budget, check_settings, edge_gate, gate_fields, save_study
from ._schema import Field
from ..torch import (
    EigenSolveError,
    FlatParams,
    HessianOperator,
    TopKResult,
    batch_sharpness,
    build_model,
    edge_constants,
    gradient_flow_rate,
    load_data,
    loss_function,
    noise_kernel,
    per_example_loss_function,
    top_k_eigenpairs,
)

__all__ = ["SCHEMA", "run", "plot", "DEFAULTS", "k_direction_gap"]

DEFAULTS = {
    "settings": [{"dataset": "mnist1d", "model": "mlp-tanh", "loss": "mse"}],
    "batch_sizes": ["full", 16, 64, 256],
    "lrs": [0.1, 0.2],
    "seeds": [0, 1, 2],
    "n_train": 500,
    "width": 64,
    "depth": 2,
    "channels": 8,
    "n_steps": 3000,
    "plateau_start_fraction": 0.5,
    "sharpness_every": 25,
    "n_snapshots": 3,
    "k": 16,
    "k_scan": [1, 4],
    "gf_steps": 60,
    "gf_step_fraction": 0.2,
    "bs_batches": 8,
    "kernel_top": 8,
    "init_scale": 1.0,
    "eig_tol": 1e-4,
    "max_steps": 0,
    "n_blocks": 3,
    "gate_span": 3,
    "z_max": 2.0,
    "gap_fraction": 0.1,
    "edge_tolerance": 0.05,
    "threads": 1,
    "title": "",
    "description": "",
}


def _check(config: dict) -> dict:
    unknown = set(config) - set(DEFAULTS)
    if unknown:
        raise ParameterError(f"unknown regime study keys {sorted(unknown)}; allowed: {sorted(DEFAULTS)}")
    cfg = {**DEFAULTS, **config}
    if int(cfg["k"]) < 1:
        raise ParameterError(f"k must be >= 1, got {cfg['k']}")
    if any(int(q) < 1 for q in cfg["k_scan"]):
        raise ParameterError(f"k_scan must hold integers >= 1, got {cfg['k_scan']}")
    for b in cfg["batch_sizes"]:
        if b != "full" and not 1 <= int(b) < int(cfg["n_train"]):
            raise ParameterError(f"batch_sizes must be 'full' or integers in [1, n_train) = [1, {cfg['n_train']}), "
                                 f"got {b!r} (B = n_train is GD)")
    if "full" not in cfg["batch_sizes"]:
        raise ParameterError("batch_sizes must include 'full' (the GD reference S_GD)")
    check_gate_budget(cfg, _fewest_steps(cfg), f"{int(cfg['n_steps']) - _plateau_start(cfg)} steps")
    return cfg


def _plateau_start(cfg) -> int:
    return int(cfg["plateau_start_fraction"] * int(cfg["n_steps"]))


def _fewest_steps(cfg) -> int:
    """Steps until the gate can first judge: the plateau start and ``gate_span + 1`` windows."""
    start = _plateau_start(cfg)
    return start + (int(cfg["gate_span"]) + 1) * (int(cfg["n_steps"]) - start)


SCHEMA = {
    "settings": Field("list[any]", default=DEFAULTS["settings"], min_len=1, check=check_settings,
                      doc="tables {dataset, model, loss}"),
    "batch_sizes": batch_sizes_field(DEFAULTS["batch_sizes"]),
    "lrs": Field("list[float]", default=DEFAULTS["lrs"], min_len=1, low=0.0, low_open=True, doc="step sizes eta"),
    "seeds": Field("list[int]", default=DEFAULTS["seeds"], min_len=1, low=0, doc="seeds (>= 2 for intervals)"),
    "n_train": Field("int", default=DEFAULTS["n_train"], low=2, doc="training examples"),
    "width": Field("int", default=DEFAULTS["width"], low=1, doc="hidden width"),
    "depth": Field("int", default=DEFAULTS["depth"], low=1, doc="hidden layers"),
    "channels": Field("int", default=DEFAULTS["channels"], low=1, doc="CNN channels"),
    "n_steps": Field("int", default=DEFAULTS["n_steps"], low=2, doc="training steps per run"),
    "plateau_start_fraction": Field("float", default=DEFAULTS["plateau_start_fraction"], low=0.0, high=1.0,
                                    low_open=True, high_open=True, doc="plateau = steps >= this fraction of n_steps"),
    "sharpness_every": Field("int", default=DEFAULTS["sharpness_every"], low=1, doc="steps between lambda_1 measurements"),
    "n_snapshots": Field("int", default=DEFAULTS["n_snapshots"], low=1, doc="plateau snapshots for the constants"),
    "k": Field("int", default=DEFAULTS["k"], low=1, doc="edge directions projected out for alpha"),
    "k_scan": Field("list[int]", default=DEFAULTS["k_scan"], low=1, doc="alpha_1 also with these k"),
    "gf_steps": Field("int", default=DEFAULTS["gf_steps"], low=1, doc="steps of the gradient-flow continuation"),
    "gf_step_fraction": Field("float", default=DEFAULTS["gf_step_fraction"], low=0.0, high=1.0, low_open=True,
                              doc="its step as a fraction of eta"),
    "bs_batches": Field("int", default=DEFAULTS["bs_batches"], low=2, doc="batches per batch-sharpness estimate"),
    "kernel_top": Field("int", default=DEFAULTS["kernel_top"], low=1, doc="top Gauss-Newton eigenvalues for K"),
    "init_scale": Field("float", default=DEFAULTS["init_scale"], low=0.0, low_open=True, doc="initial parameters scale"),
    "eig_tol": Field("float", default=DEFAULTS["eig_tol"], low=0.0, low_open=True, doc="eigensolver tolerance"),
    **gate_fields(DEFAULTS),
    "threads": Field("int", default=DEFAULTS["threads"], low=1, doc="torch threads"),
}


def k_direction_gap(eta, alpha, sigma_sq, G, *, which: str = "top") -> tuple[float, int]:
    """Closure gap on the active set (``(G^-1 alpha)_j > 0``): ``which="top"`` the top eigenvalue's,
    ``min_j DeltaS_j``; ``which="first"`` direction 1's (NaN if direction 1 left the active set).

    Returns ``(gap, n_active)``; NaN when no direction has a stationary state.
    """
    alpha = np.asarray(alpha, float)
    sig = np.sqrt(np.clip(np.asarray(sigma_sq, float), 0, None))
    G = np.asarray(G, float)
    active = list(range(len(alpha)))
    while active:
        sub = np.ix_(active, active)
        try:
            m = md.x_sq_stationary(alpha[active], G[sub])
        except ParameterError:
            return float("nan"), 0
        if np.all(m > 0):
            gaps = md.gap_exact(eta, alpha[active], sig[active], G[sub], outside="nan")
            if which == "first":
                return (float(gaps[0]) if active[0] == 0 else float("nan")), len(active)
            return float(np.nanmin(gaps)) if np.any(np.isfinite(gaps)) else float("nan"), len(active)
        active.pop(int(np.argmin(m)))
    return float("nan"), 0


def _one_run(setting, lr, seed, b, cfg, data, progress):
    dtype = torch.float64
    n = data.n_train
    net = build_model(setting["model"], data.input_shape, data.n_classes, width=int(cfg["width"]),
                      depth=int(cfg["depth"]), channels=int(cfg["channels"]), seed=int(seed), dtype=dtype)
    flat = FlatParams(net)
    theta = flat.flat() * float(cfg["init_scale"])
    x, t = data.x_train, data.targets_train
    loss = setting["loss"]
    fn = loss_function(flat, x, t, loss)
    pfn = per_example_loss_function(flat, x, t, loss)
    g_full = grad(fn)
    gen = torch.Generator().manual_seed(1000 + int(seed))
    eig_gen = torch.Generator().manual_seed(7)
    n_steps = int(cfg["n_steps"])
    start = _plateau_start(cfg)
    every = int(cfg["sharpness_every"])
    window = n_steps - start
    max_steps = int(cfg["max_steps"]) or _fewest_steps(cfg)
    snap_offsets = set(np.linspace(0, window, int(cfg["n_snapshots"]) + 1)[1:].round().astype(int).tolist())
    # lambda_1 measurements per window after the first (whose step `start` is one more, in front)
    per_window = len({o for o in range(1, window + 1) if o % every == 0} | snap_offsets)
    batch = None if b == "full" else int(b)
    v0 = None
    k = int(cfg["k"])
    t0 = time.perf_counter()
    w0 = start  # the current window is the steps (w0, w0 + window]; the first one also measures step `start`
    lam1, lam2, loss_tr, snap_thetas = [], [], [], []
    series = []  # lambda_1 from `start` on, across windows, NaN where a solve failed: what the gate reads
    verdict = None
    for step in range(max_steps + 1):
        off = step - w0
        if step >= start and (off % every == 0 or off in snap_offsets) and (off > 0 or w0 == start):  # 0: carried over
            op = HessianOperator(fn, theta)
            try:
                e = top_k_eigenpairs(op, op.dim, 2, v0=v0, tol=float(cfg["eig_tol"]), max_hvp=300, dtype=dtype,
                                     generator=eig_gen)
            except EigenSolveError as exc:  # recorded, not averaged: this point's sharpness is missing
                if progress:
                    print(f"  step {step}: {exc}")
                e = None
            series.append(e.values[0] if e is not None else np.nan)
            if e is not None:
                v0 = e.vectors
                lam1.append(e.values[0])
                lam2.append(e.values[1])
                loss_tr.append(float(fn(theta)))
            if off in snap_offsets:
                snap_thetas.append(theta.clone())
        if off == window:
            verdict = edge_gate(series, per_window, lr, cfg)
            if verdict.stationary or step + window > max_steps:
                break
            w0 += window  # not stationary: extend by one window, judged with the windows before it
            # its first point is this step's measurement (same parameters)
            lam1, lam2, loss_tr, snap_thetas = lam1[-1:], lam2[-1:], loss_tr[-1:], []
        if batch is None:
            gstep = g_full(theta)
        else:
            idx = torch.randperm(n, generator=gen)[:batch]
            gstep = grad(loss_function(flat, x[idx], t[idx], loss))(theta)
        theta = (theta - lr * gstep).detach()
        if not bool(torch.isfinite(theta).all()):
            return {"diverged": True}
    snap_rows = [_snapshot(fn, pfn, flat, x, t, th, lr, batch or n, n, k, cfg, loss, eig_gen) for th in snap_thetas]
    out = {"diverged": False, "lam1": np.asarray(lam1), "lam2": np.asarray(lam2), "seconds": time.perf_counter() - t0,
           "final_loss": float(fn(theta)), "steps_run": step, "verdict": verdict}
    keys = snap_rows[0].keys() if snap_rows else []
    for key in keys:
        vals = [r[key] for r in snap_rows]
        out[key] = np.mean(np.stack([np.asarray(v, float) for v in vals]), axis=0)
    return out


def _snapshot(fn, pfn, flat, x, t, theta, lr, b, n, k, cfg, loss, gen):
    ec = edge_constants(fn, pfn, theta, k, tol=float(cfg["eig_tol"]), max_hvp=600, generator=gen)
    sig = ec.sigma_sq(b) if b < n else np.zeros(k)
    row = {"alpha_k": ec.alpha, "G": ec.coupling, "sigma_sq": sig, "lam_k": ec.values, "x_sq": ec.x**2,
           "edge_hvp": ec.n_hvp, "edge_seconds": ec.seconds, "alpha_1proj": ec.alpha_one_direction,
           "noise_corr12": ec.noise_correlation[0, 1] if k > 1 else np.nan,
           # the model's exact identity G E[x^2] = 2 alpha, direction 1, at this snapshot (x_j = u_j.(theta - dagger))
           "id_lhs": float(ec.coupling[0] @ ec.x**2), "id_rhs": float(2 * ec.alpha[0])}
    for q in cfg["k_scan"]:
        row[f"alpha_k{int(q)}"] = float(edge_constants(fn, pfn, theta, int(q), tol=float(cfg["eig_tol"]), max_hvp=600,
                                                      generator=gen).alpha[0])
    row["n_above_2_over_eta"] = float(np.sum(ec.values > 2 / lr))
    eig = TopKResult(values=ec.values, vectors=ec.vectors, residuals=ec.residuals, n_hvp=0, n_blocks=0, converged=True)
    gf = gradient_flow_rate(fn, theta, eig, lr, step=float(cfg["gf_step_fraction"]) * lr, n_steps=int(cfg["gf_steps"]),
                            n_points=5, tol=1e-6, generator=gen)
    row.update(alpha_gf=gf["rate"], alpha_gf_se=gf["rate_stderr"], gf_hvp=gf["n_hvp"], gf_seconds=gf["seconds"])
    if b < n:
        bs, bs_se = batch_sharpness(flat, x, t, loss, theta, b, n_batches=int(cfg["bs_batches"]), generator=gen)
    else:
        bs, bs_se = np.nan, np.nan
    row.update(batch_sharpness=bs)
    if loss == "mse" and b < n:
        K = noise_kernel(flat, x, theta, lr, b, n_top=int(cfg["kernel_top"]), generator=gen)
        row.update(K_lower=K["K_lower"], K_upper=K["K_upper"], K_trace=K["K_trace"])
    else:
        row.update(K_lower=np.nan, K_upper=np.nan, K_trace=np.nan)
    return row


def _ci(values):
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return np.nan, np.nan
    if v.size == 1:
        return float(v[0]), np.nan
    half = stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size)
    return float(v.mean()), float(half)


def run(cfg, out_dir, *, progress: bool = True) -> xr.Dataset:
    """Run a validated study file (`SCHEMA`; the ``[quick]`` overrides are applied by the loader)."""
    return run_config({k: v for k, v in cfg.items() if k in DEFAULTS}, out_dir, progress=progress,
                      name=getattr(cfg, "name", "regime"), quick=bool(getattr(cfg, "quick", False)))


def run_config(config: dict, out_dir, *, progress: bool = True, name: str = "regime",
               quick: bool = False) -> xr.Dataset:
    """Run the study from a plain dict of `DEFAULTS` keys; outputs ``<out_dir>/<name>.{nc,png,pdf}``."""
    t_start = time.perf_counter()
    cfg = _check(config)
    torch.set_num_threads(int(cfg["threads"]))
    settings = cfg["settings"]
    bsz = [str(b) for b in cfg["batch_sizes"]]
    lrs = [float(v) for v in cfg["lrs"]]
    seeds = [int(s) for s in cfg["seeds"]]
    names = [f"{s['dataset']}/{s['model']}/{s['loss']}" for s in settings]
    shape = (len(settings), len(lrs), len(bsz), len(seeds))
    fields = ["S", "lam2", "gap_2eta", "gap_gd", "pred_1d_kproj", "pred_1d_gf", "pred_k", "pred_k_dir1", "n_active", "alpha_kproj",
              "alpha_gf", "alpha_gf_se", "alpha_1proj", "G11", "G12_over_G11", "sigma1_sq", "eta_gap", "lam12",
              "K_lower", "K_upper", "K_trace", "batch_sharpness", "noise_corr12", "edge_hvp", "edge_seconds",
              "gf_hvp", "gf_seconds", "run_seconds", "final_loss", "diverged", "S_drift", "S_drift_stderr",
              "S_stationary", "steps_run", "identity_Gx2_1",
              "identity_2alpha_1", "n_above_2_over_eta"] + [f"alpha_k{int(q)}" for q in cfg["k_scan"]]
    arr = {f: np.full(shape, np.nan) for f in fields}
    for (i, s), (j, lr), (m, seed) in itertools.product(enumerate(settings), enumerate(lrs), enumerate(seeds)):
        data = load_data(s["dataset"], loss=s["loss"], n_train=int(cfg["n_train"]), dtype=torch.float64)
        runs = {}
        for b in bsz:
            r = _one_run(s, lr, seed, b, cfg, data, progress)
            runs[b] = r
            if progress:
                print(f"[regime] {names[i]} eta={lr} seed={seed} B={b}: "
                      + ("diverged" if r["diverged"] else f"S={np.mean(r['lam1']):.3f} ({r['seconds']:.0f}s)"),
                      flush=True)
        s_gd = np.mean(runs["full"]["lam1"]) if "full" in runs and not runs["full"]["diverged"] else np.nan
        for q, b in enumerate(bsz):
            r = runs[b]
            at = (i, j, q, m)
            arr["diverged"][at] = float(r["diverged"])
            if r["diverged"]:
                continue
            S = float(np.mean(r["lam1"]))
            arr["S_drift"][at] = r["verdict"].drift
            arr["S_drift_stderr"][at] = r["verdict"].drift_stderr
            arr["S_stationary"][at] = float(r["verdict"].stationary)
            arr["steps_run"][at] = r["steps_run"]
            arr["S"][at] = S
            arr["lam2"][at] = float(np.mean(r["lam2"]))
            arr["lam12"][at] = float(np.mean(r["lam1"] - r["lam2"]))
            arr["gap_2eta"][at] = 2 / lr - S
            arr["gap_gd"][at] = s_gd - S
            arr["eta_gap"][at] = lr * (2 / lr - S)
            arr["run_seconds"][at] = r["seconds"]
            arr["final_loss"][at] = r["final_loss"]
            if "alpha_k" not in r:
                continue
            a1, G, sig = float(r["alpha_k"][0]), r["G"], r["sigma_sq"]
            arr["alpha_kproj"][at] = a1
            arr["alpha_1proj"][at] = float(r["alpha_1proj"])
            arr["alpha_gf"][at] = float(r["alpha_gf"])
            arr["alpha_gf_se"][at] = float(r["alpha_gf_se"])
            arr["G11"][at] = float(G[0, 0])
            arr["G12_over_G11"][at] = float(G[0, 1] / G[0, 0]) if G.shape[0] > 1 else np.nan
            arr["sigma1_sq"][at] = float(sig[0])
            arr["identity_Gx2_1"][at] = float(r["id_lhs"])
            arr["identity_2alpha_1"][at] = float(r["id_rhs"])
            arr["n_above_2_over_eta"][at] = float(r["n_above_2_over_eta"])
            for q in cfg["k_scan"]:
                arr[f"alpha_k{int(q)}"][at] = float(r[f"alpha_k{int(q)}"])
            for key in ("K_lower", "K_upper", "K_trace", "batch_sharpness", "noise_corr12", "edge_hvp",
                        "edge_seconds", "gf_hvp", "gf_seconds"):
                arr[key][at] = float(r[key])
            if b != "full":
                lead = lr * G[0, 0] * sig[0] / 4
                arr["pred_1d_kproj"][at] = lead / a1 if a1 > 0 else np.nan
                arr["pred_1d_gf"][at] = lead / r["alpha_gf"] if r["alpha_gf"] > 0 else np.nan
                gk, na = k_direction_gap(lr, r["alpha_k"], sig, G)
                arr["pred_k"][at] = gk
                arr["n_active"][at] = na
                arr["pred_k_dir1"][at] = k_direction_gap(lr, r["alpha_k"], sig, G, which="first")[0]
    dims = ("setting", "eta", "batch_size", "seed")
    coords = {"setting": names, "eta": lrs, "batch_size": bsz, "seed": seeds}
    ds = xr.Dataset({f: (dims, v) for f, v in arr.items()}, coords=coords)
    # across seeds: mean and 95 % CI half-width
    for f in ("gap_2eta", "gap_gd", "pred_1d_kproj", "pred_1d_gf", "pred_k", "pred_k_dir1", "eta_gap", "lam12", "K_lower",
              "K_upper", "K_trace", "batch_sharpness", "S", "alpha_kproj", "identity_Gx2_1", "identity_2alpha_1",
              "alpha_gf", "alpha_1proj", "G12_over_G11", "n_above_2_over_eta",
              "S_drift", "noise_corr12") + tuple(f"alpha_k{int(q)}" for q in cfg["k_scan"]):
        mean = np.full(shape[:3], np.nan)
        half = np.full(shape[:3], np.nan)
        for at in np.ndindex(shape[:3]):
            mean[at], half[at] = _ci(arr[f][at])
        ds[f + "_mean"] = (dims[:3], mean)
        ds[f + "_ci95"] = (dims[:3], half)
    for p in ("pred_1d_kproj", "pred_1d_gf", "pred_k", "pred_k_dir1"):
        for ref in ("gap_2eta", "gap_gd"):
            # never compared with the stationary theory where the run is not stationary
            ratio = np.where(arr["S_stationary"] == 1, arr[ref] / arr[p], np.nan)
            mean = np.full(shape[:3], np.nan)
            half = np.full(shape[:3], np.nan)
            for at in np.ndindex(shape[:3]):
                mean[at], half[at] = _ci(ratio[at])
            ds[f"ratio_{ref}_to_{p}_mean"] = (dims[:3], mean)
            ds[f"ratio_{ref}_to_{p}_ci95"] = (dims[:3], half)
    ds = ds.rename({v: output_name(v) for v in ds.data_vars})
    for f, (long_name, units) in {
            "S_drift": ("drift of lambda_1 from the window before the last to the last (stationarity gate)",
                        "loss/parameter^2"),
            "S_drift_stderr": ("batch-means standard error of that drift", "loss/parameter^2"),
            "S_stationary": ("1 if lambda_1 is stationary on the last windows (gate), else 0", "1"),
            "steps_run": ("steps run: the plateau start, then windows until stationary or max_steps", "step")}.items():
        ds[_out(f)].attrs.update(long_name=long_name, units=units)
    ds["regime"] = (dims[:3], _labels(ds))
    ds.attrs = provenance_attrs(study=name, study_wall_time_s=time.perf_counter() - t_start,
                                config=repr({k: v for k, v in cfg.items()}), quick=int(bool(quick)),
                                alpha_used="predicted_gap_1d_topk_projected_alpha: alpha_1 at theta_dagger with the "
                                "top-k eigenspace projected out of grad L; predicted_gap_1d_gradient_flow_alpha: the "
                                "gradient-flow rate dlambda_max/dt; predicted_gap_k_direction: alpha_j (top-k "
                                "projected) for every direction",
                                gap_definitions="gap_from_2_over_eta = 2/eta - mean lambda_1 (plateau); "
                                "gap_from_gd_sharpness = S_GD - mean lambda_1 (same seed and eta)")
    save_study(ds, plot(ds), out_dir, name)
    return ds


#: the dataset's name of each per-run field (computed under the short names of the formulas)
OUTPUT_NAMES = {
    "S": "sharpness", "lam2": "second_eigenvalue", "lam12": "top_eigenvalue_gap",
    "gap_2eta": "gap_from_2_over_eta", "gap_gd": "gap_from_gd_sharpness",
    "pred_1d_kproj": "predicted_gap_1d_topk_projected_alpha", "pred_1d_gf": "predicted_gap_1d_gradient_flow_alpha",
    "pred_k": "predicted_gap_k_direction", "pred_k_dir1": "predicted_gap_k_direction_first",
    "n_active": "n_active_directions", "alpha_kproj": "alpha_topk_projected", "alpha_gf": "alpha_gradient_flow",
    "alpha_gf_se": "alpha_gradient_flow_stderr", "alpha_1proj": "alpha_one_direction", "G11": "coupling_11",
    "G12_over_G11": "coupling_12_over_11", "sigma1_sq": "noise_variance_1", "eta_gap": "eta_times_gap",
    "K_lower": "noise_kernel_lower", "K_upper": "noise_kernel_upper", "K_trace": "noise_kernel_trace",
    "noise_corr12": "noise_correlation_12", "edge_hvp": "edge_constants_hvp",
    "edge_seconds": "edge_constants_time_s", "gf_hvp": "gradient_flow_hvp", "gf_seconds": "gradient_flow_time_s",
    "run_seconds": "run_time_s", "final_loss": "final_loss", "diverged": "diverged",
    "S_drift": "sharpness_drift", "S_drift_stderr": "sharpness_drift_stderr",
    "S_stationary": "sharpness_stationary", "steps_run": "steps_run", "identity_Gx2_1": "identity_coupling_x_sq_1",
    "identity_2alpha_1": "identity_two_alpha_1", "n_above_2_over_eta": "n_above_2_over_eta",
    "batch_sharpness": "batch_sharpness",
}


def output_name(field: str) -> str:
    """The dataset's name of a field: across-seed statistics end in ``_seed_mean`` and ``_seed_ci95``.

    >>> output_name("S"), output_name("K_trace_ci95"), output_name("alpha_k4_mean")
    ('sharpness', 'noise_kernel_trace_seed_ci95', 'alpha_top4_projected_seed_mean')
    >>> output_name("ratio_gap_2eta_to_pred_k_mean")
    'ratio_gap_from_2_over_eta_to_predicted_gap_k_direction_seed_mean'
    """
    for suffix in ("_mean", "_ci95"):
        if field.endswith(suffix) and field not in OUTPUT_NAMES:
            return output_name(field[: -len(suffix)]) + "_seed" + suffix
    if field.startswith("ratio_"):
        ref, p = field[len("ratio_"):].split("_to_")
        return f"ratio_{output_name(ref)}_to_{output_name(p)}"
    if field.startswith("alpha_k") and field[len("alpha_k"):].isdigit():
        return f"alpha_top{field[len('alpha_k'):]}_projected"
    return OUTPUT_NAMES[field]


def _out(field: str, stat: str = "") -> str:
    return output_name(field + stat)


def _labels(ds) -> np.ndarray:
    lab = np.empty(ds[_out("gap_2eta", "_mean")].shape, dtype=object)
    for at in np.ndindex(lab.shape):
        eg = float(ds[_out("eta_gap", "_mean")].values[at])
        # the trace form: K_lower/K_upper also contain the top modes, which diverge at the deterministic edge
        K = float(ds[_out("K_trace", "_mean")].values[at])
        if ds.batch_size.values[at[2]] == "full":
            lab[at] = "GD"
            continue
        if not np.isfinite(eg):
            lab[at] = "diverged"
            continue
        if np.any(ds[_out("S_stationary")].values[at] == 0):  # never compared with a stationary theory
            lab[at] = "not stationary"
            continue

        def holds(p):
            m = float(ds[_out(f"ratio_gap_2eta_to_{p}", "_mean")].values[at])
            h = float(ds[_out(f"ratio_gap_2eta_to_{p}", "_ci95")].values[at])
            if not np.isfinite(m):
                return False
            if np.isfinite(h) and m - h <= 1 <= m + h and h < 0.5:
                return True
            return 1 / 1.5 <= m <= 1.5

        if eg > 0.5:
            lab[at] = "nonlinear"
        elif np.isfinite(K) and K >= 0.5:
            lab[at] = "stochastic-edge"
        elif holds("pred_1d_kproj"):
            lab[at] = "1-D"
        elif holds("pred_k"):
            lab[at] = "k-direction"
        else:
            lab[at] = "neither"
    return lab.astype(str)


def plot(ds: xr.Dataset):
    """Gap vs B (from 2/η and from S_GD) with the three predictions; ratio measured/predicted; ηΔS, K, λ₁−λ₂."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_set, n_eta = ds.sizes["setting"], ds.sizes["eta"]
    fig, axes = plt.subplots(n_set * n_eta, 3, figsize=(13, 3.2 * n_set * n_eta), squeeze=False)
    bvals = [b for b in ds.batch_size.values if b != "full"]
    xb = np.array([int(b) for b in bvals])
    for r, (i, j) in enumerate(itertools.product(range(n_set), range(n_eta))):
        sub = ds.isel(setting=i, eta=j).sel(batch_size=bvals)
        ax = axes[r, 0]
        for f, lab, mk in (("gap_2eta", "measured, from 2/η", "o"), ("gap_gd", "measured, from S_GD", "s"),
                           ("pred_1d_kproj", "1-D, α top-k projected", "--"), ("pred_1d_gf", "1-D, α gradient flow", ":"),
                           ("pred_k", "k-direction closure", "-.")):
            y, e = sub[_out(f, "_mean")].values, sub[_out(f, "_ci95")].values
            if mk in ("o", "s"):
                ax.errorbar(xb, y, yerr=np.nan_to_num(e), fmt=mk, label=lab, capsize=2)
            else:
                ax.plot(xb, y, mk, label=lab)
        ax.set_xscale("log")
        ax.set_yscale("symlog", linthresh=0.1)
        ax.set_xlabel("batch size B")
        ax.set_ylabel("sharpness gap")
        ax.set_title(f"{str(ds.setting.values[i])}, η = {float(ds.eta.values[j])}", fontsize=9)
        ax.legend(fontsize=6)
        ax = axes[r, 1]
        for p, mk in (("pred_1d_kproj", "o"), ("pred_1d_gf", "^"), ("pred_k", "s")):
            y, e = (sub[_out(f"ratio_gap_2eta_to_{p}", "_mean")].values,
                    sub[_out(f"ratio_gap_2eta_to_{p}", "_ci95")].values)
            ax.errorbar(xb, y, yerr=np.nan_to_num(e), fmt=mk, label=p.replace("pred_", ""), capsize=2)
        ax.axhline(1, color="k", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("symlog", linthresh=1.0)
        ax.set_xlabel("batch size B")
        ax.set_ylabel("measured (from 2/η) / predicted")
        ax.set_ylim(-100, 100)
        for x_, lab in zip(xb, sub.regime.values):
            ax.annotate(lab, (x_, 0.02), xycoords=("data", "axes fraction"), fontsize=6, rotation=90, va="bottom")
        ax.legend(fontsize=6)
        ax = axes[r, 2]
        ax.plot(xb, sub[_out("eta_gap", "_mean")].values, "o-", label="ηΔS (from 2/η)")
        ax.plot(xb, sub[_out("K_upper", "_mean")].values, "s-", label="K (upper bound)")
        ax.plot(xb, sub[_out("K_lower", "_mean")].values, "s--", label="K (lower bound)")
        ax.plot(xb, sub[_out("K_trace", "_mean")].values, "x:", label="K, trace form")
        ax.plot(xb, float(ds.eta.values[j]) * sub[_out("lam12", "_mean")].values, "^-", label="η(λ₁−λ₂)")
        ax.set_xscale("log")
        ax.set_xlabel("batch size B")
        ax.legend(fontsize=6)
    for ax in axes.ravel():
        ax.set_xticks(xb)
        ax.set_xticklabels([str(v) for v in xb])
        ax.minorticks_off()
    fig.tight_layout()
    return fig
