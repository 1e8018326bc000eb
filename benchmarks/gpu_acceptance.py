r"""One-command GPU acceptance run: tests, reduced-model and QR benchmarks, sharded check; one JSON file.

From a plain source checkout, no pip install, no network::

    PYTHONPATH=. python benchmarks/gpu_acceptance.py [--json gpu_acceptance.json]
    PYTHONPATH=. python benchmarks/gpu_acceptance.py --cpu-smoke     # the same on the CPU, tiny sizes

The GPU run writes ``gpu_acceptance.json`` unless ``--json`` names another file; ``--cpu-smoke``
writes a file only when ``--json`` names one (its numbers mean nothing).

Needs CuPy (CUDA 13), numba, SymPy, xarray, SciPy (and pytest for the test section); dask/distributed
are optional (the sharded check is skipped with a clear line without them).  Sections, each with its
own time limit so that the whole run stays under 8 minutes:

1. ``tests``: the ``gpu``-marked tests (``pytest -m gpu`` on the test files that use the marker);
2. ``reduced``: reduced-model SGD trajectory-steps/s through `run_summary` (keys, kernel and reduction
   on the device) at 10^6 and 10^7 trajectories, float64 and float32, each with rng="splitmix" and
   rng="philox", against float64 splitmix;
3. ``qr``: quadratic-regression SGD on the batched CuPy engine (`QRCupyEngine`): FLOP/s of its dense
   steps against the device's measured float64 GEMM rate (same process, same run); goal >= 30 %;
4. ``sharded``: a run of 2 shards on a local Dask cluster with one GPU worker (``GPU=1``) against the
   unsharded run: per-trajectory arrays must be bit-identical.

``--cpu-smoke`` runs every section on the CPU (numba instead of CUDA, NumPy instead of CuPy, a CPU
worker) with tiny sizes: it checks this script, and its numbers mean nothing.  Exit status 0 only if
every section that ran passed; a skipped section (no dask, no pytest) is reported as such.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # a plain checkout: no pip install needed

ETA, ALPHA, BETA, SIGMA = 0.01, 1.0, 100.0, 10.0
QR_TARGET = 0.30
LIMITS_S = {"tests": 240, "reduced": 120, "qr": 60, "sharded": 90}


def _best(fn, sync, repeats):
    best = float("inf")
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t)
    return best


# ---------------------------------------------------------------------------------- sections
def section_tests(smoke: bool) -> dict:
    try:
        import pytest  # noqa: F401
    except ImportError:
        return {"status": "skipped", "reason": "pytest is not installed"}
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py")
                   if re.search(r"mark\.gpu\b", p.read_text(encoding="utf-8")))
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", *files]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=LIMITS_S["tests"])
    except subprocess.TimeoutExpired:
        return {"status": "failed", "reason": f"pytest did not finish within {LIMITS_S['tests']} s"}
    tail = proc.stdout.strip().splitlines()[-1:] or [""]
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|error|errors|deselected)", tail[0])}
    ok = proc.returncode in (0, 5) and not counts.get("failed") and not counts.get("error") and not counts.get("errors")
    out = {"status": "passed" if ok else "failed", "summary": tail[0], "counts": counts, "files": files}
    if smoke and ok and counts.get("passed"):
        out["note"] = "GPU tests passed on a machine reported as having no GPU?"
    if not ok:
        out["output_tail"] = proc.stdout[-3000:] + proc.stderr[-2000:]
    return out


#: (dtype, rng) pairs timed by the reduced-model section; rates are compared with float64 splitmix
SCHEMES = (("float64", "splitmix"), ("float64", "philox"), ("float32", "philox"), ("float32", "splitmix"))


def section_reduced(smoke: bool) -> dict:
    import sdeeos

    model = sdeeos.SelfStabilization(eta=ETA, alpha=ALPHA, beta=BETA, sigma=SIGMA)
    rows = []
    if smoke:
        from sdeeos.engines import RunSpec, get_engine

        engine = get_engine("numba")
        sizes, n_steps = [(2_000, 256), (20_000, 64)], None
        for n_traj, steps in sizes:
            for dtype, rng in SCHEMES:
                spec = RunSpec.checked(model, "sgd", n_traj=n_traj, n_steps=steps, burn_in=0, seed=0, dtype=dtype,
                                       rng=rng)
                engine.advance(spec, model.new_run(spec), steps)  # compile
                dt = _best(lambda: engine.advance(spec, model.new_run(spec), steps), lambda: None, 2)
                rows.append({"n_traj": n_traj, "n_steps": steps, "dtype": dtype, "rng": rng,
                             "rate": n_traj * steps / dt})
    else:
        from sdeeos.engines._cupy import CupyDevice, run_summary

        device = CupyDevice()
        for n_traj, steps in ((1_000_000, 4000), (10_000_000, 1000)):
            for dtype, rng in SCHEMES:
                kw = dict(burn_in=0, seed=0, dtype=dtype, device=device, rng=rng)
                run_summary(model, "sgd", n_traj=4096, n_steps=64, **kw)  # compile
                out = {}

                def go():
                    out["s"] = run_summary(model, "sgd", n_traj=n_traj, n_steps=steps, **kw)

                dt = _best(go, device.synchronize, 2)
                s = out["s"]
                rows.append({"n_traj": n_traj, "n_steps": steps, "dtype": dtype, "rng": rng, "rate": n_traj * steps / dt,
                             "n_diverged": int(s.get("n_diverged", -1)),
                             "sharpness_mean": float(s.get("sharpness_mean", float("nan")))})
    for r in rows:
        other = next((q for q in rows if q["n_traj"] == r["n_traj"] and q["dtype"] == "float64"
                      and q["rng"] == "splitmix"), None)
        r["vs_float64"] = r["rate"] / other["rate"] if other else float("nan")
    bad = [r for r in rows if r.get("n_diverged", 0) != 0]
    return {"status": "failed" if bad else "passed", "rows": rows,
            **({"reason": "trajectories diverged at the benchmark parameters"} if bad else {})}


def section_qr(smoke: bool) -> dict:
    from sdeeos._contract import RunSpec
    from sdeeos.models import QuadraticRegression
    from sdeeos.models.quadratic_regression import QRArrayEngine, get_qr_engine
    from sdeeos.models.quadratic_regression._xp_engine import dense_gradient_flops

    if smoke:
        engine, xp, sync = QRArrayEngine(np), np, (lambda: None)
        n, P, M, B, steps, size = 32, 16, 256, 8, 4, 512
    else:
        import cupy

        engine, xp = get_qr_engine("cupy"), cupy
        sync = cupy.cuda.Device().synchronize
        # n = P = 128: both GEMMs have arithmetic intensity ~n/4 = 32 flop/byte (compute-bound on an
        # H100/H200, balance ~13); 16384 trajectories: (M, P^2) and (M, nP) operands of 2 GB each
        n, P, M, B, steps, size = 128, 128, 16384, 16, 10, 8192
        engine.chunk = M
    a, b = (xp.asarray(np.random.default_rng(0).random((size, size))) for _ in range(2))
    a @ b
    gemm = 2 * size**3 / _best(lambda: a @ b, sync, 3)
    del a, b
    model = QuadraticRegression(n=n, P=P, eta=0.02, batch_size=B, q_scale=1.0, theta0_scale=0.5)
    spec = RunSpec.checked(model, "sgd", n_traj=M, n_steps=10**9, burn_in=0, seed=0)
    run = model.new_run(spec)
    state = {"t": 0}

    def go(k):
        engine._advance_kernel(spec, run, state["t"], state["t"] + k, None)
        state["t"] += k

    go(1)
    dt = _best(lambda: go(steps), sync, 2) / steps
    flops = dense_gradient_flops(model, M) / dt
    ok = bool(run.alive.all())
    ratio = flops / gemm
    status = "passed" if ok and (smoke or ratio >= QR_TARGET) else "failed"
    return {"status": status, "n": n, "P": P, "M": M, "B": B, "ensemble_steps_per_s": 1 / dt,
            "flops": flops, "gemm_flops": gemm, "fraction_of_gemm": ratio, "target": QR_TARGET,
            **({} if ok else {"reason": "trajectories diverged"})}


def section_sharded(smoke: bool) -> dict:
    try:
        import distributed
    except ImportError:
        return {"status": "skipped", "reason": "dask/distributed is not installed (the 'dist' extra)"}
    import logging

    import sdeeos

    model = sdeeos.SelfStabilization(eta=ETA, alpha=ALPHA, beta=BETA, sigma=SIGMA)
    backend = "numba" if smoke else "cupy"
    kw = dict(n_traj=2_000 if smoke else 200_000, n_steps=200 if smoke else 2000, seed=5, backend=backend,
              progress=False)
    single = sdeeos.simulate(model, **kw)
    cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                                       resources=None if smoke else {"GPU": 1}, silence_logs=logging.ERROR)
    try:
        with distributed.Client(cluster) as client:
            t = time.perf_counter()
            sharded = sdeeos.simulate(model, **kw, scheduler=client, n_shards=2)
            wall = time.perf_counter() - t
    finally:
        cluster.close()
    same = all(np.array_equal(sharded[v].values, single[v].values, equal_nan=True) for v in single.data_vars)
    return {"status": "passed" if same else "failed", "backend": backend, "n_shards": 2, "workers": 1,
            "bit_identical": same, "wall_s": wall, **({} if same else {"reason": "sharded run differs"})}


SECTIONS = {"tests": section_tests, "reduced": section_reduced, "qr": section_qr, "sharded": section_sharded}


def _preflight(smoke: bool) -> list[str]:
    missing = []
    for mod in ("numpy", "numba", "sympy", "xarray", "scipy", "tqdm") + (() if smoke else ("cupy",)):
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    return missing


def _table(results) -> str:
    lines = ["| section | status | figures |", "|---|---|---|"]
    for name, res in results["sections"].items():
        if name == "reduced" and "rows" in res:
            figs = "; ".join(f"{r['n_traj']:.0e} {r['dtype']} {r['rng']}: {r['rate']:.3g}/s ({r['vs_float64']:.2f}x f64)"
                             for r in res["rows"])
        elif name == "qr" and "flops" in res:
            figs = (f"{res['flops']:.3g} FLOP/s = {res['fraction_of_gemm']:.0%} of measured GEMM "
                    f"{res['gemm_flops']:.3g} (target {res['target']:.0%})")
        elif name == "tests":
            figs = res.get("summary") or res.get("reason", "")
        elif name == "sharded":
            figs = res.get("reason") or f"{res.get('backend')}, 2 shards on 1 worker, bit-identical: {res.get('bit_identical')}"
        else:
            figs = res.get("reason", "")
        lines.append(f"| {name} | {res['status']} | {figs} |")
    return "\n".join(lines)


def json_output(requested: str | None, smoke: bool) -> str | None:
    """Where the results go: ``--json`` if given, else ``gpu_acceptance.json`` on the GPU and nowhere for
    ``--cpu-smoke`` (a smoke check leaves no file in the working directory)."""
    if requested is not None:
        return requested
    return None if smoke else "gpu_acceptance.json"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="run on the CPU with tiny sizes (checks the script)")
    parser.add_argument("--json", default=None,
                        help="write the results here (default: gpu_acceptance.json; none with --cpu-smoke)")
    parser.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    args = parser.parse_args(argv)
    smoke = args.cpu_smoke
    json_path = json_output(args.json, smoke)
    results = {"mode": "cpu-smoke (numbers meaningless)" if smoke else "gpu", "platform": platform.platform(),
               "python": sys.version.split()[0], "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "sections": {}}
    missing = _preflight(smoke)
    if missing:
        results["sections"]["preflight"] = {"status": "failed", "reason": f"missing packages: {', '.join(missing)}"}
    else:
        for name in args.sections:
            t = time.perf_counter()
            print(f"[gpu_acceptance] {name} ...", flush=True)
            try:
                res = SECTIONS[name](smoke)
            except Exception as exc:  # noqa: BLE001 - a section's failure is reported, the others still run
                res = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
            res["wall_s"] = time.perf_counter() - t
            results["sections"][name] = res
    ok = all(r["status"] in ("passed", "skipped") for r in results["sections"].values())
    results["passed"] = ok
    if json_path is not None:
        with open(json_path, "w") as fh:
            json.dump(results, fh, indent=1, default=float)
    print(f"# sdeeos GPU acceptance ({results['mode']})")
    print(_table(results))
    print(f"written: {json_path}; " if json_path else "", f"{'PASSED' if ok else 'FAILED'}", sep="")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
