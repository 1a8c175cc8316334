"""One opened context directory, as every front-end uses it (no Qt).

A :class:`Workspace` is what a front-end holds for one context directory: every read, write and
command it needs, as plain calls. The Qt GUI holds one per main window (through its
:class:`~amore_gui.application.session.Session`), the browser front-end one per directory it
serves, shared by its clients. It has no state besides the directory: methods open what they
need and close it again, so any thread may call any method, and several workspaces on one
directory (in one process or many) see the same database.

Every method says whether it **blocks** (reads or writes the database or files, talks to tmux,
starts a process and waits for it). Front-ends call blocking methods off their event loop - Qt:
a worker thread (:class:`amore_gui._qt.workers.Tasks`); asyncio: ``asyncio.to_thread`` - and
the rest anywhere. Live updates are the long-running exception: :meth:`Workspace.live_updates`
returns a :class:`~amore_gui.application.live.LiveUpdates` to run in a thread of its own.

Errors: methods raise what they document (``FileNotFoundError`` when the database is gone, the
storage layer's errors such as :class:`backend.store.manual.ManualError` for a refused manual
value); front-ends show the message (``f"{type(e).__name__}: {e}"`` or ``str(e)``).
"""
from __future__ import annotations

import os
import sqlite3
import tempfile
from pathlib import Path
from typing import Iterator

from backend.contextdir import ContextDir

from amore_gui.application import dbread


