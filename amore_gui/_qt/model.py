"""The run table model: a ``QAbstractTableModel`` over :class:`~amore_gui.application.table_data.TableData`.

Cells are served from the column arrays (no item object per cell). Sorting and filtering are done
by :class:`~amore_gui.application.table_data.RowView` inside the model (no ``QSortFilterProxyModel``): a live
update of one run changes only that run's row and emits ``dataChanged`` for each of its changed
cells (so only those are repainted), or one row move / insert / remove when it changes the order
or the filter result.
"""
from __future__ import annotations

import math

import numpy as np
from qtpy.QtCore import QAbstractTableModel, QModelIndex, Qt, Signal
from qtpy.QtGui import QBrush, QColor, QFont

from amore_gui.application.dbread import ColumnsRead, ValueChunk
from amore_gui.application.formatting import cell_colour
from amore_gui.application.table_data import (C_COMMENT, C_STATUS, K_ERROR, K_NUMBER, K_BOOL, K_SKIPPED,
                          K_SPARKLINE, K_THUMBNAIL, NSTATIC, RUN_STATUSES, S_DONE, S_FAILED,
                          S_PENDING, S_PROCESSING, S_WAITING, RowView, RunUpdate, TableData,
                          sparkline_points)

KindRole = Qt.UserRole + 1      #: value kind code (table_data.K_*)
ValueRole = Qt.UserRole + 2     #: sparkline bytes / string / number
KeyRole = Qt.UserRole + 3       #: (proposal, run, column key)
StaleRole = Qt.UserRole + 4     #: (reason bits, text) of a stale value, else None

ERROR_FG = QColor("#a4262c")
ERROR_BG = QColor("#fdecee")
SKIPPED_FG = QColor("#8a8886")
STATUS_BG = {S_PROCESSING: QColor("#fff4ce"), S_FAILED: QColor("#fde7e9"),
             S_PENDING: QColor("#f3f2f1"), S_WAITING: QColor("#f3f2f1")}
STATUS_FG = {S_PROCESSING: QColor("#8a5300"), S_FAILED: QColor("#a4262c"),
             S_PENDING: QColor("#605e5c"), S_WAITING: QColor("#a4262c")}


def parse_color(spec) -> QColor | None:
    """A ``Cell(background=...)`` value (name, ``#rrggbb``, RGB(A) tuple 0-255 or 0-1)."""
    c = cell_colour(spec)
    if c is None:
        return None
    q = QColor(c) if isinstance(c, str) else QColor(*c)
    return q if q.isValid() else None


