"""The warm local pool: context-file worker processes, and what starts one.

:class:`WorkerPool` keeps ``jobs`` long-lived worker processes (:mod:`backend.ctxrunner.worker`), each
with the context file loaded; a crashed or killed worker is replaced and its run marked failed.
:func:`worker_env` and :func:`run_inputs` say what a process evaluating the context file gets (a
local worker or a Slurm job). The run path that uses the pool is
:mod:`backend.processing.runpath`.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import selectors
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from backend import PACKAGE_PARENT
from backend.config import Config
from backend.procs import CGROUP_ENV, Cgroup, descendants

if TYPE_CHECKING:
    from backend.store.writer import RunDB

log = logging.getLogger(__name__)



def facility_settings(config: Config) -> dict:
    """What the context-file worker needs to know of the facility (``$AMORE_FACILITY``, JSON):
    ``facility`` (its name), ``run_module`` (its worker module, which opens runs),
    ``columns`` (``[columns]`` of amore.toml) and what the facility adds
    (:meth:`~backend.facilities.Facility.worker_settings`: ``attributo_config``,
    ``options``). Raises :class:`backend.facilities.FacilityError` for an unknown facility."""
    from backend.facilities import get
    plugin = get(config.facility)
    return {"facility": plugin.name, "run_module": plugin.run_module,
            "columns": config.values.get("columns") or {}, **plugin.worker_settings(config)}


def context_python(config: Config) -> str:
    """The interpreter that runs the context file (``processing.context_python``, else ours)."""
    return config["processing"]["context_python"] or sys.executable


def watch_modules(config: Config) -> list[str]:
    """``[processing] watch_modules``: modules whose code counts as the context file's."""
    mods = config["processing"].get("watch_modules") or []
    return [mods] if isinstance(mods, str) else [str(m) for m in mods]


def context_state(config: Config, manual: list[str], loaded: dict,
                  mtime: float | None = None) -> dict:
    """What the code digests of a load depend on (:func:`backend.store.provenance.state_key`):
    ``loaded``: the worker's ``context`` reply (``sha``: SHA-256 of the file, ``watched``: path
    -> SHA-256 of the watched modules' files). Returns ``{"key", "sha",
    "watched", "mtime"}``."""
    from backend.store.provenance import state_key
    sha, watched = loaded.get("sha"), dict(loaded.get("watched") or {})
    key = state_key(sha, watched, manual, config.values.get("columns") or {},
                    context_python(config), watch_modules(config))
    return {"key": key, "sha": sha, "watched": watched, "mtime": mtime}


def context_state_now(config: Config, context_dir, manual: list[str],
                      recorded: dict | None) -> dict:
    """:func:`context_state` of the files as they are now (the context file's text, the
    watched files ``recorded`` at the last load): equal ``key`` -> nothing to load again."""
    from backend.contextdir import ContextDir
    from backend.ctxrunner.provenance import file_sha
    path = ContextDir(context_dir).context_file
    watched = {p: file_sha(p) for p in ((recorded or {}).get("watched") or {})}
    return context_state(config, manual, {"sha": file_sha(path), "watched": watched})


