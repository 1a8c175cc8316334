"""The Kafka run source and update messages against a real Kafka-protocol broker (tansu, see tests/kafka_broker.py)."""
from __future__ import annotations

import json
import logging
import socket
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from backend.config import Config
from backend.kafkaclient import broker_reachable
from backend.notify import kafka as notify_kafka
from backend.notify.kafka import UpdateConsumer, UpdatePublisher
from backend.sources.base import RunEvent
from backend.facilities.euxfel.source import FacilityEventSource
from tests.conftest import PROPOSAL, returns_within
from tests.kafka_broker import client_config, create_topics, produce

DB_ID = "db-test"


def facility_msg(event="migration_complete", proposal=PROPOSAL, run=1, **extra) -> bytes:
    msg = {"event": event, "proposal": proposal, "run": run,
           "path": f"/gpfs/exfel/exp/MID/202201/p{PROPOSAL:06d}/raw/r{run}",
           "instrument": "MID", "cycle": "202201", **extra}
    return json.dumps(msg).encode()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def topics(kafka_broker):
    tag = uuid.uuid4().hex[:8]
    names = [f"r2d2-{tag}", f"corrections-{tag}"]
    create_topics(kafka_broker, names)
    return names


@pytest.fixture
def config(kafka_broker, topics):
    return client_config(kafka_broker, event_topics=topics)


def ready_source(config, proposal=PROPOSAL) -> FacilityEventSource:
    src = FacilityEventSource(config, proposal, DB_ID)
    assert src.wait_ready(20), "consumer group not joined within 20 s"
    return src


def poll_events(src, n, timeout=10.0):
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        out.extend(src.poll(0.5))
    return out


def committed_offset(broker, group, topic, partition=0):
    """Committed offset of a group, read without joining it."""
    c = Consumer({"bootstrap.servers": broker, "group.id": group, "log_level": 0})
    try:
        return c.committed([TopicPartition(topic, partition)], timeout=10)[0].offset
    finally:
        c.close()


def test_facility_event_round_trip(kafka_broker, config, topics):
    with ready_source(config) as src:
        part, off = produce(kafka_broker, topics[0], facility_msg(run="7"))
        (ev, token), = poll_events(src, 1)
        assert isinstance(ev, RunEvent)
        assert (ev.proposal, ev.run, ev.data, ev.event) == (PROPOSAL, 7, "raw", "migration_complete")
        assert ev.source == f"kafka:{topics[0]}[{part}]@{off}"
        assert abs(ev.timestamp - time.time()) < 60
        assert src.ack(token) is True
        assert src.ack(token) is False            # already acknowledged

        _, off2 = produce(kafka_broker, topics[1], facility_msg("run_corrections_complete", run=7))
        (ev, token), = poll_events(src, 1)
        assert (ev.run, ev.data, ev.source) == (7, "proc", f"kafka:{topics[1]}[0]@{off2}")
        assert src.ack(token)

        # One event at a time: each is the next poll()'s (within 5 s), and is acknowledged
        # (how long it takes: benchmarks/kafka_clients.py).
        p = Producer({"bootstrap.servers": kafka_broker, "linger.ms": 0})
        for run in range(10, 30):
            p.produce(topics[0], facility_msg(run=run))
            p.poll(0)
            got = src.poll(5.0)
            assert [e.run for e, _ in got] == [run], f"polled for run {run}: {got}"
            src.ack(got[0][1])
        p.flush(5)
    assert committed_offset(kafka_broker, src.group_id, topics[0]) == off + 21


def test_other_proposals_skipped(kafka_broker, config, topics):
    with ready_source(config) as src:
        produce(kafka_broker, topics[0], facility_msg(proposal=PROPOSAL + 1, run=3))
        produce(kafka_broker, topics[0], facility_msg(proposal=str(PROPOSAL + 2), run=4))
        _, off = produce(kafka_broker, topics[0], facility_msg(run=5))
        events = poll_events(src, 1)
        assert [(e.proposal, e.run) for e, _ in events] == [(PROPOSAL, 5)]
        assert src.poll(0.3) == []
        assert src.ack(events[0][1])
    assert committed_offset(kafka_broker, src.group_id, topics[0]) == off + 1


def test_malformed_messages_skipped_with_one_warning_each(kafka_broker, config, topics, caplog):
    bad = [
        b"this is not JSON",
        json.dumps({"event": "migration_complete", "run": 3}).encode(),       # no proposal
        facility_msg(run="three"),                                              # non-numeric run
        facility_msg(event="some_future_event", run=3),                         # unknown event
    ]
    with ready_source(config) as src:
        caplog.set_level(logging.WARNING, logger="backend.kafkaclient")
        offsets = [produce(kafka_broker, topics[0], v)[1] for v in bad]
        _, good_off = produce(kafka_broker, topics[0], facility_msg(run=8))
        events = poll_events(src, 1)
        assert [(e.run, e.source) for e, _ in events] == [(8, f"kafka:{topics[0]}[0]@{good_off}")]
        assert src.poll(0.3) == []
        warnings = [r.getMessage() for r in caplog.records
                    if r.levelno == logging.WARNING and "malformed" in r.getMessage()]
        assert len(warnings) == 4, warnings
        for off, reason, text in zip(offsets, ["not JSON", "proposal", "run", "unknown event"],
                                     warnings):
            assert topics[0] in text and f"offset {off}" in text and reason in text, text
        assert src.ack(events[0][1])
    assert committed_offset(kafka_broker, src.group_id, topics[0]) == good_off + 1


