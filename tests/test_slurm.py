"""Variables and reprocessing on Slurm, against a real one-node cluster (tests/slurm_cluster.py):
a cluster=True variable computed by a job while local variables appear first, jobs that end
badly, a backend restarted while jobs run, reprocess --slurm as a throttled array, jobs, cancel."""
import os
import re
import signal
import subprocess
import textwrap
import time

import psutil
import pytest

from backend.store.writer import RunDB
from tests.conftest import FAST_WATCH, PROPOSAL, amore_cmd, wait_for


def slurm_config(cluster, time_limit="00:10:00", max_concurrent=2, extra=""):
    return FAST_WATCH + textwrap.dedent(f"""
        [slurm]
        enabled = true
        partition = "{cluster.partition}"
        time = "{time_limit}"
        max_concurrent = {max_concurrent}
        poll_seconds = 0.3
        {extra}
        """)


CONTEXT = textwrap.dedent("""
    import os, time
    from amore.context import Variable

    @Variable(title="Trains")
    def n_trains(run):
        return len(run.train_ids)

    @Variable(title="Heavy", cluster=True)
    def heavy(run, n: "var#n_trains"):
        while os.path.exists("hold"):
            time.sleep(0.05)
        return n * 10 + int(os.environ.get("SLURM_JOB_ID") is not None)

    @Variable(title="Heavier")
    def heavier(run, h: "var#heavy"):
        return h + 1
""")


@pytest.fixture
def backends(backend):
    """``backends(ctx)`` starts a backend (tests/conftest.py's ``backend`` fixture: each
    one is killed at the end of the test)."""
    return backend


def values(ctx, run):
    return RunDB(ctx).get_values(PROPOSAL, run)


def tasks(ctx, **kw):
    return RunDB(ctx).slurm_tasks(**kw)


def job_pids(pattern):
    """PIDs of job processes (the context file run by a Slurm job) whose command line has ``pattern``."""
    return [p.pid for p in psutil.process_iter(["cmdline"])
            if "backend.ctxrunner.slurmjob" in " ".join(p.info["cmdline"] or [])
            and pattern in " ".join(p.info["cmdline"] or [])]


def test_cluster_variable_computed_by_a_slurm_job_after_local_values(
        slurm, make_context_dir, write_run, backends):
    ctx = make_context_dir(CONTEXT, config=slurm_config(slurm))
    (ctx / "hold").write_text("")
    b = backends(ctx)
    write_run(1, ntrains=30)
    # the local variable is there while the job is held; the row shows the job
    wait_for(lambda: "n_trains" in values(ctx, 1), 60, what="local value")
    v = values(ctx, 1)
    assert v["n_trains"].value == 30 and "heavy" not in v and "heavier" not in v
    t = wait_for(lambda: [t for t in tasks(ctx) if t["state"] == "RUNNING"], 60,
                 what="job running")[0]
    assert t["names"] == ["heavy", "heavier"] and t["run"] == 1 and t["node"] == slurm.node
    run = RunDB(ctx).get_run(PROPOSAL, 1)
    assert run["status"] == "processing"
    assert f"Slurm job {t['task_id']} running on {slurm.node}" == run["status_message"]
    name = slurm.run("squeue", "-h", "-j", t["job_id"], "-o", "%j").strip()
    assert name == f"amore-p{PROPOSAL}-r1"
    (ctx / "hold").unlink()
    wait_for(lambda: RunDB(ctx).get_run(PROPOSAL, 1)["status"] == "done", 60, what="Slurm values")
    v = values(ctx, 1)
    assert v["heavy"].value == 301  # computed inside the job
    assert v["heavier"].value == 302
    assert tasks(ctx)[0]["state"] == "COMPLETED" and tasks(ctx)[0]["done"] == 1
    from backend.ctxrunner.results import read_run_value
    assert read_run_value(ctx / "extracted_data" / f"p{PROPOSAL}_r1.h5", "heavy") == 301
    assert "AMORE Slurm job" in open(t["log_file"]).read()
    assert not list((ctx / "slurm" / "results").iterdir())  # handed over and ingested
    assert not list((ctx / "slurm" / "specs").iterdir())
    assert [p.name for p in (ctx / "slurm" / "jobs" / "done").iterdir()] == [f"{t['job_id']}.json"]
    assert b.stop() == 0


