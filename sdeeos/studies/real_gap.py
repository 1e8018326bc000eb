r"""Study kind ``real_gap`` (``studies/real_gap.toml``): the measured sharpness gap of a real network.

The measured gap :math:`\Delta S(B)=S_{\rm GD}-S_{\rm SGD}(B)` (plateau means; Liao et al.'s
definition) against :math:`\eta\beta\sigma_u^2/(4\alpha)` from measured α, β, σ_u², with fitted
log–log slopes.  Keys: the study's own and every training setting of `sdeeos.TrainConfig`.  Needs the
``torch`` extra.
"""

from __future__ import annotations

import pathlib
import time

import numpy as np
import xarray as xr

from .._errors import ParameterError
from .._statistics import mean_stderr
from .._train_config import TrainConfig
from ..plotting import loglog_fit, new_figure
from ..torch import predicted_gap
from ._real import (
    batch_axis,
    batch_sizes_field,
    combine_runs,
    run_over_batch_sizes,
    save_study,
    split_config,
    study_attrs,
    study_settings,
    train_fields,
)
from ._schema import Field, StudyConfig

__all__ = ["SCHEMA", "run", "plot", "real_gap", "plot_real_gap"]

_REAL_GAP_KEYS = {"batch_sizes": ["full", 16, 32, 64, 128, 256], "plateau_start_fraction": 0.5,
                  "sharpening_window": [0.3, 0.85]}
#: batch means over this many blocks: the plateau is a correlated series
_PLATEAU_BLOCKS = 5


def _check_window(w: list) -> list:
    if len(w) != 2 or not 0 < w[0] < w[1]:
        raise ParameterError(f"must be [low, high] with 0 < low < high, got {w!r}")
    return w


SCHEMA = {
    "batch_sizes": batch_sizes_field(_REAL_GAP_KEYS["batch_sizes"]),
    "plateau_start_fraction": Field("float", default=_REAL_GAP_KEYS["plateau_start_fraction"], low=0.0, high=1.0,
                                    low_open=True, doc="plateau = sharpness steps >= this fraction of n_steps"),
    "sharpening_window": Field("list[float]", default=_REAL_GAP_KEYS["sharpening_window"], check=_check_window,
                               doc="GD measurements with S/(2/eta) in this window give alpha"),
    **train_fields(),
}



