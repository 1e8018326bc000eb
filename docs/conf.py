"""Sphinx configuration of the sdeeos documentation (``sphinx-build -W --keep-going -b html docs OUT``)."""

import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)

project = "sdeeos"
author = "sdeeos contributors"
copyright = "2026, sdeeos contributors"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build"]

# Markdown: $...$ / $$...$$ math, and anchors for headings (theory.md#gap-closure) down to level 3.
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

# API reference from the docstrings (numpydoc-style sections, :math: roles).  Optional back ends must
# not be needed to build the documentation.
autodoc_mock_imports = ["cupy", "torch", "sklearn", "mnist1d", "dask", "distributed", "zarr"]
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
default_role = "code"

html_theme = "alabaster"
html_title = "sdeeos"
