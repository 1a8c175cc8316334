"""Security checks as tests: file modes, the metadata-service token, SQL with hostile strings,
nothing unpickled or evaluated, the backend's control socket between two real users.
"""
from __future__ import annotations

import contextlib
import http.server
import json
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import textwrap
import threading
import time
import traceback
from pathlib import Path

import psutil
import pytest

from backend.store.writer import RunDB
from tests.conftest import PROPOSAL, REPO, amore_cmd, wait_for

OFFLINE = "[watch]\nenabled = true\nquiet_seconds = 0.3\npoll_seconds = 0.1\n" \
          "[processing]\njobs = 1\n"


def modes(root: Path) -> dict[str, int]:
    out = {}
    for p in [root, *root.rglob("*")]:
        try:
            out[str(p.relative_to(root))] = stat.S_IMODE(os.lstat(p).st_mode)
        except FileNotFoundError:
            pass
    return out


@contextlib.contextmanager
def _backend_with_run_1(ctx, write_run, prefix=()):
    """The backend of ``ctx`` running (``amore-proto listen``, after the command ``prefix``),
    run 1 processed by it."""
    proc = subprocess.Popen([*prefix, *amore_cmd("listen", ctx)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: (ctx / "amore.log").exists()
                 and " Ready" in (ctx / "amore.log").read_text(), 60, 0.1, "backend ready")
        write_run(1, ntrains=5)
        wait_for(lambda: (RunDB(ctx).get_run(PROPOSAL, 1) or {}).get("status") == "done", 60,
                 0.2, "run 1 processed")
        yield proc
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.parametrize("shared", [False, True], ids=["private dir", "group-shared dir"])
def test_files_never_world_writable_even_with_umask_000(tmp_path, write_run, shared, monkeypatch):
    """A user with ``umask 000`` runs init, the backend (which processes a run) and a
    reprocess: nothing is world-writable; group-writable only in a group-shared directory. The
    lock and status files are not usable by other users."""
    parent = tmp_path / ("shared" if shared else "private")
    parent.mkdir()
    os.chmod(parent, 0o2775 if shared else 0o755)
    ctx = parent / "amore"
    ctx_src = tmp_path / "context.py"
    ctx_src.write_text("from amore.context import Variable\n\n@Variable(title='Trains')\n"
                       "def n_trains(run):\n    return len(run.train_ids)\n")
    umask0 = ["sh", "-c", 'umask 000; exec "$@"', "sh"]
    subprocess.run(umask0 + amore_cmd("init", ctx, "--proposal", PROPOSAL, "--context",
                                      ctx_src), check=True, capture_output=True)
    if shared:
        os.chmod(ctx, 0o2775)
    (ctx / "amore.toml").write_text(OFFLINE)
    with _backend_with_run_1(ctx, write_run, umask0):
        during = modes(ctx)        # while the backend runs: lock, status, -wal, -shm exist
    subprocess.run(umask0 + amore_cmd("reprocess", "1", "--dir", ctx), check=True,
                   capture_output=True)
    after = modes(ctx)
    for name, mode in {**during, **after}.items():
        assert not mode & stat.S_IWOTH, f"{name} is world-writable ({oct(mode)})"
        if not shared:
            assert not mode & stat.S_IWGRP, f"{name} is group-writable ({oct(mode)})"
    assert ".amore-backend.lock" in during and "backend-status.json" in during
    for name in (".amore-backend.lock", "backend-status.json"):
        assert not during[name] & stat.S_IRWXO, f"{name} usable by others ({oct(during[name])})"
    assert "runs.sqlite-wal" in during and "extracted_data/p2832_r1.h5" in after
    if shared:  # the group can work with the shared database
        assert during["runs.sqlite"] & stat.S_IWGRP and during["runs.sqlite-shm"] & stat.S_IWGRP


def test_tmux_socket_not_usable_by_others(make_context_dir):
    from backend.service import manager
    ctx = make_context_dir(template="generic", config=OFFLINE)
    try:
        manager.start_backend(ctx, timeout=60)
        sock = ctx / "amore-tmux.sock"
        mode = stat.S_IMODE(sock.stat().st_mode)
        assert not mode & stat.S_IRWXO, oct(mode)
    finally:
        manager.stop_backend(ctx, timeout=30)


class _Recorder(http.server.BaseHTTPRequestHandler):
    """A metadata service stand-in: ``/redirect/...`` sends clients to another host (the
    ``other`` server), ``/echo/...`` answers 500 with the request headers in the body, the
    rest answers like MyMdC. Every request's headers are recorded."""

    seen: list = []
    other = ""

    def do_GET(self):
        type(self).seen.append((self.server.server_port, self.path, dict(self.headers)))
        if self.path.startswith("/redirect/"):
            self.send_response(302)
            self.send_header("Location", f"{self.other}{self.path[len('/redirect'):]}")
            self.end_headers()
            return
        if self.path.startswith("/echo/"):
            body = json.dumps(dict(self.headers)).encode()
            self.send_response(500)
        elif "/runs/" in self.path:
            body = json.dumps({"runs": [{"sample_id": 1, "experiment_id": 2}]}).encode()
            self.send_response(200)
        elif "/samples/" in self.path:
            body = json.dumps({"name": "Lysozyme"}).encode()
            self.send_response(200)
        else:
            body = json.dumps({"name": "Pump-probe"}).encode()
            self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def _serve():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


TOKEN_CONTEXT = textwrap.dedent("""
    import os, subprocess, sys
    from amore.context import Variable

    @Variable(title="Sample")
    def sample(run, name: "mymdc#sample_name"):
        return name

    @Variable(title="Run type")
    def run_type(run, kind: "mymdc#run_type"):
        return kind

    @Variable(title="Environment")
    def env(run):
        # user code printing its environment, and a program it starts printing its own
        print(dict(os.environ))
        subprocess.run(["env"])
        return len(os.environ)
""")


@pytest.mark.parametrize("path", ["redirect", "echo", ""])
def test_metadata_token_never_leaks(make_context_dir, write_run, tmp_path, caplog, path,
                                    run_processor):
    """The API key reaches the metadata service only: not another host it redirects to, not
    the logs, values, event log or any process's command line, not the user's code."""
    token = "SECRET-TOKEN-8f3a9c"
    a, b = _serve(), _serve()
    _Recorder.seen = []
    _Recorder.other = f"http://127.0.0.1:{b.server_port}"
    (tmp_path / "token").write_text(token)
    base = f"http://127.0.0.1:{a.server_port}" + (f"/{path}" if path else "")
    ctx = make_context_dir(code=TOKEN_CONTEXT, config=f'[mymdc]\nurl = "{base}"\n'
                           f'token_file = "{tmp_path / "token"}"\n[processing]\njobs = 1\n')
    write_run(1, ntrains=5)
    caplog.set_level("DEBUG")
    try:
        db, pool, proc = run_processor(ctx)
        cmdlines = [" ".join(p.cmdline()) for p in psutil.Process().children(recursive=True)]
        proc.process(PROPOSAL, 1)
        time.sleep(0.5)   # worker output reaches the log
        pool.stop()
    finally:
        a.shutdown()
        b.shutdown()
    values = db.get_values(PROPOSAL, 1)
    if path == "echo":
        assert values["sample"].summary_type == "error"
    else:
        assert values["sample"].value == "Lysozyme"
    # the service got the key; the other host did not
    assert any({k.lower(): v for k, v in h.items()}.get("x-api-key") == token
               for port, _, h in _Recorder.seen if port == a.server_port)
    assert not any(token in json.dumps(h) for port, _, h in _Recorder.seen
                   if port == b.server_port)
    if path == "redirect":
        assert any(port == b.server_port for port, _, _ in _Recorder.seen)
    everything = "\n".join([caplog.text, *cmdlines, json.dumps(db.all_values(), default=str),
                            json.dumps(db.events(), default=str),
                            json.dumps(db.runs(), default=str)])
    assert token not in everything


HOSTILE = ["Robert'); DROP TABLE runs; --", '" OR 1=1 --', "a\\x00b\x00c", "🧪 ünïcödé",
           "%s %(x)s {0} $1 ?", "'" * 50, "\\'; SELECT * FROM metadata; --"]


def test_hostile_strings_stored_verbatim(make_context_dir, write_run, run_processor):
    """Run comments, standalone comments, authors, event messages, status messages and string
    values from user code containing SQL and quotes are stored and read back verbatim; the
    database is intact."""
    code = "from amore.context import Variable\nHOSTILE = " + repr(HOSTILE) + "\n" + "".join(
        f"\n@Variable(title={h!r})\ndef v{i}(run):\n    return HOSTILE[{i}]\n"
        for i, h in enumerate(HOSTILE))
    ctx = make_context_dir(code=code, config="[processing]\njobs = 1\n")
    write_run(1, ntrains=5)
    db, pool, proc = run_processor(ctx)
    assert proc.process(PROPOSAL, 1).status == "done"
    pool.stop()
    values = db.get_values(PROPOSAL, 1)
    assert [values[f"v{i}"].value for i in range(len(HOSTILE))] == HOSTILE
    assert [v.title for v in db.get_variables()] == HOSTILE
    for i, h in enumerate(HOSTILE):
        db.set_comment(PROPOSAL, 1, h)
        assert db.get_run(PROPOSAL, 1)["comment"] == h
        db.add_comment(h, author=h, proposal=PROPOSAL, run=1)
        db.add_event("warning", h, h, run=1, details={"x": h})
        db.set_run_status(PROPOSAL, 1, "failed", h)
        assert db.get_run(PROPOSAL, 1)["status_message"] == h
        db.set_metadata(h, h)
        assert db.get_metadata(h) == h
    assert [c["text"] for c in db.comments()] == HOSTILE
    assert [c["author"] for c in db.comments()] == HOSTILE
    ev = db.events()[-len(HOSTILE):]
    assert [e["message"] for e in ev] == HOSTILE and [e["details"]["x"] for e in ev] == HOSTILE
    assert db.run_numbers() == [1] and db.proposal == PROPOSAL
    # the GUI's reader gets them verbatim too
    from amore_gui.application.dbread import read_run_update
    up = read_run_update(ctx, PROPOSAL, 1)
    assert [up.values[f"v{i}"].obj for i in range(len(HOSTILE))] == HOSTILE
    import sqlite3
    assert sqlite3.connect(ctx / "runs.sqlite").execute(
        "PRAGMA integrity_check").fetchone()[0] == "ok"


# Python's eval()/exec(), not a method of that name (Qt's QDialog.exec(), QMenu.exec())
UNSAFE = re.compile(r"\b(pickle|cPickle|dill|cloudpickle|marshal|shelve)\.(loads?|Unpickler)\b"
                    r"|\byaml\.load\(|(?<!\.)\beval\(|(?<!\.)\bexec\("
                    r"|np\.load\([^)]*allow_pickle\s*=\s*True")


def test_nothing_unpickled_or_evaluated():
    """No code of AMORE deserialises with pickle/marshal/yaml.load or evaluates strings; the one
    exec() runs the context file itself (the users' code, by design)."""
    hits = []
    for pkg in ("amore", "amore_gui", "backend"):
        for f in (REPO / pkg).rglob("*.py"):
            for n, line in enumerate(f.read_text().splitlines(), 1):
                if UNSAFE.search(line.split("#")[0]):
                    hits.append(f"{f.relative_to(REPO)}:{n}: {line.strip()}")
    # (line numbers move as context.py changes; the file and the code are what matter)
    assert [re.sub(r":\d+:", ":", h, count=1) for h in hits] == \
        ["backend/ctxrunner/context.py: exec(compiled, ns)"], hits


@pytest.fixture(scope="module")
def other_user():
    """A second real user of this machine (``useradd``; removed afterwards), as a pwd entry:
    not root, not in the context directories' group."""
    if os.geteuid() != 0 or not shutil.which("useradd"):
        pytest.skip("creating a second user needs root and useradd")
    name = f"amoret{os.getpid() % 1000000}"
    subprocess.run(["useradd", "--no-create-home", "--user-group", "--shell", "/bin/false",
                    name], check=True, capture_output=True, timeout=60)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], capture_output=True, timeout=60)


