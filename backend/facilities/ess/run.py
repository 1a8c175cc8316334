"""ESS, worker side (runs in the user's Python): the run is its NeXus file, an ``h5py.File``
opened read-only (:func:`open_ess_file` retries while the file writer still holds it); ``meta#``
adds :data:`META_KEYS` from what the file writer's messages said; ``hdf5`` metadata columns read
the same file."""
from __future__ import annotations

import glob
import os
import time

from backend.ctxrunner.facilities import (OpenedRun, RunNotReady, RunRequest, meta_for,
                                          recorded_info)
from backend.vocab import normalize_proposal

#: ``meta#`` keys of an ESS run beyond run_number, proposal and proposal_path.
META_KEYS = ("run_name", "instrument", "start_time", "stop_time", "file_name", "job_id",
             "metadata")


def open_ess_file(path: str | os.PathLike, retries: int = 5, delay: float = 1.0):
    """Open an ESS NeXus file read-only with h5py.

    A file the file writer still holds (HDF5's file lock, "unable to lock file", or a truncated
    superblock while it is being closed) is retried ``retries`` times, ``delay`` seconds apart.
    Raises :class:`RunNotReady` naming the file and the last error.
    """
    import h5py
    last = None
    for attempt in range(max(int(retries), 0) + 1):
        try:
            return h5py.File(path, "r")
        except FileNotFoundError as e:
            last = e
        except OSError as e:
            last = e
        if attempt < retries:
            time.sleep(delay)
    raise RunNotReady(f"cannot open {path} after {retries + 1} attempt(s): {last}")


def open_run(request: RunRequest) -> OpenedRun:
    """The run's NeXus file (``info["file"]``, as the file writer named it), opened with the
    retries of ``request.options`` (``open_retries``, ``open_retry_seconds``). Raises
    :class:`RunNotReady`."""
    info = recorded_info(request, "ess")
    proposal = normalize_proposal(request.proposal)
    meta = meta_for(info, proposal, request.run, META_KEYS)
    path = info.get("file")
    if not path:
        raise RunNotReady("the file writer named no file for this run")
    options = request.options or {}
    f = open_ess_file(path, int(options.get("open_retries", 5)),
                      float(options.get("open_retry_seconds", 1.0)))
    return OpenedRun(f, proposal, str(info.get("proposal_path", "")), request.data,
                     info.get("start_time"), meta, lambda: meta.get("metadata") or {},
                     "the pl72 metadata", h5file=f, close=f.close,
                     data_locations={"raw": [glob.escape(str(path))]})
