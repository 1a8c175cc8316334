"""The Qt-free application layer every front-end calls (amore_gui.application), without a display:
opening and creating context directories, the workspace's reads, writes and commands, and the
live-update policy (database watching; Kafka with the real tansu broker, its backstop, a broker
outage) - on real SQLite databases filled by the real backend."""
import json
import subprocess
import sys
import threading
import time

import pytest

from amore_gui.application import opening
from backend.contextdir import STATUS_FILE_NAME
from backend.store.writer import RunDB
from tests.conftest import PROPOSAL, amore_cmd, wait_for
from tests.gui_fixtures import GUI_PROPOSAL


# --- opening and creating ----------------------------------------------------------------------

def test_create_context_dir_keeps_a_context_file_without_database(tmp_path, data_root):
    d = tmp_path / "amore"
    made = opening.create_context_dir(d, PROPOSAL, "generic")
    assert not made.kept_context and made.context_file == d / "context.py"
    assert opening.has_database(d) and (d / "extracted_data").is_dir()
    assert "generic" in opening.templates()
    # a context.py copied in, no database yet: the database is made around it, the file kept
    d2 = tmp_path / "copied"
    d2.mkdir()
    (d2 / "context.py").write_text("# my variables\n")
    made = opening.create_context_dir(d2, PROPOSAL, "mid")
    assert made.kept_context and (d2 / "context.py").read_text() == "# my variables\n"
    assert RunDB(d2).proposal == PROPOSAL
    # both there: nothing is overwritten
    with pytest.raises(FileExistsError):
        opening.create_context_dir(d2, PROPOSAL, "mid")
    # an explicit context file never silently gives way to the one in the directory
    d3 = tmp_path / "explicit"
    d3.mkdir()
    (d3 / "context.py").write_text("# mine\n")
    with pytest.raises(FileExistsError):
        opening.create_context_dir(d3, PROPOSAL, context_file=d2 / "context.py")
    assert not opening.has_database(d3)
    target = opening.locate(str(d2))
    assert target.exists and target.context_dir == d2.resolve()
    with pytest.raises(opening.LocateError):
        opening.locate("99999")


