"""The backend (`amore-proto listen`) as a real process: offline watcher, broken context files,
killed workers, clean shutdown."""
import subprocess
import textwrap
import time

import psutil

from backend.store.writer import RunDB

from tests.conftest import (FAST_WATCH, HANGING_CONTEXT, PROPOSAL, amore_cmd, process, run_status,
                            wait_for)


def start_with_run_1_hanging(make_context_dir, write_run, backend, config):
    """A backend whose run 1 is being processed and hangs until ``DIR/hang`` is removed."""
    ctx = make_context_dir(HANGING_CONTEXT, config=config)
    (ctx / "hang").write_text("")
    b = backend(ctx)
    write_run(1)
    wait_for(lambda: run_status(ctx, 1) == "processing", what="run 1 processing")
    return ctx, b


def test_offline_watcher_round_trip_and_clean_shutdown(make_context_dir, write_run, backend):
    ctx = make_context_dir(template="mid", config=FAST_WATCH)
    (ctx / "amore-tmux.sock").write_text("")  # stands in for the tmux socket
    b = backend(ctx)
    first_line = b.log.read_text().splitlines()[0]
    assert f"Running on " in first_line and f"PID {b.proc.pid}" in first_line
    info = write_run(1, ntrains=40)
    wait_for(lambda: run_status(ctx, 1) == "done", what="run 1 processed")
    db = RunDB(ctx)
    values = db.get_values(PROPOSAL, 1)
    assert values["n_trains"].value == 40
    assert values["sample"].value == info["sample"]
    assert values["cam_mean"].summary_type == "thumbnail"
    run = db.get_run(PROPOSAL, 1)
    assert abs(run["start_time"] - info["start_time"].timestamp()) < 0.2
    assert b.stop() == 0
    assert not (ctx / "amore-tmux.sock").exists()
    assert "Stopped" in b.log.read_text()


def test_broken_context_file_records_runs_and_catches_up_when_fixed(make_context_dir, write_run,
                                                                     backend):
    good = textwrap.dedent("""
        from amore.context import Variable

        @Variable(title="Trains")
        def n_trains(run):
            return len(run.train_ids)
    """)
    ctx = make_context_dir(good, config=FAST_WATCH)
    (ctx / "context.py").write_text(good.replace("return len", "return (len"))
    b = backend(ctx)
    assert "SyntaxError" in b.log.read_text()
    write_run(1, ntrains=20)
    wait_for(lambda: RunDB(ctx).get_run(PROPOSAL, 1), what="run 1 recorded")
    wait_for(lambda: "waiting for a working context file" in
             (RunDB(ctx).get_run(PROPOSAL, 1)["status_message"] or ""), what="run waiting")
    assert run_status(ctx, 1) == "waiting"
    (ctx / "context.py").write_text(good)
    wait_for(lambda: run_status(ctx, 1) == "done", what="run 1 processed after the fix")
    assert RunDB(ctx).get_values(PROPOSAL, 1)["n_trains"].value == 20
    assert b.proc.poll() is None
    msgs = [(e["level"], e["message"]) for e in RunDB(ctx).events() if e["source"] == "context"]
    assert msgs[0][0] == "error" and "broken" in msgs[0][1] and msgs[-1] == ("info", "Context file fixed")


#: A context file that notes each variable it computes (``name run`` lines in ``DIR/calls``),
#: one variable depending on the manual column ``distance``.
NOTING_CONTEXT = textwrap.dedent("""
    import os
    from amore.context import Variable

    def note(name, r):
        with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "calls"), "a") as f:
            f.write(f"{name} {r}\\n")

    @Variable(title="Trains")
    def n_trains(run, r: "meta#run_number"):
        note("n_trains", r)
        return len(run.train_ids)

    @Variable(title="Scaled", units="mm")
    def scaled(run, d: "var#distance", r: "meta#run_number"):
        note("scaled", r)
        return d * 2
""")


