"""The run path: one run, from the run event that announces it to the update message that says
its values are stored.

::

    RunEvent --> record --> dispatch --> store --> publish
                            (local pool | Slurm)

The modules of the backend process whose code runs for one run, in order (counted from the
:class:`~backend.sources.base.RunEvent` a run source hands to :meth:`RunPath.on_event`; the run
source itself, the module that emitted the event, would be the first: for European XFEL's events
the generic Kafka consumer :mod:`backend.sources.kafka` with the facility's parser, for a watched
directory :mod:`backend.facilities.euxfel.directory`). Not counted: the shared vocabulary
:mod:`backend.vocab` (statuses, update kinds, the ``StoredValue`` record and
``normalize_proposal``: definitions every layer shares) and the standard library.

1. :mod:`backend.processing.runpath` (this module) -- :meth:`RunPath.record`: the run and its
   announcement are recorded (new runs start with their carried-over manual values; a closed
   proposal records, never processes) and announced as pending; :meth:`RunPath.dispatch`:
   which variables go to the warm local pool and which to Slurm (:func:`slurm_names`);
   :meth:`RunProcessor.process`: the worker request, then :meth:`RunProcessor.store`: values,
   status and processing log in one place, whatever the reply; :meth:`RunPath.publish`.
2. :mod:`backend.processing.local` -- :class:`~backend.processing.local.WorkerPool` hands the
   request to an idle warm worker (a process of its own, in the user's Python) and reads its
   JSON reply; or, for the run's Slurm variables,
3. :mod:`backend.processing.slurm` -- :meth:`~backend.processing.slurm.SlurmExecutor.submit`
   writes the job spec and calls ``sbatch`` (with the small helpers ``contextdir.py`` for its
   paths and ``files.py`` for atomic writes); the job's values are stored later, when the Slurm
   follow-up (:mod:`backend.service.slurmfollow`) collects its result with the same writer and
   publisher.
4. :mod:`backend.store.writer` -- :class:`~backend.store.writer.RunDB`, the database's one
   writer: the run row, its snapshot, carried-over manual values, the run's manual inputs,
   values, statuses, processing log and the event log.
5. :mod:`backend.notify.kafka` -- :class:`~backend.notify.kafka.UpdatePublisher`: the update
   message (versioned JSON, names not values) on the database's update topic.

A run with only local variables crosses 1, 2, 4 and 5 (with its source: five modules); one with
Slurm variables 1, 3 (and 2 for its local ones), 4 and 5. What follows the update message is not
on the path: the data check and checksums of the run's files (:mod:`backend.service.integrity`,
started through :attr:`RunPath.after`).
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable

from backend.processing.local import WorkerDied, WorkerPool, run_inputs
from backend.store.writer import RunDB, is_closed, is_transient_db_error
from backend.vocab import (Outcome, RunStatus, SourceRunState, StoredValue, SummaryType,
                           UpdateKind, VariableInfo, normalize_proposal)

log = logging.getLogger(__name__)

@dataclass
class RunOutcome:
    """Result of processing one run: ``status`` (an :class:`~backend.vocab.Outcome`: ``done``,
    ``failed``, ``waiting`` when the context file is broken, ``pending`` when the backend stopped
    before the run was done, ``submitted`` to Slurm, ``closed``, ``cancelled``), with the names
    of the values written."""

    proposal: int | str
    run: int
    status: Outcome
    message: str | None = None
    names: list[str] = field(default_factory=list)
    n_errors: int = 0
    seconds: float = 0.0


def snapshot_event(db: RunDB, ev) -> None:
    """Append the announcement ``ev`` (a :class:`~backend.sources.base.RunEvent`) to the run's
    snapshots: the message verbatim when the source has one, else the event's fields; and the
    run's metadata when the source has it."""
    import json
    msg = ev.message
    if msg is None:
        msg = json.dumps({"event": ev.event, "proposal": ev.proposal, "run": ev.run,
                          "data": ev.data, "path": ev.location or None})
    db.add_snapshot(ev.proposal, ev.run, "event", ev.source or "unknown", msg,
                    location=ev.location or ev.source, received_at=time.time())
    if getattr(ev, "metadata", None):
        db.add_snapshot(ev.proposal, ev.run, "metadata", ev.source or "unknown", ev.metadata,
                        location=ev.location or ev.source)


# ---------------------------------------------------------------------------------------------
# Dispatch: which variables go where

