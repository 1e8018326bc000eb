r"""Study kind ``eos_sgd_vs_baselines`` (``studies/eos_sgd_vs_baselines.toml``): edge-SGD and EoS-SGD
against tuned baselines, per setting, with ablations of edge-SGD.

Settings: every data set × architecture (network and loss) × batch size B.  Per setting:

* **Tuning** (``tuning_seed``): every competitor runs each value of its grid once (``[grids]``; all
  grids have the same length, so every competitor gets the same budget of runs): edge-SGD and EoS-SGD
  their cap :math:`\eta_{\max}`, SGD, SGD with momentum and Adam their step size.  The tuned value is
  the one with the fewest steps to the data set's target test accuracy (ties: shorter optimizer time;
  steps, not time, decide because wall time on a shared machine fluctuates between identical runs).
  ``cosine`` is the best of SGD/momentum/Adam by that criterion, re-tuned with the cosine schedule over
  ``grids.cosine`` × its tuned constant step size.
* **Ablations** of edge-SGD at its tuned :math:`\eta_{\max}` (no extra tuning): without the noise-kernel
  term, without the batch-sharpness term, and with a fixed refresh interval (``fixed_refresh_every``;
  0: the mean interval of the adaptive tuning run at the tuned value, steps to target / refreshes), and
  without the cost budget (``edge_max_overhead = 1``: every measurement the drift schedule asks for).
* **Timed runs**: every competitor at its tuned value on every seed, competitors interleaved seed by seed
  so that load drifts on the machine hit them alike.  With ``fixed_budget`` the runs continue after
  the target to the data set's budget of steps: time and steps to the target, and the final test
  accuracy at a fixed budget, from one run.

Reported (dims ``setting × competitor × seed``): steps and optimizer time to the target (``time_train_s``
up to the evaluation at which the target is first met: forward, backward, update and every
measurement the optimizer makes itself; evaluation excluded), final test accuracy, edge-SGD's
measuring time over its training time, the fraction of steps each term of its rule set
:math:`\eta_t`; per setting and competitor the means with 95 % Student-t intervals
(`sdeeos._statistics`), over the runs that reached the target (``n_reached`` counts them; a run
that never reaches it, or diverges, is counted there and never averaged in); the speedup of edge-SGD
in time and steps over the best tuned baseline (SGD, momentum, Adam or cosine: smallest mean time to
target among those reaching it on the most seeds) as a ratio of means with a delta-method interval on
the log scale (Welch–Satterthwaite degrees of freedom), and whether the goal of 1.5× is met: the
interval's lower end at or above 1.5 and the fixed-budget final accuracy not significantly lower than
the baseline's (the 95 % interval of the difference reaches 0).  For edge-SGD (seed by seed, per
evaluation step) the measured estimates and the three step edges over training.

Settings run in ``workers`` processes (one setting per process); every run uses ``threads`` torch
threads, so times stay comparable.  Needs the ``torch`` extra.
"""

from __future__ import annotations

import concurrent.futures
import math
import multiprocessing
import pathlib
import time

import numpy as np
import xarray as xr

from .._errors import ParameterError
from .._statistics import confidence_interval, mean_stderr
from .._train_config import DATASETS, EDGE_TERMS, LOSSES, MODELS, TrainConfig, edge_terms
from ..plotting import new_figure
from ..torch import train
from ._common import train_fields
from ._real import save_study, study_attrs, study_settings
from ._schema import Field, StudyConfig, Table

__all__ = ["SCHEMA", "run", "plot", "eos_sgd_vs_baselines", "plot_eos_sgd_vs_baselines", "COMPETITORS",
           "ABLATIONS", "speedup_interval", "summary_lines"]

#: competitors with a tuning grid (``cosine``: factors of the best baseline's tuned step size)
COMPETITORS = ("edge-sgd", "eos-sgd", "sgd", "momentum", "adam", "cosine")
BASELINES = ("sgd", "momentum", "adam")
#: ablations of edge-SGD at its tuned eta_max: name -> what changes
ABLATIONS = ("no_noise_kernel", "no_batch_sharpness", "fixed_refresh", "no_cost_budget")
_TIMED_BASELINES = BASELINES + ("cosine",)
GOAL_SPEEDUP = 1.5
_BINDING = ("eta_max",) + EDGE_TERMS
_EDGE_CURVES = ("learning_rate", "edge_step_curvature", "edge_step_batch_sharpness", "edge_step_noise_kernel",
                "edge_lambda_max", "edge_batch_sharpness", "edge_noise_kernel", "edge_ntk_trace")

_DEFAULT_GRIDS = {"edge-sgd": [0.5, 1.0, 2.0, 4.0], "eos-sgd": [0.25, 0.5, 1.0, 2.0],
                  "sgd": [0.1, 0.2, 0.4, 0.8], "momentum": [0.01, 0.02, 0.04, 0.08],
                  "adam": [0.0003, 0.001, 0.003, 0.01], "cosine": [1.0, 1.5, 2.0, 3.0]}
