"""Which stored values are stale, why, and how each was made: reads of ``runs.sqlite`` with the
standard library's :mod:`sqlite3` (no user code runs, nothing is written), shared by the Qt GUI
and the browser (:mod:`amore_gui.application.dbread`), ``amore-proto show``/``run-info``/
``reprocess`` and :mod:`amore.api`.

A value is *stale* when what made it differs from what would make it now:

``code`` (:data:`CODE`)
    its code digest is not the current one of its variable (``current_code``, recorded when
    the context file was last loaded): the variable's function, its decorator arguments that
    change what is stored, a module-level name it reads (through helpers too), its group's
    fields, or -- recursively -- a variable it takes through ``var#`` changed;
``manual`` (:data:`MANUAL`)
    a manual value it read (directly or through its inputs) was edited since;
``data`` (:data:`DATA`)
    the run's data changed after it was computed: the names, sizes or modification times of
    the raw files (every value) or of the proc files (values of ``data="proc"`` variables),
    as AMORE last saw them (``run_data``: updated by every evaluation and by
    ``amore-proto reprocess all``);
``unknown`` (:data:`UNKNOWN`)
    the code that made it is not known: stored before AMORE recorded provenance by an
    earlier version of the context file, imported from DAMNIT while the context file has
    changed since, or an error written for a Slurm job that failed.

Values of variables no longer in the context file, manual values and built-in cells are never
stale. Everything here is a few indexed queries (values whose code differs from the current one
are found through the ``(name, code)`` index without reading the others).
"""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

#: ``metadata`` key: which context file ``current_code`` describes (JSON: ``key``, ``sha``,
#: ``watched`` {path: sha}, ``mtime``, ``loaded_at``; written by
#: :func:`backend.store.provenance.record_context`).
STATE_KEY = "context_state"

#: Reasons a value is stale (bits, combined with ``|``).
CODE, MANUAL, DATA, UNKNOWN = 1, 2, 4, 8
REASON_NAMES = {CODE: "code", MANUAL: "manual", DATA: "data", UNKNOWN: "unknown"}

_CURRENT_SQL = ("SELECT c.name, c.code, c.data, c.manual, c.deps, v.digest "
                "FROM current_code c LEFT JOIN code_versions v ON v.id = c.code")
_DIFFERENT_SQL = ("SELECT proposal, run, code, evaluation FROM run_values "
                  "WHERE name = ? AND (code < ? OR code > ?)")
_UNKNOWN_SQL = "SELECT proposal, run, code, evaluation FROM run_values WHERE name = ? AND code IS NULL"
_RUN_SQL = " AND proposal = ? AND run = ?"
_DATA_SQL = (
    "SELECT e.id, e.proposal, e.run, e.raw_data <> r.digest, e.proc_data <> p.digest, "
    "r.files, p.files, e.origin FROM evaluations e "
    "LEFT JOIN run_data r ON r.proposal = e.proposal AND r.run = e.run AND r.kind = 'raw' "
    "LEFT JOIN run_data p ON p.proposal = e.proposal AND p.run = e.run AND p.kind = 'proc' ")


@dataclass
class Current:
    """The context file's code as last loaded: name -> code id, data kind, manual columns read,
    direct ``var#`` dependencies, digest. ``signature``: changes when any of it does."""

    code: dict[str, int]
    data: dict[str, str]
    manual: dict[str, list[str]]
    deps: dict[str, list[str]]
    digest: dict[str, str]
    signature: tuple = ()


def current(con: sqlite3.Connection) -> Current:
    """The recorded current code (empty before the first load, or for a database older than
    revision 0008)."""
    cur = Current({}, {}, {}, {}, {})
    try:
        rows = con.execute(_CURRENT_SQL).fetchall()
    except sqlite3.OperationalError:
        return cur
    for name, code, data, manual, deps, dig in rows:
        cur.code[name] = code
        cur.data[name] = data or "raw"
        cur.manual[name] = json_or(manual, [])
        cur.deps[name] = json_or(deps, [])
        cur.digest[name] = dig
    cur.signature = tuple(sorted(cur.code.items()))
    return cur


