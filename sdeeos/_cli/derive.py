"""``sdeeos derive``: list the SymPy derivations, run one (or all), print steps as text or LaTeX.

Exit status: 0 when every check passed, 1 when a check failed, 2 for an unknown derivation name.
"""

from __future__ import annotations

import os
import sys

from .._errors import ParameterError
from ..theory import derivations as reg


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "derive",
        help="run the SymPy derivations behind every theoretical number",
        description="List the derivations (--list, or no argument), run one (NAME) or all ('all' / --all). "
                    "Each prints its steps and checks; a failed check exits with status 1.",
    )
    parser.add_argument("name", nargs="?", metavar="NAME", help="derivation to run ('all' runs every one)")
    parser.add_argument("--list", action="store_true", help="list the derivations and exit (as with no NAME)")
    parser.add_argument("--all", action="store_true", dest="run_all", help="run every derivation")
    parser.add_argument("--latex", action="store_true", help="print steps as LaTeX (Markdown display math)")
    parser.set_defaults(func=_run)


def _run(args) -> int:
    try:
        return _run_inner(args)
    except BrokenPipeError:  # output piped into e.g. `head`: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def _run_inner(args) -> int:
    if args.run_all and args.name not in (None, "all"):
        raise ParameterError(f"give a derivation NAME or --all, not both (got NAME {args.name!r} and --all)")
    if args.list and (args.run_all or args.name is not None):
        raise ParameterError("--list lists the derivations; give no NAME and no --all with it")
    name = "all" if args.run_all else args.name
    if name is None or args.list:
        print("Derivations (run one with `sdeeos derive NAME [--latex]`, all with `sdeeos derive --all`):")
        print(reg.list_text())
        return 0
    if name == "all":
        results = reg.run_all(latex=args.latex, stream=sys.stdout)
        failed = [d.name for d in results if not d.passed]
        n_checks = sum(len(d.checks) for d in results)
        if failed:
            print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
            return 1
        print(f"all {len(results)} derivations passed ({n_checks} checks)")
        return 0
    if name not in reg.REGISTRY:
        print(f"known derivations:\n{reg.list_text()}", file=sys.stderr)
        raise reg.unknown_name_error(name)  # one-line error, exit status 2 (sdeeos._cli.main)
    return 0 if reg.run(name, latex=args.latex, stream=sys.stdout).passed else 1
