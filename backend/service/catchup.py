"""Catch-up: what a backend has left to do, derived from the database and the file system, and
queued on the run path.

At start (before the run sources start, so that runs they announce are not done twice), after a
context file is fixed (runs waiting for it), and every ``[processing] store_retry_seconds`` (runs
whose values could not be stored: a full disk...) the listener asks :class:`CatchUp` to queue
the runs still to do: runs on disk the database does not know, runs left pending or processing,
runs whose worker died, processed runs without data check or checksums.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from backend.config import Config
from backend.processing.runpath import RunPath, snapshot_event
from backend.sources.base import RunEvent
from backend.store.trust import DATA_CHECK, TrustStore, is_closed
from backend.store.writer import RunDB
from backend.service.integrity import check_algorithm
from backend.vocab import RunStatus

log = logging.getLogger(__name__)

#: Status messages of runs whose worker died (see backend.processing.local.WorkerProcess).
DIED_MARKERS = ("context worker process was killed", "context worker process exited",
                "timed out: no result within", "the worker's reply could not be read",
                "no answer within")   # (the last: the timeout's words before 2026-11-27)
#: How often catch-up retries a run whose worker died (counted in the event log).
MAX_DIED_RETRIES = 2


@dataclass
class PendingWork:
    """Everything a backend has left to do, derived from the database and the file system.

    ``unknown``: runs on disk the database does not know; ``unfinished``: runs left pending or
    processing (e.g. by a crash); ``died``: runs whose variables failed because a worker died
    (retried at most :data:`MAX_DIED_RETRIES` times); ``no_check`` / ``no_checksums``: processed
    runs without a data check / checksums."""

    unknown: list[int] = field(default_factory=list)
    unfinished: list[int] = field(default_factory=list)
    died: list[int] = field(default_factory=list)
    no_check: list[int] = field(default_factory=list)
    no_checksums: list[int] = field(default_factory=list)

    @property
    def to_process(self) -> list[int]:
        return sorted(set(self.unknown) | set(self.unfinished) | set(self.died))

    def __bool__(self) -> bool:
        return bool(self.to_process or self.no_check or self.no_checksums)

    def describe(self) -> str:
        parts = [f"{len(v)} {k}" for k, v in (
            ("new on disk", self.unknown), ("unfinished", self.unfinished),
            ("worker died", self.died), ("without data check", self.no_check),
            ("without checksums", self.no_checksums)) if v]
        return ", ".join(parts) or "nothing"


def find_pending(db: RunDB, config: Config, proposal: int,
                 proposal_dir: Path | None) -> PendingWork:
    """Derive pending work (see :class:`PendingWork`) from ``db`` and ``proposal_dir``
    (the runs there: the facility's :meth:`~backend.facilities.Facility.runs_on_disk`)."""
    from backend.facilities import get
    work = PendingWork()
    on_disk = get(config.facility).runs_on_disk(proposal_dir)
    runs = {r["run"]: r for r in db.runs() if r["proposal"] == proposal}
    work.unknown = sorted(on_disk - set(runs))
    died_events: dict[int, int] = {}
    for e in db.events(level="error"):
        if e["source"] == "worker" and e["run"] is not None:
            died_events[e["run"]] = died_events.get(e["run"], 0) + 1
    for run, r in sorted(runs.items()):
        msg = r["status_message"] or ""
        if r["status"] in (RunStatus.PENDING, RunStatus.PROCESSING, RunStatus.WAITING):
            work.unfinished.append(run)     # without data it fails once, with a reason
        elif r["status"] == RunStatus.FAILED and any(m in msg for m in DIED_MARKERS):
            if died_events.get(run, 0) <= MAX_DIED_RETRIES and run in on_disk:
                work.died.append(run)
    trust = TrustStore(db)
    checked = trust.runs_with_cell(proposal, DATA_CHECK)
    summed = (trust.runs_with_checksums(proposal, check_algorithm(config))
              | trust.runs_verified(proposal))
    processed = {run for run, r in runs.items()
                 if r["status"] in (RunStatus.DONE, RunStatus.FAILED)}
    work.no_check = sorted((processed & on_disk) - checked - set(work.to_process))
    if config["check"].get("checksums", True):
        work.no_checksums = sorted((processed & on_disk) - summed - set(work.to_process))
    return work


class CatchUp:
    """Queues what is left to do on the run path ``path`` (:meth:`run`). ``facility``: the
    facility's plug-in (where runs are on disk); ``proposal_dir``: the proposal's data directory
    or None. :attr:`integrity` (the listener's :class:`~backend.service.integrity.IntegrityWorker`,
    once started) gets the runs without data check or checksums."""

    def __init__(self, path: RunPath, config: Config, facility, proposal_dir: Path | None):
        self.path = path
        self.db = path.db
        self.proposal = path.proposal
        self.config = config
        self.facility = facility
        self.proposal_dir = proposal_dir
        self.integrity = None

    def find(self) -> PendingWork | None:
        """The pending work now (:func:`find_pending`), or None if the proposal is closed."""
        if is_closed(self.db):
            return None
        return find_pending(self.db, self.config, self.proposal, self.proposal_dir)

    def run(self, work: PendingWork | None = None):
        """Derive all pending work (:meth:`find`; or take ``work`` found earlier, e.g. before
        the run sources started) and queue it: runs on disk the database does not know, runs
        left pending/processing, runs whose worker died, processed runs without data check or
        checksums. Returns the :class:`PendingWork` (None on a closed proposal) and the
        futures."""
        if is_closed(self.db):
            log.info("The proposal is closed: nothing is processed")
            return None, []
        if work is None:
            work = self.find()
        else:   # found earlier: leave out the runs finished since (a Slurm job's results)
            now = {r["run"]: r["status"] for r in self.db.runs() if r["proposal"] == self.proposal}
            work.unfinished = [r for r in work.unfinished if now.get(r) in (
                RunStatus.PENDING, RunStatus.PROCESSING, RunStatus.WAITING)]
            # and add the runs written while the sources started (a directory watcher only sees
            # what changes after it started): look at the disk again, now that they listen
            on_disk = self.facility.runs_on_disk(self.proposal_dir)
            work.unknown = sorted(set(work.unknown) | (on_disk - set(now)))
        on_slurm = {r for p, r in self._on_slurm() if p == self.proposal}
        if on_slurm:  # their Slurm jobs still run: followed by the Slurm poll, not requeued
            work.unfinished = [r for r in work.unfinished if r not in on_slurm]
        if work:
            log.info("Catching up: %s", work.describe())
        announced = set()
        for run in work.unknown:
            where = self.facility.run_dir(self.proposal_dir, run) if self.proposal_dir else None
            snapshot_event(self.db, RunEvent(self.proposal, run, "raw", source="catch-up",
                                             event="found_on_disk", location=str(where or "")))
            if self.db.ensure_run(self.proposal, run):
                self.path.carry_over(self.proposal, run)
            else:   # a run source announced it meanwhile, and queued it
                announced.add(run)
        # if_stale: a run source may announce one of these runs at the same time (its event
        # after a restart, redelivered); whichever comes second finds it done
        futs = [self.path.submit(self.proposal, run, "all", if_stale=True)
                for run in work.to_process if run not in announced]
        if self.integrity is not None:
            for run in sorted(set(work.no_check) | set(work.no_checksums)):
                self.integrity.submit(self.proposal, run, checks=run in work.no_check,
                                      sums=run in work.no_checksums)
        return work, [f for f in futs if f is not None]

    def _on_slurm(self) -> set:
        slurm = self.path.slurm
        return slurm.active_runs() if slurm is not None else set()

    def requeue_pending(self, only_waiting_for_context: bool = False) -> int:
        """Queue the unfinished runs (``pending``, ``processing``, ``waiting``), or only those
        waiting for a working context file; returns how many. A run that waited for the
        context file is computed as it was asked then (only the variables depending on an
        edited manual value, say: :meth:`~backend.processing.runpath.RunProcessor.take_waiting`),
        a run asked for as a whole (or whose request this backend does not know: it waited
        before a restart) as a whole."""
        if only_waiting_for_context:
            todo = (RunStatus.WAITING,)
        else:
            todo = (RunStatus.PENDING, RunStatus.PROCESSING, RunStatus.WAITING)
        asked = self.path.processor.take_waiting()
        n = 0
        on_slurm = self._on_slurm()
        for r in self.db.runs():
            if r["proposal"] != self.proposal or (r["proposal"], r["run"]) in on_slurm:
                continue
            if r["status"] in todo:
                data, names, only = asked.get((r["proposal"], r["run"]), ("all", None, False))
                if names is None:
                    self.path.submit(r["proposal"], r["run"], "all", if_stale=True)
                else:
                    self.path.submit(r["proposal"], r["run"], data, names=names, only=only)
                n += 1
        return n

    def retry_deferred(self) -> None:
        """Process again the runs whose values could not be stored (disk full...): the
        catch-up once space is back. A run that fails again is deferred again."""
        runs = self.path.processor.take_deferred()
        if runs:
            log.info("Retrying %d run(s) whose values could not be stored: %s", len(runs),
                     ", ".join(str(r) for _, r in runs))
            for proposal, run in runs:
                self.path.submit(proposal, run, "all")
