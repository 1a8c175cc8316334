"""The state of one open run table, without Qt: what the main window shows and remembers.

:class:`Session` holds, for one context directory:

* the **row filters** (search text, "checked only", column filters such as
  :class:`~amore_gui.application.table_data.NumberRange`) and the **tag** that selects variables;
* the **column layout** remembered per directory in
  :class:`~amore_gui.application.settings.Settings` (visual order, hidden columns, widths the user
  set, sort column, unchecked runs, tall rows, logbook visibility);
* the **live source** (``kafka``, ``db`` or ``none``, with the status-bar text) and whether the
  live updates have caught up with the changes made while the table was read;
* the **backend state** (:class:`~amore_gui.application.backend_status.BackendIndicator`) and which
  start/stop/restart actions it allows; whether to offer to start a backend;
* the **comment edits**: run comments and logbook comments, written by its
  :class:`~amore_gui.application.workspace.Workspace` with a runner the GUI supplies (a thread
  pool) and announced to other GUIs through the live source's publisher.

A session is one view's state (one window, one browser tab); the directory's data and commands
are its :attr:`Session.workspace`, which several sessions may share.

Widgets never read these by polling: they connect to ``session.events`` (see
:mod:`amore_gui.application.events`) and forward the user's actions to the methods here.
Events (arguments in brackets):

``filters(list)``         the row filters to apply changed (full list, in order)
``columns()``             hidden columns or the tag changed: re-evaluate :meth:`Session.is_hidden`
``row_height(bool)``      tall rows (for thumbnails) switched on/off
``metadata(int|None)``    the table's metadata were read; the proposal number
``source(str, str)``      live-update source changed: mode (``kafka``/``db``/``none``), text
``live_ready()``          live updates caught up with changes made since the table was read
``backend(BackendIndicator, bool)``  new backend state; True the first time
``offer_backend(str, bool)``      ask the user to start a backend: question text, ``force``
``comment_saved(int, int)``       a run comment was written: proposal, run
``logbook_changed()``     a logbook comment was written (re-read the logbook)
``message(str, bool)``    tell the user something: text, is it an error
``save_requested()``      settings changed: save them soon (the view debounces; :meth:`Session.save`)
"""
from __future__ import annotations

import dataclasses
import socket
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from backend.vocab import BackendState, normalize_proposal, UpdateKind
from amore_gui.application.events import EventGroup
from amore_gui.application.settings import Settings, apply_column_layout
from amore_gui.application.table_data import (C_PROPOSAL, C_RUN, NSTATIC, S_FAILED,
                                             S_PROCESSING, S_WAITING, Column, OnlyIncluded, TableData)
from amore_gui.application.workspace import Workspace

#: ``runner(fn, callback)``: call ``fn()`` (possibly on another thread), then
#: ``callback(result, error)`` where ``error`` is None or a one-line message.
Runner = Callable[[Callable[[], Any], Callable[[Any, str | None], None]], None]

SOURCE_TOOLTIPS = {
    "kafka": "Live updates arrive through AMORE's Kafka update messages",
    "db": "No Kafka broker: the database is checked for changes twice a second",
    "none": "No live updates",
}


def run_now(fn: Callable[[], Any], callback: Callable[[Any, str | None], None]) -> None:
    """The default :data:`Runner`: call ``fn`` here and now (tests, scripts)."""
    try:
        res, err = fn(), None
    except Exception as e:
        res, err = None, f"{type(e).__name__}: {e}"
    callback(res, err)