class Workspace:
    """The context directory ``context_dir`` (``str`` or path; made absolute, not resolved).

    Nothing is read or checked on construction: a workspace on a missing directory raises
    ``FileNotFoundError`` from its first database read.
    """

    def __init__(self, context_dir: str | os.PathLike):
        self.paths = ContextDir(context_dir)

    def __repr__(self) -> str:
        return f"Workspace({str(self.context_dir)!r})"

    # -- where things are (no I/O) ---------------------------------------------------------
    @property
    def context_dir(self) -> Path:
        return self.paths.path

    @property
    def db_file(self) -> Path:
        """``runs.sqlite``."""
        return self.paths.db_file

    @property
    def context_file(self) -> Path:
        """The user's ``context.py``."""
        return self.paths.context_file

    @property
    def log_file(self) -> Path:
        """The backend's ``amore.log``."""
        return self.paths.log_file

    @property
    def vocabulary(self):
        """The facility's words (:class:`~amore_gui.application.vocabulary.Vocabulary`);
        reads ``amore.toml`` (blocks briefly)."""
        from amore_gui.application.vocabulary import vocabulary_for
        return vocabulary_for(self.context_dir)

    # -- the run table (blocking) ----------------------------------------------------------
    def ensure_schema(self) -> None:
        """Upgrade an older database to the schema this code reads (only if needed). Blocks;
        raises ``FileNotFoundError`` without a database."""
        dbread.ensure_schema(self.context_dir)

    def iter_load(self, threads: int = 2, first: int = 200,
                  size: int = 1000) -> Iterator["dbread.LoadResult | dbread.ValueChunk"]:
        """Read the run table progressively (:func:`dbread.iter_load`): first a
        :class:`~amore_gui.application.dbread.LoadResult` (every run, the newest ``first``
        runs' values: show it), then :class:`~amore_gui.application.dbread.ValueChunk` s of
        older runs to merge (:meth:`~amore_gui.application.dbread.ValueChunk.merge_into`).
        Blocks while iterating; raises ``FileNotFoundError`` without a database."""
        return dbread.iter_load(self.context_dir, threads, first, size)

    def load(self, threads: int = 2) -> "dbread.LoadResult":
        """The whole run table at once (:func:`dbread.load_table`). Blocks."""
        return dbread.load_table(self.context_dir, threads)

    def read_columns(self) -> "dbread.ColumnsRead":
        """The column definitions and stale values, without the values
        (:func:`dbread.read_columns`): what a change of the variables needs. Blocks."""
        return dbread.read_columns(self.context_dir)

    def read_run_update(self, proposal: int | str, run: int) -> "dbread.RunUpdate":
        """One run's row and values as a complete
        :class:`~amore_gui.application.table_data.RunUpdate`. Blocks."""
        return dbread.read_run_update(self.context_dir, proposal, run)

    def connect(self) -> sqlite3.Connection:
        """A read-only SQLite connection (for many small reads from one thread, e.g.
        :meth:`read_thumbnail`), with a small page cache (it may be kept open for the
        window's life); the caller closes it. Raises ``FileNotFoundError``."""
        return dbread.connect(self.context_dir, kept=True)

    @staticmethod
    def read_thumbnail(con: sqlite3.Connection, proposal: int | str, run: int,
                       name: str) -> bytes | None:
        """PNG bytes of a thumbnail cell (on a connection from :meth:`connect`), or None.
        Blocks."""
        return dbread.read_thumbnail(con, proposal, run, name)

    # -- a run's full values (blocking: HDF5 files) ----------------------------------------
    def read_value(self, proposal: int | str, run: int, name: str):
        """The full result of a variable for one run
        (:func:`amore_gui.application.values.read_run_value`). Blocks; raises
        ``FileNotFoundError`` / ``KeyError``."""
        from amore_gui.application.values import read_run_value
        return read_run_value(self.context_dir, proposal, run, name)

    def read_per_train(self, runs, names: list[str]) -> tuple[dict, list[str]]:
        """Per-train data of ``names`` for ``(proposal, run)`` pairs matched on train ID:
        ``(result, problems)`` (:func:`amore_gui.application.values.read_per_train`). Blocks."""
        from amore_gui.application.values import read_per_train
        return read_per_train(self.context_dir, runs, names)

    # -- live updates ----------------------------------------------------------------------
    def live_updates(self, loaded: "dbread.LoadResult", since: float, use_kafka: bool = True):
        """A :class:`~amore_gui.application.live.LiveUpdates` continuing from the table
        ``loaded`` (read from Unix time ``since`` on). Does not block; run its ``run()`` in a
        thread of its own."""
        from amore_gui.application.live import LiveUpdates
        return LiveUpdates.from_load(self.context_dir, loaded, since, use_kafka=use_kafka)

    # -- comments (blocking writes) --------------------------------------------------------
    def _writer(self):
        from backend.store.writer import RunDB
        return RunDB(self.context_dir)

    def set_comment(self, proposal: int | str, run: int, text: str) -> None:
        """Write a run's comment (empty clears it). Blocks; raises
        :class:`backend.store.writer.StorageError` (e.g. no database)."""
        db = self._writer()
        try:
            db.set_comment(proposal, run, text)
        finally:
            db.close()

    def add_logbook_comment(self, text: str, author: str = "",
                            proposal: int | str | None = None) -> int:
        """Add a standalone timestamped comment (the logbook); returns its id. Blocks."""
        db = self._writer()
        try:
            return db.add_comment(text, author=author, proposal=proposal)
        finally:
            db.close()

    def read_logbook(self) -> list[dict]:
        """The logbook, oldest first: dicts with ``id``, ``proposal``, ``run``, ``timestamp``
        (Unix seconds), ``author``, ``text``. Blocks."""
        con = self.connect()
        try:
            return dbread.read_comments(con)
        finally:
            con.close()

    # -- manual columns (blocking) ---------------------------------------------------------
    def write_manual_values(self, keys, name: str, raw, via: str = "gui",
                            confirm: bool = False) -> list:
        """Set manual column ``name`` of runs ``keys`` ((proposal, run) pairs) to ``raw``
        (see :func:`amore_gui.application.manual_edit.write_manual_values`). Blocks; raises
        :class:`backend.store.manual.ManualError` for a refused value (nothing written)."""
        from amore_gui.application.manual_edit import write_manual_values
        return write_manual_values(self.context_dir, keys, name, raw, via=via, confirm=confirm)

    def add_manual_column(self, **definition):
        """Create a manual column (``name``, ``type``, ``title``, ``units``, ``choices``,
        ``description``, ``carry_over``); returns it. Blocks; raises ``ManualError``."""
        from amore_gui.application.manual_edit import create_manual_column
        return create_manual_column(self.context_dir, **definition)

    def manual_history(self, proposal: int | str, run: int, name: str) -> list[dict]:
        """Every edit of one manual cell, oldest first. Blocks."""
        from amore_gui.application.manual_edit import read_history
        return read_history(self.context_dir, proposal, run, name)

    def provenance(self, proposal: int | str, run: int, name: str) -> dict | None:
        """How one value was made and whether it is stale, and why
        (:func:`backend.store.staleness.provenance`, with ``lines``: the same as text for
        people); None if the run has no such value. Blocks."""
        from backend.store import staleness
        con = dbread.connect(self.context_dir)
        try:
            info = staleness.provenance(con, proposal, run, name,
                                        staleness.context_name(self.context_dir))
        finally:
            con.close()
        if info is not None:
            info["lines"] = staleness.describe_provenance(info)
        return info

    def run_log(self, proposal: int | str, run: int) -> list[dict]:
        """The kept processing logs of a run, oldest first (``status``, ``timestamp``,
        ``text``). Blocks."""
        from amore_gui.application.manual_edit import read_run_log
        return read_run_log(self.context_dir, run, proposal)

    # -- the backend (blocking: tmux, processes) -------------------------------------------
    def backend_status(self):
        """The backend's state (:class:`~amore_gui.application.backend_status.BackendIndicator`).
        Blocks; never raises."""
        from amore_gui.application.backend_status import backend_status
        return backend_status(self.context_dir)

    def backend_action(self, action: str, force: bool = False):
        """Start, stop or restart the backend on this machine: ``(error or None, state
        afterwards)`` (:func:`~amore_gui.application.backend_status.backend_action`). Blocks
        until done (seconds); never raises."""
        from amore_gui.application.backend_status import backend_action
        return backend_action(self.context_dir, action, force=force)

    def backend_log(self, initial_lines: int = 200):
        """A :class:`~amore_gui.application.backend_status.BackendLog` following ``amore.log``
        (its ``read_new()`` blocks briefly). Does not block."""
        from amore_gui.application.backend_status import BackendLog
        return BackendLog(self.context_dir, initial_lines)

    # -- reprocessing and Slurm ------------------------------------------------------------
    def reprocess_job(self, runs: list[str], names: list[str] | None = None,
                      slurm: bool = False, all_runs: int = 0, force: bool = False):
        """A :class:`~amore_gui.application.reprocess.ReprocessJob` (command + progress) for
        the front-end to run (``runs == ["all"]``: the stale values, unless ``force``). Does
        not block."""
        from amore_gui.application.reprocess import ReprocessJob
        return ReprocessJob(self.context_dir, runs, names, slurm=slurm, all_runs=all_runs,
                            force=force)

    def cancel_job(self, runs: list[int]):
        """A :class:`~amore_gui.application.reprocess.CancelJob` cancelling the Slurm jobs of
        ``runs``. Does not block."""
        from amore_gui.application.reprocess import CancelJob
        return CancelJob(self.context_dir, runs)

    def slurm_jobs(self, proposal: int | str, run: int) -> list[dict]:
        """The Slurm tasks of one run, newest first
        (:func:`amore_gui.application.slurmjobs.read_run_jobs`). Blocks."""
        from amore_gui.application.slurmjobs import read_run_jobs
        return read_run_jobs(self.context_dir, proposal, run)

    @staticmethod
    def read_log_tail(path: str | os.PathLike, max_bytes: int = 200_000) -> str:
        """The end of a job's log file (text), or a sentence saying why there is none.
        Blocks."""
        from amore_gui.application.slurmjobs import read_log_tail
        return read_log_tail(path, max_bytes)

    # -- the event log ---------------------------------------------------------------------
    def event_log(self, limit: int = 2000):
        """An :class:`~amore_gui.application.eventlog.EventLogState` of this directory (its
        ``poll()`` blocks, ``apply()`` does not). Does not block."""
        from amore_gui.application.eventlog import EventLogState
        return EventLogState(self.context_dir, limit)

    # -- the context file ------------------------------------------------------------------
    def read_context_file(self) -> str:
        """The text of ``context.py``. Blocks; raises ``OSError``."""
        return self.context_file.read_text()

    def check_context(self, code: str, timeout: float = 60.0):
        """Validate context-file text in a separate Python process
        (:func:`amore_gui.application.context_check.validate`): a ``CheckResult``. Blocks for
        as long as the file takes to load (at most ``timeout`` seconds)."""
        from amore_gui.application.context_check import validate
        return validate(code, self.context_dir, timeout)

    def save_context_file(self, text: str) -> Path:
        """Write ``context.py`` atomically (a temporary file renamed over it, keeping its
        permissions); the backend notices and reloads it. Returns its path. Blocks; raises
        ``OSError``."""
        path = self.context_file
        fd, tmp = tempfile.mkstemp(prefix=".context-", suffix=".py", dir=self.context_dir)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            try:
                os.chmod(tmp, os.stat(path).st_mode & 0o777)
            except OSError:
                pass
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path
