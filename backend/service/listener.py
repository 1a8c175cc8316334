"""The backend: ``amore-proto listen DIR``.

The listener loop of one context directory: it starts the facility's run sources (its plug-in,
:mod:`backend.facilities`, says which), hands every run they announce to the run path
(:mod:`backend.processing.runpath`: record -> dispatch -> store -> publish), and keeps the
follow-ups going, each in a module of its own:

* :mod:`backend.service.reload` -- the context file is loaded again when it changes;
* :mod:`backend.service.manualedits` -- variables depending on edited manual values are
  recomputed;
* :mod:`backend.service.slurmfollow` -- Slurm jobs are followed and their results stored;
* :mod:`backend.service.catchup` -- what is left to do (at start, once a context file is fixed,
  runs whose values could not be stored) is queued;
* :mod:`backend.service.integrity` -- data check and checksums of each processed run.

It also writes the status record (:mod:`backend.service.session`) and answers the command
line's reprocess requests (:mod:`backend.service.control`).
"""
from __future__ import annotations

import getpass
import logging
import os
import signal
import time
from pathlib import Path

from backend.config import Config, load_config
from backend.contextdir import ContextDir
from backend.facilities import SourceContext
from backend.facilities import get as get_facility
from backend.locate import find_proposal_dir
from backend.processing.local import WorkerPool
from backend.processing.runpath import RunPath
from backend.processing.slurm import SlurmExecutor
from backend.service.catchup import CatchUp
from backend.service.manualedits import ManualEdits
from backend.service.reload import ContextReload
from backend.service.slurmfollow import SlurmFollower
from backend.store.trust import is_closed
from backend.store.writer import RunDB
from backend.vocab import Outcome

log = logging.getLogger(__name__)


