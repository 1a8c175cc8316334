"""The waits that the tests only bound, timed: how long AMORE takes for what the tests check it
does (the tests assert the behaviour and bound each wait generously; the seconds are here).

* a mock run of 100 trains written from a warm template cache (``backend.testing.mockdata``;
  ``tests/test_mockdata.py`` checks that the template is reused);
* ``amore-proto listen`` stopped by SIGTERM while a run is being computed (it does not wait for
  the run; ``tests/test_listener.py``);
* a reprocess handed to the running backend, cancelled (SIGTERM to the command): until the run
  being computed is back to ``done`` (``tests/test_listener.py``);
* ``amore-proto listen --once``: catching up three new runs, then again with nothing to do
  (``tests/test_trust.py``);
* a read of ``runs.sqlite`` while another process holds a write transaction
  (``tests/test_faults_storage.py``);
* an endless loop in a variable: seconds past ``run_timeout`` until the run is failed
  (``tests/test_faults_usercode.py``).

    python benchmarks/waits.py [--repeats 3] [--out FILE.json]

Each measurement runs in a fresh proposal tree of mock runs and context directory under
``$BENCH_WORK/waits``.
Prints a table (median and range per measurement, and the bound a test asserted before these
moved here); ``--out`` writes every measurement as JSON (``{name: [seconds, ...]}``).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from common import PROPOSAL, REPO, Env, print_seconds, save_json, scratch_dir

sys.path.insert(0, str(REPO))

from tests.conftest import (FAST_WATCH, HANGING_CONTEXT, Backend, amore_cmd,  # noqa: E402
                            run_status, start_processing, wait_for)

SIMPLE = textwrap.dedent("""
    from amore.context import Variable

    @Variable(title="Trains")
    def n_trains(run):
        return len(run.train_ids)
""")

ENDLESS = textwrap.dedent("""
    from amore.context import Variable

    @Variable(title="Endless")
    def endless(run):
        while True:
            pass
