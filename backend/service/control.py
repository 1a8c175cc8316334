"""Asking the running backend to reprocess runs in its warm workers.

A one-off ``amore-proto reprocess R`` (also the GUI's "Reprocess" on a run) on the machine
where the backend runs is handed to the backend instead of starting a new Python and a new
worker: no interpreter start, no imports, no context-file load.

The backend listens on a Unix socket in the abstract namespace,
``"\\0amore-control-<db_id>-<hash of the context directory>"``
(host-local like the backend's warm workers; no file in the shared directory, no path-length
limit). Anyone on the machine can bind or connect to such an address, so both ends check the
other's credentials (``SO_PEERCRED``) before anything is sent: only the backend's own user, root,
and members of the context directory's group may connect, and the client talks only to a process
of the backend's user (``uid`` of its status record ``backend-status.json``), see
:func:`check_backend_peer`. Messages are JSON lines with a ``version`` (1):

request  ``{"version": 1, "op": "reprocess", "runs": [int], "names": [str] | null,
         "params": {}, "context_dir": str}``
replies  ``{"version": 1, "kind": "accepted", "pid": int, "host": str}``, then one
         ``{"version": 1, "kind": "run", "run": int, "status": str, "message": str|null,
         "n_errors": int, "seconds": float}`` per run as it finishes, then
         ``{"version": 1, "kind": "done"}``; or ``{"version": 1, "kind": "error", "error": str}``.

``amore-proto reprocess all`` (what is stale, :mod:`backend.processing.selective`) is handed
over too when its work is small: request ``{"version": 1, "op": "reprocess-stale", "names":
[str] | null, "params": {}, "context_dir": str}``. The backend first makes sure it has loaded the
context file as it is now (waiting up to :data:`RELOAD_WAIT_S` for its reload), plans, and
refuses (``error``: the command then computes in workers of its own) when the plan's estimated
work exceeds ``[processing] handover_seconds`` (its workers are there for new runs first) or
the context file is broken. Otherwise ``accepted``, then ``{"version": 1, "kind": "plan",
"runs": int (runs to compute), "values": int, "of": int (runs looked at), "describe": str}``,
the ``run`` replies and ``done`` as above.
The client sends nothing more; when it goes away (Ctrl+C, the GUI's Cancel) the runs of its
request that have not started are dropped and those being computed are stopped (their values
and status from before are kept).
"""
from __future__ import annotations

import grp
import json
import logging
import os
import pwd
import socket
import struct
import threading
from concurrent.futures import as_completed
from pathlib import Path
from typing import Callable

from backend.vocab import RunStatus

log = logging.getLogger(__name__)

VERSION = 1
#: Seconds a ``reprocess-stale`` request waits for the backend to load a changed context file.
RELOAD_WAIT_S = 10.0
#: Seconds a command waits, besides :data:`RELOAD_WAIT_S`, for the backend's plan of what is
#: stale before it plans and computes itself.
STALE_PLAN_S = 20.0


def socket_name(db_id: str, context_dir) -> bytes:
    """Abstract-namespace address of the backend of the database ``db_id`` in ``context_dir``
    (copies of a database share its id, not its directory)."""
    import hashlib
    where = hashlib.sha1(str(Path(context_dir).resolve()).encode()).hexdigest()[:12]
    return f"\0amore-control-{db_id}-{where}".encode()


def _peer(conn: socket.socket) -> tuple[int, int, int]:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)  # pid, uid, gid


def _allowed(uid: int, gid: int, context_dir: Path) -> bool:
    if uid in (0, os.getuid()):
        return True
    try:
        dgid = context_dir.stat().st_gid
        if gid == dgid:
            return True
        name = pwd.getpwuid(uid).pw_name
        return name in grp.getgrgid(dgid).gr_mem
    except (KeyError, OSError):
        return False


