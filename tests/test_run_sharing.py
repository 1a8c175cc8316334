"""A run's variables shared with a forked copy of its worker while another worker is idle
([processing] processes_per_run, backend/ctxrunner/forked.py), and the memory a worker keeps
between runs ([processing] worker_keep_mb)."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from backend.ctxrunner.results import h5_path, read_run_value
from backend.store.runlogs import run_logs
from tests.conftest import PROPOSAL, REPO

# Two heavy variables, each with a dependent, and one that dies when told to. The worker learns
# the variables' seconds on the first run and shares the next ones between two processes.
CONTEXT = textwrap.dedent("""
    import os, signal, time
    from pathlib import Path
    import numpy as np
    from amore.context import Variable

    @Variable(title="Camera sum")
    def heavy_a(run):
        time.sleep(0.4)
        print("heavy_a in", os.getpid())
        return os.getpid()

    @Variable(title="A doubled")
    def after_a(run, pid: "var#heavy_a"):
        assert pid == os.getpid(), "a variable and its input are computed apart"
        return np.arange(10.0) * 2

    @Variable(title="XGM sum")
    def heavy_b(run):
        time.sleep(0.25)
        print("heavy_b in", os.getpid())
        return os.getpid()

    @Variable(title="B trend")
    def after_b(run, pid: "var#heavy_b"):
        assert pid == os.getpid()
        return np.ones((8, 8))

    @Variable(title="Trains")
    def n_trains(run):
        if Path("die-now").exists():    # this variable's process is killed mid-run
            os.kill(os.getpid(), signal.SIGKILL)
        return len(run.train_ids)
""")


@pytest.fixture
def backend(make_context_dir, write_run, run_processor):
    ctx = make_context_dir(code=CONTEXT)
    for r in range(1, 5):
        write_run(r, ntrains=20)
    db, _, proc = run_processor(ctx, workers=2)
    return ctx, db, proc


def test_a_run_is_shared_between_two_processes_and_loses_nothing(backend):
    ctx, db, proc = backend
    first = proc.process(PROPOSAL, 1)
    assert first.status == "done" and not first.n_errors, first
    v1 = db.get_values(PROPOSAL, 1)
    assert v1["heavy_a"].value == v1["heavy_b"].value  # no timings yet: one process

    second = proc.process(PROPOSAL, 2)
    assert second.status == "done" and not second.n_errors, second
    v2 = db.get_values(PROPOSAL, 2)
    # the two heavy groups went to two processes; each variable stayed with its input
    assert v2["heavy_a"].value != v2["heavy_b"].value
    assert sorted(v2) == sorted(v1) and v2["n_trains"].value == 20
    # both processes' data is in the run's HDF5 file, and both prints are in the run's log
    path = h5_path(ctx, PROPOSAL, 2)
    assert np.array_equal(read_run_value(path, "after_a"), np.arange(10.0) * 2)
    assert np.array_equal(read_run_value(path, "after_b"), np.ones((8, 8)))
    assert read_run_value(path, "heavy_b") == v2["heavy_b"].value
    text = run_logs(db, 2)[-1]["text"]
    assert f"heavy_a in {v2['heavy_a'].value}" in text
    assert f"heavy_b in {v2['heavy_b'].value}" in text
    # (that sharing pays, the run taking about its heaviest group and not the sum of both, is
    # measured by benchmarks/run_sharing.py)


def test_a_killed_copy_fails_only_its_own_variables(backend):
    ctx, db, proc = backend
    assert proc.process(PROPOSAL, 1).status == "done"
    (ctx / "die-now").touch()
    out = proc.process(PROPOSAL, 2)
    assert out.status == "done", out
    v = db.get_values(PROPOSAL, 2)
    # n_trains went with the lighter group (heavy_b's) to the copy, which was killed
    for name in ("n_trains", "heavy_b", "after_b"):
        assert v[name].summary_type == "error", (name, v[name])
        assert "killed by SIGKILL" in v[name].attributes["error"]
        assert "second process" in v[name].attributes["error"]
    # the worker's own group is stored, and the worker lives on for the next run
    assert v["heavy_a"].summary_type != "error" and v["after_a"].summary_type != "error"
    (ctx / "die-now").unlink()
    out = proc.process(PROPOSAL, 3)
    assert out.status == "done" and not out.n_errors, out
    assert db.get_values(PROPOSAL, 3)["n_trains"].value == 20


def test_one_process_per_run_when_told(make_context_dir, write_run, run_processor):
    ctx = make_context_dir(code=CONTEXT, config="[processing]\nprocesses_per_run = 1\n")
    for r in (1, 2):
        write_run(r, ntrains=20)
    db, _, proc = run_processor(ctx, workers=2)
    for r in (1, 2):
        assert proc.process(PROPOSAL, r).status == "done"
    v = db.get_values(PROPOSAL, 2)
    assert v["heavy_a"].value == v["heavy_b"].value


KEEP = textwrap.dedent("""
    import sys
    sys.path.insert(0, {repo!r})
    import numpy as np
    from backend.ctxrunner.memory import keep_memory
    from backend.ctxrunner.worker import _release_memory

    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2**20

    assert keep_memory({keep})
    base = rss_mb()
    a = np.ones(300 << 20, np.uint8)   # a run's 300 MB array, freed at the end of the run
    del a
    _release_memory()
    print(round(rss_mb() - base))
""")


@pytest.mark.parametrize("keep_mb, kept", [(512, True), (100, False)])
def test_a_worker_keeps_freed_memory_up_to_its_limit(keep_mb, kept):
    p = subprocess.run([sys.executable, "-c", KEEP.format(repo=str(REPO), keep=keep_mb)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    grown = int(p.stdout.split()[-1])
    if kept:   # ready for the next run's arrays
        assert grown >= 250, grown
    else:      # more than worker_keep_mb: all handed back
        assert grown < 50, grown


FREEZE = textwrap.dedent("""
    import sys, weakref
    sys.path.insert(0, {repo!r})
    from backend.ctxrunner.worker import _release_memory, freeze_long_lived

    class Node:
        pass

    ctx = Node(); ctx.me = ctx          # a loaded context file's objects (a cycle)
    ctx_ref = weakref.ref(ctx)
    freeze_long_lived()                 # as the worker does after its imports and loading
    run = Node(); run.me = run          # garbage a run leaves: a cycle
    run_ref = weakref.ref(run)
    del run
    _release_memory()
    print("run", run_ref() is None)
    del ctx                             # the context file replaced, then loaded anew
    freeze_long_lived()
    print("context", ctx_ref() is None)
""")


def test_a_workers_garbage_is_still_collected_with_the_long_lived_objects_frozen():
    p = subprocess.run([sys.executable, "-c", FREEZE.format(repo=str(REPO))],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["run", "True", "context", "True"], p.stdout
