r"""Figure helpers shared by the studies (matplotlib, no pyplot: safe in scripts, workers and tests).

* `new_figure`, `save_figure` (PNG and PDF side by side);
* `mark_edge`: the GD stability threshold :math:`2/\eta` on a sharpness axis;
* `plot_sharpness_traces`: kept sample paths (thin) and the ensemble mean (thick);
* `plot_gap_points`: measured gaps with error bars on log-log axes;
* `heatmap`: a log-log cell map with contour levels;
* `loglog_fit`: least-squares slope in log-log coordinates with its t-based confidence interval.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import stats

__all__ = [
    "new_figure",
    "save_figure",
    "mark_edge",
    "plot_sharpness_traces",
    "plot_gap_points",
    "heatmap",
    "loglog_fit",
    "LogLogFit",
    "COLORS",
]

#: A colour cycle that stays readable in print (tab10 without the greys).
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22")


def new_figure(nrows: int = 1, ncols: int = 1, *, width: float = 6.4, height: float = 4.4, **kwargs):
    """A ``matplotlib.figure.Figure`` and its axes (squeezed like ``plt.subplots``), constrained layout."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=True, **kwargs)
    return fig, axes


def save_figure(fig, out_dir: str | os.PathLike, name: str, formats: Sequence[str] = ("png", "pdf"),
                dpi: int = 150) -> list[Path]:
    """Write ``out_dir/name.<fmt>`` for each format; return the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        p = out_dir / f"{name}.{fmt}"
        tmp = p.with_name(f".{p.name}.tmp.{fmt}")
        fig.savefig(tmp, dpi=dpi, format=fmt)
        os.replace(tmp, p)
        paths.append(p)
    return paths


def mark_edge(ax, eta: float, *, label: bool = True, **kwargs) -> None:
    r"""Horizontal line at the GD stability threshold :math:`2/\eta`."""
    style = dict(color="black", lw=1.0, ls="--", zorder=1)
    style.update(kwargs)
    ax.axhline(2.0 / eta, **style)
    if label:
        ax.annotate(r"$2/\eta$", xy=(1.0, 2.0 / eta), xycoords=("axes fraction", "data"),
                    xytext=(3, 0), textcoords="offset points", va="center", ha="left", fontsize=9)


def plot_sharpness_traces(ax, steps, paths, mean=None, *, color="C0", label=None, alpha=0.35,
                          max_paths: int = 3) -> None:
    """Sample paths (thin) and the ensemble mean (thick) of the sharpness against the step."""
    steps = np.asarray(steps)
    if paths is not None:
        paths = np.atleast_2d(np.asarray(paths))
        for i, p in enumerate(paths[:max_paths]):
            ok = np.isfinite(p)
            ax.plot(steps[ok], p[ok], color=color, lw=0.5, alpha=alpha,
                    label=None if (mean is not None or i) else label)
    if mean is not None:
        mean = np.asarray(mean)
        ok = np.isfinite(mean)
        ax.plot(steps[ok], mean[ok], color=color, lw=1.6, label=label)


def plot_gap_points(ax, x, gap, stderr=None, *, color="C0", label=None, converged=None, marker="o", **kwargs):
    """Measured gaps (positive ones: log axes) with error bars; unconverged points drawn hollow."""
    x, gap = np.asarray(x, float), np.asarray(gap, float)
    err = None if stderr is None else np.asarray(stderr, float)
    ok = np.isfinite(gap) & (gap > 0) & np.isfinite(x) & (x > 0)
    conv = np.ones_like(ok) if converged is None else np.asarray(converged, bool)
    for sel, face, lab in ((ok & conv, color, label), (ok & ~conv, "white", None)):
        if not sel.any():
            continue
        ax.errorbar(x[sel], gap[sel], yerr=None if err is None else err[sel], fmt=marker, color=color,
                    mfc=face, mec=color, ms=5, capsize=2, lw=1, label=lab, zorder=3, **kwargs)


def heatmap(ax, x, y, z, *, cmap="viridis", norm=None, levels=None, level_labels=None, contour_color="white",
            colorbar_label=None, fig=None):
    """Cells centred on the (log-spaced) grid ``x`` (columns) by ``y`` (rows), ``z[y, x]``, on log axes.

    ``levels`` draws contour lines of ``z`` (e.g. 0.05, 0.1, 0.25), labelled with ``level_labels``.
    """
    x, y, z = np.asarray(x, float), np.asarray(y, float), np.ma.masked_invalid(np.asarray(z, float))

    def edges(c):
        lc = np.log(c)
        mid = (lc[1:] + lc[:-1]) / 2 if c.size > 1 else np.array([])
        first = lc[0] - (mid[0] - lc[0] if mid.size else 0.5)
        last = lc[-1] + (lc[-1] - mid[-1] if mid.size else 0.5)
        return np.exp(np.concatenate([[first], mid, [last]]))

    mesh = ax.pcolormesh(edges(x), edges(y), z, cmap=cmap, norm=norm, shading="flat")
    ax.set_xscale("log")
    ax.set_yscale("log")
    if levels is not None and z.count() > 3 and x.size > 1 and y.size > 1:
        cs = ax.contour(x, y, z, levels=sorted(levels), colors=contour_color, linewidths=1.2)
        fmt = dict(zip(sorted(levels), level_labels or [f"{v:g}" for v in sorted(levels)]))
        ax.clabel(cs, fmt=fmt, fontsize=8)
    if fig is not None:
        cb = fig.colorbar(mesh, ax=ax)
        if colorbar_label:
            cb.set_label(colorbar_label)
    return mesh


@dataclasses.dataclass(frozen=True)
class LogLogFit:
    """``log y = intercept + slope * log x`` by least squares; CI from Student's t with n - 2 dof."""

    slope: float
    intercept: float
    stderr: float
    ci_low: float
    ci_high: float
    confidence: float
    r_squared: float
    n: int

    def predict(self, x):
        return np.exp(self.intercept) * np.asarray(x, float) ** self.slope

    def as_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in dataclasses.asdict(self).items()}

    def __str__(self) -> str:
        return (f"slope {self.slope:.3f} ± {(self.ci_high - self.ci_low) / 2:.3f} "
                f"({100 * self.confidence:g}% CI, n={self.n}, R²={self.r_squared:.4f})")


def loglog_fit(x, y, confidence: float = 0.95) -> LogLogFit:
    """Fit a power law to the positive, finite points of ``(x, y)``.

    The interval is the ordinary least-squares one: it measures how well a straight line describes
    the points (their scatter about it), not the statistical error of each point.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    lx, ly = np.log(x[ok]), np.log(y[ok])
    n = int(ok.sum())
    nan = float("nan")
    if n < 2:
        return LogLogFit(nan, nan, nan, nan, nan, confidence, nan, n)
    sxx = float(np.sum((lx - lx.mean()) ** 2))
    slope = float(np.sum((lx - lx.mean()) * (ly - ly.mean())) / sxx)
    intercept = float(ly.mean() - slope * lx.mean())
    resid = ly - (intercept + slope * lx)
    sst = float(np.sum((ly - ly.mean()) ** 2))
    r2 = 1.0 - float(np.sum(resid**2)) / sst if sst > 0 else 1.0
    if n < 3:
        return LogLogFit(slope, intercept, nan, nan, nan, confidence, r2, n)
    se = math.sqrt(float(np.sum(resid**2)) / (n - 2) / sxx)
    t = float(stats.t.ppf(0.5 + confidence / 2, n - 2))
    return LogLogFit(slope, intercept, se, slope - t * se, slope + t * se, confidence, r2, n)
