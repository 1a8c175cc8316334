"""Kafka connections of AMORE: facility run events in, AMORE's own update messages out.

* :func:`broker_reachable` - quick start-up check deciding between online and offline mode.
* :class:`FacilityEventSource` - consumes the facility's run announcements (FACILITY.md section 2;
  topics and event names from ``config["kafka"]``) and turns them into :class:`~backend.events.RunEvent`
  records, with explicit acknowledgement so that a restart never loses an announced run.
* :class:`UpdatePublisher` - the backend tells GUIs "run X has new values" (names only, never
  values; readers take values from the database).
* :class:`UpdateConsumer` - the GUI side (and tests) of those update messages.

Broker problems never raise out of the publisher and never spam the log: librdkafka's own log
lines go to the ``backend.kafka.librdkafka`` logger (DEBUG, the first of each kind per minute at
INFO) and client errors (broker down, ...) to ``backend.kafka`` at WARNING, at most once a minute
per error kind.
"""
from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (OFFSET_END, OFFSET_INVALID, TIMESTAMP_NOT_AVAILABLE, Consumer, KafkaError,
                             KafkaException, Producer, TopicPartition)
from confluent_kafka.admin import AdminClient, NewTopic

from .config import Config, ConfigError
from .events import (MalformedEvent, RunEvent, make_update_message, parse_facility_message,
                     parse_update_message)

log = logging.getLogger(__name__)

#: Consumer group session timeout. librdkafka's default (45 s) makes a group join take ~23 s on
#: small brokers; 6 s gives ~3 s and still tolerates short hiccups.
SESSION_TIMEOUT_MS = 6000
#: Longest time the broker may hold a fetch request open when it has no data. Kafka answers as
#: soon as data arrives; brokers that don't long-poll add at most this to the event latency.
FETCH_WAIT_MAX_MS = 50
#: Seconds a published update may wait for the broker before it is dropped (and logged).
MESSAGE_TIMEOUT_S = 30.0
#: Most messages handled by one ``poll()`` call.
MAX_BATCH = 500
#: Seconds between two WARNINGs about the same kind of broker error.
ERROR_LOG_INTERVAL = 60.0

_OFFSET_RESET_ALIASES = {
    "latest": "latest", "largest": "latest", "end": "latest",
    "earliest": "earliest", "smallest": "earliest", "beginning": "earliest",
}


# ---------------------------------------------------------------------------------------------
# Logging helpers

