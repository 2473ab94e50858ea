"""Sphinx configuration: ``make docs`` (or ``python -m sphinx -W -b html docs docs/_build/html``).

Sources are Markdown (MyST, through myst-nb) and the repository's notebooks (``docs/notebooks``
links to ``../notebooks``): they are rendered as stored, without outputs, because the test suite
already executes them (``tests/test_notebooks.py``) and a docs build should not start servers.
The reference pages (``format.md``, ``server.md``,
``benchmarks.md``...) are the same files the repository shows on its own; the API pages pull
numpydoc docstrings from the package.
"""

from __future__ import annotations

import mktsframe

project = "mktsframe"
author = "mktsframe contributors"
copyright = "2026, mktsframe contributors"
release = version = mktsframe.__version__

extensions = [
    "myst_nb",
    "numpydoc",
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}  # .rst: numpydoc autosummary
exclude_patterns = ["_build", "**/.ipynb_checkpoints"]
myst_enable_extensions = ["colon_fence", "deflist"]
nb_execution_mode = "off"
myst_heading_anchors = 3
# Illustrative JSON in format.md elides with "..."; Pygments falls back to plain text, which is fine.
suppress_warnings = ["misc.highlighting_failure"]

autodoc_typehints = "none"  # numpydoc sections carry the types
autodoc_member_order = "bysource"
numpydoc_show_class_members = False
numpydoc_xref_param_type = False
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}  # offline builds: no inventories fetched

html_theme = "pydata_sphinx_theme"
html_title = "mktsframe"
html_theme_options = {"navigation_with_keys": False, "show_toc_level": 2}
html_static_path: list[str] = []
