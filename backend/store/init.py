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


def toml_str(s: str) -> str:
    """A TOML basic string holding ``s``."""
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'


def facility_toml(facility: str, proposal, root: str | None = None) -> str:
    """The ``amore.toml`` that ``amore-proto init --facility F`` writes: the facility and its
    settings (see :data:`backend.config.DEFAULTS`), with placeholders the user edits. ``root``:
    the ESRF beamtime folder / SwissFEL pgroup directory."""
    lines = ["# AMORE settings of this context directory (see README: Facilities)",
             f"facility = {toml_str(facility)}", ""]
    if facility == "ess":
        lines += ["[kafka]", "# broker = \"host:9092\"    # or AMORE_BROKER", "",
                  "[ess]", 'topics = ["ymir_filewriter"]',
                  "run_number_pattern = '_(\\d+)\\.(?:hdf|nxs|h5)$'",
                  "# file_root = \"\"   # directory relative file names are under", "",
                  "# [columns.temperature]", '# hdf5 = "/entry/sample/temperature"',
                  '# type = "number"', '# reduce = "mean"']
    elif facility == "esrf":
        lines += ["[esrf]", f"root = {toml_str(root or f'/data/visitor/{proposal}')}",
                  'attributo_config = "attributo-config.json"', 'path_prefix = ""',
                  'path_prefix_replacement = ""']
    elif facility == "swissfel":
        lines += ["[swissfel]", f"root = {toml_str(root or f'/sf/BEAMLINE/data/{proposal}')}",
                  "", "# [columns.rate]", '# key = "rate_multiplicator"', '# type = "integer"']
    else:
        lines += ["[euxfel]", "online = false   # also the online cluster's per-instrument topics"]
    return "\n".join(lines) + "\n"


def init_context_dir(context_dir: str | os.PathLike, proposal: int | str, template: str | None = None,
                     context_file: Path | None = None, facility: str | None = None,
                     root: str | None = None, keep_context: bool = False) -> Path:
    """Create a context directory: ``runs.sqlite`` for ``proposal``, ``context.py`` from a
    template of :mod:`context_templates` (or a given file) and ``extracted_data/``. With
    ``facility`` (``euxfel``, ``ess``, ``esrf``, ``swissfel``) also ``amore.toml`` for it (kept if
    one exists) and, unless a template is named, that facility's template (``generic`` at
    European XFEL).

    ``keep_context``: a directory holding a ``context.py`` but no database yet (copied from
    elsewhere, or the database deleted) gets the rest around its context file, which is kept.

    Returns the path of the ``context.py``. Raises ``FileExistsError`` if a context file
    already exists (with ``keep_context``: if the database exists too),
    :class:`backend.store.writer.StorageError` if the database belongs to another proposal,
    :class:`backend.store.writer.ForeignDatabase` (nothing created) if the directory holds a
    database that is not AMORE's (DAMNIT's), ``KeyError`` for an unknown template or facility.
    """
    from backend.vocab import FACILITIES
    if facility is not None and facility not in FACILITIES:
        raise KeyError(f"unknown facility {facility!r}; one of {', '.join(FACILITIES)}")
    if template is None:
        template = facility if facility not in (None, "euxfel") else "generic"
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
