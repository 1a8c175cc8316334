"""``amore-proto gui``: open the run table GUI."""
from __future__ import annotations


def cmd_gui(a) -> int:
    """``amore-proto gui [DIR | PROPOSAL]``: the run-table GUI (amore_gui). Exit code 3 with
    AMORE's own message when Qt's platform cannot load (missing X11 libraries, no display)."""
    from amore_gui.qt_platform import import_problem, preflight
    rc = preflight()
    if rc:
        return rc
    try:
        from amore_gui._qt.launch import run
    except ImportError as e:        # PyQt5 itself lacks a library (e.g. libGL.so.1)
        problem = import_problem(e)
        if problem is None:
            raise
        import sys
        print(problem.message(), file=sys.stderr)
        return problem.exit_code
    _say_web_address(a.target)
    return run(a)


def _say_web_address(target) -> None:
    """Print where the browser front-end serves this directory, if it runs (``amore-proto web``)."""
    if not target:
        return
    from pathlib import Path
    from amore_gui.web.server import describe_record, read_record
    rec = read_record(Path(target))
    if rec is not None and rec.get("running") is not False:
        print(f"This run table is also in the browser: {describe_record(rec)}")


def register(sub) -> None:
    """Add this module's commands to the ``amore-proto`` sub-parsers."""
    s = sub.add_parser("gui", help="open the run table GUI")
    s.add_argument("target", nargs="?", metavar="DIR|PROPOSAL",
                   help="context directory or proposal number (default: ask)")
    s.add_argument("--no-kafka", action="store_true",
                   help="do not use Kafka for live updates (watch the database instead)")
    s.set_defaults(func=cmd_gui)