class ControlServer:
    """Serves reprocess requests for a :class:`backend.service.listener.Listener`, each on its own
    thread; runs go through the listener's executor and warm worker pool."""

    def __init__(self, listener):
        self.listener = listener
        self.sock: socket.socket | None = None
        self._closed = threading.Event()

    def start(self) -> bool:
        """Listen; False (logged) if the address is taken or sockets are not available."""
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(socket_name(self.listener.db.db_id, self.listener.context_dir))
            s.listen(8)
        except OSError as e:
            log.warning("Reprocess requests from this machine not available: %s", e)
            return False
        self.sock = s
        threading.Thread(target=self._accept, name="control", daemon=True).start()
        return True

    def close(self) -> None:
        self._closed.set()
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), name="control-client",
                             daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rwb", buffering=0) as f:
            def send(**msg):
                f.write((json.dumps({"version": VERSION, **msg}) + "\n").encode())
            try:
                pid, uid, gid = _peer(conn)
                if not _allowed(uid, gid, self.listener.context_dir):
                    send(kind="error", error=f"user {uid} may not use this backend")
                    return
                line = f.readline(1 << 20)
                req = json.loads(line)
                op = req.get("op")
                if req.get("version") != VERSION or op not in ("reprocess", "reprocess-stale"):
                    send(kind="error", error=f"unsupported request (version {req.get('version')!r}, "
                                             f"op {op!r})")
                    return
                if Path(req.get("context_dir", "")).resolve() != Path(self.listener.context_dir).resolve():
                    send(kind="error", error=f"this backend serves {self.listener.context_dir}")
                    return
                runs = [int(r) for r in req["runs"]] if op == "reprocess" else None
                names = req.get("names")
                if names is not None and not (isinstance(names, list)
                                              and all(isinstance(n, str) for n in names)):
                    raise ValueError(f"names must be a list of strings: {names!r}")
                params = req.get("params") or {}
                if not isinstance(params, dict):
                    raise ValueError(f"params must be an object: {params!r}")
            except (ValueError, KeyError, TypeError, OSError) as e:
                try:
                    send(kind="error", error=f"bad request: {e}")
                except OSError:
                    pass
                return
            lst = self.listener
            from backend.store.trust import is_closed
            if is_closed(lst.db):  # the command line then says so, as without a backend
                send(kind="error", error="the proposal is closed")
                return
            if runs is None:   # reprocess-stale: what is stale, if the work is small
                try:
                    work, refusal = self._stale_work(names)
                except Exception as e:  # noqa: BLE001 - the command then plans itself
                    log.exception("Planning a reprocess of what is stale failed")
                    work, refusal = None, f"the backend could not plan it ({e})"
                try:
                    if refusal:
                        log.info("Reprocess of what is stale requested by PID %d (user %d) left "
                                 "to the command: %s", pid, uid, refusal)
                        send(kind="error", error=refusal)
                        return
                    todo, reuse, kinds, n_looked, described = work
                    log.info("Reprocess of what is stale requested by PID %d (user %d): %s",
                             pid, uid, described)
                    send(kind="accepted", pid=os.getpid(), host=socket.gethostname())
                    send(kind="plan", runs=len(todo), values=sum(
                        len(lst.processor.variables) if v is None else len(v)
                        for v in todo.values()), of=n_looked, describe=described)
                except OSError:   # the command went away (gave up waiting: it computes itself)
                    return
                futs = {lst.executor.submit(lst.processor.process, p, r,
                                            kinds.get((p, r), "all"), todo[p, r], params,
                                            only=todo[p, r] is not None, reuse=reuse.get((p, r))): r
                        for p, r in sorted(todo, key=lambda k: -k[1])}
            else:
                log.info("Reprocess of run(s) %s requested by PID %d (user %d)",
                         ", ".join(map(str, runs)), pid, uid)
                send(kind="accepted", pid=os.getpid(), host=socket.gethostname())
                futs = {lst.executor.submit(lst.processor.process, lst.proposal, r, "all", names,
                                            params): r for r in runs}
            finished = threading.Event()
            threading.Thread(target=self._cancel_when_gone, args=(f, futs, finished, pid),
                             name="control-watch", daemon=True).start()
            try:
                for fut in as_completed(futs):
                    if fut.cancelled():
                        continue
                    try:
                        out = fut.result()
                        send(kind="run", run=out.run, status=out.status, message=out.message,
                             n_errors=out.n_errors, seconds=round(out.seconds, 4))
                    except Exception as e:  # noqa: BLE001 - reported to the client
                        send(kind="run", run=futs[fut], status=RunStatus.FAILED.value, message=str(e),
                             n_errors=0, seconds=0.0)
                send(kind="done")
            except OSError:  # the client went away: runs not started were cancelled
                pass
            finally:
                finished.set()

    def _stale_work(self, names: list[str] | None):
        """For ``reprocess-stale``: ``((todo, reuse, kinds, n_looked, described), None)`` -- the
        plan (:func:`backend.processing.selective.plan`) of the runs in the database and in the
        proposal's raw data, what its requests carry, how many runs were looked at, one line
        for people -- or ``(None, why)`` when the command should compute it in workers of its
        own: the context file is broken or not loaded as it is now within
        :data:`RELOAD_WAIT_S`, a name is not a variable, or the work is more than ``[processing]
        handover_seconds``."""
        import time

        from backend.processing.selective import (code_is_current, describe, estimated_seconds,
                                                  plan, requests)
        lst = self.listener
        deadline = time.monotonic() + RELOAD_WAIT_S
        while not code_is_current(lst.db, lst.config, lst.context_dir):
            if lst.processor.context_error is not None and not lst.reload.reloading:
                lst.reload.check(wait=True)   # loads it if it changed since it was found broken
                if lst.processor.context_error is not None:
                    return None, "the backend's context file is broken"
                continue
            if time.monotonic() > deadline:
                return None, (f"the backend has not loaded the context file as it is now "
                              f"within {RELOAD_WAIT_S:.0f} s")
            lst.reload.check(wait=True)   # (returns at once while the main loop reloads it)
            time.sleep(0.02)
        known = [v.name for v in lst.processor.variables]
        if names is not None and any(n not in known for n in names):
            return None, "unknown variable name(s)"   # the command names the ones that exist
        runs = set(lst.db.run_numbers()) | lst.plugin.runs_on_disk(lst.proposal_dir)
        looked = [(lst.proposal, r) for r in sorted(runs)]
        todo = plan(lst.db, looked, names)
        limit = float(lst.config["processing"].get("handover_seconds", 0) or 0)
        seconds = estimated_seconds(lst.db, todo)
        if seconds > limit:
            return None, (f"{len(todo)} run(s), about {seconds:.0f} s of work: more than the "
                          f"backend's workers take from new runs ([processing] "
                          f"handover_seconds = {limit:g})")
        reuse, kinds = requests(lst.db, todo)
        return (todo, reuse, kinds, len(looked), describe(todo, names or known)), None

    def _cancel_when_gone(self, f, futs: dict, finished: threading.Event, pid: int) -> None:
        """The client sends nothing after its request: end of file means it went away (Ctrl+C,
        the GUI's Cancel, killed). Then the runs of its request that have not started are
        dropped, and those being computed are stopped (their worker is killed and replaced;
        they keep their previous values and status)."""
        try:
            while f.readline():
                pass
        except OSError:
            pass
        if finished.is_set():
            return
        dropped = sorted(r for fut, r in futs.items() if fut.cancel())
        stopped = sorted(r for fut, r in futs.items() if fut.running())
        for r in stopped:
            self.listener.processor.cancel_run(self.listener.proposal, r)
        if dropped or stopped:
            log.info("Reprocess requested by PID %d cancelled by its client: %s", pid, "; ".join(
                f"run(s) {', '.join(map(str, rs))} {what}"
                for rs, what in ((dropped, "not started"), (stopped, "stopped")) if rs))


