r"""Study ``stochastic_eos_qr``: when does K ~ 1 bind and when does eta*lambda_max ~ 2 bind?

Four parts, all on `sdeeos.models.QuadraticRegression` (docs/theory.md#quadratic-regression) and `sdeeos.theory.mean_square`:

1. **linear theory** (q = 0, realizable P = p_over_n * n): over n and B, the step size eta_c at which
   the *exact* second-moment recursion loses stability (`critical_learning_rate`), against the root
   eta_K of the closure K(eta) = 1 and the deterministic edge eta_lambda = 2/lambda_max; the closure's
   error K(eta_c) - 1 and (eta_K - eta_c)/eta_c as n grows.
2. **linear simulation**: SGD ensembles at eta = f * eta_c: the ensemble mean loss against
   tr(M_t)/(2n) of the exact recursion, and its growth rate against log rho(eta) of the exact operator.
3. **quadratic GD / PGD**: progressive sharpening to eta*S ~ 2 (edge of stability) for step sizes
   whose gradient-flow endpoint is sharper than 2/eta; PGD on {S <= 2/eta} for comparison.
4. **quadratic SGD grid** (eta x B): survival, final K (closure and exact), eta*S and NTK trace of the
   survivors; the exact K of the GD endpoint at each B predicts which batch sizes can converge there.

Run it (writes ``<name>.nc``, ``<name>_summary.json`` and PNG/PDF figures)::

    sdeeos study studies/stochastic_eos_qr.toml [--out DIR] [--quick]

It registers the study kind ``stochastic_eos_qr`` when ``sdeeos._studies`` imports it.
"""

from __future__ import annotations

import json
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import xarray as xr

from .._io import write_dataset
from .._provenance import provenance_attrs
from .._simulate import simulate
from ..models import QuadraticRegression
from ..models.quadratic_regression import jacobian_residual, single_blas_thread
from ..plotting import save_figure
from ..theory import mean_square as ms
from ._schema import Field, Table

__all__ = ["run", "SCHEMA", "closure_critical_eta"]

SAMPLINGS = ("without_replacement", "with_replacement", "bernoulli")

SCHEMA = {
    "linear": Table(required=True, doc="exact vs closure critical step sizes of the linear model", fields={
        "n": Field("list[int]", required=True, low=2, min_len=1, doc="numbers of data points"),
        "p_over_n": Field("float", default=2.0, low=1.0, doc="P / n (>= 1: realizable)"),
        "batch_size": Field("list[int]", required=True, low=1, min_len=1, doc="batch sizes (those < n are used)"),
        "sampling": Field("list[str]", default=["bernoulli", "without_replacement"], min_len=1),
        "data_seed": Field("int", default=0, low=0),
        "rtol": Field("float", default=1e-6, low=0.0, low_open=True, doc="bisection tolerance on eta_c"),
    }),
    "linear_sim": Table(required=True, doc="SGD ensembles of the linear model around eta_c", fields={
        "n": Field("int", default=32, low=2, high=80, doc="n (<= 80: exact spectral radius)"),
        "p_over_n": Field("float", default=2.0, low=1.0),
        "batch_size": Field("int", default=2, low=1),
        "sampling": Field("str", default="bernoulli", choices=SAMPLINGS),
        "eta_over_critical": Field("list[float]", required=True, low=0.0, low_open=True, min_len=1),
        "theta0_scale": Field("float", default=1.0, low=0.0),
        "n_traj": Field("int", default=2000, low=2),
        "n_steps": Field("int", default=300, low=4),
        "record_every": Field("int", default=10, low=1),
        "data_seed": Field("int", default=0, low=0),
    }),
    "quadratic": Table(required=True, doc="the quadratic model of parts 3 and 4", fields={
        "n": Field("int", required=True, low=1),
        "P": Field("int", required=True, low=1),
        "q_scale": Field("float", default=1.5, low=0.0, low_open=True),
        "z0_scale": Field("float", default=1.0, low=0.0),
        "theta0_scale": Field("float", default=0.1, low=0.0),
        "sampling": Field("str", default="without_replacement", choices=SAMPLINGS),
        "data_seed": Field("int", default=0, low=0),
    }),
    "gd": Table(required=True, doc="full-batch GD (and PGD) runs", fields={
        "eta": Field("list[float]", required=True, low=0.0, low_open=True, min_len=1),
        "n_traj": Field("int", default=2, low=1),
        "n_steps": Field("int", default=2000, low=2),
        "record_every": Field("int", default=10, low=1),
        "pgd_eta": Field("list[float]", default=[], doc="step sizes also run with PGD"),
        "pgd_n_steps": Field("int", default=500, low=2),
    }),
    "sgd": Table(required=True, doc="SGD grid over eta x batch size", fields={
        "eta": Field("list[float]", required=True, low=0.0, low_open=True, min_len=1),
        "batch_size": Field("list[int]", required=True, low=1, min_len=1),
        "n_traj": Field("int", default=16, low=2),
        "n_steps": Field("int", default=2000, low=2),
        "record_every": Field("int", default=250, low=1),
    }),
    "run": Table(fields={"seed": Field("int", default=0, low=0)}),
    "output": Table(fields={
        "format": Field("str", default="nc", choices=("nc", "zarr")),
        "figure_formats": Field("list[str]", default=["png", "pdf"]),
    }),
}