def real_gap(config: dict, out_dir: pathlib.Path, *, progress: bool = True) -> xr.Dataset:
    r"""Measured sharpness gap vs :math:`\eta\beta\sigma_u^2/(4\alpha)` over batch sizes.

    Every run measures, at each sharpness step from ``theory_start`` on (the GD run from step 0), at
    the stable-set projection of the iterate: :math:`\alpha`, :math:`\beta`, :math:`\sigma_u^2(B)`;
    and at the iterate, batch sharpness.  Two predictions are formed from plateau means
    (frozen coefficients):

    * ``plateau``: α, β, σ_u² all from the run's own plateau;
    * ``sharpening_alpha``: α from the GD run's progressive-sharpening phase (measurements after the
      initial dip of :math:`S` and before it first reaches :math:`2/\eta`, with :math:`S/(2/\eta)` in
      ``sharpening_window``; there :math:`x\approx0` and :math:`\alpha=-\nabla L\cdot\nabla S` is the
      rate :math:`\Delta S/(\eta\,\Delta t)`, checked against the slope of :math:`S(t)`, stored as
      ``alpha_sharpening_from_rate``), β and σ_u² from the run's own plateau.
    """
    t_start = time.perf_counter()
    study, base = split_config(config, _REAL_GAP_KEYS, "real_gap")
    base.setdefault("sharpness_dtype", "float64")
    base["measure_theory"] = True
    TrainConfig.from_dict(base).validated()
    theory_start = int(base.get("theory_start", 0))

    def extra(b):
        return {"theory_start": 0} if b in (None, "full", 0) else {"theory_start": theory_start}

    runs, n_train = run_over_batch_sizes(base, study["batch_sizes"], progress, "real_gap", extra)
    lr = float(base.get("lr", TrainConfig.lr))
    n_steps = int(base.get("n_steps", TrainConfig.n_steps))
    start = int(study["plateau_start_fraction"] * n_steps)
    gd = next(r for r in runs if r.attrs["batch_size_effective"] == n_train)

    # alpha during GD's progressive sharpening
    lo, hi = study["sharpening_window"]
    s_rel = gd.sharpness.sel(sharpness_step=gd.theory_step).values * lr / 2
    first_edge = np.argmax(s_rel >= 1.0) if np.any(s_rel >= 1.0) else len(s_rel)
    # progressive sharpening: after the initial dip of S (its minimum before the first crossing
    # of 2/eta) and before that crossing, with S/(2/eta) inside the window
    idx = np.arange(len(s_rel))
    dip = int(np.argmin(s_rel[:max(first_edge, 1)]))
    mask = (idx > dip) & (idx < first_edge) & (s_rel >= lo) & (s_rel <= hi)
    alpha_ps, alpha_ps_se = mean_stderr(gd.alpha_full.values[mask], n_blocks=3)
    steps_ps = gd.theory_step.values[mask]
    if mask.sum() >= 2:
        rate = np.polyfit(steps_ps, gd.sharpness.sel(sharpness_step=steps_ps).values, 1)[0]
        alpha_from_rate = rate / lr
    else:
        alpha_from_rate = float("nan")

    rows = {k: [] for k in ("plateau_sharpness", "plateau_sharpness_stderr", "alpha", "alpha_stderr",
                            "beta", "beta_stderr", "sigma_u_sq", "sigma_u_sq_stderr", "sigma1_sq",
                            "batch_sharpness", "batch_sharpness_stderr", "sharpness_projected")}
    for r in runs:
        m, se = mean_stderr(r.sharpness.sel(sharpness_step=slice(start, None)).values, n_blocks=_PLATEAU_BLOCKS)
        rows["plateau_sharpness"].append(m)
        rows["plateau_sharpness_stderr"].append(se)
        win = r.sel(theory_step=slice(start, None))
        for k in ("alpha", "beta", "sigma_u_sq", "batch_sharpness"):
            m, se = mean_stderr(win[k].values, n_blocks=_PLATEAU_BLOCKS)
            rows[k].append(m)
            rows[k + "_stderr"].append(se)
        rows["sigma1_sq"].append(float(np.nanmean(win.sigma1_sq.values)))
        rows["sharpness_projected"].append(float(np.nanmean(win.sharpness_projected.values)))
    ds = combine_runs(runs)
    for k, v in rows.items():
        ds[k] = ("batch_size", np.asarray(v, dtype=float))
    s_gd = float(ds.plateau_sharpness.sel(batch_size=n_train))
    s_gd_se = float(ds.plateau_sharpness_stderr.sel(batch_size=n_train))
    ds["gap_measured"] = s_gd - ds.plateau_sharpness
    ds["gap_measured_stderr"] = np.sqrt(ds.plateau_sharpness_stderr**2 + s_gd_se**2)
    p1 = predicted_gap(lr, ds.alpha.values, ds.beta.values, ds.sigma_u_sq.values)
    p2 = predicted_gap(lr, np.full(ds.batch_size.size, alpha_ps), ds.beta.values, ds.sigma_u_sq.values)
    ds["gap_predicted_plateau_leading"] = ("batch_size", np.asarray(p1["leading"], float))
    ds["gap_predicted_plateau_exact"] = ("batch_size", np.asarray(p1["exact"], float))
    ds["gap_predicted_sharpening_alpha_leading"] = ("batch_size", np.asarray(p2["leading"], float))
    ds["gap_predicted_sharpening_alpha_exact"] = ("batch_size", np.asarray(p2["exact"], float))
    sgd = ds.batch_size.values < n_train
    bvals = ds.batch_size.values[sgd]
    fits = {
        "gap_measured": loglog_fit(bvals, ds.gap_measured.values[sgd]),
        "gap_predicted_sharpening_alpha_leading": loglog_fit(
            bvals, ds.gap_predicted_sharpening_alpha_leading.values[sgd]),
        "gap_predicted_plateau_leading": loglog_fit(bvals, ds.gap_predicted_plateau_leading.values[sgd]),
        "sigma_u_sq": loglog_fit(bvals, ds.sigma_u_sq.values[sgd]),
        "finite_population_factor": loglog_fit(bvals, 1 / bvals - 1 / n_train),
    }
    ds.attrs = study_attrs("real_gap", study, base, time.perf_counter() - t_start)
    ds.attrs.update(two_over_eta=2.0 / lr, n_train_effective=int(n_train), plateau_start_step=start,
                    gd_plateau_sharpness=s_gd, alpha_sharpening=alpha_ps,
                    alpha_sharpening_stderr=alpha_ps_se, alpha_sharpening_from_rate=float(alpha_from_rate),
                    alpha_sharpening_n=int(mask.sum()),
                    loss_convention=runs[0].attrs["loss_convention"],
                    gap_definition="S_GD - S_SGD(B), plateau means (Liao et al.)")
    for k, fit in fits.items():
        sl, ic, r2 = fit.slope, fit.intercept, fit.r_squared
        ds.attrs[f"slope_{k}"] = sl
        ds.attrs[f"intercept_{k}"] = ic
        ds.attrs[f"r2_{k}"] = r2
    ratio = ds.gap_measured / ds.gap_predicted_sharpening_alpha_leading
    ds["gap_ratio_measured_to_predicted"] = ratio

    save_study(ds, plot_real_gap(ds), out_dir, "real_gap")
    return ds


