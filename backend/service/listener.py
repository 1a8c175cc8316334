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
        from backend.processing.slurm import Dispatcher, SlurmExecutor
        self.slurm = SlurmExecutor(self.context_dir, self.config, self.db, publish=self._publish)
        self.dispatcher = Dispatcher(self.processor, self.slurm)
        self.executor = ThreadPoolExecutor(max_workers=self.config.jobs,
                                           thread_name_prefix="run")
        self._ctx_mtime = None
        self._ctx_reloading = threading.Event()
        self._slurm_wake = threading.Event()
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
            out = self.dispatcher.process(proposal, run, data)
        except Exception:
            log.exception("Processing run %d failed unexpectedly", run)
            return None
        self.last_run = (run, time.time())
        return out

    def _requeue_pending(self, only_waiting_for_context: bool = False) -> int:
        n = 0
        on_slurm = self.slurm.active_runs()
        for r in self.db.runs():
            if r["proposal"] != self.proposal or (r["proposal"], r["run"]) in on_slurm:
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

    def add_source(self, source) -> None:
        """Start a :class:`~backend.sources.base.RunSource`: each event it announces is recorded
        (:meth:`handle_event`), then acknowledged to the source. An event that cannot be recorded
        is not acknowledged, so a source that can deliver again does so after a restart."""
        def on_event(ev: RunEvent, token) -> None:
            self.handle_event(ev)
            source.ack(token)

        source.start(on_event)
        self.sources.append(source)

    # -- main ----------------------------------------------------------------------------
    def run(self, handle_signals: bool = True) -> None:
        from backend.service import manager
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
        from backend.service.control import ControlServer
        self.control = ControlServer(self)
        try:
            self.control.start()
            self._start_sources()
            self._check_context(wait=True)
            self._poll_slurm()  # jobs that ended while the backend was down
            threading.Thread(target=self._slurm_loop, name="slurm-poll", daemon=True).start()
            if self.publisher is not None:  # Kafka in use: jobs announce their end there
                threading.Thread(target=self._job_messages, name="slurm-messages",
                                 daemon=True).start()
            n = self._requeue_pending()
            if n:
                log.info("Resuming %d run(s) recorded but not processed", n)
            log.info("Ready")
            while not self._stop.wait(1.0):
                self._check_context()
                self._backend_session.tick()
        except Exception:
            log.exception("The backend failed")
            raise
        finally:
            self.shutdown()

    def stop(self) -> None:
        self._stop.set()
        self._slurm_wake.set()

    def _poll_slurm(self) -> None:
        try:
            self.slurm.poll()
        except Exception:
            log.exception("Following the Slurm jobs failed")

    def _slurm_loop(self) -> None:
        """Follow Slurm jobs: result files and job states (no inotify: GPFS does not deliver
        events from other hosts), at once when a job says on the broker that it finished."""
        period = float(self.config["slurm"].get("poll_seconds", 5.0))
        while not self._stop.is_set():
            self._slurm_wake.wait(period)
            self._slurm_wake.clear()
            if self._stop.is_set():
                return
            self._poll_slurm()

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
                    if kind == "slurm_job_finished":
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
        self.pool.stop()
        if self.publisher:
            self.publisher.flush(2)
            self.publisher.close()
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
