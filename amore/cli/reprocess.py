"""``amore-proto reprocess``: recompute variables of past runs."""
from __future__ import annotations

import logging
import sys
import time

from amore.cli.common import context_dir, parse_runs
from backend.vocab import Outcome

log = logging.getLogger("amore")


def cmd_reprocess(a) -> int:
    """``amore-proto reprocess``. SIGTERM (the GUI's and the browser's Cancel) is Ctrl+C from
    the start: cancelled while it is still setting up, it exits 130 having changed nothing."""
    import signal

    def on_term(*_):
        raise KeyboardInterrupt
    old_term = signal.signal(signal.SIGTERM, on_term)
    try:
        return _reprocess(a)
    except KeyboardInterrupt:
        print("Cancelled before any run was reprocessed; nothing changed.", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, old_term)
        # The command is done (its database connections closed, its workers told to exit):
        # what is left lives until the process exits, and Python's collections at exit need
        # not look at it (SQLAlchemy's objects: 0.1-0.3 s of the command's time otherwise).
        import gc
        gc.freeze()


def _reprocess(a) -> int:
    d = context_dir(a.dir)
    from backend.service.logs import setup_logging
    setup_logging(None, logging.WARNING if not a.verbose else logging.INFO)
    if not a.slurm and not a.jobs and not a.match and "all" not in a.runs:
        try:  # a few named runs and a backend here: hand them over before loading much
            few = parse_runs(a.runs, [])
        except ValueError:
            few = []
        if 0 < len(few) <= HANDOVER_MAX_RUNS:
            handed = _hand_to_backend(a, d, few, _params(a))
            if handed is not None:
                return handed
    elif "all" in a.runs and not (a.force or a.slurm or a.jobs or a.match or a.dry_run):
        # what is stale, to a backend here if it is little work (the backend decides)
        handed = _hand_to_backend(a, d, None, _params(a))
        if handed is not None:
            return handed
    # No automatic garbage collection while the command starts (SQLAlchemy's import, the
    # database, the context file's load and the plan: ~100 collections, ~25 ms of CPU on the
    # way to the first run otherwise); it resumes, what exists then frozen, once the runs
    # start (:func:`_started`).
    import gc
    collecting = gc.isenabled()
    gc.disable()
    early = _early_pool(a, d)
    opened: list = []   # the database the command opens (closed here, whatever happens)
    try:
        return _reprocess_here(a, d, early, opened)
    finally:
        if early is not None:   # (stopped already, unless the command ended before its runs)
            early.stop(wait=False)
        for db in opened:
            db.close()
        (gc.enable if collecting else gc.disable)()


def _started() -> None:
    """The command's start is over: what it loaded lives until it exits, and is left out of
    the garbage collector's passes (``gc.freeze``), which resume for the runs."""
    import gc
    gc.freeze()
    gc.enable()


def _early_pool(a, d):
    """For ``reprocess all`` after the context file changed (its SHA-256 is not the one the
    last load recorded, read with plain sqlite3): the worker pool, started before the command
    imports SQLAlchemy and opens the database, its workers loading the context file at once
    (:meth:`WorkerPool.grow`), so that their imports and load overlap the command's own start
    (the command's load then finds the file loaded). As many workers as opening every run of
    the table pays for (:func:`backend.processing.selective.workers_for`: a changed function
    is stale in every run that has a value of it); one for ``--slurm`` and ``--dry-run``.
    None otherwise (the command decides later, and may need no worker at all), and for
    anything that cannot be read here."""
    if "all" not in a.runs or a.force:
        return None
    from backend.config import ConfigError, load_config
    from backend.contextdir import ContextDir
    from backend.ctxrunner.provenance import file_sha
    from backend.store.staleness import manual_column_names, recorded_state
    state = _read_db(d, recorded_state)
    try:
        if not state or not state.get("sha") or \
                file_sha(ContextDir(d).context_file) == state["sha"]:
            return None
        config = load_config(d)
    except (OSError, ConfigError):
        return None
    if a.jobs:
        config["processing"]["jobs"] = a.jobs
    manual = _read_db(d, manual_column_names)
    # a changed function is stale in every run that has a value of it: each run is opened
    n_runs = _read_db(d, lambda con: con.execute("SELECT COUNT(*) FROM runs").fetchone()[0])
    from backend.processing.local import WorkerPool
    from backend.processing.selective import RUN_OVERHEAD_S, workers_for
    pool = WorkerPool(d, config, 0, warm_up=False)
    pool.grow(1 if a.slurm or a.dry_run else workers_for((n_runs or 0) * RUN_OVERHEAD_S, config.jobs),
              None if manual is None else {"op": "load", "manual_columns": manual})
    return pool


