"""Manual columns, expression filters, logs, grouping, copying and the dark theme in the main
window. :func:`install` adds them to a :class:`~amore_gui._qt.mainwindow.MainWindow`; the state
and the writes are Qt-free (:mod:`amore_gui.application.manual_edit`,
:mod:`amore_gui.application.query`, :mod:`amore_gui.application.export`).

* Cells of manual columns edit in place (double-click or F2) with an editor that fits the type:
  a check box (boolean), a spin box showing the units (integer, number), a combo box (choice),
  a line edit (string). With several runs selected, the value goes to all of them. Carried-over
  values are drawn in italics; a cell's tooltip says who set it, when, from where.
* Right-click a cell: history of a manual cell, clear it, the run's processing log, group rows
  by that column (count and means), copy as TSV/Markdown.
* View menu: "Add manual column…", "Group rows…", "Dark theme" (remembered).
* Ctrl+C copies the selection as TSV; every toolbar action has a shortcut.
"""
from __future__ import annotations

import html
import math
import time

from qtpy.QtCore import Qt
from qtpy.QtGui import QColor, QFont, QKeySequence, QPalette
from qtpy.QtWidgets import (QAbstractItemView, QAction, QApplication, QCheckBox, QComboBox,
                             QDialog, QDialogButtonBox, QDoubleSpinBox, QFormLayout, QHBoxLayout,
                             QLabel, QLineEdit, QListWidget, QListWidgetItem, QPlainTextEdit,
                             QShortcut, QSpinBox, QTableWidget, QTableWidgetItem, QVBoxLayout)

from amore_gui.application import export as export_mod
from amore_gui.application.manual_edit import (add_manual_column, group_rows, read_history,
                                              read_run_log, set_manual_values)
from amore_gui.application.table_data import NSTATIC
from amore_gui._qt.delegates import CellDelegate

#: shortcuts of toolbar actions (attribute of the main window -> key sequence), for those the
#: window does not give one itself
TOOLBAR_SHORTCUTS = {
    "act_filter": "Ctrl+Shift+F",
    "act_columns": "Ctrl+Shift+L",
    "act_plot": "Ctrl+P",
    "act_corr": "Ctrl+Shift+P",
    "act_reprocess": "Ctrl+R",
    "act_context": "Ctrl+K",
    "act_logbook": "Ctrl+L",
    "act_export": "Ctrl+E",
    "act_images": "Ctrl+Shift+T",
}


# ---------------------------------------------------------------------------------------------
# editors

class ManualDelegate(CellDelegate):
    """The table's delegate, with type-fitting editors for manual columns."""

    def _manual(self, index):
        return self._model().data_obj.columns[index.column()].manual

    def createEditor(self, parent, option, index):
        m = self._manual(index)
        if not m:
            return super().createEditor(parent, option, index)
        col = self._model().data_obj.columns[index.column()]
        t = m["type"]
        if t == "boolean":
            w = QCheckBox(col.title, parent)
            w.setAutoFillBackground(True)
        elif t == "choice":
            w = QComboBox(parent)
            w.addItem("", None)
            for c in m.get("choices") or []:
                w.addItem(c, c)
        elif t == "integer":
            w = QSpinBox(parent)
            w.setRange(-2_000_000_000, 2_000_000_000)
        elif t == "number":
            w = QDoubleSpinBox(parent)
            w.setDecimals(6)
            w.setRange(-1e15, 1e15)
        else:
            w = QLineEdit(parent)
        if t in ("integer", "number") and col.units:
            w.setSuffix(f" {col.units}")
        w.setObjectName(f"manual-editor-{t}")
        return w

    def setEditorData(self, editor, index):
        m = self._manual(index)
        if not m:
            return super().setEditorData(editor, index)
        v = index.data(Qt.EditRole)
        if isinstance(editor, QCheckBox):
            editor.setChecked(bool(v))
        elif isinstance(editor, QComboBox):
            i = editor.findData(v)
            editor.setCurrentIndex(max(i, 0))
        elif isinstance(editor, (QSpinBox, QDoubleSpinBox)):
            if v is not None and not (isinstance(v, float) and math.isnan(v)):
                editor.setValue(int(v) if isinstance(editor, QSpinBox) else float(v))
        else:
            editor.setText("" if v is None else str(v))

    def setModelData(self, editor, model, index):
        m = self._manual(index)
        if not m:
            return super().setModelData(editor, model, index)
        if isinstance(editor, QCheckBox):
            value = editor.isChecked()
        elif isinstance(editor, QComboBox):
            value = editor.currentData()
        elif isinstance(editor, QSpinBox):
            value = int(editor.value())
        elif isinstance(editor, QDoubleSpinBox):
            value = float(editor.value())
        else:
            value = editor.text()
        model.setData(index, value, Qt.EditRole)


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
            poke(self.win)
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


