"""Sphinx configuration of the API reference: ``python -m sphinx -W -b html docs docs/_build``."""

project = "functional-optreg"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax", "myst_parser"]
exclude_patterns = ["_build"]
autodoc_default_options = {"members": True, "undoc-members": True}
autodoc_typehints = "none"
autodoc_member_order = "alphabetical"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True
myst_heading_anchors = 3
html_theme = "alabaster"
