"""Managing the backend of a context directory: start, find, stop and heal it through tmux.

AMORE keeps its backend (``amore-proto listen DIR``) alive without a service manager: a tmux
server bound to ``DIR/amore-tmux.sock`` runs the session ``AMORE`` (configurable,
``[backend] tmux_session``), whose only window runs the backend. The socket file alone proves
nothing (it stays behind when the tmux server is killed, and it is visible from every host on
GPFS while only the host running the server can talk to it), so the state is established from
three sources:

* the **status record** ``DIR/backend-status.json``, written atomically by the running backend
  (:class:`BackendSession`): host, user, PID (with the process start time, against PID reuse),
  start time, AMORE version, update source, last run processed and a heartbeat;
* the **tmux server**: does it answer on the socket, does the session exist, is its pane alive;
* the **processes** of this host: is the recorded PID alive, is a tmux server bound to the
  socket alive although the socket does not answer (then it is sent ``SIGUSR1``, which makes
  tmux recreate its socket).

Two backends never run on one directory: the backend holds an exclusive ``flock`` on
``DIR/.amore-backend.lock`` for its whole life (:func:`acquire_lock`).

Public API, plain Python and safe to call from a worker thread (nothing here touches Qt):

* :func:`backend_state` -> :class:`BackendState` (``state`` is one of :data:`STATES`);
* :func:`start_backend`, :func:`stop_backend`, :func:`restart_backend`, :func:`heal`;
* :func:`log_tail`, :class:`LogFollower`, :func:`follow_log` for ``amore.log``;
* :func:`attach_command`, :func:`backend_command`;
* :func:`share_like_dir` for files created in shared (group-writable) directories.

Each call takes a few milliseconds (one or two ``tmux`` client calls, file reads); it may block
for longer only while it waits for a backend to start or stop.
"""
from __future__ import annotations

import errno
import fcntl
import functools
import getpass
import json
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

from backend.contextdir import (DB_FILE_NAME, LOCK_FILE_NAME, LOG_FILE_NAME, STATUS_FILE_NAME,  # noqa: F401
                                TMUX_SOCKET_NAME)
from backend.files import share_like_dir, write_json_atomic

log = logging.getLogger(__name__)

#: Names inside the context directory. The tmux socket and log names are the listener's.

#: Values of :attr:`BackendState.state`.
STATES = ("running_here", "running_elsewhere", "stopped", "stale")

#: Longest path a Unix socket can have (``sun_path`` is 108 bytes with the final NUL).
MAX_SOCKET_PATH = 107


#: Environment variables handed explicitly to the backend's tmux session (a tmux server that
#: already runs would otherwise give the session its own, older environment).
_ENV_PREFIXES = ("AMORE_", "EXTRA_DATA_", "CONDA")
_ENV_NAMES = ("PATH", "PYTHONPATH", "VIRTUAL_ENV", "LD_LIBRARY_PATH", "HOME", "USER", "LANG")


class BackendError(RuntimeError):
    """A backend operation cannot be done; the message says why, in the user's terms."""


class BackendLockedError(BackendError):
    """Another backend holds the lock of the context directory.

    ``holder`` is that backend's status record (dict) or None if it has not written one yet.
    """

    def __init__(self, message: str, holder: dict | None = None):
        super().__init__(message)
        self.holder = holder


# --- small helpers ---------------------------------------------------------------------------

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


def _backend_config(context_dir: Path, config=None) -> dict:
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


def _paths(context_dir) -> tuple[Path, Path]:
    d = Path(context_dir).expanduser().resolve()
    return d, d / TMUX_SOCKET_NAME


def read_status(context_dir) -> dict | None:
    """The backend status record of ``context_dir`` (a dict, see :class:`BackendSession`), or
    None if there is none or it cannot be read."""
    d, _ = _paths(context_dir)
    try:
        with open(d / STATUS_FILE_NAME) as f:
            rec = json.load(f)
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def _remove_status(d: Path, expect_pid=None) -> bool:
    """Remove the status record, if it (still) belongs to ``expect_pid`` (None: any)."""
    p = d / STATUS_FILE_NAME
    if expect_pid is not None:
        rec = read_status(d)
        if rec is None or rec.get("pid") != expect_pid:
            return False
    try:
        p.unlink()
        return True
    except FileNotFoundError:
        return False


