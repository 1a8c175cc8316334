"""Helpers for AMORE's benchmark scripts: locations, the shared fake proposal, timing, memory.

Locations come from the environment:

``BENCH_WORK``      scratch folder (default ``$TMPDIR/amore-bench``)
``DATA_ROOT``       fake proposal tree (default ``$BENCH_WORK/data``)
``BENCH_SHARED``    the shared benchmark harness (default ``../shared/bench`` beside the repo)

The data are made by the shared harness's ``damnit/make_fake_proposal.py`` (tool-neutral), so
AMORE and DAMNIT are measured on the same files.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from backend.contextdir import proposal_dir_name

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("BENCH_SHARED", REPO.parent / "shared" / "bench")).resolve()
BENCH_CONTEXT = SHARED / "damnit" / "bench_context.py"
PROPOSAL = 2832


def work_dir() -> Path:
    d = Path(os.environ.get("BENCH_WORK", Path(tempfile.gettempdir(), "amore-bench")))
    d.mkdir(parents=True, exist_ok=True)
    return d.resolve()


def scratch_dir(name: str) -> Path:
    """An empty folder ``$BENCH_WORK/<name>`` (what an earlier run left there is removed)."""
    d = work_dir() / name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    return d


def save_json(path: str | None, data) -> None:
    """Write ``data`` as JSON to ``path`` (a script's ``--out``); nothing if ``path`` is None."""
    if path:
        with open(path, "w") as f:
            json.dump(data, f, indent=1)


def data_root() -> Path:
    d = Path(os.environ.get("DATA_ROOT", work_dir() / "data"))
    d.mkdir(parents=True, exist_ok=True)
    return d.resolve()


def bench_env(extra: dict | None = None) -> dict:
    """Environment for every process a benchmark starts (data root, no user settings)."""
    w = work_dir()
    for sub in ("home", "mplconfig", "sw_root"):
        (w / sub).mkdir(exist_ok=True)
    env = dict(os.environ)
    env.update({"EXTRA_DATA_DATA_ROOT": str(data_root()), "EXTRA_DATA_SW_ROOT": str(w / "sw_root"),
                "HOME": str(w / "home"), "MPLCONFIGDIR": str(w / "mplconfig"), "MPLBACKEND": "Agg",
                "AMORE_BROKER": os.environ.get("AMORE_BROKER", "none"),
                "QT_QPA_PLATFORM": "offscreen", "PYTHONUNBUFFERED": "1"})
    if extra:
        env.update(extra)
    return env


def ensure_proposal(runs="1-40", ntrains=300, trains_per_seq=250, agipd_modules=16,
                    instrument="MID", cycle="202201", proposal=PROPOSAL) -> Path:
    """Generate the shared fake proposal once (keyed by its parameters); returns its directory."""
    root = data_root()
    params = dict(proposal=proposal, runs=runs, ntrains=ntrains, trains_per_seq=trains_per_seq,
                  agipd_modules=agipd_modules, instrument=instrument, cycle=cycle)
    pdir = root / instrument / cycle / proposal_dir_name(proposal)
    marker = pdir / ".bench-params.json"
    if marker.is_file() and json.loads(marker.read_text()) == params:
        return pdir
    if pdir.exists():
        shutil.rmtree(pdir)
    cmd = [sys.executable, str(SHARED / "damnit" / "make_fake_proposal.py"), str(root),
           "--instrument", instrument, "--cycle", cycle, "--proposal", str(proposal),
           "--runs", runs, "--ntrains", str(ntrains), "--trains-per-seq", str(trains_per_seq),
           "--agipd-modules", str(agipd_modules)]
    print("generating data:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=bench_env(), stdout=subprocess.DEVNULL)
    marker.write_text(json.dumps(params))
    return pdir


class Env:
    """A scratch proposal tree of mock runs (``<root>/exp/MID/202201/p002832``,
    :mod:`backend.testing.mockdata`) and context directories; this process's environment (and
    so every process it starts) points extra-data at it, Kafka off."""

    def __init__(self, root: Path):
        self.root = root
        self.data = root / "exp"
        self.pdir = self.data / "MID" / "202201" / proposal_dir_name(PROPOSAL)
        (self.pdir / "raw").mkdir(parents=True, exist_ok=True)
        (root / "sw").mkdir(exist_ok=True)
        os.environ.update(EXTRA_DATA_DATA_ROOT=str(self.data), EXTRA_DATA_SW_ROOT=str(root / "sw"),
                          MPLBACKEND="Agg", AMORE_BROKER="none", QT_QPA_PLATFORM="offscreen",
                          PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.written: set[int] = set()

    def runs(self, numbers, ntrains=5):
        from backend.testing.mockdata import write_run
        for r in numbers:
            if r not in self.written:
                write_run(self.pdir, PROPOSAL, r, ntrains=ntrains)
                self.written.add(r)

    def context(self, name, code, config="", parent: Path | None = None):
        from backend.store.init import init_context_dir
        d = (parent or self.root) / name
        src = self.root / f"{name}-context.py"
        src.write_text(code)
        init_context_dir(d, PROPOSAL, context_file=src)
        (d / "amore.toml").write_text(config)
        return d


class StagedRuns:
    """Runs kept out of a proposal's ``raw/`` until their event: a starting backend catches up
    at once on the runs it finds on disk, so runs meant to be announced to it must not be there
    yet. ``runs`` (numbers) are taken from ``source`` (a ``raw/`` folder): moved aside into
    ``staging`` when ``link`` is False (``source`` is then also where :meth:`announce` puts them
    back), else hard-linked there (copied where links are not possible) so that ``source`` (a
    shared proposal) stays as it is, and announced into ``raw``."""

    def __init__(self, source: Path, staging: Path, runs, raw: Path | None = None,
                 link: bool = False):
        self.raw = Path(raw or source)
        self.raw.mkdir(parents=True, exist_ok=True)
        self.staging = Path(staging)
        self.staging.mkdir(parents=True, exist_ok=True)
        for run in runs:
            name = f"r{run:04d}"
            if not link:
                os.rename(Path(source) / name, self.staging / name)
            elif subprocess.run(["cp", "-al", str(Path(source) / name), str(self.staging)],
                                stderr=subprocess.DEVNULL).returncode != 0:
                shutil.rmtree(self.staging / name, ignore_errors=True)
                shutil.copytree(Path(source) / name, self.staging / name)

    def announce(self, run: int) -> Path:
        """Put run ``run`` into ``raw/``, as a migration finishing; returns its directory."""
        target = self.raw / f"r{run:04d}"
        os.rename(self.staging / f"r{run:04d}", target)
        return target

    def restore(self) -> None:
        """Put every run not announced back into ``raw/``."""
        for d in sorted(self.staging.glob("r[0-9]*")):
            os.rename(d, self.raw / d.name)


#: The packages of a checkout whose bytecode :func:`compile_code` writes.
CODE_PACKAGES = ("amore", "amore_gui", "backend")


def compile_code(tree: str | os.PathLike | None = None) -> None:
    """Write the bytecode (``__pycache__``) of AMORE's packages in ``tree`` (default: this
    checkout), as installing AMORE does: where ``$PYTHONDONTWRITEBYTECODE`` is set (as on the
    shared VM) and a checkout was never compiled, every process the benchmark starts would
    compile those modules again (~0.05 s of CPU each), which an installed AMORE never does."""
    import compileall
    root = Path(tree or REPO)
    for pkg in CODE_PACKAGES:
        if (root / pkg).is_dir():
            compileall.compile_dir(str(root / pkg), quiet=1)


def warm_proposal(runs: str = "1-40") -> tuple[int, int]:
    """The shared fake proposal with runs ``"FIRST-LAST"`` made if missing and read into the
    page cache; returns ``(first, last)``."""
    first, last = (int(x) for x in runs.split("-"))
    warm_page_cache(ensure_proposal(runs=runs))
    return first, last


def warm_page_cache(path: Path) -> int:
    n = 0
    for p in sorted(Path(path).rglob("*.h5")):
        with open(p, "rb") as f:
            while f.read(1 << 22):
                pass
        n += 1
    return n


class TreeRSS(threading.Thread):
    """Samples the summed RSS (bytes) of a process and its descendants at 20 Hz."""

    def __init__(self, pid: int, interval: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak = pid, interval, 0
        self._halt = threading.Event()

    def run(self):
        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self._halt.is_set():
            total = 0
            try:
                procs = [root] + root.children(recursive=True)
            except psutil.Error:
                break
            for p in procs:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self._halt.wait(self.interval)

    def stop(self):
        self._halt.set()
        self.join()


def measure(cmd, env=None, cwd=None, check=True) -> dict:
    """Run ``cmd``: wall seconds, peak RSS of its largest process (MB, ``wait4`` ru_maxrss of this
    command alone), peak summed RSS of its process tree (MB, sampled at 20 Hz) and its output."""
    with tempfile.TemporaryFile() as out:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        sampler = TreeRSS(p.pid)
        sampler.start()
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        sampler.stop()
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode(errors="replace")
    if check and p.returncode != 0:
        raise RuntimeError(f"{cmd} failed ({p.returncode}):\n{text[-3000:]}")
    return {"wall_s": wall, "maxrss_single_mb": ru.ru_maxrss / 1024,
            "peak_tree_rss_mb": sampler.peak / 2**20, "output": text}


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def rng(xs, nd=2):
    xs = [x for x in xs if x is not None]
    return f"[{min(xs):.{nd}f}–{max(xs):.{nd}f}]" if xs else ""


def print_seconds(title: str, seconds: dict[str, list[float]], spec, bound_header: str,
                  nd: int = 3) -> None:
    """Print a table of timings: for each ``(key, label, bound)`` of ``spec`` a row with how many
    measurements ``seconds[key]`` holds, their median and range (seconds) and ``bound``."""
    rows = [[label, len(seconds[k]), f"{med(seconds[k]):.{nd}f}", rng(seconds[k], nd), bound]
            for k, label, bound in spec]
    print_table(title, ["what", "n", "median s", "range s", bound_header], rows)


def rst_table(header, rows: list[list[str]]) -> str:
    """A reStructuredText simple table of ``rows`` (strings) under ``header``, as the pages of
    docs/ show it (the fault suite's and the soak's tables)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    sep = "  ".join("=" * w for w in widths)
    out = [sep, "  ".join(h.ljust(w) for h, w in zip(header, widths)), sep]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    out.append(sep)
    return "\n".join(out)


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    """Print a Markdown table (what the README's Performance section shows)."""
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")


class KafkaBackend:
    """B3's set-up, for benchmarks that time a run from its facility event: a tansu broker on a
    free loopback port, a context directory ``<work>/ctx`` with the shared benchmark context
    file on the shared fake proposal, and ``amore-proto listen`` (started by :meth:`start`,
    which waits for its " Ready"). Runs ``first..first+count-1`` appear in ``raw/`` of the
    benchmark's own data root only with their events (:meth:`event`); a starting backend
    processes at once the runs it finds on disk. ``env`` is the environment of every process.
    """

    def __init__(self, work: Path, runs: range):
        from tests.kafka_broker import TansuBroker, create_topics, tansu_binary
        from backend.config import load_config
        from backend.store.writer import RunDB
        shared = ensure_proposal(runs="1-40")
        warm_page_cache(shared)
        subprocess.run(["rm", "-rf", str(work)])
        work.mkdir(parents=True)
        root = work / "data"
        pdir = root / shared.relative_to(data_root())
        self.staged = StagedRuns(shared / "raw", work / "staged", runs, raw=pdir / "raw",
                                 link=True)
        self.broker = TansuBroker(tansu_binary(), work / "tansu.log")
        self.address = self.broker.start()
        self.env = bench_env({"AMORE_BROKER": self.address, "EXTRA_DATA_DATA_ROOT": str(root)})
        os.environ.update({"AMORE_BROKER": self.address, "EXTRA_DATA_DATA_ROOT": str(root)})
        self.ctx = work / "ctx"
        subprocess.run([sys.executable, "-m", "amore.cli", "init", str(self.ctx), "--proposal",
                        str(PROPOSAL), "--context", str(BENCH_CONTEXT)], check=True, env=self.env,
                       stdout=subprocess.DEVNULL)
        self.config = load_config(self.ctx)
        self.db_id = RunDB(self.ctx).db_id
        self.topic = self.config["kafka"]["event_topics"][0]
        create_topics(self.address, self.config["kafka"]["event_topics"]
                      + [self.config.update_topic(self.db_id)])
        self.listener = None

    def start(self, timeout: float = 120) -> float:
        """Start the backend; returns the seconds until it was ready."""
        t0 = time.monotonic()
        self.listener = subprocess.Popen([sys.executable, "-m", "amore.cli", "listen",
                                          str(self.ctx)], env=self.env,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                         start_new_session=True)
        log = self.ctx / "amore.log"
        while not (log.exists() and " Ready" in log.read_text()):
            time.sleep(0.05)
            if time.monotonic() - t0 > timeout:
                raise RuntimeError("backend did not start")
        return time.monotonic() - t0

    def event(self, run: int) -> float:
        """Put run ``run`` into ``raw/`` and send its ``migration_complete`` event (the message
        DAMNIT's harness sends); returns the wall time (``time.time()``) just before sending."""
        from tests.kafka_broker import produce
        path = self.staged.announce(run)
        t0 = time.time()
        produce(self.address, self.topic, json.dumps({
            "event": "migration_complete", "proposal": PROPOSAL, "run": run, "path": str(path),
            "instrument": "MID", "cycle": "202201"}).encode())
        return t0

    def stop(self) -> None:
        """Stop the backend and the broker."""
        import signal
        if self.listener is not None and self.listener.poll() is None:
            os.killpg(self.listener.pid, signal.SIGTERM)
            self.listener.wait(20)
        self.broker.stop()


class UpdateArrivals(threading.Thread):
    """When each run's first ``run_values_updated`` message (with names) reaches a consumer of
    the update topic: ``arrivals[run]`` in ``clock()`` seconds. A daemon thread; :meth:`stop`."""

    def __init__(self, config, db_id: str, clock=time.monotonic):
        super().__init__(daemon=True)
        from backend.notify.kafka import UpdateConsumer
        self.consumer = UpdateConsumer(config, db_id)
        self.clock = clock
        self.arrivals: dict[int, float] = {}
        self._halt = threading.Event()
        self.start()

    def run(self):
        while not self._halt.is_set():
            for kind, data in self.consumer.poll(0.1):
                if kind == "run_values_updated" and data.get("names"):
                    self.arrivals.setdefault(int(data["run"]), self.clock())

    def stop(self):
        self._halt.set()
        self.join()
        self.consumer.close()


def start_web(ctx: Path, env: dict, *extra: str, timeout: float = 300,
              output: Path | None = None) -> tuple:
    """``amore-proto web ctx`` on a free loopback port: (process, page URL, API base URL,
    seconds until its table answered). What the server prints after its first line is read
    all along (a full pipe would stop it), into ``output`` if given."""
    import socket
    import urllib.request
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "amore.cli", "web", str(ctx), "--port",
                             str(port), *extra], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    first = proc.stdout.readline()
    if " at http" not in first:
        raise RuntimeError(f"amore-proto web did not start: {first}{proc.stdout.read()}")
    page = first.split(" at ")[-1].strip()
    api = page.replace("/d/", "/api/d/", 1)

    def drain():
        with open(output or os.devnull, "a") as f:
            for line in proc.stdout:
                f.write(line)
                f.flush()
    threading.Thread(target=drain, daemon=True).start()
    while True:
        try:
            urllib.request.urlopen(api + "table?limit=1", timeout=5)
            return proc, page, api, time.monotonic() - t0
        except OSError:
            if time.monotonic() - t0 > timeout:
                raise RuntimeError("amore-proto web did not answer") from None
            time.sleep(0.1)


def stop_process_group(proc, timeout: float = 20) -> None:
    """SIGTERM to a process started with ``start_new_session=True`` and its children."""
    import signal
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
