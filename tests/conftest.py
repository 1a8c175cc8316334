"""Shared fixtures: a temporary proposal tree with real HDF5 runs and AMORE context directories."""
import sys
import time
from pathlib import Path

import pytest

pytest_plugins = ["tests.kafka_broker", "tests.slurm_cluster"]

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


@pytest.fixture
def run_processor():
    """``run_processor(ctx, workers=1, **pool_options)`` -> ``(db, pool, processor)``: the
    backend's run processing for context directory ``ctx`` (a ``RunProcessor`` on a real
    ``WorkerPool`` of ``workers`` processes, made with ``pool_options``), its context file loaded
    (asserted). The pools are stopped, and their workers killed, after the test."""
    from backend.config import load_config
    from backend.processing.local import RunProcessor, WorkerPool
    from backend.store.writer import RunDB
    pools = []

    def make(ctx, workers=1, **pool_options):
        config = load_config(ctx)
        db = RunDB(ctx)
        pool = WorkerPool(ctx, config, workers, **pool_options)
        pools.append(pool)
        proc = RunProcessor(ctx, config, db, pool)
        assert proc.load_context() is None
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
