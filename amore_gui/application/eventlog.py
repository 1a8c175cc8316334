"""The event log as the GUI shows it (no Qt): entries read off the GUI thread, the count of
warnings and errors the user has not seen yet, and whether the proposal is closed.

:meth:`EventLogState.poll` reads ``runs.sqlite`` (read-only) and is meant to run in a worker
thread; :meth:`EventLogState.apply` (GUI thread) takes its result. Entries are dicts as
:meth:`backend.store.writer.RunDB.events` returns them (``id``, ``timestamp``, ``level``,
``source``, ``proposal``, ``run``, ``message``, ``details``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from backend.contextdir import db_file
from backend.store import reader as sql

from amore_gui.application import dbread

LEVELS = ("info", "warning", "error")


@dataclass
class EventPoll:
    """What one :meth:`EventLogState.poll` found: new ``entries`` (oldest first) and the
    proposal's ``closed`` time (Unix seconds; None while open)."""

    entries: list[dict] = field(default_factory=list)
    closed: float | None = None


class EventLogState:
    """Entries of the event log known to the GUI and how many warnings are new.

    ``limit``: at most this many entries are kept (the newest). ``new_warnings``: warnings and
    errors that arrived after the last :meth:`mark_seen` (entries present when the GUI opens
    count as seen).
    """

    def __init__(self, context_dir: str | Path, limit: int = 2000):
        self.path = db_file(context_dir)
        self.limit = limit
        self.entries: list[dict] = []
        self.last_id = 0
        self.seen_id: int | None = None
        self.new_warnings = 0
        self.closed: float | None = None

    def poll(self) -> EventPoll:
        """Read entries newer than the last applied one and the closed flag (worker thread).
        Raises ``FileNotFoundError`` when the database is gone."""
        con = dbread.connect(self.path)
        try:
            try:
                rows = con.execute(sql.EVENTS_SINCE_SQL, (self.last_id,)).fetchmany(self.limit)
            except Exception:  # an old database without the events table
                rows = []
            meta = dict(con.execute(sql.METADATA_SQL))
        finally:
            con.close()
        out = []
        for r in reversed(rows):
            d = dict(zip(sql.EVENT_FIELDS, r))
            try:
                d["details"] = json.loads(d["details"]) if d["details"] else None
            except ValueError:
                pass
            out.append(d)
        closed = meta.get("closed") or ""
        try:
            closed_at = float(closed) if closed not in ("", "0") else None
        except ValueError:
            closed_at = 0.0
        return EventPoll(out, closed_at)

    def apply(self, poll: EventPoll) -> list[dict]:
        """Take a poll's result (GUI thread); returns the entries that are new."""
        self.closed = poll.closed
        new = [e for e in poll.entries if e["id"] > self.last_id]
        if not new:
            if self.seen_id is None:
                self.seen_id = self.last_id
            return []
        self.entries.extend(new)
        del self.entries[:-self.limit]
        self.last_id = new[-1]["id"]
        if self.seen_id is None:      # what was there when the GUI opened counts as seen
            self.seen_id = self.last_id
        else:
            self.new_warnings += sum(e["level"] in ("warning", "error") for e in new)
        return new

    def mark_seen(self) -> None:
        """The user looked at the log: no new warnings."""
        self.seen_id = self.last_id
        self.new_warnings = 0

    def visible(self, min_level: str = "info") -> list[dict]:
        """Entries at ``min_level`` or above, newest first."""
        keep = LEVELS[LEVELS.index(min_level):]
        return [e for e in reversed(self.entries) if e["level"] in keep]
