"""Fault: runaway user code in the context file, on the real worker pool.

An endless loop (killed at ``run_timeout``), a memory hog (an "out of memory" error under
``[processing] worker_memory_mb``), a segfault in native code, megabytes printed to stdout and
stderr, processes forked or spawned (and detached) that would outlive the run. Each run gets a
clear status; the backend's pool lives on and the next run is computed normally.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest

from tests.conftest import wait_for
from tests.faults_helpers import PROPOSAL, detaching_context, gone

RUNAWAY_CONTEXT = textwrap.dedent("""
    import ctypes, os, subprocess, sys, time
    from amore.context import Variable

    # started when the context file is loaded, used by every run: kept while the worker lives
    HELPER = subprocess.Popen(["sleep", "602"])

    @Variable(title="Helper")
    def helper_pid(run):
        return HELPER.pid

    @Variable(title="Trains")
    def n_trains(run):
        return len(run.train_ids)

    @Variable(title="Runaway")
    def runaway(run, r: "meta#run_number"):
        if r == 1:                      # endless loop
            while True:
                pass
        if r == 2:                      # memory hog: 8 GB
            return len(bytearray(8 << 30))
        if r == 3:                      # crash in native code
            ctypes.string_at(0)
        if r == 4:                      # megabytes of output, one 3 MB line without newline
            for i in range(20000):
                print("x" * 100, i)
                print("e" * 100, i, file=sys.stderr)
            os.write(1, b"y" * (3 << 20))
            os.write(2, b"z" * (3 << 20))
            return 4
        if r == 5:                      # processes outliving the run
            pids = []
            p = subprocess.Popen(["sleep", "600"])
            pids.append(p.pid)
            p = subprocess.Popen(["sleep", "601"], start_new_session=True)
            pids.append(p.pid)
            pid = os.fork()
            if pid == 0:
                os.setsid()
                if os.fork() == 0:      # a detached daemon (double fork)
                    time.sleep(600)
                os._exit(0)
            with open("spawned.txt", "w") as f:
                f.write(" ".join(map(str, pids)))
            return 5
        return r
""")


@pytest.fixture
def processor(make_context_dir, write_run, run_processor):
    ctx = make_context_dir(code=RUNAWAY_CONTEXT, config=textwrap.dedent("""
        [processing]
        jobs = 1
        run_timeout = 6
        worker_memory_mb = 1500
    """))
    for r in range(1, 7):
        write_run(r, ntrains=5)
    return (ctx, *run_processor(ctx))


def running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (one that ends while being looked at
    is not running)."""
    return not gone(pid)


def sleepers():
    """The sleep processes run 5 leaves behind, still running (zombies do not count: they are
    reaped by whoever inherits them)."""
    out = []
    for p in psutil.process_iter(["cmdline", "status"]):
        cmd = p.info["cmdline"] or []
        if cmd[:1] == ["sleep"] and cmd[1:] in (["600"], ["601"]) \
                and p.info["status"] != psutil.STATUS_ZOMBIE:
            out.append(p)
    return out


def test_runaway_user_code(processor, caplog):
    ctx, db, pool, proc = processor
    caplog.set_level(logging.INFO)
    worker_pids = []

    def process(run):
        out = proc.process(PROPOSAL, run)
        worker_pids.append(pool.workers[0].pid)
        return out, db.get_run(PROPOSAL, run), db.get_values(PROPOSAL, run)

    # Endless loop: killed at run_timeout (6 s: not before, a lower bound no slow machine can
    # fail; how long after is measured by benchmarks/waits.py; the wait is bounded by
    # pytest-timeout), the run failed and says why. Run in this thread: the worker that replaces
    # the killed one must not be started by a thread that ends (PR_SET_PDEATHSIG is per thread).
    t0 = time.monotonic()
    out, row, _ = process(1)
    assert time.monotonic() - t0 >= 6, "the run was stopped before its run_timeout of 6 s"
    assert row["status"] == "failed" and "timed out" in row["status_message"] \
        and "run_timeout" in row["status_message"], row

    # Memory hog: the variable gets "out of memory"; the others of the run are computed.
    out, row, values = process(2)
    assert row["status"] == "done", row
    assert values["runaway"].summary_type == "error"
    assert "out of memory" in values["runaway"].attributes["error"]
    assert "worker_memory_mb" in values["runaway"].attributes["error"]
    assert values["n_trains"].value == 5

    # Segfault: the run failed with a clear reason; a new worker takes the next run.
    out, row, _ = process(3)
    assert row["status"] == "failed" and "SIGSEGV" in row["status_message"] \
        and "native code" in row["status_message"]

    # Megabytes of output: the protocol holds, the log gets a bounded excerpt.
    caplog.clear()
    out, row, values = process(4)
    assert row["status"] == "done" and values["runaway"].value == 4, row
    time.sleep(0.5)  # the output pump thread catches up
    logged = [r.getMessage() for r in caplog.records if r.name.startswith("amore.worker")]
    assert len(logged) <= pool.workers[0].MAX_LINES + 5
    assert sum(map(len, logged)) < 1 << 20
    assert any("not logged" in m for m in logged) or any("cut at" in m for m in logged)

    # Processes outliving the run: gone when the run is done.
    out, row, values = process(5)
    assert row["status"] == "done" and values["runaway"].value == 5, row
    spawned = [int(x) for x in (ctx / "spawned.txt").read_text().split()]
    assert spawned
    assert not [p for p in spawned if running(p)]
    assert not sleepers(), "the detached daemon outlived the run"
    helper = values["helper_pid"].value
    assert running(helper), "load-time helper killed"

    # The pool lives on: run 6 is computed normally.
    out, row, values = process(6)
    assert row["status"] == "done" and values["runaway"].value == 6
    assert values["n_trains"].value == 5
    assert pool.workers[0].alive()
    # The timeout and the crash are in the event log.
    worker_events = [e["message"] for e in db.events() if e["source"] == "worker"]
    assert any("Run 1: timed out" in m for m in worker_events), worker_events
    assert any("Run 3:" in m and "SIGSEGV" in m for m in worker_events), worker_events
    # Only runs 1 (timeout) and 3 (segfault) cost a worker.
    assert len(set(worker_pids)) == 3, worker_pids
    # The load-time helper goes with its worker.
    pool.stop()
    time.sleep(0.5)
    assert not running(helper)
    # ... and so did those of the workers that were killed (timeout) or crashed (segfault)
    assert not [p for p in psutil.process_iter(["cmdline", "status"])
                if (p.info["cmdline"] or []) == ["sleep", "602"]
                and p.info["status"] != psutil.STATUS_ZOMBIE]


