"""A DAMNIT context directory, read without changing anything in it.

DAMNIT 0.4.0 (data format 4) keeps, in its context directory (at European XFEL the proposal's
``usr/Shared/amore``):

``runs.sqlite``
    ``metameta(key, value)`` (``data_format_version``, ``proposal``, ``db_id``,
    ``context_python``, ``concurrent_jobs``, Slurm settings...), ``run_info(proposal, run,
    start_time, added_at)``, ``run_variables(proposal, run, name, version, value, timestamp,
    max_diff, provenance, summary_type, summary_method, attributes)`` (one row per run and
    variable; ``value`` a number, a text or a blob; the run comment is the variable
    ``comment``), ``variables(name, type, title, description, attributes)`` (``type`` NULL for
    computed variables, else the type of a user-editable one), ``tags(id, name)`` and
    ``variable_tags(variable_name, tag_id)``, ``time_comments(timestamp, comment)``.
``extracted_data/p<P>_r<R>.h5``
    each variable's whole result (read by
    :func:`backend.ctxrunner.results.read_run_value`).
``context.py``; ``zulip.cfg`` (logbook posting, optional).

Every read happens in one read transaction through
:func:`backend.store.identify.open_untouched` (no file is created or changed).
"""
from __future__ import annotations

import json
import os
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from backend.contextdir import ContextDir
from backend.store.identify import DbKind, identify, open_untouched, read_snapshot
from backend.vocab import normalize_proposal

#: The DAMNIT data formats AMORE imports (DAMNIT 0.4.0 writes 4).
SUPPORTED_FORMATS = (4,)
#: DAMNIT's name of the run comment (a variable of each run).
COMMENT_NAME = "comment"


class DamnitError(Exception):
    """The directory is not a DAMNIT directory AMORE can read (no DAMNIT database, or a data
    format other than :data:`SUPPORTED_FORMATS`); the message says which and what to do."""


@dataclass
class DamnitVariable:
    """A row of DAMNIT's ``variables`` table: ``type`` is None for a computed variable, else a
    user-editable variable's type (``boolean``, ``integer``, ``number``, ``string``,
    ``timestamp``); ``attributes`` (dict) as stored; ``tags`` from ``variable_tags``."""

    name: str
    title: str | None = None
    description: str | None = None
    type: str | None = None
    attributes: dict = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)

    @property
    def user_editable(self) -> bool:
        return bool(self.type)


@dataclass
class DamnitCell:
    """One run's value of one variable (the latest ``version``), as DAMNIT stored it:
    ``value`` (int, float, str, bytes or None), ``timestamp`` (Unix seconds of the write),
    ``summary_type`` (None, ``complex``, ``numpy``, ``trendline``, ``timestamp``...),
    ``summary_method`` (the numpy reduction, or ''), ``attributes`` (dict: ``units``, ``bold``,
    ``background``, ``error``/``error_cls``...), ``provenance`` (``context.py``, or '' for
    values people typed)."""

    proposal: int | str
    run: int
    name: str
    value: Any
    timestamp: float | None
    summary_type: str | None
    summary_method: str | None
    attributes: dict
    provenance: str | None


def _loads(text) -> dict:
    if not text:
        return {}
    try:
        d = json.loads(text)
    except (TypeError, ValueError):
        return {}
    return d if isinstance(d, dict) else {}


