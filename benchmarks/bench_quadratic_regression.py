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
* ``jax-floyd`` and ``jax-choice`` (float64, the ``bench`` extra): ``jax.jit`` of ``jax.vmap`` over
  trajectories of a ``lax.scan`` over steps; step ``t`` of trajectory ``m`` uses the key
  ``fold_in(fold_in(key(seed), m), 1 + t)`` and draws B distinct rows, by Floyd's algorithm (B bounded
  ``randint`` draws, a ``fori_loop``) or by ``jax.random.choice(..., replace=False)`` (a prefix of a
  sort-based permutation of all n rows: n random words and a sort per trajectory-step); the gradient
  gathers the B sampled rows of ``J0``, ``z0`` (and ``Q``: the quadratic model maps over chunks of
  ``--jax-chunk`` trajectories, ``lax.map(..., batch_size=)``, so the gathered ``Q`` rows stay in cache).
  Each contender runs in a child process (XLA fixes its thread pool at import): one pinned to one CPU
  (``sched_setaffinity``; ``XLA_FLAGS`` thread flags do not limit XLA's CPU runtime) and one on all the
  process's CPUs.  Compile time is reported apart from the rate; the rate is given per wall second and per
  CPU second (``time.process_time``: the per-core rate when XLA uses several threads).  Correctness check
  in the same run: the mean loss after ``--check-steps`` steps over the M independent trajectories
  agrees with the sdeeos engine's within the combined standard error (exit status 1 beyond 4 of them).

"Useful" FLOPs count only the work on sampled rows (linear 4BP per trajectory-step; quadratic
2BP^2 + 6BP); dense implementations do n/B times more.  The machine's matrix-multiply rate is measured
in the same run (NumPy float64 GEMM, 2048^3), so FLOP rates can be compared: the last column is useful FLOP/s over
the GEMM rate with the same number of threads (1-thread rows against the 1-thread GEMM rate; goal
>= 50 % for the Numba engine).

Timings are best-of-``--repeat`` (the minimum is the least noisy statistic on a shared machine; the
median is reported too).  Re-run with e.g.::

    python benchmarks/bench_quadratic_regression.py                 # both models, default sizes
    python benchmarks/bench_quadratic_regression.py --model linear --steps 400 --repeat 7 --json out.json
    python benchmarks/bench_quadratic_regression.py --no-jax        # without the JAX rows
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import statistics
import subprocess
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


# ---------------------------------------------------------------------------- JAX (child process)
JAX_SAMPLERS = ("floyd", "choice")
#: largest |d| (difference of the mean losses in combined standard errors) counted as agreement
CHECK_SIGMAS = 4.0


def _loss_stats(model, theta):
    """Mean and standard error over trajectories of L = |z(theta)|^2 / (2n) for theta (M, P)."""
    z = model.z0 + theta @ model.J0.T
    if not model.is_linear:
        z = z + 0.5 * np.einsum("mp,ipq,mq->mi", theta, model.Q, theta)
    loss = 0.5 * np.mean(z * z, axis=1)
    return float(loss.mean()), float(loss.std(ddof=1) / math.sqrt(loss.size))


def sdeeos_check(model, M, steps):
    """(mean, standard error) of the loss after ``steps`` steps of the sdeeos Numba engine (seed 0)."""
    from sdeeos._contract import RunSpec
    from sdeeos.models.quadratic_regression import get_qr_engine

    spec = RunSpec(model=model, method="sgd", n_traj=M, n_steps=steps, burn_in=0, seed=0, record_every=0)
    run = model.new_run(spec)
    get_qr_engine("numba")._advance_kernel(spec, run, 0, steps, 1)
    assert run.alive.all(), "check step size diverged"
    return _loss_stats(model, run.theta)


def _jax_ensemble(model, sampler, M, steps, chunk):
    """jit(vmap over trajectories of a scan over ``steps`` SGD steps): (keys (M,), theta (M, P), t0) -> theta."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    n, B, eta = model.n, model.batch_size, model.eta
    J0, z0 = jnp.asarray(model.J0), jnp.asarray(model.z0)
    Q = None if model.is_linear else jnp.asarray(model.Q)

    def batch(key):
        if sampler == "choice":
            return jax.random.choice(key, n, (B,), replace=False)
        # Floyd: for j = n-B .. n-1 draw t uniform in [0, j]; take t, or j if t is already taken
        u = jax.random.randint(key, (B,), 0, jnp.arange(n - B + 1, n + 1))

        def add(i, taken):
            return taken.at[i].set(jnp.where(jnp.any(taken == u[i]), n - B + i, u[i]))

        return lax.fori_loop(0, B, add, jnp.full((B,), -1, u.dtype), unroll=True)

    def gradient(theta, rows):
        J = J0[rows]                                   # (B, P): only the sampled rows
        z = z0[rows] + J @ theta
        if Q is not None:
            W = Q[rows] @ theta                        # Q_i theta, (B, P)
            z = z + 0.5 * (W @ theta)
            J = J + W
        return z @ J

    def trajectory(key, theta, t0):
        def step(th, t):
            return th - eta / B * gradient(th, batch(jax.random.fold_in(key, 1 + t))), None

        return lax.scan(step, theta, t0 + jnp.arange(steps))[0]

    if chunk >= M:
        ens = jax.vmap(trajectory, in_axes=(0, 0, None))
    else:
        def ens(keys, theta, t0):
            return lax.map(lambda kt: trajectory(kt[0], kt[1], t0), (keys, theta), batch_size=chunk)
    return jax.jit(ens), batch


def _cpus():
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def jax_worker(cfg):
    """Child process: pin to one CPU if asked, then import JAX and time/check every (model, sampler)."""
    if cfg["jax_threads"] == 1:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    import jax
    import jax.numpy as jnp

    from sdeeos.models import QuadraticRegression

    jax.config.update("jax_enable_x64", True)
    out = {"jax": jax.__version__, "cpus": _cpus(), "rows": []}
    M, P = cfg["M"], cfg["P"]
    for kind in cfg["models"]:
        m = QuadraticRegression(n=cfg["n"], P=P, eta=cfg["eta"], batch_size=cfg["B"],
                                q_scale=0.0 if kind == "linear" else 1.0)
        steps = cfg["steps"] if kind == "linear" else max(2, cfg["steps"] // 40)
        check_calls = max(1, -(-cfg["check_steps"][kind] // steps))
        chunk = M if kind == "linear" else cfg["jax_chunk"]
        for sampler in JAX_SAMPLERS:
            fn, batch = _jax_ensemble(m, sampler, M, steps, chunk)
            root = jax.random.key(cfg["jax_seed"])
            keys = jax.vmap(lambda i: jax.random.fold_in(root, i))(jnp.arange(M))
            theta0 = m.theta0_scale / math.sqrt(P) * jax.vmap(
                lambda k: jax.random.normal(jax.random.fold_in(k, 0), (P,)))(keys)
            # every batch B distinct rows in [0, n)
            rows = np.asarray(jax.jit(jax.vmap(batch))(keys))
            assert rows.min() >= 0 and rows.max() < m.n and all(np.unique(r).size == m.batch_size for r in rows)
            t = time.perf_counter()
            compiled = fn.lower(keys, theta0, 0).compile()
            compile_s = time.perf_counter() - t
            theta = theta0
            for c in range(check_calls):            # also the warm-up of the timing
                theta = compiled(keys, theta, c * steps)
            check = _loss_stats(m, np.asarray(theta))
            walls, cpus = [], []
            for r in range(cfg["repeat"]):
                t, c = time.perf_counter(), time.process_time()
                theta = compiled(keys, theta, (check_calls + r) * steps).block_until_ready()
                walls.append((time.perf_counter() - t) / steps)
                cpus.append((time.process_time() - c) / steps)
            assert np.isfinite(np.asarray(theta)).all(), "benchmark step size diverged"
            out["rows"].append({"model": kind, "sampler": sampler, "compile_s": compile_s,
                                "wall": [min(walls), statistics.median(walls)], "cpu": min(cpus),
                                "check_steps": check_calls * steps, "check": check})
    return out


def bench_jax(args, models, threads):
    """Run `jax_worker` in a child process with ``threads`` (1: pinned to one CPU; else all CPUs)."""
    cfg = {"models": models, "n": args.n, "P": args.P, "M": args.M, "B": args.B, "eta": args.eta,
           "steps": args.steps, "repeat": args.repeat, "jax_chunk": args.jax_chunk, "jax_seed": 1,
           "jax_threads": threads,
           "check_steps": {"linear": args.check_steps, "quadratic": max(1, args.check_steps // 5)}}
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--jax-worker", json.dumps(cfg)],
                          stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


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
    if not args.no_jax:
        run_jax(args, models, results)
    results["machine"]["loadavg_after"] = os.getloadavg()
    return results


def run_jax(args, models, results):
    """The JAX rows (one child process per thread count) and their check against the sdeeos engine."""
    if importlib.util.find_spec("jax") is None:
        results["machine"]["jax"] = "not installed"
        print(f"{'':>9} {'jax':<22} not installed (pip install sdeeos[bench])", flush=True)
        return
    from sdeeos.models import QuadraticRegression

    reference = {}
    for kind in models:
        m = QuadraticRegression(n=args.n, P=args.P, eta=args.eta, batch_size=args.B,
                                q_scale=0.0 if kind == "linear" else 1.0)
        steps = args.steps if kind == "linear" else max(2, args.steps // 40)
        check = args.check_steps if kind == "linear" else max(1, args.check_steps // 5)
        reference[kind] = (m, sdeeos_check(m, args.M, steps * max(1, -(-check // steps))))
    # pinning needs sched_setaffinity (Linux); elsewhere only the all-CPU row
    counts = {1, _cpus()} if hasattr(os, "sched_setaffinity") else {_cpus()}
    for threads in sorted(counts):
        out = bench_jax(args, models, threads)
        results["machine"]["jax"] = out["jax"]
        for r in out["rows"]:
            m, (mean_s, se_s) = reference[r["model"]]
            mean_j, se_j = r["check"]
            d = (mean_j - mean_s) / math.hypot(se_j, se_s)
            flops = useful_flops(m) * args.M
            row = {"model": r["model"], "impl": f"jax-{r['sampler']} ({out['cpus']} thr)",
                   "steps_per_s": 1 / r["wall"][0], "steps_per_s_median": 1 / r["wall"][1],
                   "useful_gflops": flops / r["wall"][0] / 1e9, "steps_per_cpu_s": 1 / r["cpu"],
                   "compile_s": r["compile_s"], "check_steps": r["check_steps"],
                   "check_loss_jax": [mean_j, se_j], "check_loss_sdeeos": [mean_s, se_s], "check_sigmas": d}
            results["rows"].append(row)
            print(f"{r['model']:>9} {row['impl']:<22} {row['steps_per_s']:10.1f} steps/s (median "
                  f"{row['steps_per_s_median']:8.1f})  {row['useful_gflops']:7.2f} useful GFLOP/s; "
                  f"{row['steps_per_cpu_s']:.1f} steps per CPU second, compile {r['compile_s']:.2f} s; "
                  f"loss after {r['check_steps']} steps {mean_j:.5f} +- {se_j:.5f} vs sdeeos "
                  f"{mean_s:.5f} +- {se_s:.5f}: {d:+.2f} sigma", flush=True)


def table(results) -> str:
    mach = results["machine"]
    lines = [f"n={results['sizes']['n']}, P={results['sizes']['P']}, M={results['sizes']['M']}, "
             f"B={results['sizes']['B']}; measured float64 GEMM: {mach['gemm_flops_all_threads'] / 1e9:.1f} GFLOP/s "
             f"({mach['cpu_count']} threads), {mach['gemm_flops_1_thread'] / 1e9:.1f} GFLOP/s (1 thread); "
             f"load average before/after {mach['loadavg_before'][0]:.1f}/{mach['loadavg_after'][0]:.1f}",
             "", "| model | implementation | ensemble steps/s (best) | (median) | useful GFLOP/s | vs best NumPy | vs best torch "
             "| vs GEMM rate (same threads) |",
             "|---|---|---|---|---|---|---|---|"]
    for kind in dict.fromkeys(r["model"] for r in results["rows"]):
        rows = [r for r in results["rows"] if r["model"] == kind]
        best_np = max((r["steps_per_s"] for r in rows if r["impl"].startswith("numpy")), default=float("nan"))
        best_t = max((r["steps_per_s"] for r in rows if r["impl"].startswith("torch")), default=float("nan"))
        for r in rows:
            gemm = mach["gemm_flops_1_thread"] if "(1 thr)" in r["impl"] else mach["gemm_flops_all_threads"]
            lines.append(f"| {kind} | {r['impl']} | {r['steps_per_s']:.1f} | {r['steps_per_s_median']:.1f} | "
                         f"{r['useful_gflops']:.2f} | {r['steps_per_s'] / best_np:.2f}x | {r['steps_per_s'] / best_t:.2f}x "
                         f"| {r['useful_gflops'] * 1e9 / gemm:.0%} |")
    jax_rows = [r for r in results["rows"] if r["impl"].startswith("jax")]
    if jax_rows:
        lines += ["", f"JAX {mach.get('jax')}: | model | implementation | steps per CPU second | compile (s) "
                  "| check: mean loss JAX | sdeeos | difference (combined s.e.) |", "|---|---|---|---|---|---|---|"]
        for r in jax_rows:
            (mj, sj), (ms, ss) = r["check_loss_jax"], r["check_loss_sdeeos"]
            lines.append(f"| {r['model']} | {r['impl']} | {r['steps_per_cpu_s']:.1f} | {r['compile_s']:.2f} | "
                         f"{mj:.5f} +- {sj:.5f} | {ms:.5f} +- {ss:.5f} | {r['check_sigmas']:+.2f} |")
    elif mach.get("jax") == "not installed":
        lines += ["", "JAX: not installed"]
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
    p.add_argument("--no-jax", action="store_true", help="skip the JAX rows")
    p.add_argument("--jax-chunk", type=int, default=4,
                   help="quadratic model: trajectories per vmapped chunk of the JAX lax.map")
    p.add_argument("--check-steps", type=int, default=200,
                   help="steps of the JAX-vs-sdeeos loss check (quadratic: check-steps/5)")
    p.add_argument("--jax-worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.jax_worker is not None:
        print(json.dumps(jax_worker(json.loads(args.jax_worker))))
        return 0
    results = run(args)
    print()
    print(table(results))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
    bad = [r for r in results["rows"] if abs(r.get("check_sigmas", 0.0)) > CHECK_SIGMAS]
    for r in bad:
        print(f"CHECK FAILED: {r['model']} {r['impl']}: mean loss differs from sdeeos by "
              f"{r['check_sigmas']:+.2f} combined standard errors", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
