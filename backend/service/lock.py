"""The exclusive lock of a context directory: only one backend runs per directory.

flock() on DIR/.amore-backend.lock, held by the backend process for its whole life. The
kernel releases it when the process ends in any way (even SIGKILL), so a crash never leaves
a stale lock, and the lock file itself is never deleted (deleting lock files is racy).
Caveat for network file systems: whether flock() is coherent *between hosts* depends on the
file system and its mount options (GPFS/Storage Scale, NFS and Lustre have each had
node-local variants). On one host it is always exclusive. Across hosts AMORE does not rely on
it alone: start_backend() refuses to start while the status record names another host whose
backend reported within the last few heartbeats.
"""
from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path

from backend.contextdir import ContextDir
from backend.files import share_like_dir
from backend.service.status import BackendLockedError, context_paths, format_time, read_status


def _open_lock(d: Path) -> int:
    path = ContextDir(d).lock_file
    try:
        # no access for other users: whoever can open it can flock() it and keep the
        # backend from starting
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o660)
    except PermissionError:
        # another user's lock file in a directory not shared with the group: flock() works on
        # a read-only descriptor too
        fd = os.open(path, os.O_RDONLY)
    share_like_dir(path, d)
    return fd


class BackendLock:
    """The exclusive lock of a context directory; :meth:`release` it (or exit the process)."""

    def __init__(self, fd: int, path: Path):
        self.fd = fd
        self.path = path

    def release(self) -> None:
        """Release the lock (idempotent)."""
        if self.fd is not None:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            finally:
                os.close(self.fd)
                self.fd = None


def acquire_lock(context_dir, timeout: float = 3.0) -> BackendLock:
    """Take the exclusive backend lock of ``context_dir``.

    Retries for ``timeout`` seconds (a status probe may hold a shared lock for an instant),
    then raises :class:`BackendLockedError` naming the host and PID of the backend holding it.
    """
    cd = context_paths(context_dir)
    d = cd.path
    fd = _open_lock(d)
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return BackendLock(fd, cd.lock_file)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                os.close(fd)
                raise
        if time.monotonic() >= deadline:
            os.close(fd)
            holder = read_status(d)
            if holder:
                who = (f"on {holder.get('host', '?')} under user {holder.get('user', '?')}, "
                       f"PID {holder.get('pid', '?')}, since {format_time(holder.get('started'))}")
            else:
                who = "(it has not written its status record yet)"
            raise BackendLockedError(
                f"Another AMORE backend is already running for {d} {who}. Only one backend may "
                f"run per context directory; stop it first ('amore-proto backend stop {d}').",
                holder)
        time.sleep(0.05)


def lock_held(context_dir) -> bool | None:
    """Whether some process holds the backend lock of ``context_dir`` (None: cannot tell)."""
    try:
        fd = os.open(context_paths(context_dir).lock_file, os.O_RDONLY)
    except FileNotFoundError:
        return False
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except OSError as e:
        return True if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK) else None
    finally:
        os.close(fd)