def plot_real_gap(ds: xr.Dataset):
    """The ``real_gap`` figure from its dataset: gaps vs B with fits, plateau sharpness, α and σ_u²."""
    lr = float(ds.attrs.get("lr", TrainConfig.lr))
    n_train = int(ds.attrs["n_train_effective"])
    s_gd = float(ds.attrs["gd_plateau_sharpness"])
    alpha_ps = float(ds.attrs["alpha_sharpening"])
    alpha_from_rate = float(ds.attrs["alpha_sharpening_from_rate"])
    sgd = ds.batch_size.values < n_train
    bvals = ds.batch_size.values[sgd]
    fits = {k: (float(ds.attrs[f"slope_{k}"]), float(ds.attrs[f"intercept_{k}"]), float(ds.attrs[f"r2_{k}"]))
            for k in ("gap_measured", "gap_predicted_sharpening_alpha_leading")}
    fig, axes = new_figure(1, 3, width=5.167, height=4.3)
    ax = axes[0]
    ax.errorbar(bvals, ds.gap_measured.values[sgd], yerr=ds.gap_measured_stderr.values[sgd], marker="o",
                color="k", capsize=3, ls="none", label=r"measured $S_{\rm GD}-S_{\rm SGD}(B)$")
    ax.plot(bvals, ds.gap_predicted_sharpening_alpha_leading.values[sgd], "s--", color="C0",
            label=r"$\eta\beta\sigma_u^2/(4\alpha)$, α from sharpening")
    ax.plot(bvals, ds.gap_predicted_sharpening_alpha_exact.values[sgd], "^:", color="C0", alpha=0.6,
            label="same, closure-exact")
    if np.any(np.isfinite(ds.gap_predicted_plateau_leading.values[sgd])):
        ax.plot(bvals, ds.gap_predicted_plateau_leading.values[sgd], "d--", color="C3",
                label="α, β, σ² all from plateau")
    xx = np.geomspace(bvals.min(), bvals.max(), 50)
    for key, color in (("gap_measured", "k"), ("gap_predicted_sharpening_alpha_leading", "C0")):
        sl, ic, r2 = fits[key]
        if np.isfinite(sl):
            ax.plot(xx, np.exp(ic) * xx**sl, color=color, lw=0.8, alpha=0.7,
                    label=f"fit slope {sl:.2f} (R²={r2:.2f})")
    ax.set_yscale("log")
    batch_axis(ax, bvals)
    ax.set_xlabel("batch size B")
    ax.set_ylabel(r"gap $\Delta S$")
    ax.set_title(f"gap vs B (η={lr:g}, n={n_train}, 2/η={2 / lr:g})")
    ax.legend(fontsize=7)
    ax = axes[1]
    ax.errorbar(bvals, ds.plateau_sharpness.values[sgd], yerr=ds.plateau_sharpness_stderr.values[sgd],
                marker="o", color="k", capsize=3, label=r"$\lambda_{\max}$ (SGD plateau)")
    ax.errorbar(bvals, ds.batch_sharpness.values[sgd], yerr=ds.batch_sharpness_stderr.values[sgd],
                marker="s", color="C2", capsize=3, label="batch sharpness (§7.3)")
    ax.axhline(2 / lr, color="r", ls="--", lw=1, label=r"$2/\eta$")
    ax.axhline(s_gd, color="k", ls=":", lw=1, label=f"GD plateau {s_gd:.3g}")
    batch_axis(ax, bvals)
    ax.set_xlabel("batch size B")
    ax.set_ylabel("sharpness")
    ax.legend(fontsize=7)
    ax.set_title("λmax and batch sharpness at the plateau")
    ax = axes[2]
    ax.errorbar(bvals, ds.alpha.values[sgd], yerr=ds.alpha_stderr.values[sgd], marker="o", capsize=3,
                label="α at plateau (projected iterate)")
    ax.axhline(alpha_ps, color="C0", ls="--", label=f"α during GD sharpening = {alpha_ps:.3g}")
    ax.axhline(alpha_from_rate, color="C0", ls=":",
               label=f"ΔS/(ηΔt) during GD sharpening = {alpha_from_rate:.3g}")
    ax.axhline(0, color="gray", lw=0.6)
    ax2 = ax.twinx()
    ax2.errorbar(bvals, ds.sigma_u_sq.values[sgd], yerr=ds.sigma_u_sq_stderr.values[sgd], marker="^",
                 color="C1", capsize=3, label=r"$\sigma_u^2(B)$")
    ax2.set_yscale("log")
    ax2.set_ylabel(r"$\sigma_u^2$", color="C1")
    batch_axis(ax, bvals)
    ax.set_xlabel("batch size B")
    ax.set_ylabel("α")
    ax.set_title(f"measured α; β̄ ≈ {np.nanmean(ds.beta.values):.3g}")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7)
    return fig


def run(cfg: StudyConfig, out_dir: pathlib.Path, *, progress: bool = True) -> xr.Dataset:
    """Run the validated study file ``cfg`` (see `real_gap`)."""
    return real_gap(study_settings(cfg), out_dir, progress=progress)


plot = plot_real_gap
