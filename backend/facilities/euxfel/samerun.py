"""A quicker "same run?" check while AMORE opens a run's raw and proc data together.

``extra_data.open_run(..., data="all")`` combines the run's ``raw/`` and ``proc/`` directories
with ``DataCollection.union``, which asks, for every source, whether the parts are of the same
run (``extra_data.read_machinery.same_run``: ``proposalNumber`` and ``runNumber`` of the
``METADATA`` of each part's first file). extra-data reads that through h5py's high-level API,
all of the ``METADATA`` group, once per source: ~3.5 ms per file, 0.11 s of CPU for a run of
34 files with corrected data (the benchmark proposal: 32 times what opening ``raw/`` alone
costs with the run files map, and most of B1's time).

:func:`quick_same_run` answers the same question from the same two datasets, read with h5py's
low-level API and remembered per file for the duration of the open (~0.6 ms per file). It
gives extra-data's answer or none: for a part it cannot read this way (format 0.5, a missing
dataset, a file it cannot open), extra-data's own check decides. It is in force only inside
the ``with`` block, and only in modules that still use extra-data's function.

Runs in the user's Python (context workers, Slurm jobs): standard library, numpy, h5py and
extra-data only.
"""
from __future__ import annotations

import contextlib
import os

from backend.facilities.euxfel.filemap import _read


class _Unknown(Exception):
    """This module cannot answer for a part: extra-data's own check decides."""


def _read_first(fid, path: bytes):
    """Element 0 of a dataset (low-level h5py); raises KeyError if it is missing or empty."""
    arr = _read(fid, path)
    if not arr.size:
        raise KeyError(path)
    return arr.flat[0]


def file_run_ids(path: str) -> tuple | None:
    """``(proposalNumber, runNumber)`` of one European XFEL file's ``METADATA`` (ints), None
    where extra-data's ``metadata()`` would lack either (format 0.5 files have neither).
    Raises :class:`_Unknown` if the file cannot be read this way."""
    import h5py
    try:
        fid = h5py.h5f.open(os.fsencode(path), h5py.h5f.ACC_RDONLY)
    except Exception:  # noqa: BLE001 - extra-data says what is wrong with it
        raise _Unknown(path) from None
    try:
        try:
            _read_first(fid, b"METADATA/dataFormatVersion")
        except KeyError:
            return None  # format 0.5: extra-data's metadata() is {"dataFormatVersion": "0.5"}
        try:
            return int(_read_first(fid, b"METADATA/proposalNumber")), \
                int(_read_first(fid, b"METADATA/runNumber"))
        except KeyError:
            return None
    except (ValueError, TypeError, OSError):
        raise _Unknown(path) from None
    finally:
        fid.close()


@contextlib.contextmanager
def quick_same_run():
    """Within the block, extra-data's ``same_run`` (as used by ``DataCollection.union`` and
    ``SourceData.union``) reads each file's run identity once, at low level (see the module
    text); the answer is extra-data's. Not re-entrant across threads: the context worker opens
    one run at a time."""
    try:
        from extra_data import read_machinery, reader, sourcedata
        original = read_machinery.same_run
    except (ImportError, AttributeError):  # another extra-data version: its own check
        yield
        return
    users = [m for m in (reader, sourcedata) if getattr(m, "same_run", None) is original]
    ids: dict[str, tuple | None] = {}

    def part_ids(part) -> tuple | None:
        if not part.is_single_run:
            return None
        path = part.files[0].filename
        if path not in ids:
            ids[path] = file_run_ids(path)
        return ids[path]

    def same_run(*parts) -> bool:
        try:
            found = {part_ids(p) for p in parts}
        except (_Unknown, AttributeError, IndexError):
            return original(*parts)
        return len(found) == 1 and None not in found

    for m in users:
        m.same_run = same_run
    try:
        yield
    finally:
        for m in users:
            m.same_run = original
