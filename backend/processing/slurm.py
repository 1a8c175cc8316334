"""Processing on Slurm: heavy variables and big reprocessing as batch jobs.

Which variables go to Slurm is configured (``[processing] slurm``: ``"cluster"`` = those with
``cluster=True`` and every variable depending on them, ``"all"``, ``"none"``); whether Slurm is
used at all too (``[slurm] enabled``: ``"auto"`` = where ``sbatch`` is found and Slurm answers).

The run path (:meth:`backend.processing.runpath.RunPath.dispatch`) sends the run's local variables
to the warm local pool, where they are stored at once, and submits its Slurm variables as one job
(``sbatch``, job name ``amore-p<proposal>-r<run>``) through :class:`SlurmExecutor`.

A job (:mod:`backend.ctxrunner.slurmjob`) never writes ``runs.sqlite``: it writes the run's HDF5
data and a versioned JSON of table values under ``slurm/results/``. :meth:`SlurmExecutor.poll`
-- called by the backend every ``[slurm] poll_seconds``, or by the command line when no backend
runs -- learns of finished jobs without relying on inotify, from the result files and the job states
(``squeue``, then ``scontrol``, ``sacct`` or the job-completion file, whichever the site has),
stores their values, and turns a job that ended badly (cancelled, time limit, out of memory,
node failure, non-zero exit, vanished) into errors of exactly its variables of its runs, naming
the Slurm state and the log file. Job states are kept in the ``slurm_jobs`` table. Where inotify
sees a result file appear (a job on this host, or a local file system; :meth:`SlurmExecutor.
watch_results`) or a job says on the broker that it finished, the follower polls at once.

Files under the context directory (:class:`backend.contextdir.ContextDir`): ``slurm/jobs/<job>.json``
(record of each submitted job, version 1; moved to ``jobs/done/`` once handled),
``slurm/specs/`` (what a job computes), ``slurm/results/`` (hand-over), ``slurm/logs/`` (job
output, per run), ``slurm/cancelled/<task>`` (tasks cancelled through AMORE, so a pending task
that Slurm forgets at once is still reported as cancelled).
"""
from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from backend.config import Config
from backend.contextdir import ContextDir
from backend.ctxrunner.slurmjob import RESULT_KIND, RESULT_VERSION, SPEC_VERSION, result_path
from backend.files import write_json_atomic
from backend.processing.local import context_python, run_inputs, worker_env
from backend.store.writer import RunDB
from backend.vocab import EventLevel, RunStatus, StoredValue, SummaryType, UpdateKind, normalize_proposal
from backend.watch import FileWatch

log = logging.getLogger(__name__)

RECORD_VERSION = 1
RECORD_KIND = "amore.slurm-job"
#: Slurm states of a job that has not ended yet.
ACTIVE_STATES = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED",
                 "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED",
                 "RESV_DEL_HOLD", "SPECIAL_EXIT"}
#: The state AMORE gives a task Slurm no longer knows and that left no result.
VANISHED = "VANISHED"


class SlurmError(RuntimeError):
    """A Slurm command failed or is not available; the text says which and why."""


@dataclass
class TaskState:
    """One task as Slurm reports it: ``state`` (``PENDING``, ``RUNNING``, ``COMPLETED``,
    ``CANCELLED``, ``TIMEOUT``, ``OUT_OF_MEMORY``, ``NODE_FAIL``, ``FAILED``, ...), ``node``,
    ``elapsed`` (seconds, None if unknown), ``reason`` (Slurm's reason or exit code), ``source``
    (which tool said so)."""

    task_id: str
    state: str
    node: str | None = None
    elapsed: float | None = None
    reason: str | None = None
    source: str = ""

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


def parse_elapsed(text: str | None) -> float | None:
    """Slurm durations (``"0:05"``, ``"1:02:03"``, ``"2-01:02:03"``) in seconds; None if not one."""
    if not text or text in ("N/A", "INVALID", "UNLIMITED"):
        return None
    days = 0
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d)
    try:
        parts = [float(p) for p in text.split(":")]
    except ValueError:
        return None
    secs = 0.0
    for p in parts:
        secs = secs * 60 + p
    return days * 86400 + secs


def expand_task_ids(spec: str) -> list[int]:
    """Array task ids of ``"1-4%2"``, ``"1-2,4"`` or ``"7"``."""
    spec = spec.split("%", 1)[0]
    out: list[int] = []
    for part in spec.split(","):
        if not part:
            continue
        if "-" in part:
            a, b = part.split("-", 1)
            step = 1
            if ":" in b:
                b, s = b.split(":", 1)
                step = int(s)
            out += list(range(int(a), int(b) + 1, step))
        else:
            out.append(int(part))
    return out


