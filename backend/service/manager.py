"""Managing the backend of a context directory: find out its state, start, stop and heal it.

AMORE keeps its backend (``amore-proto listen DIR``) alive without a service manager: a tmux
server bound to ``DIR/amore-tmux.sock`` runs the session ``AMORE`` (configurable,
``[backend] tmux_session``), whose only window runs the backend. The socket file alone proves
nothing (it stays behind when the tmux server is killed, and it is visible from every host on
GPFS while only the host running the server can talk to it), so the state is established from
three sources:

* the **status record** ``DIR/backend-status.json`` (:mod:`backend.service.status`), written
  atomically by the running backend (:class:`backend.service.session.BackendSession`): host,
  user, PID (with the process start time, against PID reuse), start time, AMORE version,
  update source, last run processed and a heartbeat;
* the **tmux server** (:mod:`backend.service.tmux`): does it answer on the socket, does the
  session exist, is its pane alive;
* the **processes** of this host: is the recorded PID alive, is a tmux server bound to the
  socket alive although the socket does not answer (then it is sent ``SIGUSR1``, which makes
  tmux recreate its socket).

Two backends never run on one directory: the backend holds an exclusive ``flock`` on
``DIR/.amore-backend.lock`` for its whole life (:mod:`backend.service.lock`).

Public API, plain Python and safe to call from a worker thread (nothing here touches Qt):

* :func:`backend_state` -> :class:`BackendInfo` (``state``: a :class:`backend.vocab.BackendState`);
* :func:`start_backend`, :func:`stop_backend`, :func:`restart_backend`, :func:`heal`;
* :func:`log_tail`, :class:`LogFollower`, :func:`follow_log` for ``amore.log``.

Each call takes a few milliseconds (one or two ``tmux`` client calls, file reads); it may block
for longer only while it waits for a backend to start or stop.
"""
from __future__ import annotations

import getpass
import logging
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

from backend.contextdir import ContextDir
from backend.service.lock import lock_held
from backend.service.status import (BackendError, backend_settings, context_paths, find_process,
                                    format_duration, format_time, heartbeat_age, is_own_process,
                                    is_this_host, read_status, remove_status, reported_recently,
                                    this_host)
from backend.service.tmux import (MAX_SOCKET_PATH, backend_command, capture_pane,
                                  find_tmux_servers, recreate_socket, server_pid, session_environment,
                                  session_panes, tmux_bin, tmux_run, tmux_server)
from backend.vocab import BackendState

log = logging.getLogger(__name__)

RUNNING_HERE = BackendState.RUNNING_HERE.value
RUNNING_ELSEWHERE = BackendState.RUNNING_ELSEWHERE.value
STOPPED = BackendState.STOPPED.value
STALE = BackendState.STALE.value


# --- state ----------------------------------------------------------------------------------------

