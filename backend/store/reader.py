"""Fast reads of ``runs.sqlite`` with the standard library's :mod:`sqlite3` (no Qt, no engine).

The SQL is built once, at import, from the SQLAlchemy tables of :mod:`backend.store.schema`
(compiled for SQLite with ``?`` placeholders), so the writer (:mod:`backend.store.writer`) and
the readers share one schema definition: renaming a column in ``schema.py`` renames it here.
Readers are the GUI (:mod:`amore_gui.application.dbread`) and the public read API
(:mod:`amore.api`). Nothing here writes; the backend is the database's only writer.

Each ``*_SQL`` constant is a query string; its positional parameters are named in its comment.
:func:`decode_value` turns a stored table value into the Python object it stands for (the read
API, the GUI's table and the terminal table use it).
"""
from __future__ import annotations

import math
import os
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite as _sqlite

from backend.contextdir import db_file
from backend.store.identify import check_amore_db, note_sqlite_use
from backend.store.schema import (SCHEMA_HEAD, comments_table, events_table, manual_columns_table,
                                  metadata_table, run_values_table, runs_table, slurm_jobs_table,
                                  variables_table)
from backend.vocab import SummaryType

__all__ = ["connect", "schema_revision", "decode_value", "SCHEMA_HEAD", "RUN_FIELDS",
           "VARIABLE_FIELDS", "COMMENT_FIELDS", "MANUAL_COLUMN_FIELDS"]

_DIALECT = _sqlite.dialect(paramstyle="qmark")

R = runs_table.c
V = run_values_table.c
VAR = variables_table.c
C = comments_table.c
M = metadata_table.c
E = events_table.c
MC = manual_columns_table.c
SJ = slurm_jobs_table.c


def _sql(stmt) -> str:
    """SQLite SQL text of a Core statement (``?`` placeholders in the order of the bind
    parameters). Every parameter must be one of :func:`_p`'s (constants are written into
    the text with :func:`_lit`), so the documented parameter order is the real one."""
    compiled = stmt.compile(dialect=_DIALECT)
    stray = [n for n in compiled.positiontup or () if n not in _PARAMS]
    if stray:
        raise AssertionError(f"unexpected bound parameters {stray} in {compiled}")
    return str(compiled)


def _lit(value: str):
    """A constant (a vocabulary value) written into the SQL text rather than bound."""
    return sa.literal_column("'" + str(value).replace("'", "''") + "'")


_PARAMS = ("p", "r", "n", "t", "lo", "hi", "after")


def _p(name: str):
    """A positional parameter (one of :data:`_PARAMS`)."""
    assert name in _PARAMS
    return sa.bindparam(name)


def _st(t: SummaryType):
    return _lit(t.value)


#: The ``runs`` columns after (proposal, run), in the order the run queries return them.
RUN_FIELDS = ("start_time", "added_at", "status", "status_message", "comment")
#: The ``variables`` columns, in the order :data:`VARIABLES_SQL` returns them.
VARIABLE_FIELDS = ("name", "title", "description", "units", "tags", "data", "summary")
#: The ``comments`` columns, in the order :data:`COMMENTS_SQL` returns them.
COMMENT_FIELDS = ("id", "proposal", "run", "timestamp", "author", "text")

_run_info_cols = [R[f] for f in RUN_FIELDS]

#: () -> (key, value)
METADATA_SQL = _sql(sa.select(M.key, M.value))
#: () -> VARIABLE_FIELDS, in definition order
VARIABLES_SQL = _sql(sa.select(*[VAR[f] for f in VARIABLE_FIELDS]).order_by(sa.text("rowid")))
#: () -> (proposal, run, *RUN_FIELDS), ordered by proposal and run
RUNS_SQL = _sql(sa.select(R.proposal, R.run, *_run_info_cols).order_by(R.proposal, R.run))
#: (proposal, run) -> RUN_FIELDS
RUN_INFO_SQL = _sql(sa.select(*_run_info_cols).where(R.proposal == _p("p"), R.run == _p("r")))
#: () -> COMMENT_FIELDS, oldest first
COMMENTS_SQL = _sql(sa.select(*[C[f] for f in COMMENT_FIELDS]).order_by(C.timestamp, C.id))
#: () -> (count, max id, max timestamp) of the comments
COMMENTS_SIGNATURE_SQL = _sql(sa.select(sa.func.count(), sa.func.max(C.id), sa.func.max(C.timestamp)))

