"""Shared fixtures: a temporary proposal tree with real HDF5 runs and AMORE context directories,
the backend's run processing and ``amore-proto listen`` as a process; the helpers the test modules
share (``PROPOSAL``, ``amore_cmd``, ``wait_for``, ``process``, ``run_status``...).

Fixtures of their own modules, registered here: the Kafka broker (``tests/kafka_broker.py``), the
Slurm cluster (``tests/slurm_cluster.py``), the GUI's processed context directories and windows
(``tests/gui_fixtures.py``). A test module never imports a fixture by name.
"""
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

pytest_plugins = ["tests.kafka_broker", "tests.slurm_cluster", "tests.gui_fixtures",
                  "tests.web_browser"]

REPO = Path(__file__).resolve().parent.parent

PROPOSAL = 2832
INSTRUMENT = "MID"
CYCLE = "202201"


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    """An empty European XFEL data root (``<root>/MID/202201/p002832/raw``), with extra-data and
    AMORE pointed at it and Kafka switched off unless a test sets ``AMORE_BROKER``."""
    root = tmp_path / "exp"
    (root / INSTRUMENT / CYCLE / f"p{PROPOSAL:06d}" / "raw").mkdir(parents=True)
    sw = tmp_path / "sw"
    sw.mkdir()
    monkeypatch.setenv("EXTRA_DATA_DATA_ROOT", str(root))
    monkeypatch.setenv("EXTRA_DATA_SW_ROOT", str(sw))
    monkeypatch.setenv("AMORE_BROKER", "none")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    return root


@pytest.fixture
def proposal_dir(data_root):
    return data_root / INSTRUMENT / CYCLE / f"p{PROPOSAL:06d}"


@pytest.fixture
def write_run(proposal_dir):
    """``write_run(run, **kw)`` writes a realistic run of proposal 2832 (backend.testing.mockdata)."""
    from backend.testing.mockdata import write_run as _write

    def write(run, **kw):
        kw.setdefault("ntrains", 50)
        return _write(proposal_dir, PROPOSAL, run, **kw)
    return write


@pytest.fixture
def make_context_dir(tmp_path, data_root):
    """``make_context_dir(code=None, template="generic", name="ctx", config="")`` creates a
    context directory for proposal 2832 with the given context file text and amore.toml."""
    from backend.store.init import init_context_dir

    def make(code=None, template="generic", name="ctx", config=""):
        d = tmp_path / name
        if code is not None:
            src = tmp_path / f"{name}-context.py"
            src.write_text(code)
            init_context_dir(d, PROPOSAL, context_file=src)
        else:
            init_context_dir(d, PROPOSAL, template=template)
        if config:
            (d / "amore.toml").write_text(config)
        return d
    return make


def start_processing(ctx_dir, workers=1, **pool_options):
    """``(db, pool, processor, error)``: the backend's run processing for context directory
    ``ctx_dir`` (a ``RunProcessor`` on a real ``WorkerPool`` of ``workers`` processes, made with
    ``pool_options``) with its
    context file loaded; ``error`` says why it could not be (None if it was). The caller stops
    the pool (``pool.stop()``)."""
    from backend.config import load_config
    from backend.processing.local import WorkerPool
    from backend.processing.runpath import RunProcessor
    from backend.store.writer import RunDB
    config = load_config(ctx_dir)
    db = RunDB(ctx_dir)
    pool = WorkerPool(ctx_dir, config, workers, **pool_options)
    try:
        proc = RunProcessor(ctx_dir, config, db, pool)
        return db, pool, proc, proc.load_context()
    except BaseException:
        pool.stop()
        raise


@pytest.fixture
def run_processor():
    """``run_processor(ctx, workers=1, **pool_options)`` -> ``(db, pool, processor)``: the
    backend's run processing for context directory ``ctx`` (a ``RunProcessor`` on a real
    ``WorkerPool`` of ``workers`` processes, made with ``pool_options``), its context file loaded
    (asserted). The pools are stopped, and their workers killed, after the test."""
    pools = []

    def make(ctx, workers=1, **pool_options):
        db, pool, proc, err = start_processing(ctx, workers, **pool_options)
        pools.append(pool)
        assert err is None, err
        return db, pool, proc
    yield make
    for pool in pools:
        pool.stop()
        for w in pool.workers:
            w.kill()


