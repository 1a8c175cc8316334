"""The backend's trust work for one run, after its variables are stored: the run's metadata
snapshot, the data consistency check ("Data check" cell) and file checksums ("Files" cell), plus
the catch-up that derives all pending work from the database and the file system.

:class:`IntegrityWorker` does the per-run work in one background thread at low priority (nice
19, idle I/O) and pauses between blocks while runs are being processed, so it never delays
variables. ``amore-proto check`` / ``verify`` / ``listen --once`` call the same functions.
"""
from __future__ import annotations

import json
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from backend.config import Config
from backend.integrity import checksums as cks
from backend.integrity.datacheck import CheckRules, check_euxfel_run, describe
from backend.store.trust import (DATA_CHECK, FILES_CHECK, ProposalClosed, TrustStore,
                                 is_closed)
from backend.store.writer import RunDB
from backend.vocab import RunStatus

log = logging.getLogger(__name__)

#: Status messages of runs whose worker died (see backend.processing.local.WorkerProcess).
DIED_MARKERS = ("context worker process was killed", "context worker process exited",
                "timed out: no result within", "the worker's reply could not be read",
                "no answer within")   # (the last: the timeout's words before 2026-11-27)
#: How often catch-up retries a run whose worker died (counted in the event log).
MAX_DIED_RETRIES = 2


def check_algorithm(config: Config) -> str:
    return str(config["check"].get("checksum_algorithm", "blake2b"))


def exclude_patterns(config: Config) -> list[str]:
    return list(config["check"].get("checksum_exclude", cks.DEFAULT_EXCLUDE))


def record_metadata(trust: TrustStore, proposal: int, run: int, raw_dir: Path) -> dict | None:
    """Append the run's metadata as read from its data (European XFEL: extra-data's
    ``run_metadata()``; falls back to the ``METADATA`` group of the first readable file).
    Returns it, or None when nothing could be read."""
    meta, how = None, "extra_data.run_metadata"
    try:
        from extra_data import RunDirectory
        meta = RunDirectory(str(raw_dir)).run_metadata()
    except Exception as e:
        log.debug("run_metadata() of %s failed (%s); reading METADATA", raw_dir, e)
        meta, how = _h5_metadata(raw_dir), "METADATA"
    if not meta:
        return None
    trust.add_snapshot(proposal, run, "metadata", how, _jsonable(meta), location=str(raw_dir))
    return meta


def _h5_metadata(raw_dir: Path) -> dict | None:
    import h5py
    from backend.integrity.datacheck import run_files
    for p in run_files(raw_dir):
        try:
            with h5py.File(p, "r") as f:
                out = {}
                for k, ds in f["METADATA"].items():
                    if hasattr(ds, "shape") and ds.shape in ((1,), ()):
                        out[k] = ds[()] if ds.shape == () else ds[0]
                return out
        except Exception:
            continue
    return None


