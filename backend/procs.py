"""Child processes the command line and the benchmarks start in a process group of their own (the
backend in the demo, a GUI): waiting until one says it is ready, stopping one with its children.

Pure standard library."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def wait_for_log_line(log_path: str | os.PathLike, proc: subprocess.Popen, marker: bytes = b" Ready",
                      timeout: float = 120.0) -> bool:
    """Wait until ``marker`` appears in ``log_path`` after its current end (the backend writes
    ``... Ready`` into ``amore.log`` once its sources listen). Returns False if ``proc`` exits
    first or ``timeout`` seconds pass."""
    log_path = Path(log_path)
    deadline = time.monotonic() + timeout
    start = log_path.stat().st_size if log_path.exists() else 0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if log_path.exists():
            with open(log_path, "rb") as f:
                f.seek(start)
                if marker in f.read():
                    return True
        time.sleep(0.2)
    return False


def stop_process_group(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGTERM the process group of ``proc`` (started with ``start_new_session=True``), SIGKILL it
    after ``grace`` seconds, and reap ``proc``. Nothing happens if it has exited already."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
