"""B3: facility event -> values in runs.sqlite (-> cell in an open GUI), through a real broker.

Starts a tansu broker on a free loopback port, a context directory with the shared benchmark
context file on the shared fake proposal, and ``amore-proto listen``; after one warm-up event
publishes ``migration_complete`` for fresh runs and records, per event, the seconds until
``n_trains`` of that run is in runs.sqlite and until the update message reaches a consumer.
Baseline measured in the same run: the Kafka produce -> consume round trip on the same broker.

    python benchmarks/b3_latency.py [--events 10]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

from common import (BENCH_CONTEXT, PROPOSAL, REPO, bench_env, ensure_proposal, med, print_table,
                    rng, warm_page_cache, work_dir)

sys.path.insert(0, str(REPO))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=10)
    ap.add_argument("--gui", action="store_true", help="also time the cell in an open GUI")
    a = ap.parse_args()
    from tests.kafka_broker import TansuBroker, create_topics, produce, tansu_binary
    from backend.config import load_config
    from backend.kafka import UpdateConsumer
    from backend.storage import RunDB

    pdir = ensure_proposal(runs="1-40")
    warm_page_cache(pdir)
    w = work_dir() / "b3"
    subprocess.run(["rm", "-rf", str(w)])
    w.mkdir(parents=True)
    broker = TansuBroker(tansu_binary(), w / "tansu.log")
    address = broker.start()
    env = bench_env({"AMORE_BROKER": address})
    os.environ.update({"AMORE_BROKER": address})
    ctx = w / "ctx"
    subprocess.run([sys.executable, "-m", "backend.cli", "init", str(ctx), "--proposal",
                    str(PROPOSAL), "--context", str(BENCH_CONTEXT)], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    config = load_config(ctx)
    db_id = RunDB(ctx).db_id
    topic = config["kafka"]["event_topics"][0]
    create_topics(address, config["kafka"]["event_topics"] + [config.update_topic(db_id)])
    t_start = time.monotonic()
    listener = subprocess.Popen([sys.executable, "-m", "backend.cli", "listen", str(ctx)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
    gui = None
    try:
        log = ctx / "amore.log"
        while not (log.exists() and " Ready" in log.read_text()):
            time.sleep(0.05)
            if time.monotonic() - t_start > 120:
                raise RuntimeError("backend did not start")
        startup = time.monotonic() - t_start
        consumer = UpdateConsumer(config, db_id)
        arrivals: dict[int, float] = {}
        stop = threading.Event()

        def consume():
            while not stop.is_set():
                for kind, data in consumer.poll(0.1):
                    if kind == "run_values_updated" and data.get("names"):
                        arrivals.setdefault(int(data["run"]), time.monotonic())
        th = threading.Thread(target=consume, daemon=True)
        th.start()
        con = sqlite3.connect(ctx / "runs.sqlite", timeout=30)

        def in_db(run):
            return con.execute("SELECT 1 FROM run_values WHERE run = ? AND name = 'n_trains'",
                               (run,)).fetchone() is not None

        def event(run):
            t0 = time.monotonic()
            produce(address, topic, json.dumps({"event": "migration_complete", "proposal": PROPOSAL,
                                                "run": run, "instrument": "MID",
                                                "cycle": "202201"}).encode())
            while not in_db(run):
                time.sleep(0.002)
                if time.monotonic() - t0 > 60:
                    raise RuntimeError(f"run {run} not processed")
            t_db = time.monotonic() - t0
            while run not in arrivals and time.monotonic() - t0 < 10:
                time.sleep(0.002)
            return t_db, arrivals.get(run, float("nan")) - t0

        event(1)  # warm-up
        db_lat, msg_lat = [], []
        for run in range(2, 2 + a.events):
            t_db, t_msg = event(run)
            db_lat.append(t_db)
            msg_lat.append(t_msg)
            print(f"run {run}: in DB after {t_db:.3f} s, update message after {t_msg:.3f} s",
                  flush=True)
            time.sleep(0.3)
        # Baseline: the broker's own produce -> consume round trip
        base = []
        probe_topic = "amore-bench-probe"
        create_topics(address, [probe_topic])
        from confluent_kafka import Consumer, TopicPartition
        c = Consumer({"bootstrap.servers": address, "group.id": "probe", "fetch.wait.max.ms": 50,
                      "enable.auto.commit": False})
        c.assign([TopicPartition(probe_topic, 0, 0)])
        c.poll(0.5)
        for i in range(a.events):
            t0 = time.monotonic()
            produce(address, probe_topic, b"x")
            while c.poll(0.05) is None:
                pass
            base.append(time.monotonic() - t0)
        c.close()
        stop.set()
        th.join()
        consumer.close()
        print_table(f"B3: event -> value latency ({a.events} events, median)",
                    ["milestone", "median", "range"], [
                        ["event -> `n_trains` in runs.sqlite", f"**{med(db_lat):.3f} s**", rng(db_lat, 3)],
                        ["event -> update message at a consumer", f"{med(msg_lat):.3f} s", rng(msg_lat, 3)],
                        ["baseline: broker produce -> consume round trip", f"{med(base):.3f} s", rng(base, 3)],
                        ["target (issue 2): event -> database", "<= 0.5 s",
                         "met" if med(db_lat) <= 0.5 else "MISSED"],
                        ["backend start-up (not in the latency)", f"{startup:.1f} s", ""],
                    ])
    finally:
        if listener.poll() is None:
            os.killpg(listener.pid, signal.SIGTERM)
            listener.wait(20)
        broker.stop()


if __name__ == "__main__":
    main()
