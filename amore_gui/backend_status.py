"""Is the backend of a context directory alive? (plain Python, no Qt)

A single function, :func:`backend_status`. It asks the backend manager
(:func:`backend.manager.backend_state`: status record, tmux session, processes) when that module
is available; otherwise it looks, in this order, at:

1. ``backend-status.json`` in the context directory (written by a backend manager): keys
   ``state`` (``running``/``stopped``...), ``host``, ``pid``, ``updated`` (Unix seconds; a
   heartbeat older than :data:`STALE_SECONDS` makes the state ``unknown``);
2. ``amore.log``: the last ``Running on <host> under user <user>, PID <pid>`` line of the
   listener, a ``Stopped`` after it, and whether that PID is alive when the host is this host;
3. otherwise: not running.
"""
from __future__ import annotations

import json
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path

STATUS_FILE = "backend-status.json"
LOG_FILE = "amore.log"
STALE_SECONDS = 120.0
_TAIL_BYTES = 256 * 1024
_START_RE = re.compile(rb"Running on (\S+) under user (\S+), PID (\d+)")


@dataclass
class BackendStatus:
    """``state``: ``running``, ``stopped`` or ``unknown``; ``text``: one line for the status
    bar; ``detail``: tooltip text."""

    state: str
    text: str
    detail: str = ""

    @property
    def alive(self) -> bool | None:
        return {"running": True, "stopped": False}.get(self.state)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _same_host(host: str) -> bool:
    names = {socket.gethostname(), socket.getfqdn(), "localhost"}
    short = {n.split(".")[0] for n in names}
    return host in names or host.split(".")[0] in short


def _ago(t: float) -> str:
    d = max(0.0, time.time() - t)
    if d < 90:
        return f"{d:.0f} s ago"
    if d < 5400:
        return f"{d / 60:.0f} min ago"
    if d < 48 * 3600:
        return f"{d / 3600:.0f} h ago"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def backend_status(context_dir: str | os.PathLike) -> BackendStatus:
    """The backend's state for the status bar (see module docstring). Never raises."""
    d = Path(context_dir)
    try:
        from backend import manager
    except ImportError:
        manager = None
    if manager is not None:
        try:
            st = manager.backend_state(d, recover=False)
            state = {"running_here": "running", "running_elsewhere": "running",
                     "stopped": "stopped"}.get(st.state, "unknown")
            detail = st.message or ""
            if st.pid:
                detail = (f"PID {st.pid} on {st.host} (user {st.user})"
                          + (f"; {detail}" if detail else ""))
            return BackendStatus(state, st.summary(), detail)
        except Exception:
            pass
    return _from_files(d)


def _from_files(d: Path) -> BackendStatus:
    try:
        sf = d / STATUS_FILE
        if sf.is_file():
            st = json.loads(sf.read_text())
            state = str(st.get("state", "unknown"))
            host, pid = st.get("host"), st.get("pid")
            updated = st.get("updated")
            if updated is not None and time.time() - float(updated) > STALE_SECONDS \
                    and state == "running":
                return BackendStatus("unknown", f"Backend: no heartbeat since {_ago(updated)}",
                                     f"{sf}")
            where = f" on {host}" if host else ""
            if state == "running" and host and pid and _same_host(str(host)) \
                    and not _pid_alive(int(pid)):
                return BackendStatus("stopped", "Backend: not running (stale status file)",
                                     f"PID {pid} on {host} is gone ({sf})")
            return BackendStatus(state if state in ("running", "stopped") else "unknown",
                                 f"Backend: {state}{where}",
                                 f"{sf}" + (f", PID {pid}" if pid else ""))
        log = d / LOG_FILE
        if not log.is_file():
            return BackendStatus("stopped", "Backend: not running", f"no {LOG_FILE} in {d}")
        mtime = log.stat().st_mtime
        with open(log, "rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - _TAIL_BYTES))
            tail = f.read()
        starts = list(_START_RE.finditer(tail))
        if not starts:
            return BackendStatus("unknown", f"Backend: last log entry {_ago(mtime)}", str(log))
        m = starts[-1]
        host, user, pid = m.group(1).decode(), m.group(2).decode(), int(m.group(3))
        after = tail[m.end():]
        stopped = re.search(rb"\bStopped\b", after) is not None
        detail = f"listener PID {pid} on {host} (user {user}); log {log}"
        if stopped:
            return BackendStatus("stopped", f"Backend: stopped ({_ago(mtime)})", detail)
        if _same_host(host):
            if _pid_alive(pid):
                return BackendStatus("running", f"Backend: running (PID {pid})", detail)
            return BackendStatus("stopped", "Backend: not running (crashed?)", detail)
        return BackendStatus("unknown", f"Backend: on {host}, last log {_ago(mtime)}", detail)
    except Exception as e:  # a status-bar helper must never break the GUI
        return BackendStatus("unknown", "Backend: unknown", f"{type(e).__name__}: {e}")
