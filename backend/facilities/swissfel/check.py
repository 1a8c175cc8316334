"""SwissFEL's data check (seed 002's ``check.py``, docs/facility.md section 6): every channel
recorded every pulse the acquisition request asked for.

Expected pulse ids are ``start_pulseid..stop_pulseid`` keeping ``pid % rate_multiplicator == 0``
(:func:`swissfel_expected_pulse_ids`); each channel's recorded pulse ids (with
``is_data_present`` where the file has it, :func:`read_swissfel_channels`) are compared by the
generic :func:`backend.integrity.datacheck.compare_ids`.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable

import numpy as np

from backend.integrity.datacheck import (MAX_GAPS, CheckRules, IdStats, compare_ids,
                                         make_report, summarize)



def swissfel_expected_pulse_ids(start_pulseid: int, stop_pulseid: int,
                                rate_multiplicator: int = 1) -> np.ndarray:
    """Pulse ids a SwissFEL acquisition request asks for: ``start..stop`` (inclusive) keeping
    ``pid % rate_multiplicator == 0``. int64 array. Raises ``ValueError`` for
    ``stop < start`` or a rate multiplicator < 1."""
    start, stop, rate = int(start_pulseid), int(stop_pulseid), int(rate_multiplicator or 1)
    if rate < 1:
        raise ValueError(f"rate_multiplicator must be >= 1, not {rate}")
    if stop < start:
        raise ValueError(f"stop_pulseid {stop} is before start_pulseid {start}")
    first = start + (-start) % rate
    return np.arange(first, stop + 1, rate, dtype=np.int64)


def read_swissfel_channels(path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """Channels of one SwissFEL data file: ``name -> (pulse_ids int64, is_data_present bool or
    None)``. Reads both layouts: current ``/<channel>/pulse_id`` (data_api3) and legacy
    ``/data/<channel>/{pulse_id,is_data_present}`` (bsread). Channel names may contain ``/``
    only in the legacy layout's ``data/`` group as sub-groups; both are found by walking the
    file. Raises OSError for an unreadable file."""
    import h5py
    out: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and name.endswith("/pulse_id"):
                grp = name[: -len("/pulse_id")]
                chan = grp[len("data/"):] if grp.startswith("data/") else grp
                pids = obj[:].astype(np.int64).ravel()
                present = f.get(grp + "/is_data_present")
                out[chan] = (pids, None if present is None else present[:].astype(bool).ravel())
        f.visititems(visit)
    return out


def check_pulse_ids(expected: np.ndarray, pulse_ids: np.ndarray,
                    is_data_present: np.ndarray | None = None, *, rate_multiplicator: int = 1,
                    required: float = 1.0, max_gaps: int = MAX_GAPS) -> IdStats:
    """One SwissFEL channel against the request (as seed 002's ``check.py``): recorded pulse
    ids off the rate grid (``pid % rate_multiplicator != 0``) or without data
    (``is_data_present`` False) are ignored, the rest compared with ``expected``
    (:func:`swissfel_expected_pulse_ids`). Returns :class:`IdStats`."""
    pids = np.asarray(pulse_ids, dtype=np.int64).ravel()
    keep = pids % max(int(rate_multiplicator), 1) == 0
    if is_data_present is not None:
        keep &= np.asarray(is_data_present, bool).ravel()[:pids.size]
    return compare_ids(expected, [pids[keep]], required=required, max_gaps=max_gaps,
                       step=max(int(rate_multiplicator), 1))


def check_swissfel_acquisition(request: dict, data_files: Iterable[str | Path],
                               rules: CheckRules | None = None,
                               max_gaps: int = MAX_GAPS) -> dict:
    """Check a SwissFEL acquisition: ``request`` is its ``meta/acq<NNNN>.json`` (or
    ``run_info/.../run_<N>.json``) with ``start_pulseid``, ``stop_pulseid`` and optional
    ``rate_multiplicator`` (default 1 = 100 Hz) and ``channels_list``; ``data_files`` the
    acquisition's HDF5 files. Every channel found is compared; requested channels found in no
    file count as incomplete (nothing recorded). Same report format as :func:`check_euxfel_run`
    (``facility`` ``"swissfel"``, ``ids`` in pulse ids). Raises ``KeyError`` if the request
    lacks start/stop pulse ids."""
    rules = rules or CheckRules()
    rate = int(request.get("rate_multiplicator") or 1)
    expected = swissfel_expected_pulse_ids(request["start_pulseid"], request["stop_pulseid"], rate)
    stats, skipped, unreadable, nfiles = {}, [], [], 0
    seen = set()
    for p in data_files:
        nfiles += 1
        try:
            chans = read_swissfel_channels(p)
        except Exception as e:
            unreadable.append({"path": str(p), "error": f"{type(e).__name__}: {e}"})
            continue
        for name, (pids, present) in chans.items():
            seen.add(name)
            if rules.skipped(name):
                skipped.append(name)
                continue
            stats[name] = check_pulse_ids(expected, pids, present, rate_multiplicator=rate,
                                          required=rules.required(name), max_gaps=max_gaps)
    for name in request.get("channels_list") or []:
        if name not in seen and not rules.skipped(name):
            stats[name] = check_pulse_ids(expected, np.zeros(0, np.int64),
                                          rate_multiplicator=rate, required=rules.required(name))
    ids = {"first": int(expected[0]) if expected.size else None,
           "last": int(expected[-1]) if expected.size else None,
           "count": int(expected.size), "rate_multiplicator": rate}
    return make_report("swissfel", ids, stats, skipped, unreadable, nfiles, id_unit="pulse ids")


_ACQ = re.compile(r"^acq(\d+)\.json$")


def check_swissfel_run(run_dir: str | Path, rules: CheckRules | None = None,
                       max_gaps: int = MAX_GAPS, skip_suffixes=("PVDATA",)) -> dict:
    """Check every acquisition of a SwissFEL run directory in the current layout
    (``raw/run<NNNN>[-tag]/{meta/acq<NNNN>.json, data/acq<NNNN>.<SUFFIX>.h5}``): each request
    against that acquisition's data files, except those whose suffix is in ``skip_suffixes``
    (EPICS PVs are archived at their own times, not per pulse). One report as
    :func:`check_swissfel_acquisition`; with several acquisitions the source names are
    prefixed ``acq<NNNN>:`` and ``ids`` are those of the first. Raises ``FileNotFoundError``
    when the directory has no ``meta/acq*.json``."""
    run_dir = Path(run_dir)
    metas = sorted((int(m.group(1)), p) for p in (run_dir / "meta").glob("acq*.json")
                   if (m := _ACQ.match(p.name)))
    if not metas:
        raise FileNotFoundError(f"no meta/acq*.json in {run_dir}")
    reports = []
    for n, meta in metas:
        request = json.loads(meta.read_text())
        files = [p for p in sorted((run_dir / "data").glob(f"acq{n:04d}.*.h5"))
                 if p.name.split(".")[-2] not in skip_suffixes]
        reports.append((n, check_swissfel_acquisition(request, files, rules, max_gaps)))
    if len(reports) == 1:
        return reports[0][1]
    merged = {"version": 1, "facility": "swissfel", "ids": reports[0][1]["ids"],
              "id_unit": "pulse ids",
              "files": {"checked": 0, "unreadable": []}, "sources": {}, "skipped": [],
              "incomplete": []}
    for n, rep in reports:
        merged["files"]["checked"] += rep["files"]["checked"]
        merged["files"]["unreadable"] += rep["files"]["unreadable"]
        merged["sources"].update({f"acq{n:04d}:{s}": v for s, v in rep["sources"].items()})
        merged["skipped"] += [f"acq{n:04d}:{s}" for s in rep["skipped"]]
        merged["incomplete"] += [f"acq{n:04d}:{s}" for s in rep["incomplete"]]
    merged["ok"] = not merged["incomplete"] and not merged["files"]["unreadable"]
    merged["summary"] = summarize(merged)
    return merged
