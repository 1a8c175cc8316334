"""European XFEL's run announcements: the facility's Kafka events (docs/facility.md, section 2).

:func:`parse_facility_message` turns one message value into a :class:`~backend.sources.base.RunEvent`;
:class:`FacilityEventSource` consumes the configured topics and implements the
:class:`~backend.sources.base.RunSource` interface with explicit acknowledgement.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (OFFSET_INVALID, Consumer, KafkaError,
                             KafkaException, TopicPartition)

from backend.config import Config, ConfigError
from backend.kafkaclient import (FETCH_WAIT_MAX_MS, MAX_BATCH, OFFSET_RESET_ALIASES,
                                 SESSION_TIMEOUT_MS, Throttle, common_settings, record_time)
from backend.sources.base import MalformedEvent, RunEvent
from backend.vocab import normalize_proposal

log = logging.getLogger(__name__)

def _as_int(msg: dict, key: str) -> int:
    if key not in msg:
        raise MalformedEvent(f"missing field {key!r}")
    v = msg[key]
    if isinstance(v, bool):
        raise MalformedEvent(f"field {key!r} is not a number: {v!r}")
    if isinstance(v, int):
        return v
    if isinstance(v, str) and v.strip().isdigit():
        return int(v.strip())
    if isinstance(v, float) and v.is_integer():
        return int(v)
    raise MalformedEvent(f"field {key!r} is not a number: {v!r}")


def parse_facility_message(raw: bytes | str | None, event_kinds: dict[str, str], *,
                           source: str = "", timestamp: float | None = None,
                           location: str = "") -> RunEvent:
    """Turn a facility Kafka message value (JSON, docs/facility.md section 2) into a :class:`RunEvent`.

    ``event_kinds`` maps event names to ``"raw"``/``"proc"`` (configuration
    ``kafka.events``). Unknown events count as malformed for AMORE, so they are logged once.

    Raises :class:`MalformedEvent` if the value is not a JSON object, lacks ``event``,
    ``proposal`` or ``run``, has non-numeric ``proposal``/``run``, or names an unknown event.
    """
    if raw is None:
        raise MalformedEvent("empty message")
    try:
        msg = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MalformedEvent(f"not JSON: {e}") from None
    if not isinstance(msg, dict):
        raise MalformedEvent(f"not a JSON object: {type(msg).__name__}")
    ev = msg.get("event")
    if not isinstance(ev, str):
        raise MalformedEvent("missing field 'event'")
    if ev not in event_kinds:
        raise MalformedEvent(f"unknown event {ev!r}")
    proposal = _as_int(msg, "proposal")
    run = _as_int(msg, "run")
    if proposal <= 0 or run <= 0:
        raise MalformedEvent(f"proposal and run must be positive, got {proposal}, {run}")
    text = raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else str(raw)
    return RunEvent(proposal=proposal, run=run, data=event_kinds[ev], source=source,
                    timestamp=time.time() if timestamp is None else timestamp, event=ev,
                    location=location, message=text)



def _preview(value, limit: int = 2000) -> str | None:
    """The start of a message value as text, for the event log."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        value = value[:limit].decode("utf-8", "replace")
    return str(value)[:limit]


# ---------------------------------------------------------------------------------------------
# Facility run events

@dataclass(frozen=True)
class _AckToken:
    """Opaque acknowledgement token: which record to commit once the run is recorded."""
    topic: str
    partition: int
    offset: int


