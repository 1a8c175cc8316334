"""Tests of backend.service.manager: the backend in tmux, found, stopped and healed (real tmux).

Every tmux server and backend started here is killed at teardown, also when a test fails.
"""
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest

from amore import cli
from backend.contextdir import LOCK_FILE_NAME, STATUS_FILE_NAME, TMUX_SOCKET_NAME
from backend.files import share_like_dir, write_json_atomic
from backend.service.lock import acquire_lock, lock_held
from backend.service.manager import (LogFollower, backend_state, heal, log_tail, start_backend,
                                     stop_backend)
from backend.service.status import BackendError, BackendLockedError, this_host
from backend.service.tmux import attach_command, find_tmux_servers
from backend.store.init import init_context_dir

from tests.conftest import PROPOSAL, wait_for





def _kill_everything(d):
    """Kill the tmux server(s) and backend processes of context directory ``d``."""
    sock = d / TMUX_SOCKET_NAME
    if shutil.which("tmux") and os.path.exists(sock):
        subprocess.run(["tmux", "-S", str(sock), "kill-server"], capture_output=True, timeout=5)
    procs = find_tmux_servers(d)
    for p in psutil.process_iter(["cmdline"]):
        try:
            if p.pid != os.getpid() and str(d) in " ".join(p.info["cmdline"] or []):
                procs.append(p)
        except psutil.Error:
            pass
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=5)


@pytest.fixture
def xfel_env(tmp_path, monkeypatch):
    """An empty proposal under a data root, an empty SW root, no Kafka, not inside tmux."""
    root = tmp_path / "data"
    (root / "MID" / "202201" / f"p{PROPOSAL:06d}" / "raw").mkdir(parents=True)
    sw = tmp_path / "sw"
    sw.mkdir()
    monkeypatch.setenv("EXTRA_DATA_DATA_ROOT", str(root))
    monkeypatch.setenv("EXTRA_DATA_SW_ROOT", str(sw))
    monkeypatch.delenv("AMORE_BROKER", raising=False)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.delenv("AMORE_SITE_CONFIG", raising=False)
    monkeypatch.delenv("TMUX", raising=False)
    monkeypatch.delenv("TMUX_PANE", raising=False)
    return root


@pytest.fixture
def make_ctx(tmp_path, xfel_env):
    """Factory of initialised context directories; cleans up their tmux servers/backends."""
    made = []

    def make(name="ctx", extra_toml=""):
        d = (tmp_path / name).resolve()
        init_context_dir(d, PROPOSAL, template="generic")
        (d / "amore.toml").write_text(
            "[processing]\njobs = 1\n[watch]\nquiet_seconds = 0.3\n" + extra_toml)
        made.append(d)
        return d

    yield make
    for d in made:
        _kill_everything(d)


# --- tmux: start, detect, stop -----------------------------------------------------------------

def test_start_detect_stop(make_ctx, xfel_env, capsys):
    from backend.testing import mockdata as md
    import libtmux

    d = make_ctx()
    assert backend_state(d).state == "stopped"

    st = start_backend(d)  # the call the GUI makes (from a worker thread)
    assert st.state == "running_here", st
    assert st.in_tmux and st.controllable
    assert st.host == this_host()
    assert st.user and st.version and st.started
    assert "listen" in " ".join(psutil.Process(st.pid).cmdline())
    assert libtmux.Server(socket_path=str(d / TMUX_SOCKET_NAME)).has_session("AMORE")
    rec = json.loads((d / STATUS_FILE_NAME).read_text())
    assert rec["pid"] == st.pid and rec["hostname"] == socket.gethostname()

    # a run is processed: the record follows
    md.write_run(md.proposal_dir(xfel_env, "MID", "202201", PROPOSAL), PROPOSAL, 1, ntrains=10)
    st = wait_for(lambda: (s := backend_state(d)).last_run == 1 and s, timeout=30)
    assert st.update_source == "watcher" and st.last_run_time
    assert "running" in st.summary().lower()

    capsys.readouterr()
    assert cli.main(["backend", "status", str(d)]) == 0
    out = capsys.readouterr().out
    assert re.search(rf"PID:\s+{st.pid}\b", out), out
    assert re.search(r"Last run:\s+run 1\b", out), out
    assert re.search(r"Update source:\s+watcher", out), out
    assert "up " in out

    assert any("Running on" in line for line in log_tail(d, 50))
    argv = attach_command(d)
    assert argv[:3] == ["tmux", "-S", str(d / TMUX_SOCKET_NAME)] and argv[-1] == "=AMORE"
    assert start_backend(d).pid == st.pid  # already running: nothing new started

    pid = st.pid
    st = stop_backend(d)
    assert st.state == "stopped", st
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not (d / TMUX_SOCKET_NAME).exists()
    assert not (d / STATUS_FILE_NAME).exists()
    assert cli.main(["backend", "status", str(d)]) == 3


