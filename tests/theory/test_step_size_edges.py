"""theory.step_size_edges: the edges against independent references (closed forms typed here, root finding on
the noise kernel of theory.mean_square, the heavy-ball companion matrix)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import brentq

from sdeeos import ParameterError
from sdeeos.theory import gd_stability, mean_square
from sdeeos.theory import step_size_edges as se


def _kernel_edge_closed_form(tau, lam, B, n, C):
    # the solution of tau/(C lam) k(eta, lam) = 1, typed from docs/theory.md#step-size-edges
    return 2.0 / (tau / C * (n - B) / (B * (n - 1)) + lam * n * (B - 1) / (B * (n - 1)))


@pytest.mark.parametrize("n,B,m,C", [(10, 1, 3, 1), (20, 3, 5, 1), (50, 7, 4, 10), (100, 100, 2, 1), (64, 16, 1, 3)])
def test_noise_kernel_edge_is_the_root_of_the_kernel_with_all_mass_at_the_top(n, B, m, C):
    """m equal eigenvalues at lambda_top: noise_kernel_norm(eta)/C = 1 exactly at eta_K (brentq on the theory)."""
    lam = 1.7
    tau = m * lam
    edge = se.noise_kernel_edge(ntk_trace=tau, lambda_top=lam, batch_size=B, n=n, n_outputs=C)
    assert edge == pytest.approx(_kernel_edge_closed_form(tau, lam, B, n, C), rel=1e-13)
    if B == n:  # no batch noise: the kernel is 0, the edge is GD's
        assert edge == pytest.approx(2 / lam, rel=1e-14)
        return

    def excess(eta):
        return mean_square.noise_kernel_norm(eta, [lam] * m, B, n, sampling="without_replacement") / C - 1

    hi = 2 / (lam * n * (B - 1) / (B * (n - 1))) if B > 1 else 50.0
    root = brentq(excess, 1e-9, hi * (1 - 1e-12), xtol=1e-15, rtol=1e-14)
    assert edge == pytest.approx(root, rel=1e-11)


def test_kernel_bound_holds_below_the_edge_on_random_spectra():
    rng = np.random.default_rng(11)
    for _ in range(100):
        n = int(rng.integers(5, 80))
        B = int(rng.integers(1, n))
        lams = np.sort(rng.exponential(1.0, size=int(rng.integers(1, n + 1))))[::-1]
        edge = se.noise_kernel_edge(ntk_trace=float(lams.sum()), lambda_top=float(lams[0]), batch_size=B, n=n)
        k = mean_square.noise_kernel_norm(0.999 * edge, lams, B, n, sampling="without_replacement", outside="nan")
        assert np.isfinite(k) and k < 1


def test_curvature_and_batch_sharpness_edges_are_the_heavy_ball_threshold():
    for mu in (0.0, 0.3, 0.9):
        h = gd_stability.heavy_ball_threshold(mu)
        assert h == pytest.approx(2 + 2 * mu, rel=1e-15)
        assert se.curvature_edge(3.0, mu) == pytest.approx(h / 3.0, rel=1e-15)
        assert se.batch_sharpness_edge(5.0, mu) == pytest.approx(h / 5.0, rel=1e-15)
        # independent check: the companion matrix is stable just below the edge and not just above it
        assert gd_stability.is_stable("heavy_ball", 3.0 * se.curvature_edge(3.0, mu) * (1 - 1e-6), mu)
        assert not gd_stability.is_stable("heavy_ball", 3.0 * se.curvature_edge(3.0, mu) * (1 + 1e-6), mu)
    assert se.curvature_edge(0.0) == math.inf and se.batch_sharpness_edge(-2.0) == math.inf


def test_noise_kernel_upper_is_one_at_the_edge_and_inf_beyond_the_domain():
    kw = dict(ntk_trace=4.0, lambda_top=2.0, batch_size=4, n=40, n_outputs=2)
    edge = se.noise_kernel_edge(**kw)
    assert se.noise_kernel_upper(edge, **kw) == pytest.approx(1.0, rel=1e-12)
    assert se.noise_kernel_upper(0.5 * edge, **kw) < 1
    assert se.noise_kernel_upper(10 / 2.0, **kw) == math.inf


def test_edge_step_size_rule():
    eta, binding = se.edge_step_size({"curvature": 2.0, "batch_sharpness": 3.0, "noise_kernel": 1.9},
                                     margin=0.8, eta_max=5.0)
    assert (eta, binding) == (pytest.approx(0.8 * 1.9, rel=1e-15), "noise_kernel")
    assert se.edge_step_size({"curvature": math.inf}, margin=0.5, eta_max=0.3) == (0.3, "eta_max")
    assert se.edge_step_size({"curvature": 1.0}, margin=0.5, eta_max=0.3) == (0.3, "eta_max")


@pytest.mark.parametrize("margin", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_margin_outside_the_open_unit_interval_is_refused(margin):
    with pytest.raises(ParameterError, match=r"^margin must be (in \(0.0, 1.0\)|finite)"):
        se.edge_step_size({"curvature": 1.0}, margin=margin, eta_max=1.0)


@pytest.mark.parametrize("bad", [float("nan"), 0.0, -1.0])
def test_a_nan_or_non_positive_edge_never_becomes_a_step(bad):
    with pytest.raises(ParameterError, match="edge 'curvature'"):
        se.edge_step_size({"curvature": bad}, margin=0.9, eta_max=1.0)


def test_bad_kernel_inputs():
    with pytest.raises(ParameterError, match="lambda_top"):
        se.noise_kernel_edge(ntk_trace=1.0, lambda_top=0.0, batch_size=2, n=10)
    with pytest.raises(ParameterError, match="ntk_trace"):
        se.noise_kernel_edge(ntk_trace=-1.0, lambda_top=1.0, batch_size=2, n=10)
    with pytest.raises(ParameterError, match="batch"):
        se.noise_kernel_edge(ntk_trace=1.0, lambda_top=1.0, batch_size=11, n=10)