# ---------------------------------------------------------------------------- theory helpers
def closure_critical_eta(ntk_eigenvalues, batch_size, n, sampling, *, rtol=1e-10):
    """Root of the closure K(eta) = 1 (`mean_square.noise_kernel_norm`; off-domain counts as > 1)."""

    lam = np.asarray(ntk_eigenvalues, dtype=float)

    def above(e):
        k = ms.noise_kernel_norm(e, lam, batch_size, n, sampling, outside="nan")
        return not (k < 1)

    lo, hi = 0.0, 1.0 / lam.max()
    while not above(hi):
        lo, hi = hi, 2 * hi
    while hi - lo > rtol * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if above(mid) else (mid, hi)
    return 0.5 * (lo + hi)


def _single_blas():

    return single_blas_thread()


def _log(progress, msg):
    if progress:
        print(f"[stochastic_eos_qr] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- parts
def _linear_theory(cfg, progress):

    c = cfg["linear"]
    ns, bs, samplings = list(c["n"]), sorted(set(c["batch_size"])), list(c["sampling"])
    shape = (len(samplings), len(ns), len(bs))
    eta_c, eta_k, k_at_c = np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, np.nan)
    lam_max, tr = np.full(len(ns), np.nan), np.full(len(ns), np.nan)
    for j, n in enumerate(ns):
        P = int(round(c["p_over_n"] * n))
        m = QuadraticRegression(n=n, P=P, eta=1.0, q_scale=0.0, data_seed=c["data_seed"])
        lam = m.initial_ntk_eigenvalues
        ntk = m.J0 @ m.J0.T / n
        lam_max[j], tr[j] = lam.max(), lam.sum()
        for i, s in enumerate(samplings):
            for k, B in enumerate(bs):
                if B >= n:
                    continue
                t0 = time.perf_counter()
                with _single_blas():
                    ec = ms.critical_learning_rate(ntk, B, s, rtol=c["rtol"])
                eta_c[i, j, k] = ec
                eta_k[i, j, k] = closure_critical_eta(lam, B, n, s, rtol=c["rtol"])
                k_at_c[i, j, k] = ms.noise_kernel_norm(ec, lam, B, n, s, outside="nan")
                _log(progress, f"linear n={n} B={B} {s}: eta_c={ec:.5g} eta_K={eta_k[i, j, k]:.5g} "
                               f"eta_c*lmax={ec * lam.max():.4f} K(eta_c)={k_at_c[i, j, k]:.4f} "
                               f"({time.perf_counter() - t0:.1f}s)")
    dims = ("lin_sampling", "lin_n", "lin_batch")
    coords = {"lin_sampling": samplings, "lin_n": ns, "lin_batch": bs}
    ds = xr.Dataset({
        "lin_eta_critical_exact": (dims, eta_c, {"long_name": "eta at which the exact second-moment recursion "
                                                              "loses stability"}),
        "lin_eta_critical_closure": (dims, eta_k, {"long_name": "root of the closure K(eta) = 1"}),
        "lin_noise_kernel_at_critical": (dims, k_at_c, {"long_name": "closure K at the exact eta_c"}),
        "lin_eta_edge_deterministic": (("lin_n",), 2 / lam_max, {"long_name": "2 / lambda_max (GD edge)"}),
        "lin_ntk_max_eigenvalue": (("lin_n",), lam_max),
        "lin_ntk_trace": (("lin_n",), tr),
    }, coords=coords)
    ds["lin_closure_relative_error"] = (ds.lin_eta_critical_closure - ds.lin_eta_critical_exact) / \
        ds.lin_eta_critical_exact
    ds["lin_eta_lambda_at_critical"] = ds.lin_eta_critical_exact * ds.lin_ntk_max_eigenvalue
    return ds


