"""The run table as column arrays, with sorting and filtering (plain Python, no Qt).

:class:`TableData` holds one row per run and one column per variable in numpy arrays: a 2-D
``float64`` array of numeric values, a 2-D ``uint8`` array of value kinds (``K_*``), object
arrays for strings/sparkline bytes (:class:`ObjColumns`: only for the variables that have such
values) and a sparse dict of cell attributes (errors, bold, background). Thumbnails are not held: only their presence is (they are read lazily for the
visible cells). A one-run update (:class:`RunUpdate`) touches only that run's row.

:class:`RowView` is the display order of rows (sorted, filtered). It is rebuilt only when the
sort column or the filters change; a one-run update moves, inserts or removes only that row
(:meth:`RowView.update_row`), so a live update never re-sorts or re-filters the whole table.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from backend.store.reader import decode_value
from backend.vocab import RUN_STATUSES, SUMMARY_TYPES, RunStatus, SummaryType, normalize_proposal

from amore_gui.application.formatting import format_number, format_time, format_time_short, header_text


def _num(proposal) -> float:
    """A proposal as a number for sorting/plotting (NaN for identifiers such as 'mx2532')."""
    return float(proposal) if isinstance(proposal, (int, np.integer)) else math.nan


# Value kinds (codes in TableData.kind): 0 for a missing cell, then the summary types
# (backend.vocab.SummaryType) in their order.
KIND_NAMES = ("missing",) + SUMMARY_TYPES
KIND_CODE = {n: i for i, n in enumerate(KIND_NAMES)}
K_MISSING = 0
K_NUMBER, K_BOOL, K_STRING, K_COMPLEX, K_THUMBNAIL, K_SPARKLINE, K_ARRAY, K_ERROR, K_SKIPPED, \
    K_NONE = (KIND_CODE[t.value] for t in (
        SummaryType.NUMBER, SummaryType.BOOL, SummaryType.STRING, SummaryType.COMPLEX,
        SummaryType.THUMBNAIL, SummaryType.SPARKLINE, SummaryType.ARRAY, SummaryType.ERROR,
        SummaryType.SKIPPED, SummaryType.NONE))
#: kinds whose value is in TableData.num
NUMERIC_KINDS = (K_NUMBER, K_BOOL)
#: kinds whose value is in TableData.obj
OBJECT_KINDS = (K_STRING, K_COMPLEX, K_SPARKLINE, K_ARRAY)

# Run status codes (TableData.status): indices into backend.vocab.RUN_STATUSES.
STATUS_CODE = {s: i for i, s in enumerate(RUN_STATUSES)}
S_PENDING, S_PROCESSING, S_DONE, S_FAILED, S_WAITING, S_RUNNING = (STATUS_CODE[s.value] for s in (
    RunStatus.PENDING, RunStatus.PROCESSING, RunStatus.DONE, RunStatus.FAILED, RunStatus.WAITING,
    RunStatus.RUNNING))

# Keys of the fixed columns ('#' cannot start a Python identifier, so no variable clashes).
C_STATUS, C_PROPOSAL, C_RUN, C_START, C_ADDED, C_COMMENT = (
    "#status", "#proposal", "#run", "#start", "#added", "#comment")


@dataclass
class Column:
    """One table column: a fixed one (``key`` starting with ``#``) or a variable."""

    key: str
    title: str
    units: str | None = None
    description: str | None = None
    tags: tuple[str, ...] = ()
    variable: bool = True
    #: for manual columns: ``{"type", "choices", "carry_over"}`` (:mod:`backend.store.manual`)
    manual: dict | None = None

    @property
    def header(self) -> str:
        """Header text: title (group on its own line) and units."""
        return header_text(self.title, self.units)


STATIC_COLUMNS = (
    Column(C_STATUS, "Status", description="Include the run in plots; processing state",
           variable=False),
    Column(C_PROPOSAL, "Proposal", variable=False),
    Column(C_RUN, "Run", variable=False),
    Column(C_START, "Start", description="Start of the run (local time)", variable=False),
    Column(C_ADDED, "Added", description="When AMORE first heard of the run (local time)",
           variable=False),
    Column(C_COMMENT, "Comment", description="Your comment on the run (double-click to edit)",
           variable=False),
)
NSTATIC = len(STATIC_COLUMNS)


#: Cells the backend computes for every run without user code (``run_values`` names that are
#: not Python identifiers): key -> (title, description).
BUILTIN_COLUMNS = {
    "amore.data_check": ("Data check", "Are all sources' data complete? (hover for details; "
                                       "amore-proto check RUN)"),
    "amore.files": ("Files", "File checksums of the run: OK, or files changed/missing/new "
                             "since they were taken (amore-proto verify RUN)"),
}


def builtin_column(name: str) -> "Column":
    """The column for a value name without a variable: a built-in check, or the name itself."""
    title, desc = BUILTIN_COLUMNS.get(name, (name, None))
    return Column(name, title, description=desc)


@dataclass
class CellValue:
    """A stored value as the table holds it: ``kind`` code, numeric value (NaN if none),
    object value (string, sparkline bytes...) and attributes (only those the table uses)."""

    kind: int
    num: float = math.nan
    obj: Any = None
    attrs: dict | None = None


@dataclass
class RunUpdate:
    """New state of one run, read from the database off the GUI thread.

    ``info``: run-row fields (``start_time``, ``added_at``, ``status``, ``status_message``,
    ``comment``), or None if unchanged/unknown. ``values``: name -> :class:`CellValue`.
    ``complete``: ``values`` holds every value of the run (others are cleared).
    ``max_timestamp``: newest ``run_values.timestamp`` seen. ``stale``: the run's stale values,
    name -> ``(reason bits, text)`` (:mod:`backend.store.staleness`; every other value of the
    run is up to date), or None when not read.
    """

    proposal: int
    run: int
    info: dict | None = None
    values: dict[str, CellValue] = field(default_factory=dict)
    complete: bool = False
    max_timestamp: float = 0.0
    stale: dict[str, tuple[int, str]] | None = None


def _attrs_used(attrs: dict | None) -> dict | None:
    """Keep the attributes the table shows (error/reason/bold/background; for manual cells
    who set them, when, from where and whether they were carried over)."""
    if not attrs:
        return None
    out = {k: attrs[k] for k in ("error", "error_type", "reason", "bold", "background", "tooltip")
           if k in attrs and attrs[k] not in (None, False)}
    if attrs.get("manual"):
        out.update({k: attrs[k] for k in ("manual", "carried", "by", "at", "via")
                    if attrs.get(k) not in (None, False)})
    return out or None


def cell_from_stored(value, summary_type: str, attrs: dict | None) -> CellValue:
    """:class:`CellValue` from a ``run_values`` row (value, summary_type, parsed attributes):
    numbers and booleans decoded (:func:`backend.store.reader.decode_value`) into ``num``
    (NaN where there is none); strings, complex numbers, array descriptions and sparkline bytes
    kept in ``obj`` as stored (shown as they are, sparklines drawn from their bytes)."""
    k = KIND_CODE.get(summary_type, K_NONE)
    if k in NUMERIC_KINDS:
        num = decode_value(value, summary_type)
        return CellValue(k, math.nan if num is None else float(num), None, _attrs_used(attrs))
    if k == K_THUMBNAIL:
        return CellValue(k, math.nan, None, _attrs_used(attrs))
    if k in OBJECT_KINDS:
        return CellValue(k, math.nan, value, _attrs_used(attrs))
    return CellValue(k, math.nan, None, _attrs_used(attrs))


def sparkline_points(raw) -> np.ndarray | None:
    """The points of a sparkline cell as 1-D ``float32`` (a copy): ``raw`` is what
    :attr:`TableData.obj` holds for it, the stored little-endian float32 bytes, decoded by the
    one decoder of stored values (:func:`backend.store.reader.decode_value`). None when ``raw``
    holds no bytes (an empty or non-sparkline cell)."""
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        return None
    return decode_value(raw, SummaryType.SPARKLINE.value)


class ObjColumns:
    """The object cells of a :class:`TableData` (strings, sparkline bytes, arrays as text):
    one ``object`` array of ``capacity`` rows per variable that holds any, nothing for the
    others (most variables hold only numbers, and 8 bytes per cell of a 5,000 x 300 table are
    12 MB). Indexed like a 2-D object array with one variable index: ``obj[row, v]`` (None if
    empty), ``obj[rows, v]`` (``rows`` a slice or an index array), ``obj[row, v] = value``.
    """

    __slots__ = ("cols", "cap")

    def __init__(self, capacity: int, nvars: int):
        self.cap = capacity
        self.cols: list[np.ndarray | None] = [None] * nvars

    @property
    def shape(self) -> tuple[int, int]:
        return self.cap, len(self.cols)

    def __getitem__(self, key):
        rows, v = key
        c = self.cols[v]
        if c is None:
            if isinstance(rows, (int, np.integer)):
                return None
            return np.empty(self.cap, object)[rows]
        return c[rows]

    def __setitem__(self, key, value) -> None:
        rows, v = key
        c = self.cols[v]
        if c is None:
            if value is None:
                return
            c = self.cols[v] = np.empty(self.cap, object)
        c[rows] = value

    def set_many(self, rows: np.ndarray, v: int, values: np.ndarray) -> None:
        """``obj[rows[j], v] = values[j]`` for all j (``values``: 1-D object array)."""
        c = self.cols[v]
        if c is None:
            c = self.cols[v] = np.empty(self.cap, object)
        c[rows] = values

    def row_objects(self, row: int) -> dict[int, Any]:
        """``variable index -> object`` of the non-empty object cells of one row."""
        out = {}
        for v, c in enumerate(self.cols):
            if c is not None:
                o = c[row]
                if o is not None:
                    out[v] = o
        return out

    def add_variable(self) -> None:
        self.cols.append(None)

    def grow(self, capacity: int) -> None:
        """Room for ``capacity`` rows (new cells empty)."""
        extra = capacity - self.cap
        if extra <= 0:
            return
        self.cols = [None if c is None else np.concatenate([c, np.empty(extra, object)])
                     for c in self.cols]
        self.cap = capacity


class TableData:
    """Column arrays of the run table of one context directory (see module docstring).

    Column indices used by the methods are table column indices: the fixed columns
    (:data:`STATIC_COLUMNS`) first, then the variables in definition order.
    """

    def __init__(self, variables: Iterable[Column], capacity: int = 64):
        self.columns: list[Column] = list(STATIC_COLUMNS) + list(variables)
        self._key_index = {c.key: i for i, c in enumerate(self.columns)}
        nv = len(self.columns) - NSTATIC
        cap = max(int(capacity), 16)
        self.nrows = 0
        # object: European XFEL/ESS proposals are ints, ESRF/SwissFEL ones str ('mx2532')
        self.proposal = np.zeros(cap, object)
        self.run = np.zeros(cap, np.int64)
        self.start_time = np.full(cap, np.nan)
        self.added_at = np.full(cap, np.nan)
        self.status = np.full(cap, S_DONE, np.uint8)
        self.status_message: list[str | None] = [None] * cap
        self.comment: list[str | None] = [None] * cap
        #: the Status checkbox: include the run in plots
        self.included = np.ones(cap, bool)
        self.num = np.full((cap, nv), np.nan)
        self.kind = np.zeros((cap, nv), np.uint8)
        self.obj = ObjColumns(cap, nv)
        #: (row, variable index) -> attributes dict (only cells that have some)
        self.attrs: dict[tuple[int, int], dict] = {}
        #: stale values (made by code, manual values or data that changed since): reason bits
        #: per cell (``uint8``, None until a value is stale) with each one's reason text, and
        #: variables whose values are stale in bulk: v -> (bits, text, rows that are not)
        self.stale: np.ndarray | None = None
        self.stale_text: dict[tuple[int, int], str] = {}
        self.stale_bulk: dict[int, tuple[int, str, set]] = {}
        #: (proposal, run) -> row
        self.row_of: dict[tuple[int, int], int] = {}
        #: values written before this time (Unix seconds) are in the table: when the table was
        #: read, and the newest timestamp of a live update applied since
        self.max_timestamp = 0.0

    # -- structure ---------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        """Variable names in column order."""
        return [c.key for c in self.columns[NSTATIC:]]

    @property
    def nvars(self) -> int:
        return len(self.columns) - NSTATIC

    @property
    def capacity(self) -> int:
        return len(self.run)

    def col_of(self, key: str) -> int | None:
        """Table column index of a column key (variable name or ``#...``), or None."""
        return self._key_index.get(key)

    def var_of(self, key: str) -> int | None:
        """Variable index (column in the 2-D arrays) of a variable name, or None."""
        i = self._key_index.get(key)
        return None if i is None or i < NSTATIC else i - NSTATIC

    def add_variable(self, col: Column) -> int:
        """Append a variable column (e.g. a value of a variable the definitions don't list);
        returns its table column index."""
        if col.key in self._key_index:
            return self._key_index[col.key]
        cap = self.capacity
        self.columns.append(col)
        self._key_index[col.key] = len(self.columns) - 1
        self.num = np.concatenate([self.num, np.full((cap, 1), np.nan)], axis=1)
        self.kind = np.concatenate([self.kind, np.zeros((cap, 1), np.uint8)], axis=1)
        if self.stale is not None:
            self.stale = np.concatenate([self.stale, np.zeros((cap, 1), np.uint8)], axis=1)
        self.obj.add_variable()
        return len(self.columns) - 1

    def take_columns(self, variables: list[Column]) -> list[int] | None:
        """New definitions of the variable and manual columns (the context file or a manual
        column changed), taken in place when the columns defined before are still there, in
        the same order, and new ones come after them: descriptions (title, units, tags, a
        manual column's choices...) replaced, new columns appended, the values kept. Columns
        of values without a definition (built-in cells, values that came before their
        definition) stay at the end. Returns the table columns added, or None, changing
        nothing, when a defined column went away or moved: then the whole table must be read
        again."""
        have = self.names
        # the trailing columns of values without a definition
        n_def = len(have)
        while n_def and self.columns[NSTATIC + n_def - 1] == builtin_column(have[n_def - 1]):
            n_def -= 1
        keys = [c.key for c in variables]
        if keys[:n_def] != have[:n_def]:
            return None
        added = []
        for c in variables:
            i = self._key_index.get(c.key)
            if i is None:
                added.append(self.add_variable(c))
            else:
                self.columns[i] = c
        return added

    def _grow(self, need: int) -> None:
        cap = self.capacity
        if need <= cap:
            return
        new = max(need, cap * 2)
        extra = new - cap

        def ext(a, fill):
            pad = np.full((extra,) + a.shape[1:], fill, dtype=a.dtype)
            return np.concatenate([a, pad])
        self.proposal = ext(self.proposal, 0)
        self.run = ext(self.run, 0)
        self.start_time = ext(self.start_time, np.nan)
        self.added_at = ext(self.added_at, np.nan)
        self.status = ext(self.status, S_DONE)
        self.included = ext(self.included, True)
        self.status_message += [None] * extra
        self.comment += [None] * extra
        self.num = ext(self.num, np.nan)
        self.kind = ext(self.kind, 0)
        if self.stale is not None:
            self.stale = ext(self.stale, 0)
        self.obj.grow(new)

    def find_row(self, proposal: int | str, run: int) -> int | None:
        """Row of a run (``proposal`` as a number, numpy int or identifier), None if it is not
        in the table."""
        return self.row_of.get((normalize_proposal(proposal), int(run)))

    def add_run(self, proposal: int, run: int) -> int:
        """Row of a run, appending an empty row (status pending) if it is new."""
        key = (normalize_proposal(proposal), int(run))
        row = self.row_of.get(key)
        if row is not None:
            return row
        row = self.nrows
        self._grow(row + 1)
        self.proposal[row], self.run[row] = key
        self.status[row] = S_PENDING
        self.row_of[key] = row
        self.nrows += 1
        return row

    # -- updates -----------------------------------------------------------------------------
    def set_info(self, row: int, info: dict) -> set[int]:
        """Set run-row fields; returns the table columns that changed."""
        changed = set()
        if "start_time" in info:
            v = np.nan if info["start_time"] is None else float(info["start_time"])
            if not _same(self.start_time[row], v):
                self.start_time[row] = v
                changed.add(self._key_index[C_START])
        if "added_at" in info:
            v = np.nan if info["added_at"] is None else float(info["added_at"])
            if not _same(self.added_at[row], v):
                self.added_at[row] = v
                changed.add(self._key_index[C_ADDED])
        if "status" in info:
            s = STATUS_CODE.get(info["status"] or "done", S_DONE)
            if s != self.status[row] or self.status_message[row] != info.get("status_message"):
                self.status[row] = s
                self.status_message[row] = info.get("status_message")
                changed.add(self._key_index[C_STATUS])
        if "comment" in info and (info["comment"] or None) != self.comment[row]:
            self.comment[row] = info["comment"] or None
            changed.add(self._key_index[C_COMMENT])
        return changed

    def set_cell(self, row: int, v: int, cell: CellValue | None) -> bool:
        """Set one variable cell (None clears it); returns True if it changed."""
        if cell is None:
            cell = CellValue(K_MISSING)
        old_attrs = self.attrs.get((row, v))
        old_obj = self.obj[row, v]
        same = (self.kind[row, v] == cell.kind and _same(self.num[row, v], cell.num)
                and (old_obj is cell.obj or _eq(old_obj, cell.obj))
                and old_attrs == cell.attrs)
        if same:
            return False
        self.kind[row, v] = cell.kind
        self.num[row, v] = cell.num
        self.obj[row, v] = cell.obj
        if cell.attrs:
            self.attrs[(row, v)] = cell.attrs
        elif old_attrs is not None:
            del self.attrs[(row, v)]
        return True

    def apply_update(self, upd: RunUpdate) -> tuple[int, set[int], bool, list[int]]:
        """Apply a :class:`RunUpdate`. Returns ``(row, changed table columns, new run,
        added table columns)``; columns are added for names that have no column yet."""
        new = (upd.proposal, upd.run) not in self.row_of
        row = self.add_run(upd.proposal, upd.run)
        changed = set(self.set_info(row, upd.info)) if upd.info else set()
        added = []
        key_index = self._key_index
        names, cells, vs = [], [], []
        for name, cell in upd.values.items():
            i = key_index.get(name)
            if i is None or i < NSTATIC:
                if name.startswith("#"):
                    continue
                if i is None:
                    added.append(self.add_variable(builtin_column(name)))
                    i = len(self.columns) - 1
                else:
                    continue
            names.append(name)
            cells.append(cell)
            vs.append(i - NSTATIC)
        if cells:
            changed.update(NSTATIC + v for v in self._set_cells(row, vs, cells))
        if upd.complete:
            stale = self.kind[row] != K_MISSING
            stale[vs] = False
            for v in np.flatnonzero(stale):
                self.set_cell(row, int(v), None)
                changed.add(NSTATIC + int(v))
        if upd.stale is not None:
            changed.update(NSTATIC + v for v in self.set_run_stale(row, upd.stale))
        self.max_timestamp = max(self.max_timestamp, upd.max_timestamp)
        return row, changed, new, added

    # -- stale values ------------------------------------------------------------------------
    def _stale_array(self) -> np.ndarray:
        if self.stale is None:
            self.stale = np.zeros((self.capacity, self.nvars), np.uint8)
        return self.stale

    def set_staleness(self, cells, bulk: dict | None = None) -> None:
        """The stale values of the whole table (replacing the marks): ``cells``
        ``(proposal, run, name, reason bits, text)``, ``bulk``: name -> ``(bits, text, runs
        that are not stale)`` for variables stale in bulk (see
        :class:`backend.store.staleness.Staleness`). Names without a column are left out."""
        self.stale = None
        self.stale_text = {}
        self.stale_bulk = {}
        for name, (bits, text, fresh) in (bulk or {}).items():
            v = self.var_of(name)
            if v is not None:
                self.stale_bulk[v] = (bits, text, {r for r in (self.find_row(p, run)
                                                               for p, run in fresh)
                                                   if r is not None})
        for p, run, name, bits, text in cells:
            row, v = self.find_row(p, run), self.var_of(name)
            if row is None or v is None:
                continue
            self._stale_array()[row, v] = bits
            self.stale_text[(row, v)] = text

    def set_run_stale(self, row: int, stale: dict[str, tuple[int, str]]) -> list[int]:
        """Replace the stale marks of one row (``stale``: name -> ``(bits, text)``; the row's
        other values are up to date). Returns the variable indices whose mark changed."""
        before = {v: self.stale_info(row, v) for v in range(self.nvars)} \
            if (self.stale is not None or self.stale_bulk) else {}
        if self.stale is not None:
            self.stale[row] = 0
        for key in [k for k in self.stale_text if k[0] == row]:
            del self.stale_text[key]
        for v, (_b, _t, fresh) in self.stale_bulk.items():
            fresh.add(row)                        # this row is known cell by cell now
        for name, (bits, text) in stale.items():
            v = self.var_of(name)
            if v is None:
                continue
            self._stale_array()[row, v] = bits
            self.stale_text[(row, v)] = text
        return [v for v in range(self.nvars)
                if before.get(v) != self.stale_info(row, v)] if (before or stale) else []

    def stale_info(self, row: int, v: int) -> tuple[int, str] | None:
        """``(reason bits, text)`` if the value of variable ``v`` in ``row`` is stale."""
        if self.stale is not None and self.stale[row, v]:
            return int(self.stale[row, v]), self.stale_text.get((row, v), "")
        b = self.stale_bulk.get(v)
        if b is not None and row not in b[2] and self.kind[row, v] != K_MISSING:
            return b[0], b[1]
        return None

    def stale_count(self) -> int:
        """How many values of the table are stale."""
        n = self.nrows
        count = int(np.count_nonzero(self.stale[:n])) if self.stale is not None else 0
        for v, (_b, _t, fresh) in self.stale_bulk.items():
            has = self.kind[:n, v] != K_MISSING
            if self.stale is not None:
                has &= self.stale[:n, v] == 0
            if fresh:
                idx = np.fromiter((r for r in fresh if r < n), np.intp)
                has[idx] = False
            count += int(np.count_nonzero(has))
        return count

    def _set_cells(self, row: int, vs: list[int], cells: list[CellValue]) -> list[int]:
        """:meth:`set_cell` for many cells of one row (``vs``: distinct variable indices):
        kinds and numbers compared and assigned with numpy, objects and attributes only where
        a cell has some. Returns the variable indices that changed."""
        n = len(cells)
        idx = np.fromiter(vs, np.intp, n)
        kind_new = np.fromiter((c.kind for c in cells), np.uint8, n)
        num_new = np.fromiter((c.num for c in cells), float, n)
        kind_old = self.kind[row, idx]
        num_old = self.num[row, idx]
        with np.errstate(invalid="ignore"):
            diff = (kind_old != kind_new) | ~((num_old == num_new)
                                              | (np.isnan(num_old) & np.isnan(num_new)))
        attrs = self.attrs
        # cells with an object or attributes, before or after (few: strings, sparklines, errors)
        special = {j for j, c in enumerate(cells) if c.obj is not None or c.attrs}
        old_objs = self.obj.row_objects(row)
        if old_objs:
            where = {v: j for j, v in enumerate(vs)}
            special.update(where[v] for v in old_objs if v in where)
        if attrs:
            special.update(j for j, v in enumerate(vs) if (row, v) in attrs)
        obj = self.obj
        for j in special:
            if not diff[j]:
                c = cells[j]
                o = old_objs.get(vs[j])
                if not (o is c.obj or _eq(o, c.obj)) or attrs.get((row, vs[j])) != c.attrs:
                    diff[j] = True
        ch = np.flatnonzero(diff)
        if not len(ch):
            return []
        at = idx[ch]
        self.kind[row, at] = kind_new[ch]
        self.num[row, at] = num_new[ch]
        for j in special:
            if diff[j]:
                c = cells[j]
                v = vs[j]
                obj[row, v] = c.obj
                if c.attrs:
                    attrs[(row, v)] = c.attrs
                else:
                    attrs.pop((row, v), None)
        return at.tolist()

    # -- reading cells -----------------------------------------------------------------------
    def cell_kind(self, row: int, col: int) -> int:
        """Kind code of a variable cell (K_NUMBER for the numeric fixed columns)."""
        if col < NSTATIC:
            return K_STRING if col == self._key_index[C_COMMENT] else K_NUMBER
        return int(self.kind[row, col - NSTATIC])

    def cell_attrs(self, row: int, col: int) -> dict | None:
        """Attributes (error, bold, background...) of a cell, or None."""
        if col < NSTATIC:
            return None
        return self.attrs.get((row, col - NSTATIC))

    def display(self, row: int, col: int) -> str:
        """Text shown in a cell (empty for thumbnails/sparklines, which are drawn)."""
        key = self.columns[col].key
        if col < NSTATIC:
            if key == C_RUN:
                return str(int(self.run[row]))
            if key == C_PROPOSAL:
                return str(self.proposal[row])
            if key == C_START:
                return format_time_short(float(self.start_time[row]))
            if key == C_ADDED:
                return format_time_short(float(self.added_at[row]))
            if key == C_COMMENT:
                return self.comment[row] or ""
            if key == C_STATUS:
                s = int(self.status[row])
                msg = self.status_message[row] or ""
                if s == S_PROCESSING and msg.startswith("Slurm job "):
                    # "Slurm job 1234 running on max-exfl-123" -> "running (job 1234)"
                    parts = msg.split()
                    if len(parts) >= 4:
                        return f"{parts[3]} (job {parts[2]})"
                return "" if s == S_DONE else RUN_STATUSES[s]
            return ""
        v = col - NSTATIC
        k = self.kind[row, v]
        if k == K_NUMBER:
            return format_number(float(self.num[row, v]))
        if k == K_BOOL:
            return "✓" if self.num[row, v] else "✗"
        if k in (K_STRING, K_COMPLEX, K_ARRAY):
            s = self.obj[row, v]
            return "" if s is None else str(s)
        if k == K_ERROR:
            a = self.attrs.get((row, v)) or {}
            return a.get("error_type") or "error"
        if k == K_SKIPPED:
            return "–"
        return ""

    def tooltip(self, row: int, col: int) -> str | None:
        """Error message, skip reason or status message of a cell, and why it is stale (if it
        is), else None."""
        tip = self._tooltip(row, col)
        if col < NSTATIC:
            return tip
        st = self.stale_info(row, col - NSTATIC)
        if st is None:
            return tip
        why = f"Stale: {st[1] or 'made by code, inputs or data that changed since'}"
        return f"{tip}\n{why}" if tip else why

    def _tooltip(self, row: int, col: int) -> str | None:
        if col < NSTATIC:
            key = self.columns[col].key
            if key == C_STATUS:
                msg = self.status_message[row]
                s = RUN_STATUSES[int(self.status[row])]
                return f"{s}: {msg}" if msg else None
            if key == C_START:
                return format_time(float(self.start_time[row])) or None
            if key == C_ADDED:
                return format_time(float(self.added_at[row])) or None
            if key == C_COMMENT and self.comment[row] and len(self.comment[row]) > 30:
                return self.comment[row]
            return None
        v = col - NSTATIC
        a = self.attrs.get((row, v)) or {}
        k = self.kind[row, v]
        if a.get("manual"):
            when = format_time(float(a["at"])) if a.get("at") else "?"
            tip = f"Set by {a.get('by') or '?'} at {when} (from {a.get('via') or '?'})"
            if a.get("carried"):
                tip = ("Carried over from the previous run: confirm or change it\n" + tip)
            return tip
        if k == K_ERROR:
            return a.get("error") or "error"
        if k == K_SKIPPED:
            return "Skipped: " + (a.get("reason") or a.get("error") or "not applicable")
        if a.get("tooltip"):
            return a["tooltip"]
        if k in (K_STRING, K_ARRAY) and self.obj[row, v] is not None:
            s = str(self.obj[row, v])
            return s if len(s) > 30 else None
        return None

    def numeric(self, col: int) -> np.ndarray:
        """Numeric values of a column for rows ``0..nrows-1`` (NaN where not a number)."""
        n = self.nrows
        key = self.columns[col].key
        if col < NSTATIC:
            if key == C_RUN:
                return self.run[:n].astype(float)
            if key == C_PROPOSAL:
                return np.array([_num(p) for p in self.proposal[:n]], float)
            if key == C_START:
                return self.start_time[:n].copy()
            if key == C_ADDED:
                return self.added_at[:n].copy()
            if key == C_STATUS:
                return self.included[:n].astype(float)
            return np.full(n, np.nan)
        v = col - NSTATIC
        out = self.num[:n, v].copy()
        out[~np.isin(self.kind[:n, v], NUMERIC_KINDS)] = np.nan
        return out

    def numeric_at(self, row: int, col: int) -> float:
        """Numeric value of one cell (NaN if not a number)."""
        if col < NSTATIC:
            key = self.columns[col].key
            if key == C_RUN:
                return float(self.run[row])
            if key == C_PROPOSAL:
                return _num(self.proposal[row])
            if key == C_START:
                return float(self.start_time[row])
            if key == C_ADDED:
                return float(self.added_at[row])
            if key == C_STATUS:
                return float(self.included[row])
            return math.nan
        v = col - NSTATIC
        return float(self.num[row, v]) if self.kind[row, v] in NUMERIC_KINDS else math.nan

    def is_numeric_column(self, col: int) -> bool:
        """True if the column holds numbers (for plots and number-range filters)."""
        if col < NSTATIC:
            return self.columns[col].key != C_COMMENT
        k = self.kind[:self.nrows, col - NSTATIC]
        return bool(((k == K_NUMBER) | (k == K_BOOL)).any())

    def column_kinds(self, col: int) -> set[int]:
        """Kind codes present in a variable column."""
        if col < NSTATIC:
            return set()
        # bincount: no copy of the strided column and no sort/hash (np.unique's cost, x300 at load)
        counts = np.bincount(self.kind[:self.nrows, col - NSTATIC], minlength=1)
        return set(np.flatnonzero(counts).tolist())

    def value(self, row: int, col: int):
        """The cell's value for export: float/int/bool/str, None if empty; thumbnails and
        sparklines give None, errors their message text."""
        key = self.columns[col].key
        if col < NSTATIC:
            if key == C_RUN:
                return int(self.run[row])
            if key == C_PROPOSAL:
                return self.proposal[row]
            if key == C_START:
                return format_time(float(self.start_time[row])) or None
            if key == C_ADDED:
                return format_time(float(self.added_at[row])) or None
            if key == C_COMMENT:
                return self.comment[row]
            if key == C_STATUS:
                return RUN_STATUSES[int(self.status[row])]
        v = col - NSTATIC
        k = self.kind[row, v]
        if k == K_NUMBER:
            f = float(self.num[row, v])
            return None if math.isnan(f) else (int(f) if f.is_integer() and abs(f) < 2**53 else f)
        if k == K_BOOL:
            return bool(self.num[row, v])
        if k in (K_STRING, K_COMPLEX, K_ARRAY):
            return self.obj[row, v]
        if k == K_ERROR:
            return "error: " + (self.tooltip(row, col) or "")
        return None

    def text_match(self, row: int, text: str, cols: Iterable[int] | None = None) -> bool:
        """Case-insensitive substring match of ``text`` in the run number, comment and string
        cells of the row (or in ``cols``)."""
        t = text.lower()
        if cols is None:
            if t in str(int(self.run[row])) or t in (self.comment[row] or "").lower():
                return True
            for v in np.flatnonzero(self.kind[row] == K_STRING):
                s = self.obj[row, v]
                if s is not None and t in str(s).lower():
                    return True
            return False
        return any(t in self.display(row, c).lower() for c in cols)

    # -- sorting -----------------------------------------------------------------------------
    def sort_keys(self, col: int, descending: bool) -> tuple[np.ndarray, np.ndarray]:
        """Sort keys of all rows for a column: ``(group, value)``; rows sort by group (0:
        numbers, 1: text, 2: empty/errors, always last), then by value (negated when
        descending)."""
        n = self.nrows
        key = self.columns[col].key
        group = np.zeros(n, np.int8)
        if col < NSTATIC and key != C_COMMENT:
            if key == C_STATUS:
                vals = self.included[:n].astype(float) * 10 + self.status[:n]
            else:
                vals = self.numeric(col)
            group[np.isnan(vals)] = 2
            vals = np.nan_to_num(vals, nan=0.0)
        elif key == C_COMMENT:
            texts = self.comment[:n]
            vals = _ranks(texts)
            group[:] = [1 if t else 2 for t in texts]
        else:
            v = col - NSTATIC
            kinds = self.kind[:n, v]
            isnum = np.isin(kinds, NUMERIC_KINDS)
            vals = np.where(isnum, self.num[:n, v], 0.0)
            nan = np.isnan(vals)
            vals[nan] = 0.0
            group[:] = 2
            group[isnum & ~nan] = 0
            istext = np.isin(kinds, (K_STRING, K_COMPLEX, K_ARRAY))
            if istext.any():
                idx = np.flatnonzero(istext)
                texts = [str(self.obj[i, v]) for i in idx]
                vals[idx] = _ranks(texts)
                group[idx] = 1
        if descending:
            vals = -vals
        return group, vals


def _ranks(texts: list) -> np.ndarray:
    """Rank (float) of each text among the distinct texts, case-insensitive; None -> 0."""
    distinct = sorted({(t or "").lower() for t in texts})
    rank = {t: i for i, t in enumerate(distinct)}
    return np.array([rank[(t or "").lower()] for t in texts], float)


def _same(a: float, b: float) -> bool:
    return a == b or (a != a and b != b)


def _eq(a, b) -> bool:
    try:
        return bool(a == b)
    except Exception:
        return False


# -- filters -----------------------------------------------------------------------------------

@dataclass
class NumberRange:
    """Rows whose value in column ``key`` is within ``[lo, hi]`` (either may be None)."""

    key: str
    lo: float | None = None
    hi: float | None = None

    def mask(self, data: TableData) -> np.ndarray:
        col = data.col_of(self.key)
        if col is None:
            return np.ones(data.nrows, bool)
        x = data.numeric(col)
        with np.errstate(invalid="ignore"):
            m = ~np.isnan(x)
            if self.lo is not None:
                m &= x >= self.lo
            if self.hi is not None:
                m &= x <= self.hi
        return m

    def accepts(self, data: TableData, row: int) -> bool:
        col = data.col_of(self.key)
        if col is None:
            return True
        x = data.numeric_at(row, col)
        if math.isnan(x):
            return False
        return (self.lo is None or x >= self.lo) and (self.hi is None or x <= self.hi)

    def columns(self) -> set[str]:
        return {self.key}

    def describe(self, data: TableData) -> str:
        col = data.col_of(self.key)
        name = data.columns[col].title if col is not None else self.key
        if self.lo is not None and self.hi is not None:
            return f"{format_number(self.lo)} ≤ {name} ≤ {format_number(self.hi)}"
        if self.lo is not None:
            return f"{name} ≥ {format_number(self.lo)}"
        return f"{name} ≤ {format_number(self.hi)}"


@dataclass
class TextContains:
    """Rows whose text in column ``key`` contains ``text`` (case-insensitive); with
    ``key=None``: the run number, comment or any string cell contains it."""

    key: str | None
    text: str

    def accepts(self, data: TableData, row: int) -> bool:
        if not self.text:
            return True
        if self.key is None:
            return data.text_match(row, self.text)
        col = data.col_of(self.key)
        return True if col is None else data.text_match(row, self.text, [col])

    def mask(self, data: TableData) -> np.ndarray:
        return np.fromiter((self.accepts(data, r) for r in range(data.nrows)), bool, data.nrows)

    def columns(self) -> set[str] | None:
        return None if self.key is None else {self.key}

    def describe(self, data: TableData) -> str:
        if self.key is None:
            return f"“{self.text}”"
        col = data.col_of(self.key)
        name = data.columns[col].title if col is not None else self.key
        return f"{name} contains “{self.text}”"


@dataclass
class OnlyIncluded:
    """Rows whose Status checkbox is checked."""

    def mask(self, data: TableData) -> np.ndarray:
        return data.included[:data.nrows].copy()

    def accepts(self, data: TableData, row: int) -> bool:
        return bool(data.included[row])

    def columns(self) -> set[str]:
        return {C_STATUS}

    def describe(self, data: TableData) -> str:
        return "checked runs"


@dataclass
class ViewChange:
    """What a one-row update did to the view: ``kind`` is ``none``, ``changed`` (row at
    ``pos``), ``moved`` (from ``old`` to ``pos``, both positions in the view before/after),
    ``inserted`` (at ``pos``) or ``removed`` (from ``old``)."""

    kind: str
    pos: int = -1
    old: int = -1


class RowView:
    """Display order of the rows of a :class:`TableData`: filtered, then sorted.

    ``order[i]`` is the data row shown at view position ``i``; ``pos[row]`` the view position
    of a data row (-1 if filtered out).
    """

    def __init__(self, data: TableData, sort_key: str = C_RUN, descending: bool = True):
        self.data = data
        self.sort_key = sort_key
        self.descending = descending
        self.filters: list = []
        self.order = np.zeros(0, np.int64)
        self.pos = np.zeros(0, np.int64)
        self.rebuild()

    def __len__(self) -> int:
        return len(self.order)

    @property
    def sort_col(self) -> int:
        """Table column the rows are sorted by."""
        c = self.data.col_of(self.sort_key)
        return self.data.col_of(C_RUN) if c is None else c

    def _keys(self):
        g, v = self.data.sort_keys(self.sort_col, self.descending)
        n = self.data.nrows
        tie = np.arange(n, dtype=float)
        if self.descending:
            tie = -tie
        return g, v, tie

    def _mask(self) -> np.ndarray:
        m = np.ones(self.data.nrows, bool)
        for f in self.filters:
            m &= f.mask(self.data)
        return m

    def rebuild(self) -> None:
        """Filter and sort all rows (after a sort or filter change, or a reload)."""
        n = self.data.nrows
        g, v, tie = self._keys()
        m = self._mask()
        idx = np.flatnonzero(m)
        order = idx[np.lexsort((tie[idx], v[idx], g[idx]))] if len(idx) else idx
        self.order = order.astype(np.int64)
        self._update_pos(n)

    def _update_pos(self, n: int) -> None:
        self.pos = np.full(max(n, 1), -1, np.int64)
        self.pos[self.order] = np.arange(len(self.order))

    def set_sort(self, key: str, descending: bool) -> None:
        """Sort by another column/direction (rebuilds the order)."""
        self.sort_key, self.descending = key, descending
        self.rebuild()

    def set_filters(self, filters: list) -> None:
        """Replace the filters (rebuilds the order)."""
        self.filters = list(filters)
        self.rebuild()

    def _filter_cols(self) -> set[str] | None:
        cols: set[str] = set()
        for f in self.filters:
            c = f.columns()
            if c is None:
                return None
            cols |= c
        return cols

    def update_row(self, row: int, changed: set[int], new: bool) -> ViewChange:
        """Place one updated data row (see :class:`ViewChange`); other rows are not
        re-filtered and not re-sorted."""
        data = self.data
        if len(self.pos) < data.nrows:
            pos = np.full(max(data.nrows, 1), -1, np.int64)
            pos[:len(self.pos)] = self.pos
            self.pos = pos
        old = int(self.pos[row]) if not new else -1
        keys_changed = {data.columns[c].key for c in changed}
        fcols = self._filter_cols()
        if new or fcols is None or (fcols & keys_changed):
            visible = all(f.accepts(data, row) for f in self.filters)
        else:
            visible = old >= 0
        if not visible:
            if old < 0:
                return ViewChange("none")
            self.order = np.delete(self.order, old)
            self.pos[row] = -1
            self.pos[self.order[old:]] -= 1
            return ViewChange("removed", old=old)
        resort = new or old < 0 or self.sort_key in keys_changed or self.data.columns[
            self.sort_col].key in keys_changed
        if not resort:
            return ViewChange("changed", pos=old)
        # binary search of the row's place among the other visible rows
        g, v, tie = self._keys()
        others = self.order if old < 0 else np.delete(self.order, old)
        key = (g[row], v[row], tie[row])
        lo, hi = 0, len(others)
        while lo < hi:
            mid = (lo + hi) // 2
            r = others[mid]
            if (g[r], v[r], tie[r]) < key:
                lo = mid + 1
            else:
                hi = mid
        newpos = lo
        if old >= 0 and newpos == old:
            return ViewChange("changed", pos=old)
        self.order = np.insert(others, newpos, row)
        a, b = (newpos, old) if old >= 0 else (newpos, len(self.order) - 1)
        lo_, hi_ = min(a, b), max(a, b)
        self.pos[self.order[lo_:hi_ + 1]] = np.arange(lo_, hi_ + 1)
        if old < 0:
            return ViewChange("inserted", pos=newpos)
        return ViewChange("moved", pos=newpos, old=old)

    def rows(self) -> np.ndarray:
        """Data rows in view order."""
        return self.order
