"""Slurm from the command line: ``amore-proto reprocess RUNS --slurm`` (via
:func:`reprocess_on_slurm`), ``amore-proto jobs`` and ``amore-proto cancel``.

Jobs never write the database. Their results are stored by the running backend; where no
backend runs on the context directory, by these commands while they follow the jobs (the
next one, or the backend's next start, picks up what finished in between).
"""
from __future__ import annotations

import logging
import sys
import threading
import time

from amore.cli.common import context_dir

log = logging.getLogger("amore")


def _backend_runs(d) -> bool:
    """Whether a backend runs on the directory (then it, the single writer, stores the jobs'
    results): its lock is held here, or another host's status record is fresh
    (:func:`backend.service.status.reported_recently`, the rule ``backend status`` uses)."""
    from backend.service.lock import lock_held
    from backend.service.status import (backend_settings, is_this_host, read_status,
                                        reported_recently)
    if lock_held(d):
        return True
    rec = read_status(d)
    if not rec or is_this_host(rec):
        return False
    return reported_recently(rec, backend_settings(d)["heartbeat_seconds"])


def _executor(d, config, db, publish=None):
    from backend.processing.slurm import SlurmExecutor
    return SlurmExecutor(d, config, db, publish=publish)


def _open(a):
    from backend.config import load_config
    from backend.service.logs import setup_logging
    from backend.store.writer import RunDB, StorageError
    d = context_dir(a.dir)
    setup_logging(None, logging.INFO if getattr(a, "verbose", False) else logging.WARNING)
    try:
        db = RunDB(d)
    except StorageError as e:
        print(f"amore-proto {a.command}: {e}", file=sys.stderr)
        return None
    return d, load_config(d), db


