"""Manual columns in the main window, and the cell tools of the table's context menu.

:class:`ManualColumns` (one per window) connects the table's editors to the Qt-free writes of
:mod:`amore_gui.application.manual_edit`:

* Cells of manual columns edit in place (double-click, F2 or typing) with an editor that fits
  the type (:class:`~amore_gui._qt.delegates.ManualDelegate`). With several runs selected, the
  value goes to all of them. Carried-over values are drawn in italics; a cell's tooltip says
  who set it, when, from where.
* Right-click a cell: history of a manual cell, confirm or clear it, the run's processing log,
  group rows by that column (count and means), copy as TSV/Markdown.
* View menu: "Add manual column…", "Group rows…".

The module-level functions (:func:`show_history`, :func:`show_groups`, :func:`copy_selection`...)
take the window and forward to its controllers, for scripts and tests.
"""
from __future__ import annotations

import math
import time

from qtpy.QtCore import QObject, Qt
from qtpy.QtGui import QFont, QKeySequence
from qtpy.QtWidgets import (QAbstractItemView, QCheckBox, QComboBox, QDialog,
                             QDialogButtonBox, QDoubleSpinBox, QFormLayout, QHBoxLayout, QLabel,
                             QLineEdit, QListWidget, QListWidgetItem, QPlainTextEdit, QShortcut,
                             QTableWidget, QTableWidgetItem, QVBoxLayout)

from amore_gui.application.manual_edit import add_manual_column, group_rows, set_manual_values
from amore_gui.application.table_data import NSTATIC
from amore_gui._qt.app import make_action


# ---------------------------------------------------------------------------------------------
# dialogs

class AddColumnDialog(QDialog):
    """Create a manual column: name, type, title, units, choices, description, carry-over."""

    def __init__(self, win):
        super().__init__(win)
        self.win = win
        self.setWindowTitle("Add manual column")
        form = QFormLayout(self)
        self.name = QLineEdit()
        self.name.setPlaceholderText("e.g. detector_distance (letters, digits, _)")
        self.type = QComboBox()
        for t in ("number", "integer", "boolean", "string", "choice"):
            self.type.addItem(t)
        self.title = QLineEdit()
        self.units = QLineEdit()
        self.units.setPlaceholderText("e.g. mm, µJ, deg (numbers only)")
        self.choices = QLineEdit()
        self.choices.setPlaceholderText("comma-separated (choice only)")
        self.description = QLineEdit()
        self.carry = QCheckBox("New runs start with the previous run's value (auto-pilot)")
        self.error = QLabel()
        self.error.setStyleSheet("color: #b00020")
        self.error.setWordWrap(True)
        for label, w in (("Name", self.name), ("Type", self.type), ("Title", self.title),
                         ("Units", self.units), ("Choices", self.choices),
                         ("Description", self.description), ("", self.carry),
                         ("", self.error)):
            form.addRow(label, w)
        bb = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        bb.accepted.connect(self.submit)
        bb.rejected.connect(self.reject)
        form.addRow(bb)

    def submit(self):
        self.error.setText("")

        def done(col, err):
            if err:
                self.error.setText(err)       # the dialog stays open with what was typed
                return
            self.win.message(f"Added manual column {col.name}")
            self.win.live.poke()
            self.accept()
        add_manual_column(self.win.session, on_done=done, name=self.name.text().strip(),
                          type=self.type.currentText(), title=self.title.text().strip() or None,
                          units=self.units.text().strip() or None,
                          choices=self.choices.text().strip() or None,
                          description=self.description.text().strip() or None,
                          carry_over=self.carry.isChecked())


class TextDialog(QDialog):
    """A read-only text (processing log) in a monospace view."""

    def __init__(self, win, title: str, text: str):
        super().__init__(win)
        self.setWindowTitle(title)
        lay = QVBoxLayout(self)
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        self.text.setFont(QFont("monospace"))
        self.text.setPlainText(text)
        lay.addWidget(self.text)
        bb = QDialogButtonBox(QDialogButtonBox.Close)
        bb.rejected.connect(self.reject)
        lay.addWidget(bb)
        self.resize(760, 480)


