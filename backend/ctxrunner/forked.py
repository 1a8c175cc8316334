"""A share of one run's work done by a forked copy of the context worker, on an idle core.

A worker that is told it may use more than one process for a run (``"split"`` in the run
request, see :mod:`backend.ctxrunner.worker`; the backend allows it while another worker is
idle) forks: the copy inherits the loaded context file and the opened run, so it starts in a
few milliseconds without imports or opening files again. It computes its share (half of the
run's files for the files map, a group of variables), and sends back what it made as one JSON
document through a pipe; nothing is pickled. The copy is in the worker's process group, so
killing the worker (a run timeout, a cancel) kills it too, and it dies with the worker
(``PR_SET_PDEATHSIG``).

Runs in the user's Python: standard library only (and :mod:`backend.ctxrunner.memory`,
:mod:`backend.procs`).
"""
from __future__ import annotations

import json
import os
import signal
import sys
import traceback
import warnings
from typing import Any, Callable

from backend.ctxrunner.memory import hand_back
from backend.procs import PR_SET_PDEATHSIG, prctl


def can_fork() -> bool:
    """Whether this platform can fork (Linux, macOS)."""
    return hasattr(os, "fork")


class ForkedPartFailed(Exception):
    """The forked copy ended without an answer: ``reason`` says how (killed by a signal,
    exit status, the function's exception)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class ForkedPart:
    """``fn(*args)`` computed by a forked copy of this process, started at construction.

    ``fn`` must return something :func:`json.dumps` can write (``default=str`` for the rest).
    :meth:`result` waits for it. Raises ``OSError`` if the process cannot be forked (the caller
    then does the work itself)."""

    def __init__(self, fn: Callable[..., Any], *args):
        read_fd, write_fd = os.pipe()
        with warnings.catch_warnings():
            # Python >= 3.12 warns about forking a process with threads: the worker's only other
            # threads are its parent watch (Python) and numerical libraries' idle pools, which
            # the copy does not need.
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                pid = os.fork()
            except OSError:
                os.close(read_fd)
                os.close(write_fd)
                raise
        if pid == 0:  # the copy
            status = 1
            try:
                os.close(read_fd)
                prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
                # the free memory inherited from the worker, handed back: otherwise both
                # processes would reuse the same shared pages, and every page either writes
                # would be copied first
                hand_back(everything=True)
                try:
                    out = {"ok": True, "result": fn(*args)}
                except BaseException as e:  # noqa: BLE001 - reported to the parent
                    out = {"ok": False, "error": f"{type(e).__name__}: {e}",
                           "traceback": traceback.format_exc()}
                data = json.dumps(out, default=str).encode()
                view = memoryview(data)
                while view:
                    view = view[os.write(write_fd, view):]
                status = 0
            finally:
                try:
                    sys.stderr.flush()
                except Exception:  # noqa: BLE001
                    pass
                os._exit(status)  # no atexit handlers, no flushing the worker's reply stream
        os.close(write_fd)
        self.pid = pid
        self._read_fd = read_fd

    def result(self) -> Any:
        """Wait for the copy and return ``fn``'s result. Raises :class:`ForkedPartFailed` if
        the copy raised, was killed or exited without an answer."""
        chunks = []
        with os.fdopen(self._read_fd, "rb") as f:
            while chunk := f.read(1 << 20):
                chunks.append(chunk)
        _, status = os.waitpid(self.pid, 0)
        data = b"".join(chunks)
        if os.WIFSIGNALED(status):
            sig = signal.Signals(os.WTERMSIG(status)).name
            why = " (out of memory, or by someone)" if sig == "SIGKILL" else ""
            raise ForkedPartFailed(f"was killed by {sig}{why}")
        try:
            out = json.loads(data)
        except ValueError:
            raise ForkedPartFailed(f"exited with status {os.WEXITSTATUS(status)} without an "
                                   f"answer") from None
        if not out.get("ok"):
            raise ForkedPartFailed(out.get("error") or "failed")
        return out["result"]
