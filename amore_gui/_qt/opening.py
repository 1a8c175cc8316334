"""Opening a context directory from the GUI: resolve a directory or proposal number, offer to
create a missing context directory, or ask with the Open dialog (the rules are the Qt-free
:mod:`amore_gui.application.opening`).

A DAMNIT directory (DAMNIT's database in ``usr/Shared/amore``, or a proposal whose AMORE
directory does not exist yet beside DAMNIT's) is not an error here: it resolves to its
:class:`~amore_gui.application.damnit.DamnitDir`, which
:func:`amore_gui._qt.mainwindow.open_choice` shows in a
:class:`~amore_gui._qt.damnit.DamnitWindow` (what it is, import it, open an AMORE directory,
DAMNIT's table read-only).
"""
from __future__ import annotations

from pathlib import Path

from amore_gui.application import damnit, opening
from amore_gui.application.damnit import DamnitDir


def offer_to_create(target, parent=None) -> bool:
    """Ask whether to create the missing context directory ``target.context_dir``; create it
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


def resolve_or_ask(arg: str, settings=None, parent=None) -> Path | DamnitDir | None:
    """The context directory for ``arg`` (directory or proposal number), offering to create
    it if missing; a :class:`~amore_gui.application.damnit.DamnitDir` when ``arg`` is DAMNIT's
    directory, or a proposal with DAMNIT's directory and no AMORE one yet (show it with
    :func:`amore_gui._qt.mainwindow.open_choice`); None if the user gave up. Shows other errors
    in message boxes."""
    from qtpy.QtWidgets import QMessageBox

    try:
        target = opening.locate(arg)
    except opening.LocateError as e:
        found = damnit.damnit_dir_of(e)
        if found is not None:
            return found
        QMessageBox.warning(parent, "AMORE", str(e))
        return None
    if not target.exists and target.damnit_dir is not None:
        found = damnit.damnit_dir(target.damnit_dir, dest=target.context_dir)
        if found is not None:
            return found
    if not target.exists and not offer_to_create(target, parent):
        return None
    return target.context_dir


def choose_target(settings, parent=None) -> Path | DamnitDir | None:
    """Open dialog (proposal number or folder, recent directories) until something opens
    (see :func:`resolve_or_ask`)."""
    from amore_gui._qt.dialogs import OpenDialog
    while True:
        dlg = OpenDialog(settings.recent, parent)
        if not dlg.exec() or not dlg.choice:
            return None
        d = resolve_or_ask(dlg.choice, settings, parent)
        if d is not None:
            return d