class Session:
    """State of one open context directory (see module docstring).

    ``context_dir``: the context directory (``str`` or path; made absolute).
    ``settings``: the :class:`Settings` file (default: the user's); the directory is put first
    in its recent list. ``runner``: how writes run (default :func:`run_now`; the GUI passes its
    thread pool so the GUI thread never waits for SQLite). ``offer_backend``: ask once to start
    a backend when the first status says none runs. ``workspace``: the directory's
    :class:`~amore_gui.application.workspace.Workspace` to share (default: a new one on
    ``context_dir``).
    """

    EVENTS = ("filters", "columns", "row_height", "metadata", "source", "live_ready", "backend",
              "offer_backend", "comment_saved", "logbook_changed", "message", "save_requested")

    def __init__(self, context_dir, settings: Settings | None = None,
                 runner: Runner | None = None, offer_backend: bool = False,
                 workspace: Workspace | None = None):
        #: the directory's data and commands
        self.workspace = workspace if workspace is not None else \
            Workspace(Path(context_dir).resolve())
        self.paths = self.workspace.paths
        self.context_dir: Path = self.paths.path
        self.db_file: Path = self.paths.db_file
        self.settings = settings if settings is not None else Settings()
        self.settings.add_recent(self.context_dir)
        #: this directory's dict inside the settings file
        self.dir_settings: dict = self.settings.for_dir(self.context_dir)
        self.runner: Runner = runner or run_now
        self.offer_backend = offer_backend
        self.events = EventGroup(*self.EVENTS)
        # loading
        self.is_loaded = False
        self.is_fully_loaded = False
        self.load_seconds = 0.0
        self.metadata: dict = {}
        self.proposal: int | str | None = None
        # filters
        self.search_text = ""
        #: the :class:`~amore_gui.application.query.QueryError` of the filter box text, or None
        self.search_error = None
        self.only_checked = False
        self.extra_filters: list = []
        self.tag: str = self.dir_settings.get("tag", "") or ""
        # column layout
        self.user_hidden: set[str] = set()
        self.user_widths: set[str] = set()     # columns the user resized by hand
        # live source
        self.update_mode: str | None = None
        self.update_source_text = "Live: starting…"
        self.live_ready = False
        #: ``publish(kind, data) -> bool``: announce this GUI's own writes (set by the live source)
        self.publisher: Callable[[str, dict], bool] | None = None
        # backend
        self.backend_state = None
        self.backend_busy: str | None = None

    # -- loading ---------------------------------------------------------------------------
    @property
    def title(self) -> str:
        """Window title: proposal (if known) and directory."""
        if self.proposal is None:
            return f"AMORE — {self.context_dir}"
        v = self.vocabulary
        label = v.proposal_text(self.proposal)
        if v.facility != "euxfel":
            label = f"{v.proposal} {label}"
        return f"AMORE — {label} — {self.context_dir}"

    @property
    def vocabulary(self):
        """The facility's words (:class:`amore_gui.application.vocabulary.Vocabulary`)."""
        if getattr(self, "_vocabulary", None) is None:
            self._vocabulary = self.workspace.vocabulary
        return self._vocabulary

    def table_loaded(self, metadata: dict, data: TableData, seconds: float) -> None:
        """The first part of the table was read: keep the metadata (``proposal`` key, any
        type convertible to int) and uncheck the runs remembered as unchecked in ``data``."""
        self.metadata = dict(metadata)
        try:
            self.proposal = normalize_proposal(metadata.get("proposal"))
        except (TypeError, ValueError):
            self.proposal = None
        # the facility's words in the fixed headers (ESRF "Collection", SwissFEL "pgroup")
        v = self.vocabulary
        words = {C_RUN: v.run, C_PROPOSAL: v.proposal}
        for i, c in enumerate(data.columns[:NSTATIC]):
            if c.key in words and c.title != words[c.key]:
                data.columns[i] = dataclasses.replace(c, title=words[c.key])
        for key in self.excluded_runs():
            row = data.row_of.get(key)
            if row is not None:
                data.included[row] = False
        self.load_seconds = seconds
        self.is_loaded = True
        self.events.metadata.emit(self.proposal)

    def load_started(self) -> None:
        """A (re)load of the whole table begins."""
        self.is_fully_loaded = False

    def load_finished(self, seconds: float) -> None:
        """All values are in (``seconds`` since the load started)."""
        self.load_seconds = seconds
        self.is_fully_loaded = True

    def excluded_runs(self) -> set[tuple[int, int]]:
        """(proposal, run) of the runs remembered as unchecked in the Status column."""
        out = set()
        for k in self.dir_settings.get("excluded", []):
            try:
                out.add((normalize_proposal(k[0]), int(k[1])))
            except (TypeError, ValueError, IndexError):
                continue
        return out

    def counts_text(self, data: TableData, shown: int) -> str:
        """Status-bar line: ``"12 runs, 3 shown · 40 variables · 1 processing · 2 failed ·
        1 waiting for a working context file · 40 stale values"`` (values made by code, manual
        values or data that changed since: ``amore-proto reprocess all`` recomputes them)."""
        n = data.nrows
        txt = f"{n} runs" + (f", {shown} shown" if shown != n else "")
        txt += f" · {data.nvars} variables"
        busy = int(np.count_nonzero(data.status[:n] == S_PROCESSING))
        failed = int(np.count_nonzero(data.status[:n] == S_FAILED))
        waiting = int(np.count_nonzero(data.status[:n] == S_WAITING))
        if busy:
            txt += f" · {busy} processing"
        if failed:
            txt += f" · {failed} failed"
        if waiting:
            txt += f" · {waiting} waiting for a working context file"
        stale = data.stale_count()
        if stale:
            txt += f" · {stale} stale value{'s' if stale != 1 else ''}"
        if not self.is_fully_loaded and self.is_loaded:
            txt += " · loading older runs…"
        return txt

    # -- filters ---------------------------------------------------------------------------
    def filters(self) -> list:
        """All row filters in force: column filters, then search text, then checked-only."""
        out = list(self.extra_filters)
        t = self.search_text.strip()
        if t:
            from amore_gui.application.query import QueryError, search_filter
            try:   # an expression (run > 10 and sample ~ "lyso") or plain text
                out.append(search_filter(t))
                self.search_error = None
            except QueryError as e:
                self.search_error = e     # the view shows it; filtering waits for a fix
        else:
            self.search_error = None
        if self.only_checked:
            out.append(OnlyIncluded())
        return out

    def _filters_changed(self) -> None:
        self.events.filters.emit(self.filters())

    def set_search(self, text: str) -> None:
        """Show only runs with ``text`` in any text cell (case-insensitive; empty: all)."""
        text = text or ""
        if text != self.search_text:
            self.search_text = text
            self._filters_changed()

    def set_only_checked(self, on: bool) -> None:
        """Show only runs whose Status box is checked."""
        if bool(on) != self.only_checked:
            self.only_checked = bool(on)
            self._filters_changed()

    def add_filter(self, f) -> None:
        """Add a column filter (NumberRange / TextContains on a column)."""
        self.extra_filters = self.extra_filters + [f]
        self._filters_changed()

    def remove_filter(self, f) -> None:
        """Remove one column filter (by identity)."""
        self.extra_filters = [x for x in self.extra_filters if x is not f]
        self._filters_changed()

    def clear_filters(self) -> None:
        """Remove the column filters, the search text and 'checked only' (one event)."""
        self.extra_filters = []
        self.search_text = ""
        self.only_checked = False
        self._filters_changed()

    @staticmethod
    def find_run(data: TableData, run) -> tuple[int, int] | None:
        """(proposal, run) of run number ``run`` (the newest proposal's if several), or None
        if ``run`` is not a number or not in ``data``."""
        try:
            run = int(run)
        except (TypeError, ValueError):
            return None
        keys = [k for k in data.row_of if k[1] == run]
        return keys[-1] if keys else None

    # -- columns ---------------------------------------------------------------------------
    def set_tag(self, tag: str) -> None:
        """Show only variables with this tag ('' for all); remembered."""
        tag = tag or ""
        if tag != self.tag:
            self.tag = tag
            self.events.columns.emit()
            self.request_save()

    @staticmethod
    def tags(data: TableData) -> list[str]:
        """All variable tags of a table, sorted."""
        return sorted({t for c in data.columns for t in c.tags})

    def is_hidden(self, column: Column) -> bool:
        """Hidden by the user, or a variable without the selected tag."""
        return column.key in self.user_hidden or (
            bool(self.tag) and column.variable and self.tag not in column.tags)

    def set_column_hidden(self, key: str, hidden: bool) -> None:
        """Hide or show a column (remembered)."""
        if hidden:
            self.user_hidden.add(key)
        else:
            self.user_hidden.discard(key)
        self.events.columns.emit()
        self.request_save()

    def set_hidden_columns(self, hidden: Iterable[str]) -> None:
        """Replace the set of user-hidden columns (remembered)."""
        self.user_hidden = set(hidden)
        self.events.columns.emit()
        self.request_save()

    def initial_layout(self, data: TableData) -> tuple[list[str], set[str], dict[str, int]]:
        """(visual order, hidden keys, widths) for the columns of ``data`` from the remembered
        layout; new columns go after their natural neighbours. Without a remembered layout the
        proposal column is hidden when there is only one proposal. Sets :attr:`user_hidden`
        (no event: the caller is about to apply the layout)."""
        keys = [c.key for c in data.columns]
        layout = self.dir_settings.get("columns")
        if layout is None:
            single = len(set(data.proposal[:data.nrows].tolist())) <= 1
            layout = {"hidden": ["#proposal"] if single else []}
        order, hidden = apply_column_layout(keys, layout)
        self.user_hidden = set(hidden)
        widths = {k: int(w) for k, w in layout.get("widths", {}).items() if k in set(keys) and w}
        return order, hidden, widths

    def column_resized_by_user(self, key: str) -> None:
        """The user set this column's width: remember it (others follow their content)."""
        self.user_widths.add(key)
        self.request_save()

    @property
    def sort(self) -> tuple[str, bool]:
        """Remembered (sort column key, descending); default newest run first."""
        s = self.dir_settings.get("sort") or [C_RUN, True]
        return str(s[0]), bool(s[1])

    def tall_rows(self, default: bool) -> bool:
        """Rows tall enough for thumbnails? (remembered; ``default`` if never chosen)"""
        return bool(self.dir_settings.get("tall_rows", default))

    def set_tall_rows(self, on: bool) -> None:
        """Switch tall rows on/off (remembered)."""
        self.dir_settings["tall_rows"] = bool(on)
        self.events.row_height.emit(bool(on))
        self.request_save()

    @property
    def logbook_visible(self) -> bool:
        """Is the logbook panel shown (remembered)."""
        return bool(self.dir_settings.get("logbook", False))

    def set_logbook_visible(self, visible: bool) -> None:
        self.dir_settings["logbook"] = bool(visible)
        self.request_save()

    def request_save(self) -> None:
        """Ask the view to save the settings soon (debounced there)."""
        self.events.save_requested.emit()

    def remember(self, data: TableData, order: list[str], widths: dict[str, int],
                 sort_key: str, descending: bool) -> None:
        """Store the layout in the settings and write the file: the visual ``order`` (keys),
        the hidden columns, the ``widths`` (pixels) of columns the user resized (others are
        ignored; earlier remembered widths are kept), the sort, the unchecked runs and the tag.
        Does nothing before the table was loaded."""
        if not self.is_loaded:
            return
        old = dict(self.dir_settings.get("columns", {}).get("widths", {}))
        old.update({k: int(w) for k, w in widths.items() if k in self.user_widths})
        self.dir_settings["columns"] = {"order": list(order), "hidden": sorted(self.user_hidden),
                                        "widths": old}
        self.dir_settings["sort"] = [sort_key, bool(descending)]
        self.dir_settings["excluded"] = [[_plain(data.proposal[r]), int(data.run[r])]
                                         for r in np.flatnonzero(~data.included[:data.nrows])]
        self.dir_settings["tag"] = self.tag
        self.save()

    def save(self) -> None:
        """Write the settings file now."""
        self.settings.save()

    # -- live source -----------------------------------------------------------------------
    def set_source(self, mode: str, text: str) -> None:
        """Where live updates come from: ``kafka``, ``db`` or ``none``; status-bar text."""
        self.update_mode = mode
        self.update_source_text = text
        self.events.source.emit(mode, text)

    @property
    def source_tooltip(self) -> str:
        return SOURCE_TOOLTIPS.get(self.update_mode or "", "")

    def set_live_ready(self) -> None:
        """Live updates caught up with the changes made while the table was read."""
        self.live_ready = True
        self.events.live_ready.emit()

    def publish(self, kind: str, data: dict) -> bool:
        """Announce a change this GUI made (through Kafka when that is the source)."""
        return bool(self.publisher(kind, data)) if self.publisher is not None else False

    # -- backend ---------------------------------------------------------------------------
    def set_backend_state(self, status) -> None:
        """A new :class:`BackendIndicator` (from the periodic check or a start/stop). The first
        one may make the session offer to start a backend (``offer_backend`` event)."""
        first = self.backend_state is None
        self.backend_state = status
        self.backend_busy = None
        self.events.backend.emit(status, first)
        if first and self.offer_backend and status.state in (BackendState.STOPPED, BackendState.STALE):
            self.events.offer_backend.emit(*self.offer_text(status))

    def set_backend_busy(self, action: str) -> None:
        """A start/stop/restart is under way (``action``)."""
        self.backend_busy = action

    def backend_actions(self) -> dict[str, bool]:
        """Which of start/stop/restart the current state allows (all off while busy)."""
        st = self.backend_state
        if self.backend_busy or st is None:
            return {"start": False, "stop": False, "restart": False}
        here = st.state == BackendState.RUNNING_HERE
        return {"start": st.state in (BackendState.STOPPED, BackendState.STALE), "stop": here, "restart": here}

    @staticmethod
    def busy_text(action: str) -> str:
        return {"start": "Starting the backend…", "stop": "Stopping the backend…",
                "restart": "Restarting the backend…"}.get(action, "Backend: …")

    @staticmethod
    def offer_text(status) -> tuple[str, bool]:
        """(question, force) for offering to start a backend: ``force`` when the backend was
        last recorded on another machine that stopped reporting."""
        here = socket.gethostname()
        elsewhere = bool(status.state == BackendState.STALE and status.host and
                         status.host.split(".")[0] != here.split(".")[0])
        if elsewhere:
            return (f"The backend was last recorded on {status.host}, but has not reported for "
                    f"a while (that machine may have rebooted).\n\nStart a new backend on this "
                    f"machine ({here}) instead?", True)
        return ("No AMORE backend is running for this directory, so new runs are not "
                f"processed.\n\nStart it on this machine ({here})? It keeps running when you "
                "close the GUI.", False)

    # -- comments --------------------------------------------------------------------------
    def edit_comment(self, proposal: int, run: int, text: str) -> None:
        """Write a run's comment (:meth:`Workspace.set_comment`, by the runner); then
        ``comment_saved`` and an announcement, or ``message`` with the error."""
        ws = self.workspace

        def write():
            ws.set_comment(proposal, run, text)
            return True

        def done(_res, err):
            if err:
                self.events.message.emit(f"The comment was not saved: {err}", True)
                return
            self.publish(UpdateKind.COMMENT_CHANGED, {"proposal": proposal, "run": run})
            self.events.comment_saved.emit(proposal, run)
        self.runner(write, done)

    def add_logbook_comment(self, text: str, author: str = "") -> None:
        """Add a standalone timestamped comment (logbook) for this proposal; then
        ``logbook_changed``, or ``message`` with the error."""
        ws, proposal = self.workspace, self.proposal

        def write():
            return ws.add_logbook_comment(text, author=author, proposal=proposal)

        def done(cid, err):
            if err:
                self.events.message.emit(f"The comment was not saved: {err}", True)
                return
            self.publish(UpdateKind.COMMENT_CHANGED, {"id": cid})
            self.events.logbook_changed.emit()
        self.runner(write, done)

    def read_logbook(self) -> list[dict]:
        """The logbook comments (dicts with ``id``, ``timestamp``, ``author``, ``text``...),
        read from the database (blocks: call off the GUI thread)."""
        return self.workspace.read_logbook()


def _plain(proposal):
    """A proposal as JSON keeps it: int for numbers (numpy ints too), str for identifiers."""
    return int(proposal) if not isinstance(proposal, str) else proposal