class BackendUnavailable(Exception):
    """No backend of this database listens on this machine (or it refused); process locally."""


class UntrustedPeer(BackendUnavailable):
    """What answers on the backend's control socket is not known to be the backend: a process
    of another user than the backend's, or the backend's status record cannot be read to tell.
    Nothing was sent to it or read from it; process locally."""


def _user(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name!r} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def check_backend_peer(sock: socket.socket, context_dir) -> None:
    """Make sure the process at the other end of the connected control socket ``sock`` runs as
    the user of the backend of ``context_dir``: its ``SO_PEERCRED`` uid must be the ``uid`` of
    the backend's status record (``backend-status.json``, written by the backend itself).
    Raises :class:`UntrustedPeer` (the message says what to do) if it is not, or if the record
    cannot be read."""
    from backend.service.status import context_paths, read_status
    pid, uid, _ = _peer(sock)
    record_file = context_paths(context_dir).status_file
    rec = read_status(context_dir)
    want = rec.get("uid") if rec else None
    if not isinstance(want, int):
        raise UntrustedPeer(
            f"cannot tell whether the process answering on the backend's control socket (PID "
            f"{pid}, user {_user(uid)}) is the backend: its status record {record_file} "
            f"{'cannot be read' if rec is None else 'names no user'}; nothing was sent to it. "
            f"If the backend is starting, try again in a moment; 'amore-proto backend status' "
            f"says whether it runs")
    if uid != want:
        raise UntrustedPeer(
            f"the process answering on the backend's control socket (PID {pid}) runs as user "
            f"{_user(uid)}, not as the backend's user {_user(want)} ({record_file}); nothing "
            f"was sent to it. Another process is posing as the backend: if it is yours, stop "
            f"it; if not, tell your computing admins (PID {pid} on {socket.gethostname()})")


