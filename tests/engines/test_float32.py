"""float32 state (``simulate(..., dtype="float32")``) against float64, the CUDA kernel and theory of round-off.

Bounds and where they come from:

* normals: the float32 variant of the scheme is AS241 evaluated in single precision from an exactly
  rounded ``q``: a rational function of degree 7/7 by Horner (about 30 roundings, partly cancelling);
  measured <= 4 float32 ulps relative, test 8 eps32.
* the Numba float32 kernel and the CUDA kernel's float32 mode (compiled by g++ on the CPU) perform the
  same single-precision operations in the same order: bit-identical (as float64 is).
* float32 against float64 on the same streams: per-trajectory time means within 1e-5 of each
  observable's rms (~80 eps32: rounding errors of a contracting map do not grow); ensemble means
  within 0.05 standard errors (the float32 bias is invisible next to the sampling error at these
  sizes), and the reduced-model gap within 0.05 SE and a few float32 spacings of 2/eta.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import sdeeos
from sdeeos import _rng
from sdeeos._errors import Float32ResolutionWarning, ParameterError
from sdeeos.engines import RunSpec, get_engine
from sdeeos.engines._cuda_host import HostDevice, find_cxx
from sdeeos.engines._cupy import CupyEngine
from sdeeos.models import CubicTaylor, Minimalist, QuadraticRegression, SelfStabilization
from sdeeos.models._base import float32_gap_resolution

EPS32 = float(np.finfo(np.float32).eps)


def _run(engine, spec, t1):
    r = spec.model.new_run(spec)
    engine.advance(spec, r, t1)
    return r


def test_float32_normals_are_the_float64_draws_to_a_few_ulps():
    keys, gammas = _rng.stream_keys(7, 200_000)
    for counter in (0, 1, 12345):
        z64 = _rng.normals(keys, gammas, counter)
        z32 = _rng.normals32(keys, gammas, counter)
        assert z32.dtype == np.float32
        np.testing.assert_allclose(z32, z64, rtol=8 * EPS32, atol=0)
        assert np.abs(z32).max() > 4.0  # the tails are there


@pytest.mark.skipif(find_cxx() is None, reason="needs g++ to build the CUDA source on the CPU")
@pytest.mark.parametrize("model,method", [
    (SelfStabilization(eta=0.01, alpha=1.0, beta=100.0, sigma=10.0), "sgd"),
    (SelfStabilization(eta=0.01, alpha=1.0, beta=100.0, sigma=10.0, x0=0.05, y0=-3.0), "pgd"),
    (Minimalist(eta=0.05, sigma=0.1), "sgd-mult"),
])
@pytest.mark.parametrize("rng", ["philox", "splitmix"])
def test_numba_float32_bit_identical_to_the_cuda_float32_kernel(model, method, rng):
    spec = RunSpec.checked(model, method, n_traj=300, n_steps=1500, burn_in=500, seed=3, record_every=37,
                           dtype="float32", rng=rng)
    a = _run(get_engine("numba"), spec, 1500)
    b = spec.model.new_run(spec)
    host = CupyEngine(device=HostDevice())
    for t1 in (64, 777, 1500):
        host.advance(spec, b, t1)
    for name, x in a.arrays().items():
        if isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, getattr(b, name), err_msg=name)


def _traj_err(a, b, n_avg):
    errs = []
    for k in range(a.acc_sum.shape[0]):
        scale = np.sqrt(a.acc_sq[k] / n_avg)
        errs.append(np.max(np.abs(a.acc_sum[k] - b.acc_sum[k]) / n_avg / scale))
    return max(errs)


@pytest.mark.parametrize("model,method,summary", [
    (SelfStabilization(eta=0.01, alpha=1.0, beta=100.0, sigma=10.0), "sgd", "sharpness"),
    (Minimalist(eta=0.05, sigma=0.01), "sgd", "sharpness"),
    (CubicTaylor(eta=0.01, alpha=1.0, beta=100.0, d=3, gap=50.0, coupling=0.4, loss_seed=2, sigma=3.0, x0=0.02),
     "sgd", "sharpness_u"),
])
def test_float32_bias_against_float64(model, method, summary):
    kw = dict(n_traj=400, n_steps=6000, seed=11, n_threads=1)
    d64 = sdeeos.simulate(model, method, **kw)
    d32 = sdeeos.simulate(model, method, dtype="float32", rng="splitmix", **kw)  # paired: the same words
    assert d32.attrs["dtype"] == "float32" and d32.attrs["rng_scheme"] == _rng.RNG_SCHEME_F32
    assert d64.attrs["rng_scheme"] == _rng.RNG_SCHEME
    assert int(d32.n_diverged) == int(d64.n_diverged) == 0
    se = float(d64[f"{summary}_mean_stderr"])
    mean = float(d64[f"{summary}_mean"])
    bias = float(d32[f"{summary}_mean"]) - mean
    # paired per-trajectory differences: their standard error is the statistical resolution of a bias
    diff = (d32[f"{summary}_time_mean"] - d64[f"{summary}_time_mean"]).values
    se_pair = float(np.std(diff, ddof=1) / np.sqrt(diff.size))
    rounding = 8 * EPS32 * abs(mean)  # the observable itself: a few float32 operations, each <= eps32/2
    print(f"{model.name} {method}: float32 - float64 = {bias:.3e} = {bias / se:.2e} SE of the mean; "
          f"paired SE {se_pair:.2e}, observable rounding bound {rounding:.2e}")
    assert abs(bias) < 4 * se_pair + rounding
    assert abs(bias) < 0.25 * se  # negligible next to the sampling error of the mean itself


def test_float32_per_trajectory_error_is_round_off():
    spec = RunSpec.checked(SelfStabilization(eta=0.01, alpha=1.0, beta=100.0, sigma=10.0), "sgd", n_traj=200,
                           n_steps=10_000, burn_in=5_000, seed=5)
    a = _run(get_engine("numba"), spec, 10_000)
    b = _run(get_engine("numba"), RunSpec.checked(spec.model, "sgd", n_traj=200, n_steps=10_000, burn_in=5_000,
                                                  seed=5, dtype="float32", rng="splitmix"), 10_000)
    err = _traj_err(a, b, 5_000)
    assert err < 1e-5
    assert err > EPS32 / 100  # the float32 run really ran in single precision


def test_float32_refused_where_unsupported_naming_both():
    qr = QuadraticRegression(n=8, P=4, eta=0.1)
    ct = CubicTaylor(eta=0.01, alpha=1.0, beta=100.0, d=3, gap=50.0, coupling=0.4, loss_seed=2, sigma=3.0)
    with pytest.raises(ParameterError, match="'float32'.*'cubic-taylor'.*'pgd'"):
        sdeeos.simulate(ct, "pgd", n_traj=2, n_steps=10, dtype="float32")
    m = SelfStabilization(eta=0.01, alpha=1.0, beta=100.0, sigma=10.0)
    with pytest.raises(ParameterError, match="'float32'.*backend 'numpy'"):
        sdeeos.simulate(m, n_traj=2, n_steps=10, dtype="float32", backend="numpy")
    with pytest.raises(ParameterError, match="^dtype must be one of"):
        sdeeos.simulate(m, n_traj=2, n_steps=10, dtype="float16")
    with pytest.raises(ParameterError, match="'float32'.*'quadratic-regression'"):
        sdeeos.simulate(qr, n_traj=2, n_steps=10, dtype="float32")


def test_float32_refused_or_warned_below_gap_resolution():
    # gap_leading ~ eta beta sigma^2 / (4 alpha) (docs/theory.md): tiny sigma gives a tiny gap
    tiny = SelfStabilization(eta=0.01, alpha=1.0, beta=1.0, sigma=1e-6)
    gap = tiny.predictions("sgd")["sharpness_gap_predicted_exact"]
    assert float32_gap_resolution(0.01, gap) < 1
    with pytest.raises(ParameterError, match="float32.*cannot resolve the sharpness gap"):
        sdeeos.simulate(tiny, n_traj=2, n_steps=10, dtype="float32")
    coarse = next(SelfStabilization(eta=0.01, alpha=1.0, beta=1.0, sigma=s) for s in np.geomspace(1e-5, 1, 200)
                  if 1 <= float32_gap_resolution(0.01, SelfStabilization(eta=0.01, alpha=1.0, beta=1.0, sigma=s)
                                                 .predictions("sgd")["sharpness_gap_predicted_exact"]) < 2**10)
    with pytest.warns(Float32ResolutionWarning, match="float32 spacings"):
        sdeeos.simulate(coarse, n_traj=2, n_steps=10, dtype="float32")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Float32ResolutionWarning)
        sdeeos.simulate(SelfStabilization(eta=0.01, alpha=1.0, beta=100.0, sigma=10.0), n_traj=2, n_steps=10,
                        dtype="float32")
        sdeeos.simulate(tiny, n_traj=2, n_steps=10)  # float64 is fine


def test_cli_dtype_float32(tmp_path, capsys):
    from sdeeos._cli import main

    out = tmp_path / "r.nc"
    rc = main(["simulate", "self-stabilization", "--eta", "0.01", "--alpha", "1", "--beta", "100", "--sigma", "10",
               "--n-traj", "64", "--steps", "256", "--dtype", "float32", "--no-progress", "--out", str(out)])
    assert rc in (0, None)
    import xarray as xr
    with xr.open_dataset(out) as ds:
        assert ds.attrs["dtype"] == "float32" and ds.attrs["rng_scheme"] == _rng.RNG_SCHEME_PHILOX_F32  # the default
