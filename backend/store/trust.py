"""What lets people trust the run table, stored beside it in ``runs.sqlite``: append-only run
snapshots (the messages that announced a run, its metadata as read from its data), file
checksums and the last verification of each run, the built-in check cells and whether the
proposal is closed.

Built-in cells live in ``run_values`` under names that cannot be Python identifiers (so never
clash with a variable): :data:`DATA_CHECK` ("Data check") and :data:`FILES_CHECK` ("Files").
Their ``value`` is the one-line summary (``summary_type`` ``string``); ``attributes`` hold
``tooltip`` (text), ``ok`` (bool), ``background`` (a colour when not OK) and ``report``.
"""
from __future__ import annotations

import json
import time

import sqlalchemy as sa

from backend.store.schema import (file_checksums_table, run_snapshots_table, run_values_table,
                                  run_verifications_table)
from backend.store.writer import CLOSED_KEY, RunDB, StoredValue, is_closed  # noqa: F401

#: ``run_values`` name of the built-in data consistency cell.
DATA_CHECK = "amore.data_check"
#: ``run_values`` name of the built-in file checksum cell.
FILES_CHECK = "amore.files"
#: Column titles of the built-in cells.
BUILTIN_TITLES = {DATA_CHECK: "Data check", FILES_CHECK: "Files"}
BAD_BACKGROUND = "#f4c7c3"

class ProposalClosed(Exception):
    """The proposal's table was closed (``amore-proto close``): values are not changed."""


def set_closed(db: RunDB, closed: bool, who: str = "") -> None:
    """Close (``True``) or reopen the table; the change is recorded in the event log."""
    db.set_metadata(CLOSED_KEY, f"{time.time():.3f}" if closed else "0")
    by = f" by {who}" if who else ""
    db.add_event("info", "cli", f"Proposal closed{by}: the table is read-only" if closed
                 else f"Proposal reopened{by}")


def closed_since(db: RunDB) -> float | None:
    v = db.get_metadata(CLOSED_KEY) or ""
    try:
        return float(v) if v not in ("", "0") else None
    except ValueError:
        return time.time()