def _reprocess_here(a, d, early, opened: list) -> int:
    """The reprocess in worker processes of this command (``early``: its pool, already
    started, or None) or on Slurm; the database it opens is appended to ``opened``."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from backend.config import load_config
    from backend.locate import find_proposal_dir
    from backend.processing.local import WorkerPool
    from backend.processing.runpath import RunProcessor
    from backend.store.writer import RunDB, StorageError
    try:
        db = RunDB(d, keep_connections=True)   # a few transactions per run, from two threads
    except StorageError as e:
        print(f"amore-proto reprocess: {e}", file=sys.stderr)
        return 1
    opened.append(db)
    from backend.store.trust import closed_since, is_closed
    if is_closed(db):
        print(f"amore-proto reprocess: proposal {db.proposal} was closed "
              f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(closed_since(db)))}; its table "
              f"is read-only. Run 'amore-proto reopen' first to change values.", file=sys.stderr)
        return 1
    config = load_config(d)
    if a.jobs:
        config["processing"]["jobs"] = a.jobs
    proposal = db.proposal
    known = set(db.run_numbers())
    from backend.facilities import get as get_facility
    known |= get_facility(config.facility).runs_on_disk(find_proposal_dir(proposal, config))
    try:
        runs = parse_runs(a.runs, sorted(known))
    except ValueError:
        print(f"amore-proto reprocess: runs must be numbers, ranges (3-7) or 'all': {a.runs}",
              file=sys.stderr)
        return 2
    params = _params(a)
    # 'reprocess all' computes what is stale (reprocess_plan); named runs and --force: everything
    selective = "all" in a.runs and not a.force
    todo = None
    if selective:
        from backend.processing.selective import code_is_current
        if code_is_current(db, config, d):   # decided without starting a worker
            todo = _stale_plan(a, db, runs, db.get_variables())
            if todo is None or not todo or a.dry_run:
                return 1 if todo is None else 0 if todo else _nothing_stale(len(runs))
            runs = sorted(r for _p, r in todo)

    # What is stale is computed by one worker first; more join once the plan says its work
    # pays for them (see below). Such workers load what their variables use, not first all
    # that any run might (the backend's warm-up); those of --force and named runs warm up.
    lean = a.slurm or selective
    pool = early or WorkerPool(d, config, 1 if lean else min(config.jobs, max(1, len(runs))),
                               warm_up=not lean)
    pool.start()
    if selective and todo is None:   # the runs' data looked at while the worker starts
        from backend.processing.selective import refresh_run_data
        refresh_run_data(db, [(proposal, r) for r in runs])
    publisher = None
    if config.broker:
        from backend.kafkaclient import broker_reachable
        from backend.notify.kafka import UpdatePublisher
        if broker_reachable(config.broker, float(config["kafka"]["connect_timeout"])):
            publisher = UpdatePublisher(config, db.db_id)
    proc = RunProcessor(d, config, db, pool, publish=publisher.publish if publisher else None)
    err = proc.load_context()
    if err:
        print(f"Context file error:\n{err}", file=sys.stderr)
        pool.stop()
        return 1
    if selective and todo is None:   # the context file changed: its digests are recorded now
        todo = _stale_plan(a, db, runs, proc.variables, refresh=False)
        if todo is None or not todo or a.dry_run:
            pool.stop(wait=False)
            return 1 if todo is None else 0 if todo else _nothing_stale(len(runs))
        runs = sorted(r for _p, r in todo)
    _started()
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
    if a.slurm:
        pool.stop(wait=False)
        from amore.cli.slurm import reprocess_on_slurm
        try:
            all_names = names or [v.name for v in proc.variables]
            groups, reuse = None, None
            if todo is not None:
                from backend.processing.selective import groups as plan_groups
                from backend.processing.selective import requests
                groups = plan_groups({k: v for k, v in todo.items()}, all_names)
                reuse = {r: names for (_p, r), names in requests(db, todo)[0].items()}
            return reprocess_on_slurm(a, d, config, db, runs, all_names, params,
                                      publish=publisher.publish if publisher else None,
                                      groups=groups, reuse=reuse)
        finally:
            if publisher:
                publisher.flush(5)
                publisher.close()
    if selective:   # more workers when the plan's work pays for starting them
        from backend.processing.selective import estimated_seconds, workers_for
        proc.grow_pool(workers_for(estimated_seconds(db, todo), config.jobs))
    failed = []
    cancelled = False
    t0 = time.perf_counter()

    def on_term(*_):   # the GUI's Cancel sends SIGTERM: treat it like Ctrl+C
        raise KeyboardInterrupt
    import signal
    old_term = signal.signal(signal.SIGTERM, on_term)
    with _progress(a.quiet) as progress:
        task = progress.add_task("runs", total=len(runs), last="")
        # one thread more than workers: the next run's request is read from the database and
        # the last one's values stored while the workers compute (a run is "processing" only
        # once a worker takes it, see RunProcessor.process)
        ex = ThreadPoolExecutor(max_workers=len(pool.workers) + 1)
        reuse, kinds = {}, {}
        if todo:
            from backend.processing.selective import requests
            reuse, kinds = requests(db, todo)
        futs = {ex.submit(proc.process, proposal, r, params=params,
                          **_run_names(todo, proposal, r, names, reuse, kinds)): r
                for r in runs}
        try:
            for fut in as_completed(futs):
                out = fut.result()
                if out.status != Outcome.DONE:
                    failed.append(out)
                label = f"run {out.run}: {out.status}" + (f", {out.n_errors} errors" if out.n_errors else "")
                progress.update(task, advance=1, last=label)
        except KeyboardInterrupt:
            cancelled = True
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            progress.update(task, last="cancelling...")
            proc.cancel()
            ex.shutdown(wait=True, cancel_futures=True)
        finally:
            ex.shutdown(wait=True)
    late = False    # cancelled once every run was computed: while the updates were sent
    try:
        pool.stop(wait=False)
        if publisher:
            publisher.flush(5)
    except KeyboardInterrupt:
        late = True
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)   # (restored by cmd_reprocess)
        if publisher:
            publisher.close(0 if late else 2)
    dt = time.perf_counter() - t0
    if late and not cancelled:
        print(f"Reprocessed {len(runs) - len(failed)}/{len(runs)} runs in {dt:.1f} s; "
              "cancelled afterwards, while announcing them (update messages not yet taken by "
              "the broker are dropped: open GUIs see the new values from the database)",
              file=sys.stderr)
        for out in failed:
            print(f"  run {out.run}: {out.status}: {out.message}", file=sys.stderr)
        return 130
    if cancelled:
        done = [f.result() for f in futs if f.done() and not f.cancelled()]
        n_done = sum(o.status == Outcome.DONE for o in done)
        n_cancel = sum(o.status == Outcome.CANCELLED for o in done)
        print(f"Cancelled after {dt:.1f} s: {n_done} run(s) reprocessed, {n_cancel} stopped "
              f"(their values from before are kept), {len(runs) - len(done)} not started",
              file=sys.stderr)
        return 130
    print(f"Reprocessed {len(runs) - len(failed)}/{len(runs)} runs in {dt:.1f} s")
    for out in failed:
        print(f"  run {out.run}: {out.status}: {out.message}", file=sys.stderr)
    return 1 if failed else 0


def _progress(quiet: bool):
    """The progress bar (rich's), or with ``quiet`` (also the GUI's and the browser's
    reprocess jobs) something with its methods that shows nothing, without importing rich."""
    if quiet:
        return _NoProgress()
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn)
    return Progress(TextColumn("[bold]Reprocessing"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[last]}"), TimeElapsedColumn())


class _NoProgress:
    """:func:`_progress` when ``quiet``."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def add_task(self, *args, **kw):
        return 0

    def update(self, *args, **kw):
        pass


