#!/usr/bin/env python
"""Run the derivation `sde_reduced_model` (see `sdeeos derive sde_reduced_model`): prints the steps and checks; exit 1 if a check fails."""

import sys

from sdeeos.theory.derivations import main

if __name__ == "__main__":
    sys.exit(main("sde_reduced_model"))