def amore_cmd(*args):
    """Command line running ``amore-proto`` with this interpreter."""
    return [sys.executable, "-m", "amore.cli", *map(str, args)]


def wait_for(pred, timeout=30.0, interval=0.05, what="condition"):
    """Poll ``pred()`` until it returns something true (returned) or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def returns_within(timeout, fn, *args, what=None, **kwargs):
    """``fn(*args, **kwargs)`` called in a thread: its result (or its exception), or an
    AssertionError naming ``what`` if it has not returned after ``timeout`` s. This bounds a wait
    that must end (choose a generous bound); how long it takes is measured in ``benchmarks/``."""
    box = {}

    def call():
        try:
            box["result"] = fn(*args, **kwargs)
        except BaseException as e:          # handed to the test's thread
            box["error"] = e
    t = threading.Thread(target=call, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise AssertionError(f"{what or getattr(fn, '__qualname__', fn)} did not return "
                             f"within {timeout} s")
    if "error" in box:
        raise box["error"]
    return box["result"]


def process(ctx_dir, run, data="all", params=None):
    """Process one run through the real worker pool; returns (outcome, values, error of loading
    the context file or None)."""
    db, pool, proc, err = start_processing(ctx_dir)
    try:
        out = proc.process(PROPOSAL, run, data, params=params)
        return out, db.get_values(PROPOSAL, run), err
    finally:
        pool.stop()


# ---------------------------------------------------------------------------------------------
# `amore-proto listen DIR` as a process

#: ``amore.toml`` text: the directory watcher on, quick to notice new runs.
FAST_WATCH = "[watch]\nquiet_seconds = 0.3\npoll_seconds = 0.1\n"


class Backend:
    """`amore-proto listen DIR` in a subprocess."""

    def __init__(self, ctx_dir):
        self.dir = ctx_dir
        self.log = ctx_dir / "amore.log"
        # (a backend started before on this directory said "Ready" already: read past it)
        seen = self.log.stat().st_size if self.log.exists() else 0
        self.proc = subprocess.Popen(amore_cmd("listen", ctx_dir), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: self.log.exists() and " Ready" in self.log.read_bytes()[seen:].decode()
                 or self.proc.poll() is not None, 60, what="backend ready")
        assert self.proc.poll() is None, self.proc.stdout.read().decode()

    def workers(self):
        """The backend's worker processes (not the short-lived children that come and go
        beside them, e.g. one exiting while they are listed)."""
        def cmdline(p):
            try:
                return " ".join(p.cmdline())
            except psutil.Error:    # gone, or a zombie not reaped yet
                return ""
        return [p for p in psutil.Process(self.proc.pid).children(recursive=True)
                if "backend.ctxrunner.worker" in cmdline(p)]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                raise
        return self.proc.returncode


@pytest.fixture
def backend():
    """``backend(ctx_dir)`` -> a started :class:`Backend` (ready); each one still running is
    killed, with its process group, at the end of the test."""
    started = []

    def start(ctx_dir):
        b = Backend(ctx_dir)
        started.append(b)
        return b
    yield start
    for b in started:
        if b.proc.poll() is None:
            os.killpg(b.proc.pid, signal.SIGKILL)


def run_status(ctx, run):
    """The status of run ``run`` of :data:`PROPOSAL` in ``ctx``'s database (None if unknown)."""
    from backend.store.writer import RunDB
    r = RunDB(ctx).get_run(PROPOSAL, run)
    return r and r["status"]


#: A context file whose variable ``slow`` hangs while ``DIR/hang`` exists, then returns 1.
HANGING_CONTEXT = textwrap.dedent("""
    import os, time
    from amore.context import Variable

    @Variable
    def slow(run):
        while os.path.exists("hang"):
            time.sleep(0.05)
        return 1
""")