def _kv_line(line: str) -> dict:
    return dict(m.groups() for m in re.finditer(r"(\w+)=(\S*)", line))


class SlurmCommands:
    """The Slurm command-line tools, each call bounded by ``timeout`` seconds. Uses the
    environment as it is (``SLURM_CONF`` and the site's settings)."""

    def __init__(self, timeout: float = 30.0):
        self.timeout = timeout
        self._sacct_works: bool | None = None
        self._jobcomp: Path | None | bool = False  # False: not looked up yet

    def _run(self, args: list[str], env=None, check=True) -> subprocess.CompletedProcess:
        try:
            p = subprocess.run(args, capture_output=True, text=True, timeout=self.timeout,
                               env=env)
        except FileNotFoundError:
            raise SlurmError(f"{args[0]} not found") from None
        except subprocess.TimeoutExpired:
            raise SlurmError(f"{' '.join(args[:2])} did not answer within {self.timeout:.0f} s") from None
        if check and p.returncode:
            raise SlurmError(f"{' '.join(args[:2])} failed: {(p.stderr or p.stdout).strip()}")
        return p

    def check(self) -> str | None:
        """None where ``sbatch`` is found and the controller answers; else the reason."""
        if not shutil.which("sbatch"):
            return "sbatch not found"
        try:
            self._run(["sinfo", "-h", "-o", "%P"])
        except SlurmError as e:
            return str(e)
        return None

    def sbatch(self, args: list[str], env=None) -> str:
        """Submit; returns the job id (``sbatch --parsable``). Raises :class:`SlurmError`."""
        out = self._run(["sbatch", "--parsable", *args], env=env).stdout.strip()
        job = out.split(";")[0].strip()
        if not job.isdigit():
            raise SlurmError(f"sbatch gave no job id: {out!r}")
        return job

    def cancel(self, ids: Iterable[str]) -> None:
        ids = list(ids)
        if ids:
            self._run(["scancel", *ids])

    def states(self, task_ids: Iterable[str]) -> dict[str, TaskState]:
        """Current state of each task (``"<job>"`` or ``"<array>_<i>"``) that Slurm still
        knows: ``squeue``, then ``scontrol show job``, ``sacct`` and the job-completion file
        for the rest. Tasks known to none are missing from the result. Raises
        :class:`SlurmError` when ``squeue`` itself fails for another reason than unknown ids."""
        want = set(task_ids)
        found: dict[str, TaskState] = {}
        if not want:
            return found
        bases = sorted({t.split("_")[0] for t in want}, key=int)
        p = self._run(["squeue", "-h", "-r", "-j", ",".join(bases), "-o", "%i|%T|%N|%M|%r"],
                      check=False)
        if p.returncode and "Invalid job id" not in p.stderr:
            raise SlurmError(f"squeue failed: {p.stderr.strip()}")
        for line in p.stdout.splitlines():
            f = line.strip().split("|")
            if len(f) >= 5 and f[0] in want:
                found[f[0]] = TaskState(f[0], f[1], f[2] or None, parse_elapsed(f[3]),
                                        None if f[4] in ("None", "") else f[4], "squeue")
        missing = want - set(found)
        for base in sorted({t.split("_")[0] for t in missing}, key=int):
            p = self._run(["scontrol", "-o", "show", "job", base], check=False)
            for line in p.stdout.splitlines():
                kv = _kv_line(line)
                state = kv.get("JobState")
                if not state:
                    continue
                if kv.get("ArrayJobId"):
                    ids = [f"{kv['ArrayJobId']}_{i}" for i in expand_task_ids(kv.get("ArrayTaskId", ""))]
                else:
                    ids = [kv.get("JobId", "")]
                reason = kv.get("Reason")
                if state not in ACTIVE_STATES:
                    code = kv.get("ExitCode")
                    reason = f"exit code {code}" if code and code != "0:0" else None
                for t in ids:
                    if t in missing:
                        found[t] = TaskState(t, state, kv.get("NodeList") or None,
                                             parse_elapsed(kv.get("RunTime")),
                                             None if reason in (None, "None") else reason,
                                             "scontrol")
        missing = want - set(found)
        if missing:
            found.update(self._sacct(missing))
        missing = want - set(found)
        if missing:
            found.update(self._from_jobcomp(missing))
        return found

    def _sacct(self, want: set[str]) -> dict[str, TaskState]:
        if self._sacct_works is False:
            return {}
        p = self._run(["sacct", "-n", "-P", "-X", "-j", ",".join(sorted(want)),
                       "-o", "JobID,State,NodeList,Elapsed,ExitCode"], check=False)
        if p.returncode:
            self._sacct_works = False
            return {}
        self._sacct_works = True
        out = {}
        for line in p.stdout.splitlines():
            f = line.split("|")
            if len(f) >= 5 and f[0] in want:
                state = f[1].split()[0] if f[1] else "UNKNOWN"
                out[f[0]] = TaskState(f[0], state, f[2] or None, parse_elapsed(f[3]),
                                      f"exit code {f[4]}" if f[4] not in ("", "0:0") else None,
                                      "sacct")
        return out

    def _jobcomp_file(self) -> Path | None:
        if self._jobcomp is False:
            self._jobcomp = None
            p = self._run(["scontrol", "show", "config"], check=False)
            conf = dict(re.findall(r"^(\w+)\s*=\s*(.*?)\s*$", p.stdout, re.M))
            if conf.get("JobCompType") == "jobcomp/filetxt" and conf.get("JobCompLoc"):
                self._jobcomp = Path(conf["JobCompLoc"])
        return self._jobcomp

    def _from_jobcomp(self, want: set[str]) -> dict[str, TaskState]:
        path = self._jobcomp_file()
        out = {}
        if path is None:
            return out
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            return out
        for line in lines:
            kv = _kv_line(line)
            if kv.get("ArrayJobId") and kv.get("ArrayTaskId", "").isdigit():
                t = f"{kv['ArrayJobId']}_{kv['ArrayTaskId']}"
            else:
                t = kv.get("JobId", "")
            if t in want:
                out[t] = TaskState(t, kv.get("JobState", "UNKNOWN"), kv.get("NodeList") or None,
                                   None, f"exit code {kv['ExitCode']}"
                                   if kv.get("ExitCode") not in (None, "0:0") else None,
                                   "jobcomp")
        return out


