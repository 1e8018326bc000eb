"""The ``sdeeos`` command line: a thin layer over the Python API.

Each subcommand lives in its own module of this package and exposes ``register(subparsers)``,
which adds its parser and sets ``func`` (called with the parsed namespace, returning an exit
status).  Only the module of the subcommand being run is imported (`SUBCOMMANDS`: name -> module and
one-line help), so ``sdeeos --help`` imports neither SymPy, Numba nor the sweep runner.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from .._errors import SdeeosError
from .._version import __version__

#: subcommand -> (its module, its one-line help); adding a subcommand is adding a module and a row here
SUBCOMMANDS = {
    "simulate": ("sdeeos._cli.simulate", "run an ensemble of trajectories of a model"),
    "derive": ("sdeeos._cli.derive", "run the SymPy derivations behind every theoretical number"),
    "study": ("sdeeos._cli.study", "run a study file (TOML): sweeps, dataset and figures"),
    "train": ("sdeeos._cli.train", "train a small network with sharpness tracking (needs the torch extra)"),
}
SUBCOMMAND_MODULES = tuple(SUBCOMMANDS)


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the option and what is wrong), like every other error."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _command_in(argv) -> str | None:
    """The subcommand named on the command line (the first word that is not an option), if any."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in SUBCOMMANDS else None
    return None


def build_parser(only: str | None = None, *, lazy: bool = False) -> argparse.ArgumentParser:
    """The parser with every subcommand's full options, or, with ``lazy``, only those of ``only``
    (the others are listed by name and help, their modules not imported)."""
    parser = _OneLineParser(
        prog="sdeeos",
        description="Edge of stability of GD and SGD: simulate, derive, study, train.",
    )
    parser.add_argument("--version", action="version", version=f"sdeeos {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        if lazy and name != only:
            sub.add_parser(name, help=help_text, add_help=False)
            continue
        importlib.import_module(module).register(sub)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command_in(argv), lazy=True)
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
