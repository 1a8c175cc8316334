"""Fault: bad input on the facility topics and on the GUI's update topic (poison messages).

1,000 messages of every bad kind (not JSON, binary, 10 MB, pickled objects, wrong types,
negative/enormous run numbers, SQL and quotes, unknown events, missing fields...) with valid
announcements between them: the backend does not crash, every valid run is processed in the
order announced, each kind of problem is logged a few times (with offsets) instead of 1,000
times and shows up in the event log, nothing is unpickled, and the consumer's committed offset
reaches the end (no message is retried forever).
"""
from __future__ import annotations

import json
import logging
import uuid

from backend.config import load_config
from backend.notify.kafka import UpdateConsumer, make_update_message
from backend.store.writer import RunDB
from tests.faults_helpers import (PROPOSAL, SIMPLE_CONTEXT, KafkaBackend, facility_msg,
                                  kafka_toml, make_producer, poison_messages, wait_for)
from tests.kafka_broker import create_topics

N_MESSAGES = 1000
VALID_RUNS = list(range(1, 11))


def interleave(poison, valid, n):
    """``n`` messages: ``poison`` cycled, with the ``valid`` ones spread evenly between."""
    step = n // (len(valid) + 1)
    out, vi, pi = [], 0, 0
    for i in range(n):
        if vi < len(valid) and i == step * (vi + 1):
            out.append(valid[vi])
            vi += 1
        else:
            out.append(poison[pi % len(poison)])
            pi += 1
    return out


