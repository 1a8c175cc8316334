"""The backend: ``amore-proto listen DIR``.

Learns of new runs from run sources (:mod:`backend.sources`): the facility's Kafka events or, offline, a
watched proposal directory (:mod:`backend.sources.directory`); records each run in the database, computes
its variables in the worker pool (:mod:`backend.processing.local`) and announces every write on the
database's update topic.
"""
from __future__ import annotations

import getpass
from dataclasses import replace
import logging
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from backend.config import Config, load_config
from backend.sources.base import RunEvent
from backend.locate import find_proposal_dir
from backend.contextdir import ContextDir
from backend.processing.local import RunProcessor, WorkerPool
from backend.store.manual import ManualStore
from backend.store.writer import RunDB
from backend.vocab import RunStatus, normalize_proposal, UpdateKind, Outcome, SourceRunState

log = logging.getLogger(__name__)


class Listener:
    """The backend of one context directory. :meth:`run` blocks until :meth:`stop` (or
    SIGINT/SIGTERM when installed with ``handle_signals=True``)."""

    def __init__(self, context_dir: str | os.PathLike, config: Config | None = None):
        self.context_dir = Path(context_dir).resolve()
        self.config = config or load_config(self.context_dir)
        self.db = RunDB(self.context_dir)
        self.db.keep_open()   # the database stays readable and fails cleanly on a full disk
        self.proposal = self.db.proposal
        self.facility = self.config.facility
        if self.proposal is None:
            raise RuntimeError(f"{self.context_dir}: the database has no proposal; "
                               f"set it with 'amore-proto proposal N'")
        self._stop = threading.Event()
        self.publisher = None
        #: the run sources started by :meth:`_start_sources` (:class:`backend.sources.base.RunSource`)
        self.sources: list = []
        self.update_source = "none"
        self.pool = WorkerPool(self.context_dir, self.config, self.config.jobs)
        self.processor = RunProcessor(self.context_dir, self.config, self.db, self.pool,
                                      publish=self._publish)
        from backend.processing.slurm import Dispatcher, SlurmExecutor
        self.slurm = SlurmExecutor(self.context_dir, self.config, self.db, publish=self._publish)
        self.dispatcher = Dispatcher(self.processor, self.slurm)
        self.executor = ThreadPoolExecutor(max_workers=self.config.jobs,
                                           thread_name_prefix="run")
        self._ctx_mtime = None
        self._ctx_reloading = threading.Event()
        self._slurm_wake = threading.Event()
        self.last_run: tuple[int, float] | None = None
        #: the proposal's data directory (None if not found under the data root)
        self.proposal_dir = find_proposal_dir(self.proposal, self.config)
        #: background checks/checksums of processed runs (started by run() / run_once())
        self.integrity = None
        self.manual = ManualStore(self.db)
        self._manual_sig = None
        self._ctx_force_reload = False

    # -- plumbing ----------------------------------------------------------------------
    def _publish(self, kind: str, data: dict) -> None:
        if self.publisher is not None:
            self.publisher.publish(kind, data)

    def _ctx_file_mtime(self):
        try:
            return ContextDir(self.context_dir).context_file.stat().st_mtime
        except FileNotFoundError:
            return None

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

    def reporter(self, source: str):
        """A :data:`backend.sources.base.ProblemCallback` writing to the event log as ``source``
        (what a run source tells people: a malformed message, a lost connection...)."""
        def on_problem(level: str, message: str, details: dict | None = None) -> None:
            self.report(level, message, details, source=source, log_it=False)
        return on_problem

    def _handle_keyed(self, ev: RunEvent) -> None:
        """An event of another facility's run (``ev.key`` set): record it in ``source_runs``
        (deduped by key; ESRF numbers synthesised there), then per ``ev.state``: ``running``
        shows the run, ``failed`` marks it failed, ``ready`` computes it. An event that changes
        nothing already recorded (a rescan, a redelivered message) does nothing."""
        from backend.service.integrity import snapshot_event
        start = ev.info.get("start_time") if isinstance(ev.info, dict) else None
        run, new, changed = self.db.register_source_run(
            self.facility, ev.key, ev.proposal, ev.info, state=ev.state, run=ev.run,
            start_time=start)
        if not changed:
            log.debug("Run %s: %s already recorded (%s)", run, ev.key, ev.event)
            return
        snapshot_event(self.db, replace(ev, run=run))
        log.info("Run %d: %s (%s%s)", run, ev.state, ev.event or "event",
                 f", {ev.source}" if ev.source else "")
        # a run is new at its first event (ESS: while it is still running)
        carried = self._carry_over(ev.proposal, run) if new else []
        if ev.state == SourceRunState.RUNNING:
            self.db.set_run_status(ev.proposal, run, RunStatus.RUNNING, None, start_time=start)
            self._publish(UpdateKind.RUN_STATUS_CHANGED, {"proposal": ev.proposal, "run": run,
                                                 "status": RunStatus.RUNNING.value})
            return
        if ev.state == SourceRunState.FAILED:
            self.db.set_run_status(ev.proposal, run, RunStatus.FAILED, ev.error, start_time=start)
            self.report("error", f"run {run}: {ev.error}", {"key": ev.key, "source": ev.source},
                        source=self.facility, run=run)
            self._publish(UpdateKind.RUN_STATUS_CHANGED, {"proposal": ev.proposal, "run": run,
                                                 "status": RunStatus.FAILED.value})
            return
        if self._closed_notice(ev, run):
            return
        if new:
            self._publish(UpdateKind.RUN_VALUES_UPDATED, {"proposal": ev.proposal, "run": run,
                                                 "names": carried,
                                                 "status": RunStatus.PENDING.value})
        self.submit(ev.proposal, run, ev.data)

    def _closed_notice(self, ev: RunEvent, run) -> bool:
        """True (and an event log entry) when the proposal is closed: runs are recorded, not
        processed."""
        from backend.store.trust import is_closed
        if not is_closed(self.db):
            return False
        self.report("info", f"Run {run} announced ({ev.event or ev.data}) while the "
                    f"proposal is closed: recorded, not processed", source="closed",
                    run=run, details={"location": ev.location})
        return True

    def handle_event(self, ev: RunEvent) -> None:
        """Record the run of ``ev`` (and the announcement itself, append-only) and queue its
        processing. Called by the event sources."""
        try:
            if normalize_proposal(ev.proposal) != self.proposal:
                return
        except ValueError:
            return
        if ev.key is not None:
            return self._handle_keyed(ev)
        from backend.service.integrity import snapshot_event
        snapshot_event(self.db, ev)
        if self._closed_notice(ev, ev.run):
            return
        new = self.db.ensure_run(ev.proposal, ev.run)
        log.info("Run %d: %s data ready (%s%s)", ev.run, ev.data, ev.event or "event",
                 f", {ev.source}" if ev.source else "")
        if new:
            carried = self._carry_over(ev.proposal, ev.run)
            self._publish(UpdateKind.RUN_VALUES_UPDATED, {"proposal": ev.proposal, "run": ev.run,
                                                 "names": carried,
                                                 "status": RunStatus.PENDING.value})
        self.submit(ev.proposal, ev.run, ev.data)

    def _carry_over(self, proposal: int | str, run: int) -> list[str]:
        """Auto-pilot for a new run: manual columns marked carry-over start with the previous
        run's value (none on a closed proposal). Returns the names written; never raises."""
        carried = []
        try:
            carried = [e.name for e in self.manual.carry_over(proposal, run)]
        except Exception:
            log.exception("Run %d: carrying manual values over failed", run)
        if carried:
            log.info("Run %d: carried over %s", run, ", ".join(carried))
        return carried

    def submit(self, proposal: int | str, run: int, data: str):
        if self._stop.is_set():
            return None
        fut = self.executor.submit(self._process, proposal, run, data)
        return fut

    def _process(self, proposal, run, data):
        if self._stop.is_set():
            return None
        try:
            out = self.dispatcher.process(proposal, run, data)
        except Exception:
            log.exception("Processing run %d failed unexpectedly", run)
            return None
        self.last_run = (run, time.time())
        # the data check and checksums look at the run's files, not at its values: also when
        # every variable went to Slurm
        if (out is not None and out.status in (Outcome.DONE, Outcome.FAILED, Outcome.SUBMITTED)
                and self.integrity is not None):
            self.integrity.submit(proposal, run)
        return out

    def _update_source_state(self) -> None:
        """Show "(reconnecting)" in the status record while a Kafka source cannot reach its
        broker."""
        if not self.update_source.startswith("kafka"):
            return
        down = any(getattr(getattr(s, "connectivity", None), "state", "") == "reconnecting"
                   for s in self.sources)
        base = self.update_source.removesuffix(" (reconnecting)")
        self.update_source = base + (" (reconnecting)" if down else "")

    def _retry_deferred(self) -> None:
        """Process again the runs whose values could not be stored (disk full...): the
        catch-up once space is back. A run that fails again is deferred again."""
        runs = self.processor.take_deferred()
        if runs:
            log.info("Retrying %d run(s) whose values could not be stored: %s", len(runs),
                     ", ".join(str(r) for _, r in runs))
            for proposal, run in runs:
                self.submit(proposal, run, "all")

    def _requeue_pending(self, only_waiting_for_context: bool = False) -> int:
        """Queue the unfinished runs (``pending``, ``processing``, ``waiting``), or only those
        waiting for a working context file; returns how many."""
        if only_waiting_for_context:
            todo = (RunStatus.WAITING,)
        else:
            todo = (RunStatus.PENDING, RunStatus.PROCESSING, RunStatus.WAITING)
        n = 0
        on_slurm = self.slurm.active_runs()
        for r in self.db.runs():
            if r["proposal"] != self.proposal or (r["proposal"], r["run"]) in on_slurm:
                continue
            if r["status"] in todo:
                self.submit(r["proposal"], r["run"], "all")
                n += 1
        return n

    def _check_context(self, wait: bool = False) -> None:
        """(Re)load the context file if it changed. The load borrows a worker, which may be busy
        with a long run, so the main loop does not wait for it (``wait=False``): the loop must
        keep writing the status heartbeat."""
        mtime = self._ctx_file_mtime()
        if (mtime == self._ctx_mtime and not self._ctx_force_reload) \
                or self._ctx_reloading.is_set():
            return
        self._ctx_force_reload = False
        first = self._ctx_mtime is None
        self._ctx_mtime = mtime
        self._ctx_reloading.set()
        if wait:
            self._reload_context(first)
        else:
            threading.Thread(target=self._reload_context, args=(first,), name="context-reload",
                             daemon=True).start()

    def _reload_context(self, first: bool) -> None:
        try:
            was_broken = self.processor.context_error is not None
            err = self.processor.load_context()
            if err:
                log.error("Context file is broken; runs are recorded and will be processed once "
                          "it is fixed:\n%s", err)
                if not was_broken:
                    self.report("error", "Context file is broken; runs are recorded and "
                                "processed once it is fixed", {"error": err}, source="context",
                                log_it=False)
            else:
                if was_broken:
                    self.report("info", "Context file fixed", source="context")
                log.info("Context file %s: %d variables", "loaded" if first else "reloaded",
                         len(self.processor.variables))
                if was_broken and not first:
                    n = self._requeue_pending(only_waiting_for_context=True)
                    if n:
                        log.info("Context file fixed: processing %d waiting run(s)", n)
        except Exception:
            log.exception("Reloading the context file failed")
        finally:
            self._ctx_reloading.clear()

    MANUAL_SEEN_KEY = "manual_applied_id"

    def _manual_edits_pending(self) -> bool:
        """Whether manual values were edited since the last check (e.g. while no backend ran)."""
        try:
            seen = self.db.get_metadata(self.MANUAL_SEEN_KEY)
            return seen is not None and self.manual.last_edit_id() > int(seen)
        except Exception:
            log.exception("Checking manual edits failed")
            return False

    def _check_manual(self) -> list:
        """Recompute variables that depend on manual values edited since the last check (by
        the CLI, GUIs or the API, also while the backend was down), and reload the context
        when manual columns were added, renamed or removed. Returns the futures of the
        recomputations submitted."""
        try:
            sig = tuple(c.name for c in self.manual.columns())
            if self._manual_sig is not None and sig != self._manual_sig:
                self._ctx_force_reload = True   # context files may read the new names
            self._manual_sig = sig
            seen = self.db.get_metadata(self.MANUAL_SEEN_KEY)
            if seen is None:
                self.db.set_metadata(self.MANUAL_SEEN_KEY, str(self.manual.last_edit_id()))
                return []
            # carried-over values are in place before their run is processed
            last, edits = self.manual.edits_since(int(seen), exclude_via=("carry-over",))
            if last == int(seen):
                return []
            self.db.set_metadata(self.MANUAL_SEEN_KEY, str(last))
        except Exception:
            log.exception("Checking manual edits failed")
            return []
        per_run: dict[tuple[int, int], set] = {}
        for p, r, name in edits:
            if p == self.proposal:
                per_run.setdefault((p, r), set()).add(name)
        futs = []
        for (p, r), names in per_run.items():
            if self.processor.dependents(names) and not self._stop.is_set():
                futs.append(self.executor.submit(self._recompute, p, r, names))
        return futs

    def _recompute(self, proposal, run, names):
        if self._stop.is_set():
            return None
        try:
            deps = self.processor.dependents(names)
            if not deps:
                return None
            log.info("Run %d: %s changed; recomputing %s", run, ", ".join(sorted(names)),
                     ", ".join(deps))
            return self.dispatcher.process(proposal, run, "all", names=deps)
        except Exception:
            log.exception("Recomputing run %d after a manual edit failed", run)
            return None

    def _start_sources(self) -> None:
        if self.facility == "ess":
            return self._start_ess()
        if self.facility == "esrf":
            from backend.sources.esrf import EsrfMetadataSource
            c = self.config["esrf"]
            root = c.get("root") or ""
            if not root:
                log.error("facility = \"esrf\" needs [esrf] root (the beamtime folder) in amore.toml")
                return
            self.add_source(EsrfMetadataSource(
                root, self.proposal, c.get("path_prefix", ""), c.get("path_prefix_replacement", ""),
                quiet_seconds=c["quiet_seconds"], rescan_seconds=c["rescan_seconds"],
                on_problem=self.reporter("esrf")))
            self.update_source = "esrf metadata.json"
            return self._start_publisher()
        if self.facility == "swissfel":
            from backend.sources.swissfel import SwissfelRequestSource
            c = self.config["swissfel"]
            if not c.get("root"):
                log.error("facility = \"swissfel\" needs [swissfel] root (the pgroup directory)")
                return
            self.add_source(SwissfelRequestSource(
                c["root"], self.proposal, quiet_seconds=c["quiet_seconds"],
                rescan_seconds=c["rescan_seconds"], on_problem=self.reporter("swissfel")))
            self.update_source = "swissfel run_info"
            return self._start_publisher()
        return self._start_euxfel()

    def _start_publisher(self) -> None:
        """AMORE's update messages on Kafka, where a broker is configured and reachable."""
        broker = self.config.broker
        if not broker:
            return
        from backend.kafkaclient import broker_reachable
        from backend.notify.kafka import UpdatePublisher
        if broker_reachable(broker, float(self.config["kafka"]["connect_timeout"])):
            self.publisher = UpdatePublisher(self.config, self.db.db_id)
        else:
            log.warning("Kafka broker %s not reachable: no update messages", broker)

    def _start_ess(self) -> None:
        broker = self.config.broker
        if not broker:
            log.error("facility = \"ess\" needs a Kafka broker ([kafka] broker / AMORE_BROKER)")
            return
        from backend.kafkaclient import broker_reachable
        from backend.notify.kafka import UpdatePublisher
        from backend.sources.ess import EssFileWriterSource
        if not broker_reachable(broker, float(self.config["kafka"]["connect_timeout"])):
            log.error("Kafka broker %s not reachable: no ESS runs until it is (restart)", broker)
            return
        self.publisher = UpdatePublisher(self.config, self.db.db_id)
        source = EssFileWriterSource(self.config, self.proposal, self.db.db_id,
                                     on_problem=self.reporter("ess"))
        if not source.wait_ready(float(self.config["kafka"]["join_timeout"])):
            log.warning("Kafka consumer group not joined yet; events may be delayed")
        self.add_source(source)
        self.update_source = f"kafka {broker}"
        log.info("Listening for ESS file writer messages on %s (topics %s)", broker,
                 ", ".join(source.topics))

    def euxfel_topics(self) -> list[str]:
        """European XFEL event topics: ``kafka.event_topics``, plus, with ``euxfel.online``,
        the online topics of the proposal's instrument (``euxfel.online_topics`` with
        ``{instrument}`` from ``euxfel.instrument`` or the proposal directory's instrument)."""
        topics = list(self.config["kafka"]["event_topics"])
        eu = self.config["euxfel"]
        if eu.get("online"):
            inst = eu.get("instrument")
            if not inst:
                pdir = find_proposal_dir(self.proposal, self.config)
                inst = pdir.parent.parent.name if pdir is not None else None
            if inst:
                topics += [t.format(instrument=str(inst).lower()) for t in eu["online_topics"]]
            else:
                log.error("euxfel.online: instrument of proposal %s unknown; set euxfel.instrument",
                          self.proposal)
        return list(dict.fromkeys(topics))

    def _start_euxfel(self) -> None:
        broker = self.config.broker
        reachable = False
        if broker:
            from backend.kafkaclient import broker_reachable
            from backend.notify.kafka import UpdatePublisher
            from backend.sources.euxfel import FacilityEventSource
            reachable = broker_reachable(broker, float(self.config["kafka"]["connect_timeout"]))
            if reachable:
                self.publisher = UpdatePublisher(self.config, self.db.db_id)
                source = FacilityEventSource(self.config, self.proposal, self.db.db_id,
                                             topics=self.euxfel_topics(),
                                             on_problem=self.reporter("kafka"))
                # Join the consumer group before saying "Ready": events announced from then on
                # are delivered (a new group starts at the end of the topics).
                if not source.wait_ready(float(self.config["kafka"]["join_timeout"])):
                    log.warning("Kafka consumer group not joined yet; events may be delayed")
                self.add_source(source)
                self.update_source = f"kafka {broker}"
                log.info("Listening for run events on %s (topics %s); updates on %s", broker,
                         ", ".join(source.topics),
                         self.config.update_topic(self.db.db_id))
            else:
                log.warning("Kafka broker %s not reachable: running offline", broker)
        watch = self.config["watch"]["enabled"]
        if watch is True or (watch == "auto" and not reachable):
            pdir = find_proposal_dir(self.proposal, self.config)
            if pdir is None:
                log.error("Proposal %s not found under the data root; cannot watch for runs",
                          self.proposal)
            else:
                from backend.sources.directory import RunDirectoryWatcher
                self.add_source(RunDirectoryWatcher(
                    self.proposal, pdir,
                    quiet_seconds=self.config["watch"]["quiet_seconds"],
                    poll_seconds=self.config["watch"]["poll_seconds"]))
                if self.update_source == "none":
                    self.update_source = "watcher"

    def add_source(self, source) -> None:
        """Start a :class:`~backend.sources.base.RunSource`: each event it announces is recorded
        (:meth:`handle_event`), then acknowledged to the source.

        While the database cannot be written for a reason that may pass (locked by another
        process, disk full), recording is retried (logged; the source waits, so events stay in
        order). An event that cannot be recorded for any other reason (a bug, a value the
        database refuses) is logged, put in the event log and acknowledged: it is never retried
        forever in front of the events behind it. An event interrupted by shutdown is not
        acknowledged, so a source that can deliver again does so after a restart."""
        from backend.kafkaclient import Throttle
        from backend.store.writer import is_transient_db_error
        throttle = Throttle(30.0)

        def on_event(ev: RunEvent, token) -> None:
            delay = 0.5
            while True:
                try:
                    self.handle_event(ev)
                    break
                except Exception as e:
                    if self._stop.is_set():
                        raise
                    if is_transient_db_error(e):
                        ok, _ = throttle(("transient", type(e).__name__))
                        log.log(logging.WARNING if ok else logging.DEBUG,
                                "Run %d: cannot record it yet (%s); retrying", ev.run, e)
                        self._stop.wait(delay)
                        delay = min(delay * 2, 10.0)
                        continue
                    log.exception("Run %d: cannot record %s; skipped", ev.run, ev)
                    self.report("error", f"Run {ev.run}: announcement could not be recorded "
                                f"({type(e).__name__}: {e!s:.200}); skipped",
                                {"source": ev.source, "event": ev.event}, source="listener",
                                run=ev.run, log_it=False)
                    break
            source.ack(token)

        if getattr(source, "on_problem", None) is None:
            try:
                source.on_problem = self.reporter(getattr(source, "name", "source").split()[0])
            except AttributeError:
                pass
        source.start(on_event)
        self.sources.append(source)

    # -- main ----------------------------------------------------------------------------
    def run(self, handle_signals: bool = True) -> None:
        from backend.service.session import BackendSession
        from backend.service.status import this_host
        from backend.files import restrict_umask
        restrict_umask(self.context_dir)
        # exclusive lock + status record; raises BackendLockedError if another
        # backend runs on this directory
        self._backend_session = BackendSession.begin(self)
        log.info("Running on %s under user %s, PID %d", this_host(), getpass.getuser(),
                 os.getpid())
        log.info("Context directory %s, %s proposal %s, %d worker(s)", self.context_dir,
                 self.facility, self.proposal, self.config.jobs)
        if handle_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: self._stop.set())
        self.pool.start()
        self._start_integrity()
        from backend.service.control import ControlServer
        self.control = ControlServer(self)
        try:
            self.control.start()
            # What the previous backend left unfinished, read before the sources start: runs
            # they announce from now on are queued by them (reading later would do them twice).
            pending = self._find_pending()
            self._start_sources()
            self._check_context(wait=True)
            self._poll_slurm()  # jobs that ended while the backend was down
            threading.Thread(target=self._slurm_loop, name="slurm-poll", daemon=True).start()
            if self.publisher is not None:  # Kafka in use: jobs announce their end there
                threading.Thread(target=self._job_messages, name="slurm-messages",
                                 daemon=True).start()
            self.catch_up(pending)
            self._check_manual()
            log.info("Ready")
            retry_every = float(self.config["processing"].get("store_retry_seconds", 30.0))
            next_retry = time.monotonic() + retry_every
            while not self._stop.wait(1.0):
                self._check_manual()
                self._check_context()
                self._update_source_state()
                self._backend_session.tick()
                if time.monotonic() >= next_retry:
                    next_retry = time.monotonic() + retry_every
                    self._retry_deferred()
        except Exception:
            log.exception("The backend failed")
            raise
        finally:
            self.shutdown()

    def _start_integrity(self) -> None:
        from backend.service.integrity import IntegrityWorker
        self.integrity = IntegrityWorker(self.db, self.config, self.proposal_dir,
                                         busy=self.processor.busy)

    def _find_pending(self):
        """The pending work now (:func:`backend.service.integrity.find_pending`), or None
        if the proposal is closed."""
        from backend.service.integrity import find_pending
        from backend.store.trust import is_closed
        if is_closed(self.db):
            return None
        return find_pending(self.db, self.config, self.proposal, self.proposal_dir)

    def catch_up(self, work=None):
        """Derive all pending work from the database and the file system
        (:func:`backend.service.integrity.find_pending`; or take ``work`` found earlier, e.g.
        before the run sources started) and queue it: runs on disk the database does not know,
        runs left pending/processing, runs whose worker died, processed runs without data check
        or checksums. Returns the :class:`PendingWork` and the futures."""
        from backend.store.trust import is_closed
        if is_closed(self.db):
            log.info("The proposal is closed: nothing is processed")
            return None, []
        if work is None:
            work = self._find_pending()
        else:   # found earlier: leave out the runs finished since (a Slurm job's results)
            from backend.service.integrity import runs_on_disk
            now = {r["run"]: r["status"] for r in self.db.runs() if r["proposal"] == self.proposal}
            work.unfinished = [r for r in work.unfinished if now.get(r) in (
                RunStatus.PENDING, RunStatus.PROCESSING, RunStatus.WAITING)]
            # and add the runs written while the sources started (a directory watcher only sees
            # what changes after it started): look at the disk again, now that they listen
            work.unknown = sorted(set(work.unknown) | (runs_on_disk(self.proposal_dir) - set(now)))
        on_slurm = {r for p, r in self.slurm.active_runs() if p == self.proposal}
        if on_slurm:  # their Slurm jobs still run: followed by the Slurm poll, not requeued
            work.unfinished = [r for r in work.unfinished if r not in on_slurm]
        if work:
            log.info("Catching up: %s", work.describe())
        from backend.service.integrity import snapshot_event
        announced = set()
        for run in work.unknown:
            snapshot_event(self.db, RunEvent(self.proposal, run, "raw", source="catch-up",
                                             event="found_on_disk",
                                             location=str(self.proposal_dir / "raw" / f"r{run:04d}")))
            if self.db.ensure_run(self.proposal, run):
                self._carry_over(self.proposal, run)
            else:   # a run source announced it meanwhile, and queued it
                announced.add(run)
        futs = [self.submit(self.proposal, run, "all") for run in work.to_process
                if run not in announced]
        if self.integrity is not None:
            for run in sorted(set(work.no_check) | set(work.no_checksums)):
                self.integrity.submit(self.proposal, run, checks=run in work.no_check,
                                      sums=run in work.no_checksums)
        return work, [f for f in futs if f is not None]

    def run_once(self) -> int:
        """``amore-proto listen --once``: catch up on all pending work, do it, return 0.
        Starts no worker when there is nothing to process."""
        from backend.service.session import BackendSession
        self._backend_session = BackendSession.begin(self)
        self._start_integrity()
        try:
            self._poll_slurm()  # results (or failures) of jobs that ended while no backend ran
            from backend.service.integrity import find_pending
            from backend.store.trust import is_closed
            closed = is_closed(self.db)
            manual = not closed and self._manual_edits_pending()
            if not closed and (manual or find_pending(self.db, self.config, self.proposal,
                                                      self.proposal_dir).to_process):
                self.pool.start()
                self._check_context(wait=True)
            work, futs = self.catch_up()
            # values that depend on manual values edited while no backend ran
            recomputed = self._check_manual() if not closed else []  # (first time: baseline)
            if (work is None or not work) and not recomputed:
                log.info("Nothing to do")
            for f in futs + recomputed:
                f.result()
            self.integrity.wait_idle()
            log.info("Caught up: %s", work.describe() if work is not None else "closed")
            return 0
        finally:
            self.shutdown(grace=0.0)

    def stop(self) -> None:
        self._stop.set()
        self._slurm_wake.set()

    def _poll_slurm(self) -> None:
        try:
            self.slurm.poll()
        except Exception:
            log.exception("Following the Slurm jobs failed")

    def _slurm_loop(self) -> None:
        """Follow Slurm jobs: result files and job states every ``[slurm] poll_seconds`` (GPFS
        does not deliver inotify events from other hosts), and at once when a job says on the
        broker that it finished or inotify sees its result file appear."""
        period = float(self.config["slurm"].get("poll_seconds", 5.0))
        watch = self.slurm.watch_results(self._slurm_wake.set)
        try:
            while not self._stop.is_set():
                self._slurm_wake.wait(period)
                self._slurm_wake.clear()
                if self._stop.is_set():
                    return
                self._poll_slurm()
        finally:
            if watch is not None:
                watch.stop()

    def _job_messages(self) -> None:
        """Wake the Slurm loop for each ``slurm_job_finished`` message on the update topic."""
        from backend.notify.kafka import UpdateConsumer
        try:
            consumer = UpdateConsumer(self.config, self.db.db_id)
        except Exception:
            log.exception("Not listening for Slurm jobs' messages")
            return
        try:
            while not self._stop.is_set():
                for kind, data in consumer.poll(1.0):
                    if kind == UpdateKind.SLURM_JOB_FINISHED:
                        log.info("Slurm job %s says it finished", data.get("job"))
                        self._slurm_wake.set()
        finally:
            consumer.close()

    def shutdown(self, grace: float = 5.0) -> None:
        """Stop sources, let in-flight runs finish for ``grace`` seconds, abandon the rest
        (they stay pending and are processed at the next start), remove the tmux socket."""
        self._stop.set()
        log.info("Stopping")
        if getattr(self, "control", None) is not None:
            self.control.close()
        for source in self.sources:
            try:
                source.stop()
            except Exception:
                log.exception("Stopping the run source %s failed", getattr(source, "name", source))
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.processor.stopping = True
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and self._busy():
            time.sleep(0.05)
        self.pool.kill_busy()
        self.executor.shutdown(wait=True)
        if self.integrity is not None:
            self.integrity.stop()
        self.pool.stop()
        if self.publisher:
            self.publisher.flush(2)
            self.publisher.close()
        self.db.close()
        if getattr(self, "_backend_session", None) is not None:
            self._backend_session.close()  # status record first, so no one revives the socket
            self._backend_session = None
        sock = ContextDir(self.context_dir).tmux_socket
        try:
            sock.unlink()
            log.info("Removed %s", sock)
        except FileNotFoundError:
            pass
        log.info("Stopped")

    def _busy(self) -> bool:
        return self.processor.busy()
