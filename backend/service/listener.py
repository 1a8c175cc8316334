"""The backend: ``amore-proto listen DIR``.

Learns of new runs from run sources (:mod:`backend.sources`): the facility's Kafka events or, offline, a
watched proposal directory (:mod:`backend.sources.directory`); records each run in the database, computes
its variables in the worker pool (:mod:`backend.processing.local`) and announces every write on the
database's update topic.
"""
from __future__ import annotations

import getpass
import logging
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from backend.config import Config, load_config
from backend.sources.base import RunEvent
from backend.contextdir import CONTEXT_FILE_NAME, LOG_FILE_NAME, TMUX_SOCKET_NAME
from backend.processing.local import CONTEXT_WAIT_PREFIX, RunProcessor, WorkerPool
from backend.store.writer import RunDB

log = logging.getLogger(__name__)



def setup_logging(context_dir: Path | None, level=logging.INFO) -> None:
    """Log to stderr and, if ``context_dir`` is given, to ``context_dir/amore.log``."""
    fmt = logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    root = logging.getLogger()
    root.setLevel(level)
    for h in list(root.handlers):
        root.removeHandler(h)
    sh = logging.StreamHandler()
    sh.setFormatter(fmt)
    root.addHandler(sh)
    if context_dir is not None:
        from backend.files import restrict_umask
        restrict_umask(context_dir)
        fh = logging.FileHandler(Path(context_dir) / LOG_FILE_NAME)
        fh.setFormatter(fmt)
        root.addHandler(fh)


def find_proposal_dir(proposal: int, config: Config) -> Path | None:
    """``<root>/<INSTRUMENT>/<CYCLE>/p<proposal:06d>`` under the data root, or None."""
    root = config.effective_data_root()
    matches = sorted(root.glob(f"*/*/p{proposal:06d}"))
    return matches[0] if matches else None


