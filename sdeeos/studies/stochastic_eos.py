r"""Study ``stochastic_eos``: quadratic regression, the noise kernel :math:`\mathcal K` and
:math:`\eta\lambda_{\max}` against the batch size (Agarwala & Pennington 2024; docs/theory.md#noise-kernel).

A sweep of `sdeeos.models.QuadraticRegression` (the model, its engines and the kernel
:math:`\mathcal K` are `sdeeos.models.quadratic_regression` and `sdeeos.theory.mean_square`) over
the batch size at a fixed step size.  For each batch size: the time averages after burn-in of the
closure kernel :math:`\mathcal K`, the exact one :math:`\mathcal K_{\rm exact}=\lambda_{\max}(G)`
(mean-square threshold exactly 1), :math:`\eta\lambda_{\max}` and the loss.  Full-batch GD sits at
the deterministic edge :math:`\eta\lambda_{\max}\approx2` only if it sharpens that far; SGD whose noise
is strong enough self-stabilises at the *stochastic* edge :math:`\mathcal K\approx1` with
:math:`\eta\lambda_{\max}` well below 2.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import xarray as xr

from ..models import QuadraticRegression
from ..plotting import COLORS, new_figure, save_figure
from ..sweeps import sweep
from ._common import OUTPUT_TABLE, figure_formats, write_outputs
from ._schema import Field, Table

__all__ = ["run", "SCHEMA"]

_TYPES = {int: "int", float: "float", str: "str", "int": "int", "float": "float", "str": "str"}


def _model_table() -> Table:
    """[model]: the keyword arguments of `QuadraticRegression` (types from its signature), less batch_size."""

    fields = {}
    for name, p in list(inspect.signature(QuadraticRegression.__init__).parameters.items())[1:]:
        if name == "batch_size" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        kind = _TYPES.get(p.annotation, "float")
        fields[name] = Field(kind, required=p.default is inspect.Parameter.empty, doc=f"QuadraticRegression {name}")
    return Table(fields=fields, required=True, doc="QuadraticRegression parameters (batch_size is swept)")


SCHEMA = {
    "model": _model_table(),
    "grid": Table(required=True, fields={
        "batch_size": Field("list[int]", required=True, low=1, min_len=2, doc="batch sizes (<= n)"),
    }),
    "run": Table(doc="simulation settings", fields={
        "n_traj": Field("int", default=16, low=1),
        "n_steps": Field("int", default=20_000, low=2),
        "burn_in": Field("int", default=10_000, low=0, doc="time averages over recorded steps >= burn_in"),
        "record_every": Field("int", default=250, low=1, doc="K, sharpness and loss are measured every K steps"),
        "n_paths": Field("int", default=2, low=0),
        "seed": Field("int", default=0, low=0, high=2**64 - 1),
        "backend": Field("str", default="numba", choices=("numba", "numpy")),
    }),
    "output": OUTPUT_TABLE,
}

_OBS = ("sharpness", "noise_kernel_norm", "noise_kernel_norm_exact", "loss")


def run(cfg, out_dir: Path, *, progress: bool = True, scheduler=None) -> xr.Dataset:
    """Quadratic regression: K and eta*lambda_max vs batch size (the stochastic edge of stability)."""

    m, run = dict(cfg["model"]), cfg["run"]
    bs = list(cfg["grid"]["batch_size"])
    if max(bs) > m["n"]:
        raise cfg.error(("grid", "batch_size"), f"[grid] batch_size must be <= n = {m['n']}, got {max(bs)}")
    if run["burn_in"] >= run["n_steps"]:
        raise cfg.error(("run", "burn_in"), "[run] burn_in must be smaller than n_steps")
    ext = ".zarr" if cfg["output"]["format"] == "zarr" else ".nc"
    ds = sweep(QuadraticRegression, {"batch_size": bs}, params=m, n_traj=run["n_traj"], n_steps=run["n_steps"],
               burn_in=run["burn_in"], seed=run["seed"], backend=run["backend"], record_every=run["record_every"],
               n_paths=run["n_paths"], path_variables=_OBS, store=out_dir / "sweeps" / f"{cfg['name']}__eos{ext}",
               scheduler=scheduler, progress=progress)
    eta = float(m["eta"])
    ds["eta_sharpness_mean_stderr"] = eta * ds["sharpness_mean_stderr"]
    ds["eta_sharpness_initial"] = eta * ds["path_sharpness_ensemble_mean"].isel(step=0)
    steps = ds["step"].values
    summary = {"eta": eta, "n": m["n"], "P": m["P"], "by_batch_size": {}}
    for b in ds["batch_size"].values:
        p = ds.sel(batch_size=b)

        def val(name):
            return float(p[name]) if name in p else None

        summary["by_batch_size"][str(int(b))] = {
            "method": str(p["method"].values) if "method" in p else ds.attrs.get("method"),
            "K_mean": val("noise_kernel_norm_mean"), "K_mean_stderr": val("noise_kernel_norm_mean_stderr"),
            "K_exact_mean": val("noise_kernel_norm_exact_mean"),
            "K_exact_mean_stderr": val("noise_kernel_norm_exact_mean_stderr"),
            "eta_lambda_max_mean": val("eta_sharpness_mean"),
            "eta_lambda_max_mean_stderr": val("eta_sharpness_mean_stderr"),
            "eta_lambda_max_initial": val("eta_sharpness_initial"),
            "loss_mean": val("loss_mean"), "n_diverged": int(p["n_diverged"]), "n_traj": run["n_traj"]}
    figures = _figures(cfg, out_dir, ds, eta, steps)
    return write_outputs(cfg, out_dir, ds, summary, figures)


def _batch_axis(ax, b) -> None:
    from matplotlib.ticker import NullLocator

    ax.set_xscale("log")
    ax.set_xticks(b)
    ax.set_xticklabels([str(int(v)) for v in b])
    ax.xaxis.set_minor_locator(NullLocator())


def _figures(cfg, out_dir, ds, eta, steps) -> list:
    fmts = figure_formats(cfg)
    b = ds["batch_size"].values.astype(float)
    n = cfg["model"]["n"]
    title = cfg.get("title") or "Stochastic edge of stability in quadratic regression"
    fig, (ax1, ax2) = new_figure(1, 2, width=5.6, height=4.4)
    dead = (ds["n_alive"].values == 0) if "n_alive" in ds else np.zeros(b.size, bool)
    for name, lab, c, mk in (("noise_kernel_norm_exact", r"$\mathcal{K}_{\rm exact}$ (threshold exactly 1)", COLORS[1], "o"),
                             ("noise_kernel_norm", r"$\mathcal{K}$ (closure, a lower bound)", COLORS[0], "s")):
        if f"{name}_mean" not in ds:
            continue
        y, e = ds[f"{name}_mean"].values, ds[f"{name}_mean_stderr"].values
        ok = np.isfinite(y)
        ax1.errorbar(b[ok], y[ok], yerr=e[ok], fmt=mk + "-", color=c, ms=5, capsize=2, label=lab)
    ax1.axhline(1.0, color="black", lw=1, ls="--")
    ax1.annotate("mean-square stability threshold", xy=(0.02, 1.0), xycoords=("axes fraction", "data"),
                 xytext=(0, 3), textcoords="offset points", fontsize=7)
    for bb in b[dead]:
        ax1.axvline(bb, color="grey", lw=6, alpha=0.2)
    if dead.any():
        ax1.plot([], [], color="grey", lw=6, alpha=0.3, label="every trajectory diverged")
    _batch_axis(ax1, b)
    ax1.set_xlabel("batch size $B$")
    ax1.set_ylabel("noise kernel, time mean after burn-in")
    ax1.legend(fontsize=7)
    ax1.grid(True, which="both", alpha=0.2)
    y, e = ds["eta_sharpness_mean"].values, ds["eta_sharpness_mean_stderr"].values
    ok = np.isfinite(y)
    ax2.errorbar(b[ok], y[ok], yerr=e[ok], fmt="o-", color=COLORS[2], ms=5, capsize=2,
                 label=r"$\eta\lambda_{\max}$, time mean after burn-in")
    ax2.plot(b, ds["eta_sharpness_initial"].values, "x", color="grey", label=r"$\eta\lambda_{\max}$ at step 0")
    ax2.axhline(2.0, color="black", lw=1, ls="--")
    ax2.annotate("GD edge of stability", xy=(0.02, 2.0), xycoords=("axes fraction", "data"), xytext=(0, -10),
                 textcoords="offset points", fontsize=7)
    for bb in b[dead]:
        ax2.axvline(bb, color="grey", lw=6, alpha=0.2)
    _batch_axis(ax2, b)
    ax2.set_ylim(0, 2.3)
    ax2.set_xlabel("batch size $B$")
    ax2.set_ylabel(r"$\eta\,\lambda_{\max}$")
    ax2.legend(fontsize=7, loc="center right")
    ax2.grid(True, which="both", alpha=0.2)
    m = cfg["model"]
    fig.suptitle(f"{title}\n" + rf"$n={n}$, $P={m['P']}$, $\eta={eta:g}$, sampling {m.get('sampling', 'without_replacement')}"
                 f", {cfg['run']['n_traj']} trajectories", fontsize=10)
    figures = save_figure(fig, out_dir, f"{cfg['name']}_k_and_sharpness", fmts)

    if "path_noise_kernel_norm_exact_ensemble_mean" in ds or "path_sharpness_ensemble_mean" in ds:
        fig, (ax1, ax2) = new_figure(1, 2, width=5.6, height=4.2)
        gone = []
        for k, bb in enumerate(ds["batch_size"].values):
            p = ds.sel(batch_size=bb)
            c = COLORS[k % len(COLORS)]
            if "n_alive" in p and int(p["n_alive"]) == 0:
                gone.append(str(int(bb)))
                continue
            key = ("path_noise_kernel_norm_exact_ensemble_mean" if "path_noise_kernel_norm_exact_ensemble_mean" in p
                   else "path_noise_kernel_norm_ensemble_mean")
            if key in p:
                ax1.plot(steps, p[key].values, color=c, lw=1.2, label=f"B={int(bb)}")
            ax2.plot(steps, eta * p["path_sharpness_ensemble_mean"].values, color=c, lw=1.2, label=f"B={int(bb)}")
        ax1.axhline(1.0, color="black", lw=1, ls="--")
        ax1.axvline(cfg["run"]["burn_in"], color="grey", lw=0.8, ls="-.")
        ax1.set_xlabel("step")
        ax1.set_ylabel(r"$\mathcal{K}_{\rm exact}$ (ensemble mean)" if "exact" in key else r"$\mathcal{K}$")
        ax1.set_title("noise kernel during training", fontsize=9)
        ax2.axhline(2.0, color="black", lw=1, ls="--")
        ax2.axvline(cfg["run"]["burn_in"], color="grey", lw=0.8, ls="-.")
        ax2.set_xlabel("step")
        ax2.set_ylabel(r"$\eta\lambda_{\max}$ (ensemble mean)")
        ax2.set_ylim(0, 2.3)
        ax2.set_title(r"sharpness during training; dashed: $\eta\lambda_{\max}=2$"
                      + (f"\n(B = {', '.join(gone)}: every trajectory diverged)" if gone else ""), fontsize=9)
        ax2.legend(fontsize=7, ncol=2)
        figures += save_figure(fig, out_dir, f"{cfg['name']}_traces", fmts)
    return figures