def test_sigkill_stale_then_healed(make_ctx):
    d = make_ctx()
    st = start_backend(d)
    os.kill(st.pid, signal.SIGKILL)
    wait_for(lambda: not psutil.pid_exists(st.pid))
    # tmux closes the session and exits, but its socket and the record stay behind
    stale = wait_for(lambda: (s := backend_state(d)).state == "stale" and s)
    assert "killed or crashed" in stale.message
    wait_for(lambda: not find_tmux_servers(d))
    assert (d / TMUX_SOCKET_NAME).exists() and (d / STATUS_FILE_NAME).exists()

    healed = heal(d)
    assert healed.state == "stopped", healed
    assert not (d / TMUX_SOCKET_NAME).exists() and not (d / STATUS_FILE_NAME).exists()

    st2 = start_backend(d)
    assert st2.state == "running_here" and st2.pid != st.pid

    # the whole tmux server killed too: start_backend heals by itself
    os.kill(st2.tmux_pid, signal.SIGKILL)
    os.kill(st2.pid, signal.SIGKILL)
    wait_for(lambda: not psutil.pid_exists(st2.pid) and not find_tmux_servers(d))
    assert backend_state(d).state == "stale"
    st3 = start_backend(d)
    assert st3.state == "running_here" and st3.pid not in (st.pid, st2.pid)
    assert stop_backend(d).state == "stopped"


def test_sigusr1_recreates_deleted_socket(make_ctx):
    d = make_ctx()
    st = start_backend(d)
    sock = d / TMUX_SOCKET_NAME
    sock.unlink()
    assert subprocess.run(["tmux", "-S", str(sock), "ls"], capture_output=True).returncode != 0

    st2 = backend_state(d)  # recovers automatically
    assert st2.state == "running_here" and st2.pid == st.pid, st2
    assert "recreated" in st2.message
    assert sock.exists()
    assert subprocess.run(["tmux", "-S", str(sock), "has-session", "-t", "=AMORE"],
                          capture_output=True).returncode == 0
    assert stop_backend(d).state == "stopped"


def test_two_context_directories(make_ctx):
    a, b = make_ctx("ctx-a"), make_ctx("ctx-b")
    with ThreadPoolExecutor(2) as ex:  # as a GUI would, from worker threads
        sa, sb = ex.map(start_backend, [a, b])
    assert sa.state == sb.state == "running_here"
    assert sa.pid != sb.pid and sa.tmux_pid != sb.tmux_pid

    assert stop_backend(a).state == "stopped"
    sb2 = backend_state(b)
    assert sb2.state == "running_here" and sb2.pid == sb.pid
    assert (b / TMUX_SOCKET_NAME).exists() and not (a / TMUX_SOCKET_NAME).exists()
    assert stop_backend(b).state == "stopped"


def test_second_listener_refused(make_ctx):
    d = make_ctx()
    st = start_backend(d)
    r = subprocess.run([sys.executable, "-m", "amore.cli", "listen", str(d)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "already running" in r.stderr
    assert f"PID {st.pid}" in r.stderr and st.host in r.stderr
    # the running backend is untouched
    st2 = backend_state(d)
    assert st2.state == "running_here" and st2.pid == st.pid
    assert (d / TMUX_SOCKET_NAME).exists()
    assert stop_backend(d).state == "stopped"


def test_start_failure_shows_output(make_ctx):
    cmd = "{python} -c \\\"import sys, time; print('boom-4711'); time.sleep(0.5); sys.exit(3)\\\""
    d = make_ctx(extra_toml=f'[backend]\ncommand = "{cmd}"\n')
    with pytest.raises(BackendError) as ei:
        start_backend(d)
    assert "boom-4711" in str(ei.value) and "status 3" in str(ei.value)
    st = backend_state(d)
    assert st.state == "stopped", st
    assert not (d / TMUX_SOCKET_NAME).exists()


# --- no tmux needed ----------------------------------------------------------------------------

def _fake_record(host="max-exfl-display999.desy.de", age=0.0):
    now = time.time()
    return {"host": host, "hostname": host.split(".")[0], "user": "someone", "uid": 12345,
            "pid": 4242, "pid_create_time": now - 100, "started": now - 100 - age,
            "heartbeat": now - age, "version": "0.1.0", "update_source": "watcher",
            "last_run": 7, "last_run_time": now - 50 - age}


def test_recorded_on_other_host(make_ctx, capsys):
    d = make_ctx()
    sock = d / TMUX_SOCKET_NAME
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock))  # a socket file that no server here answers on, as seen over GPFS
    s.close()
    (d / STATUS_FILE_NAME).write_text(json.dumps(_fake_record()))

    st = backend_state(d)
    assert st.state == "running_elsewhere", st
    assert st.host == "max-exfl-display999.desy.de" and st.pid == 4242 and st.last_run == 7
    assert "max-exfl-display999.desy.de" in st.message
    assert "running on max-exfl-display999" in st.summary()
    with pytest.raises(BackendError, match="max-exfl-display999"):
        start_backend(d)
    with pytest.raises(BackendError, match="max-exfl-display999"):
        stop_backend(d)
    assert heal(d, force=True).state == "running_elsewhere"
    assert sock.exists() and (d / STATUS_FILE_NAME).exists()

    capsys.readouterr()
    assert cli.main(["backend", "status", str(d)]) == 0
    assert "running on max-exfl-display999.desy.de" in capsys.readouterr().out

    # that backend stopped reporting an hour ago: stale, but only cleared on request
    (d / STATUS_FILE_NAME).write_text(json.dumps(_fake_record(age=3600)))
    st = backend_state(d)
    assert st.state == "stale" and "max-exfl-display999" in st.message
    assert heal(d).state == "stale"
    assert heal(d, force=True).state == "stopped"
    assert not sock.exists() and not (d / STATUS_FILE_NAME).exists()


