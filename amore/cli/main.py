"""``amore-proto``: AMORE's command line. One module per command group, each with a
``register(sub)`` that adds its sub-commands; this module only assembles them.

Every command takes the context directory as an argument (or ``-d/--dir``) or uses the current
directory.
"""
from __future__ import annotations

import argparse
import sys

from amore.cli import (backend, demo, gui, listen, logs, manual, reprocess, setup, show, slurm,
                       trust, web)

#: Command modules, in the order ``amore-proto --help`` lists them.
COMMAND_MODULES = [setup, listen, reprocess, show, demo, gui, web, backend, trust, manual, logs,
                   slurm]


def build_parser() -> argparse.ArgumentParser:
    """The ``amore-proto`` argument parser with every command module's sub-commands."""
    p = argparse.ArgumentParser(prog="amore-proto", description="AMORE: Automated Run Overview")
    sub = p.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.register(sub)
    return p


def main(argv=None) -> int:
    """Run ``amore-proto`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    from backend.files import restrict_umask
    restrict_umask()   # nothing AMORE writes is world-writable, whatever the user's umask
    args = build_parser().parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
