"""Fast reads of ``runs.sqlite`` with the standard library's :mod:`sqlite3` (no Qt, no engine,
no SQLAlchemy).

The queries are SQL text written here against the schema that :mod:`backend.store.schema`
defines (and the Alembic migrations create). This module does not import SQLAlchemy, so the
front-ends that read through it (the GUI's :mod:`amore_gui.application.dbread`, the browser,
the public read API :mod:`amore.api`) never load it to read (~18 MB and ~0.2-0.3 s
of a fresh process); only the writer (:mod:`backend.store.writer`) does.
``tests/test_storage.py`` prepares every statement here against a database the migrations
made (an unknown table or column fails) and checks that each ``*_FIELDS`` tuple names the
schema's columns in the order its query returns them: renaming a column in ``schema.py``
(and a migration) fails that test until the SQL here follows. Nothing here writes; the backend
is the database's only writer.

Each ``*_SQL`` constant is a query string; its positional parameters (``?``) are named in its
comment. :func:`decode_value` turns a stored table value into the Python object it stands for
(the read API, the GUI's table and the terminal table use it).
"""
from __future__ import annotations

import math
import os
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np

from backend.contextdir import db_file
from backend.store.identify import SCHEMA_HEAD, check_amore_db, note_sqlite_use
from backend.vocab import SummaryType

__all__ = ["connect", "schema_revision", "decode_value", "SCHEMA_HEAD", "RUN_FIELDS",
           "VARIABLE_FIELDS", "COMMENT_FIELDS", "MANUAL_COLUMN_FIELDS"]


def _lit(value: str) -> str:
    """A constant (a vocabulary value) as an SQL string literal."""
    return "'" + str(value).replace("'", "''") + "'"


def _cols(fields) -> str:
    return ", ".join(fields)


_NUMBER = _lit(SummaryType.NUMBER.value)
_THUMBNAIL = _lit(SummaryType.THUMBNAIL.value)
_SPARKLINE = _lit(SummaryType.SPARKLINE.value)
_ERROR = _lit(SummaryType.ERROR.value)
_SKIPPED = _lit(SummaryType.SKIPPED.value)

#: The ``runs`` columns after (proposal, run), in the order the run queries return them.
RUN_FIELDS = ("start_time", "added_at", "status", "status_message", "comment")
#: The ``variables`` columns, in the order :data:`VARIABLES_SQL` returns them.
VARIABLE_FIELDS = ("name", "title", "description", "units", "tags", "data", "summary")
#: The ``comments`` columns, in the order :data:`COMMENTS_SQL` returns them.
COMMENT_FIELDS = ("id", "proposal", "run", "timestamp", "author", "text")

#: () -> (key, value)
METADATA_SQL = 'SELECT "key", value FROM metadata'
#: () -> VARIABLE_FIELDS, in definition order
VARIABLES_SQL = f"SELECT {_cols(VARIABLE_FIELDS)} FROM variables ORDER BY rowid"
#: () -> (proposal, run, *RUN_FIELDS), ordered by proposal and run
RUNS_SQL = f"SELECT proposal, run, {_cols(RUN_FIELDS)} FROM runs ORDER BY proposal, run"
#: () -> (largest change stamp of ``runs``,) (revision 0009; raises
#: ``sqlite3.OperationalError`` on an older database, which has no stamp)
RUNS_STAMP_SQL = "SELECT ifnull(max(changed), 0) FROM runs"
#: (stamp,) -> (proposal, run, *RUN_FIELDS, changed) of the runs changed after that stamp
#: (revision 0009: see ``runs.changed`` in :mod:`backend.store.schema`; an indexed range)
RUNS_CHANGED_SQL = (f"SELECT proposal, run, {_cols(RUN_FIELDS)}, changed FROM runs "
                    "WHERE changed > ?")
#: (proposal, run) -> RUN_FIELDS
RUN_INFO_SQL = f"SELECT {_cols(RUN_FIELDS)} FROM runs WHERE proposal = ? AND run = ?"
#: () -> COMMENT_FIELDS, oldest first
COMMENTS_SQL = f"SELECT {_cols(COMMENT_FIELDS)} FROM comments ORDER BY timestamp, id"
#: () -> (count, max id, max timestamp) of the comments
COMMENTS_SIGNATURE_SQL = "SELECT count(*), max(id), max(timestamp) FROM comments"