def worker_env(config: Config) -> dict[str, str]:
    """Environment of a process evaluating the context file (a local worker or a Slurm job):
    ours plus ``PYTHONPATH`` reaching AMORE, ``MPLBACKEND=Agg``, thumbnail/sparkline sizes, the
    data root, the facility's settings (``AMORE_FACILITY``, :func:`facility_settings`) and the
    metadata service's settings (``AMORE_MYMDC``, never on a command line)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = PACKAGE_PARENT + (os.pathsep + env["PYTHONPATH"]
                                          if env.get("PYTHONPATH") else "")
    env["MPLBACKEND"] = "Agg"
    env["AMORE_THUMBNAIL_PX"] = str(config["processing"]["thumbnail_px"])
    env["AMORE_SPARKLINE_POINTS"] = str(config["processing"]["sparkline_points"])
    if config.data_root:
        env["EXTRA_DATA_DATA_ROOT"] = str(config.data_root)
    env.pop("AMORE_MYMDC", None)
    env.pop(CGROUP_ENV, None)  # a local worker gets its own (WorkerProcess.start)
    env["AMORE_FACILITY"] = json.dumps(facility_settings(config))
    env["AMORE_WATCH_MODULES"] = json.dumps(watch_modules(config))
    try:
        from backend.ctxrunner.mymdc import MetadataError, resolve_config
        mymdc = resolve_config(config["mymdc"])
    except MetadataError as e:
        log.error("Metadata service not available to the context file: %s", e)
        mymdc = None
    if mymdc is not None:
        env["AMORE_MYMDC"] = json.dumps(mymdc)
    return env


def run_inputs(db: RunDB, proposal: int | str, run: int) -> dict:
    """What a worker's ``run`` request carries about a run besides its data (the same for a
    local worker and a Slurm job): ``facility_run`` (what the run source recorded, from
    ``source_runs``; None if nothing, as for every European XFEL run), ``manual_columns`` (names
    of the manual columns) and ``manual`` (this run's values of them). Never raises: what cannot
    be read is left out (logged)."""
    out: dict = {}
    rec = db.source_run(proposal, run)
    out["facility_run"] = rec["info"] if rec else None
    try:
        out["manual_columns"], out["manual"] = db.manual_values(proposal, run)
    except Exception as e:
        log.error("Run %s: cannot read its manual values: %s", run, e)
    return out


class WorkerDied(Exception):
    """The worker process exited or was killed while handling a request."""


class WorkerProcess:
    """One context-file worker process (started lazily, restarted after a crash).

    ``proc`` is the worker's keeper (:func:`backend.procs.keep_descendants`), whose only
    child computes the runs: when the worker ends, however, the keeper kills what the context
    file left behind, and ends as the worker did. With ``cgroups`` (the default) the worker
    and everything it starts also run in a cgroup of their own
    (:class:`backend.procs.Cgroup`) where this user may create one. ``warm_up`` (the
    default): the worker loads, before its first request, what a first run would load on
    first use (``$AMORE_WARM_UP``, see :func:`backend.ctxrunner.worker.main`)."""

    def __init__(self, context_dir: Path, config: Config, index: int = 0, cgroups: bool = True,
                 warm_up: bool = True):
        self.context_dir = Path(context_dir)
        self.config = config
        self.index = index
        self.cgroups = cgroups
        self.warm_up = warm_up
        self.proc: subprocess.Popen | None = None
        self.cgroup = None  # backend.procs.Cgroup of the running worker, if any
        self._next_id = 0
        self._buf = b""

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> None:
        python = context_python(self.config)
        env = worker_env(self.config)
        env["AMORE_MEMORY_LIMIT_MB"] = str(float(
            self.config["processing"].get("worker_memory_mb") or 0))
        env["AMORE_KEEP_MEMORY_MB"] = str(float(
            self.config["processing"].get("worker_keep_mb") or 0))
        env["AMORE_WARM_UP"] = "1" if self.warm_up else "0"
        self._end_cgroup()  # that of a worker that died idle (with its keeper)
        self.cgroup = Cgroup.create(f"amore-worker{self.index}-{os.getpid()}-"
                                    f"{os.urandom(4).hex()}") if self.cgroups else None
        if self.cgroup is not None:
            env[CGROUP_ENV] = str(self.cgroup.path)
        self.proc = subprocess.Popen(
            [python, "-m", "backend.ctxrunner.worker", str(self.context_dir)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd=str(self.context_dir), env=env, start_new_session=True)
        self._buf = b""
        wlog = logging.getLogger(f"amore.worker{self.index}")
        threading.Thread(target=self._pump_stderr, args=(self.proc, wlog),
                         name=f"worker{self.index}-stderr", daemon=True).start()
        log.debug("Started context worker %d (PID %d, %s)", self.index, self.proc.pid, python)

    #: Longest line of worker output logged (longer ones are cut), characters.
    MAX_LINE = 2000
    #: At most this many lines of worker output are logged per :data:`OUTPUT_WINDOW` seconds;
    #: the rest are counted and the count is logged.
    MAX_LINES = 200
    OUTPUT_WINDOW = 10.0

    @classmethod
    def _pump_stderr(cls, proc, wlog):
        """Log what the worker (user code) prints, without letting megabytes of output fill the
        log or the memory: long lines are cut, floods are counted, not logged."""
        window_start, n, dropped = time.monotonic(), 0, 0
        while True:
            line = proc.stderr.readline(1 << 16)
            if not line:
                break
            now = time.monotonic()
            if now - window_start >= cls.OUTPUT_WINDOW:
                if dropped:
                    wlog.warning("(%d more lines of output not logged)", dropped)
                window_start, n, dropped = now, 0, 0
            if n >= cls.MAX_LINES:
                if not dropped:
                    wlog.warning("(output flood: further lines are not logged for %.0f s)",
                                 cls.OUTPUT_WINDOW - (now - window_start))
                dropped += 1
                continue
            n += 1
            text = line.decode("utf-8", "replace").rstrip()
            if len(text) > cls.MAX_LINE:
                text = text[:cls.MAX_LINE] + f"... [cut at {cls.MAX_LINE} characters]"
            wlog.info("%s", text)
        if dropped:
            wlog.warning("(%d more lines of output not logged)", dropped)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    #: Seconds between checks, while waiting for a reply, that the worker's keeper still runs.
    POLL = 1.0

    def request(self, req: dict, timeout: float | None = None) -> dict:
        """Send one request and wait for its reply.

        Raises :class:`WorkerDied` if the process exits (e.g. killed by a signal) or does not
        answer within ``timeout`` seconds (it is then killed).
        """
        if not self.alive():
            self.start()
        self._next_id += 1
        req = dict(req, id=self._next_id)
        try:
            self.proc.stdin.write((json.dumps(req) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise WorkerDied(self._death_reason()) from None
        deadline = None if timeout is None else time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buf:
                wait = None if deadline is None else max(0.0, deadline - time.monotonic())
                if wait is not None and wait == 0.0:
                    self.kill()
                    raise WorkerDied(f"timed out: no result within {timeout:g} s "
                                     f"([processing] run_timeout); its worker process was "
                                     f"killed")
                if not sel.select(self.POLL if wait is None else min(wait, self.POLL)):
                    if self.proc.poll() is not None:
                        # the keeper ended, but what it left (killed with it) holds the pipe
                        raise WorkerDied(self._death_reason())
                    continue
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    raise WorkerDied(self._death_reason())
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        try:
            reply = json.loads(line)
            if not isinstance(reply, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:   # something wrote into the reply channel
            self.kill()
            raise WorkerDied(f"the worker's reply could not be read ({e}); worker restarted")
        return reply

    def _death_reason(self) -> str:
        try:
            rc = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
            rc = self.proc.returncode
        # processes the dead worker's context code started are still in its process group
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._end_cgroup()
        if rc is not None and rc < 0:
            try:
                name = signal.Signals(-rc).name
            except ValueError:
                name = str(-rc)
            why = {"SIGSEGV": "a crash in native code (segmentation fault)",
                   "SIGBUS": "a crash in native code (bus error)",
                   "SIGABRT": "an abort in native code",
                   "SIGILL": "a crash in native code (illegal instruction)",
                   "SIGFPE": "a crash in native code (arithmetic error)",
                   "SIGKILL": "killed (out of memory, or by someone)"}.get(name)
            return f"context worker process was killed by {name}" + (f": {why}" if why else "")
        return f"context worker process exited with code {rc}"

    #: Seconds :meth:`kill` gives the keeper to kill the worker and what it started.
    KILL_WAIT = 5.0

    def kill(self) -> None:
        """Kill the worker and every process it started (also those that left its process group
        with setsid): its keeper does, at SIGTERM; if the keeper does not end within
        :data:`KILL_WAIT` seconds, the worker's cgroup, process group and process tree are
        killed from here."""
        proc = self.proc
        if proc and proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(self.KILL_WAIT)
            except subprocess.TimeoutExpired:
                tree = descendants(proc.pid)
                if self.cgroup is not None:
                    self.cgroup.kill()
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                for pid in tree:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                proc.wait()
        self._end_cgroup()

    def _end_cgroup(self) -> None:
        """After the keeper ended: remove the worker's cgroup (the keeper does; this is for a
        keeper that was killed), killing what may still be in it."""
        cgroup = self.cgroup
        if cgroup is not None and self.proc is not None and self.proc.poll() is not None:
            if cgroup.pids():
                cgroup.kill()
            if cgroup.remove():
                self.cgroup = None

    def stop(self, timeout: float = 2.0) -> None:
        """Ask the worker to exit; wait ``timeout`` seconds (0: do not wait), then kill it."""
        if self.proc and self.proc.poll() is None:
            try:
                self.proc.stdin.write(b'{"op": "exit"}\n')
                self.proc.stdin.flush()
                if timeout:
                    self.proc.wait(timeout)
            except (OSError, subprocess.TimeoutExpired):
                self.kill()
        self._end_cgroup()


class WorkerPool:
    """``n`` worker processes shared by threads; :meth:`request` borrows an idle one."""

    def __init__(self, context_dir: Path, config: Config, n: int, cgroups: bool = True,
                 warm_up: bool = True):
        """``n`` workers for ``context_dir``; ``cgroups``: each in a cgroup of its own where this
        user may create one, ``warm_up``: each loading before its first request what a first run
        loads on first use (see :class:`WorkerProcess`); :meth:`grow` adds more."""
        self._new = lambda i: WorkerProcess(context_dir, config, i, cgroups, warm_up)
        self.workers = [self._new(i) for i in range(n)]
        #: [processing] processes_per_run: a run may share its work with forked copies of its
        #: worker, one per other idle worker, up to this many processes in all
        self.processes_per_run = max(1, int(config["processing"].get("processes_per_run") or 1))
        # last in, first out: the worker that finished last takes the next run (its memory,
        # caches and the variables' timings are warm; the others lend their cores to it)
        self._idle: queue.LifoQueue[WorkerProcess] = queue.LifoQueue()
        for w in reversed(self.workers):
            self._idle.put(w)
        self._keys_lock = threading.Lock()
        self._by_key: dict = {}  # request key -> the worker handling it

    def start(self) -> None:
        """Start every worker now (their imports then overlap with other start-up work)."""
        for w in self.workers:
            if not w.alive():
                w.start()

    def grow(self, n: int, ready: dict | None = None) -> int:
        """Add workers up to ``n`` in all, started now, each of them sent ``ready`` (a request:
        the ``load`` the others got) by a thread of its own; a new worker is lent to
        :meth:`request` only once it has answered, so a request never waits for a worker still
        starting while another one is idle. Returns how many were added."""
        added = []
        for i in range(len(self.workers), n):
            w = self._new(i)
            self.workers.append(w)
            added.append(w)
        for w in added:
            try:
                w.start()
            except OSError as e:  # lent all the same: its first request starts it again
                log.warning("Worker %d did not start: %s", w.index, e)
                self._idle.put(w)
                continue
            threading.Thread(target=self._lend_when_ready, args=(w, ready),
                             name=f"worker{w.index}-start", daemon=True).start()
        return len(added)

    def _lend_when_ready(self, w: WorkerProcess, ready: dict | None) -> None:
        try:
            if ready is not None:
                reply = w.request(ready, timeout=120)
                if not reply.get("ok"):
                    log.debug("Worker %d answered %s: %s", w.index, ready.get("op"),
                              reply.get("error"))
        except (WorkerDied, OSError) as e:  # lent all the same: its next request restarts it
            log.debug("Worker %d did not start: %s", w.index, e)
        finally:
            self._idle.put(w)

    def request(self, req: dict, timeout: float | None = None, key=None,
                cancelled: Callable[[], bool] | None = None) -> dict:
        """Send ``req`` to an idle worker (waiting for one) and return its reply; a run request
        gets ``"split"``: how many processes it may use (1 + the workers idle now, at most
        ``processes_per_run``). ``key`` (hashable) names the request for :meth:`kill_request`;
        ``cancelled()``, asked once the worker is taken, says it was cancelled meanwhile.
        Raises :class:`WorkerDied` as :meth:`WorkerProcess.request`, and when cancelled."""
        w = self._idle.get()
        try:
            if key is not None:
                with self._keys_lock:
                    self._by_key[key] = w
            if cancelled is not None and cancelled():
                raise WorkerDied("cancelled before it started")
            if req.get("op") == "run":
                req = dict(req, split=min(self.processes_per_run, 1 + self._idle.qsize()))
            return w.request(req, timeout)
        finally:
            if key is not None:
                with self._keys_lock:
                    self._by_key.pop(key, None)
            self._idle.put(w)

    def kill_request(self, key) -> bool:
        """Kill the worker handling the request named ``key`` (it is replaced at its next
        request; the request raises :class:`WorkerDied`). False if no such request runs."""
        with self._keys_lock:
            w = self._by_key.get(key)
        if w is None:
            return False
        w.kill()
        return True

    def kill_busy(self) -> None:
        """Kill workers that are handling a request (used when abandoning work at shutdown)."""
        idle = set()
        while True:
            try:
                idle.add(self._idle.get_nowait())
            except queue.Empty:
                break
        for w in self.workers:
            if w not in idle:
                w.kill()
        for w in idle:
            self._idle.put(w)

    def stop(self, wait: bool = True) -> None:
        """End the workers; ``wait=False`` only asks them (a command about to exit need not
        wait for their interpreter teardown)."""
        for w in self.workers:
            w.stop(2.0 if wait else 0)