class AsUser:
    """``fn(*args)`` in a process of ``user`` (forked from the test and switched to that user
    with setgroups/setgid/setuid, as ``runuser`` does, without running another program): its
    result, a dict, comes back as JSON through a pipe (:meth:`result`)."""

    def __init__(self, user, fn, *args):
        r, w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            status = 1
            try:
                os.close(r)
                os.setgroups([])
                os.setgid(user.pw_gid)
                os.setuid(user.pw_uid)
                os.write(w, json.dumps(fn(*args)).encode())
                status = 0
            except BaseException:  # noqa: BLE001 - said on stderr, exit status 1
                traceback.print_exc()
            finally:
                os._exit(status)
        os.close(w)
        self._r = r

    def result(self) -> dict:
        with os.fdopen(self._r, "rb") as f:
            data = f.read()
        _, status = os.waitpid(self.pid, 0)
        assert status == 0 and data, f"the other user's process failed (status {status})"
        return json.loads(data)


def _impostor(addr: bytes, wait: float) -> dict:
    """Bind the backend's control address first and answer the first client as the backend
    would; what did the client send?"""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(addr)
    s.listen(1)
    s.settimeout(wait)
    try:
        conn, _ = s.accept()
    except socket.timeout:
        return {"connected": False}
    received = b""
    with conn:
        conn.settimeout(10)
        try:
            conn.sendall(b'{"version": 1, "kind": "accepted", "pid": 1, "host": "x"}\n'
                         b'{"version": 1, "kind": "done"}\n')
            while chunk := conn.recv(65536):
                received += chunk
        except OSError:
            pass
    return {"connected": True, "received": received.decode(errors="replace")}


