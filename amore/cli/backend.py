"""``amore-proto backend status|start|stop|restart|attach|logs``: the backend as a service (in tmux)."""
from __future__ import annotations

import os
import sys

from amore.cli.common import context_dir


def cmd_backend(a) -> int:
    """``amore-proto backend status|start|stop|restart|attach|logs [DIR]``.

    ``status`` exits 0 if the backend runs (here or elsewhere), 1 if stale, 3 if stopped.
    """
    import json
    from backend.service import manager
    d = context_dir(a.dir)
    try:
        if a.action == "logs":
            if a.follow:
                try:
                    for line in manager.follow_log(d, a.lines):
                        print(line, flush=True)
                except KeyboardInterrupt:
                    pass
            else:
                print("\n".join(manager.log_tail(d, a.lines)))
            return 0
        if a.action == "status":
            st = manager.backend_state(d)
            if a.json:
                print(json.dumps(st.to_dict(), indent=1))
            else:
                _print_backend_state(st)
            return {"running_here": 0, "running_elsewhere": 0, "stale": 1}.get(st.state, 3)
        if a.action == "attach":
            st = manager.backend_state(d)
            if not (st.state == "running_here" and st.in_tmux):
                print(f"amore-proto backend attach: no backend tmux session to attach to here. "
                      f"{st.summary()}. {st.message}".strip(), file=sys.stderr)
                return 1
            print("Attaching to the backend's tmux session; detach with Ctrl-B d", file=sys.stderr)
            from backend.service.tmux import attach_command
            cmd = attach_command(d)
            os.execvp(cmd[0], cmd)
        if a.action in ("stop", "restart"):
            st = manager.stop_backend(d, timeout=a.timeout)
            print(f"{st.summary()}. {st.message}".strip())
        if a.action in ("start", "restart"):
            st = manager.start_backend(d, force=a.force)
            _print_backend_state(st)
        return 0
    except manager.BackendError as e:
        print(f"amore-proto backend {a.action}: {e}", file=sys.stderr)
        return 1


def _print_backend_state(st) -> None:
    from backend.service.status import format_duration, format_time
    where = {"running_here": f"running on this host ({st.host})",
             "running_elsewhere": f"running on {st.host}",
             "stopped": "stopped", "stale": "not running (stale)"}[st.state]
    print(f"Backend of {st.context_dir}: {where}")
    if st.running or st.state == "stale":
        if st.pid:
            print(f"  Host:           {st.host}")
            print(f"  PID:            {st.pid} (user {st.user})")
        if st.started:
            up = f" (up {format_duration(st.uptime)})" if st.uptime is not None else ""
            print(f"  Started:        {format_time(st.started)}{up}")
        if st.version:
            print(f"  Version:        {st.version}")
        last = (f"run {st.last_run} at {format_time(st.last_run_time)}"
                if st.last_run is not None else "none yet")
        print(f"  Last run:       {last}")
        print(f"  Update source:  {st.update_source or 'unknown'}")
        if st.in_tmux:
            print(f"  tmux:           {st.socket_path} (amore-proto backend attach)")
    if st.message:
        print(f"  {st.message}")
    from amore_gui.web.server import describe_record, read_record
    web = read_record(st.context_dir)
    if web is not None:
        print(f"  Web:            {describe_record(web)}")


def register(sub) -> None:
    """Add this module's commands to the ``amore-proto`` sub-parsers."""
    s = sub.add_parser("backend", help="status, start, stop, restart, attach or logs of the "
                                       "backend (run in tmux)")
    bsub = s.add_subparsers(dest="action", required=True)
    for action, text in (("status", "where the backend runs, PID, uptime, last run, update "
                                    "source (exit status 0 running, 1 stale, 3 stopped)"),
                         ("start", "start the backend in tmux on this machine"),
                         ("stop", "stop the backend"),
                         ("restart", "stop, then start the backend"),
                         ("attach", "attach this terminal to the backend's tmux session"),
                         ("logs", "print the end of amore.log")):
        b = bsub.add_parser(action, help=text, description=text)
        b.add_argument("dir", nargs="?", help="context directory (default: current directory)")
        b.set_defaults(func=cmd_backend, follow=False, lines=50, json=False, timeout=None,
                       force=False)
        if action == "status":
            b.add_argument("--json", action="store_true", help="print JSON")
        if action in ("stop", "restart"):
            b.add_argument("--timeout", type=float, help="seconds before the backend is killed")
        if action in ("start", "restart"):
            b.add_argument("--force", action="store_true",
                           help="clear a stale record of a backend on another host first")
        if action == "logs":
            b.add_argument("--follow", "-f", action="store_true", help="follow new lines")
            b.add_argument("--lines", "-n", type=int, default=50, help="lines to show")
