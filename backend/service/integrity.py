"""The backend's trust work for one run, after its variables are stored: the run's metadata
snapshot, the data consistency check ("Data check" cell) and file checksums ("Files" cell).

Where a run's files are, how its metadata is read and how its data is checked are the facility's
(:class:`backend.facilities.Facility`: ``run_dir``, ``run_metadata``, ``check_run``);
facilities without a run directory get none of this. :class:`IntegrityWorker` does the per-run
work in one background thread at low priority (nice 19, idle I/O) and pauses between blocks
while runs are being processed, so it never delays variables. ``amore-proto check`` /
``verify`` / ``listen --once`` call the same functions. What is still to do is found by the
catch-up (:mod:`backend.service.catchup`).
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import Callable

from backend.config import Config
from backend.integrity import checksums as cks
from backend.facilities import get as get_facility
from backend.integrity.datacheck import CheckRules, describe
from backend.store.trust import (DATA_CHECK, FILES_CHECK, ProposalClosed, TrustStore,
                                 is_closed)
from backend.store.writer import RunDB

log = logging.getLogger(__name__)

def check_algorithm(config: Config) -> str:
    return str(config["check"].get("checksum_algorithm", "blake2b"))


def exclude_patterns(config: Config) -> list[str]:
    return list(config["check"].get("checksum_exclude", cks.DEFAULT_EXCLUDE))


def record_metadata(trust: TrustStore, config: Config, proposal: int, run: int,
                    raw_dir: Path) -> dict | None:
    """Append the run's metadata as read from its data (the facility's
    :meth:`~backend.facilities.Facility.run_metadata`; European XFEL: extra-data's
    ``run_metadata()``, else the ``METADATA`` group of the first readable file). Returns it, or
    None when nothing could be read."""
    found = get_facility(config.facility).run_metadata(raw_dir)
    if not found:
        return None
    meta, how = found
    trust.add_snapshot(proposal, run, "metadata", how, _jsonable(meta), location=str(raw_dir))
    return meta


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
    """Check one run's raw data (the facility's
    :meth:`~backend.facilities.Facility.check_run`, see
    :mod:`backend.integrity.datacheck`); with ``store``, write the "Data check" cell and log an
    incomplete run in the event log. Returns the report. Raises FileNotFoundError when the run
    has no raw directory (or the facility none, or no check), ValueError for a bad ``[check]``
    configuration."""
    rules = CheckRules.from_config(config["check"])
    facility = get_facility(config.facility)
    raw = facility.run_dir(Path(proposal_dir), run)
    rep = facility.check_run(raw, rules, int(config["check"].get("max_gaps", 5))) \
        if raw is not None else None
    if rep is None:
        raise FileNotFoundError(f"no data check of run {run} at facility {facility.name}")
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
    raw = get_facility(config.facility).run_dir(Path(proposal_dir), run)
    if raw is None or not raw.is_dir():
        return
    t0 = time.perf_counter()
    if checks:
        trust = TrustStore(db)
        if run not in trust.runs_with_metadata(proposal):
            record_metadata(trust, config, proposal, run, raw)
        rep = data_check(db, config, proposal, run, proposal_dir)
        log.info("Run %d: data check %s (%.3f s)", run, rep["summary"], time.perf_counter() - t0)
    if sums and config["check"].get("checksums", True):
        t1 = time.perf_counter()
        comp = checksum_run(db, config, proposal, run, proposal_dir, pause=pause)
        log.info("Run %d: checksums %s (%.2f s)", run, comp.summary(), time.perf_counter() - t1)
