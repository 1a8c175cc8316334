"""Opening a context directory from the GUI: resolve a directory or proposal number, offer to
create a missing context directory, or ask with the Open dialog (the rules are the Qt-free
:mod:`amore_gui.application.opening`)."""
from __future__ import annotations

from pathlib import Path

from amore_gui.application import opening


def _create_context_dir(target, parent=None) -> bool:
    """Ask whether to create the missing context directory; create it
    (:func:`amore_gui.application.opening.create_context_dir`). Returns True if it exists
    afterwards."""
    from qtpy.QtWidgets import QMessageBox

    from amore_gui._qt.dialogs import CreateContextDialog

    dlg = CreateContextDialog(target.context_dir, target.proposal, opening.templates(), parent)
    if not dlg.exec():
        return False
    try:
        opening.create_context_dir(target.context_dir, dlg.proposal.value(),
                                   dlg.template.currentText())
    except Exception as e:
        QMessageBox.critical(parent, "AMORE", f"Could not create {target.context_dir}:\n{e}")
        return False
    return True


def resolve_or_ask(arg: str, settings=None, parent=None) -> Path | None:
    """The context directory for ``arg`` (directory or proposal number), offering to create
    it if missing; None if the user gave up. Shows errors in message boxes."""
    from qtpy.QtWidgets import QMessageBox

    try:
        target = opening.locate(arg)
    except opening.LocateError as e:
        QMessageBox.warning(parent, "AMORE", str(e))
        return None
    if not target.exists and not _create_context_dir(target, parent):
        return None
    return target.context_dir


def choose_target(settings, parent=None) -> Path | None:
    """Open dialog (proposal number or folder, recent directories) until something opens."""
    from amore_gui._qt.dialogs import OpenDialog
    while True:
        dlg = OpenDialog(settings.recent, parent)
        if not dlg.exec() or not dlg.choice:
            return None
        d = resolve_or_ask(dlg.choice, settings, parent)
        if d is not None:
            return d
