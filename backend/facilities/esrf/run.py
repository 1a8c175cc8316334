"""ESRF, worker side (runs in the user's Python): a collection is a
:class:`~backend.ctxrunner.facilities.FacilityRun` with its ``metadata.json`` (``metadata``), its
``data_dir`` (after path prefix rewriting) and its data ``files``; ``meta#`` adds
:data:`META_KEYS` from what the run source recorded."""
from __future__ import annotations

from backend.ctxrunner.facilities import OpenedRun, RunRequest, open_facility_run

#: ``meta#`` keys of an ESRF collection beyond run_number, proposal and proposal_path.
META_KEYS = ("metadata", "tag", "sample", "data_dir", "start_time", "stop_time")


def open_run(request: RunRequest) -> OpenedRun:
    """The collection of ``request`` as the context file's first argument."""
    return open_facility_run("esrf", request, META_KEYS, "metadata.json")
