"""Collection rules for the doctests of the package (``--doctest-modules`` over ``sdeeos``).

Modules that need an optional extra are skipped when it is missing, as their tests are; the
entry point ``sdeeos/__main__.py`` runs the CLI when imported, so it is never collected.
"""

import importlib.util

# the entry point (importing it runs the CLI)
collect_ignore = ["sdeeos/__main__.py"]
collect_ignore_glob = []
if importlib.util.find_spec("torch") is None:
    collect_ignore_glob += ["sdeeos/torch/*", "sdeeos/studies/_real.py", "sdeeos/studies/real_*.py",
                            "sdeeos/studies/eos_sgd_vs_baselines.py"]
