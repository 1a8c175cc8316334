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

pytest_plugins = ["tests.kafka_broker", "tests.slurm_cluster", "tests.gui_fixtures"]

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


def start_processing(ctx_dir, workers=1):
    """``(db, pool, processor, error)``: the backend's run processing for context directory
    ``ctx_dir`` (a ``RunProcessor`` on a real ``WorkerPool`` of ``workers`` processes) with its
    context file loaded; ``error`` says why it could not be (None if it was). The caller stops
    the pool (``pool.stop()``)."""
    from backend.config import load_config
    from backend.processing.local import RunProcessor, WorkerPool
    from backend.store.writer import RunDB
    config = load_config(ctx_dir)
    db = RunDB(ctx_dir)
    pool = WorkerPool(ctx_dir, config, workers)
    try:
        proc = RunProcessor(ctx_dir, config, db, pool)
        return db, pool, proc, proc.load_context()
    except BaseException:
        pool.stop()
        raise


@pytest.fixture
def run_processor():
    """``run_processor(ctx, workers=1)`` -> ``(db, pool, processor)``: the backend's run
    processing for context directory ``ctx`` (a ``RunProcessor`` on a real ``WorkerPool`` of
    ``workers`` processes), its context file loaded (asserted). The pools are stopped, and their
    workers killed, after the test."""
    pools = []

    def make(ctx, workers=1):
        db, pool, proc, err = start_processing(ctx, workers)
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
        self.proc = subprocess.Popen(amore_cmd("listen", ctx_dir), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: self.log.exists() and " Ready" in self.log.read_text()
                 or self.proc.poll() is not None, 60, what="backend ready")
        assert self.proc.poll() is None, self.proc.stdout.read().decode()

    def workers(self):
        return [p for p in psutil.Process(self.proc.pid).children(recursive=True)
                if "backend.ctxrunner.worker" in " ".join(p.cmdline())]

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
