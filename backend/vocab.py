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



class EventLevel(str, Enum):
    """Level of an entry in the event log (``events`` table), as in :mod:`logging`."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


RUN_STATUSES = ("pending", "processing", "done", "failed")
#: How ``run_values.value`` is to be read:
#: number (int/float), bool (0/1), complex (text "a+bj"), string (text),
#: thumbnail (PNG bytes), sparkline (float32 little-endian bytes), array (text description,
#: no summary possible), error (NULL; message in attributes), skipped (NULL; reason in attributes).
SUMMARY_TYPES = ("number", "bool", "complex", "string", "thumbnail", "sparkline", "array",
                 "error", "skipped", "none")


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
    :mod:`backend.notify.messages`.

    ``kind`` names the class of problem (``"not JSON"``, ``"missing field"``, ``"wrong type"``,
    ``"out of range"``, ``"unknown event"``, ``"too large"``...), so that logs and the event log
    can report each kind once instead of every message."""

    def __init__(self, message: str, kind: str = "malformed"):
        super().__init__(message)
        self.kind = kind
