"""Quick notice of files written under directories (watchdog: inotify on Linux).

Only ever a speed-up: network file systems (GPFS, NFS) do not deliver events for writes made on
other hosts, and inotify can run out of watches. Every user of :class:`FileWatch` therefore also
rescans or polls; the watch only lets it look *now* instead of at the next period.

Used by the run sources that watch a proposal's directories
(:mod:`backend.facilities.euxfel.directory`, :mod:`backend.sources.jsonfiles`) and by the Slurm follower
(:mod:`backend.processing.slurm`: a job's result file appearing).
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from watchdog.events import (DirCreatedEvent, DirModifiedEvent, DirMovedEvent, FileClosedEvent,
                             FileCreatedEvent, FileModifiedEvent, FileMovedEvent,
                             FileSystemEventHandler)
from watchdog.observers import Observer

log = logging.getLogger(__name__)

#: The watchdog event types that mean new content. Opening or reading a file (extra-data does
#: both) is no sign of new data; creations, writes, closes after writing and renames are.
CHANGE_KINDS = frozenset({"created", "modified", "moved", "closed"})
#: The same as watchdog's event classes, asked of the kernel alone: without them inotify reports
#: every open and every close after reading too (a worker reading a 16-module run opens dozens of
#: files), each parsed in watchdog's Python thread for nothing -- ~0.4 s of the backend's CPU
#: while ``reprocess`` read B1's 40 runs.
_CHANGE_EVENTS = [FileCreatedEvent, DirCreatedEvent, FileModifiedEvent, DirModifiedEvent,
                  FileMovedEvent, DirMovedEvent, FileClosedEvent]


@dataclass(frozen=True)
class FileChange:
    """One path that changed: ``kind`` is watchdog's event type (one of :data:`CHANGE_KINDS`);
    for a rename both the old and the new path are reported, ``renamed_to`` marks the new one."""

    path: Path
    kind: str
    is_directory: bool
    renamed_to: bool = False

    @property
    def complete(self) -> bool:
        """The file is complete now: closed after writing, or renamed into place (how
        :func:`backend.files.write_json_atomic` and most writers finish a file)."""
        return not self.is_directory and (self.kind == "closed" or self.renamed_to)


class _Handler(FileSystemEventHandler):
    def __init__(self, on_change: Callable[[FileChange], None]):
        self.on_change = on_change

    def on_any_event(self, event):
        if event.event_type not in CHANGE_KINDS:
            return
        src = getattr(event, "src_path", None)
        dest = getattr(event, "dest_path", None)
        for p, renamed_to in ((src, False), (dest, True)):
            if p:
                path = Path(p if isinstance(p, str) else p.decode())
                try:
                    self.on_change(FileChange(path, event.event_type, event.is_directory,
                                              renamed_to and event.event_type == "moved"))
                except Exception:
                    log.exception("Handling the change of %s failed", path)


class FileWatch:
    """Call ``on_change(FileChange)`` (from watchdog's thread) for each file or directory created,
    written or renamed under ``directories`` (``recursive`` by default).

    :meth:`start` returns False, and logs why, when the directories cannot be watched (missing,
    out of inotify watches): the caller's rescans or polls then do all the work.
    """

    def __init__(self, directories: Iterable[str | Path], on_change: Callable[[FileChange], None],
                 recursive: bool = True):
        self.directories = [Path(d) for d in directories]
        self.on_change = on_change
        self.recursive = recursive
        self._observer = None

    @property
    def watching(self) -> bool:
        return self._observer is not None

    def start(self) -> bool:
        """Start watching; True if every directory is watched."""
        observer = Observer()
        try:
            for d in self.directories:
                observer.schedule(_Handler(self.on_change), str(d), recursive=self.recursive,
                                  event_filter=_CHANGE_EVENTS)
            observer.start()
        except OSError as e:
            log.warning("Cannot watch %s (%s); relying on rescans",
                        ", ".join(map(str, self.directories)), e)
            return False
        self._observer = observer
        return True

    def stop(self) -> None:
        """Stop watching (waits up to 5 s for watchdog's thread). Safe to call twice."""
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join(timeout=5)


def stop_watching(stop: threading.Event, watch: FileWatch | None,
                  thread: threading.Thread | None) -> None:
    """Stop a run source that watches files: its loop's ``stop`` event is set, its ``watch``
    stopped and its ``thread`` joined (at most 5 s). Safe to call twice."""
    stop.set()
    if watch is not None:
        watch.stop()
    if thread is not None:
        thread.join(timeout=5)