class TableDialog(QDialog):
    """A read-only table (history, groups)."""

    def __init__(self, win, title: str, headers: list[str], rows: list[list[str]], note=""):
        super().__init__(win)
        self.setWindowTitle(title)
        lay = QVBoxLayout(self)
        if note:
            lay.addWidget(QLabel(note))
        self.table = QTableWidget(len(rows), len(headers))
        self.table.setHorizontalHeaderLabels(headers)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        for i, row in enumerate(rows):
            for j, text in enumerate(row):
                self.table.setItem(i, j, QTableWidgetItem(text))
        self.table.resizeColumnsToContents()
        lay.addWidget(self.table)
        bb = QDialogButtonBox(QDialogButtonBox.Close)
        bb.rejected.connect(self.reject)
        lay.addWidget(bb)
        self.resize(720, 360)


class GroupDialog(QDialog):
    """Group the visible runs by one or more columns (numbers within a tolerance): a row per
    group with its run count and the means of the visible numeric columns (the first 8)."""

    def __init__(self, win, cols: list[int], tolerance: float = 0.01):
        super().__init__(win)
        self.win = win
        data = win.model.data_obj
        self.setWindowTitle("Group runs")
        lay = QVBoxLayout(self)
        top = QHBoxLayout()
        top.addWidget(QLabel("Group by:"))
        self.columns = QListWidget()
        self.columns.setMaximumHeight(110)
        for c in win.visible_columns():
            if data.columns[c].key in ("#status", "#start", "#added"):
                continue
            it = QListWidgetItem(data.columns[c].title.replace("\n", " / "))
            it.setData(Qt.UserRole, c)
            it.setFlags(it.flags() | Qt.ItemIsUserCheckable)
            it.setCheckState(Qt.Checked if c in cols else Qt.Unchecked)
            self.columns.addItem(it)
        top.addWidget(self.columns, 1)
        top.addWidget(QLabel("Numbers within"))
        self.tolerance = QDoubleSpinBox()
        self.tolerance.setRange(0, 100)
        self.tolerance.setDecimals(1)
        self.tolerance.setSuffix(" %")
        self.tolerance.setValue(tolerance * 100)
        top.addWidget(self.tolerance)
        lay.addLayout(top)
        self.note = QLabel()
        lay.addWidget(self.note)
        self.table = QTableWidget()
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        lay.addWidget(self.table, 1)
        bb = QDialogButtonBox(QDialogButtonBox.Close)
        bb.rejected.connect(self.reject)
        lay.addWidget(bb)
        self.columns.itemChanged.connect(lambda _: self.refresh())
        self.tolerance.valueChanged.connect(lambda _: self.refresh())
        self.resize(820, 420)
        self.refresh()

    def by(self) -> list[int]:
        return [self.columns.item(i).data(Qt.UserRole) for i in range(self.columns.count())
                if self.columns.item(i).checkState() == Qt.Checked]

    def refresh(self) -> None:
        data = self.win.model.data_obj
        rows = self.win.model.visible_rows()
        by = self.by()
        means = [c for c in self.win.visible_columns() if c >= NSTATIC and c not in by
                 and data.is_numeric_column(c)][:8]
        tol = self.tolerance.value() / 100
        groups = group_rows(data, rows, by, tolerance=tol, mean_cols=means) if by else []
        headers = [data.columns[c].title for c in by] + ["Runs"] + \
            [f"mean {data.columns[c].title}" for c in means]
        self.table.clear()
        self.table.setColumnCount(len(headers))
        self.table.setHorizontalHeaderLabels([h.replace("\n", " / ") for h in headers])
        self.table.setRowCount(len(groups))
        for i, g in enumerate(groups):
            cells = list(g.label) + [str(g.count)] + [
                "" if math.isnan(g.means[c]) else f"{g.means[c]:.4g}" for c in means]
            for j, text in enumerate(cells):
                self.table.setItem(i, j, QTableWidgetItem(text))
        self.table.resizeColumnsToContents()
        self.note.setText(f"{len(rows)} visible runs in {len(groups)} group(s)"
                          if by else "Choose one or more columns to group by")



