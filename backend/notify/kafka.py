"""AMORE's update messages over Kafka: their format (versioned JSON), the publisher the backend
sends them with, and the consumer GUIs (and tests) read them with.

Messages carry names only, never values (readers take values from the database):
:func:`make_update_message` makes one, :func:`parse_update_message` checks one;
:class:`UpdatePublisher` sends them (the last step of the run path,
:mod:`backend.processing.runpath`), :class:`UpdateConsumer` reads them.
"""
from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from typing import Any

from confluent_kafka import (OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError,
                             KafkaException, Producer, TopicPartition)
from confluent_kafka.admin import AdminClient

from backend.config import Config
from backend.kafkaclient import (FETCH_WAIT_MAX_MS, MAX_BATCH, MESSAGE_TIMEOUT_S, Connectivity,
                                 Throttle, common_settings, ensure_topic)
from backend.vocab import MalformedEvent, UpdateKind, decode_json_message, normalize_proposal

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# The message format

#: Message format version of AMORE's own update messages.
UPDATE_MESSAGE_VERSION = 1


def make_update_message(kind: UpdateKind | str, data: dict[str, Any]) -> bytes:
    """AMORE's update message: ``{"version": 1, "kind": kind, "data": data}`` as UTF-8 JSON.

    ``kind`` is an :class:`~backend.vocab.UpdateKind` (its docstring lists each kind's data);
    any other kind raises ``ValueError``.
    """
    return json.dumps({"version": UPDATE_MESSAGE_VERSION, "kind": UpdateKind(kind).value,
                       "data": data}).encode()


#: Largest update message looked at, bytes (real ones are well below: names, not values).
MAX_UPDATE_BYTES = 4 << 20
#: Largest proposal/run number accepted in an update message (64-bit readers everywhere).
MAX_NUMBER = 2**31 - 1

_RUN_KINDS = (UpdateKind.RUN_VALUES_UPDATED, UpdateKind.RUN_STATUS_CHANGED)
#: Kinds whose data is checked: every :class:`~backend.vocab.UpdateKind` (``slurm_job_finished``
#: comes from a Slurm job, see :mod:`backend.notify.jobdone`).
KNOWN_KINDS = tuple(UpdateKind)


def _proposal(data: dict) -> None:
    """A proposal: a number (European XFEL, ESS) or an identifier (ESRF, SwissFEL), see
    :func:`backend.vocab.normalize_proposal`."""
    if "proposal" not in data:
        raise MalformedEvent("update message lacks 'proposal'", "missing field")
    v = data["proposal"]
    if isinstance(v, int) and not isinstance(v, bool):
        _number(data, "proposal")
        return
    if not isinstance(v, str) or len(v) > 100:
        raise MalformedEvent(f"'proposal' is not a proposal: {v!r:.80}", "wrong type")
    try:
        normalize_proposal(v)
    except ValueError:
        raise MalformedEvent(f"'proposal' is not a proposal: {v!r:.80}", "wrong type") from None


def _number(data: dict, key: str, required: bool = True) -> int | None:
    v = data.get(key)
    if v is None and not required:
        return None
    if key not in data:
        raise MalformedEvent(f"update message lacks {key!r}", "missing field")
    if isinstance(v, bool) or not isinstance(v, int):
        raise MalformedEvent(f"{key!r} is not an integer: {v!r:.80}", "wrong type")
    if not 0 <= v <= MAX_NUMBER:
        raise MalformedEvent(f"{key!r} out of range: {v!r:.40}", "out of range")
    return v


def _names(data: dict, required: bool) -> None:
    names = data.get("names")
    if names is None and not required:
        return
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise MalformedEvent(f"'names' is not a list of strings: {names!r:.80}", "wrong type")


