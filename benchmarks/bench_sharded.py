"""Parallel efficiency of a sharded ensemble (`simulate(..., scheduler=..., n_shards=...)`) on a local
Dask cluster with 1 and 2 single-threaded worker processes, against the same run in this process.

    python benchmarks/bench_sharded.py [--n-traj 400000] [--n-steps 2000] [--workers 1 2] [--json out.json]

The cluster is started before timing (its start-up, ~2 s, is reported separately); each worker runs
its shard on one Numba thread.  Efficiency with w workers = rate(w) / (w * rate(1 worker)).  The
sharded results are checked against the in-process run (bit-identical per-trajectory arrays) so a
fast wrong answer cannot be reported.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time

import numpy as np

import sdeeos

ETA, ALPHA, BETA, SIGMA = 0.01, 1.0, 100.0, 10.0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-traj", type=int, default=400_000)
    parser.add_argument("--n-steps", type=int, default=2000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    import distributed

    model = sdeeos.SelfStabilization(eta=ETA, alpha=ALPHA, beta=BETA, sigma=SIGMA)
    kw = dict(n_traj=args.n_traj, n_steps=args.n_steps, seed=0, progress=False)
    work = args.n_traj * args.n_steps
    sdeeos.simulate(model, n_traj=1024, n_steps=64, n_threads=1)  # compile
    best = np.inf
    for _ in range(args.repeats):
        t = time.perf_counter()
        reference = sdeeos.simulate(model, **kw, n_threads=1)
        best = min(best, time.perf_counter() - t)
    rows = [("this process, 1 thread", 1, work / best, float("nan"), float("nan"))]
    base = None
    for w in args.workers:
        t = time.perf_counter()
        cluster = distributed.LocalCluster(n_workers=w, threads_per_worker=1, processes=True, dashboard_address=None,
                                           env={"NUMBA_NUM_THREADS": "1"}, silence_logs=logging.ERROR)
        client = distributed.Client(cluster)
        startup = time.perf_counter() - t
        try:
            sdeeos.simulate(model, n_traj=1024, n_steps=64, scheduler=client, n_shards=w, n_threads=1)  # compile
            best = np.inf
            for _ in range(args.repeats):
                t = time.perf_counter()
                ds = sdeeos.simulate(model, **kw, scheduler=client, n_shards=w, n_threads=1)
                best = min(best, time.perf_counter() - t)
            same = all(np.array_equal(ds[v].values, reference[v].values, equal_nan=True) for v in reference.data_vars)
            if not same:
                raise SystemExit("sharded result differs from the in-process run")
        finally:
            client.close()
            cluster.close()
        rate = work / best
        if w == 1:
            base = rate
        eff = rate / (w * base) if base else float("nan")
        rows.append((f"local dask cluster, {w} worker(s) x 1 thread", w, rate, eff, startup))
    print(f"# sharded reduced model (sgd), {args.n_traj:.0e} trajectories x {args.n_steps} steps; "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    print("| run | workers | trajectory-steps/s | parallel efficiency | cluster start-up (s) |")
    print("|---|---:|---:|---:|---:|")
    for name, w, rate, eff, startup in rows:
        print(f"| {name} | {w} | {rate:.3g} | {'' if np.isnan(eff) else f'{eff:.2f}'} | "
              f"{'' if np.isnan(startup) else f'{startup:.1f}'} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"n_traj": args.n_traj, "n_steps": args.n_steps, "cpu_count": os.cpu_count(),
                       "load_average": os.getloadavg()[0],
                       "rows": [dict(run=n, workers=w, rate=r, efficiency=e, startup_s=s) for n, w, r, e, s in rows]},
                      fh, indent=1, default=lambda x: None)


if __name__ == "__main__":
    main()