def slurm_names(graph: dict[str, dict], mode: str, data: str = "all") -> list[str]:
    """Variables (not transient) of ``graph`` to compute on Slurm for ``data`` (``"raw"``,
    ``"proc"``, ``"all"``). ``mode``: ``"cluster"`` (``cluster=True`` ones and every variable
    that depends on them, so no local variable waits for a Slurm one), ``"all"`` or ``"none"``.
    Raises ``ValueError`` for another mode."""
    if mode not in ("cluster", "all", "none"):
        raise ValueError(f"[processing] slurm must be 'cluster', 'all' or 'none', not {mode!r}")
    if mode == "none":
        return []
    if mode == "all":
        chosen = set(graph)
    else:
        chosen = {n for n, g in graph.items() if g.get("cluster")}
        grew = True
        while grew:
            grew = False
            for n, g in graph.items():
                if n not in chosen and any(d in chosen for d in g.get("deps", ())):
                    chosen.add(n)
                    grew = True
    return [n for n, g in graph.items() if n in chosen and not g.get("transient")
            and (data == "all" or g.get("data", "raw") == data)]


def local_names(graph: dict[str, dict], on_slurm: Iterable[str], data: str = "all") -> list[str]:
    """Variables (not transient) of ``graph`` for ``data`` that are not in ``on_slurm``."""
    s = set(on_slurm)
    return [n for n, g in graph.items() if n not in s and not g.get("transient")
            and (data == "all" or g.get("data", "raw") == data)]


CLOSED = "the proposal is closed (amore-proto reopen to change values)"


# ---------------------------------------------------------------------------------------------
# The path