def parse_update_message(raw: bytes | str) -> tuple[UpdateKind | str, dict]:
    """Inverse of :func:`make_update_message`: returns ``(kind, data)``, checked.

    The data of the kinds AMORE sends is validated (``proposal``/``run`` integers in
    ``1..MAX_NUMBER``, ``names`` a list of str, ``status`` a str), so readers may use it
    as it is. Raises :class:`MalformedEvent` (with its ``kind``) for anything else: non-JSON
    or binary values, values over :data:`MAX_UPDATE_BYTES`, other versions, missing or
    mistyped fields - whatever the exception decoding raises. Kinds not in
    :data:`KNOWN_KINDS` are returned unchecked (a newer backend may send kinds an older reader
    does not know; readers ignore them). Nothing is evaluated or unpickled.
    """
    msg = decode_json_message(raw, MAX_UPDATE_BYTES)
    if not isinstance(msg, dict) or msg.get("version") != UPDATE_MESSAGE_VERSION:
        raise MalformedEvent(f"unsupported update message version: {msg!r:.100}", "version")
    kind, data = msg.get("kind"), msg.get("data")
    if not isinstance(kind, str) or not isinstance(data, dict):
        raise MalformedEvent("update message lacks 'kind' or 'data'", "missing field")
    if kind in KNOWN_KINDS:
        kind = UpdateKind(kind)
    if kind in _RUN_KINDS:
        _proposal(data)
        _number(data, "run")
        _names(data, required=kind == UpdateKind.RUN_VALUES_UPDATED)
        if "status" in data and not isinstance(data["status"], str):
            raise MalformedEvent(f"'status' is not a string: {data['status']!r:.80}", "wrong type")
        if "manual" in data and not isinstance(data["manual"], bool):  # a manual column's edit
            raise MalformedEvent(f"'manual' is not true/false: {data['manual']!r:.80}", "wrong type")
    elif kind == UpdateKind.VARIABLES_CHANGED:
        _names(data, required=False)
    elif kind == UpdateKind.COMMENT_CHANGED:
        if data.get("run") is not None:
            _proposal(data)
            _number(data, "run")
        elif data.get("id") is not None:
            _number(data, "id")
    elif kind == UpdateKind.SLURM_JOB_FINISHED:
        if not isinstance(data.get("job"), str) or not data["job"] or len(data["job"]) > 100:
            raise MalformedEvent(f"'job' is not a Slurm job id: {data.get('job')!r:.80}",
                                 "wrong type")
        if data.get("proposal") not in (None, 0):
            _proposal(data)
    return kind, data


# ---------------------------------------------------------------------------------------------
# Sending and reading them