def own_cgroups() -> list[str]:
    """The worker cgroups this test process's pools made that still exist."""
    from backend.procs import Cgroup
    own = Cgroup.own_dir()
    return sorted(p.name for p in own.glob(f"amore-worker*-{os.getpid()}-*")) if own else []


def in_worker_cgroup(pid: int) -> bool:
    with open(f"/proc/{pid}/cgroup") as f:
        return any(line.startswith("0::") and "/amore-worker" in line for line in f)


@pytest.mark.parametrize("containment", ["subreaper", "cgroup"])
def test_nothing_outlives_a_killed_or_crashed_worker(containment, make_context_dir, write_run,
                                                    run_processor):
    """A daemon the context code detaches (double fork, setsid) is gone soon after its worker
    is SIGKILLed (as by the out-of-memory killer) or crashes (segfault); after a normal run
    the per-run clean-up kills it, but never a process that is not the worker's. With
    ``subreaper`` the workers have no cgroup (an unprivileged user on a login node: their
    keeper does it alone); with ``cgroup`` each has one (root or a delegated cgroup v2), which
    also covers the keeper being killed together with its worker."""
    from backend.procs import Cgroup
    if containment == "cgroup":
        probe = Cgroup.create(f"amore-probe-{os.getpid()}")
        if probe is None:
            pytest.skip("this user may not create cgroups here (needs cgroup v2, as root or "
                        "delegated)")
        probe.remove()
    ctx = make_context_dir(code=detaching_context(), config="[processing]\njobs = 1\n"
                                                          "run_timeout = 120\n")
    for r in range(1, 5):
        write_run(r, ntrains=5)
    db, pool, proc = run_processor(ctx, cgroups=containment == "cgroup")
    outsider = subprocess.Popen(["sleep", "605"], start_new_session=True)  # not the worker's

    def pid_file(name):
        p = ctx / name
        return int(p.read_text()) if p.exists() and p.read_text() else None

    def killed_from_outside(run, victims):
        """Process ``run``; once its daemon runs, SIGKILL ``victims(worker pid)``."""
        with ThreadPoolExecutor(1) as ex:
            fut = ex.submit(proc.process, PROPOSAL, run)
            worker = wait_for(lambda: pid_file(f"worker-{run}.pid"), 60,
                              what="the variable running")
            daemon = pid_file(f"daemon-{run}.pid")
            assert running(daemon)
            assert in_worker_cgroup(daemon) == (containment == "cgroup")
            for pid in victims(worker):
                os.kill(pid, signal.SIGKILL)
            return fut.result(60), daemon

    try:
        # The worker is SIGKILLed: the run fails saying so, its daemon is gone.
        out, daemon = killed_from_outside(1, lambda worker: [worker])
        assert out.status == "failed" and "SIGKILL" in out.message, out
        wait_for(lambda: not running(daemon), 10, 0.05, "the killed worker's daemon gone")

        # The worker segfaults: the same.
        out = proc.process(PROPOSAL, 2)
        daemon = pid_file("daemon-2.pid")
        assert out.status == "failed" and "SIGSEGV" in out.message, out
        wait_for(lambda: not running(daemon), 10, 0.05, "the crashed worker's daemon gone")

        # A normal run: the per-run clean-up kills the daemon, not the outsider.
        out = proc.process(PROPOSAL, 3)
        assert out.status == "done" and db.get_values(PROPOSAL, 3)["detached"].value == 3, out
        wait_for(lambda: not running(pid_file("daemon-3.pid")), 10, 0.05,
                 "the normal run's daemon gone")
        assert running(outsider.pid), "a process that is not the worker's was killed"

        if containment == "cgroup":
            # The worker and its keeper are killed at once: the cgroup still holds the daemon
            # and the pool kills it.
            keeper = pool.workers[0].pid
            out, daemon = killed_from_outside(4, lambda worker: [keeper, worker])
            assert out.status == "failed" and "SIGKILL" in out.message, out
            wait_for(lambda: not running(daemon), 10, 0.05,
                     "the daemon of a worker killed with its keeper gone")
            # ... and while idle: the next run takes a new worker (no cgroup is left behind,
            # checked below)
            out = proc.process(PROPOSAL, 3)  # a live, idle worker
            assert out.status == "done", out
            keeper = pool.workers[0].pid
            for p in [*psutil.Process(keeper).children(), psutil.Process(keeper)]:
                p.kill()
            wait_for(lambda: not pool.workers[0].alive(), 10, 0.05, "the idle worker killed")
            out = proc.process(PROPOSAL, 3)
            assert out.status == "done", out
        assert running(outsider.pid), "a process that is not the worker's was killed"
        pool.stop()
        assert not own_cgroups(), "cgroups left behind"
    finally:
        outsider.kill()
        outsider.wait()