def test_cli_init_shares_the_create_only_the_database_rule(tmp_path, data_root):
    d = tmp_path / "amore"
    d.mkdir()
    (d / "context.py").write_text("# kept\n")
    out = subprocess.run(amore_cmd("init", d, "--proposal", PROPOSAL), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "kept the existing context.py" in out.stdout
    assert (d / "context.py").read_text() == "# kept\n" and opening.has_database(d)


# --- following live updates (Qt-free: a plain thread runs LiveUpdates.run) --------------------

class Follower:
    """Runs a workspace's LiveUpdates in a thread, as a front-end does, recording its events
    in order as (name, args)."""

    def __init__(self, ctx, use_kafka=True, between=None, **intervals):
        from amore_gui.application.workspace import Workspace
        self.ws = Workspace(ctx)
        since = time.time()
        loaded = self.ws.load()
        if between is not None:
            between()            # a change after the table was read, before following
        self.live = self.ws.live_updates(loaded, since, use_kafka=use_kafka)
        for k, v in intervals.items():
            setattr(self.live, k, v)
        self.events = []
        for name in self.live.EVENTS:
            getattr(self.live.events, name).connect(
                lambda *a, name=name: self.events.append((name, a)))
        self.thread = threading.Thread(target=self.live.run, name="live-updates", daemon=True)
        self.thread.start()
        wait_for(lambda: self.names().count("ready"), 60, what="live updates ready")

    def names(self):
        return [n for n, _ in self.events]

    def sources(self):
        return [a for n, a in self.events if n == "source"]

    def values(self, run, name):
        """The values of ``name`` for ``run`` the updates carried, in order."""
        return [u.values[name].num for n, a in self.events if n == "updates"
                for u in a[0] if u.run == run and name in u.values]

    def value(self, run, name):
        """The newest value of ``name`` for ``run`` the updates carried (None if none)."""
        return (self.values(run, name) or [None])[-1]

    def close(self):
        self.live.stop()
        self.thread.join(15)
        assert not self.thread.is_alive(), "LiveUpdates.run did not return after stop()"


def write_number(ctx, run, name, value):
    from backend.store.writer import StoredValue
    db = RunDB(ctx)
    try:
        db.write_values(GUI_PROPOSAL, run, {name: StoredValue(float(value), "number")})
    finally:
        db.close()


def test_live_updates_watch_the_database_without_a_broker(gui_ctx):
    from backend.store.manual import ManualStore
    ctx = gui_ctx["ctx"]
    f = Follower(ctx, between=lambda: write_number(ctx, 3, "cam_peak", 111))
    try:
        # catch-up: the change made after the table was read comes before "ready"
        names = f.names()
        assert names.index("updates") < names.index("ready")
        assert f.value(3, "cam_peak") == 111
        assert f.sources()[0] == ("db", "Live: updates arrive from database changes "
                                        "(runs.sqlite checked every 0.25 s; no Kafka broker "
                                        "configured)")
        assert f.live.mode == "db"
        write_number(ctx, 2, "cam_peak", 4242)
        wait_for(lambda: f.value(2, "cam_peak") == 4242, 30, what="the new value")
        ManualStore(RunDB(ctx)).add_column("distance", "number", units="mm")
        wait_for(lambda: "reload" in f.names(), 30, what="reload after a new column")
        f.ws.add_logbook_comment("shift change", author="ana", proposal=GUI_PROPOSAL)
        wait_for(lambda: "comments" in f.names(), 30, what="the logbook changed")
        assert [c["text"] for c in f.ws.read_logbook()] == ["shift change"]
        wait_for(lambda: "backend" in f.names(), 30, what="the backend's state")
        backend = [a[0] for n, a in f.events if n == "backend"][0]
        assert backend.state == "stopped" and backend.alive is False
    finally:
        f.close()


def test_live_updates_say_why_there_is_no_kafka(gui_ctx, monkeypatch):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()                                   # nothing listens there
    monkeypatch.setenv("AMORE_BROKER", f"127.0.0.1:{port}")
    f = Follower(gui_ctx["ctx"])
    try:
        assert f.sources()[0] == ("db", "Live: updates arrive from database changes "
                                        "(runs.sqlite checked every 0.25 s; Kafka broker not "
                                        "reachable)")
    finally:
        f.close()
    # use_kafka=False: database watching even with a broker
    f = Follower(gui_ctx["ctx"], use_kafka=False)
    try:
        assert f.live.mode == "db" and f.live.publish("comment_changed", {"id": 1}) is False
        assert f.sources()[0][1].endswith("; Kafka switched off)"), f.sources()
    finally:
        f.close()


def test_live_updates_follow_kafka_messages_poke_and_backstop(gui_ctx, kafka_broker, monkeypatch):
    from backend.config import load_config
    from backend.notify.kafka import UpdatePublisher
    monkeypatch.setenv("AMORE_BROKER", kafka_broker)
    ctx = gui_ctx["ctx"]
    # no backstop while this test looks at messages and pokes
    a = Follower(ctx, BACKSTOP=3600.0)
    b = Follower(ctx, BACKSTOP=0.5)
    try:
        assert a.live.mode == b.live.mode == "kafka"
        assert a.sources()[0] == ("kafka", f"Live: updates arrive over Kafka (broker {kafka_broker})")
        # the backend stores a value and announces it: the run is read on the message
        write_number(ctx, 2, "cam_peak", 1.5)
        db = RunDB(ctx)
        pub = UpdatePublisher(load_config(ctx), db.db_id)
        db.close()
        assert pub.publish("run_values_updated", {"proposal": GUI_PROPOSAL, "run": 2,
                                                   "names": ["cam_peak"]})
        wait_for(lambda: a.value(2, "cam_peak") == 1.5, 30, what="the announced value")
        # a value stored without a message: seen after a poke (this front-end wrote it) ...
        write_number(ctx, 4, "cam_peak", 2.5)
        a.live.poke()
        wait_for(lambda: a.value(4, "cam_peak") == 2.5, 30, what="the value after a poke")
        # ... and by the other follower's backstop, without message or poke
        write_number(ctx, 1, "cam_peak", 3.5)
        wait_for(lambda: b.value(1, "cam_peak") == 3.5, 30, what="the value by the backstop")
        assert 3.5 not in a.values(1, "cam_peak")   # no backstop, no message: not read
        # what one front-end announces reaches the other
        assert a.live.publish("comment_changed", {"proposal": GUI_PROPOSAL, "run": 3})
        wait_for(lambda: any(u.run == 3 for n, args in b.events if n == "updates"
                             for u in args[0]), 30, what="the announced comment")
        pub.close()
    finally:
        a.close()
        b.close()


def test_live_updates_say_reconnecting_and_read_the_database_while_the_broker_is_away(
        gui_ctx, tmp_path, monkeypatch):
    from tests.faults_helpers import Tansu, TcpProxy, is_amore_client
    proxy = TcpProxy("127.0.0.1:1").start()
    tansu = Tansu(tmp_path / "tansu.log", advertised_port=proxy.port)
    proxy.target = ("127.0.0.1", tansu.port)
    tansu.start()
    monkeypatch.setenv("AMORE_BROKER", proxy.address)
    ctx = gui_ctx["ctx"]
    f = Follower(ctx, BACKSTOP=3600.0)
    try:
        assert f.live.mode == "kafka"
        proxy.cut(is_amore_client)
        wait_for(lambda: "reconnecting" in f.sources()[-1][1], 60, what="status reconnecting")
        assert f.sources()[-1] == ("kafka", f"Live: Kafka broker {proxy.address} unreachable, "
                                   "reconnecting; updates arrive from database changes meanwhile")
        write_number(ctx, 2, "cam_peak", 77)       # nobody can announce it
        wait_for(lambda: f.value(2, "cam_peak") == 77, 30, what="the value read meanwhile")
        proxy.restore()
        wait_for(lambda: f.sources()[-1] == ("kafka", f"Live: updates arrive over Kafka (broker {proxy.address})"), 60,
                 what="status back to Kafka")
        assert f.live.kafka_state == "connected"
    finally:
        f.close()
        proxy.close()
        tansu.stop()


# --- the workspace: reads, writes and commands of one context directory -----------------------

def run_job(job) -> tuple[int, list[str]]:
    """Run a ReprocessJob's command as a front-end would (here: a plain subprocess), feeding it
    the output as it arrives; returns (exit code, lines shown)."""
    p = subprocess.Popen(job.argv, cwd=job.cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    shown = []
    while True:
        chunk = p.stdout.read1(4096)
        if not chunk:
            break
        shown += job.feed(chunk)
    code = p.wait(120)
    shown.append(job.finish(code))
    return code, shown


def test_workspace_reads_writes_and_runs_commands_without_qt(gui_ctx):
    import numpy as np
    from amore_gui.application.workspace import Workspace
    from backend.ctxrunner.results import h5_path, read_run_value
    from backend.store.manual import ManualError
    from backend.testing.mockdata import write_run
    ctx = gui_ctx["ctx"]
    ws = Workspace(ctx)
    assert ws.context_file == ctx / "context.py" and ws.vocabulary.run == "Run"
    # a run's full values, and per-train data matched on train ID
    ref = read_run_value(h5_path(ctx, GUI_PROPOSAL, 2), "xgm_trend")
    v = ws.read_value(GUI_PROPOSAL, 2, "xgm_trend")
    assert np.array_equal(v.values, ref.values)
    res, problems = ws.read_per_train([(GUI_PROPOSAL, 2), (GUI_PROPOSAL, 3)],
                                      ["motor_trend", "xgm_energy"])
    assert sorted(res) == [(GUI_PROPOSAL, 2), (GUI_PROPOSAL, 3)] and problems == []
    res, problems = ws.read_per_train([(GUI_PROPOSAL, 2)], ["motor_trend", "sample"])
    assert res == {} and problems == ["run 2: sample is not per-train data"]
    with pytest.raises(KeyError):
        ws.read_value(GUI_PROPOSAL, 2, "no_such_variable")
    # comments and manual values
    ws.set_comment(GUI_PROPOSAL, 3, "sample moved")
    assert ws.read_run_update(GUI_PROPOSAL, 3).info["comment"] == "sample moved"
    col = ws.add_manual_column(name="distance", type="number", units="mm")
    assert col.name == "distance"
    edits = ws.write_manual_values([(GUI_PROPOSAL, 2), (GUI_PROPOSAL, 3)], "distance", "2 cm",
                                   via="web")
    assert [(e.run, e.name) for e in edits] == [(2, "distance"), (3, "distance")]
    with pytest.raises(ManualError, match="Cannot convert"):
        ws.write_manual_values([(GUI_PROPOSAL, 4)], "distance", "3 s")
    hist = ws.manual_history(GUI_PROPOSAL, 2, "distance")
    assert [(h["display"], h["via"]) for h in hist] == [("20 mm", "web")]
    assert any("flaky failed" in (e["text"] or "") for e in ws.run_log(GUI_PROPOSAL, 3))
    assert ws.slurm_jobs(GUI_PROPOSAL, 3) == []
    log = ws.event_log()
    log.apply(log.poll())
    assert log.closed is None
    # reprocess one run with the command line, progress read from its output
    write_run(gui_ctx["pdir"], GUI_PROPOSAL, 3, ntrains=70, seed=7)
    job = ws.reprocess_job(["3"], ["n_trains"], all_runs=4)
    assert job.expected == 1 and job.command_text.startswith("$ amore-proto reprocess 3 --dir")
    code, shown = run_job(job)
    assert code == 0, "\n".join(shown)
    assert job.done_runs == {3} and job.progress == 1 and shown[-1] == "Done."
    assert ws.read_run_update(GUI_PROPOSAL, 3).values["n_trains"].num == 70
    cancel = ws.cancel_job([3])
    p = subprocess.run(cancel.argv, capture_output=True, timeout=120)
    assert cancel.summary(p.stdout + p.stderr, p.returncode) == "No unfinished Slurm job to cancel."
    # the context file: checked in another process, saved atomically
    good = ws.read_context_file()
    assert ws.check_context(good).ok
    bad = ws.check_context(good + "\n@Variable\ndef broken(run):\n    return (\n")
    assert not bad.ok and bad.line is not None
    ws.save_context_file(good + "\n# saved\n")
    assert ws.read_context_file().endswith("# saved\n")


def test_workspace_starts_follows_and_stops_the_backend(data_root):
    """Real tmux: start, state, log, stop - the calls both front-ends make, without Qt."""
    import shutil
    import tempfile
    from pathlib import Path

    from amore_gui.application.workspace import Workspace
    from backend.service.tmux import find_tmux_servers

    short = Path(tempfile.mkdtemp(prefix="amw", dir="/tmp"))  # tmux sockets need short paths
    ctx = short / "ctx"
    opening.create_context_dir(ctx, PROPOSAL, "generic")
    ws = Workspace(ctx)
    try:
        assert ws.backend_status().state == "stopped"
        # started from a front-end's process, as the GUI does: the start runs in a child
        # process, so tmux's library does not stay in the front-end's memory
        probe = ("import json, sys\n"
                 "from amore_gui.application.workspace import Workspace\n"
                 f"error, st = Workspace({str(ctx)!r}).backend_action('start')\n"
                 "print(json.dumps([error, st.state, 'libtmux' in sys.modules]))\n")
        r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                           timeout=120)
        assert json.loads(r.stdout.splitlines()[-1]) == [None, "running_here", False], r.stderr
        st = ws.backend_status()
        assert st.state == "running_here" and st.alive
        log = ws.backend_log(initial_lines=50)
        wait_for(lambda: any("Running on" in line for line in log.read_new()), 30,
                 what="the backend's log")
        error, st = ws.backend_action("start")            # already running: nothing to do
        assert error is None and st.state == "running_here"
        error, st = ws.backend_action("stop")
        assert error is None and st.state == "stopped" and ws.backend_status().alive is False
        error, _ = ws.backend_action("explode")
        assert "unknown backend action" in error
        # a refusal of the command comes back as the message a user reads, without its prefix
        (ctx / STATUS_FILE_NAME).write_text(json.dumps(
            {"host": "max-exfl-display999.desy.de", "hostname": "max-exfl-display999",
             "user": "someone", "uid": 12345, "pid": 4242, "pid_create_time": time.time() - 100,
             "started": time.time() - 100, "heartbeat": time.time(), "version": "0.1.0"}))
        error, st = ws.backend_action("start")
        assert st.state == "running_elsewhere"
        assert "max-exfl-display999" in error and not error.startswith("amore-proto"), error
        (ctx / STATUS_FILE_NAME).unlink()
    finally:
        if ws.backend_status().state == "running_here":
            ws.backend_action("stop")
        for p in find_tmux_servers(ctx):
            p.kill()
        shutil.rmtree(short, ignore_errors=True)


def _sqlite_memory_used():
    """Bytes SQLite holds in this process (``sqlite3_memory_used`` of the library Python's
    ``sqlite3`` uses)."""
    import ctypes
    import _sqlite3
    lib = ctypes.CDLL(_sqlite3.__file__)
    lib.sqlite3_memory_used.restype = ctypes.c_int64
    return lib.sqlite3_memory_used()


def test_connections_kept_open_for_days_keep_a_small_page_cache(gui_ctx):
    """A window reads thumbnails and live updates through connections it keeps open for the
    beamtime: their page cache must not fill to SQLite's 2 MB as the user scrolls through a
    growing table (the web server's threads keep such connections too)."""
    import os
    from amore_gui.application import dbread
    from amore_gui.application.workspace import Workspace
    from backend.vocab import StoredValue
    ctx = gui_ctx["ctx"]
    db = RunDB(ctx)
    try:            # ~6 MB of thumbnails, 8 KiB each, on one run
        db.write_values(GUI_PROPOSAL, 2, {f"cam{i}": StoredValue(os.urandom(8192), "thumbnail")
                                          for i in range(750)})
    finally:
        db.close()

    def grown_by_reading(con):
        before = _sqlite_memory_used()
        for i in range(750):
            assert dbread.read_thumbnail(con, GUI_PROPOSAL, 2, f"cam{i}") is not None
        grown = _sqlite_memory_used() - before
        con.close()
        return grown
    default = grown_by_reading(dbread.connect(ctx))
    assert default > 1.5 * 2**20         # SQLite's default: the read fills ~2 MB of cache
    assert grown_by_reading(Workspace(ctx).connect()) < 0.5 * 2**20
    watcher = dbread.DbChangeWatcher(ctx)
    assert grown_by_reading(watcher.con) < 0.5 * 2**20