class Listener:
    """The backend of one context directory. :meth:`run` blocks until :meth:`stop` (or
    SIGINT/SIGTERM when installed with ``handle_signals=True``)."""

    def __init__(self, context_dir: str | os.PathLike, config: Config | None = None):
        self.context_dir = Path(context_dir).resolve()
        self.config = config or load_config(self.context_dir)
        self.db = RunDB(self.context_dir, keep_connections=True)
        self.db.keep_open()   # the database stays readable and fails cleanly on a full disk
        self.proposal = self.db.proposal
        #: the facility's plug-in (:class:`backend.facilities.Facility`)
        self.plugin = get_facility(self.config.facility)
        self.facility = self.plugin.name
        if self.proposal is None:
            raise RuntimeError(f"{self.context_dir}: the database has no proposal; "
                               f"set it with 'amore-proto proposal N'")
        #: the run sources started by :meth:`_start_sources` (:class:`backend.sources.base.RunSource`)
        self.sources: list = []
        self.update_source = "none"
        self.pool = WorkerPool(self.context_dir, self.config, self.config.jobs)
        self.path = RunPath(self.context_dir, self.config, self.db, self.pool,
                            facility=self.facility, jobs=self.config.jobs)
        self.slurm = self.path.slurm = SlurmExecutor(self.context_dir, self.config, self.db,
                                                     publish=self.path.publish)
        self.path.after = self._after_run
        self.processor = self.path.processor
        self.executor = self.path.executor
        self._stop = self.path.stopped
        #: the proposal's data directory (None if not found under the data root)
        self.proposal_dir = find_proposal_dir(self.proposal, self.config)
        #: background checks/checksums of processed runs (started by run() / run_once())
        self.integrity = None
        self.catchup = CatchUp(self.path, self.config, self.plugin, self.proposal_dir)
        self.reload = ContextReload(
            self.processor, self.report,
            lambda: self.catchup.requeue_pending(only_waiting_for_context=True),
            self.recompute_stale if self.config["processing"].get("recompute_on_change")
            else None)
        self.manual_edits = ManualEdits(self.path, self.reload.force, self._stop)
        self.slurm_follower = SlurmFollower(self.slurm, self._stop)

    @property
    def publisher(self):
        """AMORE's update messages on Kafka (:class:`~backend.notify.kafka.UpdatePublisher`),
        None without a reachable broker."""
        return self.path.publisher

    @property
    def last_run(self) -> tuple[int, float] | None:
        """``(run, time)`` of the last run processed (the status record shows it)."""
        return self.path.last_run

    def handle_event(self, ev) -> None:
        """Record the run of a :class:`~backend.sources.base.RunEvent` and queue its processing
        (:meth:`backend.processing.runpath.RunPath.handle_event`)."""
        self.path.handle_event(ev)

    # -- the event log ------------------------------------------------------------------------
    def report(self, level: str, message: str, details: dict | None = None,
               source: str = "backend", run: int | None = None, log_it: bool = True) -> None:
        """Append to the event log (and, with ``log_it``, the log file); never raises
        (:meth:`backend.processing.runpath.RunPath.report`)."""
        self.path.report(level, message, details, source=source, run=run, log_it=log_it)

    def reporter(self, source: str):
        """A :data:`backend.sources.base.ProblemCallback` writing to the event log as ``source``
        (what a run source tells people: a malformed message, a lost connection...)."""
        def on_problem(level: str, message: str, details: dict | None = None) -> None:
            self.report(level, message, details, source=source, log_it=False)
        return on_problem

    # -- run sources ----------------------------------------------------------------------------
    def _start_sources(self) -> None:
        """AMORE's update messages on Kafka where a broker is configured and reachable, then the
        facility's run sources (:meth:`backend.facilities.Facility.run_sources`)."""
        broker = self.config.broker
        reachable = False
        if broker:
            from backend.kafkaclient import broker_reachable
            reachable = broker_reachable(broker, float(self.config["kafka"]["connect_timeout"]))
            if reachable:
                from backend.notify.kafka import UpdatePublisher
                self.path.publisher = UpdatePublisher(self.config, self.db.db_id)
            else:
                log.warning("Kafka broker %s not reachable: no update messages", broker)
        ctx = SourceContext(self.config, self.plugin.settings(self.config), self.proposal,
                            self.db.db_id, self.proposal_dir, broker, reachable, self.reporter)
        for source in self.plugin.run_sources(ctx):
            self.add_source(source)
        if self.sources:
            self.update_source = self.sources[0].name

    def add_source(self, source) -> None:
        """Start a :class:`~backend.sources.base.RunSource`: each event it announces goes to the
        run path (:meth:`backend.processing.runpath.RunPath.on_event`: recorded, then
        acknowledged to the source)."""
        if getattr(source, "on_problem", None) is None:
            try:
                source.on_problem = self.reporter(getattr(source, "name", "source").split()[0])
            except AttributeError:
                pass
        source.start(lambda ev, token: self.path.on_event(ev, token, source))
        self.sources.append(source)

    def _update_source_state(self) -> None:
        """Show "(reconnecting)" in the status record while a source cannot reach its broker."""
        down = any(getattr(getattr(s, "connectivity", None), "state", "") == "reconnecting"
                   for s in self.sources)
        base = self.update_source.removesuffix(" (reconnecting)")
        self.update_source = base + (" (reconnecting)" if down else "")

    def recompute_stale(self) -> int:
        """Queue the recomputation of the stale values of every run that has values (and of
        the variables depending on them; runs not processed yet are the catch-up's), as
        ``amore-proto reprocess all`` would; returns how many runs. Never raises."""
        from backend.processing.selective import plan, requests
        try:
            todo = plan(self.db, missing=False)
            reuse, kinds = requests(self.db, todo)
        except Exception:
            log.exception("Finding the stale values failed")
            return 0
        for (p, r), names in sorted(todo.items(), key=lambda kv: -kv[0][1]):
            self.path.submit(p, r, kinds.get((p, r), "all"), names=names,
                             only=names is not None, reuse=reuse.get((p, r)))
        return len(todo)

    def _after_run(self, proposal, run, out) -> None:
        """After a run's dispatch: the data check and checksums look at the run's files, not at
        its values, so also when every variable went to Slurm."""
        if (out is not None and out.status in (Outcome.DONE, Outcome.FAILED, Outcome.SUBMITTED)
                and self.integrity is not None):
            self.integrity.submit(proposal, run)

    def _start_integrity(self) -> None:
        from backend.service.integrity import IntegrityWorker
        self.integrity = self.catchup.integrity = IntegrityWorker(
            self.db, self.config, self.proposal_dir, busy=self.processor.busy)

    # -- main ----------------------------------------------------------------------------------
    def run(self, handle_signals: bool = True) -> None:
        from backend.files import restrict_umask
        from backend.service.session import BackendSession
        from backend.service.status import this_host
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
            pending = self.catchup.find()
            self._start_sources()
            self.reload.check(wait=True)
            self.slurm_follower.poll()  # jobs that ended while the backend was down
            self.slurm_follower.start(job_messages=self.publisher is not None)
            self.catchup.run(pending)
            self.manual_edits.check()
            log.info("Ready")
            retry_every = float(self.config["processing"].get("store_retry_seconds", 30.0))
            next_retry = time.monotonic() + retry_every
            while not self._stop.wait(1.0):
                self.manual_edits.check()
                self.reload.check()
                self._update_source_state()
                self._backend_session.tick()
                if time.monotonic() >= next_retry:
                    next_retry = time.monotonic() + retry_every
                    self.catchup.retry_deferred()
        except Exception:
            log.exception("The backend failed")
            raise
        finally:
            self.shutdown()

    def run_once(self) -> int:
        """``amore-proto listen --once``: catch up on all pending work, do it, return 0.
        Starts no worker when there is nothing to process."""
        from backend.service.session import BackendSession
        self._backend_session = BackendSession.begin(self)
        self._start_integrity()
        try:
            self.slurm_follower.poll()  # results (or failures) of jobs that ended while no backend ran
            closed = is_closed(self.db)
            manual = not closed and self.manual_edits.pending()
            if not closed and (manual or self.catchup.find().to_process):
                self.pool.start()
                self.reload.check(wait=True)
            work, futs = self.catchup.run()
            # values that depend on manual values edited while no backend ran
            recomputed = self.manual_edits.check() if not closed else []  # (first time: baseline)
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
        self.slurm_follower.stop()

    def shutdown(self, grace: float = 5.0) -> None:
        """Stop sources, let in-flight runs finish for ``grace`` seconds, abandon the rest
        (they stay pending and are processed at the next start), remove the tmux socket."""
        self._stop.set()
        self.slurm_follower.stop()
        log.info("Stopping")
        if getattr(self, "control", None) is not None:
            self.control.close()
        for source in self.sources:
            try:
                source.stop()
            except Exception:
                log.exception("Stopping the run source %s failed", getattr(source, "name", source))
        self.path.stop()
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and self.processor.busy():
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