#: A reprocess of at most this many runs goes to a backend running on this machine (its warm
#: workers), when there is one; larger ones get their own worker pool.
HANDOVER_MAX_RUNS = 8


def _stale_plan(a, db, runs: list[int], variables, refresh: bool = True):
    """What ``reprocess all`` computes: ``(proposal, run) -> names or None`` (see
    :mod:`backend.processing.selective`) for the ``variables`` (VariableInfo) chosen with
    ``--var``/``--match``; listed with ``--dry-run``. None (after saying why) for an unknown
    ``--var``. ``refresh``: look at the runs' data first (False: the caller did)."""
    from backend.processing.selective import describe, plan
    names = [v.name for v in variables]
    wanted = None
    if a.var or a.match:
        unknown = [n for n in a.var or [] if n not in names]
        if unknown:
            print(f"No variable named {', '.join(unknown)}; the context file defines "
                  f"{', '.join(sorted(names))}", file=sys.stderr)
            return None
        wanted = [v.name for v in variables if (not a.var or v.name in a.var) and (
            not a.match or any(m.lower() in v.name.lower() or m.lower() in (v.title or "").lower()
                               for m in a.match))]
    proposal = db.proposal
    todo = plan(db, [(proposal, r) for r in runs], wanted, refresh_data=refresh)
    if todo:
        print(f"Stale: {describe(todo, wanted or names)} (--force recomputes everything)",
              flush=True)
    if a.dry_run:
        for (_p, r), which in sorted(todo.items(), key=lambda kv: kv[0][1]):
            print(f"  run {r}: " + ("every variable (not processed yet)" if which is None
                                   else ", ".join(which)))
    return todo


