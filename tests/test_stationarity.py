"""The stationarity gate on synthetic series with a known drift: AR(1) noise plus a linear trend.

AR(1) with coefficient phi = 0.5 and unit innovations has long-run variance 1/(1 - phi)^2 = 4, so a
block of L = 100 points has a mean of standard deviation 0.2 (blocks >> correlation time 1/(1 - phi)).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.signal import lfilter

from sdeeos._errors import ParameterError
from sdeeos._stationarity import false_alarm_rate, stationarity, windowed_stationarity

PHI, N, K = 0.5, 2000, 10  # 2 halves x 10 blocks of 100 points


def _series(seed: int, total_drift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    e = rng.standard_normal(N + 200)
    x = lfilter([1.0], [1.0, -PHI], e)[200:]  # burn-in drops the start-up transient
    return 3.0 + x + total_drift * np.arange(N) / (N - 1)


def test_zero_drift_fails_at_the_stated_false_alarm_rate():
    n = 1000
    flagged = sum(not stationarity(_series(s), n_blocks=K).stationary for s in range(n))
    p = false_alarm_rate(K)  # P(|t_18| > 2) = 0.0608
    se = math.sqrt(p * (1 - p) / n)  # binomial standard error of the observed rate
    assert abs(flagged / n - p) < 4 * se, (flagged / n, p)


def test_drift_well_above_its_standard_error_fails_and_is_measured():
    # D = 2: E d = 1; se_d = sqrt(0.089^2 + (1/7.39)^2) = 0.16 (noise and the trend's spread): z ~ 6
    verdicts = [stationarity(_series(1000 + s, total_drift=2.0), n_blocks=K) for s in range(50)]
    assert all(not v.stationary and v.reason == "drift > 2 SE" for v in verdicts)
    d = np.array([v.drift for v in verdicts])
    # the half means of a linear trend differ by exactly D/2 in expectation; noise: sd 0.089 per series
    assert abs(d.mean() - 1.0) < 4 * 0.089 / math.sqrt(d.size)
    se = np.array([v.drift_stderr for v in verdicts])
    # noise (block-mean sd 0.2) and the trend's spread (module doc) add in quadrature
    expected = math.hypot(0.2 * math.sqrt(2 / K), (1.0 / K) * math.sqrt(2 * (K + 1) / 12))
    assert abs(se.mean() - expected) < 0.1 * expected  # one se_d scatters by ~1/sqrt(2*18) = 17 %: 4 SE of 50


def test_noiseless_linear_trend_gives_the_closed_form_z():
    v = stationarity(np.linspace(0.0, 1.0, 400), n_blocks=K)
    # k equally spaced block means per half, spacing d/k: z = k sqrt(6/(k+1)) exactly
    assert not v.stationary
    assert v.drift == pytest.approx(0.5 * 400 / 399, rel=1e-12)
    assert v.z == pytest.approx(K * math.sqrt(6 / (K + 1)), rel=1e-9)


def test_gap_condition_binds_only_where_the_drift_is_large_against_the_gap():
    s = _series(7, total_drift=0.1)  # E d = 0.05: within 2 SE (0.09) most of the time
    v = stationarity(s, n_blocks=K)
    assert v.stationary
    assert stationarity(s, n_blocks=K, gap=100.0).stationary  # 0.1 * gap = 10 >> d
    small = stationarity(s, n_blocks=K, gap=abs(v.drift) / 0.2)  # 0.1 * gap = d / 2 < d
    assert not small.stationary and small.reason == "drift > 0.1 |gap|"


def test_too_short_windows_and_bad_input():
    assert stationarity(np.ones(30), n_blocks=K).reason == "too few values"
    with pytest.raises(ParameterError, match="n_blocks"):
        stationarity(np.ones(100), n_blocks=1)
    with pytest.raises(ParameterError, match="z_max"):
        stationarity(np.ones(100), n_blocks=2, z_max=0.0)


def _staircase(levels, pattern=(1.0, -1.0, 1.0, -1.0, 0.0), per_block=2):
    """One window per level: its 5 block means are level + pattern (sample sd 1, so the half-mean SE is
    1/sqrt(5) and the SE of a window-to-window drift is sqrt(2/5) = 0.632)."""
    return np.concatenate([np.repeat(level + np.asarray(pattern), per_block) for level in levels])


def test_a_drift_too_slow_for_neighbouring_windows_is_caught_over_several():
    step = np.sqrt(2 / 5)                       # one SE of the drift per window: z = 1 between neighbours
    drifting = _staircase(step * np.arange(4))  # z = 3 from the first to the last of 4 windows
    assert windowed_stationarity(drifting, 10, span=1, n_blocks=5).stationary
    v = windowed_stationarity(drifting, 10, span=3, n_blocks=5)
    assert not v.stationary and v.reason == "drift > 2 SE over 3 windows"
    assert v.z == pytest.approx(1.0, rel=1e-12)  # the reported drift is the neighbouring windows'
    level = _staircase([0.0, step, 0.0, step])   # up and down: no drift over 3 windows
    assert windowed_stationarity(level, 10, span=3, n_blocks=5).stationary


def test_windowed_gate_needs_span_plus_one_windows():
    flat = _staircase([0.0, 0.0, 0.0])
    assert windowed_stationarity(flat, 10, span=3, n_blocks=5).reason == "fewer than 4 windows"
    assert windowed_stationarity(flat, 10, span=2, n_blocks=5).stationary