def recorded_state(con: sqlite3.Connection) -> dict | None:
    """What the last load of the context file recorded under :data:`STATE_KEY` (``key``,
    ``sha``: SHA-256 of the context file...), None if nothing (or a database older than
    revision 0008)."""
    try:
        row = con.execute("SELECT value FROM metadata WHERE key = ?", (STATE_KEY,)).fetchone()
    except sqlite3.OperationalError:
        return None
    state = json_or(row[0] if row else None, None)
    return state if isinstance(state, dict) else None


def manual_column_names(con: sqlite3.Connection) -> list[str]:
    """Names of the manual columns, in display order (as
    :meth:`backend.store.writer.RunDB.manual_columns`)."""
    return [n for (n,) in con.execute("SELECT name FROM manual_columns WHERE deleted_at IS NULL "
                                      "ORDER BY position, id")]


def current_signature(con: sqlite3.Connection) -> tuple:
    """A cheap signature of the recorded current code (to notice that it changed)."""
    try:
        return tuple(con.execute("SELECT name, code FROM current_code ORDER BY name"))
    except sqlite3.OperationalError:
        return ()


def json_or(text: str | None, default):
    """The JSON text of a database column decoded, or ``default`` when it is empty or not
    JSON."""
    if not text:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


@dataclass
class StaleCell:
    """One stale value: ``reasons`` (bits :data:`CODE` | :data:`MANUAL` | ...) and ``text``
    (one line per reason, for people)."""

    reasons: int
    text: str


@dataclass
class BulkStale:
    """A variable most of whose values are stale (listing them one by one would cost more than
    it tells): every value of it is stale except those of the runs in ``fresh``; ``reasons``
    and ``text`` as for :class:`StaleCell` (from one of its stale values)."""

    reasons: int
    text: str
    fresh: set


#: More stale values than this of one variable are described in bulk (:class:`BulkStale`).
BULK_MIN = 500