def _nothing_stale(n_runs: int) -> int:
    print(f"Nothing to reprocess: every value of the {n_runs} run(s) is up to date "
          f"(--force recomputes everything)")
    return 0


def _run_names(todo, proposal, run, names, reuse=None, kinds=None) -> dict:
    """``data``/``names``/``only``/``reuse`` of one run's request: the plan's names, stored
    alone (not the inputs computed for them), their up-to-date inputs read back (``reuse``),
    the run's raw data alone where that is all they read (``kinds``); else all data and
    ``names`` (None: all)."""
    planned = None if todo is None else todo.get((proposal, run))
    if planned is None:
        return {"data": "all", "names": names}
    key = (proposal, run)
    return {"data": (kinds or {}).get(key, "all"), "names": planned, "only": True,
            "reuse": (reuse or {}).get(key)}


def _params(a) -> dict:
    params = {}
    for kv in a.param or []:
        k, _, v = kv.partition("=")
        params[k] = _parse_param(v)
    return params


def _db_facts(d):
    """``db_id`` and variable names of ``runs.sqlite`` (:func:`_read_db`); None if they cannot
    be read."""
    def read(con):
        row = con.execute("SELECT value FROM metadata WHERE key = 'db_id'").fetchone()
        names = {r[0] for r in con.execute("SELECT name FROM variables")}
        return (row[0], names) if row else None
    return _read_db(d, read)


def _read_db(d, read):
    """``read(con)`` of a read-only sqlite3 connection to ``runs.sqlite`` (no SQLAlchemy: the
    hand-over path and the early worker start stay light); None if the file cannot be
    read."""
    import sqlite3
    from backend.contextdir import ContextDir
    path = ContextDir(d).db_file
    if not path.is_file():
        return None
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            return read(con)
        finally:
            con.close()
    except sqlite3.Error:
        return None


