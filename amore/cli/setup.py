"""``amore-proto init`` and ``amore-proto proposal``: creating a context directory and naming its proposal."""
from __future__ import annotations

import sys
from pathlib import Path

from amore.cli.common import context_dir
from backend.contextdir import ContextDir
from backend.facilities import names as facility_names
from backend.vocab import normalize_proposal


def _init_dir(a) -> Path:
    """Where ``init`` creates the context directory: DIR; without it, for a European XFEL
    proposal found under the data root, its conventional AMORE directory
    (``<proposal>/usr/Shared/amore-proto``, :func:`backend.locate.context_dir_in`); else the
    current directory."""
    if a.dir or a.facility not in (None, "euxfel") or not isinstance(a.proposal, int):
        return context_dir(a.dir)
    from backend.config import load_config
    from backend.locate import context_dir_in, find_proposal_dir
    cfg = load_config(None)
    pdir = find_proposal_dir(a.proposal, cfg)
    return context_dir_in(pdir, cfg).context_dir if pdir is not None else context_dir(None)


def cmd_init(a) -> int:
    # the one way every front-end creates a context directory (SQLAlchemy: imported only here)
    from amore_gui.application.opening import create_context_dir
    from backend.store.writer import StorageError
    d = _init_dir(a)
    try:
        made = create_context_dir(d, a.proposal, a.template,
                                  Path(a.context) if a.context else None,
                                  facility=a.facility, root=a.root)
    except (FileExistsError, StorageError, KeyError, ValueError) as e:
        print(f"amore-proto init: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 1
    extra = f" ({a.facility}; settings in {d / 'amore.toml'})" if a.facility else ""
    kept = f" (kept the existing {made.context_file.name})" if made.kept_context else ""
    print(f"Initialised {d} for proposal {a.proposal}{extra}{kept}; edit {made.context_file} to "
          f"define variables, then run 'amore-proto listen {d}'")
    return 0


def cmd_proposal(a) -> int:
    from backend.store.writer import RunDB, StorageError
    d = context_dir(a.dir)
    try:
        if a.proposal is None:
            db = RunDB(d)
            print(db.proposal if db.proposal is not None else "(no proposal set)")
        else:
            db = RunDB(d) if ContextDir(d).db_file.exists() else RunDB.create(d)
            old = db.proposal
            db.set_metadata("proposal", str(normalize_proposal(a.proposal)))
            print(f"Proposal set to {a.proposal}" + (f" (was {old})" if old not in (None, a.proposal) else ""))
    except StorageError as e:
        print(f"amore-proto proposal: {e}", file=sys.stderr)
        return 1
    return 0


def _proposal(text: str):
    import argparse
    try:
        return normalize_proposal(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def register(sub) -> None:
    """Add this module's commands to the ``amore-proto`` sub-parsers."""
    s = sub.add_parser("init", help="create a context directory")
    s.add_argument("dir", nargs="?", help="the directory (default: for a European XFEL proposal "
                   "its <proposal>/usr/Shared/amore-proto, else the current directory)")
    s.add_argument("--proposal", type=_proposal, required=True,
                   help="proposal: a number (2832) or an identifier (mx2532, p18493)")
    s.add_argument("--facility", choices=facility_names(),
                   help="write amore.toml for this facility (and use its context template)")
    s.add_argument("--root", help="the facility's data folder for amore.toml (ESRF beamtime "
                                  "folder, SwissFEL pgroup directory)")
    s.add_argument("--template", default=None,
                   help="context template (generic, mid, spb, ess, esrf, swissfel)")
    s.add_argument("--context", help="use this context.py instead of a template")
    s.set_defaults(func=cmd_init)
    s = sub.add_parser("proposal", help="show or set the proposal of the database")
    s.add_argument("proposal", nargs="?", type=_proposal)
    s.add_argument("--dir", "-d")
    s.set_defaults(func=cmd_proposal)
