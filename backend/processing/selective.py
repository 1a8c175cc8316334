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
from pathlib import Path
from typing import Iterable

from backend.config import Config
from backend.processing.local import context_state_now
from backend.store import reader
from backend.store.provenance import STATE_KEY
from backend.store.staleness import plan as stale_plan
from backend.store.staleness import data_needed
from backend.store.staleness import reusable as stale_reusable
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
        changed = db.refresh_run_data(runs)
        if changed:
            log.info("Data changed since it was last seen: %s",
                     ", ".join(f"run {r} {k}" for _p, r, k in changed[:20]))
    con = reader.connect(Path(db.path), uri_readonly=True)
    try:
        return stale_plan(con, runs, names, missing=missing)
    finally:
        con.close()


def requests(db: RunDB, todo: dict[tuple, list[str] | None]
             ) -> tuple[dict[tuple, list[str]], dict[tuple, str]]:
    """Per planned run, what its request carries besides the names: the inputs whose stored
    values the worker reads back instead of computing them again
    (:func:`backend.store.staleness.reusable`) and the run data it opens, ``"raw"`` or
    ``"all"`` (:func:`backend.store.staleness.data_needed`)."""
    con = reader.connect(Path(db.path), uri_readonly=True)
    try:
        return stale_reusable(con, todo), data_needed(con, todo)
    finally:
        con.close()


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
