"""Web viewers benchmark (issue 21): 100 concurrent viewers of the push channel while 1,000 runs
arrive in a minute.

A real tansu broker on a free loopback port; a context directory; a **writer** process doing the
backend's store-and-announce step for each new run, as the backend's writer does it (the run
recorded, its values written in one ``RunDB.write_values`` transaction, a ``run_values_updated``
message published on the update topic), ``--runs`` runs spread evenly over ``--seconds``.

* phase A: the writer alone (no web server): the duration of each store transaction;
* phase B: ``amore-proto web`` following the broker, ``--viewers`` WebSocket clients of its push
  channel (bounded: one asyncio loop in this process, loopback only), and the writer again.
  Per viewer and run: the delay from the writer's commit to the row arriving at the viewer;
  whether every viewer got every run; the server's peak memory (RSS of its process tree,
  sampled at 20 Hz); the store transaction's duration with the server reading beside it.

    python benchmarks/web_viewers.py [--viewers 100] [--runs 1000] [--seconds 60] [--vars 50]

Prints tables: medians, 95th percentiles and ranges; targets from issue 21 (every viewer gets
every update, p95 delay <= 0.5 s, server memory <= 300 MB, the store step not slower by more
than 10 %; each writer's first 20 transactions are its warm-up and not counted).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, TreeRSS, print_table, start_web, stop_process_group

sys.path.insert(0, str(REPO))
PROPOSAL = 4343
#: store transactions of each writer process not counted (its warm-up)
WARMUP = 20


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))] if xs else float("nan")


# -- the writer (a child process) -----------------------------------------------------------------

def writer(ctx: str, first: int, runs: int, seconds: float, nvars: int, out: str) -> None:
    """Store and announce ``runs`` runs from ``first`` on, evenly over ``seconds``; one JSON line
    per run: run, commit wall time, seconds the store transaction took."""
    import numpy as np
    from backend.config import load_config
    from backend.notify.kafka import UpdatePublisher
    from backend.store.writer import RunDB
    from backend.vocab import StoredValue, UpdateKind
    db = RunDB(ctx)
    pub = UpdatePublisher(load_config(ctx), db.db_id)
    rng = np.random.default_rng(first)
    names = [f"v{i:03d}" for i in range(nvars)]
    period = seconds / runs
    t_start = time.monotonic()
    with open(out, "w") as f:
        for i in range(runs):
            run = first + i
            wait = t_start + i * period - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            values = {n: StoredValue(float(x), "number") for n, x in zip(names, rng.normal(size=nvars))}
            t0 = time.perf_counter()
            db.ensure_run(PROPOSAL, run, start_time=time.time())
            db.write_values(PROPOSAL, run, values, status="done")
            dt = time.perf_counter() - t0
            t_commit = time.time()
            pub.publish(UpdateKind.RUN_VALUES_UPDATED, {"proposal": PROPOSAL, "run": run,
                                                        "names": names})
            f.write(json.dumps({"run": run, "t": t_commit, "store_s": dt}) + "\n")
            f.flush()
    pub.flush(5)
    pub.close()
    db.close()


def run_writer(ctx: Path, first: int, a, env: dict, out: Path) -> list[dict]:
    subprocess.run([sys.executable, __file__, "--writer", str(ctx), "--first", str(first),
                    "--runs", str(a.runs), "--seconds", str(a.seconds), "--vars", str(a.vars),
                    "--out", str(out)], env=env, check=True)
    return [json.loads(line) for line in out.read_text().splitlines()]


# -- the viewers ---------------------------------------------------------------------------------

async def viewers(url: str, origin: str, n: int, until_run: int, timeout: float) -> list[dict]:
    """``n`` WebSocket clients; each returns {run: arrival wall time} of rows it received,
    until it saw ``until_run`` or ``timeout`` seconds passed."""
    from websockets.asyncio.client import connect

    async def one(i):
        seen: dict[int, float] = {}
        async with connect(url, additional_headers={"Origin": origin}, max_size=None) as ws:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and until_run not in seen:
                try:
                    text = await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.monotonic()))
                except asyncio.TimeoutError:
                    break
                t = time.time()
                m = json.loads(text)
                if m.get("type") == "rows":
                    for r in m["rows"]:
                        seen.setdefault(r["r"], t)
        return seen
    return await asyncio.gather(*(one(i) for i in range(n)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--viewers", type=int, default=100)
    p.add_argument("--runs", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--vars", type=int, default=50)
    p.add_argument("--writer", help=argparse.SUPPRESS)
    p.add_argument("--first", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.writer:
        writer(a.writer, a.first, a.runs, a.seconds, a.vars, a.out)
        return 0

    from tests.kafka_broker import TansuBroker, create_topics, tansu_binary
    from backend.config import load_config
    from backend.store.writer import RunDB
    work = Path(tempfile.mkdtemp(prefix="amore-web-viewers-"))
    broker = TansuBroker(tansu_binary(), work / "tansu.log")
    address = broker.start()
    env = dict(os.environ, AMORE_BROKER=address, PYTHONPATH=str(REPO),
               AMORE_WEB_ACCESS=str(work / "access.json"))
    os.environ["AMORE_BROKER"] = address
    ctx = work / "ctx"
    db = RunDB.create(ctx, PROPOSAL)
    db_id = db.db_id
    db.close()
    create_topics(address, [load_config(ctx).update_topic(db_id)])
    server = None
    try:
        print(f"phase A: the writer alone, {a.runs} runs in {a.seconds:.0f} s", flush=True)
        alone = run_writer(ctx, 1, a, env, work / "alone.jsonl")
        server, page, api, _ = start_web(ctx, env)
        port = int(page.split(":")[2].split("/")[0])
        rss = TreeRSS(server.pid)
        rss.start()
        first = a.runs + 1
        last = first + a.runs - 1
        ws_url = api.replace("http://", "ws://") + "live"
        print(f"phase B: {a.viewers} viewers of {page}, the writer again", flush=True)

        async def phase_b():
            task = asyncio.create_task(viewers(ws_url, f"http://127.0.0.1:{port}", a.viewers,
                                               last, a.seconds + 60))
            await asyncio.sleep(2.0)          # every viewer connected
            loop = asyncio.get_running_loop()
            rows = await loop.run_in_executor(None, run_writer, ctx, first, a, env,
                                              work / "with-web.jsonl")
            return rows, await task
        with_web, seen = asyncio.run(phase_b())
        rss.stop()
    finally:
        if server is not None:
            stop_process_group(server)
        broker.stop()
    commit = {r["run"]: r["t"] for r in with_web}
    delays, missing = [], 0
    for s in seen:
        for run, t in commit.items():
            if run in s:
                delays.append(s[run] - t)
            else:
                missing += 1
    got_all = sum(all(run in s for run in commit) for s in seen)
    # the first writes of each writer process warm it up (imports, connections): not counted
    st_a = [r["store_s"] * 1000 for r in alone[WARMUP:]]
    st_b = [r["store_s"] * 1000 for r in with_web[WARMUP:]]
    change = (statistics.median(st_b) / statistics.median(st_a) - 1) * 100
    print_table(f"Web push: {a.viewers} viewers while {a.runs} runs arrive in "
                f"{a.seconds:.0f} s ({a.vars} variables each)", ["measure", "value", "target"], [
                    ["viewers that got every run", f"**{got_all} / {a.viewers}**",
                     "all" + (" — met" if got_all == a.viewers else " — MISSED")],
                    ["(viewer, run) deliveries missing", f"{missing}", "0"],
                    ["commit -> row at a viewer, median", f"{statistics.median(delays):.3f} s", ""],
                    ["commit -> row at a viewer, p95", f"**{pct(delays, 95):.3f} s**",
                     "<= 0.5 s" + (" — met" if pct(delays, 95) <= 0.5 else " — MISSED")],
                    ["commit -> row at a viewer, max", f"{max(delays):.3f} s", ""],
                    ["server peak memory (RSS)", f"**{rss.peak / 2**20:.0f} MB**",
                     "<= 300 MB" + (" — met" if rss.peak / 2**20 <= 300 else " — MISSED")]])
    print_table("The backend's store step (write_values transaction) with and without the web "
                "server", ["", "median", "p95", "max"], [
                    ["writer alone", f"{statistics.median(st_a):.2f} ms", f"{pct(st_a, 95):.2f} ms",
                     f"{max(st_a):.2f} ms"],
                    [f"with the web server and {a.viewers} viewers",
                     f"{statistics.median(st_b):.2f} ms", f"{pct(st_b, 95):.2f} ms",
                     f"{max(st_b):.2f} ms"],
                    ["change of the median (target: not slower by more than 10 %)",
                     f"**{change:+.1f} %**", "met" if change <= 10 else "MISSED", ""]])
    return 0


if __name__ == "__main__":
    sys.exit(main())