def noted(ctx, name, run):
    """How often the context file's ``name`` was computed for ``run`` (``DIR/calls``)."""
    calls = ctx / "calls"
    lines = calls.read_text().splitlines() if calls.exists() else []
    return lines.count(f"{name} {run}")


def test_a_manual_edit_while_the_context_file_is_broken_recomputes_only_its_dependents(
        make_context_dir, write_run, backend):
    """A manual value edited while the context file is broken: the run waits, and once the file
    is fixed only the variables depending on the value are computed, not the whole run again
    (the soak's full computations of runs 471, 526 and 589)."""
    from backend.store.manual import ManualStore
    ctx = make_context_dir(NOTING_CONTEXT, config=FAST_WATCH)
    ManualStore(RunDB(ctx)).add_column("distance", "number", units="mm")
    good = (ctx / "context.py").read_text()
    b = backend(ctx)
    write_run(1, ntrains=20)
    write_run(2, ntrains=25)
    wait_for(lambda: run_status(ctx, 1) == "done" and run_status(ctx, 2) == "done", 60,
             what="runs 1 and 2 processed")

    def set_distance(mm):
        p = subprocess.run(amore_cmd("set", "1", "distance", str(mm), "-d", ctx),
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stdout + p.stderr
    set_distance(3)
    wait_for(lambda: noted(ctx, "scaled", 1) == 1, 60, what="scaled computed for the distance")
    wait_for(lambda: RunDB(ctx).get_values(PROPOSAL, 1)["scaled"].value == 6, 30,
             what="scaled stored")
    time.sleep(1.1)                        # a new modification time on coarse file systems
    (ctx / "context.py").write_text(good.replace("return d * 2", "return (d * 2"))
    wait_for(lambda: any(e["source"] == "context" and e["level"] == "error"
                         for e in RunDB(ctx).events()), 60, what="the broken file noticed")
    set_distance(5)
    wait_for(lambda: run_status(ctx, 1) == "waiting", 60, what="run 1 waiting for the fix")
    assert run_status(ctx, 2) == "done"
    time.sleep(1.1)
    (ctx / "context.py").write_text(good)
    wait_for(lambda: run_status(ctx, 1) == "done", 60, what="run 1 computed after the fix")
    assert RunDB(ctx).get_values(PROPOSAL, 1)["scaled"].value == 10
    time.sleep(0.5)
    assert noted(ctx, "scaled", 1) == 2
    assert noted(ctx, "n_trains", 1) == 1, \
        f"run 1 computed again as a whole: {(ctx / 'calls').read_text().splitlines()}"
    assert noted(ctx, "n_trains", 2) == 1
    assert b.stop() == 0


def test_a_run_both_the_catch_up_and_its_run_source_queue_is_computed_once(
        make_context_dir, write_run):
    """After a restart the catch-up queues what the last backend left (run 1, recorded but not
    computed) and what it never saw (run 2, on disk), while the run source announces the same
    runs (Kafka delivers again what was not acknowledged): whichever request comes second finds
    the run done and computes nothing (the soak's runs 622-627 and 1165-1169 were computed
    twice after a restart, the catch-up's request and the event's at the same time)."""
    import threading

    from backend.service.listener import Listener
    from backend.sources.base import RunEvent

    from backend.store.manual import ManualStore
    ctx = make_context_dir(NOTING_CONTEXT, config="[processing]\njobs = 1\n")
    ManualStore(RunDB(ctx)).add_column("distance", "number", units="mm")
    write_run(1, ntrains=20)
    write_run(2, ntrains=25)
    RunDB(ctx).ensure_run(PROPOSAL, 1)     # recorded by the last backend, never computed
    lst = Listener(ctx)
    try:
        lst.pool.start()
        lst.reload.check(wait=True)
        pending = lst.catchup.find()      # as at a start: before the run sources start
        assert pending.unfinished == [1] and pending.unknown == [2]
        gate = threading.Event()          # the one run thread is busy until the gate opens,
        lst.executor.submit(gate.wait)    # so that the requests queue up as they come
        lst.handle_event(RunEvent(PROPOSAL, 1, "raw", source="kafka"))   # the source first
        lst.catchup.run(pending)
        lst.handle_event(RunEvent(PROPOSAL, 2, "raw", source="kafka"))   # the catch-up first
        gate.set()
        lst.executor.shutdown(wait=True)
    finally:
        lst.shutdown(grace=0.0)
    db = RunDB(ctx)
    assert [db.get_values(PROPOSAL, r)["n_trains"].value for r in (1, 2)] == [20, 25]
    assert (noted(ctx, "n_trains", 1), noted(ctx, "n_trains", 2)) == (1, 1), \
        f"computed: {(ctx / 'calls').read_text().splitlines()}"


def test_a_run_announced_twice_at_once_is_computed_once(make_context_dir, write_run):
    """Two requests of the same run taken up at the same moment by two run threads (an event
    and its redelivery after a rebalance, the catch-up's request and the event after a
    restart): the first looks at the run and computes it, the second looks only then, finds
    it done and computes nothing (before, both found it not done yet and both computed it)."""
    import threading

    from backend.service.listener import Listener
    from backend.sources.base import RunEvent
    from backend.store.manual import ManualStore

    ctx = make_context_dir(NOTING_CONTEXT, config="[processing]\njobs = 2\n")
    ManualStore(RunDB(ctx)).add_column("distance", "number", units="mm")
    runs = range(1, 7)
    for r in runs:
        write_run(r, ntrains=10 + r)
    lst = Listener(ctx)
    try:
        lst.pool.start()
        lst.reload.check(wait=True)
        gate = threading.Event()           # both run threads busy until the gate opens
        for _ in range(2):
            lst.executor.submit(gate.wait)
        for r in runs:                     # each run's two requests side by side in the queue
            lst.handle_event(RunEvent(PROPOSAL, r, "raw", source="kafka"))
            lst.handle_event(RunEvent(PROPOSAL, r, "raw", source="kafka (redelivered)"))
        gate.set()
        lst.executor.shutdown(wait=True)
    finally:
        lst.shutdown(grace=0.0)
    assert [RunDB(ctx).get_values(PROPOSAL, r)["n_trains"].value for r in runs] == \
        [10 + r for r in runs]
    assert [noted(ctx, "n_trains", r) for r in runs] == [1] * len(runs), \
        f"computed: {(ctx / 'calls').read_text().splitlines()}"


def test_killed_worker_fails_its_run_only_and_reprocess_fixes_it(make_context_dir, write_run,
                                                                  backend):
    ctx = make_context_dir(textwrap.dedent("""
        import os, time
        from amore.context import Variable

        @Variable
        def slow(run, n: "meta#run_number"):
            if n == 1 and os.path.exists("hang"):
                time.sleep(600)
            return n * 10
    """), config=FAST_WATCH)
    (ctx / "hang").write_text("")
    b = backend(ctx)
    write_run(1)
    wait_for(lambda: run_status(ctx, 1) == "processing", what="run 1 processing")
    time.sleep(0.3)
    for w in b.workers():
        w.kill()
    wait_for(lambda: run_status(ctx, 1) == "failed", what="run 1 failed")
    assert "SIGKILL" in RunDB(ctx).get_run(PROPOSAL, 1)["status_message"]
    died = [e for e in RunDB(ctx).events(level="error") if e["source"] == "worker"]
    assert died and died[0]["run"] == 1 and "SIGKILL" in died[0]["message"]  # in the event log
    write_run(2)
    wait_for(lambda: run_status(ctx, 2) == "done", what="run 2 processed by a new worker")
    assert RunDB(ctx).get_values(PROPOSAL, 2)["slow"].value == 20
    (ctx / "hang").unlink()
    out = subprocess.run(amore_cmd("reprocess", "1", "--dir", ctx), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert run_status(ctx, 1) == "done"
    assert RunDB(ctx).get_values(PROPOSAL, 1)["slow"].value == 10


def test_pending_runs_are_resumed_at_start(make_context_dir, write_run, backend):
    ctx = make_context_dir(template="generic", config=FAST_WATCH)
    write_run(4, ntrains=25)
    RunDB(ctx).ensure_run(PROPOSAL, 4)  # recorded by an earlier backend, never processed
    backend(ctx)
    wait_for(lambda: run_status(ctx, 4) == "done", what="run 4 resumed")
    assert RunDB(ctx).get_values(PROPOSAL, 4)["n_trains"].value == 25


def test_kafka_event_to_values_and_update_message(make_context_dir, write_run, backend,
                                                  kafka_broker, monkeypatch):
    """A real `migration_complete` on a real broker: values in runs.sqlite (the event alone
    triggers processing; how long it takes is benchmark B3, benchmarks/b3_latency.py), and a
    version-1 update message naming them."""
    import json

    from backend.config import load_config
    from backend.notify.kafka import UpdateConsumer

    from tests.kafka_broker import create_topics, produce

    monkeypatch.setenv("AMORE_BROKER", kafka_broker)
    ctx = make_context_dir(template="mid", name="kctx")
    config = load_config(ctx)
    db_id = RunDB(ctx).db_id
    create_topics(kafka_broker, config["kafka"]["event_topics"] + [config.update_topic(db_id)])
    b = backend(ctx)
    assert "Listening for run events on " + kafka_broker in b.log.read_text()
    updates = UpdateConsumer(config, db_id)
    topic = config["kafka"]["event_topics"][0]
    # A run of another proposal, malformed messages, then the real event.
    produce(kafka_broker, topic, json.dumps({"event": "migration_complete", "proposal": 1,
                                             "run": 1}).encode())
    produce(kafka_broker, topic, b"not json at all")
    produce(kafka_broker, topic, json.dumps({"event": "migration_complete", "proposal": PROPOSAL,
                                             "run": "x"}).encode())
    write_run(1, ntrains=30)
    time.sleep(1.0)  # the watcher is off: only the event may trigger processing
    assert RunDB(ctx).get_run(PROPOSAL, 1) is None

    def send_and_wait(run):
        produce(kafka_broker, topic, json.dumps({"event": "migration_complete",
                                                 "proposal": PROPOSAL, "run": str(run)}).encode())
        wait_for(lambda: run_status(ctx, run) == "done", 30, 0.005, f"run {run} processed")

    send_and_wait(1)
    write_run(2, ntrains=30)
    send_and_wait(2)
    assert RunDB(ctx).get_values(PROPOSAL, 2)["n_trains"].value == 30
    got = []
    wait_for(lambda: got.extend(updates.poll(0.2)) or any(
        k == "run_values_updated" and d["run"] == 2 and d["names"] for k, d in got), 10,
        what="update message")
    msg = next(d for k, d in got if k == "run_values_updated" and d["run"] == 2 and d["names"])
    assert msg["proposal"] == PROPOSAL and "n_trains" in msg["names"]
    log_text = b.log.read_text()
    assert log_text.count("not JSON") == 1 and "is not a number: 'x'" in log_text, log_text
    assert RunDB(ctx).run_numbers() == [1, 2]
    updates.close()
    assert b.stop() == 0


def test_sigterm_abandons_in_flight_run_which_resumes_at_next_start(make_context_dir, write_run,
                                                                    backend):
    ctx, b = start_with_run_1_hanging(make_context_dir, write_run, backend, FAST_WATCH)
    workers = b.workers()
    assert workers
    # stop() waits 20 s at most for the exit (then fails): the backend does not wait for the
    # run, which hangs until DIR/hang is removed (how long it takes: benchmarks/waits.py)
    assert b.stop() == 0
    run = RunDB(ctx).get_run(PROPOSAL, 1)
    assert run["status"] == "pending" and "interrupted" in run["status_message"], run
    assert not [w for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE]
    (ctx / "hang").unlink()
    backend(ctx)
    wait_for(lambda: run_status(ctx, 1) == "done", what="run 1 resumed")


def test_context_python_from_configuration_is_used(make_context_dir, write_run, tmp_path):
    import stat
    import sys

    marker = tmp_path / "used"
    wrapper = tmp_path / "python-wrapper"
    wrapper.write_text(f"#!/bin/sh\ntouch {marker}\nexec {sys.executable} \"$@\"\n")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    ctx = make_context_dir(template="generic",
                           config=f'[processing]\ncontext_python = "{wrapper}"\n')
    write_run(1, ntrains=12)
    out, values, err = process(ctx, 1)
    assert marker.exists()
    assert values["n_trains"].value == 12


def test_unreachable_broker_falls_back_to_watching(make_context_dir, write_run, backend,
                                                    monkeypatch):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AMORE_BROKER", f"127.0.0.1:{port}")
    ctx = make_context_dir(template="generic",
                           config=FAST_WATCH + "[kafka]\nconnect_timeout = 1.0\n")
    b = backend(ctx)
    assert f"Kafka broker 127.0.0.1:{port} not reachable: running offline" in b.log.read_text()
    write_run(1, ntrains=15)
    wait_for(lambda: run_status(ctx, 1) == "done", what="run 1 processed offline")
    assert RunDB(ctx).get_values(PROPOSAL, 1)["n_trains"].value == 15


def test_main_loop_keeps_its_heartbeat_while_workers_are_busy(make_context_dir, write_run,
                                                              backend):
    """A context-file edit while every worker is busy with long runs must not stall the loop
    that writes the status record other hosts rely on."""
    import json

    ctx, b = start_with_run_1_hanging(
        make_context_dir, write_run, backend,
        FAST_WATCH + "[processing]\njobs = 1\n\n[backend]\nheartbeat_seconds = 0.5\n")
    (ctx / "context.py").write_text((ctx / "context.py").read_text() + "\n# edited\n")
    time.sleep(1.5)  # the loop has noticed the edit; the only worker is busy

    def heartbeat():
        return json.loads((ctx / "backend-status.json").read_text())["heartbeat"]
    first = heartbeat()
    wait_for(lambda: heartbeat() > first + 1.0, 5, what="heartbeat going on")
    (ctx / "hang").unlink()
    wait_for(lambda: run_status(ctx, 1) == "done", what="run 1 processed")
    wait_for(lambda: "Context file reloaded" in b.log.read_text(), 10, what="reload")


def test_handed_over_reprocess_cancelled_by_its_command_stops_its_runs(
        make_context_dir, write_run, backend):
    """The GUI's Cancel (SIGTERM to the command) of a reprocess handed to the backend: the runs
    not started yet are dropped there, and the run being computed is stopped, keeping its
    values from before; the backend goes on with a new worker."""
    ctx = make_context_dir(HANGING_CONTEXT, config=FAST_WATCH + "[processing]\njobs = 1\n")
    b = backend(ctx)
    for r in (1, 2, 3):
        write_run(r)
    wait_for(lambda: all(run_status(ctx, r) == "done" for r in (1, 2, 3)), what="runs processed")
    def stamp(run):
        import sqlite3
        con = sqlite3.connect(ctx / "runs.sqlite")
        try:
            return con.execute("SELECT timestamp FROM run_values WHERE run = ? AND name = 'slow'",
                               (run,)).fetchone()[0]
        finally:
            con.close()
    stamps = {r: stamp(r) for r in (1, 2, 3)}
    (ctx / "hang").write_text("")
    cli = subprocess.Popen(amore_cmd("reprocess", "1", "2", "3", "-d", ctx), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    wait_for(lambda: run_status(ctx, 1) == "processing", what="run 1 processing")
    cli.terminate()
    cli.communicate(timeout=30)
    wait_for(lambda: "cancelled by its client: run(s) 2, 3 not started; run(s) 1 stopped"
             in b.log.read_text(), 10, what="runs 2 and 3 dropped, run 1 stopped")
    # run 1 is stopped although its variable still hangs ("hang" is there)
    # (how long it takes: benchmarks/waits.py)
    wait_for(lambda: run_status(ctx, 1) == "done", 10, what="run 1 back to done")
    time.sleep(1.0)
    after = {r: stamp(r) for r in (1, 2, 3)}
    assert after == stamps   # every run keeps its values from before
    assert run_status(ctx, 2) == run_status(ctx, 3) == "done"
    assert "cancelled" in RunDB(ctx).get_run(PROPOSAL, 1)["status_message"]
    # the backend goes on: the same run, reprocessed again, is computed by a new worker
    (ctx / "hang").unlink()
    p = subprocess.run(amore_cmd("reprocess", "1", "-d", ctx), capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0 and "in the running backend" in p.stdout, p.stdout + p.stderr
    assert stamp(1) > stamps[1]
    assert b.stop() == 0


def test_one_off_reprocess_is_handed_to_the_running_backend(make_context_dir, write_run, backend):
    ctx = make_context_dir(template="mid", config=FAST_WATCH)
    b = backend(ctx)
    write_run(1, ntrains=40)
    wait_for(lambda: run_status(ctx, 1) == "done", what="run 1 processed")
    workers = {p.pid for p in b.workers()}

    def written():
        import sqlite3
        con = sqlite3.connect(ctx / "runs.sqlite")
        try:
            return dict(con.execute("SELECT name, timestamp FROM run_values WHERE run = 1"))
        finally:
            con.close()
    before = written()
    p = subprocess.run(amore_cmd("reprocess", "1", "--var", "n_trains", "-d", ctx, "-v"),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"in the running backend, PID {b.proc.pid}" in p.stdout
    assert "Run 1: done" in p.stderr
    after = written()
    assert after["n_trains"] > before["n_trains"]  # recomputed now ...
    assert all(after[n] == before[n] for n in before if n != "n_trains")  # ... and nothing else
    assert RunDB(ctx).get_values(PROPOSAL, 1)["n_trains"].value == 40
    assert {p.pid for p in b.workers()} == workers  # the backend's own warm workers did it
    assert "Reprocess of run(s) 1 requested by PID" in b.log.read_text()
    # the hand-over starts no heavy library in the command (that is what makes it quick)
    cmd = amore_cmd("reprocess", "1", "--var", "n_trains", "-d", ctx)
    p = subprocess.run([cmd[0], "-X", "importtime", *cmd[1:]], capture_output=True, text=True,
                       timeout=60)
    assert "running backend" in p.stdout, p.stdout + p.stderr
    loaded = {line.split("|")[-1].strip() for line in p.stderr.splitlines() if "|" in line}
    assert not loaded & {"sqlalchemy", "numpy", "h5py", "extra_data", "confluent_kafka"}
    # an unknown variable is not handed over: the local path names the variables that exist
    p = subprocess.run(amore_cmd("reprocess", "1", "--var", "nope", "-d", ctx),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "No variable named nope" in p.stderr
    assert b.stop() == 0
    # without a backend it works as before
    p = subprocess.run(amore_cmd("reprocess", "1", "-d", ctx, "-q"), capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0 and "running backend" not in p.stdout, p.stdout + p.stderr


COUNTING_CONTEXT = textwrap.dedent("""
    import os
    from amore.context import Variable

    @Variable(title="Trains")
    def n_trains(run, n: "meta#run_number"):
        with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "calls"), "a") as f:
            f.write(f"{n}\\n")
        return len(run.train_ids)
""")


def test_a_run_announced_after_a_catch_up_computed_it_is_not_computed_again(
        make_context_dir, write_run, backend, kafka_broker, monkeypatch):
    """A run whose announcement the backend reads from Kafka after a catch-up (`listen --once`
    while it was down) computed it: not computed a second time. Announced again after its data
    changed: computed again."""
    import json

    from backend.config import load_config

    from tests.kafka_broker import create_topics, produce

    ctx = make_context_dir(COUNTING_CONTEXT, name="cctx")
    calls = ctx / "calls"

    def computed(run):
        return calls.read_text().split().count(str(run)) if calls.exists() else 0

    write_run(1, ntrains=30)
    out = subprocess.run(amore_cmd("listen", "--once", ctx), capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert computed(1) == 1 and RunDB(ctx).get_values(PROPOSAL, 1)["n_trains"].value == 30

    monkeypatch.setenv("AMORE_BROKER", kafka_broker)
    config = load_config(ctx)
    create_topics(kafka_broker, config["kafka"]["event_topics"])
    topic = config["kafka"]["event_topics"][0]
    b = backend(ctx)

    def announce(run):
        produce(kafka_broker, topic, json.dumps({"event": "migration_complete",
                                                 "proposal": PROPOSAL, "run": str(run)}).encode())

    announce(1)
    write_run(2, ntrains=20)
    announce(2)   # events are handled in order: once run 2 is done, run 1's was handled
    wait_for(lambda: run_status(ctx, 2) == "done" and computed(2) == 1, 60, what="run 2 done")
    wait_for(lambda: "Run 1: announced again" in b.log.read_text() or computed(1) > 1, 30,
             what="run 1's announcement handled")
    time.sleep(0.5)
    assert computed(1) == 1, f"run 1 computed again (calls: {calls.read_text().split()})"

    # its raw data rewritten (another number of trains): announced again, computed again
    time.sleep(1.1)   # a new modification time even on coarse-grained file systems
    write_run(1, ntrains=40)
    announce(1)
    wait_for(lambda: computed(1) == 2, 60, what="run 1 computed after its data changed")
    wait_for(lambda: RunDB(ctx).get_values(PROPOSAL, 1)["n_trains"].value == 40, 30,
             what="run 1's new value")
    assert b.stop() == 0


#: A context file whose variable prints 20 lines of 100 characters per run (2 KB of log).
CHATTY_CONTEXT = textwrap.dedent("""
    from amore.context import Variable

    @Variable(title="Chatty")
    def chatty(run, r: "meta#run_number"):
        for i in range(20):
            print(f"run {r} line {i:03d} " + "x" * 80)
        return r
""")


def test_amore_log_is_rotated_at_its_size_cap(make_context_dir, write_run):
    """The backend's log never grows past ``[backend] log_max_mb * (log_backups + 1)``: it is
    rotated to amore.log.1, .2 ... and the oldest is dropped; the log's tail (what the GUI's log
    view and ``backend logs`` show) still has the newest lines."""
    from backend.service.manager import log_tail
    ctx = make_context_dir(code=CHATTY_CONTEXT,
                           config="[backend]\nlog_max_mb = 0.004\nlog_backups = 2\n"
                                  "[processing]\njobs = 1\n")
    for r in range(1, 9):
        write_run(r, ntrains=5)
    p = subprocess.run(amore_cmd("listen", "--once", ctx), capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    db = RunDB(ctx)
    assert [db.get_values(PROPOSAL, r)["chatty"].value for r in range(1, 9)] == list(range(1, 9))
    logs = sorted(x.name for x in ctx.glob("amore.log*"))
    assert logs == ["amore.log", "amore.log.1", "amore.log.2"], logs
    cap = 0.004 * 2**20
    sizes = {x.name: x.stat().st_size for x in ctx.glob("amore.log*")}
    assert all(s <= cap for s in sizes.values()), sizes
    assert any("Caught up" in line for line in log_tail(ctx, 5))
    # the first runs' output went with the dropped files; the last run's is kept
    text = "".join((ctx / n).read_text() for n in logs)
    assert "run 8 line 019" in text and "run 1 line 000" not in text
