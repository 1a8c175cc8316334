"""Recomputing only what changed: which values of which runs ``amore-proto reprocess all``
(local or ``--slurm``) and the backend (``[processing] recompute_on_change``) compute, from the
provenance recorded beside the values (:mod:`backend.store.staleness`).

Deciding needs no user code as long as the context file (and the watched modules) are what was
last loaded: the code digests recorded then are compared (:func:`code_is_current`); otherwise
the caller loads the file in a worker first (which records the new digests). The runs' data is
looked at again (:meth:`backend.store.writer.RunDB.refresh_run_data`) before the values are
compared.
"""
from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Iterable

from backend.config import Config
from backend.processing.local import context_state_now
from backend.store.staleness import STATE_KEY, data_needed
from backend.store.staleness import plan as stale_plan
from backend.store.staleness import reusable as stale_reusable

if TYPE_CHECKING:   # (not imported: ``reprocess all`` starts its worker before SQLAlchemy)
    from backend.store.writer import RunDB

log = logging.getLogger(__name__)


def code_is_current(db: RunDB, config: Config, context_dir) -> bool:
    """Whether the code digests recorded at the last load are those of the context file (and
    watched modules, manual columns, interpreter...) as they are now."""
    recorded = json.loads(db.get_metadata(STATE_KEY) or "null")
    if not recorded or not recorded.get("key"):
        return False
    now = context_state_now(config, context_dir, db.manual_columns(), recorded)
    return now["key"] == recorded["key"]


def plan(db: RunDB, runs: Iterable[tuple] | None = None, names: Iterable[str] | None = None,
         missing: bool = True, refresh_data: bool = True) -> dict[tuple, list[str] | None]:
    """``(proposal, run) -> variable names`` (None: all) to compute so that no value is stale
    (:func:`backend.store.staleness.plan`); with ``refresh_data``, the runs' data is looked at
    first. Reads through its own read-only connection."""
    if refresh_data:
        refresh_run_data(db, runs)
    with db.reading() as con:
        return stale_plan(con, runs, names, missing=missing)


def refresh_run_data(db: RunDB, runs: Iterable[tuple] | None = None) -> None:
    """Look at the runs' data again and record what changed
    (:meth:`backend.store.writer.RunDB.refresh_run_data`), so that :func:`plan` sees values
    made from older data as stale; logs what changed."""
    changed = db.refresh_run_data(runs)
    if changed:
        log.info("Data changed since it was last seen: %s",
                 ", ".join(f"run {r} {k}" for _p, r, k in changed[:20]))


def requests(db: RunDB, todo: dict[tuple, list[str] | None]
             ) -> tuple[dict[tuple, list[str]], dict[tuple, str]]:
    """Per planned run, what its request carries besides the names: the inputs whose stored
    values the worker reads back instead of computing them again
    (:func:`backend.store.staleness.reusable`) and the run data it opens, ``"raw"`` or
    ``"all"`` (:func:`backend.store.staleness.data_needed`)."""
    with db.reading() as con:
        return stale_reusable(con, todo), data_needed(con, todo)


#: Seconds a planned run costs a worker besides its variables' own time: opening the run,
#: the data's identity, writing the run's HDF5 file, the reply (~0.025 s in B1, 2026-12-07).
RUN_OVERHEAD_S = 0.03
#: Seconds of the plan's work that pay for starting one more worker beside the first: its
#: start (imports) and loading the context file take ~0.5 s of a core, which the other
#: processes then lack.
WORK_PER_WORKER_S = 1.0


#: Stored values per variable whose ``seconds`` :func:`estimated_seconds` averages.
TIMED_VALUES = 20
_TOOK_SQL = ("SELECT AVG(s) FROM (SELECT json_extract(attributes, '$.seconds') AS s "
             "FROM run_values WHERE name = ? AND json_valid(attributes) LIMIT ?)")


def estimated_seconds(db: RunDB, todo: dict[tuple, list[str] | None]) -> float:
    """The plan's work for one worker, in seconds: per run :data:`RUN_OVERHEAD_S` plus the
    seconds each planned variable took (the average ``seconds`` of up to
    :data:`TIMED_VALUES` of its stored values; 0 for a variable never timed). Read through
    its own read-only connection."""
    if not todo:
        return 0.0
    planned = set()
    for names in todo.values():
        planned.update(names if names is not None else ())
    with db.reading() as con:
        if any(names is None for names in todo.values()):
            planned.update(n for (n,) in con.execute("SELECT name FROM variables"))
        took = {n: con.execute(_TOOK_SQL, (n, TIMED_VALUES)).fetchone()[0] for n in planned}
    every = sum(v or 0.0 for v in took.values())
    return sum(RUN_OVERHEAD_S + (every if names is None else
                                 sum(took.get(n) or 0.0 for n in names))
               for names in todo.values())


def workers_for(seconds: float, jobs: int) -> int:
    """How many workers compute a plan of ``seconds`` (:func:`estimated_seconds`) soonest, at
    most ``jobs``: one, and one more per :data:`WORK_PER_WORKER_S` of work (a few cheap values
    are computed by one worker sooner than a second one would be ready to help)."""
    return max(1, min(jobs, 1 + int(seconds // WORK_PER_WORKER_S)))


def describe(todo: dict[tuple, list[str] | None], all_names: list[str]) -> str:
    """One line for people: how many runs and values the plan computes."""
    n_values = sum(len(all_names) if v is None else len(v) for v in todo.values())
    return f"{len(todo)} run(s), {n_values} value(s) to compute"


def groups(todo: dict[tuple, list[str] | None], all_names: list[str]
           ) -> list[tuple[list[int], list[str]]]:
    """The plan as ``(runs, names)`` groups of runs computing the same variables (one Slurm
    array each), biggest first."""
    by_names: dict[tuple, list[int]] = {}
    for (_p, r), names in todo.items():
        by_names.setdefault(tuple(all_names if names is None else names), []).append(r)
    return sorted(((sorted(rs), list(ns)) for ns, rs in by_names.items()),
                  key=lambda g: -len(g[0]))
