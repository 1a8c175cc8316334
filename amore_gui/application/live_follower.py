"""Following one context directory's changes live, without Qt (any front-end; a thread of its own).

:class:`LiveFollower` learns what changed in ``runs.sqlite`` and tells its listeners through
plain-Python events (:mod:`amore_gui.application.events`):

* through AMORE's **Kafka** update messages (:class:`backend.notify.kafka.UpdateConsumer`) when
  a broker is configured and reachable; the changed runs are then read from the database;
* otherwise by **watching the database** (``PRAGMA data_version``, :class:`~amore_gui.application.
  dbread.DbChangeWatcher`) every :attr:`LiveFollower.POLL_DB` seconds;
* while Kafka is used, the database is still checked every :attr:`LiveFollower.BACKSTOP`
  seconds (messages can be lost), continuously while the broker is unreachable, and in full after
  the consumer reconnected (catch-up after an outage);
* at the start it catches up with what changed since the table was read (``ready`` then).

It also reports the backend's state every :attr:`LiveFollower.POLL_BACKEND` seconds and
publishes the front-end's own announcements (edits) on Kafka when that is the source.

Events (arguments in brackets), emitted **in the follower's thread** — a listener hands them to
its own thread or event loop:

``source(str, str)``   live-update source: mode (``kafka``, ``db`` or ``none``), one line of text
``updates(list)``      :class:`~amore_gui.application.table_data.RunUpdate` s of changed runs
``reload()``           variable definitions changed: read the whole table again
``comments()``         standalone (logbook) comments changed
``backend(BackendIndicator)``  the backend's state (:mod:`amore_gui.application.backend_status`)
``ready()``            caught up with the changes made since the table was read
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from amore_gui.application import dbread
from amore_gui.application.backend_status import backend_status
from amore_gui.application.events import EventGroup
from backend.vocab import UpdateKind, normalize_proposal

log = logging.getLogger(__name__)


class LiveFollower:
    """Live updates of one context directory (see module docstring).

    ``baseline``: the :class:`~amore_gui.application.dbread.LoadResult` the front-end shows
    (its ``data.max_timestamp``, ``runs``, ``variables_sig`` and ``comments_sig`` tell what is
    already known). ``db_id``: the database's id (``metadata["db_id"]``, names the Kafka topic).
    ``use_kafka``: False to watch the database only.
    """

    EVENTS = ("source", "updates", "reload", "comments", "backend", "ready")
    POLL_DB = 0.25         # seconds between data_version checks without Kafka
    POLL_BACKEND = 5.0     # seconds between backend status checks
    BACKSTOP = 5.0         # seconds between database checks while Kafka is used

    def __init__(self, context_dir, baseline: dbread.LoadResult, db_id: str | None,
                 use_kafka: bool = True):
        self.context_dir = Path(context_dir)
        self.baseline = baseline
        self.db_id = db_id
        self.use_kafka = use_kafka
        self.events = EventGroup(*self.EVENTS)
        #: ``kafka``, ``db`` or ``none`` once started
        self.mode: str | None = None
        self._publisher = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    # -- control (any thread) ----------------------------------------------------------------
    def start(self) -> None:
        """Start following in a daemon thread."""
        self._thread = threading.Thread(target=self.run, name=f"live {self.context_dir.name}",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop following and wait up to ``timeout`` seconds for the thread to end."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def poke(self) -> None:
        """Check the database now (after this front-end wrote to it)."""
        self._wake.set()

    def publish(self, kind: str, data: dict) -> bool:
        """Announce a change this front-end made (on Kafka only: database watchers see it
        anyway). Returns True if it was handed to the broker client. Thread-safe."""
        p = self._publisher
        return bool(p is not None and p.publish(kind, data))

    # -- the thread --------------------------------------------------------------------------
    def _kafka(self):
        """(consumer, publisher, broker) when a broker is configured and reachable, else
        (None, None, why-not text)."""
        from backend.config import load_config
        cfg = load_config(self.context_dir)
        if not cfg.broker or not self.db_id:
            return None, None, "no broker configured"
        from backend import kafkaclient
        from backend.notify import kafka
        if not kafkaclient.broker_reachable(cfg.broker, float(cfg["kafka"]["connect_timeout"])):
            return None, None, "broker not reachable"
        return kafka.UpdateConsumer(cfg, self.db_id), kafka.UpdatePublisher(cfg, self.db_id), \
            cfg.broker

    def _set_source(self, mode: str, text: str) -> None:
        self.mode = mode
        self.events.source.emit(mode, text)

    def run(self) -> None:
        """The follower's loop (runs until :meth:`stop`); called by :meth:`start`."""
        b = self.baseline
        try:
            watcher = dbread.DbChangeWatcher(self.context_dir, b.data.max_timestamp, b.runs,
                                             b.variables_sig, b.comments_sig)
        except Exception as e:
            self._set_source("none", f"No live updates ({e})")
            return
        consumer, why = None, "not used"
        if self.use_kafka:
            try:
                consumer, self._publisher, why = self._kafka()
            except Exception as e:     # Kafka problems never stop the front-end
                log.warning("Kafka unavailable for live updates: %s", e)
                consumer, why = None, "broker not usable"
        broker = why if consumer is not None else None
        if consumer is not None:
            self._set_source("kafka", f"Live: Kafka {broker}")
        else:
            self._set_source("db", f"Live: watching runs.sqlite ({why})")
        self._emit(watcher.poll(force=True))
        self.events.ready.emit()
        next_backend = next_backstop = 0.0
        kafka_state, seen_reconnects = "connected", 0
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= next_backend:
                    self.events.backend.emit(backend_status(self.context_dir))
                    next_backend = now + self.POLL_BACKEND
                if consumer is None:
                    self._emit(watcher.poll())
                    self._wake.wait(self.POLL_DB)
                    self._wake.clear()
                    continue
                msgs = consumer.poll(0.25)
                if self._stop.is_set():
                    break
                if msgs:
                    self._messages(msgs, watcher)
                state = getattr(consumer, "state", "connected")
                if state != kafka_state:
                    kafka_state = state
                    self._set_source("kafka", f"Live: Kafka {broker}" + (
                        " (unreachable: reconnecting; reading runs.sqlite meanwhile)"
                        if state == "reconnecting" else ""))
                reconnects = getattr(consumer, "reconnects", 0)
                woken = self._wake.is_set()
                self._wake.clear()
                if reconnects != seen_reconnects:       # back after an outage: catch up
                    seen_reconnects = reconnects
                    self._emit(watcher.poll(force=True))
                elif state == "reconnecting" or woken or now >= next_backstop:
                    # the broker is away, this front-end wrote, or messages may have been lost
                    self._emit(watcher.poll())
                if now >= next_backstop:
                    next_backstop = now + self.BACKSTOP
        except Exception:
            log.exception("Live updates of %s stopped", self.context_dir)
            self._set_source("none", "Live updates stopped (see log)")
        finally:
            watcher.close()
            if consumer is not None:
                consumer.close()
            if self._publisher is not None:
                self._publisher.close(1.0)
                self._publisher = None

    def _emit(self, ch: dbread.Changes) -> None:
        if ch.variables_changed:
            self.events.reload.emit()
        if ch.comments_changed:
            self.events.comments.emit()
        if ch.updates:
            self.events.updates.emit(ch.updates)

    def _messages(self, msgs, watcher: dbread.DbChangeWatcher) -> None:
        """Update messages -> events; the runs they name are read from the database."""
        keys: list[tuple] = []
        reload = comments = False
        for kind, data in msgs:
            if kind == UpdateKind.VARIABLES_CHANGED:
                reload = True
                continue
            if kind not in (UpdateKind.RUN_VALUES_UPDATED, UpdateKind.RUN_STATUS_CHANGED,
                            UpdateKind.COMMENT_CHANGED):
                continue
            if kind == UpdateKind.COMMENT_CHANGED and (data.get("run") is None
                                                       or data.get("proposal") is None):
                comments = True       # a logbook comment
                continue
            try:
                key = (normalize_proposal(data["proposal"]), int(data["run"]))
            except (KeyError, TypeError, ValueError):
                continue
            if key not in keys:
                keys.append(key)
        if reload:
            self.events.reload.emit()
        if comments:
            self.events.comments.emit()
        if keys:
            self.events.updates.emit([dbread.read_run_update(self.context_dir, p, r, watcher.con)
                                      for p, r in keys])
