r"""Stationarity gate for plateau quantities of real-network runs (λ_max, batch sharpness, K, loss, σ_u²).

A series :math:`q_1,\dots,q_N` measured on a window (every few steps, so autocorrelated) is split into
two halves; each half into ``n_blocks`` contiguous blocks (batch means, `sdeeos._statistics.mean_stderr`).
With half means :math:`\bar q_1,\bar q_2` and their batch-means standard errors :math:`s_1,s_2`:

.. math:: d=\bar q_2-\bar q_1,\qquad \mathrm{se}_d=\sqrt{s_1^2+s_2^2},\qquad z=d/\mathrm{se}_d .

The quantity is **stationary** when both

1. :math:`|z|\le z_{\max}` (default 2): the drift is within 2 standard errors, and
2. :math:`|d|\le f\,|g|` (default :math:`f=0.1`) for the reference ``gap`` :math:`g` the caller compares
   the quantity with (e.g. :math:`2/\eta-\bar\lambda_{\max}`); skipped when no gap is given.

**False-alarm rate.**  If the block means are independent normal variables with one variance (blocks
much longer than the correlation time), the two halves have equal numbers of blocks :math:`k`, and
:math:`z` is exactly the pooled two-sample Student statistic with :math:`2k-2` degrees of freedom, so a
stationary series fails test 1 with probability :math:`P(|t_{2k-2}|>z_{\max})`
(`false_alarm_rate`; 0.0608 for k = 10, 2 SE).

**Power.**  A linear drift of total size :math:`D` over the window gives :math:`\mathbb E d=D/2`; it also
spreads the :math:`k` block means of a half evenly over :math:`D/2` (sample variance
:math:`(D/2k)^2k(k+1)/12`), so even a noiseless drift has :math:`|z|=k\sqrt{6/(k+1)}` (7.39 at k = 10)
and is flagged.

**Slow drifts.**  Two neighbouring windows see a drift only through its size over one window.  A drift
slower than the windows' noise passes, however long it goes on: on a small network a noise kernel
rising by 0.13 per :math:`10^4` steps passed at 2 000-step windows, and the run later diverged.
`windowed_stationarity` therefore also compares the last window with the one ``span`` windows earlier.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import stats

from ._statistics import mean_stderr
from ._validation import check_int, check_positive

__all__ = ["StationarityVerdict", "stationarity", "windowed_stationarity", "false_alarm_rate"]


@dataclasses.dataclass(frozen=True)
class StationarityVerdict:
    """The gate's result for one quantity on one window.

    ``mean``/``stderr``: the window mean and its batch-means error (``2 n_blocks`` blocks); ``drift``
    :math:`d`, ``drift_stderr`` :math:`\\mathrm{se}_d`, ``z``; ``reason``: empty when stationary, else
    which test failed (``"drift > z_max SE"``, ``"drift > f |gap|"``, ``"too few values"``).
    """

    stationary: bool
    mean: float
    stderr: float
    drift: float
    drift_stderr: float
    z: float
    reason: str


def false_alarm_rate(n_blocks: int, z_max: float = 2.0) -> float:
    r""":math:`P(|t_{2k-2}|>z_{\max})`: how often a stationary series with independent block means fails test 1.

    >>> round(false_alarm_rate(10), 4)
    0.0608
    """
    k = check_int("n_blocks", n_blocks, low=2)
    return float(2 * stats.t.sf(check_positive("z_max", z_max), 2 * k - 2))


def stationarity(values, *, gap: float | None = None, n_blocks: int = 10, z_max: float = 2.0,
                 gap_fraction: float = 0.1) -> StationarityVerdict:
    r"""Is the series ``values`` (one window, in time order) stationary?  See the module doc.

    Non-finite values are dropped (`mean_stderr`); a window with fewer than ``2 n_blocks`` finite
    values per half is not stationary (``reason="too few values"``).

    >>> v = stationarity([1.0, 2.0] * 20, n_blocks=2)   # every block mean is 1.5: no drift, no spread
    >>> v.stationary, v.drift, v.mean
    (True, 0.0, 1.5)
    >>> stationarity(np.arange(40.0), n_blocks=2).reason
    'drift > 2 SE'
    >>> noisy = [0.0] * 10 + [3.0] * 10 + [0.1] * 10 + [3.1] * 10   # d = 0.1, se_d = 2.1: z = 0.05
    >>> stationarity(noisy, n_blocks=2).stationary, stationarity(noisy, n_blocks=2, gap=0.5).reason
    (True, 'drift > 0.1 |gap|')
    """
    k = check_int("n_blocks", n_blocks, low=2)
    z_max = check_positive("z_max", z_max)
    v = np.asarray(values, dtype=float).ravel()
    half = v.size // 2
    first, second = v[:half], v[v.size - half:]
    nan = float("nan")
    if min(np.isfinite(first).sum(), np.isfinite(second).sum()) < 2 * k:
        m, se = mean_stderr(v)
        return StationarityVerdict(False, m, se, nan, nan, nan, "too few values")
    m1, s1 = mean_stderr(first, n_blocks=k)
    m2, s2 = mean_stderr(second, n_blocks=k)
    m, se = mean_stderr(v[v.size - 2 * half:], n_blocks=2 * k)
    d = m2 - m1
    se_d = math.hypot(s1, s2)
    z = d / se_d if se_d > 0 else (0.0 if d == 0 else math.copysign(math.inf, d))
    reason = ""
    if not abs(z) <= z_max:
        reason = f"drift > {z_max:g} SE"
    elif gap is not None and not abs(d) <= gap_fraction * abs(float(gap)):
        reason = f"drift > {gap_fraction:g} |gap|"
    return StationarityVerdict(not reason, m, se, d, se_d, z, reason)


def windowed_stationarity(values, window: int, *, span: int = 3, gap: float | None = None, n_blocks: int = 10,
                          z_max: float = 2.0, gap_fraction: float = 0.1) -> StationarityVerdict:
    r"""The gate on a series measured window by window (``window`` values each, oldest first).

    1. `stationarity` of the last two windows (the windows are the halves: the drift is window to window);
    2. for ``span > 1``, the same tests on the window ``span`` windows before the last one against the last
       one: a drift that stays within the noise from one window to the next adds up over ``span`` of them.
       With fewer than ``span + 1`` windows the series is not stationary (yet).

    The returned mean, error and drift are those of test 1; ``reason`` says which test failed.

    >>> flat = [1.0, 2.0] * 40                       # 4 windows of 20 values, no drift
    >>> windowed_stationarity(flat, 20, span=3, n_blocks=2).stationary
    True
    >>> windowed_stationarity(flat[:60], 20, span=3, n_blocks=2).reason
    'fewer than 4 windows'
    """
    w = check_int("window", window, low=1)
    k = check_int("span", span, low=1)
    v = np.asarray(values, dtype=float).ravel()
    last_two = stationarity(v[-2 * w:], gap=gap, n_blocks=n_blocks, z_max=z_max, gap_fraction=gap_fraction)
    if k == 1 or not last_two.stationary:
        return last_two
    if v.size < (k + 1) * w:
        return dataclasses.replace(last_two, stationary=False, reason=f"fewer than {k + 1} windows")
    apart = np.concatenate([v[-(k + 1) * w:-k * w], v[-w:]])
    far = stationarity(apart, gap=gap, n_blocks=n_blocks, z_max=z_max, gap_fraction=gap_fraction)
    if far.stationary:
        return last_two
    return dataclasses.replace(last_two, stationary=False, reason=f"{far.reason} over {k} windows")