def _listening(addr: bytes) -> bool:
    with open("/proc/net/unix") as f:
        return any(line.split()[-1:] == ["@" + addr[1:].decode()] for line in f)


def test_reprocess_talks_only_to_the_backends_user(make_context_dir, write_run, other_user):
    """Another user's process takes the backend's control address before the backend starts
    (anyone on the machine can bind it): ``amore-proto reprocess`` sends it nothing, believes
    nothing it says, names it and says what to do, and processes the run itself."""
    from backend.service.control import socket_name
    ctx = make_context_dir(template="generic", config=OFFLINE)
    addr = socket_name(RunDB(ctx).db_id, ctx)
    impostor = AsUser(other_user, _impostor, addr, 120.0)
    wait_for(lambda: _listening(addr), 30, 0.05, "the other user's process listening")
    with _backend_with_run_1(ctx, write_run):
        p = subprocess.run(amore_cmd("reprocess", "1", "--dir", ctx), capture_output=True,
                           text=True, timeout=120)
    seen = impostor.result()
    assert seen == {"connected": True, "received": ""}, seen
    assert p.returncode == 0, p.stdout + p.stderr
    assert "in the running backend" not in p.stdout
    said = p.stderr
    assert f"(PID {impostor.pid}) runs as user '{other_user.pw_name}' (uid {other_user.pw_uid})" \
        in said and "not as the backend's user 'root' (uid 0)" in said, said
    assert "nothing was sent to it" in said and "stop it" in said and "Processing here" in said
    assert RunDB(ctx).get_values(PROPOSAL, 1)["n_trains"].value == 5


