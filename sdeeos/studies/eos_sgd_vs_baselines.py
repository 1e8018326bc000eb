r"""Study kind ``eos_sgd_vs_baselines`` (``studies/eos_sgd_vs_baselines.toml``): EoS-SGD against tuned baselines.

Time and steps to a target test accuracy for EoS-SGD against tuned SGD, SGD with momentum and Adam,
over seeds, with the tuning budget stated in the dataset.  Keys: the study's own (``seeds``,
``tuning_seed``, ``[grids]``) and every training setting of `sdeeos.TrainConfig`.  Needs the ``torch``
extra.
"""

from __future__ import annotations

import pathlib
import time

import numpy as np
import xarray as xr

from .._errors import ParameterError
from .._train_config import TrainConfig
from ..plotting import new_figure
from ..torch import train
from ._real import (
    save_study,
    split_config,
    study_attrs,
    study_settings,
    train_fields,
)
from ._schema import Field, StudyConfig, Table

__all__ = ["SCHEMA", "run", "plot", "eos_sgd_vs_baselines", "plot_eos_sgd_vs_baselines"]

_BASELINE_KEYS = {
    "seeds": [0, 1, 2],
    "tuning_seed": 100,
    "grids": {"sgd": [0.1, 0.2, 0.4, 0.8, 1.6], "momentum": [0.01, 0.02, 0.04, 0.08, 0.16],
              "adam": [0.0003, 0.001, 0.003, 0.01, 0.03], "eos-sgd": [0.25, 0.5, 1.0, 2.0, 4.0]},
}

_GRID = dict(low=0.0, low_open=True, min_len=1)

SCHEMA = {
    "seeds": Field("list[int]", default=_BASELINE_KEYS["seeds"], low=0, min_len=1, doc="seeds of the timed runs"),
    "tuning_seed": Field("int", default=_BASELINE_KEYS["tuning_seed"], low=0, doc="seed of the tuning runs"),
    "grids": Table(doc="step sizes tried per optimizer (EoS-SGD: eta_max); only the optimizers given run",
                   fields={k: Field("list[float]", doc=f"{k} grid", **_GRID) for k in _BASELINE_KEYS["grids"]}),
    **train_fields(),
}



def _time_to_target(ds) -> tuple[int, float]:
    if ds.attrs["target_step"] >= 0:
        return int(ds.attrs["target_step"]), float(ds.attrs["target_time_s"])
    return -1, float("inf")