def _linear_sim(cfg, progress):

    c = cfg["linear_sim"]
    n, B, s = c["n"], c["batch_size"], c["sampling"]
    P = int(round(c["p_over_n"] * n))
    base = QuadraticRegression(n=n, P=P, eta=1.0, q_scale=0.0, data_seed=c["data_seed"])
    ntk = base.J0 @ base.J0.T / n
    with _single_blas():
        eta_c = ms.critical_learning_rate(ntk, B, s)
    factors = list(c["eta_over_critical"])
    steps = np.arange(0, c["n_steps"], c["record_every"])
    sim_mean = np.full((len(factors), steps.size), np.nan)
    sim_se, exact = np.full_like(sim_mean, np.nan), np.full_like(sim_mean, np.nan)
    rate_sim, rate_exact, rate_window, n_div = (np.full(len(factors), np.nan) for _ in range(4))
    s2 = c["theta0_scale"] ** 2 / P
    for f_i, f in enumerate(factors):
        eta = f * eta_c
        m = QuadraticRegression(n=n, P=P, eta=eta, batch_size=B, sampling=s, q_scale=0.0,
                                theta0_scale=c["theta0_scale"], data_seed=c["data_seed"])
        ds = simulate(m, "sgd", n_traj=c["n_traj"], n_steps=c["n_steps"], seed=cfg["run"]["seed"],
                             record_every=c["record_every"], progress=progress)
        loss = ds.path_loss.values
        alive = ~ds.diverged.values
        n_div[f_i] = (~alive).sum()
        sim_mean[f_i] = loss[alive].mean(0)
        sim_se[f_i] = loss[alive].std(0, ddof=1) / math.sqrt(alive.sum())
        M = np.outer(m.z0, m.z0) + s2 * m.J0 @ m.J0.T
        for t in range(c["n_steps"]):
            if t % c["record_every"] == 0:
                exact[f_i, t // c["record_every"]] = np.trace(M) / (2 * n)
            M = ms.second_moment_step(eta, ntk, M, B, s)
        half = steps >= c["n_steps"] // 2
        rate_sim[f_i] = np.polyfit(steps[half], np.log(sim_mean[f_i, half]), 1)[0]
        rate_window[f_i] = np.polyfit(steps[half], np.log(exact[f_i, half]), 1)[0]
        with _single_blas():
            rate_exact[f_i] = math.log(ms.second_moment_spectral_radius(eta, ntk, B, s))
        _log(progress, f"linear sim eta/eta_c={f}: growth rate sim {rate_sim[f_i]:.4g}, exact recursion (same "
                       f"window) {rate_window[f_i]:.4g}, log rho {rate_exact[f_i]:.4g} ({int(n_div[f_i])} diverged)")
    return xr.Dataset({
        "lsim_mean_loss": (("lsim_eta_factor", "lsim_step"), sim_mean, {"long_name": "ensemble mean loss (SGD)"}),
        "lsim_mean_loss_stderr": (("lsim_eta_factor", "lsim_step"), sim_se),
        "lsim_mean_loss_exact": (("lsim_eta_factor", "lsim_step"), exact,
                                 {"long_name": "tr(M_t)/(2n) from the exact second-moment recursion"}),
        "lsim_growth_rate": (("lsim_eta_factor",), rate_sim, {"long_name": "d log(mean loss)/dt, 2nd half"}),
        "lsim_growth_rate_exact": (("lsim_eta_factor",), rate_exact, {"long_name": "log rho of the exact operator"}),
        "lsim_growth_rate_exact_window": (("lsim_eta_factor",), rate_window,
                                          {"long_name": "d log tr(M_t)/dt of the exact recursion, same window"}),
        "lsim_n_diverged": (("lsim_eta_factor",), n_div),
        "lsim_eta_critical_exact": ((), eta_c),
    }, coords={"lsim_eta_factor": factors, "lsim_step": steps})


def _quadratic_model(cfg, eta, batch_size=None):

    q = cfg["quadratic"]
    return QuadraticRegression(n=q["n"], P=q["P"], eta=eta, batch_size=batch_size, sampling=q["sampling"],
                               q_scale=q["q_scale"], z0_scale=q["z0_scale"], theta0_scale=q["theta0_scale"],
                               data_seed=q["data_seed"])


def _ntk_at(model, theta):

    J, _ = jacobian_residual(model, theta[None])
    return J[0] @ J[0].T / model.n


def _quadratic_gd(cfg, progress):

    c = cfg["gd"]
    etas = list(c["eta"])
    steps = np.arange(0, c["n_steps"], c["record_every"])
    es, loss = np.full((len(etas), steps.size), np.nan), np.full((len(etas), steps.size), np.nan)
    final_es, final_theta, n_div = np.full(len(etas), np.nan), [], np.zeros(len(etas))
    for i, eta in enumerate(etas):
        m = _quadratic_model(cfg, eta)
        ds = simulate(m, "gd", n_traj=c["n_traj"], n_steps=c["n_steps"], seed=cfg["run"]["seed"],
                             record_every=c["record_every"], progress=progress)
        es[i] = eta * ds.path_sharpness.median("traj").values
        loss[i] = ds.path_loss.median("traj").values
        final_es[i] = eta * float(ds.sharpness_final_mean) if int(ds.n_alive) else np.nan
        n_div[i] = int(ds.n_diverged)
        alive = np.flatnonzero(~ds.diverged.values)
        final_theta.append(ds.final_theta.values[alive[0]] if alive.size else None)
        _log(progress, f"GD eta={eta}: final eta*S={final_es[i]:.4f}, {int(n_div[i])} diverged")
    out = xr.Dataset({
        "gd_eta_sharpness": (("gd_eta", "gd_step"), es, {"long_name": "eta * sharpness (median over trajectories)"}),
        "gd_loss": (("gd_eta", "gd_step"), loss),
        "gd_eta_sharpness_final": (("gd_eta",), final_es),
        "gd_n_diverged": (("gd_eta",), n_div),
    }, coords={"gd_eta": etas, "gd_step": steps})
    pgd_etas = list(c["pgd_eta"])
    if pgd_etas:
        psteps = np.arange(0, c["pgd_n_steps"], c["record_every"])
        pes, ploss = np.full((len(pgd_etas), psteps.size), np.nan), np.full((len(pgd_etas), psteps.size), np.nan)
        for i, eta in enumerate(pgd_etas):
            m = _quadratic_model(cfg, eta)
            ds = simulate(m, "pgd", n_traj=1, n_steps=c["pgd_n_steps"], seed=cfg["run"]["seed"],
                                 record_every=c["record_every"], progress=progress)
            pes[i] = eta * ds.path_sharpness.values[0]
            ploss[i] = ds.path_loss.values[0]
            _log(progress, f"PGD eta={eta}: final eta*S={pes[i, -1]:.4f}")
        out["pgd_eta_sharpness"] = (("pgd_eta", "pgd_step"), pes)
        out["pgd_loss"] = (("pgd_eta", "pgd_step"), ploss)
        out = out.assign_coords(pgd_eta=pgd_etas, pgd_step=psteps)
    return out, final_theta


def _quadratic_sgd(cfg, progress):

    c, q = cfg["sgd"], cfg["quadratic"]
    etas = list(c["eta"])
    bs = sorted({b for b in c["batch_size"] if b <= q["n"]})
    shape = (len(etas), len(bs))
    names = ("survival", "eta_sharpness", "noise_kernel_norm", "noise_kernel_norm_exact", "ntk_trace", "loss",
             "eta_sharpness_stderr", "noise_kernel_norm_exact_stderr", "ntk_trace_stderr", "gd_endpoint_kernel_exact")
    res = {k: np.full(shape, np.nan) for k in names}
    steps = np.arange(0, c["n_steps"], c["record_every"])
    kx_path = np.full(shape + (steps.size,), np.nan)
    es_path = np.full(shape + (steps.size,), np.nan)
    gd_trace = np.full(len(etas), np.nan)
    for i, eta in enumerate(etas):
        # the GD endpoint at this eta: its exact K at each B predicts which batch sizes can end there
        gd_model = _quadratic_model(cfg, eta)
        gd = simulate(gd_model, "gd", n_traj=1, n_steps=c["n_steps"], seed=cfg["run"]["seed"],
                             progress=progress)
        gd_ntk = None if bool(gd.diverged.values[0]) else _ntk_at(gd_model, gd.final_theta.values[0])
        if gd_ntk is not None:
            gd_trace[i] = float(np.trace(gd_ntk))
        for j, B in enumerate(bs):
            m = _quadratic_model(cfg, eta, B)
            method = "gd" if (B == q["n"] and q["sampling"] != "with_replacement") else "sgd"
            ds = simulate(m, method, n_traj=c["n_traj"], n_steps=c["n_steps"], seed=cfg["run"]["seed"],
                                 record_every=c["record_every"], progress=progress)
            alive = ~ds.diverged.values
            res["survival"][i, j] = alive.mean()
            if gd_ntk is not None:
                with _single_blas():
                    res["gd_endpoint_kernel_exact"][i, j] = m.noise_kernel_norm_exact(gd_ntk)
            if alive.any():
                for key, var, scale in (("eta_sharpness", "sharpness", eta), ("noise_kernel_norm", "noise_kernel_norm", 1),
                                        ("noise_kernel_norm_exact", "noise_kernel_norm_exact", 1),
                                        ("ntk_trace", "ntk_trace", 1), ("loss", "loss", 1)):
                    vals = scale * ds[f"final_{var}"].values[alive]
                    vals = vals[np.isfinite(vals)]
                    if vals.size:
                        res[key][i, j] = vals.mean()
                        if f"{key}_stderr" in res and vals.size > 1:
                            res[f"{key}_stderr"][i, j] = vals.std(ddof=1) / math.sqrt(vals.size)
                with np.errstate(all="ignore"), warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN steps (K off-domain)
                    kx_path[i, j] = np.nanmedian(ds.path_noise_kernel_norm_exact.values[alive], axis=0)
                    es_path[i, j] = eta * np.nanmedian(ds.path_sharpness.values[alive], axis=0)
            _log(progress, f"SGD eta={eta} B={B}: survival {res['survival'][i, j]:.2f}, eta*S={res['eta_sharpness'][i, j]:.4f}, "
                           f"K={res['noise_kernel_norm'][i, j]:.3f}, K_exact={res['noise_kernel_norm_exact'][i, j]:.3f} "
                           f"(GD endpoint K_exact {res['gd_endpoint_kernel_exact'][i, j]:.3f})")
    dims = ("sgd_eta", "sgd_batch")
    data = {f"sgd_{k}": (dims, v) for k, v in res.items()}
    data["sgd_gd_endpoint_kernel_exact"] = (dims, res["gd_endpoint_kernel_exact"],
                                            {"long_name": "exact K at batch size B of the GD endpoint at this eta"})
    data["sgd_noise_kernel_norm_exact_path"] = (dims + ("sgd_step",), kx_path)
    data["sgd_eta_sharpness_path"] = (dims + ("sgd_step",), es_path)
    data["sgd_gd_ntk_trace"] = (("sgd_eta",), gd_trace)
    return xr.Dataset(data, coords={"sgd_eta": etas, "sgd_batch": bs, "sgd_step": steps})


# ---------------------------------------------------------------------------- figures
def _plain_batch_ticks(axes):
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    for ax in axes:
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())


