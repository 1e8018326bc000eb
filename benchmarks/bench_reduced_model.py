"""Trajectory-steps per second of the reduced self-stabilization model (SGD, float64, streamed
statistics) against the vectorised baselines a user would otherwise write, in the same run.

    python benchmarks/bench_reduced_model.py [--n-traj 1000000] [--repeats 3] [--json out.json]
                                             [--sdeeos-only] [--threads 1]

The sdeeos engine runs in float64 and float32 (``dtype="float32"``: float32 state and normals of
the float32 RNG variant, float64 sums) in the same run, alternating, so that a loaded machine
slows both alike; the table gives float32/float64 per thread count.  ``--sdeeos-only`` skips the
baselines.

Every contender does the same work per trajectory-step: one Gaussian draw, the (x, y) update, and
running sums of the sharpness S = 2/eta + y and of x^2 (the statistics the engine streams; the
engine also streams y*x and y*x^2 and their squares, i.e. more work).  Baselines: NumPy (in-place
ufuncs, `Generator.standard_normal`), PyTorch-CPU (float64 and float32), JAX `vmap` + `lax.scan`
(if installed).  Ratios are against the fastest NumPy variant.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

ETA, ALPHA, BETA, SIGMA = 0.01, 1.0, 100.0, 10.0


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def bench_sdeeos(n_traj, n_steps, repeats, threads=None, method="sgd", dtype="float64", backend="numba"):
    import sdeeos
    from sdeeos.engines import RunSpec, get_engine

    model = sdeeos.SelfStabilization(eta=ETA, alpha=ALPHA, beta=BETA, sigma=SIGMA)
    spec = RunSpec(model=model, method=method, n_traj=n_traj, n_steps=n_steps, burn_in=0, seed=0, record_every=0,
                   dtype=dtype)
    engine = get_engine(backend)
    small = RunSpec(model=model, method=method, n_traj=1024, n_steps=64, burn_in=0, seed=0, record_every=0, dtype=dtype)
    engine.advance(small, model.new_run(small), 64, threads)  # compile

    def run():
        state = model.new_run(spec)
        engine.advance(spec, state, n_steps, threads)

    return n_traj * n_steps / best_of(run, repeats)


def bench_numpy(n_traj, n_steps, repeats):
    rng = np.random.default_rng(0)

    def run():
        x = np.full(n_traj, np.sqrt(2 * ALPHA / BETA))
        y = np.zeros(n_traj)
        s_sum = np.zeros(n_traj)
        x2_sum = np.zeros(n_traj)
        x2 = np.empty(n_traj)
        xi = np.empty(n_traj)
        tmp = np.empty(n_traj)
        for _ in range(n_steps):
            rng.standard_normal(out=xi)
            np.multiply(x, x, out=x2)
            s_sum += y
            x2_sum += x2
            # x <- -(1 + eta y) x + eta sigma xi ; y <- y + eta (alpha - beta x^2 / 2)
            np.multiply(y, ETA, out=tmp)
            tmp += 1.0
            np.multiply(tmp, x, out=x)
            np.negative(x, out=x)
            xi *= ETA * SIGMA
            x += xi
            x2 *= -0.5 * BETA * ETA
            x2 += ETA * ALPHA
            y += x2
        s_sum += n_steps * 2 / ETA

    return n_traj * n_steps / best_of(run, repeats)


def bench_torch(n_traj, n_steps, repeats, dtype_name):
    try:
        import torch
    except ImportError:
        return None
    dtype = getattr(torch, dtype_name)
    gen = torch.Generator().manual_seed(0)

    @torch.no_grad()
    def run():
        x = torch.full((n_traj,), float(np.sqrt(2 * ALPHA / BETA)), dtype=dtype)
        y = torch.zeros(n_traj, dtype=dtype)
        s_sum = torch.zeros(n_traj, dtype=dtype)
        x2_sum = torch.zeros(n_traj, dtype=dtype)
        xi = torch.empty(n_traj, dtype=dtype)
        for _ in range(n_steps):
            xi.normal_(generator=gen)
            x2 = x * x
            s_sum += y
            x2_sum += x2
            x = -(1 + ETA * y) * x + (ETA * SIGMA) * xi
            y += ETA * (ALPHA - 0.5 * BETA * x2)

    return n_traj * n_steps / best_of(run, repeats)


def bench_jax(n_traj, n_steps, repeats):
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)

    def one(key):
        def body(carry, k):
            x, y, s, q = carry
            xi = jax.random.normal(k, dtype=jnp.float64)
            x2 = x * x
            return (-(1 + ETA * y) * x + ETA * SIGMA * xi, y + ETA * (ALPHA - 0.5 * BETA * x2), s + y, q + x2), None

        keys = jax.random.split(key, n_steps)
        init = (jnp.sqrt(2 * ALPHA / BETA), 0.0, 0.0, 0.0)
        return jax.lax.scan(body, init, keys)[0]

    fn = jax.jit(jax.vmap(one))
    keys = jax.random.split(jax.random.PRNGKey(0), n_traj)
    jax.block_until_ready(fn(keys))  # compile
    return n_traj * n_steps / best_of(lambda: jax.block_until_ready(fn(keys)), repeats)


def bench_precisions(n, n_steps, repeats, threads, method="sgd"):
    """float64 and float32 rates of the engine, measured alternately (best of ``repeats`` each)."""
    best = {"float64": 0.0, "float32": 0.0}
    for _ in range(repeats):
        for dtype in best:
            best[dtype] = max(best[dtype], bench_sdeeos(n, n_steps, 1, threads=threads, method=method, dtype=dtype))
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-traj", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="numba thread counts to measure (default: 1 and all)")
    parser.add_argument("--sdeeos-only", action="store_true", help="skip the NumPy/PyTorch/JAX baselines")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    n = args.n_traj
    import numba

    rows = []
    numpy_rate = None
    if not args.sdeeos_only:
        numpy_rate = bench_numpy(n, 40, args.repeats)
        rows.append(("NumPy vectorised (in-place ufuncs)", numpy_rate))
        for name, rate in [
            ("PyTorch-CPU vectorised, float64", bench_torch(n, 40, args.repeats, "float64")),
            ("PyTorch-CPU vectorised, float32", bench_torch(n, 40, args.repeats, "float32")),
            ("JAX vmap + lax.scan, float64", bench_jax(min(n, 100_000), 200, args.repeats)),
        ]:
            rows.append((name, rate))
    all_threads = numba.config.NUMBA_NUM_THREADS
    thread_counts = args.threads or sorted({1, all_threads})
    ratios = {}
    for threads in thread_counts:
        rates = bench_precisions(n, 400 * threads, args.repeats, threads)
        for dtype, rate in rates.items():
            rows.append((f"sdeeos numba, sgd, {dtype}, {threads} thread(s)", rate))
        ratios[threads] = rates["float32"] / rates["float64"]
    if not args.sdeeos_only:
        rows.append((f"sdeeos numba, gd, float64, {all_threads} threads",
                     bench_sdeeos(n, 2000, args.repeats, threads=all_threads, method="gd")))

    print(f"# reduced model, {n:.0e} trajectories, streamed statistics (float64 sums)")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, numba threads {all_threads}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print("| implementation | trajectory-steps/s | vs NumPy |")
    print("|---|---:|---:|")
    for name, rate in rows:
        if rate is None:
            print(f"| {name} | not installed | |")
        else:
            print(f"| {name} | {rate:.3g} | {'' if numpy_rate is None else f'{rate / numpy_rate:.1f}x'} |")
    for threads, ratio in ratios.items():
        print(f"float32 / float64, {threads} thread(s): {ratio:.2f}x")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"n_traj": n, "cpu_count": os.cpu_count(), "load_average": os.getloadavg()[0],
                       "rates": {name: rate for name, rate in rows},
                       "float32_over_float64": {str(t): r for t, r in ratios.items()}}, fh, indent=1)


if __name__ == "__main__":
    main()