def _hand_to_backend(a, d, runs, params):
    """Reprocess ``runs`` (None: what is stale, ``reprocess all``) in the running backend's warm
    workers (:mod:`backend.service.control`) when a backend of this directory runs on this
    machine. Returns the exit status, or None to process here (no backend here, or it
    refused: for what is stale also when it is more work than ``[processing]
    handover_seconds``)."""
    from backend.service.control import BackendUnavailable, UntrustedPeer, request_reprocess
    from backend.service.lock import lock_held
    if not lock_held(d):
        return None
    facts = _db_facts(d)
    if facts is None:
        return None
    db_id, known = facts
    names = list(a.var) if a.var else None
    if names and (not known or any(n not in known for n in names)):
        return None  # the local path says which names the context file defines
    failed = []
    planned: dict = {}

    def on_run(msg):
        log.info("Run %d: %s%s", msg["run"], msg["status"],
                 f" ({msg['message']})" if msg.get("message") else "")
        if msg["status"] != "done":
            failed.append(msg)

    def on_plan(msg):
        planned.update(msg)
        if msg["runs"]:
            print(f"Stale: {msg['describe']} (--force recomputes everything)", flush=True)
    t0 = time.perf_counter()
    try:
        acc = request_reprocess(db_id, d, runs, names, params, on_run, on_plan=on_plan)
    except UntrustedPeer as e:
        print(f"amore-proto reprocess: {e}. Processing here instead.", file=sys.stderr)
        return None
    except BackendUnavailable as e:
        log.info("Processing here: the backend did not take the request (%s)", e)
        return None
    except ConnectionError as e:
        print(f"amore-proto reprocess: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nStopped: the backend drops the runs it has not started and stops those being "
              "computed (they keep their values from before).", file=sys.stderr)
        return 130
    dt = time.perf_counter() - t0
    n_runs = len(runs) if runs is not None else int(planned.get("runs") or 0)
    if runs is None and not n_runs:
        return _nothing_stale(int(planned.get("of", 0)))
    print(f"Reprocessed {n_runs - len(failed)}/{n_runs} runs in {dt:.2f} s "
          f"(in the running backend, PID {acc['pid']})")
    for m in failed:
        print(f"  run {m['run']}: {m['status']}: {m.get('message')}", file=sys.stderr)
    return 1 if failed else 0


def _parse_param(v: str):
    import json
    try:
        return json.loads(v)
    except ValueError:
        return v


def register(sub) -> None:
    """Add this module's commands to the ``amore-proto`` sub-parsers."""
    s = sub.add_parser("reprocess", help="recompute variables for past runs")
    s.add_argument("runs", nargs="+", help="run numbers, ranges like 3-7, or 'all'")
    s.add_argument("--dir", "-d")
    s.add_argument("--match", action="append", help="only variables whose name/title contains TEXT")
    s.add_argument("--var", action="append", help="only the variable NAME (exact; repeatable)")
    s.add_argument("--jobs", "-j", type=int, default=0)
    s.add_argument("--param", action="append", help="NAME=VALUE for param# inputs")
    where = s.add_mutually_exclusive_group()
    where.add_argument("--slurm", action="store_true",
                       help="submit as Slurm array jobs ([slurm] settings) and follow them")
    where.add_argument("--local", action="store_true",
                       help=f"compute on this machine (the default): up to "
                            f"{HANDOVER_MAX_RUNS} named runs, or a 'reprocess all' of little "
                            f"stale work, in the workers of a backend running here, else in "
                            f"worker processes of this command")
    s.add_argument("--force", action="store_true",
                   help="with 'all': recompute every value, not only the stale ones")
    s.add_argument("--dry-run", action="store_true",
                   help="with 'all': list the stale values to compute, compute nothing")
    s.add_argument("--quiet", "-q", action="store_true")
    s.add_argument("--verbose", "-v", action="store_true")
    s.set_defaults(func=cmd_reprocess)
