"""SwissFEL, worker side (runs in the user's Python): an acquisition is a
:class:`~backend.ctxrunner.facilities.FacilityRun` with its request JSON (``metadata``, unknown
fields kept), its ``data_dir`` and its data ``files``; ``meta#`` adds :data:`META_KEYS` from what
the run source recorded."""
from __future__ import annotations

from backend.ctxrunner.facilities import OpenedRun, RunRequest, open_facility_run

#: ``meta#`` keys of a SwissFEL run beyond run_number, proposal and proposal_path.
META_KEYS = ("metadata", "data_dir", "start_time", "pgroup", "beamline")


def open_run(request: RunRequest) -> OpenedRun:
    """The acquisition of ``request`` as the context file's first argument."""
    return open_facility_run("swissfel", request, META_KEYS, "the request JSON")