# ---------------------------------------------------------------------------------------------
# the controller

class ManualColumns(QObject):
    """Manual columns and cell tools of ``window`` (a
    :class:`~amore_gui._qt.mainwindow.MainWindow`: its session, model, table view, task pool
    and live updates); see module docstring."""

    def __init__(self, window):
        super().__init__(window)
        self.window = window
        self.session = window.session
        self.model = window.model
        self.model.manualEdited.connect(self.edit)
        window.table_view.add_menu_section(self.menu_items)
        self.act_add_column = make_action(window, "Add manual column…",
                                          lambda: self.open_add_column(), "Ctrl+Shift+N")
        self.act_group = make_action(window, "Group rows by current column…",
                                     lambda: self.group_current(), "Ctrl+Shift+G")
        QShortcut(QKeySequence("Ctrl+Shift+H"), window, activated=self.history_current)

    def _written(self, *_):
        self.window.live.poke()

    def edit(self, keys, name, value) -> None:
        """The model's ``manualEdited``: apply to every selected run when the edited run is one
        of several selected."""
        sel = self.window.selected_runs()
        if len(sel) > 1 and keys[0] in sel:
            keys = sel
        set_manual_values(self.session, keys, name, value, on_done=self._written)

    def set_values(self, keys, name, value, confirm=False) -> None:
        """Set (None: clear) manual column ``name`` of runs ``keys``; ``confirm``: only drop
        the "carried over" mark."""
        set_manual_values(self.session, keys, name, value, on_done=self._written,
                          confirm=confirm)

    def open_add_column(self) -> AddColumnDialog:
        return self.window.show_dialog(AddColumnDialog(self.window))

    def show_history(self, proposal, run, name) -> None:
        """Every edit of a manual cell, in a table (read on the task pool)."""
        d = self.model.data_obj
        col = d.columns[d.col_of(name)]

        def done(rows, err):
            if err:
                self.window.message(f"History not available: {err}", error=True)
                return
            table = [[time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["timestamp"])),
                      r["display"] + (" (carried over)" if r["carried"] else ""),
                      r["author"] or "", r["via"] or "", r["text"] or ""] for r in rows]
            self.window.show_dialog(TableDialog(self.window, f"History of {col.title}, run {run}",
                                                ["When", "Value", "Who", "From", "Typed"], table))
        self.window.tasks.submit(self.session.workspace.manual_history, proposal, run, name,
                                 callback=done)

    def show_run_log(self, proposal, run) -> None:
        """The run's processing logs (read on the task pool)."""
        def done(logs, err):
            if err:
                self.window.message(f"Log not available: {err}", error=True)
                return
            parts = [f"=== {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(e['timestamp']))}: "
                     f"{e['status']} ===\n{e['text'] or '(nothing printed)'}" for e in logs]
            self.window.show_dialog(TextDialog(self.window, f"Processing log of run {run}",
                                               "\n".join(parts) or
                                               "No processing log for this run yet."))
        self.window.tasks.submit(self.session.workspace.run_log, proposal, run, callback=done)

    def show_provenance(self, proposal, run, name) -> None:
        """How a value was made, and why it is stale if it is (read on the task pool)."""
        def done(info, err):
            if err or info is None:
                self.window.message(f"Provenance not available: {err or 'no such value'}",
                                    error=True)
                return
            self.window.show_dialog(TextDialog(self.window, f"{name} of run {run}: provenance",
                                               "\n".join(info["lines"])))
        self.window.tasks.submit(self.session.workspace.provenance, proposal, run, name,
                                 callback=done)

    def show_groups(self, col: int, tolerance: float = 0.01) -> GroupDialog:
        """Open the grouping dialog, grouping by column ``col`` to begin with."""
        return self.window.show_dialog(GroupDialog(self.window, [col], tolerance))

    def group_current(self) -> GroupDialog:
        idx = self.window.table.currentIndex()
        col = idx.column() if idx.isValid() else self.model.column_of("#status")
        return self.show_groups(col)

    def history_current(self) -> None:
        idx = self.window.table.currentIndex()
        if not idx.isValid():
            return
        d = self.model.data_obj
        column = d.columns[idx.column()]
        if column.manual:
            row = int(self.model.view.order[idx.row()])
            self.show_history(_proposal(d.proposal[row]), int(d.run[row]), column.key)

    def menu_items(self, menu, idx, keys) -> None:
        """Entries added to the table's context menu for the cell ``idx``."""
        if not idx.isValid():
            return
        data = self.model.data_obj
        col = idx.column()
        column = data.columns[col]
        row = int(self.model.view.order[idx.row()])
        proposal, run = _proposal(data.proposal[row]), int(data.run[row])
        table = self.window.table_view
        menu.addSeparator()
        if column.manual:
            menu.addAction(f"History of {column.title} in run {run}…",
                           lambda: self.show_history(proposal, run, column.key))
            targets = keys if (proposal, run) in keys else [(proposal, run)]
            carried = [k for k in targets
                       if (data.cell_attrs(data.row_of[k], col) or {}).get("carried")]
            if carried:
                menu.addAction(f"Confirm carried-over {column.title} of {len(carried)} run(s)",
                               lambda: self.set_values(carried, column.key, None, confirm=True))
            menu.addAction(f"Clear {column.title} of {len(targets)} run(s)",
                           lambda: self.set_values(targets, column.key, None))
        if column.variable and not column.manual and data.cell_kind(row, col):
            menu.addAction(f"How {column.title} of run {run} was made…",
                           lambda: self.show_provenance(proposal, run, column.key))
        menu.addAction(f"Processing log of run {run}…", lambda: self.show_run_log(proposal, run))
        menu.addAction(f"Group rows by {column.title}…", lambda: self.show_groups(col))
        menu.addAction("Copy selection as TSV", lambda: table.copy_selection("tsv"))
        menu.addAction("Copy selection as Markdown", lambda: table.copy_selection("markdown"))