def _is_this_host(rec: dict) -> bool:
    hostname = rec.get("hostname")
    if hostname:
        return hostname == socket.gethostname()
    host = rec.get("host")
    return not host or host == this_host()


def _process(pid, create_time=None):
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


def _own_process(p) -> bool:
    if os.getuid() == 0:
        return True
    try:
        return p.uids().real == os.getuid()
    except Exception:
        return False


def _fmt_time(t) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "?"


def _fmt_duration(s: float) -> str:
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


# --- the exclusive lock ----------------------------------------------------------------------
#
# flock() on DIR/.amore-backend.lock, held by the backend process for its whole life. The
# kernel releases it when the process ends in any way (even SIGKILL), so a crash never leaves
# a stale lock, and the lock file itself is never deleted (deleting lock files is racy).
# Caveat for network file systems: whether flock() is coherent *between hosts* depends on the
# file system and its mount options (GPFS/Storage Scale, NFS and Lustre have each had
# node-local variants). On one host it is always exclusive. Across hosts AMORE does not rely on
# it alone: start_backend() refuses to start while the status record names another host whose
# backend reported within the last few heartbeats.

def _open_lock(d: Path) -> int:
    path = d / LOCK_FILE_NAME
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
    d, _ = _paths(context_dir)
    fd = _open_lock(d)
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return BackendLock(fd, d / LOCK_FILE_NAME)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                os.close(fd)
                raise
        if time.monotonic() >= deadline:
            os.close(fd)
            holder = read_status(d)
            if holder:
                who = (f"on {holder.get('host', '?')} under user {holder.get('user', '?')}, "
                       f"PID {holder.get('pid', '?')}, since {_fmt_time(holder.get('started'))}")
            else:
                who = "(it has not written its status record yet)"
            raise BackendLockedError(
                f"Another AMORE backend is already running for {d} {who}. Only one backend may "
                f"run per context directory; stop it first ('amore-proto backend stop {d}').",
                holder)
        time.sleep(0.05)


def lock_held(context_dir) -> bool | None:
    """Whether some process holds the backend lock of ``context_dir`` (None: cannot tell)."""
    d, _ = _paths(context_dir)
    try:
        fd = os.open(d / LOCK_FILE_NAME, os.O_RDONLY)
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


# --- the backend's side: lock + status record -------------------------------------------------

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
        cfg = _backend_config(self.context_dir, getattr(listener, "config", None))
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
        for name in (LOG_FILE_NAME, DB_FILE_NAME, DB_FILE_NAME + "-wal", DB_FILE_NAME + "-shm"):
            if (d / name).exists():
                share_like_dir(d / name, d)
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
            write_json_atomic(self.context_dir / STATUS_FILE_NAME, self.record, mode=0o660)
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
            _remove_status(self.context_dir, expect_pid=os.getpid())
        except OSError as e:
            log.warning("Could not remove the backend status record: %s", e)
        self.lock.release()


# --- tmux ---------------------------------------------------------------------------------------

def _tmux_bin() -> str:
    b = shutil.which("tmux")
    if b is None:
        raise BackendError("tmux is not installed on this machine (it is needed to run the "
                           "backend in the background)")
    return b


def _server(sock: Path, cfg: dict):
    """libtmux Server bound to the socket of the context directory."""
    import libtmux
    return libtmux.Server(socket_path=str(sock), config_file=cfg.get("tmux_config") or None)


def _tmux_run(sock: Path, *args, timeout: float = 5.0):
    """``tmux -S sock ARGS`` with a timeout (libtmux calls have none, and a probe of a hung
    server must not hang the caller). Returns CompletedProcess or None on timeout/OSError."""
    try:
        return subprocess.run([_tmux_bin(), "-S", str(sock), *map(str, args)],
                              capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError, BackendError):
        return None


def _server_pid(sock: Path) -> int | None:
    """PID of the tmux server answering on ``sock``, or None if none answers."""
    r = _tmux_run(sock, "display-message", "-p", "#{pid}")
    if r is None or r.returncode != 0:
        return None
    try:
        return int(r.stdout.strip())
    except ValueError:
        return None


