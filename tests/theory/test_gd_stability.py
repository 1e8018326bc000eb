"""GD / heavy-ball / Nesterov thresholds against direct iteration of the optimisers on a quadratic."""

from __future__ import annotations

import numpy as np
import pytest

from sdeeos import ParameterError
from sdeeos.theory import gd_stability as gs


def _iterate(method, eta_a, beta, n_steps=4000):
    """Run the optimiser itself (written independently of the SymPy update) on L = a theta^2/2, a = 1."""
    a, eta = 1.0, eta_a
    theta_prev = theta = 1.0
    for _ in range(n_steps):
        if method == "gd":
            new = theta - eta * a * theta
        elif method == "heavy_ball":
            new = theta - eta * a * theta + beta * (theta - theta_prev)
        else:
            look = theta + beta * (theta - theta_prev)
            new = look - eta * a * look
        theta_prev, theta = theta, new
        if abs(theta) > 1e6:  # clearly growing; stop before overflow
            break
    return abs(theta) + abs(theta_prev)


CASES = [("gd", 0.0)] + [(m, b) for m in ("heavy_ball", "nesterov") for b in (0.0, 0.3, 0.6, 0.9)]


@pytest.mark.parametrize(("method", "beta"), CASES)
def test_threshold_separates_decay_from_growth(method, beta):
    thr = {"gd": lambda b: gs.gd_threshold(), "heavy_ball": gs.heavy_ball_threshold,
           "nesterov": gs.nesterov_threshold}[method](beta)
    # 2 % either side: the spectral radius differs from 1 by O(1e-2) there, so 4000 steps decide it
    assert _iterate(method, 0.98 * thr, beta) < 1e-3
    assert _iterate(method, 1.02 * thr, beta) > 1e3


def test_closed_forms():
    assert gs.gd_threshold() == 2.0
    assert gs.heavy_ball_threshold(0.5) == 3.0
    assert gs.nesterov_threshold(0.5) == pytest.approx(1.5, rel=1e-15)


def test_momentum_outside_range_is_rejected():
    with pytest.raises(ParameterError, match="beta"):
        gs.heavy_ball_threshold(1.0)
    with pytest.raises(ParameterError, match="beta"):
        gs.nesterov_threshold(-0.1)


def test_companion_eigenvalues_agree_with_threshold():
    for b in np.linspace(0, 0.95, 7):
        t = gs.nesterov_threshold(b)
        assert gs.is_stable("nesterov", t * (1 - 1e-6), b) and not gs.is_stable("nesterov", t * (1 + 1e-6), b)
