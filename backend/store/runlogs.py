"""Per-run processing logs: what one evaluation of a run printed, with the tracebacks of the
variables that failed (table ``run_logs``). Written by the run path after each evaluation
(:meth:`backend.store.writer.RunDB.add_run_log`); read by ``amore-proto logs RUN`` and the GUI."""
from __future__ import annotations

import sqlalchemy as sa

from backend.store.schema import run_logs_table as rl
from backend.store.writer import KEEP_RUN_LOGS

#: Evaluations kept per run (older ones are dropped when a new one is stored).
KEEP_PER_RUN = KEEP_RUN_LOGS


def add_run_log(db, proposal: int | str, run: int, status: str, text: str,
                timestamp: float | None = None) -> int:
    """Store the log of one evaluation of ``run`` (``status``: ``done``, ``failed``,
    ``cancelled``...); keeps the newest :data:`KEEP_PER_RUN` per run
    (:meth:`backend.store.writer.RunDB.add_run_log`). Returns its id."""
    return db.add_run_log(proposal, run, status, text, timestamp)


def run_logs(db, run: int, proposal: int | str | None = None, last: int | None = None) -> list[dict]:
    """Logs of one run, oldest first: dicts with ``id``, ``proposal``, ``run``,
    ``timestamp``, ``status``, ``text``; ``last``: only the newest N."""
    q = sa.select(rl).where(rl.c.run == int(run)).order_by(rl.c.id.desc())
    if proposal is not None:
        q = q.where(rl.c.proposal == proposal)
    if last is not None:
        q = q.limit(last)
    with db.engine.connect().execution_options(readonly=True) as conn:
        return [dict(r) for r in conn.execute(q).mappings()][::-1]
