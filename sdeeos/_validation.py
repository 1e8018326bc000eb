"""Small, uniform parameter checks: every message names the parameter and its allowed range."""

from __future__ import annotations

import math
import numbers

from ._errors import ParameterError

__all__ = [
    "check_real",
    "check_positive",
    "check_nonnegative",
    "check_int",
    "check_choice",
]


def check_real(name: str, value, *, low=None, high=None, low_open=False, high_open=False) -> float:
    """Return ``float(value)`` after checking it is a finite real in the stated interval."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ParameterError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ParameterError(f"{name} must be finite, got {value!r}")
    # infinities are never accepted: an open end is printed as open
    lo_br = "(" if low_open or low is None else "["
    hi_br = ")" if high_open or high is None else "]"
    rng = f"{lo_br}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi_br}"
    if low is not None and (value < low or (low_open and value == low)):
        raise ParameterError(f"{name} must be in {rng}, got {value!r}")
    if high is not None and (value > high or (high_open and value == high)):
        raise ParameterError(f"{name} must be in {rng}, got {value!r}")
    return value


def check_positive(name: str, value) -> float:
    """Finite and > 0."""
    return check_real(name, value, low=0.0, low_open=True)


def check_nonnegative(name: str, value) -> float:
    """Finite and >= 0."""
    return check_real(name, value, low=0.0)


def check_int(name: str, value, *, low=None, high=None) -> int:
    """An integer (not a bool) in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ParameterError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    rng = f"{'(-inf' if low is None else f'[{low}'}, {'inf)' if high is None else f'{high}]'}"
    if (low is not None and value < low) or (high is not None and value > high):
        raise ParameterError(f"{name} must be an integer in {rng}, got {value!r}")
    return value


def check_choice(name: str, value, choices) -> str:
    """One of ``choices``."""
    if value not in choices:
        raise ParameterError(f"{name} must be one of {sorted(choices)!r}, got {value!r}")
    return value
