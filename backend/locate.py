"""Finding a context directory from a proposal number or a path (plain Python).

Used by the GUI (``amore-proto gui 2832``), the read API (``amore.api.open(2832)``) and the
command line. ``2832`` means the AMORE context directory of proposal 2832 in its proposal
directory, found under the data root (``[data] root`` in the configuration or
``$EXTRA_DATA_DATA_ROOT``, default ``/gpfs/exfel/exp``) as extra-data finds it:

* ``<proposal dir>/usr/Shared/amore-proto`` (the site setting ``[euxfel] context_subdir``):
  where new AMORE directories go;
* ``<proposal dir>/usr/Shared/amore`` (``[euxfel] damnit_subdir``) when it holds an AMORE
  database made there before (and ``amore-proto`` has none): it keeps working there. When it
  holds DAMNIT's database, that is DAMNIT's directory: AMORE never changes it
  (:attr:`Target.damnit_dir` names it; ``amore-proto import-damnit`` takes it over).

:func:`resolve` also refuses a directory whose ``runs.sqlite`` is not AMORE's (DAMNIT's, a newer
AMORE's, something else) with :class:`ForeignDatabaseError`, whose message says what it is and
what to do; nothing in that directory is changed (:mod:`backend.store.identify`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from backend.config import Config, load_config
from backend.contextdir import ContextDir, proposal_dir_name, proposal_of_dir_name
from backend.store.identify import DbKind, describe, identify, import_destination


class LocateError(Exception):
    """The proposal or directory cannot be found; the message says what was tried."""


class ForeignDatabaseError(LocateError):
    """The directory holds a database AMORE did not create (DAMNIT's, a newer AMORE's,
    something else); nothing there is changed. ``identity``: the
    :class:`backend.store.identify.DbIdentity`; ``import_dest``: where ``amore-proto
    import-damnit`` would put the AMORE directory of a DAMNIT directory (or None)."""

    def __init__(self, message: str, identity, import_dest: Path | None = None):
        super().__init__(message)
        self.identity = identity
        self.import_dest = import_dest


@dataclass
class Target:
    """What to open: ``context_dir``; ``proposal`` when known (from a proposal number or the
    database); ``exists``: the directory has a ``runs.sqlite``; ``damnit_dir``: the proposal's
    DAMNIT directory when the AMORE directory was chosen beside it (a DAMNIT database in
    ``usr/Shared/amore``), else None."""

    context_dir: Path
    proposal: int | str | None = None
    damnit_dir: Path | None = None

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
    matches = sorted(root.glob(f"*/*/{proposal_dir_name(proposal)}"))
    return matches[0] if matches else None


def context_dir_in(proposal_dir: str | os.PathLike, config: Config | None = None) -> Target:
    """The AMORE context directory of a European XFEL proposal directory (see the module
    docstring): ``<context_subdir>`` (``usr/Shared/amore-proto``) unless only
    ``<damnit_subdir>`` (``usr/Shared/amore``) holds an AMORE database. ``damnit_dir`` is set
    when ``<damnit_subdir>`` holds DAMNIT's. Nothing is created or changed."""
    cfg = config or load_config(None)
    pdir = Path(proposal_dir)
    new, old = pdir / cfg.context_subdir, pdir / cfg.damnit_subdir
    proposal = int(pdir.name[1:]) if pdir.name[:1] == "p" and pdir.name[1:].isdigit() else None
    if ContextDir(new).db_file.is_file() or new == old:
        return Target(new, proposal)
    kind = identify(old).kind
    if kind in (DbKind.AMORE, DbKind.AMORE_NEWER):
        return Target(old, proposal)
    return Target(new, proposal, damnit_dir=old if kind is DbKind.DAMNIT else None)


def proposal_context_dir(proposal: int) -> Path:
    """The AMORE context directory of a European XFEL proposal (:func:`context_dir_in`: by
    default ``<proposal dir>/usr/Shared/amore-proto``); raises :class:`LocateError` if the
    proposal directory is not under the data root."""
    return _proposal_target(int(proposal)).context_dir


def _proposal_target(proposal: int) -> Target:
    cfg = load_config(None)
    pdir = find_proposal_dir(int(proposal), cfg)
    if pdir is None:
        raise LocateError(f"Proposal {proposal} not found under {data_root()} "
                          f"(looked for */*/{proposal_dir_name(proposal)}; "
                          f"set EXTRA_DATA_DATA_ROOT?)")
    t = context_dir_in(pdir, cfg)
    t.proposal = int(proposal)
    return t


def check_target(target: Target) -> Target:
    """``target`` itself if its directory has no database or AMORE's own; raises
    :class:`ForeignDatabaseError` (saying what the database is and what to do) otherwise."""
    ident = identify(target.context_dir)
    if ident.kind in (DbKind.AMORE, DbKind.MISSING):
        return target
    dest = import_destination(target.context_dir) if ident.kind is DbKind.DAMNIT else None
    raise ForeignDatabaseError(describe(ident, dest), ident, dest)


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

    A proposal number or a proposal directory (``.../p002832``) means its AMORE context
    directory (:func:`context_dir_in`). Raises :class:`LocateError` for an unknown proposal,
    :class:`ForeignDatabaseError` for a directory holding a database that is not AMORE's.
    """
    return check_target(_resolve(arg))


def _resolve(arg: str | os.PathLike) -> Target:
    s = str(arg).strip()
    found = facility_context_dir(s) if not Path(s).exists() else None
    if found is not None:
        return found
    num = s[1:] if s[:1] in "pP" and s[1:].isdigit() else s
    if num.isdigit() and not Path(s).exists():
        return _proposal_target(int(num))
    d = Path(s).expanduser().resolve()
    if proposal_of_dir_name(d.name) is not None and (d / "raw").is_dir():
        return context_dir_in(d)
    proposal = None
    if d.is_file() and d.suffix == ".sqlite":
        d = d.parent
    cfg = load_config(None)
    for parent in d.parents:
        if proposal_of_dir_name(parent.name) is not None and \
                d in (parent / cfg.context_subdir, parent / cfg.damnit_subdir):
            proposal = proposal_of_dir_name(parent.name)
    return Target(d, proposal)
