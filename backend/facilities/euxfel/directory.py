"""Offline event source: watch a proposal's ``raw/`` and ``proc/`` directories for new runs.

Used when no Kafka broker is configured or reachable. A watchdog observer records when files
under ``raw/r<NNNN>`` or ``proc/r<NNNN>`` last changed; once a run directory has been quiet for
``watch.quiet_seconds`` it is announced as a :class:`backend.sources.base.RunEvent` (``data`` ``raw``
or ``proc``), the same record Kafka events produce.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from pathlib import Path

from backend.sources.base import EventCallback, RunEvent
from backend.watch import FileChange, FileWatch, stop_watching

log = logging.getLogger(__name__)

_RUN_DIR = re.compile(r"^r(\d{4,})$")


def _on_change(watcher: "RunDirectoryWatcher", change: FileChange) -> None:
    # a run directory appearing counts; its "modified" events (any file created in it, such as
    # extra-data's cache) do not; of the files, only HDF5 files are data
    if change.path.suffix == ".h5" or (change.is_directory and change.kind != "modified"):
        watcher.touched(change.path)


class RunDirectoryWatcher:
    """Announce runs of ``proposal_dir`` once their directories are quiet.

    A :class:`~backend.sources.base.RunSource`: ``on_event(RunEvent, None)`` is called from the
    watcher's thread (there is nothing to acknowledge: a restart rescans nothing, the listener's
    catch-up finds runs it missed). ``quiet_seconds`` and ``poll_seconds`` come from the ``watch``
    configuration. ``raw/`` and ``proc/`` are created if missing so that a proposal with no runs
    yet can be watched.
    """

    name = "watcher"

    def __init__(self, proposal: int, proposal_dir: str | Path,
                 quiet_seconds: float = 10.0, poll_seconds: float = 0.5):
        self.proposal = proposal
        self.proposal_dir = Path(proposal_dir)
        self.callback: EventCallback | None = None
        self.quiet = float(quiet_seconds)
        self.poll = float(poll_seconds)
        self._last_change: dict[tuple[int, str], float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._observer = None
        self._thread = None

    def touched(self, path: Path) -> None:
        try:
            rel = path.relative_to(self.proposal_dir)
        except ValueError:
            return
        parts = rel.parts
        if len(parts) < 2 or parts[0] not in ("raw", "proc"):
            return
        m = _RUN_DIR.match(parts[1])
        if not m:
            return
        with self._lock:
            self._last_change[(int(m.group(1)), parts[0])] = time.monotonic()

    def start(self, on_event: EventCallback) -> None:
        """Watch ``raw/`` and ``proc/`` and call ``on_event(event, None)`` for each quiet run directory."""
        self.callback = on_event
        dirs = [self.proposal_dir / sub for sub in ("raw", "proc")]
        for d in dirs:
            d.mkdir(parents=True, exist_ok=True)
        self._observer = FileWatch(dirs, lambda change: _on_change(self, change))
        if not self._observer.start():  # the watch is this source's only way to notice runs
            raise OSError(f"cannot watch {self.proposal_dir}/raw and /proc for new runs")
        self._thread = threading.Thread(target=self._loop, name="run-watcher", daemon=True)
        self._thread.start()
        log.info("Watching %s/{raw,proc} for new runs (quiet time %.1f s)",
                 self.proposal_dir, self.quiet)

    def _loop(self) -> None:
        while not self._stop.wait(self.poll):
            now = time.monotonic()
            with self._lock:
                ready = [k for k, t in self._last_change.items() if now - t >= self.quiet]
                for k in ready:
                    del self._last_change[k]
            for run, kind in sorted(ready):
                path = self.proposal_dir / kind / f"r{run:04d}"
                ev = RunEvent(self.proposal, run, kind, source="watcher", event=f"{kind}_dir_quiet",
                              location=str(path))
                try:
                    self.callback(ev, None)
                except Exception:
                    log.exception("Handling %s failed", ev)

    def ack(self, token) -> None:
        """Nothing to acknowledge for a watched directory."""

    def stop(self) -> None:
        stop_watching(self._stop, self._observer, self._thread)
