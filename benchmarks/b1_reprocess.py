"""B1: reprocess 40 runs of the shared fake proposal with the shared 11-variable context file.

Prints a table: ``amore-proto reprocess all`` wall time (fresh process, until every value is in
runs.sqlite), per run, peak memory; and, measured in the same run as a baseline, the same
variables computed by one bare Python process with extra-data and no AMORE (so AMORE's own
overhead shows as a ratio).

    python benchmarks/b1_reprocess.py [--repeats 3] [--runs 1-40] [--jobs 0] [--no-warmup]
                                      [--out FILE.json] [--tree NAME=DIR ...]

Each repeat is preceded by nothing but a fresh ``amore-proto init``; one untimed warm-up repeat
comes first unless ``--no-warmup``. ``--out`` writes every measurement as JSON (keys:
``amore``/``bare`` wall seconds per repeat, ``rss_tree``/``rss_single`` MB, ``bare_rss_tree``,
``runs``). ``--tree NAME=DIR`` (repeatable) measures, side by side in each repeat, the code
of other checkouts of AMORE (e.g. ``git archive main | tar -x -C /tmp/before``) in place of this
one: row ``NAME`` each, with the one bare baseline (JSON keys ``amore:NAME``, ``rss_tree:NAME``).
Each checkout's bytecode is written first (:func:`common.compile_code`), as installed.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from common import (BENCH_CONTEXT, PROPOSAL, bench_env, compile_code, ensure_proposal,
                    measure, med, print_table, rng, warm_page_cache, work_dir)

BARE = textwrap.dedent("""
    import sys, time, runpy
    t0 = time.perf_counter()
    import extra_data
    from backend.ctxrunner.context import ContextFile
    ctx = ContextFile.from_path(sys.argv[1])
    for r in range(int(sys.argv[2]), int(sys.argv[3]) + 1):
        run = extra_data.open_run(%d, r, data="all")
        res = ctx.execute(run, run_number=r, proposal=%d)
        assert all(x.ok for x in res.values()), res
    print(time.perf_counter() - t0)
""" % (PROPOSAL, PROPOSAL))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--runs", default="1-40")
    ap.add_argument("--jobs", type=int, default=0)
    ap.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up repeat")
    ap.add_argument("--out", help="write all measurements to this JSON file")
    ap.add_argument("--tree", action="append", default=[], metavar="NAME=DIR",
                    help="also measure the AMORE code in checkout DIR (side by side)")
    a = ap.parse_args()
    trees = [(None, None)] if not a.tree else [tuple(t.split("=", 1)) for t in a.tree]
    first, last = (int(x) for x in a.runs.split("-"))
    n = last - first + 1
    pdir = ensure_proposal(runs=a.runs)
    warm_page_cache(pdir)
    env = bench_env()
    for _name, tree in trees:
        compile_code(tree)   # as installed: no process compiles AMORE's modules again
    results = {"amore": [], "bare": [], "rss_tree": [], "rss_single": [], "bare_rss_tree": [],
               "runs": n}
    for rep in range(int(a.no_warmup), a.repeats + 1):  # repeat 0 is an untimed warm-up
        measured = []
        for name, tree in trees:
            ctx = work_dir() / "b1" / (f"ctx{rep}" if name is None else f"ctx{rep}-{name}")
            if ctx.exists():
                subprocess.run(["rm", "-rf", str(ctx)], check=True)
            tenv = env if tree is None else dict(env, PYTHONPATH=str(Path(tree).resolve()))
            subprocess.run([sys.executable, "-m", "amore.cli", "init", str(ctx), "--proposal",
                            str(PROPOSAL), "--context", str(BENCH_CONTEXT)], check=True,
                           env=tenv, cwd=tree, stdout=subprocess.DEVNULL)
            cmd = [sys.executable, "-m", "amore.cli", "reprocess", f"{first}-{last}", "--dir",
                   str(ctx), "--quiet"] + (["--jobs", str(a.jobs)] if a.jobs else [])
            m = measure(cmd, env=tenv, cwd=tree)
            check(ctx, n)
            measured.append((name, m))
        bare = measure([sys.executable, "-c", BARE, str(BENCH_CONTEXT), str(first), str(last)],
                       env=env)
        if rep == 0:
            continue
        for name, m in measured:
            sfx = "" if name is None else f":{name}"
            results.setdefault("amore" + sfx, []).append(m["wall_s"])
            results.setdefault("rss_tree" + sfx, []).append(m["peak_tree_rss_mb"])
            results.setdefault("rss_single" + sfx, []).append(m["maxrss_single_mb"])
        results["bare"].append(bare["wall_s"])
        results["bare_rss_tree"].append(bare["peak_tree_rss_mb"])
        print(f"repeat {rep}: " + ", ".join(f"{name or 'amore'} {m['wall_s']:.2f} s"
                                             for name, m in measured)
              + f", bare {bare['wall_s']:.2f} s", flush=True)
    if a.tree:
        bm = med(results["bare"])
        cores = os.cpu_count() or 1
        rows = []
        for name, _ in trees:
            am = med(results[f"amore:{name}"])
            rows.append([f"`reprocess {a.runs}`, code of {name}", f"**{am:.2f} s**",
                         rng(results[f"amore:{name}"]), f"{am / (bm / cores):.2f}",
                         f"{med(results[f'rss_tree:{name}']):.0f} MB"])
        rows.append(["baseline: one bare Python process, no AMORE", f"{bm:.2f} s",
                     rng(results["bare"]), f"{cores:.2f}", f"{med(results['bare_rss_tree']):.0f} MB"])
        print_table(f"B1: reprocess {n} runs, side by side (median of {a.repeats}; {cores} "
                    f"cores)", ["code", "wall", "range", "x (bare / cores)", "peak RSS tree"],
                    rows)
        out = a.out or work_dir() / "b1" / "results.json"
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(results, indent=1))
        return
    am, bm = med(results["amore"]), med(results["bare"])
    print_table(f"B1: reprocess {n} runs x 300 trains, 11 variables (median of {a.repeats})",
                ["measure", "value", "range"], [
                    [f"`amore-proto reprocess {a.runs}` (all values in runs.sqlite)", f"**{am:.2f} s**", rng(results['amore'])],
                    ["per run", f"{am / n:.3f} s", ""],
                    ["baseline: same variables, one bare Python process, no AMORE", f"{bm:.2f} s", rng(results['bare'])],
                    ["ratio AMORE / bare", f"{am / bm:.2f}", ""],
                    ["target (issue 2)", "<= 10 s", "met" if am <= 10 else "MISSED"],
                    ["peak RSS, whole process tree", f"{med(results['rss_tree']):.0f} MB", rng(results['rss_tree'], 0)],
                ])
    out = a.out or work_dir() / "b1" / "results.json"
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(results, indent=1))


def check(ctx, n):
    import sqlite3
    con = sqlite3.connect(ctx / "runs.sqlite")
    rows = con.execute("SELECT COUNT(*), SUM(summary_type = 'error') FROM run_values").fetchone()
    ntr = con.execute("SELECT COUNT(*) FROM run_values WHERE name = 'n_trains' AND value = 300").fetchone()[0]
    assert rows[0] == n * 11 and not rows[1] and ntr == n, (rows, ntr)


if __name__ == "__main__":
    main()
