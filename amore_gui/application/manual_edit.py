"""Manual columns from the GUI, without Qt: writing edits (several runs at once), adding columns,
reading a cell's history and a run's processing log, and grouping rows.

:func:`write_manual_values` and :func:`create_manual_column` block (a front-end calls them off
its event loop, or through a session's runner with :func:`set_manual_values` /
:func:`add_manual_column`). Writes go through :class:`backend.store.manual.ManualStore` (short ``BEGIN IMMEDIATE``
transactions, like comments) by the session's runner (a thread pool in the GUI) and are
announced to other GUIs with the session's publisher (``run_values_updated``,
``variables_changed``); GUIs without Kafka see them by watching the database.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from amore_gui.application.table_data import NSTATIC, TableData
from backend.vocab import UpdateKind


def _store(context_dir):
    from backend.store.manual import ManualStore
    from backend.store.writer import RunDB
    return ManualStore(RunDB(context_dir))


def write_manual_values(context_dir, keys: Iterable[tuple[int, int]], name: str, raw,
                        via: str = "gui", confirm: bool = False, author: str | None = None) -> list:
    """Set manual column ``name`` of runs ``keys`` ((proposal, run) pairs) to ``raw`` (typed
    text, or bool/int/float from an editor; None clears), recorded as done ``via`` (``gui``,
    ``web``...) by ``author`` (default: this process's ``user@host``); ``confirm``: keep the
    values and drop their "carried over" mark instead.
    Returns the edits (:class:`backend.store.manual.Edit`: ``proposal``, ``run``,
    ``name``...). Blocks (short write transactions); raises
    :class:`backend.store.manual.ManualError` for a refused value (nothing written)."""
    keys = list(keys)
    store = _store(context_dir)
    try:
        out = []
        for proposal in sorted({p for p, _ in keys}, key=str):
            runs = [r for p, r in keys if p == proposal]
            out += store.set_values(runs, name, raw, via=via, author=author, proposal=proposal,
                                    confirm_only=confirm)
        return out
    finally:
        store.db.close()


def create_manual_column(context_dir, **definition):
    """Create a manual column (``name``, ``type``, ``title``, ``units``, ``choices``,
    ``description``, ``carry_over``; see :meth:`backend.store.manual.ManualStore.add_column`)
    and return it. Blocks; raises :class:`backend.store.manual.ManualError`."""
    store = _store(context_dir)
    try:
        return store.add_column(**definition)
    finally:
        store.db.close()


def _refusal(err: str | None) -> str | None:
    """A runner's error text without the ``ManualError:`` prefix (the user's words)."""
    return err.split(": ", 1)[1] if err and err.startswith("ManualError: ") else err


def set_manual_values(session, keys: Iterable[tuple[int, int]], name: str, raw,
                      on_done: Callable[[list, str | None], None] | None = None,
                      confirm: bool = False, via: str = "gui", author: str | None = None) -> None:
    """:func:`write_manual_values` with the session's runner (off the event loop), from a
    front-end; ``on_done(edits, error)`` afterwards (error: the refusal message, nothing
    written). Also tells the user through ``session.events.message`` and announces the edits
    with the session's publisher. ``via``: where the edit came from (``gui``, ``web``:
    :data:`backend.store.manual.EDIT_SOURCES`); ``author``: who made it (default: this
    process's ``user@host``), both recorded in the cell's history."""
    keys = list(keys)
    ctx = session.context_dir

    def done(edits, err):
        if err:
            session.events.message.emit(f"Not saved: {_refusal(err)}", True)
        else:
            for e in edits:
                session.publish(UpdateKind.RUN_VALUES_UPDATED, {"proposal": e.proposal, "run": e.run,
                                                       "names": [e.name], "manual": True})
            runs = ", ".join(str(e.run) for e in edits)
            session.events.message.emit(
                f"{name} {'confirmed' if confirm else 'set'} for run(s) {runs}", False)
        if on_done is not None:
            on_done(edits or [], err)
    session.runner(lambda: write_manual_values(ctx, keys, name, raw, via=via, confirm=confirm,
                                               author=author), done)


def add_manual_column(session, on_done: Callable[[object, str | None], None] | None = None,
                      **definition) -> None:
    """:func:`create_manual_column` with the session's runner; ``on_done(column, error)``;
    the new column is announced with the session's publisher."""
    ctx = session.context_dir

    def done(col, err):
        if err is None:
            session.publish(UpdateKind.VARIABLES_CHANGED, {"names": [col.name]})
        if on_done is not None:
            on_done(col, _refusal(err))
    session.runner(lambda: create_manual_column(ctx, **definition), done)


def read_history(context_dir, proposal: int | str, run: int, name: str) -> list[dict]:
    """Every edit of one manual cell, oldest first (see
    :meth:`backend.store.manual.ManualStore.history`). Call off the GUI thread."""
    store = _store(context_dir)
    try:
        return store.history(run, name, proposal=proposal)
    finally:
        store.db.close()


def read_run_log(context_dir, run: int, proposal: int | str | None = None) -> list[dict]:
    """The kept processing logs of a run, oldest first (``status``, ``timestamp``, ``text``).
    Call off the GUI thread."""
    from backend.store.runlogs import run_logs
    from backend.store.writer import RunDB
    db = RunDB(context_dir)
    try:
        return run_logs(db, run, proposal=proposal)
    finally:
        db.close()


# ---------------------------------------------------------------------------------------------
# grouping rows ("data sets" for any column)

@dataclass
class Group:
    """Rows sharing the values of the grouping columns: ``label`` values (text), ``rows`` (data
    rows), ``means`` (table column -> mean of its numbers in the group, NaN if none)."""

    label: tuple
    rows: np.ndarray
    means: dict[int, float] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.rows)


