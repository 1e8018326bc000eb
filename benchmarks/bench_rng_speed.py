"""Per-core speed of the reduced model (SGD) by RNG scheme and precision, its cycle breakdown, and the
same work in NumPy and JAX: the complete markdown table of docs/benchmarks.md in one command.

    python benchmarks/bench_rng_speed.py [--n-traj 100000] [--steps 1000] [--repeats 5] [--json out.json]

Per core means per CPU-second: every rate is trajectory-steps / ``time.process_time()`` (CPU time of
all the process's threads), best of ``--repeats``, so a loaded machine or a multi-threaded library is
measured by the work it did, not by the wall clock.  Cycles are CPU seconds times the clock in
/proc/cpuinfo (the TSC clock under a hypervisor; turbo is not seen).  Rows:

* sdeeos Numba kernel, one thread, each (dtype, rng): the whole step, and three variants of the *same
  generated kernel source* with parts taken out: "RNG alone" (a model whose update is x <- z: draw and
  store), "update and sums alone" (the reduced model with the noise replaced by a parameter: no RNG),
  "without the tail" (the tail fix-up pass removed: every lane keeps AS241's central branch); and, for
  each precision's default family, the whole step compiled at 256-bit vectors and with one step per
  pass (timed in turn with the whole steps);
* NumPy hand-vectorised (in-place ufuncs, ``Generator.standard_normal``), float64 and float32, with
  the kernel's four observables and their squares summed in float64 (the same work);
* JAX (if installed; ``pip install -e .[bench]``): ``vmap`` over trajectories of a ``lax.scan`` over
  blocks of 64 steps (``FOLD``), normals from ``random.normal(fold_in(fold_in(key, traj), block))``
  (threefry, counter-based), the same streamed sums (the four observables, with squares) and the
  divergence check at every block; compile time reported apart.  Per core from CPU time; whole
  machine from wall time.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np
import sympy as sp

import sdeeos
from sdeeos.engines import FOLD, RunSpec
from sdeeos.engines._codegen import print_python, print_python32
from sdeeos.engines._numba import STEPS, kernel_source
from sdeeos.engines._simd import has_wide_vectors
from sdeeos.models import EnsembleModel, SymbolicStep

ETA, ALPHA, BETA, SIGMA = 0.01, 1.0, 100.0, 10.0
MODEL = sdeeos.SelfStabilization(eta=ETA, alpha=ALPHA, beta=BETA, sigma=SIGMA)


class _NoiseOnly(EnsembleModel):
    """x <- z: the RNG and the store, nothing else."""

    name, methods = "bench-noise-only", ("draw",)

    def parameters(self):
        return {}

    def initial_state(self):
        return {"x": 0.0}

    def step(self, method):
        x, z = sp.symbols("x z")
        return SymbolicStep(state=(x,), params=(), noise=(z,), update=(z,), observables={})


class _NoRng(EnsembleModel):
    """The reduced model's SGD step and observables with the normal replaced by a parameter ``zc``."""

    name, methods = "bench-no-rng", ("sgd",)

    def parameters(self):
        return {**MODEL.parameters(), "zc": 0.5}

    def initial_state(self):
        return MODEL.initial_state()

    def step(self, method):
        base = MODEL.step("sgd")
        zc = sp.Symbol("zc")
        sub = {base.noise[0]: zc}
        return SymbolicStep(state=base.state, params=base.params + (zc,), noise=(),
                            update=tuple(e.subs(sub) for e in base.update), observables=dict(base.observables))


def _no_tail(source: str) -> str:
    """The kernel without the tail fix-up: no lane is counted as a tail lane."""
    out, n = re.subn(r"n_tail \+= abs\(.*\n", "n_tail += 0\n", source)
    assert n, "tail pass not found in the generated kernel"
    return out


def _compile(source: str, tag: str):
    path = Path(tempfile.gettempdir()) / f"sdeeos_bench_{os.getpid()}_{tag}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module.advance


def _kernel(model, method, dtype, rng, variant):
    step = model.step(method)
    printed = print_python32(step) if dtype == "float32" else print_python(step)
    src = kernel_source(step, printed, type(model).__name__, method, dtype, rng,
                        compress=False if variant == "no-tail" else None,
                        wide=False if variant == "256-bit" else None, steps=1 if variant == "one-step" else STEPS)
    if variant == "no-tail":
        src = _no_tail(src)
    return _compile(src, f"{type(model).__name__}_{dtype}_{rng}_{variant}")


def _cpu_rate(fn, work, repeats):
    best = float("inf")
    for _ in range(repeats):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return work / best


