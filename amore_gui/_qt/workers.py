"""Threads of the GUI: nothing here runs on the GUI thread except signal delivery.

* :class:`LoadThread` - reads the table progressively
  (:meth:`amore_gui.application.workspace.Workspace.iter_load`).
* :class:`UpdateThread` - live updates: runs :class:`amore_gui.application.live.LiveUpdates`
  (Kafka update messages or database watching, backstop, catch-up after a reconnect, backend
  status) and hands its events to the GUI thread as signals.
* :class:`ThumbnailLoader` - reads and decodes thumbnails for the cells being painted.
* :class:`Tasks` - runs small jobs (database writes, HDF5 reads) on a thread pool and delivers
  their results to a callback on the GUI thread.
"""
from __future__ import annotations

import logging
import threading
import time
import traceback
from pathlib import Path

from qtpy.QtCore import QObject, QRunnable, QThread, QThreadPool, Qt, Signal
from qtpy.QtGui import QImage

from amore_gui.application.live import LiveUpdates
from amore_gui.application.workspace import Workspace

log = logging.getLogger(__name__)


def thumbnail_image(png: bytes | None, height: int) -> QImage:
    """A thumbnail's PNG bytes as an image at most ``height`` pixels high (kept as it is when
    lower or ``height`` <= 0); a null image when there is no PNG or it cannot be read."""
    img = QImage()
    if png:
        img.loadFromData(png, "PNG")
        if not img.isNull() and img.height() > height > 0:
            img = img.scaledToHeight(height, Qt.SmoothTransformation)
    return img


class LoadThread(QThread):
    """Loads the run table of a :class:`~amore_gui.application.workspace.Workspace`:
    ``loaded(LoadResult)`` first (all runs, newest values), then ``chunk(ValueChunk)`` for
    older runs, then ``done(seconds)``; ``failed(message)``."""

    loaded = Signal(object)
    chunk = Signal(object)
    done = Signal(float)
    failed = Signal(str)

    def __init__(self, workspace: Workspace, parent=None):
        super().__init__(parent)
        self.workspace = workspace
        self.t_start = time.time()

    def run(self):
        t0 = time.perf_counter()
        try:
            self.workspace.ensure_schema()
            it = self.workspace.iter_load()
            self.loaded.emit(next(it))
            for ch in it:
                self.chunk.emit(ch)
        except Exception as e:
            log.exception("Loading %s failed", self.workspace.context_dir)
            self.failed.emit(f"{type(e).__name__}: {e}")
            return
        self.done.emit(time.perf_counter() - t0)


class UpdateThread(QThread):
    """Live updates of one database: runs the Qt-free policy
    :class:`amore_gui.application.live.LiveUpdates` (same arguments) and re-emits its events as
    signals, delivered on the GUI thread.

    Signals: ``source(mode, text)`` with mode ``kafka``, ``db`` or ``none``; ``updates(list)``
    of RunUpdate; ``reload()`` (variables changed); ``comments()`` (standalone comments
    changed); ``backend(BackendIndicator)``; ``ready()`` once it has caught up with the changes
    made since the table was read.
    """

    source = Signal(str, str)
    updates = Signal(object)
    reload = Signal()
    comments = Signal()
    backend = Signal(object)
    ready = Signal()

    def __init__(self, context_dir: Path, db_id: str | None, since: float, runs: dict,
                 variables_sig: str, comments_sig: tuple, use_kafka: bool = True, parent=None,
                 runs_stamp: int | None = None):
        super().__init__(parent)
        self.live = LiveUpdates(context_dir, db_id, since, runs, variables_sig, comments_sig,
                                use_kafka=use_kafka, runs_stamp=runs_stamp)
        for name in LiveUpdates.EVENTS:      # emitted on this thread, delivered queued
            getattr(self.live.events, name).connect(getattr(self, name).emit)

    @property
    def mode(self) -> str | None:
        """``kafka``, ``db`` or ``none`` once started."""
        return self.live.mode

    def stop(self):
        self.live.stop()

    def poke(self):
        """Check the database now (after this GUI wrote to it)."""
        self.live.poke()

    def publish(self, kind: str, data: dict) -> bool:
        """Announce a change made by this GUI (Kafka only; DB watchers see it anyway).
        Thread-safe."""
        return self.live.publish(kind, data)

    def run(self):
        self.live.run()


