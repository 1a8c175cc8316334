"""Run events: how AMORE learns that a run's data is ready.

Both event sources (facility Kafka events, :mod:`backend.kafka`; the offline directory watcher,
:mod:`backend.watcher`) produce :class:`RunEvent` records, and the listener handles them through
one code path.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

#: Message format version of AMORE's own update messages.
UPDATE_MESSAGE_VERSION = 1


@dataclass(frozen=True)
class RunEvent:
    """Data of one run became available.

    ``data`` is ``"raw"`` (raw data migrated/written) or ``"proc"`` (corrected data ready).
    ``source`` says where the event came from (``"kafka:<topic>[<partition>]@<offset>"``,
    ``"watcher"``, ``"cli"``...). ``timestamp``: Unix seconds (Kafka record time or now).
    """

    proposal: int
    run: int
    data: str = "raw"
    source: str = ""
    timestamp: float = field(default_factory=time.time)
    event: str = ""


class MalformedEvent(ValueError):
    """A facility message could not be turned into a :class:`RunEvent`; the text says why."""


def _as_int(msg: dict, key: str) -> int:
    if key not in msg:
        raise MalformedEvent(f"missing field {key!r}")
    v = msg[key]
    if isinstance(v, bool):
        raise MalformedEvent(f"field {key!r} is not a number: {v!r}")
    if isinstance(v, int):
        return v
    if isinstance(v, str) and v.strip().isdigit():
        return int(v.strip())
    if isinstance(v, float) and v.is_integer():
        return int(v)
    raise MalformedEvent(f"field {key!r} is not a number: {v!r}")


def parse_facility_message(raw: bytes | str | None, event_kinds: dict[str, str], *,
                           source: str = "", timestamp: float | None = None) -> RunEvent:
    """Turn a facility Kafka message value (JSON, FACILITY.md section 2) into a :class:`RunEvent`.

    ``event_kinds`` maps event names to ``"raw"``/``"proc"`` (configuration
    ``kafka.events``). Unknown events count as malformed for AMORE, so they are logged once.

    Raises :class:`MalformedEvent` if the value is not a JSON object, lacks ``event``,
    ``proposal`` or ``run``, has non-numeric ``proposal``/``run``, or names an unknown event.
    """
    if raw is None:
        raise MalformedEvent("empty message")
    try:
        msg = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MalformedEvent(f"not JSON: {e}") from None
    if not isinstance(msg, dict):
        raise MalformedEvent(f"not a JSON object: {type(msg).__name__}")
    ev = msg.get("event")
    if not isinstance(ev, str):
        raise MalformedEvent("missing field 'event'")
    if ev not in event_kinds:
        raise MalformedEvent(f"unknown event {ev!r}")
    proposal = _as_int(msg, "proposal")
    run = _as_int(msg, "run")
    if proposal <= 0 or run <= 0:
        raise MalformedEvent(f"proposal and run must be positive, got {proposal}, {run}")
    return RunEvent(proposal=proposal, run=run, data=event_kinds[ev], source=source,
                    timestamp=time.time() if timestamp is None else timestamp, event=ev)


def make_update_message(kind: str, data: dict[str, Any]) -> bytes:
    """AMORE's update message: ``{"version": 1, "kind": kind, "data": data}`` as UTF-8 JSON.

    Kinds: ``run_values_updated`` (data: proposal, run, names), ``run_status_changed``
    (proposal, run, status), ``variables_changed`` (names), ``comment_changed``
    (proposal, run or id).
    """
    return json.dumps({"version": UPDATE_MESSAGE_VERSION, "kind": kind, "data": data}).encode()


def parse_update_message(raw: bytes | str) -> tuple[str, dict]:
    """Inverse of :func:`make_update_message`: returns ``(kind, data)``.

    Raises :class:`MalformedEvent` for non-JSON values, other versions or missing fields.
    """
    try:
        msg = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, TypeError) as e:
        raise MalformedEvent(f"not JSON: {e}") from None
    if not isinstance(msg, dict) or msg.get("version") != UPDATE_MESSAGE_VERSION:
        raise MalformedEvent(f"unsupported update message version: {msg!r:.100}")
    kind, data = msg.get("kind"), msg.get("data")
    if not isinstance(kind, str) or not isinstance(data, dict):
        raise MalformedEvent("update message lacks 'kind' or 'data'")
    return kind, data
