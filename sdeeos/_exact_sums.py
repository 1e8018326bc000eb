r"""Exact ensemble sums: the mean and standard error of per-trajectory values, independent of how
the trajectories were split.

A finite float64 is :math:`x = M\,2^{E}` with an integer :math:`|M| < 2^{53}`, so
:math:`\sum_i x_i` and :math:`\sum_i x_i^2` are integers times :math:`2^{-S}` (:math:`S = 2300`
covers the squares of subnormals, :math:`2^{-2254}`).  `EnsembleStat` holds the count and these two
integers exactly (Python integers); merging two stats adds them, so any partition of the
trajectories (shards, chunks, one piece) gives the same stat, and

.. math::  \bar x = \mathrm{fl}\Big(\frac{\sum x_i}{n}\Big), \qquad
           \mathrm{se} = \sqrt{\mathrm{fl}\Big(\frac{\sum x_i^2 - (\sum x_i)^2/n}{n(n-1)}\Big)}

are the correctly rounded mean and (within one rounding of the square root) the standard error
of the exact values, whatever the summation order.  One compiled pass adds the integer
significands, cut into pieces, into int64 buckets per exponent; the pieces are small enough that
no bucket can overflow, and the buckets become the two Python integers at the end.

Non-finite values (an alive trajectory that overflowed) are not summed exactly: their float sum
is kept and becomes the mean (``inf``, ``-inf`` or ``nan``, as ``numpy.mean`` would give).

>>> s = EnsembleStat.of(np.array([0.1, 0.2, 0.3]))
>>> s.mean() == 0.2, s.mean() == float(np.mean([0.1, 0.2, 0.3]))   # exact vs left-to-right rounding
(True, False)
>>> a, b = EnsembleStat.of(np.array([0.1])), EnsembleStat.of(np.array([0.2, 0.3]))
>>> (a + b) == s
True
>>> EnsembleStat.of(np.array([1.0, 2.0, 3.0])).stderr()   # s = 1, n = 3: 1/sqrt(3) = 0.57735026918962576...
0.5773502691896257
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import numpy as np
from numba import njit

__all__ = ["EnsembleStat"]

_S = 2300            # sums are integers times 2**-_S
_BITS = 53           # significand bits of float64
_LIN = 27            # linear pieces: |piece| < 2**27, so 2**36 of them add exactly in int64
_SQ = 14             # square pieces: a_j a_k < 2**28, at most four per group: < 2**30 (2**33 adds)
_MAX_BLOCK = 1 << 32  # values per kernel call, well inside both limits
_N_EXP = 2046        # exponent slots: x = M * 2**(slot - 1074)


@njit(cache=True, nogil=True)
def _accumulate(bits, lin, sq):  # pragma: no cover - compiled
    """Add every finite value (IEEE bits) to per-exponent integer buckets: ``lin[slot, p]`` holds
    the sums of the signed 27-bit pieces of M, ``sq[2 slot, s]`` the sums of the products of 14-bit
    pieces of |M| whose indices add up to ``s`` (M**2 = sum_s 2**(14 s) sq[., s])."""
    m27 = (1 << 27) - 1
    m14 = (1 << 14) - 1
    for i in range(bits.size):
        u = bits[i]
        field = np.int64((u >> np.uint64(52)) & np.uint64(0x7FF))
        if field == 0x7FF:
            continue
        big = np.int64(u & np.uint64((1 << 52) - 1))
        slot = 0
        if field > 0:
            big |= np.int64(1) << 52
            slot = field - 1
        if big == 0:
            continue
        lo = big & m27
        hi = big >> 27
        if (u >> np.uint64(63)) != 0:
            lin[slot, 0] -= lo
            lin[slot, 1] -= hi
        else:
            lin[slot, 0] += lo
            lin[slot, 1] += hi
        a0 = big & m14
        a1 = (big >> 14) & m14
        a2 = (big >> 28) & m14
        a3 = big >> 42
        r = 2 * slot
        sq[r, 0] += a0 * a0
        sq[r, 1] += 2 * a0 * a1
        sq[r, 2] += 2 * a0 * a2 + a1 * a1
        sq[r, 3] += 2 * (a0 * a3 + a1 * a2)
        sq[r, 4] += 2 * a1 * a3 + a2 * a2
        sq[r, 5] += 2 * a2 * a3
        sq[r, 6] += a3 * a3


def _exact_sums(x: np.ndarray) -> tuple[int, int]:
    """``(sum x, sum x**2)`` of the finite ``x``, each times ``2**_S``, exactly."""
    s1 = s2 = 0
    bits_all = np.ascontiguousarray(x, dtype=np.float64).view(np.uint64)
    for start in range(0, bits_all.size, _MAX_BLOCK):
        lin = np.zeros((_N_EXP, 2), np.int64)
        sq = np.zeros((2 * _N_EXP, 7), np.int64)
        _accumulate(bits_all[start:start + _MAX_BLOCK], lin, sq)
        # slot j holds multiples of 2**(j - 1074), row r of sq multiples of 2**(r - 2148)
        for j, p in zip(*np.nonzero(lin)):
            s1 += int(lin[j, p]) << (int(j) - 1074 + _LIN * int(p) + _S)
        for r, k in zip(*np.nonzero(sq)):
            s2 += int(sq[r, k]) << (int(r) - 2148 + _SQ * int(k) + _S)
    return s1, s2


@dataclasses.dataclass(frozen=True)
class EnsembleStat:
    """Count and exact sums of per-trajectory values; merge with ``+`` (any order, exactly)."""

    n: int = 0              # values counted (finite or not)
    sum: int = 0            # exact sum of the finite values, times 2**2300
    sumsq: int = 0          # exact sum of their squares, times 2**2300
    n_special: int = 0      # non-finite values among the n
    special: float = 0.0    # their float sum (inf, -inf or nan)

    @classmethod
    def of(cls, values, counted=None) -> "EnsembleStat":
        """The stat of ``values[counted]`` (``counted``: a boolean mask, default every value)."""
        v = np.asarray(values, dtype=np.float64).ravel()
        if counted is not None:
            v = v[np.asarray(counted, dtype=bool).ravel()]
        finite = np.isfinite(v)
        s1, s2 = _exact_sums(v[finite])
        n_special = int(v.size - np.count_nonzero(finite))
        special = float(np.sum(v[~finite])) if n_special else 0.0
        return cls(int(v.size), s1, s2, n_special, special)

    def __add__(self, other: "EnsembleStat") -> "EnsembleStat":
        return EnsembleStat(self.n + other.n, self.sum + other.sum, self.sumsq + other.sumsq,
                            self.n_special + other.n_special, self.special + other.special)

    def mean(self) -> float:
        """The correctly rounded mean (``nan`` without values)."""
        if self.n == 0:
            return float("nan")
        if self.n_special:
            return float(self.special)
        return float(Fraction(self.sum, self.n << _S))

    def stderr(self) -> float:
        r"""``std(ddof=1) / sqrt(n)`` of the exact values (``nan`` below two values or with a non-finite one)."""
        if self.n < 2 or self.n_special:
            return float("nan")
        n = self.n
        # n * sum((x - mean)^2) = n sum x^2 - (sum x)^2, in units of 2**-(2 S)
        m2n = (n * self.sumsq << _S) - self.sum * self.sum
        try:
            return math.sqrt(float(Fraction(m2n, (n * n * (n - 1)) << (2 * _S))))
        except OverflowError:  # values near the float64 range: the variance itself overflows
            return float("inf")

    def to_json(self) -> list:
        """A JSON-ready form (integers as decimal strings); `from_json` reads it back exactly."""
        return [self.n, str(self.sum), str(self.sumsq), self.n_special, repr(self.special)]

    @classmethod
    def from_json(cls, item: list) -> "EnsembleStat":
        n, s1, s2, n_special, special = item
        return cls(int(n), int(s1), int(s2), int(n_special), float(special))
