"""Fault: the broker goes away while runs are announced.

1. The network between AMORE and the broker goes down (a TCP proxy in front of tansu cuts
   AMORE's connections; the facility still reaches the broker and announces runs) and comes back.
2. The broker restarts with in-memory storage: every topic, offset and consumer group is gone;
   the facility creates its topics again and announces more runs.

What users notice: the backend and an open GUI's update consumer say "reconnecting" while the
broker is away (log, status record, event log; consumer state), reconnect by themselves, and
every run announced before, during and after is processed; the GUI gets its update messages
again after both faults.
"""
from __future__ import annotations

import json
import time
import uuid

import pytest

from backend.store.writer import RunDB
from tests.faults_helpers import (PROPOSAL, SIMPLE_CONTEXT, KafkaBackend, Tansu, TcpProxy,
                                  facility_create_topics, facility_msg, is_amore_client,
                                  kafka_toml, make_producer, wait_for)


@pytest.fixture
def broker_behind_proxy(tmp_path):
    proxy = TcpProxy("127.0.0.1:1")        # target set once tansu has its port
    proxy.start()
    tansu = Tansu(tmp_path / "tansu.log", advertised_port=proxy.port)
    proxy.target = ("127.0.0.1", tansu.port)
    tansu.start()
    yield tansu, proxy
    proxy.close()
    tansu.stop()


class Gui:
    """An open GUI's live-update thread (amore_gui._qt.workers.UpdateThread, the real one),
    recording what it tells the window."""

    def __init__(self, qtbot, ctx):
        from amore_gui._qt.workers import UpdateThread
        from amore_gui.application.dbread import load_table
        res = load_table(ctx)
        self.sources: list[str] = []
        self.done: set[int] = set()
        self.thread = UpdateThread(ctx, res.metadata.get("db_id"), time.time(), res.runs,
                                   res.variables_sig, res.comments_sig, use_kafka=True)
        self.thread.source.connect(lambda mode, text: self.sources.append(text))
        self.thread.updates.connect(self._on_updates)
        self.thread.start()
        qtbot.waitUntil(lambda: any("over Kafka" in t for t in self.sources), timeout=20000)

    def _on_updates(self, ups):
        for u in ups:
            if u.info and u.info.get("status") == "done" and u.values:
                self.done.add(u.run)

    def close(self):
        self.thread.stop()
        self.thread.wait(10000)


def test_broker_outage_and_restart(broker_behind_proxy, make_context_dir, write_run, qtbot,
                                   monkeypatch):
    tansu, proxy = broker_behind_proxy
    monkeypatch.setenv("AMORE_BROKER", proxy.address)
    tag = uuid.uuid4().hex[:8]
    topics = [f"r2d2-{tag}", f"corrections-{tag}"]
    ctx = make_context_dir(code=SIMPLE_CONTEXT, name=tag, config=kafka_toml(tag, jobs=1))
    facility_create_topics(proxy.address, topics)
    b = KafkaBackend(ctx, proxy.address)
    gui = None
    try:
        db = RunDB(ctx)
        gui = Gui(qtbot, ctx)
        facility = make_producer(proxy.address)

        def announce(runs):
            # written just before they are announced, as at the facility (runs already on disk
            # when the backend starts would be found by its catch-up, not announced)
            for r in runs:
                write_run(r, ntrains=5)
            for r in runs:
                facility.produce(topics[0], facility_msg(r))
            assert facility.flush(30) == 0

        def done(runs):
            return all((db.get_run(PROPOSAL, r) or {}).get("status") == "done" for r in runs)

        def status_record():
            try:
                return json.loads((ctx / "backend-status.json").read_text())["update_source"]
            except (OSError, ValueError, KeyError):
                return ""

        announce([1, 2, 3])
        wait_for(lambda: done([1, 2, 3]), 30, 0.1, "runs 1-3 done")
        qtbot.waitUntil(lambda: {1, 2, 3} <= gui.done, timeout=10000)

        # -- 1. network down between AMORE and the broker; the facility goes on announcing
        proxy.cut(is_amore_client)
        announce([4, 5, 6])
        wait_for(lambda: "unreachable for the run events; reconnecting" in b.log_text(), 30,
                 0.2, "the backend saying it is reconnecting")
        wait_for(lambda: "(reconnecting)" in status_record(), 10, 0.2,
                 "status record saying reconnecting")
        qtbot.waitUntil(lambda: "reconnecting" in gui.sources[-1], timeout=30000)
        assert db.get_run(PROPOSAL, 4) is None
        proxy.restore()
        wait_for(lambda: done([4, 5, 6]), 60, 0.2, "runs 4-6 done after the network is back")
        wait_for(lambda: "reachable again" in b.log_text(), 20, 0.2, "backend reconnected")
        qtbot.waitUntil(lambda: "reconnecting" not in gui.sources[-1], timeout=20000)
        qtbot.waitUntil(lambda: {4, 5, 6} <= gui.done, timeout=30000)
        assert "(reconnecting)" not in status_record()
        events = [e["message"] for e in db.events() if e["source"] == "kafka"]
        assert any("reconnecting" in m for m in events), events
        assert any("reachable again" in m for m in events), events

        # -- 2. the broker restarts and forgets everything (in-memory storage)
        tansu.restart()
        facility_create_topics(proxy.address, topics)
        announce([7, 8, 9])
        wait_for(lambda: done([7, 8, 9]), 90, 0.2, "runs 7-9 done after the broker restart")
        qtbot.waitUntil(lambda: {7, 8, 9} <= gui.done, timeout=30000)

        assert b.alive(), b.out_text()[-3000:]
        assert [r["run"] for r in db.runs()] == list(range(1, 10))
        for r in range(1, 10):
            assert db.get_values(PROPOSAL, r)["run_no"].value == r
        # (how long the recoveries take: benchmarks/faults.py)
        assert b.stop() == 0
    finally:
        if gui is not None:
            gui.close()
        b.cleanup()


def test_a_reprocess_cancelled_while_it_announces_says_its_runs_were_reprocessed(
        broker_behind_proxy, make_context_dir, write_run, monkeypatch):
    """The GUI's Cancel (SIGTERM) reaching ``reprocess`` after every run was computed, while
    it waits for the broker to take its update messages (here: the network to the broker is
    down), must not say "nothing changed": the runs were reprocessed."""
    from tests.conftest import HANGING_CONTEXT, run_status, start_hanging_reprocess
    tansu, proxy = broker_behind_proxy
    monkeypatch.setenv("AMORE_BROKER", proxy.address)
    tag = uuid.uuid4().hex[:8]
    ctx = make_context_dir(code=HANGING_CONTEXT, name=tag, config=kafka_toml(tag, jobs=2))
    write_run(1, ntrains=5)
    write_run(2, ntrains=5)
    p = start_hanging_reprocess(ctx)
    try:
        proxy.cut(is_amore_client)          # the command's update messages cannot be delivered
        (ctx / "hang").unlink()
        wait_for(lambda: run_status(ctx, 1) == "done" and run_status(ctx, 2) == "done",
                 60, what="both runs done")
        time.sleep(1)                       # (the command waits up to 5 s for the broker)
        p.terminate()                       # what the GUI's Cancel button does
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert "nothing changed" not in err and "before any run" not in err, err
    assert "Reprocessed 2/2 runs" in out + err, (out, err)
    db = RunDB(ctx)
    assert all(db.get_values(PROPOSAL, r)["slow"].value == 1 for r in (1, 2))
