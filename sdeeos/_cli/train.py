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
import sys

from .._errors import ParameterError
from ._plain import plain_text

# (option, type, help); names match sdeeos.torch.TrainConfig fields with "-" for "_".
_OPTIONS = [
    ("dataset", str, "mnist1d | digits"),
    ("n-train", int, "keep the first N training examples"),
    ("n-test", int, "keep the first N test examples"),
    ("loss", str, "mse (1/2 ||f - onehot||^2 summed over outputs, mean over examples) | ce"),
    ("model", str, "mlp-tanh | mlp-relu | cnn-tanh | cnn-relu"),
    ("width", int, "MLP hidden width"),
    ("depth", int, "MLP hidden layers"),
    ("channels", int, "CNN channels"),
    ("optimizer", str, "gd | sgd | momentum | adam | eos-sgd"),
    ("lr", float, "step size (EoS-SGD: unused, see --eos-eta-max)"),
    ("batch-size", int, "mini-batch size (default: full batch)"),
    ("momentum", float, "heavy-ball momentum of the momentum optimizer"),
    ("adam-beta1", float, "Adam beta1"),
    ("adam-beta2", float, "Adam beta2"),
    ("eos-c", float, "EoS-SGD noise coefficient c >= 0"),
    ("eos-eta-max", float, "EoS-SGD step-size cap eta_max > 0"),
    ("eos-k", int, "EoS-SGD curvature refresh period k >= 1"),
    ("eos-momentum", float, "EoS-SGD heavy-ball momentum"),
    ("eos-lanczos-steps", int, "EoS-SGD Lanczos steps per refresh"),
    ("eos-noise-ema", float, "EoS-SGD EMA factor of the projected noise variance"),
    ("eos-curvature-batch-size", int, "EoS-SGD examples in the curvature batch"),
    ("n-steps", int, "number of optimizer steps"),
    ("eval-every", int, "loss/accuracy stride (steps)"),
    ("sharpness-every", int, "sharpness stride (steps; 0 = off)"),
    ("sharpness-tol", float, "Lanczos relative residual tolerance"),
    ("sharpness-max-iter", int, "Lanczos iteration cap"),
    ("sharpness-dtype", str, "same | float32 | float64"),
    ("sharpness-n-train", int, "compute sharpness on the first N training examples"),
    ("theory-start", int, "measure the theory's quantities from this step on (with --measure-theory)"),
    ("batch-sharpness-batches", int, "batches per batch-sharpness estimate"),
    ("dtype", str, "float32 | float64"),
    ("seed", int, "seed of initialisation and batch sampling"),
    ("target-test-accuracy", float, "stop when the test accuracy reaches this"),
    ("threads", int, "torch threads"),
]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train a small network with sharpness tracking (needs the torch extra)",
        description=plain_text(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, typ, hlp in _OPTIONS:
        p.add_argument(f"--{name}", type=typ, default=None, help=hlp)
    p.add_argument("--measure-theory", action="store_true", default=None,
                   help="also measure alpha, beta, sigma_u^2, batch sharpness and the predicted gap")
    p.add_argument("--config", default=None, help="TOML file of settings (keys as TrainConfig fields)")
    p.add_argument("--out", default="train.nc", help="output NetCDF file (default: train.nc)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _load_toml(path):
    try:
        import tomllib
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ParameterError(f"config must be a readable TOML file, got {path!r} ({exc.strerror})") from None


def run(args) -> int:
    try:
        import torch  # noqa: F401
    except ImportError:
        from .._errors import BackendUnavailableError

        raise BackendUnavailableError(
            "sdeeos train needs PyTorch: pip install 'sdeeos[torch]'") from None
    from ..torch import NonFiniteLossError, train  # noqa: F401  (imports torch)

    settings = {}
    if args.config:
        settings.update(_load_toml(args.config))
    for name, _, _ in _OPTIONS:
        val = getattr(args, name.replace("-", "_"))
        if val is not None:
            settings[name.replace("-", "_")] = val
    if args.measure_theory:
        settings["measure_theory"] = True
    ds = train(settings, progress=not args.no_progress, on_nonfinite="stop")
    ds.to_netcdf(args.out, engine="h5netcdf")
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
