"""The run table's view: the ``QTableView``, its cell painting and thumbnails, selection and
navigation, its context menu and copying cells.

:class:`TableController` owns the view (:class:`RunTable`), the delegate
(:class:`~amore_gui._qt.delegates.ManualDelegate`), the thumbnail loader thread and cache, the
"Go to run" box and the copy actions. Other controllers add entries to the context menu with
:meth:`TableController.add_menu_section`.
"""
from __future__ import annotations

from qtpy.QtCore import QItemSelection, QItemSelectionModel, QModelIndex, QObject, Qt
from qtpy.QtGui import QFontMetrics, QIntValidator, QKeySequence
from qtpy.QtWidgets import (QAbstractItemView, QApplication, QHeaderView, QLineEdit,
                             QMenu, QShortcut, QTableView)

from amore_gui.application import export as export_mod
from amore_gui.application.table_data import C_RUN, NSTATIC
from amore_gui._qt.app import make_action
from amore_gui._qt.delegates import ManualDelegate, ThumbnailCache
from amore_gui._qt.workers import ThumbnailLoader

ROW_COMPACT = 26
ROW_IMAGES = 58


class RunTable(QTableView):
    """The table view: fixed row heights, movable columns, no per-row size computations;
    double-click, F2 or typing edits a comment or manual cell."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.setSelectionMode(QAbstractItemView.ExtendedSelection)
        self.setEditTriggers(QAbstractItemView.DoubleClicked | QAbstractItemView.EditKeyPressed
                             | QAbstractItemView.AnyKeyPressed)
        self.setAlternatingRowColors(True)
        self.setShowGrid(False)
        self.setWordWrap(False)
        self.setHorizontalScrollMode(QAbstractItemView.ScrollPerPixel)
        self.setVerticalScrollMode(QAbstractItemView.ScrollPerPixel)
        self.setSortingEnabled(True)
        vh = self.verticalHeader()
        vh.setVisible(False)
        vh.setSectionResizeMode(QHeaderView.Fixed)
        vh.setDefaultSectionSize(ROW_COMPACT)
        hh = self.horizontalHeader()
        hh.setSectionsMovable(True)
        hh.setHighlightSections(False)
        hh.setSectionResizeMode(QHeaderView.Interactive)
        hh.setDefaultAlignment(Qt.AlignLeft | Qt.AlignVCenter)
        hh.setStretchLastSection(False)
        hh.setContextMenuPolicy(Qt.CustomContextMenu)
        hh.setMinimumSectionSize(36)
        fm = QFontMetrics(self.font())
        hh.setFixedHeight(fm.height() * 2 + 12)


class TableController(QObject):
    """The view of the window's run table (see module docstring). ``window``: the
    :class:`~amore_gui._qt.mainwindow.MainWindow` (its model, workspace, child windows)."""

    def __init__(self, window):
        super().__init__(window)
        self.window = window
        self.model = window.model
        self.view = RunTable(window)
        self.view.setModel(self.model)
        self.thumb_loader = ThumbnailLoader(window.workspace, self)
        self.thumbs = ThumbnailCache(self.thumb_loader.request, parent=self)
        self.thumb_loader.loaded.connect(self.thumbs.put)
        self.thumbs.changed.connect(self._thumbnail_loaded)
        self.model.thumbnail_changed = lambda p, r, n: self.thumbs.invalidate((p, r, n))
        self.delegate = ManualDelegate(lambda: self.model, self.thumbs, self.view)
        self.view.setItemDelegate(self.delegate)
        self.view.doubleClicked.connect(self._double_clicked)
        self.view.setContextMenuPolicy(Qt.CustomContextMenu)
        self.view.customContextMenuRequested.connect(self._menu)
        #: ``section(menu, index, selected_keys)`` callables adding context-menu entries
        self._menu_sections: list = []

        self.goto = QLineEdit()
        self.goto.setValidator(QIntValidator(0, 10 ** 7))
        self.goto.setFixedWidth(70)
        self.goto.returnPressed.connect(lambda: self.jump_to_run(self.goto.text()))
        QShortcut(QKeySequence("Ctrl+G"), window, activated=lambda: (self.goto.setFocus(),
                                                                     self.goto.selectAll()))
        self.act_copy_tsv = make_action(window, "Copy selection as TSV",
                                        lambda: self.copy_selection("tsv"), "Ctrl+C")
        self.act_copy_tsv.setShortcutContext(Qt.WidgetWithChildrenShortcut)
        self.view.addAction(self.act_copy_tsv)
        self.act_copy_md = make_action(window, "Copy selection as Markdown",
                                       lambda: self.copy_selection("markdown"), "Ctrl+Shift+C")
        self.thumb_loader.start()

    def add_menu_section(self, section) -> None:
        """Call ``section(menu, index, selected_keys)`` when the context menu is built (after
        the table's own entries) to add entries."""
        self._menu_sections.append(section)

    # -- selection -------------------------------------------------------------------------
    def selection_by_keys(self):
        """The selection and current cell as (runs, first and last column keys) ranges, which
        survive a reload (rows and columns may move; a reset clears Qt's own selection)."""
        sm = self.view.selectionModel()
        if sm is None or not self.model.rowCount():
            return [], None
        cols = self.model.data_obj.columns
        last = len(cols) - 1
        # whole rows stay whole rows (None), however many columns the reload brings
        ranges = [([self.model.run_at(r) for r in range(rg.top(), rg.bottom() + 1)],
                   None if (rg.left(), rg.right()) == (0, last) else cols[rg.left()].key,
                   None if (rg.left(), rg.right()) == (0, last) else cols[rg.right()].key)
                  for rg in sm.selection()]
        cur = sm.currentIndex()
        current = ((self.model.run_at(cur.row()), cols[cur.column()].key)
                   if cur.isValid() else None)
        return ranges, current

    def restore_selection(self, selection) -> None:
        """Select again what :meth:`selection_by_keys` recorded (runs still in the view)."""
        ranges, current = selection
        m = self.model
        sel = QItemSelection()
        for runs, left, right in ranges:
            c0, c1 = ((0, m.columnCount() - 1) if left is None
                      else (m.column_of(left), m.column_of(right)))
            if c0 < 0 or c1 < 0:
                continue
            for prop, run in runs:
                row = m.view_row_of(prop, run)
                if row >= 0:
                    sel.select(m.index(row, c0), m.index(row, c1))
        sm = self.view.selectionModel()
        if not sel.isEmpty():
            sm.select(sel, QItemSelectionModel.ClearAndSelect)
        if current is not None:
            (prop, run), key = current
            row, col = m.view_row_of(prop, run), m.column_of(key)
            if row >= 0 and col >= 0:
                sm.setCurrentIndex(m.index(row, col), QItemSelectionModel.NoUpdate)

    def selected_runs(self) -> list[tuple[int, int]]:
        """(proposal, run) of the selected rows, in view order."""
        rows = sorted({i.row() for i in self.view.selectionModel().selectedRows()})
        return [self.model.run_at(r) for r in rows]

    def selection_cells(self) -> tuple[list[int], list[int]]:
        """Selected data rows (view order) and the visible columns (visual order)."""
        idx = self.view.selectionModel().selectedIndexes()
        vrows = sorted({i.row() for i in idx})
        rows = [int(self.model.view.order[r]) for r in vrows]
        cols = [c for c in self.visible_columns() if any(i.column() == c for i in idx)]
        return rows, cols

    def visible_columns(self) -> list[int]:
        """Visible table columns in visual order."""
        hh = self.view.horizontalHeader()
        out = []
        for v in range(hh.count()):
            logical = hh.logicalIndex(v)
            if not hh.isSectionHidden(logical):
                out.append(logical)
        return out

    def visible_cell_count(self) -> int:
        """Number of cells currently in the viewport (benchmarks)."""
        vp = self.view.viewport()
        top = self.view.rowAt(0)
        bottom = self.view.rowAt(vp.height() - 1)
        if top < 0:
            return 0
        bottom = self.model.rowCount() - 1 if bottom < 0 else bottom
        cols = [c for c in self.visible_columns()
                if self.view.columnViewportPosition(c) < vp.width()
                and self.view.columnViewportPosition(c) + self.view.columnWidth(c) > 0]
        return (bottom - top + 1) * len(cols)

    def jump_to_run(self, run) -> bool:
        """Select and show a run; says in the status bar if it is unknown or filtered out."""
        sb = self.window.statusBar()
        key = self.window.session.find_run(self.model.data_obj, run)
        if key is None:
            sb.showMessage(f"No run {run} in this table", 4000)
            return False
        vr = self.model.view_row_of(*key)
        if vr < 0:
            sb.showMessage(f"Run {run} is hidden by the filters", 4000)
            return False
        idx = self.model.index(vr, self.model.column_of(C_RUN))
        self.view.selectRow(vr)
        self.view.scrollTo(idx, QAbstractItemView.PositionAtCenter)
        return True

    # -- copying ---------------------------------------------------------------------------
    def copy_selection(self, fmt: str = "tsv") -> str:
        """Copy the selected cells as TSV (spreadsheets) or Markdown (e-logs); returns the
        text."""
        rows, cols = self.selection_cells()
        if not rows:
            return ""
        data = self.model.data_obj
        text = (export_mod.markdown_table(data, rows, cols) if fmt == "markdown"
                else export_mod.tsv_text(data, rows, cols))
        QApplication.clipboard().setText(text)
        self.window.message(f"Copied {len(rows)} run(s) × {len(cols)} column(s) as "
                            f"{'Markdown' if fmt == 'markdown' else 'TSV'}")
        return text

    # -- thumbnails, double-click, menu ----------------------------------------------------
    def _thumbnail_loaded(self, key):
        p, r, name = key
        vr = self.model.view_row_of(p, r)
        c = self.model.column_of(name)
        if vr >= 0 and c >= 0:
            self.view.update(self.model.index(vr, c))

    def _double_clicked(self, idx: QModelIndex):
        if idx.column() >= NSTATIC and not self.model.data_obj.columns[idx.column()].manual:
            self.window.inspect(idx)

    def _menu(self, pos):
        win = self.window
        idx = self.view.indexAt(pos)
        m = QMenu(win)
        keys = self.selected_runs()
        if idx.isValid():
            col = idx.column()
            if col >= NSTATIC:
                m.addAction("Inspect this value", lambda: win.inspect(idx))
        if keys:
            m.addAction(f"Check {len(keys)} selected run(s)",
                        lambda: self.model.set_included(keys, True))
            m.addAction(f"Uncheck {len(keys)} selected run(s)",
                        lambda: self.model.set_included(keys, False))
            m.addAction("Per-train plot of selected runs…", lambda: win.open_correlation())
            m.addAction(f"Reprocess {len(keys)} selected run(s)…",
                        lambda: win.open_reprocess(selected=True))
        if len(keys) == 1:
            m.addAction(f"Slurm jobs of run {keys[0][1]} (state, log, Cancel)…",
                        lambda: win.open_slurm_jobs(*keys[0]))
        for section in self._menu_sections:
            section(m, idx, keys)
        m.addSeparator()
        m.addAction(win.act_export)
        m.exec(self.view.viewport().mapToGlobal(pos))
