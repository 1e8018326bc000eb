r"""Study kind ``sde_vs_sgd`` (``studies/sde_vs_sgd.toml``): discrete GD/SGD against their SME.

Stationary / final sharpness of GD, SGD (additive and multiplicative noise) and of the stochastic
modified equation on the minimalist loss over :math:`\eta`; the SME against :math:`dt/\eta`; and SGD
vs its SME on the cubic-Taylor loss, where SGD settles at :math:`2/\eta-\Delta S` and the SME
sharpens through :math:`2/\eta`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import xarray as xr

from .._simulate import simulate
from ..models import CubicTaylor, CubicTaylorSME, Minimalist, MinimalistSME
from ..plotting import COLORS, new_figure, save_figure
from ..theory import minimalist as mtheory
from ..theory import self_stabilization as reduced
from ._common import OUTPUT_TABLE, figure_formats, run_table, write_outputs
from ._schema import Field, Table

__all__ = ["SCHEMA", "run"]


SCHEMA = {
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
    "run": run_table(n_traj=Field("int", default=64, low=2)),
    "output": OUTPUT_TABLE,
}


def _run_window(model, method, n_steps, frac, run, **kw):
    return simulate(model, method, n_traj=run["n_traj"], n_steps=n_steps,
                    burn_in=n_steps - max(1, int(round(frac * n_steps))), seed=run["seed"],
                    backend=run["backend"], progress=False, **kw)


def run(cfg, out_dir: Path, *, progress: bool = True) -> xr.Dataset:
    """Stationary sharpness of the SME against discrete GD/SGD: where the SDE misses 2/eta."""
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
            ds = _run_window(model, method, steps, mc["window_fraction"], run)
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
                ds = _run_window(model, s, int(round(n / r)), mc["window_fraction"], run)
                scan[f"scan_{b}_{s}"][j] = float(ds.sharpness_mean)
                scan[f"scan_{b}_{s}_stderr"][j] = float(ds.sharpness_mean_stderr)
        if progress:
            print(f"\r  (b) dt/eta {j + 1}/{ratios.size}  ({time.perf_counter() - start:.0f} s)   ", end="",
                  file=sys.stderr)
    ref = {}
    for b, bm, sig in (("additive", "sgd", mc["sigma_add"]), ("multiplicative", "sgd-mult", mc["sigma_mult"])):
        ds = _run_window(Minimalist(eta=e, sigma=sig, **box), bm, n, mc["window_fraction"], run)
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


