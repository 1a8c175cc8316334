"""Slurm follow-up: the listener's threads that follow the Slurm jobs of its database and store
their results (:meth:`backend.processing.slurm.SlurmExecutor.poll`): every ``[slurm]
poll_seconds`` (GPFS does not deliver inotify events from other hosts), and at once when a job
says on the broker that it finished (``slurm_job_finished`` update messages) or inotify sees its
result file appear."""
from __future__ import annotations

import logging
import threading

from backend.processing.slurm import SlurmExecutor
from backend.vocab import UpdateKind

log = logging.getLogger(__name__)


class SlurmFollower:
    """Follows the jobs of ``slurm`` until ``stopped`` is set."""

    def __init__(self, slurm: SlurmExecutor, stopped: threading.Event):
        self.slurm = slurm
        self.stopped = stopped
        self._wake = threading.Event()

    def poll(self) -> None:
        """One look at every unfinished job (their results stored, their end recorded); never
        raises."""
        try:
            self.slurm.poll()
        except Exception:
            log.exception("Following the Slurm jobs failed")

    def start(self, job_messages: bool) -> None:
        """Start following in a thread; with ``job_messages`` (Kafka in use: jobs announce
        their end there) also read the update topic for jobs' messages."""
        threading.Thread(target=self._loop, name="slurm-poll", daemon=True).start()
        if job_messages:
            threading.Thread(target=self._job_messages, name="slurm-messages",
                             daemon=True).start()

    def stop(self) -> None:
        """Wake the follower so that it sees ``stopped``."""
        self._wake.set()

    def _loop(self) -> None:
        period = float(self.slurm.config["slurm"].get("poll_seconds", 5.0))
        watch = self.slurm.watch_results(self._wake.set)
        try:
            while not self.stopped.is_set():
                self._wake.wait(period)
                self._wake.clear()
                if self.stopped.is_set():
                    return
                self.poll()
        finally:
            if watch is not None:
                watch.stop()

    def _job_messages(self) -> None:
        """Wake the loop for each ``slurm_job_finished`` message on the update topic."""
        from backend.notify.kafka import UpdateConsumer
        try:
            consumer = UpdateConsumer(self.slurm.config, self.slurm.db_id)
        except Exception:
            log.exception("Not listening for Slurm jobs' messages")
            return
        try:
            while not self.stopped.is_set():
                for kind, data in consumer.poll(1.0):
                    if kind == UpdateKind.SLURM_JOB_FINISHED:
                        log.info("Slurm job %s says it finished", data.get("job"))
                        self._wake.set()
        finally:
            consumer.close()
