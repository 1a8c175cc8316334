"""Run events and the one interface every run source implements.

A run source (European XFEL's Kafka events, :mod:`backend.facilities.euxfel.source`; a watched
raw/ tree, :mod:`backend.facilities.euxfel.directory`; other facilities' sources, each in its
facility's folder of :mod:`backend.facilities`) turns whatever its facility says into
:class:`RunEvent` records and hands them to the listener through :class:`RunSource`. Everything
after that (recording the run, computing its variables, storing, announcing) is one code path,
:mod:`backend.processing.runpath`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, runtime_checkable

from backend.vocab import MalformedEvent, SourceRunState  # noqa: F401  (sources raise it)

#: ``on_problem(level, message, details)``: how a source tells people what they should see in
#: the event log (``RunDB.add_event``): input it skipped (a malformed message or file), a lost
#: connection and when it came back. A source takes it as its ``on_problem`` attribute (the
#: listener sets it when the source has none); ``level`` is ``"info"``, ``"warning"`` or
#: ``"error"``, ``details`` a JSON-serialisable dict (topic, offset, path, reason...).
ProblemCallback = Callable[[str, str, dict], None]


@dataclass(frozen=True)
class RunEvent:
    """Data of one run became available.

    ``data`` is ``"raw"`` (raw data migrated/written) or ``"proc"`` (corrected data ready).
    ``source`` says where the event came from (``"kafka:<topic>[<partition>]@<offset>"``,
    ``"watcher"``, ``"cli"``...). ``timestamp``: Unix seconds (Kafka record time or now).
    ``location``: where the announcement is, for people and the run's snapshot
    (``"<topic>[<partition>]@<offset>"``, a file or directory path...). ``message``: the
    announcement itself as the facility sent it (JSON text, unknown fields included), or None
    when the source has no message (a watched directory). Both are stored append-only as the
    run's snapshot (``amore-proto run-info``). ``metadata``: the run's metadata when the source
    has it (e.g. a SwissFEL acquisition request, an ESS file's ``/entry`` fields; JSON-
    serialisable), stored as the run's metadata snapshot; None at European XFEL, where it is read
    from the run's files.

    Other facilities' runs (ESS, ESRF, SwissFEL) also carry ``key``, the facility's identity of
    the run (ESS job id, path of a metadata.json or request JSON), and ``info``, what the source
    knows of it (JSON-serialisable: files, the facility's metadata, times as Unix seconds),
    recorded in the database's ``source_runs``; ``run`` may then be None (ESRF: a number is
    synthesised when the run is first recorded). ``state``: ``"ready"`` (compute it),
    ``"running"`` (record it, compute later: ESS ``pl72``) or ``"failed"`` (``error`` says why:
    ESS ``wrdn`` with ``error_encountered``). ``proposal``: int (European XFEL, ESS) or str
    (ESRF ``mx2532``, SwissFEL ``p18493``).
    """

    proposal: int | str
    run: int | None
    data: str = "raw"
    source: str = ""
    timestamp: float = field(default_factory=time.time)
    event: str = ""
    location: str = ""
    message: str | None = None
    metadata: dict | None = field(default=None, compare=False, hash=False)
    key: str | None = None
    info: dict = field(default_factory=dict, compare=False, hash=False)
    state: SourceRunState = SourceRunState.READY
    error: str | None = None


#: ``on_event(event, token)``: called by a source, from its own thread, for every run event.
#: ``token`` is opaque; the listener passes it to :meth:`RunSource.ack` once the run is recorded.
EventCallback = Callable[[RunEvent, Any], None]


@runtime_checkable
class RunSource(Protocol):
    """Where runs come from. The listener drives every source the same way:

    1. :meth:`start` with a callback; the source calls ``on_event(event, token)`` from its own
       thread for each run it learns of (it must not raise out of its thread when the callback
       raises: log it and go on);
    2. :meth:`ack` with the token once the run is recorded in the database. A source that can
       deliver again (Kafka) keeps an unacknowledged event for a later delivery; others ignore it;
    3. :meth:`stop` on shutdown (idempotent): no callbacks after it returns.

    ``name`` says where runs come from, for logs and the GUI ("kafka localhost:9092", "watcher").
    """

    name: str

    def start(self, on_event: EventCallback) -> None: ...

    def ack(self, token: Any) -> None: ...

    def stop(self) -> None: ...
