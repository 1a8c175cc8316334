"""``amore-proto``: AMORE's command line.

Every command takes the context directory as an argument or uses the current directory.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from pathlib import Path

log = logging.getLogger("amore")


def _dir(arg) -> Path:
    return Path(arg if arg else os.getcwd()).resolve()


# --- init / proposal ----------------------------------------------------------------------

def init_context_dir(context_dir: Path, proposal: int, template: str = "generic",
                     context_file: Path | None = None) -> Path:
    """Create a context directory: ``runs.sqlite`` for ``proposal``, ``context.py`` from a
    template (or a given file) and ``extracted_data/``.

    Raises ``FileExistsError`` if a context file already exists, :class:`StorageError` if the
    database belongs to another proposal, ``KeyError`` for an unknown template.
    """
    import context_templates
    from .manager import share_like_dir
    from .storage import RunDB

    context_dir.mkdir(parents=True, exist_ok=True)
    ctx = context_dir / "context.py"
    src = context_file if context_file is not None else context_templates.path(template)
    if ctx.exists():
        raise FileExistsError(f"{ctx} already exists; not overwriting it")
    db = RunDB.create(context_dir, proposal)
    db.close()
    shutil.copyfile(src, ctx)
    (context_dir / "extracted_data").mkdir(exist_ok=True)
    # a proposal group shares usr/Shared/amore: what we create is group-writable where it is
    for p in (db.path, ctx, context_dir / "extracted_data"):
        share_like_dir(p)
    return ctx


def cmd_init(a) -> int:
    from .storage import StorageError
    d = _dir(a.dir)
    try:
        ctx = init_context_dir(d, a.proposal, a.template, Path(a.context) if a.context else None)
    except (FileExistsError, StorageError, KeyError) as e:
        print(f"amore-proto init: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 1
    print(f"Initialised {d} for proposal {a.proposal}; edit {ctx} to define variables, "
          f"then run 'amore-proto listen {d}'")
    return 0


def cmd_proposal(a) -> int:
    from .storage import RunDB, StorageError
    d = _dir(a.dir)
    try:
        if a.proposal is None:
            db = RunDB(d)
            print(db.proposal if db.proposal is not None else "(no proposal set)")
        else:
            db = RunDB(d) if (d / "runs.sqlite").exists() else RunDB.create(d)
            old = db.proposal
            db.set_metadata("proposal", str(a.proposal))
            print(f"Proposal set to {a.proposal}" + (f" (was {old})" if old not in (None, a.proposal) else ""))
    except StorageError as e:
        print(f"amore-proto proposal: {e}", file=sys.stderr)
        return 1
    return 0


# --- listen -------------------------------------------------------------------------------

def cmd_listen(a) -> int:
    from .listener import Listener, setup_logging
    from .storage import StorageError
    d = _dir(a.dir)
    setup_logging(d, logging.DEBUG if a.debug else logging.INFO)
    try:
        listener = Listener(d)
    except (StorageError, RuntimeError) as e:
        log.error("%s", e)
        return 1
    from .manager import BackendLockedError
    try:
        listener.run()
    except BackendLockedError as e:
        log.error("%s", e)
        return 1
    return 0


# --- reprocess ----------------------------------------------------------------------------

def parse_runs(tokens: list[str], known: list[int]) -> list[int]:
    """Run numbers from CLI tokens: ``all``, ``5``, ``3-7``. Raises ValueError for bad tokens."""
    runs: list[int] = []
    for t in tokens:
        if t == "all":
            runs += known
        elif "-" in t:
            a, b = t.split("-", 1)
            runs += list(range(int(a), int(b) + 1))
        else:
            runs.append(int(t))
    return sorted(dict.fromkeys(runs))


def cmd_reprocess(a) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from .config import load_config
    from .listener import find_proposal_dir, setup_logging
    from .processing import RunProcessor, WorkerPool
    from .storage import RunDB, StorageError

    d = _dir(a.dir)
    setup_logging(None, logging.WARNING if not a.verbose else logging.INFO)
    try:
        db = RunDB(d)
    except StorageError as e:
        print(f"amore-proto reprocess: {e}", file=sys.stderr)
        return 1
    config = load_config(d)
    if a.jobs:
        config["processing"]["jobs"] = a.jobs
    proposal = db.proposal
    known = set(db.run_numbers())
    pdir = find_proposal_dir(proposal, config)
    if pdir is not None:
        for sub in ("raw",):
            for p in (pdir / sub).glob("r[0-9][0-9][0-9][0-9]*"):
                if p.name[1:].isdigit():
                    known.add(int(p.name[1:]))
    try:
        runs = parse_runs(a.runs, sorted(known))
    except ValueError:
        print(f"amore-proto reprocess: runs must be numbers, ranges (3-7) or 'all': {a.runs}",
              file=sys.stderr)
        return 2
    params = {}
    for kv in a.param or []:
        k, _, v = kv.partition("=")
        params[k] = _parse_param(v)

    publisher = None
    if config.broker:
        from . import kafka as amore_kafka
        if amore_kafka.broker_reachable(config.broker, float(config["kafka"]["connect_timeout"])):
            publisher = amore_kafka.UpdatePublisher(config, db.db_id)
    pool = WorkerPool(d, config, min(config.jobs, max(1, len(runs))))
    pool.start()
    proc = RunProcessor(d, config, db, pool, publish=publisher.publish if publisher else None)
    err = proc.load_context()
    if err:
        print(f"Context file error:\n{err}", file=sys.stderr)
        pool.stop()
        return 1
    names = None
    if a.var:
        known_names = {v.name for v in proc.variables}
        unknown = [n for n in a.var if n not in known_names]
        if unknown:
            print(f"No variable named {', '.join(unknown)}; the context file defines "
                  f"{', '.join(sorted(known_names))}", file=sys.stderr)
            pool.stop()
            return 1
        names = list(a.var)
    if a.match:
        names = [v.name for v in proc.variables
                 if (names is None or v.name in names)
                 and any(m.lower() in v.name.lower() or m.lower() in (v.title or "").lower()
                         for m in a.match)]
        if not names:
            print(f"No variable matches {a.match}", file=sys.stderr)
            pool.stop()
            return 1
    failed = []
    t0 = time.perf_counter()
    with Progress(TextColumn("[bold]Reprocessing"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[last]}"), TimeElapsedColumn(),
                  disable=a.quiet) as progress:
        task = progress.add_task("runs", total=len(runs), last="")
        with ThreadPoolExecutor(max_workers=len(pool.workers)) as ex:
            futs = {ex.submit(proc.process, proposal, r, "all", names, params): r for r in runs}
            for fut in as_completed(futs):
                out = fut.result()
                if out.status != "done":
                    failed.append(out)
                label = f"run {out.run}: {out.status}" + (f", {out.n_errors} errors" if out.n_errors else "")
                progress.update(task, advance=1, last=label)
    pool.stop(wait=False)
    if publisher:
        publisher.flush(5)
        publisher.close()
    dt = time.perf_counter() - t0
    print(f"Reprocessed {len(runs) - len(failed)}/{len(runs)} runs in {dt:.1f} s")
    for out in failed:
        print(f"  run {out.run}: {out.status}: {out.message}", file=sys.stderr)
    return 1 if failed else 0


def _parse_param(v: str):
    import json
    try:
        return json.loads(v)
    except ValueError:
        return v


# --- show ---------------------------------------------------------------------------------

def render_table(d: Path, max_rows: int | None = None, width: int | None = None):
    """A rich Table of the run table of context directory ``d`` (newest run first).

    With ``width`` (terminal columns), only as many variable columns as fit are shown, in
    context-file order; the caption says how many were left out.
    """
    from rich.table import Table

    from .storage import RunDB, StoredValue
    from .table import format_value

    db = RunDB(d)
    variables = db.get_variables()
    all_runs = db.runs()
    runs = all_runs[::-1][:max_rows] if max_rows else all_runs[::-1]
    values: dict[tuple[int, int], dict] = {}
    for p, r, name, value, st, _attrs in db.all_values():
        values.setdefault((p, r), {})[name] = StoredValue(value, st, {})
    db.close()
    fixed = [("Run", [str(r["run"]) for r in runs]),
             ("Start", [time.strftime("%H:%M:%S", time.localtime(r["start_time"]))
                        if r["start_time"] else "" for r in runs]),
             ("Status", [r["status"] for r in runs])]
    columns = []
    for v in variables:
        header = (v.title or v.name).split("/")[-1] + (f" [{v.units}]" if v.units else "")
        cells = [format_value(values.get((r["proposal"], r["run"]), {}).get(v.name)) for r in runs]
        columns.append((header, cells))
    max_w = 16

    def col_width(header, cells):
        return min(max([len(header)] + [len(c) for c in cells]), max_w) + 3  # padding + border

    shown = columns
    if width:
        used = 1 + sum(col_width(h, c) for h, c in fixed)
        shown = []
        for h, c in columns:
            used += col_width(h, c)
            if used > width:
                break
            shown.append((h, c))
    hidden = len(columns) - len(shown)
    t = Table(title=f"Proposal {all_runs[0]['proposal'] if all_runs else ''} — {len(all_runs)} runs",
              header_style="bold",
              caption=(f"{hidden} more variable(s) not shown: widen the terminal or open the GUI"
                       if hidden else None))
    for h, _ in fixed:
        t.add_column(h, justify="right" if h == "Run" else "left", no_wrap=True)
    for h, _ in shown:
        t.add_column(h, justify="right", no_wrap=True, overflow="ellipsis", max_width=max_w)
    for i in range(len(runs)):
        t.add_row(*[c[i] for _, c in fixed], *[c[i] for _, c in shown])
    return t


def cmd_show(a) -> int:
    from rich.console import Console
    from .storage import StorageError
    try:
        console = Console()
        console.print(render_table(_dir(a.dir), width=console.width))
    except StorageError as e:
        print(f"amore-proto show: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_demo(a) -> int:
    from .demo import run_demo
    return run_demo(a)


def cmd_gui(a) -> int:
    """``amore-proto gui [DIR | PROPOSAL]``: the run-table GUI (amore_gui)."""
    from amore_gui.app import run
    return run(a)


# --- backend --------------------------------------------------------------------------------

def cmd_backend(a) -> int:
    """``amore-proto backend status|start|stop|restart|attach|logs [DIR]``.

    ``status`` exits 0 if the backend runs (here or elsewhere), 1 if stale, 3 if stopped.
    """
    import json
    from . import manager
    d = _dir(a.dir)
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
            cmd = manager.attach_command(d)
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
    from .manager import _fmt_duration, _fmt_time
    where = {"running_here": f"running on this host ({st.host})",
             "running_elsewhere": f"running on {st.host}",
             "stopped": "stopped", "stale": "not running (stale)"}[st.state]
    print(f"Backend of {st.context_dir}: {where}")
    if st.running or st.state == "stale":
        if st.pid:
            print(f"  Host:           {st.host}")
            print(f"  PID:            {st.pid} (user {st.user})")
        if st.started:
            up = f" (up {_fmt_duration(st.uptime)})" if st.uptime is not None else ""
            print(f"  Started:        {_fmt_time(st.started)}{up}")
        if st.version:
            print(f"  Version:        {st.version}")
        last = (f"run {st.last_run} at {_fmt_time(st.last_run_time)}"
                if st.last_run is not None else "none yet")
        print(f"  Last run:       {last}")
        print(f"  Update source:  {st.update_source or 'unknown'}")
        if st.in_tmux:
            print(f"  tmux:           {st.socket_path} (amore-proto backend attach)")
    if st.message:
        print(f"  {st.message}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="amore-proto", description="AMORE: Automated Run Overview")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("init", help="create a context directory")
    s.add_argument("dir", nargs="?")
    s.add_argument("--proposal", type=int, required=True)
    s.add_argument("--template", default="generic", help="context template (generic, mid, spb)")
    s.add_argument("--context", help="use this context.py instead of a template")
    s.set_defaults(func=cmd_init)

    s = sub.add_parser("proposal", help="show or set the proposal of the database")
    s.add_argument("proposal", nargs="?", type=int)
    s.add_argument("--dir", "-d")
    s.set_defaults(func=cmd_proposal)

    s = sub.add_parser("listen", help="run the backend")
    s.add_argument("dir", nargs="?")
    s.add_argument("--debug", action="store_true")
    s.set_defaults(func=cmd_listen)

    s = sub.add_parser("reprocess", help="recompute variables for past runs")
    s.add_argument("runs", nargs="+", help="run numbers, ranges like 3-7, or 'all'")
    s.add_argument("--dir", "-d")
    s.add_argument("--match", action="append", help="only variables whose name/title contains TEXT")
    s.add_argument("--var", action="append", help="only the variable NAME (exact; repeatable)")
    s.add_argument("--jobs", "-j", type=int, default=0)
    s.add_argument("--param", action="append", help="NAME=VALUE for param# inputs")
    s.add_argument("--quiet", "-q", action="store_true")
    s.add_argument("--verbose", "-v", action="store_true")
    s.set_defaults(func=cmd_reprocess)

    s = sub.add_parser("show", help="print the run table")
    s.add_argument("dir", nargs="?")
    s.set_defaults(func=cmd_show)

    s = sub.add_parser("demo", help="run AMORE on a built-in demo proposal")
    s.add_argument("dir", nargs="?", help="where to put the demo (default ./amore-demo)")
    s.add_argument("--runs", type=int, default=8)
    s.add_argument("--interval", type=float, default=3.0, help="seconds between runs")
    s.add_argument("--no-gui", action="store_true", help="print the run table in the terminal")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("gui", help="open the run table GUI")
    s.add_argument("target", nargs="?", metavar="DIR|PROPOSAL",
                   help="context directory or proposal number (default: ask)")
    s.add_argument("--no-kafka", action="store_true",
                   help="do not use Kafka for live updates (watch the database instead)")
    s.set_defaults(func=cmd_gui)

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
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
