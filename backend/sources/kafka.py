"""Run announcements on Kafka, whatever their format: the consumer every Kafka-fed facility uses.

:class:`KafkaRunSource` consumes a facility's topics in a consumer group of its own, turns each
message value into a :class:`~backend.sources.base.RunEvent` with the facility's parser (``parse``)
and implements the :class:`~backend.sources.base.RunSource` interface with explicit
acknowledgement (at-least-once delivery). European XFEL's run events
(:mod:`backend.facilities.euxfel.source`) and the ESS file writer's messages
(:mod:`backend.facilities.ess.source`) are both read through it.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from confluent_kafka import (OFFSET_INVALID, Consumer, KafkaError,
                             KafkaException, TopicPartition)

from backend.config import Config, ConfigError
from backend.kafkaclient import (FETCH_WAIT_MAX_MS, MAX_BATCH, OFFSET_RESET_ALIASES,
                                 SESSION_TIMEOUT_MS, Connectivity, Throttle, common_settings,
                                 record_time)
from backend.sources.base import MalformedEvent, RunEvent
from backend.vocab import normalize_proposal

#: ``parse(value, source, timestamp, location)``: one message value (bytes or None) -> a
#: :class:`RunEvent` (or None: nothing for AMORE); raises :class:`MalformedEvent`. ``source`` is
#: ``"kafka:<topic>[<partition>]@<offset>"``, ``timestamp`` the record's time (Unix seconds),
#: ``location`` ``"<topic>[<partition>]@<offset>"`` (for the run's snapshot).
MessageParser = Callable[[Any, str, float, str], "RunEvent | None"]

log = logging.getLogger(__name__)


def _preview(value, limit: int = 2000) -> str | None:
    """The start of a message value as text, for the event log."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        value = value[:limit].decode("utf-8", "replace")
    return str(value)[:limit]


@dataclass(frozen=True)
class _AckToken:
    """Opaque acknowledgement token: which record to commit once the run is recorded."""
    topic: str
    partition: int
    offset: int


