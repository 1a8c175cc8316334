"""``amore-proto show``: the run table in the terminal."""
from __future__ import annotations

import sys

from amore.cli.common import context_dir


def cmd_show(a) -> int:
    from amore.cli.table import render_table
    from rich.console import Console
    from backend.store.writer import StorageError
    try:
        console = Console()
        console.print(render_table(context_dir(a.dir), width=console.width))
    except StorageError as e:
        print(f"amore-proto show: {e}", file=sys.stderr)
        return 1
    return 0


def register(sub) -> None:
    """Add this module's commands to the ``amore-proto`` sub-parsers."""
    s = sub.add_parser("show", help="print the run table")
    s.add_argument("dir", nargs="?")
    s.set_defaults(func=cmd_show)
