#!/usr/bin/env python
"""Run the derivation `reduced_model_from_cubic` (see `sdeeos derive reduced_model_from_cubic`): prints the steps and checks; exit 1 if a check fails."""

import sys

from sdeeos.theory.derivations import main

if __name__ == "__main__":
    sys.exit(main("reduced_model_from_cubic"))
