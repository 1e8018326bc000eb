"""Mini-batch noise coefficients against Monte-Carlo batches drawn from sdeeos._rng streams.

Tolerance: |sample variance - theory| < 4 standard errors, SE = sqrt((m4 - s^4)/N).
"""

from __future__ import annotations

import numpy as np
import pytest

from sdeeos import ParameterError
from sdeeos.theory import batch_noise as bn

from ._streams import Streams, batch_weights, mean_and_se, variance_and_se

G = np.array([1.0, -0.5, 2.0, 0.3, -1.2, 0.7]) + 0.4  # non-zero mean: Bernoulli's uncentred term shows


@pytest.mark.parametrize("scheme", bn.SAMPLING_SCHEMES)
@pytest.mark.parametrize("B", [2, 5])
def test_batch_mean_variance_monte_carlo(scheme, B):
    n, N = G.size, 200_000
    D = batch_weights(Streams(seed=100 + B, n_traj=N), scheme, n, B)
    g_hat = D @ G / n
    mean, mean_se = mean_and_se(g_hat)
    var, var_se = variance_and_se(g_hat)
    theory = bn.batch_gradient_noise_variance(G, B, scheme)
    assert abs(mean - G.mean()) < 4 * mean_se
    assert abs(var - theory) < 4 * var_se, (var, theory, var_se)


def test_full_batch_and_closed_forms():
    assert bn.centred_coefficient(50, 50, "without_replacement") == 0
    assert bn.centred_coefficient(50, 50, "bernoulli") == 0
    assert bn.centred_coefficient(50, 50, "with_replacement") == pytest.approx(1 / 50, rel=1e-15)
    assert bn.centred_coefficient(3, 10, "without_replacement") == pytest.approx(7 / 27, rel=1e-15)


def test_bad_input():
    with pytest.raises(ParameterError, match="batch_size"):
        bn.centred_coefficient(11, 10, "without_replacement")
    with pytest.raises(ParameterError, match="sampling"):
        bn.centred_coefficient(1, 10, "poisson")
    assert bn.centred_coefficient(11, 10, "with_replacement") == pytest.approx(1 / 11)