class Listener:
    """The backend of one context directory. :meth:`run` blocks until :meth:`stop` (or
    SIGINT/SIGTERM when installed with ``handle_signals=True``)."""

    def __init__(self, context_dir: str | os.PathLike, config: Config | None = None):
        self.context_dir = Path(context_dir).resolve()
        self.config = config or load_config(self.context_dir)
        self.db = RunDB(self.context_dir)
        self.db.keep_open()   # the database stays readable and fails cleanly on a full disk
        self.proposal = self.db.proposal
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
        self.executor = ThreadPoolExecutor(max_workers=self.config.jobs,
                                           thread_name_prefix="run")
        self._ctx_mtime = None
        self._ctx_reloading = threading.Event()
        self.last_run: tuple[int, float] | None = None

    # -- plumbing ----------------------------------------------------------------------
    def _publish(self, kind: str, data: dict) -> None:
        if self.publisher is not None:
            self.publisher.publish(kind, data)

    def _ctx_file_mtime(self):
        try:
            return (self.context_dir / CONTEXT_FILE_NAME).stat().st_mtime
        except FileNotFoundError:
            return None

    def handle_event(self, ev: RunEvent) -> None:
        """Record the run of ``ev`` and queue its processing. Called by the event sources."""
        if ev.proposal != self.proposal:
            return
        new = self.db.ensure_run(ev.proposal, ev.run)
        log.info("Run %d: %s data ready (%s%s)", ev.run, ev.data, ev.event or "event",
                 f", {ev.source}" if ev.source else "")
        if new:
            self._publish("run_values_updated", {"proposal": ev.proposal, "run": ev.run,
                                                 "names": [], "status": "pending"})
        self.submit(ev.proposal, ev.run, ev.data)

    def submit(self, proposal: int, run: int, data: str):
        if self._stop.is_set():
            return None
        fut = self.executor.submit(self._process, proposal, run, data)
        return fut

    def _process(self, proposal, run, data):
        if self._stop.is_set():
            return None
        try:
            out = self.processor.process(proposal, run, data)
        except Exception:
            log.exception("Processing run %d failed unexpectedly", run)
            return None
        self.last_run = (run, time.time())
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

    def _requeue_pending(self, only_waiting_for_context: bool = False, runs=None) -> int:
        """Process the runs recorded but not processed (``runs``: rows of the ``runs`` table
        read earlier; default: now). Returns how many were queued."""
        n = 0
        for r in (self.db.runs() if runs is None else runs):
            if r["proposal"] != self.proposal:
                continue
            waiting = (r["status_message"] or "").startswith(CONTEXT_WAIT_PREFIX)
            if r["status"] in ("pending", "processing") and (waiting or not only_waiting_for_context):
                self.submit(r["proposal"], r["run"], "all")
                n += 1
        return n

    def _check_context(self, wait: bool = False) -> None:
        """(Re)load the context file if it changed. The load borrows a worker, which may be busy
        with a long run, so the main loop does not wait for it (``wait=False``): the loop must
        keep writing the status heartbeat."""
        mtime = self._ctx_file_mtime()
        if mtime == self._ctx_mtime or self._ctx_reloading.is_set():
            return
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
            else:
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

    def _start_sources(self) -> None:
        broker = self.config.broker
        reachable = False
        if broker:
            from backend.kafkaclient import broker_reachable
            from backend.notify.kafka import UpdatePublisher
            from backend.sources.euxfel import FacilityEventSource
            reachable = broker_reachable(broker, float(self.config["kafka"]["connect_timeout"]))
            if reachable:
                self.publisher = UpdatePublisher(self.config, self.db.db_id)
                source = FacilityEventSource(self.config, self.proposal, self.db.db_id)
                # Join the consumer group before saying "Ready": events announced from then on
                # are delivered (a new group starts at the end of the topics).
                if not source.wait_ready(float(self.config["kafka"]["join_timeout"])):
                    log.warning("Kafka consumer group not joined yet; events may be delayed")
                self.add_source(source)
                self.update_source = f"kafka {broker}"
                log.info("Listening for run events on %s (topics %s); updates on %s", broker,
                         ", ".join(self.config["kafka"]["event_topics"]),
                         self.config.update_topic(self.db.db_id))
            else:
                log.warning("Kafka broker %s not reachable: running offline", broker)
        watch = self.config["watch"]["enabled"]
        if watch is True or (watch == "auto" and not reachable):
            pdir = find_proposal_dir(self.proposal, self.config)
            if pdir is None:
                log.error("Proposal %d not found under the data root; cannot watch for runs",
                          self.proposal)
            else:
                from backend.sources.directory import RunDirectoryWatcher
                self.add_source(RunDirectoryWatcher(
                    self.proposal, pdir,
                    quiet_seconds=self.config["watch"]["quiet_seconds"],
                    poll_seconds=self.config["watch"]["poll_seconds"]))
                if self.update_source == "none":
                    self.update_source = "watcher"

    def record_event(self, level: str, source: str, message: str, run: int | None = None,
                     details: dict | None = None) -> None:
        """Add an entry to the event log; never raises (a full disk or a locked database is
        logged instead)."""
        try:
            self.db.add_event(level, source, message, run=run, proposal=self.proposal,
                              details=details)
        except Exception as e:
            log.warning("Could not write to the event log (%s): %s", e, message)

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
                    self.record_event("error", "listener",
                                      f"Run {ev.run}: announcement could not be recorded "
                                      f"({type(e).__name__}: {e!s:.200}); skipped",
                                      details={"source": ev.source, "event": ev.event})
                    break
            source.ack(token)

        if hasattr(source, "on_problem"):
            source.on_problem = lambda level, message, details: self.record_event(
                level, "kafka", message, details=details)
        source.start(on_event)
        self.sources.append(source)

    # -- main ----------------------------------------------------------------------------
    def run(self, handle_signals: bool = True) -> None:
        from backend.files import restrict_umask
        from backend.service import manager
        restrict_umask(self.context_dir)
        # exclusive lock + status record; raises manager.BackendLockedError if another
        # backend runs on this directory
        self._backend_session = manager.BackendSession.begin(self)
        log.info("Running on %s under user %s, PID %d", manager.this_host(), getpass.getuser(),
                 os.getpid())
        log.info("Context directory %s, proposal %d, %d worker(s)", self.context_dir,
                 self.proposal, self.config.jobs)
        if handle_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: self._stop.set())
        self.pool.start()
        try:
            # Runs left unfinished by the previous backend, read before the sources start (runs
            # they announce from now on are queued by them; reading later would do them twice).
            unfinished = self.db.runs()
            self._start_sources()
            self._check_context(wait=True)
            n = self._requeue_pending(runs=unfinished)
            if n:
                log.info("Resuming %d run(s) recorded but not processed", n)
            log.info("Ready")
            retry_every = float(self.config["processing"].get("store_retry_seconds", 30.0))
            next_retry = time.monotonic() + retry_every
            while not self._stop.wait(1.0):
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

    def stop(self) -> None:
        self._stop.set()

    def shutdown(self, grace: float = 5.0) -> None:
        """Stop sources, let in-flight runs finish for ``grace`` seconds, abandon the rest
        (they stay pending and are processed at the next start), remove the tmux socket."""
        self._stop.set()
        log.info("Stopping")
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
        self.pool.stop()
        if self.publisher:
            self.publisher.flush(2)
            self.publisher.close()
        self.db.close()
        if getattr(self, "_backend_session", None) is not None:
            self._backend_session.close()  # status record first, so no one revives the socket
            self._backend_session = None
        sock = self.context_dir / TMUX_SOCKET_NAME
        try:
            sock.unlink()
            log.info("Removed %s", sock)
        except FileNotFoundError:
            pass
        log.info("Stopped")

    def _busy(self) -> bool:
        return self.processor.busy()
