"""``amore-proto import-damnit SRC [DEST] [--update]``: take a beamtime over from DAMNIT
(:mod:`backend.damnit.importer`), with a progress bar and a summary. DAMNIT's directory is only
read."""
from __future__ import annotations

import sys
import time


def cmd_import_damnit(a) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, \
        TimeElapsedColumn

    from backend.damnit.importer import ImportError_, import_damnit
    from backend.damnit.source import DamnitError
    from backend.store.manual import ManualError
    from backend.store.writer import StorageError

    from amore_gui.application.damnit import STAGES, progress_line

    err = Console(stderr=True)
    as_json = a.progress == "json"
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err, transient=True,
                  disable=as_json or not err.is_terminal) as bar:
        tasks: dict[str, int] = {}
        said = {"at": 0.0}

        def progress(stage: str, done: int, total: int) -> None:
            if as_json:     # for a front-end: at most 10 lines a second, and the last one
                now = time.monotonic()
                if done >= total or now - said["at"] >= 0.1:
                    said["at"] = now
                    print(progress_line(stage, done, total), file=sys.stderr, flush=True)
                return
            if stage not in tasks:
                tasks[stage] = bar.add_task(STAGES.get(stage, stage), total=total)
            bar.update(tasks[stage], completed=done)

        try:
            summary = import_damnit(a.src, a.dest, update=a.update, progress=progress)
        except (DamnitError, ImportError_, ManualError, StorageError, FileExistsError) as e:
            bar.stop()
            print(f"amore-proto import-damnit: {e}", file=sys.stderr)
            return 1
    print("\n".join(summary.lines()))
    if not a.update:
        print(f"\nNext: amore-proto listen {summary.dest}  (or amore-proto gui {summary.dest}); "
              f"to bring in what DAMNIT computes meanwhile: amore-proto import-damnit "
              f"{summary.source} {summary.dest} --update")
    return 0


def register(sub) -> None:
    """Add this module's commands to the ``amore-proto`` sub-parsers."""
    s = sub.add_parser(
        "import-damnit", help="import a DAMNIT context directory into a new AMORE directory",
        description="Import a DAMNIT context directory (DAMNIT 0.4.0, data format 4) into a new "
                    "AMORE directory: runs, values, run files, comments, user-editable "
                    "variables (as manual columns), context.py and settings. DAMNIT's "
                    "directory is only read.")
    s.add_argument("src", metavar="SRC", help="DAMNIT's context directory "
                   "(at European XFEL <proposal>/usr/Shared/amore)")
    s.add_argument("dest", metavar="DEST", nargs="?",
                   help="the AMORE directory to create (default: <proposal>/usr/Shared/"
                        "amore-proto beside DAMNIT's)")
    s.add_argument("--update", action="store_true",
                   help="bring an imported DEST up to date with what DAMNIT computed since "
                        "(values AMORE has written are kept)")
    s.add_argument("--progress", choices=("bar", "json"), default="bar",
                   help="progress as a bar on a terminal (default), or as one JSON object a "
                        'line on stderr ({"v": 1, "stage": ..., "done": ..., "total": ...}), '
                        "for front-ends")
    s.set_defaults(func=cmd_import_damnit)
