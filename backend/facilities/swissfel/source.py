"""SwissFEL (sf_daq_broker): every accepted acquisition request is saved as JSON under the
pgroup directory (``swissfel.root``, e.g. ``/sf/alvra/data/p18493``). Two layouts exist:

* the seed's (sf_daq_broker README): ``raw/run_info/<run//1000*1000:06>/run_<run:06>.json``, the
  request plus ``beamline``, ``run_number``, ``request_time``; data under
  ``raw/<directory_name>/``. Each file is one run (key: the file's path).
* the current one: ``raw/run<NNNN>[-tag]/meta/acq<NNNN>.json`` (request plus
  ``acquisition_number``, ``unique_acquisition_run_number``, ``request_time``), data files
  ``raw/run<NNNN>[-tag]/data/acq<NNNN>.*.h5``. A run holds several acquisitions: the run
  directory is the key, each new acquisition updates the run (its latest request is the
  metadata) and the run is computed again.

The request JSON is kept whole as the run's metadata (unknown fields too). A request without
``pgroup``, ``start_pulseid`` or ``stop_pulseid`` (mandatory for the broker) is reported and
skipped; requests of other pgroups are ignored.
"""
from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

from backend.sources.base import MalformedEvent, RunEvent
from backend.vocab import SourceRunState
from backend.sources.jsonfiles import JsonFileSource

_RUN_INFO = re.compile(r"^run_(\d{6})\.json$")
_ACQ = re.compile(r"^acq(\d+)\.json$")
_RUN_DIR = re.compile(r"^run(\d+)(?:-.*)?$")
REQUIRED = ("pgroup", "start_pulseid", "stop_pulseid")


def parse_request_time(value) -> float | None:
    """``"2023-09-05 15:28:24.291760"`` (local time, as the broker writes it) -> Unix seconds."""
    if not isinstance(value, str):
        return None
    for fmt in ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S"):
        try:
            return datetime.strptime(value.strip(), fmt).timestamp()
        except ValueError:
            pass
    return None


def _load(path: Path) -> dict:
    try:
        md = json.loads(path.read_text())
    except OSError as e:
        raise MalformedEvent(f"cannot read: {e}") from None
    except json.JSONDecodeError as e:
        raise MalformedEvent(f"not JSON: {e}") from None
    if not isinstance(md, dict):
        raise MalformedEvent(f"not a JSON object but {type(md).__name__}")
    missing = [k for k in REQUIRED if k not in md]
    if missing:
        raise MalformedEvent(f"request lacks {', '.join(missing)}")
    if not isinstance(md["pgroup"], str):
        raise MalformedEvent(f"pgroup must be a string, found {md['pgroup']!r}")
    for k in ("start_pulseid", "stop_pulseid"):
        if isinstance(md[k], bool) or not isinstance(md[k], int):
            raise MalformedEvent(f"{k} must be an integer, found {md[k]!r}")
    return md


def _run_number(md: dict, fallback: int | None, path: Path) -> int:
    rn = md.get("run_number", fallback)
    if isinstance(rn, bool) or not isinstance(rn, int) or rn < 0:
        if fallback is not None:
            return fallback
        raise MalformedEvent(f"run_number must be an integer, found {rn!r}")
    return rn


class SwissfelRequestSource(JsonFileSource):
    """SwissFEL acquisitions of one pgroup (the proposal, e.g. ``p18493``) under ``root``."""

    name = "swissfel run_info"
    source_name = "swissfel"

    def wanted(self, path: Path) -> bool:
        parts = path.parts
        if _RUN_INFO.match(path.name) and len(parts) >= 3 and parts[-3] == "run_info":
            return True
        return bool(_ACQ.match(path.name)) and len(parts) >= 3 and parts[-2] == "meta" \
            and bool(_RUN_DIR.match(parts[-3]))

    def candidates(self) -> list[Path]:
        raw = self.root / "raw"
        return [p for p in list(raw.glob("run_info/*/run_*.json")) + list(raw.glob("run*/meta/acq*.json"))
                if self.wanted(p)]

    def parse(self, path: Path) -> RunEvent | None:
        md = _load(path)
        if md["pgroup"] != self.proposal:
            return None
        raw = self.root / "raw"
        start = parse_request_time(md.get("request_time"))
        if path.parent.name == "meta":  # current layout
            run_dir = path.parent.parent
            run = _run_number(md, int(_RUN_DIR.match(run_dir.name).group(1)), path)
            acq = int(_ACQ.match(path.name).group(1))
            info = {"metadata": md, "request_file": str(path), "data_dir": str(run_dir / "data"),
                    "acquisition": acq, "pgroup": md["pgroup"], "beamline": md.get("beamline"),
                    "proposal_path": str(self.root)}
            if start is not None:
                info["start_time"] = start
            key = str(run_dir)
        else:
            m = _RUN_INFO.match(path.name)
            run = _run_number(md, int(m.group(1)), path)
            dname = md.get("directory_name")
            if dname is not None and not isinstance(dname, str):
                raise MalformedEvent(f"directory_name must be a string, found {dname!r}")
            info = {"metadata": md, "request_file": str(path),
                    "data_dir": str(raw / dname) if dname else str(raw),
                    "file_glob": f"run_{run:06d}*",
                    "pgroup": md["pgroup"], "beamline": md.get("beamline"),
                    "start_time": start, "proposal_path": str(self.root)}
            key = str(path)
        return RunEvent(self.proposal, run, "all", source=f"swissfel:{path}",
                        event=path.name, key=key, info=info, state=SourceRunState.READY)

    def order_key(self, ev: RunEvent):
        return (ev.run or 0, ev.info.get("acquisition") or 0)