# ---------------------------------------------------------------------------------------------
# actions

def poke(win) -> None:
    """Make the live updates check the database now (after this GUI wrote to it)."""
    t = getattr(win, "update_thread", None)
    if t is not None:
        t.poke()


def edit_manual(win, keys, name, value) -> None:
    """The model's ``manualEdited``: apply to every selected run when the edited run is one of
    several selected."""
    sel = win.selected_runs()
    if len(sel) > 1 and keys[0] in sel:
        keys = sel
    set_manual_values(win.session, keys, name, value, on_done=lambda *_: poke(win))


def selection_cells(win) -> tuple[list[int], list[int]]:
    """Selected data rows (view order) and the visible columns (visual order)."""
    idx = win.table.selectionModel().selectedIndexes()
    vrows = sorted({i.row() for i in idx})
    rows = [int(win.model.view.order[r]) for r in vrows]
    cols = [c for c in win.visible_columns() if any(i.column() == c for i in idx)]
    return rows, cols


def copy_selection(win, fmt: str = "tsv") -> str:
    """Copy the selected cells as TSV (spreadsheets) or Markdown (e-logs); returns the text."""
    rows, cols = selection_cells(win)
    if not rows:
        return ""
    data = win.model.data_obj
    text = (export_mod.markdown_table(data, rows, cols) if fmt == "markdown"
            else export_mod.tsv_text(data, rows, cols))
    QApplication.clipboard().setText(text)
    win.message(f"Copied {len(rows)} run(s) × {len(cols)} column(s) as "
                f"{'Markdown' if fmt == 'markdown' else 'TSV'}")
    return text


def show_history(win, proposal, run, name):
    col = win.model.data_obj.columns[win.model.data_obj.col_of(name)]

    def done(rows, err):
        if err:
            win.message(f"History not available: {err}", error=True)
            return
        table = [[time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["timestamp"])),
                  r["display"] + (" (carried over)" if r["carried"] else ""),
                  r["author"] or "", r["via"] or "", r["text"] or ""] for r in rows]
        dlg = TableDialog(win, f"History of {col.title}, run {run}",
                          ["When", "Value", "Who", "From", "Typed"], table)
        win._last_dialog = dlg
        dlg.show()
    win.tasks.submit(read_history, win.context_dir, proposal, run, name, callback=done)


def show_run_log(win, proposal, run):
    def done(logs, err):
        if err:
            win.message(f"Log not available: {err}", error=True)
            return
        parts = [f"=== {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(e['timestamp']))}: "
                 f"{e['status']} ===\n{e['text'] or '(nothing printed)'}" for e in logs]
        dlg = TextDialog(win, f"Processing log of run {run}",
                         "\n".join(parts) or "No processing log for this run yet.")
        win._last_dialog = dlg
        dlg.show()
    win.tasks.submit(read_run_log, win.context_dir, run, proposal, callback=done)


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


def show_groups(win, col: int, tolerance: float = 0.01):
    """Open the grouping dialog, grouping by column ``col`` to begin with."""
    dlg = GroupDialog(win, [col], tolerance)
    win._last_dialog = dlg
    dlg.show()
    return dlg