def start_hanging_reprocess(ctx, runs=(1, 2)):
    """``amore-proto reprocess RUNS`` of a :data:`HANGING_CONTEXT` directory, started with its
    ``hang`` file made, once every run shows ``processing`` (the ``Popen``, text pipes)."""
    (ctx / "hang").write_text("")
    p = subprocess.Popen(amore_cmd("reprocess", *runs, "-d", ctx, "-j", len(runs)),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: all(run_status(ctx, r) == "processing" for r in runs), 60,
                 what="every run processing")
    except BaseException:
        p.kill()
        raise
    return p


# --- DAMNIT 0.4.0, made by its own commands -----------------------------------------------------

DAMNIT_VERSION = "0.4.0"


def test_cache_dir() -> Path:
    """Where tests keep what they download (``$AMORE_TEST_CACHE``, else a per-user directory
    under the system's temporary directory)."""
    import os
    import tempfile
    base = os.environ.get("AMORE_TEST_CACHE") or os.path.join(
        tempfile.gettempdir(), f"amore-test-cache-{os.getuid()}")
    return Path(base)


test_cache_dir.__test__ = False  # a helper, not a test


@pytest.fixture(scope="session")
def damnit_venv() -> Path:
    """A virtual environment of its own holding DAMNIT (``damnit[backend]==0.4.0`` from PyPI,
    so its ``damnit`` command and ``DamnitDB`` API are DAMNIT's own, not AMORE's), made once
    and kept in the test cache keyed by version (several test sessions at once take turns)."""
    import fcntl
    import shutil
    import subprocess
    cache = test_cache_dir() / f"damnit-{DAMNIT_VERSION}"
    cache.mkdir(parents=True, exist_ok=True)
    venv = cache / "venv"
    ready = venv / "amore-test-ready"
    with open(cache / ".venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not ready.exists():
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
            r = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                                "--disable-pip-version-check",
                                f"damnit[backend]=={DAMNIT_VERSION}"],
                               capture_output=True, text=True, timeout=1200)
            assert r.returncode == 0, f"installing damnit=={DAMNIT_VERSION} failed:\n{r.stderr[-3000:]}"
            ready.write_text(DAMNIT_VERSION)
    return venv


#: The context file of the DAMNIT directory the tests make (DAMNIT's own API, damnit_ctx).
DAMNIT_CONTEXT = '''
from damnit_ctx import Variable, Cell, Skip
import numpy as np
import xarray as xr

XGM = "SA2_XTD1_XGM/XGM/DOOCS:output"

@Variable(title="XGM energy", units="uJ", summary="mean", tags=["xgm", "beam"])
def xgm(run):
    return run[XGM, "data.intensityTD"].xarray()[:, :4].mean("dim_0")

@Variable(title="Run number", description="The run's number")
def number(run, n: "meta#run_number"):
    return n

@Variable(title="Sample text")
def text(run):
    return "hello"

@Variable(title="Image")
def image(run, n: "meta#run_number"):
    return np.arange(400.0).reshape(20, 20) * n

@Variable(title="Trend")
def trend(run, n: "meta#run_number"):
    return np.sin(np.arange(300) / 20.0) + n

@Variable(title="Complex")
def cplx(run):
    return 1 + 2j

@Variable(title="Parts")
def parts(run):
    return xr.Dataset({"a": ("x", np.arange(3.0)), "b": ("x", np.ones(3))})

@Variable(title="Broken")
def broken(run):
    raise ValueError("no good")

@Variable(title="Not here")
def missing(run):
    raise Skip("no camera in this run")

@Variable(title="Plotly line")
def fig(run, n: "meta#run_number"):
    import plotly.express as px
    return px.line(x=[1, 2, 3], y=[3, 1, n], title="A line")
'''