def test_slurm_disabled_computes_cluster_variables_locally_and_says_so(
        make_context_dir, write_run, backends):
    ctx = make_context_dir(CONTEXT, config=FAST_WATCH + "[slurm]\nenabled = false\n")
    b = backends(ctx)
    write_run(1, ntrains=20)
    wait_for(lambda: "heavier" in values(ctx, 1), 60, what="values")
    assert values(ctx, 1)["heavy"].value == 200
    write_run(2, ntrains=20)
    wait_for(lambda: "heavier" in values(ctx, 2), 60, what="values")
    b.stop()
    said = [line for line in b.log.read_text().splitlines() if "computed locally" in line]
    assert len(said) == 1 and "heavy, heavier" in said[0] and "disabled" in said[0]


def held_jobs(slurm, make_context_dir, write_run, backends, runs=(1, 2), extra=""):
    """A backend whose runs' Slurm jobs are held (``DIR/hold``), one job at a time (each asks
    for 5 GB of the node's 8), so the first runs and the others wait in the queue."""
    ctx = make_context_dir(CONTEXT, config=slurm_config(
        slurm, extra='extra_args = ["--mem=5000"]\n' + extra))
    (ctx / "hold").write_text("")
    b = backends(ctx)
    for r in runs:
        write_run(r, ntrains=10 + r)
    wait_for(lambda: len(tasks(ctx)) == len(runs)
             and {t["state"] for t in tasks(ctx)} == {"RUNNING", "PENDING"}, 90,
             what="one job running, the others queued")
    return ctx, b


def assert_slurm_error(ctx, run, state, names=("heavy", "heavier")):
    """Exactly ``names`` of ``run`` are errors naming the Slurm state and the log file; the local
    value is intact and the run is not left processing."""
    v = values(ctx, run)
    assert v["n_trains"].summary_type == "number"
    task = [t for t in tasks(ctx, run=run)][0]
    for n in names:
        assert v[n].summary_type == "error", (n, v[n])
        err = v[n].attributes["error"]
        assert f"ended {state}" in err and task["log_file"] in err, err
    row = RunDB(ctx).get_run(PROPOSAL, run)
    assert row["status"] == "done" and "variable(s) failed" in row["status_message"]
    # the event log says so too (amore-proto events, the GUI's event log)
    ev = [e for e in RunDB(ctx).events(run=run) if e["source"] == "slurm"]
    assert any(e["level"] == "error" and f"ended {state}" in e["message"]
               and task["task_id"] in e["message"] for e in ev), ev


