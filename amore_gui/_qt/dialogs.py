"""Small dialogs: open a proposal/directory, create a context directory, add a row filter,
choose columns."""
from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import Qt
from qtpy.QtGui import QDoubleValidator
from qtpy.QtWidgets import (QAbstractItemView, QComboBox, QDialog, QDialogButtonBox,
                             QFileDialog, QFormLayout, QHBoxLayout, QLabel, QLineEdit,
                             QListWidget, QListWidgetItem, QPushButton, QSpinBox, QVBoxLayout)

from amore_gui.application.opening import has_database
from amore_gui.application.table_data import C_STATUS, NumberRange, TableData, TextContains


def check_all_buttons(buttons, set_all) -> QHBoxLayout:
    """A row of buttons, left-aligned, for a list of checkable items: ``buttons`` are
    ``(label, Qt.CheckState)`` pairs, a click calls ``set_all(state)``."""
    row = QHBoxLayout()
    for label, state in buttons:
        b = QPushButton(label)
        b.clicked.connect(lambda _=False, s=state: set_all(s))
        row.addWidget(b)
    row.addStretch(1)
    return row


class OpenDialog(QDialog):
    """Choose what to open: a proposal number or a folder, or a recent directory.
    :attr:`choice` holds the text after ``accept()``."""

    def __init__(self, recent: list[str], parent=None):
        super().__init__(parent)
        self.setWindowTitle("Open AMORE run table")
        self.choice: str | None = None
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel("Proposal number or context directory:"))
        row = QHBoxLayout()
        self.edit = QLineEdit()
        self.edit.setPlaceholderText("e.g. 2832 or /gpfs/exfel/exp/…/usr/Shared/amore")
        row.addWidget(self.edit, 1)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row.addWidget(browse)
        lay.addLayout(row)
        lay.addWidget(QLabel("Recent:"))
        self.recent = QListWidget()
        for d in recent:
            it = QListWidgetItem(d)
            it.setToolTip(d)
            if not has_database(d):
                it.setForeground(Qt.gray)
            self.recent.addItem(it)
        self.recent.itemClicked.connect(lambda it: self.edit.setText(it.text()))
        self.recent.itemDoubleClicked.connect(lambda it: (self.edit.setText(it.text()),
                                                          self.accept()))
        lay.addWidget(self.recent, 1)
        bb = QDialogButtonBox(QDialogButtonBox.Open | QDialogButtonBox.Cancel)
        bb.accepted.connect(self.accept)
        bb.rejected.connect(self.reject)
        lay.addWidget(bb)
        self.resize(620, 360)

    def _browse(self):
        d = QFileDialog.getExistingDirectory(self, "Context directory", self.edit.text() or "")
        if d:
            self.edit.setText(d)

    def accept(self):
        t = self.edit.text().strip()
        if not t:
            return
        self.choice = t
        super().accept()


class CreateContextDialog(QDialog):
    """Offer to create a missing context directory from a template."""

    def __init__(self, context_dir: Path, proposal: int | None, templates: list[str], parent=None):
        super().__init__(parent)
        self.setWindowTitle("Create AMORE context directory")
        lay = QVBoxLayout(self)
        msg = QLabel(f"There is no AMORE database in<br><b>{context_dir}</b><br><br>"
                     "Create it, with a context file from a template?")
        msg.setWordWrap(True)
        lay.addWidget(msg)
        form = QFormLayout()
        self.proposal = QSpinBox()
        self.proposal.setRange(1, 999999)
        self.proposal.setValue(proposal or 1)
        form.addRow("Proposal:", self.proposal)
        self.template = QComboBox()
        self.template.addItems(templates)
        if "generic" in templates:
            self.template.setCurrentText("generic")
        form.addRow("Template:", self.template)
        lay.addLayout(form)
        bb = QDialogButtonBox(QDialogButtonBox.Cancel)
        bb.addButton("Create", QDialogButtonBox.AcceptRole)
        bb.accepted.connect(self.accept)
        bb.rejected.connect(self.reject)
        lay.addWidget(bb)


