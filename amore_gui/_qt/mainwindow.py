"""The main window: the run table of one context directory, live.

The window composes and forwards. Its state is the Qt-free
:class:`~amore_gui.application.session.Session` (filters, column layout, live source, backend
state, comment writes; observed through its events) and the directory's data and commands its
:class:`~amore_gui.application.workspace.Workspace`. Each concept of the window is a controller
with its own state:

=============================================  ============================================
:class:`~amore_gui._qt.table.TableController`   the table view: cells, thumbnails, selection,
                                                "Go to run", context menu, copying
:class:`~amore_gui._qt.livetable.LiveTable`     loading the table and its live updates; run
                                                counts and live source in the status bar
:class:`~amore_gui._qt.columns.ColumnsController`  column layout, tags, header menu, row height
:class:`~amore_gui._qt.filters.FiltersController`  search/filter box, "Checked only", chips
:class:`~amore_gui._qt.manual.ManualColumns`    editing manual columns, cell history, logs,
                                                grouping
:class:`~amore_gui._qt.posting.PostController`  posting rows and pictures to the beamtime's
                                                logbook (its Zulip stream)
:class:`~amore_gui._qt.backend_control.BackendController`  the backend's state, start/stop/log
:class:`~amore_gui._qt.logbook.LogbookController`  the logbook dock
:class:`~amore_gui._qt.eventlog.EventLogController`  the event log dock, closed notice
=============================================  ============================================

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

from qtpy.QtCore import QModelIndex, QSize, Qt, Signal
from qtpy.QtGui import QKeySequence
from qtpy.QtWidgets import (QAction, QFileDialog, QLabel, QMainWindow, QMessageBox,
                             QVBoxLayout, QWidget)

from amore_gui.application import export as export_mod
from amore_gui.application.session import Session
from amore_gui.application.settings import Settings
from amore_gui._qt import app as qt_app
from amore_gui._qt.backend_control import BackendController
from amore_gui._qt.columns import ColumnsController
from amore_gui._qt.eventlog import EventLogController
from amore_gui._qt.filters import FiltersController
from amore_gui._qt.livetable import LiveTable
from amore_gui._qt.logbook import LogbookController
from amore_gui._qt.manual import ManualColumns
from amore_gui._qt.model import RunTableModel
from amore_gui._qt.posting import PostController
from amore_gui._qt.table import TableController
from amore_gui._qt.workers import Tasks

log = logging.getLogger(__name__)


class MainWindow(QMainWindow):
    """The run table window of one context directory.

    ``live_updates``: start the live updates (Kafka or database watching) after loading.
    ``settings``: a :class:`~amore_gui.application.settings.Settings` (default: the user's
    file). ``use_kafka``: False watches the database even with a broker. ``offer_backend``:
    offer to start a backend when none runs.
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
        #: the state of this window's table (Qt-free)
        self.session = Session(context_dir, settings or Settings(),
                               runner=lambda fn, cb: self.tasks.submit(fn, callback=cb),
                               offer_backend=offer_backend)
        #: the directory's data and commands (Qt-free)
        self.workspace = self.session.workspace
        self.closing = False
        self._windows: list = []
        self._last_dialog = None
        self.last_message = ""

        self.model = RunTableModel(parent=self)
        self.model.commentEdited.connect(self.session.edit_comment)
        self.model.includedChanged.connect(self._included_changed)
        self.table_view = TableController(self)
        self.live = LiveTable(self, live_updates=live_updates, use_kafka=use_kafka)
        self.live.loaded.connect(self.loaded)
        self.live.fully_loaded.connect(self.fully_loaded)
        self.columns = ColumnsController(self)
        self.filters = FiltersController(self)
        self.manual = ManualColumns(self)
        self.posting = PostController(self)
        self.backend = BackendController(self)
        self._build_actions()
        self.logbook = LogbookController(self)
        self._build_ui()
        self.event_log = EventLogController(self)
        self._say_shortcuts()
        self.setWindowTitle(self.session.title)
        ev = self.session.events
        ev.metadata.connect(lambda _p: self.setWindowTitle(self.session.title))
        ev.comment_saved.connect(lambda p, r: self.statusBar().showMessage(
            f"Comment of run {r} saved", 3000))
        ev.message.connect(lambda text, error: self.message(text, error=error))
        if self.settings.values.get("theme") == "dark":
            self.act_dark.setChecked(True)
            self.set_dark_theme(True, remember=False)
        self.live.start_load()

    # -- the parts, as tests and scripts reach them ----------------------------------------
    context_dir = property(lambda self: self.session.context_dir)
    db_file = property(lambda self: self.session.db_file)
    settings = property(lambda self: self.session.settings)
    table = property(lambda self: self.table_view.view)
    delegate = property(lambda self: self.table_view.delegate)
    thumbs = property(lambda self: self.table_view.thumbs)
    search = property(lambda self: self.filters.search)
    only_checked = property(lambda self: self.filters.only_checked)
    chips = property(lambda self: self.filters.chips)
    tag_combo = property(lambda self: self.columns.tag_combo)
    counts_label = property(lambda self: self.live.counts_label)
    source_label = property(lambda self: self.live.source_label)
    backend_label = property(lambda self: self.backend.label)
    log_window = property(lambda self: self.backend.log_window)
    comments_panel = property(lambda self: self.logbook.panel)
    comments_dock = property(lambda self: self.logbook.dock)
    live_updates = property(lambda self: self.live.live_updates)
    use_kafka = property(lambda self: self.live.use_kafka)
    update_thread = property(lambda self: self.live.update_thread)
    act_backend_start = property(lambda self: self.backend.act_start)
    act_backend_stop = property(lambda self: self.backend.act_stop)
    act_backend_restart = property(lambda self: self.backend.act_restart)

    # -- the session's state ---------------------------------------------------------------
    is_loaded = property(lambda self: self.session.is_loaded)
    is_fully_loaded = property(lambda self: self.session.is_fully_loaded)
    load_seconds = property(lambda self: self.session.load_seconds)
    proposal = property(lambda self: self.session.proposal)
    metadata = property(lambda self: self.session.metadata)
    update_mode = property(lambda self: self.session.update_mode)
    update_source_text = property(lambda self: self.session.update_source_text)
    #: True once live updates run and have caught up with changes made during loading
    live_ready = property(lambda self: self.session.live_ready)
    backend_state = property(lambda self: self.session.backend_state)
    user_hidden = property(lambda self: self.session.user_hidden)
    dir_settings = property(lambda self: self.session.dir_settings)

    # -- UI --------------------------------------------------------------------------------
    def _build_ui(self):
        central = QWidget(self)
        lay = QVBoxLayout(central)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        lay.addWidget(self.filters.chips)
        lay.addWidget(self.table, 1)
        self.setCentralWidget(central)
        self._build_toolbar()
        self._build_menus()
        sb = self.statusBar()
        sb.addWidget(self.live.counts_label, 1)
        sb.addPermanentWidget(self.live.source_label)
        sb.addPermanentWidget(self.backend.label)
        self.resize(1280, 800)
        geo = self.settings.values.get("geometry")
        if geo:
            try:
                self.restoreGeometry(bytes.fromhex(geo))
            except ValueError:
                pass

    def _build_actions(self):
        def act(*args, **kwargs):
            return qt_app.make_action(self, *args, **kwargs)
        self.act_open = act("Open…", self._open_other, "Ctrl+O", "Open another proposal or directory")
        self.act_export = act("Export…", self.export_dialog, "Ctrl+E",
                              "Export the visible table to CSV or Excel")
        self.act_plot = act("Plot", lambda: self.open_plot(), "Ctrl+P",
                            "Plot one variable against another across runs")
        self.act_corr = act("Per-train plot", lambda: self.open_correlation(), "Ctrl+Shift+P",
                            "Correlate two per-train variables of the selected runs")
        self.act_reprocess = act("Reprocess…", lambda: self.open_reprocess(), "Ctrl+R",
                                 "Recompute variables for the selected or all runs")
        self.act_context = act("Context file", lambda: self.open_editor(), "Ctrl+K",
                               "Edit the context file (validated before saving)")
        self.act_ext_editor = act("Open context file in external editor",
                                  lambda: self.open_external_editor())
        self.act_reload = act("Reload", self.reload, "F5", "Read the whole table again")
        self.act_quit = act("Quit", self.close, "Ctrl+Q")
        self.act_dark = act("Dark theme", lambda on: self.set_dark_theme(on), "Ctrl+Shift+D",
                            checkable=True)

    def _build_toolbar(self):
        tb = self.addToolBar("Main")
        tb.setObjectName("main-toolbar")
        tb.setMovable(False)
        tb.setIconSize(QSize(16, 16))
        tb.addWidget(self.filters.search)
        tb.addAction(self.filters.act_filter)
        tb.addWidget(self.filters.only_checked)
        tb.addSeparator()
        tb.addWidget(QLabel("Variables:"))
        tb.addWidget(self.columns.tag_combo)
        tb.addAction(self.columns.act_columns)
        tb.addSeparator()
        tb.addWidget(QLabel("Go to run:"))
        tb.addWidget(self.table_view.goto)
        tb.addSeparator()
        tb.addAction(self.act_plot)
        tb.addSeparator()
        tb.addAction(self.act_reprocess)
        tb.addAction(self.act_context)
        tb.addAction(self.logbook.act_logbook)
        tb.addAction(self.act_export)

    def _build_menus(self):
        mb = self.menuBar()
        m = mb.addMenu("&File")
        for a in (self.act_open, self.act_export, self.act_reload, None,
                  self.table_view.act_copy_tsv, self.table_view.act_copy_md,
                  self.posting.act_post_rows, None, self.act_quit):
            m.addSeparator() if a is None else m.addAction(a)
        m = mb.addMenu("&View")
        for a in (self.columns.act_columns, self.filters.act_filter, self.columns.act_images,
                  self.logbook.act_logbook, None, self.manual.act_add_column,
                  self.manual.act_group, self.act_dark):
            m.addSeparator() if a is None else m.addAction(a)
        m = mb.addMenu("&Plot")
        m.addAction(self.act_plot)
        m.addAction(self.act_corr)
        m = mb.addMenu("&Processing")
        m.addAction(self.act_reprocess)
        m.addAction(self.act_context)
        m.addAction(self.act_ext_editor)
        m.addSeparator()
        for a in self.backend.actions:
            m.addAction(a)

    def _say_shortcuts(self):
        """Every action with a shortcut and a tooltip says the shortcut in the tooltip."""
        for a in self.findChildren(QAction):
            if not a.shortcut().isEmpty() and a.toolTip() and "(" not in a.toolTip():
                a.setToolTip(f"{a.toolTip()} ({a.shortcut().toString(QKeySequence.NativeText)})")

    def set_dark_theme(self, on: bool, remember: bool = True) -> None:
        """Switch the dark theme on or off; remembered in the user's GUI settings."""
        qt_app.set_dark_theme(on)
        self.table.viewport().update()
        if remember:
            self.settings.values["theme"] = "dark" if on else "light"
            self.settings.save()

    # -- loading and the table -------------------------------------------------------------
    def start_load(self):
        """(Re)read the table in the background (:meth:`LiveTable.start_load`)."""
        self.live.start_load()

    def reload(self):
        """Read the whole table again (e.g. after the variables changed)."""
        self.live.reload()

    def apply_updates(self, updates):
        """Apply RunUpdates (GUI thread)."""
        self.live.apply_updates(updates)

    def save_settings(self):
        """Remember layout, sort, unchecked runs, tag and logbook visibility."""
        self.columns.save()

    def column_layout(self) -> tuple[list[str], set[str]]:
        """Current visual order and user-hidden columns (keys)."""
        return self.columns.column_layout()

    def set_column_hidden(self, key: str, hidden: bool):
        """Hide or show a column (remembered for this directory)."""
        self.session.set_column_hidden(key, hidden)

    def set_column_order(self, order: list[str]):
        """Put the columns in this visual order (keys); remembered for this directory."""
        self.columns.set_column_order(order)

    def columns_dialog(self):
        """Let the user show, hide and reorder columns."""
        self.columns.dialog()

    def add_filter(self, f) -> None:
        """Add a row filter (NumberRange / TextContains on a column)."""
        self.filters.add(f)

    def clear_filters(self):
        """Remove all row filters, the search text and 'checked only'."""
        self.filters.clear()

    def add_filter_dialog(self, column: int | None = None):
        """Ask for a row filter (number range or text) on a column and add it."""
        self.filters.dialog(column)

    def jump_to_run(self, run) -> bool:
        """Select and show a run; says in the status bar if it is unknown or filtered out."""
        return self.table_view.jump_to_run(run)

    def selected_runs(self) -> list[tuple[int, int]]:
        """(proposal, run) of the selected rows, in view order."""
        return self.table_view.selected_runs()

    def visible_columns(self) -> list[int]:
        """Visible table columns in visual order."""
        return self.table_view.visible_columns()

    def visible_cell_count(self) -> int:
        """Number of cells currently in the viewport (benchmarks)."""
        return self.table_view.visible_cell_count()

    def _included_changed(self):
        self.columns.request_save()
        for w in self._live_windows():
            if hasattr(w, "schedule_refresh"):
                w.schedule_refresh()

    # -- the backend -----------------------------------------------------------------------
    def start_backend(self, force: bool = False):
        """Start the backend on this machine (off the GUI thread)."""
        self.backend.start(force=force)

    def show_backend_log(self):
        """Open (or raise) the live view of ``amore.log``."""
        self.backend.show_log()

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

    def show_dialog(self, dlg):
        """Show a non-modal dialog of this window (the last one is kept referenced)."""
        self._last_dialog = dlg
        dlg.show()
        return dlg

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
        return self._keep(ContextEditor(self.workspace, self))

    def open_external_editor(self):
        """Open context.py in $VISUAL/$EDITOR/xdg-open."""
        from amore_gui._qt.editor import open_in_external_editor
        if not open_in_external_editor(self.workspace.context_file):
            self.message("No external editor found ($VISUAL, $EDITOR or xdg-open); "
                         "use the built-in editor.")

    def _open_other(self):
        from amore_gui._qt.opening import choose_target
        target = choose_target(self.settings, self)
        if target is not None:
            open_choice(target, self.session.settings, use_kafka=self.use_kafka,
                        offer_backend=False)

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
        cols = self.visible_columns()
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
        self.closing = True
        self.settings.values["geometry"] = bytes(self.saveGeometry()).hex()
        self.save_settings()
        for w in self._live_windows():
            w.close()
        self.shutdown()
        super().closeEvent(ev)

    def shutdown(self, wait_ms: int = 5000):
        """Stop the threads (called on close)."""
        self.live.stop()
        self.table_view.thumb_loader.stop()
        self.live.wait(wait_ms)
        self.table_view.thumb_loader.wait(wait_ms)
        self.tasks.wait(wait_ms)


#: Top-level windows opened through :func:`open_choice` (kept referenced while they exist).
_top_level: list = []


def open_choice(choice, settings: Settings | None = None, use_kafka: bool = True,
                offer_backend: bool = True):
    """Show what :func:`amore_gui._qt.opening.resolve_or_ask` found: the run table of an AMORE
    directory (a path: :class:`MainWindow`), or a DAMNIT directory (a
    :class:`~amore_gui.application.damnit.DamnitDir`:
    :class:`~amore_gui._qt.damnit.DamnitWindow`, whose ways on open their result here too).
    The window is kept referenced while it exists; returns it."""
    from amore_gui.application.damnit import DamnitDir
    if isinstance(choice, DamnitDir):
        from amore_gui._qt.damnit import DamnitWindow
        w = DamnitWindow(choice, lambda c: open_choice(c, settings, use_kafka, offer_backend),
                         settings=settings)
    else:
        w = MainWindow(choice, settings=settings, use_kafka=use_kafka,
                       offer_backend=offer_backend)
    _top_level.append(w)
    w.destroyed.connect(lambda *_: _forget(w))
    w.show()
    w.raise_()
    return w


def _forget(w) -> None:
    _top_level[:] = [x for x in _top_level if x is not w]