def test_commit_only_after_ack(kafka_broker, config, topics):
    group = config.consumer_group(DB_ID, PROPOSAL)
    t = topics[0]
    # A brand-new group starts at the end, and commits that start at once: an event polled
    # but not acknowledged before a crash/close comes back.
    src = ready_source(config)
    produce(kafka_broker, t, facility_msg(run=1))
    (e1, _), = poll_events(src, 1)
    src.close()

    src = ready_source(config)
    (again, tok1), = poll_events(src, 1)
    assert (again.run, again.source) == (1, e1.source)
    assert src.ack(tok1)
    produce(kafka_broker, t, facility_msg(proposal=PROPOSAL + 1, run=2))   # skipped
    _, off2 = produce(kafka_broker, t, facility_msg(run=2))
    _, off3 = produce(kafka_broker, t, facility_msg(run=3))
    events = poll_events(src, 2)
    assert [e.run for e, _ in events] == [2, 3]
    # Acknowledging the later one first must not commit past the earlier unacknowledged one.
    assert src.ack(events[1][1])
    assert committed_offset(kafka_broker, group, t) == off2
    src.close()
    assert src.ack(events[0][1]) is False        # closed: nothing committed

    src = ready_source(config)
    events = poll_events(src, 2)
    assert [e.run for e, _ in events] == [2, 3]  # run 1 was acknowledged: not delivered again
    for _, tok in events:
        assert src.ack(tok)
    assert src.poll(0.3) == []
    src.close()
    assert committed_offset(kafka_broker, group, t) == off3 + 1


def test_update_round_trip(kafka_broker, caplog):
    config = client_config(kafka_broker)
    pub = UpdatePublisher(config, DB_ID)
    assert pub.enabled and pub.topic == config.update_topic(DB_ID)
    sub = UpdateConsumer(config, DB_ID)
    try:
        data = {"proposal": PROPOSAL, "run": 5, "names": ["xgm_mean", "motor_scan"]}
        assert pub.publish("run_values_updated", data)
        got = []
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            got = sub.poll(0.5)
        assert got == [("run_values_updated", data)]

        # On the wire: version-1 JSON.
        raw = Consumer({"bootstrap.servers": kafka_broker, "group.id": "raw-reader",
                        "log_level": 0, "enable.auto.commit": False})
        raw.assign([TopicPartition(pub.topic, 0, 0)])
        m = raw.poll(10)
        raw.close()
        assert json.loads(m.value()) == {"version": 1, "kind": "run_values_updated", "data": data}

        # Malformed messages on the update topic are skipped with a warning.
        caplog.set_level(logging.WARNING, logger="backend.kafkaclient")
        produce(kafka_broker, pub.topic, b'{"version": 99}')
        pub.publish("run_status_changed", {"proposal": PROPOSAL, "run": 5, "status": "done"})
        got = []
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            got = sub.poll(0.5)
        assert got == [("run_status_changed", {"proposal": PROPOSAL, "run": 5, "status": "done"})]
        assert sum("malformed update message" in r.getMessage() for r in caplog.records) == 1

        # One message at a time: each is the next poll()'s (within 5 s)
        # (how long it takes: benchmarks/kafka_clients.py).
        for run in range(20):
            pub.publish("run_values_updated", {"proposal": PROPOSAL, "run": run, "names": ["x"]})
            got = sub.poll(5.0)
            assert [d["run"] for _, d in got] == [run], f"polled for run {run}: {got}"
        assert pub.flush(5) == 0 and pub.failed == 0 and pub.delivered == 22
    finally:
        pub.close()
        sub.close()
    assert not pub.enabled and pub.publish("run_values_updated", {}) is False


def test_no_broker_means_no_op():
    config = Config()
    assert config.broker is None
    pub = UpdatePublisher(config, DB_ID)
    assert not pub.enabled
    assert pub.publish("run_values_updated", {"proposal": 1, "run": 1, "names": []}) is False
    assert pub.flush(1) == 0
    pub.close()
    sub = UpdateConsumer(config, DB_ID)
    assert not sub.enabled
    assert returns_within(10, sub.poll, 0.05) == []      # waits its timeout, not for a broker
    sub.close()
    with pytest.raises(ValueError):
        FacilityEventSource(config, PROPOSAL, DB_ID)


def test_publisher_survives_dead_broker(monkeypatch, caplog):
    monkeypatch.setattr(notify_kafka, "MESSAGE_TIMEOUT_S", 0.5)
    config = client_config(f"127.0.0.1:{closed_port()}", connect_timeout=0.5)
    caplog.set_level(logging.WARNING, logger="backend.kafkaclient")
    pub = returns_within(30, UpdatePublisher, config, DB_ID,
                         what="UpdatePublisher() for a broker that is not there")
    assert pub.enabled
    assert pub.publish("run_values_updated", {"proposal": PROPOSAL, "run": 1, "names": []})
    assert pub.flush(5) == 0                       # given up after MESSAGE_TIMEOUT_S
    assert pub.failed == 1 and pub.delivered == 0
    assert any("not delivered" in r.getMessage() for r in caplog.records), caplog.text
    pub.close(timeout=0.1)


def test_broker_reachable(kafka_broker):
    assert broker_reachable(kafka_broker, 5.0), f"the test broker {kafka_broker} is not reachable"
    for addr in (f"127.0.0.1:{closed_port()}", "not an address", None):
        assert returns_within(10, broker_reachable, addr, 1.0) is False, addr


def test_broker_reachable_timeout_when_nothing_answers():
    """A port that accepts TCP connections but never speaks Kafka: False after the timeout."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert returns_within(10, broker_reachable, f"127.0.0.1:{s.getsockname()[1]}", 1.0) is False


def test_invalid_offset_reset_is_a_config_error():
    from backend.config import ConfigError
    config = client_config(f"127.0.0.1:{closed_port()}", auto_offset_reset="sideways")
    with pytest.raises(ConfigError, match="auto_offset_reset"):
        FacilityEventSource(config, PROPOSAL, DB_ID)
