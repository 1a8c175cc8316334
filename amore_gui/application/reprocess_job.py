"""Reprocessing runs from a front-end, without Qt: ``amore-proto reprocess`` as a child process.

:func:`reprocess_argv` is the command line (locally in worker processes, or on Slurm as array
jobs); :func:`finished_run` reads a run number off one of its log lines (progress).
:class:`ReprocessJob` runs the command with a thread reading its output, counts the runs done and
can be cancelled (SIGTERM, SIGKILL after a grace period: a run handed to the backend is cancelled
there when the command goes away). The new values reach the table through the live updates.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from typing import Callable

#: A log line of ``amore-proto reprocess`` saying a run is finished (done, failed, ...).
RUN_DONE = re.compile(r"\bRun (\d+)(?::| failed| recorded| abandoned)")


def reprocess_argv(context_dir, runs: list[str], names: list[str] | None,
                   slurm: bool = False) -> list[str]:
    """Command line of the reprocess job (``runs``: numbers, ranges ``3-7`` or ``all``;
    ``names`` None = all variables; ``slurm``: as Slurm array jobs, else in local workers)."""
    argv = [sys.executable, "-m", "amore.cli", "reprocess", *runs, "--dir", str(context_dir),
            "--slurm" if slurm else "--local", "--quiet", "--verbose"]
    for n in names or []:
        argv += ["--var", n]
    return argv


def finished_run(line: str) -> int | None:
    """The run a log line of the job reports as finished (an INFO, WARNING or ERROR line
    matching :data:`RUN_DONE`), else None."""
    m = RUN_DONE.search(line)
    if m and ("INFO" in line or "ERROR" in line or "WARNING" in line):
        return int(m.group(1))
    return None


def short_line(line: str) -> str:
    """A log line without its logger prefix (``... backend.x: text`` -> ``text``)."""
    return line.split(": ", 1)[-1] if " backend." in line else line


def read_lines(raw: bytes, done_runs: set[int]) -> list[str]:
    """The job's output ``raw`` (whole lines) as the short lines to show; the runs they report
    finished are added to ``done_runs``. Empty lines are dropped."""
    out = []
    for b in raw.split(b"\n"):
        line = b.decode(errors="replace").rstrip()
        if not line:
            continue
        run = finished_run(line)
        if run is not None:
            done_runs.add(run)
        out.append(short_line(line))
    return out


class ReprocessJob:
    """One ``amore-proto reprocess`` child process (see module docstring).

    ``expected``: how many runs it should process (for progress); ``on_change()`` is called
    (in the reader thread) after each new output line and when the process ended. State:
    :attr:`lines` (the last 2000 short lines), :attr:`done_runs`, :attr:`exit_code` (None while
    running), :attr:`cancelled`.
    """

    GRACE = 3.0     # seconds between SIGTERM and SIGKILL on cancel

    def __init__(self, context_dir, runs: list[str], names: list[str] | None, slurm: bool,
                 expected: int, on_change: Callable[[], None] | None = None):
        self.argv = reprocess_argv(context_dir, runs, names, slurm)
        self.context_dir = context_dir
        self.expected = max(1, int(expected))
        self.on_change = on_change
        self.lines: deque[str] = deque(maxlen=2000)
        self.done_runs: set[int] = set()
        self.exit_code: int | None = None
        self.cancelled = False
        self.started = time.time()
        self.proc: subprocess.Popen | None = None

    @property
    def command(self) -> str:
        """The command as the user would type it."""
        return "amore-proto " + " ".join(self.argv[3:])

    def start(self) -> None:
        """Start the process and its reader thread. Raises ``OSError`` if it cannot start."""
        self.lines.append("$ " + self.command)
        self.proc = subprocess.Popen(self.argv, cwd=str(self.context_dir), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        threading.Thread(target=self._read, name="reprocess output", daemon=True).start()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            lines = read_lines(raw, self.done_runs)
            if lines:
                self.lines.extend(lines)
                self._changed()
        code = self.proc.wait()
        self.exit_code = code
        self.lines.append("Cancelled." if self.cancelled else
                          "Done." if code == 0 else f"Finished with exit code {code}.")
        self._changed()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.exit_code is None

    def cancel(self) -> None:
        """Stop the job: SIGTERM to its process group, SIGKILL after :attr:`GRACE` seconds if
        it is still running. Returns at once."""
        if not self.running:
            return
        self.cancelled = True
        self._signal(signal.SIGTERM)
        threading.Timer(self.GRACE, self._kill_if_running).start()

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
        return {"command": self.command, "expected": self.expected,
                "done": min(len(self.done_runs), self.expected) if self.exit_code in (None, 0) or
                self.cancelled else len(self.done_runs),
                "running": self.running, "exit_code": self.exit_code,
                "cancelled": self.cancelled, "lines": list(self.lines)[-200:]}
