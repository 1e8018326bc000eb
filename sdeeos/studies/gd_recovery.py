r"""Study ``gd_recovery``: does :math:`B \to n` recover GD, and what does GD's sharpness do on average?

Two sweeps of the reduced model:

* ``batch``: SGD with :math:`\sigma_u^2 = \sigma_1^2 a(B, n)` for batch sizes up to :math:`B=n`,
  where the noise vanishes and the point runs full-batch GD (method ``gd``);
* ``gd``: deterministic GD started at :math:`x_0 = k\,\delta` (:math:`\delta^2 = 2\alpha/\beta`),
  recorded over a number of cycles of period :math:`2\pi/(\eta\sqrt{2\alpha})`.

GD started on the period-2 orbit :math:`x=\pm\delta, y=0` stays there (:math:`S \equiv 2/\eta`), but
that orbit is weakly unstable: started elsewhere, GD makes relaxation cycles that grow every cycle
by the factor of the linearised two-step map (derived from the same SymPy update), so GD has no
stationary state.  SGD's noise damps those cycles; as :math:`B \to n` the closure predicts
:math:`\Delta S \propto \sigma_u^2 \to 0`, and the study measures how the stationary gap actually
behaves in that limit.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import sympy as sp
import xarray as xr

from ..models import SelfStabilization
from ..plotting import (
    COLORS,
    mark_edge,
    new_figure,
    plot_gap_points,
    plot_sharpness_traces,
    save_figure,
)
from ..sweeps import sweep
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

__all__ = ["run", "SCHEMA", "orbit_growth_per_cycle"]

SCHEMA = {
    "model": model_table(("eta", "alpha", "beta")),
    "batch_noise": batch_noise_table(),
    "grid": Table(required=True, fields={
        "batch_size": Field("list[int]", required=True, low=1, min_len=2, doc="batch sizes, up to n_data (GD)"),
    }),
    "gd": Table(doc="deterministic GD runs", fields={
        "x0_over_delta": Field("list[float]", default=[1.0, 0.95, 0.8], low=0.0, low_open=True, min_len=1,
                               doc="starting points x0 = k * sqrt(2 alpha / beta)"),
        "n_cycles": Field("float", default=30.0, low=1.0, doc="run length in cycle periods 2 pi/(eta sqrt(2 alpha))"),
        "record_every": Field("int", default=2, low=1),
    }),
    "run": RUN_TABLE,
    "output": OUTPUT_TABLE,
}


def orbit_growth_per_cycle(eta: float, alpha: float, beta: float) -> float:
    r"""Amplitude growth per cycle of GD near the period-2 orbit, from the symbolic update.

    The Jacobian of two GD steps at :math:`(\delta, 0)` is derived with SymPy from
    `sdeeos.theory.self_stabilization.reduced_update`; its eigenvalues have modulus
    :math:`|\lambda|` per two steps, and one cycle lasts `cycle_period` steps.
    """


    x, y, _, e, a, b, _ = theory.symbols()
    upd = sp.Matrix(theory.reduced_update(noisy=False))
    jac = upd.jacobian([x, y])
    vals = {e: eta, a: alpha, b: beta}
    delta = math.sqrt(float(theory.x_sq_stationary(alpha, beta)))
    j1 = np.array(jac.subs({**vals, x: delta, y: 0}), dtype=float)
    j2 = np.array(jac.subs({**vals, x: -delta, y: 0}), dtype=float)
    lam = max(abs(np.linalg.eigvals(j2 @ j1)))
    return float(lam ** (float(theory.cycle_period(eta, alpha)) / 2))


def run(cfg, out_dir: Path, *, progress: bool = True, scheduler=None) -> xr.Dataset:
    """Reduced model: the batch-size limit B -> n against full-batch GD, and GD's average sharpness."""

    require_model(cfg, ["eta", "alpha", "beta"], ())
    m, bn = cfg["model"], cfg["batch_noise"]
    eta, alpha, beta = m["eta"], m["alpha"], m["beta"]
    n_data = bn["n_data"]
    bs = list(cfg["grid"]["batch_size"])
    if max(bs) > n_data:
        raise cfg.error(("grid", "batch_size"), f"[grid] batch_size must be <= n_data = {n_data}, got {max(bs)}")
    ds = sweep(SelfStabilization, {"batch_size": bs}, params={**m, **bn}, **sweep_kwargs(cfg),
               store=sweep_store(cfg, out_dir, "batch"), scheduler=scheduler, progress=progress)
    ds["converged"] = converged(ds)
    ds["sigma_sq"] = ds["sigma"] ** 2
    ds["gap_over_eta_alpha"] = ds["sharpness_gap"] / (eta * alpha)
    ds["gap_over_eta_alpha"].attrs.update(long_name="sharpness gap in units of eta*alpha")

    # deterministic GD from a few starting points
    gd = cfg["gd"]
    delta = math.sqrt(float(theory.x_sq_stationary(alpha, beta)))
    period = float(theory.cycle_period(eta, alpha))
    n_gd = max(4 * gd["record_every"], int(round(gd["n_cycles"] * period)))
    x0s = [k * delta for k in gd["x0_over_delta"]]
    gds = sweep(SelfStabilization, {"x0": x0s}, params=dict(eta=eta, alpha=alpha, beta=beta, sigma=0.0),
                method="gd", n_traj=1, n_steps=n_gd, burn_in=0, record_every=gd["record_every"], n_paths=0,
                path_variables=("sharpness", "y"), store=sweep_store(cfg, out_dir, "gd"), scheduler=scheduler,
                progress=progress)
    steps = gds["step"].values
    y = gds["path_y_ensemble_mean"].values  # (x0, step); one deterministic trajectory
    per_cycle = int(round(period / gd["record_every"]))
    growth, mean_gap = [], []
    for row in y:
        ok = np.isfinite(row)
        n_c = int(ok.sum() // per_cycle)
        amps = np.array([np.nanmax(np.abs(row[i * per_cycle:(i + 1) * per_cycle])) for i in range(n_c)])
        k = max(1, n_c // 4)
        first, last = amps[:k].mean(), amps[-k:].mean()
        growth.append((last / first) ** (1.0 / max(n_c - k, 1)) if first > 0 else math.nan)
        mean_gap.append(float(-np.nanmean(row)))
    growth_theory = orbit_growth_per_cycle(eta, alpha, beta)
    gds = gds.rename({"x0": "gd_x0", "step": "gd_step"})
    gds = gds[[v for v in ("path_sharpness_ensemble_mean", "path_y_ensemble_mean", "sharpness_gap") if v in gds]]
    gds = gds.rename({v: f"gd_{v}" for v in gds.data_vars})
    gds["gd_x0_over_delta"] = ("gd_x0", np.asarray(gd["x0_over_delta"], float))
    gds["gd_growth_per_cycle"] = ("gd_x0", np.asarray(growth))
    gds["gd_growth_per_cycle"].attrs.update(long_name="measured growth of the y-oscillation amplitude per cycle")
    gds.attrs = {}
    out = xr.merge([ds, gds], compat="override", combine_attrs="override")
    out.attrs.update(gd_growth_per_cycle_theory=growth_theory, gd_cycle_period=period, gd_n_steps=n_gd)

    summary = {
        "eta_alpha": eta * alpha,
        "gap_by_batch_size": {str(int(b)): {
            "sigma_sq": float(ds["sigma_sq"].sel(batch_size=b)), "gap": float(ds["sharpness_gap"].sel(batch_size=b)),
            "gap_stderr": float(ds["sharpness_gap_stderr"].sel(batch_size=b)),
            "closure_exact": float(ds["sharpness_gap_predicted_exact"].sel(batch_size=b))
            if "sharpness_gap_predicted_exact" in ds else None,
            "gap_over_eta_alpha": float(ds["gap_over_eta_alpha"].sel(batch_size=b)),
            "converged": bool(ds["converged"].sel(batch_size=b))} for b in ds["batch_size"].values},
        "gd_from_x0_over_delta": {f"{k:g}": {"time_mean_S_minus_2_over_eta": -g, "growth_per_cycle": gr}
                                  for k, g, gr in zip(gd["x0_over_delta"], mean_gap, growth)},
        "gd_growth_per_cycle_theory": growth_theory,
        "gd_cycles": n_gd / period,
    }
    figures = _figures(cfg, out_dir, out, summary, steps, delta, period)
    return write_outputs(cfg, out_dir, out, summary, figures)


def _figures(cfg, out_dir, ds, summary, gd_steps, delta, period) -> list:

    m, bn = cfg["model"], cfg["batch_noise"]
    eta, alpha, beta = m["eta"], m["alpha"], m["beta"]
    n_data = bn["n_data"]
    fmts = figure_formats(cfg)
    figures = []

    # 1. gap vs noise variance, down to the GD limit
    fig, ax = new_figure(width=7.2, height=5.0)
    sgd = ds["sigma_sq"] > 0
    s2 = ds["sigma_sq"].where(sgd, drop=True)
    sub = ds.where(sgd, drop=True)
    plot_gap_points(ax, s2, sub["sharpness_gap"], sub["sharpness_gap_stderr"], color=COLORS[0],
                    label="SGD, measured (hollow: not stationary)", converged=sub["converged"].values.astype(bool))
    line = np.geomspace(float(s2.min()) / 2, float(s2.max()) * 2, 300)
    ax.plot(line, theory.gap_exact(eta, alpha, beta, np.sqrt(line), outside="nan"), color="black", lw=1.2,
            label="closure (exact)")
    ax.axhline(eta * alpha, color="grey", lw=0.8, ls=":")
    ax.annotate(r"$\eta\alpha$", xy=(0.01, eta * alpha), xycoords=("axes fraction", "data"), va="bottom",
                fontsize=8, color="dimgrey")
    ax.axvline(4 * alpha**2 / beta, color="grey", lw=1, ls="-.")
    ax.annotate(r"$\sigma_u^2 = 4\alpha^2/\beta$", xy=(4 * alpha**2 / beta, 0.98), xycoords=("data", "axes fraction"),
                xytext=(4, 0), textcoords="offset points", va="top", fontsize=8, color="dimgrey")
    for b, s2v, g in zip(sub["batch_size"].values, s2.values, sub["sharpness_gap"].values):
        if np.isfinite(g) and g > 0:
            ax.annotate(f"B={int(b)}", xy=(s2v, g), xytext=(4, 4), textcoords="offset points", fontsize=7,
                        color=COLORS[0])
    gd_pts = ds["batch_size"].values[~sgd.values]
    if gd_pts.size:
        ax.text(0.98, 0.03, f"B = n = {n_data}: full-batch GD from the period-2 orbit,\n"
                            r"$S_t \equiv 2/\eta$ exactly ($\Delta S = 0$, off the log axis)",
                transform=ax.transAxes, ha="right", va="bottom", fontsize=8,
                bbox=dict(boxstyle="round", fc="white", ec="grey", alpha=0.9))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(r"projected noise variance $\sigma_u^2 = \sigma_1^2 (n-B)/(B(n-1))$")
    ax.set_ylabel(r"sharpness gap $\Delta S = 2/\eta - \langle S\rangle$")
    ax.set_title((cfg.get("title") or "B → n against GD") + "\n"
                 + rf"$\eta={eta:g}$, $\alpha={alpha:g}$, $\beta={beta:g}$, $n={n_data}$, $\sigma_1={bn['sigma_1']:g}$",
                 fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(True, which="both", alpha=0.2)
    figures += save_figure(fig, out_dir, f"{cfg['name']}_gap_to_gd", fmts)

    # 2. traces: GD from the orbit and off it (left), SGD near B = n (right)
    fig, (ax1, ax2) = new_figure(1, 2, width=6.0, height=4.6)
    for k, x0 in enumerate(ds["gd_x0"].values):
        kk = float(ds["gd_x0_over_delta"].values[k])
        gr = float(ds["gd_growth_per_cycle"].values[k])
        path = ds["gd_path_sharpness_ensemble_mean"].values[k]
        plot_sharpness_traces(ax1, gd_steps / period, None, path, color=COLORS[k % len(COLORS)],
                              label=rf"$x_0={kk:g}\,\delta$" + ("" if not math.isfinite(gr) or kk == 1.0
                                                                 else f": ×{gr:.4f}/cycle"))
    mark_edge(ax1, eta, label=False)
    ax1.set_xlabel(r"cycles ($t\,\eta\sqrt{2\alpha}/2\pi$)")
    ax1.set_ylabel(r"sharpness $S_t$")
    ax1.set_title("full-batch GD: cycles around 2/η grow\n"
                  f"(linearised two-step map: ×{summary['gd_growth_per_cycle_theory']:.4f} per cycle)", fontsize=9)
    ax1.legend(fontsize=8, loc="lower left")
    if "path_sharpness" in ds:
        steps = ds["step"].values
        near = [b for b in ds["batch_size"].values if b < n_data][-3:]
        window = 8 * period
        for k, b in enumerate(near):
            p = ds.sel(batch_size=b)
            path = p["path_sharpness"].values[0]
            ok = np.isfinite(path)
            t_end = steps[ok][-1]
            sel = ok & (steps >= t_end - window)
            ax2.plot((steps[sel] - t_end) / period, path[sel], color=COLORS[(k + 3) % len(COLORS)], lw=0.9,
                     label=rf"$B={int(b)}$, $\sigma_u^2={float(p['sigma_sq']):.2g}$, "
                           rf"$\Delta S={float(p['sharpness_gap']):.3f}$")
        mark_edge(ax2, eta)
        ax2.set_xlabel("cycles before the end of the run")
        ax2.set_ylabel(r"sharpness $S_t$")
        ax2.set_title("SGD near B = n (stationary, one trajectory each):\n"
                      "noise-driven relaxation cycles of bounded amplitude", fontsize=9)
        ax2.legend(fontsize=7, loc="lower left")
    lo = float(np.nanpercentile(ds["gd_path_sharpness_ensemble_mean"].values, 0.5))
    hi = float(np.nanpercentile(ds["gd_path_sharpness_ensemble_mean"].values, 99.5))
    pad = max(hi - lo, 1e-6) * 0.1
    ax1.set_ylim(lo - pad, hi + pad)
    figures += save_figure(fig, out_dir, f"{cfg['name']}_traces", fmts)
    return figures
