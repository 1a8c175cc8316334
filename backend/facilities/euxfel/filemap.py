"""extra-data's run files map, written quickly before AMORE's first open of a new run.

The first time extra-data opens a run directory it reads, for every HDF5 file, ``INDEX/trainId``,
``METADATA/dataFormatVersion``, ``METADATA/dataSources/dataSourceId`` and ``INDEX/flag`` through
h5py's high-level API, then saves what it found as a *run files map* (``karabo_data_map.json`` in
the run directory, or on Maxwell under the proposal's ``scratch/.karabo_data_maps/``), so that
later opens skip the files' metadata. That first open costs ~1.3 ms per file: 0.55 s for a run
of European XFEL's real size (24 sequences x 17 aggregators = 408 files), and AMORE is nearly
always the first to open a new run, on the path from "migration complete" to values in the
table.

:func:`write_files_map` reads the same datasets with h5py's low-level API (~0.3 ms per file) and
writes the map, in extra-data's format, where extra-data looks for it; ``extra_data.open_run``
then opens the run from the map as it would on any later open. A file this module does not
vouch for (a data format version other than :data:`MAPPED_FORMATS`, a missing dataset, an
unknown source category, a file it cannot open) is left out of the map: extra-data opens that
one the usual way and reports its problems as usual. ``tests/test_filemap.py`` checks that the
entries equal those extra-data writes itself.

Runs in the user's Python (the context worker and Slurm jobs): standard library, numpy, h5py
and extra-data only.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from backend.files import write_json_atomic

log = logging.getLogger(__name__)

#: Data format versions whose metadata this module reads as extra-data does (``INDEX/flag``
#: is a validity flag, 1 = good train). 0.5 has no flag and 1.1 an inverted one: left to
#: extra-data.
MAPPED_FORMATS = frozenset({"1.0", "1.2", "1.3"})


def _read(fid, path: bytes):
    """A whole dataset as a numpy array (low-level h5py: no per-call Python object layers)."""
    import h5py
    import numpy as np
    ds = h5py.h5d.open(fid, path)
    try:
        arr = np.empty(ds.shape, dtype=ds.dtype)
        if arr.size:
            ds.read(h5py.h5s.ALL, h5py.h5s.ALL, arr)
        return arr
    finally:
        ds.close()


def file_entry(path: str | os.PathLike) -> dict | None:
    """The files-map entry of one European XFEL HDF5 file: ``filename`` (base name), ``mtime``
    (float, s) and ``size`` (int, bytes) of the file when read, ``train_ids`` (list of int,
    the non-zero ``INDEX/trainId``), ``control_sources`` and ``instrument_sources`` (sorted
    lists of source names from ``METADATA/dataSources/dataSourceId``; instrument sources as
    ``device:channel``), ``legacy_sources`` (``{legacy name: current name}`` for instrument
    sources that are soft links) and ``suspect_train_indices`` (list of int, where
    ``INDEX/flag`` is 0). None if the file is not one this module maps (see the module text).
    Raises nothing for a bad file (None); ``OSError`` is left to the caller only for stat."""
    import h5py
    try:
        fid = h5py.h5f.open(os.fsencode(path), h5py.h5f.ACC_RDONLY)
    except Exception:  # noqa: BLE001 - extra-data will say what is wrong with it
        return None
    try:
        try:
            version = _read(fid, b"METADATA/dataFormatVersion")[0].decode("ascii")
        except (KeyError, IndexError, UnicodeDecodeError):
            return None
        if version not in MAPPED_FORMATS:
            return None
        tid = _read(fid, b"INDEX/trainId")
        train_ids = tid[tid != 0]
        flag = _read(fid, b"INDEX/flag")[:len(train_ids)].astype(bool)
        if len(flag) != len(train_ids):
            return None
        control, instrument, legacy = set(), set(), {}
        for source_id in _read(fid, b"METADATA/dataSources/dataSourceId"):
            if not source_id:
                continue
            category, _, h5_source = source_id.decode().partition("/")
            if category == "INSTRUMENT":
                device, _, chan_group = h5_source.partition(":")
                source = device + ":" + chan_group.partition("/")[0]
                if source not in instrument:
                    link = f"INSTRUMENT/{source}".encode()
                    try:
                        if fid.links.get_info(link).type == h5py.h5l.TYPE_SOFT:
                            target = fid.links.get_val(link).decode()
                            legacy[source] = target[1:].partition("/")[2]
                    except KeyError:
                        pass
                    instrument.add(source)
            elif category == "CONTROL":
                control.add(h5_source)
            elif category != "Karabo_TimerServer":  # a virtual source of format 1.1
                return None
        st = os.fstat(fid.get_vfd_handle())
    except (KeyError, ValueError, UnicodeDecodeError):
        return None
    finally:
        fid.close()
    return {"filename": os.path.basename(path), "mtime": st.st_mtime, "size": st.st_size,
            "train_ids": train_ids.tolist(),
            "control_sources": sorted(control), "instrument_sources": sorted(instrument),
            "legacy_sources": {k: legacy[k] for k in sorted(legacy)},
            "suspect_train_indices": (~flag).nonzero()[0].tolist()}


#: Fewest files per process worth a forked copy (:mod:`backend.ctxrunner.forked`) of the
#: reader: ~0.4 ms per file against ~3 ms to fork.
MIN_FILES_PER_PROCESS = 64


def file_entries(run_dir: str, names: list[str]) -> dict[str, dict]:
    """``{name: entry}`` of :func:`file_entry` for the files ``names`` of ``run_dir`` that it
    maps (the others are left out)."""
    out = {}
    for name in names:
        entry = file_entry(os.path.join(run_dir, name))
        if entry is not None:
            out[name] = entry
    return out


def _file_entries_shared(run_dir: str, names: list[str], processes: int) -> dict[str, dict]:
    """:func:`file_entries`, with the second half of the files read by a forked copy of this
    process when ``processes`` > 1 and there are enough files (408 files of a real-size run:
    0.18 s alone, 0.10 s shared). If the copy fails, this process reads its files too."""
    from backend.ctxrunner.forked import ForkedPart, ForkedPartFailed, can_fork
    if processes < 2 or len(names) < 2 * MIN_FILES_PER_PROCESS or not can_fork():
        return file_entries(run_dir, names)
    half = len(names) // 2
    try:
        copy = ForkedPart(file_entries, run_dir, names[half:])
    except OSError:
        return file_entries(run_dir, names)
    out = file_entries(run_dir, names[:half])
    try:
        out.update(copy.result())
    except ForkedPartFailed as e:
        log.debug("Reading the files map in a second process failed (%s)", e)
        out.update(file_entries(run_dir, names[half:]))
    return out


def write_files_map(run_dir: str | os.PathLike, processes: int = 1) -> int:
    """Make sure extra-data finds a run files map for ``run_dir``'s HDF5 files when there is
    none yet: the files are read with :func:`file_entry` (by ``processes`` processes, this one
    and forked copies of it, when there are many files) and the map is written atomically to
    the first of extra-data's candidate places that can be written. Where a map exists already
    (a run opened before) nothing is done: extra-data itself opens any file the map lacks and
    completes the map. Returns the number of files newly mapped (0: nothing to do, or nowhere
    to write). Never raises: on any problem extra-data simply opens the files itself."""
    try:
        from extra_data.run_files_map import RunFilesMap
        if any(os.path.exists(p) for p in _candidates(RunFilesMap, run_dir)):
            return 0
        fmap = RunFilesMap(run_dir)
        names = sorted(f for f in os.listdir(run_dir)
                       if f.endswith(".h5") and f.lower() != "overview.h5")
        missing = [f for f in names if f not in fmap.files_data]
        if not missing:
            return 0
        new = _file_entries_shared(os.fspath(run_dir), missing, processes)
        if not new:
            return 0
        entries = dict(fmap.files_data, **new)
        data = [entries[k] for k in sorted(entries)]
        for target in fmap.candidate_paths:
            try:
                Path(target).parent.mkdir(parents=True, exist_ok=True)
                write_json_atomic(Path(target), data, compact=True)
            except OSError as e:
                log.debug("Cannot write the run files map %s: %s", target, e)
                continue
            return len(new)
    except Exception as e:  # noqa: BLE001 - only a speed-up
        log.debug("No run files map for %s: %s", run_dir, e)
    return 0


def _candidates(files_map_class, run_dir) -> list[str]:
    """Where extra-data looks for the run's map (``RunFilesMap.map_paths_for_run`` uses no
    instance state; an instance would load the map, which is what this check avoids)."""
    try:
        return list(files_map_class.map_paths_for_run(None, os.path.abspath(run_dir)))
    except Exception:  # noqa: BLE001 - another extra-data version: its usual place
        return [os.path.join(run_dir, "karabo_data_map.json")]
