"""Processing runs: a pool of context-file worker processes and the code path every run takes.

:class:`WorkerPool` keeps ``jobs`` long-lived worker processes (:mod:`backend.ctxrunner.worker`), each
with the context file loaded; a crashed or killed worker is replaced and its run marked failed.
:class:`RunProcessor` is the single path from "run R has data D" to values in the database and
an update message; the listener (Kafka or watcher events) and ``amore-proto reprocess`` both use
it.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from backend import PACKAGE_PARENT
from backend.config import Config
from backend.procs import CGROUP_ENV, Cgroup, descendants
from backend.store.manual import ManualStore
from backend.store.runlogs import add_run_log
from backend.store.writer import RunDB, StoredValue, VariableInfo
from backend.vocab import RunStatus, SummaryType, UpdateKind, Outcome

log = logging.getLogger(__name__)



def facility_settings(config: Config) -> dict:
    """What the context-file worker needs to know of the facility (``$AMORE_FACILITY``, JSON):
    ``facility``, ``columns`` (``[columns]`` of amore.toml), ``attributo_config`` (ESRF: path
    of AMARCORD's mapping file, relative to the context directory), ``options`` (ESS: file open
    retries)."""
    facility = config.facility
    out = {"facility": facility, "columns": config.values.get("columns") or {},
           "attributo_config": "", "options": {}}
    if facility == "esrf":
        out["attributo_config"] = config["esrf"].get("attributo_config") or ""
    if facility == "ess":
        out["options"] = {k: config["ess"][k] for k in ("open_retries", "open_retry_seconds")}
    return out


def context_python(config: Config) -> str:
    """The interpreter that runs the context file (``processing.context_python``, else ours)."""
    return config["processing"]["context_python"] or sys.executable


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
    try:
        from backend.ctxrunner.mymdc import MetadataError, resolve_config
        mymdc = resolve_config(config["mymdc"])
    except MetadataError as e:
        log.error("Metadata service not available to the context file: %s", e)
        mymdc = None
    if mymdc is not None:
        env["AMORE_MYMDC"] = json.dumps(mymdc)
    return env


def run_inputs(db: RunDB, config: Config, proposal: int | str, run: int,
               manual: ManualStore | None = None, manual_names: list[str] | None = None) -> dict:
    """What a worker's ``run`` request carries about a run besides its data (the same for a
    local worker and a Slurm job): ``facility_run`` (other facilities: what the run source
    recorded, from ``source_runs``; None if nothing), ``manual_columns`` (names of the manual
    columns) and ``manual`` (this run's values of them). ``manual_names``: the column names if
    already known (many runs at once). Never raises: what cannot be read is left out (logged)."""
    out: dict = {}
    if config.facility != "euxfel":
        rec = db.source_run(proposal, run)
        out["facility_run"] = rec["info"] if rec else None
    try:
        manual = manual if manual is not None else ManualStore(db)
        names = [c.name for c in manual.columns()] if manual_names is None else list(manual_names)
        out["manual_columns"] = names
        out["manual"] = manual.run_values(proposal, run) if names else {}
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
    (:class:`backend.procs.Cgroup`) where this user may create one."""

    def __init__(self, context_dir: Path, config: Config, index: int = 0, cgroups: bool = True):
        self.context_dir = Path(context_dir)
        self.config = config
        self.index = index
        self.cgroups = cgroups
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

    def __init__(self, context_dir: Path, config: Config, n: int, cgroups: bool = True):
        """``n`` workers for ``context_dir``; ``cgroups``: each in a cgroup of its own where this
        user may create one (see :class:`WorkerProcess`)."""
        self.workers = [WorkerProcess(context_dir, config, i, cgroups) for i in range(n)]
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


@dataclass
class RunOutcome:
    """Result of processing one run: ``status`` (an :class:`~backend.vocab.Outcome`: ``done``,
    ``failed``, ``waiting`` when the context file is broken, ``pending`` when the backend stopped
    before the run was done, ``submitted`` to Slurm, ``closed``, ``cancelled``), with the names
    of the values written."""

    proposal: int | str
    run: int
    status: Outcome
    message: str | None = None
    names: list[str] = field(default_factory=list)
    n_errors: int = 0
    seconds: float = 0.0


class RunProcessor:
    """Processes runs of one context directory: worker request, database write, update message.

    ``publish(kind, data)`` is called after every database write (a no-op without Kafka).
    Thread-safe; the same run is never processed twice at once (requests for a run that is in
    flight are merged and done after it).
    """

    def __init__(self, context_dir: Path, config: Config, db: RunDB, pool: WorkerPool,
                 publish: Callable[[str, dict], None] | None = None):
        self.context_dir = Path(context_dir)
        self.config = config
        self.db = db
        self.pool = pool
        self.publish = publish or (lambda kind, data: None)
        self._lock = threading.Lock()
        self._busy: dict[tuple[int, int], threading.Lock] = {}
        self.context_error: str | None = None
        self.variables: list[VariableInfo] = []
        #: variable name -> names it takes as ``var#`` input (variables and manual columns)
        self.inputs: dict[str, list[str]] = {}
        self.manual = ManualStore(db)
        #: name -> {"cluster", "data", "transient", "deps"} of every variable (also transient)
        self.graph: dict[str, dict] = {}
        #: Set when the backend shuts down: runs whose worker is killed stay pending.
        self.stopping = False
        #: Set by :meth:`cancel`: runs in flight go back to their previous state.
        self.cancelled = False
        #: ``(proposal, run)`` handed to the pool now, and those of them :meth:`cancel_run` stops
        self._in_flight: set[tuple[int | str, int]] = set()
        self._cancelled_runs: set[tuple[int | str, int]] = set()
        #: ``(proposal, run)`` whose values could not be stored for a reason that may pass
        #: (disk full, database locked too long); the listener processes them again later.
        self.deferred: set[tuple[int | str, int]] = set()

    def take_deferred(self) -> list[tuple[int | str, int]]:
        """The runs to process again (see :attr:`deferred`); the set is emptied."""
        with self._lock:
            out, self.deferred = sorted(self.deferred, key=lambda k: (str(k[0]), k[1])), set()
        return out

    def cancel(self) -> None:
        """Cancel the work in progress (a reprocess stopped by the user): runs being processed
        have their worker killed and return to their previous status, saying they were
        cancelled (their previous values stay); runs not started are not touched."""
        self.cancelled = True
        self.pool.kill_busy()

    def cancel_run(self, proposal: int | str, run: int) -> None:
        """Stop the processing of one run now (a one-off reprocess whose requester cancelled):
        its worker is killed (and replaced), the run returns to its previous status and keeps
        its previous values, as with :meth:`cancel`. Nothing happens to a run not in flight."""
        key = (proposal, run)
        with self._lock:
            if key not in self._in_flight:
                return
            self._cancelled_runs.add(key)
        self.pool.kill_request(key)

    def _run_cancelled(self, key) -> bool:
        with self._lock:
            return key in self._cancelled_runs

    def load_context(self) -> str | None:
        """(Re)load the context file in a worker; store its variables. Returns the error text
        for a broken file, else None."""
        try:
            reply = self.pool.request({"op": "load", "manual_columns": self._manual_names()},
                                      timeout=120)
        except WorkerDied as e:
            reply = {"ok": False, "error": f"context file could not be loaded: {e}"}
        if not reply.get("ok"):
            self.context_error = reply.get("error", "unknown error")
            return self.context_error
        self.context_error = None
        self.variables = [VariableInfo(**v) for v in reply["variables"]]
        self.inputs = dict(reply.get("inputs") or {})
        self.graph = reply.get("graph") or {}
        if self.db.set_variables(self.variables):
            self.publish(UpdateKind.VARIABLES_CHANGED, {"names": [v.name for v in self.variables]})
        return None

    def _manual_names(self) -> list[str]:
        try:
            return [c.name for c in self.manual.columns()]
        except Exception as e:  # never let this stop processing
            log.error("Cannot read the manual columns: %s", e)
            return []

    def dependents(self, names) -> list[str]:
        """Variables that take any of ``names`` (manual columns or variables) as input,
        directly or through other variables, in no particular order."""
        out: set[str] = set()
        todo = set(names)
        while todo:
            n = todo.pop()
            for var, ins in self.inputs.items():
                if n in ins and var not in out:
                    out.add(var)
                    todo.add(var)
        return sorted(out)

    def recompute_for_manual(self, proposal: int | str, run: int, names) -> "RunOutcome | None":
        """Recompute the variables of ``run`` that depend on the manual columns ``names``
        (after someone edited them); None if no variable depends on them."""
        deps = self.dependents(names)
        if not deps:
            return None
        log.info("Run %d: %s changed; recomputing %s", run, ", ".join(sorted(names)),
                 ", ".join(deps))
        return self.process(proposal, run, "all", names=deps)

    def _store_log(self, proposal, run, status, text) -> None:
        try:
            add_run_log(self.db, proposal, run, status, text)
        except Exception as e:
            log.error("Run %d: could not store its processing log: %s", run, e)

    def _try_status(self, proposal, run, status, message) -> None:
        try:
            self.db.set_run_status(proposal, run, status, message)
        except Exception as e:
            log.error("Run %d: could not record status %s: %s", run, status, e)

    def _event(self, level, source, message, run, proposal) -> None:
        """Add to the event log; never raises (the database may be what fails)."""
        try:
            self.db.add_event(level, source, message, run=run, proposal=proposal)
        except Exception as e:
            log.debug("Could not write to the event log: %s", e)

    def _status_or_defer(self, proposal, run, status, message) -> bool:
        """Record a run's status; if the database cannot be written for a reason that may pass
        (disk full...), log it, remember the run for a later retry and return False."""
        from backend.store.writer import is_transient_db_error
        try:
            self.db.set_run_status(proposal, run, status, message)
            return True
        except Exception as e:
            if not is_transient_db_error(e):
                raise
            log.error("Run %d: could not record status %s: %s; retried later", run, status, e)
            with self._lock:
                self.deferred.add((proposal, run))
            return False

    def busy(self) -> bool:
        """True while any run is being processed."""
        with self._lock:
            return any(lock.locked() for lock in self._busy.values())

    def _run_lock(self, proposal, run) -> threading.Lock:
        with self._lock:
            return self._busy.setdefault((proposal, run), threading.Lock())

    def process(self, proposal: int | str, run: int, data: str = "all", names=None,
                params: dict | None = None) -> RunOutcome:
        """Compute variables of one run and store them; never raises for bad data or user code.

        ``data``: ``"raw"`` (raw variables), ``"proc"`` (proc variables) or ``"all"``.
        """
        t0 = time.perf_counter()
        from backend.store.trust import is_closed
        if is_closed(self.db):
            return RunOutcome(proposal, run, Outcome.CLOSED,
                              "the proposal is closed (amore-proto reopen to change values)")
        with self._run_lock(proposal, run):
            if self.cancelled:
                return RunOutcome(proposal, run, Outcome.CANCELLED, "cancelled before it started")
            before = self.db.get_run(proposal, run)
            if not self._status_or_defer(proposal, run, RunStatus.PROCESSING.value, None):
                return RunOutcome(proposal, run, Outcome.FAILED,
                                  "the database cannot be written",
                                  seconds=time.perf_counter() - t0)
            self.publish(UpdateKind.RUN_STATUS_CHANGED, {"proposal": proposal, "run": run,
                                                "status": RunStatus.PROCESSING.value})
            timeout = float(self.config["processing"]["run_timeout"])
            req = {"op": "run", "proposal": proposal, "run": run, "data": data,
                   "names": list(names) if names else None, "params": params or {}}
            req.update(run_inputs(self.db, self.config, proposal, run, self.manual))
            key = (proposal, run)
            with self._lock:
                self._in_flight.add(key)
            try:
                reply = self.pool.request(req, timeout=timeout, key=key,
                                          cancelled=lambda: self._run_cancelled(key))
            except WorkerDied as e:
                reply = {"ok": False, "kind": "died", "error": str(e)}
            finally:
                with self._lock:
                    run_cancelled = key in self._cancelled_runs
                    self._cancelled_runs.discard(key)
                    self._in_flight.discard(key)
            if reply.get("ok"):
                values = {n: StoredValue.from_json(v) for n, v in reply["values"].items()}
                n_err = sum(v.summary_type == SummaryType.ERROR for v in values.values())
                msg = f"{n_err} variable(s) failed" if n_err else None
                if reply.get("storage_error"):
                    msg = "; ".join(filter(None, [msg, reply["storage_error"]]))
                    log.error("Run %d: %s", run, reply["storage_error"])
                try:
                    self.db.write_values(proposal, run, values, status=RunStatus.DONE.value,
                                         status_message=msg, start_time=reply.get("start_time"))
                except Exception as e:  # e.g. disk full: say so, keep the run for reprocessing
                    log.error("Run %d: could not store values in the database: %s", run, e)
                    self._try_status(proposal, run, RunStatus.FAILED.value, f"could not store values: {e}")
                    self._event("error", "database", f"Run {run}: values could not be stored "
                                f"({e}); retried later", run, proposal)
                    from backend.store.writer import is_transient_db_error
                    if is_transient_db_error(e):
                        with self._lock:
                            self.deferred.add((proposal, run))
                    return RunOutcome(proposal, run, Outcome.FAILED, str(e),
                                      seconds=time.perf_counter() - t0)
                outcome = RunOutcome(proposal, run, Outcome.DONE, msg, sorted(values), n_err)
                self._store_log(proposal, run, "done" if not n_err else "done with errors",
                                (f"(only {', '.join(sorted(names))})\n" if names else "")
                                + (reply.get("log") or ""))
                t = reply.get("timings", {})
                shared = f"{t['processes']} processes; " if t.get("processes", 1) > 1 else ""
                log.info("Run %d: %d variables in %.2f s (%sopen %.2f, variables %.2f, store %.2f)%s",
                         run, len(values), time.perf_counter() - t0, shared, t.get("open", 0),
                         t.get("variables", 0), t.get("store", 0),
                         f"; {n_err} failed" if n_err else "")
            elif reply.get("kind") == "context":
                self.context_error = reply.get("error")
                msg = f"waiting for a working context file: {reply.get('error')}"
                self._status_or_defer(proposal, run, RunStatus.WAITING.value, msg)
                outcome = RunOutcome(proposal, run, Outcome.WAITING, msg)
                log.error("Run %d recorded, not processed: context file is broken:\n%s",
                          run, reply.get("error"))
            elif reply.get("kind") == "died" and (self.cancelled or run_cancelled):
                prev = (before or {}).get("status")
                status = (prev if prev in (RunStatus.DONE.value, RunStatus.FAILED.value)
                          else RunStatus.PENDING.value)
                msg = "reprocessing cancelled; the values from before are kept"
                self.db.set_run_status(proposal, run, status, msg)
                outcome = RunOutcome(proposal, run, Outcome.CANCELLED, msg)
                self._store_log(proposal, run, "cancelled", msg + "\n")
                log.warning("Run %d: %s", run, msg)
            elif reply.get("kind") == "died" and self.stopping:
                msg = "interrupted by backend shutdown; processed at next start"
                self._status_or_defer(proposal, run, RunStatus.PENDING.value, msg)
                self._store_log(proposal, run, "cancelled", msg + "\n")
                outcome = RunOutcome(proposal, run, Outcome.PENDING, msg)
                log.warning("Run %d abandoned at shutdown", run)
            else:
                msg = reply.get("error", "unknown error")
                self._status_or_defer(proposal, run, RunStatus.FAILED.value, msg)
                self._store_log(proposal, run, "failed", msg + "\n")
                outcome = RunOutcome(proposal, run, Outcome.FAILED, msg)
                log.error("Run %d failed: %s", run, msg)
                if reply.get("kind") == "died":
                    try:
                        self.db.add_event("error", "worker", f"Run {run}: {msg}", run=run,
                                          proposal=proposal, details={"data": data})
                    except Exception as e:
                        log.error("Could not record the event: %s", e)
            outcome.seconds = time.perf_counter() - t0
            self.publish(UpdateKind.RUN_VALUES_UPDATED, {"proposal": proposal, "run": run,
                                                "names": outcome.names,
                                                "status": outcome.status})
            return outcome
