r"""The defaults of the edge-following optimizers, declared once: the classes (`sdeeos.torch.EoSSGD`,
`sdeeos.torch.EdgeSGD`), ``sdeeos train`` (`TrainConfig`) and the studies all read them from here.

This module does not import torch (the CLI's help and the study files' validation work without it).

How EoS-SGD's were chosen (the table in docs/torch_optimizers.md#defaults): momentum 0 and refresh period
50.  On ``sdeeos train`` runs (fixed curvature batch of 256, MLP-tanh of width 100, :math:`\eta_{\max}=1`,
seeds 0-2, 1000 steps) momentum 0.9 diverged or stalled in every setting: digits/MSE/B = 32 and
MNIST-1D/MSE/B = 64 went non-finite in 11 of 12 runs, MNIST-1D/CE/B = 32 ended at losses 4.2-15 (chance
2.31), digits/CE/B = 32 at 0.47-3.0 (chance 2.30); momentum 0 trained in every run, and k = 10 ended
within the seed spread of k = 50 at twice the refresh cost.
"""

from __future__ import annotations

__all__ = ["EOS_SGD_DEFAULTS", "EDGE_SGD_DEFAULTS"]

#: EoS-SGD: step-size cap, noise coefficient, refresh period, momentum, EMA factor, Lanczos settings,
#: the rule's numerator, examples in the curvature batch (``sdeeos train``)
EOS_SGD_DEFAULTS = {"eta_max": 1.0, "c": 1.0, "k": 50, "momentum": 0.0, "noise_ema": 0.9, "lanczos_steps": 5,
                    "lanczos_tol": 1e-3, "edge": 2.0, "curvature_size": 256}

#: EdgeSGD: step-size cap, margin, momentum, refresh schedule, batch-sharpness batches, Lanczos settings,
#: cost budget, examples in the curvature and the probe batch
EDGE_SGD_DEFAULTS = {"eta_max": 2.0, "margin": 0.9, "momentum": 0.0, "refresh": "adaptive", "refresh_every": 10,
                     "refresh_max": 1000, "batch_sharpness_batches": 4, "lanczos_steps": 5, "lanczos_tol": 1e-3,
                     "max_overhead": 0.15, "curvature_size": 256, "probe_size": 32}
