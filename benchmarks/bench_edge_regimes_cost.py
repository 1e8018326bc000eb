"""Where the time of the ``edge_regimes`` study goes: one SGD step and each measurement (measures, does not assert).

CPU time of this thread (``time.thread_time``, one torch thread, float64), so a loaded machine does not
inflate it.  Per setting (data set, network, n): one step of the study's loop (``nn.Module`` +
``autograd.grad``, in place) and of the ``torch.func.grad`` loop of ``regime``/``batch_sharpness_anchor``
for B = 1 and 16; a warm-started Lanczos for lambda_max, batch sharpness (8 batches), the noise kernel
K with its bounds, sigma_u^2(B, s), and one label-noise snapshot (top-8 eigenpairs and the
gradient-flow rate alpha).  Numbers quoted in docs/findings-edge-regimes.md.

Run:  python benchmarks/bench_edge_regimes_cost.py
"""

from __future__ import annotations

import time

import torch
from torch.func import grad

from sdeeos.torch import (
    FlatParams,
    HessianOperator,
    batch_sharpness,
    build_model,
    gradient_flow_rate,
    label_noise_projected_variance,
    lanczos_top,
    load_data,
    loss_function,
    noise_kernel,
    per_example_loss,
    per_example_loss_function,
    top_k_eigenpairs,
)

SETTINGS = (("mnist1d", "mlp-tanh", 256), ("mnist1d", "mlp-tanh", 1024), ("digits", "mlp-tanh", 256),
            ("digits", "cnn-tanh", 256))
clock = time.thread_time


def _module_steps(net, params, x, t, n, b, count, gen, lr=0.05) -> float:
    t0 = clock()
    for _ in range(count):
        idx = torch.randperm(n, generator=gen)[:b]
        loss = per_example_loss(net(x[idx]), t[idx], "mse").mean()
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, g in zip(params, grads):
                p.sub_(lr * g)
    return (clock() - t0) / count


def _func_steps(flat, x, t, n, b, count, gen, lr=0.05) -> float:
    theta = flat.flat()
    t0 = clock()
    for _ in range(count):
        idx = torch.randperm(n, generator=gen)[:b]
        theta = (theta - lr * grad(loss_function(flat, x[idx], t[idx], "mse"))(theta)).detach()
    return (clock() - t0) / count


def measure(dataset: str, model: str, n: int) -> dict:
    data = load_data(dataset, loss="mse", n_train=n, dtype=torch.float64)
    net = build_model(model, data.input_shape, data.n_classes, width=32, depth=2, channels=4, seed=0,
                      dtype=torch.float64)
    params, flat = list(net.parameters()), FlatParams(net)
    x, t = data.x_train, data.targets_train
    fn, pfn = loss_function(flat, x, t, "mse"), per_example_loss_function(flat, x, t, "mse")
    gen = torch.Generator().manual_seed(0)
    row = {"P": flat.size}
    for b in (1, 16):
        row[f"step_B{b}_ms"] = 1e3 * _module_steps(net, params, x, t, n, b, 2000, gen)
        row[f"func_step_B{b}_ms"] = 1e3 * _func_steps(flat, x, t, n, b, 200, gen)
    op = HessianOperator(fn, flat.flat())
    e = lanczos_top(op, op.dim, tol=1e-4, max_iter=200)
    _module_steps(net, params, x, t, n, 16, 50, gen)  # move a little: the next solve starts warm, not converged
    theta = flat.flat()
    t0 = clock()
    op = HessianOperator(fn, theta)
    e = lanczos_top(op, op.dim, v0=e.vector, tol=1e-4, max_iter=200)
    row["lanczos_warm_ms"], row["lanczos_warm_hvp"] = 1e3 * (clock() - t0), e.n_hvp
    t0 = clock()
    batch_sharpness(flat, x, t, "mse", theta, 16, n_batches=8, generator=gen)
    row["batch_sharpness_8_ms"] = 1e3 * (clock() - t0)
    t0 = clock()
    noise_kernel(flat, x, theta, 0.1, 4, n_top=8, generator=gen)
    row["K_ms"] = 1e3 * (clock() - t0)
    t0 = clock()
    label_noise_projected_variance(flat, pfn, x, theta, e.vector, 16, 0.1)
    row["sigma_u_sq_ms"] = 1e3 * (clock() - t0)
    t0 = clock()
    topk = top_k_eigenpairs(op, op.dim, 8, tol=1e-4, max_hvp=600, dtype=theta.dtype)
    gradient_flow_rate(fn, theta, topk, 0.2, step=0.04, n_steps=40, n_points=5)
    row["alpha_snapshot_ms"] = 1e3 * (clock() - t0)
    return row


def main() -> None:
    torch.set_num_threads(1)
    for dataset, model, n in SETTINGS:
        row = measure(dataset, model, n)
        print(f"{dataset} {model} n={n}: " + ", ".join(f"{k} {v:.3g}" for k, v in row.items()), flush=True)


if __name__ == "__main__":
    main()