def _jsonable(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        elif hasattr(v, "item"):
            v = v.item()
            if isinstance(v, bytes):
                v = v.decode("utf-8", "replace")
        out[k] = v if isinstance(v, (str, int, float, bool, type(None), list, dict)) else str(v)
    return out


def data_check(db: RunDB, config: Config, proposal: int, run: int, proposal_dir: Path,
               store: bool = True) -> dict:
    """Check one run's raw data (see :mod:`backend.integrity.datacheck`); with ``store``, write
    the "Data check" cell and log an incomplete run in the event log. Returns the report.
    Raises FileNotFoundError when the run has no raw directory, ValueError for a bad ``[check]``
    configuration."""
    rules = CheckRules.from_config(config["check"])
    raw = Path(proposal_dir) / "raw" / f"r{run:04d}"
    rep = check_euxfel_run(raw, rules, int(config["check"].get("max_gaps", 5)))
    if store and not is_closed(db):
        text = describe(rep)
        # the full report only for runs with a problem: the GUI loads every cell's attributes
        TrustStore(db).set_cell(proposal, run, DATA_CHECK, rep["summary"], rep["ok"], text,
                                None if rep["ok"] else rep)
        if not rep["ok"]:
            db.add_event("warning", "check", f"Run {run}: {rep['summary']}", run=run,
                         proposal=proposal, details={"report": text})
    return rep


def checksum_run(db: RunDB, config: Config, proposal: int, run: int, proposal_dir: Path,
                 algorithm: str | None = None, pause=None, store: bool = True,
                 source: str = "backend") -> cks.Comparison:
    """Checksum every file of a run (raw and proc) and compare with the stored checksums.

    Files never checksummed are stored (the first pass takes the reference); changed and
    missing files are reported, recorded as the run's last verification, written to the
    "Files" cell and logged as errors. With ``store=False`` nothing is written. ``pause`` is
    called between blocks. Returns the :class:`~backend.integrity.checksums.Comparison` whose
    ``new`` lists files added since a reference existed."""
    algorithm = algorithm or check_algorithm(config)
    trust = TrustStore(db)
    stored = trust.checksums(proposal, run, algorithm)
    files = cks.run_data_files(proposal_dir, run, exclude_patterns(config))
    comp, fresh = cks.compare(stored, files, algorithm, pause)
    if not stored:          # first pass: the reference, nothing is "new"
        comp.new = []
    if not store:
        return comp
    closed = is_closed(db)
    trust.add_checksums(proposal, run, fresh)
    trust.record_verification(proposal, run, algorithm, comp)
    bad = bool(comp.changed or comp.missing)
    if bad:
        lines = [f"changed: {Path(c['path']).name}" for c in comp.changed] + \
                [f"missing: {Path(p).name}" for p in comp.missing]
        db.add_event("error", "checksum", f"Run {run}: files changed after their checksum was "
                     f"taken ({comp.summary()})", run=run, proposal=proposal,
                     details={"changed": comp.changed, "missing": comp.missing,
                              "algorithm": algorithm, "by": source})
        tooltip = "\n".join(lines)
    else:
        n = comp.unchanged + len(fresh)
        tooltip = f"{n} files, {algorithm} checksums match"
    if algorithm == check_algorithm(config) and not closed:
        n_ok = comp.unchanged + len(fresh)
        summary = comp.summary() if bad else f"OK ({n_ok} files)"
        trust.set_cell(proposal, run, FILES_CHECK, summary, not bad, tooltip)
    return comp


# ---------------------------------------------------------------------------------------------
# Catch-up

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


def runs_on_disk(proposal_dir: Path | None) -> set[int]:
    """Run numbers with a ``raw/r<NNNN>`` directory."""
    if proposal_dir is None:
        return set()
    out = set()
    for p in (Path(proposal_dir) / "raw").glob("r[0-9][0-9][0-9][0-9]*"):
        if p.name[1:].isdigit() and p.is_dir():
            out.add(int(p.name[1:]))
    return out


def find_pending(db: RunDB, config: Config, proposal: int,
                 proposal_dir: Path | None) -> PendingWork:
    """Derive pending work (see :class:`PendingWork`) from ``db`` and ``proposal_dir``."""
    work = PendingWork()
    on_disk = runs_on_disk(proposal_dir)
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


class IntegrityWorker:
    """One background thread doing the trust work of processed runs, oldest request first.

    ``submit(proposal, run)`` queues the metadata snapshot (once per run), the data check and
    the checksums. The thread runs at nice 19 / idle I/O and, between file blocks, waits while
    ``busy()`` is true (runs being processed) for at most ``max_defer`` seconds per block.
    """

    def __init__(self, db: RunDB, config: Config, proposal_dir: Path | None,
                 busy: Callable[[], bool] = lambda: False, max_defer: float = 30.0):
        self.db = db
        self.config = config
        self.proposal_dir = proposal_dir
        self.busy = busy
        self.max_defer = max_defer
        self._q: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._queued: set = set()
        self._lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()
        self._defer_deadline = 0.0
        self._thread = threading.Thread(target=self._loop, name="integrity", daemon=True)
        self._thread.start()

    def submit(self, proposal: int, run: int, checks: bool = True, sums: bool = True) -> None:
        key = (proposal, run, checks, sums)
        with self._lock:
            if key in self._queued:
                return
            self._queued.add(key)
            self._idle.clear()
        self._q.put(key)

    def _pause(self) -> None:
        # wait while runs are processed, for at most max_defer seconds per run's work in all
        while (self.busy() and not self._stop.is_set()
               and time.monotonic() < self._defer_deadline):
            time.sleep(0.05)

    def _loop(self) -> None:
        cks.lower_priority()
        while not self._stop.is_set():
            try:
                key = self._q.get(timeout=0.2)
            except queue.Empty:
                with self._lock:
                    if not self._queued:
                        self._idle.set()
                continue
            with self._lock:
                self._queued.discard(key)
            self._defer_deadline = time.monotonic() + self.max_defer
            try:
                do_run_work(self.db, self.config, self.proposal_dir, *key, pause=self._pause)
            except ProposalClosed:
                pass
            except Exception:
                log.exception("Checks of run %d failed", key[1])

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until the queue is empty and nothing is being done."""
        return self._idle.wait(timeout)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def do_run_work(db: RunDB, config: Config, proposal_dir: Path | None, proposal: int, run: int,
                checks: bool = True, sums: bool = True, pause=None) -> None:
    """Metadata snapshot (once), data check and checksums of one run; nothing for a run without
    a raw directory or for a closed proposal."""
    if proposal_dir is None or is_closed(db):
        return
    raw = Path(proposal_dir) / "raw" / f"r{run:04d}"
    if not raw.is_dir():
        return
    t0 = time.perf_counter()
    if checks:
        trust = TrustStore(db)
        if run not in trust.runs_with_metadata(proposal):
            record_metadata(trust, proposal, run, raw)
        rep = data_check(db, config, proposal, run, proposal_dir)
        log.info("Run %d: data check %s (%.3f s)", run, rep["summary"], time.perf_counter() - t0)
    if sums and config["check"].get("checksums", True):
        t1 = time.perf_counter()
        comp = checksum_run(db, config, proposal, run, proposal_dir, pause=pause)
        log.info("Run %d: checksums %s (%.2f s)", run, comp.summary(), time.perf_counter() - t1)


def snapshot_event(db: RunDB, ev) -> None:
    """Append the announcement ``ev`` (a :class:`~backend.sources.base.RunEvent`) to the run's
    snapshots: the message verbatim when the source has one, else the event's fields."""
    msg = ev.message
    if msg is None:
        msg = json.dumps({"event": ev.event, "proposal": ev.proposal, "run": ev.run,
                          "data": ev.data, "path": ev.location or None})
    trust = TrustStore(db)
    trust.add_snapshot(ev.proposal, ev.run, "event", ev.source or "unknown", msg,
                       location=ev.location or ev.source, received_at=time.time())
    if getattr(ev, "metadata", None):
        trust.add_snapshot(ev.proposal, ev.run, "metadata", ev.source or "unknown", ev.metadata,
                           location=ev.location or ev.source)
