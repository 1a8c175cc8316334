"""``amore-proto gui``: open the run table GUI."""
from __future__ import annotations




def cmd_gui(a) -> int:
    """``amore-proto gui [DIR | PROPOSAL]``: the run-table GUI (amore_gui)."""
    from amore_gui._qt.launch import run
    return run(a)


def register(sub) -> None:
    """Add this module's commands to the ``amore-proto`` sub-parsers."""
    s = sub.add_parser("gui", help="open the run table GUI")
    s.add_argument("target", nargs="?", metavar="DIR|PROPOSAL",
                   help="context directory or proposal number (default: ask)")
    s.add_argument("--no-kafka", action="store_true",
                   help="do not use Kafka for live updates (watch the database instead)")
    s.set_defaults(func=cmd_gui)
