"""Extra: 64 concurrent writer processes on one runs.sqlite - zero "database is locked", zero lost
values.

A fresh context directory; 64 processes are started, import everything, open the database and
wait at a barrier; then, released together, each writes ``--runs`` runs x ``--vars`` values through AMORE's own storage layer
(:meth:`backend.store.writer.RunDB.write_values`, what every backend process uses), one transaction
per run. All writers share the same runs (each writes its own variable names ``w<i>_v<j>``), so
they collide on the same rows of ``runs`` and the same pages of ``run_values`` - the worst case.

Counted: ``database is locked`` (or any other) errors that reached the caller, retries the
storage layer logged ("Database busy, retrying"), and lost values (every value read back and
compared with what was written). Baseline measured in the same run: the same writes from one
process, one after the other (throughput ratio).

    python benchmarks/b4_concurrent_writers.py [--writers 64] [--runs 10] [--vars 20]
                                               [--repeats 1] [--out FILE.json]
"""
from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

from common import PROPOSAL, REPO, bench_env, med, print_table, rng, work_dir

sys.path.insert(0, str(REPO))


def value_of(writer: int, run: int, var: int) -> float:
    return writer * 1_000_000 + run * 1000 + var + 0.25


def writer(ctx: str, index: int, runs: int, nvars: int, barrier: str = "-") -> None:
    """Child: write ``runs`` runs x ``nvars`` values; print one JSON line with the counts."""
    from backend.store.writer import RunDB, StoredValue

    retries = []

    class Count(logging.Handler):
        def emit(self, record):
            if "busy" in record.getMessage().lower() or "locked" in record.getMessage().lower():
                retries.append(record.getMessage())

    logging.getLogger().addHandler(Count())
    logging.getLogger().setLevel(logging.WARNING)
    db = RunDB(ctx)
    errors, locked = [], 0
    if barrier != "-":                      # barrier: say we are ready, wait for "go"
        Path(barrier, f"ready-{index}").touch()
        go = Path(barrier, "go")
        while not go.exists():
            time.sleep(0.001)
    t0 = time.perf_counter()
    for r in range(1, runs + 1):
        vals = {f"w{index:02d}_v{j:02d}": StoredValue(value_of(index, r, j), "number",
                                                     {"units": "uJ"}) for j in range(nvars)}
        try:
            db.write_values(PROPOSAL, r, vals, status="done")
        except Exception as e:
            errors.append(f"{type(e).__name__}: {e}")
            locked += "locked" in str(e)
    print(json.dumps({"writer": index, "seconds": time.perf_counter() - t0, "errors": errors,
                      "locked": locked, "retries": len(retries)}), flush=True)


def check(ctx: Path, writers: int, runs: int, nvars: int) -> dict:
    import sqlite3
    con = sqlite3.connect(ctx / "runs.sqlite")
    got = {(n, r): v for n, r, v in con.execute("SELECT name, run, value FROM run_values")}
    nruns = con.execute("SELECT count(*) FROM runs").fetchone()[0]
    con.close()
    lost = wrong = 0
    for i in range(writers):
        for r in range(1, runs + 1):
            for j in range(nvars):
                v = got.get((f"w{i:02d}_v{j:02d}", r))
                if v is None:
                    lost += 1
                elif v != value_of(i, r, j):
                    wrong += 1
    return {"expected": writers * runs * nvars, "found": len(got), "lost": lost, "wrong": wrong,
            "runs_rows": nruns}


def fresh_db(path: Path) -> None:
    from backend.store.writer import RunDB
    subprocess.run(["rm", "-rf", str(path)], check=True)
    RunDB.create(path, PROPOSAL).close()