def _session_panes(sock: Path, session: str) -> list[tuple[bool, int | None, int]] | None:
    """Panes of ``session`` as (dead, exit status, pid), or None if there is no such session."""
    r = _tmux_run(sock, "list-panes", "-s", "-t", f"={session}",
                  "-F", "#{pane_dead} #{pane_dead_status} #{pane_pid}")
    if r is None or r.returncode != 0:
        return None
    panes = []
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3:
            dead, status, pid = parts
        elif len(parts) == 2:
            (dead, pid), status = parts, ""
        else:
            continue
        panes.append((dead == "1", int(status) if status.lstrip("-").isdigit() else None,
                      int(pid)))
    return panes


def _capture_pane(sock: Path, session: str, lines: int = 200) -> str:
    r = _tmux_run(sock, "capture-pane", "-p", "-S", f"-{lines}", "-t", f"={session}:")
    if r is None or r.returncode != 0:
        return ""
    return "\n".join(l for l in r.stdout.splitlines()
                     if l.strip() and not l.startswith("Pane is dead"))


def find_tmux_servers(context_dir) -> list:
    """tmux server processes of this host bound to the context directory's socket path (as
    psutil.Process), whether or not the socket file still exists."""
    import psutil
    _, sock = _paths(context_dir)
    s = str(sock)
    found = []
    for p in psutil.process_iter(["name", "cmdline"]):
        try:
            name = p.info["name"] or ""
            if not name.startswith("tmux") or "client" in name:
                continue
            cmd = p.info["cmdline"] or []
            hit = any(a == s or a == "-S" + s for a in cmd)
            if not hit and any(a.endswith(TMUX_SOCKET_NAME) for a in cmd):
                # started with a relative or differently spelled path: ask the kernel where
                # its listening socket is bound
                hit = any(c.laddr == s for c in p.net_connections(kind="unix"))
            if hit and ("server" in name or p.ppid() == 1):
                found.append(p)
        except (psutil.Error, OSError):
            continue
    return found


def _recreate_socket(sock: Path, proc, wait: float = 2.0) -> bool:
    """Send SIGUSR1 to the tmux server ``proc`` (it then recreates its socket) and wait until
    the socket answers. Returns True on success."""
    if not _own_process(proc):
        return False
    try:
        os.kill(proc.pid, signal.SIGUSR1)
    except OSError:
        return False
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if os.path.exists(sock) and _server_pid(sock) is not None:
            log.info("Recreated tmux socket %s (SIGUSR1 to tmux server PID %d)", sock, proc.pid)
            return True
        time.sleep(0.05)
    return False


def attach_command(context_dir, config=None) -> list[str]:
    """The command (argv list) that attaches a terminal to the backend's tmux session; detach
    again with ``Ctrl-B d``."""
    d, sock = _paths(context_dir)
    cfg = _backend_config(d, config)
    return ["tmux", "-S", str(sock), "attach-session", "-t", f"={cfg['tmux_session']}"]


def backend_command(context_dir, config=None) -> str:
    """The shell command the tmux session runs: by default
    ``<this Python> -m amore.cli listen DIR`` (works in a venv/conda env without PATH), or
    ``[backend] command`` of the configuration with ``{python}`` and ``{dir}`` filled in."""
    d, _ = _paths(context_dir)
    cfg = _backend_config(d, config)
    tpl = cfg.get("command")
    if tpl:
        return str(tpl).format(python=shlex.quote(sys.executable), dir=shlex.quote(str(d)))
    return f"{shlex.quote(sys.executable)} -m amore.cli listen {shlex.quote(str(d))}"


def _session_environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k.startswith(_ENV_PREFIXES) or k in _ENV_NAMES}
    try:  # running from a source checkout that is not installed: make `backend` importable
        from importlib.metadata import distribution
        distribution("amore")
    except Exception:
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


# --- state ----------------------------------------------------------------------------------------

