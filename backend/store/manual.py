"""Manual columns: the part of the run table people fill in by hand (sample, detector distance,
"good run?"...), typed, with units, and with every edit kept.

A manual column has a ``type`` (:data:`COLUMN_TYPES`), optional ``units`` (normalised with pint),
``choices`` (for ``choice``), a ``title``, a ``description`` and ``carry_over`` ("auto-pilot": a
new run starts with the previous run's value, marked as carried over until someone confirms or
changes it). Definitions live in ``manual_columns``; current values are ordinary rows of
``run_values`` (so every reader of the table sees them), with attributes ``{"manual": true,
"units", "carried", "by", "at", "via"}``; every edit is a row of ``manual_history``.

Edits are short ``BEGIN IMMEDIATE`` transactions through the database's engine, like comments:
safe beside the running backend. Values are parsed first; a value that does not fit is refused
with :class:`ManualError` and nothing is written. A closed proposal (``amore-proto close``,
:func:`backend.store.trust.is_closed`) has a read-only table: every change is refused with
:class:`ManualError` saying so (and new runs get no carried-over values).
"""
from __future__ import annotations

import getpass
import json
import math
import re
import socket
import time
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from backend.store.schema import (manual_columns_table as mc, manual_history_table as mh,
                                  run_values_table, runs_table, variables_table)
from backend.store.writer import MANUAL_SUMMARY_TYPES, is_closed, manual_value_attributes
from backend.units import UnitError, convert, normalise_units, parse_quantity
from backend.vocab import MANUAL_COLUMN_TYPES, RunStatus, normalize_proposal

#: Types of manual columns (defined in :mod:`backend.vocab`).
COLUMN_TYPES = MANUAL_COLUMN_TYPES
#: Where an edit came from (``manual_history.via``).
EDIT_SOURCES = ("gui", "web", "cli", "api", "carry-over", "import")

TRUE_WORDS = {"yes", "y", "true", "t", "1", "on", "✓", "x"}
FALSE_WORDS = {"no", "n", "false", "f", "0", "off", "✗"}
CLEAR_WORDS = {"", "none", "null", "-"}
#: ``manual_history.text`` of an edit that confirmed a carried-over value (value unchanged)
CONFIRMED_TEXT = "(confirmed)"
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RESERVED = {"run", "proposal", "and", "or", "not", "in", "none", "true", "false", "has",
             "failed", "start", "added", "comment", "status"}


class ManualError(ValueError):
    """A manual column or value that cannot be accepted; the message says why (for people)."""