class RunTableModel(QAbstractTableModel):
    """Table model of the run table (see module docstring).

    Signals: ``runApplied((proposal, run))`` after a live update was applied;
    ``commentEdited(proposal, run, text)`` when the user edits a comment;
    ``includedChanged()`` when Status checkboxes change.
    """

    runApplied = Signal(object)
    commentEdited = Signal(object, int, str)
    #: a manual cell was edited: ([(proposal, run)], column name, new value)
    manualEdited = Signal(object, str, object)
    includedChanged = Signal()

    def __init__(self, data: TableData | None = None, parent=None):
        super().__init__(parent)
        self.data_obj = data if data is not None else TableData([])
        self.view = RowView(self.data_obj)
        self._bold = QFont()
        self._bold.setBold(True)
        self._italic = QFont()
        self._italic.setItalic(True)
        self._status_col = self.data_obj.col_of(C_STATUS)
        self._comment_col = self.data_obj.col_of(C_COMMENT)
        #: updates received while the table is still loading (applied when it is complete)
        self.loading = False
        #: updates held back while new column definitions are read (:meth:`hold_updates`)
        self.holding = False
        self._pending: list[RunUpdate] = []
        #: called with (proposal, run, name) when a thumbnail cell changed (cache invalidation)
        self.thumbnail_changed = None

    # -- whole-table changes ---------------------------------------------------------------
    def set_table(self, data: TableData, sort_key: str | None = None,
                  descending: bool | None = None, filters=None) -> None:
        """Replace the table (load or reload), keeping sort and filters unless given."""
        self.beginResetModel()
        old = self.view
        self.data_obj = data
        self.view = RowView(data, sort_key or old.sort_key,
                            old.descending if descending is None else descending)
        if filters is None:
            filters = old.filters
        self.view.filters = list(filters)
        self.view.rebuild()
        self._status_col = data.col_of(C_STATUS)
        self._comment_col = data.col_of(C_COMMENT)
        self.endResetModel()

    def merge_chunk(self, chunk: ValueChunk) -> None:
        """Merge values of older runs read in the background (progressive loading)."""
        added = chunk.merge_into(self.data_obj)
        if added:
            self._columns_added(added)
        if len(chunk.rows) and self.rowCount():
            pos = self.view.pos[chunk.rows]
            pos = pos[pos >= 0]
            if len(pos):
                self.dataChanged.emit(self.index(int(pos.min()), NSTATIC),
                                      self.index(int(pos.max()), self.columnCount() - 1))

    def take_columns(self, cols: ColumnsRead) -> list[int] | None:
        """New column definitions and stale marks (:meth:`ColumnsRead.apply_to`), taken in
        place: headers and cells repainted, added columns inserted. Returns the columns added,
        or None (nothing changed) when the whole table must be read again."""
        added = cols.apply_to(self.data_obj)
        if added is None:
            return None
        if added:
            self._columns_added(added)
        last = self.columnCount() - 1
        self.headerDataChanged.emit(Qt.Horizontal, 0, last)
        if self.rowCount():
            self.dataChanged.emit(self.index(0, NSTATIC), self.index(self.rowCount() - 1, last))
        return added

    def hold_updates(self) -> None:
        """Keep live updates back until :meth:`release_updates`: the column definitions are
        being read, and a value of a new column must not make a plain column before its
        definition (a manual column's type and editor) arrives."""
        self.holding = True

    def release_updates(self) -> None:
        """Apply the updates held back (unless the table is loading: then when it is
        complete)."""
        self.holding = False
        if not self.loading:
            pending, self._pending = self._pending, []
            for upd in pending:
                self.apply_run_update(upd)

    def finish_loading(self) -> None:
        """All values are in: re-sort/filter once if they depend on variable values, then apply
        the updates that arrived meanwhile."""
        self.loading = False
        if self.view.sort_col >= NSTATIC or self.view.filters:
            self.layoutAboutToBeChanged.emit()
            old = self._persistent_rows()
            self.view.rebuild()
            self._remap_persistent(old)
            self.layoutChanged.emit()
        pending, self._pending = self._pending, []
        for upd in pending:
            self.apply_run_update(upd)

    def _columns_added(self, cols: list[int]) -> None:
        # the arrays already have the columns; tell the views (they are appended at the end)
        first = min(cols)
        self.beginInsertColumns(QModelIndex(), first, max(cols))
        self.endInsertColumns()

    # -- Qt model interface ----------------------------------------------------------------
    def rowCount(self, parent=QModelIndex()):
        return 0 if parent.isValid() else len(self.view.order)

    def columnCount(self, parent=QModelIndex()):
        return 0 if parent.isValid() else len(self.data_obj.columns)

    def data_row(self, view_row: int) -> int:
        """Data row (index into the column arrays) shown at a view row."""
        return int(self.view.order[view_row])

    def run_at(self, view_row: int) -> tuple[int, int]:
        """(proposal, run) shown at a view row."""
        r = self.data_row(view_row)
        d = self.data_obj
        return _plain(d.proposal[r]), int(d.run[r])

    def view_row_of(self, proposal: int, run: int) -> int:
        """View row of a run, -1 if unknown or filtered out."""
        r = self.data_obj.find_row(proposal, run)
        if r is None or r >= len(self.view.pos):
            return -1
        return int(self.view.pos[r])

    def column_of(self, key: str) -> int:
        """Table column of a column key (-1 if unknown)."""
        c = self.data_obj.col_of(key)
        return -1 if c is None else c

    def data(self, index, role=Qt.DisplayRole):
        if not index.isValid():
            return None
        d = self.data_obj
        row = int(self.view.order[index.row()])
        col = index.column()
        if role == Qt.DisplayRole:
            return d.display(row, col)
        if role == Qt.EditRole:
            if col >= NSTATIC and d.columns[col].manual:
                return d.value(row, col)
            return d.comment[row] or "" if col == self._comment_col else d.display(row, col)
        if role == Qt.CheckStateRole:
            if col == self._status_col:
                return Qt.Checked if d.included[row] else Qt.Unchecked
            return None
        if role == Qt.ToolTipRole:
            tip = d.tooltip(row, col)
            if tip is None and col >= NSTATIC and d.cell_kind(row, col) == K_SPARKLINE:
                pts = self.sparkline(row, col)
                if pts is not None and len(pts):
                    with np.errstate(all="ignore"):
                        tip = (f"{len(pts)} points, min {np.nanmin(pts):.4g}, "
                               f"max {np.nanmax(pts):.4g} (double-click to plot)")
            elif tip is None and col >= NSTATIC and d.cell_kind(row, col) == K_THUMBNAIL:
                tip = "Double-click to inspect"
            return tip
        if role == Qt.TextAlignmentRole:
            k = d.cell_kind(row, col)
            if col == self._comment_col or col == self._status_col:
                return int(Qt.AlignLeft | Qt.AlignVCenter)
            if k == K_BOOL:
                return int(Qt.AlignHCenter | Qt.AlignVCenter)
            if k == K_NUMBER or col < NSTATIC:
                return int(Qt.AlignRight | Qt.AlignVCenter)
            return int(Qt.AlignLeft | Qt.AlignVCenter)
        if role == Qt.ForegroundRole:
            if col == self._status_col:
                c = STATUS_FG.get(int(d.status[row]))
                return QBrush(c) if c else None
            k = d.cell_kind(row, col)
            if k == K_ERROR:
                return QBrush(ERROR_FG)
            if k == K_SKIPPED:
                return QBrush(SKIPPED_FG)
            return None
        if role == Qt.BackgroundRole:
            c = self.cell_background(row, col)
            return QBrush(c) if c is not None else None
        if role == Qt.FontRole:
            a = d.cell_attrs(row, col)
            if a and a.get("bold"):
                return self._bold
            if col == self._status_col and d.status[row] != S_DONE:
                return self._italic
            if a and a.get("carried"):
                return self._italic
            return None
        if role == KindRole:
            return d.cell_kind(row, col)
        if role == ValueRole:
            if col >= NSTATIC:
                v = col - NSTATIC
                k = d.kind[row, v]
                return d.obj[row, v] if k not in (K_NUMBER, K_BOOL) else float(d.num[row, v])
            return d.value(row, col)
        if role == KeyRole:
            return _plain(d.proposal[row]), int(d.run[row]), d.columns[col].key
        if role == StaleRole:
            return d.stale_info(row, col - NSTATIC) if col >= NSTATIC else None
        return None

    def cell_background(self, row: int, col: int) -> QColor | None:
        """Background colour of a cell (errors, Cell(background=...), run status), or None."""
        d = self.data_obj
        if col == self._status_col:
            return STATUS_BG.get(int(d.status[row]))
        if col < NSTATIC:
            return None
        k = d.kind[row, col - NSTATIC]
        if k == K_ERROR:
            return ERROR_BG
        a = d.attrs.get((row, col - NSTATIC))
        if a and "background" in a:
            return parse_color(a["background"])
        return None

    def sparkline(self, row: int, col: int) -> np.ndarray | None:
        """The float32 points of a sparkline cell, or None."""
        return sparkline_points(self.data_obj.obj[row, col - NSTATIC])

    def headerData(self, section, orientation, role=Qt.DisplayRole):
        if orientation != Qt.Horizontal:
            if role == Qt.DisplayRole:
                return str(section + 1)
            return None
        cols = self.data_obj.columns
        if section >= len(cols):
            return None
        c = cols[section]
        if role == Qt.DisplayRole:
            return c.header if c.variable else c.title
        if role == Qt.ToolTipRole:
            parts = [f"<b>{c.title}</b>" + (f" [{c.units}]" if c.units else "")]
            if c.variable:
                parts.append(f"<i>{c.key}</i>")
            if c.description:
                parts.append(c.description)
            if c.tags:
                parts.append("Tags: " + ", ".join(c.tags))
            return "<br>".join(parts)
        if role == Qt.TextAlignmentRole:
            return int(Qt.AlignLeft | Qt.AlignVCenter)
        return None

    def flags(self, index):
        if not index.isValid():
            return Qt.NoItemFlags
        f = Qt.ItemIsEnabled | Qt.ItemIsSelectable
        if index.column() == self._comment_col:
            f |= Qt.ItemIsEditable
        elif index.column() >= NSTATIC and self.data_obj.columns[index.column()].manual:
            f |= Qt.ItemIsEditable
        elif index.column() == self._status_col:
            f |= Qt.ItemIsUserCheckable
        return f

    def setData(self, index, value, role=Qt.EditRole):
        if not index.isValid():
            return False
        d = self.data_obj
        row = int(self.view.order[index.row()])
        col = index.column()
        if col == self._comment_col and role == Qt.EditRole:
            text = str(value).strip()
            if (d.comment[row] or "") == text:
                return False
            d.comment[row] = text or None
            self._refresh_row(row, {col})
            self.commentEdited.emit(_plain(d.proposal[row]), int(d.run[row]), text)
            return True
        if col >= NSTATIC and role == Qt.EditRole and d.columns[col].manual:
            self.manualEdited.emit([(_plain(d.proposal[row]), int(d.run[row]))],
                                   d.columns[col].key, value)
            return True
        if col == self._status_col and role == Qt.CheckStateRole:
            d.included[row] = (value == Qt.Checked or value == 2 or value is True)
            self._refresh_row(row, {col})
            self.includedChanged.emit()
            return True
        return False

    def set_included(self, keys, included: bool) -> None:
        """Check/uncheck the Status box of runs ``keys`` ((proposal, run) pairs)."""
        d = self.data_obj
        for key in keys:
            row = d.row_of.get(tuple(key))
            if row is not None and bool(d.included[row]) != included:
                d.included[row] = included
                self._refresh_row(row, {self._status_col})
        self.includedChanged.emit()

    # -- sorting and filtering -------------------------------------------------------------
    def _persistent_rows(self):
        return [(p, int(self.view.order[p.row()]) if p.row() < len(self.view.order) else -1)
                for p in self.persistentIndexList()]

    def _remap_persistent(self, old) -> None:
        pos = self.view.pos
        frm, to = [], []
        for p, row in old:
            frm.append(p)
            np_ = int(pos[row]) if 0 <= row < len(pos) else -1
            to.append(self.index(np_, p.column()) if np_ >= 0 else QModelIndex())
        if frm:
            self.changePersistentIndexList(frm, to)

    def sort(self, column, order=Qt.AscendingOrder):
        if column < 0 or column >= self.columnCount():
            return
        key = self.data_obj.columns[column].key
        desc = order == Qt.DescendingOrder
        if key == self.view.sort_key and desc == self.view.descending:
            return
        self.layoutAboutToBeChanged.emit()
        old = self._persistent_rows()
        self.view.set_sort(key, desc)
        self._remap_persistent(old)
        self.layoutChanged.emit()

    def set_filters(self, filters) -> None:
        """Replace the row filters (table_data.NumberRange, TextContains, OnlyIncluded)."""
        self.beginResetModel()
        self.view.set_filters(filters)
        self.endResetModel()

    @property
    def filters(self) -> list:
        return list(self.view.filters)

    # -- live updates ----------------------------------------------------------------------
    def apply_run_update(self, upd: RunUpdate) -> None:
        """Apply one run's new state: only its row's cells change (see module docstring)."""
        if self.loading or self.holding:
            self._pending.append(upd)
            return
        d = self.data_obj
        ncols_before = len(d.columns)
        row, changed, new, added = d.apply_update(upd)
        if added:
            self._columns_added(list(range(ncols_before, len(d.columns))))
        if self.thumbnail_changed is not None:
            for name, cell in upd.values.items():
                if cell.kind == K_THUMBNAIL:
                    self.thumbnail_changed(upd.proposal, upd.run, name)
        if changed or new:
            self._refresh_row(row, changed, new)
        self.runApplied.emit((upd.proposal, upd.run))

    def _refresh_row(self, row: int, changed: set[int], new: bool = False) -> None:
        ch = self.view.update_row(row, changed, new)
        if ch.kind == "changed":
            self._cells_changed(ch.pos, changed)
        elif ch.kind == "inserted":
            # the view already contains the row: announce it
            self.view.order = np.delete(self.view.order, ch.pos)
            self.beginInsertRows(QModelIndex(), ch.pos, ch.pos)
            self.view.order = np.insert(self.view.order, ch.pos, row)
            self.endInsertRows()
        elif ch.kind == "removed":
            order = self.view.order
            self.view.order = np.insert(order, ch.old, row)
            self.beginRemoveRows(QModelIndex(), ch.old, ch.old)
            self.view.order = order
            self.endRemoveRows()
        elif ch.kind == "moved":
            new_order = self.view.order
            self.view.order = np.insert(np.delete(new_order, ch.pos), ch.old, row)
            dest = ch.pos + 1 if ch.pos > ch.old else ch.pos
            ok = self.beginMoveRows(QModelIndex(), ch.old, ch.old, QModelIndex(), dest)
            self.view.order = new_order
            if ok:
                self.endMoveRows()
            else:                       # pragma: no cover - Qt refused the move
                self.layoutChanged.emit()
            self._cells_changed(ch.pos, changed)

    def _cells_changed(self, view_row: int, changed: set[int]) -> None:
        """``dataChanged`` for each changed cell of one row on its own (all cells of the row
        if ``changed`` is empty). One index per signal: Qt 5's views repaint just that cell's
        rectangle (nothing for hidden or scrolled-away columns), whereas a range, even within
        one row, makes them repaint the whole viewport - every pixel again over a remote X
        connection."""
        cols = sorted(changed) if changed else range(self.columnCount())
        make, emit = self.createIndex, self.dataChanged.emit
        for c in cols:
            idx = make(view_row, c)             # not index(): no rowCount/columnCount calls
            emit(idx, idx)

    # -- helpers for plots/export ----------------------------------------------------------
    def visible_rows(self) -> np.ndarray:
        """Data rows in view order."""
        return self.view.order.copy()

    def status_text(self, row: int) -> str:
        """Processing status of a data row (pending/processing/done/failed)."""
        s = int(self.data_obj.status[row])
        return RUN_STATUSES[s]

    def is_finite_number(self, row: int, col: int) -> bool:
        """True if a cell holds a finite number."""
        x = self.data_obj.numeric_at(row, col)
        return not math.isnan(x)


def _plain(proposal):
    """int for numeric proposals, str for identifiers such as 'mx2532'."""
    return proposal if isinstance(proposal, str) else int(proposal)