class DamnitSource:
    """A DAMNIT context directory (``path``: the directory or its ``runs.sqlite``), read-only.

    Raises :class:`DamnitError` if it holds no DAMNIT database or one of another data format
    (the message names it)."""

    def __init__(self, path: str | os.PathLike):
        p = Path(path).expanduser().absolute()
        if p.suffix == ".sqlite":
            p = p.parent
        self.dir = ContextDir(p)
        self.path: Path = self.dir.path
        ident = identify(self.dir.db_file)
        if ident.kind is DbKind.MISSING:
            raise DamnitError(f"No DAMNIT database in {self.path} (no runs.sqlite)")
        if ident.kind is not DbKind.DAMNIT:
            what = {DbKind.AMORE: "an AMORE database", DbKind.AMORE_NEWER: "an AMORE database",
                    DbKind.EMPTY: "an empty database"}.get(ident.kind, "not a DAMNIT database")
            raise DamnitError(f"{self.dir.db_file} is {what}"
                              f"{' (' + ident.detail + ')' if ident.detail else ''}, "
                              f"not DAMNIT's: nothing to import")
        self.data_format: int = int(ident.data_format or 0)
        if self.data_format not in SUPPORTED_FORMATS:
            newer = self.data_format > max(SUPPORTED_FORMATS)
            raise DamnitError(
                f"{self.path} holds a DAMNIT database of data format {self.data_format}; AMORE "
                f"imports data format {', '.join(map(str, SUPPORTED_FORMATS))} (DAMNIT 0.4.0). "
                + ("Use an AMORE that knows the newer format." if newer else
                   "DAMNIT 0.4.0 upgrades older formats when it opens the database "
                   "(e.g. 'damnit db-config' in that directory); then import again."))

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read-only connection inside one read transaction (a consistent view while DAMNIT
        writes)."""
        with read_snapshot(open_untouched(self.dir.db_file, timeout=30.0)) as con:
            yield con

    # --- reading -----------------------------------------------------------------------------
    @staticmethod
    def metameta(con: sqlite3.Connection) -> dict[str, Any]:
        """DAMNIT's settings (``metameta``) as a dict."""
        return {k: v for k, v in con.execute("SELECT key, value FROM metameta")}

    @staticmethod
    def proposal(con: sqlite3.Connection) -> int | str | None:
        v = con.execute("SELECT value FROM metameta WHERE key = 'proposal'").fetchone()
        return normalize_proposal(str(v[0])) if v and v[0] is not None else None

    @staticmethod
    def variables(con: sqlite3.Connection) -> list[DamnitVariable]:
        """The ``variables`` rows in DAMNIT's order, with their tags."""
        tags: dict[str, list[str]] = {}
        try:
            for vname, tname in con.execute(
                    "SELECT vt.variable_name, t.name FROM variable_tags vt "
                    "JOIN tags t ON t.id = vt.tag_id ORDER BY t.name"):
                tags.setdefault(vname, []).append(tname)
        except sqlite3.OperationalError:    # no tag tables (they came with format 3)
            pass
        return [DamnitVariable(name, title, desc, typ or None, _loads(attrs), tags.get(name, []))
                for name, typ, title, desc, attrs in con.execute(
                    "SELECT name, type, title, description, attributes FROM variables "
                    "ORDER BY rowid")]

    @staticmethod
    def runs(con: sqlite3.Connection) -> list[tuple[int | str, int, float | None, float | None]]:
        """``(proposal, run, start_time, added_at)`` of every run, by proposal and run."""
        out = []
        for p, r, st, added in con.execute(
                "SELECT proposal, run, start_time, added_at FROM run_info ORDER BY proposal, run"):
            if p is None or r is None:
                continue
            out.append((normalize_proposal(p if isinstance(p, int) else str(p)), int(r),
                        None if st is None else float(st),
                        None if added is None else float(added)))
        return out

    @staticmethod
    def cells(con: sqlite3.Connection, names: list[str] | None = None,
              runs: tuple[int, int] | None = None) -> Iterator[DamnitCell]:
        """Every stored value (the latest version of each run and variable), by proposal, run
        and name; only ``names`` if given, only runs ``lo <= run <= hi`` for ``runs=(lo, hi)``."""
        sql = ("SELECT proposal, run, name, value, timestamp, summary_type, summary_method, "
               "attributes, provenance FROM run_variables rv WHERE version = (SELECT max(version) "
               "FROM run_variables WHERE proposal = rv.proposal AND run = rv.run AND "
               "name = rv.name)")
        args: list = []
        if names is not None:
            sql += f" AND name IN ({', '.join('?' * len(names))})"
            args = list(names)
        if runs is not None:
            sql += " AND run BETWEEN ? AND ?"
            args += [int(runs[0]), int(runs[1])]
        sql += " ORDER BY proposal, run, name"
        for p, r, name, value, ts, st, sm, attrs, prov in con.execute(sql, args):
            if p is None or r is None:
                continue
            yield DamnitCell(normalize_proposal(p if isinstance(p, int) else str(p)), int(r),
                             name, value, None if ts is None else float(ts), st or None,
                             sm or None, _loads(attrs), prov)

    @staticmethod
    def time_comments(con: sqlite3.Connection) -> list[tuple[float, str]]:
        """``(timestamp, text)`` of the standalone comments, oldest first."""
        return [(float(ts), str(c)) for ts, c in con.execute(
            "SELECT timestamp, comment FROM time_comments ORDER BY timestamp, rowid")
            if ts is not None and c is not None]

    def run_file(self, proposal: int | str, run: int) -> Path:
        """``extracted_data/p<P>_r<R>.h5`` (may not exist)."""
        return self.dir.run_file(proposal, run)

    @property
    def zulip_cfg(self) -> Path:
        """DAMNIT's logbook set-up, ``zulip.cfg`` beside ``context.py`` (may not exist)."""
        return self.path / "zulip.cfg"
