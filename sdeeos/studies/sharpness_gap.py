r"""Study ``sharpness_gap``: the reduced model's stationary gap vs batch size (noise) and step size.

The projected noise follows the batch size exactly, :math:`\sigma_u^2=\sigma_1^2\,a(B,n)` with
:math:`a=(n-B)/(B(n-1))` without replacement (`sdeeos.theory.batch_noise`).  The gap
:math:`\Delta S = 2/\eta-\langle S\rangle` is compared with the closure's leading-order
:math:`\eta\beta\sigma_u^2/(4\alpha)` and exact :math:`(1-\sqrt{1-\eta^2\beta\sigma_u^2/(2\alpha)})/\eta`
predictions; the validity boundary :math:`\sigma_u^2 = 4\alpha^2/\beta` is marked; the log-log
slopes of the gap vs :math:`B`, vs :math:`\sigma_u^2` and vs :math:`\eta` are fitted with their
confidence intervals and compared with the slope of the theory over the same points.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import sympy as sp
import xarray as xr

from .._errors import ParameterError
from ..models import SelfStabilization
from ..plotting import (
    COLORS,
    loglog_fit,
    mark_edge,
    new_figure,
    plot_gap_points,
    plot_sharpness_traces,
    save_figure,
)
from ..sweeps import sweep
from ..theory import batch_noise
from ..theory import self_stabilization as theory
from ._common import (
    OUTPUT_TABLE,
    RUN_TABLE,
    batch_noise_table,
    converged,
    figure_formats,
    model_table,
    require_model,
    sweep_kwargs,
    sweep_store,
    write_outputs,
)
from ._schema import Field, Table

__all__ = ["run", "plot", "SCHEMA", "validity_batch_size"]

SCHEMA = {
    "model": model_table(("eta", "alpha", "beta")),
    "batch_noise": batch_noise_table(),
    "grid": Table(required=True, doc="swept values", fields={
        "batch_size": Field("list[int]", required=True, low=1, min_len=2, doc="batch sizes B (<= n_data)"),
        "eta": Field("list[float]", low=0.0, low_open=True, min_len=1, doc="step sizes (else [model] eta)"),
    }),
    "run": RUN_TABLE,
    "fit": Table(doc="log-log slope fits", fields={
        "batch_size_min": Field("int", low=1, doc="smallest batch size in the fit (default: all)"),
        "batch_size_max": Field("int", low=1, doc="largest batch size in the fit (default: all below the "
                                                  "validity boundary's batch size)"),
        "confidence": Field("float", default=0.95, low=0.5, high=0.999),
    }),
    "output": OUTPUT_TABLE,
}


def validity_batch_size(alpha, beta, n_data, sigma_1, sampling) -> float:
    r"""The (real) batch size at which :math:`\sigma_u^2(B) = 4\alpha^2/\beta`, from the SymPy noise factor."""


    a = batch_noise.derive_noise_covariance_coefficients(sampling)["centred"]
    expr = sp.lambdify(batch_noise.batch_size, a.subs(batch_noise.n_data, n_data) * sigma_1**2 - 4 * alpha**2 / beta)
    lo, hi = 1.0, float(n_data)
    f_lo, f_hi = float(expr(lo)), float(expr(hi))
    if f_lo <= 0:
        return lo
    if f_hi >= 0:
        return hi
    for _ in range(200):  # the factor decreases in B: bisection
        mid = math.sqrt(lo * hi)
        if float(expr(mid)) > 0:
            lo = mid
        else:
            hi = mid
    return math.sqrt(lo * hi)


def _sigma_sq(batch_sizes, n_data, sigma_1, sampling):

    return np.array([sigma_1**2 * float(batch_noise.centred_coefficient(int(b), n_data, sampling))
                     for b in batch_sizes])


def run(cfg, out_dir: Path, *, progress: bool = True, scheduler=None) -> xr.Dataset:
    """Reduced model: gap vs sigma_u^2 (via batch size) and vs eta, with closure predictions and fitted slopes."""

    grid = {k: list(v) for k, v in cfg["grid"].items()}
    if "eta" in grid and "eta" in cfg["model"]:
        raise cfg.error(("model", "eta"), "eta is swept in [grid]; remove it from [model]")
    require_model(cfg, ["alpha", "beta"] + ([] if "eta" in grid else ["eta"]), grid)
    bn = cfg["batch_noise"]
    n_data = bn["n_data"]
    if max(grid["batch_size"]) > n_data and bn["sampling"] != "with_replacement":
        raise cfg.error(("grid", "batch_size"), f"[grid] batch_size must be <= n_data = {n_data}, "
                        f"got {max(grid['batch_size'])}")
    params = {**cfg["model"], **bn}
    ds = sweep(SelfStabilization, grid, params=params, **sweep_kwargs(cfg), store=sweep_store(cfg, out_dir, "gap"),
               scheduler=scheduler, progress=progress)
    if "eta" not in ds.dims:
        ds = ds.expand_dims(eta=[float(ds.attrs["eta"])]).transpose("batch_size", "eta", ...)
    alpha, beta = cfg["model"]["alpha"], cfg["model"]["beta"]
    ds["sigma_sq"] = ds["sigma"] ** 2
    ds["sigma_sq"].attrs.update(long_name="projected gradient noise variance sigma_u**2")
    ds["converged"] = converged(ds)
    ds["converged"].attrs.update(long_name="window-half drift within 3 standard errors or 2% of the gap")
    boundary_sigma_sq = 4 * alpha**2 / beta
    b_star = validity_batch_size(alpha, beta, n_data, bn["sigma_1"], bn["sampling"])

    # ---------------------------------------------------------------- fits
    fit = cfg["fit"]
    bmin = fit.get("batch_size_min", min(grid["batch_size"]))
    bmax = fit.get("batch_size_max", math.floor(b_star))
    conf = fit["confidence"]
    fits_b, fits_s, fits_eta = {}, {}, {}
    for name in ("gap_batch_slope", "gap_sigma_sq_slope"):
        for suffix in ("", "_ci_low", "_ci_high", "_theory_exact", "_theory_leading"):
            ds[name + suffix] = ("eta", np.full(ds.sizes["eta"], np.nan))
    for j, eta in enumerate(ds["eta"].values):
        sub = ds.isel(eta=j)
        b = sub["batch_size"].values
        # every point of a grid without a GD point has the same method: then it is an attribute
        method = sub["method"].values if "method" in sub else np.full(b.shape, ds.attrs.get("method"))
        sel = ((b >= bmin) & (b <= bmax) & sub["converged"].values & (sub["sharpness_gap"].values > 0)
               & (method == "sgd"))
        g, s2 = sub["sharpness_gap"].values[sel], sub["sigma_sq"].values[sel]
        ex, le = sub["sharpness_gap_predicted_exact"].values[sel], sub["sharpness_gap_predicted_leading"].values[sel]
        for key, x, store in (("gap_batch_slope", b[sel], fits_b), ("gap_sigma_sq_slope", s2, fits_s)):
            f = loglog_fit(x, g, conf)
            fe, fl = loglog_fit(x, ex, conf), loglog_fit(x, le, conf)
            ds[key][j], ds[key + "_ci_low"][j], ds[key + "_ci_high"][j] = f.slope, f.ci_low, f.ci_high
            ds[key + "_theory_exact"][j], ds[key + "_theory_leading"][j] = fe.slope, fl.slope
            store[f"{eta:g}"] = {**f.as_dict(), "theory_exact_slope": fe.slope, "theory_leading_slope": fl.slope,
                                 "batch_sizes": [int(v) for v in b[sel]]}
    if ds.sizes["eta"] >= 3:
        for suffix in ("", "_ci_low", "_ci_high", "_theory_exact", "_theory_leading"):
            ds["gap_eta_slope" + suffix] = ("batch_size", np.full(ds.sizes["batch_size"], np.nan))
        for i, bval in enumerate(ds["batch_size"].values):
            sub = ds.isel(batch_size=i)
            sel = sub["converged"].values & (sub["sharpness_gap"].values > 0)
            if sel.sum() < 3:
                continue
            e = sub["eta"].values[sel]
            f = loglog_fit(e, sub["sharpness_gap"].values[sel], conf)
            fe = loglog_fit(e, sub["sharpness_gap_predicted_exact"].values[sel], conf)
            fl = loglog_fit(e, sub["sharpness_gap_predicted_leading"].values[sel], conf)
            ds["gap_eta_slope"][i], ds["gap_eta_slope_ci_low"][i], ds["gap_eta_slope_ci_high"][i] = (
                f.slope, f.ci_low, f.ci_high)
            ds["gap_eta_slope_theory_exact"][i], ds["gap_eta_slope_theory_leading"][i] = fe.slope, fl.slope
            fits_eta[str(int(bval))] = {**f.as_dict(), "theory_exact_slope": fe.slope, "theory_leading_slope": fl.slope}
    ds.attrs.update(validity_sigma_sq=boundary_sigma_sq, validity_batch_size=b_star,
                    fit_batch_size_min=bmin, fit_batch_size_max=bmax, fit_confidence=conf)

    ds.attrs.update(n_data=n_data, sigma_1=bn["sigma_1"], sampling=bn["sampling"])  # what `plot` needs

    # ---------------------------------------------------------------- figures
    figures = []
    for suffix, fig in plot(ds, title=cfg.get("title")).items():
        figures += save_figure(fig, out_dir, f"{cfg['name']}_{suffix}", figure_formats(cfg))

    summary = {
        "validity_sigma_sq": boundary_sigma_sq, "validity_batch_size": b_star,
        "fit_gap_vs_batch_size": fits_b, "fit_gap_vs_sigma_sq": fits_s, "fit_gap_vs_eta": fits_eta,
        "n_points": int(ds.attrs.get("n_points", 0)), "n_not_converged": int((~ds["converged"]).sum()),
        "n_diverged_total": int(ds["n_diverged"].sum()),
    }
    return write_outputs(cfg, out_dir, ds, summary, figures)


def _fit(ds: xr.Dataset, key: str, i: int) -> dict:
    """A fitted slope, its interval and the theory's slope over the same points (empty where unfitted)."""
    if key not in ds or not np.isfinite(float(ds[key].values[i])):
        return {}
    vals = {k: float(ds[key + s].values[i]) for k, s in (("slope", ""), ("ci_low", "_ci_low"),
                                                           ("ci_high", "_ci_high"),
                                                           ("theory_exact_slope", "_theory_exact"))}
    return {k: (None if k in ("slope", "ci_low", "ci_high") and not math.isfinite(v) else v) for k, v in vals.items()}


