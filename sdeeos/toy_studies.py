"""Deprecated: the toy study kinds are `sdeeos.studies.bifurcation`, `.sde_order` and `.sde_vs_sgd`;
``python -m sdeeos.toy_studies FILE`` forwards to ``sdeeos study FILE``."""

from __future__ import annotations

import sys

from ._cli import main as cli_main
from ._deprecation import warn_moved
from .studies import bifurcation, sde_order, sde_vs_sgd

__all__ = ["run_bifurcation", "run_sde_order", "run_sde_vs_sgd", "main"]

warn_moved("sdeeos.toy_studies", "sdeeos.studies (and `sdeeos study FILE`)")

run_bifurcation = bifurcation.run
run_sde_order = sde_order.run
run_sde_vs_sgd = sde_vs_sgd.run


def main(argv=None) -> int:
    """Deprecated: ``sdeeos study FILE [--out DIR] [--no-progress]``."""
    warn_moved("python -m sdeeos.toy_studies", "sdeeos study")
    return cli_main(["study", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