def one_repeat(w: Path, rep: int, a) -> dict:
    env = bench_env()
    ctx = w / f"db{rep}"
    fresh_db(ctx)
    barrier = w / f"barrier{rep}"
    subprocess.run(["rm", "-rf", str(barrier)], check=True)
    barrier.mkdir()
    procs = [subprocess.Popen([sys.executable, __file__, "--child", str(ctx), str(i), str(a.runs),
                               str(a.vars), str(barrier)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(a.writers)]
    t_end = time.monotonic() + 300
    while len(list(barrier.glob("ready-*"))) < a.writers:
        if time.monotonic() > t_end or any(p.poll() is not None for p in procs):
            break
        time.sleep(0.01)
    t0 = time.monotonic()
    (barrier / "go").touch()
    outs = [p.communicate() for p in procs]
    wall = time.monotonic() - t0
    kids = []
    for p, (o, e) in zip(procs, outs):
        if p.returncode != 0 or not o.strip():
            kids.append({"errors": [f"writer exited {p.returncode}: {e[-500:]}"], "locked": 0,
                         "retries": 0, "seconds": None})
        else:
            kids.append(json.loads(o.strip().splitlines()[-1]))
    chk = check(ctx, a.writers, a.runs, a.vars)
    # baseline: the same writes from one process
    base_ctx = w / f"base{rep}"
    fresh_db(base_ctx)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c",
                    "import sys; sys.path.insert(0, %r); from b4_concurrent_writers import writer\n"
                    "for i in range(%d): writer(%r, i, %d, %d)" % (
                        str(Path(__file__).parent), a.writers, str(base_ctx), a.runs, a.vars)],
                   env=env, check=True, stdout=subprocess.DEVNULL)
    base = time.perf_counter() - t0
    base_chk = check(base_ctx, a.writers, a.runs, a.vars)
    return {"wall_s": wall, "errors": sum(len(k["errors"]) for k in kids),
            "locked": sum(k["locked"] for k in kids), "retries": sum(k["retries"] for k in kids),
            "error_samples": [e for k in kids for e in k["errors"]][:5],
            "writer_seconds_max": max((k["seconds"] or 0) for k in kids), **chk,
            "baseline_s": base, "baseline_lost": base_chk["lost"] + base_chk["wrong"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--writers", type=int, default=64)
    ap.add_argument("--runs", type=int, default=10, help="transactions (runs) per writer")
    ap.add_argument("--vars", type=int, default=20, help="values per transaction")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out")
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        ctx, i, runs, nvars, barrier = a.child
        return writer(ctx, int(i), int(runs), int(nvars), barrier)
    w = work_dir() / "b4_writers"
    w.mkdir(parents=True, exist_ok=True)
    res = {"params": vars(a), "repeats": []}
    for rep in range(a.repeats):
        m = one_repeat(w, rep, a)
        res["repeats"].append(m)
        print(f"repeat {rep}: {a.writers} writers x {a.runs} transactions x {a.vars} values in "
              f"{m['wall_s']:.2f} s: {m['locked']} 'database is locked', {m['errors']} errors, "
              f"{m['retries']} retries, {m['lost']} lost, {m['wrong']} wrong values "
              f"({m['found']}/{m['expected']} rows); one process: {m['baseline_s']:.2f} s", flush=True)
    R = res["repeats"]
    n = a.writers * a.runs
    print_table(f"{a.writers} concurrent writers on one runs.sqlite ({a.repeats} repeat(s))",
                ["measure", "value", "range"], [
                    ["`database is locked` errors (all repeats)", f"**{sum(m['locked'] for m in R)}**", ""],
                    ["other errors", str(sum(m["errors"] - m["locked"] for m in R)), ""],
                    ["lost or wrong values", f"**{sum(m['lost'] + m['wrong'] for m in R)}** of {sum(m['expected'] for m in R)}", ""],
                    ["busy retries inside the storage layer", str(sum(m["retries"] for m in R)), ""],
                    [f"wall time, {n} transactions", f"{med([m['wall_s'] for m in R]):.2f} s", rng([m['wall_s'] for m in R])],
                    ["baseline: same writes, one process", f"{med([m['baseline_s'] for m in R]):.2f} s", rng([m['baseline_s'] for m in R])],
                ])
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    sys.exit(main())