class TrustStore:
    """Snapshots, checksums, verifications and built-in cells of one :class:`RunDB`."""

    def __init__(self, db: RunDB):
        self.db = db
        self.engine = db.engine

    # --- snapshots (append-only) ----------------------------------------------------------
    def add_snapshot(self, proposal: int, run: int, kind: str, source: str,
                     message, location: str | None = None,
                     received_at: float | None = None) -> int:
        """Append one snapshot (:meth:`backend.store.writer.RunDB.add_snapshot`). Returns the
        row id."""
        return self.db.add_snapshot(proposal, run, kind, source, message, location, received_at)

    def snapshots(self, proposal: int, run: int, kind: str | None = None) -> list[dict]:
        """Snapshots of a run, oldest first: dicts with the columns and ``data`` (the message
        parsed as JSON, or the text when it is not JSON)."""
        q = sa.select(run_snapshots_table).where(run_snapshots_table.c.proposal == proposal,
                                                 run_snapshots_table.c.run == run)
        if kind:
            q = q.where(run_snapshots_table.c.kind == kind)
        with self.engine.connect().execution_options(readonly=True) as conn:
            rows = [dict(r) for r in conn.execute(q.order_by(run_snapshots_table.c.id)).mappings()]
        for r in rows:
            try:
                r["data"] = json.loads(r["message"])
            except ValueError:
                r["data"] = r["message"]
        return rows

    def runs_with_metadata(self, proposal: int) -> set[int]:
        with self.engine.connect().execution_options(readonly=True) as conn:
            return {r for (r,) in conn.execute(
                sa.select(run_snapshots_table.c.run).distinct().where(
                    run_snapshots_table.c.proposal == proposal,
                    run_snapshots_table.c.kind == "metadata"))}

    # --- checksums --------------------------------------------------------------------------
    def checksums(self, proposal: int, run: int, algorithm: str = "blake2b") -> dict:
        """``path -> FileState`` of the stored checksums of a run."""
        from backend.integrity.checksums import FileState
        t = file_checksums_table
        with self.engine.connect().execution_options(readonly=True) as conn:
            rows = conn.execute(sa.select(t).where(t.c.proposal == proposal, t.c.run == run,
                                                   t.c.algorithm == algorithm)).mappings().all()
        return {r["path"]: FileState(r["path"], r["size"], r["mtime"], r["digest"], algorithm)
                for r in rows}

    def add_checksums(self, proposal: int, run: int, states) -> None:
        """Store checksums of files not checksummed yet (existing rows are kept: they are the
        reference later verifications compare with)."""
        now = time.time()
        rows = [{"p": proposal, "r": run, "path": s.path, "a": s.algorithm, "d": s.digest,
                 "s": s.size, "m": s.mtime, "t": now} for s in states]
        if not rows:
            return
        with self.engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO file_checksums(proposal, run, path, algorithm, digest, size, mtime, "
                "computed_at) VALUES (:p, :r, :path, :a, :d, :s, :m, :t) "
                "ON CONFLICT DO NOTHING"), rows)

    def runs_with_checksums(self, proposal: int, algorithm: str = "blake2b") -> set[int]:
        t = file_checksums_table
        with self.engine.connect().execution_options(readonly=True) as conn:
            return {r for (r,) in conn.execute(sa.select(t.c.run).distinct().where(
                t.c.proposal == proposal, t.c.algorithm == algorithm))}

    def runs_verified(self, proposal: int) -> set[int]:
        """Runs whose files were checksummed or verified at least once (even with no files)."""
        t = run_verifications_table
        with self.engine.connect().execution_options(readonly=True) as conn:
            return {r for (r,) in conn.execute(sa.select(t.c.run).where(t.c.proposal == proposal))}

    def record_verification(self, proposal: int, run: int, algorithm: str, comparison) -> None:
        """Record when a run was last verified and what was found (replaces the previous)."""
        details = {"changed": comparison.changed, "missing": comparison.missing,
                   "new": comparison.new, "unchanged": comparison.unchanged}
        with self.engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO run_verifications(proposal, run, verified_at, algorithm, changed, "
                "missing, new, details) VALUES (:p, :r, :t, :a, :c, :m, :n, :d) "
                "ON CONFLICT(proposal, run) DO UPDATE SET verified_at = excluded.verified_at, "
                "algorithm = excluded.algorithm, changed = excluded.changed, "
                "missing = excluded.missing, new = excluded.new, details = excluded.details"),
                {"p": proposal, "r": run, "t": time.time(), "a": algorithm,
                 "c": len(comparison.changed), "m": len(comparison.missing),
                 "n": len(comparison.new), "d": json.dumps(details)})

    def verification(self, proposal: int, run: int) -> dict | None:
        t = run_verifications_table
        with self.engine.connect().execution_options(readonly=True) as conn:
            r = conn.execute(sa.select(t).where(t.c.proposal == proposal,
                                                t.c.run == run)).mappings().first()
        if r is None:
            return None
        r = dict(r)
        r["details"] = json.loads(r["details"]) if r["details"] else None
        return r

    # --- built-in cells -----------------------------------------------------------------------
    def set_cell(self, proposal: int, run: int, name: str, summary: str, ok: bool,
                 tooltip: str, report: dict | None = None) -> None:
        """Write a built-in cell (:data:`DATA_CHECK`, :data:`FILES_CHECK`). Raises
        :class:`ProposalClosed` when the table is closed."""
        if is_closed(self.db):
            raise ProposalClosed("the proposal is closed; values are not changed")
        attrs = {"ok": bool(ok), "tooltip": tooltip}
        if not ok:
            attrs["background"] = BAD_BACKGROUND
        if report is not None:
            attrs["report"] = report
        self.db.write_values(proposal, run, {name: StoredValue(summary, "string", attrs)})

    def runs_with_cell(self, proposal: int, name: str) -> set[int]:
        t = run_values_table
        with self.engine.connect().execution_options(readonly=True) as conn:
            return {r for (r,) in conn.execute(sa.select(t.c.run).where(
                t.c.proposal == proposal, t.c.name == name))}
