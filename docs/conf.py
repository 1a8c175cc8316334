"""Sphinx configuration of AMORE's documentation.

Build: ``.venv/bin/sphinx-build docs build/docs`` (``tests/test_docs.py`` builds it with
warnings as errors). No extension or theme that needs the network at build time.
"""
project = "AMORE"
author = "AMORE developers"
copyright = "AMORE developers"
release = "0.1.0"

extensions = [
    "myst_parser",      # docs/facility.md (Markdown), cited by the code as it is
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

language = "en"
html_theme = "alabaster"
html_title = "AMORE"
html_theme_options = {"description": "Automated Run Overview", "fixed_sidebar": True,
                      "page_width": "1100px", "sidebar_width": "240px"}
html_show_sourcelink = False