#: the stored value, except thumbnails (NULL: their PNGs are fetched when shown)
_VALUE_NO_THUMB = f"CASE WHEN summary_type = {_THUMBNAIL} THEN NULL ELSE value END"

#: (proposal, run) -> (name, summary_type, value or NULL for thumbnails, attributes, timestamp)
RUN_VALUES_SQL = (f"SELECT name, summary_type, {_VALUE_NO_THUMB}, attributes, timestamp "
                  "FROM run_values WHERE proposal = ? AND run = ?")
#: (since,) -> (proposal, run, name, summary_type, value/NULL, attributes, timestamp)
VALUES_SINCE_SQL = (f"SELECT proposal, run, name, summary_type, {_VALUE_NO_THUMB}, attributes, "
                    "timestamp FROM run_values WHERE timestamp > ?")
#: () -> (proposal, run, name, value) of every number cell
NUMBER_VALUES_SQL = ("SELECT proposal, run, name, value FROM run_values "
                     f"WHERE summary_type = {_NUMBER}")
#: () -> (proposal, run, name, summary_type, value or NULL for thumbnails) of every other cell
OTHER_VALUES_SQL = (f"SELECT proposal, run, name, summary_type, {_VALUE_NO_THUMB} "
                    f"FROM run_values WHERE summary_type != {_NUMBER}")
#: () -> (name,) of every name that has a value
VALUE_NAMES_SQL = "SELECT DISTINCT name FROM run_values"
#: (proposal, run, name) -> (value, summary_type, attributes) of one cell
VALUE_SQL = ("SELECT value, summary_type, attributes FROM run_values "
             "WHERE proposal = ? AND run = ? AND name = ?")
#: (name,) -> (1,) if any run has a value of that name, else (0,)
NAME_HAS_VALUES_SQL = "SELECT EXISTS (SELECT * FROM run_values WHERE name = ?)"
#: (proposal, run, name) -> (PNG bytes,) of a thumbnail cell
THUMBNAIL_SQL = ("SELECT value FROM run_values WHERE proposal = ? AND run = ? AND name = ? "
                 f"AND summary_type = {_THUMBNAIL}")
#: (proposal, run) -> (name, value) of the number cells of one run
RUN_NUMBERS_SQL = ("SELECT name, value FROM run_values WHERE proposal = ? AND run = ? "
                   f"AND summary_type = {_NUMBER}")
#: (proposal, run) -> (name, summary_type, value/NULL, attributes) of the other cells of one run
RUN_OTHERS_SQL = (f"SELECT name, summary_type, {_VALUE_NO_THUMB}, attributes FROM run_values "
                  f"WHERE proposal = ? AND run = ? AND summary_type != {_NUMBER}")

#: Fields of an event log entry, in the order :data:`EVENTS_SINCE_SQL` returns them.
EVENT_FIELDS = ("id", "timestamp", "level", "source", "proposal", "run", "message", "details")
#: (after id,) -> the event log entries with ``id`` > after, newest first (fetch as many as wanted)
EVENTS_SINCE_SQL = f"SELECT {_cols(EVENT_FIELDS)} FROM events WHERE id > ? ORDER BY id DESC"

#: The ``manual_columns`` columns, in the order :data:`MANUAL_COLUMNS_SQL` returns them.
MANUAL_COLUMN_FIELDS = ("name", "title", "type", "units", "choices", "description", "carry_over")
#: () -> MANUAL_COLUMN_FIELDS of the manual columns not deleted, in display order
#: (raises ``sqlite3.OperationalError`` on a database older than revision 0006)
MANUAL_COLUMNS_SQL = (f"SELECT {_cols(MANUAL_COLUMN_FIELDS)} FROM manual_columns "
                      "WHERE deleted_at IS NULL ORDER BY position, id")
#: () -> (name,) of the manual columns not deleted
MANUAL_COLUMN_NAMES_SQL = "SELECT name FROM manual_columns WHERE deleted_at IS NULL"

#: The ``slurm_jobs`` columns, in the order :data:`RUN_SLURM_JOBS_SQL` returns them.
SLURM_JOB_FIELDS = ("task_id", "job_id", "state", "node", "names", "log_file", "message",
                    "started_at", "ended_at", "done")
