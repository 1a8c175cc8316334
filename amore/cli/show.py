"""``amore-proto show``: the run table in the terminal."""
from __future__ import annotations

import argparse
import sys

from amore.cli.common import context_dir


def show_damnit(d, a) -> int:
    """``show`` of DAMNIT's directory: its table read-only (nothing in it is changed), with a
    note saying so and how to take it over."""
    from rich.console import Console

    from amore.cli.table import render_rows
    from backend.damnit.source import DamnitError, DamnitSource
    from backend.damnit.values import damnit_table
    from backend.store.identify import describe, identify
    if a.where:
        print("amore-proto show: --where needs an AMORE directory; "
              + describe(identify(d)), file=sys.stderr)
        return 1
    try:
        variables, runs, values = damnit_table(DamnitSource(d))
    except DamnitError as e:
        print(f"amore-proto show: {e}", file=sys.stderr)
        return 1
    console = Console()
    console.print(render_rows(variables, runs, values, width=console.width))
    print(f"(DAMNIT's table, read without changing it) {describe(identify(d))}", file=sys.stderr)
    return 0


def cmd_show(a) -> int:
    from amore.cli.table import render_table
    from rich.console import Console
    from backend.store.identify import DbKind, identify
    from backend.store.writer import StorageError
    d = context_dir(a.dir or a.dir_opt)
    if identify(d).kind is DbKind.DAMNIT:
        return show_damnit(d, a)
    only = None
    try:
        if a.where:
            from amore_gui.application import dbread
            from amore_gui.application.query import QueryError, filter_rows
            dbread.ensure_schema(d)
            data = dbread.load_table(d).data
            try:
                rows = filter_rows(data, a.where)
            except QueryError as e:
                print(f"amore-proto show: {e}", file=sys.stderr)
                return 2
            only = {(p if isinstance(p, str) else int(p), int(data.run[r]))
                    for r in rows for p in (data.proposal[r],)}
        console = Console()
        console.print(render_table(d, width=console.width, only=only))
    except (StorageError, FileNotFoundError) as e:
        print(f"amore-proto show: {e}", file=sys.stderr)
        return 1
    return 0


def register(sub) -> None:
    """Add this module's commands to the ``amore-proto`` sub-parsers."""
    s = sub.add_parser("show", help="print the run table")
    s.add_argument("dir", nargs="?")
    s.add_argument("-d", "--dir", dest="dir_opt", help=argparse.SUPPRESS)
    s.add_argument("--where", metavar="EXPR",
                   help='only runs matching an expression, e.g. \'run in 10..20 and sample ~ "lyso"\' '
                        "or 'pulse_energy > 0.5 mJ'")
    s.set_defaults(func=cmd_show)