@dataclass
class BackendState:
    """What is known about the backend of a context directory.

    ``state``:

    * ``"running_here"`` -- running on this machine (``in_tmux`` tells whether in its tmux
      session; ``controllable`` whether this process may stop/attach it);
    * ``"running_elsewhere"`` -- running on ``host``; the GUI must run there to control it;
    * ``"stopped"`` -- not running; :func:`start_backend` starts it;
    * ``"stale"`` -- not running, but left-overs (socket, record, dead tmux session) need
      :func:`heal` (which :func:`start_backend` calls), or, for a record of another host that
      stopped reporting, ``heal(force=True)``.

    ``message`` explains the state in a sentence for the user (empty when nothing to add).
    Times are Unix seconds. Fields not known are None.
    """

    state: str
    context_dir: str
    host: str | None = None
    pid: int | None = None
    user: str | None = None
    started: float | None = None
    version: str | None = None
    last_run: int | None = None
    last_run_time: float | None = None
    update_source: str | None = None
    heartbeat: float | None = None
    message: str = ""
    in_tmux: bool = False
    tmux_pid: int | None = None
    controllable: bool = False
    socket_path: str | None = None
    checked: float = field(default_factory=time.time)

    @property
    def running(self) -> bool:
        """True if a backend runs (here or elsewhere)."""
        return self.state in ("running_here", "running_elsewhere")

    @property
    def uptime(self) -> float | None:
        """Seconds since the backend started, if it runs and its start is known."""
        if self.running and self.started:
            return max(0.0, self.checked - self.started)
        return None

    def summary(self) -> str:
        """One line for a status bar, e.g. ``"Backend running (PID 123, up 5 min, last run 42)"``."""
        if self.state == "running_here":
            bits = [f"PID {self.pid}" if self.pid else None,
                    f"up {_fmt_duration(self.uptime)}" if self.uptime is not None else None,
                    f"last run {self.last_run}" if self.last_run is not None else None]
            s = "Backend running (" + ", ".join(b for b in bits if b) + ")"
            return s.replace(" ()", "")
        if self.state == "running_elsewhere":
            return f"Backend running on {self.host}"
        if self.state == "stale":
            return "Backend not running (stale state: " + (self.message or "needs healing") + ")"
        return "Backend stopped"

    def to_dict(self) -> dict:
        """The fields as a JSON-compatible dict."""
        return asdict(self)


@dataclass
class _Facts:
    d: Path
    sock: Path
    cfg: dict
    rec: dict | None
    foreign: bool
    proc: object = None            # psutil.Process of the recorded backend, if alive here
    sock_exists: bool = False
    server_pid: int | None = None  # tmux server answering on the socket
    panes: list | None = None      # panes of the AMORE session (None: no session)
    orphan_server: object = None   # tmux server process bound to the socket that does not answer
    recovered: bool = False        # socket recreated with SIGUSR1 during this probe


def _probe(d: Path, cfg: dict, recover: bool) -> _Facts:
    sock = d / TMUX_SOCKET_NAME
    rec = read_status(d)
    f = _Facts(d, sock, cfg, rec, foreign=rec is not None and not _is_this_host(rec))
    if f.foreign:
        f.sock_exists = os.path.lexists(sock)
        return f
    if rec is not None:
        f.proc = _process(rec.get("pid"), rec.get("pid_create_time"))
    f.sock_exists = os.path.lexists(sock)
    if f.sock_exists:
        f.server_pid = _server_pid(sock)
    if f.server_pid is None and (f.sock_exists or f.proc is not None):
        servers = find_tmux_servers(d)
        if servers:
            f.orphan_server = servers[0]
            # a tmux server of this directory lives but its socket is gone or unusable: tell it
            # to recreate the socket -- automatically only while the backend itself is alive
            # (at shutdown the backend removes the record, then the socket, then exits)
            if recover and f.proc is not None and _recreate_socket(sock, f.orphan_server):
                f.recovered = True
                f.sock_exists = True
                f.server_pid = _server_pid(sock)
                f.orphan_server = None
    if f.server_pid is not None:
        f.panes = _session_panes(sock, cfg["tmux_session"])
    return f