def _fmt_elapsed(row, now=None) -> str:
    now = time.time() if now is None else now
    if not row["started_at"]:
        return "-"
    s = int((row["ended_at"] or now) - row["started_at"])
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def reprocess_on_slurm(a, d, config, db, runs: list[int], names: list[str], params: dict,
                       publish=None, groups: list[tuple[list[int], list[str]]] | None = None,
                       reuse: dict[int, list[str]] | None = None) -> int:
    """Submit ``runs`` as array jobs (``[slurm] max_concurrent`` at once, at most
    ``max_array_size`` tasks per array, chained with ``afterany``), print the job ids and
    follow them with a progress bar until every run is handled; Ctrl+C stops following, not
    the jobs. ``groups``: ``(runs, names)`` computing different variables of different runs
    (``reprocess all``: the stale ones, :func:`backend.processing.selective.groups`), one
    submission each; default: ``names`` of every run. ``reuse``: run -> inputs the jobs read
    back instead of computing them (up to date). Returns the exit status (1 if any task
    failed)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from backend.processing.slurm import SlurmError
    ex = _executor(d, config, db, publish)
    reason = ex.unavailable_reason()
    if reason:
        print(f"amore-proto reprocess --slurm: Slurm not available: {reason}", file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    jobs: list[str] = []
    for g_runs, g_names in groups or [(runs, names)]:
        try:
            g_jobs = ex.submit_reprocess(db.proposal, g_runs, g_names, params, reuse=reuse)
        except SlurmError as e:
            print(f"amore-proto reprocess --slurm: {e}", file=sys.stderr)
            if not jobs:
                return 1
            break
        k = ex.runs_per_task(len(g_runs))
        size = max(1, int(config["slurm"].get("max_array_size", 1000))) * k
        for i, job in enumerate(g_jobs):
            chunk = g_runs[i * size:(i + 1) * size]
            print(f"Submitted Slurm array job {job}: {len(chunk)} run(s) ({chunk[0]}-{chunk[-1]}) "
                  f"in {-(-len(chunk) // k)} task(s) of up to {k} run(s), "
                  f"at most {config['slurm']['max_concurrent']} at once"
                  + (f", after job {g_jobs[i - 1]}" if i else ""), flush=True)
        print(f"Submission took {time.perf_counter() - t0:.2f} s; variables: {', '.join(g_names)}",
              flush=True)
        jobs += g_jobs
    ingest = not _backend_runs(d)
    period = float(config["slurm"].get("poll_seconds", 5.0))
    total = len(runs)
    reported: set[str] = set()
    wake = threading.Event()  # a result file appeared: look now, not at the next period
    watch = ex.watch_results(wake.set) if ingest else None
    try:
        with Progress(TextColumn("[bold]Slurm"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[last]}"), TimeElapsedColumn(),
                      disable=a.quiet) as progress:
            bar = progress.add_task("runs", total=total, last="")
            while True:
                if ingest:
                    ex.poll()
                rows = [r for j in jobs for r in db.slurm_tasks(job_id=j)]
                for r in rows:
                    if r["done"] and r["task_id"] not in reported:
                        reported.add(r["task_id"])
                        log.info("Run %d: Slurm job %s %s", r["run"], r["task_id"], r["state"])
                done = sum(r["done"] for r in rows)
                running = sum(r["state"] == "RUNNING" and not r["done"] for r in rows)
                progress.update(bar, completed=done, last=f"{running} running")
                if rows and done >= total:
                    break
                wake.wait(period)
                wake.clear()
    except KeyboardInterrupt:
        print(f"\nStopped following; job(s) {', '.join(jobs)} keep running "
              f"('amore-proto jobs' shows them, 'amore-proto cancel --job ID' stops them)."
              + ("" if not ingest else " Their results are stored when the backend starts "
                 "or 'amore-proto jobs' runs."), file=sys.stderr)
        return 130
    finally:
        if watch is not None:
            watch.stop()
    rows = [r for j in jobs for r in db.slurm_tasks(job_id=j)]
    bad = [r for r in rows if r["state"] != "COMPLETED"]
    print(f"Reprocessed {total - len(bad)}/{total} runs on Slurm in "
          f"{time.perf_counter() - t0:.1f} s")
    for r in sorted(bad, key=lambda r: r["run"]):
        print(f"  run {r['run']}: {r['message']}", file=sys.stderr)
    return 1 if bad else 0


def cmd_jobs(a) -> int:
    opened = _open(a)
    if opened is None:
        return 1
    d, config, db = opened
    ex = _executor(d, config, db)
    if not _backend_runs(d):
        ex.poll()  # no backend: bring the table up to date ourselves
    rows = db.slurm_tasks(limit=None if a.all else max(a.n, len(db.slurm_tasks(done=False))))
    if not a.all:
        rows = [r for r in rows if not r["done"]] + [r for r in rows if r["done"]][:a.n]
    known = {r["job_id"] for r in rows}
    for rec in ex.records():  # submitted, not yet seen by the backend
        if rec["job_id"] not in known:
            rows += [dict(r, node=None, started_at=None, ended_at=None)
                     for r in ex.record_tasks(rec)]
    if not rows:
        print("No Slurm jobs for this context directory.")
        return 0
    header = ("JOB", "RUN", "STATE", "NODE", "ELAPSED", "VARIABLES", "LOG")
    table = [(r["task_id"], str(r["run"]), r["state"], r["node"] or "-", _fmt_elapsed(r),
              ",".join(r["names"]), r["log_file"] or "-") for r in rows]
    widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(header)]
    for line in [header] + table:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())
    return 0


def cmd_cancel(a) -> int:
    from backend.processing.slurm import SlurmError
    opened = _open(a)
    if opened is None:
        return 1
    d, config, db = opened
    ex = _executor(d, config, db)
    ingest = not _backend_runs(d)
    if ingest:
        ex.poll()
    active = db.slurm_tasks(done=False)
    known = {r["task_id"] for r in active}
    for rec in ex.records():
        active += [r for r in ex.record_tasks(rec) if r["task_id"] not in known]
    if a.job:
        targets = [j for j in a.job]
        rows = [r for r in active if r["task_id"] in targets or r["job_id"] in targets]
    elif a.all:
        rows = active
        targets = sorted({r["task_id"] for r in rows})
    else:
        try:
            wanted = {int(r) for r in a.runs}
        except ValueError:
            print(f"amore-proto cancel: runs must be numbers: {a.runs}", file=sys.stderr)
            return 2
        targets = sorted({r["task_id"] for r in active if r["run"] in wanted})
        rows = [r for r in active if r["task_id"] in targets]  # a task may compute more runs
    if not targets:
        print("No unfinished Slurm job to cancel.")
        return 0
    try:
        ex.cancel(targets)
    except SlurmError as e:
        print(f"amore-proto cancel: {e}", file=sys.stderr)
        return 1
    print(f"Cancelled {', '.join(targets)}"
          + (f" (runs {', '.join(str(r) for r in sorted({r['run'] for r in rows}))})" if rows else ""))
    if ingest:  # no backend: record the outcome ourselves
        deadline = time.monotonic() + 30
        ids = {r["task_id"] for r in rows}
        while time.monotonic() < deadline:
            ex.poll()
            if not ids & {r["task_id"] for r in db.slurm_tasks(done=False)}:
                break
            time.sleep(0.5)
    return 0


def register(sub) -> None:
    """Add ``jobs`` and ``cancel`` to the ``amore-proto`` sub-parsers (``reprocess --slurm``
    is an option of ``reprocess``)."""
    s = sub.add_parser("jobs", help="list AMORE's Slurm jobs of a context directory")
    s.add_argument("--dir", "-d")
    s.add_argument("-n", type=int, default=20, help="finished jobs to show (default 20)")
    s.add_argument("--all", action="store_true", help="every job ever submitted")
    s.set_defaults(func=cmd_jobs)
    s = sub.add_parser("cancel", help="cancel AMORE's Slurm jobs (scancel)")
    s.add_argument("runs", nargs="*", help="run numbers whose jobs to cancel")
    s.add_argument("--job", action="append", help="job id (or array job id) to cancel")
    s.add_argument("--all", action="store_true", help="every unfinished job of this directory")
    s.add_argument("--dir", "-d")
    s.set_defaults(func=cmd_cancel)