def test_cancel_a_queued_and_a_running_job(slurm, make_context_dir, write_run, backends):
    ctx, b = held_jobs(slurm, make_context_dir, write_run, backends)
    by_state = {t["state"]: t for t in tasks(ctx)}
    queued, running = by_state["PENDING"], by_state["RUNNING"]
    out = subprocess.run(amore_cmd("jobs", "-d", ctx), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    lines = out.stdout.splitlines()
    assert lines[0].split()[:3] == ["JOB", "RUN", "STATE"]
    assert any(l.split()[:3] == [running["task_id"], str(running["run"]), "RUNNING"] for l in lines)
    assert any(l.split()[:3] == [queued["task_id"], str(queued["run"]), "PENDING"] for l in lines)
    p = subprocess.run(amore_cmd("cancel", queued["run"], "-d", ctx), capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0 and f"Cancelled {queued['task_id']}" in p.stdout, p.stdout + p.stderr
    wait_for(lambda: RunDB(ctx).get_run(PROPOSAL, queued["run"])["status"] == "done", 30,
             what="queued job handled")
    assert_slurm_error(ctx, queued["run"], "CANCELLED")
    assert tasks(ctx, run=running["run"])[0]["state"] == "RUNNING"
    p = subprocess.run(amore_cmd("cancel", "--job", running["task_id"], "-d", ctx),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    wait_for(lambda: RunDB(ctx).get_run(PROPOSAL, running["run"])["status"] == "done", 30,
             what="running job handled")
    assert_slurm_error(ctx, running["run"], "CANCELLED")
    assert not job_pids(str(ctx))  # the job's process is gone
    b.stop()


def test_job_whose_worker_is_killed(slurm, make_context_dir, write_run, backends):
    ctx = make_context_dir(CONTEXT, config=slurm_config(slurm))
    (ctx / "hold").write_text("")
    backends(ctx)
    write_run(1)
    wait_for(lambda: [t for t in tasks(ctx) if t["state"] == "RUNNING"], 60, what="job running")
    pids = wait_for(lambda: job_pids(str(ctx)), 30, what="job process")
    os.kill(pids[0], signal.SIGKILL)
    wait_for(lambda: RunDB(ctx).get_run(PROPOSAL, 1)["status"] == "done", 30, what="job handled")
    assert_slurm_error(ctx, 1, "FAILED")
    err = values(ctx, 1)["heavy"].attributes["error"]
    assert "0:9" in err  # killed by signal 9
    ev = [e for e in RunDB(ctx).events(run=1) if e["source"] == "slurm"]
    assert ev and "FAILED" in ev[0]["message"] and ev[0]["level"] == "error"


def test_nothing_a_slurm_job_starts_outlives_it(slurm, make_context_dir, write_run, backends):
    """A daemon the context code detaches in a Slurm job (double fork, setsid) is gone when
    the job ends, normally (run 3) or by a crash (run 2, segfault), though the test cluster
    follows a job's processes by their parents (``proctrack/linuxproc``, as some sites do),
    which loses such a daemon."""
    from tests.faults_helpers import detaching_context, gone
    ctx = make_context_dir(detaching_context(cluster=True), config=slurm_config(slurm))
    b = backends(ctx)
    for r in (2, 3):
        write_run(r, ntrains=5)
    for r in (2, 3):
        wait_for(lambda: (RunDB(ctx).get_run(PROPOSAL, r) or {}).get("status") == "done"
                 and "detached" in values(ctx, r), 120, 0.2, f"run {r}'s job handled")
    assert values(ctx, 3)["detached"].value == 3
    assert_slurm_error(ctx, 2, "FAILED", names=("detached",))
    for r in (2, 3):
        daemon = int((ctx / f"daemon-{r}.pid").read_text())
        wait_for(lambda: gone(daemon), 10, 0.05, f"the daemon of run {r}'s job gone")
    assert b.stop() == 0


def test_job_on_a_node_that_fails(slurm, make_context_dir, write_run, backends):
    """The job's node goes down while it runs (``scontrol update state=down``, as an admin or
    Slurm's health check does): the job ends NODE_FAIL (not requeued, ``--no-requeue``) and
    exactly its variables say so."""
    ctx = make_context_dir(CONTEXT, config=slurm_config(slurm, extra='extra_args = ["--no-requeue"]'))
    (ctx / "hold").write_text("")
    backends(ctx)
    write_run(1)
    wait_for(lambda: [t for t in tasks(ctx) if t["state"] == "RUNNING"], 60, what="job running")
    try:
        slurm.run("scontrol", "update", f"nodename={slurm.node}", "state=down",
                  "reason=amore-test")
        wait_for(lambda: RunDB(ctx).get_run(PROPOSAL, 1)["status"] == "done", 60,
                 what="job handled")
    finally:
        slurm.run("scontrol", "update", f"nodename={slurm.node}", "state=resume", check=False)
        wait_for(lambda: "idle" in slurm.run("sinfo", "-h", "-o", "%T", check=False), 60,
                 what="node back")
    assert_slurm_error(ctx, 1, "NODE_FAIL")


def test_backend_restarted_while_jobs_run(slurm, make_context_dir, write_run, backends):
    ctx, b = held_jobs(slurm, make_context_dir, write_run, backends)
    by_state = {t["state"]: t for t in tasks(ctx)}
    queued, running = by_state["PENDING"], by_state["RUNNING"]
    assert b.stop() == 0
    # while the backend is down: the running job finishes, the queued one is cancelled by
    # someone else (not through AMORE)
    slurm.run("scancel", queued["task_id"])
    (ctx / "hold").unlink()
    wait_for(lambda: not slurm.jobs(), 60, what="jobs ended")
    assert RunDB(ctx).get_run(PROPOSAL, running["run"])["status"] == "processing"
    b2 = backends(ctx)
    wait_for(lambda: all(t["done"] for t in tasks(ctx))
             and all(r["status"] == "done" for r in RunDB(ctx).runs()), 30, what="jobs reconciled")
    v = values(ctx, running["run"])
    assert v["heavy"].value == (10 + running["run"]) * 10 + 1 and v["heavier"].value == v["heavy"].value + 1
    assert RunDB(ctx).get_run(PROPOSAL, running["run"])["status"] == "done"
    assert_slurm_error(ctx, queued["run"], "CANCELLED")
    assert len(tasks(ctx)) == 2  # nothing resubmitted
    assert [r["status"] for r in RunDB(ctx).runs()] == ["done", "done"]
    assert b2.stop() == 0


def test_job_exceeding_its_time_limit(slurm, make_context_dir, write_run, backends):
    ctx = make_context_dir(CONTEXT, config=slurm_config(slurm, time_limit="00:01:00"))
    (ctx / "hold").write_text("")
    backends(ctx)
    write_run(1)
    wait_for(lambda: [t for t in tasks(ctx) if t["state"] == "RUNNING"], 60, what="job running")
    wait_for(lambda: RunDB(ctx).get_run(PROPOSAL, 1)["status"] == "done", 180, interval=1,
             what="job past its time limit")
    assert_slurm_error(ctx, 1, "TIMEOUT")
    assert "CANCELLED" in open(tasks(ctx)[0]["log_file"]).read()  # slurmstepd says why


FAST_CONTEXT = textwrap.dedent("""
    import os
    from amore.context import Variable

    @Variable(title="Trains")
    def n_trains(run):
        return len(run.train_ids)

    @Variable(title="Heavy", cluster=True)
    def heavy(run, n: "var#n_trains"):
        return n * 10 + int(os.environ.get("SLURM_JOB_ID") is not None)
""")


def test_reprocess_20_runs_on_slurm_as_one_throttled_array(slurm, make_context_dir, write_run):
    ctx = make_context_dir(FAST_CONTEXT, config=slurm_config(slurm, max_concurrent=2))
    for r in range(1, 21):
        write_run(r, ntrains=r)
    proc = subprocess.Popen(amore_cmd("reprocess", "all", "--slurm", "-d", ctx),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    most_running, throttle = 0, None
    while proc.poll() is None:
        running = slurm.run("squeue", "-h", "-r", "-t", "RUNNING", "-o", "%i").split()
        most_running = max(most_running, len(running))
        if throttle is None:
            info = slurm.run("scontrol", "-o", "show", "job", check=False)
            throttle = next(iter(re.findall(r"ArrayTaskThrottle=(\d+)", info)), None)
        time.sleep(0.2)
    out, err = proc.communicate()
    assert proc.returncode == 0, out + err
    submitted = re.findall(r"Submitted Slurm array job (\d+): 20 run\(s\)", out)
    assert len(submitted) == 1, out
    assert "Reprocessed 20/20 runs on Slurm" in out
    assert throttle == "2" and most_running <= 2
    rows = tasks(ctx)
    assert len(rows) == 20 and {r["job_id"] for r in rows} == set(submitted)
    # 5 runs per task ("auto": about 2 tasks per allowed concurrent one), 4 tasks
    assert "in 4 task(s) of up to 5 run(s)" in out
    assert len({r["task_id"] for r in rows}) == 4
    assert all(r["state"] == "COMPLETED" and r["done"] for r in rows)
    for r in range(1, 21):
        v = values(ctx, r)
        assert v["n_trains"].value == r and v["heavy"].value == r * 10 + 1
        assert RunDB(ctx).get_run(PROPOSAL, r)["status"] == "done"


def test_reprocess_larger_than_one_array_chains_arrays(slurm, make_context_dir, write_run):
    ctx = make_context_dir(CONTEXT, config=slurm_config(
        slurm, max_concurrent=2, extra="max_array_size = 2"))
    (ctx / "hold").write_text("")
    for r in (1, 2, 3):
        write_run(r, ntrains=r)
    proc = subprocess.Popen(amore_cmd("reprocess", "1-3", "--slurm", "--var", "heavy", "-d", ctx),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    jobs = wait_for(lambda: sorted((p.stem for p in (ctx / "slurm" / "jobs").glob("*.json")), key=int)
                    if len(list((ctx / "slurm" / "jobs").glob("*.json"))) == 2 else None,
                    60, what="two array jobs")
    info = slurm.run("scontrol", "-o", "show", "job", jobs[1])
    assert f"Dependency=afterany:{jobs[0]}" in info and "ArrayTaskId=0" in info
    (ctx / "hold").unlink()
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, out + err
    assert re.findall(r"Submitted Slurm array job (\d+)", out) == jobs
    assert f"after job {jobs[0]}" in out
    rows = {r["run"]: r for r in tasks(ctx)}
    assert rows[3]["job_id"] == jobs[1] and rows[1]["job_id"] == jobs[0]
    assert all(r["names"] == ["heavy"] for r in rows.values())
    assert "n_trains" not in values(ctx, 1) and values(ctx, 3)["heavy"].value == 31


SHARED_JOB_CONTEXT = textwrap.dedent("""
    import os, time
    from amore.context import Variable

    @Variable(title="Azimuthal integration", cluster=True)
    def azint(run):
        time.sleep(0.3)
        return os.getpid()

    @Variable(title="Peak finding", cluster=True)
    def peaks(run):
        time.sleep(0.3)
        return os.getpid()
""")


def test_a_job_with_two_cpus_shares_its_runs_between_two_processes(slurm, make_context_dir,
                                                                    write_run):
    # one task computes both runs, one after the other; the second run is shared, as in a
    # local worker, between the job's process and a forked copy on its second CPU (the test
    # cluster's node has the machine's CPUs: 2 or more here and in CI)
    ctx = make_context_dir(SHARED_JOB_CONTEXT, config=slurm_config(
        slurm, extra='runs_per_task = 2\nextra_args = ["--cpus-per-task=2"]'))
    for r in (1, 2):
        write_run(r, ntrains=5)
    p = subprocess.run(amore_cmd("reprocess", "1-2", "--slurm", "-d", ctx),
                       capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout + p.stderr
    assert len({r["task_id"] for r in tasks(ctx)}) == 1
    first, second = values(ctx, 1), values(ctx, 2)
    assert first["azint"].value == first["peaks"].value       # no timings yet: one process
    assert second["azint"].value != second["peaks"].value     # two processes


def test_follow_stops_on_ctrl_c_jobs_go_on_and_cancel_all_records_them(
        slurm, make_context_dir, write_run):
    ctx = make_context_dir(CONTEXT, config=slurm_config(slurm, max_concurrent=1))
    (ctx / "hold").write_text("")
    for r in (1, 2, 3):
        write_run(r)
    # Ctrl+C in a terminal: SIGINT at its default disposition in the command (a test run
    # started in the background of a non-interactive shell would pass it on ignored)
    proc = subprocess.Popen(amore_cmd("reprocess", "all", "--slurm", "-d", ctx),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    wait_for(lambda: len(slurm.run("squeue", "-h", "-r", "-t", "RUNNING", "-o", "%i").split()) == 1,
             60, what="first task running")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)   # generous: the whole suite loads the machine
    assert proc.returncode == 130 and "Stopped following" in err, (proc.returncode, out, err)
    assert len(slurm.jobs()) == 2  # the jobs go on (2 tasks: runs 1-2 and run 3)
    p = subprocess.run(amore_cmd("cancel", "--all", "-d", ctx), capture_output=True, text=True,
                       timeout=90)
    assert p.returncode == 0 and "Cancelled" in p.stdout, p.stdout + p.stderr
    assert not slurm.jobs()
    for r in (1, 2, 3):  # the running task's two runs and the queued task's one
        v = values(ctx, r)
        for n in ("n_trains", "heavy", "heavier"):
            assert v[n].summary_type == "error" and "ended CANCELLED" in v[n].attributes["error"]
        assert RunDB(ctx).get_run(PROPOSAL, r)["status"] == "done"
    p = subprocess.run(amore_cmd("jobs", "-d", ctx), capture_output=True, text=True, timeout=60)
    assert p.stdout.count("CANCELLED") == 3


def test_reprocess_slurm_without_slurm_says_so(make_context_dir, write_run):
    ctx = make_context_dir(FAST_CONTEXT, config="[slurm]\nenabled = false\n")
    write_run(1)
    p = subprocess.run(amore_cmd("reprocess", "1", "--slurm", "-d", ctx), capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 1 and "Slurm not available" in p.stderr and "disabled" in p.stderr
    p = subprocess.run(amore_cmd("reprocess", "1", "--local", "-d", ctx, "-q"),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and values(ctx, 1)["heavy"].value == 500


def test_reprocess_slurm_refused_on_a_closed_proposal(make_context_dir, write_run):
    ctx = make_context_dir(FAST_CONTEXT, config="[slurm]\nenabled = true\n")
    write_run(1)
    p = subprocess.run(amore_cmd("close", "-d", ctx), capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    p = subprocess.run(amore_cmd("reprocess", "1", "--slurm", "-d", ctx), capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 1 and "closed" in p.stderr and "amore-proto reopen" in p.stderr
    assert not (ctx / "slurm" / "jobs").exists() and values(ctx, 1) == {}


MANUAL_CONTEXT = textwrap.dedent("""
    import os
    from amore.context import Variable

    @Variable(title="Scaled", cluster=True)
    def scaled(run, d: "var#distance"):
        print("scaling", d, "in", "job" if os.environ.get("SLURM_JOB_ID") else "here")
        return d * 2
""")


def test_slurm_job_gets_the_runs_manual_values_and_its_log_is_the_runs_log(
        slurm, make_context_dir, write_run):
    ctx = make_context_dir(MANUAL_CONTEXT, config=slurm_config(slurm))
    write_run(1)
    for args in (("column", "add", "distance", "--type", "number"),
                 ("reprocess", "1", "--local", "-q"),  # the run is in the table (no distance yet)
                 ("set", "1", "distance", "3")):
        p = subprocess.run(amore_cmd(*args, "-d", ctx), capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
    p = subprocess.run(amore_cmd("reprocess", "1", "--slurm", "-d", ctx, "-q"),
                       capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout + p.stderr
    assert values(ctx, 1)["scaled"].value == 6
    task = tasks(ctx, run=1)[0]
    assert task["state"] == "COMPLETED" and task["names"] == ["scaled"]
    p = subprocess.run(amore_cmd("logs", "1", "-d", ctx), capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    assert "scaling 3" in p.stdout and "in job" in p.stdout and task["task_id"] in p.stdout


def test_job_running_out_of_memory(slurm, make_context_dir, write_run, backends):
    code = CONTEXT.replace(
        '    return n * 10 + int(os.environ.get("SLURM_JOB_ID") is not None)',
        "    import numpy as np\n"
        "    big = np.ones((1500, 1000, 1000), dtype=np.uint8)  # 1.5 GB, over --mem=600\n"
        "    time.sleep(30)\n"
        "    return int(big[0, 0, 0])")
    assert "1.5 GB" in code
    ctx = make_context_dir(code, config=slurm_config(slurm, extra='extra_args = ["--mem=600"]\n'))
    backends(ctx)
    write_run(1)
    wait_for(lambda: [t for t in tasks(ctx) if t["done"]]
             and RunDB(ctx).get_run(PROPOSAL, 1)["status"] == "done",
             90, interval=0.5, what="job over its memory handled")
    assert_slurm_error(ctx, 1, "OUT_OF_MEMORY")


def test_job_says_on_the_broker_that_it_finished(slurm, make_context_dir, write_run, backends,
                                                kafka_broker, monkeypatch):
    from backend.config import load_config
    from tests.kafka_broker import create_topics
    monkeypatch.setenv("AMORE_BROKER", kafka_broker)
    # the backend polls only every 2 minutes and inotify is off: the job's message must bring
    # its values
    config = slurm_config(slurm).replace("poll_seconds = 0.3",
                                         "poll_seconds = 120\nwatch_results = false")
    ctx = make_context_dir(CONTEXT, config=config.replace("[watch]\n", "[watch]\nenabled = true\n", 1))
    cfg = load_config(ctx)
    create_topics(kafka_broker, cfg["kafka"]["event_topics"] + [cfg.update_topic(RunDB(ctx).db_id)])
    b = backends(ctx)
    write_run(1)
    wait_for(lambda: tasks(ctx), 60, what="job submitted")
    # within 60 s, half the backend's 2-minute poll: the job's message brought them
    wait_for(lambda: RunDB(ctx).get_run(PROPOSAL, 1)["status"] == "done", 60, what="values")
    v = values(ctx, 1)
    assert v["heavy"].value == v["n_trains"].value * 10 + 1 \
        and v["heavier"].value == v["heavy"].value + 1, v
    job = tasks(ctx)[0]["task_id"]
    assert f"Slurm job {job} says it finished" in b.log.read_text()
    assert b.stop() == 0


def test_result_file_is_noticed_at_once_without_a_broker(slurm, make_context_dir, write_run,
                                                         backends):
    """No broker and a 2-minute poll: inotify sees the job's result file (the job ran on this
    host) and the values are in the table within seconds."""
    config = slurm_config(slurm).replace("poll_seconds = 0.3", "poll_seconds = 120")
    ctx = make_context_dir(CONTEXT, config=config)
    b = backends(ctx)
    write_run(1)
    wait_for(lambda: tasks(ctx), 60, what="job submitted")
    wait_for(lambda: RunDB(ctx).get_run(PROPOSAL, 1)["status"] == "done", 60, what="values")
    v = values(ctx, 1)
    assert v["heavy"].value == v["n_trains"].value * 10 + 1
    assert b.stop() == 0


def test_every_variable_on_slurm_and_the_data_check_at_once(slurm, make_context_dir, write_run,
                                                             backends):
    """``[processing] slurm = "all"``: nothing is computed locally, the run's values come from
    its job, and its data check (which reads the files, not the values) is done at once."""
    from backend.store.trust import DATA_CHECK
    ctx = make_context_dir(FAST_CONTEXT, config=slurm_config(slurm) + '[processing]\nslurm = "all"\n')
    b = backends(ctx)
    write_run(1)
    wait_for(lambda: (RunDB(ctx).get_run(PROPOSAL, 1) or {}).get("status") == "done", 60,
             what="values")
    v = values(ctx, 1)
    assert v["n_trains"].value == 50 and v["heavy"].value == 501  # both from the job
    assert set(tasks(ctx)[0]["names"]) == {"n_trains", "heavy"}
    wait_for(lambda: DATA_CHECK in values(ctx, 1), 30, what="data check")
    assert values(ctx, 1)[DATA_CHECK].summary_type != "error"
    assert b.stop() == 0


def test_job_slurm_forgot_while_nobody_followed_is_reported(slurm, make_context_dir, write_run):
    """A job recorded as submitted that Slurm no longer knows (it ended long before anyone
    looked, past MinJobAge, without a result): its variables become errors, nothing stays
    processing. ``amore-proto jobs`` without a backend brings the table up to date."""
    from backend.files import write_json_atomic
    ctx = make_context_dir(FAST_CONTEXT, config=slurm_config(slurm))
    write_run(1)
    jobs = ctx / "slurm" / "jobs"
    jobs.mkdir(parents=True)
    write_json_atomic(jobs / "987654.json", {
        "version": 1, "kind": "amore.slurm-job", "job_id": "987654", "array": False,
        "name": f"amore-p{PROPOSAL}-r1", "proposal": PROPOSAL, "runs": [1], "names": ["heavy"],
        "runs_per_task": 1, "data": "raw", "origin": "backend", "submitted_at": time.time() - 86400,
        "log_pattern": str(ctx / "slurm" / "logs" / "p2832_r0001-%j.out"), "spec": ""})
    p = subprocess.run(amore_cmd("jobs", "-d", ctx), capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "987654" in p.stdout and "VANISHED" in p.stdout
    err = values(ctx, 1)["heavy"].attributes["error"]
    assert "ended VANISHED" in err and "p2832_r0001-987654.out" in err
    assert RunDB(ctx).get_run(PROPOSAL, 1)["status"] == "done"
    assert (jobs / "done" / "987654.json").exists()


def test_jobs_that_ended_badly_after_slurm_forgot_them_are_reconciled_from_sacct(
        slurm, make_context_dir, write_run, backends):
    """While the backend is down, one job fails (its process is killed) and the queued one is
    cancelled by someone else; by the time anyone looks slurmctld has forgotten both (past
    MinJobAge). ``amore-proto jobs`` without a backend gets their real final state from the
    accounting database (``sacct``): the variables become errors naming FAILED/CANCELLED and
    the log file, not VANISHED."""
    if not slurm.accounting:
        pytest.skip(f"the test cluster has no accounting: {slurm.accounting_reason}")
    from backend.processing.slurm import SlurmCommands
    ctx, b = held_jobs(slurm, make_context_dir, write_run, backends)
    by_state = {t["state"]: t for t in tasks(ctx)}
    queued, running = by_state["PENDING"], by_state["RUNNING"]
    assert b.stop() == 0
    slurm.run("scancel", queued["task_id"])
    pids = wait_for(lambda: job_pids(str(ctx)), 30, what="job process")
    os.kill(pids[0], signal.SIGKILL)
    wait_for(lambda: not slurm.jobs(), 60, what="jobs ended")
    ids = [running["task_id"], queued["task_id"]]

    def only_accounting_knows():  # slurmctld forgot them, sacct has their end
        forgotten = all(subprocess.run(["scontrol", "show", "job", i], capture_output=True,
                                       text=True).returncode for i in ids)
        st = SlurmCommands().states(ids)
        return forgotten and len(st) == 2 and not any(s.active for s in st.values())
    wait_for(only_accounting_knows, 60, interval=0.5,
             what="slurmctld forgetting the jobs (MinJobAge), sacct having their end")
    assert RunDB(ctx).get_run(PROPOSAL, running["run"])["status"] == "processing"
    # only the accounting database knows them now: the job-completion file (the fallback
    # after sacct) is put aside while AMORE looks
    aside = slurm.jobcomp.with_name("jobcomp.aside")
    slurm.jobcomp.rename(aside)
    try:
        p = subprocess.run(amore_cmd("jobs", "-d", ctx), capture_output=True, text=True,
                           timeout=60)
    finally:
        aside.rename(slurm.jobcomp)
    assert p.returncode == 0, p.stderr
    lines = [line.split()[:3] for line in p.stdout.splitlines()]
    assert [running["task_id"], str(running["run"]), "FAILED"] in lines, p.stdout
    assert [queued["task_id"], str(queued["run"]), "CANCELLED"] in lines, p.stdout
    assert all(t["done"] for t in tasks(ctx))
    assert_slurm_error(ctx, running["run"], "FAILED")
    assert "0:9" in values(ctx, running["run"])["heavy"].attributes["error"]  # killed by signal 9
    assert_slurm_error(ctx, queued["run"], "CANCELLED")
    assert [r["status"] for r in RunDB(ctx).runs()] == ["done", "done"]
    states = SlurmCommands().states(ids)  # and it was sacct that said so
    assert {i: (s.state, s.source) for i, s in states.items()} == {
        running["task_id"]: ("FAILED", "sacct"), queued["task_id"]: ("CANCELLED", "sacct")}
