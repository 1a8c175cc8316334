"""ESS: runs announced by the file writer (kafka-to-nexus) on Kafka, as flatbuffers.

Messages are told apart by their flatbuffer file identifier and read with
``ess-streaming-data-types`` (``streaming_data_types``), never parsed by hand:

``pl72`` RunStart
    a run begins: job id, file name, start time (ms since the epoch), run name, instrument, the
    ``metadata`` JSON. AMORE records the run as ``running`` with its start time.
``6s4t`` RunStop
    the stop time of a job: recorded with the run started by that job's ``pl72`` (so it
    survives a restart before ``wrdn``); the run is computed at ``wrdn``. A stop of a job whose
    start this process has not seen is kept in memory only until its ``wrdn``.
``wrdn`` FinishedWriting
    the file is closed: the run is computed; with ``error_encountered`` it is marked failed with
    the writer's message.

Runs are correlated by ``job_id`` (the dedupe key in ``source_runs``); the run number comes from
``ess.run_number_pattern`` on the file name (group 1), else from ``run_name`` when it is a number;
the proposal from the ``metadata`` JSON (key ``ess.proposal_key``), else from the file name
(``{instrument_}{proposal}_{counter:08}.hdf``) or the file path. Runs of other proposals are
ignored; messages that cannot be deserialised, unknown schemas and runs without a run number are
logged with their offset, reported to the event log and skipped.
"""
from __future__ import annotations

import json
import logging
import re
import time
from pathlib import PurePosixPath

from backend.config import Config, ConfigError
from backend.sources.base import MalformedEvent, RunEvent
from backend.sources.kafka import KafkaRunSource
from backend.vocab import SourceRunState, normalize_proposal

log = logging.getLogger(__name__)

_PROPOSAL_IN_NAME = re.compile(r"(?:^|_)(\d+)_\d+\.(?:hdf|nxs|h5|hdf5|nx5)$")


def _ms_to_s(ms: int | None) -> float | None:
    return ms / 1000.0 if ms else None


