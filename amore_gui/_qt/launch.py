"""Entry point of the GUI: ``amore-proto gui [DIR | PROPOSAL]`` (or ``python -m amore_gui._qt.launch``).

* a directory: its run table (a proposal directory means its ``usr/Shared/amore``);
* a proposal number: ``<proposal dir>/usr/Shared/amore`` found under the data root;
* nothing: a dialog asking for a proposal number or folder, listing recent directories.

A directory without ``runs.sqlite`` is offered to be created from a context template
(:func:`amore_gui.application.opening.create_context_dir`). DAMNIT's directory (or a proposal
with DAMNIT's directory and no AMORE one yet) opens a window saying what it is, offering to
import it or open an AMORE directory, and showing DAMNIT's table read-only
(:mod:`amore_gui._qt.damnit`).

``amore-proto gui`` (and :func:`main`) first run
:func:`amore_gui.qt_platform.preflight`: when Qt's platform plugin cannot load (X11
libraries or the display missing), they print which and how to get them and exit with code 3,
instead of Qt aborting the process.
"""
from __future__ import annotations

import argparse
import logging
import sys

from amore_gui._qt.opening import choose_target, resolve_or_ask


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of ``python -m amore_gui._qt.launch``."""
    p = argparse.ArgumentParser(prog="amore-proto gui", description="AMORE run table")
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``amore-proto gui`` (shared with amore.cli)."""
    p.add_argument("target", nargs="?", metavar="DIR|PROPOSAL",
                   help="context directory or proposal number (default: ask)")
    p.add_argument("--no-kafka", action="store_true",
                   help="do not use Kafka for live updates (watch the database instead)")


def run(args) -> int:
    """Start the GUI for parsed arguments (see :func:`add_arguments`)."""
    from amore_gui.application.backend_status import setup_logging
    setup_logging(logging.WARNING)
    from amore_gui._qt.app import make_app
    from amore_gui._qt.mainwindow import open_choice
    from amore_gui.application.settings import Settings

    app = make_app(sys.argv[:1])
    settings = Settings()
    if args.target:
        d = resolve_or_ask(args.target, settings)
    else:
        d = choose_target(settings)
    if d is None:
        return 1 if args.target else 0
    open_choice(d, settings, use_kafka=not args.no_kafka, offer_backend=True)
    rc = app.exec()
    # delete closed windows now, not in arbitrary order at interpreter exit
    from qtpy.QtCore import QCoreApplication, QEvent
    QCoreApplication.sendPostedEvents(None, QEvent.DeferredDelete)
    if "amore_gui._qt.plots" in sys.modules:
        sys.modules["amore_gui._qt.plots"].forget_views()
    return rc


def main(argv=None) -> int:
    """``python -m amore_gui._qt.launch [DIR | PROPOSAL]``."""
    from amore_gui.qt_platform import preflight
    args = build_parser().parse_args(argv)
    return preflight() or run(args)


if __name__ == "__main__":
    sys.exit(main())
