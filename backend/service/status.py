"""The backend's status record ``DIR/backend-status.json``: reading and removing it, and what
is needed to judge it (which host, which process, how long ago), plus the errors of backend
management.

The record is written by the running backend (:class:`backend.service.session.BackendSession`);
:mod:`backend.service.manager` combines it with the tmux server (:mod:`backend.service.tmux`) and
the lock (:mod:`backend.service.lock`) to tell the backend's state.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import socket
import time
from pathlib import Path

from backend.contextdir import ContextDir

log = logging.getLogger(__name__)


class BackendError(RuntimeError):
    """A backend operation cannot be done; the message says why, in the user's terms."""


class BackendLockedError(BackendError):
    """Another backend holds the lock of the context directory.

    ``holder`` is that backend's status record (dict) or None if it has not written one yet.
    """

    def __init__(self, message: str, holder: dict | None = None):
        super().__init__(message)
        self.holder = holder



@functools.lru_cache(maxsize=1)
def this_host() -> str:
    """Fully qualified name of this machine (cached: DNS lookups can be slow); the plain host
    name where the resolver only knows ``localhost``."""
    fqdn = socket.getfqdn()
    return socket.gethostname() if not fqdn or fqdn.startswith("localhost") else fqdn


def amore_version() -> str:
    """The installed AMORE version, or ``"unknown"``."""
    try:
        from importlib.metadata import version
        return version("amore")
    except Exception:
        return "unknown"


def backend_settings(context_dir: Path, config=None) -> dict:
    """The ``[backend]`` settings, with defaults for anything missing."""
    from backend.config import DEFAULTS
    values = dict(DEFAULTS["backend"])
    try:
        if config is None:
            from backend.config import load_config
            config = load_config(context_dir)
        values.update(config.values.get("backend", {}) or {})
    except Exception as e:  # a broken amore.toml must not hide the backend's state
        log.warning("Could not read the configuration of %s: %s", context_dir, e)
    return values


def context_paths(context_dir: str | os.PathLike) -> ContextDir:
    """The paths of a context directory, its own path fully resolved (``~`` expanded,
    symlinks followed), as the backend records it."""
    return ContextDir(Path(context_dir).expanduser().resolve())


def read_status(context_dir) -> dict | None:
    """The backend status record of ``context_dir`` (a dict, see
    :class:`backend.service.session.BackendSession`), or None if there is none or it cannot be
    read."""
    try:
        with open(context_paths(context_dir).status_file) as f:
            rec = json.load(f)
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def remove_status(d: Path, expect_pid=None) -> bool:
    """Remove the status record of context directory ``d``, if it (still) belongs to
    ``expect_pid`` (None: any). Returns True if it was removed."""
    p = ContextDir(d).status_file
    if expect_pid is not None:
        rec = read_status(d)
        if rec is None or rec.get("pid") != expect_pid:
            return False
    try:
        p.unlink()
        return True
    except FileNotFoundError:
        return False


def is_this_host(rec: dict) -> bool:
    """Whether a status record was written on this machine."""
    hostname = rec.get("hostname")
    if hostname:
        return hostname == socket.gethostname()
    host = rec.get("host")
    return not host or host == this_host()


#: A backend seen only through its status record (it runs on another host) counts as alive while
#: the record was refreshed within this many heartbeats (``[backend] heartbeat_seconds``)...
STALE_AFTER_HEARTBEATS = 4
#: ... and at least this many seconds (clocks of two hosts, a slow shared file system).
STALE_AFTER_MIN_SECONDS = 120.0


def heartbeat_age(rec: dict, now: float | None = None) -> float:
    """Seconds since the backend last refreshed its status record: its ``heartbeat``, else its
    ``started`` time (Unix seconds, from the record); a record with neither counts from 1970."""
    t = rec.get("heartbeat") or rec.get("started") or 0
    return (time.time() if now is None else now) - float(t)


def reported_recently(rec: dict, heartbeat_seconds: float, now: float | None = None) -> bool:
    """The liveness rule for a backend known only from its status record (one on another host):
    alive if :func:`heartbeat_age` is at most ``STALE_AFTER_HEARTBEATS`` heartbeats
    (``heartbeat_seconds``, the ``[backend]`` setting) and at least
    ``STALE_AFTER_MIN_SECONDS``; otherwise its record is stale."""
    limit = max(STALE_AFTER_HEARTBEATS * float(heartbeat_seconds), STALE_AFTER_MIN_SECONDS)
    return heartbeat_age(rec, now) <= limit


def find_process(pid, create_time=None):
    """psutil.Process for a living ``pid`` (same start time if given), else None."""
    import psutil
    try:
        pid = int(pid)
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return None
        if create_time is not None and abs(p.create_time() - float(create_time)) > 1.0:
            return None  # the PID was reused by another process
        return p
    except (TypeError, ValueError, psutil.Error):
        return None


def is_own_process(p) -> bool:
    """Whether this process may signal psutil.Process ``p`` (same user, or root)."""
    if os.getuid() == 0:
        return True
    try:
        return p.uids().real == os.getuid()
    except Exception:
        return False


def format_time(t) -> str:
    """Unix seconds as local ``YYYY-mm-dd HH:MM:SS`` (``?`` if unknown)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "?"


def format_duration(s: float) -> str:
    """Seconds as ``"5 min 3 s"``, ``"2 h 10 min"``, ``"3 d 4 h"``."""
    s = int(max(0, s))
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d:
        return f"{d} d {h} h"
    if h:
        return f"{h} h {m} min"
    if m:
        return f"{m} min {s} s"
    return f"{s} s"
