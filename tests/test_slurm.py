"""Variables and reprocessing on Slurm, against a real one-node cluster (tests/slurm_cluster.py):
a cluster=True variable computed by a job while local variables appear first, jobs that end
badly, a backend restarted while jobs run, reprocess --slurm as a throttled array, jobs, cancel."""
import json
import os
import signal
import subprocess
import textwrap
import time

import psutil
import pytest

from backend.store.writer import RunDB
from tests.conftest import PROPOSAL, amore_cmd, wait_for
from tests.test_listener import FAST_WATCH, Backend


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
def backends():
    started = []

    def start(ctx):
        b = Backend(ctx)
        started.append(b)
        return b
    yield start
    for b in started:
        if b.proc.poll() is None:
            os.killpg(b.proc.pid, signal.SIGKILL)


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
    wait_for(lambda: "heavier" in values(ctx, 1), 60, what="Slurm values")
    v = values(ctx, 1)
    assert v["heavy"].value == 301  # computed inside the job
    assert v["heavier"].value == 302
    assert RunDB(ctx).get_run(PROPOSAL, 1)["status"] == "done"
    assert tasks(ctx)[0]["state"] == "COMPLETED" and tasks(ctx)[0]["done"] == 1
    from backend.ctxrunner.results import read_run_value
    assert read_run_value(ctx / "extracted_data" / f"p{PROPOSAL}_r1.h5", "heavy") == 301
    assert "AMORE Slurm job" in open(t["log_file"]).read()
    assert not list((ctx / "slurm" / "results").iterdir())  # handed over and ingested
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
