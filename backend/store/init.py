"""Creating a context directory (``amore-proto init``, the GUI's "Create" dialog, the demo)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import context_templates
from backend.contextdir import ContextDir
from backend.files import restrict_umask, share_like_dir
from backend.store.writer import RunDB


def facility_toml(facility: str, proposal, root: str | None = None) -> str:
    """The ``amore.toml`` that ``amore-proto init --facility F`` writes: the facility and its
    settings (:meth:`backend.facilities.Facility.amore_toml`), with placeholders the user
    edits. ``root``: the facility's data folder (ESRF beamtime folder, SwissFEL pgroup
    directory). Raises :class:`backend.facilities.FacilityError` (a ``KeyError``) for an unknown
    facility."""
    from backend.facilities import get, toml_str
    plugin = get(facility)
    return "\n".join(["# AMORE settings of this context directory (see README: Facilities)",
                      f"facility = {toml_str(plugin.name)}", "",
                      plugin.amore_toml(proposal, root)])


def init_context_dir(context_dir: str | os.PathLike, proposal: int | str, template: str | None = None,
                     context_file: Path | None = None, facility: str | None = None,
                     root: str | None = None) -> Path:
    """Create a context directory: ``runs.sqlite`` for ``proposal``, ``context.py`` from a
    template of :mod:`context_templates` (or a given file) and ``extracted_data/``. With
    ``facility`` (a name of :func:`backend.facilities.names`) also ``amore.toml`` for it (kept if
    one exists) and, unless a template is named, that facility's template
    (:attr:`~backend.facilities.Facility.context_template`).

    Returns the path of the new ``context.py``. Raises ``FileExistsError`` if a context file
    already exists, :class:`backend.store.writer.StorageError` if the database belongs to another
    proposal, ``KeyError`` for an unknown template or facility.
    """
    plugin = None
    if facility is not None:
        from backend.facilities import get
        plugin = get(facility)   # raises FacilityError (a KeyError) for an unknown one
    if template is None:
        template = plugin.context_template if plugin is not None else "generic"
    cd = ContextDir(context_dir)
    # Never world-writable; group-writable only under a group-shared directory, whatever the
    # umask (the directories created here take the sharing of the nearest existing one).
    existing = cd.path.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    restrict_umask(existing)
    cd.path.mkdir(parents=True, exist_ok=True)
    ctx = cd.context_file
    src = context_file if context_file is not None else context_templates.path(template)
    if ctx.exists():
        raise FileExistsError(f"{ctx} already exists; not overwriting it")
    db = RunDB.create(cd.path, proposal)
    db.close()
    shutil.copyfile(src, ctx)
    cd.extracted_dir.mkdir(exist_ok=True)
    made = [db.path, ctx, cd.extracted_dir]
    if facility is not None:
        toml = cd.path / "amore.toml"
        if not toml.exists():
            toml.write_text(facility_toml(facility, proposal, root))
            made.append(toml)
    # a proposal group shares usr/Shared/amore: what we create is group-writable where it is
    for p in made:
        share_like_dir(p)
    return ctx
