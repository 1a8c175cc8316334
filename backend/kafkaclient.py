"""Kafka client plumbing shared by the run sources (:mod:`backend.sources.kafka`) and the update
messages (:mod:`backend.notify.kafka`): librdkafka settings, a quick broker reachability check,
topic creation, throttled logging of broker errors.

* :func:`broker_reachable` - start-up check deciding between online and offline mode.

Broker problems never raise out of the publisher and never spam the log: librdkafka's own log
lines go to the ``backend.kafkaclient.librdkafka`` logger (DEBUG, the first of each kind per minute at
INFO) and client errors (broker down, ...) to ``backend.kafkaclient`` at WARNING, at most once a minute
per error kind.
"""
from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

from confluent_kafka import (TIMESTAMP_NOT_AVAILABLE, KafkaError,
                             KafkaException)
from confluent_kafka.admin import AdminClient, NewTopic


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

OFFSET_RESET_ALIASES = {
    "latest": "latest", "largest": "latest", "end": "latest",
    "earliest": "earliest", "smallest": "earliest", "beginning": "earliest",
}


# ---------------------------------------------------------------------------------------------
# Logging helpers

class Throttle:
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
        self._throttle = Throttle()

    def log(self, level, msg, *args):
        facility = args[0] if args else msg
        ok, _ = self._throttle(facility)
        self._log.log(logging.INFO if ok else logging.DEBUG, msg, *args)


class _NullLog:
    def log(self, *args, **kwargs):
        pass


#: Error codes that mean "the broker may be unreachable" (checked with a probe).
CONNECTION_ERRORS = (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT, KafkaError._RESOLVE)


class Connectivity:
    """Whether a Kafka client reaches its broker: ``state`` is ``"connected"`` or
    ``"reconnecting"``.

    librdkafka reconnects by itself but says nothing when it is back. Connection errors (from
    ``error_cb``, :meth:`on_error`) only make the state suspect; the owner's thread calls
    :meth:`check` regularly (cheap unless suspect), which probes with a metadata request
    (``list_topics``, at most every ``probe_seconds``, blocking up to 1 s) and reports changes:
    a WARNING "... unreachable; reconnecting" when down, INFO "... reachable again" with the
    outage's length when back, and ``on_change(state, message)`` for status displays and the
    event log. :attr:`reconnects` counts recoveries (a reader may catch up after one)."""

    def __init__(self, what: str, broker: str, on_change=None, probe_seconds: float = 2.0):
        self.what = what
        self.broker = broker
        self.on_change = on_change
        self.probe_seconds = probe_seconds
        self.state = "connected"
        self.reconnects = 0
        self.down_since: float | None = None
        self._suspect = False
        self._next_probe = 0.0

    def on_error(self, err: KafkaError) -> None:
        if err.code() in CONNECTION_ERRORS:
            self._suspect = True

    def check(self, client) -> str:
        """Probe if needed; returns the state. Call from the thread that owns ``client``."""
        if not self._suspect and self.state == "connected":
            return self.state
        now = time.monotonic()
        if now < self._next_probe:
            return self.state
        self._next_probe = now + self.probe_seconds
        try:
            md = client.list_topics(timeout=1.0)
            ok = bool(md.brokers)
        except Exception:
            ok = False
        if ok:
            self._suspect = False
            if self.state != "connected":
                down = time.monotonic() - (self.down_since or now)
                self.state, self.down_since = "connected", None
                self.reconnects += 1
                self._report(logging.INFO, f"Kafka broker {self.broker} is reachable again for the "
                             f"{self.what} after {down:.0f} s")
        elif self.state != "reconnecting":
            self.state, self.down_since = "reconnecting", now
            self._report(logging.WARNING, f"Kafka broker {self.broker} unreachable for the "
                         f"{self.what}; reconnecting")
        return self.state

    def _report(self, level, message):
        log.log(level, "%s", message)
        if self.on_change is not None:
            try:
                self.on_change(self.state, message)
            except Exception:
                log.exception("Reporting a Kafka connection change failed")


def _error_callback(client: str, also=None):
    throttle = Throttle()

    def on_error(err: KafkaError):
        if also is not None:
            also(err)
        ok, suppressed = throttle(err.code())
        if ok:
            more = f" ({suppressed} similar since last report)" if suppressed else ""
            log.warning("Kafka %s: %s%s", client, err.str(), more)
        else:
            log.debug("Kafka %s: %s", client, err.str())
    return on_error


def common_settings(broker: str, client: str, client_id: str, on_error=None) -> dict:
    """librdkafka settings shared by AMORE's clients; ``on_error(KafkaError)`` is called for
    every client error (e.g. :meth:`Connectivity.on_error`) besides the throttled logging."""
    return {
        "bootstrap.servers": broker,
        "client.id": client_id,
        "logger": _LibrdkafkaLog(),
        "error_cb": _error_callback(client, on_error),
        # Topics that disappear with a broker restart (in-memory storage) and come back are
        # noticed within seconds, not after librdkafka's default 5 minutes.
        "topic.metadata.refresh.interval.ms": 5000,
        # A dead broker is retried every few seconds, not every 10 s at the end of the backoff.
        "reconnect.backoff.max.ms": 2000,
    }


def split_bootstrap(broker: str) -> list[tuple[str, int]]:
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
        addresses = split_bootstrap(broker)
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


def ensure_topic(admin: AdminClient, topic: str, timeout: float, partitions: int = 1) -> bool:
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


def record_time(msg) -> float:
    """The record timestamp of a confluent-kafka message in Unix seconds (now if it has none)."""
    ts_type, ts_ms = msg.timestamp()
    if ts_type == TIMESTAMP_NOT_AVAILABLE or ts_ms is None or ts_ms < 0:
        return time.time()
    return ts_ms / 1000.0


