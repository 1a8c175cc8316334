"""The main window: the run table of one context directory, live.

The window only displays and forwards: the state of the open table (filters, column layout,
live source, backend state, comment writes) is the Qt-free
:class:`~amore_gui.application.session.Session`, which the window observes through its events.
The window never waits for the database, Kafka or a subprocess on the GUI thread: loading is
done by :class:`~amore_gui._qt.workers.LoadThread`, live updates by
:class:`~amore_gui._qt.workers.UpdateThread`, thumbnails by
:class:`~amore_gui._qt.workers.ThumbnailLoader`, writes and HDF5 reads by
:class:`~amore_gui._qt.workers.Tasks`, reprocessing and context-file checks by ``QProcess``.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from qtpy.QtCore import (QItemSelection, QItemSelectionModel, QModelIndex, QSize, Qt, QTimer,
                          Signal)
from qtpy.QtGui import QFontMetrics, QIntValidator, QKeySequence
from qtpy.QtWidgets import (QAbstractItemView, QAction, QCheckBox, QComboBox, QDockWidget,
                             QFileDialog, QHBoxLayout, QHeaderView, QLabel, QLineEdit,
                             QMainWindow, QMenu, QMessageBox, QShortcut, QTableView, QToolButton,
                             QVBoxLayout, QWidget)

from backend.contextdir import ContextDir

from amore_gui.application import export as export_mod
from amore_gui.application.session import Session
from amore_gui.application.settings import Settings
from amore_gui.application.table_data import (C_COMMENT, C_RUN, C_STATUS, K_SPARKLINE, K_THUMBNAIL,
                                             NSTATIC)
from amore_gui._qt.backend_control import BackendController, BackendLogWindow
from amore_gui._qt.delegates import CellDelegate, ThumbnailCache
from amore_gui._qt.model import RunTableModel
from amore_gui._qt.workers import LoadThread, Tasks, ThumbnailLoader, UpdateThread

log = logging.getLogger(__name__)

ROW_COMPACT = 26
ROW_IMAGES = 58


class RunTable(QTableView):
    """The table view: fixed row heights, movable columns, no per-row size computations."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.setSelectionMode(QAbstractItemView.ExtendedSelection)
        self.setEditTriggers(QAbstractItemView.DoubleClicked | QAbstractItemView.EditKeyPressed)
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


