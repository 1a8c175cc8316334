"""The running backend's side of its management: for its whole life it holds the directory's
lock (:mod:`backend.service.lock`) and keeps the status record (:mod:`backend.service.status`)
up to date with a heartbeat. Used by :class:`backend.service.listener.Listener`.
"""
from __future__ import annotations

import getpass
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from backend.contextdir import ContextDir
from backend.files import share_like_dir, write_json_atomic
from backend.service.lock import BackendLock, acquire_lock
from backend.service.status import amore_version, backend_settings, remove_status, this_host

log = logging.getLogger(__name__)


class BackendSession:
    """Held by a running :class:`backend.service.listener.Listener`: the exclusive lock and the status
    record ``DIR/backend-status.json``.

    The record (JSON object) has: ``host`` (FQDN), ``hostname``, ``user``, ``uid``, ``pid``,
    ``pid_create_time``, ``started``, ``heartbeat``, ``last_run``, ``last_run_time`` (Unix
    seconds), ``version``, ``python``, ``context_dir``, ``update_source`` (``"watcher"``,
    ``"kafka HOST:PORT"`` or ``"none"``), ``tmux_socket`` (socket of the tmux server the backend
    runs in, or null).

    Usage (this is all the listener does)::

        session = BackendSession.begin(listener)   # raises BackendLockedError
        ... session.tick() about once a second ...
        session.close()                            # at shutdown
    """

    def __init__(self, listener, lock: BackendLock):
        self.listener = listener
        self.context_dir = Path(listener.context_dir)
        self.lock = lock
        cfg = backend_settings(self.context_dir, getattr(listener, "config", None))
        self.heartbeat_seconds = float(cfg["heartbeat_seconds"])
        self.record: dict = {}
        self._written = 0.0
        self._warned = False

    @classmethod
    def begin(cls, listener) -> "BackendSession":
        """Take the lock (or raise :class:`BackendLockedError`), write the first status record,
        share the log and database files with the group where the directory is shared, and
        switch off tmux's ``remain-on-exit`` that :func:`start_backend` sets to catch start-up
        failures."""
        import psutil
        lock = acquire_lock(listener.context_dir)
        self = cls(listener, lock)
        d = self.context_dir
        tmux_env = os.environ.get("TMUX", "")
        tmux_socket = tmux_env.split(",")[0] or None
        self.record = {
            "host": this_host(),
            "hostname": socket.gethostname(),
            "user": getpass.getuser(),
            "uid": os.getuid(),
            "pid": os.getpid(),
            "pid_create_time": psutil.Process().create_time(),
            "started": time.time(),
            "version": amore_version(),
            "python": sys.executable,
            "context_dir": str(d),
            "tmux_socket": tmux_socket,
            "update_source": getattr(listener, "update_source", None),
            "last_run": None,
            "last_run_time": None,
        }
        self._write()
        paths = ContextDir(d)
        db = paths.db_file
        for p in (paths.log_file, db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
            if p.exists():
                share_like_dir(p, d)
        pane = os.environ.get("TMUX_PANE")
        if tmux_socket and pane and shutil.which("tmux"):
            try:
                subprocess.run(["tmux", "-S", tmux_socket, "set-option", "-w", "-t", pane,
                                "remain-on-exit", "off"], capture_output=True, timeout=5)
            except (OSError, subprocess.SubprocessError):
                pass
        return self

    def _write(self) -> None:
        self.record["heartbeat"] = time.time()
        try:
            # not for other users (host, user and PID; only the group shares the directory)
            write_json_atomic(ContextDir(self.context_dir).status_file, self.record, mode=0o660)
            self._written = time.monotonic()
            self._warned = False
        except OSError as e:
            if not self._warned:
                log.warning("Could not write the backend status record: %s", e)
                self._warned = True

    def tick(self) -> None:
        """Refresh the record if the update source or the last run processed changed, or the
        heartbeat is due. Cheap when nothing changed; never raises."""
        try:
            lr = getattr(self.listener, "last_run", None)
            run, t = (lr if lr else (None, None))
            src = getattr(self.listener, "update_source", None)
            if (run != self.record.get("last_run") or t != self.record.get("last_run_time")
                    or src != self.record.get("update_source")
                    or time.monotonic() - self._written >= self.heartbeat_seconds):
                self.record.update(last_run=run, last_run_time=t, update_source=src)
                self._write()
        except Exception:
            log.exception("Updating the backend status record failed")

    def close(self) -> None:
        """Remove the status record (if still ours) and release the lock."""
        try:
            remove_status(self.context_dir, expect_pid=os.getpid())
        except OSError as e:
            log.warning("Could not remove the backend status record: %s", e)
        self.lock.release()
