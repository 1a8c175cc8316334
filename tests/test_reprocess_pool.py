"""``amore-proto reprocess all`` sized to its work (issue 22): it starts the workers a changed
context file needs early, adds more only when the plan's work pays for them, lends a new worker
only once it has loaded the context file, and keeps its database connections open while it
writes -- and still computes every stale value exactly once, with the run's recorded start
time kept, results of every kind stored, and nothing left open when it ends.
"""
from __future__ import annotations

import os
import sqlite3
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from backend.store.writer import RunDB
from backend.vocab import Outcome, StoredValue
from tests.conftest import PROPOSAL, amore_cmd

CONTEXT = '''
import os
import time
from pathlib import Path

import numpy as np
from amore.context import Variable

HERE = Path(__file__).parent


def called(name, run):
    with open(HERE / "calls.txt", "a") as f:
        f.write(f"{name} {run}\\n")


@Variable(title="Slow", units="uJ")
def slow(run, r: "meta#run_number"):
    called("slow", r)
    time.sleep(0.6)
    return 1.0


@Variable(title="Image")
def image(run, r: "meta#run_number"):
    called("image", r)
    return np.ones((16, 16))


@Variable(title="Trend")
def trend(run, r: "meta#run_number"):
    import xarray as xr
    called("trend", r)
    return xr.DataArray(np.arange(5.0), dims=["trainId"])


@Variable(title="Worker")
def worker_pid(run, r: "meta#run_number"):
    called("worker_pid", r)
    return os.getpid()
'''


