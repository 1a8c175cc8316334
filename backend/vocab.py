"""AMORE's vocabulary, defined once and importable without SQLAlchemy, Kafka or Qt: run statuses,
summary types, backend states, and the records passed between processes (:class:`StoredValue`,
:class:`VariableInfo`). The context-file worker, the store, the GUI and the command line all use it.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

try:
    from enum import StrEnum
except ImportError:     # Python 3.10
    class StrEnum(str, Enum):
        """A string enum whose members print and format as their value (``enum.StrEnum``)."""

        def __str__(self) -> str:
            return self.value

        def __format__(self, spec: str) -> str:
            return format(self.value, spec)


class EventLevel(StrEnum):
    """Level of an entry in the event log (``events`` table), as in :mod:`logging`."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class RunStatus(StrEnum):
    """Processing status of a run (``runs.status``). Compare with strings freely
    (``RunStatus.DONE == "done"``); use ``.value`` when formatting."""

    PENDING = "pending"        #: known, not processed yet
    PROCESSING = "processing"  #: a worker is evaluating the context file on it
    DONE = "done"              #: every variable evaluated (some may hold error cells)
    FAILED = "failed"          #: the run could not be processed (message in ``status_message``)
    WAITING = "waiting"        #: recorded, waiting for a working context file (error in the message)
    #: the facility says the run is still being taken (ESS between ``pl72`` and ``wrdn``);
    #: it is computed once its data is complete
    RUNNING = "running"


class SummaryType(StrEnum):
    """How ``run_values.value`` is to be read (``run_values.summary_type``)."""

    NUMBER = "number"          #: int or float (NULL for NaN)
    BOOL = "bool"              #: 0/1
    COMPLEX = "complex"        #: text such as ``"(1+2j)"``
    STRING = "string"          #: text
    THUMBNAIL = "thumbnail"    #: PNG bytes
    SPARKLINE = "sparkline"    #: float32 little-endian bytes
    ARRAY = "array"            #: text description (``"float64 (4, 5, 6)"``), no summary possible
    ERROR = "error"            #: NULL; message in attributes (``error``, ``error_type``)
    SKIPPED = "skipped"        #: NULL; reason in attributes (``reason``)
    NONE = "none"              #: the variable returned None


class BackendState(StrEnum):
    """State of a context directory's backend, as classified by
    :func:`backend.service.manager.backend_state` (its ``state`` field holds the ``.value``)."""

    RUNNING_HERE = "running_here"            #: alive on this machine
    RUNNING_ELSEWHERE = "running_elsewhere"  #: alive on another host (seen through its heartbeat)
    STOPPED = "stopped"                      #: not running, nothing left behind
    STALE = "stale"                          #: not running, left-overs (socket, record) to heal
    UNKNOWN = "unknown"                      #: cannot be told (the reason is given with it)


class Outcome(StrEnum):
    """What became of one request to process a run (``RunOutcome.status``, what ``reprocess``
    reports per run). The first four are the :class:`RunStatus` the run is then stored with; the
    others say why the run was not computed here and now. Compares equal to the plain string."""

    DONE = "done"              #: computed and stored (some variables may hold error cells)
    FAILED = "failed"          #: could not be processed (the message says why)
    WAITING = "waiting"        #: the context file is broken: computed once it is fixed
    PENDING = "pending"        #: the backend stopped first: computed at its next start
    SUBMITTED = "submitted"    #: every variable went to a Slurm job, which stores them
    CLOSED = "closed"          #: the proposal is closed: nothing is computed
    CANCELLED = "cancelled"    #: cancelled by the user; the run keeps its previous values


class SourceRunState(StrEnum):
    """State of a run as a facility's run source reports it (``RunEvent.state``,
    ``source_runs.state``)."""

    READY = "ready"            #: its data is complete: compute it
    RUNNING = "running"        #: still being taken (ESS between ``pl72`` and ``wrdn``): show it
    FAILED = "failed"          #: the facility says it failed (the file writer's message)


class UpdateKind(StrEnum):
    """Kinds of AMORE's update messages (``kind`` in
    :func:`backend.notify.kafka.make_update_message`); each names what changed, never values."""

    #: values of a run were written (data: ``proposal``, ``run``, ``names``; ``status``;
    #: ``manual: true`` for an edit of a manual column)
    RUN_VALUES_UPDATED = "run_values_updated"
    RUN_STATUS_CHANGED = "run_status_changed"   #: data: ``proposal``, ``run``, ``status``
    #: the set of variables or manual columns changed (data: ``names``)
    VARIABLES_CHANGED = "variables_changed"
    #: a run comment (``proposal``, ``run``) or a time comment (``id``) was written
    COMMENT_CHANGED = "comment_changed"
    #: a Slurm job ended (``job``, ``proposal``); the backend then collects its results
    SLURM_JOB_FINISHED = "slurm_job_finished"


