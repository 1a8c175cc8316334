"""``amore-proto logs RUN``: what the evaluation of a run printed, and its tracebacks."""
from __future__ import annotations

import sys
import time

from amore.cli.common import context_dir


def cmd_logs(a) -> int:
    from backend.store.runlogs import run_logs
    from backend.store.writer import RunDB, StorageError
    try:
        db = RunDB(context_dir(a.dir))
    except StorageError as e:
        print(f"amore-proto logs: {e}", file=sys.stderr)
        return 1
    logs = run_logs(db, a.run, last=None if a.all else 1)
    if not logs:
        print(f"No processing log for run {a.run} yet")
        return 0
    for entry in logs:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry["timestamp"]))
        print(f"=== run {entry['run']}, {when}: {entry['status']} ===")
        text = entry["text"] or "(nothing printed)\n"
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def register(sub) -> None:
    """Add this module's commands to the ``amore-proto`` sub-parsers."""
    s = sub.add_parser("logs", help="what a run's processing printed, with tracebacks")
    s.add_argument("run", type=int, metavar="RUN")
    s.add_argument("--all", action="store_true", help="every kept evaluation, not only the last")
    s.add_argument("-d", "--dir")
    s.set_defaults(func=cmd_logs)