_STUDY_KEYS = {
    "datasets": ["mnist1d", "digits"],
    "architectures": [{"model": "mlp-tanh", "loss": "mse"}, {"model": "mlp-tanh", "loss": "ce"}],
    "batch_sizes": [16, 64, 256],
    "seeds": [0, 1, 2, 3, 4],
    "tuning_seed": 100,
    "targets": {"mnist1d": 0.6, "digits": 0.95},
    "budgets": {"mnist1d": 5000, "digits": 1000},
    "eval_every": {"mnist1d": 25, "digits": 10},
    "fixed_budget": True,
    "ablations": list(ABLATIONS),
    "fixed_refresh_every": 0,
    "workers": 1,
    "grids": _DEFAULT_GRIDS,
}
# the study sets these per setting and competitor: not keys of the file
_SET_BY_STUDY = ("dataset", "model", "loss", "batch_size", "seed", "optimizer", "lr", "lr_schedule",
                 "eos_eta_max", "edge_eta_max", "target_test_accuracy", "continue_after_target", "n_steps",
                 "eval_every")


def _check_architectures(values: list) -> list:
    for a in values:
        if not isinstance(a, dict) or set(a) != {"model", "loss"}:
            raise ParameterError(f"each architecture must be a table {{model, loss}}; got {a!r}")
        for key, allowed in (("model", MODELS), ("loss", LOSSES)):
            if a[key] not in allowed:
                raise ParameterError(f"architecture {key} must be one of {', '.join(allowed)}; got {a[key]!r}")
    if len({(a["model"], a["loss"]) for a in values}) != len(values):
        raise ParameterError("architectures lists one {model, loss} more than once")
    return values


_GRID = dict(low=0.0, low_open=True, min_len=1)
SCHEMA = {
    "datasets": Field("list[str]", default=_STUDY_KEYS["datasets"], choices=DATASETS, min_len=1,
                      doc="data sets"),
    "architectures": Field("list[any]", default=_STUDY_KEYS["architectures"], min_len=1,
                           check=_check_architectures, doc="tables {model, loss}"),
    "batch_sizes": Field("list[int]", default=_STUDY_KEYS["batch_sizes"], low=1, min_len=1,
                         doc="training batch sizes B"),
    "seeds": Field("list[int]", default=_STUDY_KEYS["seeds"], low=0, min_len=2,
                   doc="seeds of the timed runs (>= 2 for intervals)"),
    "tuning_seed": Field("int", default=_STUDY_KEYS["tuning_seed"], low=0, doc="seed of the tuning runs"),
    "targets": Table(doc="target test accuracy per data set",
                     fields={d: Field("float", default=_STUDY_KEYS["targets"][d], low=0.0, high=1.0, low_open=True,
                                      doc=f"{d} target") for d in DATASETS}),
    "budgets": Table(doc="steps per run (n_steps) per data set",
                     fields={d: Field("int", default=_STUDY_KEYS["budgets"][d], low=1, doc=f"{d} budget (steps)")
                             for d in DATASETS}),
    "eval_every": Table(doc="evaluation stride per data set (steps): the resolution of the steps to the target",
                        fields={d: Field("int", default=_STUDY_KEYS["eval_every"][d], low=1, doc=f"{d} stride")
                                for d in DATASETS}),
    "fixed_budget": Field("bool", default=True,
                          doc="timed runs continue after the target to the budget (final accuracy at a fixed budget)"),
    "ablations": Field("list[str]", default=_STUDY_KEYS["ablations"], choices=ABLATIONS,
                       doc="edge-SGD ablations at its tuned eta_max"),
    "fixed_refresh_every": Field("int", default=0, low=0,
                                 doc="refresh interval of the fixed_refresh ablation (0: the adaptive tuning run's mean)"),
    "workers": Field("int", default=1, low=1, doc="settings run in this many processes at once"),
    "grids": Table(doc="tuning grids, all of one length (edge-sgd, eos-sgd: eta_max; sgd, momentum, adam: lr; "
                       "cosine: factors of the best baseline's tuned lr); only the competitors given run",
                   fields={k: Field("list[float]", doc=f"{k} grid", **_GRID) for k in COMPETITORS}),
    **{k: v for k, v in train_fields().items() if k not in _SET_BY_STUDY},
}


# --------------------------------------------------------------------------- statistics
def _welch_dof(a: float, na: int, b: float, nb: int) -> float:
    """Welch–Satterthwaite degrees of freedom of ``a + b`` (squared standard errors ``a``, ``b``)."""
    if na < 2 and nb < 2:
        return float("nan")
    den = (a * a / (na - 1) if na > 1 else 0.0) + (b * b / (nb - 1) if nb > 1 else 0.0)
    return (a + b) ** 2 / den if den > 0 else math.inf  # no spread at all: a degenerate interval


def speedup_interval(baseline, candidate, confidence: float = 0.95) -> tuple[float, float, float]:
    r"""Ratio of means :math:`R=\bar b/\bar c` of two independent samples and its interval.

    Delta method on the log scale: :math:`\mathrm{se}(\log R)^2=\mathrm{se}_b^2/\bar b^2+\mathrm{se}_c^2/\bar c^2`,
    Student-t with Welch–Satterthwaite degrees of freedom; non-finite values are dropped.

    >>> r, lo, hi = speedup_interval([2.0, 2.2, 1.8], [1.0, 1.1, 0.9])
    >>> round(r, 12), lo < 2.0 < hi
    (2.0, True)
    """
    mb, sb = mean_stderr(baseline)
    mc, sc = mean_stderr(candidate)
    if not (mb > 0 and mc > 0):
        return float("nan"), float("nan"), float("nan")
    r = mb / mc
    a, b = (sb / mb) ** 2, (sc / mc) ** 2
    nb = int(np.isfinite(np.asarray(baseline, float)).sum())
    nc = int(np.isfinite(np.asarray(candidate, float)).sum())
    lo, hi = confidence_interval(math.log(r), math.sqrt(a + b), _welch_dof(a, nb, b, nc), confidence)
    return r, math.exp(lo), math.exp(hi)


