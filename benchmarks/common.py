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
    pdir = root / instrument / cycle / f"p{proposal:06d}"
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
        self.pdir = self.data / "MID" / "202201" / f"p{PROPOSAL:06d}"
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


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    """Print a Markdown table (what the README's Performance section shows)."""
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")
