"""The tmux client: the backend runs in the session ``AMORE`` (``[backend] tmux_session``) of a
tmux server bound to ``DIR/amore-tmux.sock``. Every call has a timeout (a hung server must not
hang the caller); nothing here decides what the state is (:mod:`backend.service.manager` does).
"""
from __future__ import annotations

import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from backend import PACKAGE_PARENT
from backend.contextdir import TMUX_SOCKET_NAME
from backend.service.status import BackendError, backend_settings, context_paths, is_own_process

log = logging.getLogger(__name__)

#: Longest path a Unix socket can have (``sun_path`` is 108 bytes with the final NUL).
MAX_SOCKET_PATH = 107


#: Environment variables handed explicitly to the backend's tmux session (a tmux server that
#: already runs would otherwise give the session its own, older environment).
ENV_PREFIXES = ("AMORE_", "EXTRA_DATA_", "CONDA")
ENV_NAMES = ("PATH", "PYTHONPATH", "VIRTUAL_ENV", "LD_LIBRARY_PATH", "HOME", "USER", "LANG")


def tmux_bin() -> str:
    """Path of the ``tmux`` program; raises :class:`BackendError` if it is not installed."""
    b = shutil.which("tmux")
    if b is None:
        raise BackendError("tmux is not installed on this machine (it is needed to run the "
                           "backend in the background)")
    return b


def tmux_server(sock: Path, cfg: dict):
    """libtmux Server bound to the socket of the context directory."""
    import libtmux
    return libtmux.Server(socket_path=str(sock), config_file=cfg.get("tmux_config") or None)


def tmux_run(sock: Path, *args, timeout: float = 5.0):
    """``tmux -S sock ARGS`` with a timeout (libtmux calls have none, and a probe of a hung
    server must not hang the caller). Returns CompletedProcess or None on timeout/OSError."""
    try:
        return subprocess.run([tmux_bin(), "-S", str(sock), *map(str, args)],
                              capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError, BackendError):
        return None


def server_pid(sock: Path) -> int | None:
    """PID of the tmux server answering on ``sock``, or None if none answers."""
    r = tmux_run(sock, "display-message", "-p", "#{pid}")
    if r is None or r.returncode != 0:
        return None
    try:
        return int(r.stdout.strip())
    except ValueError:
        return None


def session_panes(sock: Path, session: str) -> list[tuple[bool, int | None, int]] | None:
    """Panes of ``session`` as (dead, exit status, pid), or None if there is no such session."""
    r = tmux_run(sock, "list-panes", "-s", "-t", f"={session}",
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


def capture_pane(sock: Path, session: str, lines: int = 200) -> str:
    r = tmux_run(sock, "capture-pane", "-p", "-S", f"-{lines}", "-t", f"={session}:")
    if r is None or r.returncode != 0:
        return ""
    return "\n".join(l for l in r.stdout.splitlines()
                     if l.strip() and not l.startswith("Pane is dead"))


def find_tmux_servers(context_dir) -> list:
    """tmux server processes of this host bound to the context directory's socket path (as
    psutil.Process), whether or not the socket file still exists."""
    import psutil
    s = str(context_paths(context_dir).tmux_socket)
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


def recreate_socket(sock: Path, proc, wait: float = 2.0) -> bool:
    """Send SIGUSR1 to the tmux server ``proc`` (it then recreates its socket) and wait until
    the socket answers. Returns True on success."""
    if not is_own_process(proc):
        return False
    try:
        os.kill(proc.pid, signal.SIGUSR1)
    except OSError:
        return False
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if os.path.exists(sock) and server_pid(sock) is not None:
            log.info("Recreated tmux socket %s (SIGUSR1 to tmux server PID %d)", sock, proc.pid)
            return True
        time.sleep(0.05)
    return False


def attach_command(context_dir, config=None) -> list[str]:
    """The command (argv list) that attaches a terminal to the backend's tmux session; detach
    again with ``Ctrl-B d``."""
    cd = context_paths(context_dir)
    d, sock = cd.path, cd.tmux_socket
    cfg = backend_settings(d, config)
    return ["tmux", "-S", str(sock), "attach-session", "-t", f"={cfg['tmux_session']}"]


def backend_command(context_dir, config=None) -> str:
    """The shell command the tmux session runs: by default
    ``<this Python> -m amore.cli listen DIR`` (works in a venv/conda env without PATH), or
    ``[backend] command`` of the configuration with ``{python}`` and ``{dir}`` filled in."""
    d = context_paths(context_dir).path
    cfg = backend_settings(d, config)
    tpl = cfg.get("command")
    if tpl:
        return str(tpl).format(python=shlex.quote(sys.executable), dir=shlex.quote(str(d)))
    return f"{shlex.quote(sys.executable)} -m amore.cli listen {shlex.quote(str(d))}"


def session_environment() -> dict[str, str]:
    """The environment variables handed to the backend's tmux session (:data:`ENV_PREFIXES`,
    :data:`ENV_NAMES`), with this source checkout on ``PYTHONPATH`` if AMORE is not installed."""
    env = {k: v for k, v in os.environ.items()
           if k.startswith(ENV_PREFIXES) or k in ENV_NAMES}
    try:  # running from a source checkout that is not installed: make `backend` importable
        from importlib.metadata import distribution
        distribution("amore")
    except Exception:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_PARENT, env.get("PYTHONPATH")) if p)
    return env