class ThumbnailLoader(QThread):
    """Reads thumbnail PNGs from the database and decodes them (scaled to the row height) off
    the GUI thread; emits ``loaded(key, QImage)``. Requests are served newest first."""

    loaded = Signal(object, object)

    def __init__(self, workspace: Workspace, parent=None):
        super().__init__(parent)
        self.workspace = workspace
        self._q: list = []
        self._cv = threading.Condition()
        self._stop = False

    MAX_QUEUE = 300

    def request(self, key, height: int) -> None:
        """Ask for a thumbnail (GUI thread). When scrolling fast, the oldest requests are
        dropped (answered with a null image, so they can be asked again)."""
        dropped = []
        with self._cv:
            self._q.append((key, height))
            if len(self._q) > self.MAX_QUEUE:
                dropped, self._q = self._q[:100], self._q[100:]
            self._cv.notify()
        for k, _ in dropped:
            self.loaded.emit(k, QImage())

    def stop(self):
        with self._cv:
            self._stop = True
            self._cv.notify()

    def run(self):
        try:
            con = self.workspace.connect()
        except Exception:
            return
        try:
            while True:
                with self._cv:
                    while not self._q and not self._stop:
                        self._cv.wait()
                    if self._stop:
                        return
                    key, height = self._q.pop()      # newest request first (visible now)
                try:
                    png = self.workspace.read_thumbnail(con, *key)
                except Exception:
                    png = None
                self.loaded.emit(key, thumbnail_image(png, height))
        finally:
            con.close()


def _is_deleted_object_error(e: RuntimeError) -> bool:
    """Whether ``e`` is the binding's error for a Qt object used after its deletion (PyQt:
    "wrapped C/C++ object of type X has been deleted"; PySide: "Internal C++ object (X)
    already deleted.")."""
    text = str(e)
    return "has been deleted" in text or "already deleted" in text


class _Signals(QObject):
    done = Signal(object, object, object)   # callback, result, error text


class _Job(QRunnable):
    def __init__(self, fn, args, kwargs, callback, signals):
        super().__init__()
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.callback, self.signals = callback, signals

    def run(self):
        try:
            res = self.fn(*self.args, **self.kwargs)
            err = None
        except Exception as e:
            res = None
            err = f"{type(e).__name__}: {e}"
            log.debug("Background job failed:\n%s", traceback.format_exc())
        try:
            self.signals.done.emit(self.callback, res, err)
        except RuntimeError:        # receiver gone (window closed)
            pass


class Tasks(QObject):
    """Run ``fn(*args)`` on a thread pool; ``callback(result, error)`` is called on the GUI
    thread (error is None or a one-line message)."""

    def __init__(self, parent=None, max_threads: int = 2):
        super().__init__(parent)
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(max_threads)
        self._signals = _Signals(self)
        self._signals.done.connect(self._deliver, Qt.QueuedConnection)

    def submit(self, fn, *args, callback=None, **kwargs) -> None:
        self.pool.start(_Job(fn, args, kwargs, callback, self._signals))

    def _deliver(self, callback, result, error):
        """Hand a job's result to its callback; a result for a window or dialog closed
        meanwhile (its Qt object deleted) is dropped."""
        if callback is None:
            return
        try:
            callback(result, error)
        except RuntimeError as e:
            if not _is_deleted_object_error(e):
                raise
            log.debug("Result of a background job dropped: its window was closed (%s)", e)

    def wait(self, msecs: int = 5000) -> bool:
        return self.pool.waitForDone(msecs)
