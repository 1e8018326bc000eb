r"""Study kind ``real_eos`` (``studies/real_eos.toml``): full-batch GD on a real network at the edge of stability.

Full-batch GD on MNIST-1D sharpens progressively and then hovers at :math:`2/\eta` (Cohen et al.
2021); SGD at the same :math:`\eta` plateaus below, lower for smaller batches.  Keys: the study's own
(``batch_sizes``, ``plateau_start_fraction``) and every training setting of `sdeeos.TrainConfig`.
Writes ``real_eos.nc`` and ``real_eos.png/.pdf``.  Needs the ``torch`` extra.
"""

from __future__ import annotations

import pathlib
import time

import numpy as np
import xarray as xr
from matplotlib import colormaps

from .._statistics import mean_stderr
from .._train_config import TrainConfig
from ..plotting import new_figure
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

__all__ = ["SCHEMA", "run", "plot", "real_eos", "plot_real_eos"]

_REAL_EOS_KEYS = {"batch_sizes": ["full", 25, 50, 100, 250], "plateau_start_fraction": 0.5}
#: batch means over this many blocks: the plateau is a correlated series
_PLATEAU_BLOCKS = 5

SCHEMA = {
    "batch_sizes": batch_sizes_field(_REAL_EOS_KEYS["batch_sizes"]),
    "plateau_start_fraction": Field("float", default=_REAL_EOS_KEYS["plateau_start_fraction"], low=0.0, high=1.0,
                                    low_open=True, doc="plateau = sharpness steps >= this fraction of n_steps"),
    **train_fields(),
}



def real_eos(config: dict, out_dir: pathlib.Path, *, progress: bool = True) -> xr.Dataset:
    """GD reaches and hovers at :math:`2/\\eta`; SGD plateaus below, lower for smaller batches."""
    t_start = time.perf_counter()
    study, base = split_config(config, _REAL_EOS_KEYS, "real_eos")
    base.setdefault("sharpness_dtype", "float64")
    TrainConfig.from_dict({k: v for k, v in base.items()}).validated()
    runs, n_train = run_over_batch_sizes(base, study["batch_sizes"], progress, "real_eos")
    ds = combine_runs(runs)
    lr = float(base.get("lr", TrainConfig.lr))
    n_steps = int(base.get("n_steps", TrainConfig.n_steps))
    start = int(study["plateau_start_fraction"] * n_steps)
    plateau = [mean_stderr(ds.sharpness.sel(batch_size=b, sharpness_step=slice(start, None)).values,
                           n_blocks=_PLATEAU_BLOCKS)
               for b in ds.batch_size.values]
    ds["plateau_sharpness"] = ("batch_size", np.array([p[0] for p in plateau]))
    ds["plateau_sharpness_stderr"] = ("batch_size", np.array([p[1] for p in plateau]))
    ds["tracking_overhead"] = ("batch_size", np.array([r.attrs["tracking_overhead"] for r in runs]))
    ds["time_train_s"] = ("batch_size", np.array([r.attrs["time_train_s"] for r in runs]))
    ds["time_tracking_s"] = ("batch_size", np.array([r.attrs["time_tracking_s"] for r in runs]))
    ds.attrs = study_attrs("real_eos", study, base, time.perf_counter() - t_start)
    ds.attrs.update(two_over_eta=2.0 / lr, n_train_effective=int(n_train), plateau_start_step=start,
                    loss_convention=runs[0].attrs["loss_convention"], sampling=runs[-1].attrs["sampling"])

    save_study(ds, plot_real_eos(ds), out_dir, "real_eos")
    return ds


def plot_real_eos(ds: xr.Dataset):
    """The ``real_eos`` figure from its dataset: sharpness and loss vs step, plateau vs batch size."""
    lr = float(ds.attrs.get("lr", TrainConfig.lr))
    n_train = int(ds.attrs["n_train_effective"])
    start = int(ds.attrs["plateau_start_step"])
    model = ds.attrs.get("model", TrainConfig.model)
    loss = ds.attrs.get("loss", TrainConfig.loss)
    fig, axes = new_figure(1, 3, width=5, height=4.2)
    cmap = colormaps.get_cmap("viridis")
    bs = list(ds.batch_size.values)
    for i, b in enumerate(bs):
        full = b == n_train
        color = "k" if full else cmap(i / max(1, len(bs) - 1))
        lab = f"GD (B = n = {b})" if full else f"SGD B = {b}"
        s = ds.sharpness.sel(batch_size=b)
        axes[0].plot(ds.sharpness_step, s, color=color, lw=1.6 if full else 1.1, label=lab)
        axes[1].semilogy(ds.step, ds.train_loss.sel(batch_size=b), color=color, lw=1.2, label=lab)
    for ax in axes[:2]:
        ax.set_xlabel("step")
    axes[0].axhline(2 / lr, color="r", ls="--", lw=1, label=r"$2/\eta$")
    axes[0].set_ylabel(r"sharpness $\lambda_{\max}(\nabla^2 L)$")
    axes[0].set_title(f"{model}, {loss}, $\\eta$={lr:g}, n={n_train}")
    axes[0].legend(fontsize=8)
    axes[1].set_ylabel("training loss")
    axes[1].set_title("training loss (non-monotone at EoS)")
    order = np.argsort(bs)
    x = np.array(bs)[order]
    axes[2].errorbar(x, ds.plateau_sharpness.values[order], yerr=ds.plateau_sharpness_stderr.values[order],
                     marker="o", color="C0", capsize=3, label="plateau sharpness (mean ± SE)")
    axes[2].axhline(2 / lr, color="r", ls="--", lw=1, label=r"$2/\eta$")
    batch_axis(axes[2], x)
    axes[2].set_xlabel("batch size B (rightmost: GD)")
    axes[2].set_ylabel(f"mean sharpness, steps ≥ {start}")
    axes[2].legend(fontsize=8)
    axes[2].set_title("plateau vs batch size")
    return fig


def run(cfg: StudyConfig, out_dir: pathlib.Path, *, progress: bool = True) -> xr.Dataset:
    """Run the validated study file ``cfg`` (see `real_eos`)."""
    return real_eos(study_settings(cfg), out_dir, progress=progress)


plot = plot_real_eos
