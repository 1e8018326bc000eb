"""The ``sdeeos`` command line: a thin layer over the Python API.

Each subcommand lives in its own module of this package and exposes ``register(subparsers)``,
which adds its parser and sets ``func`` (called with the parsed namespace, returning an exit
status).  Modules must stay cheap to import: heavy imports (torch, dask) go inside ``func``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from .._errors import SdeeosError
from .._version import __version__

# One entry per subcommand module; adding a subcommand is adding a module and a name here.
SUBCOMMAND_MODULES = ("simulate", "derive", "study", "train")


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the option and what is wrong), like every other error."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="sdeeos",
        description="Edge of stability of GD and SGD: simulate, derive, study, train.",
    )
    parser.add_argument("--version", action="version", version=f"sdeeos {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{name}":
                continue  # subcommand not built yet
            raise
        module.register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except SdeeosError as exc:
        # Bad input: one line, no traceback, exit status 2 (argparse's convention).
        print(f"sdeeos: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sdeeos: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # output piped into e.g. `head`: stop quietly, like other command-line tools
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