def _classify(f: _Facts) -> BackendState:
    rec = f.rec or {}
    st = BackendState(
        state="stopped", context_dir=str(f.d), host=rec.get("host"), pid=rec.get("pid"),
        user=rec.get("user"), started=rec.get("started"), version=rec.get("version"),
        last_run=rec.get("last_run"), last_run_time=rec.get("last_run_time"),
        update_source=rec.get("update_source"), heartbeat=rec.get("heartbeat"),
        socket_path=str(f.sock), tmux_pid=f.server_pid)
    session = f.cfg["tmux_session"]

    if f.foreign:
        hb = rec.get("heartbeat") or rec.get("started") or 0
        age = time.time() - float(hb)
        stale_after = max(4 * float(f.cfg["heartbeat_seconds"]), 120.0)
        who = f"PID {st.pid}, user {st.user}"
        if age <= stale_after:
            st.state = "running_elsewhere"
            st.message = (f"The backend runs on {st.host} ({who}). To control it, run the AMORE "
                          f"GUI or 'amore-proto backend' on {st.host}.")
        else:
            st.state = "stale"
            st.message = (f"The backend was recorded on {st.host} ({who}) but has not reported "
                          f"for {_fmt_duration(age)}; it has probably stopped. If it no longer "
                          f"runs there, clear this with heal(force=True) "
                          f"('amore-proto backend start --force').")
        return st

    st.host = st.host or this_host()
    if f.panes is not None and f.server_pid is not None:
        alive = [p for p in f.panes if not p[0]]
        if alive:
            st.state = "running_here"
            st.in_tmux = True
            st.controllable = True  # the tmux server talks to us
            if f.proc is None:  # no record yet, or one of an earlier backend
                st.pid = alive[0][2]
                st.message = "Starting (no status record yet)."
                st.user = getpass.getuser()
                st.started = st.version = st.last_run = st.last_run_time = None
                st.update_source = st.heartbeat = None
            if f.recovered:
                st.message = (f"The tmux socket was unusable and has been recreated (SIGUSR1 to "
                              f"tmux server PID {f.server_pid}).")
            return st
        status = f.panes[0][1] if f.panes else None
        st.state = "stale"
        how = f" (status {status})" if status is not None else ""
        st.message = (f"The backend has exited{how}; its tmux session '{session}' is left over.")
        return st

    if f.proc is not None:
        st.state = "running_here"
        st.controllable = _own_process(f.proc)
        if f.orphan_server is not None:
            st.message = (f"The backend runs, but the socket of its tmux server (PID "
                          f"{f.orphan_server.pid}) is unusable and could not be recreated.")
        else:
            st.message = "Running outside tmux (started from a terminal)."
        if not st.controllable:
            st.message += f" It runs under user {st.user}; only they can stop it."
        return st

    if f.rec is not None:
        st.state = "stale"
        st.message = (f"The backend (PID {st.pid}, started {_fmt_time(st.started)}) is gone "
                      f"without cleaning up (killed or crashed).")
        return st

    if f.sock_exists and f.server_pid is None:
        st.state = "stale"
        if f.orphan_server is not None:
            st.message = (f"The tmux server (PID {f.orphan_server.pid}) of this directory is "
                          f"alive but its socket is unusable.")
        else:
            st.message = "Stale tmux socket: no tmux server answers on it."
        return st

    if f.server_pid is not None:
        st.message = f"The tmux server on {f.sock.name} has no '{session}' session."
    return st


def backend_state(context_dir, *, recover: bool = True, config=None) -> BackendState:
    """Find out whether and where the backend of ``context_dir`` runs.

    Liveness is checked, not assumed: the tmux server must answer on ``DIR/amore-tmux.sock``
    with a live pane in the ``AMORE`` session, or the recorded process must be alive on this
    host (with the recorded start time). With ``recover`` (default), a tmux server of this
    directory that is alive but whose socket was deleted or broke is sent SIGUSR1 to recreate
    the socket -- harmless and automatic. Nothing else is changed; see :func:`heal`.

    ``config``: a :class:`backend.config.Config` (default: loaded from the directory).
    Thread-safe; typically 5-20 ms.
    """
    d, _ = _paths(context_dir)
    cfg = _backend_config(d, config)
    if not d.is_dir():
        return BackendState("stopped", str(d), message=f"{d} does not exist.")
    return _classify(_probe(d, cfg, recover))


