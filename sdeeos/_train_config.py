"""`TrainConfig`: every setting of a real-network training run, declared once.

The dataclass is the single source of truth for the training settings: `sdeeos.torch.train` takes it,
``sdeeos train`` derives its command-line options from its fields (name, type, help), and the
real-network study kinds derive their schema's training keys from it.  This module does not import
torch, so the CLI's help and the study files' validation work without it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

import numpy as np

from ._errors import ParameterError
from ._optimizer_defaults import EDGE_SGD_DEFAULTS, EOS_SGD_DEFAULTS
from ._validation import check_choice, check_int, check_real
from .theory import step_size_edges

__all__ = ["TrainConfig", "OPTIMIZERS", "DATASETS", "MODELS", "LOSSES", "DTYPES", "EDGE_TERMS", "LR_SCHEDULES",
           "ADAPTIVE_STEP_OPTIMIZERS", "setting_type", "edge_terms"]

OPTIMIZERS = ("gd", "sgd", "momentum", "adam", "eos-sgd", "edge-sgd")
#: the optimizers that set their own step size (no ``lr_schedule`` for them)
ADAPTIVE_STEP_OPTIMIZERS = ("eos-sgd", "edge-sgd")
#: the terms of EdgeSGD's step-size rule (``edge_terms``: a comma-separated non-empty subset)
EDGE_TERMS = step_size_edges.EDGE_TERMS
LR_SCHEDULES = ("constant", "cosine")
DATASETS = ("mnist1d", "digits")
MODELS = ("mlp-tanh", "mlp-relu", "cnn-tanh", "cnn-relu")
LOSSES = ("mse", "ce")
DTYPES = ("float32", "float64")


def _setting(default, help: str, *, choices=None, low=None, high=None, low_open=False, high_open=False,
             check=None):
    return dataclasses.field(default=default, metadata={
        "help": help, "choices": choices, "low": low, "high": high, "low_open": low_open, "high_open": high_open,
        "check": check})


def edge_terms(value: str) -> tuple[str, ...]:
    """The terms named by an ``edge_terms`` setting (comma-separated, a non-empty subset of `EDGE_TERMS`).

    >>> edge_terms("curvature, noise_kernel")
    ('curvature', 'noise_kernel')
    """
    if not isinstance(value, str):  # a setting is a string (the command line's and TOML's form)
        raise ParameterError(f"edge_terms must be a comma-separated non-empty subset of {', '.join(EDGE_TERMS)}; "
                             f"got {value!r}")
    return step_size_edges.check_terms(value, "edge_terms")


def _check_edge_terms(value) -> str:
    return ",".join(edge_terms(value))


def _unit(**kw):  # an interval [0, 1)
    return dict(low=0.0, high=1.0, high_open=True, **kw)


@dataclasses.dataclass
class TrainConfig:
    """Every setting of a training run (all of them go into the dataset's attributes)."""

    dataset: str = _setting("mnist1d", "data set", choices=DATASETS)
    n_train: int | None = _setting(None, "keep the first N training examples (>= 2)", low=2)
    n_test: int | None = _setting(None, "keep the first N test examples (>= 2)", low=2)
    loss: str = _setting("mse", "mse (1/2 ||f - onehot||^2 summed over outputs, mean over examples) | ce",
                         choices=LOSSES)
    model: str = _setting("mlp-tanh", "network", choices=MODELS)
    width: int = _setting(100, "MLP hidden width", low=1)
    depth: int = _setting(2, "MLP hidden layers", low=1)
    channels: int = _setting(16, "CNN channels", low=1)
    optimizer: str = _setting("gd", "optimizer", choices=OPTIMIZERS)
    lr: float = _setting(0.1, "step size (EoS-SGD/edge-SGD: unused, see eos_eta_max/edge_eta_max)", low=0.0,
                         low_open=True)
    lr_schedule: str = _setting("constant", "step-size schedule of gd/sgd/momentum/adam: constant | cosine "
                                "(lr_t = lr (1 + cos(pi t / n_steps))/2 at step t)", choices=LR_SCHEDULES)
    batch_size: int | None = _setting(None, "mini-batch size (default: full batch; EoS-SGD: >= 2)", low=1)
    label_noise: float = _setting(0.0, "label-noise SGD: standard deviation s of fresh Gaussian noise added to the "
                                       "MSE targets at every step (0 = off)", low=0.0)
    momentum: float = _setting(0.9, "heavy-ball momentum of the momentum optimizer", **_unit())
    adam_beta1: float = _setting(0.9, "Adam beta1", **_unit())
    adam_beta2: float = _setting(0.999, "Adam beta2", **_unit())
    eos_c: float = _setting(EOS_SGD_DEFAULTS["c"], "EoS-SGD noise coefficient c >= 0", low=0.0)
    eos_eta_max: float = _setting(EOS_SGD_DEFAULTS["eta_max"], "EoS-SGD step-size cap eta_max > 0", low=0.0, low_open=True)
    eos_k: int = _setting(EOS_SGD_DEFAULTS["k"], "EoS-SGD curvature refresh period k >= 1", low=1)
    eos_momentum: float = _setting(EOS_SGD_DEFAULTS["momentum"], "EoS-SGD heavy-ball momentum", **_unit())
    eos_lanczos_steps: int = _setting(EOS_SGD_DEFAULTS["lanczos_steps"], "EoS-SGD Lanczos steps per refresh", low=1)
    eos_noise_ema: float = _setting(EOS_SGD_DEFAULTS["noise_ema"], "EoS-SGD EMA factor of the projected noise variance", **_unit())
    eos_curvature_batch_size: int = _setting(EOS_SGD_DEFAULTS["curvature_size"], "EoS-SGD examples in the curvature batch", low=1)
    edge_eta_max: float = _setting(EDGE_SGD_DEFAULTS["eta_max"], "edge-SGD step-size cap eta_max > 0", low=0.0, low_open=True)
    edge_margin: float = _setting(EDGE_SGD_DEFAULTS["margin"], "edge-SGD margin in (0, 1): eta_t = min(eta_max, margin * edge)",
                                  low=0.0, high=1.0, low_open=True, high_open=True)
    edge_momentum: float = _setting(EDGE_SGD_DEFAULTS["momentum"], "edge-SGD heavy-ball momentum (noise_kernel term: 0 only)", **_unit())
    edge_terms: str = _setting(",".join(EDGE_TERMS), "edge-SGD terms of the rule (comma-separated subset of "
                               + ", ".join(EDGE_TERMS) + ")", check=_check_edge_terms)
    edge_refresh: str = _setting(EDGE_SGD_DEFAULTS["refresh"], "edge-SGD refresh interval rule", choices=("adaptive", "fixed"))
    edge_refresh_every: int = _setting(EDGE_SGD_DEFAULTS["refresh_every"], "edge-SGD refresh interval (adaptive: the first) >= 1", low=1)
    edge_refresh_max: int = _setting(EDGE_SGD_DEFAULTS["refresh_max"], "edge-SGD adaptive refresh interval cap (>= edge_refresh_every)", low=1)
    edge_curvature_batch_size: int = _setting(EDGE_SGD_DEFAULTS["curvature_size"], "edge-SGD examples in the curvature batch (lambda_max)", low=1)
    edge_probe_size: int = _setting(EDGE_SGD_DEFAULTS["probe_size"], "edge-SGD probe examples for the NTK trace (K); at most n_train", low=1)
    edge_bs_batches: int = _setting(EDGE_SGD_DEFAULTS["batch_sharpness_batches"], "edge-SGD batches per batch-sharpness estimate", low=1)
    edge_max_overhead: float = _setting(EDGE_SGD_DEFAULTS["max_overhead"], "edge-SGD cost budget: measuring takes at most this fraction of the "
                                              "optimizer time (1 = no budget: a schedule independent of timing)",
                                        low=0.0, high=1.0, low_open=True)
    n_steps: int = _setting(1000, "number of optimizer steps", low=0)
    eval_every: int = _setting(50, "loss/accuracy stride (steps)", low=1)
    sharpness_every: int = _setting(200, "sharpness stride (steps; 0 = off)", low=0)
    sharpness_tol: float = _setting(1e-3, "Lanczos relative residual tolerance", low=0.0, low_open=True)
    sharpness_max_iter: int = _setting(100, "Lanczos iteration cap", low=1)
    sharpness_dtype: str = _setting("same", "dtype of the sharpness computation", choices=("same",) + DTYPES)
    sharpness_n_train: int | None = _setting(None, "compute sharpness on the first N training examples", low=2)
    measure_theory: bool = _setting(False, "also measure alpha, beta, sigma_u^2, batch sharpness and the "
                                           "predicted gap")
    theory_start: int = _setting(0, "measure the theory's quantities from this step on", low=0)
    batch_sharpness_batches: int = _setting(8, "batches per batch-sharpness estimate", low=2)
    dtype: str = _setting("float32", "training dtype", choices=DTYPES)
    # derived generators use seed + offsets < 2**62: every accepted seed keeps them below 2**64
    seed: int = _setting(0, "seed of initialisation and batch sampling", low=0, high=2**63 - 1)
    target_test_accuracy: float | None = _setting(None, "stop when the test accuracy reaches this", low=0.0,
                                                  high=1.0)
    continue_after_target: bool = _setting(False, "record the target step and time but run all n_steps")
    threads: int | None = _setting(None, "torch threads", low=1)

    def validated(self) -> "TrainConfig":
        """A checked copy: every setting in its declared range (`ParameterError` naming it otherwise).

        >>> TrainConfig(lr=0.2, batch_size=50).validated().lr
        0.2
        >>> TrainConfig(momentum=1.0).validated()
        Traceback (most recent call last):
        sdeeos._errors.ParameterError: momentum must be in [0.0, 1.0), got 1.0
        """
        c = dataclasses.replace(self)
        for f in dataclasses.fields(c):
            value = getattr(c, f.name)
            if value is None and _optional(f):
                continue
            setattr(c, f.name, _check(f, value))
        if c.optimizer in ADAPTIVE_STEP_OPTIMIZERS and c.lr_schedule != "constant":
            raise ParameterError(f"lr_schedule must be 'constant' for optimizer {c.optimizer} (it sets its own "
                                 f"step size), got {c.lr_schedule!r}")
        if c.edge_refresh_max < c.edge_refresh_every:
            raise ParameterError(f"edge_refresh_max must be an integer in [{c.edge_refresh_every}, inf) "
                                 f"(>= edge_refresh_every), got {c.edge_refresh_max}")
        if c.optimizer == "edge-sgd" and c.edge_momentum > 0 and "noise_kernel" in edge_terms(c.edge_terms):
            raise ParameterError(f"edge_momentum must be 0 with the noise_kernel term (derived for plain SGD; drop "
                                 f"noise_kernel from edge_terms for momentum), got {c.edge_momentum}")
        if c.n_train is not None and c.edge_probe_size > c.n_train and c.optimizer == "edge-sgd":
            raise ParameterError(f"edge_probe_size must be an integer in [1, {c.n_train}] (n_train), "
                                 f"got {c.edge_probe_size}")
        if c.label_noise > 0 and c.loss != "mse":
            raise ParameterError(f"label_noise must be 0 with loss {c.loss!r} (it perturbs MSE targets), "
                                 f"got {c.label_noise}")
        # the optimiser multiplies parameters of the training dtype by lr: it must be representable
        c.lr = check_real("lr", c.lr, low=0.0, low_open=True, high=float(np.finfo(c.dtype).max))
        return c

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ParameterError(f"unknown training setting(s) {unknown}; allowed: {sorted(names)}")
        return cls(**d)


_TYPES = typing.get_type_hints(TrainConfig)


def setting_type(name: str) -> type:
    """The value type of a setting (``int``, ``float``, ``str`` or ``bool``), ``None`` stripped.

    >>> setting_type("batch_size"), setting_type("lr"), setting_type("measure_theory")
    (<class 'int'>, <class 'float'>, <class 'bool'>)
    """
    hint = _TYPES[name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def _optional(f: dataclasses.Field) -> bool:
    return type(None) in typing.get_args(_TYPES[f.name])


def _check(f: dataclasses.Field, value):
    m, kind = f.metadata, setting_type(f.name)
    if kind is bool:
        if not isinstance(value, bool):
            raise ParameterError(f"{f.name} must be true or false, got {value!r}")
        return value
    if kind is str:
        if m["check"] is not None:
            return m["check"](value)
        return check_choice(f.name, value, m["choices"])
    if kind is int:
        return check_int(f.name, value, low=m["low"], high=m["high"])
    return check_real(f.name, value, low=m["low"], high=m["high"], low_open=m["low_open"],
                      high_open=m["high_open"])