""")


def mock_run(base: Path, repeats: int) -> list[float]:
    env = Env(base)
    env.runs([1], ntrains=100)                          # warm the template cache
    out = []
    for i in range(repeats):
        t0 = time.perf_counter()
        env.runs([2 + i], ntrains=100)
        out.append(time.perf_counter() - t0)
    return out


def stop_with_run_in_flight(base: Path) -> float:
    env = Env(base)
    ctx = env.context("ctx", HANGING_CONTEXT, FAST_WATCH)
    (ctx / "hang").write_text("")
    b = Backend(ctx)
    try:
        env.runs([1], ntrains=20)
        wait_for(lambda: run_status(ctx, 1) == "processing", 60, what="run 1 processing")
        t0 = time.perf_counter()
        if b.stop() != 0:
            raise RuntimeError(f"the backend exited with {b.proc.returncode}")
        return time.perf_counter() - t0
    finally:
        b.stop()


def cancelled_reprocess(base: Path) -> float:
    env = Env(base)
    ctx = env.context("ctx", HANGING_CONTEXT, FAST_WATCH + "[processing]\njobs = 1\n")
    b = Backend(ctx)
    try:
        env.runs([1, 2, 3], ntrains=20)
        wait_for(lambda: all(run_status(ctx, r) == "done" for r in (1, 2, 3)), 120,
                 what="runs processed")
        (ctx / "hang").write_text("")
        cli = subprocess.Popen(amore_cmd("reprocess", "1", "2", "3", "-d", ctx),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: run_status(ctx, 1) == "processing", 60, what="run 1 processing")
        t0 = time.perf_counter()
        cli.terminate()
        cli.communicate(timeout=30)
        wait_for(lambda: run_status(ctx, 1) == "done", 60, 0.01, what="run 1 back to done")
        return time.perf_counter() - t0
    finally:
        (ctx / "hang").unlink(missing_ok=True)
        b.stop()


def catch_up(base: Path) -> tuple[float, float]:
    env = Env(base)
    ctx = env.context("ctx", SIMPLE)
    env.runs([1, 2, 3], ntrains=20)
    times = []
    for _ in range(2):                        # three new runs, then nothing to do
        t0 = time.perf_counter()
        p = subprocess.run(amore_cmd("listen", "--once", ctx), capture_output=True, text=True,
                           timeout=300)
        times.append(time.perf_counter() - t0)
        if p.returncode != 0:
            raise RuntimeError(p.stdout + p.stderr)
    if "Nothing to do" not in p.stderr:
        raise RuntimeError(f"the second catch-up did something: {p.stderr}")
    return times[0], times[1]


def read_while_locked(base: Path, repeats: int) -> list[float]:
    from backend.store.writer import RunDB, StoredValue
    from tests.faults_helpers import hold_write_lock
    ctx = Env(base).context("ctx", SIMPLE)
    db = RunDB(ctx)
    db.write_values(PROPOSAL, 1, {"n_trains": StoredValue(20, "number")}, status="done")
    holder = hold_write_lock(ctx / "runs.sqlite", None)
    out = []
    try:
        for _ in range(repeats):
            t0 = time.perf_counter()
            if db.get_run(PROPOSAL, 1)["status"] != "done":
                raise RuntimeError("run 1 not read back")
            out.append(time.perf_counter() - t0)
    finally:
        holder.stdin.close()
        holder.wait(20)
    return out


def past_run_timeout(base: Path, run_timeout: float = 5.0) -> float:
    env = Env(base)
    ctx = env.context("ctx", ENDLESS, f"[processing]\njobs = 1\nrun_timeout = {run_timeout}\n")
    env.runs([1], ntrains=5)
    db, pool, proc, err = start_processing(ctx)
    try:
        if err is not None:
            raise RuntimeError(err)
        t0 = time.perf_counter()
        proc.process(PROPOSAL, 1)
        dt = time.perf_counter() - t0
    finally:
        pool.stop()
    row = db.get_run(PROPOSAL, 1)
    if row["status"] != "failed" or "timed out" not in (row["status_message"] or ""):
        raise RuntimeError(f"the endless run was not timed out: {row}")
    return dt - run_timeout


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="repeats of each measurement")
    ap.add_argument("--out", help="write all measurements to this JSON file")
    a = ap.parse_args()
    w = scratch_dir("waits")
    res: dict[str, list[float]] = {}
    res["mock_run"] = mock_run(w / "mock", max(a.repeats, 5))
    res["stop"] = [stop_with_run_in_flight(w / f"stop-{i}") for i in range(a.repeats)]
    res["cancel"] = [cancelled_reprocess(w / f"cancel-{i}") for i in range(a.repeats)]
    first, again = zip(*[catch_up(w / f"catchup-{i}") for i in range(a.repeats)])
    res["catch_up"], res["catch_up_nothing"] = list(first), list(again)
    res["locked_read"] = read_while_locked(w / "locked", max(a.repeats, 20))
    res["past_timeout"] = [past_run_timeout(w / f"timeout-{i}") for i in range(a.repeats)]
    rows_spec = [
        ("mock_run", "mock run of 100 trains, warm template cache", "< 0.3 s"),
        ("stop", "SIGTERM -> listen exits, a run in flight", "< 15 s"),
        ("cancel", "cancelled hand-over reprocess -> run back to done", "< 10 s"),
        ("catch_up", "listen --once, 3 new runs", ""),
        ("catch_up_nothing", "listen --once, nothing to do", "< 5 s"),
        ("locked_read", "a read while another process holds the write lock", "< 1 s"),
        ("past_timeout", "endless variable: failed, seconds past run_timeout (5 s)", "< 14 s"),
    ]
    print_seconds(f"Waits the tests bound ({a.repeats} repeats)", res, rows_spec,
                  "bound a test asserted")
    save_json(a.out, res)


if __name__ == "__main__":
    main()
