"""ESRF (ID29 and MX beamlines): each data collection leaves a ``metadata.json`` (written by
MXCuBE into the collection's ``MX_directory``) under the beamtime folder
``/data/visitor/<proposal>/<beamline>/<session>/``.

ESRF has no run numbers: AMORE synthesises them in the database when it first records a
``metadata.json`` (its path is the run's key), in order of discovery sorted by ``startDate``, so
they are stable across restarts. ``startDate``/``endDate`` are ISO 8601 (with a Europe/Paris
offset); ID29's SSX writer writes neither, so the data files' modification times are used
instead (then the metadata.json's own). Paths in ``metadata.json`` that start with
``esrf.path_prefix`` are read with ``esrf.path_prefix_replacement`` instead (data read from
another mount, as AMARCORD's ``--path-prefix`` / ``--path-prefix-replacement``).
"""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from backend.sources.base import MalformedEvent, RunEvent
from backend.vocab import SourceRunState
from backend.sources.jsonfiles import JsonFileSource

METADATA_FILE = "metadata.json"


def rewrite_path(path: str, prefix: str, replacement: str) -> str:
    """``path`` with a leading ``prefix`` replaced by ``replacement`` (unchanged otherwise or
    when ``prefix`` is empty)."""
    if prefix and path.startswith(prefix):
        return replacement + path[len(prefix):]
    return path


def parse_iso(value) -> float | None:
    """ISO 8601 text -> Unix seconds (naive times taken as local time); None if absent or
    unparsable."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        return datetime.fromisoformat(value.strip().replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _mtimes(directory: Path) -> tuple[float, float] | None:
    try:
        times = [p.stat().st_mtime for p in directory.iterdir()
                 if p.is_file() and p.name != METADATA_FILE]
    except OSError:
        return None
    return (min(times), max(times)) if times else None


def parse_metadata_file(path: Path, proposal, prefix: str = "", replacement: str = "") -> RunEvent:
    """One ``metadata.json`` -> a :class:`RunEvent` (``run`` None: synthesised when recorded;
    ``key`` the file's path; ``info``: ``metadata`` (the whole JSON object), ``data_dir``
    (``MX_directory`` rewritten, else the file's folder), ``tag`` (the parent folder name of
    ``MX_directory``, as AMARCORD), ``sample`` (``Sample_name``), ``start_time``/``stop_time``
    (Unix seconds), ``metadata_file``.

    Raises :class:`MalformedEvent` if the file is not JSON, not a JSON object, or
    ``MX_directory``/``Sample_name`` are present but not strings.
    """
    try:
        text = path.read_text()
    except OSError as e:
        raise MalformedEvent(f"cannot read: {e}") from None
    try:
        md = json.loads(text)
    except json.JSONDecodeError as e:
        raise MalformedEvent(f"not JSON: {e}") from None
    if not isinstance(md, dict):
        raise MalformedEvent(f"not a JSON object but {type(md).__name__}")
    for key in ("MX_directory", "Sample_name"):
        if key in md and md[key] is not None and not isinstance(md[key], str):
            raise MalformedEvent(f"{key} must be a string, found {md[key]!r}")
    mx_dir = md.get("MX_directory") or str(path.parent)
    data_dir = Path(rewrite_path(mx_dir, prefix, replacement))
    start, stop = parse_iso(md.get("startDate")), parse_iso(md.get("endDate"))
    if start is None or stop is None:
        times = _mtimes(data_dir) or _mtimes(path.parent)
        if times is None:
            st = path.stat().st_mtime
            times = (st, st)
        start = times[0] if start is None else start
        stop = times[1] if stop is None else stop
    info = {"metadata_file": str(path), "metadata": md, "data_dir": str(data_dir),
            "tag": Path(mx_dir).parent.name, "sample": md.get("Sample_name"),
            "start_time": start, "stop_time": stop}
    return RunEvent(proposal, None, "all", source=f"esrf:{path}", event="metadata.json",
                    key=str(path), info=info, state=SourceRunState.READY)


class EsrfMetadataSource(JsonFileSource):
    """ESRF collections of one proposal: every ``metadata.json`` under ``esrf.root``.

    ``info["proposal_path"]`` is the root. Runs of a batch are announced sorted by start time,
    so synthesised run numbers follow the collections' order.
    """

    name = "esrf metadata.json"
    source_name = "esrf"

    def __init__(self, root, proposal, path_prefix: str = "", path_prefix_replacement: str = "",
                 **kw):
        super().__init__(root, proposal, **kw)
        self.prefix = path_prefix or ""
        self.replacement = path_prefix_replacement or ""

    def wanted(self, path: Path) -> bool:
        return path.name == METADATA_FILE

    def candidates(self) -> list[Path]:
        return list(self.root.rglob(METADATA_FILE))

    def parse(self, path: Path) -> RunEvent:
        ev = parse_metadata_file(path, self.proposal, self.prefix, self.replacement)
        ev.info["proposal_path"] = str(self.root)
        return ev
