"""``sdeeos study FILE [--out DIR] [--scheduler ADDR]``: run a declarative study file.

Writes the study's dataset (NetCDF or Zarr), ``<name>_summary.json`` and its figures (PNG and PDF)
under ``--out`` (default ``out/<name>``).  Sweeps are stored point by point under ``DIR/sweeps``:
an interrupted study resumes where it stopped, and re-running a finished one recomputes nothing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import xarray as xr

from .._errors import ParameterError
from ..plotting import save_figure
from ..studies import load_study, run_study, study_kinds, study_module

__all__ = ["register"]


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "study", help="run a study file (TOML): sweeps, dataset and figures",
        description="Run a declarative study (studies/*.toml): its sweeps, dataset and figures.")
    parser.add_argument("file", nargs="?", help="study file (TOML)")
    parser.add_argument("--out", default=None, help="output directory (default: out/<name>, out/<name>-quick "
                                                    "with --quick)")
    parser.add_argument("--scheduler", default=None, metavar="ADDR",
                        help="Dask scheduler address (tcp://host:8786) of an existing cluster; 'local' "
                             "(default) starts an embedded local cluster; 'serial' runs in this process")
    parser.add_argument("--wait-lock", type=float, default=0.0, metavar="SECONDS",
                        help="if another run is writing the same --out folder, wait up to SECONDS for it "
                             "(default 0: fail at once, naming it)")
    parser.add_argument("--force", action="store_true",
                        help="recompute every point: discard the sweep points stored under --out (after the study "
                             "file's grid, model or run settings changed)")
    parser.add_argument("--quick", action="store_true", help="apply the file's [quick] overrides (a smoke test)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--list", action="store_true", help="list the study kinds and exit")
    parser.add_argument("--json", action="store_true", help="print the study's summary as JSON")
    parser.add_argument("--replot", default=None, metavar="DATASET",
                        help="redraw the figures of a saved study dataset (kinds with a plot function) and exit")
    parser.set_defaults(func=_run)


def _run(args) -> int:
    if args.list:
        for kind, doc in study_kinds().items():
            print(f"{kind:>24}: {doc}")
        return 0
    if args.replot:
        return _replot(args.replot, args.out)
    if not args.file:
        raise ParameterError("a study FILE is required (or --list, --replot DATASET)")
    cfg = load_study(args.file, quick=args.quick)
    scheduler = None if args.scheduler in (None, "local") else args.scheduler
    ds = run_study(cfg, args.out, progress=not args.no_progress, scheduler=scheduler, wait_for_lock=args.wait_lock,
                   force=args.force)
    summary = json.loads(ds.attrs.get("study_summary", "{}")) if hasattr(ds, "attrs") else {}
    if not summary:
        default = f"out/{cfg.name}" + ("-quick" if cfg.quick else "")
        print(f"study {cfg.name} ({cfg.kind}): done; outputs in {args.out or default}")
        return 0
    if args.json:
        print(json.dumps(summary))
    else:
        _print_summary(cfg, summary)
    sys.stdout.flush()
    return 0


def _print_summary(cfg, summary: dict) -> None:
    print(f"study {cfg.name} ({cfg.kind}) from {cfg.path}")
    for key, value in summary.items():
        if key in ("study", "kind", "file", "figures"):
            continue
        if isinstance(value, dict):
            print(f"  {key}:")
            for k, v in value.items():
                if isinstance(v, dict) and "slope" in v and v["slope"] is None:
                    print(f"    {k}: no slope (n={v.get('n')}: a fit needs two points)")
                elif isinstance(v, dict) and "slope" in v:
                    ci = ("" if v.get("ci_low") is None or v.get("ci_high") is None else
                          f" ± {(v['ci_high'] - v['ci_low']) / 2:.3f} ({100 * v.get('confidence', 0.95):g}% CI)")
                    th = "".join(f", {t.split('_')[1]} {v[t]:.3f}" for t in ("theory_exact_slope", "theory_leading_slope")
                                 if isinstance(v.get(t), (int, float)))
                    slope = v["slope"]
                    slope = f"{slope:.3f}" if isinstance(slope, (int, float)) else "n/a (too few points)"
                    print(f"    {k}: slope {slope}{ci}; theory{th}; n={v.get('n')}")
                else:
                    print(f"    {k}: {json.dumps(v) if isinstance(v, (dict, list)) else v}")
        else:
            print(f"  {key}: {value}")
    figs = summary.get("figures", [])
    if figs:
        print("  figures:")
        for f in figs:
            print(f"    {f}")


def _replot(path: str, out: str | None) -> int:
    try:
        ds = xr.open_dataset(path).load()
    except (OSError, ValueError) as exc:
        raise ParameterError(f"--replot needs a study dataset (NetCDF), got {path!r}: {exc}") from None
    kind = ds.attrs.get("study_kind") or ds.attrs.get("study")
    module = study_module(str(kind), path)
    if not hasattr(module, "plot"):
        raise ParameterError(f"study kind {kind!r} has no plot function; re-run the study instead")
    out_dir = out or str(Path(path).parent)
    name = str(ds.attrs.get("study", kind))
    figures = module.plot(ds)
    # one figure, or several by name suffix (as the study itself names them)
    named = figures.items() if isinstance(figures, dict) else [("", figures)]
    for suffix, fig in named:
        for p in save_figure(fig, out_dir, f"{name}_{suffix}" if suffix else name, dpi=130):
            print(f"wrote {p}")
    return 0
