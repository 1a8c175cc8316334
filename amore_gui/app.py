"""Entry point of the GUI: ``amore-proto gui [DIR | PROPOSAL]`` (or ``python -m amore_gui.app``).

* a directory: its run table (a proposal directory means its ``usr/Shared/amore``);
* a proposal number: ``<proposal dir>/usr/Shared/amore`` found under the data root;
* nothing: a dialog asking for a proposal number or folder, listing recent directories.

A directory without ``runs.sqlite`` is offered to be created from a context template
(:func:`backend.cli.init_context_dir`).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def _create_context_dir(target, parent=None) -> bool:
    """Ask whether to create the missing context directory; create it. Returns True if it
    exists afterwards."""
    import context_templates
    from PyQt5.QtWidgets import QMessageBox

    from ._qt.dialogs import CreateContextDialog
    from backend.cli import init_context_dir

    dlg = CreateContextDialog(target.context_dir, target.proposal, context_templates.available(),
                              parent)
    if not dlg.exec_():
        return False
    try:
        init_context_dir(target.context_dir, dlg.proposal.value(), dlg.template.currentText())
    except FileExistsError:
        # a context.py exists but no database: create only the database
        from backend.storage import RunDB
        RunDB.create(target.context_dir, dlg.proposal.value()).close()
    except Exception as e:
        QMessageBox.critical(parent, "AMORE", f"Could not create {target.context_dir}:\n{e}")
        return False
    return True


def resolve_or_ask(arg: str, settings=None, parent=None) -> Path | None:
    """The context directory for ``arg`` (directory or proposal number), offering to create
    it if missing; None if the user gave up. Shows errors in message boxes."""
    from PyQt5.QtWidgets import QMessageBox

    from .locate import LocateError, resolve
    try:
        target = resolve(arg)
    except LocateError as e:
        QMessageBox.warning(parent, "AMORE", str(e))
        return None
    if not target.exists and not _create_context_dir(target, parent):
        return None
    return target.context_dir


def choose_target(settings, parent=None) -> Path | None:
    """Open dialog (proposal number or folder, recent directories) until something opens."""
    from ._qt.dialogs import OpenDialog
    while True:
        dlg = OpenDialog(settings.recent, parent)
        if not dlg.exec_() or not dlg.choice:
            return None
        d = resolve_or_ask(dlg.choice, settings, parent)
        if d is not None:
            return d


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of ``python -m amore_gui.app``."""
    p = argparse.ArgumentParser(prog="amore-proto gui", description="AMORE run table")
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``amore-proto gui`` (shared with backend.cli)."""
    p.add_argument("target", nargs="?", metavar="DIR|PROPOSAL",
                   help="context directory or proposal number (default: ask)")
    p.add_argument("--no-kafka", action="store_true",
                   help="do not use Kafka for live updates (watch the database instead)")


def run(args) -> int:
    """Start the GUI for parsed arguments (see :func:`add_arguments`)."""
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    from ._qt.app import make_app
    from ._qt.mainwindow import MainWindow
    from .settings import Settings

    app = make_app(sys.argv[:1])
    settings = Settings()
    if args.target:
        d = resolve_or_ask(args.target, settings)
    else:
        d = choose_target(settings)
    if d is None:
        return 1 if args.target else 0
    win = MainWindow(d, settings=settings, use_kafka=not args.no_kafka, offer_backend=True)
    win.show()
    rc = app.exec_()
    # delete closed windows now, not in arbitrary order at interpreter exit
    from PyQt5.QtCore import QCoreApplication, QEvent
    QCoreApplication.sendPostedEvents(None, QEvent.DeferredDelete)
    if "amore_gui._qt.plots" in sys.modules:
        sys.modules["amore_gui._qt.plots"].forget_views()
    return rc


def main(argv=None) -> int:
    """``python -m amore_gui.app [DIR | PROPOSAL]``."""
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
