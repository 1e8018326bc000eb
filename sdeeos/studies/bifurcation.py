r"""Study kind ``minimalist_bifurcation`` (``studies/bifurcation.toml``): GD on the minimalist loss.

GD on :math:`f=\tfrac14(x^2y^2-1)^2` from many random initialisations (one ensemble per step size)
over a grid of :math:`\eta`; the late iterates of :math:`\eta S/2` and :math:`xy` against :math:`\eta`
(the bifurcation diagram), with the gradient-flow limit.  Writes ``<name>.nc``,
``<name>_summary.json`` and ``<name>.png/.pdf``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import sympy as sp
import xarray as xr

from .._simulate import simulate
from ..models import Minimalist
from ..plotting import COLORS, new_figure, save_figure
from ..theory import minimalist as theory
from ._common import OUTPUT_TABLE, figure_formats, run_table, write_outputs
from ._schema import Field, Table

__all__ = ["SCHEMA", "run"]

# ============================================================================ bifurcation
SCHEMA = {
    "model": Table(doc="initialisation box of the minimalist loss", fields={
        "x0": Field("float", default=2.0), "y0": Field("float", default=0.5),
        "x0_spread": Field("float", default=0.5, low=0.0), "y0_spread": Field("float", default=0.15, low=0.0),
    }),
    "grid": Table(required=True, doc="step sizes", fields={
        "eta_min": Field("float", required=True, low=0.0, low_open=True),
        "eta_max": Field("float", required=True, low=0.0, low_open=True),
        "n_eta": Field("int", default=100, low=2),
    }),
    "run": run_table(
        n_traj=Field("int", default=256, low=1, doc="initialisations per step size"),
        n_steps=Field("int", default=6000, low=2, doc="GD steps"),
        window=Field("int", default=1000, low=1, doc="the time averages use the last `window` steps"),
        tail=Field("int", default=16, low=1, doc="late iterates kept per trajectory (after n_steps)"),
    ),
    "output": OUTPUT_TABLE,
}


def run(cfg, out_dir: Path, *, progress: bool = True) -> xr.Dataset:
    """Bifurcation diagram of GD on the minimalist loss over eta (many initialisations per eta)."""
    m, g, run = cfg["model"], cfg["grid"], cfg["run"]
    if g["eta_max"] <= g["eta_min"]:
        raise cfg.error(("grid", "eta_max"), "[grid] eta_max must be larger than eta_min")
    if run["window"] >= run["n_steps"]:
        raise cfg.error(("run", "window"), "[run] window must be smaller than n_steps")
    etas = np.linspace(g["eta_min"], g["eta_max"], g["n_eta"])
    n, tail = run["n_traj"], run["tail"]
    x, y, eta_s, *_ = theory.symbols()
    gd_map = sp.lambdify((x, y, eta_s), theory.update("gd"), "numpy")

    shape = (etas.size, n)
    final_s = np.full(shape, np.nan)
    win_mean = np.full(shape, np.nan)
    win_std = np.full(shape, np.nan)
    tail_s = np.full(shape + (tail,), np.nan)
    tail_xy = np.full(shape + (tail,), np.nan)
    diverged = np.zeros(shape, bool)
    start = time.perf_counter()
    x0s = y0s = None
    for i, eta in enumerate(etas):
        model = Minimalist(eta=float(eta), **m)
        if x0s is None:
            x0s, y0s = model.initial_points(n, run["seed"])
        ds = simulate(model, "gd", n_traj=n, n_steps=run["n_steps"], burn_in=run["n_steps"] - run["window"],
                      seed=run["seed"], backend=run["backend"], progress=False)
        alive = ~ds.diverged.values
        diverged[i] = ~alive
        final_s[i] = ds.final_sharpness.values
        win_mean[i] = ds.sharpness_time_mean.values
        win_std[i] = np.sqrt(np.maximum(ds.sharpness_time_meansq.values - win_mean[i] ** 2, 0.0))
        xs, ys = ds.final_x.values.copy(), ds.final_y.values.copy()
        with np.errstate(all="ignore"):
            for k in range(tail):
                xs, ys = gd_map(xs, ys, float(eta))
                bad = ~(np.abs(xs) < Minimalist.divergence_bound) | ~(np.abs(ys) < Minimalist.divergence_bound)
                xs[bad], ys[bad] = np.nan, np.nan
                tail_s[i, :, k] = theory.sharpness(xs, ys)
                tail_xy[i, :, k] = xs * ys
        if progress:
            print(f"\r  eta {i + 1}/{etas.size}  ({time.perf_counter() - start:.0f} s)", end="", file=sys.stderr)
    if progress:
        print(file=sys.stderr)
    gf = theory.gf_limit_sharpness(x0s, y0s)
    ds = xr.Dataset(
        {
            "final_sharpness": (("eta", "traj"), final_s, {"long_name": "exact sharpness after n_steps"}),
            "window_sharpness_mean": (("eta", "traj"), win_mean, {"long_name": "time mean of S over the window"}),
            "window_sharpness_std": (("eta", "traj"), win_std, {"long_name": "time std of S over the window"}),
            "tail_sharpness": (("eta", "traj", "tail"), tail_s, {"long_name": "S of the late iterates"}),
            "tail_xy": (("eta", "traj", "tail"), tail_xy, {"long_name": "x*y of the late iterates"}),
            "diverged": (("eta", "traj"), diverged),
            "fraction_diverged": ("eta", diverged.mean(axis=1)),
            "initial_x": ("traj", x0s), "initial_y": ("traj", y0s),
            "sharpness_gf_limit": ("traj", gf, {"long_name": "sharpness of the gradient-flow limit"}),
        },
        coords={"eta": etas, "traj": np.arange(n), "tail": np.arange(1, tail + 1)},
        attrs={"model": "minimalist", "method": "gd", "n_steps": run["n_steps"], "window": run["window"],
               "seed": str(run["seed"]), "backend": run["backend"], **{f"init_{k}": v for k, v in m.items()}},
    )
    # period of the late iterates (1, 2, 4, 8, or 0 for none of these) and a summary
    period = np.zeros(shape, int)
    for p in (8, 4, 2, 1):
        same = np.all(np.abs(tail_xy[..., p:] - tail_xy[..., :-p]) <= 1e-9, axis=-1) if tail > p else None
        if same is not None:
            period[same] = p
    ds["period"] = (("eta", "traj"), period, {"long_name": "period of the late iterates (0: none up to 8)"})
    conv = (period == 1) & ~diverged
    edge = conv & (gf[None, :] > 2 / etas[:, None])
    ratio = np.where(edge, final_s * etas[:, None] / 2, np.nan)
    two = (period == 2) & ~diverged
    n_alive = np.maximum((~diverged).sum(axis=1), 1)
    frac2 = two.sum(axis=1) / n_alive
    ds["fraction_period_2"] = ("eta", frac2, {"long_name": "fraction of surviving trajectories on a period-2 orbit"})
    summary = {
        "n_eta": int(etas.size), "n_traj": n,
        "fraction_converged": float(conv.mean()),
        "edge_ratio_eta_S_over_2_median": float(np.nanmedian(ratio)) if np.isfinite(ratio).any() else None,
        "edge_ratio_eta_S_over_2_max": float(np.nanmax(ratio)) if np.isfinite(ratio).any() else None,
        "eta_first_period_2_majority": float(etas[frac2 > 0.5].min()) if (frac2 > 0.5).any() else None,
        "eta_first_all_diverged": float(etas[diverged.all(axis=1)].min()) if diverged.all(axis=1).any() else None,
        "wall_time_s": time.perf_counter() - start,
    }
    fig = _plot_bifurcation(ds, cfg)
    figs = save_figure(fig, out_dir, cfg["name"], figure_formats(cfg))
    return write_outputs(cfg, out_dir, ds, summary, figs)


def _plot_bifurcation(ds, cfg):
    fig, (a1, a2, a3) = new_figure(3, 1, width=7.0, height=3.0, sharex=True,
                                   gridspec_kw={"height_ratios": [3, 3, 1.2]})
    etas = ds.eta.values
    e3 = np.broadcast_to(etas[:, None, None], ds.tail_sharpness.shape)
    s = ds.tail_sharpness.values * e3 / 2
    a1.plot(e3.ravel(), s.ravel(), ",", color="black", alpha=0.5, rasterized=True)
    gf = ds.sharpness_gf_limit.values
    a1.fill_between(etas, etas * gf.min() / 2, etas * gf.max() / 2, color=COLORS[0], alpha=0.12, lw=0,
                    label="gradient-flow limit (range over initialisations)")
    a1.axhline(1.0, color=COLORS[1], lw=1, ls="--", label=r"$S=2/\eta$")
    a1.set_ylim(0, min(2.5, np.nanmax(s) * 1.05 if np.isfinite(s).any() else 2.5))
    a1.set_ylabel(r"$\eta S/2$ (late iterates)")
    a1.legend(loc="upper left", fontsize=8)
    a1.set_title(cfg.get("title") or r"GD on $f=\frac14(x^2y^2-1)^2$: bifurcation diagram")
    xy = ds.tail_xy.values
    a2.plot(e3.ravel(), np.abs(xy).ravel(), ",", color="black", alpha=0.5, rasterized=True)
    a2.axhline(1.0, color=COLORS[1], lw=1, ls="--", label=r"minimisers $|xy|=1$")
    a2.set_ylabel(r"$|xy|$ (late iterates)")
    a2.legend(loc="upper left", fontsize=8)
    a3.plot(etas, ds.fraction_diverged.values, color=COLORS[1], lw=1.2)
    a3.set_ylabel("diverged")
    a3.set_ylim(-0.05, 1.05)
    a3.set_xlabel(r"step size $\eta$")
    return fig


