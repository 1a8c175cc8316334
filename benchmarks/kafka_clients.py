"""Kafka clients: how long AMORE's Kafka parts take, on a real Kafka-protocol broker (a local
tansu on a free loopback port).

* produce -> :class:`FacilityEventSource` ``poll()`` returns the run event (one event at a time,
  each acknowledged);
* :class:`UpdatePublisher` ``publish()`` -> :class:`UpdateConsumer` ``poll()`` returns it;
* :func:`broker_reachable` on a closed port, on a port that accepts TCP and never speaks Kafka
  (timeout 1 s), and on the broker;
* creating an :class:`UpdatePublisher` for a broker that is not there (``connect_timeout`` 0.5 s);
* ``UpdateConsumer.poll(0.05)`` without a broker.

    python benchmarks/kafka_clients.py [--events 20] [--out FILE.json]

``tests/test_kafka.py`` checks what these do (and bounds their waits generously); the times are
measured here. Prints a table: median and range of seconds per measurement, with the bound a
test asserted before these moved here.
``--out`` writes every measurement as JSON (``{name: [seconds, ...]}``).
"""
from __future__ import annotations

import argparse
import logging
import socket
import sys
import time
import uuid

from common import PROPOSAL, REPO, print_seconds, save_json, scratch_dir

sys.path.insert(0, str(REPO))

from tests.kafka_broker import _free_port, client_config  # noqa: E402

DB_ID = "bench"


def timed(fn, *args, **kw) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return time.perf_counter() - t0, out


def event_latency(broker: str, n: int) -> list[float]:
    """produce() -> FacilityEventSource.poll() returns the event, ``n`` times."""
    from confluent_kafka import Producer

    from backend.facilities.euxfel.source import FacilityEventSource
    from tests.faults_helpers import facility_msg
    from tests.kafka_broker import create_topics
    topic = f"r2d2-{uuid.uuid4().hex[:8]}"
    create_topics(broker, [topic])
    src = FacilityEventSource(client_config(broker, event_topics=[topic]), PROPOSAL, DB_ID)
    p = Producer({"bootstrap.servers": broker, "linger.ms": 0, "log_level": 0})
    lat = []
    try:
        if not src.wait_ready(20):
            raise RuntimeError("consumer group not joined within 20 s")
        for run in range(1, n + 2):        # the first event warms up the path, not counted
            t0 = time.perf_counter()
            p.produce(topic, facility_msg(run))
            p.poll(0)
            got = src.poll(5.0)
            dt = time.perf_counter() - t0
            if [e.run for e, _ in got] != [run]:
                raise RuntimeError(f"expected run {run}, got {got}")
            src.ack(got[0][1])
            if run > 1:
                lat.append(dt)
        p.flush(5)
    finally:
        src.close()
    return lat


def update_latency(broker: str, n: int) -> list[float]:
    """UpdatePublisher.publish() -> UpdateConsumer.poll() returns it, ``n`` times."""
    from backend.notify.kafka import UpdateConsumer, UpdatePublisher
    config = client_config(broker)
    pub = UpdatePublisher(config, DB_ID)
    sub = UpdateConsumer(config, DB_ID)
    lat = []
    try:
        pub.publish("run_values_updated", {"proposal": PROPOSAL, "run": 0, "names": ["x"]})
        deadline = time.monotonic() + 20
        while not sub.poll(0.5):            # the consumer has its partition: the path is warm
            if time.monotonic() > deadline:
                raise RuntimeError("first update message not received within 20 s")
        for run in range(1, n + 1):
            t0 = time.perf_counter()
            pub.publish("run_values_updated", {"proposal": PROPOSAL, "run": run, "names": ["x"]})
            got = sub.poll(5.0)
            lat.append(time.perf_counter() - t0)
            if [d["run"] for _, d in got] != [run]:
                raise RuntimeError(f"expected run {run}, got {got}")
    finally:
        pub.close()
        sub.close()
    return lat


def timeouts(broker: str, repeats: int) -> dict[str, list[float]]:
    from backend.config import Config
    from backend.kafkaclient import broker_reachable
    from backend.notify import kafka as notify_kafka
    from backend.notify.kafka import UpdateConsumer, UpdatePublisher
    out: dict[str, list[float]] = {k: [] for k in (
        "reachable_broker", "reachable_closed_port", "reachable_silent_port",
        "publisher_dead_broker", "consumer_poll_no_broker")}
    notify_kafka.MESSAGE_TIMEOUT_S = 0.5
    logging.getLogger("backend").setLevel(logging.ERROR)    # the dead broker's warnings
    for _ in range(repeats):
        dt, ok = timed(broker_reachable, broker, 5.0)
        if not ok:
            raise RuntimeError("the broker does not answer")
        out["reachable_broker"].append(dt)
        out["reachable_closed_port"].append(
            timed(broker_reachable, f"127.0.0.1:{_free_port()}", 1.0)[0])
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            out["reachable_silent_port"].append(
                timed(broker_reachable, f"127.0.0.1:{s.getsockname()[1]}", 1.0)[0])
        dt, pub = timed(UpdatePublisher,
                        client_config(f"127.0.0.1:{_free_port()}", connect_timeout=0.5), DB_ID)
        out["publisher_dead_broker"].append(dt)
        pub.close(timeout=0.1)
        sub = UpdateConsumer(Config(), DB_ID)
        out["consumer_poll_no_broker"].append(timed(sub.poll, 0.05)[0])
        sub.close()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20, help="events/messages timed per path")
    ap.add_argument("--repeats", type=int, default=5, help="repeats of the timeout measurements")
    ap.add_argument("--out", help="write all measurements to this JSON file")
    a = ap.parse_args()
    from tests.kafka_broker import TansuBroker, tansu_binary
    binary = tansu_binary()
    if binary is None:
        sys.exit("no tansu broker binary (./dev test installs it)")
    w = scratch_dir("kafka_clients")
    broker = TansuBroker(binary, w / "tansu.log")
    address = broker.start()
    try:
        res = {"event_poll": event_latency(address, a.events),
               "update_poll": update_latency(address, a.events),
               **timeouts(address, a.repeats)}
    finally:
        broker.stop()
    rows_spec = [
        ("event_poll", "produce -> FacilityEventSource.poll", "median < 0.5 s"),
        ("update_poll", "publish -> UpdateConsumer.poll", "median < 0.5 s"),
        ("reachable_broker", "broker_reachable(broker, 5 s)", ""),
        ("reachable_closed_port", "broker_reachable(closed port, 1 s) -> False", "< 1.5 s"),
        ("reachable_silent_port", "broker_reachable(silent port, 1 s) -> False", "< 1.5 s"),
        ("publisher_dead_broker", "UpdatePublisher() on a dead broker (connect 0.5 s)", "< 3 s"),
        ("consumer_poll_no_broker", "UpdateConsumer.poll(0.05) without a broker", "< 1 s"),
    ]
    print_seconds(f"Kafka clients on a local tansu broker ({a.events} events, "
                  f"{a.repeats} repeats of the timeouts)", res, rows_spec,
                  "bound a test asserted", nd=4)
    save_json(a.out, res)


if __name__ == "__main__":
    main()
