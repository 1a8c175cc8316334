"""The browser front-end's one door to the application layer (:mod:`amore_gui.application`).

Everything the web server shows or changes goes through this module, with the same Qt-free code
as the Qt GUI: the table is read by :mod:`~amore_gui.application.dbread` into a
:class:`~amore_gui.application.table_data.TableData` (cell texts, tooltips and number formatting
from it), followed live by :class:`~amore_gui.application.live.LiveUpdates`, filtered
by :mod:`~amore_gui.application.query`, exported by :mod:`~amore_gui.application.export`; edits
go through :class:`~amore_gui.application.session.Session` and
:mod:`~amore_gui.application.manual_edit` (the same validation and history as the GUI and
``amore-proto set``); the column layout is remembered per user and directory by the GUI's
:class:`~amore_gui.application.settings.Settings`.

Threads: one :class:`ServedDirectory` owns its table in a single thread (``owner``): loading,
live updates, serialising rows, filtering and export all run there, so the table needs no lock
and the event loop never waits for it (coroutines ``await`` the owner). Reads of files and the
database (thumbnails, a run's HDF5 data, histories) and writes run on a small shared pool; the
live follower has its own thread. Nothing here blocks the event loop.

Rows travel as JSON (:meth:`ServedDirectory.row_text`), one object per run::

    {"id": "2832:5", "p": 2832, "r": 5, "v": <seq of its last change>,
     "s": status text, "sc": status, "sh": status tooltip, "t0"/"t1": start/added (text),
     "T0"/"T1": the same in Unix seconds, "c": comment,
     "x": [cell of each variable column, in column order]}

A variable cell is ``null`` (no value), a string (a number's text as the table shows it, when
that text is the number), ``[text, number]`` (a rounded number) or an object with ``k`` (the
kind code of :mod:`~amore_gui.application.table_data`), ``t`` (text), ``n`` (number), ``h``
(hover text: error message, who set a manual value...), ``s`` (sparkline points), ``b`` (bold),
``i`` (italic: carried over), ``bg`` (background colour), ``z`` (1: the value is stale, ``h``
says why; :mod:`backend.store.staleness`). The live status (``status``) counts the stale values
(``stale``).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import os
import re
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np

from amore_gui.application import dbread, export, manual_edit
from amore_gui.application.formatting import cell_colour, header_text
from amore_gui.application.live import LiveUpdates
from amore_gui.application.process import hand_back_memory
from amore_gui.application.process import steady_memory  # noqa: F401  (for the server)
from amore_gui.application.query import QueryError, search_filter
from amore_gui.application.reprocess import JobProcess, ReprocessJob, slurm_available
from amore_gui.application.values import describe_value, read_run_value
from amore_gui.application.session import Session, run_now
from amore_gui.application.settings import Settings, config_dir
from amore_gui.application.table_data import (
    C_ADDED, C_RUN, C_START, C_STATUS, K_BOOL, K_ERROR, K_MISSING, K_NUMBER,
    K_SKIPPED, K_SPARKLINE, K_THUMBNAIL, NSTATIC, RUN_STATUSES, RowView, TableData)
from amore_gui.application.vocabulary import vocabulary_for

log = logging.getLogger(__name__)

#: Rows in the first page a browser asks for (painted at once), and in the pages after it.
FIRST_PAGE = 150
PAGE = 1000

#: Characters of row JSON text a served directory keeps (:meth:`ServedDirectory.row_text`):
#: about 12,000 rows of the soak's 10 variables. Rows beyond it are serialised for each read.
ROW_CACHE_CHARS = 4_000_000


class NotFound(LookupError):
    """A run, variable or job that is not in the served table (HTTP 404)."""


class Refused(ValueError):
    """An edit refused with a reason for the user (HTTP 422), nothing written."""


def _plain(x):
    """numpy scalars -> Python (for JSON)."""
    return x.item() if isinstance(x, np.generic) else x


def _time(t: float) -> float | None:
    return None if t is None or (isinstance(t, float) and math.isnan(t)) else float(t)


_CSS_COLOUR = re.compile(r"^(#[0-9a-fA-F]{3,8}|[a-zA-Z]{3,20})$")


def css_colour(spec) -> str | None:
    """A ``Cell(background=...)`` value (:func:`~amore_gui.application.formatting.cell_colour`)
    as a CSS colour that cannot carry anything else (None if not understood)."""
    c = cell_colour(spec)
    if isinstance(c, str):
        return c if _CSS_COLOUR.match(c) else None
    if c is None:
        return None
    return f"rgb({c[0]},{c[1]},{c[2]})"


def access_path() -> Path:
    """The web server's token file: ``$AMORE_WEB_ACCESS``, or ``web-access.json`` in AMORE's
    config folder (:func:`~amore_gui.application.settings.config_dir`)."""
    env = os.environ.get("AMORE_WEB_ACCESS")
    return Path(env) if env else config_dir() / "web-access.json"


def layouts_dir() -> Path:
    """Where each web user's column layouts are kept: ``web-layouts/`` beside the token file."""
    return access_path().parent / "web-layouts"