def _proposal(p) -> int | str:
    """A table cell's proposal as stored: int for numbers (numpy ints too), str for
    identifiers (ESRF ``mx2532``)."""
    return p if isinstance(p, str) else int(p)


# ---------------------------------------------------------------------------------------------
# the same, called with the window (scripts, tests)

def poke(win) -> None:
    """Make the live updates check the database now (after this GUI wrote to it)."""
    win.live.poke()


def copy_selection(win, fmt: str = "tsv") -> str:
    """Copy the selected cells as TSV or Markdown (:meth:`TableController.copy_selection
    <amore_gui._qt.table.TableController.copy_selection>`)."""
    return win.table_view.copy_selection(fmt)


def show_history(win, proposal, run, name) -> None:
    """:meth:`ManualColumns.show_history` of the window."""
    win.manual.show_history(proposal, run, name)


def show_run_log(win, proposal, run) -> None:
    """:meth:`ManualColumns.show_run_log` of the window."""
    win.manual.show_run_log(proposal, run)


def show_groups(win, col: int, tolerance: float = 0.01) -> GroupDialog:
    """:meth:`ManualColumns.show_groups` of the window."""
    return win.manual.show_groups(col, tolerance)


def table_menu_items(win, menu, idx, keys) -> None:
    """:meth:`ManualColumns.menu_items` of the window."""
    win.manual.menu_items(menu, idx, keys)


def _open_add_column(win) -> AddColumnDialog:
    return win.manual.open_add_column()