def group_rows(data: TableData, rows: Iterable[int], by: list[int],
               tolerance: float = 0.0, mean_cols: Iterable[int] | None = None) -> list[Group]:
    """Group ``rows`` by the values of table columns ``by``: text exactly, numbers within
    ``tolerance`` (relative: 0.01 puts 100 and 100.9 in one group, labelled "100–100.9"). Each group gets its run count and
    the mean of every numeric column in ``mean_cols`` (default: all variable columns).
    Groups come in order of first appearance in ``rows``."""
    rows = np.asarray(list(rows), np.int64)
    if mean_cols is None:
        mean_cols = range(NSTATIC, len(data.columns))
    mean_cols = [c for c in mean_cols if data.is_numeric_column(c)]

    clusters = {c: _clusters(data, rows, c, tolerance) for c in by}

    def key_of(r: int, c: int):
        x = data.numeric_at(r, c)
        if not math.isnan(x):
            return ("n", clusters[c][x])
        return ("t", data.display(r, c))

    groups: dict[tuple, list[int]] = {}
    for r in rows:
        k = tuple(key_of(int(r), c) for c in by)
        groups.setdefault(k, []).append(int(r))
    out = []
    for k, members in groups.items():
        idx = np.array(members, np.int64)
        label = tuple(_label(v) for v in k)
        means = {}
        for c in mean_cols:
            with np.errstate(all="ignore"):
                vals = data.numeric(c)[idx]
                vals = vals[~np.isnan(vals)]
                means[c] = float(vals.mean()) if len(vals) else math.nan
        out.append(Group(label, idx, means))
    return out


def _clusters(data: TableData, rows: np.ndarray, col: int, tolerance: float) -> dict:
    """Numeric value -> group label for one column: sorted values join the current group
    while within ``tolerance`` (relative) of its first value; label ``"lo"`` or ``"lo–hi"``."""
    vals = data.numeric(col)[rows] if len(rows) else np.zeros(0)
    vals = np.unique(vals[~np.isnan(vals)])
    out: dict[float, str] = {}
    i = 0
    while i < len(vals):
        lo = vals[i]
        j = i
        while j + 1 < len(vals) and vals[j + 1] - lo <= tolerance * max(abs(lo), 1e-300):
            j += 1
        label = f"{lo:.6g}" if j == i else f"{lo:.6g}–{vals[j]:.6g}"
        for v in vals[i:j + 1]:
            out[float(v)] = label
        i = j + 1
    return out


def _label(v) -> str:
    kind, x = v
    if kind == "n":
        return x
    return x or "(empty)"
