"""Reading ``runs.sqlite`` for the GUI (plain Python + sqlite3; called off the GUI thread).

* :func:`load_table` - the whole run table into a :class:`~amore_gui.application.table_data.TableData`
  with few queries: numbers come grouped per run (``group_concat``, parsed by numpy) from two
  threads on separate connections (SQLite runs without the GIL), everything else (strings,
  sparklines, errors, which cells hold thumbnails) from one narrow query. Thumbnail PNGs are not
  read here: :func:`read_thumbnail` fetches one when its cell becomes visible.
* :func:`read_run_update` - one run's row and values (the live-update path).
* :class:`DbChangeWatcher` - finds what other processes changed (``PRAGMA data_version``,
  then values newer than the last seen timestamp, and the runs whose change stamp is newer
  than the last seen one; a diff of the whole ``runs`` table on a database without stamps);
  the update source when no Kafka broker is available.

The SQL comes from :mod:`backend.store.reader` (SQL text for :mod:`sqlite3`, checked against the
migrated schema by a test: loading never imports SQLAlchemy); writes go through
:class:`backend.store.writer.RunDB` (imported only when something is written).
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np

from backend.contextdir import db_file
from backend.store import reader as sql
from backend.store import staleness
from backend.store.reader import SCHEMA_HEAD
from backend.vocab import SummaryType

from amore_gui.application.table_data import (K_BOOL, K_NUMBER, K_THUMBNAIL, KIND_CODE, Column, RunUpdate, TableData,
                         _attrs_used, builtin_column, cell_from_stored)

#: Alembic revision of the schema this module reads.
EXPECTED_SCHEMA = SCHEMA_HEAD

#: Seconds of overlap when asking for values newer than the last seen timestamp (a writer's
#: timestamp is taken before its transaction commits).
TIMESTAMP_OVERLAP = 10.0

_SPARKLINE = SummaryType.SPARKLINE.value
_NUMBER = SummaryType.NUMBER.value


def connect(path: str | Path, kept: bool = False) -> sqlite3.Connection:
    """A read-only (``query_only``) connection to an existing database file (or its context
    directory): :func:`backend.store.reader.connect`. ``kept``: for a connection kept open
    for the process's life, reading a few rows at a time; its page cache is kept small
    (:data:`backend.store.reader.KEPT_CACHE_KIB`).

    Raises ``FileNotFoundError`` if it does not exist. Usable from any one thread at a time.
    """
    return sql.connect(path, cache_kib=sql.KEPT_CACHE_KIB if kept else None)


def has_amore_schema(path: str | Path) -> bool:
    """True if the database (or context directory's) carries an AMORE schema revision: AMORE
    created it (a database another program made has none). Raises ``FileNotFoundError``."""
    con = connect(path)
    try:
        return sql.schema_revision(con) is not None
    finally:
        con.close()


def ensure_schema(path: str | Path) -> None:
    """Upgrade an older database through :class:`backend.store.writer.RunDB` (only if needed).
    Raises :class:`backend.store.identify.NotAmoreDatabase`, saying what it is and what to do,
    for a database AMORE did not create (DAMNIT's...), which is left untouched."""
    con = connect(path)
    try:
        rev = sql.schema_revision(con)
    finally:
        con.close()
    if rev != EXPECTED_SCHEMA:
        from backend.store.writer import RunDB
        RunDB(db_file(path).parent).close()


def read_variables(con: sqlite3.Connection) -> list[Column]:
    """Variable columns in definition order, then the manual columns (``Column.manual`` set:
    their type, choices, carry-over)."""
    out = []
    for name, title, desc, units, tags, _data, _summary in con.execute(sql.VARIABLES_SQL):
        try:
            tags = tuple(json.loads(tags or "[]"))
        except ValueError:
            tags = ()
        out.append(Column(name, title or name, units or None, desc, tags))
    return out + read_manual_columns(con)


def read_manual_columns(con: sqlite3.Connection) -> list[Column]:
    """Manual columns (not deleted) in display order, tagged ``manual``; empty for a database
    without them."""
    try:
        rows = con.execute(sql.MANUAL_COLUMNS_SQL).fetchall()
    except sqlite3.OperationalError:
        return []
    out = []
    for name, title, typ, units, choices, desc, carry in rows:
        try:
            choices = json.loads(choices or "[]")
        except ValueError:
            choices = []
        out.append(Column(name, title or name, units or None, desc, ("manual",),
                          manual={"type": typ, "choices": choices, "carry_over": bool(carry)}))
    return out


def read_metadata(con: sqlite3.Connection) -> dict[str, str]:
    """The metadata table (proposal, db_id...) as a dict."""
    return dict(con.execute(sql.METADATA_SQL))


RUN_FIELDS = sql.RUN_FIELDS


def read_runs(con: sqlite3.Connection) -> dict[tuple[int, int], tuple]:
    """``(proposal, run) -> (start_time, added_at, status, status_message, comment)``."""
    return {(p, r): rest for p, r, *rest in con.execute(sql.RUNS_SQL)}


def read_runs_stamp(con: sqlite3.Connection) -> int | None:
    """The largest change stamp of the ``runs`` table (``runs.changed``, set by the database's
    triggers, see :mod:`backend.store.schema`): an int, 0 for a table without changes since
    revision 0009; None for a database without stamps (older than revision 0009: one the
    backend has not migrated yet)."""
    try:
        return con.execute(sql.RUNS_STAMP_SQL).fetchone()[0]
    except sqlite3.OperationalError:
        return None


def _info(t: tuple) -> dict:
    return dict(zip(RUN_FIELDS, t))


@dataclass
class LoadResult:
    """What :func:`load_table` read: the table, its metadata and the watcher's baseline."""

    data: TableData
    metadata: dict
    runs: dict
    variables_sig: str
    comments_sig: tuple
    seconds: float = 0.0
    #: the largest change stamp of ``runs`` before it was read (:func:`read_runs_stamp`);
    #: None for a database without stamps
    runs_stamp: int | None = None


def variables_signature(con: sqlite3.Connection) -> str:
    """A hash of the variable definitions and of the context file's code as last loaded (to
    notice changes: new code changes which values are stale)."""
    rows = con.execute(sql.VARIABLES_SQL).fetchall()
    try:
        rows.append(con.execute(sql.MANUAL_COLUMNS_SQL).fetchall())
    except sqlite3.OperationalError:
        pass
    rows.append(staleness.current_signature(con))
    return hashlib.sha1(repr(rows).encode()).hexdigest()


def _context_name(path: Path) -> str:
    return staleness.context_name(Path(path).parent)


def read_staleness(con: sqlite3.Connection, path: Path) -> staleness.Staleness:
    """The stale values of the whole table (:func:`backend.store.staleness.stale_cells`)."""
    return staleness.stale_cells(con, context_name=_context_name(path))


def run_staleness(con: sqlite3.Connection, path: Path, proposal, run: int,
                  cur: staleness.Current | None = None) -> dict[str, tuple[int, str]]:
    """The stale values of one run: name -> ``(reason bits, text)``."""
    st = staleness.stale_cells(con, proposal, run, context_name=_context_name(path), cur=cur)
    return {name: (c.reasons, c.text) for (_p, _r, name), c in st.cells.items()}


def mark_stale(data: TableData, stale: staleness.Staleness) -> None:
    """Put the stale values of the whole table (:func:`read_staleness`) into ``data``,
    replacing its marks."""
    data.set_staleness(((p, r, n, c.reasons, c.text) for (p, r, n), c in stale.cells.items()),
                       {n: (b.reasons, b.text, b.fresh) for n, b in stale.bulk.items()})


@dataclass
class ColumnsRead:
    """What :func:`read_columns` read: the column definitions and the stale values."""

    variables: list[Column]
    stale: staleness.Staleness

    def apply_to(self, data: TableData) -> list[int] | None:
        """Change ``data``'s columns and stale marks in place
        (:meth:`~amore_gui.application.table_data.TableData.take_columns`); returns the table
        columns added, or None (nothing changed) when the whole table must be read again."""
        added = data.take_columns(self.variables)
        if added is not None:
            mark_stale(data, self.stale)
        return added


def read_columns(context_dir: str | Path) -> ColumnsRead:
    """The variable and manual columns (:func:`read_variables`) and the stale values of the
    whole table (:func:`read_staleness`): what changes with the context file, without the
    values (a few small, indexed queries). Raises ``FileNotFoundError`` without a database."""
    path = db_file(context_dir)
    con = connect(path)
    try:
        return ColumnsRead(read_variables(con), read_staleness(con, path))
    finally:
        con.close()


def comments_signature(con: sqlite3.Connection) -> tuple:
    """(count, max id, max timestamp) of the comments (to notice changes)."""
    return tuple(con.execute(sql.COMMENTS_SIGNATURE_SQL).fetchone())


@dataclass
class ValueChunk:
    """Values of a range of runs, read off the GUI thread and merged into the table with
    :meth:`merge_into` (cheap numpy block assignments)."""

    rows: np.ndarray                 # data rows, ascending
    num: np.ndarray                  # (len(rows), nvars) float64
    kind: np.ndarray                 # (len(rows), nvars) uint8
    objs: dict = field(default_factory=dict)      # v -> ([i...], [value...])
    attrs: dict = field(default_factory=dict)     # (row, v) -> dict
    extra: list = field(default_factory=list)     # (row, name, CellValue): names without column
    max_timestamp: float = 0.0

    def merge_into(self, data: TableData) -> list[int]:
        """Copy the values into ``data``; returns table columns added for unknown names."""
        nv = self.num.shape[1]
        data.num[self.rows, :nv] = self.num
        data.kind[self.rows, :nv] = self.kind
        rows = self.rows
        obj = data.obj
        for v, (ii, values) in self.objs.items():
            arr = np.empty(len(values), object)
            arr[:] = values                 # str/bytes from SQLite: one object per element
            obj.set_many(rows[ii], v, arr)
        data.attrs.update(self.attrs)
        added = []
        for row, name, cell in self.extra:
            if data.var_of(name) is None:
                added.append(data.add_variable(builtin_column(name)))
            data.set_cell(row, data.var_of(name), cell)
        data.max_timestamp = max(data.max_timestamp, self.max_timestamp)
        return added


#: Values of a run range, grouped per run (see :data:`backend.store.reader.CHUNK_SQL`).
_CHUNK_QUERY = sql.CHUNK_SQL


def _load_chunk(path: Path, var_index: dict, row_of: dict, nvars: int,
                proposal: int | str, lo: int, hi: int, strings: dict | None = None) -> ValueChunk:
    """Values of runs ``lo..hi`` of one proposal in one scan, grouped per run: numbers as
    comma-separated text (parsed by numpy), the other cells (strings, sparklines as hex,
    errors, which cells hold thumbnails, bold/background attributes) as a JSON array.
    ``strings``: text -> the one str object kept for it (shared by the chunks of a load)."""
    strings = {} if strings is None else strings
    rows = np.array(sorted(row for (p, r), row in row_of.items()
                           if p == proposal and lo <= r <= hi), np.int64)
    local = {int(row): i for i, row in enumerate(rows)}
    ch = ValueChunk(rows, np.full((len(rows), nvars), np.nan), np.zeros((len(rows), nvars), np.uint8))
    num, kind = ch.num, ch.kind
    objs, attrs_of = ch.objs, ch.attrs

    def add_obj(i, v, value):
        o = objs.get(v)
        if o is None:
            o = objs[v] = ([], [])
        o[0].append(i)
        o[1].append(value)
    codes = KIND_CODE
    name_cache: dict[str, np.ndarray | None] = {}
    con = connect(path)
    try:
        for run, names, values, others in con.execute(_CHUNK_QUERY, (proposal, lo, hi)):
            row = row_of.get((proposal, run))
            if row is None:
                continue
            i = local[row]
            if names:
                if names in name_cache:
                    cols = name_cache[names]
                else:
                    idx = [var_index.get(n, -1) for n in names.split(",")]
                    cols = None if -1 in idx else np.array(idx, np.intp)
                    name_cache[names] = cols
                vals = None
                if cols is not None:
                    try:
                        vals = np.array(values.split(","), dtype=float)
                    except ValueError:
                        vals = None
                if cols is None or vals is None or len(vals) != len(cols):
                    _numbers_row_by_row(con, proposal, run, row, i, var_index, ch)
                else:
                    num[i, cols] = vals
                    kind[i, cols] = K_NUMBER
            if not others or others == "[]":
                continue
            try:
                entries = json.loads(others)
            except ValueError:
                entries = _others_row_by_row(con, proposal, run)
            for entry in entries:
                if type(entry) is str:      # a number shown bold (its only attribute used)
                    v = var_index.get(entry)
                    if v is not None:
                        attrs_of[(row, v)] = _BOLD_ONLY
                    continue
                name, st, value, attrs = entry
                v = var_index.get(name)
                a = _parse_attrs(attrs) if attrs is not None else None
                if st == _SPARKLINE and isinstance(value, str):
                    try:
                        value = bytes.fromhex(value)
                    except ValueError:
                        value = None
                if v is None:
                    if st != _NUMBER:
                        ch.extra.append((row, name, cell_from_stored(
                            value, st, None if a is None else dict(a))))
                    continue
                if a:
                    attrs_of[(row, v)] = a
                if st == _NUMBER:           # bold/background of a number (value above)
                    continue
                k = codes.get(st)
                if k is None or k == K_BOOL:
                    cell = cell_from_stored(value, st, None)
                    kind[i, v], num[i, v] = cell.kind, cell.num
                    if cell.obj is not None:
                        add_obj(i, v, cell.obj)
                else:
                    kind[i, v] = k
                    if k != K_THUMBNAIL and value is not None:
                        if type(value) is str:      # one object per distinct text (samples...)
                            value = strings.setdefault(value, value)
                        add_obj(i, v, value)
    finally:
        con.close()
    return ch


def _numbers_row_by_row(con, proposal, run, row, i, var_index, ch) -> None:
    """Unusual number cells (text in a number cell, names without a column)."""
    for name, value in con.execute(sql.RUN_NUMBERS_SQL, (proposal, run)):
        cell = cell_from_stored(value, _NUMBER, None)
        v = var_index.get(name)
        if v is None:
            ch.extra.append((row, name, cell))
        else:
            ch.num[i, v], ch.kind[i, v] = cell.num, K_NUMBER


def _others_row_by_row(con, proposal, run) -> list:
    out = []
    for name, st, value, attrs in con.execute(sql.RUN_OTHERS_SQL, (proposal, run)):
        if st == _SPARKLINE and isinstance(value, bytes):
            value = value.hex()
        out.append((name, st, value, attrs))
    return out


_BOLD_ONLY = {"bold": True}


def _parse_attrs(text: str) -> dict | None:
    """The attributes the table uses from a JSON text (fast paths for the common cases)."""
    if ('"error' not in text and '"reason"' not in text and '"background"' not in text
            and '"manual"' not in text):
        if '"bold": true' in text or '"bold":true' in text:
            return _BOLD_ONLY
        return None
    try:
        return _attrs_used(json.loads(text))
    except ValueError:
        return None


def _proposal_order(p: int | str) -> tuple:
    """Sort key of proposals: numbers by value, identifiers (``"mx2532"``) after them."""
    return (0, p, "") if isinstance(p, int) else (1, 0, str(p))


def _chunks(runs: dict, first: int, size: int) -> list[tuple[int | str, int, int]]:
    """(proposal, lo, hi) run ranges, newest runs first: ``first`` runs, then ``size``."""
    out = []
    by_prop: dict[int | str, list[int]] = {}
    for p, r in runs:
        by_prop.setdefault(p, []).append(r)
    for p in sorted(by_prop, key=_proposal_order, reverse=True):
        rs = sorted(by_prop[p], reverse=True)
        i = 0
        for n in [first] + _tail_sizes(len(rs) - first, size):
            part = rs[i:i + n]
            if part:
                out.append((p, part[-1], part[0]))
            i += n
    return out


def _tail_sizes(n: int, size: int) -> list[int]:
    """Chunk sizes for ``n`` runs: ``size`` each, but the last two chunks' worth in up to four
    smaller pieces, so that the loading threads run out of work at about the same time (with
    one chunk of ``size`` last, one thread read it alone while the other had nothing left)."""
    out = []
    while n > 2 * size:
        out.append(size)
        n -= size
    if n <= 0:
        return out
    parts = max(1, min(4, -(-n // max(1, size // 4))))
    q, r = divmod(n, parts)
    return out + [q + (1 if j < r else 0) for j in range(parts)]


def iter_load(context_dir: str | Path, threads: int = 2, first: int = 200, size: int = 1000):
    """Read the run table progressively: yields a :class:`LoadResult` (all runs, variables,
    and the values of the newest ``first`` runs), then :class:`ValueChunk` objects for the
    older runs (``size`` runs each, read by ``threads`` threads on their own connections).

    Raises ``FileNotFoundError`` if there is no database.
    """
    t0 = time.perf_counter()
    t_wall = time.time()
    path = db_file(context_dir)
    con = connect(path)
    try:
        variables = read_variables(con)
        metadata = read_metadata(con)
        stamp = read_runs_stamp(con)    # before the runs: a change after it is read again
        runs = read_runs(con)
        vsig = variables_signature(con)
        csig = comments_signature(con)
        stale = read_staleness(con, path)   # a few indexed queries (values made by other code)
    finally:
        con.close()
    data = TableData(variables, capacity=len(runs) + 64)
    data.max_timestamp = t_wall
    for (p, r), t in runs.items():
        row = data.add_run(p, r)
        data.set_info(row, _info(t))
    mark_stale(data, stale)
    var_index = {c.key: i for i, c in enumerate(variables)}
    row_of = dict(data.row_of)
    nvars = len(variables)
    chunks = _chunks(runs, first, size)
    res = LoadResult(data, metadata, runs, vsig, csig, runs_stamp=stamp)
    if not chunks:
        res.seconds = time.perf_counter() - t0
        yield res
        return
    # at most ``threads`` chunks read ahead of the one handed out: a chunk's arrays exist
    # until it is merged, so this bounds the memory the load needs on top of the table
    strings: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=max(1, threads)) as ex:
        todo = iter(chunks)
        futs = deque(ex.submit(_load_chunk, path, var_index, row_of, nvars, *c, strings)
                     for c in islice(todo, max(1, threads)))

        def next_result():
            f = futs.popleft()
            c = next(todo, None)
            if c is not None:
                futs.append(ex.submit(_load_chunk, path, var_index, row_of, nvars, *c, strings))
            return f.result()
        next_result().merge_into(data)
        res.seconds = time.perf_counter() - t0
        yield res
        while futs:
            yield next_result()


def load_table(context_dir: str | Path, threads: int = 2) -> LoadResult:
    """Read the whole run table of a context directory (see :func:`iter_load`)."""
    t0 = time.perf_counter()
    it = iter_load(context_dir, threads)
    res = next(it)
    for chunk in it:
        chunk.merge_into(res.data)
    res.seconds = time.perf_counter() - t0
    return res


def _value_rows_to_update(p: int, r: int, rows, info: dict | None, complete: bool) -> RunUpdate:
    upd = RunUpdate(p, r, info, complete=complete)
    for name, st, value, attrs, ts in rows:
        a = None
        if attrs:
            try:
                a = json.loads(attrs)
            except ValueError:
                a = None
        upd.values[name] = cell_from_stored(value, st, a)
        if ts and ts > upd.max_timestamp:
            upd.max_timestamp = ts
    return upd


def read_run_update(path: str | Path, proposal: int | str, run: int,
                    con: sqlite3.Connection | None = None,
                    cur: staleness.Current | None = None) -> RunUpdate:
    """One run's row, all its values and which of them are stale as a :class:`RunUpdate`
    (``complete=True``). ``info`` is None if the run is not in the database. ``cur``: the
    context file's recorded code if already read (:func:`backend.store.staleness.current`)."""
    own = con is None
    con = connect(path) if own else con
    try:
        row = con.execute(sql.RUN_INFO_SQL, (proposal, run)).fetchone()
        rows = con.execute(sql.RUN_VALUES_SQL, (proposal, run)).fetchall()
        stale = run_staleness(con, db_file(path), proposal, run, cur)
    finally:
        if own:
            con.close()
    upd = _value_rows_to_update(proposal, run, rows, _info(row) if row else None, True)
    upd.stale = stale
    return upd


def read_run_info(con: sqlite3.Connection, proposal: int | str, run: int) -> dict | None:
    """The runs-table fields of one run as a dict, or None."""
    row = con.execute(sql.RUN_INFO_SQL, (proposal, run)).fetchone()
    return _info(row) if row else None


def read_thumbnail(con: sqlite3.Connection, proposal: int | str, run: int, name: str) -> bytes | None:
    """PNG bytes of a thumbnail cell, or None."""
    row = con.execute(sql.THUMBNAIL_SQL, (proposal, run, name)).fetchone()
    return bytes(row[0]) if row and row[0] is not None else None


def read_comments(con: sqlite3.Connection) -> list[dict]:
    """Standalone comments, oldest first: dicts with id, proposal, run, timestamp, author, text."""
    cols = sql.COMMENT_FIELDS
    return [dict(zip(cols, r)) for r in con.execute(sql.COMMENTS_SQL)]


@dataclass
class Changes:
    """What :meth:`DbChangeWatcher.poll` found."""

    updates: list[RunUpdate] = field(default_factory=list)
    variables_changed: bool = False
    comments_changed: bool = False

    def __bool__(self):
        return bool(self.updates or self.variables_changed or self.comments_changed)


def _fingerprints(runs: dict) -> dict:
    """``(proposal, run) -> hash`` of the fields of :func:`read_runs` (for finding changes)."""
    return {k: hash(tuple(t)) for k, t in runs.items()}


class DbChangeWatcher:
    """Finds changes other processes committed to the database since the last poll.

    ``PRAGMA data_version`` says cheaply whether anything was committed; only then are values
    with a timestamp newer than the last seen one read (with :data:`TIMESTAMP_OVERLAP` seconds
    of overlap, de-duplicated), the runs changed since read, and the variable definitions and
    comments compared. Changed runs are found by their change stamp (``runs.changed``,
    revision 0009: only the runs stamped after the last one seen are read, whatever the size
    of the table) or, on a database without stamps, by reading the whole ``runs`` table and
    comparing it with a hash per run; a database migrated while watched switches to stamps at
    the next poll. Use from one thread.

    ``since``: Unix time values are new after. ``runs`` (:func:`read_runs`) and
    ``runs_stamp`` (:func:`read_runs_stamp`, read before ``runs``): the table as the caller
    read it, the baseline of the first poll; both default to the database now.
    """

    def __init__(self, path: str | Path, since: float = 0.0, runs: dict | None = None,
                 variables_sig: str | None = None, comments_sig: tuple | None = None,
                 runs_stamp: int | None = None):
        self.path = db_file(path)
        self.con = connect(self.path, kept=True)
        self.data_version = None
        self.last_ts = since
        #: (proposal, run, name) -> timestamp of the values read within the overlap
        self._seen: dict[tuple, float] = {}
        self._prune_at = 1000
        #: the largest change stamp of ``runs`` seen (None: no stamps, see :attr:`runs`)
        self.stamp = runs_stamp
        if self.stamp is None and runs is None:
            self.stamp = read_runs_stamp(self.con)
        #: without a stamp: ``(proposal, run) -> hash`` of its runs-table fields: enough to
        #: tell a change, and a fraction of the memory of the fields (a window follows
        #: thousands of runs for days); None once stamps are used
        self.runs = None
        if self.stamp is None:
            self.runs = _fingerprints(runs if runs is not None else read_runs(self.con))
        self.variables_sig = (variables_signature(self.con) if variables_sig is None
                              else variables_sig)
        self.comments_sig = comments_signature(self.con) if comments_sig is None else comments_sig
        #: the context file's recorded code (read again when the variables change)
        self.current = staleness.current(self.con)
        self.data_version = self.con.execute("PRAGMA data_version").fetchone()[0]

    def poll(self, force: bool = False) -> Changes:
        """Changes since the last call (empty if nothing was committed meanwhile)."""
        ch = Changes()
        dv = self.con.execute("PRAGMA data_version").fetchone()[0]
        if dv == self.data_version and not force:
            return ch
        self.data_version = dv
        vsig = variables_signature(self.con)
        if vsig != self.variables_sig:
            self.variables_sig = vsig
            self.current = staleness.current(self.con)
            ch.variables_changed = True
        csig = comments_signature(self.con)
        if csig != self.comments_sig:
            self.comments_sig = csig
            ch.comments_changed = True
        changed_info = self._changed_runs()
        since = self.last_ts - TIMESTAMP_OVERLAP
        rows = self.con.execute(sql.VALUES_SINCE_SQL, (since,)).fetchall()
        per_run: dict[tuple[int, int], list] = {}
        for p, r, name, st, value, attrs, ts in rows:
            key = (p, r, name)
            if self._seen.get(key) == ts:
                continue
            self._seen[key] = ts
            per_run.setdefault((p, r), []).append((name, st, value, attrs, ts))
            if ts > self.last_ts:
                self.last_ts = ts
        if len(self._seen) > self._prune_at:
            # values older than the overlap are never read again: forget them (checked when
            # the dict doubled since, so it stays about the size of the overlap's values;
            # a fixed 10,000 let it grow by ~1.5 MB over the first hours of a window)
            cutoff = self.last_ts - TIMESTAMP_OVERLAP
            self._seen = {k: t for k, t in self._seen.items() if t > cutoff}
            self._prune_at = max(1000, 2 * len(self._seen))
        for key in sorted(set(per_run) | set(changed_info)):
            t = changed_info.get(key)
            if t is None:       # new values of a run whose fields did not change
                t = self.con.execute(sql.RUN_INFO_SQL, key).fetchone()
            upd = _value_rows_to_update(key[0], key[1], per_run.get(key, ()),
                                        _info(t) if t else None, False)
            if key in per_run:   # new values: which of the run's values are stale now
                upd.stale = run_staleness(self.con, self.path, key[0], key[1], self.current)
            ch.updates.append(upd)
        return ch

    def _changed_runs(self) -> dict:
        """``(proposal, run) -> runs-table fields`` of the runs changed since the last look."""
        if self.stamp is not None:
            out = {}
            for p, r, *fields, stamp in self.con.execute(sql.RUNS_CHANGED_SQL, (self.stamp,)):
                out[(p, r)] = tuple(fields)
                if stamp > self.stamp:
                    self.stamp = stamp
            return out
        stamp = read_runs_stamp(self.con)   # before the runs: a change after it is read again
        runs = read_runs(self.con)
        seen = _fingerprints(runs)
        changed = {k: runs[k] for k, h in seen.items() if self.runs.get(k) != h}
        if stamp is None:
            self.runs = seen
        else:               # migrated meanwhile: from now on what is stamped after this look
            self.stamp, self.runs = stamp, None
        return changed

    def refresh_current(self) -> None:
        """Read the context file's recorded code again (an update message said it changed)."""
        self.current = staleness.current(self.con)

    def close(self) -> None:
        self.con.close()