def _runner(model, method, dtype, rng, variant, n_traj, n_steps, result):
    """A compiled kernel variant, as a function that runs the whole ensemble once (into ``result``)."""
    kernel = _kernel(model, method, dtype, rng, variant)
    spec = RunSpec.checked(model, method, n_traj=n_traj, n_steps=n_steps, burn_in=0, seed=0, dtype=dtype, rng=rng)
    small = RunSpec.checked(model, method, n_traj=64, n_steps=64, burn_in=0, dtype=dtype, rng=rng)
    r = model.new_run(small)
    kernel(r.state, r.params, r.keys, r.gammas, 0, 64, 64, 0, FOLD, model.divergence_bound, r.acc_sum,
           r.acc_sq, r.part_sum, r.part_sq, r.alive, r.diverged_step, r.burn_state, r.rec, 0)  # compile

    def run():
        r = model.new_run(spec)
        kernel(r.state, r.params, r.keys, r.gammas, 0, n_steps, n_steps, 0, FOLD, model.divergence_bound,
               r.acc_sum, r.acc_sq, r.part_sum, r.part_sq, r.alive, r.diverged_step, r.burn_state, r.rec, 0)
        result["run"] = r

    return run


def bench_kernels(configs, n_traj, n_steps, repeats, whole_machine=False):
    """Rates of kernel variants ``configs`` = [(model, method, dtype, rng, variant), ...], timed in turn
    within each repeat (best of ``repeats`` each), so that a change in the machine's load over the run
    moves them alike and their ratios stay fair.  Per core: one thread, per CPU-second; with
    ``whole_machine``, all of Numba's threads per wall-clock second.  Returns (rates, last runs)."""
    previous = numba.get_num_threads()
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS if whole_machine else 1)
    clock = time.perf_counter if whole_machine else time.process_time
    try:
        results = [{} for _ in configs]
        runs = [_runner(*c, n_traj, n_steps, res) for c, res in zip(configs, results)]
        best = [float("inf")] * len(runs)
        for _ in range(repeats):
            for k, run in enumerate(runs):
                t = clock()
                run()
                best[k] = min(best[k], clock() - t)
        return [n_traj * n_steps / b for b in best], [res["run"] for res in results]
    finally:
        numba.set_num_threads(previous)


def bench_kernel(model, method, dtype, rng, variant, n_traj, n_steps, repeats, whole_machine=False):
    """The rate of one kernel variant (see `bench_kernels`)."""
    return bench_kernels([(model, method, dtype, rng, variant)], n_traj, n_steps, repeats, whole_machine)[0][0]


def bench_numpy(n_traj, n_steps, repeats, dtype="float64"):
    """(per-core rate, whole-machine rate) of the reduced model's SGD step in in-place NumPy ufuncs: the
    kernel's four observables (sharpness, x^2, x y, x^2 y), each added with its square (computed in
    ``dtype``) to float64 sums, the divergence check at every fold."""
    rng = np.random.default_rng(0)
    real = np.dtype(dtype).type

    def run():
        x = np.full(n_traj, np.sqrt(2 * ALPHA / BETA), dtype=dtype)
        y = np.zeros(n_traj, dtype=dtype)
        sums = [np.zeros(n_traj) for _ in range(8)]
        x2, xi, tmp, obs = (np.empty(n_traj, dtype=dtype) for _ in range(4))
        alive = np.ones(n_traj, bool)

        def accumulate(k, o):  # observable k and its square into the float64 sums
            sums[2 * k] += o
            np.multiply(o, o, out=tmp)
            sums[2 * k + 1] += tmp

        for t in range(n_steps):
            rng.standard_normal(out=xi, dtype=dtype)
            np.multiply(x, x, out=x2)
            accumulate(0, np.add(y, real(2 / ETA), out=obs))  # the sharpness
            accumulate(1, x2)
            accumulate(2, np.multiply(x, y, out=obs))
            accumulate(3, np.multiply(x2, y, out=obs))
            np.multiply(y, real(ETA), out=tmp)
            tmp += real(1.0)
            np.multiply(tmp, x, out=x)
            np.negative(x, out=x)
            xi *= real(ETA * SIGMA)
            x += xi
            x2 *= real(-0.5 * BETA * ETA)
            x2 += real(ETA * ALPHA)
            y += x2
            if (t + 1) % FOLD == 0:
                alive &= np.abs(x) <= np.float64(1e100)  # compared in float64 (1e100 is inf in float32)

    wall = n_traj * n_steps / min(_timed(run) for _ in range(repeats))
    return _cpu_rate(run, n_traj * n_steps, repeats), wall


