"""The measurement that chose EoS-SGD's defaults (docs/torch_optimizers.md#defaults).

Momentum x refresh period k on four data set / loss / batch-size settings, seeds 0-2, 1000 steps of
``sdeeos train`` (MLP-tanh, width 100, fixed curvature batch of 256, eta_max = 1); prints the training loss
at steps 0, 200 and 1000 (the last evaluation before a stop) and why a run stopped.

    .venv/bin/python scripts/measure_eos_sgd_defaults.py [n_steps]     (about 4 min of one core)
"""

import sys

from sdeeos.torch import train

SETTINGS = [("digits", "ce", 32), ("digits", "mse", 32), ("mnist1d", "mse", 64), ("mnist1d", "ce", 32)]
GRID = [(0.0, 50), (0.0, 10), (0.9, 10), (0.9, 50)]  # (momentum, k)


def main(n_steps: int = 1000) -> None:
    for dataset, loss, batch in SETTINGS:
        for momentum, k in GRID:
            finals, notes = [], []
            for seed in (0, 1, 2):
                ds = train(dict(dataset=dataset, loss=loss, batch_size=batch, optimizer="eos-sgd",
                                eos_momentum=momentum, eos_k=k, eos_eta_max=1.0, n_steps=n_steps, eval_every=100, sharpness_every=0, seed=seed,
                                threads=1), progress=False, on_nonfinite="stop")
                finals.append(float(ds.train_loss[-1]))
                if ds.attrs["stopped_reason"] != "completed":
                    notes.append(f"seed {seed} stopped at step {ds.attrs['diverged_step']}")
                at200 = float(ds.train_loss.sel(step=200)) if 200 in ds.step.values else float("nan")
                start = float(ds.train_loss[0])
            print(f"{dataset:8s} {loss:3s} B={batch:3d} momentum={momentum} k={k:3d}  loss(0)={start:.3f}  "
                  f"loss(200, seed 2)={at200:.3g}  final={', '.join(f'{f:.3g}' for f in finals)}  {'; '.join(notes)}",
                  flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
