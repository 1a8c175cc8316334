"""Reprocess the 40-run benchmark proposal on Slurm against locally, in one run.

``amore-proto reprocess 1-40 --slurm`` on a one-node Slurm cluster on this machine (started here
as root with :mod:`backend.testing.slurmcluster`; ``--site`` uses the cluster ``SLURM_CONF`` or
the site's configuration names instead) against ``amore-proto reprocess 1-40 --local`` on the
same machine, with the shared 11-variable context file. Prints a table: submission time, time
to the last value in runs.sqlite (the command follows the jobs and stores their results), the
ratio Slurm / local, and the per-task overhead (a job's Python start-up and imports, and the
hand-over of its result to the database) from the jobs' own timings; plus the time to submit
1,000 runs (one sbatch per 1,000 tasks, held so nothing runs) and to record them.

    python benchmarks/slurm_reprocess.py [--runs 1-40] [--site] [--partition P] [--out FILE.json]

Targets (issue 9): per-task overhead <= 1 s; --slurm <= 2x --local for 40 runs on 2 cores;
submitting 1,000 runs <= 5 s.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import (BENCH_CONTEXT, PROPOSAL, REPO, bench_env, ensure_proposal, measure, med,
                    print_table, warm_page_cache, work_dir)

sys.path.insert(0, str(REPO))

TIMING = re.compile(r"from Slurm job (\S+) \((?:start-up ([\d.]+) s, )?run ([\d.]+) s, "
                    r"hand-over ([\d.]+) s\)")


def init_ctx(path: Path, env: dict, toml: str = "") -> Path:
    if path.exists():
        shutil.rmtree(path)
    subprocess.run([sys.executable, "-m", "amore.cli", "init", str(path), "--proposal",
                    str(PROPOSAL), "--context", str(BENCH_CONTEXT)], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    (path / "amore.toml").write_text(toml)
    return path


def check(ctx: Path, n: int) -> None:
    import sqlite3
    con = sqlite3.connect(ctx / "runs.sqlite")
    total, errors = con.execute(
        "SELECT COUNT(*), SUM(summary_type = 'error') FROM run_values").fetchone()
    assert total == n * 11 and not errors, (total, errors)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="1-40")
    ap.add_argument("--site", action="store_true",
                    help="use the Slurm cluster configured in the environment, not a local one")
    ap.add_argument("--partition", help="partition (default: the local cluster's)")
    ap.add_argument("--out", help="write all measurements to this JSON file")
    a = ap.parse_args()
    first, last = (int(x) for x in a.runs.split("-"))
    n = last - first + 1
    pdir = ensure_proposal(runs=a.runs)
    warm_page_cache(pdir)
    cluster = None
    extra = {}
    if not a.site:
        from backend.testing.slurmcluster import start_cluster
        cdir = work_dir() / "slurm-cluster"
        shutil.rmtree(cdir, ignore_errors=True)
        cluster = start_cluster(cdir)
        extra["SLURM_CONF"] = str(cluster.conf)
    env = bench_env(extra)
    partition = a.partition or (cluster.partition if cluster else None)
    cpus = cluster.cpus if cluster else os.cpu_count()
    slurm_toml = ("[slurm]\nenabled = true\n" + (f'partition = "{partition}"\n' if partition else "")
                  + f'time = "00:30:00"\nmax_concurrent = {cpus}\npoll_seconds = 0.2\n')
    try:
        base = work_dir() / "slurm_reprocess"
        # warm-up, untimed: page cache, Python byte code, and the cluster (the first job after
        # slurmd starts waits ~3 s for the node; a site's cluster has long been running)
        warm = init_ctx(base / "warm", env, slurm_toml)
        for where in ("--local", "--slurm"):
            subprocess.run([sys.executable, "-m", "amore.cli", "reprocess", "1", where, "-q",
                            "--dir", str(warm)], check=True, env=env, stdout=subprocess.DEVNULL)
        ctx_local = init_ctx(base / "local", env)
        m_local = measure([sys.executable, "-m", "amore.cli", "reprocess", a.runs, "--local",
                           "--quiet", "--dir", str(ctx_local)], env=env)
        check(ctx_local, n)
        ctx_slurm = init_ctx(base / "slurm", env, slurm_toml)
        m_slurm = measure([sys.executable, "-m", "amore.cli", "reprocess", a.runs, "--slurm",
                           "--quiet", "--verbose", "--dir", str(ctx_slurm)], env=env)
        check(ctx_slurm, n)
        out = m_slurm["output"]
        submit_s = float(re.search(r"Submission took ([\d.]+) s", out).group(1))
        timings = [m.groups() for m in TIMING.finditer(out)]
        assert len(timings) == n, f"{len(timings)} timing lines for {n} runs"
        startup = [float(t[1]) for t in timings if t[1] is not None]  # one per task
        handover = [float(t[3]) for t in timings]
        ntasks = len({t[0] for t in timings})
        overhead = [s + med(handover) for s in startup]
        # 1,000 runs: submission (held, so nothing runs) and recording them
        ctx_big = init_ctx(base / "big", env, slurm_toml + 'extra_args = ["--hold"]\n')
        os.environ.update(extra)
        from backend.config import load_config
        from backend.processing.slurm import SlurmExecutor
        from backend.store.writer import RunDB
        ex = SlurmExecutor(ctx_big, load_config(ctx_big), RunDB(ctx_big))
        t0 = time.perf_counter()
        jobs = ex.submit_reprocess(PROPOSAL, list(range(1, 1001)), ["n_trains"])
        big_submit = time.perf_counter() - t0
        t0 = time.perf_counter()
        ex.poll()
        big_record = time.perf_counter() - t0
        ex.cancel(jobs)
    finally:
        if cluster is not None:
            cluster.stop()
    ratio = m_slurm["wall_s"] / m_local["wall_s"]
    results = {"runs": n, "local_s": m_local["wall_s"], "slurm_s": m_slurm["wall_s"],
               "submit_s": submit_s, "startup_s": startup, "handover_s": handover, "tasks": ntasks,
               "submit_1000_s": big_submit, "record_1000_s": big_record, "cpus": cpus}
    print_table(f"Reprocess {n} runs x 300 trains, 11 variables: Slurm (one-node cluster, "
                f"{cpus} CPUs) vs local", ["measure", "value", "target", ""], [
                    [f"`reprocess {a.runs} --local` (all values in runs.sqlite)",
                     f"{m_local['wall_s']:.2f} s", "", ""],
                    [f"`reprocess {a.runs} --slurm` (all values in runs.sqlite)",
                     f"**{m_slurm['wall_s']:.2f} s**", "", ""],
                    ["ratio Slurm / local", f"{ratio:.2f}", "<= 2", "met" if ratio <= 2 else "MISSED"],
                    ["submission (sbatch + records)", f"{submit_s:.2f} s", "", ""],
                    ["tasks (runs per task)", f"{ntasks} ({n / ntasks:.1f})", "", ""],
                    ["per task: Python start-up + imports (median)", f"{med(startup):.2f} s", "", ""],
                    ["per task: result hand-over to the database (median)", f"{med(handover):.2f} s", "", ""],
                    ["per-task overhead (start-up + a result's hand-over, median)", f"**{med(overhead):.2f} s**",
                     "<= 1 s", "met" if med(overhead) <= 1 else "MISSED"],
                    ["per run: start-up shared by a task's runs + hand-over (median)",
                     f"{med(startup) * ntasks / n + med(handover):.2f} s", "", ""],
                    ["submit 1,000 runs (held array)", f"{big_submit:.2f} s", "<= 5 s",
                     "met" if big_submit <= 5 else "MISSED"],
                    ["record 1,000 submitted runs in runs.sqlite", f"{big_record:.2f} s", "", ""],
                ])
    dest = Path(a.out) if a.out else work_dir() / "slurm_reprocess" / "results.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
