r"""Study kind ``sde_order`` (``studies/sde_order.toml``): orders of the SDE integrators on an OU process.

Strong and weak errors of Euler–Maruyama and the weak order-2 scheme, measured against the
pathwise-exact solution on the same Brownian path, with the exact error of each (linear) scheme from
its moment recursion and fitted orders.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
import xarray as xr

from .._simulate import simulate
from .._statistics import mean_stderr
from ..models import OrnsteinUhlenbeck
from ..plotting import COLORS, loglog_fit, new_figure, save_figure
from ..theory import sde as ou
from ..theory import sde_schemes
from ._common import OUTPUT_TABLE, figure_formats, run_table, write_outputs
from ._schema import Field, Table

__all__ = ["SCHEMA", "run"]


SCHEMA = {
    "model": Table(doc="OU process dX = -rate (X - long_run_mean) dt + diffusion dW", fields={
        "rate": Field("float", default=1.0, low=0.0, low_open=True),
        "diffusion": Field("float", default=0.5, low=0.0, low_open=True),
        "long_run_mean": Field("float", default=0.0),
        "x0": Field("float", default=2.0),
    }),
    "grid": Table(doc="integration steps", fields={
        "T": Field("float", default=1.0, low=0.0, low_open=True, doc="final time"),
        "log2_dt": Field("list[int]", default=[-1, -2, -3, -4, -5, -6], min_len=3, doc="dt = 2**k (T/dt integer)"),
    }),
    "run": run_table(n_traj=Field("int", default=131072, low=2)),
    "output": OUTPUT_TABLE,
}


def run(cfg, out_dir: Path, *, progress: bool = True) -> xr.Dataset:
    """Strong and weak convergence orders of EM and weak order 2 on an OU process (diagnostics plot)."""
    m, g, run = cfg["model"], cfg["grid"], cfg["run"]
    dts = np.array([2.0**k for k in sorted(g["log2_dt"], reverse=True)])
    steps = np.round(g["T"] / dts).astype(int)
    if np.any(np.abs(steps * dts - g["T"]) > 1e-12 * g["T"]):
        raise cfg.error(("grid", "log2_dt"), "[grid] T / 2**log2_dt must be an integer for every entry")
    schemes = ("em", "weak2")
    names = ("strong_rms", "weak_mean", "weak_m2")
    meas = {f"{k}{s}": np.full((len(schemes), dts.size), np.nan) for k in names for s in ("", "_stderr")}
    theo = {f"{k}_theory": np.full((len(schemes), dts.size), np.nan) for k in names}
    start = time.perf_counter()
    for j, (dt, n_steps) in enumerate(zip(dts, steps)):
        model = OrnsteinUhlenbeck(rate=m["rate"], diffusion=m["diffusion"], dt=float(dt),
                                  long_run_mean=m["long_run_mean"], x0=m["x0"])
        runs = {s: simulate(model, s, n_traj=run["n_traj"], n_steps=int(n_steps), burn_in=0, seed=run["seed"],
                            backend=run["backend"], progress=False).final_x.values for s in schemes + ("exact",)}
        ref = runs["exact"]
        exact = model.exact_transition()
        for i, s in enumerate(schemes):
            d = runs[s] - ref
            msq, msq_se = mean_stderr(d**2)
            meas["strong_rms"][i, j] = math.sqrt(msq)
            meas["strong_rms_stderr"][i, j] = msq_se / (2 * math.sqrt(msq))
            meas["weak_mean"][i, j], meas["weak_mean_stderr"][i, j] = mean_stderr(d)
            meas["weak_m2"][i, j], meas["weak_m2_stderr"][i, j] = mean_stderr(runs[s] ** 2 - ref**2)
            jm = sde_schemes.joint_moments(model.linear_coefficients(s), exact, int(n_steps), m["x0"])
            theo["strong_rms_theory"][i, j] = math.sqrt(jm["mse"])
            theo["weak_mean_theory"][i, j] = jm["mean_x"] - jm["mean_y"]
            theo["weak_m2_theory"][i, j] = jm["m2_x"] - jm["m2_y"]
        if progress:
            print(f"\r  dt {j + 1}/{dts.size}  ({time.perf_counter() - start:.0f} s)", end="", file=sys.stderr)
    if progress:
        print(file=sys.stderr)
    # consistency of the reference: the exact transition's moments are the OU's (sde.py)
    T = g["T"]
    mean_T = float(ou.ou_mean(T, m["x0"], m["rate"], m["long_run_mean"]))
    var_T = float(ou.ou_variance(T, m["rate"], m["diffusion"]))
    ds = xr.Dataset({k: (("scheme", "dt"), v) for k, v in {**meas, **theo}.items()},
                    coords={"scheme": list(schemes), "dt": dts, "n_steps": ("dt", steps)},
                    attrs={"model": "ou", **{k: v for k, v in m.items()}, "T": T, "n_traj": run["n_traj"],
                           "seed": str(run["seed"]), "backend": run["backend"],
                           "ou_mean_T": mean_T, "ou_variance_T": var_T,
                           "reference": "pathwise-exact OU transition on the same Brownian path (method 'exact')"})
    fits = {}
    for s in schemes:
        for k in names:
            y = np.abs(ds[k].sel(scheme=s).values)
            se = ds[f"{k}_stderr"].sel(scheme=s).values
            ok = y > 3 * se  # fit only errors resolved from Monte Carlo noise
            f = loglog_fit(dts[ok], y[ok])
            fits[f"{s}_{k}"] = {"order": f.slope, "ci95": [f.ci_low, f.ci_high], "n_points": f.n}
    summary = {"fitted_orders": fits, "expected": {"em": {"strong": 1.0, "weak": 1.0},
                                                   "weak2": {"strong": 1.0, "weak": 2.0}},
               "note": "additive noise: Euler-Maruyama has strong order 1 (1/2 only for multiplicative noise)",
               "wall_time_s": time.perf_counter() - start}
    fig = _plot_sde_order(ds, fits, cfg)
    figs = save_figure(fig, out_dir, cfg["name"], figure_formats(cfg))
    return write_outputs(cfg, out_dir, ds, summary, figs)


def _plot_sde_order(ds, fits, cfg):
    fig, (a1, a2) = new_figure(1, 2, width=5.2, height=4.2)
    dts = ds.dt.values
    labels = {"em": "Euler–Maruyama", "weak2": "weak order 2"}
    for i, s in enumerate(ds.scheme.values):
        c = COLORS[i]
        f = fits[f"{s}_strong_rms"]
        a1.errorbar(dts, ds.strong_rms.sel(scheme=s), ds.strong_rms_stderr.sel(scheme=s), fmt="o", color=c,
                    ms=4, capsize=2, label=f"{labels[s]}: order {f['order']:.2f}")
        a1.plot(dts, ds.strong_rms_theory.sel(scheme=s), "--", color=c, lw=1)
        for k, mk, name in (("weak_mean", "o", r"$\mathbb{E}X_T$"), ("weak_m2", "s", r"$\mathbb{E}X_T^2$")):
            f = fits[f"{s}_{k}"]
            y = np.abs(ds[k].sel(scheme=s).values)
            a2.errorbar(dts, y, ds[f"{k}_stderr"].sel(scheme=s), fmt=mk, color=c, ms=4, capsize=2,
                        mfc="white" if k == "weak_m2" else c,
                        label=f"{labels[s]}, {name}: order {f['order']:.2f}")
            a2.plot(dts, np.abs(ds[f"{k}_theory"].sel(scheme=s)), "--" if k == "weak_mean" else ":", color=c, lw=1)
    for ax, title in ((a1, r"strong error $(\mathbb{E}|X^h_T-X_T|^2)^{1/2}$"),
                      (a2, r"weak error $|\mathbb{E}\varphi(X^h_T)-\mathbb{E}\varphi(X_T)|$")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(r"step $dt$")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7, loc="lower right")
    a1.set_ylabel("error")
    for ax in (a1, a2):
        ax.annotate("points: simulation ± SE;  lines: exact error of the scheme", xy=(0.02, 0.97),
                    xycoords="axes fraction", va="top", fontsize=7, color="0.3")
    fig.suptitle(cfg.get("title") or "SDE integrators on an OU process", fontsize=11)
    return fig