def plot(ds: xr.Dataset, title: str | None = None) -> dict:
    """The study's figures from its dataset alone (``sdeeos study --replot``): name suffix -> figure."""
    missing = [k for k in ("alpha", "beta", "n_data", "sigma_1", "sampling", "validity_batch_size",
                           "validity_sigma_sq", "fit_batch_size_min", "fit_batch_size_max") if k not in ds.attrs]
    if missing:
        raise ParameterError(f"the dataset lacks the attributes {missing} that the figures need (written by an "
                             "older sdeeos); re-run the study instead")
    alpha, beta = float(ds.attrs["alpha"]), float(ds.attrs["beta"])
    n_data, sigma_1, sampling = int(ds.attrs["n_data"]), float(ds.attrs["sigma_1"]), str(ds.attrs["sampling"])
    b_star, boundary_sigma_sq = float(ds.attrs["validity_batch_size"]), float(ds.attrs["validity_sigma_sq"])
    bmin, bmax = int(ds.attrs["fit_batch_size_min"]), int(ds.attrs["fit_batch_size_max"])
    title = title or str(ds.attrs.get("study_title") or "")
    converged = ds["converged"].astype(bool)
    ds = ds.assign(converged=converged)
    title = title or "Sharpness gap of SGD in the reduced self-stabilization model"
    figures = {}
    etas = ds["eta"].values
    colors = {float(e): COLORS[i % len(COLORS)] for i, e in enumerate(etas)}
    bvals = [int(b) for b in ds["batch_size"].values]
    bdense = np.unique(np.round(np.geomspace(min(bvals), max(b for b in bvals if b < n_data)
                                             if any(b < n_data for b in bvals) else n_data, 200)))
    s2dense = _sigma_sq(bdense, n_data, sigma_1, sampling)

    # 1. gap vs batch size
    fig, ax = new_figure(width=7.0, height=5.0)
    for j, eta in enumerate(etas):
        sub = ds.isel(eta=j)
        c = colors[float(eta)]
        f = _fit(ds, "gap_batch_slope", j)
        lab = rf"$\eta={eta:g}$"
        if f.get("slope") is not None and f.get("ci_low") is not None:
            lab += (rf": fitted slope ${f['slope']:.3f}\pm{(f['ci_high'] - f['ci_low']) / 2:.3f}$"
                    rf" (closure ${f['theory_exact_slope']:.3f}$)")
        plot_gap_points(ax, sub["batch_size"], sub["sharpness_gap"], sub["sharpness_gap_stderr"], color=c,
                        label=lab, converged=sub["converged"].values)
        ax.plot(bdense, theory.gap_exact(eta, alpha, beta, np.sqrt(s2dense), outside="nan"), color=c, lw=1.2)
        ax.plot(bdense, theory.gap_leading(eta, alpha, beta, np.sqrt(s2dense), outside="nan"), color=c, lw=1.0,
                ls=":")
    ax.axvline(b_star, color="grey", lw=1, ls="-.")
    ax.axvspan(b_star, ax.get_xlim()[1] if b_star < n_data else b_star, color="grey", alpha=0.08, lw=0)
    ax.annotate(r"$\sigma_u^2=4\alpha^2/\beta$" + "\n(the closure needs $B\\ll$ this)", xy=(b_star, 0.02),
                xycoords=("data", "axes fraction"), xytext=(-4, 0), textcoords="offset points", ha="right",
                fontsize=8, color="dimgrey")
    ax.plot([], [], color="black", lw=1.2, label="closure, exact")
    ax.plot([], [], color="black", lw=1.0, ls=":", label=r"leading order $\eta\beta\sigma_u^2/(4\alpha)$")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("batch size $B$")
    ax.set_ylabel(r"sharpness gap $\Delta S = 2/\eta - \langle S\rangle$")
    ax.set_title(f"{title}\n" + rf"$\alpha={alpha:g}$, $\beta={beta:g}$, $n={n_data}$, "
                 rf"$\sigma_1={sigma_1:g}$; fit over ${bmin}\leq B\leq {bmax}$", fontsize=10)
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(True, which="both", alpha=0.2)
    figures["gap_vs_batch"] = fig

    # 2. gap vs sigma_u^2
    fig, ax = new_figure(width=7.0, height=5.0)
    s2line = np.geomspace(max(float(np.nanmin(ds["sigma_sq"].where(ds["sigma_sq"] > 0))), 1e-12),
                          float(ds["sigma_sq"].max()) * 1.5, 300)
    for j, eta in enumerate(etas):
        sub = ds.isel(eta=j)
        c = colors[float(eta)]
        f = _fit(ds, "gap_sigma_sq_slope", j)
        lab = rf"$\eta={eta:g}$"
        if f.get("slope") is not None and f.get("ci_low") is not None:
            lab += rf": slope ${f['slope']:.3f}\pm{(f['ci_high'] - f['ci_low']) / 2:.3f}$ (closure ${f['theory_exact_slope']:.3f}$)"
        plot_gap_points(ax, sub["sigma_sq"], sub["sharpness_gap"], sub["sharpness_gap_stderr"], color=c, label=lab,
                        converged=sub["converged"].values)
        ax.plot(s2line, theory.gap_exact(eta, alpha, beta, np.sqrt(s2line), outside="nan"), color=c, lw=1.2)
        ax.plot(s2line, theory.gap_leading(eta, alpha, beta, np.sqrt(s2line), outside="nan"), color=c, lw=1, ls=":")
        s2max = 2 * alpha / (eta**2 * beta)
        if s2max < s2line[-1]:
            ax.axvline(s2max, color=c, lw=0.8, ls="--")
    ax.axvline(boundary_sigma_sq, color="grey", lw=1, ls="-.")
    ax.axvspan(ax.get_xlim()[0], boundary_sigma_sq, color="grey", alpha=0.08, lw=0)
    ax.annotate(r"$\sigma_u^2=4\alpha^2/\beta$" + "\n(the closure needs $\\sigma_u^2\\gg$ this)", xy=(boundary_sigma_sq, 0.97),
                xycoords=("data", "axes fraction"), xytext=(4, 0), textcoords="offset points", va="top", fontsize=8,
                color="dimgrey")
    ax.plot([], [], color="black", lw=1.2, label="closure, exact")
    ax.plot([], [], color="black", lw=1.0, ls=":", label="leading order")
    ax.plot([], [], color="black", lw=0.8, ls="--", label=r"no stationary state beyond $\eta^2\beta\sigma_u^2=2\alpha$")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(r"projected noise variance $\sigma_u^2 = \sigma_1^2\,(n-B)/(B(n-1))$")
    ax.set_ylabel(r"sharpness gap $\Delta S$")
    ax.set_title("Gap vs noise variance; hollow markers: not stationary (window-half drift)", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(True, which="both", alpha=0.2)
    figures["gap_vs_sigma2"] = fig

    # 3. gap vs eta
    if ds.sizes["eta"] >= 2:
        fig, ax = new_figure(width=7.0, height=5.0)
        edense = np.geomspace(etas.min() / 1.3, etas.max() * 1.3, 200)
        bsel = [b for b in ds["batch_size"].values if b < n_data]
        bsel = [bsel[i] for i in sorted(set(np.linspace(0, len(bsel) - 1, min(5, len(bsel))).round().astype(int)))]
        for k, bval in enumerate(bsel):
            sub = ds.sel(batch_size=bval)
            c = COLORS[k % len(COLORS)]
            s = float(sub["sigma"].values.flat[0])
            f = _fit(ds, "gap_eta_slope", list(ds["batch_size"].values).index(bval))
            lab = f"$B={int(bval)}$"
            if f.get("ci_low") is not None:
                lab += rf": slope ${f['slope']:.2f}\pm{(f['ci_high'] - f['ci_low']) / 2:.2f}$"
            plot_gap_points(ax, sub["eta"], sub["sharpness_gap"], sub["sharpness_gap_stderr"], color=c, label=lab,
                            converged=sub["converged"].values)
            ax.plot(edense, theory.gap_exact(edense, alpha, beta, s, outside="nan"), color=c, lw=1.2)
            ax.plot(edense, theory.gap_leading(edense, alpha, beta, s, outside="nan"), color=c, lw=1, ls=":")
        ax.plot([], [], color="black", lw=1.2, label="closure, exact")
        ax.plot([], [], color="black", lw=1.0, ls=":", label="leading order")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(r"step size $\eta$")
        ax.set_ylabel(r"sharpness gap $\Delta S$")
        ax.set_title("Gap vs step size at fixed batch size", fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(True, which="both", alpha=0.2)
        figures["gap_vs_eta"] = fig

    # 4. sharpness traces
    if "path_sharpness_ensemble_mean" in ds:
        j = len(etas) // 2
        eta = float(etas[j])
        sub = ds.isel(eta=j)
        bs = list(sub["batch_size"].values)
        picks = sorted({bs[0], bs[len(bs) // 2], bs[-1]})
        fig, ax = new_figure(width=8.0, height=4.8)
        steps = ds["step"].values
        for k, bval in enumerate(picks):
            p = sub.sel(batch_size=bval)
            c = COLORS[k % len(COLORS)]
            paths = p["path_sharpness"].values if "path_sharpness" in p else None
            gap_th = float(p["sharpness_gap_predicted_exact"])
            # "method" is a variable only when the grid mixes SGD and GD points (B = n); else an attribute
            method = str(p["method"].values) if "method" in p else str(ds.attrs.get("method", "sgd"))
            lab = f"$B={int(bval)}$" + (" (GD)" if method == "gd" else
                                        rf", $\sigma_u^2={float(p['sigma_sq']):.3g}$")
            plot_sharpness_traces(ax, steps, paths, p["path_sharpness_ensemble_mean"].values, color=c, label=lab)
            if math.isfinite(gap_th):
                ax.axhline(2 / eta - gap_th, color=c, lw=1, ls=":")
        burn = sub["burn_in"].values.flat[0] if "burn_in" in sub else ds.attrs.get("burn_in")
        if burn is not None:
            ax.axvline(float(burn), color="grey", lw=0.8, ls="-.")
            ax.annotate("burn-in ends", xy=(float(burn), 0.02), xycoords=("data", "axes fraction"), fontsize=8,
                        color="dimgrey", xytext=(3, 0), textcoords="offset points")
        mark_edge(ax, eta)
        lo = float(np.nanmin(sub["path_sharpness_ensemble_mean"].values))
        gmax = float(np.nanmax(sub["sharpness_gap"].values))
        ax.set_ylim(min(lo, 2 / eta - 1.6 * gmax) - 0.05 * gmax, 2 / eta + 0.6 * gmax + 1e-9)
        ax.set_xlabel("step")
        ax.set_ylabel(r"sharpness $S_t = 2/\eta + y_t$")
        ax.set_title(rf"Sharpness traces at $\eta={eta:g}$: thin = single trajectories, thick = ensemble mean, "
                     "dotted = 2/η − ΔS (closure)", fontsize=9)
        ax.legend(fontsize=8, loc="lower right")
        figures["sharpness_traces"] = fig

    return figures