class _Throttle:
    """Say whether a message of a given kind may be logged now (at most once per interval)."""

    def __init__(self, interval: float = ERROR_LOG_INTERVAL):
        self.interval = interval
        self._last: dict[Any, float] = {}
        self._suppressed: dict[Any, int] = {}
        self._lock = threading.Lock()

    def __call__(self, key) -> tuple[bool, int]:
        """Returns ``(log_it, n_suppressed_since_last)``."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is None or now - last >= self.interval:
                self._last[key] = now
                return True, self._suppressed.pop(key, 0)
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False, 0


class _LibrdkafkaLog:
    """Logger-like object for confluent-kafka's ``logger`` setting.

    librdkafka logs every failed connection attempt (several per second while a broker is down);
    lines go to DEBUG, the first of each facility per minute to INFO.
    """

    def __init__(self):
        self._log = logging.getLogger(f"{__name__}.librdkafka")
        self._throttle = _Throttle()

    def log(self, level, msg, *args):
        facility = args[0] if args else msg
        ok, _ = self._throttle(facility)
        self._log.log(logging.INFO if ok else logging.DEBUG, msg, *args)


class _NullLog:
    def log(self, *args, **kwargs):
        pass


def _error_callback(client: str):
    throttle = _Throttle()

    def on_error(err: KafkaError):
        ok, suppressed = throttle(err.code())
        if ok:
            more = f" ({suppressed} similar since last report)" if suppressed else ""
            log.warning("Kafka %s: %s%s", client, err.str(), more)
        else:
            log.debug("Kafka %s: %s", client, err.str())
    return on_error


def _common_settings(broker: str, client: str, client_id: str) -> dict:
    return {
        "bootstrap.servers": broker,
        "client.id": client_id,
        "logger": _LibrdkafkaLog(),
        "error_cb": _error_callback(client),
        # A dead broker is retried every few seconds, not every 10 s at the end of the backoff.
        "reconnect.backoff.max.ms": 2000,
    }


def _split_bootstrap(broker: str) -> list[tuple[str, int]]:
    """``"h1:9092,[::1]:9093"`` -> ``[("h1", 9092), ("::1", 9093)]``; ValueError if malformed."""
    out = []
    for item in broker.split(","):
        item = item.strip()
        if "://" in item:
            item = item.split("://", 1)[1]
        host, sep, port = item.rpartition(":")
        if not sep or not host:
            raise ValueError(f"bad broker address {item!r} (expected host:port)")
        out.append((host.strip("[]"), int(port)))
    if not out:
        raise ValueError("empty broker address")
    return out


# ---------------------------------------------------------------------------------------------
# Broker check and topics

def broker_reachable(broker: str | None, timeout: float) -> bool:
    """True if the Kafka broker ``broker`` (``host:port[,host:port...]``) answers a metadata
    request within ``timeout`` seconds.

    Never raises and returns within about ``timeout`` seconds: unreachable or malformed addresses,
    refused connections and timeouts all give False (refused connections at once, without waiting
    for the timeout). librdkafka's logging is silenced for this probe, so an offline start prints
    nothing.
    """
    if not broker:
        return False
    deadline = time.monotonic() + max(float(timeout), 0.0)
    try:
        addresses = _split_bootstrap(broker)
    except ValueError:
        return False
    # Cheap TCP pre-check: fail fast when nothing listens (the usual offline case).
    for host, port in addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        try:
            socket.create_connection((host, port), timeout=remaining).close()
            break
        except OSError:
            continue
    else:
        return False
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return False
    try:
        admin = AdminClient({
            "bootstrap.servers": broker,
            "log_level": 0,
            "logger": _NullLog(),
            "error_cb": lambda err: None,
            "socket.connection.setup.timeout.ms": max(1000, int(remaining * 1000)),
        })
        md = admin.list_topics(timeout=max(remaining, 0.001))
        return bool(md.brokers)
    except Exception:  # KafkaException, bad settings...
        return False


def _ensure_topic(admin: AdminClient, topic: str, timeout: float, partitions: int = 1) -> bool:
    """Create ``topic`` (``partitions`` partitions, the broker's default replication factor)
    unless it exists. Returns True if the topic exists afterwards, False (logged) if the broker
    did not answer within about ``timeout`` seconds or refused.

    Existence is checked with an all-topics metadata request: asking for the topic by name
    would let brokers with ``auto.create.topics.enable`` create it with their default number
    of partitions.
    """
    deadline = time.monotonic() + max(timeout, 0.001)
    try:
        md = admin.list_topics(timeout=max(timeout, 0.001))
    except KafkaException as e:
        log.warning("Could not check Kafka topic %s: %s", topic, e)
        return False
    t = md.topics.get(topic)
    if t is not None and t.error is None and t.partitions:
        return True
    remaining = max(deadline - time.monotonic(), 0.5)
    try:
        fut = admin.create_topics([NewTopic(topic, num_partitions=partitions)],
                                  request_timeout=remaining)[topic]
        fut.result(timeout=remaining)
        log.info("Created Kafka topic %s", topic)
        return True
    except KafkaException as e:
        if e.args and e.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
            return True
        log.warning("Could not create Kafka topic %s: %s", topic, e)
    except Exception as e:  # concurrent.futures.TimeoutError
        log.warning("Could not create Kafka topic %s: %s", topic, e or type(e).__name__)
    return False


def _record_time(msg) -> float:
    """The record timestamp of a confluent-kafka message in Unix seconds (now if it has none)."""
    ts_type, ts_ms = msg.timestamp()
    if ts_type == TIMESTAMP_NOT_AVAILABLE or ts_ms is None or ts_ms < 0:
        return time.time()
    return ts_ms / 1000.0


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
    :func:`~backend.events.parse_facility_message` using ``config.event_kinds()``.

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

    def __init__(self, config: Config, proposal: int, db_id: str):
        broker = config.broker
        if broker is None:
            raise ValueError("no Kafka broker configured (kafka.broker / $AMORE_BROKER)")
        kafka = config["kafka"]
        self.topics: list[str] = list(kafka["event_topics"])
        if not self.topics:
            raise ValueError("no facility event topics configured (kafka.event_topics)")
        reset = str(kafka.get("auto_offset_reset", "latest")).strip().lower()
        if reset not in _OFFSET_RESET_ALIASES:
            raise ConfigError(f"kafka.auto_offset_reset must be 'latest' or 'earliest', "
                              f"not {kafka.get('auto_offset_reset')!r}")
        self.auto_offset_reset: str = _OFFSET_RESET_ALIASES[reset]
        self.proposal = int(proposal)
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
        self._msg_errors = _Throttle()

        self._consumer = Consumer({
            **_common_settings(broker, "event consumer", f"amore-listener-{db_id}"),
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
        :func:`~backend.events.parse_facility_message`) are logged once at WARNING with
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
                    ev = parse_facility_message(m.value(), self._kinds, source=source,
                                                timestamp=_record_time(m))
                except MalformedEvent as e:
                    log.warning("Skipping malformed facility message on %s [%d] at offset %d: %s",
                                topic, part, off, e)
                    ev = None
                pending = self._pending.setdefault(key, {})
                if ev is not None and ev.proposal == self.proposal:
                    pending[off] = False
                    events.append((ev, _AckToken(topic, part, off)))
                else:
                    if ev is not None:
                        log.debug("Ignoring %s for proposal %d (%s)", ev.event, ev.proposal, source)
                    pending[off] = True
                    touched.add(key)
            advances = {key: pos for key in touched
                        if (pos := self._advance(key)) is not None}
            if advances:
                self._commit(advances, asynchronous=True)
        return events

    def _message_error(self, msg, err: KafkaError):
        topic = msg.topic()
        if err.code() == KafkaError._PARTITION_EOF:
            return
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


# ---------------------------------------------------------------------------------------------
# AMORE's update messages

class UpdatePublisher:
    """Sends AMORE's update messages (:func:`~backend.events.make_update_message`) to
    ``config.update_topic(db_id)``.

    The topic is created (1 partition) if missing; the constructor waits for that at most
    ``config["kafka"]["connect_timeout"]`` seconds and never raises for broker problems.
    Messages are sent without lingering (they leave within milliseconds). If ``config.broker``
    is None the publisher is disabled (:attr:`enabled` False) and every method is a no-op.

    Delivery failures (broker down for more than :data:`MESSAGE_TIMEOUT_S`, ...) are logged and
    counted in :attr:`failed`, never raised: the listener keeps running without a broker.
    Thread-safe.
    """

    def __init__(self, config: Config, db_id: str):
        self.topic: str = config.update_topic(db_id)
        # One key for all messages: one partition, so readers see them in order even if a site
        # created the topic with several partitions.
        self._key = db_id.encode()
        self.delivered = 0   #: messages acknowledged by the broker
        self.failed = 0      #: messages given up (delivery failure, full queue, ...)
        self._throttle = _Throttle()
        self._producer = None
        broker = config.broker
        if broker is None:
            return
        timeout = float(config["kafka"].get("connect_timeout", 5.0))
        settings = _common_settings(broker, "update publisher", f"amore-publisher-{db_id}")
        self._producer = Producer({
            **settings,
            "linger.ms": 0,
            "acks": 1,
            "allow.auto.create.topics": False,
            "message.timeout.ms": int(MESSAGE_TIMEOUT_S * 1000),
            "queue.buffering.max.messages": 10000,
        })
        admin = AdminClient({k: v for k, v in settings.items() if k != "client.id"})
        _ensure_topic(admin, self.topic, timeout)

    @property
    def enabled(self) -> bool:
        """False when no broker is configured (or after :meth:`close`)."""
        return self._producer is not None

    def _on_delivery(self, err, msg):
        if err is None:
            self.delivered += 1
            return
        self.failed += 1
        ok, suppressed = self._throttle(err.code())
        log.log(logging.WARNING if ok else logging.DEBUG,
                "Update message to %s not delivered: %s%s", self.topic, err.str(),
                f" ({suppressed} more since last report)" if suppressed else "")

    def publish(self, kind: str, data: dict) -> bool:
        """Queue the update message ``kind``/``data`` (JSON-serialisable; names, not values)
        for sending. Returns True if queued (delivery happens in the background), False if the
        publisher is disabled or the message could not be queued (logged). Never raises."""
        if self._producer is None:
            return False
        try:
            value = make_update_message(kind, data)
        except (TypeError, ValueError):
            log.exception("Update message %r cannot be serialised; not sent", kind)
            self.failed += 1
            return False
        try:
            self._producer.produce(self.topic, value, key=self._key,
                                   on_delivery=self._on_delivery)
        except BufferError:
            self._producer.poll(0)
            self.failed += 1
            ok, _ = self._throttle("queue full")
            log.log(logging.WARNING if ok else logging.DEBUG,
                    "Update message queue full (broker unreachable?); dropping %r", kind)
            return False
        except KafkaException as e:
            self.failed += 1
            log.warning("Update message %r not sent: %s", kind, e)
            return False
        finally:
            # Serve delivery reports and logs of earlier messages.
            self._producer.poll(0)
        return True

    def flush(self, timeout: float = 5.0) -> int:
        """Wait up to ``timeout`` seconds for queued messages to be delivered. Returns the number
        still queued (0 = all sent, or disabled)."""
        if self._producer is None:
            return 0
        return self._producer.flush(max(float(timeout), 0.0))

    def close(self, timeout: float = 2.0):
        """Flush (at most ``timeout`` seconds), drop what the broker did not take (logged), and
        release the connection. Idempotent."""
        producer, self._producer = self._producer, None
        if producer is None:
            return
        left = producer.flush(max(float(timeout), 0.0))
        if left:
            log.warning("Dropping %d update message(s) the broker did not take", left)
            producer.purge()
            producer.poll(0)
        close = getattr(producer, "close", None)   # confluent-kafka >= 2.x
        if close is not None:
            close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class UpdateConsumer:
    """Reads AMORE's update messages of one database (for GUIs and tests).

    Uses ``assign()`` on all partitions of ``config.update_topic(db_id)`` (creating the topic if
    missing), no consumer group, starting at the current end: only messages published after the
    constructor returns are seen. Everything runs in the calling thread (a GUI calls
    :meth:`poll` from a worker thread). If ``config.broker`` is None it is disabled
    (:attr:`enabled` False; :meth:`poll` just sleeps ``timeout`` and returns ``[]``).

    The constructor waits for the broker at most ``config["kafka"]["connect_timeout"]``
    seconds; if the broker is unreachable it still returns and starts at the end of
    partition 0 once the broker is back. Never raises for broker problems.
    """

    def __init__(self, config: Config, db_id: str):
        self.topic: str = config.update_topic(db_id)
        self._consumer = None
        broker = config.broker
        if broker is None:
            return
        timeout = float(config["kafka"].get("connect_timeout", 5.0))
        settings = _common_settings(broker, "update consumer", f"amore-gui-{db_id}")
        self._consumer = Consumer({
            **settings,
            # Required by librdkafka, never used: no subscribe(), no commits.
            "group.id": f"amore-updates-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "latest",
            "fetch.wait.max.ms": FETCH_WAIT_MAX_MS,
            "enable.partition.eof": False,
        })
        admin = AdminClient({k: v for k, v in settings.items() if k != "client.id"})
        _ensure_topic(admin, self.topic, timeout)
        self._consumer.assign(self._start_positions(timeout))

    def _start_positions(self, timeout: float) -> list[TopicPartition]:
        """Current end of every partition, resolved now (so nothing published after the
        constructor is missed); "end" resolved later by librdkafka if the broker is away."""
        try:
            md = self._consumer.list_topics(topic=self.topic, timeout=max(timeout, 0.001))
            parts = sorted(md.topics[self.topic].partitions) or [0]
        except (KafkaException, KeyError) as e:
            log.warning("Update topic %s: no metadata (%s); starting at its end later",
                        self.topic, e)
            parts = [0]
        out = []
        for p in parts:
            tp = TopicPartition(self.topic, p)
            try:
                _, high = self._consumer.get_watermark_offsets(tp, timeout=max(timeout, 0.001))
                tp.offset = high
            except KafkaException:
                tp.offset = OFFSET_END
            out.append(tp)
        return out

    @property
    def enabled(self) -> bool:
        """False when no broker is configured (or after :meth:`close`)."""
        return self._consumer is not None

    def poll(self, timeout: float) -> list[tuple[str, dict]]:
        """Wait up to ``timeout`` seconds for update messages; return ``[(kind, data), ...]``
        (possibly empty) as soon as there is at least one, with all others already received.
        Malformed messages are logged at WARNING and skipped. Never raises for broker
        problems."""
        if self._consumer is None:
            time.sleep(max(float(timeout), 0.0))
            return []
        deadline = time.monotonic() + max(float(timeout), 0.0)
        out: list[tuple[str, dict]] = []
        while True:
            m = self._consumer.poll(max(deadline - time.monotonic(), 0.0))
            msgs = [m] if m is not None else []
            if msgs:
                msgs.extend(self._consumer.consume(MAX_BATCH, 0))
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        log.debug("Update consumer: %s", err.str())
                    continue
                try:
                    out.append(parse_update_message(m.value()))
                except MalformedEvent as e:
                    log.warning("Skipping malformed update message on %s [%d] at offset %d: %s",
                                m.topic(), m.partition(), m.offset(), e)
            if out or time.monotonic() >= deadline:
                return out

    def close(self):
        """Release the connection. Idempotent."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                consumer.close()
            except (KafkaException, RuntimeError) as e:
                log.debug("Closing the update consumer: %s", e)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
