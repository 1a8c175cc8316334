"""Runs announced by JSON files that appear in a directory tree (ESRF metadata.json, SwissFEL
request JSONs): a watchdog observer for quick notice plus a slow full rescan, because network
file systems (GPFS, NFS) miss inotify events.

:class:`JsonFileSource` does the watching; subclasses say which files count (:meth:`wanted`),
how to turn one into a :class:`~backend.sources.base.RunEvent` (:meth:`parse`) and in which order
a batch is announced (:meth:`order_key`).
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from backend.sources.base import EventCallback, MalformedEvent, ProblemCallback, RunEvent
from backend.watch import FileChange, FileWatch, stop_watching

log = logging.getLogger(__name__)


def _on_change(source: "JsonFileSource", change: FileChange) -> None:
    if not change.is_directory and source.wanted(change.path):
        # closed after writing, or renamed into place: complete, read it now
        source.touched(change.path, settled=change.complete)


class JsonFileSource:
    """Watch ``root`` for JSON files announcing runs (a :class:`~backend.sources.base.RunSource`).

    At :meth:`start` every wanted file is read (all runs, in :meth:`order_key` order); then
    files that watchdog reports changed are read once quiet for ``quiet_seconds``, and the whole
    tree is rescanned every ``rescan_seconds``. A file is read again only when its modification
    time or size changed. ``on_event(event, None)`` is called from the source's thread (nothing to
    acknowledge: the database dedupes by the event's ``key``). A file that cannot be understood
    is logged, reported through ``on_problem`` once per version of the file, and skipped.
    """

    name = "files"
    source_name = "files"

    def __init__(self, root: str | Path, proposal, quiet_seconds: float = 0.5,
                 rescan_seconds: float = 30.0, on_problem: ProblemCallback | None = None):
        self.root = Path(root)
        self.proposal = proposal
        self.quiet = float(quiet_seconds)
        self.rescan_every = float(rescan_seconds)
        self.on_problem = on_problem
        self.callback: EventCallback | None = None
        self._seen: dict[Path, tuple[float, int]] = {}
        self._touched: dict[Path, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._rescan_now = threading.Event()
        self._observer = None
        self._thread = None

    @classmethod
    def configured(cls, facility: str, settings: dict, proposal, on_problem, root_is: str,
                   **kw) -> list:
        """The source of ``facility`` as its ``[<facility>]`` table ``settings`` says
        (``root``, ``quiet_seconds``, ``rescan_seconds``; ``kw``: further arguments), in a
        list; none (logged) without a root. ``root_is``: what the root is, for that message."""
        if not settings.get("root"):
            log.error("facility = \"%s\" needs [%s] root (%s) in amore.toml", facility,
                      facility, root_is)
            return []
        return [cls(settings["root"], proposal, quiet_seconds=settings["quiet_seconds"],
                    rescan_seconds=settings["rescan_seconds"], on_problem=on_problem, **kw)]

    # -- subclass hooks ------------------------------------------------------------------------
    def wanted(self, path: Path) -> bool:
        raise NotImplementedError

    def candidates(self) -> list[Path]:
        """Every wanted file under root (the rescan)."""
        return [p for p in self.root.rglob("*.json") if self.wanted(p)]

    def parse(self, path: Path) -> RunEvent | None:
        """Read one file; None if it is not for this proposal. Raises MalformedEvent."""
        raise NotImplementedError

    def order_key(self, ev: RunEvent):
        return (ev.info.get("start_time") or 0.0, ev.key or "")

    # -- machinery -----------------------------------------------------------------------------
    def touched(self, path: Path, settled: bool = False) -> None:
        """``path`` changed; read it once quiet for ``quiet_seconds`` (at once if ``settled``:
        its writer closed it or it was renamed into place)."""
        with self._lock:
            self._touched[path] = float("-inf") if settled else time.monotonic()

    def rescan_soon(self) -> None:
        self._rescan_now.set()

    def _stat(self, path: Path):
        try:
            st = path.stat()
        except OSError:
            return None
        return (st.st_mtime, st.st_size)

    def _read(self, paths) -> list[RunEvent]:
        events = []
        for path in paths:
            sig = self._stat(path)
            if sig is None or self._seen.get(path) == sig:
                continue
            self._seen[path] = sig
            try:
                ev = self.parse(path)
            except MalformedEvent as e:
                log.warning("Skipping %s: %s", path, e)
                self._problem("warning", f"skipped {path}: {e}", {"path": str(path)})
                continue
            except Exception as e:  # never let one file stop the source
                log.exception("Skipping %s", path)
                self._problem("error", f"skipped {path}: {type(e).__name__}: {e}",
                              {"path": str(path)})
                continue
            if ev is not None:
                events.append(ev)
        events.sort(key=self.order_key)
        return events

    def _problem(self, level, message, details):
        if self.on_problem is not None:
            try:
                self.on_problem(level, message, details)
            except Exception:
                log.exception("Could not report: %s", message)

    def _emit(self, events) -> None:
        for ev in events:
            if self._stop.is_set():
                return
            try:
                self.callback(ev, None)
            except Exception:
                log.exception("Handling %s failed", ev)

    def scan(self) -> list[RunEvent]:
        """Read every wanted file not read before (or changed since); returns the events."""
        try:
            paths = self.candidates()
        except OSError as e:
            log.warning("Cannot scan %s: %s", self.root, e)
            return []
        now = time.time()
        fresh, settled = [], []
        for p in sorted(paths):
            sig = self._stat(p)
            (fresh if sig is not None and now - sig[0] < self.quiet else settled).append(p)
        for p in fresh:  # being written: read once quiet
            self.touched(p)
        return self._read(settled)

    def start(self, on_event: EventCallback) -> None:
        """Announce every run found now, then watch for new and changed files."""
        self.callback = on_event
        if not self.root.is_dir():
            log.error("%s: %s does not exist (yet); rescanning every %.0f s", self.name,
                      self.root, self.rescan_every)
            self._problem("error", f"{self.root} does not exist (yet)", {"path": str(self.root)})
        else:
            self._start_observer()
        self._thread = threading.Thread(target=self._loop, name=f"{self.source_name}-files",
                                        daemon=True)
        self._thread.start()
        log.info("Watching %s for runs (%s; rescan every %.0f s)", self.root, self.name,
                 self.rescan_every)

    def _start_observer(self) -> None:
        watch = FileWatch([self.root], lambda change: _on_change(self, change))
        self._observer = watch if watch.start() else None

    def _loop(self) -> None:
        self._emit(self.scan())
        next_rescan = time.monotonic() + self.rescan_every
        while not self._stop.wait(0.1):
            now = time.monotonic()
            with self._lock:
                ready = [p for p, t in self._touched.items() if now - t >= self.quiet]
                for p in ready:
                    del self._touched[p]
            if ready:
                self._emit(self._read(ready))
            if self._rescan_now.is_set() or now >= next_rescan:
                self._rescan_now.clear()
                if self._observer is None and self.root.is_dir():
                    self._start_observer()
                self._emit(self.scan())
                next_rescan = time.monotonic() + self.rescan_every

    def ack(self, token) -> None:
        """Nothing to acknowledge: files stay, and the database dedupes by key."""

    def stop(self) -> None:
        stop_watching(self._stop, self._observer, self._thread)