def eos_sgd_vs_baselines(config: dict, out_dir: pathlib.Path, *, progress: bool = True) -> xr.Dataset:
    """Time and steps to ``target_test_accuracy``: EoS-SGD vs tuned SGD, SGD+momentum, Adam.

    Tuning: for each optimizer, every value of its grid (``grids``: the step size; for EoS-SGD the cap
    :math:`\\eta_{\\max}`) is run once with ``tuning_seed``; the value with the shortest training time
    to the target (ties: fewer steps) is then run with each of ``seeds``.  Time is optimizer time only
    (``time_train_s``: forward, backward, update, EoS-SGD's refreshes), not evaluation.
    """
    t_start = time.perf_counter()
    study, base = split_config(config, _BASELINE_KEYS, "eos_sgd_vs_baselines")
    grids = dict(study["grids"])  # exactly the optimizers given (default: all four)
    if base.get("target_test_accuracy") is None:
        raise ParameterError("eos_sgd_vs_baselines: target_test_accuracy must be set (in [0, 1])")
    base.setdefault("sharpness_every", 0)
    opts = list(grids)
    for o in opts:
        if o not in ("sgd", "momentum", "adam", "eos-sgd"):
            raise ParameterError(f"grids keys must be in ['adam', 'eos-sgd', 'momentum', 'sgd'], got {o!r}")

    def cfg_for(o, value, seed):
        c = dict(base)
        c["optimizer"] = o
        c["seed"] = int(seed)
        if o == "eos-sgd":
            c["eos_eta_max"] = float(value)
        else:
            c["lr"] = float(value)
        return c

    n_grid = max(len(g) for g in grids.values())
    tune_time = np.full((len(opts), n_grid), np.nan)
    tune_steps = np.full((len(opts), n_grid), -1)
    tune_value = np.full((len(opts), n_grid), np.nan)
    best = {}
    for i, o in enumerate(opts):
        for j, v in enumerate(grids[o]):
            ds = train(cfg_for(o, v, study["tuning_seed"]), progress=False, on_nonfinite="stop")
            st, tt = _time_to_target(ds)
            tune_time[i, j], tune_steps[i, j], tune_value[i, j] = tt, st, v
            if progress:
                print(f"[tune] {o} {v:g}: steps {st}, time {tt:.2f}s ({ds.attrs['stopped_reason'][:40]})",
                      flush=True)
        # fewest steps to target (deterministic); optimizer time only breaks ties, since wall time
        # on a shared machine fluctuates by 2x between identical runs
        order = sorted(range(len(grids[o])),
                       key=lambda j: (tune_steps[i, j] if tune_steps[i, j] >= 0 else 1 << 30, tune_time[i, j]))
        best[o] = grids[o][order[0]]

    seeds = list(study["seeds"])
    max_steps = int(base.get("n_steps", TrainConfig.n_steps))
    eval_every = int(base.get("eval_every", TrainConfig.eval_every))
    n_eval = max_steps // eval_every + 2
    steps_to = np.full((len(opts), len(seeds)), np.nan)
    time_to = np.full((len(opts), len(seeds)), np.nan)
    per_step = np.full((len(opts), len(seeds)), np.nan)
    curv_frac = np.full((len(opts), len(seeds)), np.nan)
    acc_curve = np.full((len(opts), len(seeds), n_eval), np.nan)
    time_curve = np.full((len(opts), len(seeds), n_eval), np.nan)
    lr_curve = np.full((len(opts), len(seeds), n_eval), np.nan)
    for i, o in enumerate(opts):
        for k, seed in enumerate(seeds):
            ds = train(cfg_for(o, best[o], seed), progress=progress, on_nonfinite="stop")
            st, tt = _time_to_target(ds)
            steps_to[i, k] = st if st >= 0 else np.nan
            time_to[i, k] = tt if np.isfinite(tt) else np.nan
            run_steps = max(int(ds.attrs["steps_run"]), 1)
            per_step[i, k] = ds.attrs["time_train_s"] / run_steps
            if o == "eos-sgd":
                curv_frac[i, k] = ds.attrs["eos_sgd_curvature_s"] / ds.attrs["time_train_s"]
            m = ds.step.size
            acc_curve[i, k, :m] = ds.test_accuracy.values
            time_curve[i, k, :m] = ds.elapsed_train_s.values
            lr_curve[i, k, :m] = ds.learning_rate.values
            if progress:
                print(f"[eval] {o} seed {seed}: steps {st}, time {tt:.2f}s", flush=True)

    out = xr.Dataset(
        {
            "steps_to_target": (("optimizer", "seed"), steps_to),
            "time_to_target_s": (("optimizer", "seed"), time_to),
            "time_per_step_s": (("optimizer", "seed"), per_step),
            "curvature_time_fraction": (("optimizer", "seed"), curv_frac),
            "tuned_value": ("optimizer", np.array([best[o] for o in opts], dtype=float)),
            "tuning_value": (("optimizer", "grid_index"), tune_value),
            "tuning_time_to_target_s": (("optimizer", "grid_index"), tune_time),
            "tuning_steps_to_target": (("optimizer", "grid_index"), tune_steps),
            "test_accuracy": (("optimizer", "seed", "eval_index"), acc_curve),
            "elapsed_train_s": (("optimizer", "seed", "eval_index"), time_curve),
            "learning_rate": (("optimizer", "seed", "eval_index"), lr_curve),
        },
        coords={"optimizer": opts, "seed": seeds, "grid_index": np.arange(n_grid),
                "eval_index": np.arange(n_eval), "eval_step": ("eval_index", np.arange(n_eval) * eval_every)},
    )
    mean_t = np.nanmean(time_to, axis=1)
    mean_s = np.nanmean(steps_to, axis=1)
    out["time_to_target_mean_s"] = ("optimizer", mean_t)
    out["time_to_target_stderr_s"] = ("optimizer", np.nanstd(time_to, axis=1, ddof=1) / np.sqrt(len(seeds)))
    out["steps_to_target_mean"] = ("optimizer", mean_s)
    out["n_reached"] = ("optimizer", np.isfinite(time_to).sum(axis=1))
    base_opts = [i for i, o in enumerate(opts) if o != "eos-sgd"]
    attrs = {"tuning_budget": "; ".join(f"{o}: {len(grids[o])} runs ({'eta_max' if o == 'eos-sgd' else 'lr'} "
                                        f"in {grids[o]}), seed {study['tuning_seed']}" for o in opts),
             "selection": "fewest steps to target on the tuning seed (ties: shorter optimizer time)"}
    if "eos-sgd" in opts and base_opts:
        ie = opts.index("eos-sgd")
        best_base = min(base_opts, key=lambda i: mean_t[i] if np.isfinite(mean_t[i]) else np.inf)
        attrs.update(best_baseline=opts[best_base],
                     speedup_time_vs_best_baseline=float(mean_t[best_base] / mean_t[ie]),
                     speedup_steps_vs_best_baseline=float(mean_s[best_base] / mean_s[ie]))
        f = float(np.nanmean(curv_frac[ie]))
        attrs["eos_sgd_refresh_time_fraction"] = f
        attrs["eos_sgd_extra_cost_over_plain_steps"] = f / (1 - f)
        if "momentum" in opts:
            im = opts.index("momentum")
            attrs["eos_sgd_time_per_step_over_momentum"] = float(np.nanmean(per_step[ie]) / np.nanmean(per_step[im]))
    out.attrs = study_attrs("eos_sgd_vs_baselines", study, base, time.perf_counter() - t_start)
    out.attrs.update(attrs)

    save_study(out, plot_eos_sgd_vs_baselines(out), out_dir, "eos_sgd_vs_baselines")
    return out


