"""Finding a context directory from a proposal number or a path (plain Python).

Used by the GUI (``amore-proto gui 2832``), the read API (``amore.api.open(2832)``) and the
command line. ``2832`` means ``<proposal dir>/usr/Shared/amore`` of proposal 2832, the
proposal directory found under the data root (``[data] root`` in the configuration or
``$EXTRA_DATA_DATA_ROOT``, default ``/gpfs/exfel/exp``) as extra-data finds it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from backend.config import CONTEXT_SUBDIR, Config, load_config
from backend.contextdir import ContextDir


class LocateError(Exception):
    """The proposal or directory cannot be found; the message says what was tried."""


@dataclass
class Target:
    """What to open: ``context_dir``; ``proposal`` when known (from a proposal number or the
    database); ``exists``: the directory has a ``runs.sqlite``."""

    context_dir: Path
    proposal: int | str | None = None

    @property
    def exists(self) -> bool:
        return ContextDir(self.context_dir).db_file.is_file()


def data_root() -> Path:
    """The data root the backend uses (site configuration, then ``$EXTRA_DATA_DATA_ROOT``)."""
    return load_config(None).effective_data_root()


def find_proposal_dir(proposal: int | str, config: Config) -> Path | None:
    """``<root>/<INSTRUMENT>/<CYCLE>/p<proposal:06d>`` under the data root, or None (also for
    proposals that are not numbers: European XFEL's layout has numbers only)."""
    if not isinstance(proposal, int):
        return None
    root = config.effective_data_root()
    matches = sorted(root.glob(f"*/*/p{proposal:06d}"))
    return matches[0] if matches else None


def proposal_context_dir(proposal: int) -> Path:
    """``<proposal dir>/usr/Shared/amore``; raises :class:`LocateError` if the proposal
    directory is not under the data root."""
    cfg = load_config(None)
    pdir = find_proposal_dir(int(proposal), cfg)
    if pdir is None:
        raise LocateError(f"Proposal {proposal} not found under {data_root()} "
                          f"(looked for */*/p{int(proposal):06d}; set EXTRA_DATA_DATA_ROOT?)")
    return pdir / CONTEXT_SUBDIR


def facility_context_dir(proposal: str) -> Target | None:
    """Where the site's facility (``facility`` in the site configuration) keeps the context
    directory of ``proposal``, by its convention
    (:meth:`backend.facilities.Facility.context_dir_glob`; e.g. ESRF
    ``<esrf.visitor_root>/<proposal>/<beamline>/<session>/PROCESSED_DATA/amore``, the newest
    session with a database). None where the facility's proposals follow the proposal
    directory convention (numbers: European XFEL, ESS) or when nothing matches."""
    from backend.facilities import get
    from backend.vocab import normalize_proposal
    try:
        cfg = load_config(None)
        pattern = get(cfg.facility).context_dir_glob(cfg, normalize_proposal(proposal))
    except Exception:
        return None
    if pattern is None:
        return None
    root, glob = pattern
    proposal = normalize_proposal(proposal)
    found = sorted((p for p in root.glob(glob) if ContextDir(p).db_file.is_file()),
                   key=lambda p: str(p))
    if not found:
        raise LocateError(f"No AMORE context directory for {proposal} under {root} "
                          f"(looked for {glob})")
    return Target(found[-1], proposal)


def resolve(arg: str | os.PathLike) -> Target:
    """A proposal number (``"2832"``, ``"p2832"``, ``"p002832"``) or a directory -> :class:`Target`.

    A directory that is a proposal directory (``.../p002832``) means its ``usr/Shared/amore``.
    Raises :class:`LocateError` for an unknown proposal.
    """
    s = str(arg).strip()
    found = facility_context_dir(s) if not Path(s).exists() else None
    if found is not None:
        return found
    num = s[1:] if s[:1] in "pP" and s[1:].isdigit() else s
    if num.isdigit() and not Path(s).exists():
        p = int(num)
        return Target(proposal_context_dir(p), p)
    d = Path(s).expanduser().resolve()
    if d.name.startswith("p") and d.name[1:].isdigit() and (d / "raw").is_dir():
        return Target(d / CONTEXT_SUBDIR, int(d.name[1:]))
    proposal = None
    if d.is_file() and d.suffix == ".sqlite":
        d = d.parent
    for parent in d.parents:
        if parent.name.startswith("p") and parent.name[1:].isdigit() and \
                d == parent / CONTEXT_SUBDIR:
            proposal = int(parent.name[1:])
    return Target(d, proposal)