def heal(context_dir, *, force: bool = False, config=None) -> BackendState:
    """Repair what a dead backend left behind, then return the new :func:`backend_state`.

    Safe at any time: a running backend is never touched. Repairs, on this host:

    * a tmux server alive with an unusable socket -> SIGUSR1 (socket recreated);
    * the ``AMORE`` session whose backend has exited -> session killed (its last output is
      logged);
    * a status record whose process is gone -> removed (unless the lock is held);
    * a socket no tmux server answers on, with no tmux server process for it -> removed.

    A record of another host is only cleared with ``force=True`` and only once it stopped
    reporting (state ``stale``); a backend reporting from another host is never cleared.
    """
    d, sock = _paths(context_dir)
    cfg = _backend_config(d, config)
    if not d.is_dir():
        return backend_state(d, config=config)
    f = _probe(d, cfg, recover=True)
    st = _classify(f)
    done = []
    if f.foreign:
        if st.state == "stale" and force and not lock_held(d):
            if _remove_status(d, expect_pid=f.rec.get("pid")):
                done.append(f"removed the status record of {st.host}")
            if os.path.lexists(sock):
                sock.unlink()
                done.append("removed the tmux socket")
    else:
        session = cfg["tmux_session"]
        if f.orphan_server is not None and _recreate_socket(sock, f.orphan_server):
            done.append(f"recreated the tmux socket (SIGUSR1 to PID {f.orphan_server.pid})")
            f = _probe(d, cfg, recover=False)
        if f.panes is not None and f.panes and all(p[0] for p in f.panes):
            out = _capture_pane(sock, session)
            if out:
                log.warning("The backend's tmux session ended with:\n%s", out)
            _tmux_run(sock, "kill-session", "-t", f"={session}")
            done.append(f"closed the tmux session '{session}' of the exited backend")
            deadline = time.monotonic() + 2.0  # the server exits with its last session
            while time.monotonic() < deadline and find_tmux_servers(d):
                time.sleep(0.05)
            f = _probe(d, cfg, recover=False)
        if f.rec is not None and f.proc is None and lock_held(d) is False:
            if _remove_status(d, expect_pid=f.rec.get("pid")):
                done.append(f"removed the status record of the gone backend (PID {f.rec.get('pid')})")
        if os.path.lexists(sock) and _server_pid(sock) is None and not find_tmux_servers(d):
            try:
                sock.unlink()
                done.append("removed the stale tmux socket")
            except FileNotFoundError:
                pass
            except OSError as e:
                done.append(f"could not remove the stale tmux socket: {e}")
    new = backend_state(d, recover=False, config=config)
    if done:
        log.info("Healed the backend state of %s: %s", d, "; ".join(done))
        new.message = ("Healed: " + "; ".join(done) + ". " + new.message).strip()
    return new


# --- start / stop ----------------------------------------------------------------------------------

