"""What ``runs.sqlite`` holds, importable without SQLAlchemy: its file name and schema revision,
the run statuses and summary types, and the records passed between processes
(:class:`StoredValue`, :class:`VariableInfo`). The GUI's fast reading path and the context-file
worker use this module; :mod:`backend.storage` does the database work.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

DB_FILE_NAME = "runs.sqlite"
#: Alembic revision this code writes and reads; a database at another revision is migrated
#: when opened with :class:`backend.storage.RunDB`.
SCHEMA_HEAD = "0002"

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
