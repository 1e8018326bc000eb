#!/usr/bin/env python
"""Run the derivation `mean_square_1d` (see `sdeeos derive mean_square_1d`): prints the steps and checks; exit 1 if a check fails."""

import sys

from sdeeos.theory.derivations import main

if __name__ == "__main__":
    sys.exit(main("mean_square_1d"))
