"""Which runs the main window shows: the search/filter box (plain text or an expression such as
``run > 10 and sample ~ "lyso"``), "Checked only", column filters shown as chips, the filter
dialog.

The filters themselves are the session's (:meth:`~amore_gui.application.session.Session.filters`);
:class:`FiltersController` owns the widgets, forwards what the user types (debounced by a
quarter of a second) and shows the session's ``filters`` events: the rows, the chips, and a red
box with the error when an expression is not right.
"""
from __future__ import annotations

import html

from qtpy.QtCore import QObject, QTimer
from qtpy.QtGui import QKeySequence
from qtpy.QtWidgets import (QCheckBox, QHBoxLayout, QLabel, QLineEdit, QShortcut, QToolButton,
                             QWidget)

from amore_gui._qt.app import make_action

FILTER_HELP = ("<b>Search text</b> (runs, comments, text cells) <b>or an expression</b>:<br>"
               "<tt>run in 100..140 and sample ~ \"lyso\"</tt><br>"
               "<tt>pulse_energy &gt; 0.5 mJ</tt> (units converted)<br>"
               "<tt>`Detector distance` &gt;= 2 cm and good</tt><br>"
               "<tt>not has(sample) or failed(flaky)</tt><br>"
               "== != &lt; &lt;= &gt; &gt;=, and, or, not, (), none, true/false")


class FiltersController(QObject):
    """Row filters of the window's run table (see module docstring). ``window``: the
    :class:`~amore_gui._qt.mainwindow.MainWindow` (its session, model, status bar)."""

    def __init__(self, window):
        super().__init__(window)
        self.window = window
        self.session = window.session
        self.model = window.model
        self._search_timer = QTimer(self, singleShot=True, interval=250)
        self._search_timer.timeout.connect(lambda: self.session.set_search(self.search.text()))

        self.search = QLineEdit()
        self.search.setPlaceholderText('Search, or filter: run > 10 and sample ~ "lyso"')
        self.search.setToolTip(FILTER_HELP)
        self.search.setClearButtonEnabled(True)
        self.search.setMinimumWidth(300)
        self.search.setMaximumWidth(420)
        self.search.textChanged.connect(lambda _: self._search_timer.start())
        QShortcut(QKeySequence("Ctrl+F"), window, activated=lambda: (self.search.setFocus(),
                                                                     self.search.selectAll()))
        self.only_checked = QCheckBox("Checked only")
        self.only_checked.setToolTip("Show only runs whose Status box is checked")
        self.only_checked.toggled.connect(self.session.set_only_checked)

        self.chips = QWidget()
        self._chips_lay = QHBoxLayout(self.chips)
        self._chips_lay.setContentsMargins(8, 4, 8, 4)
        self.chips.setVisible(False)

        self.act_filter = make_action(window, "Filter…", lambda: self.dialog(), "Ctrl+Shift+F",
                                      "Filter runs by a number range or text")
        self.session.events.filters.connect(self._filters_changed)

    def add(self, f) -> None:
        """Add a row filter (NumberRange / TextContains on a column)."""
        self.session.add_filter(f)

    def clear(self) -> None:
        """Remove all row filters, the search text and 'checked only'."""
        self.session.clear_filters()

    def dialog(self, column: int | None = None) -> None:
        """Ask for a row filter (number range or text) on a column and add it."""
        from amore_gui._qt.dialogs import FilterDialog
        dlg = FilterDialog(self.model.data_obj, column, self.window)
        if dlg.exec():
            f = dlg.result_filter()
            if f is not None:
                self.add(f)

    def _filters_changed(self, filters) -> None:
        """The session's filters changed: show them (model rows, widgets, chips, counts, the
        box's error)."""
        self.model.set_filters(filters)
        if self.search.text() != self.session.search_text:
            self._search_timer.stop()
            self.search.blockSignals(True)
            self.search.setText(self.session.search_text)
            self.search.blockSignals(False)
        if self.only_checked.isChecked() != self.session.only_checked:
            self.only_checked.blockSignals(True)
            self.only_checked.setChecked(self.session.only_checked)
            self.only_checked.blockSignals(False)
        self._show_chips()
        self.window.live.update_counts()
        self._show_error()

    def _show_chips(self) -> None:
        lay = self._chips_lay
        while lay.count():
            w = lay.takeAt(0).widget()
            if w is not None:
                w.deleteLater()
        extra = self.session.extra_filters
        if not extra:
            self.chips.setVisible(False)
            return
        lay.addWidget(QLabel("Filters:"))
        for f in extra:
            b = QToolButton()
            b.setObjectName("chip")
            b.setText(f.describe(self.model.data_obj) + "  ✕")
            b.setToolTip("Remove this filter")
            b.clicked.connect(lambda _=False, f=f: self.session.remove_filter(f))
            lay.addWidget(b)
        clear = QToolButton()
        clear.setText("Clear all")
        clear.setAutoRaise(True)
        clear.clicked.connect(self.clear)
        lay.addWidget(clear)
        lay.addStretch(1)
        self.chips.setVisible(True)

    def _show_error(self) -> None:
        """Mark the filter box red with the error when its expression is not right."""
        from amore_gui.application.query import ExpressionFilter
        err = self.session.search_error
        if err is None:
            for f in self.model.view.filters:
                if isinstance(f, ExpressionFilter) and f.error is not None:
                    err = f.error
        if err is not None:
            self.search.setStyleSheet("QLineEdit { border: 1px solid #d32f2f; }")
            self.search.setToolTip(f"<pre>{html.escape(str(err))}</pre>")
            self.window.statusBar().showMessage(f"Filter: {str(err).splitlines()[0]}", 8000)
        else:
            self.search.setStyleSheet("")
            self.search.setToolTip(FILTER_HELP)
