#!/usr/bin/env python
"""Run the derivation `corrected_boundary` (see `sdeeos derive corrected_boundary`): prints the steps and checks; exit 1 if a check fails."""

import sys

from sdeeos.theory.derivations import main

if __name__ == "__main__":
    sys.exit(main("corrected_boundary"))
