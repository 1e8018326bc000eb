r"""The batched array-namespace QR engine (`QRArrayEngine`) under NumPy, against the Numba engine.

* Batches: the index sets drawn by ``batch_counts_xp`` are those of the NumPy reference sampler
  (itself tested equal to the Numba sampler): compared exactly.
* Trajectories: same draws, different arithmetic (dense rows with GEMMs here; fused per-row loops
  with fastmath reassociation/contraction in Numba).  Each step changes theta by a relative
  round-off of a few eps64 times the conditioning of the step (``1 + eta ||H||`` <= 3 for the runs
  below), amplified by at most ``(1 + eta ||H||)^T`` over T <= 40 steps; what is measured is
  ~1e-15..1e-14.  RTOL = 1e-9 is that bound with a wide margin, the same as the NumPy-reference test
  in ``test_qr_engines.py``; a wrong draw or a wrong term gives O(1e-2) or larger differences.
* ``backend="cupy"`` without a GPU is refused like the reduced model's; on a GPU (``gpu`` marker) the
  CuPy engine is compared with the Numba engine at the same tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest

import sdeeos
from sdeeos._contract import RunSpec
from sdeeos._errors import BackendUnavailableError
from sdeeos.engines import CupyEngine
from sdeeos.models import QuadraticRegression
from sdeeos.models.quadratic_regression import OBSERVABLES, QRArrayEngine, get_qr_engine
from sdeeos.models.quadratic_regression._numpy_engine import batch_counts
from sdeeos.models.quadratic_regression._state import SCHEME_CODES
from sdeeos.models.quadratic_regression._xp_engine import batch_counts_xp, uniforms_xp
from sdeeos._rng import stream_keys, uniforms

RTOL = 1e-9
GPU_OK, GPU_REASON = CupyEngine.available()


def _run(model, method, engine, **kw):
    spec = RunSpec.checked(model, method, **kw)
    run = model.new_run(spec)
    engine.advance(spec, run, spec.n_steps)
    return run


def _assert_close(a, b):
    np.testing.assert_array_equal(a.alive, b.alive)
    np.testing.assert_array_equal(a.diverged_step, b.diverged_step)
    np.testing.assert_allclose(b.theta, a.theta, rtol=RTOL, atol=RTOL)
    for name, rec_a, rec_b in (("rec", a.rec, b.rec), ("final", a.final, b.final)):
        for k, obs in enumerate(OBSERVABLES):
            np.testing.assert_allclose(rec_b[..., k, :] if name == "rec" else rec_b[k],
                                       rec_a[..., k, :] if name == "rec" else rec_a[k],
                                       rtol=RTOL, atol=RTOL * 1e-3, err_msg=f"{name} {obs}")


def test_uniforms_are_the_scheme_uniforms():
    keys, gammas = stream_keys(5, 1000)
    for c in (0, 7, 2**40):
        np.testing.assert_array_equal(uniforms_xp(np, keys, gammas, c), uniforms(keys, gammas, c))


@pytest.mark.parametrize("sampling", ["without_replacement", "with_replacement", "bernoulli"])
def test_batches_are_exactly_the_reference_batches(sampling):
    keys, gammas = stream_keys(3, 500)
    scheme = SCHEME_CODES[sampling]
    for c0, n, B in ((9, 14, 4), (1000, 30, 29), (5, 6, 1)):
        np.testing.assert_array_equal(batch_counts_xp(np, keys, gammas, c0, n, B, scheme),
                                      batch_counts(keys, gammas, c0, n, B, scheme))


@pytest.mark.parametrize("sampling", ["without_replacement", "with_replacement", "bernoulli"])
@pytest.mark.parametrize("q_scale", [0.0, 0.6])
def test_sgd_matches_numba(sampling, q_scale):
    m = QuadraticRegression(n=14, P=9, eta=0.08, batch_size=4, sampling=sampling, q_scale=q_scale,
                            theta0_scale=0.5, data_seed=4)
    kw = dict(n_traj=5, n_steps=40, seed=3, record_every=8)
    _assert_close(_run(m, "sgd", get_qr_engine("numba"), **kw), _run(m, "sgd", QRArrayEngine(chunk=2), **kw))


@pytest.mark.parametrize("q_scale", [0.0, 0.6])
def test_gd_and_momentum_match_numba(q_scale):
    m = QuadraticRegression(n=10, P=12, eta=0.05, batch_size=3, q_scale=q_scale, momentum=0.6, data_seed=8)
    for method in ("gd", "sgd"):
        kw = dict(n_traj=4, n_steps=30, seed=1, record_every=10)
        _assert_close(_run(m, method, get_qr_engine("numba"), **kw), _run(m, method, QRArrayEngine(), **kw))


def test_pgd_and_divergence_match_numba():
    m = QuadraticRegression(n=10, P=12, eta=0.3, q_scale=0.8, data_seed=2)
    kw = dict(n_traj=3, n_steps=25, seed=0, record_every=5)
    _assert_close(_run(m, "pgd", get_qr_engine("numba"), **kw), _run(m, "pgd", QRArrayEngine(), **kw))
    m = QuadraticRegression(n=10, P=12, eta=0.15, batch_size=2, q_scale=0.8, theta0_scale=1.5, data_seed=2)
    kw = dict(n_traj=8, n_steps=30, seed=0, record_every=10)
    a = _run(m, "sgd", get_qr_engine("numba"), **kw)
    assert 0 < (a.alive == 0).sum() < 8
    _assert_close(a, _run(m, "sgd", QRArrayEngine(chunk=3), **kw))


@pytest.mark.skipif(GPU_OK, reason="a GPU is present")
def test_cupy_backend_refused_without_a_gpu_like_the_reduced_model():
    m = QuadraticRegression(n=8, P=4, eta=0.1)
    with pytest.raises(BackendUnavailableError) as qr_err:
        sdeeos.simulate(m, backend="cupy", n_traj=2, n_steps=2)
    with pytest.raises(BackendUnavailableError) as reduced_err:
        sdeeos.simulate(sdeeos.SelfStabilization(eta=0.01, alpha=1, beta=100, sigma=10), backend="cupy",
                        n_traj=2, n_steps=2)
    assert str(qr_err.value) == str(reduced_err.value)


@pytest.mark.gpu
@pytest.mark.skipif(not GPU_OK, reason=f"needs a CUDA GPU with CuPy ({GPU_REASON})")
@pytest.mark.parametrize("method,q_scale", [("sgd", 0.0), ("sgd", 0.6), ("pgd", 0.8)])
def test_gpu_qr_matches_numba(method, q_scale):
    m = QuadraticRegression(n=14, P=9, eta=0.08 if method == "sgd" else 0.3, batch_size=4, q_scale=q_scale,
                            theta0_scale=0.5, data_seed=4)
    kw = dict(n_traj=64, n_steps=30, seed=3, record_every=10)
    a = _run(m, method, get_qr_engine("numba"), **kw)
    _assert_close(a, _run(m, method, get_qr_engine("cupy"), **kw))
