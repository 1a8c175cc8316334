"""What a ``runs.sqlite`` is, found out without changing it: AMORE's own database, DAMNIT's,
one written by a newer AMORE, or something else.

AMORE migrates and writes only its own databases (:class:`backend.store.writer.RunDB` and every
reader call :func:`check_amore_db` first). Anything else - DAMNIT's database in a proposal's
``usr/Shared/amore`` first of all - is left byte for byte as it is: no migration, no switch to
WAL, no ``chmod``, no new file beside it.

How a database is opened here so that nothing can change (see :func:`open_untouched`):

* a database in rollback-journal mode (DAMNIT's): SQLite's ``mode=ro``, which takes a shared
  lock and never creates a file;
* (the file's own header, which says which mode it is in, is read directly only when no
  connection can have it open in WAL mode: see :func:`_peek`)
* a database in WAL mode whose ``-wal`` and ``-shm`` files exist (a writer has it open):
  ``mode=ro`` as well (the files are there already);
* a database in WAL mode without them (closed cleanly, everything is in the main file):
  ``immutable=1``, because SQLite would otherwise create ``-wal`` and ``-shm`` even to read it.

Recognition (:func:`identify`), in this order:

``damnit``
    a ``metameta`` table (DAMNIT's key/value table) beside ``run_variables``; its
    ``data_format_version`` is the data format (DAMNIT 0.4.0 writes 4). Tables an older AMORE
    added to such a database by mistake (``alembic_version``, ``metadata``) do not make it AMORE's.
``amore``
    an ``alembic_version`` table holding one of the revisions in ``migrations/versions``
    (migrated to :data:`SCHEMA_HEAD` when opened for writing).
``amore-newer``
    an ``alembic_version`` table with a revision this AMORE does not know.
``empty``
    an SQLite file without tables, or a file of 0 bytes: AMORE may create its schema in it
    (:meth:`backend.store.writer.RunDB.create`), nothing else.
``other``
    anything else: other tables, not SQLite at all, or unreadable.

This module uses the standard library only (and, lazily, the site configuration for the
suggested import destination): the command line checks a directory with it before loading
anything heavy.
"""
from __future__ import annotations

import os
import re
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from pathlib import Path

from backend.contextdir import db_file

#: Alembic revision this code writes and reads (the newest of ``migrations/versions``); a
#: database at another revision is migrated when opened with
#: :class:`backend.store.writer.RunDB`. Defined here, not in :mod:`backend.store.schema`, so
#: that the readers know it without importing SQLAlchemy.
SCHEMA_HEAD = "0009"

#: The 100-byte header of an SQLite 3 file starts with this.
SQLITE_MAGIC = b"SQLite format 3\x00"
#: What AMORE suggests as the import destination when it cannot name one.
DEST_PLACEHOLDER = "DEST"


class DbKind(str, Enum):
    """What a ``runs.sqlite`` is (see the module docstring)."""

    AMORE = "amore"
    AMORE_NEWER = "amore-newer"
    DAMNIT = "damnit"
    EMPTY = "empty"
    OTHER = "other"
    MISSING = "missing"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class DbIdentity:
    """What :func:`identify` found.

    ``path``: the database file; ``kind``: a :class:`DbKind`; ``revision``: AMORE's Alembic
    revision (``amore``, ``amore-newer``); ``data_format``: DAMNIT's ``data_format_version``
    (``damnit``; 0 when it has none); ``detail``: for ``other``, what was seen (tables, or why
    it could not be read); ``wal``: the file is in WAL mode.
    """

    path: Path
    kind: DbKind
    revision: str | None = None
    data_format: int | None = None
    detail: str = ""
    wal: bool = False

    @property
    def is_amore(self) -> bool:
        """AMORE's own database (any revision this AMORE can migrate)."""
        return self.kind is DbKind.AMORE

    @property
    def needs_upgrade(self) -> bool:
        """AMORE's own database at an older revision than this AMORE writes."""
        return self.kind is DbKind.AMORE and self.revision != SCHEMA_HEAD


class NotAmoreDatabase(Exception):
    """A database AMORE did not create (or a newer AMORE's): it is left untouched. The message
    says what it is and what to do; ``identity`` is the :class:`DbIdentity`."""

    def __init__(self, message: str, identity: DbIdentity):
        super().__init__(message)
        self.identity = identity


@lru_cache(maxsize=1)
def known_revisions() -> frozenset[str]:
    """The Alembic revisions of AMORE's migrations (``migrations/versions/*.py``), read from the
    files (Alembic itself is not imported)."""
    out = set()
    for f in (Path(__file__).parent / "migrations" / "versions").glob("*.py"):
        m = re.search(r'^revision\s*=\s*["\']([^"\']+)["\']', f.read_text(), re.M)
        if m:
            out.add(m.group(1))
    return frozenset(out)


