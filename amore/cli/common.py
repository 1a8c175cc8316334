"""Helpers shared by the command modules of ``amore-proto``."""
from __future__ import annotations

import os
from pathlib import Path


def context_dir(arg) -> Path:
    """The context directory named on the command line, or the current directory; absolute."""
    return Path(arg if arg else os.getcwd()).resolve()


def foreign_database_message(d: Path) -> str | None:
    """What to tell the user when directory ``d`` holds a ``runs.sqlite`` that AMORE did not
    create (DAMNIT's, a newer AMORE's, something else), found without touching it; None when
    it holds AMORE's own database or none."""
    from backend.store.identify import DbKind, describe, identify
    ident = identify(d)
    if ident.kind in (DbKind.AMORE, DbKind.MISSING, DbKind.EMPTY):
        return None
    return describe(ident)


def parse_runs(tokens: list[str], known: list[int]) -> list[int]:
    """Run numbers from CLI tokens: ``all``, ``5``, ``3-7``. Raises ValueError for bad tokens."""
    runs: list[int] = []
    for t in tokens:
        if t == "all":
            runs += known
        elif "-" in t:
            a, b = t.split("-", 1)
            runs += list(range(int(a), int(b) + 1))
        else:
            runs.append(int(t))
    return sorted(dict.fromkeys(runs))
