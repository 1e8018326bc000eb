#!/usr/bin/env python
"""Run the derivation `step_size_edges` (see `sdeeos derive step_size_edges`): prints the steps and checks; exit 1 if a check fails."""

import sys

from sdeeos.theory.derivations import main

if __name__ == "__main__":
    sys.exit(main("step_size_edges"))