def cli(*args, timeout=240):
    r = subprocess.run(amore_cmd(*args), capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"exit {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return r


def calls(ctx: Path) -> list[tuple[str, int]]:
    """The functions called since the last call of this helper (and forget them)."""
    f = ctx / "calls.txt"
    if not f.exists():
        return []
    out = sorted((n, int(r)) for n, r in (line.split() for line in f.read_text().splitlines()
                                         if line))
    f.unlink()
    return out


def start_times(ctx: Path) -> dict[int, float | None]:
    con = sqlite3.connect(ctx / "runs.sqlite")
    try:
        return dict(con.execute("SELECT run, start_time FROM runs"))
    finally:
        con.close()


def test_reprocess_all_grown_to_its_work_computes_every_stale_value_once(make_context_dir,
                                                                         write_run):
    ctx = make_context_dir(CONTEXT)
    for r in (1, 2):
        write_run(r, ntrains=20)
    cli("reprocess", "1", "2", "-d", ctx, "-j", "2")
    assert calls(ctx) == sorted((n, r) for n in ("slow", "image", "trend", "worker_pid")
                                for r in (1, 2))
    started = start_times(ctx)
    assert all(started.values()), started
    # two functions changed: their values (2 x 2) are stale; 'slow' took 0.6 s a run, so the
    # plan's work pays for a second worker (more than one worker's start)
    f = ctx / "context.py"
    f.write_text(f.read_text().replace("return 1.0", "return 2.0")
                 .replace("np.ones((16, 16))", "np.full((16, 16), 3.0)"))
    out = cli("reprocess", "all", "-d", ctx, "-j", "2")
    assert "Stale: 2 run(s), 4 value(s) to compute" in out.stdout, out.stdout
    assert "Reprocessed 2/2 runs" in out.stdout, out.stdout
    assert calls(ctx) == [("image", 1), ("image", 2), ("slow", 1), ("slow", 2)]
    db = RunDB(ctx)
    for r in (1, 2):
        values = db.get_values(PROPOSAL, r)
        assert values["slow"].value == 2.0 and values["slow"].attributes.get("units") == "uJ", \
            values["slow"]
        assert values["image"].summary_type == "thumbnail", values["image"]
        assert values["trend"].summary_type == "sparkline", values["trend"]
    assert start_times(ctx) == started   # the recorded start times are kept
    out = cli("reprocess", "all", "-d", ctx)
    assert "Nothing to reprocess" in out.stdout, out.stdout   # the stale marks are cleared
    assert calls(ctx) == []


SLOW_SECOND_LOAD = '''
import os
import time
from pathlib import Path

from amore.context import Variable

HERE = Path(__file__).parent
if (HERE / "first-loaded").exists():   # every worker but the first loads slowly
    time.sleep(float((HERE / "slow-load.txt").read_text()))
else:
    (HERE / "first-loaded").write_text(str(os.getpid()))


@Variable(title="Worker")
def worker_pid(run):
    return os.getpid()
'''


def test_a_worker_added_to_the_pool_takes_runs_only_once_it_has_loaded(make_context_dir,
                                                                      write_run,
                                                                      run_processor):
    ctx = make_context_dir(SLOW_SECOND_LOAD)
    (ctx / "slow-load.txt").write_text("120")
    for r in (1, 2, 3, 4):
        write_run(r, ntrains=5)
    db, pool, proc = run_processor(ctx, workers=1)
    first = int((ctx / "first-loaded").read_text())
    assert proc.grow_pool(2) == 1 and len(pool.workers) == 2
    # two threads, as 'reprocess' has for two workers: the second worker is still loading
    # (for two minutes), so every run goes to the first one instead of waiting for it
    with ThreadPoolExecutor(max_workers=2) as ex:
        outs = list(ex.map(lambda r: proc.process(PROPOSAL, r), (1, 2, 3, 4)))
    assert [o.status for o in outs] == [Outcome.DONE] * 4, outs
    pids = {r: db.get_values(PROPOSAL, r)["worker_pid"].value for r in (1, 2, 3, 4)}
    assert set(pids.values()) == {first}, (pids, first)
    assert pool.workers[1].alive()   # (still loading; stopped with the pool)


def test_kept_database_connections_serve_threads_and_close_with_the_database(
        make_context_dir):
    ctx = make_context_dir("from amore.context import Variable\n")
    db = RunDB(ctx, keep_connections=True)
    errors = []

    def write(run):
        try:
            for i in range(5):
                db.write_values(PROPOSAL, run, {"x": StoredValue(float(i), "number", {})},
                                status="done")
                assert db.get_values(PROPOSAL, run)["x"].value == float(i)
        except Exception as e:   # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=write, args=(r,)) for r in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    db.close()
    # every connection is closed: the last one checkpointed the log and removed it
    assert not os.path.exists(f"{ctx}/runs.sqlite-wal")
    assert {r: v["x"].value for r in range(1, 5)
            for v in [RunDB(ctx).get_values(PROPOSAL, r)]} == {r: 4.0 for r in range(1, 5)}


SLOW = '''
import time
from amore.context import Variable


@Variable(title="Slow")
def slow(run):
    time.sleep(0.5)
    return 1.0
'''


def test_a_run_waiting_for_a_worker_is_not_shown_processing(make_context_dir, write_run,
                                                           run_processor):
    ctx = make_context_dir(SLOW)
    runs = (1, 2, 3, 4)
    for r in runs:
        write_run(r, ntrains=5)
    db, pool, proc = run_processor(ctx, workers=1)
    seen: list[list[int]] = []
    done = threading.Event()

    def watch():   # what the table shows as processing, as often as it can be read
        con = sqlite3.connect(ctx / "runs.sqlite")
        try:
            while not done.is_set():
                seen.append([r for (r,) in con.execute(
                    "SELECT run FROM runs WHERE status = 'processing'")])
        finally:
            con.close()
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        # a thread per run for one worker ('reprocess' has one more than workers): the runs'
        # requests are prepared while the worker computes, but a run waiting for the worker
        # is not processing yet. Processing: the run the worker computes, and for the moment
        # its values are stored, the one before (the worker takes the next run meanwhile).
        with ThreadPoolExecutor(max_workers=len(runs)) as ex:
            outs = list(ex.map(lambda r: proc.process(PROPOSAL, r), runs))
    finally:
        done.set()
        watcher.join(30)
    assert [o.status for o in outs] == [Outcome.DONE] * len(runs), outs
    assert {r for s in seen for r in s} == set(runs), "not every run was seen processing"
    assert max(len(s) for s in seen) <= 2, [s for s in seen if len(s) > 2][:5]
    assert {r["run"]: r["status"] for r in db.runs()} == {r: "done" for r in runs}
