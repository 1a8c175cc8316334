"""Reprocessing runs and cancelling Slurm jobs from a front-end: the commands and how to read
their output (no Qt, no process started here).

Both run the command line in a process of its own (``amore-proto reprocess`` /
``amore-proto cancel`` with this Python), so a front-end never waits for the workers or Slurm:

* :class:`ReprocessJob` - the command (:attr:`~ReprocessJob.argv`, :attr:`~ReprocessJob.cwd`),
  the number of runs to expect, and :meth:`~ReprocessJob.feed` turning the process's merged
  stdout/stderr into progress (runs done) and lines to show. The new values reach the table
  through the normal live updates.
* :class:`CancelJob` - cancelling the Slurm jobs of runs; :meth:`~CancelJob.summary` says what
  happened.

A front-end starts ``argv`` in ``cwd`` without blocking (Qt: ``QProcess``), feeds it the output
as it arrives, and calls :meth:`ReprocessJob.finish` with the exit code. A front-end without a
process API of its own (the browser's server) hands the job to :class:`JobProcess`, which runs it
with a reader thread. To stop a job: SIGTERM (a run already handed to the backend is cancelled
there when the command goes away), then SIGKILL after :data:`TERMINATE_GRACE` seconds if it
still runs.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable

#: Seconds between asking a reprocess job to stop (SIGTERM) and killing it.
TERMINATE_GRACE = 3.0

#: A log line saying a run is finished (processed, failed, recorded or abandoned).
_RUN_DONE = re.compile(r"\bRun (\d+)(?::| failed| recorded| abandoned)")


def _cli(*args: str) -> list[str]:
    """The command line running ``amore-proto ARGS`` with this Python."""
    return [sys.executable, "-m", "amore.cli", *args]


def complete_lines(buffered: bytes, data: bytes) -> tuple[list[str], bytes]:
    """A process's output seen so far in chunks: the non-empty complete lines of ``buffered +
    data`` (decoded, trailing space cut) and the partial last line to keep for the next chunk."""
    *lines, rest = (buffered + data).split(b"\n")
    out = [raw.decode(errors="replace").rstrip() for raw in lines]
    return [line for line in out if line], rest


def slurm_available() -> bool:
    """Can this machine submit Slurm jobs (``sbatch`` on ``PATH``)?"""
    return shutil.which("sbatch") is not None


def expected_runs(run_args: list[str], all_runs: int) -> int:
    """How many runs the run arguments (``["3", "5-7"]`` or ``["all"]``) name, at least 1;
    ``all_runs``: the number of runs in the table (for ``all``)."""
    if run_args == ["all"]:
        return all_runs
    n = 0
    for t in run_args:
        if "-" in t:
            a, _, b = t.partition("-")
            try:
                n += int(b) - int(a) + 1
            except ValueError:
                pass
        else:
            n += 1
    return max(n, 1)


def compact_runs(runs: list[int], width: int = 60) -> str:
    """Run numbers as ranges for a label: ``[1, 2, 3, 7]`` -> ``"1–3, 7"`` (cut with ``…``
    beyond ``width`` characters)."""
    runs = sorted(runs)
    parts, i = [], 0
    while i < len(runs):
        j = i
        while j + 1 < len(runs) and runs[j + 1] == runs[j] + 1:
            j += 1
        parts.append(str(runs[i]) if i == j else f"{runs[i]}–{runs[j]}")
        i = j + 1
    s = ", ".join(parts)
    return s if len(s) < width else s[:width - 3] + "…"


class ReprocessJob:
    """One ``amore-proto reprocess`` job (see module docstring).

    ``context_dir``; ``runs``: run arguments (numbers, ranges ``"3-7"`` or ``["all"]``);
    ``names``: variable names (None: all variables); ``slurm``: as Slurm array jobs, else in
    local worker processes; ``all_runs``: the number of runs in the table (progress of ``all``).

    :attr:`done_runs` (run numbers) and :attr:`progress` grow as :meth:`feed` sees runs finish;
    :attr:`exit_code` is set by :meth:`finish`.
    """

    def __init__(self, context_dir, runs: list[str], names: list[str] | None = None,
                 slurm: bool = False, all_runs: int = 0):
        self.context_dir = Path(context_dir)
        self.runs = list(runs)
        self.names = None if names is None else list(names)
        self.slurm = slurm
        self.expected = expected_runs(self.runs, all_runs)
        self.done_runs: set[int] = set()
        self.exit_code: int | None = None
        self._buf = b""

    @property
    def argv(self) -> list[str]:
        """The command to run (``argv[0]`` is the Python interpreter)."""
        argv = _cli("reprocess", *self.runs, "--dir", str(self.context_dir),
                    "--slurm" if self.slurm else "--local", "--quiet", "--verbose")
        for n in self.names or []:
            argv += ["--var", n]
        return argv

    @property
    def cwd(self) -> Path:
        """The working directory to run it in."""
        return self.context_dir

    @property
    def command_text(self) -> str:
        """The command as the user would type it (``$ amore-proto reprocess ...``)."""
        return "$ amore-proto " + " ".join(self.argv[3:])

    @property
    def progress(self) -> int:
        """Runs finished so far (at most :attr:`expected`; all of them after a clean exit)."""
        if self.exit_code == 0:
            return self.expected
        return min(len(self.done_runs), self.expected)

    def feed(self, data: bytes) -> list[str]:
        """Take output of the process (any chunk of bytes); returns the complete lines in it
        to show (log prefixes of AMORE's modules dropped), and counts the runs they say are
        finished. A partial last line waits for the next chunk."""
        lines, self._buf = complete_lines(self._buf, data)
        out = []
        for line in lines:
            m = _RUN_DONE.search(line)
            if m and ("INFO" in line or "ERROR" in line or "WARNING" in line):
                self.done_runs.add(int(m.group(1)))
            out.append(line.split(": ", 1)[-1] if " backend." in line else line)
        return out

    def finish(self, exit_code: int) -> str:
        """The process ended with ``exit_code``: the closing line to show."""
        self.exit_code = exit_code
        return "Done." if exit_code == 0 else f"Finished with exit code {exit_code}."


class CancelJob:
    """``amore-proto cancel``: cancel the Slurm jobs of ``runs`` (run numbers)."""

    def __init__(self, context_dir, runs: list[int]):
        self.context_dir = Path(context_dir)
        self.runs = list(runs)

    @property
    def argv(self) -> list[str]:
        return _cli("cancel", *map(str, self.runs), "--dir", str(self.context_dir))

    @staticmethod
    def summary(output: bytes, exit_code: int) -> str:
        """What to tell the user from the command's merged output and exit code."""
        out = output.decode(errors="replace").strip()
        return out or f"amore-proto cancel finished with exit code {exit_code}"


class JobProcess:
    """A :class:`ReprocessJob`'s command running as a child process (its own session), its
    output read by a thread (see module docstring). ``on_change()`` is called in that thread
    after new output lines and when the process ended.

    State: :attr:`lines` (the last 2000 lines to show), :attr:`job` (progress:
    ``job.done_runs``, ``job.progress``, ``job.exit_code``), :attr:`cancelled`.
    """

    def __init__(self, job: ReprocessJob, on_change: Callable[[], None] | None = None):
        self.job = job
        self.on_change = on_change
        self.lines: deque[str] = deque(maxlen=2000)
        self.cancelled = False
        self.started = time.time()
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        """Start the process and its reader thread; returns at once. Raises ``OSError`` if it
        cannot start."""
        self.lines.append(self.job.command_text)
        self.proc = subprocess.Popen(self.job.argv, cwd=str(self.job.cwd),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        threading.Thread(target=self._read, name="reprocess output", daemon=True).start()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            lines = self.job.feed(raw)
            if lines:
                self.lines.extend(lines)
                self._changed()
        code = self.proc.wait()
        self.lines.extend(self.job.feed(b"\n"))       # a last line without its newline
        end = self.job.finish(code)
        self.lines.append("Cancelled." if self.cancelled else end)
        self._changed()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.job.exit_code is None

    def cancel(self) -> None:
        """Stop the job: SIGTERM to its process group, SIGKILL after :data:`TERMINATE_GRACE`
        seconds if it still runs. Returns at once."""
        if not self.running:
            return
        self.cancelled = True
        self._signal(signal.SIGTERM)
        threading.Timer(TERMINATE_GRACE, self._kill_if_running).start()

    def _signal(self, sig) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _kill_if_running(self) -> None:
        if self.running:
            self._signal(signal.SIGKILL)

    def to_dict(self) -> dict:
        """The job's state as JSON-able data: ``command``, ``expected``, ``done`` (runs
        finished), ``running``, ``exit_code``, ``cancelled``, ``lines`` (the last 200)."""
        job = self.job
        return {"command": job.command_text.removeprefix("$ "), "expected": job.expected,
                "done": job.progress if not self.cancelled else len(job.done_runs),
                "running": self.running, "exit_code": job.exit_code,
                "cancelled": self.cancelled, "lines": list(self.lines)[-200:]}
