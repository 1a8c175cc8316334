"""Creating a context directory (``amore-proto init``, the GUI's "Create" dialog, the demo)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import context_templates
from backend.contextdir import ContextDir
from backend.files import restrict_umask, share_like_dir
from backend.store.identify import NotAmoreDatabase, check_amore_db
from backend.store.writer import ForeignDatabase, RunDB


def facility_toml(facility: str, proposal, root: str | None = None) -> str:
    """The ``amore.toml`` that ``amore-proto init --facility F`` writes: the facility and its
    settings (:meth:`backend.facilities.Facility.amore_toml`), with placeholders the user
    edits. ``root``: the facility's data folder (ESRF beamtime folder, SwissFEL pgroup
    directory). Raises :class:`backend.facilities.FacilityError` (a ``KeyError``) for an unknown
    facility."""
    from backend.facilities import get, toml_str
    plugin = get(facility)
    return "\n".join(["# AMORE settings of this context directory (see docs/facilities.rst)",
                      f"facility = {toml_str(plugin.name)}", "",
                      plugin.amore_toml(proposal, root)])


def init_context_dir(context_dir: str | os.PathLike, proposal: int | str, template: str | None = None,
                     context_file: Path | None = None, facility: str | None = None,
                     root: str | None = None, keep_context: bool = False) -> Path:
    """Create a context directory: ``runs.sqlite`` for ``proposal``, ``context.py`` from a
    template of :mod:`context_templates` (or a given file) and ``extracted_data/``. With
    ``facility`` (a name of :func:`backend.facilities.names`) also ``amore.toml`` for it (kept if
    one exists) and, unless a template is named, that facility's template
    (:attr:`~backend.facilities.Facility.context_template`).

    ``keep_context``: a directory holding a ``context.py`` but no database yet (copied from
    elsewhere, or the database deleted) gets the rest around its context file, which is kept.

    Returns the path of the ``context.py``. Raises ``FileExistsError`` if a context file
    already exists (with ``keep_context``: if the database exists too),
    :class:`backend.store.writer.StorageError` if the database belongs to another proposal,
    :class:`backend.store.writer.ForeignDatabase` (nothing created) if the directory holds a
    database that is not AMORE's (DAMNIT's), ``KeyError`` for an unknown template or facility.
    """
    plugin = None
    if facility is not None:
        from backend.facilities import get
        plugin = get(facility)   # raises FacilityError (a KeyError) for an unknown one
    if template is None:
        template = plugin.context_template if plugin is not None else "generic"
    cd = ContextDir(context_dir)
    # A directory holding another program's database (DAMNIT's) is left as it is: nothing is
    # created in it (ForeignDatabase says what it is and what to do).
    try:
        check_amore_db(cd.db_file, allow_empty=True)
    except NotAmoreDatabase as e:
        raise ForeignDatabase(str(e), e.identity) from None
    # Never world-writable; group-writable only under a group-shared directory, whatever the
    # umask (the directories created here take the sharing of the nearest existing one).
    existing = cd.path.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    restrict_umask(existing)
    cd.path.mkdir(parents=True, exist_ok=True)
    ctx = cd.context_file
    src = context_file if context_file is not None else context_templates.path(template)
    kept = ctx.exists()
    if kept and (not keep_context or cd.db_file.exists()):
        raise FileExistsError(f"{ctx} already exists; not overwriting it")
    db = RunDB.create(cd.path, proposal)
    db.close()
    if not kept:
        shutil.copyfile(src, ctx)
    cd.extracted_dir.mkdir(exist_ok=True)
    made = [db.path, cd.extracted_dir] + ([] if kept else [ctx])
    if facility is not None:
        toml = cd.path / "amore.toml"
        if not toml.exists():
            toml.write_text(facility_toml(facility, proposal, root))
            made.append(toml)
    # a proposal group shares its context directory: what we create is group-writable where it is
    for p in made:
        share_like_dir(p)
    return ctx