@dataclass
class BackendInfo:
    """What is known about the backend of a context directory (:func:`backend_state`).

    ``state`` (a :class:`backend.vocab.BackendState` value, a plain ``str``):

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
        return self.state in (RUNNING_HERE, RUNNING_ELSEWHERE)

    @property
    def uptime(self) -> float | None:
        """Seconds since the backend started, if it runs and its start is known."""
        if self.running and self.started:
            return max(0.0, self.checked - self.started)
        return None

    def summary(self) -> str:
        """One line for a status bar, e.g. ``"Backend running (PID 123, up 5 min, last run 42)"``."""
        if self.state == RUNNING_HERE:
            bits = [f"PID {self.pid}" if self.pid else None,
                    f"up {format_duration(self.uptime)}" if self.uptime is not None else None,
                    f"last run {self.last_run}" if self.last_run is not None else None]
            s = "Backend running (" + ", ".join(b for b in bits if b) + ")"
            return s.replace(" ()", "")
        if self.state == RUNNING_ELSEWHERE:
            return f"Backend running on {self.host}"
        if self.state == STALE:
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
    sock = ContextDir(d).tmux_socket
    rec = read_status(d)
    f = _Facts(d, sock, cfg, rec, foreign=rec is not None and not is_this_host(rec))
    if f.foreign:
        f.sock_exists = os.path.lexists(sock)
        return f
    if rec is not None:
        f.proc = find_process(rec.get("pid"), rec.get("pid_create_time"))
    f.sock_exists = os.path.lexists(sock)
    if f.sock_exists:
        f.server_pid = server_pid(sock)
    if f.server_pid is None and (f.sock_exists or f.proc is not None):
        servers = find_tmux_servers(d)
        if servers:
            f.orphan_server = servers[0]
            # a tmux server of this directory lives but its socket is gone or unusable: tell it
            # to recreate the socket -- automatically only while the backend itself is alive
            # (at shutdown the backend removes the record, then the socket, then exits)
            if recover and f.proc is not None and recreate_socket(sock, f.orphan_server):
                f.recovered = True
                f.sock_exists = True
                f.server_pid = server_pid(sock)
                f.orphan_server = None
    if f.server_pid is not None:
        f.panes = session_panes(sock, cfg["tmux_session"])
    return f


def _classify(f: _Facts) -> BackendInfo:
    rec = f.rec or {}
    st = BackendInfo(
        state=STOPPED, context_dir=str(f.d), host=rec.get("host"), pid=rec.get("pid"),
        user=rec.get("user"), started=rec.get("started"), version=rec.get("version"),
        last_run=rec.get("last_run"), last_run_time=rec.get("last_run_time"),
        update_source=rec.get("update_source"), heartbeat=rec.get("heartbeat"),
        socket_path=str(f.sock), tmux_pid=f.server_pid)
    session = f.cfg["tmux_session"]

    if f.foreign:
        now = time.time()
        age = heartbeat_age(rec, now)
        who = f"PID {st.pid}, user {st.user}"
        if reported_recently(rec, f.cfg["heartbeat_seconds"], now):
            st.state = RUNNING_ELSEWHERE
            st.message = (f"The backend runs on {st.host} ({who}). To control it, run the AMORE "
                          f"GUI or 'amore-proto backend' on {st.host}.")
        else:
            st.state = STALE
            st.message = (f"The backend was recorded on {st.host} ({who}) but has not reported "
                          f"for {format_duration(age)}; it has probably stopped. If it no longer "
                          f"runs there, clear this with heal(force=True) "
                          f"('amore-proto backend start --force').")
        return st

    st.host = st.host or this_host()
    if f.panes is not None and f.server_pid is not None:
        alive = [p for p in f.panes if not p[0]]
        if alive:
            st.state = RUNNING_HERE
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
        st.state = STALE
        how = f" (status {status})" if status is not None else ""
        st.message = (f"The backend has exited{how}; its tmux session '{session}' is left over.")
        return st

    if f.proc is not None:
        st.state = RUNNING_HERE
        st.controllable = is_own_process(f.proc)
        if f.orphan_server is not None:
            st.message = (f"The backend runs, but the socket of its tmux server (PID "
                          f"{f.orphan_server.pid}) is unusable and could not be recreated.")
        else:
            st.message = "Running outside tmux (started from a terminal)."
        if not st.controllable:
            st.message += f" It runs under user {st.user}; only they can stop it."
        return st

    if f.rec is not None:
        st.state = STALE
        st.message = (f"The backend (PID {st.pid}, started {format_time(st.started)}) is gone "
                      f"without cleaning up (killed or crashed).")
        return st

    if f.sock_exists and f.server_pid is None:
        st.state = STALE
        if f.orphan_server is not None:
            st.message = (f"The tmux server (PID {f.orphan_server.pid}) of this directory is "
                          f"alive but its socket is unusable.")
        else:
            st.message = "Stale tmux socket: no tmux server answers on it."
        return st

    if f.server_pid is not None:
        st.message = f"The tmux server on {f.sock.name} has no '{session}' session."
    return st


def backend_state(context_dir, *, recover: bool = True, config=None) -> BackendInfo:
    """Find out whether and where the backend of ``context_dir`` runs.

    Liveness is checked, not assumed: the tmux server must answer on ``DIR/amore-tmux.sock``
    with a live pane in the ``AMORE`` session, or the recorded process must be alive on this
    host (with the recorded start time). With ``recover`` (default), a tmux server of this
    directory that is alive but whose socket was deleted or broke is sent SIGUSR1 to recreate
    the socket -- harmless and automatic. Nothing else is changed; see :func:`heal`.

    ``config``: a :class:`backend.config.Config` (default: loaded from the directory).
    Thread-safe; typically 5-20 ms.
    """
    d = context_paths(context_dir).path
    cfg = backend_settings(d, config)
    if not d.is_dir():
        return BackendInfo(STOPPED, str(d), message=f"{d} does not exist.")
    return _classify(_probe(d, cfg, recover))


def heal(context_dir, *, force: bool = False, config=None) -> BackendInfo:
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
    cd = context_paths(context_dir)
    d, sock = cd.path, cd.tmux_socket
    cfg = backend_settings(d, config)
    if not d.is_dir():
        return backend_state(d, config=config)
    f = _probe(d, cfg, recover=True)
    st = _classify(f)
    done = []
    if f.foreign:
        if st.state == STALE and force and not lock_held(d):
            if remove_status(d, expect_pid=f.rec.get("pid")):
                done.append(f"removed the status record of {st.host}")
            if os.path.lexists(sock):
                sock.unlink()
                done.append("removed the tmux socket")
    else:
        session = cfg["tmux_session"]
        if f.orphan_server is not None and recreate_socket(sock, f.orphan_server):
            done.append(f"recreated the tmux socket (SIGUSR1 to PID {f.orphan_server.pid})")
            f = _probe(d, cfg, recover=False)
        if f.panes is not None and f.panes and all(p[0] for p in f.panes):
            out = capture_pane(sock, session)
            if out:
                log.warning("The backend's tmux session ended with:\n%s", out)
            tmux_run(sock, "kill-session", "-t", f"={session}")
            done.append(f"closed the tmux session '{session}' of the exited backend")
            deadline = time.monotonic() + 2.0  # the server exits with its last session
            while time.monotonic() < deadline and find_tmux_servers(d):
                time.sleep(0.05)
            f = _probe(d, cfg, recover=False)
        if f.rec is not None and f.proc is None and lock_held(d) is False:
            if remove_status(d, expect_pid=f.rec.get("pid")):
                done.append(f"removed the status record of the gone backend (PID {f.rec.get('pid')})")
        if os.path.lexists(sock) and server_pid(sock) is None and not find_tmux_servers(d):
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
                  force: bool = False, config=None) -> BackendInfo:
    """Start the backend of ``context_dir`` in its tmux session on this machine.

    First :func:`heal` (with ``force``) cleans up left-overs. If the backend already runs here,
    returns its state. Raises :class:`BackendError` if it runs on another host (the message
    names it), if the directory is not a context directory, or if the backend fails to start
    (the message includes its last output). With ``wait`` (default), waits up to ``timeout``
    seconds (``[backend] start_timeout``) until the backend has written its status record.

    Blocks (up to the timeout): call it from a worker thread in a GUI. The GUI should ask the
    user before calling it.
    """
    cd = context_paths(context_dir)
    d, sock = cd.path, cd.tmux_socket
    cfg = backend_settings(d, config)
    timeout = float(cfg["start_timeout"] if timeout is None else timeout)
    if not cd.db_file.exists():
        raise BackendError(f"{d} is not an AMORE context directory (no {cd.db_file.name}); create it "
                           f"with 'amore-proto init {d} --proposal N'.")
    st = heal(d, force=force, config=config)
    if st.state == RUNNING_HERE:
        return st
    if st.state != STOPPED:
        raise BackendError(st.message or f"The backend is {st.state}.")
    if lock_held(d):
        raise BackendError(f"Another backend holds the lock of {d} but has not reported where it "
                           f"runs; try again in a moment.")
    if len(os.fsencode(str(sock))) > MAX_SOCKET_PATH:
        raise BackendError(f"The path {sock} is too long for a tmux socket "
                           f"(at most {MAX_SOCKET_PATH} bytes).")
    tmux_bin()
    session = cfg["tmux_session"]
    server = tmux_server(sock, cfg)
    args = ["new-session", "-d", "-s", session, "-n", "backend", "-c", str(d)]
    for k, v in session_environment().items():
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
            out = capture_pane(sock, session, 60)
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


def stop_backend(context_dir, *, timeout: float | None = None, config=None) -> BackendInfo:
    """Stop the backend of ``context_dir`` running on this machine and return the new state.

    Sends SIGTERM (the backend finishes runs in progress for a few seconds, leaving the rest
    pending for the next start), waits up to ``timeout`` seconds (``[backend] stop_timeout``),
    then kills it. Left-overs are cleaned with :func:`heal`. Does nothing if it is not running.
    Raises :class:`BackendError` if it runs on another host or under another user.
    """
    cd = context_paths(context_dir)
    d, sock = cd.path, cd.tmux_socket
    cfg = backend_settings(d, config)
    timeout = float(cfg["stop_timeout"] if timeout is None else timeout)
    f = _probe(d, cfg, recover=True)
    st = _classify(f)
    if st.state == RUNNING_ELSEWHERE:
        raise BackendError(st.message)
    if st.state != RUNNING_HERE:
        return heal(d, config=config)
    if not st.controllable:
        raise BackendError(f"The backend runs under user {st.user}; only they can stop it.")
    import psutil
    session = cfg["tmux_session"]
    proc = f.proc
    if proc is None and f.panes:
        proc = find_process(next(p[2] for p in f.panes if not p[0]))
    own = proc is not None and is_own_process(proc)
    if own:
        try:
            proc.send_signal(signal.SIGTERM)
        except psutil.Error:
            pass
    elif f.panes is not None:  # e.g. another user's backend in a tmux server shared with us
        tmux_run(sock, "send-keys", "-t", f"={session}:", "C-c")
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
                    tmux_run(sock, "kill-session", "-t", f"={session}")
                proc.wait(5)
            except psutil.Error:
                pass
        except psutil.Error:
            pass
    # the session closes when its command exits; give tmux a moment, then make sure
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline and session_panes(sock, session) is not None:
        time.sleep(0.05)
    if session_panes(sock, session) is not None:
        tmux_run(sock, "kill-session", "-t", f"={session}")
    new = heal(d, config=config)
    if killed:
        new.message = ("The backend did not stop in time and was killed. " + new.message).strip()
    return new


def restart_backend(context_dir, *, config=None) -> BackendInfo:
    """:func:`stop_backend` then :func:`start_backend`; returns the new state."""
    stop_backend(context_dir, config=config)
    return start_backend(context_dir, config=config)


# --- the log -----------------------------------------------------------------------------------------

def log_tail(context_dir, n: int = 100) -> list[str]:
    """The last ``n`` lines of ``DIR/amore.log`` (without line ends); [] if there is no log.
    Reads only the end of the file, however large it is; continues into the rotated
    ``amore.log.1`` when the current file has fewer lines (just after a rotation)."""
    path = context_paths(context_dir).log_file
    lines = _file_tail(path, n)
    if len(lines) < n:
        lines = _file_tail(path.with_name(path.name + ".1"), n - len(lines)) + lines
    return lines[-n:] if n > 0 else []


def _file_tail(path: Path, n: int) -> list[str]:
    """The last ``n`` lines of the file ``path`` ([] if it cannot be read)."""
    if n <= 0:
        return []
    try:
        with open(path, "rb") as f:
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
    return data.decode("utf-8", "replace").splitlines()[-n:]


class LogFollower:
    """Incremental reader of ``DIR/amore.log`` for a live view.

    The first :meth:`read_new` returns the last ``initial_lines`` lines, later calls the complete
    lines appended since. Copes with the log being truncated or replaced. Poll it from a timer
    or thread (e.g. every 0.5 s).
    """

    def __init__(self, context_dir, initial_lines: int = 100):
        self.path = context_paths(context_dir).log_file
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
