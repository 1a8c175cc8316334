"""The event log pane (a dock), the status bar's count of new warnings and the notice that the
proposal is closed. State lives in :class:`amore_gui.application.eventlog.EventLogState`; the
database is polled every 2 s on the window's task pool, never on the GUI thread."""
from __future__ import annotations

import json
import time

from qtpy.QtCore import QObject, Qt, QTimer
from qtpy.QtGui import QBrush, QColor
from qtpy.QtWidgets import (QComboBox, QDockWidget, QHBoxLayout, QHeaderView, QLabel,
                             QPushButton, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from amore_gui.application.eventlog import LEVELS, EventLogState

POLL_MS = 2000
_COLOURS = {"warning": "#fff3cd", "error": "#f4c7c3"}


class EventLogPanel(QWidget):
    """A table of event-log entries (newest first) with a minimum-level selector."""

    COLUMNS = ("Time", "Level", "Source", "Run", "Message")

    def __init__(self, state: EventLogState, parent=None):
        super().__init__(parent)
        self.state = state
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        top = QHBoxLayout()
        top.addWidget(QLabel("Show:"))
        self.level = QComboBox()
        self.level.addItems(["all", "warnings and errors", "errors"])
        self.level.currentIndexChanged.connect(self.refresh)
        top.addWidget(self.level)
        top.addStretch(1)
        lay.addLayout(top)
        self.table = QTableWidget(0, len(self.COLUMNS))
        self.table.setHorizontalHeaderLabels(self.COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.NoEditTriggers)
        self.table.setSelectionBehavior(QTableWidget.SelectRows)
        hh = self.table.horizontalHeader()
        hh.setSectionResizeMode(QHeaderView.ResizeToContents)
        hh.setStretchLastSection(True)
        lay.addWidget(self.table)

    @property
    def min_level(self) -> str:
        return LEVELS[self.level.currentIndex()]

    def refresh(self) -> None:
        rows = self.state.visible(self.min_level)
        self.table.setRowCount(len(rows))
        for i, e in enumerate(rows):
            texts = (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["timestamp"])),
                     e["level"], e["source"], "" if e["run"] is None else str(e["run"]),
                     e["message"])
            tip = json.dumps(e["details"], indent=1, default=str)[:3000] if e["details"] else None
            colour = _COLOURS.get(e["level"])
            for j, t in enumerate(texts):
                item = QTableWidgetItem(t)
                if tip:
                    item.setToolTip(tip)
                if colour:
                    item.setBackground(QBrush(QColor(colour)))
                self.table.setItem(i, j, item)


class EventLogController(QObject):
    """Adds the "Event log" dock, the new-warnings button and the closed notice to ``window``
    (a :class:`~amore_gui._qt.mainwindow.MainWindow`: uses its ``workspace``, ``tasks`` and
    status bar, and disables its ``act_reprocess`` while the proposal is closed)."""

    def __init__(self, window):
        super().__init__(window)
        self.window = window
        self.state: EventLogState = window.workspace.event_log()
        self.panel = EventLogPanel(self.state)
        self.dock = QDockWidget("Event log", window)
        self.dock.setObjectName("eventlog")
        self.dock.setWidget(self.panel)
        window.addDockWidget(Qt.BottomDockWidgetArea, self.dock)
        self.dock.setVisible(False)
        self.dock.visibilityChanged.connect(self._visibility)
        sb = window.statusBar()
        self.closed_label = QLabel()
        self.closed_label.setStyleSheet("QLabel { background: #f4c7c3; padding: 0 6px; }")
        self.closed_label.setVisible(False)
        sb.addPermanentWidget(self.closed_label)
        self.button = QPushButton("Event log")
        self.button.setFlat(True)
        self.button.setToolTip("Malformed messages, worker deaths, incomplete runs, checksum "
                               "mismatches... (amore-proto events)")
        self.button.clicked.connect(self.show_log)
        sb.addPermanentWidget(self.button)
        self._polling = False
        self.timer = QTimer(self, interval=POLL_MS)
        self.timer.timeout.connect(self.poll)
        self.timer.start()
        self.poll()

    def show_log(self) -> None:
        self.dock.setVisible(True)
        self.dock.raise_()

    def _visibility(self, visible: bool) -> None:
        # the table is filled only while it is shown: up to 2,000 entries x 5 items, resized
        # to their contents, cost a window memory and time for a dock nobody looks at
        if visible:
            self.state.mark_seen()
            self._update_button()
            self.panel.refresh()
        else:
            self.panel.table.setRowCount(0)

    def poll(self) -> None:
        if self._polling or self.window.closing:
            return
        self._polling = True
        self.window.tasks.submit(self.state.poll, callback=self._polled)

    def _polled(self, result, error) -> None:
        self._polling = False
        if error or result is None:
            return
        new = self.state.apply(result)
        if new and self.dock.isVisible():
            self.state.mark_seen()
            self.panel.refresh()
        self._update_button()
        self._update_closed()

    def _update_button(self) -> None:
        n = self.state.new_warnings
        self.button.setText(f"⚠ {n} new warning{'s' if n != 1 else ''}" if n else "Event log")
        self.button.setStyleSheet("QPushButton { color: #a00000; font-weight: bold; }" if n
                                  else "")

    def _update_closed(self) -> None:
        closed = self.state.closed
        self.closed_label.setVisible(closed is not None)
        if closed is not None:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(closed)) if closed else ""
            self.closed_label.setText("Closed: read-only")
            self.closed_label.setToolTip(f"The proposal was closed after its beamtime ({when}, "
                                         "amore-proto close): nothing is processed or changed. "
                                         "amore-proto reopen undoes it.")
        act = getattr(self.window, "act_reprocess", None)
        if act is not None:
            act.setEnabled(closed is None)
            act.setToolTip("The proposal is closed (amore-proto reopen to change values)"
                           if closed is not None else
                           "Recompute variables for the selected or all runs")