class KafkaRunSource:
    """A facility's run announcements for one proposal, from Kafka.

    Subscribes to ``topics`` in the consumer group ``config.consumer_group(db_id, proposal)``
    (one group per AMORE database, so several AMORE instances each see every event). Each
    message value is turned into a run event by ``parse`` (:data:`MessageParser`); events of
    other proposals are skipped.

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

    Raises :class:`ValueError` if no broker is configured or ``topics`` is empty and
    :class:`~backend.config.ConfigError` for an invalid ``auto_offset_reset``. Construction does
    not contact the broker; the group is joined during :meth:`poll` / :meth:`wait_ready`
    (about 3 s).

    Not safe for concurrent :meth:`poll` from several threads; :meth:`ack` may be called from
    another thread.
    """

    #: which kind of source this is, in the event log
    source_name = "kafka"

    def __init__(self, config: Config, proposal: int | str, db_id: str, topics: list[str],
                 parse: MessageParser, on_problem=None, topics_setting: str = "topics"):
        broker = config.broker
        if broker is None:
            raise ValueError("no Kafka broker configured (kafka.broker / $AMORE_BROKER)")
        kafka = config["kafka"]
        self.config = config
        #: :data:`backend.sources.base.ProblemCallback` for what people should see in the event
        #: log: skipped messages, a lost or restored broker (or None; the listener sets it)
        self.on_problem = on_problem
        self.topics: list[str] = list(topics)
        if not self.topics:
            raise ValueError(f"no facility event topics configured ({topics_setting})")
        self._parse_value = parse
        reset = str(kafka.get("auto_offset_reset", "latest")).strip().lower()
        if reset not in OFFSET_RESET_ALIASES:
            raise ConfigError(f"kafka.auto_offset_reset must be 'latest' or 'earliest', "
                              f"not {kafka.get('auto_offset_reset')!r}")
        self.auto_offset_reset: str = OFFSET_RESET_ALIASES[reset]
        self.proposal = normalize_proposal(proposal)
        self.db_id = db_id
        self.group_id: str = config.consumer_group(db_id, self.proposal)
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
        self._malformed_throttle = Throttle()
        #: number of skipped messages by kind of problem (see :class:`MalformedEvent`)
        self.skipped: dict[str, int] = {}
        self.broker = broker
        #: Reachability of the broker ("connected"/"reconnecting"), checked by :meth:`poll`;
        #: a lost and a restored connection go to the event log (:meth:`_on_connection`).
        self.connectivity = Connectivity("run events", broker, on_change=self._on_connection)
        # partitions this source read before: if the group has no committed offset for one of
        # them later, the broker lost its state (restart with in-memory storage) and the
        # topic was created again: read it from its start, not its end.
        self._seen: set[tuple[str, int]] = set()
        self._consumer = Consumer({
            **common_settings(broker, "event consumer", f"amore-listener-{db_id}",
                              on_error=self.connectivity.on_error),
            "group.id": self.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            # Start positions are set explicitly (_on_assign); this only applies when a
            # position is out of range, i.e. the topic was deleted and created again: then
            # every message it holds is new.
            "auto.offset.reset": "earliest",
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
            lost = (tp.topic, tp.partition) in self._seen
            tp.offset = low if lost or self.auto_offset_reset == "earliest" else high
            if lost:
                log.warning("Kafka group %s has no offset for %s [%d] any more (the broker lost "
                            "its state?): reading it from its start", self.group_id, tp.topic,
                            tp.partition)
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
                self._seen.add(key)
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

        Messages for other proposals are skipped; malformed messages (the parser raised
        :class:`MalformedEvent`, or whatever else fails on one message) are skipped and logged at WARNING with topic, partition, offset and reason, at
        most once a minute per kind of problem (with the count of those not logged), and passed
        to :attr:`on_problem`. Skipped offsets are committed (asynchronously) once no
        unacknowledged event precedes them. Broker problems are logged,
        not raised. Raises RuntimeError after :meth:`close`.
        """
        if self._closed:
            raise RuntimeError(f"{type(self).__name__} is closed")
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
        self.connectivity.check(self._consumer)
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
                    ev = self._parse_value(m.value(), source, record_time(m),
                                           f"{topic}[{part}]@{off}")
                except MalformedEvent as e:
                    self._malformed(topic, part, off, e.kind, str(e), m.value())
                    ev = None
                except Exception as e:  # never let one message stop the ones behind it
                    self._malformed(topic, part, off, "unreadable",
                                    f"{type(e).__name__}: {e!s:.200}", m.value())
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

    def _on_connection(self, state: str, message: str) -> None:
        """The broker became unreachable or reachable again (:class:`Connectivity`): say so
        in the event log."""
        if state == "reconnecting":
            self._report_problem("warning", f"Lost the connection to Kafka broker {self.broker} "
                                 f"(run events); reconnecting",
                                 {"state": state, "broker": self.broker})
        else:
            self._report_problem("info", message, {"state": state, "broker": self.broker})

    def _report_problem(self, level: str, message: str, details: dict) -> None:
        """Tell people through :attr:`on_problem` (the listener's event log); never raises."""
        if self.on_problem is None:
            return
        try:
            self.on_problem(level, message, details)
        except Exception:
            log.exception("Could not report %r", message)

    def _malformed(self, topic: str, part: int, off: int, kind: str, reason: str,
                   value=None) -> None:
        """Report a skipped message: WARNING with topic, partition and offset, at most once a
        minute per kind of problem (the count of similar ones follows in the next report); the
        same reports go to :attr:`on_problem` (the listener's event log)."""
        self.skipped[kind] = self.skipped.get(kind, 0) + 1
        ok, suppressed = self._malformed_throttle(kind)
        if not ok:
            log.debug("Skipping malformed facility message on %s [%d] at offset %d: %s",
                      topic, part, off, reason)
            return
        more = f" ({suppressed} more of this kind skipped since the last report)" \
            if suppressed else ""
        log.warning("Skipping malformed facility message on %s [%d] at offset %d: %s%s",
                    topic, part, off, reason, more)
        self._report_problem("warning", f"Malformed message on {topic} [{part}] at offset {off} "
                             f"skipped ({kind}): {reason}{more}",
                             {"topic": topic, "partition": part, "offset": off, "kind": kind,
                              "reason": reason, "suppressed_before": suppressed,
                              "value": _preview(value)})

    def _message_error(self, msg, err: KafkaError):
        topic = msg.topic()
        if err.code() == KafkaError._PARTITION_EOF:
            return
        if err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            self.connectivity.on_error(err)
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
            raise TypeError(f"not an ack token from {type(self).__name__}.poll(): {token!r}")
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


