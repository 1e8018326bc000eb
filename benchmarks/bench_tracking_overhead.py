"""Cost of sharpness tracking relative to training on MNIST-1D (measures, does not assert).

Runs ``sdeeos.torch.train`` on MNIST-1D (4000 training signals, MLP tanh 2x100, MSE, eta = 0.2)
and reports ``time_tracking_s / time_train_s`` (``tracking_overhead``): tracking = warm-started
Lanczos on the full training loss every ``sharpness_every`` steps; training = forward, backward and
update only.  The first row is the default configuration (``TrainConfig``: stride 200, tolerance
1e-3, training dtype float32); the others show the cost of finer strides, float64 Hessians and
mini-batch SGD (whose steps are cheaper, while tracking still uses the full training set).

Run:  python benchmarks/bench_tracking_overhead.py [--steps 2000]
"""

from __future__ import annotations

import argparse
import time

import torch

from sdeeos.torch import TrainConfig, train

CASES = [
    ("default (GD, stride 200, f32, tol 1e-3)", {}),
    ("GD, stride 100", dict(sharpness_every=100)),
    ("GD, stride 200, float64 Hessian", dict(sharpness_dtype="float64")),
    ("GD, stride 50, float64, tol 1e-4", dict(sharpness_every=50, sharpness_dtype="float64",
                                              sharpness_tol=1e-4)),
    ("SGD B=500, stride 200", dict(optimizer="sgd", batch_size=500)),
    ("SGD B=64, stride 200", dict(optimizer="sgd", batch_size=64)),
]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    d = TrainConfig()
    print(f"MNIST-1D n=4000, {d.model} width {d.width}, {d.loss}, lr 0.2, {args.steps} steps, "
          f"{args.threads} thread(s)")
    print(f"{'case':<42}{'train s':>9}{'track s':>9}{'overhead':>10}{'HVPs':>7}{'HVP/call':>9}{'last S':>9}")
    for label, extra in CASES:
        cfg = dict(lr=0.2, n_steps=args.steps, eval_every=args.steps, threads=args.threads, **extra)
        ds = train(cfg, progress=False)
        a = ds.attrs
        calls = ds.sharpness_step.size
        print(f"{label:<42}{a['time_train_s']:>9.1f}{a['time_tracking_s']:>9.1f}"
              f"{100 * a['tracking_overhead']:>9.0f}%{a['total_hvp']:>7}{a['total_hvp'] / calls:>9.1f}"
              f"{float(ds.sharpness[-1]):>9.3f}", flush=True)


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"({time.perf_counter() - t0:.0f}s)")