def test_one_liveness_rule_for_a_backend_on_another_host(make_ctx):
    """``backend status`` and the Slurm commands (which store job results themselves only when
    no backend runs) judge another host's record by the same rule: refreshed within 4
    heartbeats of the directory's ``[backend] heartbeat_seconds`` (at least 2 minutes)."""
    from amore.cli.slurm import _backend_runs
    d = make_ctx(extra_toml="[backend]\nheartbeat_seconds = 60\n")
    seen = {}
    for age in (10, 180, 300):
        (d / STATUS_FILE_NAME).write_text(json.dumps(_fake_record(age=age)))
        seen[age] = (backend_state(d).state, _backend_runs(d))
    assert seen == {10: ("running_elsewhere", True), 180: ("running_elsewhere", True),
                    300: ("stale", False)}, seen


def test_lock_is_exclusive(tmp_path):
    d = tmp_path
    lock = acquire_lock(d)
    assert lock_held(d) is True
    (d / STATUS_FILE_NAME).write_text(json.dumps(_fake_record(host=socket.gethostname())))
    with pytest.raises(BackendLockedError, match="PID 4242") as ei:
        acquire_lock(d, timeout=0.2)
    assert ei.value.holder["pid"] == 4242
    lock.release()
    assert lock_held(d) is False
    acquire_lock(d, timeout=0.2).release()


def test_share_like_dir(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o2775)
    f = shared / "file"
    f.write_text("x")
    os.chmod(f, 0o644)
    assert share_like_dir(f)
    assert stat.S_IMODE(f.stat().st_mode) == 0o664
    sub = shared / "sub"
    sub.mkdir(mode=0o755)
    share_like_dir(sub)
    assert stat.S_IMODE(sub.stat().st_mode) & 0o070 == 0o070
    assert not sub.stat().st_mode & 0o002

    # files AMORE writes there are group-writable, never world-writable
    write_json_atomic(shared / STATUS_FILE_NAME, {"a": 1})
    acquire_lock(shared).release()
    for name in (STATUS_FILE_NAME, LOCK_FILE_NAME):
        mode = (shared / name).stat().st_mode
        assert mode & 0o060 == 0o060 and not mode & 0o002, (name, oct(mode))

    private = tmp_path / "private"
    private.mkdir()
    os.chmod(private, 0o755)
    g = private / "file"
    g.write_text("x")
    os.chmod(g, 0o644)
    assert not share_like_dir(g)
    assert stat.S_IMODE(g.stat().st_mode) == 0o644


def test_log_tail_and_follower(tmp_path):
    logf = tmp_path / "amore.log"
    logf.write_text("".join(f"line {i}\n" for i in range(5000)))
    assert log_tail(tmp_path, 3) == ["line 4997", "line 4998", "line 4999"]
    assert log_tail(tmp_path / "missing", 3) == []

    lf = LogFollower(tmp_path, initial_lines=2)
    assert lf.read_new() == ["line 4998", "line 4999"]
    assert lf.read_new() == []
    with open(logf, "a") as f:
        f.write("new 1\nnew 2\npart")
    assert lf.read_new() == ["new 1", "new 2"]
    with open(logf, "a") as f:
        f.write("ial\n")
    assert lf.read_new() == ["partial"]
    logf.write_text("fresh\n")  # truncated / rotated
    assert lf.read_new() == ["fresh"]
    # just after a rotation the tail continues into amore.log.1
    (tmp_path / "amore.log.1").write_text("".join(f"old {i}\n" for i in range(100)))
    logf.write_text("new 1\n")
    assert log_tail(tmp_path, 3) == ["old 98", "old 99", "new 1"]


def test_session_environment_puts_the_checkout_on_pythonpath(monkeypatch):
    """Run from a source checkout that is not installed, the backend's tmux session still finds
    the ``backend`` package (the directory holding it goes first on PYTHONPATH)."""
    import importlib.metadata
    from pathlib import Path

    from backend.service.tmux import session_environment

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    env = session_environment()
    first, *rest = env["PYTHONPATH"].split(os.pathsep)
    assert (Path(first) / "backend" / "__init__.py").is_file()
    assert (Path(first) / "amore" / "cli" / "main.py").is_file()
    assert rest == ["/elsewhere"]