def _difference_interval(x, y, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean of ``x`` minus mean of ``y`` (independent samples) and its Welch interval."""
    mx, sx = mean_stderr(x)
    my, sy = mean_stderr(y)
    nx, ny = (int(np.isfinite(np.asarray(v, float)).sum()) for v in (x, y))
    d = mx - my
    lo, hi = confidence_interval(d, math.sqrt(sx * sx + sy * sy), _welch_dof(sx * sx, nx, sy * sy, ny), confidence)
    return d, lo, hi


# --------------------------------------------------------------------------- one setting
def _competitors(study: dict) -> list[str]:
    comps = [c for c in COMPETITORS if c in study["grids"]]
    if "edge-sgd" in comps:
        comps += [f"edge-sgd:{a}" for a in study["ablations"]]
    return comps


def _ablation_terms(terms: tuple, ablation: str) -> str:
    drop = {"no_noise_kernel": "noise_kernel", "no_batch_sharpness": "batch_sharpness"}[ablation]
    return ",".join(t for t in terms if t != drop)


def _run_cfg(base: dict, comp: str, value: float, seed: int, tuned: dict, study: dict, stop_at_target: bool) -> dict:
    c = dict(base, seed=int(seed), continue_after_target=not stop_at_target)
    kind, _, ablation = comp.partition(":")
    if kind == "edge-sgd":
        c.update(optimizer="edge-sgd", edge_eta_max=float(value))
        if ablation == "fixed_refresh":
            c.update(edge_refresh="fixed", edge_refresh_every=int(tuned["fixed_refresh_every"]))
        elif ablation == "no_cost_budget":  # every measurement the drift schedule asks for
            c.update(edge_max_overhead=1.0)
        elif ablation:
            c["edge_terms"] = _ablation_terms(edge_terms(c.get("edge_terms", TrainConfig.edge_terms)), ablation)
    elif kind == "eos-sgd":
        c.update(optimizer="eos-sgd", eos_eta_max=float(value))
    elif kind == "cosine":
        c.update(optimizer=tuned["cosine_base"], lr=float(value), lr_schedule="cosine")
    else:
        c.update(optimizer=kind, lr=float(value))
    return c


def _to_target(ds) -> tuple[float, float]:
    if ds.attrs["target_step"] >= 0:
        return float(ds.attrs["target_step"]), float(ds.attrs["target_time_s"])
    return float("nan"), float("nan")


def _diverged(ds) -> bool:
    return int(ds.attrs["diverged_step"]) >= 0


def _rank(steps: float, seconds: float) -> tuple:
    return (steps if math.isfinite(steps) else math.inf, seconds if math.isfinite(seconds) else math.inf)


def _run_setting(job: dict) -> dict:
    """Tuning, ablation intervals and timed runs of one setting (picklable: runs in a worker process)."""
    study, base, progress, label = job["study"], job["base"], job["progress"], job["label"]
    grids = study["grids"]
    comps = _competitors(study)
    tuning = {}  # comp -> list of (value, steps, seconds, diverged)
    tuned: dict = {}

    def log(msg):
        if progress:
            print(f"[{label}] {msg}", flush=True)

    def tune(comp, values):
        rows = []
        for v in values:
            ds = train(_run_cfg(base, comp, v, study["tuning_seed"], tuned, study, True), progress=False,
                       on_nonfinite="stop")
            st, tt = _to_target(ds)
            rows.append((v, st, tt, _diverged(ds), ds))
            log(f"tune {comp} {v:g}: steps {st:g}, time {tt:.2f}s ({ds.attrs['stopped_reason'][:40]})")
        best = min(rows, key=lambda r: _rank(r[1], r[2]))
        tuning[comp] = [r[:4] for r in rows]
        return best

    for comp in ("edge-sgd", "eos-sgd") + BASELINES:
        if comp in grids:
            best = tune(comp, grids[comp])
            tuned[comp] = best[0]
            if comp == "edge-sgd":
                bds = best[4]  # the adaptive run's mean interval: steps run per refresh
                mean_interval = int(bds.attrs["steps_run"]) / max(int(bds.attrs["edge_refresh_count"]), 1)
                tuned["fixed_refresh_every"] = (study["fixed_refresh_every"] or max(1, round(mean_interval)))
                tuned["adaptive_mean_interval"] = mean_interval
    if "cosine" in grids:
        have = [b for b in BASELINES if b in grids]
        base_best = min(have, key=lambda b: _rank(*min(((s, t) for _, s, t, _ in tuning[b]), key=lambda x: _rank(*x))))
        tuned["cosine_base"] = base_best
        best = tune("cosine", [f * tuned[base_best] for f in grids["cosine"]])
        tuned["cosine"] = best[0]
    for a in study["ablations"]:
        if "edge-sgd" in grids:
            tuned[f"edge-sgd:{a}"] = tuned["edge-sgd"]

    seeds = study["seeds"]
    nc, ns = len(comps), len(seeds)
    n_eval = job["n_eval"]
    out = {k: np.full((nc, ns), np.nan) for k in (
        "steps_to_target", "time_to_target_s", "final_test_accuracy", "best_test_accuracy", "time_train_s",
        "time_per_step_s", "steps_run", "diverged", "overhead_fraction", "refresh_count", "total_hvp")}
    out["binding_fraction"] = np.full((nc, ns, len(_BINDING)), np.nan)
    for k in ("test_accuracy", "elapsed_train_s", "learning_rate", "curve_step"):
        out["curve_" + k if k != "curve_step" else k] = np.full((nc, ns, n_eval), np.nan)
    for k in _EDGE_CURVES + ("edge_binding_term",):
        out["edge_curve_" + k] = np.full((ns, n_eval), np.nan)
    for k, seed in enumerate(seeds):
        for i, comp in enumerate(comps):
            ds = train(_run_cfg(base, comp, tuned[comp], seed, tuned, study, not study["fixed_budget"]),
                       progress=False, on_nonfinite="stop")
            st, tt = _to_target(ds)
            a = ds.attrs
            out["steps_to_target"][i, k], out["time_to_target_s"][i, k] = st, tt
            out["final_test_accuracy"][i, k] = np.nan if _diverged(ds) else float(ds.test_accuracy.values[-1])
            out["best_test_accuracy"][i, k] = float(np.nanmax(ds.test_accuracy.values))
            out["time_train_s"][i, k] = a["time_train_s"]
            out["steps_run"][i, k] = a["steps_run"]
            out["time_per_step_s"][i, k] = a["time_train_s"] / max(int(a["steps_run"]), 1)
            out["diverged"][i, k] = float(_diverged(ds))
            if comp.startswith("edge-sgd"):
                out["overhead_fraction"][i, k] = a["edge_overhead_fraction"]
                out["refresh_count"][i, k] = a["edge_refresh_count"]
                out["total_hvp"][i, k] = a["edge_total_hvp"]
                stepped = sum(a[f"edge_binding_steps_{b}"] for b in _BINDING)
                out["binding_fraction"][i, k] = [a[f"edge_binding_steps_{b}"] / max(stepped, 1) for b in _BINDING]
            elif comp == "eos-sgd":
                out["overhead_fraction"][i, k] = a["eos_sgd_curvature_s"] / a["time_train_s"]
                out["total_hvp"][i, k] = a["eos_sgd_total_hvp"]
            m = ds.step.size
            out["curve_test_accuracy"][i, k, :m] = ds.test_accuracy.values
            out["curve_elapsed_train_s"][i, k, :m] = ds.elapsed_train_s.values
            out["curve_learning_rate"][i, k, :m] = ds.learning_rate.values
            out["curve_step"][i, k, :m] = ds.step.values
            if comp == "edge-sgd":
                for key in _EDGE_CURVES + ("edge_binding_term",):
                    out["edge_curve_" + key][k, :m] = ds[key].values
            log(f"seed {seed} {comp}: steps {st:g}, time {tt:.2f}s, final acc {out['final_test_accuracy'][i, k]:.3f}")
    n_grid = len(next(iter(grids.values())))
    out["tuning_value"] = np.full((nc, n_grid), np.nan)
    out["tuning_steps_to_target"] = np.full((nc, n_grid), np.nan)
    out["tuning_time_to_target_s"] = np.full((nc, n_grid), np.nan)
    out["tuning_diverged"] = np.full((nc, n_grid), np.nan)
    for i, comp in enumerate(comps):
        for j, (v, st, tt, dv) in enumerate(tuning.get(comp, [])):
            out["tuning_value"][i, j], out["tuning_steps_to_target"][i, j] = v, st
            out["tuning_time_to_target_s"][i, j], out["tuning_diverged"][i, j] = tt, float(dv)
    out["tuned_value"] = np.array([tuned[c] for c in comps], dtype=float)
    out["cosine_base"] = tuned.get("cosine_base", "")
    out["fixed_refresh_every"] = float(tuned.get("fixed_refresh_every", np.nan))
    out["adaptive_mean_interval"] = float(tuned.get("adaptive_mean_interval", np.nan))
    return out


# --------------------------------------------------------------------------- the study
def _key_error(keys: tuple, message: str, *more: tuple) -> ParameterError:
    exc = ParameterError(message)
    exc.keys = (keys,) + more  # where in the study file: the first of these keys it has (`run` adds file:line)
    return exc


def _check_study(study: dict, base: dict) -> None:
    grids = study["grids"]
    if not grids:
        raise _key_error(("grids",), "grids must name at least one competitor")
    lengths = {k: len(v) for k, v in grids.items()}
    if len(set(lengths.values())) != 1:
        raise _key_error(("grids",), f"grids must all have the same length (the same tuning budget per "
                                     f"competitor), got {lengths}")
    if "cosine" in grids and not any(b in grids for b in BASELINES):
        raise _key_error(("grids", "cosine"), "grids.cosine needs at least one of grids.sgd, grids.momentum, "
                                              "grids.adam (the baseline it re-tunes)")
    if "edge-sgd" not in grids and study["ablations"]:
        raise _key_error(("ablations",), "ablations need grids.edge-sgd (they run at its tuned eta_max)")
    terms = edge_terms(base.get("edge_terms", TrainConfig.edge_terms))
    for a in study["ablations"]:
        if a in ("no_noise_kernel", "no_batch_sharpness") and a[3:] not in terms:
            raise _key_error(("ablations",), f"ablation {a} needs {a[3:]} in edge_terms, got {','.join(terms)!r}",
                             ("edge_terms",))
        if a.startswith("no_") and len(terms) == 1:
            raise _key_error(("ablations",), f"ablation {a} would leave edge-SGD without terms "
                                             f"(edge_terms = {terms[0]!r})", ("edge_terms",))
    # every run's settings are checked before any work
    for d in study["datasets"]:
        for arch in study["architectures"]:
            for b in study["batch_sizes"]:
                probe = dict(base, dataset=d, batch_size=b, n_steps=study["budgets"][d],
                             target_test_accuracy=study["targets"][d], **arch)
                for comp in grids:
                    TrainConfig.from_dict(_run_cfg(probe, comp, 1.0, 0, {"cosine_base": "sgd",
                                                                        "fixed_refresh_every": 1}, study, True)).validated()


def eos_sgd_vs_baselines(config: dict, out_dir: pathlib.Path, *, progress: bool = True) -> xr.Dataset:
    """Run the study from a plain dict of its keys and training settings (see the module docstring)."""
    t_start = time.perf_counter()
    config = {k: v for k, v in config.items() if k not in ("kind", "name", "quick")}
    unknown = sorted(set(config) - set(SCHEMA) - {"title", "description"})
    if unknown:
        raise ParameterError(f"eos_sgd_vs_baselines: unknown key(s) {unknown}")
    study = {k: config.pop(k, v) for k, v in _STUDY_KEYS.items()}
    for key in ("title", "description"):
        study[key] = config.pop(key, "")
    study["grids"] = dict(study["grids"])
    for table in ("targets", "budgets", "eval_every"):
        study[table] = {**_STUDY_KEYS[table], **study[table]}
    base = {k: v for k, v in config.items() if v is not None}
    base.setdefault("sharpness_every", 0)
    base.setdefault("threads", 1)
    _check_study(study, base)

    settings = [(d, a, int(b)) for d in study["datasets"] for a in study["architectures"] for b in study["batch_sizes"]]
    labels = [f"{d}/{a['model']}/{a['loss']}/B={b}" for d, a, b in settings]
    n_eval = max(study["budgets"][d] // study["eval_every"][d] for d in study["datasets"]) + 2
    jobs = [dict(study=study, progress=progress, label=lab, n_eval=n_eval,
                 base=dict(base, dataset=d, model=a["model"], loss=a["loss"], batch_size=b,
                           n_steps=study["budgets"][d], target_test_accuracy=study["targets"][d],
                           eval_every=study["eval_every"][d]))
            for (d, a, b), lab in zip(settings, labels)]
    if study["workers"] > 1 and len(jobs) > 1:
        ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch state
        with concurrent.futures.ProcessPoolExecutor(min(study["workers"], len(jobs)), mp_context=ctx) as pool:
            results = list(pool.map(_run_setting, jobs))
    else:
        results = [_run_setting(j) for j in jobs]

    comps = _competitors(study)
    ds = _assemble(results, settings, labels, comps, study)
    attrs = study_attrs("eos_sgd_vs_baselines", study, base, time.perf_counter() - t_start)
    n_grid = len(next(iter(study["grids"].values())))
    attrs.update(
        tuning_budget=(f"{n_grid} runs per competitor and setting on seed {study['tuning_seed']}: "
                       + "; ".join(f"{c}: {'eta_max' if c in ('edge-sgd', 'eos-sgd') else 'lr factor' if c == 'cosine' else 'lr'}"
                                   f" in {v}" for c, v in study["grids"].items())
                       + "; ablations: no tuning (edge-sgd's tuned eta_max)"),
        selection="fewest steps to the target on the tuning seed (ties: shorter optimizer time)",
        time_measure="time_train_s up to the target: optimizer steps including the optimizer's own measurements; "
                     f"threads per run: {base['threads']}; workers: {study['workers']}",
        speedup_method="ratio of means over the runs that reached the target, 95 % delta-method interval on the "
                       "log scale with Welch-Satterthwaite degrees of freedom",
        goal=f"speedup >= {GOAL_SPEEDUP} in time to target over the best tuned baseline (interval lower end), "
             "with fixed-budget final test accuracy not significantly lower (95 % Welch interval of the "
             "difference reaches 0)",
        confidence=0.95,
    )
    ds.attrs = {**attrs, **ds.attrs}
    ds.attrs["summary"] = "\n".join(summary_lines(ds))
    save_study(ds, plot_eos_sgd_vs_baselines(ds), out_dir, "eos_sgd_vs_baselines")
    if progress:
        print(ds.attrs["summary"], flush=True)
    return ds


def summary_lines(ds: xr.Dataset) -> list[str]:
    """One line per setting: edge-SGD's speedup over the best baseline, the goal, the limiting term."""
    lines = []
    comps = [str(c) for c in ds.competitor.values]
    for s, label in enumerate(ds.setting.values):
        if "edge-sgd" not in comps or not ds.best_baseline.values[s]:
            continue
        ie = comps.index("edge-sgd")
        lines.append(
            f"{label}: edge-sgd vs {ds.best_baseline.values[s]}: time x{ds.speedup_time.values[s]:.3g} "
            f"[{ds.speedup_time_ci_low.values[s]:.3g}, {ds.speedup_time_ci_high.values[s]:.3g}], steps "
            f"x{ds.speedup_steps.values[s]:.3g}; final accuracy difference {ds.accuracy_difference.values[s]:+.3f}; "
            f"goal {GOAL_SPEEDUP}x {'reached' if ds.goal_reached.values[s] else 'not reached'}; "
            f"limiting term {ds.limiting_term.values[s] or '-'}; measuring time "
            f"{100 * ds.overhead_fraction_mean.values[s, ie]:.0f}% of training time; reached "
            f"{int(ds.n_reached.values[s, ie])}/{ds.sizes['seed']}")
    return lines


def _summarise(values: np.ndarray):
    """Mean, 95 % t-interval and count of the finite values along the last axis."""
    shape = values.shape[:-1]
    mean, lo, hi, n = (np.full(shape, np.nan) for _ in range(4))
    for at in np.ndindex(shape):
        v = values[at]
        m, se = mean_stderr(v)
        k = int(np.isfinite(v).sum())
        mean[at], n[at] = m, k
        lo[at], hi[at] = confidence_interval(m, se, k - 1) if k >= 2 else (np.nan, np.nan)
    return mean, lo, hi, n


def _assemble(results, settings, labels, comps, study) -> xr.Dataset:
    seeds = list(study["seeds"])
    stack = {k: np.stack([r[k] for r in results]) for k in results[0]
             if isinstance(results[0][k], np.ndarray)}
    sc, scs = ("setting", "competitor"), ("setting", "competitor", "seed")
    data = {}
    for k in ("steps_to_target", "time_to_target_s", "final_test_accuracy", "best_test_accuracy", "time_train_s",
              "time_per_step_s", "steps_run", "overhead_fraction", "refresh_count", "total_hvp"):
        data[k] = (scs, stack[k])
    data["diverged"] = (scs, stack["diverged"].astype(bool))
    data["reached_target"] = (scs, np.isfinite(stack["steps_to_target"]))
    data["binding_fraction"] = (scs + ("binding",), stack["binding_fraction"])
    for k in ("test_accuracy", "elapsed_train_s", "learning_rate"):
        data["curve_" + k] = (scs + ("eval_index",), stack["curve_" + k])
    data["curve_step"] = (scs + ("eval_index",), stack["curve_step"])
    for k in _EDGE_CURVES + ("edge_binding_term",):
        data["edge_curve_" + k] = (("setting", "seed", "eval_index"), stack["edge_curve_" + k])
    for k in ("tuning_value", "tuning_steps_to_target", "tuning_time_to_target_s", "tuning_diverged"):
        data[k] = (sc + ("grid_index",), stack[k])
    data["tuned_value"] = (sc, stack["tuned_value"])
    data["cosine_base"] = ("setting", np.array([r["cosine_base"] for r in results], dtype=str))
    data["fixed_refresh_every"] = ("setting", np.array([r["fixed_refresh_every"] for r in results]))
    data["adaptive_mean_interval"] = ("setting", np.array([r["adaptive_mean_interval"] for r in results]))
    n_eval = stack["curve_step"].shape[-1]
    ds = xr.Dataset(data, coords={
        "setting": labels, "competitor": comps, "seed": seeds, "binding": list(_BINDING),
        "grid_index": np.arange(stack["tuning_value"].shape[-1]), "eval_index": np.arange(n_eval),
        "dataset": ("setting", [d for d, _, _ in settings]), "model": ("setting", [a["model"] for _, a, _ in settings]),
        "loss": ("setting", [a["loss"] for _, a, _ in settings]), "batch_size": ("setting", [b for _, _, b in settings]),
        "target_test_accuracy": ("setting", [study["targets"][d] for d, _, _ in settings]),
        "budget_steps": ("setting", [study["budgets"][d] for d, _, _ in settings]),
        "eval_every": ("setting", [study["eval_every"][d] for d, _, _ in settings]),
    })
    for k in ("steps_to_target", "time_to_target_s", "final_test_accuracy", "overhead_fraction"):
        mean, lo, hi, n = _summarise(stack[k])
        ds[k + "_mean"], ds[k + "_ci_low"], ds[k + "_ci_high"] = ((sc, mean), (sc, lo), (sc, hi))
        if k == "time_to_target_s":
            ds["n_reached"] = (sc, n.astype(np.int64))
    mean, lo, hi, _ = _summarise(np.moveaxis(stack["binding_fraction"], -1, -2))
    ds["binding_fraction_mean"] = (sc + ("binding",), mean)
    _speedups(ds, comps)
    ds["binding_term_code"] = ("binding", np.arange(len(_BINDING), dtype=np.int64))
    ds["edge_curve_edge_binding_term"].attrs.update(
        flag_values=np.arange(-1, len(_BINDING), dtype=np.int64), flag_meanings="none " + " ".join(_BINDING))
    ds["time_to_target_s"].attrs["long_name"] = "optimizer time to the target test accuracy (NaN: not reached)"
    ds["overhead_fraction"].attrs["long_name"] = ("edge-SGD: measuring time / time_train_s; EoS-SGD: refresh "
                                                  "time / time_train_s")
    ds["binding_fraction"].attrs["long_name"] = "fraction of steps at which each term set edge-SGD's eta_t"
    ds["final_test_accuracy"].attrs["long_name"] = ("test accuracy at the end of the run (the budget with "
                                                    "fixed_budget, else at the target; NaN: diverged)")
    return ds


def _speedups(ds: xr.Dataset, comps: list) -> None:
    names = ("speedup_time", "speedup_time_ci_low", "speedup_time_ci_high", "speedup_steps",
             "speedup_steps_ci_low", "speedup_steps_ci_high", "accuracy_difference", "accuracy_difference_ci_low",
             "accuracy_difference_ci_high")
    ns = ds.sizes["setting"]
    vals = {k: np.full(ns, np.nan) for k in names}
    best = np.full(ns, "", dtype=object)
    goal = np.zeros(ns, dtype=bool)
    limiting = np.full(ns, "", dtype=object)
    have = [c for c in _TIMED_BASELINES if c in comps]
    for s in range(ns):
        if "edge-sgd" not in comps or not have:
            continue
        ie = comps.index("edge-sgd")
        t = ds.time_to_target_s.values[s]
        # the best baseline: reached on the most seeds, then the smallest mean time
        nr = {c: int(np.isfinite(t[comps.index(c)]).sum()) for c in have}
        mt = {c: float(ds.time_to_target_s_mean.values[s, comps.index(c)]) for c in have}
        b = min(have, key=lambda c: (-nr[c], mt[c] if math.isfinite(mt[c]) else math.inf))
        ib = comps.index(b)
        best[s] = b
        vals["speedup_time"][s], vals["speedup_time_ci_low"][s], vals["speedup_time_ci_high"][s] = \
            speedup_interval(t[ib], t[ie])
        st = ds.steps_to_target.values[s]
        vals["speedup_steps"][s], vals["speedup_steps_ci_low"][s], vals["speedup_steps_ci_high"][s] = \
            speedup_interval(st[ib], st[ie])
        acc = ds.final_test_accuracy.values[s]
        d, lo, hi = _difference_interval(acc[ie], acc[ib])
        vals["accuracy_difference"][s], vals["accuracy_difference_ci_low"][s] = d, lo
        vals["accuracy_difference_ci_high"][s] = hi
        equal_acc = bool(np.isfinite(hi) and hi >= 0) or d >= 0
        edge_reached_all = int(np.isfinite(t[ie]).sum()) == t.shape[-1]
        goal[s] = bool(vals["speedup_time_ci_low"][s] >= GOAL_SPEEDUP and equal_acc and edge_reached_all)
        frac = ds.binding_fraction_mean.values[s, ie]
        limiting[s] = _BINDING[int(np.nanargmax(frac))] if np.isfinite(frac).any() else ""
    for k, v in vals.items():
        ds[k] = ("setting", v)
    ds["best_baseline"] = ("setting", best.astype(str))
    ds["goal_reached"] = ("setting", goal)
    ds["limiting_term"] = ("setting", limiting.astype(str))
    ds["speedup_time"].attrs["long_name"] = "mean time to target of the best baseline / of edge-SGD"
    ds["accuracy_difference"].attrs["long_name"] = "edge-SGD minus best baseline: mean final test accuracy"
    ds["limiting_term"].attrs["long_name"] = "the term that set edge-SGD's eta_t on most steps (mean over seeds)"


# --------------------------------------------------------------------------- figure
def plot_eos_sgd_vs_baselines(ds: xr.Dataset):
    """The ``eos_sgd_vs_baselines`` figure from its dataset: time to target per setting and competitor,
    the speedup of edge-SGD, its edges over training in one setting, and the binding-term fractions."""
    comps = [str(c) for c in ds.competitor.values]
    settings = [str(s) for s in ds.setting.values]
    ns, nc = len(settings), len(comps)
    fig, axes = new_figure(2, 2, width=max(6.0, 0.9 * ns + 3), height=4.3)
    ax = axes[0, 0]
    width = 0.8 / nc
    xs = np.arange(ns)
    for i, c in enumerate(comps):
        m = ds.time_to_target_s_mean.values[:, i]
        lo, hi = ds.time_to_target_s_ci_low.values[:, i], ds.time_to_target_s_ci_high.values[:, i]
        # a t-interval reaching below 0 is drawn to the axis (log scale: a positive floor)
        lo = np.where(np.isfinite(lo), np.maximum(lo, 1e-3 * np.nan_to_num(m)), m)
        err = np.vstack([m - lo, np.where(np.isfinite(hi), hi - m, 0)])
        ax.bar(xs + (i - (nc - 1) / 2) * width, np.nan_to_num(m), width, yerr=err, capsize=2, color=f"C{i}",
               label=c, alpha=0.85)
        for s in range(ns):
            n_seeds = ds.sizes["seed"]
            if int(ds.n_reached.values[s, i]) < n_seeds:
                ax.text(s + (i - (nc - 1) / 2) * width, 0.02, f"{int(ds.n_reached.values[s, i])}/{n_seeds}",
                        ha="center", va="bottom", fontsize=6, rotation=90, transform=ax.get_xaxis_transform())
    ax.set_xticks(xs, settings, rotation=30, ha="right", fontsize=7)
    positive = ds.time_to_target_s.values[np.isfinite(ds.time_to_target_s.values)
                                          & (ds.time_to_target_s.values > 0)]
    if positive.size:  # settings differ by orders of magnitude: a log axis, bars from below the fastest run
        ax.set_yscale("log")
        ax.set_ylim(bottom=0.5 * positive.min())
    ax.set_ylabel("optimizer time to target (s)")
    ax.set_title(f"time to target: mean, 95 % t-interval ({ds.sizes['seed']} seeds; n/N: reached)")
    ax.legend(fontsize=6, ncol=2)

    ax = axes[0, 1]
    sp = ds.speedup_time.values
    ax.errorbar(xs, sp, yerr=np.vstack([sp - ds.speedup_time_ci_low.values, ds.speedup_time_ci_high.values - sp]),
                fmt="o", color="C0", capsize=3, label="time")
    sps = ds.speedup_steps.values
    ax.errorbar(xs + 0.15, sps, yerr=np.vstack([sps - ds.speedup_steps_ci_low.values,
                                                 ds.speedup_steps_ci_high.values - sps]),
                fmt="s", color="C1", capsize=3, label="steps")
    ax.axhline(GOAL_SPEEDUP, color="k", ls="--", lw=1, label=f"goal {GOAL_SPEEDUP}x")
    ax.axhline(1.0, color="0.5", ls=":", lw=1)
    ax.set_yscale("log")
    ax.set_xticks(xs, [f"{s}\nvs {b}" for s, b in zip(settings, ds.best_baseline.values)], rotation=30,
                  ha="right", fontsize=7)
    ax.set_ylabel("speedup of edge-SGD over the best baseline")
    ax.set_title("speedup (ratio of means, 95 % delta-method interval)")
    ax.legend(fontsize=7)

    ax = axes[1, 0]
    rep = _representative(ds)
    if rep is not None:
        cs = ds.isel(setting=rep, seed=0)
        step = cs.curve_step.sel(competitor="edge-sgd").values
        margin = float(ds.attrs.get("edge_margin", TrainConfig.edge_margin))
        for j, term in enumerate(EDGE_TERMS):
            v = cs[f"edge_curve_edge_step_{term}"].values
            ax.plot(step, margin * v, color=f"C{j + 1}", lw=2, alpha=0.7, label=f"margin × {term} edge")
        ax.plot(step, cs.edge_curve_learning_rate.values, "k--", lw=1, label="η_t")
        ax.axhline(float(cs.tuned_value.sel(competitor="edge-sgd")), color="0.5", ls="--", lw=1, label="η_max")
        ax.set_yscale("log")
        ax.set_title(f"edge-SGD edges over training: {settings[rep]}, seed {int(ds.seed.values[0])}")
    ax.set_xlabel("step")
    ax.set_ylabel("step size")
    ax.legend(fontsize=6)

    ax = axes[1, 1]
    edge_rows = [i for i, c in enumerate(comps) if c.startswith("edge-sgd")]
    if edge_rows:
        ie = comps.index("edge-sgd") if "edge-sgd" in comps else edge_rows[0]
        frac = ds.binding_fraction_mean.values[:, ie, :]
        bottom = np.zeros(ns)
        for j, b in enumerate(_BINDING):
            f = np.nan_to_num(frac[:, j])
            ax.bar(xs, f, bottom=bottom, color=f"C{j}", label=b)
            bottom += f
    ax.set_xticks(xs, settings, rotation=30, ha="right", fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("fraction of steps")
    ax.set_title("which term set edge-SGD's η_t (mean over seeds)")
    ax.legend(fontsize=7)
    return fig


def _representative(ds: xr.Dataset):
    """The setting whose edge curves are drawn: the first where edge-SGD ran and has finite edges."""
    if "edge-sgd" not in [str(c) for c in ds.competitor.values]:
        return None
    for s in range(ds.sizes["setting"]):
        if np.isfinite(ds.edge_curve_learning_rate.values[s, 0]).any():
            return s
    return None


def run(cfg: StudyConfig, out_dir: pathlib.Path, *, progress: bool = True) -> xr.Dataset:
    """Run the validated study file ``cfg`` (see the module docstring)."""
    settings = study_settings(cfg)
    if not settings.get("grids"):  # no [grids] table: every competitor with its default grid
        settings.pop("grids", None)
    try:
        return eos_sgd_vs_baselines(settings, out_dir, progress=progress)
    except ParameterError as exc:
        if hasattr(exc, "keys"):  # a cross-key check: point at the key in the file
            keys = next((k for k in exc.keys if k in cfg.lines), exc.keys[0])
            raise cfg.error(keys, str(exc)) from None
        raise


plot = plot_eos_sgd_vs_baselines