def _figures(ds, cfg, out_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    name, formats = cfg["name"] if "name" in cfg else "stochastic_eos_qr", tuple(cfg["output"]["figure_formats"])
    paths = []

    # 1. linear theory
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
    for i, s in enumerate(ds.lin_sampling.values):
        for j, n in enumerate(ds.lin_n.values):
            style = "-" if i == 0 else "--"
            x = ds.lin_batch.values
            axes[0].plot(x, ds.lin_eta_lambda_at_critical.values[i, j], "o" + style, color=f"C{j}",
                         label=f"n={n} {s}" if True else None, ms=4)
            axes[0].plot(x, ds.lin_eta_critical_closure.values[i, j] * ds.lin_ntk_max_eigenvalue.values[j], "x:",
                         color=f"C{j}", ms=4)
            axes[1].plot(x, ds.lin_noise_kernel_at_critical.values[i, j], "o" + style, color=f"C{j}", ms=4,
                         label=f"n={n} {s}")
    axes[0].axhline(2, color="k", lw=0.8)
    axes[0].set(xscale="log", yscale="log", xlabel="batch size B", ylabel=r"$\eta_c\lambda_{\max}$",
                title=r"exact $\eta_c$ (o) and closure root $K=1$ (x) vs the edge $\eta\lambda_{\max}=2$")
    axes[0].legend(fontsize=6)
    axes[1].axhline(1, color="k", lw=0.8)
    axes[1].set(xscale="log", xlabel="batch size B", ylabel=r"closure $K$ at exact $\eta_c$",
                title="closure K at the exact threshold (exact: 1)")
    for i, s in enumerate(ds.lin_sampling.values):
        for k, B in enumerate(ds.lin_batch.values):
            err = np.abs(ds.lin_closure_relative_error.values[i, :, k])
            ok = np.isfinite(err)
            if ok.sum() >= 2:
                axes[2].plot(ds.lin_n.values[ok], err[ok], "o-" if i == 0 else "s--", color=f"C{k}", ms=4,
                             label=f"B={B} {s}")
    nn = ds.lin_n.values.astype(float)
    anchor = np.nanmedian(np.abs(ds.lin_closure_relative_error.values[:, -1, :]))
    axes[2].plot(nn, anchor * nn[-1] / nn, "k:", label=r"$\propto 1/n$")
    axes[2].plot(nn, anchor * (nn[-1] / nn) ** 2, "k--", lw=0.8, label=r"$\propto 1/n^2$")
    axes[2].set(xscale="log", yscale="log", xlabel="n", ylabel=r"$|\eta_K-\eta_c|/\eta_c$",
                title="closure error in the critical step size")
    axes[2].legend(fontsize=6, ncol=2)
    _plain_batch_ticks(axes[:2])
    fig.tight_layout()
    paths += save_figure(fig, out_dir, f"{name}_linear", formats)

    # 2. linear simulation vs exact recursion
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.3))
    for f_i, f in enumerate(ds.lsim_eta_factor.values):
        c = f"C{f_i}"
        axes[0].errorbar(ds.lsim_step.values, ds.lsim_mean_loss.values[f_i], yerr=2 * ds.lsim_mean_loss_stderr.values[f_i],
                         fmt="o", ms=3, color=c, label=rf"$\eta/\eta_c$={f:g}")
        axes[0].plot(ds.lsim_step.values, ds.lsim_mean_loss_exact.values[f_i], "-", color=c, lw=1)
    axes[0].set(yscale="log", xlabel="step", ylabel="mean loss",
                title="linear SGD: ensemble mean (points, 2 SE) vs exact recursion (lines)")
    axes[0].legend(fontsize=7)
    axes[1].plot(ds.lsim_eta_factor.values, ds.lsim_growth_rate.values, "o", label="simulation (2nd half)")
    axes[1].plot(ds.lsim_eta_factor.values, ds.lsim_growth_rate_exact_window.values, "x", ms=8,
                 label="exact recursion, same window")
    axes[1].plot(ds.lsim_eta_factor.values, ds.lsim_growth_rate_exact.values, "-", label=r"$\log\rho$ exact operator")
    axes[1].axhline(0, color="k", lw=0.8)
    axes[1].axvline(1, color="k", lw=0.8, ls=":")
    axes[1].set(xlabel=r"$\eta/\eta_c$", ylabel="growth rate of the mean loss per step", title="mean-square growth rate")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    paths += save_figure(fig, out_dir, f"{name}_linear_sim", formats)

    # 3. GD / PGD
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.3))
    for i, eta in enumerate(ds.gd_eta.values):
        axes[0].plot(ds.gd_step.values, ds.gd_eta_sharpness.values[i], color=f"C{i}", label=rf"GD $\eta$={eta:g}")
        axes[1].plot(ds.gd_step.values, ds.gd_loss.values[i], color=f"C{i}")
    if "pgd_eta" in ds.coords:
        for i, eta in enumerate(ds.pgd_eta.values):
            axes[0].plot(ds.pgd_step.values, ds.pgd_eta_sharpness.values[i], "k--", lw=1, label=rf"PGD $\eta$={eta:g}")
            axes[1].plot(ds.pgd_step.values, ds.pgd_loss.values[i], "k--", lw=1)
    axes[0].axhline(2, color="k", lw=0.8)
    last = float(ds.gd_step.values[-1])
    axes[0].set(xscale="symlog", xlim=(0, last), xlabel="step", ylabel=r"$\eta\,\lambda_{\max}(H)$",
                title="quadratic model: GD sharpens to the edge, PGD holds it")
    axes[0].set_xscale("symlog", linthresh=10)
    axes[0].legend(fontsize=7)
    axes[1].set(yscale="log", xlim=(0, last), xlabel="step", ylabel="loss")
    axes[1].set_xscale("symlog", linthresh=10)
    fig.tight_layout()
    paths += save_figure(fig, out_dir, f"{name}_gd", formats)

    # 4. SGD grid
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    x = ds.sgd_batch.values
    for i, eta in enumerate(ds.sgd_eta.values):
        c = f"C{i}"
        axes[0, 0].plot(x, ds.sgd_survival.values[i], "o-", color=c, label=rf"$\eta$={eta:g}")
        axes[0, 1].errorbar(x, ds.sgd_noise_kernel_norm_exact.values[i], yerr=2 * ds.sgd_noise_kernel_norm_exact_stderr.values[i],
                            fmt="o-", color=c, ms=4, label=rf"$\eta$={eta:g}")
        axes[0, 1].plot(x, ds.sgd_gd_endpoint_kernel_exact.values[i], "x:", color=c)
        axes[1, 0].errorbar(x, ds.sgd_eta_sharpness.values[i], yerr=2 * ds.sgd_eta_sharpness_stderr.values[i],
                            fmt="o-", color=c, ms=4, label=rf"$\eta$={eta:g}")
        axes[1, 1].errorbar(x, ds.sgd_ntk_trace.values[i] / ds.sgd_gd_ntk_trace.values[i],
                            yerr=2 * ds.sgd_ntk_trace_stderr.values[i] / ds.sgd_gd_ntk_trace.values[i],
                            fmt="o-", color=c, ms=4, label=rf"$\eta$={eta:g}")
    axes[0, 0].set(xscale="log", xlabel="batch size B", ylabel="fraction of trajectories not diverged",
                   title="survival")
    axes[0, 1].axhline(1, color="k", lw=0.8)
    axes[0, 1].set(xscale="log", ylim=(0, 2.5), xlabel="batch size B", ylabel=r"exact $K$ at the end",
                   title=r"survivors (o) and the GD endpoint (x): $K_{\rm exact}$")
    axes[1, 0].axhline(2, color="k", lw=0.8)
    axes[1, 0].set(xscale="log", yscale="log", xlabel="batch size B", ylabel=r"$\eta\lambda_{\max}(H)$ at the end",
                   title="final sharpness")
    axes[1, 1].axhline(1, color="k", lw=0.8)
    axes[1, 1].set(xscale="log", xlabel="batch size B", ylabel="final NTK trace / GD's",
                   title="conservative sharpening")
    for ax in axes.ravel():
        ax.legend(fontsize=7)
    fig.tight_layout()
    _plain_batch_ticks(axes.ravel())
    paths += save_figure(fig, out_dir, f"{name}_sgd", formats)
    plt.close("all")
    return paths