def this_author() -> str:
    """``user@host`` of this process (who made an edit)."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name in the environment
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@dataclass
class ManualColumn:
    """A manual column definition (a row of ``manual_columns``)."""

    id: int
    name: str
    type: str
    title: str | None = None
    units: str | None = None
    choices: list[str] = field(default_factory=list)
    description: str | None = None
    carry_over: bool = False
    position: int = 0
    deleted_at: float | None = None

    @property
    def summary_type(self) -> str:
        """How values are stored in ``run_values`` (``bool``, ``number`` or ``string``)."""
        return MANUAL_SUMMARY_TYPES.get(self.type, "string")

    @property
    def label(self) -> str:
        return self.title or self.name

    def describe_type(self) -> str:
        """``"number in µm"``, ``"choice of a, b"``... (for messages)."""
        if self.type == "choice":
            return "one of " + ", ".join(self.choices)
        if self.type == "boolean":
            return "yes or no"
        return self.type + (f" in {self.units}" if self.units else "")

    def parse(self, raw) -> int | float | str | None:
        """The value to store for ``raw`` (text typed by someone, or a Python bool/int/float
        from an editor); None clears the cell.

        ``boolean``: yes/no, true/false, 1/0, on/off -> 1/0. ``integer``/``number``: a number,
        optionally with units that are converted to the column's (``"1.5 mm"`` into a µm column
        gives 1500.0). ``choice``: one of the choices (case-insensitive; stored as defined).
        Raises :class:`ManualError` with a message naming the column and what it takes.
        """
        if raw is None:
            return None
        if isinstance(raw, float) and math.isnan(raw):
            return None
        text = raw if isinstance(raw, str) else None
        if text is not None:
            text = text.strip()
            if text.lower() in CLEAR_WORDS and self.type != "string":
                return None
            if text == "" and self.type == "string":
                return None
        where = f"column {self.name!r} takes {self.describe_type()}"
        if self.type == "boolean":
            if isinstance(raw, bool):
                return int(raw)
            if isinstance(raw, (int, float)) and raw in (0, 1):
                return int(raw)
            if text is not None and text.lower() in TRUE_WORDS:
                return 1
            if text is not None and text.lower() in FALSE_WORDS:
                return 0
            raise ManualError(f"{raw!r} is not yes/no: {where}")
        if self.type in ("integer", "number"):
            if isinstance(raw, bool):
                raise ManualError(f"{raw!r} is not a number: {where}")
            if isinstance(raw, (int, float)):
                x = float(raw)
            else:
                try:
                    x, units = parse_quantity(text)
                except UnitError:
                    raise ManualError(f"{text!r} is not a number: {where}") from None
                if units is not None:
                    if self.units is None:
                        raise ManualError(f"{text!r} has units, but column {self.name!r} has "
                                          f"none: give a plain number")
                    try:
                        x = convert(x, units, self.units)
                    except UnitError as e:
                        raise ManualError(f"{text!r} cannot go into column {self.name!r} "
                                          f"({self.units}): {e}") from None
            if not math.isfinite(x):
                raise ManualError(f"{raw!r} is not a finite number: {where}")
            if self.type == "integer":
                r = round(x)
                if abs(x - r) > 1e-9 * max(1.0, abs(x)):
                    raise ManualError(f"{raw!r} is not a whole number: {where}")
                return int(r)
            return x
        s = str(raw).strip() if text is None else text
        if self.type == "choice":
            for c in self.choices:
                if c.lower() == s.lower():
                    return c
            raise ManualError(f"{s!r} is not a choice of column {self.name!r}: "
                              f"use one of {', '.join(self.choices)}")
        return s

    def format(self, value) -> str:
        """Text of a stored value (``"1500 µm"``, ``"yes"``, ``""`` for None)."""
        if value is None:
            return ""
        if self.type == "boolean":
            return "yes" if value else "no"
        if self.type in ("integer", "number"):
            v = float(value)
            t = str(int(v)) if v.is_integer() and abs(v) < 1e15 else f"{v:.6g}"
            return t + (f" {self.units}" if self.units else "")
        return str(value)

    def to_dict(self) -> dict:
        return {"name": self.name, "title": self.title, "type": self.type, "units": self.units,
                "choices": list(self.choices), "description": self.description,
                "carry_over": self.carry_over, "deleted": self.deleted_at is not None}


def _col_from_row(r) -> ManualColumn:
    return ManualColumn(id=r["id"], name=r["name"], type=r["type"], title=r["title"],
                        units=r["units"], choices=json.loads(r["choices"] or "[]"),
                        description=r["description"], carry_over=bool(r["carry_over"]),
                        position=r["position"], deleted_at=r["deleted_at"])


@dataclass
class Edit:
    """One stored edit: what :meth:`ManualStore.set_values` wrote for one run."""

    proposal: int | str
    run: int
    name: str
    value: int | float | str | None
    carried: bool = False


class ManualStore:
    """Manual columns of one database (a :class:`backend.store.writer.RunDB`).

    Every method is one short transaction; safe from several processes at once.
    """

    def __init__(self, db):
        self.db = db
        self.engine = db.engine

    def check_open(self) -> None:
        """Raise :class:`ManualError` if the proposal is closed (its table is read-only)."""
        if is_closed(self.db):
            raise ManualError(f"proposal {self.db.proposal} is closed: its table is read-only, "
                              f"manual values and columns cannot be changed. Run "
                              f"'amore-proto reopen' first.")

    # -- columns ---------------------------------------------------------------------------
    def columns(self, include_deleted: bool = False) -> list[ManualColumn]:
        """Manual columns in display order (deleted ones last, if asked for)."""
        q = sa.select(mc).order_by(mc.c.deleted_at.is_not(None), mc.c.position, mc.c.id)
        if not include_deleted:
            q = q.where(mc.c.deleted_at.is_(None))
        with self.engine.connect().execution_options(readonly=True) as conn:
            return [_col_from_row(r) for r in conn.execute(q).mappings()]

    def column(self, name: str, include_deleted: bool = False) -> ManualColumn:
        """A column by name (or title, case-insensitive). Raises :class:`ManualError`."""
        cols = self.columns(include_deleted=include_deleted)
        for c in cols:
            if c.name == name:
                return c
        for c in cols:
            if (c.title or "").lower() == name.lower() or c.name.lower() == name.lower():
                return c
        known = ", ".join(c.name for c in cols if c.deleted_at is None) or "none yet"
        raise ManualError(f"no manual column {name!r} (manual columns: {known})")

    def _check_name(self, conn, name: str, exclude_id: int | None = None) -> None:
        if not _NAME_RE.match(name or ""):
            raise ManualError(f"{name!r} cannot be a column name: use letters, digits and _, "
                              f"not starting with a digit (a title may be any text)")
        if name.lower() in _RESERVED:
            raise ManualError(f"{name!r} is a reserved word; choose another name")
        if conn.execute(sa.select(variables_table.c.name)
                        .where(variables_table.c.name == name)).first():
            raise ManualError(f"{name!r} is a variable of the context file; choose another name")
        row = conn.execute(sa.select(mc.c.id, mc.c.deleted_at).where(mc.c.name == name)).first()
        if row is not None and row[0] != exclude_id:
            if row[1] is not None:
                raise ManualError(f"a deleted manual column is called {name!r}: restore it with "
                                  f"'amore-proto column restore {name}' or choose another name")
            raise ManualError(f"a manual column {name!r} exists already")

    def add_column(self, name: str, type: str, title: str | None = None,
                   units: str | None = None, choices=None, description: str | None = None,
                   carry_over: bool = False) -> ManualColumn:
        """Create a manual column. ``choices``: list or comma-separated text (``choice`` only).

        Raises :class:`ManualError` for a bad name/type, unknown units (pint's message),
        units on a non-numeric column, or a choice column without choices, and on a closed
        proposal.
        """
        self.check_open()
        type = (type or "").strip().lower()
        aliases = {"bool": "boolean", "int": "integer", "float": "number", "str": "string",
                   "text": "string"}
        type = aliases.get(type, type)
        if type not in COLUMN_TYPES:
            raise ManualError(f"unknown column type {type!r}: use one of {', '.join(COLUMN_TYPES)}")
        try:
            units = normalise_units(units)
        except UnitError as e:
            raise ManualError(str(e)) from None
        if units and type not in ("integer", "number"):
            raise ManualError(f"only integer and number columns have units, not {type}")
        if isinstance(choices, str):
            choices = [c.strip() for c in choices.split(",")]
        choices = [c for c in (choices or []) if c]
        if type == "choice":
            if not choices:
                raise ManualError("a choice column needs choices, e.g. --choices good,bad")
            if len({c.lower() for c in choices}) != len(choices):
                raise ManualError("the choices must differ (case-insensitively)")
        elif choices:
            raise ManualError(f"only choice columns have choices, not {type}")
        with self.engine.begin() as conn:
            self._check_name(conn, name)
            pos = conn.execute(sa.select(sa.func.coalesce(sa.func.max(mc.c.position), 0))).scalar()
            res = conn.execute(mc.insert().values(
                name=name, title=title or None, type=type, units=units,
                choices=json.dumps(choices) if choices else None, description=description or None,
                carry_over=int(bool(carry_over)), position=pos + 1, created_at=time.time()))
            cid = res.inserted_primary_key[0]
        return self.column_by_id(cid)

    def column_by_id(self, cid: int) -> ManualColumn:
        with self.engine.connect().execution_options(readonly=True) as conn:
            r = conn.execute(sa.select(mc).where(mc.c.id == cid)).mappings().first()
        if r is None:
            raise ManualError(f"no manual column with id {cid}")
        return _col_from_row(r)

    def rename(self, name: str, new_name: str) -> ManualColumn:
        """Rename a column (its values and history follow). Raises :class:`ManualError`."""
        self.check_open()
        col = self.column(name)
        with self.engine.begin() as conn:
            self._check_name(conn, new_name, exclude_id=col.id)
            conn.execute(mc.update().where(mc.c.id == col.id).values(name=new_name))
            conn.execute(run_values_table.update().where(run_values_table.c.name == col.name)
                         .values(name=new_name, timestamp=time.time()))
        return self.column_by_id(col.id)

    def describe(self, name: str, *, title: str | None = None, description: str | None = None,
                 carry_over: bool | None = None, choices=None) -> ManualColumn:
        """Change title, description, carry-over or (for choice columns) add choices; None
        leaves a field as it is, ``""`` clears title/description. Removing a choice that is in
        use is refused, and so is any change on a closed proposal."""
        self.check_open()
        col = self.column(name)
        upd: dict = {}
        if title is not None:
            upd["title"] = title or None
        if description is not None:
            upd["description"] = description or None
        if carry_over is not None:
            upd["carry_over"] = int(bool(carry_over))
        if choices is not None:
            if col.type != "choice":
                raise ManualError(f"column {col.name!r} is a {col.type} column, without choices")
            if isinstance(choices, str):
                choices = [c.strip() for c in choices.split(",") if c.strip()]
            with self.engine.connect().execution_options(readonly=True) as conn:
                used = {r[0] for r in conn.execute(
                    sa.select(run_values_table.c.value).distinct()
                    .where(run_values_table.c.name == col.name))}
            missing = sorted(str(u) for u in used if u not in choices)
            if missing:
                raise ManualError(f"choices {', '.join(missing)} are in use in column "
                                  f"{col.name!r}; keep them")
            upd["choices"] = json.dumps(list(choices))
        if upd:
            with self.engine.begin() as conn:
                conn.execute(mc.update().where(mc.c.id == col.id).values(**upd))
                # touch the values so table readers notice the new definition
                conn.execute(run_values_table.update().where(
                    run_values_table.c.name == col.name).values(timestamp=time.time()))
        return self.column_by_id(col.id)

    def delete(self, name: str) -> ManualColumn:
        """Remove a column from the table; its history stays and :meth:`restore` brings it
        back with its last values."""
        self.check_open()
        col = self.column(name)
        with self.engine.begin() as conn:
            conn.execute(mc.update().where(mc.c.id == col.id).values(deleted_at=time.time()))
            conn.execute(run_values_table.delete().where(run_values_table.c.name == col.name))
        return self.column_by_id(col.id)

    def restore(self, name: str) -> ManualColumn:
        """Bring back a deleted column and each run's last value from its history."""
        self.check_open()
        cols = [c for c in self.columns(include_deleted=True)
                if c.deleted_at is not None and c.name == name]
        if not cols:
            raise ManualError(f"no deleted manual column {name!r}")
        col = cols[-1]
        with self.engine.begin() as conn:
            self._check_name(conn, col.name, exclude_id=col.id)
            conn.execute(mc.update().where(mc.c.id == col.id).values(deleted_at=None))
            newest = (sa.select(sa.func.max(mh.c.id).label("id"))
                      .where(mh.c.column_id == col.id).group_by(mh.c.proposal, mh.c.run)
                      .subquery())
            last = conn.execute(sa.select(mh.c.proposal, mh.c.run, mh.c.value, mh.c.carried,
                                          mh.c.author, mh.c.timestamp, mh.c.via)
                                .join(newest, newest.c.id == mh.c.id)).all()
            col.deleted_at = None
            rows = [self._value_row(col, p, r, v, bool(car), a, ts, via)
                    for p, r, v, car, a, ts, via in last if v is not None]
            if rows:
                conn.execute(_UPSERT, rows)
        return col

    # -- values ----------------------------------------------------------------------------
    def _value_row(self, col, proposal, run, value, carried, author, ts, via) -> dict:
        return {"p": proposal, "r": run, "n": col.name, "v": value, "st": col.summary_type,
                "a": manual_value_attributes(col.units, carried, author, ts, via),
                "t": time.time()}

    def set_values(self, runs, name: str, raw, *, via: str = "cli", author: str | None = None,
                   proposal: int | str | None = None, confirm_only: bool = False,
                   create_runs: bool = False) -> list[Edit]:
        """Set column ``name`` of each run in ``runs`` to ``raw`` (parsed by the column's type,
        see :meth:`ManualColumn.parse`; None or "" clears) in one transaction, with a history
        entry per run. ``confirm_only``: keep each run's value and drop its "carried over" mark.

        ``proposal`` defaults to the database's. Raises :class:`ManualError` (nothing written)
        for a value that does not fit, an unknown column, or runs not in the run table yet
        (new runs get carried-over values instead, see :meth:`carry_over`) unless
        ``create_runs`` (imports: such runs are recorded as pending), and on a closed proposal
        (its table is read-only).
        """
        if via not in EDIT_SOURCES:
            raise ValueError(f"unknown edit source {via!r}")
        self.check_open()
        col = self.column(name)
        try:
            proposal = self.db.proposal if proposal is None else normalize_proposal(proposal)
        except ValueError as e:
            raise ManualError(str(e)) from None
        if proposal is None:
            raise ManualError("the database has no proposal number")
        runs = [int(r) for r in runs]
        if not runs:
            raise ManualError("no runs given")
        author = author or this_author()
        value = None if confirm_only else col.parse(raw)
        now = time.time()
        edits = []
        with self.engine.begin() as conn:
            known = {r for (r,) in conn.execute(
                sa.select(runs_table.c.run).where(runs_table.c.proposal == proposal,
                                                  runs_table.c.run.in_(runs)))}
            unknown = [r for r in runs if r not in known]
            if unknown and create_runs:
                conn.execute(_NEW_RUN, [{"p": proposal, "r": r, "t": now} for r in unknown])
            elif unknown:
                raise ManualError(f"run(s) {', '.join(map(str, unknown[:10]))}"
                                  f"{'...' if len(unknown) > 10 else ''} of proposal {proposal} "
                                  f"are not in the run table yet")
            if confirm_only:
                current = dict(conn.execute(sa.select(run_values_table.c.run,
                                                      run_values_table.c.value).where(
                    run_values_table.c.proposal == proposal, run_values_table.c.name == col.name,
                    run_values_table.c.run.in_(runs))).all())
            for run in runs:
                v = current.get(run) if confirm_only else value
                if confirm_only and v is None:
                    continue
                conn.execute(mh.insert().values(
                    column_id=col.id, proposal=proposal, run=run, value=v,
                    text=(CONFIRMED_TEXT if confirm_only else
                          (raw if isinstance(raw, str) else None)),
                    carried=0, author=author, timestamp=now, via=via))
                if v is None:
                    conn.execute(run_values_table.delete().where(
                        run_values_table.c.proposal == proposal, run_values_table.c.run == run,
                        run_values_table.c.name == col.name))
                else:
                    conn.execute(_UPSERT, [self._value_row(col, proposal, run, v, False, author,
                                                           now, via)])
                edits.append(Edit(proposal, run, col.name, v))
        return edits

    def confirm(self, runs, name: str, **kw) -> list[Edit]:
        """Confirm carried-over values (see :meth:`set_values` ``confirm_only``)."""
        return self.set_values(runs, name, None, confirm_only=True, **kw)

    def carry_over(self, proposal: int | str, run: int) -> list[Edit]:
        """Auto-pilot for a new run: each carry-over column without a value in ``run`` gets
        the value of the nearest earlier run that has one, marked as carried over (history
        entry ``via="carry-over"``). Returns what was written (nothing on a closed proposal).
        The backend does it when it records a new run (:meth:`backend.store.writer.RunDB.
        carry_over`)."""
        return [Edit(proposal, run, name, value, carried=True)
                for name, value in self.db.carry_over(proposal, run)]

    def values(self, name: str) -> dict[tuple[int, int], dict]:
        """Current values of a column: ``(proposal, run) -> {"value", "carried", "by", "at",
        "via"}``."""
        col = self.column(name)
        with self.engine.connect().execution_options(readonly=True) as conn:
            rows = conn.execute(sa.select(run_values_table.c.proposal, run_values_table.c.run,
                                          run_values_table.c.value,
                                          run_values_table.c.attributes).where(
                run_values_table.c.name == col.name)).all()
        out = {}
        for p, r, v, a in rows:
            a = json.loads(a) if a else {}
            out[(p, r)] = {"value": v, "carried": bool(a.get("carried")), "by": a.get("by"),
                           "at": a.get("at"), "via": a.get("via")}
        return out

    def run_values(self, proposal: int | str, run: int) -> dict[str, object]:
        """Current manual values of one run: column name -> stored value (columns without a
        value are absent). Bool columns give True/False."""
        return self.db.manual_values(proposal, run)[1]

    def history(self, run: int | None, name: str, proposal: int | str | None = None,
                include_deleted: bool = True) -> list[dict]:
        """Edits of one cell (or of the whole column with ``run=None``), oldest first: dicts
        with ``run``, ``value``, ``text``, ``carried``, ``author``, ``timestamp``, ``via``,
        ``display`` (the value as text with units). Works for deleted columns too."""
        col = self.column(name, include_deleted=include_deleted)
        q = sa.select(mh).where(mh.c.column_id == col.id).order_by(mh.c.id)
        if run is not None:
            q = q.where(mh.c.run == int(run))
        if proposal is not None:
            q = q.where(mh.c.proposal == proposal)
        with self.engine.connect().execution_options(readonly=True) as conn:
            rows = [dict(r) for r in conn.execute(q).mappings()]
        for r in rows:
            r["carried"] = bool(r["carried"])
            r["display"] = col.format(r["value"]) if r["value"] is not None else "(cleared)"
        return rows

    def edits_since(self, last_id: int, exclude_via=()) -> tuple[int, list[tuple[int, int, str]]]:
        """Edits with a history id above ``last_id``: ``(newest id, [(proposal, run, column
        name), ...])`` (de-duplicated; edits whose source is in ``exclude_via`` left out, but
        counted in the newest id)."""
        with self.engine.connect().execution_options(readonly=True) as conn:
            rows = conn.execute(sa.select(mh.c.id, mh.c.proposal, mh.c.run, mc.c.name, mh.c.via,
                                          mh.c.text)
                                .join(mc, mc.c.id == mh.c.column_id)
                                .where(mh.c.id > last_id).order_by(mh.c.id)).all()
        if not rows:
            return last_id, []
        return rows[-1][0], list(dict.fromkeys((p, r, n) for _, p, r, n, via, text in rows
                                               if via not in exclude_via
                                               and text != CONFIRMED_TEXT))

    def last_edit_id(self) -> int:
        with self.engine.connect().execution_options(readonly=True) as conn:
            return conn.execute(sa.select(sa.func.coalesce(sa.func.max(mh.c.id), 0))).scalar()


def _upsert():
    """Store a manual value, replacing the cell's current one. Parameters: p, r, n, v, st, a, t
    (proposal, run, name, value, summary_type, attributes, timestamp)."""
    ins = sqlite_insert(run_values_table).values(
        proposal=sa.bindparam("p"), run=sa.bindparam("r"), name=sa.bindparam("n"),
        value=sa.bindparam("v"), summary_type=sa.bindparam("st"), attributes=sa.bindparam("a"),
        timestamp=sa.bindparam("t"))
    return ins.on_conflict_do_update(
        index_elements=[run_values_table.c.proposal, run_values_table.c.run,
                        run_values_table.c.name],
        set_={n: ins.excluded[n] for n in ("value", "summary_type", "attributes", "timestamp")})


def _new_run():
    """Record a run as pending unless it exists (imports). Parameters: p, r, t (added_at)."""
    ins = sqlite_insert(runs_table).values(
        proposal=sa.bindparam("p"), run=sa.bindparam("r"), added_at=sa.bindparam("t"),
        status=RunStatus.PENDING.value)
    return ins.on_conflict_do_nothing(index_elements=[runs_table.c.proposal, runs_table.c.run])


_UPSERT = _upsert()
_NEW_RUN = _new_run()

__all__ = ["COLUMN_TYPES", "EDIT_SOURCES", "Edit", "ManualColumn", "ManualError", "ManualStore",
           "this_author"]
