"""``amore-proto``: AMORE's command line. One module per command group, each with a
``register(sub)`` that adds its sub-commands; this module only assembles them.

Every command takes the context directory as an argument (or ``-d/--dir``) or uses the current
directory.
"""
from __future__ import annotations

import argparse
import sys

from amore.cli import (backend, damnit, demo, gui, listen, logs, manual, post, reprocess, setup,
                       show, slurm, trust, web)

#: Command modules, in the order ``amore-proto --help`` lists them.
COMMAND_MODULES = [setup, listen, reprocess, show, demo, gui, web, backend, trust, manual, logs,
                   slurm, damnit, post]


def build_parser() -> argparse.ArgumentParser:
    """The ``amore-proto`` argument parser with every command module's sub-commands."""
    p = argparse.ArgumentParser(prog="amore-proto", description="AMORE: Automated Run Overview")
    sub = p.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.register(sub)
    return p


#: Commands that look at a directory holding another program's database themselves: ``show``
#: reads a DAMNIT table read-only, ``demo`` makes its own tree, ``gui`` resolves its target
#: (and shows a DAMNIT directory in a window of its own, read-only, offering the import).
OWN_DIRECTORY_CHECK = {"show", "demo", "gui"}


def refuse_foreign_directory(args) -> int:
    """Exit status 1, with a plain message on stderr, if the command's context directory
    (``DIR``/``--dir``, else the current directory; ``gui``: its target) holds a database
    AMORE did not create: before the command creates anything (a log, a lock, a socket) in it.
    0 otherwise. ``gui`` of DAMNIT's directory goes on (the GUI says what it is and offers
    the import) unless it may not ask (``$AMORE_GUI_NO_DIALOGS``)."""
    import os

    from amore.cli.common import context_dir, foreign_database_message
    if args.command == "gui":
        if not getattr(args, "target", None):
            return 0
        from backend.locate import ForeignDatabaseError, LocateError, resolve
        from backend.store.identify import DbKind
        try:
            resolve(args.target)
        except ForeignDatabaseError as e:
            if e.identity.kind is DbKind.DAMNIT and not os.environ.get("AMORE_GUI_NO_DIALOGS"):
                return 0
            print(f"amore-proto gui: {e}", file=sys.stderr)
            return 1
        except LocateError:
            return 0        # the GUI says it (and offers the Open dialog)
        return 0
    if args.command in OWN_DIRECTORY_CHECK or not hasattr(args, "dir"):
        return 0
    msg = foreign_database_message(context_dir(args.dir))
    if msg is None:
        return 0
    print(f"amore-proto {args.command}: {msg}", file=sys.stderr)
    return 1


def main(argv=None) -> int:
    """Run ``amore-proto`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    from backend.files import restrict_umask
    restrict_umask()   # nothing AMORE writes is world-writable, whatever the user's umask
    args = build_parser().parse_args(argv)
    return refuse_foreign_directory(args) or args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
