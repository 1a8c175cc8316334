"""B5: the cost of trusting the table, on the shared benchmark proposal.

1. Checksum throughput: AMORE's BLAKE2b (``backend.integrity.checksums.file_digest``, what the
   backend runs after each run) against ``b2sum`` on the same files (every file of the chosen
   runs, raw and proc), alternately in one run, page cache warm. Target: >= 0.8x b2sum.
2. Data check cost: ``check_euxfel_run`` per run against the time the backend takes to process
   that run (the shared 11-variable context file, one warm worker). Target: <= 10 %.

    python benchmarks/b5_trust.py [--runs 1-5] [--repeats 3] [--out FILE.json]
        [--proposal-runs 1-40]   (the shared proposal; generated once, see common.py)
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import (BENCH_CONTEXT, PROPOSAL, bench_env, ensure_proposal, med, print_table,  # noqa: E402
                    rng, warm_page_cache, work_dir)


def checksum_bench(files: list[Path], repeats: int) -> dict:
    from backend.integrity.checksums import file_digest
    b2sum = shutil.which("b2sum")
    total = sum(p.stat().st_size for p in files)
    ours, theirs = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        digests = {str(p): file_digest(p, "blake2b") for p in files}
        ours.append(time.perf_counter() - t0)
        if b2sum:
            t0 = time.perf_counter()
            out = subprocess.run([b2sum, *map(str, files)], capture_output=True, text=True,
                                 check=True).stdout
            theirs.append(time.perf_counter() - t0)
            ref = {line.split(None, 1)[1].strip(): line.split()[0] for line in out.splitlines()}
            assert ref == digests, "digests differ from b2sum"
    mb = total / 1e6
    res = {"files": len(files), "mb": mb, "amore_s": ours, "b2sum_s": theirs}
    res["amore_mb_s"] = mb / med(ours)
    res["b2sum_mb_s"] = mb / med(theirs) if theirs else None
    res["ratio"] = res["b2sum_mb_s"] and res["amore_mb_s"] / res["b2sum_mb_s"]
    return res


def check_bench(runs: list[int], pdir: Path, repeats: int) -> dict:
    from backend.config import load_config
    from backend.facilities.euxfel.check import check_euxfel_run
    from backend.processing.local import WorkerPool
    from backend.processing.runpath import RunProcessor
    from backend.store.init import init_context_dir
    from backend.store.writer import RunDB

    ctx = work_dir() / "b5-ctx"
    if ctx.exists():
        shutil.rmtree(ctx)
    init_context_dir(ctx, PROPOSAL, context_file=BENCH_CONTEXT)
    config = load_config(ctx)
    db = RunDB(ctx)
    pool = WorkerPool(ctx, config, 1)
    pool.start()
    proc = RunProcessor(ctx, config, db, pool)
    err = proc.load_context()
    if err:
        raise RuntimeError(err)
    per_run = []
    try:
        proc.process(PROPOSAL, runs[0], "all")   # warm-up: imports in the worker
        for r in runs:
            tp, tc = [], []
            for _ in range(repeats):
                out = proc.process(PROPOSAL, r, "all")
                assert out.status == "done", out
                tp.append(out.seconds)
                time.sleep(0.3)  # the worker tidies up after its reply; not the check's cost
                t0 = time.perf_counter()
                rep = check_euxfel_run(pdir / "raw" / f"r{r:04d}")
                tc.append(time.perf_counter() - t0)
            per_run.append({"run": r, "process_s": med(tp), "check_s": med(tc),
                            "summary": rep["summary"], "sources": len(rep["sources"])})
    finally:
        pool.stop()
    return {"runs": per_run,
            "fraction": med([x["check_s"] / x["process_s"] for x in per_run])}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="1-5")
    ap.add_argument("--proposal-runs", default="1-40")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out")
    a = ap.parse_args()
    os.environ.update(bench_env())
    pdir = ensure_proposal(runs=a.proposal_runs)
    first, last = (int(x) for x in a.runs.split("-"))
    runs = list(range(first, last + 1))
    from backend.integrity.checksums import run_data_files
    files = [p for r in runs for p in run_data_files(pdir, r)]
    warm_page_cache(pdir / "raw")
    warm_page_cache(pdir / "proc")
    cs = checksum_bench(files, a.repeats)
    dc = check_bench(runs, pdir, a.repeats)
    print_table(f"Checksums of runs {a.runs} ({cs['files']} files, {cs['mb']:.0f} MB, warm cache)",
                ["tool", "seconds (median)", "range", "MB/s"],
                [["AMORE blake2b", f"{med(cs['amore_s']):.3f}", rng(cs["amore_s"], 3),
                  f"{cs['amore_mb_s']:.0f}"],
                 ["b2sum", f"{med(cs['b2sum_s']):.3f}" if cs["b2sum_s"] else "n/a",
                  rng(cs["b2sum_s"], 3), f"{cs['b2sum_mb_s']:.0f}" if cs["b2sum_mb_s"] else ""]])
    if cs["ratio"]:
        print(f"\nAMORE / b2sum throughput: {cs['ratio']:.2f}x (target >= 0.8x)")
    print_table("Data check cost per run", ["run", "processing s", "data check s", "fraction",
                                            "result"],
                [[x["run"], f"{x['process_s']:.3f}", f"{x['check_s']:.4f}",
                  f"{100 * x['check_s'] / x['process_s']:.1f} %", x["summary"]]
                 for x in dc["runs"]])
    print(f"\nMedian data check cost: {100 * dc['fraction']:.1f} % of run processing "
          f"(target <= 10 %)")
    if a.out:
        Path(a.out).write_text(json.dumps({"checksums": cs, "datacheck": dc}, indent=2))


if __name__ == "__main__":
    main()