def start_backend(context_dir, *, wait: bool = True, timeout: float | None = None,
                  force: bool = False, config=None) -> BackendState:
    """Start the backend of ``context_dir`` in its tmux session on this machine.

    First :func:`heal` (with ``force``) cleans up left-overs. If the backend already runs here,
    returns its state. Raises :class:`BackendError` if it runs on another host (the message
    names it), if the directory is not a context directory, or if the backend fails to start
    (the message includes its last output). With ``wait`` (default), waits up to ``timeout``
    seconds (``[backend] start_timeout``) until the backend has written its status record.

    Blocks (up to the timeout): call it from a worker thread in a GUI. The GUI should ask the
    user before calling it.
    """
    d, sock = _paths(context_dir)
    cfg = _backend_config(d, config)
    timeout = float(cfg["start_timeout"] if timeout is None else timeout)
    if not (d / "runs.sqlite").exists():
        raise BackendError(f"{d} is not an AMORE context directory (no runs.sqlite); create it "
                           f"with 'amore-proto init {d} --proposal N'.")
    st = heal(d, force=force, config=config)
    if st.state == "running_here":
        return st
    if st.state != "stopped":
        raise BackendError(st.message or f"The backend is {st.state}.")
    if lock_held(d):
        raise BackendError(f"Another backend holds the lock of {d} but has not reported where it "
                           f"runs; try again in a moment.")
    if len(os.fsencode(str(sock))) > MAX_SOCKET_PATH:
        raise BackendError(f"The path {sock} is too long for a tmux socket "
                           f"(at most {MAX_SOCKET_PATH} bytes).")
    _tmux_bin()
    session = cfg["tmux_session"]
    server = _server(sock, cfg)
    args = ["new-session", "-d", "-s", session, "-n", "backend", "-c", str(d)]
    for k, v in _session_environment().items():
        args += ["-e", f"{k}={v}"]
    # keep the pane if the backend dies at once, so its error can be shown
    args += [backend_command(d, config), ";",
             "set-option", "-w", "-t", f"={session}:", "remain-on-exit", "on"]
    t0 = time.time()
    proc = server.cmd(*args)
    err = "\n".join(proc.stderr or [])
    if proc.returncode and "duplicate session" not in err:
        raise BackendError(f"Could not start tmux on {sock}: {err or proc.returncode}")
    log.info("Started the backend of %s in tmux session '%s' (%s)", d, session, sock)
    if not wait:
        return backend_state(d, recover=False, config=config)

    deadline = time.monotonic() + timeout
    dead_since = None
    while True:
        f = _probe(d, cfg, recover=False)
        if f.panes and all(p[0] for p in f.panes):
            status = f.panes[0][1]
            # tmux marks the pane dead when its output closes and learns the exit status from
            # SIGCHLD, which it can miss while libutempter's handler is installed just after
            # the pane is spawned (tmux/tmux#311): then a SIGCHLD of our own gets it reaped.
            if dead_since is None:
                dead_since = time.monotonic()
            elif status is None and f.server_pid and time.monotonic() - dead_since > 0.2:
                try:
                    os.kill(f.server_pid, signal.SIGCHLD)
                except OSError:
                    pass
            if status is None and time.monotonic() - dead_since < 1.5:
                time.sleep(0.05)
                continue
            out = _capture_pane(sock, session, 60)
            heal(d, config=config)
            how = f" (exit status {status})" if status is not None else ""
            raise BackendError(f"The backend stopped right after starting{how}:\n"
                               + _tail_text(out, d))
        if f.server_pid is None and f.proc is None:
            heal(d, config=config)
            raise BackendError("The backend's tmux session ended right after starting.\n"
                               + _tail_text("", d))
        if f.proc is not None and (f.rec.get("started") or 0) >= t0 - 1:
            return _classify(f)
        if time.monotonic() > deadline:
            st = _classify(f)
            st.message = (f"Started, but the backend has not reported within {timeout:.0f} s; "
                          f"see amore.log.")
            return st
        time.sleep(0.1)


def _tail_text(pane_output: str, d: Path, n: int = 15) -> str:
    lines = [l for l in pane_output.splitlines() if l.strip() and not l.startswith("Pane is dead")]
    if not lines:
        lines = log_tail(d, n)
        return "Last lines of amore.log:\n" + "\n".join(lines) if lines else ""
    return "\n".join(lines[-n:])


