"""Creating a context directory (``amore-proto init``, the GUI's "Create" dialog, the demo)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import context_templates
from backend.contextdir import ContextDir
from backend.files import restrict_umask, share_like_dir
from backend.store.writer import RunDB


def init_context_dir(context_dir: str | os.PathLike, proposal: int, template: str = "generic",
                     context_file: Path | None = None) -> Path:
    """Create a context directory: ``runs.sqlite`` for ``proposal``, ``context.py`` from a
    template of :mod:`context_templates` (or a given file) and ``extracted_data/``.

    Returns the path of the new ``context.py``. Raises ``FileExistsError`` if a context file
    already exists, :class:`backend.store.writer.StorageError` if the database belongs to another
    proposal, ``KeyError`` for an unknown template.
    """
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
    # a proposal group shares usr/Shared/amore: what we create is group-writable where it is
    for p in (db.path, ctx, cd.extracted_dir):
        share_like_dir(p)
    return ctx
