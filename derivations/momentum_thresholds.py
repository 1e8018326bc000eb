#!/usr/bin/env python
"""Run the derivation `momentum_thresholds` (see `sdeeos derive momentum_thresholds`): prints the steps and checks; exit 1 if a check fails."""

import sys

from sdeeos.theory.derivations import main

if __name__ == "__main__":
    sys.exit(main("momentum_thresholds"))
