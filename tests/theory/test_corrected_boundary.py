"""The 'corrected boundary' functions: the edge is below 2/eta and c depends on sigma."""

from __future__ import annotations

import numpy as np
import pytest

from sdeeos import OutsideDomainError
from sdeeos.theory import corrected_boundary as cb
from sdeeos.theory import self_stabilization as ss


def test_edge_below_two_and_implied_c():
    sig = np.array([0.5, 1.0, 5.0, 10.0])
    for gap in cb.GAPS:
        edge = cb.sharpness_edge(0.01, 1.0, 100.0, sig, gap=gap)
        assert np.all(edge < 2)
        c = cb.implied_c(0.01, 1.0, 100.0, sig, gap=gap)
        assert np.allclose(2 + c * np.sqrt(0.01 * sig**2), edge, rtol=1e-13, atol=0)
        assert np.all(c < 0)
    lead_c = cb.implied_c(0.01, 1.0, 100.0, sig, gap="leading")
    assert np.allclose(lead_c, -(0.01**1.5) * 100 * sig / 4, rtol=1e-13)


def test_domain():
    with pytest.raises(OutsideDomainError):
        cb.sharpness_edge(0.01, 1.0, 100.0, 20.0)
    assert np.isnan(cb.sharpness_edge(0.01, 1.0, 100.0, 20.0, outside="nan"))
    assert cb.sharpness_edge(0.01, 1.0, 100.0, 10.0) == pytest.approx(2 - 0.01 * ss.gap_exact(0.01, 1.0, 100.0, 10.0))
