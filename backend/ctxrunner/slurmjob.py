"""What a Slurm job runs: ``<context_python> -m backend.ctxrunner.slurmjob SPEC.json``.

Submitted by :mod:`backend.processing.slurm`. The job spec (JSON, ``version`` 1) names the
context directory, proposal, runs (array task ``i`` computes ``runs[i*k:(i+1)*k]`` one after the
other, ``k`` = ``runs_per_task``), the variables (``names``; their inputs are computed too but not
reported), ``data`` and ``params``, and what a local worker's request carries besides:
``manual_columns`` (names) and ``run_inputs`` (run number as text -> ``{"facility_run",
"manual"}``, see :mod:`backend.ctxrunner.worker`), and ``processes_per_run`` (optional, default
1: how many processes a run may use, here at most the job's CPUs, :func:`job_cpus`; from the
second run of a task on, as in a local worker, see :mod:`backend.ctxrunner.forked`). The
facility's settings come from ``$AMORE_FACILITY`` as for a local worker.

The job never touches ``runs.sqlite`` (SQLite is not safe across hosts on a network file
system). It writes the run's HDF5 data (``extracted_data/``, as a local worker does) and its table
values as a small JSON file, ``slurm/results/p<proposal>_r<run>-<task>.json`` (``version`` 1,
``kind`` ``"amore.slurm-result"``, ``reply`` = the worker's reply: values as
:meth:`backend.vocab.StoredValue.to_json`; ``timings``: Unix times ``process_started``,
``main``, ``run_start``, ``run_end``). The backend, the single writer, ingests it.
Everything the job prints goes to its Slurm log. Exit status 0 when the run could be processed
(variables may still have failed: that is in their values), 1 otherwise. Processes the context
file starts are killed when the job ends, however it ends (:func:`backend.procs.keep_descendants`).
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

from backend.contextdir import ContextDir
from backend.files import write_json_atomic

SPEC_VERSION = 1
RESULT_VERSION = 1
RESULT_KIND = "amore.slurm-result"


def task_id() -> str:
    """This job's id as Slurm shows it: ``<array job>_<task>`` or ``<job>``."""
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID", f"local{os.getpid()}")


def result_path(context_dir, proposal: int | str, run: int, task: str) -> Path:
    """``slurm/results/p<proposal>_r<run>-<task>.json`` of a context directory."""
    return ContextDir(context_dir).slurm_results_dir / f"p{proposal}_r{run}-{task}.json"


def process_started() -> float | None:
    """Unix time this process started (Linux ``/proc``), to measure start-up; None elsewhere."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def job_cpus() -> int:
    """CPUs this job may use: what Slurm allocated (``$SLURM_CPUS_PER_TASK``, set with
    ``--cpus-per-task``, else ``$SLURM_JOB_CPUS_PER_NODE``, e.g. ``"2"`` or ``"2(x3)"``), at
    most the CPUs this process may run on; those CPUs alone outside Slurm."""
    import re
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    for var in ("SLURM_CPUS_PER_TASK", "SLURM_JOB_CPUS_PER_NODE"):
        if m := re.match(r"\d+", os.environ.get(var, "")):
            return max(1, min(n, int(m.group())))
    return max(1, n)


def main(argv=None) -> int:
    # Nothing the context file starts outlives the job, whatever Slurm's process tracking (with
    # proctrack/linuxproc or pgid a detached process would escape it), even if it crashes.
    from backend.procs import keep_descendants
    keep_descendants("Slurm job")
    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(argv[0]).read_text())
    if spec.get("version") != SPEC_VERSION:
        print(f"AMORE: job spec {argv[0]} has version {spec.get('version')!r}, "
              f"this AMORE reads {SPEC_VERSION}", flush=True)
        return 2
    index = int(os.environ.get("SLURM_ARRAY_TASK_ID") or 0)
    k = max(1, int(spec.get("runs_per_task", 1)))
    from backend.vocab import normalize_proposal
    proposal = normalize_proposal(spec["proposal"])
    runs = [int(r) for r in spec["runs"][index * k:(index + 1) * k]]
    task = task_id()
    names = spec.get("names")
    t0 = time.time()
    print(f"AMORE Slurm job {task} on {socket.gethostname()}: proposal {proposal} "
          f"run(s) {', '.join(map(str, runs))}, variables {', '.join(names) if names else 'all'}",
          flush=True)
    os.environ.setdefault("MPLBACKEND", "Agg")
    # Only the user's prints reach this log; the values go to the result files.
    # As in a local worker: damnit_ctx, damnit.context, ... are AMORE's in this process.
    from backend.ctxrunner.context import install_compat_modules
    install_compat_modules()
    from backend.ctxrunner.worker import Worker
    worker = Worker(Path(spec["context_dir"]), int(os.environ.get("AMORE_THUMBNAIL_PX", "150")),
                    int(os.environ.get("AMORE_SPARKLINE_POINTS", "100")))
    worker.facility_conf = json.loads(os.environ.get("AMORE_FACILITY") or "{}")
    mymdc_conf = json.loads(os.environ.pop("AMORE_MYMDC", None) or "{}")  # not for user code
    from backend.ctxrunner.mymdc import metadata_client
    worker.mymdc = metadata_client(mymdc_conf)
    # the imports a warm local worker has done before its first run
    import extra_data  # noqa: F401
    import h5py  # noqa: F401
    import xarray  # noqa: F401
    from backend.ctxrunner import results  # noqa: F401
    started = process_started()
    status = 0
    for run in runs:
        t_run = time.time()
        if len(runs) > 1:
            print(f"AMORE: run {run}", flush=True)
        try:
            req = {"op": "run", "proposal": proposal, "run": run,
                   "data": spec.get("data", "all"), "names": names, "only": names,
                   "params": spec.get("params") or {},
                   "manual_columns": spec.get("manual_columns"),
                   "split": min(int(spec.get("processes_per_run") or 1), job_cpus())}
            req.update((spec.get("run_inputs") or {}).get(str(run)) or {})
            reply = worker.run(req)
        except Exception as e:  # noqa: BLE001 - reported in the result, as a local worker would
            import traceback
            traceback.print_exc()
            reply = {"ok": False, "kind": "error", "error": f"{type(e).__name__}: {e}"}
        t_end = time.time()
        out = result_path(spec["context_dir"], proposal, run, task)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out, {"version": RESULT_VERSION, "kind": RESULT_KIND, "job": task,
                                "proposal": proposal, "run": run, "names": names,
                                "host": socket.gethostname(), "started": t0, "finished": t_end,
                                "timings": {"process_started": started, "main": t0,
                                            "run_start": t_run, "run_end": t_end},
                                "reply": reply})
        if reply.get("ok"):
            errors = [n for n, v in reply["values"].items() if v["summary_type"] == "error"]
            print(f"AMORE: run {run}: {len(reply['values'])} variable(s) in {t_end - t_run:.2f} s"
                  + (f"; failed: {', '.join(errors)}" if errors else ""), flush=True)
        else:
            print(f"AMORE: run {run} not processed: {reply.get('error')}", flush=True)
            status = 1
        started = None  # start-up is paid once per task
    return status


if __name__ == "__main__":
    sys.exit(main())
