#!/usr/bin/env python
"""Run the derivation `gd_quadratic` (see `sdeeos derive gd_quadratic`): prints the steps and checks; exit 1 if a check fails."""

import sys

from sdeeos.theory.derivations import main

if __name__ == "__main__":
    sys.exit(main("gd_quadratic"))