class RunPath:
    """The backend's run path for one database: :meth:`on_event` (given to every run source)
    -> :meth:`record` -> :meth:`submit` -> :meth:`dispatch` -> :meth:`RunProcessor.process`
    (compute and :meth:`RunProcessor.store`) and/or a Slurm job -> :meth:`publish`.

    ``pool``: the warm :class:`~backend.processing.local.WorkerPool`; ``slurm``: a
    :class:`~backend.processing.slurm.SlurmExecutor` (None: everything local); ``facility``: the
    facility's name (the ``source`` of its recorded runs); ``jobs``: runs processed at once.
    :attr:`publisher` (an :class:`~backend.notify.kafka.UpdatePublisher`, None without Kafka)
    may be set later; :attr:`after` (``after(proposal, run, outcome)``) is called once a run's
    dispatch is done.
    """

    def __init__(self, context_dir, config, db: RunDB, pool: WorkerPool, slurm=None,
                 facility: str = "", jobs: int = 1):
        self.db = db
        self.proposal = db.proposal
        self.facility = facility
        self.publisher = None
        self.processor = RunProcessor(context_dir, config, db, pool, publish=self.publish)
        self.slurm = slurm
        #: ``[processing] slurm``: which variables go to Slurm (``cluster``, ``all``, ``none``)
        self.slurm_mode = config["processing"].get("slurm", "cluster")
        self.executor = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="run")
        self.stopped = threading.Event()
        self.after: Callable[[Any, int, RunOutcome | None], None] | None = None
        #: ``(run, time)`` of the last run processed (the status record shows it)
        self.last_run: tuple[int, float] | None = None
        self._said_local = False
        self._throttle = 0.0
        # (proposal, run) -> the lock a full computation "unless done meanwhile" holds from its
        # look at the run to the end of its computation (see _dispatch_queued)
        self._claims: dict[tuple, threading.Lock] = {}
        self._claims_lock = threading.Lock()

    # -- 1. record ------------------------------------------------------------------------------
    def on_event(self, ev, token, source) -> None:
        """A run source's callback (:data:`~backend.sources.base.EventCallback`, bound to its
        ``source``): :meth:`handle_event`, then acknowledge the event to the source.

        While the database cannot be written for a reason that may pass (locked by another
        process, disk full), recording is retried (logged; the source waits, so events stay in
        order). An event that cannot be recorded for any other reason (a bug, a value the
        database refuses) is logged, put in the event log and acknowledged: it is never retried
        forever in front of the events behind it. An event interrupted by shutdown is not
        acknowledged, so a source that can deliver again does so after a restart."""
        delay = 0.5
        while True:
            try:
                self.handle_event(ev)
                break
            except Exception as e:
                if self.stopped.is_set():
                    raise
                if is_transient_db_error(e):
                    loud = time.monotonic() - self._throttle >= 30.0
                    if loud:
                        self._throttle = time.monotonic()
                    log.log(logging.WARNING if loud else logging.DEBUG,
                            "Run %d: cannot record it yet (%s); retrying", ev.run, e)
                    self.stopped.wait(delay)
                    delay = min(delay * 2, 10.0)
                    continue
                log.exception("Run %d: cannot record %s; skipped", ev.run, ev)
                self.report("error", f"Run {ev.run}: announcement could not be recorded "
                            f"({type(e).__name__}: {e!s:.200}); skipped",
                            {"source": ev.source, "event": ev.event}, source="listener",
                            run=ev.run, log_it=False)
                break
        source.ack(token)

    def handle_event(self, ev) -> None:
        """Record the run of ``ev`` (:meth:`record`) and queue its processing: of what is stale
        only, if the run is already done (:meth:`still_to_compute`)."""
        todo = self.record(ev)
        if todo is not None:
            self.submit(*todo, if_stale=True)

    def record(self, ev) -> tuple[int | str, int, str] | None:
        """Record the run of ``ev`` and the announcement itself (append-only); returns
        ``(proposal, run, data)`` to dispatch, or None when there is nothing to compute: another
        proposal's run, a closed proposal, a run still being taken or failed at the facility,
        an event that changes nothing recorded (a rescan, a redelivered message).

        Events of other facilities' runs (``ev.key`` set) are recorded in ``source_runs``
        (deduped by key; ESRF numbers synthesised there); their ``ev.state`` says what to do:
        ``running`` shows the run, ``failed`` marks it failed, ``ready`` computes it."""
        try:
            if normalize_proposal(ev.proposal) != self.proposal:
                return None
        except ValueError:
            return None
        start = ev.info.get("start_time") if isinstance(ev.info, dict) else None
        if ev.key is not None:
            run, new, changed = self.db.register_source_run(
                self.facility, ev.key, ev.proposal, ev.info, state=ev.state, run=ev.run,
                start_time=start)
            if not changed:
                log.debug("Run %s: %s already recorded (%s)", run, ev.key, ev.event)
                return None
            ev = replace(ev, run=run)
            snapshot_event(self.db, ev)
            log.info("Run %d: %s (%s%s)", run, ev.state, ev.event or "event",
                     f", {ev.source}" if ev.source else "")
        else:
            snapshot_event(self.db, ev)
            if self._closed_notice(ev):
                return None
            new = self.db.ensure_run(ev.proposal, ev.run)
            log.info("Run %d: %s data ready (%s%s)", ev.run, ev.data, ev.event or "event",
                     f", {ev.source}" if ev.source else "")
        # a run is new at its first event (ESS: while it is still running)
        carried = self.carry_over(ev.proposal, ev.run) if new else []
        if ev.state == SourceRunState.RUNNING:
            self.db.set_run_status(ev.proposal, ev.run, RunStatus.RUNNING, None, start_time=start)
            self.publish(UpdateKind.RUN_STATUS_CHANGED, {"proposal": ev.proposal, "run": ev.run,
                                                         "status": RunStatus.RUNNING.value})
            return None
        if ev.state == SourceRunState.FAILED:
            self.db.set_run_status(ev.proposal, ev.run, RunStatus.FAILED, ev.error,
                                   start_time=start)
            self.report("error", f"run {ev.run}: {ev.error}", {"key": ev.key, "source": ev.source},
                        source=self.facility, run=ev.run)
            self.publish(UpdateKind.RUN_STATUS_CHANGED, {"proposal": ev.proposal, "run": ev.run,
                                                         "status": RunStatus.FAILED.value})
            return None
        if ev.key is not None and self._closed_notice(ev):
            return None
        if new:
            self.publish(UpdateKind.RUN_VALUES_UPDATED, {"proposal": ev.proposal, "run": ev.run,
                                                         "names": carried,
                                                         "status": RunStatus.PENDING.value})
        return ev.proposal, ev.run, ev.data

    def _closed_notice(self, ev) -> bool:
        """True (and an event log entry) when the proposal is closed: runs are recorded, not
        processed."""
        if not is_closed(self.db):
            return False
        self.report("info", f"Run {ev.run} announced ({ev.event or ev.data}) while the "
                    f"proposal is closed: recorded, not processed", source="closed",
                    run=ev.run, details={"location": ev.location})
        return True

    def carry_over(self, proposal: int | str, run: int) -> list[str]:
        """Auto-pilot for a new run: manual columns marked carry-over start with the previous
        run's value (none on a closed proposal). Returns the names written; never raises."""
        carried = []
        try:
            carried = [name for name, _ in self.db.carry_over(proposal, run)]
        except Exception:
            log.exception("Run %d: carrying manual values over failed", run)
        if carried:
            log.info("Run %d: carried over %s", run, ", ".join(carried))
        return carried

    # -- 2. dispatch ----------------------------------------------------------------------------
    def submit(self, proposal: int | str, run: int, data: str = "all", names=None,
               only: bool = False, reuse=None, if_stale: bool = False) -> Future | None:
        """Queue the run's :meth:`dispatch` (``names``/``only``/``reuse``: see there), then
        :attr:`after`; None once the backend stops. ``if_stale``: a run already done computes
        only what is stale by then (:meth:`still_to_compute`), or nothing. Every request of a
        whole run that may meet another one for the same run (a run source's event, the
        catch-up, runs waiting for a working context file) is ``if_stale``: such requests of
        one run look at it and compute one after the other, so the second finds the run done
        and computes nothing."""
        if self.stopped.is_set():
            return None
        return self.executor.submit(self._dispatch_queued, proposal, run, data, names, only,
                                    reuse, if_stale)

    def still_to_compute(self, proposal: int | str, run: int):
        """For a run announced again (an event the source delivers after a catch-up already
        computed the run, or a redelivered one): ``None`` when the run is to be computed as
        asked (not done, the context file changed since it was last loaded, or the staleness
        cannot be told), else ``(names, reuse, data)`` of the stale values only
        (:func:`backend.processing.selective.plan`: ``names`` None = all), or ``()`` when no
        value of the run is stale: its values were made from this data by this code.
        Waits for a computation of the run in flight to end first."""
        with self.processor._run_lock(proposal, run):
            pass   # a catch-up computing this run now ends first
        row = self.db.get_run(proposal, run)
        if not row or row.get("status") != RunStatus.DONE.value:
            return None
        from backend.processing.selective import code_is_current, plan, requests
        try:
            if not code_is_current(self.db, self.processor.config, self.processor.context_dir):
                return None
            todo = plan(self.db, runs=[(proposal, run)])
            if not todo:
                return ()
            reuse, kinds = requests(self.db, todo)
        except Exception:
            log.exception("Run %d: cannot tell which values are stale; computing it", run)
            return None
        key = next(iter(todo))
        return todo[key], reuse.get(key), kinds.get(key, "all")

    def _claim(self, proposal, run) -> threading.Lock:
        with self._claims_lock:
            return self._claims.setdefault((proposal, run), threading.Lock())

    def _dispatch_queued(self, proposal, run, data, names=None, only=False, reuse=None,
                         if_stale=False):
        if self.stopped.is_set():
            return None
        if not (if_stale and names is None):
            return self._dispatch_now(proposal, run, data, names, only, reuse)
        # Whether the run is still to compute and its computation are one step per run: two
        # requests of the same run (the catch-up and the run source's event after a restart,
        # an event and its redelivery) running at once on two threads would otherwise both
        # find the run not done yet and both compute it.
        with self._claim(proposal, run):
            if self.stopped.is_set():
                return None
            todo = self.still_to_compute(proposal, run)
            if todo == ():
                log.info("Run %d: announced again, already computed from this data by this "
                         "code; nothing to compute", run)
                return None
            if todo is not None:
                names, reuse, data = todo
                only = names is not None
                log.info("Run %d: announced again; computing its stale values only (%s)", run,
                         "all" if names is None else ", ".join(names))
            return self._dispatch_now(proposal, run, data, names, only, reuse)

    def _dispatch_now(self, proposal, run, data, names, only, reuse):
        try:
            out = self.dispatch(proposal, run, data, names, only=only, reuse=reuse)
        except Exception:
            log.exception("Processing run %d failed unexpectedly", run)
            return None
        self.last_run = (run, time.time())
        if self.after is not None:
            self.after(proposal, run, out)
        return out

    def split(self, data: str, names=None) -> tuple[list[str] | None, list[str]]:
        """(local names or None for "everything", Slurm names) for a run's ``data``. Without
        Slurm everything is local, and ``cluster=True`` variables say so once in the log."""
        graph = self.processor.graph
        if self.slurm is None or not graph or self.slurm_mode == "none":
            return names, []
        wanted = slurm_names(graph, self.slurm_mode, data)
        if names is not None:
            wanted = [n for n in wanted if n in names]
        if not wanted:
            return names, []
        reason = self.slurm.unavailable_reason()
        if reason is not None:
            if not self._said_local:
                self._said_local = True
                msg = (f"Slurm not available ({reason}): variables {', '.join(wanted)} "
                       f"are computed locally")
                log.warning(msg)
                try:
                    self.db.add_event("warning", "slurm", msg)
                except Exception:
                    pass
            return names, []
        local = local_names(graph, wanted, data)
        if names is not None:
            local = [n for n in local if n in names]
        return local, wanted

    def dispatch(self, proposal: int | str, run: int, data: str = "all", names=None,
                 params: dict | None = None, only: bool = False, reuse=None) -> RunOutcome:
        """Compute the run's variables (``names``: only these; ``only``: store just them, not
        the inputs computed for them; ``reuse``: inputs read back, see
        :meth:`RunProcessor.process`): its local ones in the warm pool, stored at once
        (:meth:`RunProcessor.process`), then its Slurm ones submitted as one job.
        Has the interface of :meth:`RunProcessor.process`; never raises for bad data or user
        code."""
        if is_closed(self.db):  # read-only table: no local run, no job either
            return RunOutcome(proposal, run, Outcome.CLOSED, CLOSED)
        local, remote = self.split(data, names)
        out = None
        if local is None or local:
            out = self.processor.process(proposal, run, data, local, params,
                                         only=only and local is not None,
                                         reuse=reuse if local is not None else None)
            if out.status == RunStatus.WAITING:
                return out
        if not remote:
            if self.slurm is not None and self.db.slurm_tasks(done=False, run=run):
                self.slurm.refresh_run(proposal, run)  # it still waits for a Slurm job
            return out
        from backend.processing.slurm import SlurmError
        try:
            job = self.slurm.submit(proposal, [run], remote, data, params)
        except SlurmError as e:
            log.error("Run %d: could not submit to Slurm (%s); computing %s locally",
                      run, e, ", ".join(remote))
            return self.processor.process(proposal, run, data, remote, params)
        self.slurm.poll()  # records the job: the row says "queued" at once
        if out is None:
            out = RunOutcome(proposal, run, Outcome.SUBMITTED, f"Slurm job {job}")
        else:
            out.message = "; ".join(filter(None, [out.message, f"Slurm job {job}"]))
        return out

    # -- 4. publish -----------------------------------------------------------------------------
    def report(self, level: str, message: str, details: dict | None = None,
               source: str = "backend", run: int | None = None, log_it: bool = True) -> None:
        """Append to the event log (and, with ``log_it``, the log file); never raises."""
        if log_it:
            log.log({"error": logging.ERROR, "warning": logging.WARNING}.get(level, logging.INFO),
                    "%s", message)
        try:
            self.db.add_event(level, source, message, run=run, proposal=self.proposal,
                              details=details)
        except Exception as e:
            log.error("Could not write the event log: %s", e)

    def publish(self, kind: UpdateKind | str, data: dict) -> None:
        """The update message ``kind``/``data`` (names, never values), if Kafka is in use."""
        if self.publisher is not None:
            self.publisher.publish(kind, data)

    def stop(self) -> None:
        """No new runs from now on (those queued are dropped)."""
        self.stopped.set()
        self.processor.stopping = True
        self.executor.shutdown(wait=False, cancel_futures=True)


