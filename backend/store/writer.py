"""Storage of run values: ``runs.sqlite`` in the context directory, through SQLAlchemy.

The database is the source of truth; messages only carry names. Its tables are defined once,
in :mod:`backend.store.schema` (described there); this module writes them with statements
built from those tables, and :mod:`backend.store.reader` reads them. The schema is versioned
with Alembic (``backend/store/migrations``); opening a database upgrades it to the current
revision - only a database AMORE made: any other (DAMNIT's...) is refused before anything is
written or migrated (:mod:`backend.store.identify`).

Writes use ``BEGIN IMMEDIATE`` in WAL mode and are short, so many workers may write at once
without ``database is locked`` errors. A write waits for another process's write lock (a
database browser holding a transaction) up to :data:`MAX_LOCK_WAIT_S`, logging every
:data:`BUSY_TIMEOUT_S` seconds that it waits and putting the wait in the event log (at most
every 30 s). :class:`RunDB` is used only by
the backend (the database's one writer), and for what people edit (comments, from the GUI
or the command line).
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
import uuid
from pathlib import Path
from typing import Iterable

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from backend.store.identify import DbKind, NotAmoreDatabase, check_amore_db, note_sqlite_use
from backend.store.provenance import (ORIGIN_AMORE, drop_unused_evaluations, record_context,
                                      value_row_provenance)
from backend.store.schema import (comments_table, events_table, manual_columns_table,
                                  manual_history_table, metadata_table, run_logs_table,
                                  run_snapshots_table, run_values_table, runs_table,
                                  slurm_jobs_table, source_runs_table, variables_table)
from backend.contextdir import db_file
from backend.vocab import (RUN_STATUSES, EventLevel, SourceRunState, SUMMARY_TYPES,  # noqa: F401
                           RunStatus, StoredValue, VariableInfo, normalize_proposal)

log = logging.getLogger(__name__)

#: Seconds one attempt to get the write lock waits inside SQLite before AMORE logs that it is
#: still waiting and tries again.
BUSY_TIMEOUT_S = 5.0
#: SQLite connections a :class:`RunDB` with ``keep_connections`` keeps open (more are opened,
#: up to twice as many again, while that many threads use it at once)
KEPT_CONNECTIONS = 4
#: Longest total wait for the write lock (another process holding a write transaction, e.g. a
#: database browser) before a write gives up with ``OperationalError``.
MAX_LOCK_WAIT_S = 1800.0
#: Waits for the write lock at least this long are recorded in the event log.
LOCK_REPORT_S = 2.0

_lock_wait = threading.local()


def _is_busy(e: BaseException) -> bool:
    text = str(e).lower()
    return "locked" in text or "busy" in text


def is_transient_db_error(e: BaseException) -> bool:
    """True for database errors that may go away by themselves (a lock held too long, a full
    disk, an I/O error), as opposed to bugs or bad data: callers may retry later."""
    if not isinstance(e, (sa.exc.OperationalError, sqlite3.OperationalError)):
        return False
    text = str(e).lower()
    return any(w in text for w in ("locked", "busy", "full", "disk i/o", "unable to open",
                                   "readonly"))

def _new_run():
    """Record a run (status ``pending``) unless it exists. Parameters: proposal, run,
    start_time, added_at."""
    ins = sqlite_insert(runs_table).values(
        proposal=sa.bindparam("proposal"), run=sa.bindparam("run"),
        start_time=sa.bindparam("start_time"), added_at=sa.bindparam("added_at"),
        status=RunStatus.PENDING.value)
    return ins.on_conflict_do_nothing(index_elements=[runs_table.c.proposal, runs_table.c.run])


def _run_status():
    """Set a run's status and message (recording the run if new; a start time only if given).
    Parameters: proposal, run, start_time, added_at, status, status_message."""
    c = runs_table.c
    ins = sqlite_insert(runs_table).values(
        proposal=sa.bindparam("proposal"), run=sa.bindparam("run"),
        start_time=sa.bindparam("start_time"), added_at=sa.bindparam("added_at"),
        status=sa.bindparam("status"), status_message=sa.bindparam("status_message"))
    return ins.on_conflict_do_update(
        index_elements=[c.proposal, c.run],
        set_={"status": ins.excluded.status, "status_message": ins.excluded.status_message,
              "start_time": sa.func.coalesce(ins.excluded.start_time, c.start_time)})


def _upsert_value():
    """Store one value, replacing an existing one. Parameters: the ``run_values`` columns."""
    c = run_values_table.c
    ins = sqlite_insert(run_values_table)
    return ins.on_conflict_do_update(
        index_elements=[c.proposal, c.run, c.name],
        set_={n: ins.excluded[n] for n in ("value", "summary_type", "attributes", "timestamp",
                                           "code", "evaluation", "inputs")})


_NEW_RUN = _new_run()
_RUN_STATUS = _run_status()
# The statements of every run's path, built once: building one (and its cache key) costs
# SQLAlchemy more than SQLite takes to run it (~0.1-0.3 ms each; ``reprocess all`` runs a
# dozen per run). Parameters: p (proposal), r (run), and as named.
_GET_METADATA = sa.select(metadata_table.c.value).where(metadata_table.c.key == sa.bindparam("k"))
_GET_RUN = sa.select(runs_table).where(runs_table.c.proposal == sa.bindparam("p"),
                                       runs_table.c.run == sa.bindparam("r"))
_SOURCE_RUN = sa.select(source_runs_table).where(
    source_runs_table.c.proposal == sa.bindparam("p"), source_runs_table.c.run == sa.bindparam("r")
).order_by(source_runs_table.c.updated.desc()).limit(1)
_MANUAL_TYPES = sa.select(manual_columns_table.c.name, manual_columns_table.c.type).where(
    manual_columns_table.c.deleted_at.is_(None)).order_by(manual_columns_table.c.position,
                                                         manual_columns_table.c.id)
_RUN_VALUES_NAMED = sa.select(run_values_table.c.name, run_values_table.c.value).where(
    run_values_table.c.proposal == sa.bindparam("p"), run_values_table.c.run == sa.bindparam("r"),
    run_values_table.c.name.in_(sa.bindparam("names", expanding=True)))
_ADD_RUN_LOG = run_logs_table.insert()
_DELETE_RUN_LOGS = run_logs_table.delete().where(
    run_logs_table.c.id.in_(sa.bindparam("ids", expanding=True)))
_DELETE_VALUES_NAMED = run_values_table.delete().where(
    run_values_table.c.proposal == sa.bindparam("p"), run_values_table.c.run == sa.bindparam("r"),
    run_values_table.c.name.in_(sa.bindparam("names", expanding=True)))


def _run_update(columns: tuple[str, ...]):
    """``UPDATE runs SET <columns> WHERE proposal = :p AND run = :r`` (cached per set of
    columns; parameters named as the columns)."""
    stmt = _RUN_UPDATES.get(columns)
    if stmt is None:
        stmt = _RUN_UPDATES[columns] = runs_table.update().where(
            runs_table.c.proposal == sa.bindparam("p"), runs_table.c.run == sa.bindparam("r")
        ).values({c: sa.bindparam(f"v_{c}") for c in columns})
    return stmt


_RUN_UPDATES: dict[tuple[str, ...], sa.Update] = {}
#: name -> when the computation of the run's stored value started (values with provenance)
_STARTED_AT = sa.text("SELECT v.name, e.started_at FROM run_values v JOIN evaluations e "
                      "ON e.id = v.evaluation WHERE v.proposal = :p AND v.run = :r")
_UPSERT_VALUE = _upsert_value()


#: ``metadata`` key saying the proposal is closed (``amore-proto close``): "", "0" or absent =
#: open, else the Unix time it was closed.
CLOSED_KEY = "closed"
#: Processing logs kept per run (older ones are dropped when a new one is stored).
KEEP_RUN_LOGS = 20
_OLD_RUN_LOGS = sa.select(run_logs_table.c.id).where(
    run_logs_table.c.proposal == sa.bindparam("p"), run_logs_table.c.run == sa.bindparam("r")
).order_by(run_logs_table.c.id.desc()).offset(KEEP_RUN_LOGS)
#: Who carries manual values over to new runs (``manual_history.author``).
CARRY_OVER_AUTHOR = "AMORE auto-pilot"


def is_closed(db: "RunDB") -> bool:
    """True when ``amore-proto close`` made the table read-only."""
    return (db.get_metadata(CLOSED_KEY) or "") not in ("", "0")


def manual_value_attributes(units: str | None, carried: bool, author: str, at: float,
                            via: str) -> str:
    """The ``run_values.attributes`` (JSON text) of a manual value: ``manual`` true, ``by``,
    ``at`` (Unix seconds), ``via`` (where the edit came from), ``units`` if the column has them,
    ``carried`` when carried over from an earlier run."""
    attrs = {"manual": True, "by": author, "at": at, "via": via}
    if units:
        attrs["units"] = units
    if carried:
        attrs["carried"] = True
    return json.dumps(attrs)


#: How manual values are stored in ``run_values.summary_type``, by column type.
MANUAL_SUMMARY_TYPES = {"boolean": "bool", "integer": "number", "number": "number"}


class StorageError(Exception):
    """The database cannot be used (wrong proposal, missing, unreadable)."""


class ForeignDatabase(StorageError):
    """The database is not AMORE's (DAMNIT's, a newer AMORE's, something else): it is left as
    it is. The message says what it is and what to do; ``identity`` is the
    :class:`backend.store.identify.DbIdentity`."""

    def __init__(self, message: str, identity):
        super().__init__(message)
        self.identity = identity


def make_engine(path: str | os.PathLike, keep_connections: bool = False) -> sa.Engine:
    """SQLAlchemy engine for an SQLite file: WAL, a busy timeout (see :data:`MAX_LOCK_WAIT_S`), ``BEGIN IMMEDIATE`` for
    transactions that may write (``BEGIN`` for connections with execution option
    ``readonly=True``). Each transaction opens a connection of its own and closes it after,
    unless ``keep_connections``: then they are kept open between transactions (up to
    :data:`KEPT_CONNECTIONS`) until the engine is disposed of (:meth:`RunDB.close`)."""
    if keep_connections:
        pool = {"poolclass": sa.pool.QueuePool, "pool_size": KEPT_CONNECTIONS,
                "max_overflow": 2 * KEPT_CONNECTIONS, "pool_timeout": MAX_LOCK_WAIT_S}
    else:
        pool = {"poolclass": sa.pool.NullPool}
    engine = sa.create_engine(f"sqlite:///{Path(path)}",
                              connect_args={"timeout": BUSY_TIMEOUT_S,
                                            "check_same_thread": False}, **pool)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        if conn.get_execution_options().get("readonly"):
            conn.exec_driver_sql("BEGIN")
            return
        # Another process may hold the write lock for long (a database browser with an open
        # transaction): wait for it as long as MAX_LOCK_WAIT_S, saying so every few seconds.
        t0 = time.monotonic()
        while True:
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                break
            except (sa.exc.OperationalError, sqlite3.OperationalError) as e:
                waited = time.monotonic() - t0
                if not _is_busy(e) or waited > MAX_LOCK_WAIT_S:
                    raise
                log.warning("%s is locked by another process; waiting to write "
                            "(%.0f s so far)", path, waited)
        _lock_wait.seconds = getattr(_lock_wait, "seconds", 0.0) + time.monotonic() - t0

    return engine


def upgrade_schema(path: str | os.PathLike, revision: str = "head") -> None:
    """Run the Alembic migrations on the SQLite file at ``path`` up to ``revision`` (default:
    the head; an older one makes a database as an older AMORE left it, for tests)."""
    from alembic import command
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", f"sqlite:///{Path(path)}")
    command.upgrade(cfg, revision)


class RunDB:
    """Access to ``runs.sqlite`` of one context directory.

    ``RunDB(dir)`` opens an existing database (upgrading its schema); ``RunDB.create(dir, proposal)``
    makes one. ``keep_connections``: keep SQLite connections open between transactions (see
    :func:`make_engine`), for a process that writes many runs in a row (``amore-proto
    reprocess``): opening one and closing it again (the last connection of a process to a WAL
    database checkpoints it) cost ~10 ms per transaction, reusing it ~1 ms; :meth:`close`
    closes them. Raises :class:`StorageError` if the file does not exist, :class:`ForeignDatabase`
    (the file left untouched) if it is not AMORE's own (:mod:`backend.store.identify`).
    All methods are safe to call from several processes at once.
    """

    def __init__(self, context_dir: str | os.PathLike, _create: bool = False,
                 keep_connections: bool = False):
        self.path = db_file(context_dir)
        self._reporting_wait = False
        self._last_wait_report = -1e9
        if not _create and not self.path.is_file():
            raise StorageError(f"No AMORE database at {self.path} "
                               f"(create one with 'amore-proto init {self.path.parent} --proposal N')")
        # Only AMORE's own database is migrated or written (nothing, not even WAL mode, is
        # switched on another program's database): see backend.store.identify.
        try:
            ident = check_amore_db(self.path, allow_empty=_create)
        except NotAmoreDatabase as e:
            raise ForeignDatabase(str(e), e.identity) from None
        note_sqlite_use(self.path)
        if ident.kind is not DbKind.AMORE or ident.needs_upgrade:
            upgrade_schema(self.path)
        self.engine = make_engine(self.path, keep_connections)
        #: code digest -> ``code_versions`` id, as far as this process has met them
        self._code_ids: dict[str, int] = {}

    @contextmanager
    def reading(self):
        """A read-only sqlite3 connection of its own (``mode=ro``, ``query_only``), closed
        after the ``with`` block: for the standard library's reads of
        :mod:`backend.store.staleness` (as :func:`backend.store.reader.connect`, without
        importing that module's compiled queries and numpy)."""
        con = sqlite3.connect(self.path.absolute().as_uri() + "?mode=ro", uri=True,
                              timeout=BUSY_TIMEOUT_S, check_same_thread=False)
        try:
            con.execute("PRAGMA query_only = 1")
            yield con
        finally:
            con.close()

    @contextmanager
    def _begin(self):
        """A write transaction. It waits for another process's write lock (up to
        :data:`MAX_LOCK_WAIT_S`); once it is done, waits of :data:`LOCK_REPORT_S` or more of
        this thread since the last report (also those of other modules' transactions on this
        engine: snapshots, manual columns, run logs) are recorded in the event log."""
        with self.engine.begin() as conn:
            yield conn
        waited, _lock_wait.seconds = getattr(_lock_wait, "seconds", 0.0), 0.0
        if waited >= LOCK_REPORT_S and not self._reporting_wait \
                and time.monotonic() - self._last_wait_report >= 30.0:
            self._reporting_wait = True
            self._last_wait_report = time.monotonic()
            try:
                log.warning("Waited %.1f s for %s: another process held a write lock",
                            waited, self.path.name)
                self.add_event(EventLevel.WARNING, "database",
                               f"Waited {waited:.0f} s to write to {self.path.name}: another "
                               f"process held a write lock; nothing was lost",
                               details={"seconds": round(waited, 1)})
            except Exception as e:
                log.warning("Could not record the wait in the event log: %s", e)
            finally:
                self._reporting_wait = False

    @classmethod
    def create(cls, context_dir: str | os.PathLike, proposal: int | str | None = None) -> "RunDB":
        """Create (or open) the database and give it a ``db_id``; set ``proposal`` if given
        (a number such as ``2832`` or an identifier such as ``"mx2532"``, see
        :func:`backend.vocab.normalize_proposal`).

        Raises :class:`StorageError` if the database belongs to another proposal, ``ValueError``
        for something that is no proposal.
        """
        if proposal is not None:
            proposal = normalize_proposal(proposal)
        path = db_file(context_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        db = cls(context_dir, _create=True)
        with db._begin() as conn:
            existing = dict(conn.execute(sa.select(metadata_table.c.key, metadata_table.c.value)).all())
            if "db_id" not in existing:
                conn.execute(metadata_table.insert().values(key="db_id", value=uuid.uuid4().hex))
            old = existing.get("proposal")
            if proposal is not None and old is not None and normalize_proposal(old) != proposal:
                raise StorageError(f"{path} belongs to proposal {old}, not {proposal}")
        if proposal is not None:
            db.set_metadata("proposal", str(proposal))
        return db

    # --- metadata -------------------------------------------------------------------------
    def get_metadata(self, key: str, default: str | None = None) -> str | None:
        with self.engine.connect().execution_options(readonly=True) as conn:
            v = conn.execute(_GET_METADATA, {"k": key}).scalar()
        return default if v is None else v

    def set_metadata(self, key: str, value: str) -> None:
        with self._begin() as conn:
            ins = sqlite_insert(metadata_table).values(key=key, value=value)
            conn.execute(ins.on_conflict_do_update(index_elements=[metadata_table.c.key],
                                                   set_={"value": ins.excluded.value}))

    @property
    def db_id(self) -> str:
        """Random id of this database (32 hex chars), used to name its update topic."""
        return self.get_metadata("db_id")

    @property
    def proposal(self) -> int | str | None:
        """Proposal the database belongs to (int for numeric proposals, else the identifier
        such as ``"mx2532"``), or None if not set."""
        p = self.get_metadata("proposal")
        return normalize_proposal(p) if p is not None else None

    # --- runs -----------------------------------------------------------------------------
    def ensure_run(self, proposal: int | str, run: int, start_time: float | None = None,
                   added_at: float | None = None) -> bool:
        """Record a run if it is new (status ``pending``); set its start time if given.

        Returns True if the run was new.
        """
        now = time.time() if added_at is None else added_at
        with self._begin() as conn:
            res = conn.execute(_NEW_RUN, {"proposal": proposal, "run": run,
                                          "start_time": start_time, "added_at": now})
            new = res.rowcount > 0
            if not new and start_time is not None:
                conn.execute(runs_table.update()
                             .where(runs_table.c.proposal == proposal, runs_table.c.run == run)
                             .values(start_time=start_time))
        return new

    def set_run_status(self, proposal: int | str, run: int, status: str,
                       message: str | None = None, start_time: float | None = None) -> None:
        """Set a run's processing status (one of :data:`RUN_STATUSES`) and message."""
        if status not in RUN_STATUSES:
            raise ValueError(f"unknown run status {status!r}")
        with self._begin() as conn:
            conn.execute(_RUN_STATUS, {"proposal": proposal, "run": run, "start_time": start_time,
                                       "added_at": time.time(), "status": RunStatus(status).value,
                                       "status_message": message})

    def set_run_statuses(self, items: Iterable[tuple[int | str, int, RunStatus | str, str | None]]
                         ) -> None:
        """Set the status and message of many runs in one transaction: ``(proposal, run,
        status, message)`` tuples (statuses from :class:`RunStatus`; proposals as
        :func:`backend.vocab.normalize_proposal` gives them).

        Raises ``ValueError`` for an unknown status (nothing is written then)."""
        rows = [{"p": p, "r": r, "st": st, "m": m, "a": time.time()} for p, r, st, m in items]
        for r in rows:
            if r["st"] not in RUN_STATUSES:
                raise ValueError(f"unknown run status {r['st']!r}")
            r["st"] = RunStatus(r["st"]).value
        if not rows:
            return
        with self._begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO runs(proposal, run, added_at, status, status_message) "
                "VALUES (:p, :r, :a, :st, :m) ON CONFLICT(proposal, run) DO UPDATE SET "
                "status = excluded.status, status_message = excluded.status_message"), rows)

    def set_comment(self, proposal: int | str, run: int, text: str | None) -> None:
        """Set the editable comment of a run (None or empty clears it)."""
        self.ensure_run(proposal, run)
        with self._begin() as conn:
            conn.execute(runs_table.update()
                         .where(runs_table.c.proposal == proposal, runs_table.c.run == run)
                         .values(comment=text or None))

    def runs(self) -> list[dict]:
        """All runs as dicts (keys as the ``runs`` columns), ordered by proposal and run."""
        with self.engine.connect().execution_options(readonly=True) as conn:
            rows = conn.execute(sa.select(runs_table).order_by(runs_table.c.proposal,
                                                                 runs_table.c.run)).mappings().all()
        return [dict(r) for r in rows]

    def run_numbers(self) -> list[int]:
        return [r["run"] for r in self.runs()]

    def get_run(self, proposal: int | str, run: int) -> dict | None:
        with self.engine.connect().execution_options(readonly=True) as conn:
            r = conn.execute(_GET_RUN, {"p": proposal, "r": run}).mappings().first()
        return dict(r) if r else None

    # --- runs from other facilities ----------------------------------------------------------
    def register_source_run(self, source: str, key: str, proposal: int | str, info: dict,
                            state: SourceRunState | str = SourceRunState.READY, run: int | None = None,
                            start_time: float | None = None) -> tuple[int, bool, bool]:
        """Record (or update) a run as a facility names it, in one transaction.

        ``source``: ``"ess"``, ``"esrf"``, ``"swissfel"``; ``key``: the facility's identity of the
        run (ESS job id, path of an ESRF metadata.json, a SwissFEL request JSON); ``info``: what
        the source knows (JSON-serialisable; merged into what was recorded before, new keys
        win); ``state``: ``running``/``ready``/``failed``. ``run``: the facility's run number;
        None synthesises one: the next number after every run of the proposal, assigned
        atomically (``BEGIN IMMEDIATE``), so the same key keeps its number across restarts.

        The run row is created too (status ``pending``, or ``running`` for state ``running``).
        Returns ``(run, new, changed)``: ``new`` if the key was not known, ``changed`` if its
        info or state changed. A ``running`` state never replaces ``ready``/``failed`` (a start
        message delivered again after the run finished changes nothing). Raises ``ValueError`` if ``run`` is given and the key was
        recorded with another run number.
        """
        proposal = normalize_proposal(proposal)
        now = time.time()
        for attempt in range(5):
            try:
                with self._begin() as conn:
                    row = conn.execute(sa.select(source_runs_table).where(
                        source_runs_table.c.source == source,
                        source_runs_table.c.key == key)).mappings().first()
                    if row is not None:
                        if run is not None and run != row["run"]:
                            raise ValueError(f"{source} run {key!r} was recorded as run "
                                             f"{row['run']}, not {run}")
                        if state == SourceRunState.RUNNING and row["state"] in (SourceRunState.READY, SourceRunState.FAILED):
                            return row["run"], False, False  # a late/redelivered start message
                        old = json.loads(row["info"]) if row["info"] else {}
                        merged = {**old, **info}
                        changed = merged != old or state != row["state"]
                        if changed:
                            conn.execute(source_runs_table.update().where(
                                source_runs_table.c.source == source,
                                source_runs_table.c.key == key).values(
                                    info=json.dumps(merged, default=str), state=state,
                                    updated=now))
                        return row["run"], False, changed
                    if run is None:
                        top = conn.execute(sa.text(
                            "SELECT max(r) FROM (SELECT max(run) AS r FROM runs WHERE proposal = :p "
                            "UNION ALL SELECT max(run) FROM source_runs WHERE proposal = :p)"),
                            {"p": proposal}).scalar()
                        run = int(top or 0) + 1
                    conn.execute(source_runs_table.insert().values(
                        source=source, key=key, proposal=proposal, run=run,
                        info=json.dumps(info, default=str), state=state, updated=now))
                    conn.execute(sa.text(
                        "INSERT INTO runs(proposal, run, start_time, added_at, status) "
                        "VALUES (:p, :r, :s, :a, :st) ON CONFLICT(proposal, run) DO UPDATE SET "
                        "start_time = coalesce(runs.start_time, excluded.start_time)"),
                        {"p": proposal, "r": run, "s": start_time, "a": now,
                         "st": (RunStatus.RUNNING if state == SourceRunState.RUNNING else RunStatus.PENDING).value})
                    return run, True, True
            except sa.exc.OperationalError as e:  # pragma: no cover - only under extreme load
                if "locked" not in str(e) or attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")

    def source_run(self, proposal: int | str, run: int) -> dict | None:
        """What a run source recorded for a run (latest update first when several keys map to
        it): dict with ``source``, ``key``, ``info`` (dict), ``state``, ``updated``; None for
        runs no facility source recorded (European XFEL)."""
        proposal = normalize_proposal(proposal)
        with self.engine.connect().execution_options(readonly=True) as conn:
            r = conn.execute(_SOURCE_RUN, {"p": proposal, "r": run}).mappings().first()
        if r is None:
            return None
        out = dict(r)
        out["info"] = json.loads(out["info"]) if out["info"] else {}
        return out

    def source_runs(self, source: str | None = None) -> list[dict]:
        """Every recorded facility run (see :meth:`source_run`), ordered by run number."""
        q = sa.select(source_runs_table).order_by(source_runs_table.c.run)
        if source is not None:
            q = q.where(source_runs_table.c.source == source)
        with self.engine.connect().execution_options(readonly=True) as conn:
            rows = [dict(r) for r in conn.execute(q).mappings()]
        for r in rows:
            r["info"] = json.loads(r["info"]) if r["info"] else {}
        return rows

    # --- values ---------------------------------------------------------------------------
    def write_values(self, proposal: int | str, run: int, values: dict[str, StoredValue],
                     status: str | None = None, status_message: str | None = None,
                     start_time: float | None = None, delete_missing: Iterable[str] = (),
                     provenance: dict | None = None, origin: str = ORIGIN_AMORE,
                     inputs_at: float | None = None) -> list[str]:
        """Store the values of one run in one short transaction.

        ``values`` maps variable name to :class:`StoredValue`; existing values are replaced.
        Names in ``delete_missing`` that are not in ``values`` are removed (variables that no
        longer exist). ``status``/``status_message``/``start_time`` update the run row too.
        ``provenance``: how the values were made (the worker's reply, see
        :meth:`backend.ctxrunner.worker.Worker._provenance`), recorded beside them
        (:mod:`backend.store.provenance`; ``origin``: ``amore`` or ``damnit``); without it the
        values' provenance is cleared (manual values, built-in cells, errors of failed jobs).
        ``inputs_at`` (Unix seconds): when the inputs of these values were read (a Slurm job's
        submission); a stored value whose computation started later is kept, not replaced by
        this older one. Returns the names kept that way.
        """
        now = time.time()
        all_rows = [{"proposal": proposal, "run": run, "name": name,
                     "value": _db_value(sv.value), "summary_type": sv.summary_type,
                     "attributes": json.dumps(sv.attributes, default=str) if sv.attributes
                     else None, "timestamp": now} for name, sv in values.items()]
        gone = [n for n in delete_missing if n not in values]
        for attempt in range(5):
            try:
                with self._begin() as conn:
                    conn.execute(_NEW_RUN, {"proposal": proposal, "run": run,
                                            "start_time": start_time, "added_at": now})
                    newer = set() if inputs_at is None else {
                        n for n, started in conn.execute(_STARTED_AT, {"p": proposal, "r": run})
                        if started is not None and started > inputs_at}
                    rows = [r for r in all_rows if r["name"] not in newer]
                    if rows:
                        prov = value_row_provenance(provenance, values, conn, self._code_ids,
                                                    proposal, run, origin)
                        conn.execute(_UPSERT_VALUE, [dict(r, **prov[r["name"]]) for r in rows])
                        drop_unused_evaluations(conn, proposal, run)
                    if gone:
                        conn.execute(_DELETE_VALUES_NAMED, {"p": proposal, "r": run,
                                                            "names": gone})
                    upd = {}
                    if status is not None:
                        upd["status"] = status
                        upd["status_message"] = status_message
                    if start_time is not None:
                        upd["start_time"] = start_time
                    if upd:
                        conn.execute(_run_update(tuple(upd)), {
                            "p": proposal, "r": run, **{f"v_{k}": v for k, v in upd.items()}})
                if newer:
                    log.info("Run %d: kept %s, computed after these inputs were read",
                             run, ", ".join(sorted(newer)))
                return sorted(newer)
            except sa.exc.OperationalError as e:  # pragma: no cover - only under extreme load
                if "locked" not in str(e) or attempt == 4:
                    raise
                log.warning("Database busy, retrying write of run %d (%s)", run, e)
                time.sleep(0.2 * (attempt + 1))

    def get_values(self, proposal: int | str, run: int,
                   names: Iterable[str] | None = None) -> dict[str, StoredValue]:
        """Stored values of one run: name -> :class:`StoredValue` (only ``names`` if given)."""
        q = sa.select(run_values_table).where(run_values_table.c.proposal == proposal,
                                              run_values_table.c.run == run)
        if names is not None:
            q = q.where(run_values_table.c.name.in_(list(names)))
        with self.engine.connect().execution_options(readonly=True) as conn:
            rows = conn.execute(q).mappings().all()
        return {r["name"]: StoredValue(r["value"], r["summary_type"],
                                       json.loads(r["attributes"]) if r["attributes"] else {})
                for r in rows}

    def all_values(self) -> list[tuple]:
        """Every stored value as ``(proposal, run, name, value, summary_type, attributes_json)``."""
        with self.engine.connect().execution_options(readonly=True) as conn:
            c = run_values_table.c
            return [tuple(r) for r in conn.execute(sa.select(
                c.proposal, c.run, c.name, c.value, c.summary_type, c.attributes))]

    def refresh_run_data(self, runs: Iterable[tuple] | None = None) -> list[tuple]:
        """Look at the runs' data again (the files the last evaluation listed, see
        :func:`backend.ctxrunner.provenance.data_identity`) and record what changed, so that
        the values made from the old data count as stale. ``runs``: ``(proposal, run)``
        pairs (default: every run with recorded data). Returns the ``(proposal, run, kind)``
        whose data changed."""
        from backend.ctxrunner.provenance import data_identity
        from backend.store.provenance import set_run_data
        from backend.store.schema import run_data_table as rd
        with self.engine.connect().execution_options(readonly=True) as conn:
            rows = conn.execute(sa.select(rd.c.proposal, rd.c.run, rd.c.kind, rd.c.digest,
                                           rd.c.locations)).all()
        wanted = None if runs is None else set(runs)
        changed, now = [], time.time()
        new: dict[tuple, dict] = {}
        for p, r, kind, dig, locations in rows:
            if wanted is not None and (p, r) not in wanted:
                continue
            ident = data_identity(json.loads(locations or "[]"))
            if ident["digest"] != dig:
                changed.append((p, r, kind))
                new.setdefault((p, r), {})[kind] = ident
        if new:
            with self._begin() as conn:
                for (p, r), data in new.items():
                    set_run_data(conn, p, r, data, now)
        return changed

    # --- the context file's code ---------------------------------------------------------
    def record_context(self, codes: dict[str, dict], state: dict) -> bool:
        """Record the code of the context file just loaded as the current one (see
        :func:`backend.store.provenance.record_context`). Returns True if it changed."""
        with self._begin() as conn:
            return record_context(conn, codes, state)

    # --- variables ------------------------------------------------------------------------
    def set_variables(self, variables: Iterable[VariableInfo]) -> bool:
        """Replace the stored variable definitions; returns True if anything changed."""
        new = {v.name: v.row() for v in variables}
        with self._begin() as conn:
            old = {r["name"]: dict(r) for r in conn.execute(sa.select(variables_table)).mappings()}
            if old == new:
                return False
            conn.execute(variables_table.delete())
            if new:
                conn.execute(variables_table.insert(), list(new.values()))
        return True

    def get_variables(self) -> list[VariableInfo]:
        """Variable definitions in the order the context file defines them."""
        with self.engine.connect().execution_options(readonly=True) as conn:
            rows = conn.execute(sa.select(variables_table).order_by(sa.text("rowid"))).mappings().all()
        return [VariableInfo(name=r["name"], title=r["title"], description=r["description"],
                             units=r["units"], tags=json.loads(r["tags"] or "[]"),
                             data=r["data"] or "raw", summary=r["summary"]) for r in rows]

    # --- comments -------------------------------------------------------------------------
    def add_comment(self, text: str, author: str | None = None, timestamp: float | None = None,
                    proposal: int | str | None = None, run: int | None = None) -> int:
        """Add a standalone timestamped comment; returns its id."""
        with self._begin() as conn:
            res = conn.execute(comments_table.insert().values(
                text=text, author=author, timestamp=time.time() if timestamp is None else timestamp,
                proposal=proposal, run=run))
            return res.inserted_primary_key[0]

    def comments(self) -> list[dict]:
        with self.engine.connect().execution_options(readonly=True) as conn:
            return [dict(r) for r in conn.execute(
                sa.select(comments_table).order_by(comments_table.c.timestamp)).mappings()]

    # --- event log --------------------------------------------------------------------------
    def add_event(self, level: EventLevel | str, source: str, message: str, *,
                  run: int | None = None, proposal: int | str | None = None,
                  details: dict | None = None, timestamp: float | None = None) -> int:
        """Append an entry to the event log; returns its id.

        ``level``: an :class:`~backend.vocab.EventLevel` (or its value); ``source``: which part
        of AMORE reports it (``"kafka"``, ``"watcher"``, ``"context"``, ``"worker"``, ...);
        ``message``: one line for people; ``details``: JSON-serialisable dict (topic, offset,
        traceback...). Raises ``ValueError`` for an unknown level.
        """
        level = EventLevel(level).value
        with self._begin() as conn:
            res = conn.execute(events_table.insert().values(
                timestamp=time.time() if timestamp is None else timestamp, level=level,
                source=source, proposal=proposal, run=run, message=message,
                details=json.dumps(details, default=str) if details else None))
            return res.inserted_primary_key[0]

    def events(self, *, level: EventLevel | str | None = None, run: int | None = None,
               since_id: int = 0, limit: int | None = None) -> list[dict]:
        """Entries of the event log, oldest first: dicts with ``id``, ``timestamp``, ``level``,
        ``source``, ``proposal``, ``run``, ``message`` and ``details`` (a dict or None).
        ``level`` keeps entries at that level or above; ``since_id`` those with a larger id;
        ``limit`` the newest N of them."""
        order = [EventLevel.INFO.value, EventLevel.WARNING.value, EventLevel.ERROR.value]
        q = sa.select(events_table).where(events_table.c.id > since_id)
        if level is not None:
            q = q.where(events_table.c.level.in_(order[order.index(EventLevel(level).value):]))
        if run is not None:
            q = q.where(events_table.c.run == run)
        q = q.order_by(events_table.c.id.desc())
        if limit is not None:
            q = q.limit(limit)
        with self.engine.connect().execution_options(readonly=True) as conn:
            rows = [dict(r) for r in conn.execute(q).mappings()]
        for r in rows:
            r["details"] = json.loads(r["details"]) if r["details"] else None
        return rows[::-1]

    # --- Slurm jobs ------------------------------------------------------------------------
    def add_slurm_tasks(self, rows: Iterable[dict]) -> int:
        """Record Slurm tasks (dicts with the ``slurm_jobs`` columns; ``names`` a list) and, in
        the same transaction, mark their runs ``processing`` ("Slurm job J pending"). Tasks
        already recorded are left alone. Returns how many were new."""
        rows = [dict(r, names=json.dumps(list(r.get("names") or [])),
                     proposal=normalize_proposal(r["proposal"])) for r in rows]
        if not rows:
            return 0
        with self._begin() as conn:
            known = {(t, r) for t, r in conn.execute(
                sa.select(slurm_jobs_table.c.task_id, slurm_jobs_table.c.run)
                .where(slurm_jobs_table.c.task_id.in_(sorted({r["task_id"] for r in rows}))))}
            new = [r for r in rows if (r["task_id"], r["run"]) not in known]
            if new:
                conn.execute(slurm_jobs_table.insert(), new)
                conn.execute(sa.text(
                    "INSERT INTO runs(proposal, run, added_at, status, status_message) "
                    "VALUES (:p, :r, :a, :st, :m) ON CONFLICT(proposal, run) DO UPDATE "
                    "SET status = excluded.status, status_message = excluded.status_message"),
                    [{"p": r["proposal"], "r": r["run"], "a": time.time(),
                      "st": RunStatus.PROCESSING.value,
                      "m": f"Slurm job {r['task_id']} {r['state'].lower()}"} for r in new])
        return len(new)

    def update_slurm_task(self, task_id: str, run: int | None = None,
                          run_status: tuple[int | str, RunStatus | str, str | None] | None = None,
                          **fields) -> None:
        """Change columns (``state``, ``node``, ``done``, ...) of a recorded Slurm task: its row
        for ``run``, or all its rows. ``run_status`` = ``(proposal, status, message)`` sets the
        run's status in the same transaction (readers never see the two disagree)."""
        if "names" in fields:
            fields["names"] = json.dumps(list(fields["names"] or []))
        q = slurm_jobs_table.update().where(slurm_jobs_table.c.task_id == task_id)
        if run is not None:
            q = q.where(slurm_jobs_table.c.run == run)
        with self._begin() as conn:
            conn.execute(q.values(**fields))
            if run_status is not None and run is not None:
                p, st, msg = run_status
                if st not in RUN_STATUSES:
                    raise ValueError(f"unknown run status {st!r}")
                conn.execute(runs_table.update().where(runs_table.c.proposal == p,
                                                       runs_table.c.run == run)
                             .values(status=RunStatus(st).value, status_message=msg))

    def slurm_tasks(self, *, done: bool | None = None, run: int | None = None,
                    job_id: str | None = None, limit: int | None = None) -> list[dict]:
        """Recorded Slurm tasks, newest submission first: dicts with the ``slurm_jobs`` columns
        (``names`` as a list). ``done``: only finished (True) or unfinished (False) ones."""
        q = sa.select(slurm_jobs_table)
        if done is not None:
            q = q.where(slurm_jobs_table.c.done == int(done))
        if run is not None:
            q = q.where(slurm_jobs_table.c.run == run)
        if job_id is not None:
            q = q.where(slurm_jobs_table.c.job_id == str(job_id))
        q = q.order_by(slurm_jobs_table.c.submitted_at.desc(), slurm_jobs_table.c.run)
        if limit is not None:
            q = q.limit(limit)
        with self.engine.connect().execution_options(readonly=True) as conn:
            rows = [dict(r) for r in conn.execute(q).mappings()]
        for r in rows:
            r["names"] = json.loads(r["names"] or "[]")
        return rows
    # --- what the run path records besides values ----------------------------------------
    def add_snapshot(self, proposal: int | str, run: int, kind: str, source: str,
                     message, location: str | None = None,
                     received_at: float | None = None) -> int:
        """Append one run snapshot (append-only): ``kind`` ``"event"`` (a message that announced
        the run) or ``"metadata"`` (the run's metadata as read from its data); ``message``: a
        JSON text (stored verbatim) or a JSON-serialisable object. Returns the row id."""
        if not isinstance(message, str):
            message = json.dumps(message, default=str, sort_keys=True)
        with self._begin() as conn:
            res = conn.execute(run_snapshots_table.insert().values(
                proposal=proposal, run=run, kind=kind, source=source, location=location,
                message=message, received_at=time.time() if received_at is None else received_at))
            return res.inserted_primary_key[0]

    def add_run_log(self, proposal: int | str, run: int, status: str, text: str,
                    timestamp: float | None = None) -> int:
        """Store the processing log of one evaluation of ``run`` (``status``: ``done``,
        ``failed``, ``cancelled``...); keeps the newest :data:`KEEP_RUN_LOGS` per run. Returns
        its id."""
        with self._begin() as conn:
            res = conn.execute(_ADD_RUN_LOG, {
                "proposal": proposal, "run": run, "status": status, "text": text or "",
                "timestamp": time.time() if timestamp is None else timestamp})
            new_id = res.inserted_primary_key[0]
            old = [r[0] for r in conn.execute(_OLD_RUN_LOGS, {"p": proposal, "r": run})]
            if old:
                conn.execute(_DELETE_RUN_LOGS, {"ids": old})
        return new_id

    def manual_columns(self) -> list[str]:
        """Names of the manual columns, in display order."""
        return list(self._manual_types())

    def _manual_types(self, conn=None) -> dict[str, str]:
        q = _MANUAL_TYPES
        if conn is not None:
            return dict(conn.execute(q).all())
        with self.engine.connect().execution_options(readonly=True) as conn:
            return dict(conn.execute(q).all())

    def manual_values(self, proposal: int | str, run: int) -> tuple[list[str], dict]:
        """The manual columns (names, display order) and this run's values of them (name ->
        stored value; boolean columns give True/False; columns without a value are absent):
        what the context file's ``var#`` inputs see of manual columns."""
        with self.engine.connect().execution_options(readonly=True) as conn:
            cols = self._manual_types(conn)
            rows = conn.execute(_RUN_VALUES_NAMED, {"p": proposal, "r": run,
                                                    "names": list(cols)}).all() if cols else []
        return list(cols), {n: (bool(v) if cols[n] == "boolean" and v is not None else v)
                            for n, v in rows}

    def carry_over(self, proposal: int | str, run: int) -> list[tuple[str, object]]:
        """Auto-pilot for a new run: each carry-over manual column without a value in ``run``
        gets the value of the nearest earlier run that has one, marked as carried over (history
        entry ``via="carry-over"``), in one transaction. Returns ``(column name, value)`` of
        what was written (nothing on a closed proposal)."""
        if is_closed(self):
            return []
        mc, rv, mh = manual_columns_table.c, run_values_table.c, manual_history_table
        with self.engine.connect().execution_options(readonly=True) as conn:
            cols = conn.execute(sa.select(mc.id, mc.name, mc.type, mc.units).where(
                mc.deleted_at.is_(None), mc.carry_over != 0)
                .order_by(mc.position, mc.id)).all()
        if not cols:
            return []
        now = time.time()
        out = []
        with self._begin() as conn:
            for cid, name, typ, units in cols:
                have = conn.execute(sa.select(rv.run).where(
                    rv.proposal == proposal, rv.run == run, rv.name == name)).first()
                if have:
                    continue
                prev = conn.execute(sa.select(rv.value).where(
                    rv.proposal == proposal, rv.run < run, rv.name == name)
                    .order_by(rv.run.desc()).limit(1)).first()
                if prev is None or prev[0] is None:
                    continue
                conn.execute(mh.insert().values(
                    column_id=cid, proposal=proposal, run=run, value=prev[0], text=None,
                    carried=1, author=CARRY_OVER_AUTHOR, timestamp=now, via="carry-over"))
                conn.execute(_UPSERT_VALUE, [{
                    "proposal": proposal, "run": run, "name": name, "value": prev[0],
                    "summary_type": MANUAL_SUMMARY_TYPES.get(typ, "string"),
                    "attributes": manual_value_attributes(units, True, CARRY_OVER_AUTHOR, now,
                                                          "carry-over"),
                    "timestamp": now}])
                out.append((name, prev[0]))
        return out

    def keep_open(self) -> None:
        """Hold one connection open until :meth:`close` (the backend does). SQLite removes the
        ``-wal``/``-shm`` files when the last connection closes and must create them again for
        the next one; on a full disk that fails and nobody, not even a reader, could open the
        database. With a connection held, readers keep working on a full disk and writes fail
        cleanly ("database or disk is full")."""
        if getattr(self, "_keeper", None) is None:
            con = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
            con.execute("PRAGMA journal_mode = WAL")
            con.execute("SELECT count(*) FROM metadata").fetchall()
            self._keeper = con

    def close(self) -> None:
        keeper, self._keeper = getattr(self, "_keeper", None), None
        if keeper is not None:
            keeper.close()
        self.engine.dispose()


def _db_value(v):
    if isinstance(v, (bytearray, memoryview)):
        return bytes(v)
    return v