def _header(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(100)


def _is_wal(head: bytes) -> bool:
    """The header's file format read/write versions are 2: the database is in WAL mode."""
    return len(head) >= 20 and head[18] == 2 and head[19] == 2


def _side_files(path: Path) -> bool:
    """The ``-wal`` and ``-shm`` files exist: a connection has the database open in WAL mode
    (or left them behind)."""
    return Path(f"{path}-wal").exists() and Path(f"{path}-shm").exists()


#: Held while this module reads a database's header with a plain ``open`` (and while the
#: connection :func:`identify` opens on that ground lives), and while a database is noted as
#: opened by SQLite in this process (:func:`note_sqlite_use`).
_SQLITE_USE_LOCK = threading.RLock()
#: Absolute paths and (device, inode) of the databases this process opens with SQLite.
_SQLITE_USED: set = set()


def _use_keys(path: Path) -> list:
    keys: list = [str(path)]
    try:
        st = os.stat(path)
    except OSError:
        return keys
    keys.append((st.st_dev, st.st_ino))
    return keys


def note_sqlite_use(path: str | os.PathLike) -> None:
    """Note that this process opens the database ``path`` (a ``runs.sqlite`` or its context
    directory) with SQLite, before it connects: from then on this module never reads that
    file with a plain ``open`` in this process (see :func:`_peek`). Every connection AMORE
    keeps open to its own database calls it (the readers of :mod:`backend.store.reader`,
    :class:`backend.store.writer.RunDB`)."""
    p = Path(db_file(path)).absolute()
    with _SQLITE_USE_LOCK:
        _SQLITE_USED.update(_use_keys(p))


def _peek(path: Path) -> tuple[bytes | None, bool]:
    """(the file's header, or None if it must not be read directly; WAL mode).

    Closing any file descriptor of a file drops every POSIX lock this process holds on it,
    SQLite's own included: another process's last connection then believes nobody else has
    the database open and removes its ``-wal`` and ``-shm`` files, and this process's
    connections go on reading the removed ones, never seeing a change again (a GUI's live
    updates stopped that way). So the header is left to SQLite alone when this process opens
    the file with SQLite (:func:`note_sqlite_use`), or when ``-wal`` and ``-shm`` are present
    (WAL mode, possibly open here). Otherwise no connection of this process has it open (the
    lock keeps one from opening meanwhile), and its header is read with a plain ``open``."""
    with _SQLITE_USE_LOCK:
        if _side_files(path):
            return None, True
        if any(k in _SQLITE_USED for k in _use_keys(path)):
            # no -wal/-shm: no connection has it open in WAL mode, so SQLite reads it as
            # immutable (its own file handling never drops a lock, unlike a plain close)
            return None, False
        head = _header(path)
        return head, _is_wal(head)


def open_untouched(path: str | os.PathLike, timeout: float = 10.0) -> sqlite3.Connection:
    """A read-only :mod:`sqlite3` connection to the SQLite file ``path`` (or a context directory)
    that can neither change the file nor create one beside it (see the module docstring for how).
    ``query_only`` is set as well. Raises ``FileNotFoundError`` if there is no such file,
    ``sqlite3.DatabaseError`` if it is not SQLite."""
    path = Path(db_file(path)).absolute()
    if not path.is_file():
        raise FileNotFoundError(f"No database at {path}")
    head, wal = _peek(path)
    if head is not None and not head.startswith(SQLITE_MAGIC):
        raise sqlite3.DatabaseError(f"{path} is not an SQLite database")
    # immutable: a WAL database without -wal/-shm (read directly), or one this process opened
    # with SQLite before that has none now (its header is not read directly, see _peek)
    immutable = (head is not None and wal) or (head is None and not wal)
    uri = path.as_uri() + ("?immutable=1" if immutable else "?mode=ro")
    con = sqlite3.connect(uri, uri=True, timeout=timeout, check_same_thread=False)
    con.execute("PRAGMA query_only = 1")
    return con


@contextmanager
def read_snapshot(con: sqlite3.Connection):
    """Use ``con`` inside one read transaction (a consistent view while another process writes)
    and close it afterwards: ``with read_snapshot(open_untouched(path)) as con: ...``."""
    con.isolation_level = None
    try:
        con.execute("BEGIN")
        yield con
        con.execute("COMMIT")
    finally:
        con.close()


def _classify(path: Path, con: sqlite3.Connection, wal: bool) -> DbIdentity:
    tables = {r[0] for r in con.execute(
        "SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}
    if "metameta" in tables and ("run_variables" in tables or "run_info" in tables
                                 or "alembic_version" not in tables):
        row = con.execute("SELECT value FROM metameta WHERE key = 'data_format_version'"
                          ).fetchone()
        try:
            fmt = int(row[0]) if row and row[0] is not None else 0
        except (TypeError, ValueError):
            fmt = 0
        return DbIdentity(path, DbKind.DAMNIT, data_format=fmt, wal=wal)
    if "alembic_version" in tables:
        row = con.execute("SELECT version_num FROM alembic_version").fetchone()
        rev = row[0] if row else None
        if rev is None:
            return DbIdentity(path, DbKind.OTHER, detail="an empty alembic_version table",
                              wal=wal)
        kind = DbKind.AMORE if rev in known_revisions() else DbKind.AMORE_NEWER
        return DbIdentity(path, kind, revision=rev, wal=wal)
    if not tables:
        return DbIdentity(path, DbKind.EMPTY, wal=wal)
    shown = ", ".join(sorted(tables)[:6]) + (", ..." if len(tables) > 6 else "")
    return DbIdentity(path, DbKind.OTHER, detail=f"tables {shown}", wal=wal)


def identify(path: str | os.PathLike) -> DbIdentity:
    """What the database ``path`` (a ``runs.sqlite`` or its context directory) is, read without
    changing anything (:func:`open_untouched`). Never raises for what it finds: a missing file
    is ``missing``, a file that is not SQLite or cannot be read is ``other`` (``detail`` says
    why)."""
    path = Path(db_file(path)).absolute()
    if not path.is_file():
        return DbIdentity(path, DbKind.MISSING)
    try:
        if path.stat().st_size == 0:
            return DbIdentity(path, DbKind.EMPTY)
        head, wal = _peek(path)
    except OSError as e:
        return DbIdentity(path, DbKind.OTHER, detail=f"unreadable: {e.strerror or e}")
    if head is not None and not head:
        return DbIdentity(path, DbKind.EMPTY)
    if head is not None and not head.startswith(SQLITE_MAGIC):
        return DbIdentity(path, DbKind.OTHER, detail="not an SQLite database")
    last = None
    for attempt in range(5):    # an immutable read may see a writer's half-done change
        try:
            # the lock: no connection of this process that locks the file opens while an
            # immutable one (which may not) is open and then closed
            with _SQLITE_USE_LOCK:
                con = open_untouched(path)
                try:
                    return _classify(path, con, wal)
                finally:
                    con.close()
        except sqlite3.DatabaseError as e:
            last = e
            time.sleep(0.1 * (attempt + 1))
    return DbIdentity(path, DbKind.OTHER, detail=f"unreadable: {last}", wal=wal)


def import_destination(damnit_dir: str | os.PathLike) -> Path | None:
    """Where ``amore-proto import-damnit`` puts the AMORE directory of ``damnit_dir`` by default
    (:meth:`backend.config.Config.import_destination`); None when there is no convention for
    it (or the site configuration cannot be read)."""
    from backend.config import load_config
    try:
        return load_config(None).import_destination(damnit_dir)
    except Exception:   # noqa: BLE001 - a broken site configuration: the message says DEST
        return None


def describe(ident: DbIdentity, suggested_dest: str | os.PathLike | None = None) -> str:
    """A plain message for a database AMORE does not change: what it is and what to do.
    ``suggested_dest``: where ``amore-proto import-damnit`` would put the AMORE directory
    (default :func:`import_destination`, else ``DEST``)."""
    where = ident.path.parent
    if ident.kind is DbKind.DAMNIT:
        dest = suggested_dest or import_destination(where) or DEST_PLACEHOLDER
        return (f"{where} holds a DAMNIT database (data format {ident.data_format}); AMORE "
                f"does not change it. To take this beamtime over: amore-proto import-damnit "
                f"{where} {dest}")
    if ident.kind is DbKind.AMORE_NEWER:
        return (f"{ident.path} was written by a newer AMORE (schema revision "
                f"{ident.revision}; this AMORE knows up to {max(known_revisions())}); AMORE "
                f"does not change it. Use the newer AMORE for this directory.")
    if ident.kind is DbKind.MISSING:
        return (f"No AMORE database at {ident.path} (create one with 'amore-proto init "
                f"{where} --proposal N')")
    return (f"{ident.path} is not an AMORE database ({ident.detail or ident.kind}); AMORE does "
            f"not change it. Give AMORE a directory of its own.")


def check_amore_db(path: str | os.PathLike, *, allow_empty: bool = False,
                   suggested_dest: str | os.PathLike | None = None) -> DbIdentity:
    """:func:`identify` the database ``path`` and return its identity if AMORE may use it: its
    own (``amore``), or with ``allow_empty`` an empty or missing file (to create one in).
    Raises :class:`NotAmoreDatabase` (message from :func:`describe`) otherwise."""
    ident = identify(path)
    if ident.kind is DbKind.AMORE:
        return ident
    if allow_empty and ident.kind in (DbKind.EMPTY, DbKind.MISSING):
        return ident
    raise NotAmoreDatabase(describe(ident, suggested_dest), ident)
