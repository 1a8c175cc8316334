"""Starting, stopping and watching the backend from the main window (a thin Qt layer over
:mod:`amore_gui.application.backend_status`).

:class:`BackendController` owns the status-bar indicator, the Processing menu's start / stop /
restart / log actions and the offer to start a backend; it runs the blocking actions on a
worker thread and reports back through Qt signals, so the event loop never waits for tmux or
the backend. The state itself (which actions are allowed, what to offer) is the session's.
:class:`BackendLogWindow` shows the live tail of ``amore.log``.
"""
from __future__ import annotations

from qtpy.QtCore import QObject, QTimer, Signal
from qtpy.QtGui import QFontDatabase
from qtpy.QtWidgets import QLabel, QMessageBox, QPlainTextEdit, QVBoxLayout, QWidget

from amore_gui.application.backend_status import BackendIndicator
from amore_gui._qt.app import make_action
from amore_gui._qt.workers import Tasks


class BackendController(QObject):
    """The backend of the window's directory (see module docstring).

    ``window``: the :class:`~amore_gui._qt.mainwindow.MainWindow` (its session, status bar and
    messages). Signals: ``busy(str)`` when an action starts (its name); then
    ``done(str, object)`` with the action's name and the status afterwards
    (:class:`~amore_gui.application.backend_status.BackendIndicator`), or
    ``failed(str, str, object)`` with the action's name, the error message and the status.
    """

    busy = Signal(str)
    done = Signal(str, object)
    failed = Signal(str, str, object)

    def __init__(self, window):
        super().__init__(window)
        self.window = window
        self.session = window.session
        self.workspace = window.session.workspace
        self.tasks = Tasks(self, max_threads=1)
        self._busy = False
        self.log_window: BackendLogWindow | None = None
        self.label = QLabel("Backend: …")

        self.act_start = make_action(window, "Start backend", lambda: self.start(),
                                     tip="Start the backend on this machine (in tmux)")
        self.act_stop = make_action(window, "Stop backend", lambda: self.stop(),
                                    tip="Stop the backend running on this machine")
        self.act_restart = make_action(window, "Restart backend", lambda: self.restart(),
                                       tip="Restart the backend (e.g. after updating AMORE)")
        self.act_log = make_action(window, "Backend log", lambda: self.show_log(),
                                   tip="Live view of amore.log")
        self.actions = [self.act_start, self.act_stop, self.act_restart, self.act_log]
        self.busy.connect(self._on_busy)
        self.done.connect(self._on_done)
        self.failed.connect(self._on_failed)
        ev = self.session.events
        ev.backend.connect(self.show_state)
        ev.offer_backend.connect(lambda text, force: QTimer.singleShot(
            0, lambda: self._offer(text, force)))

    @property
    def running(self) -> bool:
        """True while an action is under way."""
        return self._busy

    def start(self, force: bool = False):
        """Start the backend on this machine (``force``: clear a stale record of another host)."""
        self._run("start", force)

    def stop(self):
        self._run("stop")

    def restart(self):
        self._run("restart")

    def _run(self, name, force=False):
        if self._busy:
            return
        self._busy = True
        self.busy.emit(name)
        ws = self.workspace

        def finished(result, error):  # on the GUI thread
            self._busy = False
            message, status = result if result is not None else (error, None)
            if status is None:
                status = BackendIndicator.unknown(message or "")
            if message:
                self.failed.emit(name, message, status)
            else:
                self.done.emit(name, status)

        self.tasks.submit(ws.backend_action, name, force, callback=finished)

    def show_log(self):
        """Open (or raise) the live view of ``amore.log``."""
        if self.log_window is None:
            self.log_window = BackendLogWindow(self.workspace)
        self.log_window.show()
        self.log_window.raise_()

    # -- what the window shows -------------------------------------------------------------
    def show_state(self, st, _first=False):
        """A new backend state (from the live updates or an action): the indicator and the
        actions it allows."""
        if self._busy:
            return
        self.label.setText(f"<span style='color:{st.colour}'>●</span> {st.text}")
        self.label.setToolTip(st.detail)
        self._enable_actions()

    def _enable_actions(self):
        allowed = self.session.backend_actions()
        self.act_start.setEnabled(allowed["start"])
        self.act_stop.setEnabled(allowed["stop"])
        self.act_restart.setEnabled(allowed["restart"])

    def _offer(self, text, force):
        if QMessageBox.question(self.window, "Start the AMORE backend?", text) == QMessageBox.Yes:
            self.start(force=force)

    def _on_busy(self, name):
        self.session.set_backend_busy(name)
        self.label.setText(self.session.busy_text(name))
        self._enable_actions()

    def _on_done(self, name, status):
        self.session.set_backend_state(status)
        self.window.statusBar().showMessage(status.text, 8000)

    def _on_failed(self, name, message, status):
        self.session.set_backend_state(status)
        self.window.message(f"Could not {name} the backend:\n{message}", error=True)


class BackendLogWindow(QWidget):
    """Live tail of the backend's ``amore.log`` of a
    :class:`~amore_gui.application.workspace.Workspace` (new lines read twice a second)."""

    def __init__(self, workspace, parent=None):
        super().__init__(parent)
        self.setWindowTitle(f"AMORE backend log — {workspace.context_dir}")
        self.resize(900, 500)
        self.text = QPlainTextEdit(self)
        self.text.setReadOnly(True)
        self.text.setMaximumBlockCount(5000)
        self.text.setPlaceholderText(f"Nothing logged yet: the backend writes "
                                     f"{workspace.log_file} while it runs.")
        self.text.setFont(QFontDatabase.systemFont(QFontDatabase.FixedFont))
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(self.text)
        self.follower = workspace.backend_log(initial_lines=200)
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
