"""The documentation: README.rst is the front door and docs/ is a Sphinx site.

README.rst opens with the two commands (``./dev demo``, ``./dev test``) and says truly what they
run; it renders without a docutils warning (as on a package index) and every file it links to or
shows exists. The site in docs/ builds with warnings as errors (``sphinx-build -W``: a broken
reference, a page left out of the table of contents, a missing image all fail), and every figure
on the performance and reliability pages keeps the command that made it and the day it was made.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import docutils.core
import docutils.nodes
import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.rst"
DOCS = REPO / "docs"
DATE = re.compile(r"\b20\d\d-\d\d-\d\d\b")


def readme_doctree() -> docutils.nodes.document:
    """README.rst parsed by plain docutils; a warning or error raises (halt_level 2)."""
    return docutils.core.publish_doctree(
        README.read_text(), source_path=str(README),
        settings_overrides={"halt_level": 2, "report_level": 2, "file_insertion_enabled": False,
                            "raw_enabled": False})


def test_readme_opens_with_the_two_commands():
    doc = readme_doctree()
    before_first_section = []
    for node in doc.children:
        if isinstance(node, docutils.nodes.section):
            break
        before_first_section += [b.astext() for b in node.findall(docutils.nodes.literal_block)]
    assert before_first_section[:2] == ["./dev demo", "./dev test"], (
        f"README's first literal blocks before any section: {before_first_section}")
    assert doc.children[0].astext() == "AMORE — Automated Run Overview"


def test_readme_says_what_the_two_commands_run():
    """The README's one-line equivalents of ``./dev demo`` and ``./dev test`` match ``dev``."""
    readme = README.read_text()
    assert ("``./dev demo`` is ``python3 -m venv .venv && .venv/bin/pip install -e . && "
            ".venv/bin/amore-proto demo``") in readme
    assert "``./dev test`` is the same with ``-e '.[test]'`` followed by ``.venv/bin/python -m pytest``" in readme
    dev = (REPO / "dev").read_text()
    demo = dev[dev.index("    demo)"):dev.index("    test)")]
    test = dev[dev.index("    test)"):dev.index("    *)")]
    assert 'setup ""' in demo and 'exec "$VENV/bin/amore-proto" demo' in demo, demo
    assert 'setup "[test]"' in test and 'exec "$VENV/bin/python" -m pytest' in test, test
    assert '"$VENV/bin/python" -m pip install -q -e ".$extras"' in dev


def test_readme_links_and_images_exist():
    doc = readme_doctree()
    local = [n["refuri"] for n in doc.findall(docutils.nodes.reference)
             if "refuri" in n and "://" not in n["refuri"]]
    local += [n["uri"] for n in doc.findall(docutils.nodes.image)]
    assert local, "README links to no page of docs/"
    missing = [u for u in local if not (REPO / u).is_file()]
    assert not missing, f"README links to files that do not exist: {missing}"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """docs/ built into a fresh directory with warnings as errors."""
    out = tmp_path_factory.mktemp("docs") / "html"
    r = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
                        str(DOCS), str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"sphinx-build -W failed:\n{r.stdout}\n{r.stderr}"
    return out


def test_docs_build_with_warnings_as_errors(site):
    assert (site / "index.html").is_file()
    # every page the README links to is a page of the site, and the screenshot is in it
    for uri in re.findall(r"<docs/([\w-]+)\.(?:rst|md)>", README.read_text()):
        assert (site / f"{uri}.html").is_file(), f"docs/{uri} is not a page of the built site"
    assert (site / "_images" / "main.png").is_file()


def sections(page: str) -> dict[str, str]:
    """The level-2 sections (titles underlined with ``-``) of a page in docs/, by title."""
    parts = re.split(r"\n(?=[^\n]+\n-{3,}\n)", (DOCS / page).read_text())
    return {p.splitlines()[0]: p for p in parts[1:]}


@pytest.mark.parametrize("page, titles", [("performance.rst", None),
                                          ("reliability.rst", ["The long run"])])
def test_every_figure_keeps_its_command_and_date(page, titles):
    """Each section that gives measured figures names the benchmark that made them and the day
    they were measured (on the performance page: every section)."""
    found = sections(page)
    for title in titles or found:
        assert title in found, f"{page} has no section {title!r}: {list(found)}"
        sec = found[title]
        assert re.search(r"benchmarks/\w+\.py", sec), f"{page}, {title!r}: no command"
        assert DATE.search(sec), f"{page}, {title!r}: figures without the day they were measured"
    if titles is None:
        assert len(found) >= 5, f"{page}: only the sections {list(found)}"