#: the stored value, except thumbnails (NULL: their PNGs are fetched when shown)
_value_no_thumb = sa.case((V.summary_type == _st(SummaryType.THUMBNAIL), sa.null()), else_=V.value)
_value_cols = [V.name, V.summary_type, _value_no_thumb, V.attributes, V.timestamp]

#: (proposal, run) -> (name, summary_type, value or NULL for thumbnails, attributes, timestamp)
RUN_VALUES_SQL = _sql(sa.select(*_value_cols).where(V.proposal == _p("p"), V.run == _p("r")))
#: (since,) -> (proposal, run, name, summary_type, value/NULL, attributes, timestamp)
VALUES_SINCE_SQL = _sql(sa.select(V.proposal, V.run, *_value_cols).where(V.timestamp > _p("t")))
#: () -> (proposal, run, name, value) of every number cell
NUMBER_VALUES_SQL = _sql(sa.select(V.proposal, V.run, V.name, V.value)
                         .where(V.summary_type == _st(SummaryType.NUMBER)))
#: () -> (proposal, run, name, summary_type, value or NULL for thumbnails) of every other cell
OTHER_VALUES_SQL = _sql(sa.select(V.proposal, V.run, V.name, V.summary_type, _value_no_thumb)
                        .where(V.summary_type != _st(SummaryType.NUMBER)))
#: () -> (name,) of every name that has a value
VALUE_NAMES_SQL = _sql(sa.select(V.name).distinct())
#: (proposal, run, name) -> (value, summary_type, attributes) of one cell
VALUE_SQL = _sql(sa.select(V.value, V.summary_type, V.attributes)
                 .where(V.proposal == _p("p"), V.run == _p("r"), V.name == _p("n")))
#: (name,) -> (1,) if any run has a value of that name, else (0,)
NAME_HAS_VALUES_SQL = _sql(sa.select(sa.exists().where(V.name == _p("n"))))
#: (proposal, run, name) -> (PNG bytes,) of a thumbnail cell
THUMBNAIL_SQL = _sql(sa.select(V.value).where(V.proposal == _p("p"), V.run == _p("r"),
                                              V.name == _p("n"),
                                              V.summary_type == _st(SummaryType.THUMBNAIL)))
#: (proposal, run) -> (name, value) of the number cells of one run
RUN_NUMBERS_SQL = _sql(sa.select(V.name, V.value).where(
    V.proposal == _p("p"), V.run == _p("r"), V.summary_type == _st(SummaryType.NUMBER)))
#: (proposal, run) -> (name, summary_type, value/NULL, attributes) of the other cells of one run
RUN_OTHERS_SQL = _sql(sa.select(V.name, V.summary_type, _value_no_thumb, V.attributes).where(
    V.proposal == _p("p"), V.run == _p("r"), V.summary_type != _st(SummaryType.NUMBER)))

#: Fields of an event log entry, in the order :data:`EVENTS_SINCE_SQL` returns them.
EVENT_FIELDS = ("id", "timestamp", "level", "source", "proposal", "run", "message", "details")
#: (after id,) -> the event log entries with ``id`` > after, newest first (fetch as many as wanted)
EVENTS_SINCE_SQL = _sql(sa.select(*[E[f] for f in EVENT_FIELDS]).where(E.id > _p("after"))
                        .order_by(E.id.desc()))

#: The ``manual_columns`` columns, in the order :data:`MANUAL_COLUMNS_SQL` returns them.
MANUAL_COLUMN_FIELDS = ("name", "title", "type", "units", "choices", "description", "carry_over")
_manual_live = MC.deleted_at.is_(None)
#: () -> MANUAL_COLUMN_FIELDS of the manual columns not deleted, in display order
#: (raises ``sqlite3.OperationalError`` on a database older than revision 0006)
MANUAL_COLUMNS_SQL = _sql(sa.select(*[MC[f] for f in MANUAL_COLUMN_FIELDS]).where(_manual_live)
                          .order_by(MC.position, MC.id))