def test_poison_messages_on_facility_topics(kafka_broker, make_context_dir, write_run, tmp_path):
    tag = uuid.uuid4().hex[:8]
    ctx = make_context_dir(code=SIMPLE_CONTEXT, config=kafka_toml(tag, jobs=1))
    topics = [f"r2d2-{tag}", f"corrections-{tag}"]
    create_topics(kafka_broker, topics)
    for r in VALID_RUNS:
        write_run(r, ntrains=5)
    marker = tmp_path / "UNPICKLED"
    poison = poison_messages(str(marker), big=False)
    big = poison_messages(str(marker))[-1]
    msgs = interleave(poison, [("valid", facility_msg(r)) for r in VALID_RUNS], N_MESSAGES - 2)
    msgs[1:1] = [big]
    msgs[N_MESSAGES // 2:N_MESSAGES // 2] = [big]
    # another proposal's valid run: skipped quietly
    msgs.insert(3, ("other proposal", facility_msg(1, proposal=PROPOSAL + 1)))

    b = KafkaBackend(ctx, kafka_broker)
    try:
        p = make_producer(kafka_broker)
        last = {t: -1 for t in topics}

        def delivered(err, m):
            assert err is None, err
            last[m.topic()] = max(last[m.topic()], m.offset())
        for i, (label, value) in enumerate(msgs):
            p.produce(topics[i % 2] if label != "valid" else topics[0], value,
                      on_delivery=delivered)
            p.poll(0)
        assert p.flush(60) == 0
        db = RunDB(ctx)
        wait_for(lambda: all((db.get_run(PROPOSAL, r) or {}).get("status") == "done"
                             for r in VALID_RUNS), 90, 0.2, "every valid run processed")
        assert b.alive(), "the backend crashed"
        runs = db.runs()
        assert [r["run"] for r in runs] == VALID_RUNS, "only the valid runs are recorded"
        # processed in the order announced
        assert [r["run"] for r in sorted(runs, key=lambda r: r["added_at"])] == VALID_RUNS
        assert all(db.get_values(PROPOSAL, r)["run_no"].value == r for r in VALID_RUNS)
        assert not marker.exists(), "a pickled message was unpickled"

        # Each kind is in the event log, with topic and offset.
        kinds = {"not JSON", "not a JSON object", "empty", "wrong type", "out of range",
                 "unknown event", "missing field", "too large"}
        wait_for(lambda: kinds <= {(e["details"] or {}).get("kind") for e in db.events()}, 10,
                 what="every kind of problem in the event log")
        events = [e for e in db.events() if e["source"] == "kafka"]
        assert all(isinstance(e["details"]["offset"], int) and e["details"]["topic"] in topics
                   for e in events)
        # ... a few times each, not 1,000 times
        assert len(events) <= 2 * len(kinds) + 2, [e["message"] for e in events]
        text = b.log_text()
        warnings = text.count("Skipping malformed facility message")
        assert len(kinds) <= warnings <= 2 * len(kinds) + 2, warnings
        assert "Traceback" not in text

        # Nothing retried forever: the group committed past the last message of each topic.
        from confluent_kafka import Consumer, TopicPartition
        group = load_config(ctx).consumer_group(db.db_id, PROPOSAL)
        c = Consumer({"bootstrap.servers": kafka_broker, "group.id": group, "log_level": 0})
        try:
            def at_end():
                committed = c.committed([TopicPartition(t, 0) for t in topics], timeout=10)
                return [tp.offset for tp in committed] == [last[t] + 1 for t in topics]
            wait_for(at_end, 20, 0.5, "committed offsets at the end of the topics")
        finally:
            c.close()
        assert b.stop() == 0
    finally:
        b.cleanup()


def test_poison_messages_on_update_topic(kafka_broker, tmp_path, caplog):
    """The GUI's update consumer skips every bad message and still delivers the valid ones in
    order, with typed fields the GUI can use as they are."""
    from backend.config import Config
    tag = uuid.uuid4().hex[:8]
    cfg = Config()
    cfg["kafka"].update(broker=kafka_broker, update_topic=f"amore.{tag}-{{db_id}}",
                        connect_timeout=5.0)
    marker = tmp_path / "UNPICKLED"

    def upd(**data):
        return json.dumps({"version": 1, "kind": "run_values_updated", "data": data}).encode()

    bad = poison_messages(str(marker)) + [
        ("other version", json.dumps({"version": 99, "kind": "x", "data": {}}).encode()),
        ("run as string", upd(proposal=PROPOSAL, run="3; DROP TABLE runs", names=[])),
        ("enormous run", upd(proposal=PROPOSAL, run=10**30, names=[])),
        ("negative run", upd(proposal=PROPOSAL, run=-1, names=[])),
        ("names not a list", upd(proposal=PROPOSAL, run=3, names="n_trains")),
        ("missing run", upd(proposal=PROPOSAL, names=[])),
        ("comment run text", json.dumps({"version": 1, "kind": "comment_changed",
                                         "data": {"proposal": PROPOSAL, "run": "x"}}).encode()),
    ]
    valid = [make_update_message("run_values_updated",
                                 {"proposal": PROPOSAL, "run": r, "names": ["n_trains"]})
             for r in range(1, 21)]
    msgs = interleave(bad, [("valid", v) for v in valid], N_MESSAGES)
    with UpdateConsumer(cfg, "db") as consumer:
        caplog.set_level(logging.DEBUG, logger="backend.notify.kafka")
        p = make_producer(kafka_broker)
        for label, value in msgs:
            p.produce(consumer.topic, value)
            p.poll(0)
        assert p.flush(60) == 0
        got = []
        wait_for(lambda: got.extend(consumer.poll(0.5)) or len(got) >= len(valid), 60,
                 what="valid update messages")
        got.extend(consumer.poll(1.0))
    assert [(k, d["run"]) for k, d in got] == [("run_values_updated", r) for r in range(1, 21)]
    assert not marker.exists()
    assert sum(consumer.skipped.values()) == N_MESSAGES - len(valid)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING
                and "Skipping malformed update message" in r.getMessage()]
    assert len(consumer.skipped) <= len(warnings) <= 2 * len(consumer.skipped)
    assert all(" at offset " in r.getMessage() for r in warnings)


def test_every_poison_kind_is_a_malformed_event(tmp_path):
    """Each bad value raises MalformedEvent (never anything else) with a kind for the logs; the
    same for the update-message parser."""
    from backend.config import Config
    from backend.facilities.euxfel.source import parse_facility_message
    from backend.notify.kafka import parse_update_message
    from backend.vocab import MalformedEvent
    kinds = Config().event_kinds()
    marker = tmp_path / "UNPICKLED"
    for label, value in poison_messages(str(marker)):
        for parse in (lambda v: parse_facility_message(v, kinds),
                      parse_update_message):
            try:
                parse(value)
            except MalformedEvent as e:
                assert e.kind and e.kind != "malformed", (label, e)
            else:
                raise AssertionError(f"{label} accepted")
    assert not marker.exists()
    ev = parse_facility_message(facility_msg(" 12 "), kinds)   # numeric strings are fine
    assert (ev.proposal, ev.run, ev.data) == (PROPOSAL, 12, "raw")
