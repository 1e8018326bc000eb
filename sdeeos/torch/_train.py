r"""Training harness: GD, SGD, SGD with momentum, Adam, EoS-SGD and edge-SGD on a real data set, with
sharpness tracked on a stride, written as an ``xarray.Dataset``.

Sampling: SGD draws every step's batch uniformly **without replacement** from the training set,
independently across steps (``randperm(n)[:B]``), the sampling model of docs/theory.md#batch-noise under which
:math:`u^\top\Sigma_Bu=\frac{n-B}{B(n-1)}\sigma_1^2` holds exactly.  GD uses the whole training set.
Every other random draw has its own generator (EoS-SGD's and edge-SGD's curvature batch, edge-SGD's
probe batch and the extra batches it samples for batch sharpness), so the sequence of training
batches depends on the seed only, never on the optimizer.

Step-size schedule (``lr_schedule``, gd/sgd/momentum/adam): ``"constant"``, or ``"cosine"``,
:math:`\eta_t=\eta\,\tfrac12(1+\cos(\pi t/T))` at step :math:`t=0,\dots,T-1` with :math:`T` = ``n_steps``.
The ``learning_rate`` recorded at an evaluation step :math:`s\ge1` is the step size of step :math:`s-1`
(the last step taken); at :math:`s=0` it is that of step 0 (NaN for EoS-SGD and edge-SGD, which set
theirs at their first step).

Edge-SGD (:class:`~sdeeos.torch.EdgeSGD`): per evaluation step the measured estimates, the three
unmargined step edges (``inf`` where a term is off or does not bind) and the binding term (an integer
code, ``flag_values``/``flag_meanings`` in its attributes); per run the number of steps each term bound,
the controller's measuring time and Hessian-vector products, its refresh count and final interval.

Sharpness :math:`\lambda_{\max}(\nabla^2L)` of the *full training loss* (or of its first
``sharpness_n_train`` examples, Cohen et al.'s "abridged" set) is computed every ``sharpness_every``
steps by warm-started Lanczos (:class:`~sdeeos.torch.SharpnessTracker`), in ``sharpness_dtype``
(``"float64"`` for eigenvalue work; ``"same"`` uses the training dtype).  With ``measure_theory`` the
self-stabilization quantities are also measured at those of them from ``theory_start`` on (dim
``theory_step``; see :func:`_theory_record`).

Timing: ``time_train_s`` counts only the optimizer steps (forward, backward, update, and EoS-SGD's
own curvature refreshes); ``time_tracking_s`` the sharpness tracking; ``time_eval_s`` loss/accuracy
evaluation.  ``tracking_overhead`` = ``time_tracking_s / time_train_s``.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from .._errors import ParameterError, SdeeosError
from .._provenance import provenance_attrs
from .._train_config import ADAPTIVE_STEP_OPTIMIZERS, EDGE_TERMS, OPTIMIZERS, TrainConfig, edge_terms
from .._validation import check_choice
from ._curvature import FlatParams, SharpnessTracker, disable_tf32
from ._data import load_data
from ._edge_optimizer import NonFiniteCurvatureError
from ._edge_sgd import EdgeSGD
from ._eos_sgd import EoSSGD
from ._label_noise import label_noise_targets
from ._nets import build_model, per_example_loss
from ._quantities import (
    batch_sharpness,
    loss_function,
    per_example_loss_function,
    predicted_gap,
    project_to_stable_set,
    projected_noise_variance,
    self_stabilization_constants,
)

__all__ = ["OPTIMIZERS", "TrainConfig", "NonFiniteLossError", "train"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}  # TrainConfig.dtype choices

#: edge-SGD's binding term as recorded (``edge_binding_term``): code -> name; -1 before the first step
EDGE_BINDING = {-1: "none", 0: "eta_max", **{i + 1: t for i, t in enumerate(EDGE_TERMS)}}
_EDGE_CODE = {name: code for code, name in EDGE_BINDING.items()}
_EDGE_ESTIMATES = {"lambda_max": "edge_lambda_max", "lambda_residual": "edge_lambda_residual",
                   "batch_sharpness": "edge_batch_sharpness", "batch_sharpness_stderr": "edge_batch_sharpness_stderr",
                   "ntk_trace": "edge_ntk_trace", "ntk_trace_stderr": "edge_ntk_trace_stderr",
                   "noise_kernel_at_lr": "edge_noise_kernel"}

# generator seeds: seed + offset, one stream per purpose (seed <= 2**63 - 1 and offset < 2**62 stay below 2**64)
_TRAIN_BATCHES, _THEORY, _CURVATURE_BATCH, _PROBE_BATCH, _EDGE_SAMPLES, _LABEL_NOISE = (
    1_000_003, 2_000_003, 3_000_017, 4_000_037, 5_000_011, 6_000_011)


class NonFiniteLossError(SdeeosError, FloatingPointError):
    """The training loss became NaN or infinite; the message gives the step and the last sharpness."""

    def __init__(self, message: str, dataset: xr.Dataset | None = None):
        super().__init__(message)
        self.dataset = dataset


def _theory_record(flat, data_c, loss, theta, eig, lr, batch_size, n_batches, gen, tol, max_iter):
    """Self-stabilization quantities at the iterate ``theta`` and at its stable-set projection.

    At the iterate: batch sharpness (docs/theory.md#batch-sharpness) for the run's batch size.  At the projection
    :math:`\\theta^\\dagger=\\theta-u(u\\cdot\\nabla L)/S` (oscillation along :math:`u` removed):
    :math:`S^\\dagger`, :math:`\\alpha`, :math:`\\beta`, :math:`\\sigma_1^2`, :math:`\\sigma_u^2(B)` and the predicted gaps.
    """
    fn = loss_function(flat, data_c.x_train, data_c.targets_train, loss)
    pe = per_example_loss_function(flat, data_c.x_train, data_c.targets_train, loss)
    n = data_c.n_train
    b = n if batch_size is None else min(batch_size, n)
    out = {}
    if b < n:
        bs, bs_se = batch_sharpness(flat, data_c.x_train, data_c.targets_train, loss, theta, b,
                                    n_batches=n_batches, generator=gen)
    else:
        bs, bs_se = float("nan"), float("nan")
    out["batch_sharpness"], out["batch_sharpness_stderr"] = bs, bs_se
    theta_p, eig_p, n_hvp = project_to_stable_set(fn, theta, eig, n_newton=2, tol=tol, max_iter=max_iter)
    const = self_stabilization_constants(fn, theta_p, eig_p)
    noise = projected_noise_variance(pe, theta_p, eig_p.vector, [b])
    out.update(
        sharpness_projected=const.sharpness, alpha=const.alpha, beta=const.beta,
        alpha_full=const.alpha_full,
        sigma1_sq=noise["sigma1_sq"], sigma_u_sq=float(noise["sigma_u_sq"][0]),
        theory_n_hvp=n_hvp,
    )
    gap = predicted_gap(lr, const.alpha, const.beta, out["sigma_u_sq"])
    out["gap_predicted_leading"] = float(gap["leading"])
    out["gap_predicted_exact"] = float(gap["exact"])
    return out


def batch_indices(n: int, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """``batch_size`` distinct indices of ``range(n)``, uniformly at random (one training batch)."""
    return torch.randperm(n, generator=generator)[:batch_size]


def cosine_lr(lr: float, step: int, n_steps: int) -> float:
    """The cosine schedule's step size at ``step`` (0-based) of ``n_steps``: ``lr (1 + cos(pi t/T))/2``.

    >>> cosine_lr(0.4, 0, 100), cosine_lr(0.4, 50, 100)
    (0.4, 0.2)
    """
    return lr * 0.5 * (1.0 + math.cos(math.pi * step / n_steps))


def _fixed_subset(data, size: int, seed: int):
    idx = torch.randperm(data.n_train, generator=torch.Generator().manual_seed(seed))[: min(size, data.n_train)]
    return data.x_train[idx], data.targets_train[idx]


def _config_attrs(cfg: TrainConfig) -> dict:
    attrs = {}
    for k, v in dataclasses.asdict(cfg).items():
        attrs[k] = "none" if v is None else (int(v) if isinstance(v, bool) else v)
    attrs["seed"] = str(cfg.seed)
    return attrs


def train(config: TrainConfig | dict, *, progress: bool = True, on_nonfinite: str = "raise",
          init_params: torch.Tensor | None = None, data=None) -> xr.Dataset:
    """Run one training run; returns an ``xarray.Dataset`` (dims ``step`` and ``sharpness_step``).

    ``on_nonfinite="raise"`` raises :class:`NonFiniteLossError` (with the partial dataset attached
    as ``.dataset``) when the training loss becomes NaN/inf; ``"stop"`` returns the partial
    dataset with ``attrs["stopped_reason"]`` and ``attrs["diverged_step"]``.  ``init_params`` (a flat
    vector) replaces the seeded initialisation; ``data`` (a :class:`ClassificationData`) skips loading.
    """
    cfg = (TrainConfig.from_dict(config) if isinstance(config, dict) else config).validated()
    check_choice("on_nonfinite", on_nonfinite, ("raise", "stop"))
    disable_tf32()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    dtype = _DTYPES[cfg.dtype]
    sdtype = dtype if cfg.sharpness_dtype == "same" else _DTYPES[cfg.sharpness_dtype]
    if data is None:
        data = load_data(cfg.dataset, loss=cfg.loss, n_train=cfg.n_train, n_test=cfg.n_test, dtype=dtype)
    else:
        data = data.to(dtype)
    n = data.n_train
    if cfg.batch_size is not None and cfg.batch_size > n:
        raise ParameterError(f"batch_size must be in [1, {n}] (the training-set size), got {cfg.batch_size}")
    full_batch = cfg.optimizer == "gd" or cfg.batch_size is None or cfg.batch_size == n
    batch_size = n if full_batch else cfg.batch_size
    if cfg.optimizer == "edge-sgd" and cfg.edge_probe_size > n:
        raise ParameterError(f"edge_probe_size must be an integer in [1, {n}] (the training-set size), "
                             f"got {cfg.edge_probe_size}")

    model = build_model(cfg.model, data.input_shape, data.n_classes, width=cfg.width, depth=cfg.depth,
                        channels=cfg.channels, seed=cfg.seed, dtype=dtype)
    flat = FlatParams(model)
    if init_params is not None:
        flat.assign(init_params.to(dtype))
    gen = torch.Generator().manual_seed(cfg.seed + _TRAIN_BATCHES)
    theory_gen = torch.Generator().manual_seed(cfg.seed + _THEORY)
    label_gen = torch.Generator().manual_seed(cfg.seed + _LABEL_NOISE)

    # curvature data (possibly abridged, possibly float64)
    data_c = data.to(sdtype)
    if cfg.sharpness_n_train is not None and cfg.sharpness_n_train < n:
        k = cfg.sharpness_n_train
        data_c = dataclasses.replace(data_c, x_train=data_c.x_train[:k], y_train=data_c.y_train[:k],
                                     targets_train=data_c.targets_train[:k])
    tracker = SharpnessTracker(tol=cfg.sharpness_tol, max_iter=cfg.sharpness_max_iter, seed=cfg.seed)

    # optimizer
    params = list(model.parameters())
    if cfg.optimizer in ("gd", "sgd"):
        opt = torch.optim.SGD(params, lr=cfg.lr)
    elif cfg.optimizer == "momentum":
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum)
    elif cfg.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2))
    elif cfg.optimizer == "edge-sgd":
        sample_gen = torch.Generator().manual_seed(cfg.seed + _EDGE_SAMPLES)

        def sample_batch():  # the controller's own draws: the training batch stream never sees them
            idx = batch_indices(n, batch_size, sample_gen)
            return data.x_train[idx], data.targets_train[idx]

        opt = EdgeSGD(params, model=model, loss=cfg.loss, n_data=n, batch_size=batch_size,
                      eta_max=cfg.edge_eta_max, margin=cfg.edge_margin, momentum=cfg.edge_momentum,
                      terms=edge_terms(cfg.edge_terms), refresh=cfg.edge_refresh,
                      refresh_every=cfg.edge_refresh_every, refresh_max=cfg.edge_refresh_max,
                      curvature_batch=_fixed_subset(data, cfg.edge_curvature_batch_size, cfg.seed + _CURVATURE_BATCH),
                      probe_batch=_fixed_subset(data, cfg.edge_probe_size, cfg.seed + _PROBE_BATCH),
                      sample_batch=sample_batch, batch_sharpness_batches=cfg.edge_bs_batches,
                      max_overhead=cfg.edge_max_overhead, seed=cfg.seed)
    else:
        xc, tc = _fixed_subset(data, cfg.eos_curvature_batch_size, cfg.seed + _CURVATURE_BATCH)

        def curvature_closure():
            return per_example_loss(model(xc), tc, cfg.loss)

        opt = EoSSGD(params, curvature_closure=curvature_closure, batch_size=batch_size, eta_max=cfg.eos_eta_max,
                     c=cfg.eos_c, k=cfg.eos_k, momentum=cfg.eos_momentum, noise_ema=cfg.eos_noise_ema,
                     lanczos_steps=cfg.eos_lanczos_steps, n_data=n, seed=cfg.seed)

    rec: dict[str, list] = {k: [] for k in ("step", "train_loss", "train_accuracy", "test_loss",
                                            "test_accuracy", "learning_rate", "elapsed_train_s")}
    srec: dict[str, list] = {k: [] for k in ("sharpness_step", "sharpness", "sharpness_n_hvp",
                                             "sharpness_residual")}
    trec: dict[str, list] = {}
    t_train = t_track = t_eval = t_theory = 0.0
    last_sharp = (float("nan"), -1)
    stopped, diverged_step, target_step, target_time = "completed", -1, -1, float("nan")
    # EoS-SGD, edge-SGD: set by their first step
    current_lr = float("nan") if cfg.optimizer in ADAPTIVE_STEP_OPTIMIZERS else cfg.lr
    binding_steps = dict.fromkeys(EDGE_BINDING.values(), 0)
    nonfinite_curvature = None

    def evaluate(step):
        nonlocal t_eval
        t0 = time.perf_counter()
        with torch.no_grad():
            out = model(data.x_train)
            ltr = float(per_example_loss(out, data.targets_train, cfg.loss).mean())
            atr = float((out.argmax(-1) == data.y_train).to(torch.float64).mean())
            out = model(data.x_test)
            lte = float(per_example_loss(out, data.targets_test, cfg.loss).mean())
            ate = float((out.argmax(-1) == data.y_test).to(torch.float64).mean())
        rec["step"].append(step)
        rec["train_loss"].append(ltr)
        rec["train_accuracy"].append(atr)
        rec["test_loss"].append(lte)
        rec["test_accuracy"].append(ate)
        rec["learning_rate"].append(current_lr)
        rec["elapsed_train_s"].append(t_train)
        if cfg.optimizer == "eos-sgd":
            rec.setdefault("eos_lambda_hat", []).append(opt.last_lambda)
            rec.setdefault("eos_noise_variance", []).append(opt.noise_variance)
        if cfg.optimizer == "edge-sgd":
            stepped = step > 0
            for key, name in _EDGE_ESTIMATES.items():
                rec.setdefault(name, []).append(float(opt.estimates[key]) if stepped else float("nan"))
            for term in EDGE_TERMS:
                rec.setdefault(f"edge_step_{term}", []).append(float(opt.edges[term]) if stepped else float("nan"))
            rec.setdefault("edge_binding_term", []).append(_EDGE_CODE[opt.binding_term] if stepped else -1)
        t_eval += time.perf_counter() - t0
        return ltr, ate

    def track(step):
        nonlocal t_track, t_theory, last_sharp
        t0 = time.perf_counter()
        theta = flat.flat(sdtype)
        fn = loss_function(flat, data_c.x_train, data_c.targets_train, cfg.loss)
        res = tracker(fn, theta)
        srec["sharpness_step"].append(step)
        srec["sharpness"].append(res.value)
        srec["sharpness_n_hvp"].append(res.n_hvp)
        srec["sharpness_residual"].append(res.residual)
        last_sharp = (res.value, step)
        t_track += time.perf_counter() - t0
        if cfg.measure_theory and step >= cfg.theory_start:
            lr_now = current_lr
            t1 = time.perf_counter()
            tr = _theory_record(flat, data_c, cfg.loss, theta, res, lr_now,
                                None if full_batch else batch_size, cfg.batch_sharpness_batches,
                                theory_gen, 1e-6, max(cfg.sharpness_max_iter, 200))
            for k, v in tr.items():
                trec.setdefault(k, []).append(v)
            t_theory += time.perf_counter() - t1
        return res.value

    bar = tqdm(total=cfg.n_steps, disable=not progress, desc=f"train {cfg.optimizer}", leave=False)

    step = 0
    for step in range(cfg.n_steps + 1):
        if step % cfg.eval_every == 0 or step == cfg.n_steps:
            _, test_acc = evaluate(step)
            if cfg.target_test_accuracy is not None and test_acc >= cfg.target_test_accuracy and target_step < 0:
                target_step, target_time = step, t_train
        if cfg.sharpness_every and (step % cfg.sharpness_every == 0 or step == cfg.n_steps):
            track(step)
        if target_step >= 0 and not cfg.continue_after_target:
            stopped = "target_test_accuracy reached"
            break
        if step == cfg.n_steps:
            break
        t0 = time.perf_counter()
        if full_batch:
            xb, tb = data.x_train, data.targets_train
        else:
            idx = batch_indices(n, batch_size, gen)
            xb, tb = data.x_train[idx], data.targets_train[idx]
        if cfg.label_noise > 0:
            tb = label_noise_targets(tb, cfg.label_noise, label_gen)
        if cfg.optimizer in ADAPTIVE_STEP_OPTIMIZERS:
            def closure():
                opt.zero_grad(set_to_none=True)
                mean_loss = per_example_loss(model(xb), tb, cfg.loss).mean()
                mean_loss.backward()
                return mean_loss

            try:
                loss_val = opt.step(closure)
            except NonFiniteCurvatureError as exc:
                t_train += time.perf_counter() - t0
                nonfinite_curvature, stopped, diverged_step = exc, "non-finite curvature", step
                break
            current_lr = opt.last_lr
            if cfg.optimizer == "edge-sgd":
                binding_steps[opt.binding_term] += 1
        else:
            if cfg.lr_schedule == "cosine":
                current_lr = cosine_lr(cfg.lr, step, cfg.n_steps)
                for group in opt.param_groups:
                    group["lr"] = current_lr
            opt.zero_grad(set_to_none=True)
            loss_val = per_example_loss(model(xb), tb, cfg.loss).mean()
            loss_val.backward()
            opt.step()
        lv = float(loss_val.detach())
        t_train += time.perf_counter() - t0
        if not math.isfinite(lv):
            stopped = "non-finite loss"
            diverged_step = step
            break
        if bar is not None:
            bar.update(1)
            if step % 50 == 0:
                bar.set_postfix(loss=f"{lv:.4g}", sharpness=f"{last_sharp[0]:.4g}", lr=f"{current_lr:.3g}")
    if bar is not None:
        bar.close()

    ds = xr.Dataset(
        {k: ("step", np.asarray(v, dtype=float)) for k, v in rec.items() if k != "step"},
        coords={"step": np.asarray(rec["step"], dtype=np.int64)},
    )
    sd = {k: ("sharpness_step", np.asarray(v, dtype=float)) for k, v in srec.items() if k != "sharpness_step"}
    ds = ds.assign_coords(sharpness_step=np.asarray(srec["sharpness_step"], dtype=np.int64)).assign(sd)
    if trec:
        tsteps = [st for st in srec["sharpness_step"] if st >= cfg.theory_start]
        ds = ds.assign_coords(theory_step=np.asarray(tsteps, dtype=np.int64)).assign(
            {k: ("theory_step", np.asarray(v, dtype=float)) for k, v in trec.items()})
    ds["sharpness_n_hvp"] = ds["sharpness_n_hvp"].astype(np.int64)
    ds["learning_rate"].attrs["long_name"] = ("step size of the last step (at step 0: of step 0; EoS-SGD and "
                                              "edge-SGD: eta_t, NaN at step 0)")
    if cfg.optimizer == "edge-sgd":
        ds["edge_binding_term"] = ds["edge_binding_term"].astype(np.int64)
        ds["edge_binding_term"].attrs.update(
            long_name="term that set the last step's eta_t (eta_max: the cap)",
            flag_values=np.array(list(EDGE_BINDING), dtype=np.int64), flag_meanings=" ".join(EDGE_BINDING.values()))
        for term in EDGE_TERMS:
            ds[f"edge_step_{term}"].attrs["long_name"] = (f"unmargined step-size edge of the {term} term "
                                                          "(inf: off or not binding)")
        ds["edge_lambda_max"].attrs["long_name"] = "lambda_max of the curvature-batch Hessian (last refresh)"
    ds["sharpness"].attrs["long_name"] = "lambda_max of the training-loss Hessian (Lanczos)"
    attrs = _config_attrs(cfg)
    attrs.update(
        batch_size_effective=int(batch_size), n_train_effective=int(n), n_parameters=int(flat.size),
        loss_convention=("0.5*||f-onehot||^2 summed over outputs, mean over examples (Cohen et al.)"
                         if cfg.loss == "mse" else "softmax cross-entropy, mean over examples"),
        sampling="uniform without replacement, independent per step" if not full_batch else "full batch",
        time_train_s=t_train, time_tracking_s=t_track, time_eval_s=t_eval, time_theory_s=t_theory,
        tracking_overhead=(t_track / t_train) if t_train > 0 else float("nan"),
        total_hvp=int(tracker.total_hvp), steps_run=int(step), stopped_reason=stopped,
        diverged_step=int(diverged_step), target_step=int(target_step), target_time_s=target_time,
    )
    if cfg.optimizer == "eos-sgd":
        attrs.update(eos_sgd_curvature_s=opt.curvature_seconds, eos_sgd_total_hvp=int(opt.total_hvp),
                     eos_sgd_final_noise_variance=float(opt.noise_variance))
    if cfg.optimizer == "edge-sgd":
        attrs.update(edge_overhead_s=float(opt.overhead_seconds), edge_total_hvp=int(opt.total_hvp),
                     edge_refresh_count=int(opt.refresh_count), edge_deferred_steps=int(opt.deferred_steps), edge_refresh_interval_final=int(opt.refresh_interval),
                     edge_overhead_fraction=(opt.overhead_seconds / t_train) if t_train > 0 else float("nan"),
                     **{f"edge_binding_steps_{name}": int(c) for name, c in binding_steps.items() if name != "none"})
    ds.attrs = provenance_attrs(**attrs)
    if nonfinite_curvature is not None:
        ds.attrs["stopped_reason"] = f"non-finite curvature at step {diverged_step}: {nonfinite_curvature}"
        if on_nonfinite == "raise":
            nonfinite_curvature.dataset = ds
            raise nonfinite_curvature
    if stopped == "non-finite loss":
        msg = (f"training loss became non-finite ({lv}) at step {diverged_step} "
               f"(optimizer {cfg.optimizer}, lr {current_lr:.4g}); last sharpness "
               + (f"{last_sharp[0]:.6g} measured at step {last_sharp[1]}" if last_sharp[1] >= 0
                  else "not measured")
               + f" (2/lr = {2 / current_lr:.6g})")
        ds.attrs["stopped_reason"] = msg
        if on_nonfinite == "raise":
            raise NonFiniteLossError(msg, ds)
    return ds
