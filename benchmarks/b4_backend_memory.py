"""Extra: peak memory of AMORE's backend while 40 announced runs are processed (default parallelism).

Starts a tansu broker, a fresh context directory with the shared 11-variable context file on the
shared fake proposal, and ``amore-proto listen`` with the default number of workers (CPUs, at
most 4). Once it is ready, the facility event ``migration_complete`` is published for runs 1-40
in one burst. The summed RSS of the listener's whole process tree (listener + worker processes)
is sampled at 20 Hz from start-up until every run's values are in runs.sqlite; reported: peak,
idle RSS before the burst, and the time from the first event to the last run in the database.

Baseline measured in the same run: one bare Python process (extra-data + the context file, no
AMORE, no parallelism) computing the same 40 runs (peak RSS of its process tree and wall time).

    python benchmarks/b4_backend_memory.py [--repeats 3] [--runs 1-40] [--out FILE.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from common import (BENCH_CONTEXT, PROPOSAL, REPO, StagedRuns, TreeRSS, bench_env, data_root,
                    ensure_proposal, measure, med, print_table, rng, warm_page_cache, work_dir)

sys.path.insert(0, str(REPO))

from backend.procs import stop_process_group  # noqa: E402


def one_repeat(address, runs, pdir, w, rep) -> dict:
    from backend.config import load_config
    from backend.store.writer import RunDB
    from tests.kafka_broker import create_topics, produce

    # a data root of its own whose runs appear in raw/ only just before the events (a starting
    # backend processes at once the runs it finds on disk): links to the shared proposal's runs
    root = w / f"data{rep}"
    staged = StagedRuns(pdir / "raw", w / f"staged{rep}", runs,
                        raw=root / pdir.relative_to(data_root()) / "raw", link=True)
    env = bench_env({"AMORE_BROKER": address, "EXTRA_DATA_DATA_ROOT": str(root)})
    ctx = w / f"ctx{rep}"
    subprocess.run(["rm", "-rf", str(ctx)], check=True)
    subprocess.run([sys.executable, "-m", "amore.cli", "init", str(ctx), "--proposal",
                    str(PROPOSAL), "--context", str(BENCH_CONTEXT)], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    os.environ["AMORE_BROKER"] = address
    config = load_config(ctx)
    db_id = RunDB(ctx).db_id
    topic = config["kafka"]["event_topics"][0]
    create_topics(address, config["kafka"]["event_topics"] + [config.update_topic(db_id)])
    t_start = time.monotonic()
    listener = subprocess.Popen([sys.executable, "-m", "amore.cli", "listen", str(ctx)],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
    sampler = TreeRSS(listener.pid)
    sampler.start()
    try:
        log = ctx / "amore.log"
        while not (log.exists() and " Ready" in log.read_text()):
            time.sleep(0.05)
            if time.monotonic() - t_start > 120 or listener.poll() is not None:
                raise RuntimeError(f"backend did not start; see {log}")
        time.sleep(1.0)
        idle = sampler.peak
        nproc = 1 + len(__import__("psutil").Process(listener.pid).children(recursive=True))
        con = sqlite3.connect(ctx / "runs.sqlite", timeout=30)
        paths = {r: staged.announce(r) for r in runs}
        t0 = time.monotonic()
        for r in runs:
            produce(address, topic, json.dumps({
                "event": "migration_complete", "proposal": PROPOSAL, "run": r,
                "path": str(paths[r]), "instrument": "MID", "cycle": "202201"}).encode())
        t_sent = time.monotonic() - t0
        while True:
            n = con.execute("SELECT count(*) FROM run_values WHERE name = 'n_trains'").fetchone()[0]
            if n >= len(runs):
                break
            if time.monotonic() - t0 > 600:
                raise RuntimeError(f"only {n} of {len(runs)} runs processed")
            time.sleep(0.05)
        wall = time.monotonic() - t0
        time.sleep(0.3)
        rows, errors = con.execute("SELECT count(*), sum(summary_type = 'error') "
                                   "FROM run_values").fetchone()
        con.close()
    finally:
        sampler.stop()
        stop_process_group(listener, grace=30)
    return {"peak_tree_rss_mb": sampler.peak / 2**20, "idle_tree_rss_mb": idle / 2**20,
            "processes": nproc, "wall_s": wall, "publish_s": t_sent, "values": rows,
            "errors": errors or 0}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--runs", default="1-40")
    ap.add_argument("--out")
    a = ap.parse_args()
    from b1_reprocess import BARE
    from tests.kafka_broker import TansuBroker, tansu_binary

    first, last = (int(x) for x in a.runs.split("-"))
    runs = list(range(first, last + 1))
    pdir = ensure_proposal(runs="1-40")
    warm_page_cache(pdir)
    w = work_dir() / "b4_memory"
    subprocess.run(["rm", "-rf", str(w)])
    w.mkdir(parents=True)
    broker = TansuBroker(tansu_binary(), w / "tansu.log")
    address = broker.start()
    res = {"amore": [], "bare": [], "params": vars(a)}
    try:
        for rep in range(a.repeats):
            m = one_repeat(address, runs, pdir, w, rep)
            res["amore"].append(m)
            b = measure([sys.executable, "-c", BARE, str(BENCH_CONTEXT), str(first), str(last)],
                        env=bench_env())
            res["bare"].append({k: v for k, v in b.items() if k != "output"})
            print(f"repeat {rep}: backend peak {m['peak_tree_rss_mb']:.0f} MB (idle "
                  f"{m['idle_tree_rss_mb']:.0f} MB, {m['processes']} processes), {len(runs)} runs in "
                  f"{m['wall_s']:.1f} s, {m['values']} values, {m['errors']} errors; bare "
                  f"{b['peak_tree_rss_mb']:.0f} MB, {b['wall_s']:.1f} s", flush=True)
    finally:
        broker.stop()
    am = [m["peak_tree_rss_mb"] for m in res["amore"]]
    bm = [m["peak_tree_rss_mb"] for m in res["bare"]]
    print_table(f"Backend memory, {len(runs)} runs announced at once (median of {a.repeats})",
                ["measure", "value", "range"], [
                    ["`amore-proto listen`: peak RSS of the process tree", f"**{med(am):.0f} MB**", rng(am, 0)],
                    ["  idle, before the events", f"{med([m['idle_tree_rss_mb'] for m in res['amore']]):.0f} MB", ""],
                    ["  processes (listener + workers)", str(res["amore"][0]["processes"]), ""],
                    [f"  first event -> {len(runs)} runs in the database", f"{med([m['wall_s'] for m in res['amore']]):.1f} s", rng([m['wall_s'] for m in res['amore']], 1)],
                    ["baseline: one bare Python process, same runs, sequential", f"{med(bm):.0f} MB", rng(bm, 0)],
                    ["ratio AMORE / bare", f"{med(am) / med(bm):.2f}", ""],
                ])
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
