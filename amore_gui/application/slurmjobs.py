"""Slurm jobs of a run, for the GUI (Qt-free; called on a worker thread, never the GUI thread).

Reads the ``slurm_jobs`` table of ``runs.sqlite`` (written by the backend,
:mod:`backend.processing.slurm`) read-only, with the query of :mod:`backend.store.reader`, and the tail of a job's log file.
"""
from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from backend.contextdir import db_file
from backend.store import reader as sql
from backend.store.identify import note_sqlite_use

#: Slurm states of jobs that can still be cancelled.
ACTIVE = ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED")


def read_run_jobs(context_dir, proposal: int | str, run: int) -> list[dict]:
    """Slurm tasks of one run, newest first: dicts with ``task_id``, ``job_id``, ``state``,
    ``node``, ``names`` (list), ``log_file``, ``message``, ``elapsed`` (seconds or None),
    ``done`` (bool). An empty list where the database has no job table yet."""
    note_sqlite_use(context_dir)
    con = sqlite3.connect(f"file:{db_file(context_dir)}?mode=ro", uri=True, timeout=10)
    try:
        rows = con.execute(sql.RUN_SLURM_JOBS_SQL, (proposal, run)).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()
    now = time.time()
    out = []
    for task, job, state, node, names, logf, msg, start, end, done in rows:
        out.append({"task_id": task, "job_id": job, "state": state, "node": node,
                    "names": json.loads(names or "[]"), "log_file": logf, "message": msg,
                    "elapsed": ((end or now) - start) if start else None, "done": bool(done)})
    return out


def read_log_tail(path, max_bytes: int = 200_000) -> str:
    """The last ``max_bytes`` of a job's log (text), or a sentence saying why there is none."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except FileNotFoundError:
        return f"(no log yet: {p} does not exist; the job may not have started)"
    except OSError as e:
        return f"(cannot read {p}: {e})"
    text = data.decode("utf-8", "replace")
    return ("…\n" + text) if size > max_bytes else text
