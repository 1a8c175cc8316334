"""The long versions of AMORE's fault suite (tests/test_faults_*.py), with one table of figures.

    python benchmarks/faults.py                 # everything (about 16 minutes; root for the tmpfs)
    python benchmarks/faults.py --outage 60     # a 1-minute broker outage instead of 10
    python benchmarks/faults.py --only kill,input

Real faults on real parts: a tansu broker (in-memory storage) behind a TCP proxy, the backend
(``amore-proto listen``) as a process, real HDF5 runs (backend.testing.mockdata), a size-limited
tmpfs (needs root), another process holding a write lock on runs.sqlite.

Columns: fault; times injected; runs announced; runs in the database afterwards; values lost
(announced runs x variables without a stored value); duplicates (extra processings of a run,
from the backend's log: at-least-once delivery re-does runs in flight when the backend dies);
crashes (backend exits that were not injected); time to recover (from the end of the fault to
every run done; for kills, the longest restart-to-ready time).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import psutil  # noqa: E402

from common import Env, rst_table  # noqa: E402
from tests import faults_helpers as fh  # noqa: E402

PROPOSAL = fh.PROPOSAL
N_VARS = 2        # variables of fh.SIMPLE_CONTEXT


@dataclass
class Row:
    fault: str
    injected: int
    announced: int
    in_db: int
    values_lost: int
    duplicates: int
    crashes: int
    recover_s: float
    note: str = ""


def outcome(ctx: Path, announced: list[int], b=None) -> tuple[int, int, int]:
    """(runs in the DB, values lost, duplicate processings) for the announced runs."""
    from backend.store.writer import RunDB
    db = RunDB(ctx)
    in_db = {r["run"] for r in db.runs()}
    lost = 0
    for r in announced:
        v = db.get_values(PROPOSAL, r) if r in in_db else {}
        lost += N_VARS - sum(1 for x in v.values() if x.summary_type not in ("error", "skipped"))
    text = (ctx / "amore.log").read_text(errors="replace") if (ctx / "amore.log").exists() else ""
    counts: dict[int, int] = {}
    for m in re.finditer(r"Run (\d+): \d+ variables in", text):
        counts[int(m.group(1))] = counts.get(int(m.group(1)), 0) + 1
    dups = sum(n - 1 for n in counts.values() if n > 1)
    return len(in_db & set(announced)), lost, dups


def all_done(ctx, runs):
    from backend.store.writer import RunDB
    db = RunDB(ctx)
    return all((db.get_run(PROPOSAL, r) or {}).get("status") == "done" for r in runs)


# ---------------------------------------------------------------------------------------------

def bench_input(env: Env, broker: str, n_messages=1000) -> Row:
    tag = uuid.uuid4().hex[:8]
    ctx = env.context(f"input-{tag}", fh.SIMPLE_CONTEXT, config=fh.kafka_toml(tag, jobs=2))
    topics = [f"r2d2-{tag}", f"corrections-{tag}"]
    fh.facility_create_topics(broker, topics)
    valid = list(range(1, 21))
    env.runs(valid)
    marker = env.root / "UNPICKLED"
    poison = fh.poison_messages(str(marker))
    b = fh.KafkaBackend(env.root / ctx.name, broker)
    p = fh.make_producer(broker)
    step = n_messages // (len(valid) + 1)
    vi = injected = 0
    for i in range(n_messages):
        if vi < len(valid) and i == step * (vi + 1):
            p.produce(topics[0], fh.facility_msg(valid[vi]))
            vi += 1
        else:
            label, value = poison[i % len(poison)]
            p.produce(topics[i % 2], value)
            injected += 1
        p.poll(0)
    p.flush(120)
    t_end = time.monotonic()
    fh.wait_for(lambda: all_done(ctx, valid), 300, 0.2, "valid runs")
    rec = time.monotonic() - t_end
    crashes = 0 if b.alive() else 1
    b.stop()
    in_db, lost, dups = outcome(ctx, valid)
    return Row("bad input (1,000 messages)", injected, len(valid), in_db, lost, dups, crashes, rec,
               "unpickled!" if marker.exists() else "")


def bench_kill(env: Env, broker: str, kills=10, n_runs=60) -> Row:
    from tests.test_faults_kill import SLOW_CONTEXT, kill_and_restart
    tag = uuid.uuid4().hex[:8]
    ctx = env.context(tag, code=SLOW_CONTEXT, config=fh.kafka_toml(tag, jobs=2, reset="latest"))
    fh.facility_create_topics(broker, [f"r2d2-{tag}", f"corrections-{tag}"])
    env.runs(range(1, n_runs + 1))
    b, announced, recover, orphans = kill_and_restart(ctx, broker, n_runs, kills, seed=1,
                                                      interval=0.5, kill_after=(1.0, 4.0))
    fh.wait_for(lambda: all_done(ctx, announced), 300, 0.5, "every run done")
    crashes = 0 if b.alive() else 1
    b.stop()
    from backend.store.writer import RunDB
    stuck = sum(r["status"] == "processing" for r in RunDB(ctx).runs())
    alive = sum(1 for p in orphans if p.is_running() and p.status() != psutil.STATUS_ZOMBIE)
    in_db, lost, dups = outcome(ctx, announced)
    return Row("backend SIGKILLed", kills, len(announced), in_db, lost, dups, crashes,
               max(recover), f"{stuck} stuck processing, {alive} orphan workers")


def bench_broker(env: Env, outage: float) -> list[Row]:
    proxy = fh.TcpProxy("127.0.0.1:1").start()
    tansu = fh.Tansu(env.root / "tansu-outage.log", advertised_port=proxy.port)
    proxy.target = ("127.0.0.1", tansu.port)
    tansu.start()
    tag = uuid.uuid4().hex[:8]
    topics = [f"r2d2-{tag}", f"corrections-{tag}"]
    ctx = env.context(tag, fh.SIMPLE_CONTEXT, config=fh.kafka_toml(tag, jobs=1))
    fh.facility_create_topics(proxy.address, topics)
    b = fh.KafkaBackend(ctx, proxy.address)
    p = fh.make_producer(proxy.address)
    rows = []
    try:
        def announce(runs):
            env.runs(runs)
            for r in runs:
                p.produce(topics[0], fh.facility_msg(r))
            p.flush(60)
        before, during, after = list(range(101, 106)), list(range(106, 116)), list(range(116, 121))
        announce(before)
        fh.wait_for(lambda: all_done(ctx, before), 60, 0.2, "runs before")
        proxy.cut(fh.is_amore_client)
        t0 = time.monotonic()
        per = outage / len(during)
        for r in during:                      # the facility announces during the outage
            announce([r])
            time.sleep(per)
        while time.monotonic() - t0 < outage:
            time.sleep(0.5)
        said = "reconnecting" in b.log_text()
        proxy.restore()
        t_back = time.monotonic()
        announce(after)
        fh.wait_for(lambda: all_done(ctx, before + during + after), 300, 0.2, "all runs")
        rec = time.monotonic() - t_back
        in_db, lost, dups = outcome(ctx, before + during + after)
        rows.append(Row(f"network to broker down {outage / 60:.0f} min", 1, 20, in_db, lost, dups,
                        0 if b.alive() else 1, rec, "said reconnecting" if said else
                        "did NOT say reconnecting"))
        # broker restart (memory storage: topics, offsets, groups lost)
        restart_runs = list(range(121, 131))
        env.runs(restart_runs)
        tansu.restart()
        fh.facility_create_topics(proxy.address, topics)
        t_restart = time.monotonic()
        announce(restart_runs)
        fh.wait_for(lambda: all_done(ctx, restart_runs), 300, 0.2, "runs after restart")
        rec = time.monotonic() - t_restart
        in_db, lost, _ = outcome(ctx, restart_runs)
        rows.append(Row("broker restarted (topics lost)", 1, len(restart_runs), in_db, lost, 0,
                        0 if b.alive() else 1, rec))
        b.stop()
    finally:
        b.cleanup()
        proxy.close()
        tansu.stop()
    return rows


def bench_lock(env: Env, hold=60.0) -> Row:
    cfg = "[watch]\nenabled = true\nquiet_seconds = 0.3\npoll_seconds = 0.1\n[processing]\njobs = 2\n"
    ctx = env.context(f"lock-{uuid.uuid4().hex[:6]}", fh.SIMPLE_CONTEXT, config=cfg)
    b = fh.KafkaBackend(ctx, "none")
    runs = list(range(201, 211))
    try:
        env.runs(runs[:2])
        fh.wait_for(lambda: all_done(ctx, runs[:2]), 60, 0.2, "first runs")
        holder = fh.hold_write_lock(ctx / "runs.sqlite", hold)
        env.runs(runs[2:])
        holder.wait(hold + 30)
        t_free = time.monotonic()
        fh.wait_for(lambda: all_done(ctx, runs), 300, 0.2, "runs after the lock")
        rec = time.monotonic() - t_free
        from backend.store.writer import RunDB
        said = any(e["source"] == "database" for e in RunDB(ctx).events())
        crashes = 0 if b.alive() else 1
        b.stop()
    finally:
        b.cleanup()
    in_db, lost, dups = outcome(ctx, runs)
    return Row(f"runs.sqlite locked {hold:.0f} s", 1, len(runs), in_db, lost, dups, crashes, rec,
               "in event log" if said else "NOT in event log")


def bench_disk(env: Env) -> Row:
    reason = fh.can_mount_tmpfs(env.root / "probe")
    if reason:
        return Row("disk full", 0, 0, 0, 0, 0, 0, 0.0, f"not run: {reason}")
    from tests.test_faults_storage import BIG_CONTEXT, OFFLINE, integrity
    fs = env.root / "fs"
    runs = list(range(301, 311))
    with fh.tmpfs(fs, "40m"):
        ctx = env.context("ctx", code=BIG_CONTEXT, config=OFFLINE, parent=fs)
        b = fh.KafkaBackend(ctx, "none")
        try:
            env.runs(runs[:2])
            fh.wait_for(lambda: all_done(ctx, runs[:2]), 60, 0.2, "first runs")
            filler = fh.fill_disk(fs)
            env.runs(runs[2:])
            time.sleep(5)
            ok = integrity(ctx / "runs.sqlite") == "ok"
            filler.unlink()
            t_free = time.monotonic()
            fh.wait_for(lambda: all_done(ctx, runs), 300, 0.2, "runs after space freed")
            rec = time.monotonic() - t_free
            crashes = 0 if b.alive() else 1
            b.stop()
        finally:
            b.cleanup()
        in_db, lost, dups = outcome(ctx, runs)
    return Row("disk full (tmpfs)", 1, len(runs), in_db, lost, dups, crashes, rec,
               "integrity ok" if ok else "INTEGRITY FAILED")


def bench_usercode(env: Env) -> Row:
    from backend.config import load_config
    from backend.processing.local import WorkerPool
    from backend.processing.runpath import RunProcessor
    from backend.store.writer import RunDB
    from tests.test_faults_usercode import RUNAWAY_CONTEXT
    ctx = env.context(f"runaway-{uuid.uuid4().hex[:6]}", code=RUNAWAY_CONTEXT,
                      config="[processing]\njobs = 1\nrun_timeout = 5\nworker_memory_mb = 1500\n")
    runs = [1, 2, 3, 4, 5, 6]
    env.runs(runs)
    pool = WorkerPool(ctx, load_config(ctx), 1)
    proc = RunProcessor(ctx, load_config(ctx), RunDB(ctx), pool)
    proc.load_context()
    t0 = time.monotonic()
    statuses = [proc.process(PROPOSAL, r).status for r in runs]
    t = time.monotonic() - t0
    alive = pool.workers[0].alive()
    pool.stop()
    db = RunDB(ctx)
    clear = sum(1 for r in runs if (db.get_run(PROPOSAL, r) or {}).get("status") in ("done", "failed"))
    return Row("runaway user code (5 kinds)", 5, len(runs), clear, 0, 0, 0 if alive else 1, t,
               "statuses " + "/".join(statuses))


def bench_load(env: Env, broker: str, n=1000, seconds=60.0) -> Row:
    tag = uuid.uuid4().hex[:8]
    ctx = env.context(f"load-{tag}", fh.SIMPLE_CONTEXT, config=fh.kafka_toml(tag, jobs=2))
    fh.facility_create_topics(broker, [f"r2d2-{tag}", f"corrections-{tag}"])
    runs = list(range(1001, 1001 + n))
    env.runs(runs, ntrains=2)
    b = fh.KafkaBackend(ctx, broker)
    from backend.config import load_config
    from backend.notify.kafka import UpdateConsumer
    from backend.store.writer import RunDB
    cfg = load_config(ctx)
    cfg["kafka"]["broker"] = broker
    consumers = [UpdateConsumer(cfg, RunDB(ctx).db_id) for _ in range(2)]
    # two open GUIs (the real window, offscreen), measuring their event loops
    guis, gui_out = [], []
    for i in range(2):
        out = env.root / f"gui-{tag}-{i}.jsonl"
        gui_out.append(out)
        guis.append(subprocess.Popen(
            [sys.executable, str(REPO / "benchmarks" / "b3_gui_observer.py"), str(ctx), str(out)],
            env=dict(os.environ, AMORE_BROKER=broker), stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL))
    fh.wait_for(lambda: all(o.exists() and "observer_ready" in o.read_text() for o in gui_out),
                120, 0.2, "GUIs ready")
    got = [0, 0]
    gaps = [0.0, 0.0]
    stop = threading.Event()

    def read(i):
        last = time.monotonic()
        while not stop.is_set():
            got[i] += len(consumers[i].poll(0.05))
            now = time.monotonic()
            gaps[i] = max(gaps[i], now - last)
            last = now
    threads = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(2)]
    for t in threads:
        t.start()

    def rss():
        try:
            procs = [psutil.Process(b.proc.pid)] + psutil.Process(b.proc.pid).children(True)
            return sum(p.memory_info().rss for p in procs) / 2**20
        except psutil.Error:
            return 0.0
    rss0 = rss()
    p = fh.make_producer(broker)
    t0 = time.monotonic()
    peak = rss0
    for i, r in enumerate(runs):
        p.produce(f"r2d2-{tag}", fh.facility_msg(r))
        p.poll(0)
        due = t0 + seconds * (i + 1) / n
        while time.monotonic() < due:
            time.sleep(0.005)
        if i % 50 == 0:
            peak = max(peak, rss())
    p.flush(60)
    t_end = time.monotonic()
    fh.wait_for(lambda: all_done(ctx, runs), 600, 1.0, "every run")
    rec = time.monotonic() - t_end
    peak = max(peak, rss())
    stop.set()
    for t in threads:
        t.join(5)
    crashes = 0 if b.alive() else 1
    b.stop()
    loops = []
    for g, o in zip(guis, gui_out):
        g.terminate()
        g.wait(60)
        recs = [json.loads(line) for line in o.read_text().splitlines() if line.strip()]
        loops += [r for r in recs if r.get("msg_kind") == "event_loop"]
    in_db, lost, dups = outcome(ctx, runs)
    gui_note = ("; GUIs: " + ", ".join(f"{r['cells']} runs shown, longest stall "
                                       f"{r['max_stall_ms']:.0f} ms" for r in loops)) if loops \
        else "; GUIs: no report"
    return Row(f"load: {n} runs in {seconds:.0f} s", n, n, in_db, lost, dups, crashes, rec,
               f"backend+workers RSS {rss0:.0f} -> peak {peak:.0f} MB; 2 update readers got "
               f"{min(got)}+ messages, longest poll gap {max(gaps) * 1e3:.0f} ms" + gui_note)


def print_table(rows: list[Row]) -> str:
    head = ["fault", "injected", "announced", "runs in DB", "values lost", "duplicates",
            "crashes", "time to recover", "note"]
    lines = [[r.fault, str(r.injected), str(r.announced), str(r.in_db), str(r.values_lost),
              str(r.duplicates), str(r.crashes), f"{r.recover_s:.1f} s", r.note] for r in rows]
    return rst_table(head, lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--outage", type=float, default=600.0, help="broker outage, seconds")
    ap.add_argument("--lock", type=float, default=60.0, help="seconds the DB lock is held")
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--load", type=int, default=1000, help="run events in the load test")
    ap.add_argument("--only", default="", help="comma-separated: input,kill,broker,lock,disk,"
                                              "usercode,load")
    ap.add_argument("--json", help="also write the rows to this JSON file")
    a = ap.parse_args(argv)
    only = set(filter(None, a.only.split(",")))
    root = Path(tempfile.mkdtemp(prefix="amore-faults-"))
    env = Env(root)
    from tests.kafka_broker import TansuBroker, tansu_binary
    broker = TansuBroker(tansu_binary(), root / "tansu.log")
    address = broker.start()
    rows: list[Row] = []
    plan = [("input", lambda: [bench_input(env, address)]),
            ("kill", lambda: [bench_kill(env, address, a.kills)]),
            ("broker", lambda: bench_broker(env, a.outage)),
            ("lock", lambda: [bench_lock(env, a.lock)]),
            ("disk", lambda: [bench_disk(env)]),
            ("usercode", lambda: [bench_usercode(env)]),
            ("load", lambda: [bench_load(env, address, a.load)])]
    try:
        for name, fn in plan:
            if only and name not in only:
                continue
            t0 = time.monotonic()
            print(f"-- {name} ...", flush=True)
            try:
                rows += fn()
            except Exception as e:
                rows.append(Row(name, 0, 0, 0, 0, 0, 0, 0.0, f"FAILED: {type(e).__name__}: {e}"[:120]))
            print(f"   {time.monotonic() - t0:.0f} s", flush=True)
    finally:
        broker.stop()
        shutil.rmtree(root, ignore_errors=True)
    table = print_table(rows)
    print(table)
    if a.json:
        Path(a.json).write_text(json.dumps([r.__dict__ for r in rows], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
