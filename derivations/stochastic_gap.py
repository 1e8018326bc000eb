#!/usr/bin/env python
"""Run the derivation `stochastic_gap` (see `sdeeos derive stochastic_gap`): prints the steps and checks; exit 1 if a check fails."""

import sys

from sdeeos.theory.derivations import main

if __name__ == "__main__":
    sys.exit(main("stochastic_gap"))