def user_settings(user: str) -> Settings:
    """The settings file (:class:`~amore_gui.application.settings.Settings`) of one web user."""
    h = hashlib.sha256(user.encode()).hexdigest()[:20]
    return Settings(layouts_dir() / f"{h}.json")


def amore_made(context_dir) -> bool:
    """Did AMORE create this directory's database? (Only then does the server leave its record
    there: nothing is written into a directory AMORE did not create.)"""
    try:
        return dbread.has_amore_schema(context_dir)
    except (OSError, sqlite3.Error):
        return False


def directory_label(context_dir) -> tuple[str, str]:
    """(slug, title) of a context directory for addresses and the list page: the proposal as
    the facility writes it (``p2832``, ``mx2532``), from the database's metadata. Raises
    ``FileNotFoundError`` if there is no ``runs.sqlite``."""
    con = dbread.connect(context_dir)
    try:
        meta = dbread.read_metadata(con)
    finally:
        con.close()
    voc = vocabulary_for(context_dir)
    prop = meta.get("proposal")
    try:
        prop = int(prop)
    except (TypeError, ValueError):
        pass
    text = voc.proposal_text(prop) if prop not in (None, "") else Path(context_dir).name
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", str(text)).strip("-") or "table"
    title = f"{voc.proposal} {text}" if voc.facility != "euxfel" else str(text)
    return slug, title


