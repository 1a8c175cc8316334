"""The run table's columns in the main window: layout (visual order, hidden columns, widths),
the tag selector, the header's context menu, the Columns dialog and the row height.

:class:`ColumnsController` applies what the session remembers
(:meth:`~amore_gui.application.session.Session.initial_layout`) to the table's header, fits the
widths of columns the user did not size, and hands the header's state back to the session
(:meth:`~amore_gui.application.session.Session.remember`), debounced by one second.
"""
from __future__ import annotations

from qtpy.QtCore import QObject, Qt, QTimer
from qtpy.QtGui import QFontMetrics
from qtpy.QtWidgets import QComboBox, QMenu

from amore_gui.application.table_data import (C_COMMENT, C_RUN, C_STATUS, K_SPARKLINE,
                                             K_THUMBNAIL, NSTATIC)
from amore_gui._qt.app import make_action
from amore_gui._qt.delegates import CellDelegate
from amore_gui._qt.table import ROW_COMPACT, ROW_IMAGES


class ColumnsController(QObject):
    """Columns of the window's run table (see module docstring). ``window``: the
    :class:`~amore_gui._qt.mainwindow.MainWindow` (its session, model and table view)."""

    def __init__(self, window):
        super().__init__(window)
        self.window = window
        self.session = window.session
        self.model = window.model
        self.table = window.table
        self.thumbs = window.thumbs
        self._applying = False
        #: rows present when column widths were last fitted
        self.layout_rows = 0
        self._save_timer = QTimer(self, singleShot=True, interval=1000)
        self._save_timer.timeout.connect(self.save)

        self.tag_combo = QComboBox()
        self.tag_combo.setToolTip("Show only variables with this tag")
        self.tag_combo.addItem("All", "")
        self.tag_combo.currentIndexChanged.connect(
            lambda _: self.session.set_tag(self.tag_combo.currentData() or ""))
        self.act_columns = make_action(window, "Columns…", self.dialog, "Ctrl+Shift+L",
                                       "Show, hide and reorder columns")
        self.act_images = make_action(window, "Tall rows for images", self.session.set_tall_rows,
                                      "Ctrl+Shift+T", "Row height fitting thumbnails",
                                      checkable=True)

        hh = self.table.horizontalHeader()
        hh.customContextMenuRequested.connect(self._header_menu)
        hh.sectionMoved.connect(self._layout_changed)
        hh.sectionResized.connect(self._column_resized)
        hh.sortIndicatorChanged.connect(self._layout_changed)
        ev = self.session.events
        ev.columns.connect(self.apply_visibility)
        ev.row_height.connect(lambda tall: self.set_row_height(ROW_IMAGES if tall else ROW_COMPACT))
        ev.save_requested.connect(self.request_save)

    def keys(self) -> list[str]:
        """Column keys in logical (model) order."""
        return [c.key for c in self.model.data_obj.columns]

    # -- applying the remembered layout ----------------------------------------------------
    def apply_layout(self) -> None:
        """Visual order, hidden columns and widths from the settings (new columns after
        their neighbours); the row height."""
        self._applying = True
        self.layout_rows = self.model.data_obj.nrows
        try:
            hh = self.table.horizontalHeader()
            keys = self.keys()
            order, _hidden, widths = self.session.initial_layout(self.model.data_obj)
            index = {k: i for i, k in enumerate(keys)}
            for visual, key in enumerate(order):
                logical = index[key]
                cur = hh.visualIndex(logical)
                if cur != visual:
                    hh.moveSection(cur, visual)
            self.apply_visibility()
            auto = self.auto_widths()
            for key, i in index.items():
                w = widths.get(key) or auto.get(key)
                if w:
                    hh.resizeSection(i, int(w))
            has_images = any(K_THUMBNAIL in self.model.data_obj.column_kinds(c)
                             for c in range(NSTATIC, len(keys)) if not hh.isSectionHidden(c))
            tall = self.session.tall_rows(default=has_images)
            self.act_images.setChecked(bool(tall))
            self.set_row_height(ROW_IMAGES if tall else ROW_COMPACT)
        finally:
            self._applying = False

    def show_sort(self) -> None:
        """Show the model's sort column and direction in the header."""
        col = self.model.column_of(self.model.view.sort_key)
        self.table.horizontalHeader().setSortIndicator(
            col, Qt.DescendingOrder if self.model.view.descending else Qt.AscendingOrder)

    def apply_visibility(self) -> None:
        """Hide the columns the session hides (user choice, tag)."""
        hh = self.table.horizontalHeader()
        for i, c in enumerate(self.model.data_obj.columns):
            hide = self.session.is_hidden(c)
            if hh.isSectionHidden(i) != hide:
                hh.setSectionHidden(i, hide)

    def auto_widths(self) -> dict:
        """Column widths from the header text and the first rows' texts (no full scan)."""
        return auto_widths(self.table, self.model)

    def set_row_height(self, h: int) -> None:
        vh = self.table.verticalHeader()
        if vh.defaultSectionSize() == h:
            return          # unchanged: repaint nothing (live updates refit the layout)
        vh.setDefaultSectionSize(h)
        self.thumbs.clear()
        self.table.viewport().update()

    # -- the user's changes ----------------------------------------------------------------
    def _layout_changed(self, *args):
        if not self._applying:
            self.request_save()

    def _column_resized(self, logical, _old, _new):
        """Only widths the user set are remembered; the others follow the content."""
        if not self._applying:
            keys = self.keys()
            if 0 <= logical < len(keys):
                self.session.column_resized_by_user(keys[logical])

    def column_layout(self) -> tuple[list[str], set[str]]:
        """Current visual order and user-hidden columns (keys)."""
        hh = self.table.horizontalHeader()
        keys = self.keys()
        order = [keys[hh.logicalIndex(v)] for v in range(hh.count())]
        return order, set(self.session.user_hidden)

    def request_save(self) -> None:
        """Remember the layout in a second (changes in between are saved together)."""
        self._save_timer.start()

    def save(self) -> None:
        """Remember layout, sort, unchecked runs, tag and logbook visibility now."""
        if not self.session.is_loaded:
            return
        hh = self.table.horizontalHeader()
        order, _hidden = self.column_layout()
        keys = self.keys()
        widths = {keys[i]: hh.sectionSize(i) for i in range(hh.count())
                  if not hh.isSectionHidden(i)}
        self.session.remember(self.model.data_obj, order, widths, self.model.view.sort_key,
                              self.model.view.descending)

    def set_column_order(self, order: list[str]) -> None:
        """Put the columns in this visual order (keys); remembered for this directory."""
        hh = self.table.horizontalHeader()
        index = {k: i for i, k in enumerate(self.keys())}
        self._applying = True
        try:
            for visual, key in enumerate(k for k in order if k in index):
                cur = hh.visualIndex(index[key])
                if cur != visual:
                    hh.moveSection(cur, visual)
        finally:
            self._applying = False
        self.request_save()

    def dialog(self) -> None:
        """Let the user show, hide and reorder columns."""
        from amore_gui._qt.dialogs import ColumnsDialog
        order, hidden = self.column_layout()
        dlg = ColumnsDialog(self.model.data_obj, order, hidden, self.window)
        if dlg.exec():
            order, hidden = dlg.result()
            self.set_column_order(order)
            self.session.set_hidden_columns(hidden)

    def refresh_tags(self) -> None:
        """Offer the tags of the table's variables (the selected one kept if still there)."""
        tags = self.session.tags(self.model.data_obj)
        self.tag_combo.blockSignals(True)
        self.tag_combo.clear()
        self.tag_combo.addItem("All", "")
        for t in tags:
            self.tag_combo.addItem(t, t)
        i = self.tag_combo.findData(self.session.tag)
        self.tag_combo.setCurrentIndex(max(0, i))
        self.tag_combo.blockSignals(False)
        if i < 0:
            self.session.set_tag("")

    def _header_menu(self, pos):
        win = self.window
        hh = self.table.horizontalHeader()
        logical = hh.logicalIndexAt(pos)
        m = QMenu(win)
        d = self.model.data_obj
        if logical >= 0:
            col = d.columns[logical]
            if col.key != C_RUN:
                m.addAction(f"Hide “{col.title}”",
                            lambda: self.session.set_column_hidden(col.key, True))
            m.addAction("Sort ascending", lambda: self.table.sortByColumn(logical, Qt.AscendingOrder))
            m.addAction("Sort descending", lambda: self.table.sortByColumn(logical, Qt.DescendingOrder))
            m.addAction("Filter on this column…", lambda: win.add_filter_dialog(logical))
            if d.is_numeric_column(logical) and logical >= NSTATIC:
                m.addAction("Plot against run number", lambda: win.open_plot(C_RUN, col.key))
            m.addSeparator()
        hidden = [c for c in d.columns if c.key in self.session.user_hidden]
        if hidden:
            sub = m.addMenu("Show column")
            for c in hidden[:40]:
                sub.addAction(c.title, lambda k=c.key: self.session.set_column_hidden(k, False))
        m.addAction("Columns…", self.dialog)
        m.exec(hh.mapToGlobal(pos))


def auto_widths(table, model) -> dict:
    """Column widths (column key -> pixels) of a run table view ``table`` showing ``model``:
    from the header text and the first rows' texts (no full scan)."""
    fm = QFontMetrics(table.font())
    d = model.data_obj
    rows = model.view.order[:40]
    out = {}
    pad = 2 * CellDelegate.PAD + 4
    for i, c in enumerate(d.columns):
        head = max((fm.horizontalAdvance(s) for s in (c.header if c.variable else c.title)
                    .split("\n")), default=40) + 26
        if c.key == C_STATUS:
            out[c.key] = max(head, fm.horizontalAdvance("processing") + 36)
            continue
        if c.key == C_COMMENT:
            out[c.key] = 220
            continue
        kinds = d.column_kinds(i) if c.variable else set()
        if K_THUMBNAIL in kinds:
            out[c.key] = max(head, 84)
            continue
        if K_SPARKLINE in kinds:
            out[c.key] = max(head, 110)
            continue
        cell = max((fm.horizontalAdvance(d.display(int(r), i)) for r in rows), default=0) + pad
        out[c.key] = int(min(max(head, cell, 48), 260))
    return out
