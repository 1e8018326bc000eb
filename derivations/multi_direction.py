#!/usr/bin/env python
"""Run the derivation `multi_direction` (see `sdeeos derive multi_direction`): prints the steps and checks; exit 1 if a check fails."""

import sys

from sdeeos.theory.derivations import main

if __name__ == "__main__":
    sys.exit(main("multi_direction"))
