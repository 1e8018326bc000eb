"""`EnsembleStat` against an independent reference: exact rational arithmetic (`fractions.Fraction`).

The mean must be the correctly rounded exact mean, and the standard error the square root of the
correctly rounded exact ``var / n`` (so ``==``, no tolerance), for any split of the values.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from sdeeos._contract import ensemble_summary
from sdeeos._exact_sums import EnsembleStat


def _reference(values) -> tuple[float, float]:
    exact = [Fraction(float(v)) for v in values]
    n = len(exact)
    mean = sum(exact) / n
    if n < 2:
        return float(mean), float("nan")
    var_over_n = sum((x - mean) ** 2 for x in exact) / (n - 1) / n
    try:
        return float(mean), math.sqrt(float(var_over_n))
    except OverflowError:
        return float(mean), float("inf")


def _cases():
    rng = np.random.default_rng(7)
    yield "normal", rng.normal(size=3000)
    yield "offset", 1e8 + rng.normal(size=2000)  # catastrophic cancellation for naive sum of squares
    yield "wide", rng.normal(size=800) * 10.0 ** rng.integers(-150, 150, size=800)
    yield "subnormal", np.array([5e-324, -1e-310, 3e-320, 2.5e-308, 0.0, -0.0])
    yield "huge", np.array([1e300, -3e299, 7e299])
    yield "one", np.array([0.1])


@pytest.mark.parametrize("name,values", list(_cases()), ids=[c[0] for c in _cases()])
def test_mean_and_stderr_are_those_of_the_exact_values(name, values):
    stat = EnsembleStat.of(values)
    mean, se = _reference(values)
    assert stat.mean() == mean
    assert stat.stderr() == se or (math.isnan(se) and math.isnan(stat.stderr()))


@pytest.mark.parametrize("cuts", [[1], [17, 400], [5, 6, 7, 2999]])
def test_any_split_merges_to_the_same_stat(cuts):
    values = np.random.default_rng(3).normal(size=3000) * 1e-3 + 7.0
    parts = np.split(values, cuts)
    merged = EnsembleStat.of(parts[-1])
    for part in parts[-2::-1]:  # merged in reverse order: order must not matter
        merged = EnsembleStat.of(part) + merged
    assert merged == EnsembleStat.of(values)
    assert EnsembleStat.from_json(merged.to_json()) == merged


def test_non_finite_values_give_what_numpy_gives_and_masks_select():
    values = np.array([1.0, np.inf, 2.0, np.nan])
    assert EnsembleStat.of(values, [True, True, True, False]).mean() == np.inf
    assert math.isnan(EnsembleStat.of(values).mean())
    assert math.isnan(EnsembleStat.of(values[:0]).mean())
    assert ensemble_summary(values, np.array([True, False, True, False])) == (1.5, 0.5)
