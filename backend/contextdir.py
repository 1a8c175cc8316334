"""A context directory: every path AMORE keeps for one proposal, named once.

By convention a European XFEL proposal's context directory is
``<proposal>/usr/Shared/amore-proto`` (:data:`backend.config.CONTEXT_SUBDIR`; DAMNIT keeps
``usr/Shared/amore``, where AMORE directories made earlier keep working); the proposal directory
itself is named :func:`proposal_dir_name` (``p002832``). It holds:

=========================  ===================================================================
``context.py``             the user's context file (variables to compute from a run)
``amore.toml``             optional per-proposal configuration (see :mod:`backend.config`)
``runs.sqlite``            the run table (source of truth; one writer, the backend)
``extracted_data/``        every variable's full result per run, ``p<proposal>_r<run>.h5``
``amore.log``              the backend's log
``amore-tmux.sock``        while the backend runs: the tmux server it runs in
``backend-status.json``    the backend's status record (host, PID, heartbeat)
``.amore-backend.lock``    held (flock) by the running backend
``slurm/``                 Slurm jobs: ``jobs/`` (one record per submitted job), ``specs/``
                           (what each job computes), ``results/`` (table values a job hands
                           over), ``logs/`` (each job's output, per run)
=========================  ===================================================================

This module is pure standard library: the context-file worker (in the user's Python) uses it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CONTEXT_FILE_NAME = "context.py"
CONFIG_FILE_NAME = "amore.toml"
DB_FILE_NAME = "runs.sqlite"
EXTRACTED_DIR_NAME = "extracted_data"
LOG_FILE_NAME = "amore.log"
TMUX_SOCKET_NAME = "amore-tmux.sock"
STATUS_FILE_NAME = "backend-status.json"
LOCK_FILE_NAME = ".amore-backend.lock"


@dataclass(frozen=True)
class ContextDir:
    """The paths of one context directory.

    ``ContextDir(path)`` accepts the directory (``str`` or ``os.PathLike``; ``~`` is expanded,
    the path made absolute). Nothing is created or checked; :func:`init_context_dir` creates one.
    """

    path: Path

    def __init__(self, path: str | os.PathLike):
        object.__setattr__(self, "path", Path(path).expanduser().absolute())

    @property
    def context_file(self) -> Path:
        """The user's ``context.py``."""
        return self.path / CONTEXT_FILE_NAME

    @property
    def config_file(self) -> Path:
        """``amore.toml`` (may not exist)."""
        return self.path / CONFIG_FILE_NAME

    @property
    def db_file(self) -> Path:
        """``runs.sqlite``."""
        return self.path / DB_FILE_NAME

    @property
    def extracted_dir(self) -> Path:
        """``extracted_data/``, one HDF5 file per run."""
        return self.path / EXTRACTED_DIR_NAME

    def run_file(self, proposal: int | str, run: int) -> Path:
        """``extracted_data/p<proposal>_r<run>.h5``: every variable's full result for one run."""
        return self.extracted_dir / f"p{proposal}_r{run}.h5"

    @property
    def log_file(self) -> Path:
        """``amore.log``."""
        return self.path / LOG_FILE_NAME

    @property
    def tmux_socket(self) -> Path:
        """``amore-tmux.sock``: the tmux server the managed backend runs in."""
        return self.path / TMUX_SOCKET_NAME

    @property
    def status_file(self) -> Path:
        """``backend-status.json``: the running backend's status record."""
        return self.path / STATUS_FILE_NAME

    @property
    def lock_file(self) -> Path:
        """``.amore-backend.lock``: held by the running backend."""
        return self.path / LOCK_FILE_NAME

    @property
    def slurm_dir(self) -> Path:
        """``slurm/``: everything about Slurm jobs of this directory."""
        return self.path / "slurm"

    @property
    def slurm_jobs_dir(self) -> Path:
        """``slurm/jobs/``: one JSON record per submitted job (``<job id>.json``)."""
        return self.slurm_dir / "jobs"

    @property
    def slurm_specs_dir(self) -> Path:
        """``slurm/specs/``: the JSON spec each job reads (runs, variables)."""
        return self.slurm_dir / "specs"

    @property
    def slurm_results_dir(self) -> Path:
        """``slurm/results/``: table values a job hands to the backend (JSON per run)."""
        return self.slurm_dir / "results"

    @property
    def slurm_logs_dir(self) -> Path:
        """``slurm/logs/``: each job's output log, per run."""
        return self.slurm_dir / "logs"

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)


def db_file(context_dir: str | os.PathLike) -> Path:
    """``runs.sqlite`` of a context directory, or ``context_dir`` itself when it names a
    ``.sqlite`` file."""
    p = Path(context_dir)
    return p if p.suffix == ".sqlite" else ContextDir(p).db_file


def proposal_dir_name(proposal: int | str) -> str:
    """The name of a proposal's directory at European XFEL (and ESS), under
    ``<data root>/<INSTRUMENT>/<CYCLE>/``: ``p`` and the number in six digits (``2832`` ->
    ``"p002832"``), as extra-data's ``find_proposal`` takes it. Raises ValueError for a
    proposal that is not a number (such as ESRF's ``"mx2532"``)."""
    return f"p{int(proposal):06d}"


def proposal_of_dir_name(name: str) -> int | None:
    """The proposal number of a proposal directory's name (``"p002832"`` -> 2832; the digits
    need not be six), or None for any other name."""
    return int(name[1:]) if name[:1] == "p" and name[1:].isdigit() else None