# ---------------------------------------------------------------------------------------------
# The local half of dispatch: compute, store, publish

class RunProcessor:
    """Processes runs of one context directory in the warm pool: worker request
    (:meth:`compute`), database write (:meth:`store`), update message. The listener (through
    :class:`RunPath`) and ``amore-proto reprocess`` both use it.

    ``publish(kind, data)`` is called after every database write (a no-op without Kafka).
    Thread-safe; the same run is never processed twice at once (requests for a run that is in
    flight are merged and done after it).
    """

    def __init__(self, context_dir, config, db: RunDB, pool: WorkerPool,
                 publish: Callable[[str, dict], None] | None = None):
        self.context_dir = Path(context_dir)
        self.config = config
        self.db = db
        self.pool = pool
        self.publish = publish or (lambda kind, data: None)
        #: ``[processing] run_timeout``: seconds a run may take before its worker is killed
        self.run_timeout = float(config["processing"]["run_timeout"])
        self._lock = threading.Lock()
        self._busy: dict[tuple[int, int], threading.Lock] = {}
        self.context_error: str | None = None
        #: the last load request (:meth:`grow_pool` sends it to new workers)
        self._load_request: dict | None = None
        self.variables: list[VariableInfo] = []
        #: variable name -> names it takes as ``var#`` input (variables and manual columns)
        self.inputs: dict[str, list[str]] = {}
        #: name -> {"cluster", "data", "transient", "deps"} of every variable (also transient)
        self.graph: dict[str, dict] = {}
        #: name -> the loaded file's code digest and what it reads (the worker's ``codes``)
        self.codes: dict[str, dict] = {}
        #: whether the last load changed the recorded code; the watched modules' files
        self.code_changed = False
        self.watched_files: list[str] = []
        #: Set when the backend shuts down: runs whose worker is killed stay pending.
        self.stopping = False
        #: Set by :meth:`cancel`: runs in flight go back to their previous state.
        self.cancelled = False
        #: ``(proposal, run)`` handed to the pool now, and those of them :meth:`cancel_run` stops
        self._in_flight: set[tuple[int | str, int]] = set()
        self._cancelled_runs: set[tuple[int | str, int]] = set()
        #: ``(proposal, run)`` whose values could not be stored for a reason that may pass
        #: (disk full, database locked too long); the listener processes them again later.
        self.deferred: set[tuple[int | str, int]] = set()
        #: ``(proposal, run)`` -> ``(data, names, only)`` asked of runs that wait for a working
        #: context file (``names`` None: the whole run); see :meth:`take_waiting`
        self._waiting: dict[tuple[int | str, int], tuple[str, list[str] | None, bool]] = {}

    def take_deferred(self) -> list[tuple[int | str, int]]:
        """The runs to process again (see :attr:`deferred`); the set is emptied."""
        with self._lock:
            out, self.deferred = sorted(self.deferred, key=lambda k: (str(k[0]), k[1])), set()
        return out

    def take_waiting(self) -> dict[tuple[int | str, int], tuple[str, list[str] | None, bool]]:
        """What was asked of each run that now waits for a working context file, as
        ``(proposal, run) -> (data, names, only)`` (the arguments of :meth:`process`; ``names``
        None: the whole run; requests of one run merged: their names together, the whole run if
        any asked for it); the record is emptied. Once the file is fixed, a run waiting only
        because variables depending on an edited manual value were to be recomputed then
        computes those, not the whole run."""
        with self._lock:
            out, self._waiting = self._waiting, {}
        return out

    def _note_waiting(self, proposal, run, data, names, only) -> None:
        key = (proposal, run)
        with self._lock:
            prev = self._waiting.get(key)
            if names is None or (prev is not None and prev[1] is None):
                self._waiting[key] = ("all", None, False)
            elif prev is None:
                self._waiting[key] = (data, sorted(names), bool(only))
            else:
                self._waiting[key] = (data if data == prev[0] else "all",
                                      sorted(set(prev[1]) | set(names)), prev[2] and bool(only))

    def cancel(self) -> None:
        """Cancel the work in progress (a reprocess stopped by the user): runs being processed
        have their worker killed and return to their previous status, saying they were
        cancelled (their previous values stay); runs not started are not touched."""
        self.cancelled = True
        self.pool.kill_busy()

    def cancel_run(self, proposal: int | str, run: int) -> None:
        """Stop the processing of one run now (a one-off reprocess whose requester cancelled):
        its worker is killed (and replaced), the run returns to its previous status and keeps
        its previous values, as with :meth:`cancel`. Nothing happens to a run not in flight."""
        key = (proposal, run)
        with self._lock:
            if key not in self._in_flight:
                return
            self._cancelled_runs.add(key)
        self.pool.kill_request(key)

    def _run_cancelled(self, key) -> bool:
        with self._lock:
            return key in self._cancelled_runs

    def load_context(self) -> str | None:
        """(Re)load the context file in a worker; store its variables. Returns the error text
        for a broken file, else None."""
        try:
            names = self.db.manual_columns()
        except Exception as e:  # never let this stop processing
            log.error("Cannot read the manual columns: %s", e)
            names = []
        self._load_request = {"op": "load", "manual_columns": names}
        try:
            reply = self.pool.request(self._load_request, timeout=120)
        except WorkerDied as e:
            reply = {"ok": False, "error": f"context file could not be loaded: {e}"}
        if not reply.get("ok"):
            self.context_error = reply.get("error", "unknown error")
            return self.context_error
        self.context_error = None
        self.variables = [VariableInfo(**v) for v in reply["variables"]]
        self.inputs = dict(reply.get("inputs") or {})
        self.graph = reply.get("graph") or {}
        code_changed = self._record_code(names, reply)
        if self.db.set_variables(self.variables) or code_changed:
            self.publish(UpdateKind.VARIABLES_CHANGED, {"names": [v.name for v in self.variables]})
        return None

    def grow_pool(self, n: int) -> int:
        """Have ``n`` workers in all (:meth:`WorkerPool.grow`): the new ones load the context
        file as :meth:`load_context` did before they take a run. Returns how many were
        added."""
        return self.pool.grow(n, self._load_request)

    def _record_code(self, manual: list[str], reply: dict) -> bool:
        """Record the loaded file's code digests as the current ones (front-ends mark values
        made by other code stale, ``reprocess all`` recomputes them); True if they changed.
        Never raises: provenance is not worth stopping the processing for."""
        from backend.processing.local import context_state
        self.codes = reply.get("codes") or {}
        state = context_state(self.config, manual, reply.get("context") or {}, reply.get("mtime"))
        self.watched_files = list(state["watched"])
        if not self.codes:
            return False
        try:
            self.code_changed = self.db.record_context(self.codes, state)
        except Exception as e:
            log.error("Could not record the context file's code digests: %s", e)
            return False
        return self.code_changed

    def dependents(self, names) -> list[str]:
        """Variables that take any of ``names`` (manual columns or variables) as input,
        directly or through other variables, in no particular order."""
        out: set[str] = set()
        todo = set(names)
        while todo:
            n = todo.pop()
            for var, ins in self.inputs.items():
                if n in ins and var not in out:
                    out.add(var)
                    todo.add(var)
        return sorted(out)

    def busy(self) -> bool:
        """True while any run is being processed."""
        with self._lock:
            return any(lock.locked() for lock in self._busy.values())

    def _run_lock(self, proposal, run) -> threading.Lock:
        with self._lock:
            return self._busy.setdefault((proposal, run), threading.Lock())

    def process(self, proposal: int | str, run: int, data: str = "all", names=None,
                params: dict | None = None, only: bool = False, reuse=None) -> RunOutcome:
        """Compute variables of one run and store them; never raises for bad data or user code.

        ``data``: ``"raw"`` (raw variables), ``"proc"`` (proc variables) or ``"all"``.
        ``only``: store just ``names``, not the inputs computed for them; ``reuse``: inputs
        whose stored values are up to date, read back instead of computed (``reprocess all``
        recomputing stale values).

        The run's status becomes ``processing`` once a worker takes it: a caller with more
        threads than workers (``amore-proto reprocess``) has the next run's request read from
        the database while the workers compute, not shown as processing while it waits.
        """
        t0 = time.perf_counter()
        if is_closed(self.db):
            return RunOutcome(proposal, run, Outcome.CLOSED, CLOSED)
        with self._run_lock(proposal, run):
            if self.cancelled:
                return RunOutcome(proposal, run, Outcome.CANCELLED, "cancelled before it started")
            before = self.db.get_run(proposal, run)

            def started() -> bool:   # a worker took the run
                if not self._status_or_defer(proposal, run, RunStatus.PROCESSING.value, None):
                    return False
                self.publish(UpdateKind.RUN_STATUS_CHANGED, {
                    "proposal": proposal, "run": run, "status": RunStatus.PROCESSING.value})
                return True
            reply, run_cancelled = self.compute(proposal, run, data, names, params, only, reuse,
                                                start_time_known=bool((before or {}).get(
                                                    "start_time")), on_start=started)
            if reply.get("kind") == "unwritable":
                return RunOutcome(proposal, run, Outcome.FAILED,
                                  "the database cannot be written",
                                  seconds=time.perf_counter() - t0)
            outcome, stored = self.store(proposal, run, data, names, reply, before,
                                         run_cancelled, t0)
            if outcome.status == Outcome.WAITING:
                self._note_waiting(proposal, run, data, names, only)
            if not stored:
                return outcome   # nothing new in the database to announce
            outcome.seconds = time.perf_counter() - t0
            self.publish(UpdateKind.RUN_VALUES_UPDATED, {"proposal": proposal, "run": run,
                                                         "names": outcome.names,
                                                         "status": outcome.status})
            return outcome

    def compute(self, proposal, run, data, names, params, only=False,
                reuse=None, start_time_known: bool = False,
                on_start: Callable[[], bool] | None = None) -> tuple[dict, bool]:
        """The worker's reply to the run request (``{"ok": false, "kind": "died"}`` if its
        worker died or was killed) and whether the run was cancelled meanwhile.
        ``start_time_known``: the run's start time is recorded (a request storing ``only``
        some values then leaves it as it is). ``on_start()`` is called once a worker is taken,
        before the request is sent; if it returns False nothing is computed and the reply is
        ``{"ok": false, "kind": "unwritable"}``."""
        req = {"op": "run", "proposal": proposal, "run": run, "data": data,
               "names": list(names) if names else None, "params": params or {}}
        if only and names:
            req["only"] = list(names)
            req["start_time_known"] = start_time_known
        if reuse:
            req["reuse"] = list(reuse)
        req.update(run_inputs(self.db, proposal, run))
        key = (proposal, run)
        with self._lock:
            self._in_flight.add(key)
        refused = []

        def taken() -> bool:   # True: do not send the request
            if self._run_cancelled(key):
                return True
            if on_start is not None and not on_start():
                refused.append(True)
                return True
            return False
        try:
            reply = self.pool.request(req, timeout=self.run_timeout, key=key, cancelled=taken)
        except WorkerDied as e:
            reply = {"ok": False, "kind": "unwritable" if refused else "died", "error": str(e)}
        finally:
            with self._lock:
                run_cancelled = key in self._cancelled_runs
                self._cancelled_runs.discard(key)
                self._in_flight.discard(key)
        return reply, run_cancelled

    # -- 3. store -------------------------------------------------------------------------------
    def store(self, proposal, run, data, names, reply: dict, before: dict | None,
              run_cancelled: bool, t0: float) -> tuple[RunOutcome, bool]:
        """Store what the worker replied: the values (status ``done``), or why there are none
        (``waiting`` for a working context file, ``cancelled`` back to the status from
        ``before``, ``pending`` at shutdown, ``failed``), and the run's processing log. Returns
        the outcome and whether it was stored (False: the database refused the values; a run
        whose values cannot be stored for a reason that may pass is deferred, retried later)."""
        if reply.get("ok"):
            values = {n: StoredValue.from_json(v) for n, v in reply["values"].items()}
            n_err = sum(v.summary_type == SummaryType.ERROR for v in values.values())
            msg = f"{n_err} variable(s) failed" if n_err else None
            if reply.get("storage_error"):
                msg = "; ".join(filter(None, [msg, reply["storage_error"]]))
                log.error("Run %d: %s", run, reply["storage_error"])
            try:
                self.db.write_values(proposal, run, values, status=RunStatus.DONE.value,
                                     status_message=msg, start_time=reply.get("start_time"),
                                     provenance=reply.get("provenance"))
            except Exception as e:  # e.g. disk full: say so, keep the run for reprocessing
                log.error("Run %d: could not store values in the database: %s", run, e)
                self._try_status(proposal, run, RunStatus.FAILED.value,
                                 f"could not store values: {e}")
                self._event("error", "database", f"Run {run}: values could not be stored "
                            f"({e}); retried later", run, proposal)
                if is_transient_db_error(e):
                    with self._lock:
                        self.deferred.add((proposal, run))
                return RunOutcome(proposal, run, Outcome.FAILED, str(e),
                                  seconds=time.perf_counter() - t0), False
            outcome = RunOutcome(proposal, run, Outcome.DONE, msg, sorted(values), n_err)
            self._store_log(proposal, run, "done" if not n_err else "done with errors",
                            (f"(only {', '.join(sorted(names))})\n" if names else "")
                            + (reply.get("log") or ""))
            t = reply.get("timings", {})
            shared = f"{t['processes']} processes; " if t.get("processes", 1) > 1 else ""
            log.info("Run %d: %d variables in %.2f s (%sopen %.2f, variables %.2f, store %.2f)%s",
                     run, len(values), time.perf_counter() - t0, shared, t.get("open", 0),
                     t.get("variables", 0), t.get("store", 0),
                     f"; {n_err} failed" if n_err else "")
        elif reply.get("kind") == "context":
            self.context_error = reply.get("error")
            msg = f"waiting for a working context file: {reply.get('error')}"
            self._status_or_defer(proposal, run, RunStatus.WAITING.value, msg)
            outcome = RunOutcome(proposal, run, Outcome.WAITING, msg)
            log.error("Run %d recorded, not processed: context file is broken:\n%s",
                      run, reply.get("error"))
        elif reply.get("kind") == "died" and (self.cancelled or run_cancelled):
            prev = (before or {}).get("status")
            status = (prev if prev in (RunStatus.DONE.value, RunStatus.FAILED.value)
                      else RunStatus.PENDING.value)
            msg = "reprocessing cancelled; the values from before are kept"
            self.db.set_run_status(proposal, run, status, msg)
            outcome = RunOutcome(proposal, run, Outcome.CANCELLED, msg)
            self._store_log(proposal, run, "cancelled", msg + "\n")
            log.warning("Run %d: %s", run, msg)
        elif reply.get("kind") == "died" and self.stopping:
            msg = "interrupted by backend shutdown; processed at next start"
            self._status_or_defer(proposal, run, RunStatus.PENDING.value, msg)
            self._store_log(proposal, run, "cancelled", msg + "\n")
            outcome = RunOutcome(proposal, run, Outcome.PENDING, msg)
            log.warning("Run %d abandoned at shutdown", run)
        else:
            msg = reply.get("error", "unknown error")
            self._status_or_defer(proposal, run, RunStatus.FAILED.value, msg)
            self._store_log(proposal, run, "failed", msg + "\n")
            outcome = RunOutcome(proposal, run, Outcome.FAILED, msg)
            log.error("Run %d failed: %s", run, msg)
            if reply.get("kind") == "died":
                try:
                    self.db.add_event("error", "worker", f"Run {run}: {msg}", run=run,
                                      proposal=proposal, details={"data": data})
                except Exception as e:
                    log.error("Could not record the event: %s", e)
        return outcome, True

    def _store_log(self, proposal, run, status, text) -> None:
        try:
            self.db.add_run_log(proposal, run, status, text)
        except Exception as e:
            log.error("Run %d: could not store its processing log: %s", run, e)

    def _try_status(self, proposal, run, status, message) -> None:
        try:
            self.db.set_run_status(proposal, run, status, message)
        except Exception as e:
            log.error("Run %d: could not record status %s: %s", run, status, e)

    def _event(self, level, source, message, run, proposal) -> None:
        """Add to the event log; never raises (the database may be what fails)."""
        try:
            self.db.add_event(level, source, message, run=run, proposal=proposal)
        except Exception as e:
            log.debug("Could not write to the event log: %s", e)

    def _status_or_defer(self, proposal, run, status, message) -> bool:
        """Record a run's status; if the database cannot be written for a reason that may pass
        (disk full...), log it, remember the run for a later retry and return False."""
        try:
            self.db.set_run_status(proposal, run, status, message)
            return True
        except Exception as e:
            if not is_transient_db_error(e):
                raise
            log.error("Run %d: could not record status %s: %s; retried later", run, status, e)
            with self._lock:
                self.deferred.add((proposal, run))
            return False
