"""B3: facility event -> values in runs.sqlite (-> cell in an open GUI), through a real broker.

Starts a tansu broker on a free loopback port, a context directory with the shared benchmark
context file on the shared fake proposal, and ``amore-proto listen``; after one warm-up event
publishes ``migration_complete`` for fresh runs (each run appears in ``raw/`` of the benchmark's
own data root, linked to the shared proposal's files, just before its event: runs already on
disk when the backend starts are processed at once, not on their event) (the same message DAMNIT's harness sends) and
records, per event, the seconds until ``n_trains`` of that run is in runs.sqlite and until the
update message reaches a consumer; with ``--gui`` also until the real AMORE GUI (offscreen,
``b3_gui_observer.py``, live updates through Kafka) has the cell in its table model.
Baseline measured in the same run: the Kafka produce -> consume round trip on the same broker.

    python benchmarks/b3_latency.py [--events 10] [--gui] [--gap 0.3] [--out FILE.json]

``--out`` writes every measurement as JSON (keys: ``events`` (per event: ``run``, ``db_s``,
``msg_s``, ``gui_s``), ``median``, ``baseline_s``, ``startup_s``, ``gui_startup_s``).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from common import REPO, KafkaBackend, UpdateArrivals, med, print_table, rng, work_dir

sys.path.insert(0, str(REPO))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=10)
    ap.add_argument("--gui", action="store_true", help="also time the cell in an open GUI")
    ap.add_argument("--gap", type=float, default=0.3, help="seconds between events")
    ap.add_argument("--out", help="write all measurements to this JSON file")
    a = ap.parse_args()
    from tests.kafka_broker import create_topics, produce

    backend = KafkaBackend(work_dir() / "b3", range(1, 2 + a.events))
    address, env, ctx = backend.address, backend.env, backend.ctx
    config, db_id = backend.config, backend.db_id
    gui = None
    gui_log = work_dir() / "b3" / "gui_events.jsonl"
    gui_startup = None
    try:
        startup = backend.start()
        if a.gui:
            t_gui = time.monotonic()
            w = work_dir() / "b3"
            genv = dict(env, AMORE_GUI_CONFIG=str(w / "gui-settings.json"))
            with open(w / "gui.out", "ab") as gout:
                gui = subprocess.Popen([sys.executable, str(Path(__file__).with_name(
                    "b3_gui_observer.py")), str(ctx), str(gui_log)], env=genv, stdout=gout,
                    stderr=subprocess.STDOUT, start_new_session=True)
            while not (gui_log.exists() and "observer_ready" in gui_log.read_text()):
                time.sleep(0.05)
                if gui.poll() is not None or time.monotonic() - t_gui > 120:
                    raise RuntimeError(f"GUI observer did not start; see {w / 'gui.out'}")
            ready = json.loads(gui_log.read_text().splitlines()[0])
            if ready.get("mode") != "kafka":
                raise RuntimeError(f"GUI observer not on Kafka: {ready}")
            gui_startup = time.monotonic() - t_gui
        updates = UpdateArrivals(config, db_id)
        arrivals = updates.arrivals
        con = sqlite3.connect(ctx / "runs.sqlite", timeout=30)

        def in_db(run):
            return con.execute("SELECT 1 FROM run_values WHERE run = ? AND name = 'n_trains'",
                               (run,)).fetchone() is not None

        def gui_time(run):
            if not gui_log.exists():
                return None
            for line in gui_log.read_text().splitlines():
                r = json.loads(line)
                if r.get("msg_kind") == "cell" and r.get("run") == run:
                    return r["t"]
            return None

        def event(run):
            t0 = time.monotonic()
            t0w = backend.event(run)
            while not in_db(run):
                time.sleep(0.002)
                if time.monotonic() - t0 > 60:
                    raise RuntimeError(f"run {run} not processed")
            t_db = time.monotonic() - t0
            while run not in arrivals and time.monotonic() - t0 < 10:
                time.sleep(0.002)
            t_gui = None
            if a.gui:
                while (t_gui := gui_time(run)) is None and time.monotonic() - t0 < 20:
                    time.sleep(0.005)
            return (t_db, arrivals.get(run, float("nan")) - t0,
                    None if t_gui is None else t_gui - t0w)

        event(1)  # warm-up
        db_lat, msg_lat, gui_lat, events = [], [], [], []
        for run in range(2, 2 + a.events):
            time.sleep(a.gap)
            t_db, t_msg, t_gui = event(run)
            db_lat.append(t_db)
            msg_lat.append(t_msg)
            gui_lat.append(t_gui)
            events.append({"run": run, "db_s": t_db, "msg_s": t_msg, "gui_s": t_gui})
            print(f"run {run}: in DB after {t_db:.3f} s, update message after {t_msg:.3f} s"
                  + (f", cell in GUI after {t_gui:.3f} s" if a.gui and t_gui is not None else
                     (", GUI: not seen" if a.gui else "")), flush=True)
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
        updates.stop()
        rows = [["event -> `n_trains` in runs.sqlite", f"**{med(db_lat):.3f} s**", rng(db_lat, 3)],
                ["event -> update message at a consumer", f"{med(msg_lat):.3f} s", rng(msg_lat, 3)]]
        if a.gui:
            g = [x for x in gui_lat if x is not None]
            rows.append(["event -> cell in the open GUI (table model)",
                         f"**{med(g):.3f} s**" if g else "not seen", rng(g, 3)])
        print_table(f"B3: event -> value latency ({a.events} events, median)",
                    ["milestone", "median", "range"], rows + [
                        ["baseline: broker produce -> consume round trip", f"{med(base):.3f} s", rng(base, 3)],
                        ["target (issue 2): event -> database", "<= 0.5 s",
                         "met" if med(db_lat) <= 0.5 else "MISSED"],
                        ["backend start-up (not in the latency)", f"{startup:.1f} s", ""],
                    ])
        if a.out:
            Path(a.out).parent.mkdir(parents=True, exist_ok=True)
            Path(a.out).write_text(json.dumps({
                "params": vars(a), "events": events, "baseline_s": base,
                "startup_s": startup, "gui_startup_s": gui_startup,
                "median": {"db_s": med(db_lat), "msg_s": med(msg_lat),
                           "gui_s": med([x for x in gui_lat if x is not None]),
                           "baseline_s": med(base)}}, indent=1))
    finally:
        if gui is not None and gui.poll() is None:
            os.killpg(gui.pid, signal.SIGTERM)
            try:
                gui.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(gui.pid, signal.SIGKILL)
                gui.wait()
        backend.stop()


if __name__ == "__main__":
    main()