def bench_jax(n_traj, n_steps, repeats, dtype):
    """(per-core rate, whole-machine rate, compile seconds, sharpness mean, its SE) or None."""
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)
    real = jnp.float64 if dtype == "float64" else jnp.float32
    n_blocks = n_steps // FOLD

    def one(key):
        def block(carry, b):
            x, y, sums, alive = carry
            z = jax.random.normal(jax.random.fold_in(key, b), (FOLD,), dtype=real)

            def step(c, zt):
                x, y, part = c
                x2 = x * x
                obs = (2 / ETA + y, x2, x * y, x2 * y)  # the kernel's four observables, each with its square
                wide = [o.astype(jnp.float64) for o in obs]
                part = tuple(p + v for p, v in zip(part, [w for o in wide for w in (o, o * o)]))
                return (-(1 + ETA * y) * x + ETA * SIGMA * zt, y + ETA * (ALPHA - 0.5 * BETA * x2), part), None

            zero = (jnp.float64(0.0),) * 8
            (x, y, part), _ = jax.lax.scan(step, (x, y, zero), z)
            ok = jnp.isfinite(jnp.stack(part)).all()
            alive = alive & (jnp.abs(x.astype(jnp.float64)) <= 1e100) & ok  # the divergence check at each fold
            return (x, y, tuple(s + p for s, p in zip(sums, part)), alive), None

        init = (real(np.sqrt(2 * ALPHA / BETA)), real(0.0), (0.0,) * 8, True)
        x, y, sums, alive = jax.lax.scan(block, init, jnp.arange(n_blocks))[0]
        return sums, alive  # every sum returned, so that XLA computes every one

    @jax.jit
    def run(seed_key):
        keys = jax.vmap(lambda i: jax.random.fold_in(seed_key, i))(jnp.arange(n_traj))
        return jax.vmap(one)(keys)

    key = jax.random.PRNGKey(0)
    t = time.perf_counter()
    compiled = run.lower(key).compile()
    compile_s = time.perf_counter() - t
    out = jax.block_until_ready(compiled(key))
    per_core = _cpu_rate(lambda: jax.block_until_ready(compiled(key)), n_traj * n_blocks * FOLD, repeats)
    wall = min(_timed(lambda: jax.block_until_ready(compiled(key))) for _ in range(repeats))
    s_mean = np.asarray(out[0][0]) / (n_blocks * FOLD)
    return per_core, n_traj * n_blocks * FOLD / wall, compile_s, float(s_mean.mean()), float(s_mean.std(ddof=1) / np.sqrt(n_traj))


def _sharpness(run, n_steps):
    """Ensemble mean of the per-trajectory time mean of the sharpness over steps 0 .. n_steps - 1, and its SE."""
    k = list(MODEL.step("sgd").observables).index("sharpness")
    m = run.acc_sum[k][run.alive.astype(bool)] / n_steps
    return float(m.mean()), float(m.std(ddof=1) / np.sqrt(m.size))


