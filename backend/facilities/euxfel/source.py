"""European XFEL's run announcements: the facility's Kafka events (docs/facility.md, section 2).

:func:`parse_facility_message` turns one message value into a :class:`~backend.sources.base.RunEvent`;
:class:`FacilityEventSource` reads the configured topics through the generic Kafka consumer
(:class:`backend.sources.kafka.KafkaRunSource`); :func:`event_topics` says which topics those are.
Without a broker, runs are seen in the proposal's directories (:mod:`.directory`).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from backend.config import Config
from backend.sources.base import MalformedEvent, RunEvent
from backend.sources.kafka import KafkaRunSource
from backend.vocab import decode_json_message

log = logging.getLogger(__name__)

#: Largest proposal and run number accepted from a message (SQLite and every reader store them
#: as 64-bit integers; real ones have at most 6 and 4 digits).
MAX_NUMBER = 2**31 - 1
#: Longest message value looked at, bytes. Facility events are a few hundred bytes.
MAX_MESSAGE_BYTES = 1 << 20


def _as_int(msg: dict, key: str) -> int:
    if key not in msg:
        raise MalformedEvent(f"missing field {key!r}", "missing field")
    v = msg[key]
    if isinstance(v, bool):
        raise MalformedEvent(f"field {key!r} is not a number: {v!r:.80}", "wrong type")
    if isinstance(v, int):
        n = v
    elif isinstance(v, str) and 0 < len(v.strip()) <= 18 and v.strip().isascii() \
            and v.strip().isdigit():
        n = int(v.strip())
    elif isinstance(v, float) and v.is_integer():
        n = int(v)
    else:
        raise MalformedEvent(f"field {key!r} is not a number: {v!r:.80}", "wrong type")
    if not 0 < n <= MAX_NUMBER:
        raise MalformedEvent(f"field {key!r} out of range (1..{MAX_NUMBER}): {n!r:.40}",
                             "out of range")
    return n


def parse_facility_message(raw: bytes | str | None, event_kinds: dict[str, str], *,
                           source: str = "", timestamp: float | None = None,
                           location: str = "") -> RunEvent:
    """Turn a facility Kafka message value (JSON, docs/facility.md section 2) into a :class:`RunEvent`.

    ``event_kinds`` maps event names to ``"raw"``/``"proc"`` (configuration
    ``kafka.events``). Unknown events count as malformed for AMORE, so they are logged once.

    Raises :class:`MalformedEvent` (with its ``kind``) for every value that is not a JSON object
    of at most :data:`MAX_MESSAGE_BYTES` with a known ``event`` and ``proposal``/``run`` numbers
    (ints or digit strings) in ``1..MAX_NUMBER``, whatever goes wrong while decoding it (deep
    nesting, huge integers, binary data...). Nothing else is raised; the value is never
    evaluated or unpickled.
    """
    msg = decode_json_message(raw, MAX_MESSAGE_BYTES)
    if not isinstance(msg, dict):
        raise MalformedEvent(f"not a JSON object: {type(msg).__name__}", "not a JSON object")
    ev = msg.get("event")
    if "event" not in msg:
        raise MalformedEvent("missing field 'event'", "missing field")
    if not isinstance(ev, str):
        raise MalformedEvent(f"field 'event' is not a string: {ev!r:.80}", "wrong type")
    if ev not in event_kinds:
        raise MalformedEvent(f"unknown event {ev!r:.80}", "unknown event")
    proposal = _as_int(msg, "proposal")
    run = _as_int(msg, "run")
    text = raw.decode("utf-8", "replace") if isinstance(raw, (bytes, bytearray)) else str(raw)
    return RunEvent(proposal=proposal, run=run, data=event_kinds[ev], source=source,
                    timestamp=time.time() if timestamp is None else timestamp, event=ev,
                    location=location, message=text)


class FacilityEventSource(KafkaRunSource):
    """European XFEL's run announcements for one proposal: ``topics`` (default
    ``config["kafka"]["event_topics"]``) read by :class:`~backend.sources.kafka.KafkaRunSource`,
    each message parsed by :func:`parse_facility_message` with ``config.event_kinds()``. Raises
    as :class:`~backend.sources.kafka.KafkaRunSource` does."""

    def __init__(self, config: Config, proposal: int | str, db_id: str,
                 topics: list[str] | None = None, on_problem=None):
        kinds = config.event_kinds()

        def parse(value, source, timestamp, location):
            return parse_facility_message(value, kinds, source=source, timestamp=timestamp,
                                          location=location)
        super().__init__(config, proposal, db_id,
                         config["kafka"]["event_topics"] if topics is None else topics, parse,
                         on_problem=on_problem, topics_setting="kafka.event_topics")


def event_topics(config: Config, settings: dict, proposal, proposal_dir: Path | None) -> list[str]:
    """European XFEL event topics: ``kafka.event_topics``, plus, with ``euxfel.online``, the
    online topics of the proposal's instrument (``euxfel.online_topics`` with ``{instrument}``
    from ``euxfel.instrument`` or the instrument of ``proposal_dir``,
    ``<root>/<INSTRUMENT>/<CYCLE>/p<proposal>``). ``settings``: the ``[euxfel]`` table with its
    defaults."""
    topics = list(config["kafka"]["event_topics"])
    if settings.get("online"):
        inst = settings.get("instrument")
        if not inst:
            inst = proposal_dir.parent.parent.name if proposal_dir is not None else None
        if inst:
            topics += [t.format(instrument=str(inst).lower()) for t in settings["online_topics"]]
        else:
            log.error("euxfel.online: instrument of proposal %s unknown; set euxfel.instrument",
                      proposal)
    return list(dict.fromkeys(topics))
