"""OU / Euler-Maruyama moments against closed forms and Monte Carlo; discrete vs continuous variance.

Tolerances: closed forms to round-off; Monte Carlo to 4 standard errors (variance SE = sqrt((m4 - s^4)/N)).
"""

from __future__ import annotations

import numpy as np
import pytest

from sdeeos import OutsideDomainError
from sdeeos.theory import sde

from ._streams import Streams, mean_and_se, variance_and_se


def test_closed_forms():
    t = np.array([0.0, 0.3, 2.0])
    k, mu, x0, s, v0 = 1.7, 0.4, -1.0, 0.9, 0.2
    assert np.allclose(sde.ou_mean(t, x0, k, mu), mu + (x0 - mu) * np.exp(-k * t), rtol=1e-15, atol=0)
    assert np.allclose(sde.ou_variance(t, k, s, v0),
                       v0 * np.exp(-2 * k * t) + s**2 / (2 * k) * (1 - np.exp(-2 * k * t)), rtol=1e-14, atol=0)
    assert np.allclose(sde.ou_variance(t, 0.0, s, v0), v0 + s**2 * t, rtol=1e-15)
    assert sde.ou_stationary_variance(k, s) == pytest.approx(s**2 / (2 * k), rel=1e-15)
    assert sde.ou_autocovariance(-0.5, k, s) == pytest.approx(s**2 / (2 * k) * np.exp(-0.5 * k), rel=1e-14)
    assert sde.euler_maruyama_ou_stationary_variance(0.1, k, s) == pytest.approx(s**2 / (k * (2 - 0.1 * k)), rel=1e-14)
    assert sde.euler_maruyama_ou_variance(0, 0.1, k, s, v0) == pytest.approx(v0, rel=1e-14)
    assert sde.euler_maruyama_ou_mean(3, 0.1, x0, k, mu) == pytest.approx(mu + (x0 - mu) * (1 - 0.1 * k) ** 3, rel=1e-14)


def test_domains():
    with pytest.raises(OutsideDomainError):
        sde.ou_stationary_variance(-1.0, 1.0)
    assert np.isnan(sde.ou_stationary_variance(0.0, 1.0, outside="nan"))
    with pytest.raises(OutsideDomainError, match="rate\\*step"):
        sde.euler_maruyama_ou_stationary_variance(1.0, 2.5, 1.0)
    with pytest.raises(OutsideDomainError):
        sde.ou_stationary_covariance([[1.0, 0.0], [0.0, -1.0]], np.eye(2))


def test_euler_maruyama_monte_carlo():
    h, k, mu, s, x0, steps, N = 0.05, 1.3, 0.5, 0.8, 2.0, 30, 100_000
    st = Streams(seed=21, n_traj=N)
    x = np.full(N, x0)
    for _ in range(steps):
        x = x - k * (x - mu) * h + s * np.sqrt(h) * st.normals(1)[:, 0]
    m, m_se = mean_and_se(x)
    v, v_se = variance_and_se(x)
    assert abs(m - sde.euler_maruyama_ou_mean(steps, h, x0, k, mu)) < 4 * m_se
    assert abs(v - sde.euler_maruyama_ou_variance(steps, h, k, s, 0.0)) < 4 * v_se


def test_exact_transition_monte_carlo():
    h, k, s, N = 0.2, 0.7, 1.1, 100_000
    a, b = sde.ou_transition(h, k, s)
    st = Streams(seed=22, n_traj=N)
    x = np.full(N, 1.5)
    for _ in range(10):
        x = a * x + b * st.normals(1)[:, 0]
    v, v_se = variance_and_se(x)
    m, m_se = mean_and_se(x)
    assert abs(m - sde.ou_mean(2.0, 1.5, k)) < 4 * m_se
    assert abs(v - sde.ou_variance(2.0, k, s)) < 4 * v_se


def test_sgd_stationary_variance_is_discrete_not_sde():
    """SGD at eta*lambda = 1.5: stationary variance eta sigma^2/(lambda(2 - eta lambda)) = 4 x the SDE's."""
    eta, lam, sg, N = 1.5, 1.0, 0.6, 100_000
    st = Streams(seed=23, n_traj=N)
    x = np.zeros(N)
    for _ in range(80):  # |1 - eta lambda|^160 ~ 1e-48
        x = (1 - eta * lam) * x - eta * sg * st.normals(1)[:, 0]
    v, v_se = variance_and_se(x)
    disc = sde.euler_maruyama_ou_stationary_variance(eta, lam, np.sqrt(eta) * sg)
    cont = sde.ou_stationary_variance(lam, np.sqrt(eta) * sg)
    assert disc / cont == pytest.approx(2 / (2 - eta * lam), rel=1e-14)
    assert abs(v - disc) < 4 * v_se
    assert abs(v - cont) > 40 * v_se


def test_lyapunov_two_dimensional():
    A = np.array([[2.0, -1.0], [0.5, 0.4]])
    G = np.array([[0.3, 0.1], [0.0, 0.5]])
    C = sde.ou_stationary_covariance(A, G)
    assert np.allclose(A @ C + C @ A.T, G @ G.T, atol=1e-14)