def _timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def clock_hz() -> float:
    try:
        with open("/proc/cpuinfo") as fh:
            return float(re.search(r"cpu MHz\s*:\s*([\d.]+)", fh.read()).group(1)) * 1e6
    except (OSError, AttributeError):
        return float("nan")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-traj", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    n, T, rep = args.n_traj, args.steps - args.steps % FOLD, args.repeats
    hz = clock_hz()
    cyc = lambda rate: hz / rate  # noqa: E731
    start = time.perf_counter()
    rows, res, sharp = [], {}, {}
    kinds = (("float64", "splitmix"), ("float64", "philox"), ("float32", "philox"), ("float32", "splitmix"))
    defaults = {"float64": "splitmix", "float32": "philox"}  # each dtype's default family
    variants = ("256-bit", "one-step")  # the kernel at 256-bit vectors, and one step per pass
    # the whole steps interleaved: the float32/float64 ratio is the table's headline
    configs = [(MODEL, "sgd", d, r, "full") for d, r in kinds]
    configs += [(MODEL, "sgd", d, r, v) for v in variants for d, r in defaults.items()]
    full, last = bench_kernels(configs, n, T, rep)
    variant_rates = dict(zip([(v, d) for v in variants for d in defaults], full[len(kinds):]))
    for (dtype, rng), rate, run in zip(kinds, full, last):
        sharp[(dtype, rng)] = _sharpness(run, T)
        rng_only = bench_kernel(_NoiseOnly(), "draw", dtype, rng, "full", n, T, rep)
        no_tail = bench_kernel(MODEL, "sgd", dtype, rng, "no-tail", n, T, rep)
        res[(dtype, rng)] = rate
        rows.append((f"sdeeos {dtype}, rng={rng}", rate, cyc(rate), cyc(rng_only), cyc(no_tail)))
    upd = {d: bench_kernel(_NoRng(), "sgd", d, "splitmix", "full", n, T, rep) for d in ("float64", "float32")}
    whole = dict(zip(defaults, bench_kernels([(MODEL, "sgd", d, r, "full") for d, r in defaults.items()], n, T, rep,
                                             whole_machine=True)[0]))
    numpy_both = {d: bench_numpy(n, min(T, 256), rep, d) for d in ("float64", "float32")}
    numpy_rates = {d: r[0] for d, r in numpy_both.items()}
    numpy_rate = numpy_rates["float64"]
    jax_rows = {d: bench_jax(n, T, rep, d) for d in ("float64", "float32")}
    elapsed = time.perf_counter() - start

    print(f"# reduced model SGD, {n} trajectories x {T} steps, streamed sums; per core = per CPU-second, "
          f"best of {rep}")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, clock {hz / 1e9:.2f} GHz "
          f"(/proc/cpuinfo), load average {os.getloadavg()[0]:.1f}; run took {elapsed:.0f} s")
    print()
    print("| implementation | traj-steps/s per core | cycles / traj-step | RNG alone | without the tail |")
    print("|---|---:|---:|---:|---:|")
    for name, rate, c_all, c_rng, c_tail in rows:
        print(f"| {name} | {rate:.3g} | {c_all:.1f} | {c_rng:.1f} | {c_tail:.1f} |")
    for d, rate in upd.items():
        print(f"| sdeeos {d}, update and sums alone (no RNG) | {rate:.3g} | {cyc(rate):.1f} | | |")
    for d, rate in numpy_rates.items():
        print(f"| NumPy hand-vectorised, {d} | {rate:.3g} | {cyc(rate):.1f} | | |")
    for d, r in jax_rows.items():
        if r is None:
            print(f"| JAX {d} | not installed (pip install -e .[bench]) | | | |")
        else:
            print(f"| JAX {d} (vmap, lax.scan, threefry) | {r[0]:.3g} | {cyc(r[0]):.1f} | | |")
    print()
    print("| whole step, cycles / traj-step | float64, rng=splitmix | float32, rng=philox |")
    print("|---|---:|---:|")
    print(f"| the kernel ({'512' if has_wide_vectors() else '256'}-bit vectors, {STEPS} steps per pass) | "
          f"{cyc(res[('float64', 'splitmix')]):.1f} | {cyc(res[('float32', 'philox')]):.1f} |")
    print(f"| 256-bit vectors | {cyc(variant_rates['256-bit', 'float64']):.1f} | "
          f"{cyc(variant_rates['256-bit', 'float32']):.1f} |")
    print(f"| one step per pass | {cyc(variant_rates['one-step', 'float64']):.1f} | "
          f"{cyc(variant_rates['one-step', 'float32']):.1f} |")
    print()
    f64, f32 = res[("float64", "splitmix")], res[("float32", "philox")]
    print(f"- float32 (philox) / float64 (splitmix), per core: {f32 / f64:.2f}x "
          f"(float32 philox / float64 philox: {f32 / res[('float64', 'philox')]:.2f}x)")
    print(f"- sdeeos / NumPy same work, per core: float64 {f64 / numpy_rate:.1f}x, "
          f"float32 {f32 / numpy_rates['float32']:.1f}x")
    threads = numba.config.NUMBA_NUM_THREADS
    print(f"- whole machine ({threads} threads, wall clock): sdeeos float64 {whole['float64']:.3g} and float32 "
          f"{whole['float32']:.3g} traj-steps/s; NumPy {numpy_both['float64'][1]:.3g} and "
          f"{numpy_both['float32'][1]:.3g} (its ufuncs use one core), so "
          f"{whole['float64'] / numpy_both['float64'][1]:.1f}x and {whole['float32'] / numpy_both['float32'][1]:.1f}x")
    for d, r in jax_rows.items():
        if r is not None:
            mine = f64 if d == "float64" else f32
            sm, se = sharp[(d, "splitmix" if d == "float64" else "philox")]
            z = (r[3] - sm) / np.hypot(r[4], se)  # independent streams: the gaps agree if |z| < ~3
            print(f"- JAX {d}: sdeeos / JAX per core {mine / r[0]:.1f}x, whole machine {whole[d] / r[1]:.1f}x "
                  f"(JAX {r[1]:.3g} traj-steps/s); "
                  f"compile {r[2]:.1f} s (apart); sharpness mean JAX {r[3]:.5f} +- {r[4]:.5f}, sdeeos {sm:.5f} +- "
                  f"{se:.5f}: difference {z:+.2f} standard errors")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"rows": rows, "variants": {f"{v} {d}": r for (v, d), r in variant_rates.items()},
                       "update_alone": upd, "whole_machine": whole, "sharpness": {f"{d} {r}": v for (d, r), v in sharp.items()}, "numpy": numpy_both,
                       "jax": {d: r for d, r in jax_rows.items()}, "clock_hz": hz, "seconds": elapsed}, fh, indent=1)


if __name__ == "__main__":
    main()