#: DamnitDB calls (DAMNIT's own API, run in DAMNIT's venv) giving the directory what people
#: add by hand: user-editable variables and their values, a run comment, time comments.
DAMNIT_EDITS = '''
import sys
from pathlib import Path
from damnit.backend.db import DamnitDB, ReducedData
from damnit.backend.user_variables import UserEditableVariable
P = int(sys.argv[2])
db = DamnitDB(Path(sys.argv[1]) / "runs.sqlite")
db.add_user_variable(UserEditableVariable("good_run", "Good run?", "boolean"))
db.add_user_variable(UserEditableVariable("att", "Attenuator", "integer", "foils in"))
db.add_user_variable(UserEditableVariable("sample", "Sample", "string"))
db.add_user_variable(UserEditableVariable("ratio", "Ratio", "number"))
db.set_variable(P, 1, "good_run", ReducedData(True), provenance="")
db.set_variable(P, 2, "good_run", ReducedData(False), provenance="")
db.set_variable(P, 1, "att", ReducedData(3), provenance="")
db.set_variable(P, 1, "sample", ReducedData("lysozyme"), provenance="")
db.set_variable(P, 2, "sample", ReducedData("buffer"), provenance="")
db.set_variable(P, 2, "ratio", ReducedData(0.25), provenance="")
db.change_run_comment(P, 1, "first good run")
db.add_standalone_comment(1700000000.5, "beam is back")
db.add_standalone_comment(1700003600.0, "changed sample")
db.close()
'''

#: What DAMNIT does after the first import (for --update): a further time comment, new user
#: values, a changed one, and a value computed again.
DAMNIT_LATER_EDITS = '''
import sys
from pathlib import Path
from damnit.backend.db import DamnitDB, ReducedData
P = int(sys.argv[2])
db = DamnitDB(Path(sys.argv[1]) / "runs.sqlite")
db.set_variable(P, 3, "sample", ReducedData("crystal"), provenance="")
db.set_variable(P, 1, "att", ReducedData(5), provenance="")
db.set_variable(P, 2, "sample", ReducedData("buffer 2"), provenance="")
db.set_variable(P, 2, "text", ReducedData("again"), provenance="context.py")
db.set_variable(P, 1, "text", ReducedData("again"), provenance="context.py")
db.change_run_comment(P, 3, "third run")
db.add_standalone_comment(1700007200.0, "end of shift")
db.close()
'''