class MainWindow(QMainWindow):
    """The run table window of one context directory.

    ``live_updates``: start the live-update thread (Kafka or database watching).
    ``settings``: a :class:`~amore_gui.application.settings.Settings` (default: the user's file).
    ``session``: the window's :class:`~amore_gui.application.session.Session` (its state).
    Signals: ``loaded`` once the table is shown (newest runs' values in), ``fully_loaded``
    when all values are in.
    """

    loaded = Signal()
    fully_loaded = Signal()

    def __init__(self, context_dir: Path, live_updates: bool = True,
                 settings: Settings | None = None, use_kafka: bool = True,
                 offer_backend: bool = False, parent=None):
        super().__init__(parent)
        self.tasks = Tasks(self)
        self.session = Session(context_dir, settings or Settings(),
                               runner=lambda fn, cb: self.tasks.submit(fn, callback=cb),
                               offer_backend=offer_backend)
        self.context_dir = self.session.context_dir
        self.db_file = self.session.db_file
        self.settings = self.session.settings
        self.backend = BackendController(self.context_dir, self)
        self.backend.busy.connect(self._backend_busy)
        self.backend.done.connect(self._backend_done)
        self.backend.failed.connect(self._backend_failed)
        self.log_window = None
        self.live_updates = live_updates
        self.use_kafka = use_kafka
        self.update_thread: UpdateThread | None = None
        self.load_thread: LoadThread | None = None
        self._applying_layout = False
        self._layout_rows = 0  # rows present when column widths were last fitted
        self._windows: list = []
        self._closing = False

        self.model = RunTableModel(parent=self)
        self.model.commentEdited.connect(self.session.edit_comment)
        self.model.includedChanged.connect(self._included_changed)
        self.thumb_loader = ThumbnailLoader(self.context_dir, self)
        self.thumbs = ThumbnailCache(self.thumb_loader.request, parent=self)
        self.thumb_loader.loaded.connect(self.thumbs.put)
        self.thumbs.changed.connect(self._thumbnail_loaded)
        self.model.thumbnail_changed = lambda p, r, n: self.thumbs.invalidate((p, r, n))
        self.thumb_loader.start()

        self._save_timer = QTimer(self, singleShot=True, interval=1000)
        self._save_timer.timeout.connect(self.save_settings)
        self._search_timer = QTimer(self, singleShot=True, interval=250)
        self._search_timer.timeout.connect(lambda: self.session.set_search(self.search.text()))
        self._counts_timer = QTimer(self, singleShot=True, interval=200)
        self._counts_timer.timeout.connect(self._update_counts)
        self._build_ui()
        self.setWindowTitle(self.session.title)
        self._connect_session()
        from amore_gui._qt import manual
        manual.install(self)   # manual columns, expression filter, logs, grouping, theme
        self.start_load()

    # -- the session's state, as the tests and scripts read it -----------------------------
    @property
    def is_loaded(self) -> bool:
        return self.session.is_loaded

    @property
    def is_fully_loaded(self) -> bool:
        return self.session.is_fully_loaded

    @property
    def load_seconds(self) -> float:
        return self.session.load_seconds

    @property
    def proposal(self) -> int | None:
        return self.session.proposal

    @property
    def metadata(self) -> dict:
        return self.session.metadata

    @property
    def update_mode(self) -> str | None:
        return self.session.update_mode

    @property
    def update_source_text(self) -> str:
        return self.session.update_source_text

    @property
    def live_ready(self) -> bool:
        """True once live updates run and have caught up with changes made during loading."""
        return self.session.live_ready

    @property
    def backend_state(self):
        return self.session.backend_state

    @property
    def user_hidden(self) -> set[str]:
        return self.session.user_hidden

    @property
    def dir_settings(self) -> dict:
        return self.session.dir_settings

    def _connect_session(self):
        """The window follows the session only through its events."""
        ev = self.session.events
        ev.filters.connect(self._filters_changed)
        ev.columns.connect(self._apply_visibility)
        ev.row_height.connect(lambda tall: self._set_row_height(ROW_IMAGES if tall else ROW_COMPACT))
        ev.metadata.connect(lambda _p: self.setWindowTitle(self.session.title))
        ev.source.connect(self._on_source)
        ev.backend.connect(self._show_backend)
        ev.offer_backend.connect(lambda text, force: QTimer.singleShot(
            0, lambda: self._offer_to_start_backend(text, force)))
        ev.comment_saved.connect(lambda p, r: self.statusBar().showMessage(
            f"Comment of run {r} saved", 3000))
        ev.logbook_changed.connect(self._load_comments)
        ev.message.connect(lambda text, error: self.message(text, error=error))
        ev.save_requested.connect(self._save_timer.start)

    # -- UI --------------------------------------------------------------------------------
    def _build_ui(self):
        self.table = RunTable(self)
        self.table.setModel(self.model)
        self.delegate = CellDelegate(lambda: self.model, self.thumbs, self.table)
        self.table.setItemDelegate(self.delegate)
        self.table.doubleClicked.connect(self._double_clicked)
        self.table.setContextMenuPolicy(Qt.CustomContextMenu)
        self.table.customContextMenuRequested.connect(self._table_menu)
        hh = self.table.horizontalHeader()
        hh.customContextMenuRequested.connect(self._header_menu)
        hh.sectionMoved.connect(self._layout_changed)
        hh.sectionResized.connect(self._column_resized)
        hh.sortIndicatorChanged.connect(self._layout_changed)

        central = QWidget(self)
        lay = QVBoxLayout(central)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        self.chips = QWidget()
        self.chips_lay = QHBoxLayout(self.chips)
        self.chips_lay.setContentsMargins(8, 4, 8, 4)
        self.chips.setVisible(False)
        lay.addWidget(self.chips)
        lay.addWidget(self.table, 1)
        self.setCentralWidget(central)

        self._build_actions()
        self._build_toolbar()
        self._build_menus()

        from amore_gui._qt.dialogs import CommentsPanel
        self.comments_panel = CommentsPanel()
        self.comments_panel.add.connect(self._add_comment)
        self.comments_dock = QDockWidget("Logbook", self)
        self.comments_dock.setObjectName("logbook")
        self.comments_dock.setWidget(self.comments_panel)
        self.addDockWidget(Qt.RightDockWidgetArea, self.comments_dock)
        self.comments_dock.setVisible(self.session.logbook_visible)
        self.comments_dock.visibilityChanged.connect(self._logbook_toggled)
        self.act_logbook.setChecked(self.comments_dock.isVisible())

        sb = self.statusBar()
        self.counts_label = QLabel("Loading…")
        sb.addWidget(self.counts_label, 1)
        self.source_label = QLabel(self.session.update_source_text)
        sb.addPermanentWidget(self.source_label)
        self.backend_label = QLabel("Backend: …")
        sb.addPermanentWidget(self.backend_label)
        from amore_gui._qt.eventlog import EventLogController
        self.event_log = EventLogController(self)
        self.resize(1280, 800)
        geo = self.settings.values.get("geometry")
        if geo:
            try:
                self.restoreGeometry(bytes.fromhex(geo))
            except ValueError:
                pass
        QShortcut(QKeySequence("Ctrl+F"), self, activated=lambda: (self.search.setFocus(),
                                                                   self.search.selectAll()))
        QShortcut(QKeySequence("Ctrl+G"), self, activated=lambda: (self.goto.setFocus(),
                                                                   self.goto.selectAll()))

    def _build_actions(self):
        def act(text, slot, shortcut=None, tip=None, checkable=False):
            a = QAction(text, self)
            if shortcut:
                a.setShortcut(QKeySequence(shortcut))
            if tip:
                a.setToolTip(tip)
                a.setStatusTip(tip)
            a.setCheckable(checkable)
            a.triggered.connect(slot)
            return a
        self.act_open = act("Open…", self._open_other, "Ctrl+O", "Open another proposal or directory")
        self.act_export = act("Export…", self.export_dialog, "Ctrl+E",
                              "Export the visible table to CSV or Excel")
        self.act_plot = act("Plot", lambda: self.open_plot(), "Ctrl+P",
                            "Plot one variable against another across runs")
        self.act_corr = act("Per-train plot", lambda: self.open_correlation(), None,
                            "Correlate two per-train variables of the selected runs")
        self.act_reprocess = act("Reprocess…", lambda: self.open_reprocess(), None,
                                 "Recompute variables for the selected or all runs")
        self.act_context = act("Context file", lambda: self.open_editor(), None,
                               "Edit the context file (validated before saving)")
        self.act_ext_editor = act("Open context file in external editor",
                                  lambda: self.open_external_editor())
        self.act_columns = act("Columns…", self.columns_dialog, None, "Show, hide and reorder columns")
        self.act_filter = act("Filter…", lambda: self.add_filter_dialog(), None,
                              "Filter runs by a number range or text")
        self.act_logbook = act("Logbook", lambda c: self.comments_dock.setVisible(c), None,
                               "Standalone timestamped comments", checkable=True)
        self.act_images = act("Tall rows for images", self._toggle_row_height, None,
                              "Row height fitting thumbnails", checkable=True)
        self.act_reload = act("Reload", self.reload, "F5", "Read the whole table again")
        self.act_backend_start = act("Start backend", lambda: self.start_backend(), None,
                                     "Start the backend on this machine (in tmux)")
        self.act_backend_stop = act("Stop backend", lambda: self.backend.stop(), None,
                                    "Stop the backend running on this machine")
        self.act_backend_restart = act("Restart backend", lambda: self.backend.restart(), None,
                                       "Restart the backend (e.g. after updating AMORE)")
        self.act_backend_log = act("Backend log", lambda: self.show_backend_log(), None,
                                   "Live view of amore.log")
        self.act_quit = act("Quit", self.close, "Ctrl+Q")

    def _build_toolbar(self):
        tb = self.addToolBar("Main")
        tb.setObjectName("main-toolbar")
        tb.setMovable(False)
        tb.setIconSize(QSize(16, 16))
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search runs, comments, text…")
        self.search.setClearButtonEnabled(True)
        self.search.setMinimumWidth(220)
        self.search.setMaximumWidth(320)
        self.search.textChanged.connect(lambda _: self._search_timer.start())
        tb.addWidget(self.search)
        tb.addAction(self.act_filter)
        self.only_checked = QCheckBox("Checked only")
        self.only_checked.setToolTip("Show only runs whose Status box is checked")
        self.only_checked.toggled.connect(self.session.set_only_checked)
        tb.addWidget(self.only_checked)
        tb.addSeparator()
        tb.addWidget(QLabel("Variables:"))
        self.tag_combo = QComboBox()
        self.tag_combo.setToolTip("Show only variables with this tag")
        self.tag_combo.addItem("All", "")
        self.tag_combo.currentIndexChanged.connect(self._tag_changed)
        tb.addWidget(self.tag_combo)
        tb.addAction(self.act_columns)
        tb.addSeparator()
        tb.addWidget(QLabel("Go to run:"))
        self.goto = QLineEdit()
        self.goto.setValidator(QIntValidator(0, 10 ** 7))
        self.goto.setFixedWidth(70)
        self.goto.returnPressed.connect(lambda: self.jump_to_run(self.goto.text()))
        tb.addWidget(self.goto)
        tb.addSeparator()
        tb.addAction(self.act_plot)
        tb.addSeparator()
        tb.addAction(self.act_reprocess)
        tb.addAction(self.act_context)
        tb.addAction(self.act_logbook)
        tb.addAction(self.act_export)

    def _build_menus(self):
        mb = self.menuBar()
        m = mb.addMenu("&File")
        m.addAction(self.act_open)
        m.addAction(self.act_export)
        m.addAction(self.act_reload)
        m.addSeparator()
        m.addAction(self.act_quit)
        m = mb.addMenu("&View")
        m.addAction(self.act_columns)
        m.addAction(self.act_filter)
        m.addAction(self.act_images)
        m.addAction(self.act_logbook)
        m = mb.addMenu("&Plot")
        m.addAction(self.act_plot)
        m.addAction(self.act_corr)
        m = mb.addMenu("&Processing")
        m.addAction(self.act_reprocess)
        m.addAction(self.act_context)
        m.addAction(self.act_ext_editor)
        m.addSeparator()
        for a in (self.act_backend_start, self.act_backend_stop, self.act_backend_restart,
                  self.act_backend_log):
            m.addAction(a)

    # -- loading ---------------------------------------------------------------------------
    def start_load(self):
        """(Re)read the table in the background. Asked while a load runs, it reads again once
        that load is done (what changed meanwhile, e.g. a column added, is never missed)."""
        if self.load_thread is not None and self.load_thread.isRunning():
            self._load_again = True
            return
        self._load_again = False
        self.session.load_started()
        self.model.loading = True
        self.load_thread = LoadThread(self.context_dir, self)
        self.load_thread.loaded.connect(self._on_loaded)
        self.load_thread.finished.connect(self._on_load_thread_finished)
        self.load_thread.chunk.connect(self._on_chunk)
        self.load_thread.done.connect(self._on_load_done)
        self.load_thread.failed.connect(self._on_load_failed)
        self.load_thread.start()

    def reload(self):
        """Read the whole table again (e.g. after the variables changed)."""
        self.save_settings()
        self.start_load()

    def _on_loaded(self, res):
        first = not self.session.is_loaded
        data = res.data
        self.session.table_loaded(res.metadata, data, res.seconds)
        sort_key, descending = self.session.sort
        self.thumbs.clear()
        self.delegate.clear_sparklines()
        selection = self._selection_by_keys()
        self.model.set_table(data, sort_key, descending)
        self._restore_selection(selection)
        self._refresh_tags()
        self._apply_layout()
        col = self.model.column_of(self.model.view.sort_key)
        self.table.horizontalHeader().setSortIndicator(
            col, Qt.DescendingOrder if self.model.view.descending else Qt.AscendingOrder)
        self._update_counts()
        if first and self.live_updates:
            self._start_updates(res)
        self.loaded.emit()

    def _on_chunk(self, chunk):
        self.model.merge_chunk(chunk)
        self._counts_timer.start()

    def _on_load_done(self, seconds):
        self.model.finish_loading()
        self.session.load_finished(seconds)
        self._update_counts()
        self._load_comments()
        self.fully_loaded.emit()

    def _on_load_thread_finished(self):
        """Start the load asked for while the last one ran."""
        if getattr(self, "_load_again", False):
            self.load_thread.wait()  # finished is emitted just before the thread ends
            self.start_load()

    def _on_load_failed(self, msg):
        self.model.loading = False
        self.counts_label.setText(f"Could not read the database: {msg}")
        self.message(f"Could not read {self.db_file}:\n{msg}", error=True)

    def _start_updates(self, res):
        self.update_thread = UpdateThread(
            self.context_dir, res.metadata.get("db_id"), self.load_thread.t_start,
            res.runs, res.variables_sig, res.comments_sig, use_kafka=self.use_kafka, parent=self)
        self.update_thread.source.connect(self.session.set_source)
        self.update_thread.updates.connect(self.apply_updates)
        self.update_thread.reload.connect(self.reload)
        self.update_thread.comments.connect(self._load_comments)
        self.update_thread.backend.connect(self.session.set_backend_state)
        self.update_thread.ready.connect(self.session.set_live_ready)
        self.session.publisher = self.update_thread.publish
        self.update_thread.start()

    def apply_updates(self, updates):
        """Apply RunUpdates from the live-update thread (GUI thread; cheap per run)."""
        for upd in updates:
            self.model.apply_run_update(upd)
        self._counts_timer.start()
        # A table opened (nearly) empty sized its columns and rows from the headers alone: fit
        # them again while the first runs arrive, unless the user has arranged them.
        if self._layout_rows < 5 and not self.session.user_widths:
            self._apply_layout()

    def _on_source(self, mode, text):
        self.source_label.setText(text)
        self.source_label.setToolTip(self.session.source_tooltip)

    def _show_backend(self, st, _first=False):
        if self.backend.running:
            return
        self.backend_label.setText(f"<span style='color:{st.colour}'>●</span> {st.text}")
        self.backend_label.setToolTip(st.detail)
        self._enable_backend_actions()

    def _enable_backend_actions(self):
        allowed = self.session.backend_actions()
        self.act_backend_start.setEnabled(allowed["start"])
        self.act_backend_stop.setEnabled(allowed["stop"])
        self.act_backend_restart.setEnabled(allowed["restart"])

    # -- backend control -------------------------------------------------------------------
    def _offer_to_start_backend(self, text, force):
        if QMessageBox.question(self, "Start the AMORE backend?", text) == QMessageBox.Yes:
            self.start_backend(force=force)

    def start_backend(self, force: bool = False):
        """Start the backend on this machine (off the GUI thread)."""
        self.backend.start(force=force)

    def show_backend_log(self):
        """Open (or raise) the live view of ``amore.log``."""
        if self.log_window is None:
            self.log_window = BackendLogWindow(self.context_dir)
        self.log_window.show()
        self.log_window.raise_()

    def _backend_busy(self, name):
        self.session.set_backend_busy(name)
        self.backend_label.setText(self.session.busy_text(name))
        self._enable_backend_actions()

    def _backend_done(self, name, status):
        self.session.set_backend_state(status)
        self.statusBar().showMessage(status.text, 8000)

    def _backend_failed(self, name, message, status):
        self.session.set_backend_state(status)
        self.message(f"Could not {name} the backend:\n{message}", error=True)

    def _update_counts(self):
        self.counts_label.setText(self.session.counts_text(self.model.data_obj,
                                                           self.model.rowCount()))

    # -- column layout ---------------------------------------------------------------------
    def _variable_keys(self):
        return [c.key for c in self.model.data_obj.columns]

    def _apply_layout(self):
        """Visual order, hidden columns and widths from the settings (new columns after
        their neighbours)."""
        self._applying_layout = True
        self._layout_rows = self.model.data_obj.nrows
        try:
            hh = self.table.horizontalHeader()
            keys = self._variable_keys()
            order, _hidden, widths = self.session.initial_layout(self.model.data_obj)
            index = {k: i for i, k in enumerate(keys)}
            for visual, key in enumerate(order):
                logical = index[key]
                cur = hh.visualIndex(logical)
                if cur != visual:
                    hh.moveSection(cur, visual)
            self._apply_visibility()
            auto = self._auto_widths()
            for key, i in index.items():
                w = widths.get(key) or auto.get(key)
                if w:
                    hh.resizeSection(i, int(w))
            has_images = any(K_THUMBNAIL in self.model.data_obj.column_kinds(c)
                             for c in range(NSTATIC, len(keys)) if not hh.isSectionHidden(c))
            tall = self.session.tall_rows(default=has_images)
            self.act_images.setChecked(bool(tall))
            self._set_row_height(ROW_IMAGES if tall else ROW_COMPACT)
        finally:
            self._applying_layout = False

    def _apply_visibility(self):
        hh = self.table.horizontalHeader()
        for i, c in enumerate(self.model.data_obj.columns):
            hide = self.session.is_hidden(c)
            if hh.isSectionHidden(i) != hide:
                hh.setSectionHidden(i, hide)

    def _auto_widths(self) -> dict:
        """Column widths from the header text and the first rows' texts (no full scan)."""
        fm = QFontMetrics(self.table.font())
        d = self.model.data_obj
        rows = self.model.view.order[:40]
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

    def _layout_changed(self, *args):
        if not self._applying_layout:
            self._save_timer.start()

    def _column_resized(self, logical, _old, _new):
        """Only widths the user set are remembered; the others follow the content."""
        if not self._applying_layout:
            keys = self._variable_keys()
            if 0 <= logical < len(keys):
                self.session.column_resized_by_user(keys[logical])

    def _set_row_height(self, h):
        vh = self.table.verticalHeader()
        if vh.defaultSectionSize() == h:
            return          # unchanged: repaint nothing (live updates refit the layout)
        vh.setDefaultSectionSize(h)
        self.thumbs.clear()
        self.table.viewport().update()

    def _toggle_row_height(self, checked):
        self.session.set_tall_rows(checked)

    def column_layout(self) -> tuple[list[str], set[str]]:
        """Current visual order and user-hidden columns (keys)."""
        hh = self.table.horizontalHeader()
        keys = self._variable_keys()
        order = [keys[hh.logicalIndex(v)] for v in range(hh.count())]
        return order, set(self.user_hidden)

    def save_settings(self):
        """Remember layout, sort, unchecked runs, tag and logbook visibility."""
        if not self.session.is_loaded:
            return
        hh = self.table.horizontalHeader()
        order, _hidden = self.column_layout()
        keys = self._variable_keys()
        widths = {keys[i]: hh.sectionSize(i) for i in range(hh.count())
                  if not hh.isSectionHidden(i)}
        self.session.remember(self.model.data_obj, order, widths, self.model.view.sort_key,
                              self.model.view.descending)

    def set_column_hidden(self, key: str, hidden: bool):
        """Hide or show a column (remembered for this directory)."""
        self.session.set_column_hidden(key, hidden)

    def set_column_order(self, order: list[str]):
        """Put the columns in this visual order (keys); remembered for this directory."""
        hh = self.table.horizontalHeader()
        index = {k: i for i, k in enumerate(self._variable_keys())}
        self._applying_layout = True
        try:
            for visual, key in enumerate(k for k in order if k in index):
                cur = hh.visualIndex(index[key])
                if cur != visual:
                    hh.moveSection(cur, visual)
        finally:
            self._applying_layout = False
        self._save_timer.start()

    def columns_dialog(self):
        """Let the user show, hide and reorder columns."""
        from amore_gui._qt.dialogs import ColumnsDialog
        order, hidden = self.column_layout()
        dlg = ColumnsDialog(self.model.data_obj, order, hidden, self)
        if dlg.exec():
            order, hidden = dlg.result()
            self.set_column_order(order)
            self.session.set_hidden_columns(hidden)

    def _refresh_tags(self):
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

    def _tag_changed(self):
        self.session.set_tag(self.tag_combo.currentData() or "")

    def _header_menu(self, pos):
        hh = self.table.horizontalHeader()
        logical = hh.logicalIndexAt(pos)
        m = QMenu(self)
        d = self.model.data_obj
        if logical >= 0:
            col = d.columns[logical]
            if col.key != C_RUN:
                m.addAction(f"Hide “{col.title}”", lambda: self.set_column_hidden(col.key, True))
            m.addAction("Sort ascending", lambda: self.table.sortByColumn(logical, Qt.AscendingOrder))
            m.addAction("Sort descending", lambda: self.table.sortByColumn(logical, Qt.DescendingOrder))
            m.addAction("Filter on this column…", lambda: self.add_filter_dialog(logical))
            if d.is_numeric_column(logical) and logical >= NSTATIC:
                m.addAction("Plot against run number", lambda: self.open_plot(C_RUN, col.key))
            m.addSeparator()
        hidden = [c for c in d.columns if c.key in self.user_hidden]
        if hidden:
            sub = m.addMenu("Show column")
            for c in hidden[:40]:
                sub.addAction(c.title, lambda k=c.key: self.set_column_hidden(k, False))
        m.addAction("Columns…", self.columns_dialog)
        m.exec(hh.mapToGlobal(pos))

    def _table_menu(self, pos):
        idx = self.table.indexAt(pos)
        m = QMenu(self)
        keys = self.selected_runs()
        if idx.isValid():
            col = idx.column()
            if col >= NSTATIC:
                m.addAction("Inspect this value", lambda: self.inspect(idx))
        if keys:
            m.addAction(f"Check {len(keys)} selected run(s)",
                        lambda: self.model.set_included(keys, True))
            m.addAction(f"Uncheck {len(keys)} selected run(s)",
                        lambda: self.model.set_included(keys, False))
            m.addAction("Per-train plot of selected runs…", lambda: self.open_correlation())
            m.addAction(f"Reprocess {len(keys)} selected run(s)…",
                        lambda: self.open_reprocess(selected=True))
        if len(keys) == 1:
            m.addAction(f"Slurm jobs of run {keys[0][1]} (state, log, Cancel)…",
                        lambda: self.open_slurm_jobs(*keys[0]))
        for extra in getattr(self, "extra_table_menu", ()):
            extra(m, idx, keys)
        m.addSeparator()
        m.addAction(self.act_export)
        m.exec(self.table.viewport().mapToGlobal(pos))

    # -- filters and navigation ------------------------------------------------------------
    def _filters_changed(self, filters):
        """The session's filters changed: show them (model rows, chips, widgets, counts)."""
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
        self._update_counts()

    def add_filter(self, f) -> None:
        """Add a row filter (NumberRange / TextContains on a column)."""
        self.session.add_filter(f)

    def clear_filters(self):
        """Remove all row filters, the search text and 'checked only'."""
        self.session.clear_filters()

    def add_filter_dialog(self, column: int | None = None):
        """Ask for a row filter (number range or text) on a column and add it."""
        from amore_gui._qt.dialogs import FilterDialog
        dlg = FilterDialog(self.model.data_obj, column, self)
        if dlg.exec():
            f = dlg.result_filter()
            if f is not None:
                self.add_filter(f)

    def _show_chips(self):
        while self.chips_lay.count():
            w = self.chips_lay.takeAt(0).widget()
            if w is not None:
                w.deleteLater()
        extra = self.session.extra_filters
        if not extra:
            self.chips.setVisible(False)
            return
        self.chips_lay.addWidget(QLabel("Filters:"))
        for f in extra:
            b = QToolButton()
            b.setObjectName("chip")
            b.setText(f.describe(self.model.data_obj) + "  ✕")
            b.setToolTip("Remove this filter")
            b.clicked.connect(lambda _=False, f=f: self._remove_filter(f))
            self.chips_lay.addWidget(b)
        clear = QToolButton()
        clear.setText("Clear all")
        clear.setAutoRaise(True)
        clear.clicked.connect(self.clear_filters)
        self.chips_lay.addWidget(clear)
        self.chips_lay.addStretch(1)
        self.chips.setVisible(True)

    def _remove_filter(self, f):
        self.session.remove_filter(f)

    def jump_to_run(self, run) -> bool:
        """Select and show a run; says in the status bar if it is unknown or filtered out."""
        key = self.session.find_run(self.model.data_obj, run)
        if key is None:
            self.statusBar().showMessage(f"No run {run} in this table", 4000)
            return False
        vr = self.model.view_row_of(*key)
        if vr < 0:
            self.statusBar().showMessage(f"Run {run} is hidden by the filters", 4000)
            return False
        idx = self.model.index(vr, self.model.column_of(C_RUN))
        self.table.selectRow(vr)
        self.table.scrollTo(idx, QAbstractItemView.PositionAtCenter)
        return True

    def _selection_by_keys(self):
        """The selection and current cell as (runs, first and last column keys) ranges, which
        survive a reload (rows and columns may move; a reset clears Qt's own selection)."""
        sm = self.table.selectionModel()
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

    def _restore_selection(self, selection) -> None:
        """Select again what :meth:`_selection_by_keys` recorded (runs still in the view)."""
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
        sm = self.table.selectionModel()
        if not sel.isEmpty():
            sm.select(sel, QItemSelectionModel.ClearAndSelect)
        if current is not None:
            (prop, run), key = current
            row, col = m.view_row_of(prop, run), m.column_of(key)
            if row >= 0 and col >= 0:
                sm.setCurrentIndex(m.index(row, col), QItemSelectionModel.NoUpdate)

    def selected_runs(self) -> list[tuple[int, int]]:
        """(proposal, run) of the selected rows, in view order."""
        rows = sorted({i.row() for i in self.table.selectionModel().selectedRows()})
        return [self.model.run_at(r) for r in rows]

    def visible_columns(self) -> list[int]:
        """Visible table columns in visual order."""
        hh = self.table.horizontalHeader()
        out = []
        for v in range(hh.count()):
            logical = hh.logicalIndex(v)
            if not hh.isSectionHidden(logical):
                out.append(logical)
        return out

    def visible_cell_count(self) -> int:
        """Number of cells currently in the viewport (benchmarks)."""
        vp = self.table.viewport()
        top = self.table.rowAt(0)
        bottom = self.table.rowAt(vp.height() - 1)
        if top < 0:
            return 0
        bottom = self.model.rowCount() - 1 if bottom < 0 else bottom
        cols = [c for c in self.visible_columns()
                if self.table.columnViewportPosition(c) < vp.width()
                and self.table.columnViewportPosition(c) + self.table.columnWidth(c) > 0]
        return (bottom - top + 1) * len(cols)

    # -- comments --------------------------------------------------------------------------
    def _add_comment(self, text):
        from amore_gui._qt.dialogs import current_user
        self.session.add_logbook_comment(text, author=current_user())

    def _load_comments(self):
        self.tasks.submit(self.session.read_logbook, callback=lambda res, err: (
            self.comments_panel.set_comments(res) if res is not None else None))

    def _logbook_toggled(self, visible):
        self.act_logbook.setChecked(visible)
        if self._closing:
            return
        self.session.set_logbook_visible(visible)

    def _included_changed(self):
        self._save_timer.start()
        for w in self._live_windows():
            if hasattr(w, "schedule_refresh"):
                w.schedule_refresh()

    # -- thumbnails ------------------------------------------------------------------------
    def _thumbnail_loaded(self, key):
        p, r, name = key
        vr = self.model.view_row_of(p, r)
        c = self.model.column_of(name)
        if vr >= 0 and c >= 0:
            idx = self.model.index(vr, c)
            self.table.update(idx)

    # -- windows ---------------------------------------------------------------------------
    def _keep(self, w):
        """Keep a reference to a child window while it is open; show it."""
        self._windows.append(w)
        w.destroyed.connect(lambda *_: self._forget(w))
        w.show()
        w.raise_()
        return w

    def _forget(self, w):
        self._windows = [x for x in self._windows if x is not w]

    def _live_windows(self):
        out = []
        for w in self._windows:
            try:
                w.isVisible()
            except RuntimeError:        # deleted (WA_DeleteOnClose)
                continue
            out.append(w)
        return out

    def _double_clicked(self, idx: QModelIndex):
        if idx.column() >= NSTATIC and not self.model.data_obj.columns[idx.column()].manual:
            self.inspect(idx)

    def inspect(self, idx: QModelIndex):
        """Open an inspection window for a variable cell."""
        from amore_gui._qt.inspect import InspectWindow
        p, r, key = self.model.data(idx, Qt.UserRole + 3)
        return self._keep(InspectWindow(self, p, r, key))

    def open_plot(self, x_key: str | None = None, y_key: str | None = None, histogram=False):
        """Open a plot of one variable against another across runs."""
        from amore_gui._qt.plots import ScatterPlotWindow
        return self._keep(ScatterPlotWindow(self, x_key, y_key, histogram=histogram))

    def open_correlation(self, x_key=None, y_key=None, runs=None):
        """Open a per-train correlation plot for the selected runs."""
        from amore_gui._qt.plots import CorrelationWindow
        runs = runs if runs is not None else self.selected_runs()
        return self._keep(CorrelationWindow(self, runs, x_key, y_key))

    def open_slurm_jobs(self, proposal: int | str, run: int):
        """Open the Slurm jobs dialog of one run (state, log, Cancel)."""
        from amore_gui._qt.slurmjobs import SlurmJobsDialog
        return self._keep(SlurmJobsDialog(self, proposal, run))

    def open_reprocess(self, selected: bool = False):
        """Open the reprocess dialog (selected runs preselected if any)."""
        from amore_gui._qt.reprocess import ReprocessDialog
        runs = self.selected_runs()
        return self._keep(ReprocessDialog(self, runs if (selected or runs) else []))

    def open_editor(self):
        """Open the built-in context-file editor."""
        from amore_gui._qt.editor import ContextEditor
        return self._keep(ContextEditor(self.context_dir, self))

    def open_external_editor(self):
        """Open context.py in $VISUAL/$EDITOR/xdg-open."""
        from amore_gui._qt.editor import open_in_external_editor
        if not open_in_external_editor(ContextDir(self.context_dir).context_file):
            self.message("No external editor found ($VISUAL, $EDITOR or xdg-open); "
                         "use the built-in editor.")

    def _open_other(self):
        from amore_gui._qt.opening import choose_target
        target = choose_target(self.settings, self)
        if target is not None:
            w = MainWindow(target, settings=self.session.settings, use_kafka=self.use_kafka)
            w.show()
            self._windows.append(w)

    def export_dialog(self):
        """Ask for a file name and export the visible table."""
        path, flt = QFileDialog.getSaveFileName(
            self, "Export visible table", str(Path.home() / f"amore-p{self.proposal}-runs.xlsx"),
            "Excel (*.xlsx);;CSV (*.csv);;Markdown (*.md)")
        if path:
            if not Path(path).suffix:
                path += ".xlsx" if "xlsx" in flt else ".md" if "Markdown" in flt else ".csv"
            self.export(path)

    def export(self, path, callback=None):
        """Export the visible rows and columns (in view order) to CSV/Excel, off the GUI thread."""
        rows = self.model.visible_rows()
        cols = [c for c in self.visible_columns()]
        data = self.model.data_obj

        def done(res, err):
            if err:
                self.message(f"Export failed: {err}", error=True)
            else:
                self.statusBar().showMessage(f"Exported {len(rows)} runs to {res}", 5000)
            if callback:
                callback(res, err)
        self.tasks.submit(export_mod.export_table, path, data, rows, cols, callback=done)

    def message(self, text: str, error: bool = False) -> None:
        """Tell the user something: a message box, or only the status bar when dialogs are
        switched off (``$AMORE_GUI_NO_DIALOGS``, tests and screenshots)."""
        self.last_message = text
        self.statusBar().showMessage(text.replace("\n", " "), 10000)
        if os.environ.get("AMORE_GUI_NO_DIALOGS"):
            log.warning("%s", text)
            return
        (QMessageBox.warning if error else QMessageBox.information)(self, "AMORE", text)

    # -- closing ---------------------------------------------------------------------------
    def closeEvent(self, ev):
        self._closing = True
        self.settings.values["geometry"] = bytes(self.saveGeometry()).hex()
        self.save_settings()
        for w in self._live_windows():
            w.close()
        self.shutdown()
        super().closeEvent(ev)

    def shutdown(self, wait_ms: int = 5000):
        """Stop the threads (called on close)."""
        if self.update_thread is not None:
            self.update_thread.stop()
        self.thumb_loader.stop()
        if self.load_thread is not None:
            self.load_thread.wait(wait_ms)
        if self.update_thread is not None:
            self.update_thread.wait(wait_ms)
        self.thumb_loader.wait(wait_ms)
        self.tasks.wait(wait_ms)
