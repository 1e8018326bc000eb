#!/usr/bin/env python
"""Run the derivation `gap_beyond_closure` (see `sdeeos derive gap_beyond_closure`): prints the steps and checks; exit 1 if a check fails."""

import sys

from sdeeos.theory.derivations import main

if __name__ == "__main__":
    sys.exit(main("gap_beyond_closure"))
