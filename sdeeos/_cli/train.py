"""``sdeeos train``: train a small network on MNIST-1D or digits with sharpness tracking.

Example::

    sdeeos train --dataset mnist1d --model mlp-tanh --loss mse --optimizer gd --lr 0.2 \\
        --n-steps 2000 --sharpness-every 100 --out gd.nc

Writes an xarray dataset (NetCDF) with loss, accuracy, step size and sharpness.  Settings can also
come from a TOML file (``--config``); command-line options override it.  A non-finite training loss
stops the run: the partial dataset is written, the step and last sharpness are reported, exit status 1.
Importing this module does not import torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import re
import sys

from .._labels import label_dataset
from .._toml import read_toml
from .._train_config import TrainConfig, setting_type
from ._plain import plain_text

_TRAIN_SETTINGS = [f for f in dataclasses.fields(TrainConfig) if setting_type(f.name) is not bool]
_METAVARS = {int: "N", float: "X", str: "NAME"}
_TRAIN_FLAGS = [f for f in dataclasses.fields(TrainConfig) if setting_type(f.name) is bool]


def _help(f: dataclasses.Field) -> str:
    choices = f.metadata["choices"]
    default = "" if f.default is None else f" (default: {f.default})"
    text = f.metadata["help"]
    # the help already names every choice (as a word): not twice
    named = choices and all(re.search(rf"(?<![\w-]){re.escape(c)}(?![\w-])", text) for c in choices)
    return text + (f": {' | '.join(choices)}" if choices and not named else "") + default


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train a small network with sharpness tracking (needs the torch extra)",
        description=plain_text(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    # one option per TrainConfig field: its name, type and help (the dataclass is the one source)
    for f in _TRAIN_SETTINGS:
        p.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=setting_type(f.name), default=None,
                       metavar=_METAVARS[setting_type(f.name)], help=_help(f))
    for f in _TRAIN_FLAGS:
        p.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, action="store_true", default=None,
                       help=f.metadata["help"])
    p.add_argument("--config", default=None, help="TOML file of settings (keys as TrainConfig fields)")
    p.add_argument("--out", default="train.nc", help="output NetCDF file (default: train.nc)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    # the optional torch extra, loaded by name (BackendUnavailableError without it)
    train = importlib.import_module("sdeeos.torch").train

    settings = read_toml(args.config, "config file")[0] if args.config else {}
    for f in dataclasses.fields(TrainConfig):
        if getattr(args, f.name) is not None:
            settings[f.name] = getattr(args, f.name)
    ds = train(settings, progress=not args.no_progress, on_nonfinite="stop")
    label_dataset(ds).to_netcdf(args.out, engine="h5netcdf")
    a = ds.attrs
    if a.get("diverged_step", -1) >= 0:
        print(f"sdeeos train: stopped: {a['stopped_reason']}; partial dataset written to {args.out}",
              file=sys.stderr)
        return 1
    last = ds.sharpness.values[-1] if "sharpness" in ds and ds.sharpness.size else float("nan")
    print(f"wrote {args.out}: {a['steps_run']} steps, train loss {float(ds.train_loss[-1]):.4g}, "
          f"test accuracy {float(ds.test_accuracy[-1]):.3f}, last sharpness {last:.4g}, "
          f"train {a['time_train_s']:.1f}s, tracking {a['time_tracking_s']:.1f}s "
          f"({100 * a['tracking_overhead']:.0f}%)")
    return 0
