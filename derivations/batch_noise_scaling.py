#!/usr/bin/env python
"""Run the derivation `batch_noise_scaling` (see `sdeeos derive batch_noise_scaling`): prints the steps and checks; exit 1 if a check fails."""

import sys

from sdeeos.theory.derivations import main

if __name__ == "__main__":
    sys.exit(main("batch_noise_scaling"))