def table_menu_items(win, menu, idx, keys) -> None:
    """Entries added to the table's context menu."""
    if not idx.isValid():
        return
    data = win.model.data_obj
    col = idx.column()
    column = data.columns[col]
    row = int(win.model.view.order[idx.row()])
    proposal, run = _proposal(data.proposal[row]), int(data.run[row])
    menu.addSeparator()
    if column.manual:
        menu.addAction(f"History of {column.title} in run {run}…",
                       lambda: show_history(win, proposal, run, column.key))
        targets = keys if (proposal, run) in keys else [(proposal, run)]
        carried = [k for k in targets if (data.cell_attrs(data.row_of[k], col) or {}).get("carried")]
        if carried:
            menu.addAction(f"Confirm carried-over {column.title} of {len(carried)} run(s)",
                           lambda: set_manual_values(win.session, carried, column.key, None,
                                                     on_done=lambda *_: poke(win), confirm=True))
        menu.addAction(f"Clear {column.title} of {len(targets)} run(s)",
                       lambda: set_manual_values(win.session, targets, column.key, None,
                                                 on_done=lambda *_: poke(win)))
    menu.addAction(f"Processing log of run {run}…", lambda: show_run_log(win, proposal, run))
    menu.addAction(f"Group rows by {column.title}…", lambda: show_groups(win, col))
    menu.addAction("Copy selection as TSV", lambda: copy_selection(win, "tsv"))
    menu.addAction("Copy selection as Markdown", lambda: copy_selection(win, "markdown"))


# ---------------------------------------------------------------------------------------------
# dark theme

def dark_palette() -> QPalette:
    p = QPalette()
    base, alt, text = QColor(35, 38, 41), QColor(45, 49, 53), QColor(230, 230, 230)
    p.setColor(QPalette.Window, QColor(49, 54, 59))
    p.setColor(QPalette.WindowText, text)
    p.setColor(QPalette.Base, base)
    p.setColor(QPalette.AlternateBase, alt)
    p.setColor(QPalette.ToolTipBase, QColor(60, 64, 70))
    p.setColor(QPalette.ToolTipText, text)
    p.setColor(QPalette.Text, text)
    p.setColor(QPalette.Button, QColor(49, 54, 59))
    p.setColor(QPalette.ButtonText, text)
    p.setColor(QPalette.BrightText, QColor(255, 80, 80))
    p.setColor(QPalette.Link, QColor(90, 170, 255))
    p.setColor(QPalette.Highlight, QColor(61, 174, 233))
    p.setColor(QPalette.HighlightedText, QColor(20, 20, 20))
    p.setColor(QPalette.Disabled, QPalette.Text, QColor(128, 128, 128))
    p.setColor(QPalette.Disabled, QPalette.ButtonText, QColor(128, 128, 128))
    return p


_LIGHT: dict = {}


def set_dark_theme(win, on: bool, remember: bool = True) -> None:
    """Switch the application's palette; remembered in the user's GUI settings."""
    app = QApplication.instance()
    if "palette" not in _LIGHT:
        _LIGHT["palette"] = QPalette(app.palette())
        _LIGHT["style"] = app.style().objectName()
    if on:
        app.setStyle("Fusion")
        app.setPalette(dark_palette())
    else:
        app.setStyle(_LIGHT["style"] or "Fusion")
        app.setPalette(_LIGHT["palette"])
    win.table.viewport().update()
    if remember:
        win.settings.values["theme"] = "dark" if on else "light"
        win.settings.save()


# ---------------------------------------------------------------------------------------------
# filter box

def show_filter_state(win, _filters=None) -> None:
    """Mark the filter box red with the error when its expression is not right."""
    from amore_gui.application.query import ExpressionFilter
    err = win.session.search_error
    if err is None:
        for f in win.model.view.filters:
            if isinstance(f, ExpressionFilter) and f.error is not None:
                err = f.error
    if err is not None:
        win.search.setStyleSheet("QLineEdit { border: 1px solid #d32f2f; }")
        win.search.setToolTip(f"<pre>{html.escape(str(err))}</pre>")
        win.statusBar().showMessage(f"Filter: {str(err).splitlines()[0]}", 8000)
    else:
        win.search.setStyleSheet("")
        win.search.setToolTip(FILTER_HELP)


FILTER_HELP = ("<b>Search text</b> (runs, comments, text cells) <b>or an expression</b>:<br>"
               "<tt>run in 100..140 and sample ~ \"lyso\"</tt><br>"
               "<tt>pulse_energy &gt; 0.5 mJ</tt> (units converted)<br>"
               "<tt>`Detector distance` &gt;= 2 cm and good</tt><br>"
               "<tt>not has(sample) or failed(flaky)</tt><br>"
               "== != &lt; &lt;= &gt; &gt;=, and, or, not, (), none, true/false")