class EssMessageParser:
    """Turns file-writer flatbuffers into :class:`RunEvent` records for one proposal.

    ``file_root``: directory that relative file names are under (``ess.file_root``).
    Keeps what ``pl72``/``6s4t`` said per job id, so ``wrdn`` events carry the whole story
    (after a restart, ``wrdn`` alone still gives a complete run: the database merges it with
    what the earlier ``pl72`` recorded).
    """

    def __init__(self, run_number_pattern: str, proposal_key: str = "proposal",
                 file_root: str = ""):
        try:
            self.pattern = re.compile(run_number_pattern)
        except re.error as e:
            raise ConfigError(f"ess.run_number_pattern {run_number_pattern!r}: {e}") from None
        if self.pattern.groups < 1:
            raise ConfigError(f"ess.run_number_pattern {run_number_pattern!r} needs a group "
                              f"(the run number)")
        self.proposal_key = proposal_key
        self.file_root = file_root
        self._jobs: dict[str, dict] = {}

    def _path(self, name: str) -> str:
        if self.file_root and not name.startswith("/"):
            return str(PurePosixPath(self.file_root) / name)
        return name

    def run_number(self, file_name: str, run_name: str | None) -> int:
        m = self.pattern.search(PurePosixPath(file_name).name)
        if m:
            return int(m.group(1))
        if run_name and run_name.strip().isdigit():
            return int(run_name)
        raise MalformedEvent(f"no run number in file name {file_name!r} (pattern "
                             f"{self.pattern.pattern!r}) nor in run name {run_name!r}")

    def proposal(self, metadata: dict, file_name: str):
        p = metadata.get(self.proposal_key) if isinstance(metadata, dict) else None
        if p not in (None, ""):
            try:
                return normalize_proposal(p if isinstance(p, (int, str)) else str(p))
            except ValueError:
                raise MalformedEvent(f"metadata {self.proposal_key!r} is not a proposal: {p!r}") from None
        path = PurePosixPath(file_name)
        m = _PROPOSAL_IN_NAME.search(path.name)
        if m:
            return normalize_proposal(m.group(1))
        for part in reversed(path.parent.parts):
            if part.isdigit():
                return normalize_proposal(part)
        return None

    def parse(self, value: bytes | None, source: str = "", timestamp: float | None = None,
              location: str = "") -> RunEvent | None:
        """One message value -> a :class:`RunEvent`, or None for messages AMORE does not act on
        (a ``6s4t`` of a job whose ``pl72`` this parser has not seen). Raises :class:`MalformedEvent` for undeserialisable or unknown messages.
        ``location`` (``topic[partition]@offset``) and the deserialised message (as JSON) go into
        the event for the run's snapshot."""
        self._location = location
        from streaming_data_types.utils import get_schema
        if not value or len(value) < 8:
            raise MalformedEvent("empty or truncated message")
        try:
            schema = get_schema(value)
        except Exception as e:
            raise MalformedEvent(f"no flatbuffer file identifier: {e}") from None
        ts = time.time() if timestamp is None else timestamp
        try:
            if schema == "pl72":
                from streaming_data_types.run_start_pl72 import deserialise_pl72
                msg = deserialise_pl72(value)
                return self._start(msg, source, ts)
            if schema == "6s4t":
                from streaming_data_types.run_stop_6s4t import deserialise_6s4t
                msg = deserialise_6s4t(value)
                return self._stop(msg, source, ts)
            if schema == "wrdn":
                from streaming_data_types.finished_writing_wrdn import deserialise_wrdn
                msg = deserialise_wrdn(value)
                return self._finished(msg, source, ts)
        except MalformedEvent:
            raise
        except Exception as e:
            raise MalformedEvent(f"cannot deserialise {schema} message: "
                                 f"{type(e).__name__}: {e}") from None
        raise MalformedEvent(f"unknown message schema {schema!r} (expected pl72, 6s4t, wrdn)")

    @staticmethod
    def _json(text: str | None, what: str) -> dict:
        if not text:
            return {}
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise MalformedEvent(f"{what} is not JSON: {e}") from None
        return d if isinstance(d, dict) else {"value": d}

    def _start(self, msg, source, ts) -> RunEvent | None:
        if not msg.job_id or not msg.filename:
            raise MalformedEvent("pl72 without job_id or filename")
        metadata = self._json(msg.metadata, "pl72 metadata")
        path = self._path(msg.filename)
        info = {"file": path, "file_name": PurePosixPath(msg.filename).name,
                "job_id": msg.job_id, "run_name": msg.run_name,
                "instrument": msg.instrument_name, "start_time": _ms_to_s(msg.start_time),
                "stop_time": _ms_to_s(msg.stop_time), "metadata": metadata,
                "service_id": msg.service_id}
        self._jobs[msg.job_id] = dict(info)
        proposal = self.proposal(metadata, path)
        if proposal is None:
            raise MalformedEvent(f"pl72 of job {msg.job_id}: no proposal in metadata or file "
                                 f"name {msg.filename!r}")
        run = self.run_number(msg.filename, msg.run_name)
        return RunEvent(proposal, run, "all", source=source, timestamp=ts, event="pl72",
                        key=msg.job_id, info=info, state=SourceRunState.RUNNING, **self._snapshot(info))

    def _stop(self, msg, source, ts) -> RunEvent | None:
        """A ``6s4t``: the job's stop time, as an update of its still running run (``info``:
        ``job_id``, ``stop_time``) when its ``pl72`` was seen, else kept for its ``wrdn``."""
        if not msg.job_id:
            raise MalformedEvent("6s4t without job_id")
        job = self._jobs.setdefault(msg.job_id, {})
        job["stop_time"] = _ms_to_s(msg.stop_time)
        if "file" not in job:
            return None
        proposal = self.proposal(job.get("metadata") or {}, job["file"])
        if proposal is None:  # its pl72 was reported as malformed already
            return None
        run = self.run_number(job["file"], job.get("run_name"))
        info = {"job_id": msg.job_id, "stop_time": job["stop_time"]}
        return RunEvent(proposal, run, "all", source=source, timestamp=ts, event="6s4t",
                        key=msg.job_id, info=info, state=SourceRunState.RUNNING, **self._snapshot(info))

    def _finished(self, msg, source, ts) -> RunEvent:
        if not msg.job_id or not msg.file_name:
            raise MalformedEvent("wrdn without job_id or file_name")
        known = self._jobs.pop(msg.job_id, {})
        path = known.get("file") or self._path(msg.file_name)
        info = {**known, "file": path, "file_name": PurePosixPath(msg.file_name).name,
                "job_id": msg.job_id}
        if msg.metadata:  # what the writer says of the closed file; never replaces pl72's
            info["file_metadata"] = self._json(msg.metadata, "wrdn metadata")
        if known and info.get("stop_time") is None:  # no 6s4t: the file closed now
            info["stop_time"] = ts
        proposal = self.proposal(info.get("metadata") or {}, path)
        if proposal is None:
            raise MalformedEvent(f"wrdn of job {msg.job_id}: no proposal in metadata or file "
                                 f"name {msg.file_name!r}")
        run = self.run_number(msg.file_name, info.get("run_name"))
        if msg.error_encountered:
            error = f"file writer error: {msg.message or 'no message'}"
            # the snapshot keeps what the writer said, next to the file's details
            return RunEvent(proposal, run, "all", source=source, timestamp=ts, event="wrdn",
                            key=msg.job_id, info=info, state=SourceRunState.FAILED, error=error,
                            **self._snapshot({**info, "error": error}))
        return RunEvent(proposal, run, "all", source=source, timestamp=ts, event="wrdn",
                        key=msg.job_id, info=info, state=SourceRunState.READY, **self._snapshot(info))

    def _snapshot(self, info: dict) -> dict:
        """The fields of a RunEvent kept as the run's snapshot: where the message was, the
        message as JSON, and the pl72 ``metadata``."""
        return {"location": getattr(self, "_location", ""),
                "message": json.dumps(info, default=str, sort_keys=True),
                "metadata": info.get("metadata") or None}


class EssFileWriterSource(KafkaRunSource):
    """The ESS file writer's run announcements for one proposal (a
    :class:`~backend.sources.base.RunSource`): ``ess.topics`` on ``kafka.broker`` read by the
    generic Kafka consumer (:class:`~backend.sources.kafka.KafkaRunSource`, at-least-once
    delivery), each message turned into a run event by an :class:`EssMessageParser`.
    ``settings``: the ``[ess]`` table with its defaults. Raises ``ValueError`` without a broker or
    topics, :class:`ConfigError` for a bad ``ess.run_number_pattern``."""

    source_name = "ess"

    def __init__(self, config: Config, settings: dict, proposal, db_id: str, on_problem=None):
        self.parser = EssMessageParser(settings["run_number_pattern"],
                                       settings.get("proposal_key") or "proposal",
                                       settings.get("file_root") or "")
        super().__init__(config, proposal, db_id, list(settings["topics"]), self.parser.parse,
                         on_problem=on_problem, topics_setting="ess.topics")