def _damnit(venv: Path, *args, cwd=None, env=None, timeout=600):
    import subprocess
    r = subprocess.run([str(venv / "bin" / "damnit"), *map(str, args)], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"damnit {' '.join(map(str, args))} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="session")
def damnit_made(damnit_venv, tmp_path_factory) -> dict:
    """A European XFEL proposal tree (runs 1-3 of proposal 2832, 30 trains each) with a DAMNIT
    context directory in ``usr/Shared/amore`` made by DAMNIT 0.4.0's own commands: ``damnit
    init`` (:data:`DAMNIT_CONTEXT`), ``damnit db-config context_python``, ``damnit reprocess 1
    2 --direct``, ``damnit combiner now``, then :data:`DAMNIT_EDITS` through ``DamnitDB``.

    ``later`` is a copy of that tree in which DAMNIT went on after an import: ``damnit
    reprocess 3 --direct``, ``damnit combiner now`` and :data:`DAMNIT_LATER_EDITS`.

    Returns ``{"base", "later"}``: the two tree roots (each holding ``exp/`` and the DAMNIT
    directory ``exp/MID/202201/p002832/usr/Shared/amore``). Tests copy what they use
    (:func:`copy_damnit_tree`)."""
    import os
    import shutil
    import subprocess
    from backend.testing.mockdata import write_run as _write
    base = tmp_path_factory.mktemp("damnit-made") / "tree"
    pdir = base / "exp" / INSTRUMENT / CYCLE / f"p{PROPOSAL:06d}"
    (pdir / "raw").mkdir(parents=True)
    for r in (1, 2, 3):
        _write(pdir, PROPOSAL, r, ntrains=30)
    ctx_src = base / "damnit-context.py"
    ctx_src.write_text(DAMNIT_CONTEXT)
    python = damnit_venv / "bin" / "python"

    def damnit_env(root: Path) -> dict:
        return {**os.environ, "EXTRA_DATA_DATA_ROOT": str(root / "exp"), "AMORE_BROKER": "none",
                "MPLBACKEND": "Agg"}

    ddir = pdir / "usr" / "Shared" / "amore"
    env = damnit_env(base)
    _damnit(damnit_venv, "init", ddir, "--proposal", PROPOSAL, "--context", ctx_src, env=env)
    _damnit(damnit_venv, "db-config", "context_python", python, cwd=ddir, env=env)
    _damnit(damnit_venv, "reprocess", 1, 2, "--direct", cwd=ddir, env=env, timeout=900)
    _damnit(damnit_venv, "combiner", "now", ddir, env=env)
    subprocess.run([str(python), "-c", DAMNIT_EDITS, str(ddir), str(PROPOSAL)], env=env,
                   check=True, timeout=120)
    (ddir / "zulip.cfg").write_text("[ZULIP]\nkey = not-a-real-key\nurl = http://127.0.0.1:9/"
                                    "zulip\ntopics = [\"DAMNIT\", \"shift\"]\n")

    later = base.parent / "later"
    shutil.copytree(base, later, symlinks=True)
    lddir = later / ddir.relative_to(base)
    lenv = damnit_env(later)
    _damnit(damnit_venv, "reprocess", 3, "--direct", cwd=lddir, env=lenv, timeout=900)
    _damnit(damnit_venv, "combiner", "now", lddir, env=lenv)
    subprocess.run([str(python), "-c", DAMNIT_LATER_EDITS, str(lddir), str(PROPOSAL)], env=lenv,
                   check=True, timeout=120)
    return {"base": base, "later": later,
            "damnit_rel": ddir.relative_to(base), "pdir_rel": pdir.relative_to(base)}


def copy_damnit_tree(made: dict, dest: Path, which: str = "base") -> dict:
    """A private copy of a tree of :func:`damnit_made` at ``dest`` (modes and times kept):
    ``{"root": dest/exp, "pdir", "damnit"}``."""
    import shutil
    shutil.copytree(made[which], dest, symlinks=True)
    return {"root": dest / "exp", "pdir": dest / made["pdir_rel"],
            "damnit": dest / made["damnit_rel"]}


def tree_state(path: Path) -> dict:
    """Everything a byte-for-byte comparison of a directory needs: for every file and directory
    below ``path`` (and ``path`` itself), its mode, size, modification time and (files) a
    SHA-256 of its content; a file created (even one removed again) changes a directory's
    modification time."""
    import hashlib
    import os
    out = {}
    for p in [path, *sorted(path.rglob("*"))]:
        st = os.lstat(p)
        rel = str(p.relative_to(path))
        entry = {"mode": oct(st.st_mode), "mtime_ns": st.st_mtime_ns}
        if p.is_file() and not p.is_symlink():
            entry["size"] = st.st_size
            entry["sha256"] = hashlib.sha256(p.read_bytes()).hexdigest()
        out[rel] = entry
    return out


# --- local HTTP servers standing in for the facility's services ------------------------------

def send_json(handler, code: int, body) -> None:
    """Answer a request of a :class:`http.server.BaseHTTPRequestHandler` with JSON."""
    import json
    data = json.dumps(body).encode()
    handler.send_response(code)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


#: The API key :func:`mymdc_server` accepts.
MYMDC_KEY = "mymdc-test-key-5f1e"


@pytest.fixture
def mymdc_server():
    """A stand-in for MyMdC (the one part that cannot run here): a local HTTP server answering
    MyMdC's API under ``/api/mymdc`` (where extra-proposal and AMORE's own client ask), only
    with the API key :data:`MYMDC_KEY`. Run 1 of proposal 2832: sample "Lysozyme crystals",
    run type "Pump-probe", one technique; run 2 unknown. Yields an object with ``url`` (the
    server), ``api`` (``url + "/api/mymdc"``), ``key`` and ``seen`` (every request: ``path``,
    ``key``)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from types import SimpleNamespace

    replies = {
        f"/api/mymdc/proposals/by_number/{PROPOSAL}/runs/1": {
            "runs": [{"id": 501, "sample_id": 7, "experiment_id": 3, "run_number": 1}]},
        f"/api/mymdc/proposals/by_number/{PROPOSAL}/runs/2": {"runs": []},
        "/api/mymdc/samples/7": {"name": "Lysozyme crystals", "id": 7},
        "/api/mymdc/experiments/3": {"name": "Pump-probe", "id": 3},
        "/api/mymdc/runs/501": {"id": 501, "techniques": [
            {"identifier": "PaNET01188", "name": "serial femtosecond crystallography"}]},
    }
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append({"path": self.path, "key": self.headers.get("X-API-key")})
            body = replies.get(self.path.split("?")[0])
            if self.headers.get("X-API-key") != MYMDC_KEY:
                send_json(self, 403, {"info": "bad key"})
            elif body is None:
                send_json(self, 404, {"info": "not found"})
            else:
                send_json(self, 200, body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    yield SimpleNamespace(url=url, api=url + "/api/mymdc", key=MYMDC_KEY, seen=seen)
    server.shutdown()


#: The API key :func:`logbook_proxy` accepts.
PROXY_KEY = "proxy-key-7c2d9a"


def parse_body(handler) -> tuple[dict, dict]:
    """The form fields and files of a request to a :class:`http.server.BaseHTTPRequestHandler`
    (urlencoded or multipart)."""
    import email
    import urllib.parse
    n = int(handler.headers.get("Content-Length") or 0)
    body = handler.rfile.read(n)
    ctype = handler.headers.get("Content-Type") or ""
    if ctype.startswith("multipart/form-data"):
        msg = email.message_from_bytes(b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body)
        fields, files = {}, {}
        for part in msg.get_payload():
            name = part.get_param("name", header="content-disposition")
            if part.get_filename() is not None:
                files[name] = (part.get_filename(), part.get_payload(decode=True))
            else:
                fields[name] = part.get_payload(decode=True).decode()
        return fields, files
    return {k: v[0] for k, v in urllib.parse.parse_qs(body.decode()).items()}, {}


def _logbook_server_classes():
    import threading
    import urllib.parse
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Recorder(ThreadingHTTPServer):
        """A local HTTP server in a thread of its own, keeping what it was asked
        (``requests``); ``reply_error`` makes a stand-in refuse."""

        def __init__(self, handler):
            super().__init__(("127.0.0.1", 0), handler)
            self.requests = []
            self.reply_error = None
            threading.Thread(target=self.serve_forever, daemon=True).start()

        @property
        def url(self) -> str:
            return f"http://127.0.0.1:{self.server_address[1]}"

    class ProxyHandler(BaseHTTPRequestHandler):
        """Answers like the facility's logbook proxy (DAMNIT's zulip_messenger talks to it)."""

        def _record(self, fields=None, files=None):
            u = urllib.parse.urlsplit(self.path)
            self.server.requests.append({"method": self.command, "path": u.path,
                                         "query": urllib.parse.parse_qs(u.query),
                                         "key": self.headers.get("X-API-key"),
                                         "fields": fields or {}, "files": files or {}})

        def do_GET(self):
            self._record()
            if self.headers.get("X-API-key") != PROXY_KEY:
                return send_json(self, 403, {"result": "error", "msg": "bad key"})
            if self.path == "/zulip/me":
                return send_json(self, 200, {"stream": "p2832 beamtime"})
            send_json(self, 404, {})

        def do_POST(self):
            fields, files = parse_body(self)
            self._record(fields, files)
            if self.server.reply_error:
                return send_json(self, 200, {"result": "error", "msg": self.server.reply_error})
            send_json(self, 200, {"result": "success"})

        def log_message(self, *a):
            pass

    return Recorder, ProxyHandler


LogbookRecorder, LogbookProxyHandler = _logbook_server_classes()


@pytest.fixture
def logbook_proxy():
    """A stand-in for the facility's logbook proxy in front of Zulip, answering as DAMNIT's
    ``zulip_messenger`` expects it to (with the key :data:`PROXY_KEY` only): ``GET
    /zulip/me`` -> ``{"stream": "p2832 beamtime"}``, ``POST /zulip/send_message?topic=...``
    (form field ``content``, file ``image``) -> success, or ``{"result": "error", "msg":
    reply_error}`` once ``reply_error`` is set. Yields the server: ``url``, ``requests`` (each
    ``method``, ``path``, ``query``, ``key``, ``fields``, ``files``), ``reply_error``."""
    s = LogbookRecorder(LogbookProxyHandler)
    yield s
    s.shutdown()