def stop_backend(context_dir, *, timeout: float | None = None, config=None) -> BackendState:
    """Stop the backend of ``context_dir`` running on this machine and return the new state.

    Sends SIGTERM (the backend finishes runs in progress for a few seconds, leaving the rest
    pending for the next start), waits up to ``timeout`` seconds (``[backend] stop_timeout``),
    then kills it. Left-overs are cleaned with :func:`heal`. Does nothing if it is not running.
    Raises :class:`BackendError` if it runs on another host or under another user.
    """
    d, sock = _paths(context_dir)
    cfg = _backend_config(d, config)
    timeout = float(cfg["stop_timeout"] if timeout is None else timeout)
    f = _probe(d, cfg, recover=True)
    st = _classify(f)
    if st.state == "running_elsewhere":
        raise BackendError(st.message)
    if st.state != "running_here":
        return heal(d, config=config)
    if not st.controllable:
        raise BackendError(f"The backend runs under user {st.user}; only they can stop it.")
    import psutil
    session = cfg["tmux_session"]
    proc = f.proc
    if proc is None and f.panes:
        proc = _process(next(p[2] for p in f.panes if not p[0]))
    own = proc is not None and _own_process(proc)
    if own:
        try:
            proc.send_signal(signal.SIGTERM)
        except psutil.Error:
            pass
    elif f.panes is not None:  # e.g. another user's backend in a tmux server shared with us
        _tmux_run(sock, "send-keys", "-t", f"={session}:", "C-c")
    killed = False
    if proc is not None:
        try:
            proc.wait(timeout)
        except psutil.TimeoutExpired:
            log.warning("The backend (PID %d) did not stop within %.0f s; killing it", proc.pid,
                        timeout)
            killed = True
            try:
                if own:
                    proc.kill()
                else:
                    _tmux_run(sock, "kill-session", "-t", f"={session}")
                proc.wait(5)
            except psutil.Error:
                pass
        except psutil.Error:
            pass
    # the session closes when its command exits; give tmux a moment, then make sure
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline and _session_panes(sock, session) is not None:
        time.sleep(0.05)
    if _session_panes(sock, session) is not None:
        _tmux_run(sock, "kill-session", "-t", f"={session}")
    new = heal(d, config=config)
    if killed:
        new.message = ("The backend did not stop in time and was killed. " + new.message).strip()
    return new


def restart_backend(context_dir, *, config=None) -> BackendState:
    """:func:`stop_backend` then :func:`start_backend`; returns the new state."""
    stop_backend(context_dir, config=config)
    return start_backend(context_dir, config=config)


# --- the log -----------------------------------------------------------------------------------------

def log_tail(context_dir, n: int = 100) -> list[str]:
    """The last ``n`` lines of ``DIR/amore.log`` (without line ends); [] if there is no log.
    Reads only the end of the file, however large it is."""
    d, _ = _paths(context_dir)
    try:
        with open(d / LOG_FILE_NAME, "rb") as f:
            f.seek(0, os.SEEK_END)
            end = f.tell()
            block = 8192
            data = b""
            pos = end
            while pos > 0 and data.count(b"\n") <= n:
                step = min(block, pos)
                pos -= step
                f.seek(pos)
                data = f.read(step) + data
                block *= 2
    except OSError:
        return []
    lines = data.decode("utf-8", "replace").splitlines()
    return lines[-n:] if n > 0 else []


class LogFollower:
    """Incremental reader of ``DIR/amore.log`` for a live view.

    The first :meth:`read_new` returns the last ``initial_lines`` lines, later calls the complete
    lines appended since. Copes with the log being truncated or replaced. Poll it from a timer
    or thread (e.g. every 0.5 s).
    """

    def __init__(self, context_dir, initial_lines: int = 100):
        d, _ = _paths(context_dir)
        self.path = d / LOG_FILE_NAME
        self.initial_lines = initial_lines
        self._pos: int | None = None
        self._ino = None
        self._partial = b""

    def read_new(self) -> list[str]:
        """Lines added since the last call (the tail on the first call)."""
        try:
            st = os.stat(self.path)
        except OSError:
            return []
        if self._pos is None:
            self._pos, self._ino = st.st_size, st.st_ino
            return log_tail(self.path.parent, self.initial_lines)
        if st.st_ino != self._ino or st.st_size < self._pos:
            self._pos, self._ino, self._partial = 0, st.st_ino, b""
        if st.st_size == self._pos:
            return []
        try:
            with open(self.path, "rb") as f:
                f.seek(self._pos)
                data = f.read()
        except OSError:
            return []
        self._pos += len(data)
        data = self._partial + data
        *complete, self._partial = data.split(b"\n")
        return [l.decode("utf-8", "replace") for l in complete]


def follow_log(context_dir, initial_lines: int = 50, poll: float = 0.5,
               stop=None) -> Iterator[str]:
    """Yield the tail of ``amore.log`` and then new lines as they are written (like
    ``tail -f``), until ``stop`` (a threading.Event, optional) is set."""
    lf = LogFollower(context_dir, initial_lines)
    while stop is None or not stop.is_set():
        lines = lf.read_new()
        yield from lines
        if not lines:
            time.sleep(poll)
