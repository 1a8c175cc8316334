"""Following one database's changes live, without Qt: the live-update policy of every front-end.

:class:`LiveUpdates` decides where changes come from and turns them into table updates:

* **Kafka** when a broker is configured (``[kafka] broker`` / ``$AMORE_BROKER``) and reachable:
  AMORE's update messages (:class:`backend.notify.kafka.UpdateConsumer`) name the runs that
  changed; their rows are then read from ``runs.sqlite``. The database is still checked every
  :attr:`LiveUpdates.BACKSTOP` seconds (messages can be lost: a broker that restarted without
  its topics), continuously while the broker is unreachable (status ``reconnecting``), once
  more in full after the broker is back (catch-up: what the messages missed) and whenever
  :meth:`LiveUpdates.poke` is called (this front-end wrote something).
* **Database watching** otherwise: ``PRAGMA data_version`` is polled every
  :attr:`LiveUpdates.POLL_DB` seconds (:class:`~amore_gui.application.dbread.DbChangeWatcher`).

Either way it first catches up with what changed since the table was read (``ready`` follows),
and checks the backend's state every :attr:`LiveUpdates.POLL_BACKEND` seconds.

A front-end runs :meth:`LiveUpdates.run` (blocking, until :meth:`LiveUpdates.stop`) in a thread
of its own - Qt: a ``QThread`` (:class:`amore_gui._qt.workers.UpdateThread`); asyncio:
``await asyncio.to_thread(live.run)`` - and connects to ``live.events`` (an
:class:`~amore_gui.application.events.EventGroup`). **Events are emitted in the thread that
runs** :meth:`LiveUpdates.run`: hand them over to the front-end's own thread (Qt: signals;
asyncio: ``loop.call_soon_threadsafe``). Events (arguments in brackets):

``source(str, str)``   where updates come from: mode (``kafka``/``db``/``none``), status-bar text
                       (says ``reconnecting`` while the broker is away)
``updates(list)``      :class:`~amore_gui.application.table_data.RunUpdate` s to apply
``reload()``           the variables (columns) changed: read the whole table again
``comments()``         the logbook (standalone comments) changed
``backend(BackendIndicator)``  the backend's state (:mod:`amore_gui.application.backend_status`)
``ready()``            caught up with the changes made since the table was read
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from backend.vocab import UpdateKind, normalize_proposal

from amore_gui.application import dbread
from amore_gui.application.backend_status import backend_status
from amore_gui.application.events import EventGroup

log = logging.getLogger(__name__)

#: Modes of the ``source`` event.
KAFKA, DB, NONE = "kafka", "db", "none"


def _connect_kafka(context_dir: Path, db_id: str | None):
    """(consumer, publisher, config) of the update messages of ``db_id``; consumer and
    publisher are None without a configured, reachable broker (config None if it could not be
    read). May block up to ``[kafka] connect_timeout`` seconds."""
    from backend.config import load_config
    cfg = load_config(context_dir)
    if not cfg.broker or not db_id:
        return None, None, cfg
    from backend import kafkaclient
    from backend.notify import kafka
    if not kafkaclient.broker_reachable(cfg.broker, float(cfg["kafka"]["connect_timeout"])):
        return None, None, cfg
    return kafka.UpdateConsumer(cfg, db_id), kafka.UpdatePublisher(cfg, db_id), cfg


def _kafka_text(broker: str, reconnecting: bool = False) -> str:
    """Status-bar text of Kafka mode: how updates arrive, in plain words."""
    if reconnecting:
        return (f"Live: Kafka broker {broker} unreachable, reconnecting; updates arrive from "
                "database changes meanwhile")
    return f"Live: updates arrive over Kafka (broker {broker})"


def _db_text(why: str) -> str:
    """Status-bar text of database-watching mode (``why``: why not Kafka)."""
    return (f"Live: updates arrive from database changes (runs.sqlite checked every "
            f"{LiveUpdates.POLL_DB:g} s; {why})")


class LiveUpdates:
    """The live updates of one context directory (see module docstring).

    ``context_dir``: the context directory. ``db_id``: the database's id (``metadata`` table;
    names the Kafka update topic; None: database watching only). ``since``: Unix time the
    table was read at (values stored after it are new). ``runs``, ``variables_sig``,
    ``comments_sig``, ``runs_stamp``: what the table was read with
    (:class:`~amore_gui.application.dbread.LoadResult`), the baseline changes are found
    against (``runs_stamp`` None: the database has no change stamps, or not known: ``runs``
    is the baseline). ``use_kafka``: False forces database watching.

    Construction does no I/O; :meth:`run` does all of it. Thread-safe: :meth:`stop`,
    :meth:`poke` and :meth:`publish`; everything else belongs to the thread running :meth:`run`.
    """

    EVENTS = ("source", "updates", "reload", "comments", "backend", "ready")

    POLL_DB = 0.25         #: seconds between data_version checks without Kafka
    POLL_BACKEND = 5.0     #: seconds between backend status checks
    BACKSTOP = 5.0         #: seconds between database checks while Kafka is used
    POLL_KAFKA = 0.25      #: longest wait for update messages (how fast stop() is noticed)

    def __init__(self, context_dir, db_id: str | None, since: float, runs: dict,
                 variables_sig: str, comments_sig: tuple, use_kafka: bool = True,
                 runs_stamp: int | None = None):
        self.context_dir = Path(context_dir)
        self.db_id = db_id
        self.since = since
        self.runs = runs
        self.variables_sig = variables_sig
        self.comments_sig = comments_sig
        self.runs_stamp = runs_stamp
        self.use_kafka = use_kafka
        self.events = EventGroup(*self.EVENTS)
        #: ``kafka``, ``db`` or ``none`` once :meth:`run` decided (None before)
        self.mode: str | None = None
        #: the broker connection's state in Kafka mode: ``connected`` or ``reconnecting``
        self.kafka_state = "connected"
        self.publisher = None
        self._stop = threading.Event()
        self._wake = threading.Event()

    @classmethod
    def from_load(cls, context_dir, loaded: "dbread.LoadResult", since: float,
                  use_kafka: bool = True) -> "LiveUpdates":
        """Live updates continuing from a table read by :func:`dbread.iter_load` /
        :func:`dbread.load_table` that started at Unix time ``since``."""
        return cls(context_dir, loaded.metadata.get("db_id"), since, loaded.runs,
                   loaded.variables_sig, loaded.comments_sig, use_kafka=use_kafka,
                   runs_stamp=loaded.runs_stamp)

    # -- called from any thread ----------------------------------------------------------------
    def stop(self) -> None:
        """Make :meth:`run` return soon (within about :attr:`POLL_KAFKA` seconds)."""
        self._stop.set()
        self._wake.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def poke(self) -> None:
        """Check the database now (this front-end just wrote to it)."""
        self._wake.set()

    def publish(self, kind: str, data: dict) -> bool:
        """Announce a change this front-end made (an update message, Kafka mode only; database
        watchers see it anyway). Returns True if queued. Never blocks long, never raises."""
        p = self.publisher
        if p is None:
            return False
        return p.publish(kind, data)

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> None:
        """Follow the changes until :meth:`stop` (blocking; see module docstring). Never
        raises: a failure ends with ``source("none", ...)``."""
        ev = self.events
        try:
            watcher = dbread.DbChangeWatcher(self.context_dir, self.since, self.runs,
                                             self.variables_sig, self.comments_sig,
                                             self.runs_stamp)
            self.runs = None      # the watcher keeps what it needs of the table as read
        except Exception as e:
            self.mode = NONE
            ev.source.emit(NONE, f"No live updates: the table stays as it was read ({e})")
            return
        consumer = cfg = None
        if self.use_kafka:
            try:
                consumer, self.publisher, cfg = _connect_kafka(self.context_dir, self.db_id)
            except Exception as e:      # never let Kafka problems stop the live updates
                log.warning("Kafka unavailable for live updates: %s", e)
                consumer = None
        if consumer is not None:
            self.mode = KAFKA
            ev.source.emit(KAFKA, _kafka_text(cfg.broker))
        else:
            self.mode = DB
            why = ("Kafka switched off" if not self.use_kafka else
                   "no Kafka broker configured" if cfg is None or not cfg.broker else
                   "Kafka broker not reachable")
            ev.source.emit(DB, _db_text(why))
        try:
            # catch up with what changed since the table was read
            self._emit_changes(watcher.poll(force=True))
            ev.ready.emit()
            if consumer is not None:
                self._follow_kafka(consumer, cfg, watcher)
            else:
                self._follow_db(watcher)
        except Exception:
            log.exception("Live updates stopped")
            self.mode = NONE
            ev.source.emit(NONE, "Live updates stopped (see the log): the table may be out of date")
        finally:
            watcher.close()
            if consumer is not None:
                consumer.close()
            if self.publisher is not None:
                self.publisher.close(1.0)
                self.publisher = None

    def _check_backend(self, now: float, due: float) -> float:
        if now >= due:
            self.events.backend.emit(backend_status(self.context_dir))
            return now + self.POLL_BACKEND
        return due

    def _follow_db(self, watcher: dbread.DbChangeWatcher) -> None:
        next_backend = 0.0
        while not self._stop.is_set():
            next_backend = self._check_backend(time.monotonic(), next_backend)
            self._emit_changes(watcher.poll())
            self._wake.wait(self.POLL_DB)
            self._wake.clear()

    def _follow_kafka(self, consumer, cfg, watcher: dbread.DbChangeWatcher) -> None:
        next_backend = 0.0
        seen_reconnects = 0
        next_backstop = time.monotonic() + self.BACKSTOP
        while not self._stop.is_set():
            now = time.monotonic()
            next_backend = self._check_backend(now, next_backend)
            msgs = consumer.poll(self.POLL_KAFKA)
            if self._stop.is_set():
                break
            if msgs:
                self._handle_messages(msgs, watcher)
            state = getattr(consumer, "state", "connected")
            if state != self.kafka_state:
                self.kafka_state = state
                self.events.source.emit(KAFKA, _kafka_text(cfg.broker,
                                                           state == "reconnecting"))
            if state == "reconnecting":
                # the broker is away: the database still tells what changed
                self._emit_changes(watcher.poll())
            if now >= next_backstop:
                # Messages can be lost (a broker that restarted without its topics): the
                # database is checked now and then anyway (cheap when unchanged).
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

    def _emit_changes(self, ch: dbread.Changes) -> None:
        if ch.variables_changed:
            self.events.reload.emit()
        if ch.comments_changed:
            self.events.comments.emit()
        if ch.updates:
            self.events.updates.emit(ch.updates)

    def _handle_messages(self, msgs, watcher: dbread.DbChangeWatcher) -> None:
        """Update messages ``[(kind, data)]`` -> events; changed runs are read from the
        database on the watcher's connection."""
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
            watcher.refresh_current()    # run updates read from now on compare with it
            self.events.reload.emit()
        if comments:
            self.events.comments.emit()
        if runs:
            ups = [dbread.read_run_update(self.context_dir, p, r, watcher.con, watcher.current)
                   for p, r in runs]
            self.events.updates.emit(ups)