def request_reprocess(db_id: str, context_dir, runs: list[int] | None, names: list[str] | None,
                      params: dict, on_run: Callable[[dict], None], timeout: float = 2.0,
                      on_plan: Callable[[dict], None] | None = None) -> dict:
    """Ask the backend of ``db_id`` in ``context_dir`` on this machine to reprocess ``runs``
    (None: what is stale, ``reprocess-stale``; ``on_plan(reply)`` with its plan, before any run
    is computed); ``on_run(reply)`` for each finished run. Returns the ``accepted`` reply. Raises :class:`BackendUnavailable` if
    no backend answers (within ``timeout`` seconds) or it refuses, before anything was
    processed; its subclass :class:`UntrustedPeer`, before anything is sent, if what answers
    is not the backend's user (:func:`check_backend_peer`); ``ConnectionError`` if the backend
    goes away in the middle."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(socket_name(db_id, context_dir))
        check_backend_peer(s, context_dir)
    except OSError as e:
        s.close()
        raise BackendUnavailable(str(e)) from None
    except UntrustedPeer:
        s.close()
        raise
    with s, s.makefile("rwb", buffering=0) as f:
        req = {"version": VERSION, "op": "reprocess", "runs": list(runs or ())}
        if runs is None:
            req = {"version": VERSION, "op": "reprocess-stale"}
        req.update(names=names, params=params, context_dir=str(Path(context_dir).resolve()))
        f.write((json.dumps(req) + "\n").encode())
        if runs is None:   # the backend may load the changed context file first, then plans
            s.settimeout(timeout + RELOAD_WAIT_S + STALE_PLAN_S)
        try:
            first = json.loads(f.readline() or b"{}")
        except (OSError, ValueError) as e:
            raise BackendUnavailable(f"no answer: {e}") from None
        if first.get("kind") != "accepted":
            raise BackendUnavailable(first.get("error") or "refused")
        s.settimeout(None)  # runs take as long as they take
        while True:
            line = f.readline()
            if not line:
                raise ConnectionError("the backend closed the connection before all runs were done")
            msg = json.loads(line)
            if msg.get("kind") == "run":
                on_run(msg)
            elif msg.get("kind") == "plan" and on_plan is not None:
                on_plan(msg)
            elif msg.get("kind") == "done":
                return first