class Staleness:
    """The stale values of a database (or of one run), with their reasons explained; built by
    :func:`stale_cells`. ``cells``: ``(proposal, run, name) -> StaleCell``; ``bulk``:
    ``name -> BulkStale`` for variables with more than :data:`BULK_MIN` stale values (their
    other reasons are still in ``cells``). :meth:`get` answers for any one value."""

    def __init__(self, con: sqlite3.Connection, context_name: str = "context.py",
                 cur: Current | None = None):
        self.con = con
        self.context_name = context_name
        self.cur = current(con) if cur is None else cur
        self.cells: dict[tuple, StaleCell] = {}
        self.bulk: dict[str, BulkStale] = {}
        self._explained: dict[tuple[str, int], str] = {}
        self._parts: dict[int, tuple[str, str, dict | None]] = {}
        self._origin: dict[int, str] = {}

    # -- code ------------------------------------------------------------------------------
    def _code_parts(self, ids: Iterable[int]) -> None:
        todo = [i for i in set(ids) if i is not None and i not in self._parts]
        for k in range(0, len(todo), 500):
            part = todo[k:k + 500]
            q = ("SELECT id, digest, name, parts FROM code_versions WHERE id IN ("
                 + ",".join("?" * len(part)) + ")")
            for i, dig, name, parts in self.con.execute(q, part):
                self._parts[i] = (dig, name, json_or(parts, None))

    def explain_code(self, name: str, old_id: int) -> str:
        """Why the code of ``name`` that made a value (``old_id``) is not the current one."""
        key = (name, old_id)
        got = self._explained.get(key)
        if got is None:
            self._code_parts([old_id, self.cur.code.get(name)])
            old = (self._parts.get(old_id) or (None, None, None))[2]
            new = (self._parts.get(self.cur.code.get(name)) or (None, None, None))[2]
            reasons = self._diff(name, old, new, depth=0)
            got = self._explained[key] = "; ".join(reasons) or f"the code of {name} changed"
        return got

    def _diff(self, name: str, old: dict | None, new: dict | None, depth: int,
              through: str = "") -> list[str]:
        via = f" (through input {through})" if through else ""
        if not old or not new:
            return [f"the code of {name} changed{via}"]
        out = []
        if old.get("function") != new.get("function"):
            out.append(f"function {name} changed in {self.context_name}{via}")
        if old.get("arguments") != new.get("arguments"):
            out.append(f"the arguments of {name} (data, summary, units, transient or its "
                       f"inputs) changed{via}")
        if old.get("fields") != new.get("fields"):
            out.append(f"the fields of the group of {name} changed{via}")
        if old.get("class") != new.get("class"):
            out.append(f"the group class of {name} changed{via}")
        if old.get("column") != new.get("column"):
            out.append(f"the definition of metadata column {name} changed in amore.toml")
        on, nn = old.get("names") or {}, new.get("names") or {}
        changed = [k for k in sorted(set(on) | set(nn)) if on.get(k) != nn.get(k)]
        for k in changed:
            if any(m.startswith(k + ".") for m in changed):
                continue      # a watched module: the names in it that changed say more
            where = self.context_name if "." not in k else f"module {k.rsplit('.', 1)[0]}"
            what = "now read" if k not in on else "no longer read" if k not in nn else "changed"
            out.append(f"{k.rsplit('.', 1)[-1]} {what} in {where}{via}")
        oi, ni = old.get("inputs") or {}, new.get("inputs") or {}
        for dep in sorted(set(oi) | set(ni)):
            if oi.get(dep) == ni.get(dep):
                continue
            if dep not in oi or dep not in ni or depth >= 4:
                out.append(f"input {dep} changed{via}")
                continue
            old_dep = self._parts_by_digest(oi[dep])
            new_dep = self._parts_by_digest(ni[dep])
            out += self._diff(dep, old_dep, new_dep, depth + 1, through or dep)
        return list(dict.fromkeys(out))

    def _parts_by_digest(self, dig: str) -> dict | None:
        row = self.con.execute("SELECT id, digest, name, parts FROM code_versions "
                               "WHERE digest = ?", (dig,)).fetchone()
        if row is None:
            return None
        self._parts[row[0]] = (row[1], row[2], json_or(row[3], None))
        return self._parts[row[0]][2]

    def explain_unknown(self, evaluation: int | None) -> str:
        if evaluation is not None and self._origin.get(evaluation) is None:
            row = self.con.execute("SELECT origin FROM evaluations WHERE id = ?",
                                   (evaluation,)).fetchone()
            self._origin[evaluation] = row[0] if row else ""
        if evaluation is not None and self._origin.get(evaluation) == "damnit":
            return (f"imported from DAMNIT, and {self.context_name} has changed since the "
                    f"import")
        return ("the code that made it is not known (stored before AMORE recorded "
                "provenance, or an error of a job that failed)")

    def get(self, proposal, run: int, name: str) -> StaleCell | None:
        """Whether the value ``name`` of a run (which must exist) is stale, and why."""
        cell = self.cells.get((proposal, run, name))
        b = self.bulk.get(name)
        if b is None or (proposal, run) in b.fresh:
            return cell
        if cell is None:
            return StaleCell(b.reasons, b.text)
        return StaleCell(cell.reasons | b.reasons, f"{b.text}; {cell.text}")

    def count(self, have: dict[str, int] | None = None) -> int:
        """How many values are stale; ``have``: name -> number of values of it (needed for the
        variables described in bulk)."""
        n = len([k for k in self.cells if k[2] not in self.bulk])
        for name, b in self.bulk.items():
            n += max(0, (have or {}).get(name, 0) - len(b.fresh))
            n += len([k for k in self.cells if k[2] == name and k[:2] in b.fresh])
        return n

    def keys(self, values: Iterable[tuple]) -> list[tuple]:
        """The stale ones among ``values`` (``(proposal, run, name)`` of stored values)."""
        return [k for k in values if self.get(*k) is not None]

    # -- building --------------------------------------------------------------------------
    def add(self, key: tuple, bit: int, text: str) -> None:
        cell = self.cells.get(key)
        if cell is None:
            self.cells[key] = StaleCell(bit, text)
        elif not cell.reasons & bit:
            cell.reasons |= bit
            cell.text = f"{cell.text}; {text}"