class FilterDialog(QDialog):
    """Add a row filter on one column: a number range for numeric columns, text otherwise.
    :meth:`result_filter` gives the filter once the dialog is accepted."""

    def __init__(self, data: TableData, column: int | None = None, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Filter runs")
        self.data = data
        lay = QVBoxLayout(self)
        form = QFormLayout()
        self.column = QComboBox()
        self._cols = [c for c in range(len(data.columns)) if data.columns[c].key != C_STATUS]
        for c in self._cols:
            col = data.columns[c]
            self.column.addItem(col.title + (f" [{col.units}]" if col.units else ""), c)
        form.addRow("Column:", self.column)
        self.lo = QLineEdit()
        self.hi = QLineEdit()
        for e in (self.lo, self.hi):
            e.setValidator(QDoubleValidator())
            e.setPlaceholderText("any")
        self.text = QLineEdit()
        self.text.setPlaceholderText("text the cell contains")
        self._lo_row = ("Minimum:", self.lo)
        form.addRow("Minimum:", self.lo)
        form.addRow("Maximum:", self.hi)
        form.addRow("Contains:", self.text)
        self.form = form
        lay.addLayout(form)
        self.hint = QLabel()
        self.hint.setObjectName("hint")
        lay.addWidget(self.hint)
        bb = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        bb.accepted.connect(self.accept)
        bb.rejected.connect(self.reject)
        lay.addWidget(bb)
        self.column.currentIndexChanged.connect(self._kind_changed)
        if column is not None and column in self._cols:
            self.column.setCurrentIndex(self._cols.index(column))
        self._kind_changed()

    def _kind_changed(self):
        c = self.column.currentData()
        numeric = c is not None and self.data.is_numeric_column(c)
        for w in (self.lo, self.hi):
            w.setEnabled(numeric)
        self.text.setEnabled(not numeric)
        if numeric:
            import numpy as np
            x = self.data.numeric(c)
            x = x[np.isfinite(x)]
            self.hint.setText(f"Values from {x.min():.5g} to {x.max():.5g}" if len(x) else "")
        else:
            self.hint.setText("")

    def result_filter(self):
        """The chosen filter (NumberRange or TextContains), or None if nothing was entered."""
        c = self.column.currentData()
        key = self.data.columns[c].key
        if self.text.isEnabled():
            t = self.text.text().strip()
            return TextContains(key, t) if t else None

        def num(e):
            try:
                return float(e.text().replace(",", "."))
            except ValueError:
                return None
        lo, hi = num(self.lo), num(self.hi)
        if lo is None and hi is None:
            return None
        return NumberRange(key, lo, hi)


class ColumnsDialog(QDialog):
    """Show/hide and reorder columns: a checkable list in visual order (drag to reorder).
    :meth:`result` gives ``(order keys, hidden keys)``."""

    def __init__(self, data: TableData, order: list[str], hidden: set[str], parent=None):
        super().__init__(parent)
        self.setWindowTitle("Columns")
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel("Check the columns to show; drag to reorder."))
        self.filter = QLineEdit()
        self.filter.setPlaceholderText("Find a column…")
        self.filter.textChanged.connect(self._filter)
        lay.addWidget(self.filter)
        self.list = QListWidget()
        self.list.setDragDropMode(QAbstractItemView.InternalMove)
        for key in order:
            c = data.col_of(key)
            if c is None:
                continue
            col = data.columns[c]
            it = QListWidgetItem(col.title + (f" [{col.units}]" if col.units else ""))
            it.setData(Qt.UserRole, key)
            it.setFlags(it.flags() | Qt.ItemIsUserCheckable)
            it.setCheckState(Qt.Unchecked if key in hidden else Qt.Checked)
            if col.tags:
                it.setToolTip("Tags: " + ", ".join(col.tags))
            self.list.addItem(it)
        lay.addWidget(self.list, 1)
        lay.addLayout(check_all_buttons((("Show all", Qt.Checked),
                                         ("Hide all variables", Qt.Unchecked)), self._set_all))
        bb = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        bb.accepted.connect(self.accept)
        bb.rejected.connect(self.reject)
        lay.addWidget(bb)
        self.resize(420, 560)

    def _filter(self, text):
        t = text.lower()
        for i in range(self.list.count()):
            it = self.list.item(i)
            it.setHidden(bool(t) and t not in it.text().lower())

    def _set_all(self, state):
        for i in range(self.list.count()):
            it = self.list.item(i)
            if state == Qt.Unchecked and str(it.data(Qt.UserRole)).startswith("#"):
                continue
            if not it.isHidden():
                it.setCheckState(state)

    def result(self) -> tuple[list[str], set[str]]:
        order, hidden = [], set()
        for i in range(self.list.count()):
            it = self.list.item(i)
            key = it.data(Qt.UserRole)
            order.append(key)
            if it.checkState() != Qt.Checked:
                hidden.add(key)
        return order, hidden
