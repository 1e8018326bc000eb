r"""Studies of the toy losses and the SDE integrators (kinds ``minimalist_bifurcation``, ``sde_order``, ``sde_vs_sgd``).

Each runner has the study signature ``runner(config, out_dir, *, progress=True) -> xarray.Dataset``,
writes ``<name>.nc``, ``<name>_summary.json`` and ``<name>.png/.pdf`` under ``out_dir``, and is
registered with `sdeeos._study.register_study_runner` (with a schema: every key of the TOML file is
checked, with file:line in errors) when this module is imported.  Run one with::

    python -m sdeeos.toy_studies studies/bifurcation.toml [--out DIR]

* ``minimalist_bifurcation``: GD on :math:`f=\tfrac14(x^2y^2-1)^2` from many random initialisations
  (one ensemble per step size) over a grid of :math:`\eta`; the late iterates of :math:`\eta S/2`
  and :math:`xy` against :math:`\eta` (the bifurcation diagram), with the gradient-flow limit.
* ``sde_order``: strong and weak errors of Euler–Maruyama and the weak order-2 scheme on an OU
  process, measured against the pathwise-exact solution on the same Brownian path, with the exact
  error of each (linear) scheme and fitted orders.
* ``sde_vs_sgd``: stationary / final sharpness of GD, SGD (additive and multiplicative noise) and
  of the stochastic modified equation on the minimalist loss over :math:`\eta`; the SME against
  :math:`dt/\eta`; and SGD vs its SME on the cubic-Taylor loss, where SGD settles at
  :math:`2/\eta-\Delta S` and the SME sharpens through :math:`2/\eta`.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import sympy as sp
import xarray as xr

from ._study import Field, Table, load_study, register_study_runner, run_study
from ._studies._common import OUTPUT_TABLE, figure_formats, write_outputs
from .plotting import COLORS, loglog_fit, new_figure, save_figure

__all__ = ["run_bifurcation", "run_sde_order", "run_sde_vs_sgd", "main"]


def _run_table(**defaults) -> Table:
    fields = {
        "n_traj": Field("int", default=defaults.get("n_traj", 256), low=1, doc="trajectories per ensemble"),
        "seed": Field("int", default=0, low=0, high=2**64 - 1),
        "backend": Field("str", default="numba"),
    }
    for k, f in defaults.items():
        if isinstance(f, Field):
            fields[k] = f
    return Table(doc="simulation settings", fields=fields)


def _stat(values) -> tuple[float, float]:
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else float("nan")


# ============================================================================ bifurcation
BIFURCATION_SCHEMA = {
    "model": Table(doc="initialisation box of the minimalist loss", fields={
        "x0": Field("float", default=2.0), "y0": Field("float", default=0.5),
        "x0_spread": Field("float", default=0.5, low=0.0), "y0_spread": Field("float", default=0.15, low=0.0),
    }),
    "grid": Table(required=True, doc="step sizes", fields={
        "eta_min": Field("float", required=True, low=0.0, low_open=True),
        "eta_max": Field("float", required=True, low=0.0, low_open=True),
        "n_eta": Field("int", default=100, low=2),
    }),
    "run": _run_table(
        n_traj=Field("int", default=256, low=1, doc="initialisations per step size"),
        n_steps=Field("int", default=6000, low=2, doc="GD steps"),
        window=Field("int", default=1000, low=1, doc="the time averages use the last `window` steps"),
        tail=Field("int", default=16, low=1, doc="late iterates kept per trajectory (after n_steps)"),
    ),
    "output": OUTPUT_TABLE,
}


@register_study_runner("minimalist_bifurcation", schema=BIFURCATION_SCHEMA)
def run_bifurcation(cfg, out_dir: Path, *, progress: bool = True) -> xr.Dataset:
    """Bifurcation diagram of GD on the minimalist loss over eta (many initialisations per eta)."""
    from . import simulate
    from .models import Minimalist
    from .theory import minimalist as theory

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


# ============================================================================ SDE order
SDE_ORDER_SCHEMA = {
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
    "run": _run_table(n_traj=Field("int", default=131072, low=2)),
    "output": OUTPUT_TABLE,
}


@register_study_runner("sde_order", schema=SDE_ORDER_SCHEMA)
def run_sde_order(cfg, out_dir: Path, *, progress: bool = True) -> xr.Dataset:
    """Strong and weak convergence orders of EM and weak order 2 on an OU process (diagnostics plot)."""
    from . import simulate
    from .models import OrnsteinUhlenbeck
    from .theory import sde as ou
    from .theory import sde_schemes

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
            msq, msq_se = _stat(d**2)
            meas["strong_rms"][i, j] = math.sqrt(msq)
            meas["strong_rms_stderr"][i, j] = msq_se / (2 * math.sqrt(msq))
            meas["weak_mean"][i, j], meas["weak_mean_stderr"][i, j] = _stat(d)
            meas["weak_m2"][i, j], meas["weak_m2_stderr"][i, j] = _stat(runs[s] ** 2 - ref**2)
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


# ============================================================================ SDE vs SGD
SDE_VS_SGD_SCHEMA = {
    "minimalist": Table(required=True, doc="minimalist loss: sharpness over eta", fields={
        "x0": Field("float", default=6.0), "y0": Field("float", default=0.05),
        "x0_spread": Field("float", default=0.5, low=0.0), "y0_spread": Field("float", default=0.02, low=0.0),
        "sigma_add": Field("float", default=0.01, low=0.0, low_open=True, doc="additive noise std"),
        "sigma_mult": Field("float", default=0.1, low=0.0, low_open=True, doc="multiplicative noise std"),
        "eta": Field("list[float]", required=True, min_len=2, low=0.0, low_open=True),
        "n_steps": Field("int", default=20000, low=4, doc="SGD steps (the SME runs the same time t = n_steps*eta)"),
        "window_fraction": Field("float", default=0.25, low=0.0, low_open=True, high=1.0,
                                 doc="time averages over the last fraction of the run"),
        "dt_over_eta": Field("float", default=0.125, low=0.0, low_open=True, doc="SME step in units of eta"),
        "scan_eta": Field("float", default=0.05, low=0.0, low_open=True, doc="eta of the dt/eta scan"),
        "scan_dt_over_eta": Field("list[float]", default=[1.0, 0.5, 0.25, 0.125, 0.0625], min_len=2,
                                  low=0.0, low_open=True),
    }),
    "cubic_taylor": Table(required=True, doc="cubic Taylor loss: SGD vs its SME over time", fields={
        "eta": Field("float", default=0.01, low=0.0, low_open=True),
        "alpha": Field("float", default=1.0, low=0.0, low_open=True),
        "beta": Field("float", default=100.0, low=0.0, low_open=True),
        "d": Field("int", default=2, low=2),
        "sigma": Field("float", default=5.0, low=0.0, low_open=True),
        "n_steps": Field("int", default=20000, low=4),
        "dt_over_eta": Field("float", default=0.25, low=0.0, low_open=True),
        "record_every": Field("int", default=50, low=1, doc="in SGD steps"),
    }),
    "run": _run_table(n_traj=Field("int", default=64, low=2)),
    "output": OUTPUT_TABLE,
}


def _run_window(simulate, model, method, n_steps, frac, run, **kw):
    return simulate(model, method, n_traj=run["n_traj"], n_steps=n_steps,
                    burn_in=n_steps - max(1, int(round(frac * n_steps))), seed=run["seed"],
                    backend=run["backend"], progress=False, **kw)


@register_study_runner("sde_vs_sgd", schema=SDE_VS_SGD_SCHEMA)
def run_sde_vs_sgd(cfg, out_dir: Path, *, progress: bool = True) -> xr.Dataset:
    """Stationary sharpness of the SME against discrete GD/SGD: where the SDE misses 2/eta."""
    from . import simulate
    from .models import CubicTaylor, CubicTaylorSME, Minimalist, MinimalistSME
    from .theory import minimalist as mtheory
    from .theory import self_stabilization as reduced

    mc, cc, run = cfg["minimalist"], cfg["cubic_taylor"], cfg["run"]
    start = time.perf_counter()
    box = {k: mc[k] for k in ("x0", "y0", "x0_spread", "y0_spread")}
    etas = np.array(sorted(mc["eta"]))
    n = mc["n_steps"]
    # --- (a) sharpness over eta ---------------------------------------------------------------
    series = {  # name: (builder, method, value)
        "gd": (lambda e: Minimalist(eta=e, **box), "gd", "final_sharpness"),
        "sgd_additive": (lambda e: Minimalist(eta=e, sigma=mc["sigma_add"], **box), "sgd", "sharpness"),
        "sgd_multiplicative": (lambda e: Minimalist(eta=e, sigma=mc["sigma_mult"], **box), "sgd-mult", "final_sharpness"),
        "sme_additive_em": (lambda e: MinimalistSME(eta=e, sigma=mc["sigma_add"], dt=e * mc["dt_over_eta"],
                                                    base_method="sgd", **box), "em", "sharpness"),
        "sme_multiplicative_em": (lambda e: MinimalistSME(eta=e, sigma=mc["sigma_mult"], dt=e * mc["dt_over_eta"],
                                                          base_method="sgd-mult", **box), "em", "sharpness"),
        "sme_multiplicative_weak2": (lambda e: MinimalistSME(eta=e, sigma=mc["sigma_mult"], dt=e * mc["dt_over_eta"],
                                                             base_method="sgd-mult", **box), "weak2", "sharpness"),
    }
    data = {k: np.full(etas.size, np.nan) for k in series}
    data.update({f"{k}_stderr": np.full(etas.size, np.nan) for k in series})
    data.update({f"{k}_n_diverged": np.zeros(etas.size, int) for k in series})
    gf = np.full(etas.size, np.nan)
    for i, eta in enumerate(etas):
        for name, (build, method, var) in series.items():
            model = build(float(eta))
            steps = n if not name.startswith("sme") else int(round(n / mc["dt_over_eta"]))
            ds = _run_window(simulate, model, method, steps, mc["window_fraction"], run)
            if var == "final_sharpness":
                data[name][i], data[f"{name}_stderr"][i] = float(ds.final_sharpness_mean), float(ds.final_sharpness_mean_stderr)
            else:
                data[name][i], data[f"{name}_stderr"][i] = float(ds.sharpness_mean), float(ds.sharpness_mean_stderr)
            data[f"{name}_n_diverged"][i] = int(ds.n_diverged)
            if name == "gd":
                x0s, y0s = model.initial_points(run["n_traj"], run["seed"])
                gf[i] = float(np.mean(mtheory.gf_limit_sharpness(x0s, y0s)))
        if progress:
            print(f"\r  (a) eta {i + 1}/{etas.size}  ({time.perf_counter() - start:.0f} s)", end="", file=sys.stderr)
    lyap = np.array([mtheory.lyapunov_sharpness_bound(e, mc["sigma_mult"]) for e in etas])
    # --- (b) the SME against dt/eta at one eta -------------------------------------------------
    ratios = np.array(sorted(mc["scan_dt_over_eta"], reverse=True))
    scan = {f"scan_{b}_{s}": np.full(ratios.size, np.nan) for b in ("additive", "multiplicative") for s in ("em", "weak2")}
    scan.update({f"{k}_stderr": np.full(ratios.size, np.nan) for k in list(scan)})
    e = mc["scan_eta"]
    for j, r in enumerate(ratios):
        for b, bm, sig in (("additive", "sgd", mc["sigma_add"]), ("multiplicative", "sgd-mult", mc["sigma_mult"])):
            for s in ("em", "weak2"):
                model = MinimalistSME(eta=e, sigma=sig, dt=e * float(r), base_method=bm, **box)
                ds = _run_window(simulate, model, s, int(round(n / r)), mc["window_fraction"], run)
                scan[f"scan_{b}_{s}"][j] = float(ds.sharpness_mean)
                scan[f"scan_{b}_{s}_stderr"][j] = float(ds.sharpness_mean_stderr)
        if progress:
            print(f"\r  (b) dt/eta {j + 1}/{ratios.size}  ({time.perf_counter() - start:.0f} s)   ", end="",
                  file=sys.stderr)
    ref = {}
    for b, bm, sig in (("additive", "sgd", mc["sigma_add"]), ("multiplicative", "sgd-mult", mc["sigma_mult"])):
        ds = _run_window(simulate, Minimalist(eta=e, sigma=sig, **box), bm, n, mc["window_fraction"], run)
        ref[f"scan_sgd_{b}"] = float(ds.sharpness_mean)
    # --- (c) cubic Taylor: SGD vs its SME over time --------------------------------------------
    ct = dict(eta=cc["eta"], alpha=cc["alpha"], beta=cc["beta"], d=cc["d"], sigma=cc["sigma"])
    r = cc["dt_over_eta"]
    sgd = simulate(CubicTaylor(**ct), "sgd", n_traj=run["n_traj"], n_steps=cc["n_steps"], seed=run["seed"],
                   backend=run["backend"], record_every=cc["record_every"], progress=False)
    sme = simulate(CubicTaylorSME(**ct, dt=cc["eta"] * r), "em", n_traj=run["n_traj"],
                   n_steps=int(round(cc["n_steps"] / r)), seed=run["seed"], backend=run["backend"],
                   record_every=int(round(cc["record_every"] / r)), progress=False)
    if progress:
        print(f"\r  (c) done  ({time.perf_counter() - start:.0f} s)           ", file=sys.stderr)
    t_sgd = sgd.step.values * cc["eta"]
    t_sme = sme.step.values * cc["eta"] * r
    closure_gap = float(reduced.gap_exact(cc["eta"], cc["alpha"], cc["beta"], cc["sigma"], outside="nan"))

    ds = xr.Dataset(
        {**{k: ("eta", v) for k, v in data.items()},
         "sharpness_gf_limit": ("eta", gf, {"long_name": "mean gradient-flow-limit sharpness of the initialisations"}),
         "sharpness_lyapunov_bound": ("eta", lyap, {"long_name": "a.s. stability bound s*(sigma_mult)/eta"}),
         **{k: ("dt_over_eta", v) for k, v in scan.items()},
         "ct_sgd_sharpness_mean_path": ("t_sgd", np.nanmean(sgd.path_sharpness_u.values, axis=0)),
         "ct_sme_sharpness_mean_path": ("t_sme", np.nanmean(sme.path_sharpness_u.values, axis=0)),
         "ct_sgd_sharpness_path_0": ("t_sgd", sgd.path_sharpness_u.values[0]),
         "ct_sme_sharpness_path_0": ("t_sme", sme.path_sharpness_u.values[0])},
        coords={"eta": etas, "dt_over_eta": ratios, "t_sgd": t_sgd, "t_sme": t_sme},
        attrs={"minimalist_" + k: (v if not isinstance(v, list) else str(v)) for k, v in mc.items()}
        | {"cubic_taylor_" + k: v for k, v in cc.items()}
        | {"n_traj": run["n_traj"], "seed": str(run["seed"]), "backend": run["backend"],
           "time_unit": "t = k*eta (SGD steps times eta)", **ref,
           "ct_sgd_sharpness_gap": float(sgd.sharpness_gap), "ct_sgd_sharpness_gap_stderr": float(sgd.sharpness_gap_stderr),
           "ct_closure_gap": closure_gap},
    )
    above = lambda k: [float(x) for x in etas[ds[k].values > 2 / etas]]  # noqa: E731
    summary = {
        "minimalist_eta_where_gf_limit_exceeds_2_over_eta": [float(x) for x in etas[gf > 2 / etas]],
        "minimalist_eta_where_sme_additive_above_2_over_eta": above("sme_additive_em"),
        "minimalist_eta_where_sgd_additive_above_2_over_eta": above("sgd_additive"),
        "minimalist_eta_where_gd_above_2_over_eta": above("gd"),
        "minimalist_table": {f"{float(eta):g}": {k: float(data[k][i]) for k in series} | {"2/eta": 2 / float(eta),
                                                                                         "gf_limit": float(gf[i])}
                             for i, eta in enumerate(etas)},
        "scan_eta": e, "scan": {f"{float(r_):g}": {k: float(scan[k][j]) for k in scan if not k.endswith("stderr")}
                                for j, r_ in enumerate(ratios)} | {"sgd": ref},
        "cubic_taylor_sgd_gap": float(sgd.sharpness_gap), "cubic_taylor_sgd_gap_stderr": float(sgd.sharpness_gap_stderr),
        "cubic_taylor_closure_gap": closure_gap,
        "cubic_taylor_sme_final_mean_sharpness": float(ds.ct_sme_sharpness_mean_path.values[-1]),
        "cubic_taylor_2_over_eta": 2 / cc["eta"],
        "wall_time_s": time.perf_counter() - start,
    }
    fig = _plot_sde_vs_sgd(ds, cfg, closure_gap)
    figs = save_figure(fig, out_dir, cfg["name"], figure_formats(cfg))
    return write_outputs(cfg, out_dir, ds, summary, figs)


def _plot_sde_vs_sgd(ds, cfg, closure_gap):
    fig, (a1, a2, a3) = new_figure(1, 3, width=4.8, height=4.3)
    etas = ds.eta.values
    half = etas / 2  # plot eta*S/2: the edge of stability is the line 1
    styles = {
        "gd": ("GD", COLORS[0], "o"), "sgd_additive": ("SGD, additive", COLORS[2], "s"),
        "sgd_multiplicative": ("SGD, multiplicative", COLORS[3], "^"),
        "sme_additive_em": ("SME of additive SGD (EM)", COLORS[1], "x"),
        "sme_multiplicative_em": ("SME of mult. SGD (EM)", COLORS[4], "+"),
        "sme_multiplicative_weak2": ("SME of mult. SGD (weak 2)", COLORS[5], "1"),
    }
    inset = a1.inset_axes([0.56, 0.07, 0.42, 0.36])
    zoom = etas >= etas[np.argmax(ds.sharpness_gf_limit.values * half > 1.0)] if np.any(
        ds.sharpness_gf_limit.values * half > 1.0) else np.ones_like(etas, bool)
    for ax in (a1, inset):
        ax.axhline(1.0, color="black", ls="--", lw=1, label=r"$S=2/\eta$")
        ax.plot(etas, ds.sharpness_gf_limit * half, color="grey", lw=3, alpha=0.4, label="gradient-flow limit")
        ax.plot(etas, ds.sharpness_lyapunov_bound * half, color=COLORS[3], ls=":", lw=1,
                label=r"a.s. bound $s^*(\sigma_m)/\eta$ (mult.)")
        for k, (lab, c, mk) in styles.items():
            sel = zoom if ax is inset else slice(None)
            ax.errorbar(etas[sel], (ds[k] * half)[sel], (ds[f"{k}_stderr"] * half)[sel], fmt=mk + "-", color=c,
                        ms=5 if ax is a1 else 3, lw=0.8, capsize=2, label=lab)
    inset.set_xlim(etas[zoom].min() - 0.002, etas[zoom].max() + 0.002)
    inset.set_ylim(0.95, 1.03)
    inset.tick_params(labelsize=6)
    inset.set_title("zoom at the edge", fontsize=7)
    a1.set_xlabel(r"step size $\eta$")
    a1.set_ylabel(r"$\eta S/2$ (S final, or time mean over the last window)")
    a1.set_title(r"(a) minimalist loss: SGD stops at $2/\eta$, the SME does not", fontsize=9)
    a1.legend(fontsize=6.5, loc="upper left")
    e = float(ds.attrs["minimalist_scan_eta"])
    r = ds.dt_over_eta.values
    for (b, s), c, mk in ((("additive", "em"), COLORS[1], "x"), (("additive", "weak2"), COLORS[6], "d"),
                          (("multiplicative", "em"), COLORS[4], "+"), (("multiplicative", "weak2"), COLORS[5], "1")):
        k = f"scan_{b}_{s}"
        a2.errorbar(r, ds[k], ds[f"{k}_stderr"], fmt=mk + "-", color=c, ms=6, lw=0.8, capsize=2,
                    label=f"SME ({b}), {'EM' if s == 'em' else 'weak 2'}")
    dead_msgs = []
    for k in [k for k in ds.data_vars if k.startswith("scan_") and not k.endswith("stderr")]:
        dead = ~np.isfinite(ds[k].values)
        if dead.any():
            dead_msgs.append(f"SME {k[5:].replace('_', ', ')}: all diverged at dt/eta = "
                             + ", ".join(f"{v:g}" for v in r[dead]))
    if dead_msgs:
        a2.annotate("\n".join(dead_msgs), xy=(0.02, 0.22), xycoords="axes fraction", fontsize=6.5, color="0.3")
    a2.axhline(2 / e, color="black", ls="--", lw=1, label=r"$2/\eta$")
    a2.axhline(ds.attrs["scan_sgd_additive"], color=COLORS[2], lw=1, label="SGD, additive")
    a2.axhline(ds.attrs["scan_sgd_multiplicative"], color=COLORS[3], lw=1, ls="-.", label="SGD, multiplicative")
    a2.set_xscale("log", base=2)
    a2.set_xlabel(r"SME step $dt/\eta$ (1 = one SGD step)")
    a2.set_ylabel("time-mean sharpness")
    a2.set_title(rf"(b) minimalist, $\eta={e:g}$: SME vs its step", fontsize=9)
    a2.legend(fontsize=6.5, loc="center right")
    eta_c = float(ds.attrs["cubic_taylor_eta"])
    a3.plot(ds.t_sgd, ds.ct_sgd_sharpness_path_0, color=COLORS[2], lw=0.4, alpha=0.5)
    a3.plot(ds.t_sme, ds.ct_sme_sharpness_path_0, color=COLORS[1], lw=0.4, alpha=0.5)
    a3.plot(ds.t_sgd, ds.ct_sgd_sharpness_mean_path, color=COLORS[2], lw=1.6, label="SGD (mean, one path)")
    a3.plot(ds.t_sme, ds.ct_sme_sharpness_mean_path, color=COLORS[1], lw=1.6, label="SME, EM (mean, one path)")
    a3.axhline(2 / eta_c, color="black", ls="--", lw=1, label=r"$2/\eta$")
    if np.isfinite(closure_gap):
        a3.axhline(2 / eta_c - closure_gap, color=COLORS[2], ls=":", lw=1,
                   label=r"closure $2/\eta-\Delta S$")
    a3.set_xlabel(r"time $t=k\eta$")
    a3.set_ylabel(r"sharpness $u^\top\nabla^2L\,u$")
    a3.set_title(rf"(c) cubic Taylor ($\alpha$={ds.attrs['cubic_taylor_alpha']:g}, "
                 rf"$\beta$={ds.attrs['cubic_taylor_beta']:g}, $\sigma_u$={ds.attrs['cubic_taylor_sigma']:g})",
                 fontsize=9)
    a3.legend(fontsize=6.5, loc="upper left")
    fig.suptitle(cfg.get("title") or "Discrete SGD against its stochastic modified equation", fontsize=11)
    return fig


# ============================================================================ command line
def main(argv=None) -> int:
    """``python -m sdeeos.toy_studies FILE [--out DIR] [--no-progress]``."""
    from ._errors import ParameterError

    p = argparse.ArgumentParser(prog="python -m sdeeos.toy_studies", description=__doc__.split("\n")[0])
    p.add_argument("file")
    p.add_argument("--out", default=None, help="output directory (default: out/<name>)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    try:
        cfg = load_study(args.file)
        start = time.perf_counter()
        ds = run_study(cfg, args.out, progress=not args.no_progress)
    except ParameterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(ds.attrs.get("study_summary", ""))
    print(f"wall time {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