# ---------------------------------------------------------------------------------------------

def install(win) -> None:
    """Add manual-column editing, expression filtering, logs, grouping, copying, the dark theme
    and toolbar shortcuts to the main window ``win``."""
    win.delegate = ManualDelegate(lambda: win.model, win.thumbs, win.table)
    win.table.setItemDelegate(win.delegate)
    win.model.manualEdited.connect(lambda keys, name, value: edit_manual(win, keys, name, value))
    win.extra_table_menu = getattr(win, "extra_table_menu", []) + [
        lambda menu, idx, keys: table_menu_items(win, menu, idx, keys)]
    win.search.setPlaceholderText('Search, or filter: run > 10 and sample ~ "lyso"')
    win.search.setToolTip(FILTER_HELP)
    win.search.setMinimumWidth(300)
    win.search.setMaximumWidth(420)
    win.session.events.filters.connect(lambda f: show_filter_state(win, f))

    for attr, keys in TOOLBAR_SHORTCUTS.items():
        a = getattr(win, attr, None)
        if a is not None and a.shortcut().isEmpty():
            a.setShortcut(QKeySequence(keys))
    for a in win.findChildren(QAction):       # say the shortcut in tooltips too
        if not a.shortcut().isEmpty() and a.toolTip() and "(" not in a.toolTip():
            a.setToolTip(f"{a.toolTip()} ({a.shortcut().toString(QKeySequence.NativeText)})")

    def act(text, slot, shortcut=None, checkable=False):
        a = QAction(text, win)
        if shortcut:
            a.setShortcut(QKeySequence(shortcut))
        a.setCheckable(checkable)
        a.triggered.connect(slot)
        return a
    win.act_add_column = act("Add manual column…", lambda: _open_add_column(win), "Ctrl+Shift+N")
    win.act_copy_tsv = act("Copy selection as TSV", lambda: copy_selection(win, "tsv"), "Ctrl+C")
    win.act_copy_tsv.setShortcutContext(Qt.WidgetWithChildrenShortcut)
    win.table.addAction(win.act_copy_tsv)
    win.act_copy_md = act("Copy selection as Markdown", lambda: copy_selection(win, "markdown"),
                          "Ctrl+Shift+C")
    win.act_group = act("Group rows by current column…", lambda: _group_current(win),
                        "Ctrl+Shift+G")
    win.act_dark = act("Dark theme", lambda on: set_dark_theme(win, on), "Ctrl+Shift+D",
                       checkable=True)
    menus = {m.title().replace("&", ""): m for m in
             (a.menu() for a in win.menuBar().actions()) if m is not None}
    view = menus.get("View")
    if view is not None:
        view.addSeparator()
        for a in (win.act_add_column, win.act_group, win.act_dark):
            view.addAction(a)
    edit = menus.get("File")
    if edit is not None:
        edit.insertActions(edit.actions()[-1] if edit.actions() else None,
                           [win.act_copy_tsv, win.act_copy_md])
    if win.settings.values.get("theme") == "dark":
        win.act_dark.setChecked(True)
        set_dark_theme(win, True, remember=False)
    # F2 or typing starts editing too (manual cells)
    win.table.setEditTriggers(win.table.editTriggers() | QAbstractItemView.AnyKeyPressed)
    QShortcut(QKeySequence("Ctrl+Shift+H"), win, activated=lambda: _history_current(win))


def _open_add_column(win):
    dlg = AddColumnDialog(win)
    win._last_dialog = dlg
    dlg.show()
    return dlg


def _group_current(win):
    idx = win.table.currentIndex()
    col = idx.column() if idx.isValid() else win.model.column_of("#status")
    return show_groups(win, col)


def _history_current(win):
    idx = win.table.currentIndex()
    if not idx.isValid():
        return
    d = win.model.data_obj
    column = d.columns[idx.column()]
    if column.manual:
        row = int(win.model.view.order[idx.row()])
        show_history(win, _proposal(d.proposal[row]), int(d.run[row]), column.key)


def _proposal(p) -> int | str:
    """A table cell's proposal as stored: int for numbers (numpy ints too), str for
    identifiers (ESRF ``mx2532``)."""
    return p if isinstance(p, str) else int(p)
