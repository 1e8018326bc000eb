"""Deprecated: ``python -m sdeeos.torch.studies FILE`` forwards to ``sdeeos study FILE``; ``--replot
DATASET`` redraws a real-network study's figure (``sdeeos study --replot DATASET``)."""

from __future__ import annotations

import sys

from .._cli import main as cli_main
from .._deprecation import warn_moved
from ..studies import load_study

__all__ = ["load_study_config", "main"]

warn_moved("sdeeos.torch.studies", "sdeeos.studies (and `sdeeos study FILE`)")


def load_study_config(path, *, quick: bool = False) -> tuple[str, dict]:
    """Deprecated: `sdeeos.studies.load_study` (validated, with file:line in errors)."""
    cfg = load_study(path, quick=quick)
    return cfg.kind, {k: v for k, v in cfg.items() if k not in ("kind", "name")}


def main(argv=None) -> int:
    """Deprecated: ``sdeeos study FILE [--out DIR] [--quick] [--no-progress]`` (and ``--replot DATASET``)."""
    warn_moved("python -m sdeeos.torch.studies", "sdeeos study")
    args = list(sys.argv[1:] if argv is None else argv)
    if "--out" not in args and "--replot" not in args:
        args += ["--out", "studies"]  # the old default
    if "--replot" in args:
        args.remove("--replot")
        args = ["--replot", *args]
    return cli_main(["study", *args])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