#: () -> (name,) of the manual columns not deleted
MANUAL_COLUMN_NAMES_SQL = _sql(sa.select(MC.name).where(_manual_live))

#: The ``slurm_jobs`` columns, in the order :data:`RUN_SLURM_JOBS_SQL` returns them.
SLURM_JOB_FIELDS = ("task_id", "job_id", "state", "node", "names", "log_file", "message",
                    "started_at", "ended_at", "done")
#: (proposal, run) -> SLURM_JOB_FIELDS of the run's Slurm tasks, newest submission first
#: (raises ``sqlite3.OperationalError`` on a database older than revision 0007)
RUN_SLURM_JOBS_SQL = _sql(sa.select(*[SJ[f] for f in SLURM_JOB_FIELDS])
                          .where(SJ.proposal == _p("p"), SJ.run == _p("r"))
                          .order_by(SJ.submitted_at.desc()))


def _chunk_sql() -> str:
    """Values of a run range of one proposal in one scan, one row per run:
    ``(run, number names, number values, other cells)`` - names and values of the number cells
    as comma-separated text (NULL written as ``nan``), and every other cell (and every number
    with ``bold``/``background``/``tooltip`` attributes) as a JSON array of
    ``[name, summary_type, value, attributes]`` (value NULL for numbers and thumbnails, hex
    text for sparklines and other blobs; attributes only for error/skipped cells and cells
    with ``bold``/``background``/``tooltip``). Parameters: (proposal, lo, hi)."""
    is_num = V.summary_type == _st(SummaryType.NUMBER)
    # cheap test for attributes "bold"/"background" (both start with '"b') or "tooltip"
    zero = sa.literal_column("0")
    has_b = sa.or_(sa.func.instr(V.attributes, _lit('"b')) > zero,
                   sa.func.instr(V.attributes, _lit('"tooltip"')) > zero)
    value = sa.case(
        (V.summary_type.in_([_st(SummaryType.NUMBER), _st(SummaryType.THUMBNAIL)]), sa.null()),
        (sa.or_(V.summary_type == _st(SummaryType.SPARKLINE),
                sa.func.typeof(V.value) == _lit("blob")), sa.func.hex(V.value)),
        else_=V.value)
    attrs = sa.case((sa.or_(V.summary_type.in_([_st(SummaryType.ERROR), _st(SummaryType.SKIPPED)]),
                            has_b), V.attributes))
    others = sa.func.group_concat(sa.case((sa.or_(~is_num, has_b),
                                           sa.func.json_array(V.name, V.summary_type, value, attrs))))
    stmt = (sa.select(V.run,
                      sa.func.group_concat(sa.case((is_num, V.name))),
                      sa.func.group_concat(sa.case((is_num, sa.func.ifnull(V.value, _lit("nan"))))),
                      _lit("[").op("||")(others).op("||")(_lit("]")))
            .where(V.proposal == _p("p"), V.run.between(_p("lo"), _p("hi")))
            .group_by(V.proposal, V.run))
    return _sql(stmt)


#: (proposal, lo, hi) -> per run: (run, number names, number values, other cells JSON)
CHUNK_SQL = _chunk_sql()

#: Alembic's own table (not part of the schema definition): the database's revision.
SCHEMA_REVISION_SQL = "SELECT version_num FROM alembic_version"


def connect(path: str | os.PathLike, *, uri_readonly: bool = False,
            timeout: float = 30.0) -> sqlite3.Connection:
    """A read-only connection to an existing ``runs.sqlite`` (``path``: the file or its context
    directory).

    With ``uri_readonly`` SQLite opens the file with ``mode=ro`` (nothing can be written
    through it, not even by mistake); otherwise the connection is ``PRAGMA query_only``.
    Either way it reads consistently while the backend writes (WAL mode); ``timeout`` seconds
    of waiting for a lock. ``check_same_thread`` is off: use it from one thread at a time.
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
    return con


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
