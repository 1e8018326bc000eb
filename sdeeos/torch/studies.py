"""Run a real-network study from its TOML file: ``python -m sdeeos.torch.studies FILE --out DIR``.

``python -m sdeeos.torch.studies --replot DIR/<study>.nc`` redraws a figure from a saved dataset.

The TOML's ``kind`` key (or ``study``) names the runner (``real_eos``, ``real_gap``, ``eos_sgd_vs_baselines``); every
other top-level key is passed to it in the config dict; ``--quick`` applies the ``[quick]`` table's
overrides (a small configuration for smoke tests).  Outputs: ``DIR/<study>.nc``, ``.png``, ``.pdf``.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time


def load_study_config(path, *, quick: bool = False) -> tuple[str, dict]:
    """``(study name, config dict)`` from a study TOML file."""
    try:
        import tomllib
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    from .._errors import ParameterError

    with open(path, "rb") as fh:
        raw = tomllib.load(fh)
    name = raw.pop("kind", None) or raw.pop("study", None)
    overrides = raw.pop("quick", {})
    if quick:
        for k, v in overrides.items():  # merged table by table, as sdeeos study does
            raw[k] = {**raw[k], **v} if isinstance(v, dict) and isinstance(raw.get(k), dict) else v
    if name is None:
        raise ParameterError(f"{path}: the TOML file must name its runner with a 'kind' key")
    return name, raw


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sdeeos.torch.studies", description=__doc__)
    parser.add_argument("config", help="study TOML file (studies/real_eos.toml, ...), or with --replot "
                        "a study's saved .nc file")
    parser.add_argument("--replot", action="store_true", help="redraw the figure from a saved dataset")
    parser.add_argument("--out", default="studies", help="output directory (default: studies)")
    parser.add_argument("--quick", action="store_true", help="apply the [quick] overrides")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    from .._errors import SdeeosError

    if args.replot:
        from ._studies import replot

        print(f"wrote {replot(args.config)} (and .pdf)")
        return 0
    try:
        name, config = load_study_config(args.config, quick=args.quick)
        from . import STUDY_RUNNERS

        if name not in STUDY_RUNNERS:
            from .._errors import ParameterError

            raise ParameterError(f"study must be one of {sorted(STUDY_RUNNERS)}, got {name!r}")
        t0 = time.perf_counter()
        STUDY_RUNNERS[name](config, pathlib.Path(args.out), progress=not args.no_progress)
        print(f"{name}: wrote {args.out}/{name}.{{nc,png,pdf}} in {time.perf_counter() - t0:.0f}s")
    except SdeeosError as exc:
        print(f"sdeeos: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
