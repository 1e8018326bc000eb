"""Memory estimates that include every array a model allocates, checked before allocating, and output
paths probed for writability: each refusal is one line, before any work.

The estimates are compared with what the allocator really reports (``tracemalloc`` traces every NumPy
buffer): the traced peak must not exceed the estimate by more than the interpreter's own small
objects (`PY_OBJECTS`), which no array-size formula can count.
"""

from __future__ import annotations

import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

import sdeeos
from sdeeos import _resources
from sdeeos._contract import RunSpec
from sdeeos._errors import ResourceError
from sdeeos._resources import check_run_memory, run_memory_bytes
from sdeeos.models import CubicTaylor, CubicTaylorSME, QuadraticRegression
from sdeeos.models._cubic_taylor import construction_bytes
from sdeeos.models.quadratic_regression._model import data_bytes
from sdeeos.theory import cubic_taylor_construction as construction

#: Python objects (dicts, small lists, frames) allocated alongside the arrays: an upper bound
PY_OBJECTS = 16 * 1024
GIB = 2**30


def _traced_peak(fn):
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture(scope="module", autouse=True)
def _warm():
    """Load the compiled kernels once, so that their loading is not traced as the model's memory."""
    small = QuadraticRegression(n=5, P=3, eta=0.01, batch_size=2)
    for method in ("sgd", "gd"):
        sdeeos.simulate(small, method, n_traj=4, n_steps=8, record_every=4, backend="numpy", progress=False)
    construction.construct(0.01, 1.0, 100.0, d=4, loss_seed=3, coupling=0.5)


@pytest.mark.parametrize("n, P, q", [(300, 40, 1.0), (2000, 30, 0.0), (50, 60, 0.5)])
def test_quadratic_regression_data_estimate_covers_the_allocation(n, P, q):
    model, peak = _traced_peak(lambda: QuadraticRegression(n=n, P=P, eta=0.01, q_scale=q, batch_size=10))
    held = model.J0.nbytes + model.z0.nbytes + (0 if model.Q is None else model.Q.nbytes)
    est = data_bytes(n, P, q > 0)
    assert held <= est
    assert peak <= est + PY_OBJECTS, (peak, est)


@pytest.mark.parametrize("n, P, q, method", [(400, 50, 1.0, "sgd"), (400, 50, 1.0, "gd"), (2000, 30, 0.0, "sgd"),
                                             (30, 12, 1.0, "pgd")])
def test_quadratic_regression_run_estimate_covers_the_engine_arrays(n, P, q, method):
    """The NumPy engine's peak (its J, W, Hessian and NTK blocks) is within the run estimate; before the
    estimate counted them, (400, 50, q=1) traced 45 MB against an estimate of 19 MB."""
    model = QuadraticRegression(n=n, P=P, eta=0.01, q_scale=q, batch_size=10)
    kw = dict(n_traj=40, n_steps=8, record_every=4)
    est = run_memory_bytes(RunSpec.checked(model, method, **kw))
    _, peak = _traced_peak(lambda: sdeeos.simulate(model, method, backend="numpy", progress=False, **kw))
    assert peak <= est, (peak, est)


@pytest.mark.parametrize("d, seed, coupling", [(32, 5, 0.3), (60, 0, 0.0)])
def test_cubic_taylor_construction_estimate_covers_the_allocation(d, seed, coupling):
    loss, peak = _traced_peak(lambda: construction.construct(0.01, 1.0, 100.0, d=d, loss_seed=seed,
                                                             coupling=coupling))
    est = construction_bytes(d, seed, coupling)
    assert loss.T.nbytes <= est
    assert peak <= est + PY_OBJECTS, (peak, est)


def _small_memory(monkeypatch, gib=16):
    monkeypatch.setattr(_resources, "available_memory_bytes", lambda: gib * GIB)


@pytest.mark.parametrize("make, fragment", [
    (lambda: CubicTaylor(eta=0.01, alpha=1.0, beta=100.0, d=2000), "d=2000"),  # 59.6 GiB for T
    (lambda: CubicTaylor(eta=0.01, alpha=1.0, beta=100.0, d=10**6), "d=1000000"),
    (lambda: QuadraticRegression(n=1000, P=2000, eta=0.01), "n=1000, P=2000"),  # Q: 29.8 GiB
    (lambda: QuadraticRegression(n=10**6, P=10**4, eta=0.01, q_scale=0.0), "n=1000000, P=10000"),
])
def test_model_construction_is_refused_before_allocating(make, fragment, monkeypatch):
    _small_memory(monkeypatch)
    with pytest.raises(ResourceError, match=fragment) as info:
        make()
    assert "\n" not in str(info.value) and "16 GiB is available" in str(info.value)


def test_symbolic_step_too_large_is_refused_before_sympy_starts(monkeypatch):
    """d = 300: T fits (216 MB) but deriving 4.5 million symbols does not; SymPy would run for days."""
    _small_memory(monkeypatch)
    model = CubicTaylor(eta=0.01, alpha=1.0, beta=100.0, d=300)
    spec = RunSpec.checked(model, "gd", n_traj=2, n_steps=4)
    with pytest.raises(ResourceError, match="needs about"):
        check_run_memory(spec)


def test_sme_of_a_too_large_step_is_refused_before_sympy_starts(monkeypatch):
    """The SME derives its base's step when it is built: that derivation is checked first."""
    _small_memory(monkeypatch)
    with pytest.raises(ResourceError, match="deriving the sgd step of CubicTaylor") as info:
        CubicTaylorSME(eta=0.01, alpha=1.0, beta=100.0, d=300, sigma=1.0, dt=0.01)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("args, fragment", [
    (["quadratic-regression", "--eta", "0.01", "--n", "1000000", "--P", "100000", "--q-scale", "0"],
     "n=1000000, P=100000"),
    (["cubic-taylor", "--eta", "0.01", "--alpha", "1", "--beta", "100", "--d", "1000000"], "d=1000000"),
])
def test_cli_too_large_model_is_one_line(args, fragment):
    proc = subprocess.run([sys.executable, "-m", "sdeeos", "simulate", *args, "--steps", "10", "--n-traj", "2",
                           "--no-progress"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert fragment in proc.stderr and "memory" in proc.stderr


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
@pytest.mark.parametrize("out", ["/proc/x.nc", "/proc/sub/x.zarr"])
def test_unwritable_out_is_refused_before_the_run(out, tmp_path):
    """/proc passes the permission-bit check as root, yet no file can be created there."""
    proc = subprocess.run([sys.executable, "-m", "sdeeos", "simulate", "self-stabilization", "--eta", "0.01",
                           "--alpha", "1", "--beta", "100", "--sigma", "10", "--n-traj", "4", "--steps", "64",
                           "--no-progress", "--out", out], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "cannot be written" in proc.stderr, proc.stderr


@pytest.mark.parametrize("kw", [dict(per_trajectory=False), dict(n_shards=2)])
def test_summary_mode_still_checks_the_models_own_arrays(kw, monkeypatch):
    """Summary mode keeps fewer trajectories, not a smaller model: the engine's arrays (here the symbolic
    step of d = 300) are refused in one line before any work, instead of switching to summaries."""
    _small_memory(monkeypatch)
    model = CubicTaylor(eta=0.01, alpha=1.0, beta=100.0, d=300)
    with pytest.raises(ResourceError, match="engine of model") as info:
        sdeeos.simulate(model, "gd", n_traj=2, n_steps=4, progress=False, **kw)
    assert "\n" not in str(info.value)