def _written(ctx) -> dict:
    """When run 1's values were written: name -> Unix time."""
    import sqlite3
    con = sqlite3.connect(ctx / "runs.sqlite")
    try:
        return dict(con.execute("SELECT name, timestamp FROM run_values WHERE run = 1"))
    finally:
        con.close()


def _client(addr: bytes, context_dir: str) -> dict:
    """Ask the backend at ``addr`` to reprocess run 1; its first answer."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(addr)
    with s, s.makefile("rwb", buffering=0) as f:
        f.write(json.dumps({"version": 1, "op": "reprocess", "runs": [1], "names": None,
                            "params": {}, "context_dir": context_dir}).encode() + b"\n")
        return json.loads(f.readline() or b"{}")


def test_backend_refuses_reprocess_requests_of_other_users(make_context_dir, write_run,
                                                           other_user):
    """A user who is neither the backend's, nor root, nor in the context directory's group
    asks the backend (through its control socket) to reprocess a run: refused, and nothing is
    recomputed."""
    from backend.service.control import socket_name
    ctx = make_context_dir(template="generic", config=OFFLINE)
    with _backend_with_run_1(ctx, write_run):
        before = _written(ctx)
        addr = socket_name(RunDB(ctx).db_id, ctx)
        answer = AsUser(other_user, _client, addr, str(ctx.resolve())).result()
        assert answer == {"version": 1, "kind": "error",
                          "error": f"user {other_user.pw_uid} may not use this backend"}, answer
        time.sleep(1.0)  # a reprocess, had it been accepted, would have started
        assert _written(ctx)["n_trains"] == before["n_trains"]
        assert "Reprocess of run(s)" not in (ctx / "amore.log").read_text()
