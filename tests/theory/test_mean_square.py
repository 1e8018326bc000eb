"""1-D mean-square factor and linear-regression second moments against Monte Carlo (sdeeos._rng streams).

Tolerances: 4 standard errors of the Monte-Carlo mean (SE = sample std / sqrt(N)).
"""

from __future__ import annotations

import numpy as np
import pytest

from sdeeos import OutsideDomainError, ParameterError
from sdeeos.theory import batch_noise as bn
from sdeeos.theory import mean_square as ms

from ._streams import Streams, batch_weights, mean_and_se

H = np.random.default_rng(0).uniform(0.5, 3.0, 20)  # curvatures of docs/theory.md#mean-square-threshold


@pytest.mark.parametrize("scheme", bn.SAMPLING_SCHEMES)
def test_one_dimensional_second_moment_monte_carlo(scheme):
    eta, B, T, N = 0.9, 5, 6, 40_000
    st = Streams(seed=7, n_traj=N)
    theta = np.ones(N)
    for _ in range(T):
        h_hat = batch_weights(st, scheme, H.size, B) @ H / H.size
        theta = (1 - eta * h_hat) * theta
    mean, se = mean_and_se(theta**2)
    assert abs(mean - ms.one_dimensional_factor(eta, H, B, scheme) ** T) < 4 * se


def test_one_dimensional_stationary_second_moment_monte_carlo():
    eta, B, N, T, sigma_g = 0.9, 5, 20_000, 120, 0.7
    st = Streams(seed=8, n_traj=N)
    theta = np.zeros(N)
    f = ms.one_dimensional_factor(eta, H, B, "with_replacement")
    for _ in range(T):
        h_hat = batch_weights(st, "with_replacement", H.size, B) @ H / H.size
        theta = (1 - eta * h_hat) * theta - eta * sigma_g * st.normals(1)[:, 0]
    mean, se = mean_and_se(theta**2)
    # transient: m_T = eta^2 sigma_g^2 (1 - f^T)/(1 - f); f^T < 1e-10 here
    assert f**T < 1e-10
    assert abs(mean - ms.one_dimensional_stationary_second_moment(eta, H, B, "with_replacement", sigma_g**2)) < 4 * se


def test_threshold_matches_factor():
    for scheme in bn.SAMPLING_SCHEMES:
        e = ms.one_dimensional_threshold(H, 3, scheme)
        assert ms.one_dimensional_factor(e, H, 3, scheme) == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(OutsideDomainError):
        ms.one_dimensional_stationary_second_moment(1.2, H, 3, "bernoulli", 1.0)


@pytest.mark.parametrize("scheme", bn.SAMPLING_SCHEMES)
def test_linear_regression_second_moment_monte_carlo(scheme):
    n, d, B, T, N = 5, 8, 2, 6, 100_000
    rng = np.random.default_rng(1)
    X = rng.normal(size=(n, d)) / np.sqrt(d)
    theta_mat = X @ X.T / n
    eta = 1.2 / np.linalg.eigvalsh(theta_mat).max()
    r0 = X @ rng.normal(size=d)
    st = Streams(seed=11, n_traj=N)
    r = np.tile(r0, (N, 1))
    M = np.outer(r0, r0)
    for _ in range(T):
        D = batch_weights(st, scheme, n, B)
        r = r - eta * (D * r) @ theta_mat.T
        M = ms.second_moment_step(eta, theta_mat, M, B, scheme)
    prods = r[:, :, None] * r[:, None, :]
    mc = prods.mean(axis=0)
    se = prods.std(axis=0, ddof=1) / np.sqrt(N)
    iu = np.triu_indices(n)
    z = np.abs(mc - M)[iu] / se[iu]
    assert z.max() < 4.5, z  # 15 entries at 4.5 SE: family-wise false alarm < 1e-4


def test_noise_kernel_closed_forms_and_domain():
    lam = np.array([0.5, 0.25, 0.0])
    # Bernoulli: eta (1/B - 1/n) sum lambda/(2 - eta lambda)
    assert ms.noise_kernel_norm(1.0, lam, 2, 4, "bernoulli") == pytest.approx(
        0.25 * (0.5 / 1.5 + 0.25 / 1.75), rel=1e-14)
    assert ms.noise_kernel_norm(1.0, lam, 4, 4, "without_replacement") == 0
    assert ms.noise_kernel_norm(1.0, lam, 1, 4, "with_replacement") == pytest.approx((0.5 + 0.25) / 2, rel=1e-14)
    with pytest.raises(OutsideDomainError, match="outside the domain"):
        ms.noise_kernel_norm(5.0, lam, 2, 4, "bernoulli")
    assert np.isnan(ms.noise_kernel_norm(5.0, lam, 2, 4, "bernoulli", outside="nan"))
    with pytest.raises(ParameterError, match="ntk_eigenvalues"):
        ms.noise_kernel_norm(1.0, [-1.0], 1, 4)
    with pytest.raises(ParameterError, match="at most n"):
        ms.noise_kernel_norm(1.0, [0.1] * 5, 1, 4)


def test_closure_lower_bounds_exact_kernel_and_operator_forms_agree():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(9, 14)) / np.sqrt(14)
    th = X @ X.T / 9
    lam = np.linalg.eigvalsh(th)
    for scheme in bn.SAMPLING_SCHEMES:
        for frac in (0.3, 0.9):
            e = frac / lam.max()
            assert ms.noise_kernel_norm(e, lam, 3, 9, scheme) <= ms.noise_kernel_norm_exact(e, th, 3, scheme) + 1e-14
            dense = np.max(np.abs(np.linalg.eigvals(ms.second_moment_operator(e, th, 3, scheme))))
            assert ms.second_moment_spectral_radius(e, th, 3, scheme) == pytest.approx(dense, rel=1e-9)
