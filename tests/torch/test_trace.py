"""Hessian trace: exact against the dense Hessian; Hutchinson against the exact trace within its own error.

Statistical bound.  The Hutchinson estimate is the mean of m i.i.d. samples q = v^T H v with finite
variance 2 sum_{i != j} H_ij^2, so (estimate - trace) / SE is approximately standard normal for the
m >= 200 samples used here (the sample SE is then within a few per cent of the true one).  |z| < 4
fails with probability 6e-5 for a correct estimator; with a fixed seed the test is deterministic, and a
biased estimator (a missing factor, a wrong distribution) is off by many SE.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from sdeeos import ParameterError  # noqa: E402
from sdeeos.torch import hessian_trace, loss_function  # noqa: E402


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_exact_trace_is_the_dense_trace(tiny, hessian_of, loss):
    flat, x, t, _, theta = tiny("mlp-tanh", loss)
    fn = loss_function(flat, x, t, loss)
    H = hessian_of(fn, theta)
    res = hessian_trace(fn, theta, method="exact")
    assert res.value == pytest.approx(float(torch.trace(H)), rel=1e-12, abs=1e-12)
    assert res.stderr == 0.0 and res.n_hvp == theta.numel()


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_hutchinson_within_four_standard_errors_and_its_variance(tiny, hessian_of, loss):
    flat, x, t, _, theta = tiny("mlp-tanh", loss)
    fn = loss_function(flat, x, t, loss)
    H = hessian_of(fn, theta)
    exact = float(torch.trace(H))
    res = hessian_trace(fn, theta, n_samples=400, generator=torch.Generator().manual_seed(0))
    assert res.n_hvp == 400
    assert abs(res.value - exact) < 4 * res.stderr
    # the sample variance estimates 2 sum_{i != j} H_ij^2; with 400 samples its relative SE is about
    # sqrt(2/399) ~ 0.07 for near-Gaussian q: 4 of those is the bound
    var = 2 * float((H ** 2).sum() - (torch.diagonal(H) ** 2).sum())
    assert res.stderr ** 2 * 400 == pytest.approx(var, rel=4 * (2 / 399) ** 0.5)


def test_hutchinson_adaptive_stop_reaches_the_requested_relative_error(tiny, hessian_of):
    flat, x, t, _, theta = tiny("mlp-tanh", "mse")
    fn = loss_function(flat, x, t, "mse")
    exact = float(torch.trace(hessian_of(fn, theta)))
    # this Hessian's off-diagonal mass is large next to its trace: one sample's SD is ~4x the trace,
    # so 10 % needs about 1700 samples
    res = hessian_trace(fn, theta, n_samples=50, rel_se=0.1, generator=torch.Generator().manual_seed(1))
    assert res.stderr <= 0.1 * abs(res.value)
    assert 50 <= res.n_hvp < 10_000  # stopped by the criterion, not by max_samples
    assert abs(res.value - exact) < 4 * res.stderr


def test_bad_trace_arguments():
    theta = torch.zeros(3, dtype=torch.float64)
    with pytest.raises(ParameterError, match=r"method must be one of \('hutchinson', 'exact'\)"):
        hessian_trace(lambda th: (th ** 2).sum(), theta, method="dense")
    with pytest.raises(ParameterError, match="n_samples"):
        hessian_trace(lambda th: (th ** 2).sum(), theta, n_samples=1)
    with pytest.raises(ParameterError, match="rel_se"):
        hessian_trace(lambda th: (th ** 2).sum(), theta, rel_se=0.0)
