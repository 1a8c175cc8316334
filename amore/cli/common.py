"""Helpers shared by the command modules of ``amore-proto``."""
from __future__ import annotations

import os
from pathlib import Path


def context_dir(arg) -> Path:
    """The context directory named on the command line, or the current directory; absolute."""
    return Path(arg if arg else os.getcwd()).resolve()


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