#: (proposal, run) -> SLURM_JOB_FIELDS of the run's Slurm tasks, newest submission first
#: (raises ``sqlite3.OperationalError`` on a database older than revision 0007)
RUN_SLURM_JOBS_SQL = (f"SELECT {_cols(SLURM_JOB_FIELDS)} FROM slurm_jobs "
                      "WHERE proposal = ? AND run = ? ORDER BY submitted_at DESC")

# CHUNK_SQL's pieces. A cheap test for the attributes "bold"/"background"/"by" (of a manual
# cell; all start with '"b') or "tooltip": one GLOB pass over the text ('"t' lets through a
# little more than "tooltip"; what it lets through is looked at again below).
_HAS_B = "attributes GLOB '*\"[bt]*'"
# Of those, a number cell whose attributes the table uses only for "bold" (no error, reason,
# background or manual edit: :func:`amore_gui.application.dbread._parse_attrs`'s fast path)
_PLAIN = ("instr(attributes, '\"error') = 0 AND instr(attributes, '\"reason\"') = 0 "
          "AND instr(attributes, '\"background\"') = 0 AND instr(attributes, '\"manual\"') = 0")
_BOLD = "(instr(attributes, '\"bold\": true') > 0 OR instr(attributes, '\"bold\":true') > 0)"
_CHUNK_VALUE = (f"CASE WHEN summary_type IN ({_NUMBER}, {_THUMBNAIL}) THEN NULL "
                f"WHEN summary_type = {_SPARKLINE} OR typeof(value) = 'blob' THEN hex(value) "
                "ELSE value END")
_CHUNK_ATTRS = f"CASE WHEN summary_type IN ({_ERROR}, {_SKIPPED}) OR {_HAS_B} THEN attributes END"
_CHUNK_CELL = f"json_array(name, summary_type, {_CHUNK_VALUE}, {_CHUNK_ATTRS})"

#: (proposal, lo, hi) -> per run: (run, number names, number values, other cells JSON)
#:
#: Values of a run range of one proposal in one scan, one row per run: names and values of
#: the number cells as comma-separated text (NULL written as ``nan``), and every other cell
#: as a JSON array: ``[name, summary_type, value, attributes]`` for the cells that are not
#: numbers and the numbers with ``background``/``tooltip`` or a manual edit's attributes
#: (value NULL for numbers and thumbnails, hex text for sparklines and other blobs; attributes
#: only for error/skipped cells and cells with ``bold``/``background``/``tooltip``/``by``),
#: and just the name (a JSON string) of a number shown bold and nothing else.
CHUNK_SQL = (
    "SELECT run, "
    f"group_concat(CASE WHEN summary_type = {_NUMBER} THEN name END), "
    f"group_concat(CASE WHEN summary_type = {_NUMBER} THEN ifnull(value, 'nan') END), "
    f"'[' || group_concat(CASE WHEN summary_type != {_NUMBER} THEN {_CHUNK_CELL} "
    f"WHEN {_HAS_B} THEN CASE WHEN NOT ({_PLAIN}) THEN {_CHUNK_CELL} "
    f"WHEN {_BOLD} THEN json_quote(name) END END) || ']' "
    "FROM run_values WHERE proposal = ? AND run BETWEEN ? AND ? GROUP BY proposal, run")

#: Alembic's own table (not part of the schema definition): the database's revision.
SCHEMA_REVISION_SQL = "SELECT version_num FROM alembic_version"


