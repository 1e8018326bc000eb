"""Quadratic-regression SGD ensembles: sdeeos's Numba engine vs batched NumPy and PyTorch-CPU baselines.

One "ensemble step" advances all M trajectories by one mini-batch SGD step (B rows sampled without
replacement per trajectory, independently).  Implementations, all in this process, same sizes:

* ``sdeeos-numba``: the engine `simulate` uses (`sdeeos.models.quadratic_regression._numba_engine`): per-trajectory Floyd
  sampling with the counter-based RNG, only the B sampled rows touched (linear: one fused loop per
  trajectory; quadratic: pairs bucketed by data row so each ``Q_i`` is read once per step and block).
* ``numpy-dense``: dense batch mask (argpartition of uniform keys, NumPy's PCG64) and GEMMs over all n
  rows: ``z = z0 + theta J0^T`` (plus ``Q(theta, .)`` as one (nP x P) @ (P x M) GEMM), ``g = (mask*z) J``.
* ``numpy-gather``: the same batches, but gathers the B rows (``J0[idx]``) and uses batched matmuls.
* ``torch-dense`` (float64 and float32) and ``torch-gather`` (float64): the same two algorithms in PyTorch.

"Useful" FLOPs count only the work on sampled rows (linear 4BP per trajectory-step; quadratic
2BP^2 + 6BP); dense implementations do n/B times more.  The machine's matrix-multiply rate is measured
in the same run (NumPy float64 GEMM, 2048^3), so FLOP rates can be compared.

Timings are best-of-``--repeat`` (the minimum is the least noisy statistic on a shared machine; the
median is reported too).  Re-run with e.g.::

    python benchmarks/bench_quadratic_regression.py                 # both models, default sizes
    python benchmarks/bench_quadratic_regression.py --model linear --steps 400 --repeat 7 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np


def _timeit(fn, steps, repeat):
    fn(1)  # warm-up (compilation, allocation)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn(steps)
        times.append((time.perf_counter() - t) / steps)
    return min(times), statistics.median(times)


def gemm_rate(threads=None, size=2048, repeat=3):
    """Measured float64 GEMM FLOP/s (NumPy/OpenBLAS), optionally with a BLAS thread limit."""
    import contextlib

    a, b = np.random.default_rng(0).random((2, size, size))
    ctx = contextlib.nullcontext()
    if threads is not None:
        try:
            from threadpoolctl import threadpool_limits

            ctx = threadpool_limits(threads, user_api="blas")
        except ImportError:  # pragma: no cover
            pass
    with ctx:
        a @ b
        best = min(_one(lambda: a @ b) for _ in range(repeat))
    return 2 * size**3 / best


def _one(f):
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


# ---------------------------------------------------------------------------- implementations
def bench_sdeeos(model, M, steps, repeat, threads):
    from sdeeos._contract import RunSpec
    from sdeeos.models.quadratic_regression import get_qr_engine

    spec = RunSpec(model=model, method="sgd", n_traj=M, n_steps=10**9, burn_in=0, seed=0, record_every=0)
    eng = get_qr_engine("numba")
    run = model.new_run(spec)
    state = {"t": 0}

    def f(k):
        eng._advance_kernel(spec, run, state["t"], state["t"] + k, threads)
        state["t"] += k

    out = _timeit(f, steps, repeat)
    assert run.alive.all(), "benchmark step size diverged"
    return out


def _numpy_masks(rng, M, n, B):
    idx = np.argpartition(rng.random((M, n)), B - 1, axis=1)[:, :B]
    return idx


def bench_numpy_dense(model, M, steps, repeat):
    n, P, B, eta = model.n, model.P, model.batch_size, model.eta
    J0, z0 = model.J0, model.z0
    Qr = None if model.is_linear else model.Q.reshape(n * P, P)
    rng = np.random.default_rng(0)
    theta = model.initial_theta(*_keys(M))
    rows = np.arange(M)[:, None]

    def f(k):
        nonlocal theta
        for _ in range(k):
            idx = _numpy_masks(rng, M, n, B)
            mask = np.zeros((M, n))
            mask[rows, idx] = 1.0
            if Qr is None:
                z = z0 + theta @ J0.T
                g = (mask * z) @ J0
            else:
                W = (Qr @ theta.T).reshape(n, P, M).transpose(2, 0, 1)        # Q(theta, .) for every row
                z = z0 + theta @ J0.T + 0.5 * np.einsum("mip,mp->mi", W, theta)
                w = mask * z
                g = w @ J0 + np.einsum("mi,mip->mp", w, W)
            theta = theta - eta / B * g

    return _timeit(f, steps, repeat)


def bench_numpy_gather(model, M, steps, repeat):
    n, P, B, eta = model.n, model.P, model.batch_size, model.eta
    J0, z0, Q = model.J0, model.z0, model.Q
    rng = np.random.default_rng(0)
    theta = model.initial_theta(*_keys(M))

    chunk = M if Q is None else 16  # Q[idx] is (chunk, B, P, P)

    def f(k):
        nonlocal theta
        for _ in range(k):
            idx = _numpy_masks(rng, M, n, B)
            g = np.empty_like(theta)
            for lo in range(0, M, chunk):
                th, ix = theta[lo:lo + chunk], idx[lo:lo + chunk]
                Jb = J0[ix]                                                    # (m, B, P)
                r = z0[ix] + np.matmul(Jb, th[:, :, None])[..., 0]
                if Q is not None:
                    Wb = np.matmul(Q[ix], th[:, None, :, None])[..., 0]        # (m, B, P)
                    r = r + 0.5 * np.matmul(Wb, th[:, :, None])[..., 0]
                    Jb = Jb + Wb
                g[lo:lo + chunk] = np.matmul(r[:, None, :], Jb)[:, 0]
            theta = theta - eta / B * g

    return _timeit(f, steps, repeat)


def bench_torch(model, M, steps, repeat, dtype, algo, threads):
    import torch

    if threads:
        torch.set_num_threads(threads)
    n, P, B, eta = model.n, model.P, model.batch_size, model.eta
    J0 = torch.tensor(model.J0, dtype=dtype)
    z0 = torch.tensor(model.z0, dtype=dtype)
    Q = None if model.is_linear else torch.tensor(model.Q, dtype=dtype)
    gen = torch.Generator().manual_seed(0)
    theta = torch.tensor(model.initial_theta(*_keys(M)), dtype=dtype)
    rows = torch.arange(M)[:, None]

    def f(k):
        nonlocal theta
        with torch.no_grad():
            for _ in range(k):
                idx = torch.topk(torch.rand(M, n, generator=gen), B, dim=1, sorted=False).indices
                if algo == "dense":
                    mask = torch.zeros(M, n, dtype=dtype)
                    mask[rows, idx] = 1.0
                    if Q is None:
                        z = z0 + theta @ J0.T
                        g = (mask * z) @ J0
                    else:
                        W = (Q.reshape(n * P, P) @ theta.T).reshape(n, P, M).permute(2, 0, 1)
                        z = z0 + theta @ J0.T + 0.5 * torch.einsum("mip,mp->mi", W, theta)
                        w = mask * z
                        g = w @ J0 + torch.einsum("mi,mip->mp", w, W)
                else:
                    chunk = M if Q is None else 16
                    parts = []
                    for lo in range(0, M, chunk):
                        th, ix = theta[lo:lo + chunk], idx[lo:lo + chunk]
                        Jb = J0[ix]
                        r = z0[ix] + torch.bmm(Jb, th[:, :, None])[..., 0]
                        if Q is not None:
                            Wb = torch.matmul(Q[ix], th[:, None, :, None])[..., 0]
                            r = r + 0.5 * torch.bmm(Wb, th[:, :, None])[..., 0]
                            Jb = Jb + Wb
                        parts.append(torch.bmm(r[:, None, :], Jb)[:, 0])
                    g = torch.cat(parts)
                theta = theta - eta / B * g

    return _timeit(f, steps, repeat)


def _keys(M):
    from sdeeos._rng import stream_keys

    return stream_keys(0, M)


# ---------------------------------------------------------------------------- driver
def useful_flops(model):
    B, P = model.batch_size, model.P
    return 4 * B * P if model.is_linear else 2 * B * P * P + 6 * B * P


def run(args):
    import numba

    from sdeeos.models import QuadraticRegression

    results = {"machine": {"cpu_count": os.cpu_count(), "numba_threads": numba.config.NUMBA_NUM_THREADS,
                           "platform": platform.platform(), "python": sys.version.split()[0],
                           "numpy": np.__version__, "numba": numba.__version__,
                           "loadavg_before": os.getloadavg()},
               "sizes": {"n": args.n, "P": args.P, "M": args.M, "B": args.B}, "rows": []}
    results["machine"]["gemm_flops_all_threads"] = gemm_rate()
    results["machine"]["gemm_flops_1_thread"] = gemm_rate(threads=1)
    try:
        import torch

        results["machine"]["torch"] = torch.__version__
    except ImportError:
        torch = None
    models = ["linear", "quadratic"] if args.model == "both" else [args.model]
    for kind in models:
        q = 0.0 if kind == "linear" else 1.0
        m = QuadraticRegression(n=args.n, P=args.P, eta=args.eta, batch_size=args.B, q_scale=q)
        steps = args.steps if kind == "linear" else max(2, args.steps // 40)
        flops = useful_flops(m) * args.M
        impls = [(f"sdeeos-numba ({t} thr)", lambda t=t: bench_sdeeos(m, args.M, steps, args.repeat, t))
                 for t in sorted({1, numba.config.NUMBA_NUM_THREADS})]
        impls += [("numpy-dense", lambda: bench_numpy_dense(m, args.M, steps, args.repeat)),
                  ("numpy-gather", lambda: bench_numpy_gather(m, args.M, steps, args.repeat))]
        if torch is not None:
            import torch as _t

            impls += [("torch-dense f64", lambda: bench_torch(m, args.M, steps, args.repeat, _t.float64, "dense", args.torch_threads)),
                      ("torch-dense f32", lambda: bench_torch(m, args.M, steps, args.repeat, _t.float32, "dense", args.torch_threads)),
                      ("torch-gather f64", lambda: bench_torch(m, args.M, steps, args.repeat, _t.float64, "gather", args.torch_threads))]
        for name, fn in impls:
            if args.skip_gather and "gather" in name and kind == "quadratic":
                continue
            best, med = fn()
            results["rows"].append({"model": kind, "impl": name, "steps_per_s": 1 / best, "steps_per_s_median": 1 / med,
                                    "useful_gflops": flops / best / 1e9})
            print(f"{kind:>9} {name:<22} {1 / best:10.1f} steps/s (median {1 / med:8.1f})  "
                  f"{flops / best / 1e9:7.2f} useful GFLOP/s", flush=True)
    results["machine"]["loadavg_after"] = os.getloadavg()
    return results


def table(results) -> str:
    mach = results["machine"]
    lines = [f"n={results['sizes']['n']}, P={results['sizes']['P']}, M={results['sizes']['M']}, "
             f"B={results['sizes']['B']}; measured float64 GEMM: {mach['gemm_flops_all_threads'] / 1e9:.1f} GFLOP/s "
             f"({mach['cpu_count']} threads), {mach['gemm_flops_1_thread'] / 1e9:.1f} GFLOP/s (1 thread); "
             f"load average before/after {mach['loadavg_before'][0]:.1f}/{mach['loadavg_after'][0]:.1f}",
             "", "| model | implementation | ensemble steps/s (best) | (median) | useful GFLOP/s | vs best NumPy | vs best torch |",
             "|---|---|---|---|---|---|---|"]
    for kind in dict.fromkeys(r["model"] for r in results["rows"]):
        rows = [r for r in results["rows"] if r["model"] == kind]
        best_np = max((r["steps_per_s"] for r in rows if r["impl"].startswith("numpy")), default=float("nan"))
        best_t = max((r["steps_per_s"] for r in rows if r["impl"].startswith("torch")), default=float("nan"))
        for r in rows:
            lines.append(f"| {kind} | {r['impl']} | {r['steps_per_s']:.1f} | {r['steps_per_s_median']:.1f} | "
                         f"{r['useful_gflops']:.2f} | {r['steps_per_s'] / best_np:.2f}x | {r['steps_per_s'] / best_t:.2f}x |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=("linear", "quadratic", "both"), default="both")
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--P", type=int, default=128)
    p.add_argument("--M", type=int, default=256)
    p.add_argument("--B", type=int, default=32)
    p.add_argument("--eta", type=float, default=0.05)
    p.add_argument("--steps", type=int, default=200, help="steps per timing (quadratic: steps/40)")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--torch-threads", type=int, default=None)
    p.add_argument("--skip-gather", action="store_true", help="skip the gather baselines of the quadratic model")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    results = run(args)
    print()
    print(table(results))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
