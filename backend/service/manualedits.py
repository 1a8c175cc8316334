"""Manual-edit recomputation: the listener's follow-up that recomputes the variables depending
on manual values edited since it last looked (by the command line, a GUI or the API, also while
no backend ran), and has the context file reloaded when manual columns were added, renamed or
removed (context files may read them)."""
from __future__ import annotations

import logging
import threading
from typing import Callable

from backend.processing.runpath import RunPath
from backend.store.manual import ManualStore

log = logging.getLogger(__name__)

#: ``metadata`` key: the id of the last manual edit the backend took into account.
MANUAL_SEEN_KEY = "manual_applied_id"


class ManualEdits:
    """Follows the manual edits of ``path``'s database. ``columns_changed()`` is called when the
    set of manual columns changed (the listener then reloads the context file); ``stopped``:
    set when the backend stops."""

    def __init__(self, path: RunPath, columns_changed: Callable[[], None],
                 stopped: threading.Event):
        self.path = path
        self.db = path.db
        self.proposal = path.proposal
        self.manual = ManualStore(path.db)
        self.columns_changed = columns_changed
        self.stopped = stopped
        self._columns = None

    def pending(self) -> bool:
        """Whether manual values were edited since the last check (e.g. while no backend ran)."""
        try:
            seen = self.db.get_metadata(MANUAL_SEEN_KEY)
            return seen is not None and self.manual.last_edit_id() > int(seen)
        except Exception:
            log.exception("Checking manual edits failed")
            return False

    def check(self) -> list:
        """Recompute variables that depend on manual values edited since the last check, and
        report a change of the manual columns. Returns the futures of the recomputations
        submitted (the first check only takes the current edits as seen)."""
        try:
            names = tuple(c.name for c in self.manual.columns())
            if self._columns is not None and names != self._columns:
                self.columns_changed()   # context files may read the new names
            self._columns = names
            seen = self.db.get_metadata(MANUAL_SEEN_KEY)
            if seen is None:
                self.db.set_metadata(MANUAL_SEEN_KEY, str(self.manual.last_edit_id()))
                return []
            # carried-over values are in place before their run is processed
            last, edits = self.manual.edits_since(int(seen), exclude_via=("carry-over",))
            if last == int(seen):
                return []
            self.db.set_metadata(MANUAL_SEEN_KEY, str(last))
        except Exception:
            log.exception("Checking manual edits failed")
            return []
        per_run: dict[tuple[int, int], set] = {}
        for p, r, name in edits:
            if p == self.proposal:
                per_run.setdefault((p, r), set()).add(name)
        futs = []
        for (p, r), names in per_run.items():
            if self.path.processor.dependents(names) and not self.stopped.is_set():
                futs.append(self.path.executor.submit(self._recompute, p, r, names))
        return futs

    def _recompute(self, proposal, run, names):
        if self.stopped.is_set():
            return None
        try:
            deps = self.path.processor.dependents(names)
            if not deps:
                return None
            log.info("Run %d: %s changed; recomputing %s", run, ", ".join(sorted(names)),
                     ", ".join(deps))
            return self.path.dispatch(proposal, run, "all", names=deps)
        except Exception:
            log.exception("Recomputing run %d after a manual edit failed", run)
            return None
