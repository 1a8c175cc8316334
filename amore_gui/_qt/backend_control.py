"""Starting, stopping and watching the backend from the GUI (thin Qt layer over
:mod:`backend.service.manager`).

:class:`BackendController` runs the manager's blocking calls on a worker thread and reports
back through Qt signals, so the event loop never waits for tmux or the backend.
:class:`BackendLogWindow` shows the live tail of ``amore.log``.
"""
from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import QObject, QTimer, Signal
from qtpy.QtGui import QFontDatabase
from qtpy.QtWidgets import QPlainTextEdit, QVBoxLayout, QWidget

from amore_gui._qt.workers import Tasks


class BackendController(QObject):
    """Start/stop/restart the backend of ``context_dir`` on a worker thread (:class:`Tasks`).

    Signals: ``busy(str)`` when an action starts (its name); then ``done(str, object)`` with
    the action's name and the status afterwards
    (:class:`amore_gui.application.backend_status.BackendIndicator`), or ``failed(str, str, object)`` with the
    action's name, the error message and the status afterwards.
    """

    busy = Signal(str)
    done = Signal(str, object)
    failed = Signal(str, str, object)

    def __init__(self, context_dir: Path, parent=None):
        super().__init__(parent)
        self.context_dir = Path(context_dir)
        self.tasks = Tasks(self, max_threads=1)
        self._busy = False

    @property
    def running(self) -> bool:
        """True while an action is under way."""
        return self._busy

    def start(self, force: bool = False):
        """Start the backend on this machine (``force``: clear a stale record of another host)."""
        from backend.service import manager
        self._run("start", lambda: manager.start_backend(self.context_dir, force=force))

    def stop(self):
        from backend.service import manager
        self._run("stop", lambda: manager.stop_backend(self.context_dir))

    def restart(self):
        from backend.service import manager
        self._run("restart", lambda: manager.restart_backend(self.context_dir))

    def _run(self, name, func):
        if self._busy:
            return
        self._busy = True
        self.busy.emit(name)

        def work():  # on the pool thread: the action, then the state it left
            from amore_gui.application.backend_status import backend_status
            try:
                func()
                error = None
            except Exception as e:  # reported to the user, never raised into Qt
                error = str(e) or type(e).__name__
            return error, backend_status(self.context_dir)

        def finished(result, error):  # on the GUI thread
            self._busy = False
            message, status = result if result is not None else (error, None)
            if status is None:
                from amore_gui.application.backend_status import BackendIndicator
                status = BackendIndicator.unknown(message or "")
            if message:
                self.failed.emit(name, message, status)
            else:
                self.done.emit(name, status)

        self.tasks.submit(work, callback=finished)


class BackendLogWindow(QWidget):
    """Live tail of the backend's ``amore.log`` (new lines read twice a second)."""

    def __init__(self, context_dir: Path, parent=None):
        super().__init__(parent)
        from backend.service.manager import LogFollower
        self.setWindowTitle(f"AMORE backend log — {context_dir}")
        self.resize(900, 500)
        self.text = QPlainTextEdit(self)
        self.text.setReadOnly(True)
        self.text.setMaximumBlockCount(5000)
        from backend.contextdir import ContextDir
        self.text.setPlaceholderText(f"Nothing logged yet: the backend writes "
                                     f"{ContextDir(context_dir).log_file} while it runs.")
        self.text.setFont(QFontDatabase.systemFont(QFontDatabase.FixedFont))
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(self.text)
        self.follower = LogFollower(context_dir, initial_lines=200)
        self.timer = QTimer(self, interval=500, timeout=self.refresh)
        self.timer.start()
        self.refresh()

    def refresh(self):
        """Append the lines written since the last call."""
        lines = self.follower.read_new()
        if lines:
            bar = self.text.verticalScrollBar()
            at_end = bar.value() >= bar.maximum() - 2
            self.text.appendPlainText("\n".join(lines))
            if at_end:
                bar.setValue(bar.maximum())