class FacilityEventSource:
    """The facility's run announcements for one proposal, from Kafka.

    Subscribes to ``config["kafka"]["event_topics"]`` in the consumer group
    ``config.consumer_group(db_id, proposal)`` (one group per AMORE database, so several AMORE
    instances each see every event). Messages are parsed with
    :func:`~backend.sources.base.parse_facility_message` using ``config.event_kinds()``.

    Delivery guarantee: at least once. Offsets are never committed automatically; an event's
    offset is committed only when :meth:`ack` is called with its token, i.e. after the listener
    recorded the run in the database. A listener that dies before that gets the event again
    after a restart. Acks may come in any order: the committed offset of a partition never passes
    an event that was not acknowledged yet (so every token must be acked eventually, even when
    processing the run failed - record the failure, then ack).

    Start position: a brand-new group starts at ``config["kafka"]["auto_offset_reset"]``
    (``"latest"``: only runs announced from now on; ``"earliest"``: all the broker still holds).
    That start position is committed at once, so an event announced after the first join is
    never lost, even if AMORE stops before acknowledging it.

    Raises :class:`ValueError` if no broker is configured or no event topic is set and
    :class:`~backend.config.ConfigError` for an invalid ``auto_offset_reset``. Construction does
    not contact the broker; the group is joined during :meth:`poll` / :meth:`wait_ready`
    (about 3 s).

    Not safe for concurrent :meth:`poll` from several threads; :meth:`ack` may be called from
    another thread.
    """

    #: which kind of source this is, in the event log
    source_name = "kafka"

    def __init__(self, config: Config, proposal: int | str, db_id: str,
                 topics: list[str] | None = None, on_problem=None):
        broker = config.broker
        if broker is None:
            raise ValueError("no Kafka broker configured (kafka.broker / $AMORE_BROKER)")
        kafka = config["kafka"]
        self.config = config
        #: :data:`backend.sources.base.ProblemCallback` for what people should see in the event
        #: log: skipped messages, a lost or restored broker (or None; the listener sets it)
        self.on_problem = on_problem
        self.topics: list[str] = list(kafka["event_topics"] if topics is None else topics)
        if not self.topics:
            raise ValueError("no facility event topics configured (kafka.event_topics)")
        reset = str(kafka.get("auto_offset_reset", "latest")).strip().lower()
        if reset not in OFFSET_RESET_ALIASES:
            raise ConfigError(f"kafka.auto_offset_reset must be 'latest' or 'earliest', "
                              f"not {kafka.get('auto_offset_reset')!r}")
        self.auto_offset_reset: str = OFFSET_RESET_ALIASES[reset]
        self.proposal = normalize_proposal(proposal)
        self.db_id = db_id
        self.group_id: str = config.consumer_group(db_id, self.proposal)
        self._kinds = config.event_kinds()
        self._op_timeout = max(float(kafka.get("connect_timeout", 5.0)), 1.0)

        self._lock = threading.Lock()
        # (topic, partition) -> {offset: done}, in offset order; entries of a partition are
        # removed from the front once done, and the commit position is advanced past them.
        self._pending: dict[tuple[str, int], dict[int, bool]] = {}
        self._commit_pos: dict[tuple[str, int], int] = {}   # next offset committed (or due)
        self._commit_due: dict[tuple[str, int], int] = {}   # commits that failed, to retry
        self._stash: list = []          # messages received while waiting to be ready
        self._ready = False
        self._closed = False
        self._unknown_topics_logged: set[str] = set()
        self._msg_errors = Throttle()
        self.broker = broker
        self._down = False

        settings = common_settings(broker, "event consumer", f"amore-listener-{db_id}")
        log_error = settings["error_cb"]

        def on_error(err: KafkaError) -> None:
            log_error(err)
            if err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
                self._lost(err.str())

        settings["error_cb"] = on_error
        self._next_probe = 0.0
        self._consumer = Consumer({
            **settings,
            "group.id": self.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": self.auto_offset_reset,
            "session.timeout.ms": SESSION_TIMEOUT_MS,
            "heartbeat.interval.ms": SESSION_TIMEOUT_MS // 3,
            "fetch.wait.max.ms": FETCH_WAIT_MAX_MS,
            "enable.partition.eof": False,
            # Bound the time a synchronous commit can block when the broker goes away.
            "socket.timeout.ms": 10000,
        })
        self._consumer.subscribe(self.topics, on_assign=self._on_assign,
                                 on_revoke=self._on_revoke, on_lost=self._on_revoke)

    # -- group membership ------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]):
        """Start each partition at its committed offset; for partitions the group never
        committed, resolve auto_offset_reset to a concrete offset now and commit it."""
        start = [TopicPartition(p.topic, p.partition, OFFSET_INVALID) for p in partitions]
        try:
            committed = consumer.committed(start, timeout=self._op_timeout) if start else []
        except KafkaException as e:
            log.warning("Could not read committed offsets of group %s: %s; starting at %r",
                        self.group_id, e, self.auto_offset_reset)
            committed = start
        fresh = []
        for tp in committed:
            if tp.offset >= 0 or tp.error is not None:
                continue
            try:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(tp.topic, tp.partition), timeout=self._op_timeout)
            except KafkaException as e:
                log.warning("Could not get offsets of %s [%d]: %s", tp.topic, tp.partition, e)
                continue
            tp.offset = high if self.auto_offset_reset == "latest" else low
            fresh.append(TopicPartition(tp.topic, tp.partition, tp.offset))
        consumer.assign(committed)
        if fresh:
            try:
                consumer.commit(offsets=fresh, asynchronous=False)
            except KafkaException as e:
                log.warning("Could not commit start offsets of group %s: %s", self.group_id, e)
        with self._lock:
            for tp in committed:
                key = (tp.topic, tp.partition)
                self._pending[key] = {}
                self._commit_due.pop(key, None)
                self._commit_pos[key] = tp.offset if tp.offset >= 0 else -1
            self._ready = True
        log.info("Kafka group %s: assigned %s", self.group_id,
                 ", ".join(f"{tp.topic}[{tp.partition}]@{tp.offset}" for tp in committed)
                 or "no partitions")

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]):
        with self._lock:
            for tp in partitions:
                key = (tp.topic, tp.partition)
                self._pending.pop(key, None)
                self._commit_pos.pop(key, None)
                self._commit_due.pop(key, None)
            self._ready = False
        log.info("Kafka group %s: partitions revoked (%d)", self.group_id, len(partitions))

    @property
    def ready(self) -> bool:
        """True once the group was joined and start offsets are fixed (events announced from
        then on will be delivered)."""
        return self._ready

    def wait_ready(self, timeout: float) -> bool:
        """Join the consumer group now: poll until partitions are assigned or ``timeout``
        seconds passed. Returns :attr:`ready`. Messages arriving meanwhile are kept for the
        next :meth:`poll`."""
        deadline = time.monotonic() + timeout
        while not self._ready and not self._closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            m = self._consumer.poll(min(remaining, 0.1))
            if m is not None:
                self._stash.append(m)
        return self._ready

    # -- consuming -------------------------------------------------------------------------

    def poll(self, timeout: float) -> list[tuple[RunEvent, Any]]:
        """Wait up to ``timeout`` seconds for run events of this proposal.

        Returns ``[(RunEvent, token), ...]`` (possibly empty) as soon as at least one event is
        there, together with all others already received (at most :data:`MAX_BATCH` messages
        per call). Pass each token to :meth:`ack` once the run is recorded.
        ``RunEvent.source`` is ``"kafka:<topic>[<partition>]@<offset>"``, ``timestamp`` the
        record's timestamp (Unix seconds), ``data`` ``"raw"``/``"proc"`` from the event name.

        Messages for other proposals are skipped; malformed messages (see
        :func:`~backend.sources.base.parse_facility_message`) are logged once at WARNING with
        topic, partition, offset and reason, and skipped. Skipped offsets are committed
        (asynchronously) once no unacknowledged event precedes them. Broker problems are logged,
        not raised. Raises RuntimeError after :meth:`close`.
        """
        if self._closed:
            raise RuntimeError("FacilityEventSource is closed")
        deadline = time.monotonic() + max(float(timeout), 0.0)
        events: list[tuple[RunEvent, Any]] = []
        while True:
            msgs, self._stash = self._stash, []
            if not msgs:
                m = self._consumer.poll(max(deadline - time.monotonic(), 0.0))
                if m is not None:
                    msgs.append(m)
            if msgs and len(msgs) < MAX_BATCH:
                msgs.extend(self._consumer.consume(MAX_BATCH - len(msgs), 0))
            events.extend(self._handle(msgs))
            if events or time.monotonic() >= deadline:
                break
        self._probe()
        self._retry_commits()
        return events

    def _handle(self, msgs) -> list[tuple[RunEvent, Any]]:
        events = []
        touched = set()
        with self._lock:
            for m in msgs:
                err = m.error()
                if err is not None:
                    self._message_error(m, err)
                    continue
                topic, part, off = m.topic(), m.partition(), m.offset()
                key = (topic, part)
                source = f"kafka:{topic}[{part}]@{off}"
                try:
                    ev = self._parse(m.value(), source, record_time(m), f"{topic}[{part}]@{off}")
                except MalformedEvent as e:
                    log.warning("Skipping malformed facility message on %s [%d] at offset %d: %s",
                                topic, part, off, e)
                    self._report_problem("warning", f"Malformed message on {topic} [{part}] at "
                                         f"offset {off} skipped: {e}",
                                         {"topic": topic, "partition": part, "offset": off,
                                          "reason": str(e), "value": _preview(m.value())})
                    ev = None

                pending = self._pending.setdefault(key, {})
                if ev is not None and ev.proposal == self.proposal:
                    pending[off] = False
                    events.append((ev, _AckToken(topic, part, off)))
                else:
                    if ev is not None:
                        log.debug("Ignoring %s for proposal %s (%s)", ev.event, ev.proposal, source)
                    pending[off] = True
                    touched.add(key)
            advances = {key: pos for key in touched
                        if (pos := self._advance(key)) is not None}
            if advances:
                self._commit(advances, asynchronous=True)
        return events

    def _lost(self, why: str) -> None:
        """The connection to the broker is gone: say so once (the event log)."""
        if not self._down:
            self._down = True
            self._next_probe = time.monotonic() + 2.0
            self._report_problem("warning", f"Lost the connection to Kafka broker {self.broker}: "
                                 f"{why}", {"broker": self.broker, "error": why})

    def _probe(self) -> None:
        """While the broker is gone, ask for its metadata every few seconds; say once when it
        answers again."""
        if not self._down or time.monotonic() < self._next_probe:
            return
        self._next_probe = time.monotonic() + 3.0
        try:
            md = self._consumer.list_topics(timeout=1.0)
        except KafkaException:
            return
        if md.brokers:
            self._down = False
            self._report_problem("info", f"Kafka broker {self.broker} is reachable again",
                                 {"broker": self.broker})

    def _report_problem(self, level: str, message: str, details: dict) -> None:
        """Tell people through :attr:`on_problem` (the listener's event log); never raises."""
        if self.on_problem is None:
            return
        try:
            self.on_problem(level, message, details)
        except Exception:
            log.exception("Could not report %r", message)

    def _parse(self, value: bytes | None, source: str, timestamp: float,
               location: str = "") -> RunEvent | None:
        """One message value -> a RunEvent (None: nothing for AMORE). Raises MalformedEvent.
        ``location`` (``topic[partition]@offset``) goes into the event for the run's snapshot."""
        return parse_facility_message(value, self._kinds, source=source, timestamp=timestamp,
                                      location=location)

    def _message_error(self, msg, err: KafkaError):
        topic = msg.topic()
        if err.code() == KafkaError._PARTITION_EOF:
            return
        if err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            self._lost(err.str())
        if err.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC):
            if topic not in self._unknown_topics_logged:
                self._unknown_topics_logged.add(topic)
                log.warning("Facility event topic %s does not exist (yet): %s", topic, err.str())
            return
        ok, suppressed = self._msg_errors(err.code())
        if ok:
            log.warning("Kafka error on %s: %s%s", topic, err.str(),
                        f" ({suppressed} similar)" if suppressed else "")

    def _advance(self, key) -> int | None:
        """Drop the done entries at the front of a partition's pending offsets; return the
        new commit position if it moved (call with the lock held)."""
        pending = self._pending.get(key)
        if not pending:
            return None
        last = None
        for off in list(pending):
            if not pending[off]:
                break
            del pending[off]
            last = off
        if last is None or last + 1 <= self._commit_pos.get(key, -1):
            return None
        self._commit_pos[key] = last + 1
        return last + 1

    def _commit(self, positions: dict[tuple[str, int], int], asynchronous: bool) -> bool:
        """Commit ``{(topic, partition): next_offset}`` (lock held). Failures are remembered and
        retried by the next poll."""
        offsets = [TopicPartition(t, p, o) for (t, p), o in positions.items()]
        try:
            res = self._consumer.commit(offsets=offsets, asynchronous=asynchronous)
        except KafkaException as e:
            self._commit_due.update(positions)
            ok, _ = self._msg_errors(("commit", e.args[0].code() if e.args else None))
            log.log(logging.WARNING if ok else logging.DEBUG,
                    "Could not commit Kafka offsets %s (will retry): %s",
                    ", ".join(f"{t}[{p}]@{o}" for (t, p), o in positions.items()), e)
            return False
        failed = [tp for tp in (res or []) if tp.error is not None]
        if failed:
            for tp in failed:
                self._commit_due[(tp.topic, tp.partition)] = tp.offset
            log.warning("Could not commit Kafka offsets: %s",
                        ", ".join(f"{tp.topic}[{tp.partition}]: {tp.error}" for tp in failed))
            return False
        for key in positions:
            if self._commit_due.get(key, -1) <= positions[key]:
                self._commit_due.pop(key, None)
        return True

    def _retry_commits(self):
        with self._lock:
            if self._commit_due:
                due, self._commit_due = dict(self._commit_due), {}
                self._commit(due, asynchronous=True)

    def ack(self, token: Any) -> bool:
        """Acknowledge an event returned by :meth:`poll`: its run is recorded.

        Commits ``offset + 1`` of its partition synchronously, unless an earlier event of the
        same partition is still unacknowledged (then the commit happens with that event's ack).
        Returns True if the acknowledgement was taken (and any due commit succeeded); False if
        the token is unknown (already acked, or its partition was reassigned to another group
        member - the event will be delivered again there) or the commit failed (logged, retried
        later; the event may be delivered again after a restart). Never raises for broker
        problems; a commit can block up to ~``session.timeout.ms`` (6 s) while the broker is
        unreachable.
        """
        if not isinstance(token, _AckToken):
            raise TypeError(f"not an ack token from FacilityEventSource.poll(): {token!r}")
        if self._closed:
            return False
        key = (token.topic, token.partition)
        with self._lock:
            pending = self._pending.get(key)
            if pending is None or pending.get(token.offset) is not False:
                log.debug("Ack for unknown or already acknowledged %s", token)
                return False
            pending[token.offset] = True
            pos = self._advance(key)
            if pos is None:
                return True
            return self._commit({key: pos}, asynchronous=False)

    # -- RunSource interface -------------------------------------------------------------
    @property
    def name(self) -> str:
        return f"kafka {self.broker}"

    def start(self, on_event) -> None:
        """Poll in a thread of its own and call ``on_event(event, token)`` for every run event;
        the caller acknowledges with :meth:`ack` once the run is recorded. An event whose callback
        raises is not acknowledged (it is delivered again after a restart)."""
        self._stop_polling = threading.Event()

        def loop():
            while not self._stop_polling.is_set():
                try:
                    events = self.poll(0.2)
                except Exception:
                    log.exception("Polling Kafka failed; retrying")
                    self._stop_polling.wait(1)
                    continue
                for ev, token in events:
                    if self._stop_polling.is_set():
                        return
                    try:
                        on_event(ev, token)
                    except Exception:
                        log.exception("Could not record %s; not acknowledged", ev)

        self._poll_thread = threading.Thread(target=loop, name="kafka-events", daemon=True)
        self._poll_thread.start()

    def stop(self) -> None:
        """Stop polling (no callbacks after this returns, unless one is running past 10 s),
        then :meth:`close`."""
        stop = getattr(self, "_stop_polling", None)
        if stop is not None:
            stop.set()
            self._poll_thread.join(timeout=10)
        self.close()

    def close(self):
        """Leave the consumer group (other members take over at once). Unacknowledged events
        stay uncommitted and are delivered again. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._retry_commits()
            self._consumer.close()
        except (KafkaException, RuntimeError) as e:
            log.warning("Closing the Kafka event consumer: %s", e)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


