"""The backend as front-ends see and drive it (plain Python, no Qt): its state, start, stop,
restart and its log. The one module of the application layer that calls
:mod:`backend.service.manager`.

* :func:`backend_status` - the state for a status bar, built on
  :func:`backend.service.manager.backend_state` (status record, tmux session, processes).
  Asking also heals what can be healed without the user: a deleted tmux socket of a living
  backend is recreated, a stale socket on this machine removed.
* :func:`backend_action` - start, stop or restart, then the state it left.
* :class:`BackendLog` - the live tail of ``amore.log``.

All of them block (tmux, process waits, file reads): call them off the event loop (Qt: a
worker thread; asyncio: ``asyncio.to_thread``); :func:`backend_status` and
:func:`backend_action` never raise.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from backend.vocab import BackendState

#: Status-bar colour of each state.
STATE_COLOURS = {BackendState.RUNNING_HERE.value: "#107c10",
                 BackendState.RUNNING_ELSEWHERE.value: "#107c10",
                 BackendState.STOPPED.value: "#a4262c",
                 BackendState.STALE.value: "#c19c00"}


@dataclass
class BackendIndicator:
    """The backend as the status bar shows it. ``state``: a :class:`backend.vocab.BackendState`
    value (``unknown`` when it could not be found out); ``text``: one line for the status bar;
    ``detail``: tooltip text; ``host`` where the backend runs or last ran."""

    state: str
    text: str
    detail: str = ""
    host: str | None = None

    @property
    def alive(self) -> bool | None:
        """True if a backend runs (here or elsewhere), False if not, None if unknown."""
        if self.state in (BackendState.RUNNING_HERE, BackendState.RUNNING_ELSEWHERE):
            return True
        return False if self.state in (BackendState.STOPPED, BackendState.STALE) else None

    @property
    def colour(self) -> str:
        return STATE_COLOURS.get(self.state, "#8a8886")

    @classmethod
    def unknown(cls, detail: str = "") -> "BackendIndicator":
        """The indicator when the state could not be found out (``detail`` says why)."""
        return cls(BackendState.UNKNOWN.value, "Backend: unknown", detail)


def backend_status(context_dir: str | os.PathLike) -> BackendIndicator:
    """The backend's state for the status bar. Blocks (tmux, up to a few seconds); never raises
    (``unknown`` with the reason)."""
    from backend.service import manager
    try:
        st = manager.backend_state(Path(context_dir))
    except Exception as e:  # a status-bar helper must never break the GUI
        return BackendIndicator.unknown(f"{type(e).__name__}: {e}")
    detail = st.message or ""
    if st.pid:
        detail = f"PID {st.pid} on {st.host} (user {st.user})" + (f"; {detail}" if detail else "")
    if st.state == BackendState.RUNNING_ELSEWHERE:
        detail += (f"\nTo stop or restart it, run the GUI or 'amore-proto backend' on {st.host}.")
    return BackendIndicator(st.state, st.summary(), detail.strip(), st.host)


#: The actions :func:`backend_action` takes.
ACTIONS = ("start", "stop", "restart")


def backend_action(context_dir: str | os.PathLike, action: str,
                   force: bool = False) -> tuple[str | None, BackendIndicator]:
    """Start, stop or restart (``action``, one of :data:`ACTIONS`) the backend of
    ``context_dir`` on this machine; ``force`` (start only): take over from a backend last
    recorded on another machine that stopped reporting.

    Returns ``(error, status)``: ``error`` None, or the message of what went wrong (e.g. the
    backend runs on another host, or died right after starting, with its last output);
    ``status`` the state afterwards. Blocks until the backend is up or down (up to
    ``[backend] start_timeout`` / ``stop_timeout`` seconds); never raises (an unknown
    ``action`` is an error message).

    The action runs in a child process (``amore-proto backend ACTION DIR``), as a user would
    type it: starting tmux and the backend loads libtmux and more, which would otherwise stay in
    the front-end's memory for as long as it runs (the soak's GUI grew by ~3 MB at each start)."""
    if action not in ACTIONS:
        return (f"unknown backend action {action!r}; one of {', '.join(ACTIONS)}",
                backend_status(context_dir))
    error = _run_backend_command(Path(context_dir), action, force)
    return error, backend_status(context_dir)


def _run_backend_command(context_dir: Path, action: str, force: bool) -> str | None:
    """Run ``amore-proto backend ACTION [--force] DIR`` in a child process (this Python, this
    source tree) and wait for it; None if it exited 0, else its message (its standard error
    without the ``amore-proto backend ACTION:`` prefix, or how it ended)."""
    import subprocess
    import sys
    import tempfile

    from backend import PACKAGE_PARENT
    from backend.service.status import backend_settings
    cfg = backend_settings(context_dir)
    timeout = 30.0 + float(cfg["start_timeout"]) + float(cfg["stop_timeout"])
    # this source tree last on the path: found when AMORE is not installed, never ahead of
    # anything the installed Python has
    code = (f"import sys; sys.path.append({PACKAGE_PARENT!r}); "
            "from amore.cli.main import main; sys.exit(main())")
    cmd = [sys.executable, "-c", code, "backend", action, str(context_dir)]
    if force and action == "start":
        cmd.append("--force")
    # stderr to a file, not a pipe: the tmux server it starts must not hold our pipe open
    with tempfile.TemporaryFile("w+") as err:
        try:
            r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=err, timeout=timeout)
        except subprocess.TimeoutExpired:
            return f"'amore-proto backend {action}' did not finish within {timeout:.0f} s"
        except OSError as e:
            return f"could not run 'amore-proto backend {action}': {e}"
        if r.returncode == 0:
            return None
        err.seek(0)
        text = err.read().strip()
    # the command's own message (and what follows it), not log lines before it
    prefix = f"amore-proto backend {action}: "
    lines = text.splitlines()
    first = next((i for i, line in enumerate(lines) if line.startswith(prefix)), 0)
    message = "\n".join(lines[first:]).removeprefix(prefix).strip()
    return message or f"'amore-proto backend {action}' exited with {r.returncode}"


class BackendLog:
    """The live tail of the backend's log (``amore.log`` of the context directory).

    :meth:`read_new` returns the last ``initial_lines`` lines first, then the complete lines
    appended since the last call ([] if none); copes with the log being truncated or replaced.
    Poll it (e.g. twice a second); each call reads the file (blocks briefly), never raises.
    :attr:`path` is the log file.
    """

    def __init__(self, context_dir: str | os.PathLike, initial_lines: int = 200):
        from backend.service.manager import LogFollower
        self._follower = LogFollower(context_dir, initial_lines=initial_lines)
        self.path: Path = self._follower.path

    def read_new(self) -> list[str]:
        return self._follower.read_new()


def setup_logging(level: int = logging.WARNING) -> None:
    """Log to stderr at ``level`` in the format of every AMORE process (the backend's
    :data:`backend.service.logs.LOG_FORMAT`), for a front-end's own messages."""
    from backend.service.logs import LOG_FORMAT
    logging.basicConfig(level=level, format=LOG_FORMAT)
