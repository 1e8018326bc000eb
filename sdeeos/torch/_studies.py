"""Deprecated: the real-network study kinds are `sdeeos.studies.real_eos`, `.real_gap` and
`.eos_sgd_vs_baselines`; the statistics and fit helpers are `sdeeos._statistics.mean_stderr` and
`sdeeos.plotting.loglog_fit`."""

from __future__ import annotations

from .._deprecation import warn_moved
from .._statistics import mean_stderr
from ..plotting import loglog_fit
from ..studies import eos_sgd_vs_baselines as _baselines_kind
from ..studies import real_eos as _real_eos_kind
from ..studies import real_gap as _real_gap_kind

__all__ = ["STUDY_RUNNERS", "STUDY_PLOTTERS", "real_eos", "real_gap", "eos_sgd_vs_baselines", "plot_real_eos",
           "plot_real_gap", "plot_eos_sgd_vs_baselines", "block_mean_stderr", "loglog_slope"]

warn_moved("sdeeos.torch._studies", "sdeeos.studies")

real_eos, plot_real_eos = _real_eos_kind.real_eos, _real_eos_kind.plot
real_gap, plot_real_gap = _real_gap_kind.real_gap, _real_gap_kind.plot
eos_sgd_vs_baselines, plot_eos_sgd_vs_baselines = _baselines_kind.eos_sgd_vs_baselines, _baselines_kind.plot
STUDY_RUNNERS = {"real_eos": real_eos, "real_gap": real_gap, "eos_sgd_vs_baselines": eos_sgd_vs_baselines}
STUDY_PLOTTERS = {"real_eos": plot_real_eos, "real_gap": plot_real_gap,
                  "eos_sgd_vs_baselines": plot_eos_sgd_vs_baselines}


def block_mean_stderr(values, n_blocks: int = 5) -> tuple[float, float]:
    """Deprecated: `sdeeos._statistics.mean_stderr` with ``n_blocks``."""
    return mean_stderr(values, n_blocks=n_blocks)


def loglog_slope(x, y) -> tuple[float, float, float]:
    """Deprecated: `sdeeos.plotting.loglog_fit` (slope, intercept, R²)."""
    fit = loglog_fit(x, y)
    return fit.slope, fit.intercept, fit.r_squared
