"""Opening and creating context directories, for every front-end and the command line (no Qt).

* :func:`locate` - the context directory meant by a directory path or a proposal (``2832``,
  ``mx2532``), and whether it exists (:class:`backend.locate.Target`).
* :func:`create_context_dir` - create one from a context template (or a given file); a
  directory that already holds a ``context.py`` but no database gets the database around it
  (``amore-proto init``, the GUI's "Create" dialog and the browser share this).
* :func:`templates`, :func:`has_database` - what the "Create" and "Open" dialogs show.

All of these touch the file system (:func:`create_context_dir` writes a database): call them
off the event loop, except :func:`templates`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from backend.contextdir import ContextDir
from backend.locate import LocateError, Target  # noqa: F401  (part of this module's interface)


def locate(arg: str) -> Target:
    """What ``arg`` names: a context directory (or a proposal directory, meaning its AMORE
    folder), or a proposal found under the data root / the facility's layout.
    Returns a :class:`~backend.locate.Target` (``context_dir``, ``proposal`` if known,
    ``exists``: it has a database). Raises :class:`LocateError` (message says what was tried).
    Blocks on the file system (globbing the data root)."""
    from backend.locate import resolve
    return resolve(arg)


def templates() -> list[str]:
    """Names of the context templates a new context directory can start from."""
    import context_templates
    return context_templates.available()


def has_database(context_dir: str | os.PathLike) -> bool:
    """Does ``context_dir`` hold an AMORE database (``runs.sqlite``)?"""
    return ContextDir(context_dir).db_file.exists()


@dataclass
class Created:
    """What :func:`create_context_dir` made: the ``context_file`` (``context.py``) and whether
    it was there before (``kept_context``: only the database and folders were created)."""

    context_dir: Path
    context_file: Path
    kept_context: bool


def create_context_dir(context_dir: str | os.PathLike, proposal: int | str,
                       template: str | None = None, context_file: Path | None = None,
                       facility: str | None = None, root: str | None = None) -> Created:
    """Create a context directory for ``proposal`` (:func:`backend.store.init.init_context_dir`):
    ``runs.sqlite``, ``context.py`` from ``template`` (or a copy of ``context_file``),
    ``extracted_data/`` and, with ``facility``, its ``amore.toml``. A ``context.py`` already
    there without a database is kept (unless ``context_file`` is given): only the rest is
    created.

    Raises ``FileExistsError`` if the directory already has a context file and a database (or
    a context file and ``context_file`` is given),
    :class:`backend.store.writer.StorageError` if a database there belongs to another proposal,
    ``KeyError`` for an unknown template or facility. Blocks (writes files and the database)."""
    from backend.store.init import init_context_dir
    paths = ContextDir(context_dir)
    kept = paths.context_file.exists()
    ctx = init_context_dir(paths.path, proposal, template, context_file, facility=facility,
                           root=root, keep_context=context_file is None)
    return Created(paths.path, ctx, kept)