def plot_eos_sgd_vs_baselines(ds: xr.Dataset):
    """The ``eos_sgd_vs_baselines`` figure from its dataset."""
    out = ds
    opts = [str(o) for o in ds.optimizer.values]
    seeds = list(ds.seed.values)
    best = dict(zip(opts, ds.tuned_value.values))
    time_curve = ds.elapsed_train_s.values
    acc_curve = ds.test_accuracy.values
    lr_curve = ds.learning_rate.values
    time_to = ds.time_to_target_s.values
    steps_to = ds.steps_to_target.values
    mean_t = ds.time_to_target_mean_s.values
    mean_s = ds.steps_to_target_mean.values
    a = ds.attrs
    fig, axes = new_figure(1, 4, width=5, height=4.3)
    target = float(a["target_test_accuracy"])
    for i, o in enumerate(opts):
        for k in range(len(seeds)):
            axes[0].plot(time_curve[i, k], acc_curve[i, k], color=f"C{i}", lw=1, alpha=0.8,
                         label=f"{o} ({'η_max' if o == 'eos-sgd' else 'lr'}={best[o]:g})" if k == 0 else None)
    axes[0].axhline(target, color="k", ls="--", lw=1, label=f"target {target:g}")
    axes[0].set_xlabel("optimizer time (s)")
    axes[0].set_ylabel("test accuracy")
    axes[0].legend(fontsize=7)
    axes[0].set_title(f"{a.get('dataset', TrainConfig.dataset)}, {a.get('model', TrainConfig.model)}, "
                      f"{a.get('loss', TrainConfig.loss)}, B={a.get('batch_size')}")
    xs = np.arange(len(opts))
    for ax, mean, data, lab in ((axes[1], mean_t, time_to, "time to target (s)"),
                                (axes[2], mean_s, steps_to, "steps to target")):
        se = np.nanstd(data, axis=1, ddof=1) / np.sqrt(len(seeds))
        ax.bar(xs, mean, yerr=se, color=[f"C{i}" for i in xs], capsize=4, alpha=0.8)
        for i in xs:
            ax.plot(np.full(len(seeds), i), data[i], "k.", ms=4)
            if not np.all(np.isfinite(data[i])):
                ax.text(i, 0, f"{int(np.isfinite(data[i]).sum())}/{len(seeds)} reached", ha="center",
                        va="bottom", fontsize=7)
        ax.set_xticks(xs, opts)
        ax.set_ylabel(lab)
        ax.set_title(lab + f" (mean ± SE, {len(seeds)} seeds)")
    ax = axes[3]
    for i, o in enumerate(opts):
        if o in ("sgd", "momentum", "eos-sgd"):
            for k in range(len(seeds)):
                ax.plot(out.eval_step, lr_curve[i, k], color=f"C{i}", lw=1,
                        label=(f"{o} step size" + (" η_t" if o == "eos-sgd" else "")) if k == 0 else None)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("step size")
    ax.set_title("EoS-SGD η_t = min{(2+c√(ησ̂²))/λ̂, η_max} vs tuned lr")
    ax.legend(fontsize=7)
    return fig


def run(cfg: StudyConfig, out_dir: pathlib.Path, *, progress: bool = True) -> xr.Dataset:
    """Run the validated study file ``cfg`` (see `eos_sgd_vs_baselines`)."""
    settings = study_settings(cfg)
    if not settings["grids"]:  # no [grids] table: every optimizer with its default grid
        del settings["grids"]
    return eos_sgd_vs_baselines(settings, out_dir, progress=progress)


plot = plot_eos_sgd_vs_baselines
