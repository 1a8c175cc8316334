"""AMORE's own update messages (versioned JSON): what the backend tells GUIs after it stored values."""
from __future__ import annotations

import json
from typing import Any

from backend.vocab import MalformedEvent, normalize_proposal, UpdateKind

#: Message format version of AMORE's own update messages.
UPDATE_MESSAGE_VERSION = 1


def make_update_message(kind: UpdateKind | str, data: dict[str, Any]) -> bytes:
    """AMORE's update message: ``{"version": 1, "kind": kind, "data": data}`` as UTF-8 JSON.

    ``kind`` is an :class:`~backend.vocab.UpdateKind` (its docstring lists each kind's data);
    any other kind raises ``ValueError``.
    """
    return json.dumps({"version": UPDATE_MESSAGE_VERSION, "kind": UpdateKind(kind).value,
                       "data": data}).encode()


#: Largest update message looked at, bytes (real ones are well below: names, not values).
MAX_UPDATE_BYTES = 4 << 20
#: Largest proposal/run number accepted in an update message (64-bit readers everywhere).
MAX_NUMBER = 2**31 - 1

_RUN_KINDS = (UpdateKind.RUN_VALUES_UPDATED, UpdateKind.RUN_STATUS_CHANGED)
#: Kinds whose data is checked: every :class:`~backend.vocab.UpdateKind` (``slurm_job_finished``
#: comes from a Slurm job, see :mod:`backend.notify.jobdone`).
KNOWN_KINDS = tuple(UpdateKind)


def _proposal(data: dict) -> None:
    """A proposal: a number (European XFEL, ESS) or an identifier (ESRF, SwissFEL), see
    :func:`backend.vocab.normalize_proposal`."""
    if "proposal" not in data:
        raise MalformedEvent("update message lacks 'proposal'", "missing field")
    v = data["proposal"]
    if isinstance(v, int) and not isinstance(v, bool):
        _number(data, "proposal")
        return
    if not isinstance(v, str) or len(v) > 100:
        raise MalformedEvent(f"'proposal' is not a proposal: {v!r:.80}", "wrong type")
    try:
        normalize_proposal(v)
    except ValueError:
        raise MalformedEvent(f"'proposal' is not a proposal: {v!r:.80}", "wrong type") from None


def _number(data: dict, key: str, required: bool = True) -> int | None:
    v = data.get(key)
    if v is None and not required:
        return None
    if key not in data:
        raise MalformedEvent(f"update message lacks {key!r}", "missing field")
    if isinstance(v, bool) or not isinstance(v, int):
        raise MalformedEvent(f"{key!r} is not an integer: {v!r:.80}", "wrong type")
    if not 0 <= v <= MAX_NUMBER:
        raise MalformedEvent(f"{key!r} out of range: {v!r:.40}", "out of range")
    return v


def _names(data: dict, required: bool) -> None:
    names = data.get("names")
    if names is None and not required:
        return
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise MalformedEvent(f"'names' is not a list of strings: {names!r:.80}", "wrong type")


def parse_update_message(raw: bytes | str) -> tuple[UpdateKind | str, dict]:
    """Inverse of :func:`make_update_message`: returns ``(kind, data)``, checked.

    The data of the kinds AMORE sends is validated (``proposal``/``run`` integers in
    ``1..MAX_NUMBER``, ``names`` a list of str, ``status`` a str), so readers may use it
    as it is. Raises :class:`MalformedEvent` (with its ``kind``) for anything else: non-JSON
    or binary values, values over :data:`MAX_UPDATE_BYTES`, other versions, missing or
    mistyped fields - whatever the exception decoding raises. Kinds not in
    :data:`KNOWN_KINDS` are returned unchecked (a newer backend may send kinds an older reader
    does not know; readers ignore them). Nothing is evaluated or unpickled.
    """
    if raw is None:
        raise MalformedEvent("empty message", "empty")
    if len(raw) > MAX_UPDATE_BYTES:
        raise MalformedEvent(f"message of {len(raw)} bytes (at most {MAX_UPDATE_BYTES})",
                             "too large")
    try:
        msg = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, TypeError) as e:
        raise MalformedEvent(f"not JSON: {e}", "not JSON") from None
    except (ValueError, RecursionError) as e:   # huge integers, deep nesting
        raise MalformedEvent(f"not JSON AMORE can read: {type(e).__name__}", "not JSON") from None
    if not isinstance(msg, dict) or msg.get("version") != UPDATE_MESSAGE_VERSION:
        raise MalformedEvent(f"unsupported update message version: {msg!r:.100}", "version")
    kind, data = msg.get("kind"), msg.get("data")
    if not isinstance(kind, str) or not isinstance(data, dict):
        raise MalformedEvent("update message lacks 'kind' or 'data'", "missing field")
    if kind in KNOWN_KINDS:
        kind = UpdateKind(kind)
    if kind in _RUN_KINDS:
        _proposal(data)
        _number(data, "run")
        _names(data, required=kind == UpdateKind.RUN_VALUES_UPDATED)
        if "status" in data and not isinstance(data["status"], str):
            raise MalformedEvent(f"'status' is not a string: {data['status']!r:.80}", "wrong type")
        if "manual" in data and not isinstance(data["manual"], bool):  # a manual column's edit
            raise MalformedEvent(f"'manual' is not true/false: {data['manual']!r:.80}", "wrong type")
    elif kind == UpdateKind.VARIABLES_CHANGED:
        _names(data, required=False)
    elif kind == UpdateKind.COMMENT_CHANGED:
        if data.get("run") is not None:
            _proposal(data)
            _number(data, "run")
        elif data.get("id") is not None:
            _number(data, "id")
    elif kind == UpdateKind.SLURM_JOB_FINISHED:
        if not isinstance(data.get("job"), str) or not data["job"] or len(data["job"]) > 100:
            raise MalformedEvent(f"'job' is not a Slurm job id: {data.get('job')!r:.80}",
                                 "wrong type")
        if data.get("proposal") not in (None, 0):
            _proposal(data)
    return kind, data
