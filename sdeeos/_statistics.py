"""Summary statistics of measured values: the mean, its standard error and confidence interval.

One helper for every study and analysis: non-finite values (diverged runs) are dropped, never averaged
into a NaN; correlated series (a trajectory over time) use batch means.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

__all__ = ["mean_stderr", "confidence_interval"]


def mean_stderr(values, *, n_blocks: int | None = None) -> tuple[float, float]:
    r"""Mean of the finite ``values`` and its standard error.

    Independent values: :math:`s/\sqrt n` with the ``ddof=1`` sample standard deviation ``s``.  With
    ``n_blocks`` (a correlated series): the batch-means error :math:`s_b/\sqrt{k}` of ``k = n_blocks``
    contiguous blocks, falling back to :math:`s/\sqrt n` below two values per block.  One finite value:
    ``(value, nan)``; none: ``(nan, nan)``.

    >>> mean_stderr([1.0, 2.0, 3.0, float("nan")])   # s = 1, n = 3
    (2.0, 0.5773502691896258)
    >>> mean_stderr([1.0, 1.0, 3.0, 3.0], n_blocks=2)  # block means 1 and 3: s_b = sqrt(2)
    (2.0, 1.0)
    """
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    if v.size == 1:
        return float(v[0]), float("nan")
    if n_blocks is not None and v.size >= 2 * n_blocks:
        means = np.array([b.mean() for b in np.array_split(v, n_blocks)])
        return float(v.mean()), float(means.std(ddof=1) / math.sqrt(n_blocks))
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.size))


def confidence_interval(mean: float, stderr: float, dof: int, confidence: float = 0.95) -> tuple[float, float]:
    r"""Student-t interval :math:`\bar x\pm t_{(1+c)/2,\,\nu}\,\mathrm{se}` with ``dof`` degrees of freedom.

    >>> lo, hi = confidence_interval(2.0, 0.5, 1000)   # t -> z = 1.96 for many degrees of freedom
    >>> round(hi - 2.0, 3)
    0.98
    """
    if not (dof >= 1 and math.isfinite(stderr)):
        return float("nan"), float("nan")
    t = float(stats.t.ppf(0.5 + confidence / 2, dof))
    return mean - t * stderr, mean + t * stderr