def connect(path: str | os.PathLike, *, uri_readonly: bool = False,
            timeout: float = 30.0, cache_kib: int | None = None) -> sqlite3.Connection:
    """A read-only connection to an existing ``runs.sqlite`` (``path``: the file or its context
    directory).

    With ``uri_readonly`` SQLite opens the file with ``mode=ro`` (nothing can be written
    through it, not even by mistake); otherwise the connection is ``PRAGMA query_only``.
    Either way it reads consistently while the backend writes (WAL mode); ``timeout`` seconds
    of waiting for a lock. ``check_same_thread`` is off: use it from one thread at a time.
    ``cache_kib``: the most memory (KiB) SQLite keeps of the file's pages for this connection
    (``PRAGMA cache_size``); None leaves SQLite's default, 2,000 KiB. A connection kept open
    for days that reads a few rows at a time gains nothing from that (the system's page cache
    keeps the file), and its cache fills as the database grows: see :data:`KEPT_CACHE_KIB`.
    Raises ``FileNotFoundError`` if there is no database,
    :class:`backend.store.identify.NotAmoreDatabase` (saying what it is) for a database that
    is not AMORE's: that one is not opened at all (reading a WAL database would add files
    beside it).
    """
    path = db_file(path)
    if not path.is_file():
        raise FileNotFoundError(f"No AMORE database at {path}")
    check_amore_db(path)
    note_sqlite_use(path)
    if uri_readonly:
        con = sqlite3.connect(Path(path).absolute().as_uri() + "?mode=ro", uri=True,
                              timeout=timeout, check_same_thread=False)
    else:
        con = sqlite3.connect(str(path), timeout=timeout, check_same_thread=False)
    con.execute("PRAGMA query_only = 1")
    if cache_kib is not None:
        con.execute(f"PRAGMA cache_size = -{max(int(cache_kib), 1)}")
    return con


#: ``cache_kib`` for a reading connection a process keeps open for its life (a front-end's
#: live updates and thumbnails, the web server's threads): with SQLite's default each such
#: connection's cache fills to 2 MB as it reads more of a growing database (scrolling through
#: every run's thumbnails: ``tests/test_application.py``), and keeps it. Reading the latest
#: run's row or a thumbnail was as quick with 256 KiB (measured on the soak's database; in the
#: soak itself, where the GUIs read mostly the newest runs, it made no difference:
#: docs/reliability.rst).
KEPT_CACHE_KIB = 256


def schema_revision(con: sqlite3.Connection) -> str | None:
    """The Alembic revision of the database, or None if it has none (an empty file)."""
    try:
        row = con.execute(SCHEMA_REVISION_SQL).fetchone()
    except sqlite3.OperationalError:
        return None
    return row[0] if row else None


def decode_value(value: Any, summary_type: str) -> Any:
    """A table value as stored in ``run_values.value`` (written by
    :func:`backend.ctxrunner.results.table_value`), decoded by its ``summary_type``
    (a :class:`backend.vocab.SummaryType` value):

    ==============  ========================================  ===================================
    summary type    stored (SQLite)                           decoded
    ==============  ========================================  ===================================
    ``number``      INTEGER or REAL (NULL for a NaN result)    ``int`` or ``float``; NaN for NULL
                                                              or text that is not a number
    ``bool``        INTEGER 0/1                               ``bool``; None for NULL or text
                                                              that is not a number
    ``complex``     TEXT such as ``"(1+2j)"``                 ``complex`` (the text itself if it
                                                              does not parse); None for NULL
    ``string``      TEXT                                      ``str``; None for NULL
    ``array``       TEXT, the description (``"float64 (4,     ``str``; None for NULL
                    5, 6)"``) of an array without summary
    ``sparkline``   BLOB of little-endian float32 points      1-D ``numpy.ndarray`` of float32 (a
                                                              copy); None for NULL
    ``thumbnail``   BLOB, a PNG image                         ``bytes``; None for NULL
    ``error``,      NULL (the message, error type or reason   None
    ``skipped``,    are in the value's attributes)
    ``none``
    ==============  ========================================  ===================================

    Never raises for what a database holds; an unknown summary type decodes to None.
    """
    if summary_type == SummaryType.NUMBER:
        if isinstance(value, (bytes, str)):
            try:
                return float(value)
            except ValueError:
                return math.nan
        return math.nan if value is None else value
    if value is None:
        return None
    if summary_type == SummaryType.BOOL:
        if isinstance(value, (bytes, str)):
            try:
                return float(value) != 0
            except ValueError:
                return None
        return bool(value)
    if summary_type in (SummaryType.STRING, SummaryType.ARRAY):
        return str(value)
    if summary_type == SummaryType.COMPLEX:
        try:
            return complex(str(value).replace(" ", ""))
        except ValueError:
            return value
    if summary_type == SummaryType.SPARKLINE:
        raw = bytes(value)
        return np.frombuffer(raw[:len(raw) // 4 * 4], "<f4").copy()
    if summary_type == SummaryType.THUMBNAIL:
        return bytes(value)
    return None   # error, skipped, none