def stale_cells(con: sqlite3.Connection, proposal=None, run=None,
                context_name: str = "context.py", cur: Current | None = None) -> Staleness:
    """The stale values of the database on ``con`` (only run ``run`` of ``proposal`` if given),
    their reasons explained (see the module docstring). ``context_name``: the context file's
    name in the explanations; ``cur``: the :func:`current` code if already read. Never raises
    for a database without provenance (nothing is stale then)."""
    st = Staleness(con, context_name, cur)
    cur = st.cur
    if not cur.code:
        return st
    one = () if run is None else (proposal, run)
    if one:     # one run: its few hundred values, compared here
        rows = con.execute("SELECT name, code, evaluation FROM run_values WHERE proposal = ? "
                           "AND run = ?", one).fetchall()
        for name, code, ev in rows:
            now = cur.code.get(name)
            if now is None:
                continue
            if code is None:
                st.add((proposal, run, name), UNKNOWN, st.explain_unknown(ev))
            elif code != now:
                st.add((proposal, run, name), CODE, st.explain_code(name, code))
    else:       # every run: through the (name, code) index, only the values that differ
        limit = f" LIMIT {BULK_MIN + 1}"
        for name, code in cur.code.items():
            diff = con.execute(_DIFFERENT_SQL + limit, (name, code, code)).fetchall()
            unknown = con.execute(_UNKNOWN_SQL + limit, (name,)).fetchall()
            if len(diff) + len(unknown) > BULK_MIN:
                fresh = set(con.execute("SELECT proposal, run FROM run_values WHERE name = ? "
                                        "AND code = ?", (name, code)))
                bits, texts = 0, []
                if diff:
                    bits |= CODE
                    texts.append(st.explain_code(name, diff[0][2]))
                if unknown:
                    bits |= UNKNOWN
                    texts.append(st.explain_unknown(unknown[0][3]))
                st.bulk[name] = BulkStale(bits, "; ".join(texts), fresh)
                continue
            for p, r, old, ev in diff:
                st.add((p, r, name), CODE, st.explain_code(name, old))
            for p, r, _old, ev in unknown:
                st.add((p, r, name), UNKNOWN, st.explain_unknown(ev))
    _manual_stale(st, one)
    _data_stale(st, one)
    return st


def _manual_values(con, one: tuple) -> tuple[dict, set[str]]:
    """(proposal, run, column) -> current manual value (booleans as bool); the column names."""
    try:
        cols = dict(con.execute("SELECT name, type FROM manual_columns WHERE deleted_at IS NULL"))
    except sqlite3.OperationalError:
        return {}, set()
    if not cols:
        return {}, set()
    q = (f"SELECT proposal, run, name, value FROM run_values WHERE name IN "
         f"({','.join('?' * len(cols))})" + (_RUN_SQL if one else ""))
    out = {}
    for p, r, n, v in con.execute(q, tuple(cols) + one):
        if cols[n] == "boolean" and v is not None:
            v = bool(v)
        out[(p, r, n)] = v
    return out, set(cols)


