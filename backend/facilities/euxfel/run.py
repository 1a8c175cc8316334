"""European XFEL, worker side (runs in the user's Python): the run is extra-data's
``DataCollection`` of the proposal's ``raw/`` (and ``proc/``) run directories.

Before ``extra_data.open_run``, the run files map is written (:mod:`.filemap`: AMORE is nearly
always the first to open a new run, and extra-data's own first open costs about three times as
much), and extra-data's check that the raw and proc parts are of one run is done at low level
(:mod:`.samerun`). A run without corrected data yet is computed with its raw variables only (``data`` raw);
its proc variables wait for their data. When a variable fails, the run's files that cannot be
read are named in its error (:func:`damaged_files`: extra-data skips them silently).
"""
from __future__ import annotations

import glob
import os
from pathlib import Path

import extra_data  # imported with this module: the worker warms it up before its first run
import numpy as np
from extra_data.read_machinery import find_proposal

from backend.contextdir import proposal_dir_name
from backend.ctxrunner.facilities import OpenedRun, RunNotReady, RunRequest, describe_damage
from backend.facilities.euxfel.filemap import write_files_map
from backend.facilities.euxfel.samerun import quick_same_run

#: No ``meta#`` keys beyond run_number, proposal and proposal_path: the rest is in the run.
META_KEYS: tuple[str, ...] = ()


def open_run(request: RunRequest) -> OpenedRun:
    """Run ``request.run`` of proposal ``request.proposal`` (a number) as extra-data opens it,
    with its start time (the first train's timestamp). Raises :class:`RunNotReady` (naming
    damaged files, if any) when extra-data cannot open it."""
    proposal, run, data = int(request.proposal), int(request.run), request.data
    try:
        prop_path = find_proposal(proposal_dir_name(proposal))
    except Exception:
        prop_path = ""
    if prop_path:  # AMORE is nearly always the first to open a new run: make that quick
        for origin in ("raw",) if data == "raw" else ("raw", "proc"):
            if os.path.isdir(run_dir := os.path.join(prop_path, origin, f"r{run:04d}")):
                write_files_map(run_dir, request.processes)
    try:
        with quick_same_run():  # raw + proc combined: extra-data's check, 4x quicker
            run_dc = extra_data.open_run(proposal, run, data="raw" if data == "raw" else "all")
    except FileNotFoundError as e:
        raise RunNotReady(f"Run {run} of proposal {proposal} not found: {e}") from None
    except Exception as e:
        damaged = damaged_files(prop_path, run, set())
        why = f": {describe_damage(damaged)}" if damaged else ""
        raise RunNotReady(f"Cannot open run {run} of proposal {proposal}: "
                          f"{type(e).__name__}: {e}{why}") from None
    has_proc = bool(prop_path) and (Path(prop_path) / "proc" / f"r{run:04d}").is_dir()
    if data == "all" and not has_proc:
        data = "raw"  # proc variables wait for their data

    def metadata() -> dict:
        try:
            return run_dc.run_metadata()
        except Exception:
            return {}

    def damaged() -> dict:
        opened = {Path(f.filename).name for f in getattr(run_dc, "files", [])}
        return damaged_files(prop_path, run, opened)

    locations = {origin: [os.path.join(glob.escape(str(prop_path)), origin, f"r{run:04d}", "*.h5")]
                 for origin in ("raw", "proc")} if prop_path else {}
    started = start_time(run_dc) if request.start_time else None  # (reads a file's index)
    return OpenedRun(run_dc, proposal, str(prop_path), data, started, {},
                     metadata, "the run's metadata", damaged=damaged, data_locations=locations)


def start_time(run_dc) -> float | None:
    """Unix seconds of the run's first train, or None. Reads one file's index, not every
    file's."""
    try:
        ts = run_dc.select_trains(slice(0, 1)).train_timestamps() if run_dc.train_ids else []
        if len(ts) and not np.isnat(ts[0]):
            return float(ts[0].astype("datetime64[ns]").astype("int64")) / 1e9
    except Exception:
        pass
    return None


def damaged_files(proposal_path, run: int, opened: set[str]) -> dict[str, str]:
    """Files of run ``run`` (``raw/`` and ``proc/`` of ``proposal_path``) that are not among
    ``opened`` (file names) and cannot be read as HDF5: ``{name: reason}`` (truncated file,
    bad superblock, not a regular file, permission denied...)."""
    import h5py
    out = {}
    if not proposal_path:
        return out
    for kind in ("raw", "proc"):
        d = Path(proposal_path) / kind / f"r{run:04d}"
        try:
            entries = sorted(d.iterdir())
        except OSError:
            continue
        for f in entries:
            if f.suffix != ".h5" or f.name in opened:
                continue
            if not f.is_file():
                out[f.name] = "not a regular file" + (" (a directory)" if f.is_dir() else "")
                continue
            try:
                with h5py.File(f, "r"):
                    pass
            except Exception as e:
                out[f.name] = f"{type(e).__name__}: {e}"[:300]
    return out