class UpdatePublisher:
    """Sends AMORE's update messages (:func:`make_update_message`) to
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
        self._throttle = Throttle()
        self._producer = None
        broker = config.broker
        if broker is None:
            return
        timeout = float(config["kafka"].get("connect_timeout", 5.0))
        self._timeout = timeout
        self._topic_check = threading.Lock()
        self._need_topic = False
        self._last_delivery = time.monotonic()
        settings = common_settings(broker, "update publisher", f"amore-publisher-{db_id}")
        self._producer = Producer({
            **settings,
            "linger.ms": 0,
            "acks": 1,
            "allow.auto.create.topics": False,
            "message.timeout.ms": int(MESSAGE_TIMEOUT_S * 1000),
            "queue.buffering.max.messages": 10000,
        })
        self._admin = AdminClient({k: v for k, v in settings.items() if k != "client.id"})
        ensure_topic(self._admin, self.topic, timeout)

    @property
    def enabled(self) -> bool:
        """False when no broker is configured (or after :meth:`close`)."""
        return self._producer is not None

    def _recreate_topic(self) -> None:
        """The topic vanished (a broker restarted with in-memory storage): create it again,
        in a thread of its own (publish() never blocks)."""
        if not self._topic_check.acquire(blocking=False):
            return

        def work():
            try:
                if ensure_topic(self._admin, self.topic, self._timeout):
                    self._need_topic = False
            finally:
                self._topic_check.release()
        threading.Thread(target=work, name="update-topic", daemon=True).start()

    def _on_delivery(self, err, msg):
        if err is None:
            self.delivered += 1
            self._last_delivery = time.monotonic()
            return
        if err.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC,
                          KafkaError._UNKNOWN_PARTITION, KafkaError._MSG_TIMED_OUT):
            self._need_topic = True
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
        if self._need_topic or (len(self._producer) and
                                time.monotonic() - self._last_delivery > 5.0):
            # nothing delivered for a while: the topic may be gone with a broker restart
            self._recreate_topic()
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
        #: number of skipped malformed messages by kind of problem
        self.skipped: dict[str, int] = {}
        self._malformed_throttle = Throttle()
        broker = config.broker
        if broker is None:
            return
        timeout = float(config["kafka"].get("connect_timeout", 5.0))
        #: Reachability of the broker; :attr:`state` and :attr:`reconnects` come from it.
        self.connectivity = Connectivity("update messages", broker)
        settings = common_settings(broker, "update consumer", f"amore-gui-{db_id}",
                                   on_error=self._on_error)
        self._timeout = timeout
        self._next_topic_check = 0.0
        self._reassign_tries = 0
        self._next_reassign = 0.0
        self._consumer = Consumer({
            **settings,
            # Required by librdkafka, never used: no subscribe(), no commits.
            "group.id": f"amore-updates-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            # The start is set explicitly; this applies only when the position is out of range,
            # i.e. the topic was created again after a broker lost it: all it holds is new.
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": FETCH_WAIT_MAX_MS,
            "enable.partition.eof": False,
        })
        self._admin = AdminClient({k: v for k, v in settings.items() if k != "client.id"})
        ensure_topic(self._admin, self.topic, timeout)
        self._consumer.assign(self._start_positions(timeout))
        self._topic_missing = False

    def _on_error(self, err) -> None:
        self.connectivity.on_error(err)
        if err.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC):
            self._topic_missing = True

    @property
    def state(self) -> str:
        """``"connected"``, ``"reconnecting"`` (broker unreachable) or ``"disabled"``."""
        return "disabled" if self._consumer is None else self.connectivity.state

    @property
    def reconnects(self) -> int:
        """How often the broker came back after being unreachable: a reader that missed
        messages meanwhile catches up from the database when this grows."""
        return self.connectivity.reconnects

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
                    if err.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC):
                        self._topic_missing = True
                    if err.code() != KafkaError._PARTITION_EOF:
                        log.debug("Update consumer: %s", err.str())
                    continue
                try:
                    out.append(parse_update_message(m.value()))
                except Exception as e:  # whatever it is, it must not stop the ones behind it
                    kind = e.kind if isinstance(e, MalformedEvent) else "unreadable"
                    self.skipped[kind] = self.skipped.get(kind, 0) + 1
                    ok, suppressed = self._malformed_throttle(kind)
                    log.log(logging.WARNING if ok else logging.DEBUG,
                            "Skipping malformed update message on %s [%d] at offset %d: %s%s",
                            m.topic(), m.partition(), m.offset(), f"{e!s:.300}",
                            f" ({suppressed} more of this kind skipped since the last report)"
                            if ok and suppressed else "")
            if out or time.monotonic() >= deadline:
                self.connectivity.check(self._consumer)
                if self._topic_missing and time.monotonic() >= self._next_topic_check \
                        and self.connectivity.state == "connected":
                    # a broker that lost its topics: make ours again, the backend writes to it
                    self._next_topic_check = time.monotonic() + 5.0
                    if ensure_topic(self._admin, self.topic, 2.0):
                        self._topic_missing = False
                        self._reassign_tries = 10
                if self._reassign_tries and time.monotonic() >= self._next_reassign:
                    self._next_reassign = time.monotonic() + 1.0
                    self._reassign_tries -= 1
                    if self._reassign(last_try=not self._reassign_tries):
                        self._reassign_tries = 0
                return out

    def _reassign(self, last_try: bool) -> bool:
        """Read the topic again after it was created anew: from where we were if that is still
        inside it, else from its start (everything in a new topic is new). Returns False if
        the new topic's offsets are not known yet (try again), unless ``last_try``: then read
        from the start."""
        parts = []
        for tp in self._consumer.assignment() or [TopicPartition(self.topic, 0)]:
            try:
                low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(tp.topic, tp.partition), timeout=1.0)
                pos = self._consumer.position([TopicPartition(tp.topic, tp.partition)])[0].offset
            except KafkaException as e:
                log.debug("Update consumer: no offsets for %s yet: %s", tp.topic, e)
                if not last_try:
                    return False
                low = high = pos = OFFSET_BEGINNING
            start = pos if 0 <= low <= pos <= high else low
            parts.append(TopicPartition(tp.topic, tp.partition, start))
        self._consumer.assign(parts)
        self.connectivity.reconnects += 1   # messages may be lost: readers catch up
        log.info("Update consumer: reading %s again from %s", self.topic,
                 ", ".join(f"[{tp.partition}]@{tp.offset}" for tp in parts))
        return True

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
