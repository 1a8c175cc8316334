"""Threads of the GUI: nothing here runs on the GUI thread except signal delivery.

* :class:`LoadThread` - reads the table progressively (:func:`amore_gui.application.dbread.iter_load`).
* :class:`UpdateThread` - live updates: the Kafka :class:`backend.notify.kafka.UpdateConsumer` when a
  broker is reachable, otherwise :class:`amore_gui.application.dbread.DbChangeWatcher` polling the database;
  reads the changed runs from SQLite and emits :class:`~amore_gui.application.table_data.RunUpdate` lists.
  Also checks the backend status every few seconds and publishes the GUI's own announcements
  (comment edits) when Kafka is in use.
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

from amore_gui.application import dbread
from amore_gui.application.backend_status import backend_status
from backend.vocab import normalize_proposal, UpdateKind

log = logging.getLogger(__name__)


class LoadThread(QThread):
    """Loads the run table: ``loaded(LoadResult)`` first (all runs, newest values), then
    ``chunk(ValueChunk)`` for older runs, then ``done(seconds)``; ``failed(message)``."""

    loaded = Signal(object)
    chunk = Signal(object)
    done = Signal(float)
    failed = Signal(str)

    def __init__(self, context_dir: Path, parent=None):
        super().__init__(parent)
        self.context_dir = Path(context_dir)
        self.t_start = time.time()

    def run(self):
        t0 = time.perf_counter()
        try:
            dbread.ensure_schema(self.context_dir)
            it = dbread.iter_load(self.context_dir)
            self.loaded.emit(next(it))
            for ch in it:
                self.chunk.emit(ch)
        except Exception as e:
            log.exception("Loading %s failed", self.context_dir)
            self.failed.emit(f"{type(e).__name__}: {e}")
            return
        self.done.emit(time.perf_counter() - t0)


class UpdateThread(QThread):
    """Live updates of one database (see module docstring).

    Signals: ``source(mode, text)`` with mode ``kafka`` or ``db``; ``updates(list)`` of
    RunUpdate; ``reload()`` (variables changed); ``comments()`` (standalone comments changed);
    ``backend(BackendIndicator)``; ``ready()`` once it has caught up with the changes made since
    the table was read.
    """

    source = Signal(str, str)
    updates = Signal(object)
    reload = Signal()
    comments = Signal()
    backend = Signal(object)
    ready = Signal()

    POLL_DB = 0.25         # seconds between data_version checks without Kafka
    POLL_BACKEND = 5.0     # seconds between backend status checks
    BACKSTOP = 5.0         # seconds between database checks while Kafka is used

    def __init__(self, context_dir: Path, db_id: str | None, since: float, runs: dict,
                 variables_sig: str, comments_sig: tuple, use_kafka: bool = True, parent=None):
        super().__init__(parent)
        self.context_dir = Path(context_dir)
        self.db_id = db_id
        self.since = since
        self.runs = runs
        self.variables_sig = variables_sig
        self.comments_sig = comments_sig
        self.use_kafka = use_kafka
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.publisher = None
        self.mode = None

    def stop(self):
        self._stop.set()
        self._wake.set()

    def poke(self):
        """Check the database now (after this GUI wrote to it)."""
        self._wake.set()

    def publish(self, kind: str, data: dict) -> bool:
        """Announce a change made by this GUI (Kafka only; DB watchers see it anyway).
        Thread-safe."""
        p = self.publisher
        if p is None:
            return False
        return p.publish(kind, data)

    def _connect_kafka(self):
        from backend.config import load_config
        cfg = load_config(self.context_dir)
        if not cfg.broker or not self.db_id:
            return None, None, cfg
        from backend import kafkaclient
        from backend.notify import kafka
        if not kafkaclient.broker_reachable(cfg.broker, float(cfg["kafka"]["connect_timeout"])):
            return None, None, cfg
        consumer = kafka.UpdateConsumer(cfg, self.db_id)
        publisher = kafka.UpdatePublisher(cfg, self.db_id)
        return consumer, publisher, cfg

    def run(self):
        try:
            watcher = dbread.DbChangeWatcher(self.context_dir, self.since, self.runs,
                                             self.variables_sig, self.comments_sig)
        except Exception as e:
            self.source.emit("none", f"No live updates ({e})")
            return
        consumer = cfg = None
        if self.use_kafka:
            try:
                consumer, self.publisher, cfg = self._connect_kafka()
            except Exception as e:      # never let Kafka problems stop the GUI
                log.warning("Kafka unavailable for live updates: %s", e)
                consumer = None
        if consumer is not None:
            self.mode = "kafka"
            self.source.emit("kafka", f"Live: Kafka {cfg.broker}")
        else:
            self.mode = "db"
            why = "no broker configured" if cfg is None or not cfg.broker else \
                "broker not reachable"
            self.source.emit("db", f"Live: watching runs.sqlite ({why})")
        # catch up with what changed since the table was read
        self._emit_changes(watcher.poll(force=True))
        self.ready.emit()
        next_backend = 0.0
        kafka_state, seen_reconnects = "connected", 0
        next_backstop = time.monotonic() + self.BACKSTOP
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= next_backend:
                    self.backend.emit(backend_status(self.context_dir))
                    next_backend = now + self.POLL_BACKEND
                if consumer is not None:
                    msgs = consumer.poll(0.25)
                    if self._stop.is_set():
                        break
                    if msgs:
                        self._handle_messages(msgs, watcher)
                    state = getattr(consumer, "state", "connected")
                    if state != kafka_state:
                        kafka_state = state
                        self.source.emit("kafka", f"Live: Kafka {cfg.broker}" + (
                            " (unreachable: reconnecting; reading runs.sqlite meanwhile)"
                            if state == "reconnecting" else ""))
                    if state == "reconnecting":
                        # the broker is away: the database still tells what changed
                        self._emit_changes(watcher.poll())
                    if now >= next_backstop:
                        # Messages can be lost (a broker that restarted without its topics):
                        # the database is checked now and then anyway (cheap when unchanged).
                        next_backstop = now + self.BACKSTOP
                        self._emit_changes(watcher.poll())
                    reconnects = getattr(consumer, "reconnects", 0)
                    if reconnects != seen_reconnects:
                        # back after an outage: catch up with what messages may have missed
                        seen_reconnects = reconnects
                        self._emit_changes(watcher.poll(force=True))
                    if self._wake.is_set():
                        self._wake.clear()
                        self._emit_changes(watcher.poll())
                else:
                    self._emit_changes(watcher.poll())
                    self._wake.wait(self.POLL_DB)
                    self._wake.clear()
        except Exception:
            log.exception("Live updates stopped")
            self.source.emit("none", "Live updates stopped (see log)")
        finally:
            watcher.close()
            if consumer is not None:
                consumer.close()
            if self.publisher is not None:
                self.publisher.close(1.0)
                self.publisher = None

    def _emit_changes(self, ch: dbread.Changes):
        if ch.variables_changed:
            self.reload.emit()
        if ch.comments_changed:
            self.comments.emit()
        if ch.updates:
            self.updates.emit(ch.updates)

    def _handle_messages(self, msgs, watcher: dbread.DbChangeWatcher):
        runs = []
        reload = comments = False
        for kind, data in msgs:
            if kind in (UpdateKind.RUN_VALUES_UPDATED, UpdateKind.RUN_STATUS_CHANGED):
                try:
                    key = (normalize_proposal(data["proposal"]), int(data["run"]))
                except (KeyError, TypeError, ValueError):
                    continue
                if key not in runs:
                    runs.append(key)
            elif kind == UpdateKind.VARIABLES_CHANGED:
                reload = True
            elif kind == UpdateKind.COMMENT_CHANGED:
                if data.get("run") is not None and data.get("proposal") is not None:
                    try:
                        key = (normalize_proposal(data["proposal"]), int(data["run"]))
                    except (TypeError, ValueError):
                        continue
                    if key not in runs:
                        runs.append(key)
                else:
                    comments = True
        if reload:
            self.reload.emit()
        if comments:
            self.comments.emit()
        if runs:
            ups = [dbread.read_run_update(self.context_dir, p, r, watcher.con) for p, r in runs]
            self.updates.emit(ups)


class ThumbnailLoader(QThread):
    """Reads thumbnail PNGs from the database and decodes them (scaled to the row height) off
    the GUI thread; emits ``loaded(key, QImage)``. Requests are served newest first."""

    loaded = Signal(object, object)

    def __init__(self, context_dir: Path, parent=None):
        super().__init__(parent)
        self.context_dir = Path(context_dir)
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
            con = dbread.connect(self.context_dir)
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
                    png = dbread.read_thumbnail(con, *key)
                except Exception:
                    png = None
                img = QImage()
                if png:
                    img.loadFromData(png, "PNG")
                    if not img.isNull() and img.height() > height > 0:
                        img = img.scaledToHeight(height, Qt.SmoothTransformation)
                self.loaded.emit(key, img)
        finally:
            con.close()


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
        if callback is not None:
            callback(result, error)

    def wait(self, msecs: int = 5000) -> bool:
        return self.pool.waitForDone(msecs)