# ---------------------------------------------------------------------------- runner
def _clean(value):
    """JSON-ready: NaN/inf -> None, recursively."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _summary(ds) -> dict:
    out = {}
    for s in ds.lin_sampling.values:
        k = ds.lin_noise_kernel_at_critical.sel(lin_sampling=s)
        err = ds.lin_closure_relative_error.sel(lin_sampling=s)
        el = ds.lin_eta_lambda_at_critical.sel(lin_sampling=s)
        for n in ds.lin_n.values:
            out[f"linear_{s}_n{n}_K_at_eta_c"] = [round(float(v), 4) for v in k.sel(lin_n=n).values]
            out[f"linear_{s}_n{n}_closure_rel_error"] = [round(float(v), 4) for v in err.sel(lin_n=n).values]
            out[f"linear_{s}_n{n}_eta_c_lambda_max"] = [round(float(v), 4) for v in el.sel(lin_n=n).values]
    out["linear_batch_sizes"] = [int(b) for b in ds.lin_batch.values]
    # closure error ~ n^-p: least-squares slope over the n of each (sampling, B) with >= 3 finite points
    for s in ds.lin_sampling.values:
        slopes = []
        for B in ds.lin_batch.values:
            err = np.abs(ds.lin_closure_relative_error.sel(lin_sampling=s, lin_batch=B).values)
            ok = np.isfinite(err) & (err > 0)
            if ok.sum() >= 3:
                slopes.append(round(-float(np.polyfit(np.log(ds.lin_n.values[ok]), np.log(err[ok]), 1)[0]), 3))
            else:
                slopes.append(None)
        out[f"linear_{s}_closure_error_exponent_p"] = slopes
    out["linear_sim_growth_rate"] = [round(float(v), 5) for v in ds.lsim_growth_rate.values]
    out["linear_sim_growth_rate_exact"] = [round(float(v), 5) for v in ds.lsim_growth_rate_exact.values]
    out["linear_sim_growth_rate_exact_window"] = [round(float(v), 5) for v in ds.lsim_growth_rate_exact_window.values]
    out["linear_sim_eta_over_critical"] = [float(v) for v in ds.lsim_eta_factor.values]
    out["linear_sim_n_diverged"] = [int(v) for v in ds.lsim_n_diverged.values]
    out["gd_final_eta_sharpness"] = {str(e): round(float(v), 4) for e, v in
                                     zip(ds.gd_eta.values, ds.gd_eta_sharpness_final.values)}
    for i, eta in enumerate(ds.sgd_eta.values):
        surv = ds.sgd_survival.values[i]
        ok = np.flatnonzero(surv >= 0.5)
        entry = {"batch_sizes": [int(b) for b in ds.sgd_batch.values],
                 "survival": [round(float(v), 3) for v in surv],
                 "eta_sharpness": [round(float(v), 4) for v in ds.sgd_eta_sharpness.values[i]],
                 "K_exact": [round(float(v), 4) for v in ds.sgd_noise_kernel_norm_exact.values[i]],
                 "K_closure": [round(float(v), 4) for v in ds.sgd_noise_kernel_norm.values[i]],
                 "gd_endpoint_K_exact": [round(float(v), 4) for v in ds.sgd_gd_endpoint_kernel_exact.values[i]],
                 "ntk_trace_over_gd": [round(float(v), 4) for v in ds.sgd_ntk_trace.values[i] / ds.sgd_gd_ntk_trace.values[i]]}
        if ok.size:
            entry["smallest_batch_with_half_surviving"] = int(ds.sgd_batch.values[ok[0]])
        out[f"sgd_eta_{eta:g}"] = entry
    return out


def run(cfg, out_dir: Path, *, progress: bool = True) -> xr.Dataset:
    """Quadratic regression: when the noise kernel K ~ 1 binds and when eta*lambda_max ~ 2 binds."""

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = cfg.get("name") or "stochastic_eos_qr"
    t0 = time.perf_counter()
    parts = [_linear_theory(cfg, progress), _linear_sim(cfg, progress)]
    gd, _ = _quadratic_gd(cfg, progress)
    parts += [gd, _quadratic_sgd(cfg, progress)]
    ds = xr.merge(parts, compat="no_conflicts", join="outer")
    q = cfg["quadratic"]
    summary = _clean(_summary(ds))
    ds.attrs.update(provenance_attrs(
        study=name, study_kind="stochastic_eos_qr", title=cfg.get("title", ""),
        description=cfg.get("description", ""), config=json.dumps(cfg, default=str),
        loss_convention="L = ||z||^2/(2n); sharpness = lambda_max of the Hessian of L; NTK = J J^T/n",
        quadratic_model=json.dumps(q), wall_time_s=time.perf_counter() - t0))
    cfg_for_figs = dict(cfg)
    cfg_for_figs["name"] = name
    figures = _figures(ds, cfg_for_figs, out_dir)
    summary["figures"] = [str(p) for p in figures]
    ext = ".zarr" if cfg["output"]["format"] == "zarr" else ".nc"
    summary["dataset"] = str(out_dir / f"{name}{ext}")
    ds.attrs["study_summary"] = json.dumps(summary)
    write_dataset(ds, out_dir / f"{name}{ext}")
    (out_dir / f"{name}_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return ds
