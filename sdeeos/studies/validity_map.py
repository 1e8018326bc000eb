r"""Study ``validity_map``: where in :math:`(\alpha, \beta, \sigma, \eta)` the closed-form gap holds.

In :math:`\tilde x = x/\delta` (:math:`\delta^2 = 2\alpha/\beta`) and :math:`\tilde y = \eta y` the
reduced model reads :math:`\tilde x' = -(1+\tilde y)\tilde x + \sqrt{2ar}\,z`,
:math:`\tilde y' = \tilde y + a(1-\tilde x^2)` with only two parameters,

* :math:`a = \eta^2\alpha` (``eta_sq_alpha``: sharpening per step of :math:`\eta S`), and
* :math:`r = \sigma^2\beta/(4\alpha^2)` (``closure_validity_ratio``: the closure needs :math:`r \gg 1`),

and :math:`\eta\,\Delta S` depends on :math:`(a, r)` alone; the closure's stationary state exists
for :math:`q = \eta^2\beta\sigma^2/(2\alpha) = 2ar \le 1`.  So a 2-D map over :math:`(r, a)` is the
complete phase diagram of the 4-D parameter space; a ``[collapse]`` sweep at other
:math:`(\alpha, \beta)` checks this numerically.  Each cell gets the relative error of the exact
and leading-order closure gaps; the boundaries where they hold to 5%, 10%, 25% are reported.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import xarray as xr

from ..models import SelfStabilization
from ..plotting import COLORS, new_figure, save_figure
from ..sweeps import sweep
from ._common import (
    OUTPUT_TABLE,
    RUN_TABLE,
    converged,
    figure_formats,
    model_table,
    require_model,
    sweep_kwargs,
    sweep_store,
    write_outputs,
)
from ._schema import Field, Table

__all__ = ["run", "SCHEMA", "validity_boundaries"]

_LIST_POS = dict(low=0.0, low_open=True, min_len=1)

SCHEMA = {
    "model": model_table(("alpha", "beta"), doc="reference alpha and beta (the map's representative)"),
    "grid": Table(required=True, doc="the dimensionless plane", fields={
        "eta_sq_alpha": Field("list[float]", required=True, doc="a = eta**2 alpha", **_LIST_POS),
        "closure_validity_ratio": Field("list[float]", required=True, doc="r = sigma**2 beta / (4 alpha**2)",
                                        **_LIST_POS),
    }),
    "collapse": Table(doc="other (alpha, beta) at a few (a, r) of the grid: the map must not change", fields={
        "alpha": Field("list[float]", **_LIST_POS),
        "beta": Field("list[float]", **_LIST_POS),
        "eta_sq_alpha": Field("list[float]", **_LIST_POS),
        "closure_validity_ratio": Field("list[float]", **_LIST_POS),
    }),
    "levels": Field("list[float]", default=[0.05, 0.10, 0.25], low=0.0, low_open=True, min_len=1,
                    doc="relative-error levels of the boundaries"),
    "run": RUN_TABLE,
    "output": OUTPUT_TABLE,
}


def _relative_errors(ds: xr.Dataset) -> None:
    for kind in ("exact", "leading"):
        pred = ds[f"sharpness_gap_predicted_{kind}"]
        ds[f"gap_rel_error_{kind}"] = ds["sharpness_gap"] / pred - 1.0
        ds[f"gap_rel_error_{kind}"].attrs.update(long_name=f"measured gap / {kind} closure gap - 1")
        ds[f"gap_rel_error_{kind}_stderr"] = ds["sharpness_gap_stderr"] / abs(pred)


def validity_boundaries(ds: xr.Dataset, kind: str, levels) -> dict:
    r"""For each :math:`a` and level: the widest run of consecutive grid values of :math:`r` whose
    cells all have a stationary closure state (:math:`q=2ar\le1`), passed the stationarity check,
    and have :math:`|\mathrm{rel.\ err}|\le` level, as ``[r_min, r_max]``; ``None`` if there is none."""
    out = {}
    err = ds[f"gap_rel_error_{kind}"]
    r = ds["closure_validity_ratio"].values
    for i, a in enumerate(ds["eta_sq_alpha"].values):
        e = np.abs(err.isel(eta_sq_alpha=i).values)
        ok = (2 * a * r <= 1) & ds["converged"].isel(eta_sq_alpha=i).values & np.isfinite(e)
        row = {}
        for lev in levels:
            good = ok & (e <= lev)
            best, k = None, 0
            while k < len(r):
                if not good[k]:
                    k += 1
                    continue
                j = k
                while j + 1 < len(r) and good[j + 1]:
                    j += 1
                if best is None or j - k > best[1] - best[0]:
                    best = (k, j)
                k = j + 1
            row[f"{lev:g}"] = None if best is None else [float(r[best[0]]), float(r[best[1]])]
        out[f"{a:g}"] = row
    return out


def run(cfg, out_dir: Path, *, progress: bool = True, scheduler=None) -> xr.Dataset:
    """Reduced model: where the closed-form gap holds to 5/10/25% in the (eta^2 alpha, sigma^2 beta/4alpha^2) plane."""

    require_model(cfg, ["alpha", "beta"])
    grid = {"eta_sq_alpha": list(cfg["grid"]["eta_sq_alpha"]),
            "closure_validity_ratio": list(cfg["grid"]["closure_validity_ratio"])}
    kw = sweep_kwargs(cfg)
    ds = sweep(SelfStabilization, grid, params=dict(cfg["model"]), **kw, store=sweep_store(cfg, out_dir, "map"),
               scheduler=scheduler, progress=progress)
    ds["converged"] = converged(ds)
    _relative_errors(ds)
    ds["stationarity_parameter"] = 2 * ds["eta_sq_alpha"] * ds["closure_validity_ratio"]
    ds["stationarity_parameter"].attrs.update(long_name="q = eta**2 beta sigma**2 / (2 alpha) = 2 a r; "
                                                        "the closure has a stationary state for q <= 1")
    eta = np.sqrt(ds["eta_sq_alpha"] / float(cfg["model"]["alpha"]))
    ds["gap_excess_over_eta_alpha"] = (ds["sharpness_gap"] - ds["sharpness_gap_predicted_exact"]) / (
        eta * float(cfg["model"]["alpha"]))
    ds["gap_excess_over_eta_alpha"].attrs.update(long_name="(measured - exact closure gap) / (eta alpha)")
    inside = ds["converged"] & (ds["closure_validity_ratio"] >= 3) & (ds["stationarity_parameter"] <= 0.5)
    exc = ds["gap_excess_over_eta_alpha"].where(inside).values
    exc = exc[np.isfinite(exc)]
    levels = sorted(cfg["levels"])
    summary = {"levels": levels,
               "boundary_r_exact": validity_boundaries(ds, "exact", levels),
               "boundary_r_leading": validity_boundaries(ds, "leading", levels),
               "n_not_converged": int((~ds["converged"] & (ds["stationarity_parameter"] <= 1)).sum()),
               "max_rel_stderr_where_r_ge_1": float(ds["gap_rel_error_exact_stderr"].where(
                   (ds["stationarity_parameter"] <= 1) & (ds["closure_validity_ratio"] >= 1)).max()),
               "excess_gap_over_eta_alpha": {
                   "median": float(np.median(exc)) if exc.size else None,
                   "q10": float(np.quantile(exc, 0.1)) if exc.size else None,
                   "q90": float(np.quantile(exc, 0.9)) if exc.size else None, "n_cells": int(exc.size),
                   "cells": "converged, r >= 3, q <= 0.5"}}

    col = cfg["collapse"]
    if col:
        missing = [k for k in ("alpha", "beta", "eta_sq_alpha", "closure_validity_ratio") if k not in col]
        if missing:
            raise cfg.error(("collapse",), f"[collapse] is missing the required key {missing[0]!r}")
        for k in ("eta_sq_alpha", "closure_validity_ratio"):
            for v in col[k]:
                if not np.any(np.isclose(grid[k], v, rtol=1e-12)):
                    raise cfg.error(("collapse", k), f"[collapse] {k} value {v:g} is not in [grid] {k}")
        cgrid = {k: list(col[k]) for k in ("alpha", "beta", "eta_sq_alpha", "closure_validity_ratio")}
        cds = sweep(SelfStabilization, cgrid, **kw, store=sweep_store(cfg, out_dir, "collapse"),
                    scheduler=scheduler, progress=progress)
        _relative_errors(cds)
        ref = ds.sel(eta_sq_alpha=cds["eta_sq_alpha"], closure_validity_ratio=cds["closure_validity_ratio"],
                     method="nearest")
        # eta * gap is the dimensionless gap: compare it with the reference map's
        eta_c = np.sqrt(cds["eta_sq_alpha"] / cds["alpha"])
        eta_r = np.sqrt(ref["eta_sq_alpha"] / float(cfg["model"]["alpha"]))
        diff = eta_c * cds["sharpness_gap"] - eta_r * ref["sharpness_gap"]
        err = np.sqrt((eta_c * cds["sharpness_gap_stderr"]) ** 2 + (eta_r * ref["sharpness_gap_stderr"]) ** 2)
        z = (diff / err).where(err > 0)
        summary["collapse_max_abs_z"] = float(abs(z).max())
        summary["collapse_max_rel_diff"] = float(abs(diff / (eta_r * ref["sharpness_gap"])).max())
        keep = ["sharpness_gap", "sharpness_gap_stderr", "gap_rel_error_exact", "gap_rel_error_leading",
                "sharpness_gap_predicted_exact", "n_diverged", "sigma", "eta"]
        cds = cds[[k for k in keep if k in cds]]
        cds["dimensionless_gap_z"] = z
        cds = cds.rename({k: f"collapse_{k}" for k in list(cds.data_vars) + list(cds.dims)})
        cds.attrs = {}
        ds = xr.merge([ds, cds], compat="override", combine_attrs="override")

    figures = _figures(cfg, out_dir, ds, levels, summary)
    return write_outputs(cfg, out_dir, ds, summary, figures)


def _figures(cfg, out_dir, ds, levels, summary) -> list:
    from matplotlib.colors import BoundaryNorm, ListedColormap

    alpha, beta = float(cfg["model"]["alpha"]), float(cfg["model"]["beta"])
    fmts = figure_formats(cfg)
    r = ds["closure_validity_ratio"].values
    a = ds["eta_sq_alpha"].values
    bins = [0.0, *levels, 1.0, 10.0, np.inf]
    names = [f"≤ {100 * levels[0]:g}%"] + [f"{100 * lo:g}–{100 * hi:g}%" for lo, hi in zip(levels, levels[1:])] + \
            [f"{100 * levels[-1]:g}–100%", "1–10×", "> 10×"]
    cmap = ListedColormap(["#1a9850", "#91cf60", "#d9ef8b", "#fee08b", "#fc8d59", "#d73027"][:len(bins) - 1])
    norm = BoundaryNorm(bins[:-1] + [1e300], cmap.N)
    fig, axes = new_figure(1, 2, width=6.2, height=5.4)

    def edges(c):
        lc = np.log(c)
        mid = (lc[1:] + lc[:-1]) / 2
        return np.exp(np.concatenate([[lc[0] - (mid[0] - lc[0])], mid, [lc[-1] + (lc[-1] - mid[-1])]]))

    for ax, kind in zip(axes, ("exact", "leading")):
        e = np.abs(ds[f"gap_rel_error_{kind}"].values)
        q = 2 * a[:, None] * r[None, :]
        show = np.where(q <= 1, e, np.nan)
        mesh = ax.pcolormesh(edges(r), edges(a), np.ma.masked_invalid(show), cmap=cmap, norm=norm)
        ax.set_xscale("log")
        ax.set_yscale("log")
        # cells with no stationary closure state
        for i in range(len(a)):
            for k in range(len(r)):
                re, ae = edges(r), edges(a)
                if q[i, k] > 1:
                    ax.fill_between([re[k], re[k + 1]], ae[i], ae[i + 1], facecolor="#eeeeee", hatch="///",
                                    edgecolor="#bbbbbb", lw=0)
                elif not bool(ds["converged"].values[i, k]):
                    ax.plot(math.sqrt(r[k] * re[k + 1]), math.sqrt(a[i] * ae[i + 1]), "x", color="black", ms=4,
                            mew=1.0)
                if q[i, k] <= 1 and np.isfinite(e[i, k]):
                    ax.text(r[k], a[i], f"{100 * e[i, k]:.0f}" if e[i, k] < 9.995 else f"{e[i, k]:.0f}×",
                            ha="center", va="center", fontsize=5.5, color="black")
        rr = np.geomspace(edges(r)[0], edges(r)[-1], 100)
        ax.plot(rr, 1 / (2 * rr), color="black", lw=1.2, ls="--")
        ax.axvline(1.0, color="black", lw=1.2, ls="-.")
        ax.set_xlim(edges(r)[0], edges(r)[-1])
        ax.set_ylim(edges(a)[0], edges(a)[-1])
        ax.annotate(r"$\sigma^2 = 4\alpha^2/\beta$", xy=(1.0, 1.0), xycoords=("data", "axes fraction"),
                    xytext=(3, -3), textcoords="offset points", va="top", fontsize=8)
        ax.annotate(r"$\eta^2\beta\sigma^2 = 2\alpha$:" + "\nno stationary\nstate above",
                    xy=(0.98, 0.98), xycoords="axes fraction", ha="right", va="top", fontsize=7,
                    bbox=dict(boxstyle="round", fc="white", ec="none", alpha=0.9))
        ax.set_xlabel(r"closure validity ratio $r = \sigma^2\beta/(4\alpha^2)$")
        ax.set_ylabel(r"sharpening per step $a = \eta^2\alpha$")
        ax.set_title(f"{kind} closure: |measured / predicted − 1| (cell labels in %)", fontsize=9)
        top = ax.secondary_xaxis("top", functions=(lambda x: 2 * alpha * np.sqrt(np.maximum(x, 1e-300) / beta),
                                                   lambda s: s**2 * beta / (4 * alpha**2)))
        top.set_xlabel(rf"$\sigma$ at $\alpha={alpha:g}$, $\beta={beta:g}$", fontsize=8)
        right = ax.secondary_yaxis("right", functions=(lambda y: np.sqrt(np.maximum(y, 1e-300) / alpha),
                                                       lambda e_: e_**2 * alpha))
        right.set_ylabel(rf"$\eta$ at $\alpha={alpha:g}$", fontsize=8)
    cb = fig.colorbar(mesh, ax=list(axes), shrink=0.8, ticks=[(lo + hi) / 2 if np.isfinite(hi) else lo * 3
                                                             for lo, hi in zip(bins[:-1], bins[1:])])
    cb.set_ticks([np.sqrt(max(lo, 1e-3) * hi) if np.isfinite(hi) else 30 for lo, hi in zip(bins[:-1], bins[1:])])
    cb.set_ticklabels(names)
    cb.set_label("relative error of the closed-form gap")
    fig.suptitle((cfg.get("title") or "Validity map of the closed-form sharpness gap")
                 + "\n× = not stationary within the run (window-half drift); hatched: no stationary closure state",
                 fontsize=10)
    figures = save_figure(fig, out_dir, f"{cfg['name']}_map", fmts)

    # relative error against r, one line per a, with the fitted law c * eta * alpha / gap_exact
    fig, ax = new_figure(width=7.0, height=4.8)
    for i, av in enumerate(a):
        c = COLORS[i % len(COLORS)]
        sub = ds.isel(eta_sq_alpha=i)
        ok = (2 * av * r <= 1) & np.isfinite(sub["gap_rel_error_exact"].values)
        conv = sub["converged"].values
        y = sub["gap_rel_error_exact"].values
        ax.errorbar(r[ok & conv], y[ok & conv], yerr=sub["gap_rel_error_exact_stderr"].values[ok & conv], fmt="o",
                    ms=3.5, color=c, capsize=2, label=f"$a={av:g}$")
        if (ok & ~conv).any():
            ax.plot(r[ok & ~conv], y[ok & ~conv], "o", mfc="white", color=c, ms=4)
    cfit = summary.get("excess_gap_over_eta_alpha")
    if cfit and cfit.get("median") is not None:
        rr = np.geomspace(r.min(), r.max(), 200)
        # gap - gap_exact = c eta alpha  =>  rel. error = c eta alpha / gap_exact ~ c / r for small q
        ax.plot(rr, cfit["median"] / rr, color="black", lw=1.2, ls="--",
                label=rf"$c/r$, $c={cfit['median']:.2f}$ (gap excess $c\,\eta\alpha$)")
    for lev in levels:
        ax.axhline(lev, color="grey", lw=0.8, ls=":")
        ax.annotate(f"{100 * lev:g}%", xy=(0.995, lev), xycoords=("axes fraction", "data"), ha="right",
                    va="bottom", fontsize=7, color="dimgrey")
    ax.axvline(1.0, color="black", lw=1, ls="-.")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(r"$r = \sigma^2\beta/(4\alpha^2)$")
    ax.set_ylabel("measured gap / exact closure gap − 1")
    ax.set_title("Relative error of the exact closure vs r; hollow: not stationary within the run", fontsize=9)
    ax.legend(fontsize=7, ncol=2, title=r"$a=\eta^2\alpha$", title_fontsize=7)
    ax.grid(True, which="both", alpha=0.2)
    figures += save_figure(fig, out_dir, f"{cfg['name']}_relative_error", fmts)

    if "collapse_sharpness_gap" in ds:
        fig, ax = new_figure(width=7.0, height=4.6)
        c = ds["collapse_gap_rel_error_exact"] + 1
        z = ds["collapse_dimensionless_gap_z"]
        labels, k = [], 0
        for ia, al in enumerate(ds["collapse_alpha"].values):
            for ib, be in enumerate(ds["collapse_beta"].values):
                sub = c.isel(collapse_alpha=ia, collapse_beta=ib)
                xs = np.arange(sub.size)
                ax.plot(xs + 0.08 * (k - 1.5), sub.values.ravel(), "o", color=COLORS[k % len(COLORS)],
                        label=rf"$\alpha={al:g}$, $\beta={be:g}$")
                k += 1
        ref = ds["gap_rel_error_exact"].sel(
            eta_sq_alpha=ds["collapse_eta_sq_alpha"], closure_validity_ratio=ds["collapse_closure_validity_ratio"],
            method="nearest") + 1
        ax.plot(np.arange(ref.size), ref.values.ravel(), "_", color="black", ms=18, mew=2,
                label=rf"map ($\alpha={alpha:g}$, $\beta={beta:g}$)")
        for ia_, av in enumerate(ds["collapse_eta_sq_alpha"].values):
            for ir, rv in enumerate(ds["collapse_closure_validity_ratio"].values):
                labels.append(f"a={av:g}\nr={rv:g}")
        ax.set_xticks(np.arange(len(labels)))
        ax.set_xticklabels(labels, fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel("measured gap / exact closure gap")
        ax.set_title("Collapse: the map depends on (a, r) only; "
                     f"max |z| of η·ΔS differences = {float(abs(z).max()):.2f}", fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(True, axis="y", which="both", alpha=0.2)
        figures += save_figure(fig, out_dir, f"{cfg['name']}_collapse", fmts)
    return figures