#: Every run status value, in display order.
RUN_STATUSES = tuple(s.value for s in RunStatus)
#: Every summary type value.
SUMMARY_TYPES = tuple(s.value for s in SummaryType)


#: Types of manual columns (``manual_columns.type``), the values typed by hand into the table.
MANUAL_COLUMN_TYPES = ("boolean", "integer", "number", "string", "choice")


def normalize_proposal(proposal: "int | str") -> "int | str":
    """A proposal identifier in the one form AMORE stores and compares.

    European XFEL and ESS proposals are numbers (``2832``; ``"2832"`` and ``" 002832 "`` give the
    int ``2832``); ESRF (``"mx2532"``) and SwissFEL (``"p18493"``) proposals are identifiers and
    stay ``str`` (stripped). SQLite's INTEGER affinity stores the former as integers and the
    latter as text in the same column. Raises ``ValueError`` for ``bool``, empty strings,
    negative numbers and other types.
    """
    if isinstance(proposal, bool):
        raise ValueError(f"not a proposal: {proposal!r}")
    if isinstance(proposal, int):
        if proposal < 0:
            raise ValueError(f"not a proposal: {proposal!r}")
        return proposal
    if isinstance(proposal, str):
        s = proposal.strip()
        if s.isdigit() and s.isascii():
            return int(s)
        if not s or any(c.isspace() for c in s):
            raise ValueError(f"not a proposal: {proposal!r}")
        return s
    raise ValueError(f"not a proposal: {proposal!r}")


@dataclass
class StoredValue:
    """One table cell as stored in ``run_values``.

    ``value``: int, float, str, bytes or None, interpreted according to ``summary_type``.
    ``attributes``: JSON-serialisable dict (``units``, ``error``, ``error_type``, ``shape``,
    ``dtype``, ``bold``, ``background``, ``reason``...).
    """

    value: Any
    summary_type: str
    attributes: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        """JSON-safe form (bytes base64) for passing between processes."""
        v = self.value
        if isinstance(v, (bytes, bytearray, memoryview)):
            v = {"b64": base64.b64encode(bytes(v)).decode("ascii")}
        return {"value": v, "summary_type": self.summary_type, "attributes": self.attributes}

    @classmethod
    def from_json(cls, d: dict) -> "StoredValue":
        """Inverse of :meth:`to_json`. Raises ``ValueError`` for an unknown summary type."""
        v = d.get("value")
        if isinstance(v, dict) and "b64" in v:
            v = base64.b64decode(v["b64"])
        st = d.get("summary_type")
        if st not in SUMMARY_TYPES:
            raise ValueError(f"unknown summary type {st!r}")
        return cls(v, st, dict(d.get("attributes") or {}))


@dataclass
class VariableInfo:
    """A variable as defined in the context file (``variables`` table)."""

    name: str
    title: str | None = None
    description: str | None = None
    units: str | None = None
    tags: list[str] = field(default_factory=list)
    data: str = "raw"
    summary: str | None = None

    def row(self) -> dict:
        return {"name": self.name, "title": self.title, "description": self.description,
                "units": self.units, "tags": json.dumps(list(self.tags)), "data": self.data,
                "summary": self.summary}


class MalformedEvent(ValueError):
    """A message (a facility's run announcement, or one of AMORE's update messages) could not be
    understood; the text says why. Raised by the parsers in :mod:`backend.sources` and
    :mod:`backend.notify.kafka`.

    ``kind`` names the class of problem (``"not JSON"``, ``"missing field"``, ``"wrong type"``,
    ``"out of range"``, ``"unknown event"``, ``"too large"``...), so that logs and the event log
    can report each kind once instead of every message."""

    def __init__(self, message: str, kind: str = "malformed"):
        super().__init__(message)
        self.kind = kind


def decode_json_message(raw: bytes | str | None, max_bytes: int):
    """The JSON value of a message (a facility's run announcement, one of AMORE's update
    messages), decoded without evaluating or unpickling anything. Raises :class:`MalformedEvent`
    (kinds ``"empty"``, ``"too large"`` above ``max_bytes``, ``"not JSON"``: not JSON, binary,
    or JSON Python cannot hold such as huge integers and deep nesting)."""
    if raw is None:
        raise MalformedEvent("empty message", "empty")
    if len(raw) > max_bytes:
        raise MalformedEvent(f"message of {len(raw)} bytes (at most {max_bytes})", "too large")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, TypeError) as e:
        raise MalformedEvent(f"not JSON: {e}", "not JSON") from None
    except (ValueError, RecursionError) as e:   # huge integers, deep nesting
        raise MalformedEvent(f"not JSON AMORE can read: {type(e).__name__}: {e!s:.100}",
                             "not JSON") from None
