#!/usr/bin/env python
"""Run the derivation `noise_kernel` (see `sdeeos derive noise_kernel`): prints the steps and checks; exit 1 if a check fails."""

import sys

from sdeeos.theory.derivations import main

if __name__ == "__main__":
    sys.exit(main("noise_kernel"))
