"""Filling the main window's run table and keeping it live.

:class:`LiveTable` reads the table off the GUI thread (:class:`~amore_gui._qt.workers.LoadThread`:
the newest runs first, older ones merged as they arrive), then follows the database
(:class:`~amore_gui._qt.workers.UpdateThread` running the Qt-free policy
:class:`amore_gui.application.live.LiveUpdates`) and applies each update to the model. It owns
the status bar's run counts and live-source labels.
"""
from __future__ import annotations

from qtpy.QtCore import QObject, QTimer, Signal
from qtpy.QtWidgets import QLabel

from amore_gui._qt.workers import LoadThread, UpdateThread
from amore_gui.application.process import hand_back_memory


class LiveTable(QObject):
    """Loading and live updates of the window's table (see module docstring).

    ``window``: the :class:`~amore_gui._qt.mainwindow.MainWindow`; ``live_updates``: follow
    changes after loading; ``use_kafka``: False watches the database even with a broker.
    Signals: ``loaded`` once the table is shown (newest runs' values in), ``fully_loaded``
    when all values are in.
    """

    loaded = Signal()
    fully_loaded = Signal()

    def __init__(self, window, live_updates: bool = True, use_kafka: bool = True):
        super().__init__(window)
        self.window = window
        self.session = window.session
        self.model = window.model
        self.live_updates = live_updates
        self.use_kafka = use_kafka
        self.load_thread: LoadThread | None = None
        self.update_thread: UpdateThread | None = None
        self._load_again = False
        #: reads of the columns asked for (only the newest one's answer is taken)
        self._columns_asked = 0
        self.counts_label = QLabel("Loading…")
        self.source_label = QLabel(self.session.update_source_text)
        self._counts_timer = QTimer(self, singleShot=True, interval=200)
        self._counts_timer.timeout.connect(self.update_counts)
        self.session.events.source.connect(self._on_source)
        #: live updates applied since the memory was last handed back
        self._applied = 0
        self._trim_timer = QTimer(self, interval=self.HAND_BACK_MS)
        self._trim_timer.timeout.connect(self._hand_back_after_updates)
        self._trim_timer.start()

    #: how often the memory freed while following the table is handed back (ms)
    HAND_BACK_MS = 60_000

    # -- loading ---------------------------------------------------------------------------
    def start_load(self) -> None:
        """(Re)read the table in the background. Asked while a load runs, it reads again once
        that load is done (what changed meanwhile, e.g. a column added, is never missed)."""
        if self.load_thread is not None and self.load_thread.isRunning():
            self._load_again = True
            return
        self._load_again = False
        self.session.load_started()
        self.model.loading = True
        if self.load_thread is not None:
            # the last load's thread has ended: free it (a window open for days reads its
            # table again after every change of the context file)
            self.load_thread.deleteLater()
        self.load_thread = LoadThread(self.session.workspace, self)
        self.load_thread.loaded.connect(self._on_loaded)
        self.load_thread.finished.connect(self._on_load_thread_finished)
        self.load_thread.chunk.connect(self._on_chunk)
        self.load_thread.done.connect(self._on_load_done)
        self.load_thread.failed.connect(self._on_load_failed)
        self.load_thread.start()

    def reload(self) -> None:
        """Read the whole table again."""
        self.window.columns.save()
        self.start_load()

    def refresh_columns(self) -> None:
        """The variables changed (the context file, a manual column): read the column
        definitions and stale marks in the background and take them in place
        (:meth:`~amore_gui._qt.model.RunTableModel.take_columns`); the whole table is read
        again only when a column went away or moved. Reading it again for every context edit
        cost a window's memory a step each time (issue 23) and seconds of CPU on a big table;
        the values themselves arrive as live updates."""
        if self.load_thread is not None and self.load_thread.isRunning():
            self._load_again = True          # that load ends by reading everything again
            return
        self._columns_asked += 1
        asked = self._columns_asked
        self.model.hold_updates()            # values of a new column wait for its definition
        self.window.tasks.submit(self.session.workspace.read_columns,
                                 callback=lambda res, err: self._on_columns(asked, res, err))

    def _on_columns(self, asked: int, res, err) -> None:
        if asked != self._columns_asked:
            return                           # a newer read is on its way
        try:
            if err is not None or (self.load_thread is not None
                                   and self.load_thread.isRunning()):
                self.reload()
                return
            win = self.window
            win.columns.save()
            if self.model.take_columns(res) is None:
                self.start_load()
                return
            win.columns.refresh_tags()
            win.columns.apply_layout()
            self.update_counts()
            self._hand_back()      # the value arrays of the columns before were copied
        finally:
            self.model.release_updates()     # while a load runs: applied when it is done

    def _on_loaded(self, res):
        win = self.window
        first = not self.session.is_loaded
        data = res.data
        self.session.table_loaded(res.metadata, data, res.seconds)
        sort_key, descending = self.session.sort
        win.thumbs.clear()
        win.delegate.clear_sparklines()
        selection = win.table_view.selection_by_keys()
        self.model.set_table(data, sort_key, descending)
        win.table_view.restore_selection(selection)
        win.columns.refresh_tags()
        win.columns.apply_layout()
        win.columns.show_sort()
        self.update_counts()
        # a window closed while its table was read gets no live updates: nothing would stop them
        if first and self.live_updates and not win.closing:
            self._start_updates(res)
        self.loaded.emit()

    def _on_chunk(self, chunk):
        self.model.merge_chunk(chunk)
        self._counts_timer.start()

    def _on_load_done(self, seconds):
        self.model.finish_loading()
        self.session.load_finished(seconds)
        self.update_counts()
        self.window.logbook.load()
        self.fully_loaded.emit()
        self._hand_back()          # the table shown before (a reload) is freed now

    def _hand_back(self) -> None:
        """Hand the memory the C allocator keeps freed back to the system, off the GUI thread
        (:func:`~amore_gui.application.process.hand_back_memory`, a few ms). After a table was
        read again (a manual column deleted, a variable removed, *Reload*) or its columns
        taken in place, the table shown before and the copies of its arrays are freed, but
        glibc kept their pages: a window open for a beamtime grew by 1.5-3 MB at each such
        step in the soak (issue 23, docs/reliability.rst)."""
        self._applied = 0
        self.window.tasks.submit(hand_back_memory)

    def _hand_back_after_updates(self) -> None:
        """Every :attr:`HAND_BACK_MS`, if live updates were applied meanwhile: what reading
        and applying them freed (a reprocess of hundreds of runs at once, the catch-up after
        the broker was away) is handed back as after a reload, instead of being kept by glibc
        for good."""
        if self._applied and not self.window.closing:
            self._hand_back()

    def _on_load_thread_finished(self):
        """Start the load asked for while the last one ran."""
        if self._load_again:
            self.load_thread.wait()  # finished is emitted just before the thread ends
            self.start_load()

    def _on_load_failed(self, msg):
        self.model.loading = False
        self.counts_label.setText(f"Could not read the database: {msg}")
        self.window.message(f"Could not read {self.session.db_file}:\n{msg}", error=True)

    # -- live updates ----------------------------------------------------------------------
    def _start_updates(self, res):
        t = UpdateThread(self.session.context_dir, res.metadata.get("db_id"),
                         self.load_thread.t_start, res.runs, res.variables_sig,
                         res.comments_sig, use_kafka=self.use_kafka, parent=self,
                         runs_stamp=res.runs_stamp)
        self.update_thread = t
        t.source.connect(self.session.set_source)
        t.updates.connect(self.apply_updates)
        t.reload.connect(self.refresh_columns)
        t.comments.connect(self.window.logbook.load)
        t.backend.connect(self.session.set_backend_state)
        t.ready.connect(self.session.set_live_ready)
        self.session.publisher = t.publish
        t.start()

    def apply_updates(self, updates) -> None:
        """Apply RunUpdates from the live updates (GUI thread; cheap per run)."""
        for upd in updates:
            self.model.apply_run_update(upd)
        self._applied += len(updates)
        self._counts_timer.start()
        # A table opened (nearly) empty sized its columns and rows from the headers alone: fit
        # them again while the first runs arrive, unless the user has arranged them.
        if self.window.columns.layout_rows < 5 and not self.session.user_widths:
            self.window.columns.apply_layout()

    def poke(self) -> None:
        """Check the database now (this window just wrote to it)."""
        if self.update_thread is not None:
            self.update_thread.poke()

    # -- status bar ------------------------------------------------------------------------
    def _on_source(self, mode, text):
        self.source_label.setText(text)
        self.source_label.setToolTip(self.session.source_tooltip)

    def update_counts(self) -> None:
        self.counts_label.setText(self.session.counts_text(self.model.data_obj,
                                                           self.model.rowCount()))

    # -- closing ---------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the live updates to stop (returns at once)."""
        if self.update_thread is not None:
            self.update_thread.stop()

    def wait(self, wait_ms: int = 5000) -> None:
        """Wait for the loading and live-update threads to end."""
        if self.load_thread is not None:
            self.load_thread.wait(wait_ms)
        if self.update_thread is not None:
            self.update_thread.wait(wait_ms)