_MEMORY_KILL = re.compile(r"exceeded (job )?memory limit|oom[-_ ]kill", re.I)


def _memory_kill(log_file: str | None) -> str | None:
    """The line of a job's log saying Slurm killed it for its memory, else None."""
    if not log_file:
        return None
    try:
        with open(log_file, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 65536))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    for line in text.splitlines():
        if _MEMORY_KILL.search(line):
            return line.strip()
    return None


def _chunks(seq: list, n: int):
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


class SlurmExecutor:
    """Submits jobs of one context directory and follows them to the database.

    ``db`` may be None for a process that only submits (the command line while a backend runs:
    the backend ingests). ``publish(kind, data)`` announces database writes.
    """

    def __init__(self, context_dir, config: Config, db: RunDB | None = None,
                 publish: Callable[[str, dict], None] | None = None,
                 commands: SlurmCommands | None = None):
        self.cdir = ContextDir(context_dir)
        self.config = config
        self.db = db
        self.publish = publish or (lambda kind, data: None)
        self.cmd = commands or SlurmCommands(float(config["slurm"].get("command_timeout", 30)))
        self._lock = threading.RLock()
        self._available: tuple[float, str | None] | None = None
        self.db_id: str | None = db.db_id if db is not None else None

    # -- availability ------------------------------------------------------------------
    def unavailable_reason(self) -> str | None:
        """None if jobs may be submitted, else why not (``[slurm] enabled`` false, no sbatch,
        Slurm not answering). Checked at most every 5 minutes."""
        enabled = self.config["slurm"].get("enabled", "auto")
        if enabled is False or str(enabled).lower() in ("false", "no", "off"):
            return "Slurm is disabled in the configuration ([slurm] enabled = false)"
        now = time.monotonic()
        if self._available is None or now - self._available[0] > 300:
            reason = self.cmd.check()
            if reason and enabled is True:
                reason = f"[slurm] enabled = true, but {reason}"
            self._available = (now, reason)
        return self._available[1]

    def available(self) -> bool:
        return self.unavailable_reason() is None

    # -- submission --------------------------------------------------------------------
    def _sbatch_args(self, name: str, log_file: str) -> list[str]:
        s = self.config["slurm"]
        args = [f"--job-name={name}", f"--output={log_file}", f"--chdir={self.cdir.path}"]
        if s.get("partition"):
            args.append(f"--partition={s['partition']}")
        if s.get("time"):
            args.append(f"--time={s['time']}")
        args += [str(a) for a in s.get("extra_args") or []]
        return args

    def submit(self, proposal: int | str, runs: list[int], names: list[str], data: str = "all",
               params: dict | None = None, origin: str = "backend", array: bool | None = None,
               dependency: str | None = None, runs_per_task: int = 1,
               reuse: dict[int, list[str]] | None = None) -> str:
        """Submit one job computing ``names`` (and their inputs) on ``runs``: a plain job for a
        single run (unless ``array``), else an array job whose task ``i`` computes
        ``runs[i*k:(i+1)*k]`` (``k = runs_per_task``, one after the other in one Python),
        throttled by ``[slurm] max_concurrent``. ``reuse``: run -> inputs of ``names`` whose
        stored values the job reads back instead of computing them (``reprocess all``). Returns the job id; the job is recorded under
        ``slurm/jobs/``. Raises :class:`SlurmError` (nothing recorded) if sbatch fails."""
        runs = [int(r) for r in runs]
        k = max(1, int(runs_per_task))
        if array is None:
            array = len(runs) > 1
        if not array:
            k = len(runs)
        for d in (self.cdir.slurm_jobs_dir, self.cdir.slurm_specs_dir,
                  self.cdir.slurm_results_dir, self.cdir.slurm_logs_dir):
            d.mkdir(parents=True, exist_ok=True)
        spec_file = self.cdir.slurm_specs_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}.json"
        spec = {"version": SPEC_VERSION, "context_dir": str(self.cdir.path),
                "proposal": proposal, "runs": runs, "names": list(names),
                "runs_per_task": k, "data": data, "params": params or {},
                "processes_per_run": int(self.config["processing"].get("processes_per_run") or 1)}
        spec.update(self._run_inputs(proposal, runs, reuse))
        write_json_atomic(spec_file, spec)
        logs = self.cdir.slurm_logs_dir
        if array:
            name = f"amore-p{proposal}-reprocess"
            log_pattern = str(logs / f"p{proposal}-reprocess-%A_%a.out")
        else:
            name = f"amore-p{proposal}-r{runs[0]}"
            log_pattern = str(logs / f"p{proposal}_r{runs[0]:04d}-%j.out")
        args = self._sbatch_args(name, log_pattern)
        if array:
            ntasks = -(-len(runs) // k)
            args.append(f"--array=0-{ntasks - 1}%{int(self.config['slurm']['max_concurrent'])}")
        if dependency:
            args.append(f"--dependency=afterany:{dependency}")
        python = context_python(self.config)
        run_job = f"{shlex.quote(python)} -m backend.ctxrunner.slurmjob {shlex.quote(str(spec_file))}"
        env = worker_env(self.config)
        if self.config.broker and self.db_id:
            # then say so on the broker (with AMORE's own Python, which has the Kafka client)
            env.update(AMORE_JOB_BROKER=self.config.broker,
                       AMORE_JOB_TOPIC=self.config.update_topic(self.db_id),
                       AMORE_JOB_PROPOSAL=str(proposal))
            wrap = (f"{run_job}; rc=$?; "
                    "t=${SLURM_ARRAY_JOB_ID:+${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}}; "
                    f'{shlex.quote(sys.executable)} -m backend.notify.jobdone "${{t:-$SLURM_JOB_ID}}"; '
                    "exit $rc")
        else:
            wrap = f"exec {run_job}"
        args += ["--wrap", wrap]
        try:
            job = self.cmd.sbatch(args, env=env)
        except SlurmError:
            spec_file.unlink(missing_ok=True)
            raise
        record = {"version": RECORD_VERSION, "kind": RECORD_KIND, "job_id": job, "array": array,
                  "name": name, "proposal": proposal, "runs": runs, "names": list(names),
                  "runs_per_task": k, "data": data, "origin": origin, "submitted_at": time.time(),
                  "log_pattern": log_pattern, "spec": str(spec_file)}
        write_json_atomic(self.cdir.slurm_jobs_dir / f"{job}.json", record)
        log.info("Submitted Slurm job %s (%s): %d run(s), variables %s", job, name, len(runs),
                 ", ".join(names))
        return job

    def _run_inputs(self, proposal: int | str, runs: list[int],
                    reuse: dict[int, list[str]] | None = None) -> dict:
        """What the job's worker requests carry besides the data, as a local worker's do
        (:func:`backend.processing.local.run_inputs`): ``manual_columns`` and, per run
        (``run_inputs``, keyed by the run number as text), ``facility_run``, ``manual`` and
        (with ``reuse``) ``reuse``.
        Empty without the database (then the job runs without them)."""
        if self.db is None:
            return {}
        try:
            names = self.db.manual_columns()
        except Exception as e:
            log.error("Cannot read the manual columns: %s", e)
            names = []
        per_run = {}
        for r in runs:
            inp = run_inputs(self.db, proposal, r)
            per_run[str(r)] = {k: v for k, v in inp.items() if k != "manual_columns"}
            if (reuse or {}).get(r):
                per_run[str(r)]["reuse"] = list(reuse[r])
        return {"manual_columns": names, "run_inputs": per_run}

    def runs_per_task(self, n_runs: int) -> int:
        """Runs each array task computes for a reprocess of ``n_runs`` runs: ``[slurm]
        runs_per_task``, or for ``"auto"`` enough that there are about 2 tasks per allowed
        concurrent task: Python start-up, imports and the wait in the queue are paid once per
        task, and each throttled task waits for another to end (on a one-node cluster ~0.5 s
        of scheduling per wave; on a busy cluster much more), while a second wave still
        evens out runs of different length."""
        k = self.config["slurm"].get("runs_per_task", "auto")
        if str(k).lower() == "auto":
            conc = max(1, int(self.config["slurm"]["max_concurrent"]))
            return max(1, -(-n_runs // (2 * conc)))
        return max(1, int(k))

    def submit_reprocess(self, proposal: int | str, runs: list[int], names: list[str],
                         params: dict | None = None,
                         reuse: dict[int, list[str]] | None = None) -> list[str]:
        """Submit a reprocess as array jobs of at most ``[slurm] max_array_size`` tasks (of
        :meth:`runs_per_task` runs each), each array after the previous one ends
        (``--dependency=afterany``); ``reuse``: see :meth:`submit`. Returns the job ids."""
        size = max(1, int(self.config["slurm"].get("max_array_size", 1000)))
        k = self.runs_per_task(len(runs))
        jobs: list[str] = []
        for chunk in _chunks(list(runs), size * k):
            jobs.append(self.submit(proposal, chunk, names, "all", params, origin="reprocess",
                                    array=True, dependency=jobs[-1] if jobs else None,
                                    runs_per_task=k, reuse=reuse))
        return jobs

    # -- records -----------------------------------------------------------------------
    def records(self) -> list[dict]:
        """Records of submitted jobs not handled completely yet (``slurm/jobs/*.json``)."""
        out = []
        for f in sorted(self.cdir.slurm_jobs_dir.glob("*.json")) if self.cdir.slurm_jobs_dir.is_dir() else []:
            try:
                rec = json.loads(f.read_text())
            except (OSError, ValueError) as e:
                log.error("Unreadable Slurm job record %s: %s", f, e)
                continue
            if rec.get("kind") == RECORD_KIND and rec.get("version") == RECORD_VERSION:
                out.append(rec)
        return out

    @staticmethod
    def record_tasks(rec: dict) -> list[dict]:
        """One row (``slurm_jobs`` columns) per task and run of a job record."""
        rows = []
        k = max(1, int(rec.get("runs_per_task", 1)))
        for i, run in enumerate(rec["runs"]):
            task = f"{rec['job_id']}_{i // k}" if rec["array"] else rec["job_id"]
            logf = (rec["log_pattern"].replace("%A", rec["job_id"]).replace("%a", str(i // k))
                    .replace("%j", rec["job_id"]))
            rows.append({"task_id": task, "job_id": rec["job_id"], "proposal": rec["proposal"],
                         "run": run, "names": rec["names"], "data": rec.get("data"),
                         "origin": rec.get("origin"), "state": "PENDING",
                         "submitted_at": rec.get("submitted_at"), "log_file": logf, "done": 0})
        return rows

    def cancelled_marker(self, task_id: str) -> Path:
        return self.cdir.slurm_dir / "cancelled" / task_id

    def cancel(self, task_ids: Iterable[str]) -> list[str]:
        """``scancel`` these tasks (or whole jobs), noting that AMORE cancelled them."""
        ids = sorted(set(task_ids))
        if not ids:
            return []
        (self.cdir.slurm_dir / "cancelled").mkdir(parents=True, exist_ok=True)
        for t in ids:
            write_json_atomic(self.cancelled_marker(t), {"version": 1, "time": time.time(),
                                                         "user": os.environ.get("USER")})
        self.cmd.cancel(ids)
        return ids

    # -- following (the single writer only) --------------------------------------------
    def active_runs(self) -> set[tuple[int | str, int]]:
        """(proposal, run) of runs with Slurm tasks not finished (recorded or submitted)."""
        out = set()
        if self.db is not None:
            out |= {(r["proposal"], r["run"]) for r in self.db.slurm_tasks(done=False)}
        for rec in self.records():
            out |= {(normalize_proposal(rec["proposal"]), r) for r in rec["runs"]}
        return out

    def watch_results(self, wake: Callable[[], None]) -> FileWatch | None:
        """Call ``wake()`` (from the watch's thread) as soon as a job's result file is renamed
        into ``slurm/results/``, so that the follower polls at once instead of at its next
        period. Only a speed-up: inotify sees writes made on this host (GPFS does not deliver
        other hosts' events). Returns the started watch (``stop()`` it), or None if
        ``[slurm] watch_results`` is false or the directory cannot be watched."""
        if not self.config["slurm"].get("watch_results", True):
            return None
        d = self.cdir.slurm_results_dir
        d.mkdir(parents=True, exist_ok=True)

        def changed(change):
            if change.complete and change.path.suffix == ".json":
                wake()
        watch = FileWatch([d], changed, recursive=False)
        return watch if watch.start() else None

    def poll(self) -> int:
        """Bring the database up to date with the jobs: record new ones, store results handed
        over, follow states, fail the variables of jobs that ended badly. Returns the number
        of tasks still running or queued. Never raises for Slurm trouble (logs it)."""
        if self.db is None:
            raise RuntimeError("SlurmExecutor.poll needs the database")
        with self._lock:
            touched: set[tuple[int, int]] = set()
            for rec in self.records():
                rows = self.record_tasks(rec)
                if self.db.add_slurm_tasks(rows):
                    touched |= {(r["proposal"], r["run"]) for r in rows}
            active = self.db.slurm_tasks(done=False)
            try:  # one directory listing, not a stat per task (cheaper on GPFS)
                present = set(os.listdir(self.cdir.slurm_results_dir))
            except FileNotFoundError:
                present = set()
            pending = []
            for row in active:
                if self._ingest_if_there(row, present):
                    touched.add((row["proposal"], row["run"]))
                else:
                    pending.append(row)
            if pending:
                try:
                    states = self.cmd.states([r["task_id"] for r in pending])
                except SlurmError as e:
                    log.warning("Cannot follow Slurm jobs now: %s", e)
                    states = None
                if states is not None:
                    for row in pending:
                        if self._follow(row, states.get(row["task_id"])):
                            touched.add((row["proposal"], row["run"]))
            self._update_runs(touched)
            self._retire_records()
            return len(self.db.slurm_tasks(done=False))

    def _ingest_if_there(self, row: dict, present: set[str] | None = None) -> bool:
        """Store the result a task handed over, if it is there (``present``: names in the
        results directory, else the file is looked for). True if the task is now handled."""
        f = result_path(self.cdir.path, row["proposal"], row["run"], row["task_id"])
        if (f.name not in present) if present is not None else not f.exists():
            return False
        try:
            text = f.read_text()
        except FileNotFoundError:
            return False  # taken by another ingester just now
        if not self._open(row):
            return True
        try:
            res = json.loads(text)
            if res.get("kind") != RESULT_KIND or res.get("version") != RESULT_VERSION:
                raise ValueError(f"not a version-{RESULT_VERSION} AMORE result")
            reply = res["reply"]
        except (OSError, ValueError, KeyError) as e:
            self._fail(row, "FAILED", f"its result file {f} is unreadable: {e}")
            return True
        if reply.get("ok"):
            values = {n: StoredValue.from_json(v) for n, v in reply["values"].items()}
            for n in row["names"]:  # asked for, not computed (e.g. proc data missing)
                if n not in values:
                    values[n] = StoredValue(None, SummaryType.ERROR.value, {
                        "error": f"not computed by Slurm job {row['task_id']} "
                                 f"(data {reply.get('data', row.get('data'))}); log: {row['log_file']}",
                        "error_type": "NotComputed"})
            # a value computed since this job read its inputs (e.g. after a manual edit the
            # backend recomputed it locally) is newer than the job's and stays
            self.db.write_values(row["proposal"], row["run"], values,
                                 start_time=reply.get("start_time"),
                                 provenance=reply.get("provenance"),
                                 inputs_at=row.get("submitted_at"))
            n_err = sum(v.summary_type == SummaryType.ERROR for v in values.values())
            msg = f"{n_err} variable(s) failed" if n_err else None
            if reply.get("storage_error"):
                msg = "; ".join(filter(None, [msg, reply["storage_error"]]))
                log.error("Run %d: %s", row["run"], reply["storage_error"])
            self.db.update_slurm_task(row["task_id"], row["run"], state="COMPLETED", done=1,
                                      ended_at=res.get("finished") or time.time(),
                                      started_at=row["started_at"] or res.get("started"),
                                      node=row["node"] or res.get("host"), message=msg)
            self._store_log(row, "done" if not n_err else "done with errors",
                            reply.get("log") or "")
            self.publish(UpdateKind.RUN_VALUES_UPDATED, {"proposal": row["proposal"], "run": row["run"],
                                                "names": sorted(values),
                                                "status": RunStatus.DONE.value})
            t = res.get("timings") or {}
            if t.get("run_start") and t.get("run_end"):
                startup = (f"start-up {t['run_start'] - t['process_started']:.2f} s, "
                           if t.get("process_started") else "")  # first run of a task only
                log.info("Run %d: %d variable(s) from Slurm job %s (%srun %.2f s, hand-over "
                         "%.2f s)", row["run"], len(values), row["task_id"], startup,
                         t["run_end"] - t["run_start"], time.time() - t["run_end"])
            else:
                log.info("Run %d: %d variable(s) from Slurm job %s", row["run"], len(values),
                         row["task_id"])
        else:
            self._fail(row, "FAILED", f"the run could not be processed: {reply.get('error')}")
        try:
            f.unlink()
        except OSError:
            pass
        return True

    def _follow(self, row: dict, st: TaskState | None) -> bool:
        """Update one unfinished task from its Slurm state; True if its run needs an update."""
        if st is None:
            if self._ingest_if_there(row):
                return True
            if (self.cancelled_marker(row["task_id"]).exists()
                    or self.cancelled_marker(row["job_id"]).exists()):
                self._fail(row, "CANCELLED", "cancelled before it started")
            else:
                self._fail(row, VANISHED, "Slurm no longer knows the job and it left no result")
            return True
        if st.active:
            fields = {}
            if st.state != row["state"]:
                fields["state"] = st.state
            if st.node and st.node != row["node"]:
                fields["node"] = st.node
            if st.state == "RUNNING" and not row["started_at"]:
                fields["started_at"] = time.time() - (st.elapsed or 0)
            if fields:
                node = fields.get("node") or row["node"]
                msg = (f"Slurm job {row['task_id']} running" + (f" on {node}" if node else "")
                       if st.state == "RUNNING" else f"Slurm job {row['task_id']} {st.state.lower()}")
                self.db.update_slurm_task(row["task_id"], row["run"],
                                          run_status=(row["proposal"], RunStatus.PROCESSING, msg),
                                          **fields)
                return "state" in fields
            return False
        if self._ingest_if_there(row):  # written just before the job ended
            return True
        if st.state == "COMPLETED":
            self._fail(row, "COMPLETED", "the job ended without handing over a result", st)
        else:
            oom = _memory_kill(row["log_file"]) if st.state in ("FAILED", "CANCELLED") else None
            if oom:  # killed by Slurm's memory accounting (no cgroup): the log says so
                self._fail(row, "OUT_OF_MEMORY", f"{st.state}, {st.reason or ''}; {oom}".replace(", ;", ";"), st)
            else:
                self._fail(row, st.state, st.reason, st)
        return True

    def _open(self, row: dict) -> bool:
        """Whether the task's row for its run is still unfinished in the database (another
        process may have handled it since this poll read it)."""
        return any(t["task_id"] == row["task_id"] and not t["done"]
                   for t in self.db.slurm_tasks(run=row["run"], job_id=row["job_id"]))

    def _store_log(self, row: dict, status: str, text: str) -> None:
        """The run's processing log (``run_logs``, as for a local evaluation), headed by the
        job and its variables; never raises."""
        from backend.store.runlogs import add_run_log
        head = (f"(Slurm job {row['task_id']}, only {', '.join(row['names'])}; "
                f"log: {row['log_file']})\n")
        try:
            add_run_log(self.db, row["proposal"], row["run"], status, head + (text or ""))
        except Exception as e:
            log.error("Run %d: could not store its processing log: %s", row["run"], e)

    def _fail(self, row: dict, state: str, detail: str | None, st: TaskState | None = None):
        if not self._open(row):
            return
        msg = (f"Slurm job {row['task_id']} ended {state}" + (f" ({detail})" if detail else "")
               + f"; log: {row['log_file']}")
        attrs = {"error": msg, "error_type": "SlurmJob" + state.title().replace("_", ""),
                 "slurm_state": state, "slurm_job": row["task_id"], "log_file": row["log_file"]}
        values = {n: StoredValue(None, SummaryType.ERROR.value, dict(attrs)) for n in row["names"]}
        self.db.write_values(row["proposal"], row["run"], values)
        self.db.update_slurm_task(row["task_id"], row["run"], state=state, done=1,
                                  ended_at=time.time(),
                                  node=(st.node if st and st.node else row["node"]), message=msg)
        try:
            self.db.add_event(EventLevel.ERROR, "slurm", msg, run=row["run"],
                              proposal=row["proposal"],
                              details={"job": row["task_id"], "state": state,
                                       "variables": row["names"], "log_file": row["log_file"]})
        except Exception:  # the event log is a convenience; the values carry the error
            log.exception("Could not log the end of Slurm job %s", row["task_id"])
        self._store_log(row, "cancelled" if state == "CANCELLED" else "failed", msg + "\n")
        log.error("Run %d: %s", row["run"], msg)
        self.publish(UpdateKind.RUN_VALUES_UPDATED, {"proposal": row["proposal"], "run": row["run"],
                                            "names": sorted(values),
                                            "status": RunStatus.DONE.value})

    def _update_runs(self, runs: Iterable[tuple[int, int]]) -> None:
        """Run status from the runs' tasks: ``processing`` with the job state while any is
        unfinished, else ``done`` (with the number of failed variables). One transaction."""
        runs = set(runs)
        if not runs:
            return
        unfinished: dict[tuple[int, int], dict] = {}
        for t in self.db.slurm_tasks(done=False):  # newest submission first
            unfinished.setdefault((t["proposal"], t["run"]), t)
        current = {(r["proposal"], r["run"]): (r["status"], r["status_message"])
                   for r in self.db.runs()}
        changes = []
        for key in sorted(runs):
            t = unfinished.get(key)
            if t is not None:
                if t["state"] == "RUNNING":
                    msg = f"Slurm job {t['task_id']} running" + (f" on {t['node']}" if t["node"] else "")
                else:
                    msg = f"Slurm job {t['task_id']} {t['state'].lower()}"
                status = RunStatus.PROCESSING
            else:
                n_err = sum(v.summary_type == SummaryType.ERROR
                            for v in self.db.get_values(*key).values())
                msg = f"{n_err} variable(s) failed" if n_err else None
                status = RunStatus.DONE
            if current.get(key) != (status.value, msg):
                changes.append((key[0], key[1], status, msg))
        self.db.set_run_statuses(changes)
        for p, r, status, _ in changes:
            self.publish(UpdateKind.RUN_STATUS_CHANGED, {"proposal": p, "run": r, "status": status.value})

    def refresh_run(self, proposal: int | str, run: int) -> None:
        """Say in the run's row that it still waits for Slurm, if it does (after a local
        processing of the same run set it ``done``)."""
        if self.db is None:
            return
        with self._lock:
            if any(t["proposal"] == proposal for t in self.db.slurm_tasks(done=False, run=run)):
                self._update_runs([(proposal, run)])

    def _retire_records(self) -> None:
        done_dir = self.cdir.slurm_jobs_dir / "done"
        for rec in self.records():
            rows = self.db.slurm_tasks(job_id=rec["job_id"])
            if rows and all(r["done"] for r in rows):
                done_dir.mkdir(exist_ok=True)
                src = self.cdir.slurm_jobs_dir / f"{rec['job_id']}.json"
                try:
                    os.replace(src, done_dir / src.name)
                except OSError as e:
                    log.warning("Could not move %s: %s", src, e)
                    continue
                leftovers = [Path(rec["spec"])] if rec.get("spec") else []
                leftovers += [self.cancelled_marker(t) for t in
                              {r["task_id"] for r in rows} | {rec["job_id"]}]
                for f in leftovers:  # the job no longer needs them
                    try:
                        f.unlink()
                    except OSError:
                        pass
