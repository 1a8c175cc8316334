"""The logbook: standalone timestamped comments of the proposal, in a dock of the main window.

:class:`LogbookController` owns the dock and its :class:`CommentsPanel`; comments are written
and read by the session (:meth:`~amore_gui.application.session.Session.add_logbook_comment`,
:meth:`~amore_gui.application.session.Session.read_logbook`) on the window's task pool, never
on the GUI thread. Whether the dock is shown is remembered per directory.
"""
from __future__ import annotations

import getpass
import html

from qtpy.QtCore import QObject, Qt, Signal
from qtpy.QtWidgets import (QDockWidget, QHBoxLayout, QLineEdit, QPushButton,
                             QTextBrowser, QVBoxLayout, QWidget)

from amore_gui.application.formatting import format_time
from amore_gui._qt.app import make_action


class CommentsPanel(QWidget):
    """The logbook: standalone timestamped comments, oldest first, and a line to add one.
    Emits ``add(text)``; the window writes it to the database."""

    add = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 4, 6, 6)
        self.view = QTextBrowser()
        self.view.setOpenLinks(False)
        self.view.setStyleSheet("QTextBrowser { border: 1px solid #e1e1e1; background: white; }")
        lay.addWidget(self.view, 1)
        row = QHBoxLayout()
        self.edit = QLineEdit()
        self.edit.setPlaceholderText("Add a timestamped comment…")
        self.edit.returnPressed.connect(self._add)
        row.addWidget(self.edit, 1)
        b = QPushButton("Add")
        b.clicked.connect(self._add)
        row.addWidget(b)
        lay.addLayout(row)
        self.comments: list[dict] = []
        self.setMinimumWidth(300)

    def _add(self):
        t = self.edit.text().strip()
        if t:
            self.edit.clear()
            self.add.emit(t)

    def set_comments(self, comments: list[dict]) -> None:
        """Show the comments (dicts as from dbread.read_comments)."""
        self.comments = comments
        parts = []
        for c in comments:
            meta = format_time(c["timestamp"])
            if c.get("run") is not None:
                meta += f" · run {c['run']}"
            if c.get("author"):
                meta += f" · {html.escape(str(c['author']))}"
            parts.append(f"<p style='margin:0 0 10px 0'><span style='color:#797775;"
                         f"font-size:small'>{meta}</span><br>{html.escape(c['text'])}</p>")
        if not parts:
            parts.append("<p style='color:#797775'>No comments yet.</p>")
        self.view.setHtml("".join(parts))
        sb = self.view.verticalScrollBar()
        sb.setValue(sb.maximum())


def current_user() -> str:
    """The login name of the user (empty if unknown)."""
    try:
        return getpass.getuser()
    except Exception:
        return ""


class LogbookController(QObject):
    """The logbook dock of ``window`` (a :class:`~amore_gui._qt.mainwindow.MainWindow`: its
    session and task pool); :attr:`act_logbook` shows and hides it."""

    def __init__(self, window):
        super().__init__(window)
        self.window = window
        self.session = window.session
        self.panel = CommentsPanel()
        self.panel.add.connect(self._add)
        self.dock = QDockWidget("Logbook", window)
        self.dock.setObjectName("logbook")
        self.dock.setWidget(self.panel)
        window.addDockWidget(Qt.RightDockWidgetArea, self.dock)
        self.dock.setVisible(self.session.logbook_visible)
        self.dock.visibilityChanged.connect(self._toggled)
        self.act_logbook = make_action(window, "Logbook", lambda c: self.dock.setVisible(c),
                                       "Ctrl+L", "Standalone timestamped comments",
                                       checkable=True)
        self.act_logbook.setChecked(self.dock.isVisible())
        self.session.events.logbook_changed.connect(self.load)

    def load(self) -> None:
        """Read the logbook (task pool) and show it."""
        self.window.tasks.submit(self.session.read_logbook, callback=lambda res, err: (
            self.panel.set_comments(res) if res is not None else None))

    def _add(self, text):
        self.session.add_logbook_comment(text, author=current_user())

    def _toggled(self, visible):
        self.act_logbook.setChecked(visible)
        if self.window.closing:
            return
        self.session.set_logbook_visible(visible)