def _same(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return (None if a is None else bool(a)) == (None if b is None else bool(b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return a == b


def _manual_stale(st: Staleness, one: tuple) -> None:
    readers = [n for n, cols in st.cur.manual.items() if cols]
    if not readers:
        return
    values, _cols = _manual_values(st.con, one)
    q = (f"SELECT proposal, run, name, inputs FROM run_values WHERE name IN "
         f"({','.join('?' * len(readers))}) AND inputs IS NOT NULL" + (_RUN_SQL if one else ""))
    for p, r, name, inputs in st.con.execute(q, tuple(readers) + one):
        given = (json_or(inputs, {}) or {}).get("manual")
        if not isinstance(given, dict):
            continue
        changed = [c for c, v in given.items() if not _same(v, values.get((p, r, c)))]
        if changed:
            st.add((p, r, name), MANUAL, "; ".join(
                f"manual value {c} edited ({_show(given[c])} -> {_show(values.get((p, r, c)))})"
                for c in changed))


def _show(v) -> str:
    """A manual value for people: text quoted, a whole number without ``.0``."""
    if v is None:
        return "empty"
    if isinstance(v, str):
        return repr(v)
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _data_stale(st: Staleness, one: tuple) -> None:
    q = _DATA_SQL + ("WHERE e.proposal = ? AND e.run = ?" if one else "")
    changed = {}
    for eid, p, r, raw_diff, proc_diff, raw_files, proc_files, _origin in st.con.execute(q, one):
        if raw_diff or proc_diff:
            changed[eid] = (p, r, bool(raw_diff), bool(proc_diff), proc_files)
    by_run: dict[tuple, list] = {}
    for eid, (p, r, *rest) in changed.items():
        by_run.setdefault((p, r), []).append(eid)
    for (p, r), eids in by_run.items():
        rows = st.con.execute("SELECT name, evaluation FROM run_values WHERE proposal = ? "
                              "AND run = ? AND evaluation IS NOT NULL", (p, r)).fetchall()
        for name, eid in rows:
            if eid not in eids or name not in st.cur.code:
                continue
            _, _, raw_diff, proc_diff, proc_files = changed[eid]
            if raw_diff:
                st.add((p, r, name), DATA, "raw data of this run changed after this value "
                                           "was computed (files, sizes or times)")
            elif proc_diff and st.cur.data.get(name) == "proc":
                st.add((p, r, name), DATA, "proc data arrived or changed after this value was "
                                           "computed")


# ---------------------------------------------------------------------------------------------
# Provenance of one value, and what 'reprocess all' computes

def provenance(con: sqlite3.Connection, proposal, run: int, name: str,
               context_name: str = "context.py") -> dict | None:
    """How the value ``name`` of a run was made, as JSON-able data: ``proposal``, ``run``,
    ``name``, ``summary_type``, ``stored_at`` (Unix seconds), ``origin`` (``amore``,
    ``damnit``, ``manual``, ``built-in`` or ``unknown``), ``code`` (``digest``, ``parts``,
    ``current`` digest; None if not known), ``inputs`` (manual/param/mymdc values given),
    ``evaluation`` (``started_at``, ``seconds``, ``host``, ``worker``, ``amore_version``,
    ``python``, ``context`` SHA-256, ``data``: per kind ``{digest, files, bytes, mtime}``,
    ``meta``, ...), ``stale`` (bool) and ``reasons`` (list of str). None if there is no such
    value."""
    try:
        row = con.execute("SELECT value, summary_type, attributes, timestamp, code, evaluation, "
                          "inputs FROM run_values WHERE proposal = ? AND run = ? AND name = ?",
                          (proposal, run, name)).fetchone()
    except sqlite3.OperationalError:
        row = con.execute("SELECT value, summary_type, attributes, timestamp, NULL, NULL, NULL "
                          "FROM run_values WHERE proposal = ? AND run = ? AND name = ?",
                          (proposal, run, name)).fetchone()
    if row is None:
        return None
    _value, st_type, attrs, ts, code, ev, inputs = row
    attrs = json_or(attrs, {}) or {}
    st = stale_cells(con, proposal, run, context_name)
    out = {"proposal": proposal, "run": run, "name": name, "summary_type": st_type,
           "stored_at": ts, "seconds": attrs.get("seconds"), "origin": "unknown", "code": None,
           "inputs": json_or(inputs, None), "evaluation": None}
    if attrs.get("manual"):
        out["origin"] = "manual"
        out["edited"] = {k: attrs.get(k) for k in ("by", "at", "via", "carried")}
    elif name.startswith("amore."):
        out["origin"] = "built-in"
    if code is not None:
        st._code_parts([code])
        dig, _n, parts = st._parts.get(code, (None, None, None))
        out["code"] = {"digest": dig, "parts": parts, "current": st.cur.digest.get(name)}
    if ev is not None:
        e = con.execute("SELECT origin, started_at, seconds, host, worker, amore_version, python, "
                        "context, raw_data, proc_data, details FROM evaluations WHERE id = ?",
                        (ev,)).fetchone()
        if e is not None:
            details = json_or(e[10], {}) or {}
            ident = details.pop("data_identity", {}) or {}
            data = {k: dict(ident.get(k) or {}, digest=d)
                    for k, d in (("raw", e[8]), ("proc", e[9])) if d}
            out["origin"] = e[0]
            out["evaluation"] = {**details, "started_at": e[1], "seconds": e[2], "host": e[3],
                                 "worker": e[4], "amore_version": e[5], "python": e[6],
                                 "context": e[7], "data": data}
    cell = st.get(proposal, run, name)
    out["stale"] = cell is not None
    out["reasons"] = cell.text.split("; ") if cell else []
    return out


def plan(con: sqlite3.Connection, runs: Iterable[tuple] | None = None,
         names: Iterable[str] | None = None, stored: Iterable[str] | None = None,
         missing: bool = True) -> dict[tuple, list[str] | None]:
    """What ``amore-proto reprocess all`` computes: ``(proposal, run) -> variable names``
    (None: every variable) for the runs with something to compute -- their stale values
    (:func:`stale_cells`), the variables of the current context file they have no value of
    (when the run's data of that kind is there: a variable added since), every variable of
    a run that has no value at all (never processed) -- plus every variable taking any of
    them as input, directly or not. ``runs``: the runs to consider (default: every run of the
    table); ``names``: only these variables (and their dependents among them); ``stored``:
    names of the variables whose values are stored (default: the ``variables`` table, which
    leaves out transient ones); ``missing``: False leaves out what has no value (only stale
    values and their dependents: the backend's recomputation after a change, which leaves new
    runs to their own processing)."""
    cur = current(con)
    if runs is None:
        runs = [(p, r) for p, r in con.execute("SELECT proposal, run FROM runs")]
    runs = list(runs)
    if stored is None:
        stored = [n for (n,) in con.execute("SELECT name FROM variables")]
    stored = [n for n in stored if n in cur.code] if cur.code else list(stored)
    wanted = set(names) if names is not None else None
    have: dict[tuple, set[str]] = {}
    for p, r, n in con.execute("SELECT proposal, run, name FROM run_values"):
        have.setdefault((p, r), set()).add(n)
    kinds: dict[tuple, set[str]] = {}
    try:
        for p, r, kind, files in con.execute("SELECT proposal, run, kind, files FROM run_data"):
            if files:
                kinds.setdefault((p, r), set()).add(kind)
    except sqlite3.OperationalError:
        pass
    st = stale_cells(con, cur=cur) if cur.code else None
    per_run: dict[tuple, set[str]] = {}
    if st is not None:
        for (p, r, n) in st.cells:
            per_run.setdefault((p, r), set()).add(n)
        for key, names_here in have.items():
            for n in st.bulk:
                if n in names_here and key not in st.bulk[n].fresh:
                    per_run.setdefault(key, set()).add(n)
    dependents = _dependents(cur.deps)
    out: dict[tuple, list[str] | None] = {}
    for key in runs:
        mine = have.get(key, set())
        if not (mine & set(stored)):
            if not missing:
                continue
            if wanted is None:
                out[key] = None            # never processed: everything
                continue
            todo = set(stored)
        else:
            todo = set(per_run.get(key, ()))
            avail = kinds.get(key)
            if avail and missing:
                todo |= {n for n in stored if n not in mine and cur.data.get(n, "raw") in avail}
        grown = set(todo)
        for n in todo:
            grown |= dependents.get(n, set())
        grown &= set(stored)
        if wanted is not None:
            grown &= wanted
            # an input that is stale itself is computed (and stored) with them
            grown |= upstream(cur.deps, grown) & per_run.get(key, set())
        if grown:
            out[key] = sorted(grown, key=lambda n: stored.index(n) if n in stored else 0)
    return out


def upstream(deps: dict[str, list[str]], names: Iterable[str]) -> set[str]:
    """Every variable that ``names`` take as input, directly or not (not ``names``
    themselves unless one depends on another)."""
    out: set[str] = set()
    todo = [d for n in names for d in deps.get(n, ())]
    while todo:
        d = todo.pop()
        if d not in out:
            out.add(d)
            todo += deps.get(d, ())
    return out


def data_needed(con: sqlite3.Connection, todo: dict[tuple, list[str] | None]
                ) -> dict[tuple, str]:
    """For a :func:`plan`: ``(proposal, run) -> "raw"`` where every planned variable and
    every input of them is a raw variable -- the request opens the run's raw files alone,
    much cheaper than raw and proc together --, else ``"all"``."""
    cur = current(con)
    out = {}
    for key, names in todo.items():
        needed = None if names is None else set(names) | upstream(cur.deps, names)
        raw = needed is not None and all(cur.data.get(n) == "raw" for n in needed)
        out[key] = "raw" if raw else "all"
    return out


def reusable(con: sqlite3.Connection, todo: dict[tuple, list[str] | None]
             ) -> dict[tuple, list[str]]:
    """For a :func:`plan`: ``(proposal, run) -> inputs`` of the planned variables whose stored
    values can be read back instead of computed again: not planned themselves (so not stale),
    with a value that is not an error, a skip or None."""
    cur = current(con)
    need = {key: upstream(cur.deps, names) - set(names)
            for key, names in todo.items() if names is not None}
    wanted = sorted(set().union(*need.values())) if need else []
    if not wanted:
        return {}
    ok: dict[tuple, set[str]] = {}
    for i in range(0, len(wanted), 500):
        part = wanted[i:i + 500]
        q = (f"SELECT proposal, run, name FROM run_values WHERE name IN "
             f"({','.join('?' * len(part))}) AND summary_type NOT IN ('error', 'skipped', 'none')")
        for p, r, n in con.execute(q, part):
            ok.setdefault((p, r), set()).add(n)
    return {key: sorted(names & ok.get(key, set())) for key, names in need.items()
            if names & ok.get(key, set())}


def _dependents(deps: dict[str, list[str]]) -> dict[str, set[str]]:
    """name -> every variable taking it as input, directly or not."""
    direct: dict[str, set[str]] = {}
    for n, ds in deps.items():
        for d in ds:
            direct.setdefault(d, set()).add(n)
    out: dict[str, set[str]] = {}
    for n in deps:
        seen, todo = set(), list(direct.get(n, ()))
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo += direct.get(m, ())
        out[n] = seen
    return out


def context_name(context_dir: str | Path) -> str:
    """The context file's name as explanations give it (``context.py``)."""
    from backend.contextdir import ContextDir
    return ContextDir(context_dir).context_file.name


def _when(ts) -> str:
    import time as _time
    return _time.strftime("%Y-%m-%d %H:%M:%S", _time.localtime(ts)) if ts else "?"


def describe_provenance(info: dict) -> list[str]:
    """:func:`provenance` as lines for people (``amore-proto run-info --var``, the GUI's and
    the browser's "How was this value made?")."""
    out = [f"{info['name']} of run {info['run']} (proposal {info['proposal']}): "
           f"{info['summary_type']}, stored {_when(info.get('stored_at'))}"]
    if info.get("stale"):
        out.append("STALE: " + "; ".join(info.get("reasons") or []))
    else:
        out.append("Up to date with the context file, manual values and data as last seen.")
    origin = info.get("origin")
    if origin == "manual":
        e = info.get("edited") or {}
        out.append(f"Manual value set by {e.get('by') or '?'} at {_when(e.get('at'))} "
                   f"(from {e.get('via') or '?'})" + (", carried over" if e.get("carried") else ""))
        return out
    if origin == "built-in":
        out.append("Built-in check cell (computed by AMORE from the run's files)")
    if origin == "damnit":
        out.append("Imported from DAMNIT")
    code = info.get("code")
    if code:
        same = "the current code" if code.get("current") == code.get("digest") else \
            f"current code is {code.get('current') or 'not defined'}"
        out.append(f"Code: {code.get('digest')} ({same})")
        parts = code.get("parts") or {}
        for k in ("function", "arguments", "fields", "class", "column"):
            if parts.get(k):
                out.append(f"  {k}: {parts[k]}")
        for k, v in sorted((parts.get("names") or {}).items()):
            out.append(f"  reads {k}: {v}")
        for k, v in sorted((parts.get("inputs") or {}).items()):
            out.append(f"  input {k}: {v}")
    elif origin not in ("built-in",):
        out.append("Code: not known")
    for kind, values in sorted((info.get("inputs") or {}).items()):
        out.append(f"Inputs ({kind}): " + ", ".join(f"{k}={v!r}" for k, v in values.items()))
    ev = info.get("evaluation")
    if ev:
        secs = f"{info['seconds']:.3f} s" if isinstance(info.get("seconds"), (int, float)) else "?"
        total = f"{ev['seconds']:.2f} s" if isinstance(ev.get("seconds"), (int, float)) else "?"
        out.append(f"Computed {_when(ev.get('started_at'))} on {ev.get('host') or '?'} "
                   f"({ev.get('worker') or '?'}) in {secs} (the run: {total})")
        out.append(f"AMORE {ev.get('amore_version') or '?'}, Python {ev.get('python') or '?'}, "
                   f"context file SHA-256 {(ev.get('context') or '?')[:16]}")
        for kind, d in sorted((ev.get("data") or {}).items()):
            out.append(f"Data {kind}: {d.get('files')} file(s), {d.get('bytes')} bytes, newest "
                       f"{_when(d.get('mtime'))} (digest {d.get('digest')})")
        meta = ev.get("meta") or {}
        if meta:
            out.append("meta#: " + ", ".join(f"{k}={v}" for k, v in sorted(meta.items())))
    return out
