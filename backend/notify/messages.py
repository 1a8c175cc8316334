"""AMORE's own update messages (versioned JSON): what the backend tells GUIs after it stored values."""
from __future__ import annotations

import json
from typing import Any

from backend.vocab import MalformedEvent

#: Message format version of AMORE's own update messages.
UPDATE_MESSAGE_VERSION = 1


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