class ServedDirectory:
    """One context directory served to browsers (see module docstring).

    ``push(kind, body, raw)`` (owner thread) numbers and sends a message to this directory's
    viewers (see :class:`amore_gui.web.push.PushChannel`); it is set by the server.
    ``use_kafka``: follow Kafka update messages when a broker is configured.
    """

    def __init__(self, path, slug: str, title: str, channel, io: ThreadPoolExecutor,
                 use_kafka: bool = True):
        self.path = Path(path).resolve()
        self.slug, self.title = slug, title
        self.channel = channel
        self.io = io
        self.use_kafka = use_kafka
        self.owner = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"table {slug}")
        #: reads the whole table (at start and at each reload): always the same thread, so
        #: the memory of a table being read comes from one allocator arena, not from any of
        #: the pool's
        self.reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"read {slug}")
        self.loop: asyncio.AbstractEventLoop | None = None
        self.data: TableData | None = None
        self.metadata: dict = {}
        self.vocabulary = vocabulary_for(self.path)
        self.follower: LiveUpdates | None = None
        self._follow_thread: threading.Thread | None = None
        self.row_version: np.ndarray = np.zeros(0, np.int64)
        self._cache: dict[int, str] = {}
        self._cache_chars = 0
        #: variable indices of the columns announced as holding drawn cells
        self._drawn: set[int] = set()
        self._ids: dict[str, tuple] = {}
        self._reloading = False
        self._pending: list = []
        self.status = {"backend": {"state": "unknown", "text": "Backend: …", "alive": None,
                                   "detail": ""},
                       "source": {"mode": None, "text": "Live: starting…"}, "live": False}
        self.jobs: dict[str, JobProcess] = {}
        self._job_sent: dict[str, float] = {}
        self._local = threading.local()
        self.error: str | None = None

    # -- running the owner / the pool ------------------------------------------------------
    async def on_owner(self, fn: Callable, *args):
        """Run ``fn(*args)`` in the owner thread and return its result."""
        return await asyncio.get_running_loop().run_in_executor(self.owner, fn, *args)

    async def on_pool(self, fn: Callable, *args):
        """Run ``fn(*args)`` on the shared I/O pool and return its result."""
        return await asyncio.get_running_loop().run_in_executor(self.io, fn, *args)

    def _push(self, kind: str, body: dict | None = None, raw: dict | None = None) -> int:
        """Number and send a message (owner thread only: numbers are taken in order)."""
        seq = self.channel.take_seq()
        text = self.channel.encode(seq, kind, body, raw)
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.channel.deliver, seq, text)
        return seq

    # -- loading and following ---------------------------------------------------------------
    async def start(self) -> None:
        """Read the table and start following it live."""
        self.loop = asyncio.get_running_loop()
        res = await self.loop.run_in_executor(self.reader, self._read)
        await self.on_owner(self._take, res)
        self.follower = LiveUpdates.from_load(self.path, res, res.data.max_timestamp,
                                              use_kafka=self.use_kafka)
        ev = self.follower.events
        ev.updates.connect(lambda ups: self.owner.submit(self._apply, ups))
        ev.reload.connect(lambda: self.owner.submit(self._start_reload))
        ev.comments.connect(lambda: self.owner.submit(self._push, "logbook"))
        ev.backend.connect(lambda ind: self.owner.submit(self._backend, ind))
        ev.source.connect(lambda mode, text: self.owner.submit(self._source, mode, text))
        ev.ready.connect(lambda: self.owner.submit(self._ready))
        self._follow_thread = threading.Thread(target=self.follower.run, daemon=True,
                                               name=f"live {self.slug}")
        self._follow_thread.start()

    def _read(self) -> dbread.LoadResult:
        dbread.ensure_schema(self.path)
        return dbread.load_table(self.path)

    def _take(self, res: dbread.LoadResult) -> None:
        """Make a freshly read table the served one (owner thread)."""
        self.data = res.data
        self.metadata = res.metadata
        # the facility's words in the fixed headers, as the GUI does (Session.table_loaded)
        Session(self.path, settings=Settings(Path(os.devnull))).table_loaded(
            res.metadata, res.data, res.seconds)
        self.row_version = np.zeros(res.data.capacity, np.int64)
        self._forget_rows()
        kinds = res.data.kind[:res.data.nrows]
        self._drawn = set(np.flatnonzero(np.isin(kinds, (K_SPARKLINE, K_THUMBNAIL)).any(axis=0))
                          .tolist())
        self._ids = {f"{p}:{r}": (p, r) for (p, r) in res.data.row_of}
        self.status["stale"] = res.data.stale_count()

    def _start_reload(self) -> None:
        """Variables changed: read the table again (on the reader thread), keep updates
        meanwhile."""
        if self._reloading:
            return
        self._reloading = True
        fut = self.reader.submit(self._read)
        fut.add_done_callback(lambda f: self.owner.submit(self._finish_reload, f))

    def _finish_reload(self, fut) -> None:
        self._reloading = False
        try:
            res = fut.result()
        except Exception as e:
            log.warning("Reloading %s failed: %s", self.path, e)
            return
        self._take(res)
        pending, self._pending = self._pending, []
        for ups in pending:
            self._apply(ups, push=False)
        self._push("reload", {"why": "the variables changed", "epoch": self.channel.epoch})
        del res, fut
        # the old table is freed now: hand its pages back (off the event loop)
        self.reader.submit(hand_back_memory)

    def _apply(self, updates: list, push: bool = True) -> None:
        """Apply live :class:`RunUpdate` s and push the changed rows (owner thread)."""
        if self._reloading:
            self._pending.append(updates)
            return
        d = self.data
        changed_rows, added_cols = [], False
        for upd in updates:
            row, changed, new, added = d.apply_update(upd)
            if added:
                added_cols = True
            if changed or new:
                changed_rows.append(row)
                if new:
                    self._ids[f"{_plain(d.proposal[row])}:{int(d.run[row])}"] = (
                        _plain(d.proposal[row]), int(d.run[row]))
        stale = d.stale_count()
        if push and stale != self.status.get("stale"):
            self.status["stale"] = stale
            self._push("status", self.status)
        if not push or not (changed_rows or added_cols):
            return
        drawn = np.isin(d.kind[changed_rows], (K_SPARKLINE, K_THUMBNAIL)).any(axis=0)
        newly_drawn = set(np.flatnonzero(drawn).tolist()) - self._drawn
        self._drawn |= newly_drawn
        if added_cols or newly_drawn:
            # a value without a column (a new built-in check), or the first drawn cell of a
            # column (its renderer): the browsers read the columns again
            self._forget_rows()
            self._push("reload", {"why": "new columns", "epoch": self.channel.epoch})
            return
        seq = self.channel.take_seq()
        if len(self.row_version) < d.capacity:
            self.row_version = np.concatenate(
                [self.row_version, np.zeros(d.capacity - len(self.row_version), np.int64)])
        for row in changed_rows:
            self.row_version[row] = seq
            self._forget_rows(row)
        rows = "[" + ",".join(self.row_text(r) for r in dict.fromkeys(changed_rows)) + "]"
        text = self.channel.encode(seq, "rows", None, {"rows": rows})
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.channel.deliver, seq, text)

    def _backend(self, ind) -> None:
        b = {"state": str(ind.state), "text": ind.text, "alive": ind.alive, "detail": ind.detail,
             "colour": ind.colour}
        if b != self.status["backend"]:
            self.status["backend"] = b
            self._push("status", self.status)

    def _source(self, mode: str, text: str) -> None:
        self.status["source"] = {"mode": mode, "text": text}
        self._push("status", self.status)

    def _ready(self) -> None:
        self.status["live"] = True
        self._push("status", self.status)

    async def stop(self) -> None:
        """Stop following and the running reprocess jobs; free the threads."""
        if self.follower is not None:
            self.follower.stop()
            if self._follow_thread is not None:
                await self.on_pool(self._follow_thread.join, 5.0)
        for job in self.jobs.values():
            job.cancel()
        self.owner.shutdown(wait=False, cancel_futures=True)
        self.reader.shutdown(wait=False, cancel_futures=True)

    # -- rows as JSON (owner thread) ---------------------------------------------------------
    def _cell(self, d: TableData, row: int, v: int, k: int):
        col = NSTATIC + v
        if k == K_MISSING:
            return None
        a = d.attrs.get((row, v))
        stale = d.stale_info(row, v) if (d.stale is not None or d.stale_bulk) else None
        if k == K_NUMBER and a is None and stale is None:
            t = d.display(row, col)
            x = float(d.num[row, v])
            if not math.isfinite(x):
                return t
            try:
                same = float(t) == x
            except ValueError:
                same = False
            return t if same else [t, x]
        out: dict[str, Any] = {"k": k}
        if k == K_SPARKLINE:
            raw = d.obj[row, v]
            if isinstance(raw, (bytes, bytearray, memoryview)):
                pts = np.frombuffer(raw, dtype="<f4").astype(float)
                out["s"] = [float(f"{p:.4g}") if math.isfinite(p) else None for p in pts.tolist()]
        elif k != K_THUMBNAIL:
            out["t"] = d.display(row, col)
            if k in (K_NUMBER, K_BOOL):
                x = float(d.num[row, v])
                if math.isfinite(x):
                    out["n"] = x
        tip = d.tooltip(row, col) if (a or stale or k in (K_ERROR, K_SKIPPED) or
                                      k not in (K_NUMBER, K_BOOL)) else None
        if tip:
            out["h"] = tip
        if stale:
            out["z"] = 1
        if a:
            if a.get("bold"):
                out["b"] = 1
            if a.get("carried"):
                out["i"] = 1
            bg = css_colour(a.get("background"))
            if bg:
                out["bg"] = bg
        return out

    def _forget_rows(self, row: int | None = None) -> None:
        """Drop the cached text of ``row`` (every row when None): it changed."""
        if row is None:
            self._cache.clear()
            self._cache_chars = 0
        else:
            t = self._cache.pop(row, None)
            if t is not None:
                self._cache_chars -= len(t)

    def row_text(self, row: int) -> str:
        """The JSON text of one data row, ASCII only (``\\u`` escapes: a compact Python
        string, one byte per character). Cached until the row changes while the cache holds
        less than :data:`ROW_CACHE_CHARS` characters (the rows read first after a reload:
        the newest ones); a full table is read again by every viewer at each reload, and
        serialising it costs ~100x reading the cache."""
        t = self._cache.get(row)
        if t is not None:
            return t
        d = self.data
        c = d.col_of
        kinds = d.kind[row].tolist()
        p, r = _plain(d.proposal[row]), int(d.run[row])
        obj = {"id": f"{p}:{r}", "p": p, "r": r,
               "v": int(self.row_version[row]) if row < len(self.row_version) else 0,
               "s": d.display(row, c(C_STATUS)), "sc": RUN_STATUSES[int(d.status[row])],
               "sh": d.tooltip(row, c(C_STATUS)),
               "t0": d.display(row, c(C_START)), "T0": _time(float(d.start_time[row])),
               "t1": d.display(row, c(C_ADDED)), "T1": _time(float(d.added_at[row])),
               "c": d.comment[row],
               "x": [self._cell(d, row, v, k) for v, k in enumerate(kinds)]}
        t = json.dumps(obj, separators=(",", ":"))
        if self._cache_chars + len(t) <= ROW_CACHE_CHARS:
            self._cache[row] = t
            self._cache_chars += len(t)
        return t

    def columns(self) -> list[dict]:
        """The columns: the fixed ones (key starting with ``#``) then the variables, with title,
        header (group on its own line, units), description, tags and, for manual columns,
        their type and choices."""
        out = []
        for i, col in enumerate(self.data.columns):
            e = {"key": col.key, "title": col.title, "header": header_text(col.title, col.units)
                 if col.variable else col.title, "units": col.units,
                 "description": col.description, "tags": list(col.tags),
                 "variable": col.variable}
            if col.manual:
                e["manual"] = {"type": col.manual.get("type"),
                               "choices": list(col.manual.get("choices") or [])}
            if col.variable:
                kinds = self.data.column_kinds(i)
                e["numeric"] = bool(kinds & {K_NUMBER, K_BOOL}) and not (
                    kinds - {K_NUMBER, K_BOOL, K_MISSING, K_ERROR, K_SKIPPED})
                # drawn cells (sparklines, thumbnails): only these columns need a renderer
                e["drawn"] = i - NSTATIC in self._drawn
            out.append(e)
        return out

    def page_parts(self, below: int | None, limit: int, extra: dict | None = None) -> list[str]:
        """A page of rows as pieces of one JSON text (see :meth:`page`), each row's text a
        piece of its own: the server sends them in chunks as they are (the row texts kept in
        the cache are not copied), never one text of the whole table per viewer. ``extra``:
        more keys of the object."""
        d = self.data
        n = d.nrows
        hi = n if below is None else max(0, min(int(below), n))
        lo = max(0, hi - max(1, int(limit)))
        body = {"seq": self.channel.seq, "epoch": self.channel.epoch, "next": lo or None,
                "total": n}
        if below is None:
            body.update(columns=self.columns(), status=self.status)
        body.update(extra or {})
        head = json.dumps(body, separators=(",", ":"))   # ASCII, as the rows: a compact text
        parts = [head[:-1] + ',"rows":[']
        for i, r in enumerate(range(hi - 1, lo - 1, -1)):
            if i:
                parts.append(",")
            parts.append(self.row_text(r))
        parts.append("]}")
        return parts

    def page(self, below: int | None, limit: int) -> str:
        """A page of rows as JSON text, newest first: data rows below index ``below`` (all
        rows when None), at most ``limit``; with ``next`` (the cursor of the next page, or
        null), ``seq`` (every change numbered up to it is in the rows), ``epoch`` and, on the
        first page, the columns, the totals and the live status."""
        return "".join(self.page_parts(below, limit))

    # -- reading -----------------------------------------------------------------------------
    def key_of(self, rid: str) -> tuple:
        """(proposal, run) of a row id ``"2832:5"``; raises :class:`NotFound`."""
        key = self._ids.get(str(rid))
        if key is None:
            raise NotFound(f"no run {rid!r} in this table")
        return key

    def filter_ids(self, text: str) -> dict:
        """The runs matching the filter box text (an expression of :mod:`amore_gui.application.
        query`, or plain words): ``{"ids": [...]}``, with ``error`` (``message``, ``pos``
        0-based or null, ``text`` with a caret line) when the expression has a mistake (then
        ``ids`` is null: the rows stay as they are)."""
        d = self.data
        try:
            f = search_filter(text)
            mask = f.mask(d)
            err = getattr(f, "error", None)
        except QueryError as e:
            err, mask = e, None
        if err is not None:
            return {"ids": None, "error": {"message": err.message, "pos": err.pos,
                                           "text": str(err)}}
        rows = np.flatnonzero(mask)
        return {"ids": [f"{_plain(d.proposal[r])}:{int(d.run[r])}" for r in rows.tolist()],
                "error": None}

    def _view_rows(self, text: str, sort: str, descending: bool) -> np.ndarray:
        view = RowView(self.data, sort if self.data.col_of(sort) is not None else C_RUN,
                       descending)
        if text and text.strip():
            f = search_filter(text)
            if getattr(f, "query", None) is not None:
                f.query(self.data)
                if f.error is not None:
                    raise f.error
            view.set_filters([f])
        return view.rows()

    def export(self, fmt: str, text: str, sort: str, descending: bool,
               columns: list[str]) -> tuple[str, str]:
        """The visible table (rows matching ``text`` in the order of ``sort``, the ``columns``
        keys in their order) as (content, media type): CSV or Markdown, written by the GUI's
        export code. Raises :class:`~amore_gui.application.query.QueryError`."""
        rows = self._view_rows(text, sort, descending)
        cols = [c for c in (self.data.col_of(k) for k in columns) if c is not None]
        if fmt == "md":
            return export.markdown_table(self.data, rows, cols), "text/markdown; charset=utf-8"
        return export.visible_frame(self.data, rows, cols).to_csv(index=False), \
            "text/csv; charset=utf-8"

    def plot(self, x: str, y: str) -> dict:
        """One column against another across runs (the table's values): ``ids``, ``runs``,
        ``x``, ``y`` (None where not a number), axis labels."""
        d = self.data
        cx, cy = d.col_of(x), d.col_of(y)
        if cx is None or cy is None:
            raise NotFound(f"no column {x if cx is None else y!r}")
        xs, ys = d.numeric(cx), d.numeric(cy)
        ok = ~(np.isnan(xs) | np.isnan(ys))
        rows = np.flatnonzero(ok)

        def label(c):
            col = d.columns[c]
            return col.title.replace("/", " › ") + (f" [{col.units}]" if col.units else "")
        return {"ids": [f"{_plain(d.proposal[r])}:{int(d.run[r])}" for r in rows.tolist()],
                "runs": d.run[rows].tolist(), "x": xs[rows].tolist(), "y": ys[rows].tolist(),
                "xlabel": label(cx), "ylabel": label(cy),
                "xtime": d.columns[cx].key in (C_START, C_ADDED),
                "ytime": d.columns[cy].key in (C_START, C_ADDED)}

    def variable(self, name: str):
        """The column of variable ``name``; raises :class:`NotFound`."""
        c = self.data.col_of(name)
        if c is None or c < NSTATIC:
            raise NotFound(f"no variable {name!r}")
        return self.data.columns[c]

    def cell_check(self, rid: str, name: str) -> tuple[dict, str | None]:
        """(``{"proposal", "run", "name", "title", "units"}``, the message of an error or
        skipped cell or None) of a variable cell (owner thread); raises :class:`NotFound`."""
        p, r = self.key_of(rid)
        col = self.variable(name)
        row = self.data.row_of[(p, r)]
        c = self.data.col_of(name)
        head = {"proposal": p, "run": r, "name": col.key, "title": col.title, "units": col.units}
        failed = self.data.tooltip(row, c) if self.data.cell_kind(row, c) in (
            K_ERROR, K_SKIPPED) else None
        return head, failed or None

    def _con(self):
        con = getattr(self._local, "con", None)
        if con is None:
            con = self._local.con = dbread.connect(self.path, kept=True)
        return con

    def thumbnail(self, p, r: int, name: str) -> bytes | None:
        """PNG of a thumbnail cell (pool thread)."""
        return dbread.read_thumbnail(self._con(), p, r, name)

    def inspect(self, p, r: int, name: str, title: str, units: str | None) -> dict:
        """What to draw for one cell's full data (pool thread; see
        (:func:`~amore_gui.application.values.describe_value`)."""
        return describe_value(read_run_value(self.path, p, r, name), title, units)

    def history(self, p, r: int, name: str) -> list[dict]:
        """Every edit of a manual cell, oldest first (pool thread)."""
        return manual_edit.read_history(self.path, p, r, name)

    def logbook(self) -> list[dict]:
        """The standalone (time) comments, oldest first (pool thread)."""
        return self._session().read_logbook()

    # -- layout per user (owner thread) ------------------------------------------------------
    def _user_session(self, user: str) -> Session:
        s = Session(self.path, settings=user_settings(user))
        s.is_loaded = True
        return s

    def layout(self, user: str) -> dict:
        """The user's column layout for this directory: ``order`` (keys), ``hidden``,
        ``widths`` (pixels of columns they resized) and ``sort`` ([key, descending])."""
        s = self._user_session(user)
        order, hidden, widths = s.initial_layout(self.data)
        key, desc = s.sort
        return {"order": order, "hidden": sorted(hidden), "widths": widths, "sort": [key, desc]}

    def save_layout(self, user: str, layout: dict) -> None:
        """Remember a user's layout (the keys of :meth:`layout`)."""
        s = self._user_session(user)
        keys = {c.key for c in self.data.columns}
        order = [k for k in layout.get("order", []) if isinstance(k, str) and k in keys]
        widths = {k: int(w) for k, w in (layout.get("widths") or {}).items()
                  if k in keys and isinstance(w, (int, float)) and 10 <= w <= 2000}
        s.user_widths = set(widths)
        s.user_hidden = {k for k in layout.get("hidden", []) if k in keys}
        sort = layout.get("sort") or [C_RUN, True]
        sk = sort[0] if isinstance(sort[0], str) and sort[0] in keys else C_RUN
        s.remember(self.data, order, widths, sk, bool(sort[1]))

    # -- edits (pool thread) -----------------------------------------------------------------
    def _session(self) -> Session:
        """A session for one write: the GUI's write code, announced through the live
        follower's Kafka publisher."""
        s = Session(self.path, settings=Settings(Path(os.devnull)), runner=run_now)
        if self.follower is not None:
            s.publisher = self.follower.publish
        return s

    @staticmethod
    def _outcome(s: Session, write: Callable[[], None]):
        errors = []
        s.events.message.connect(lambda text, is_error: errors.append(text) if is_error else None)
        write()
        if errors:
            raise Refused(errors[0])

    def _written(self) -> None:
        if self.follower is not None:
            self.follower.poke()

    def set_comment(self, p, r: int, text: str) -> None:
        """Write a run's comment (raises :class:`Refused`)."""
        s = self._session()
        self._outcome(s, lambda: s.edit_comment(p, r, text))
        self._written()

    def add_logbook(self, user: str, text: str) -> None:
        """Add a time comment (logbook) by ``user`` (raises :class:`Refused`)."""
        s = self._session()
        s.proposal = self.metadata.get("proposal")
        try:
            s.proposal = int(s.proposal)
        except (TypeError, ValueError):
            pass
        self._outcome(s, lambda: s.add_logbook_comment(text, author=user))
        self._written()

    def set_manual(self, user: str, keys: list[tuple], name: str, raw, confirm: bool) -> list:
        """Set a manual column for runs ``keys`` as the GUI does, recorded with ``user`` and
        ``web`` in the cell's history; returns [(proposal, run, value)]. Raises :class:`Refused`
        with the reason (nothing written)."""
        s = self._session()
        out: dict = {}

        def done(edits, err):
            out["edits"], out["err"] = edits, err
        manual_edit.set_manual_values(s, keys, name, raw, on_done=done, confirm=confirm,
                                      via="web", author=user)
        if out.get("err"):
            err = out["err"]
            raise Refused(err.split(": ", 1)[1] if err.startswith("ManualError: ") else err)
        self._written()
        return [(e.proposal, e.run, e.value) for e in out.get("edits", [])]

    # -- reprocessing ------------------------------------------------------------------------
    @staticmethod
    def slurm_available() -> bool:
        return slurm_available()

    def reprocess(self, runs: list[str], names: list[str] | None, slurm: bool,
                  expected: int, force: bool = False) -> str:
        """Start ``amore-proto reprocess`` for ``runs`` (numbers or ``all``: the stale values,
        unless ``force``) and variables ``names`` (None: all); returns the job's id. Its
        progress is pushed (``job``)."""
        jid = f"{int(time.time() * 1000):x}"
        job = JobProcess(ReprocessJob(self.path, runs, names, slurm, all_runs=expected,
                                      force=force),
                         on_change=lambda: self.owner.submit(self._job_changed, jid))
        self.jobs[jid] = job
        job.start()
        self._job_changed(jid)
        return jid

    def _job_changed(self, jid: str) -> None:
        job = self.jobs.get(jid)
        if job is None:
            return
        now = time.monotonic()
        if job.running and now - self._job_sent.get(jid, 0.0) < 0.25:
            return
        self._job_sent[jid] = now
        if not job.running and self.follower is not None:
            self.follower.poke()
        self._push("job", {"id": jid, "job": job.to_dict()})

    def cancel_job(self, jid: str) -> None:
        job = self.jobs.get(jid)
        if job is None:
            raise NotFound(f"no job {jid!r}")
        job.cancel()
