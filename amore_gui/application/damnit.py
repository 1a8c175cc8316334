"""A DAMNIT directory opened in a front-end (no Qt): what it is, its table read-only, and the
import that takes the beamtime over.

At European XFEL a proposal's ``usr/Shared/amore`` is DAMNIT's context directory. AMORE never
changes anything in it (:mod:`backend.store.identify`); a front-end asked to open it says so
and offers the ways on:

* :func:`damnit_dir` / :func:`damnit_dir_of` - the :class:`DamnitDir` of a directory, or of the
  error :func:`amore_gui.application.opening.locate` raised for it: its data format, whether
  AMORE can read it, where the import puts AMORE's directory by default and whether one is
  there already;
* :func:`read_table` - DAMNIT's run table as a :class:`~amore_gui.application.table_data.TableData`
  (read in one read transaction that changes nothing: :func:`backend.damnit.values.damnit_table`),
  with its thumbnails;
* :class:`ImportJob` - ``amore-proto import-damnit SRC DEST [--update]`` as a command for the
  front-end to run in a process of its own (Qt: ``QProcess``), and :meth:`ImportJob.feed`
  turning its output into progress (:func:`progress_line`: one JSON object a line, written by
  the command with ``--progress json``) and lines to show.

:func:`damnit_dir` and :func:`read_table` read files: call them off the event loop (the first
only reads a file header and is quick).
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from backend.store.identify import DbKind, describe, identify, import_destination

from amore_gui.application.reprocess import complete_lines
from amore_gui.application.table_data import (K_THUMBNAIL, Column, RunUpdate, TableData,
                                              cell_from_stored)

#: Version of the progress lines of ``amore-proto import-damnit --progress json``.
PROGRESS_VERSION = 1
#: What each stage of the import is called in a front-end.
STAGES = {"runs": "Runs and values", "files": "Run files"}


@dataclass
class DamnitDir:
    """A DAMNIT context directory as a front-end presents it.

    ``path``: the directory; ``data_format``: DAMNIT's data format (DAMNIT 0.4.0 writes 4);
    ``readable``: AMORE reads and imports this format; ``dest``: where the import puts AMORE's
    directory by default (beside DAMNIT's at European XFEL: ``usr/Shared/amore-proto``), None
    when there is no convention; ``message``: what AMORE says about it on the command line
    (what it is, that AMORE does not change it, the import command)."""

    path: Path
    data_format: int
    readable: bool
    dest: Path | None
    message: str

    def dest_has_amore(self, dest: str | os.PathLike | None = None) -> bool:
        """Does ``dest`` (default :attr:`dest`) hold an AMORE database already (open it, or
        bring it up to date with ``--update``)? Reads a file header."""
        d = dest if dest is not None else self.dest
        return d is not None and identify(d).kind is DbKind.AMORE


def damnit_dir(path: str | os.PathLike, dest: str | os.PathLike | None = None) -> DamnitDir | None:
    """The :class:`DamnitDir` of ``path`` (a directory or its ``runs.sqlite``) if it holds a
    DAMNIT database, else None. ``dest``: the import's destination to offer (default: the
    conventional one beside it). Reads the database without changing anything (blocks
    briefly)."""
    from backend.damnit.source import SUPPORTED_FORMATS
    p = Path(path).expanduser().absolute()
    if p.suffix == ".sqlite":
        p = p.parent
    ident = identify(p)
    if ident.kind is not DbKind.DAMNIT:
        return None
    dest = Path(dest) if dest is not None else import_destination(p)
    fmt = int(ident.data_format or 0)
    return DamnitDir(p, fmt, fmt in SUPPORTED_FORMATS, dest, describe(ident, dest))


def damnit_dir_of(error: Exception) -> DamnitDir | None:
    """The :class:`DamnitDir` of the directory an error of
    :func:`amore_gui.application.opening.locate` is about, when that directory holds DAMNIT's
    database (``ForeignDatabaseError``); None for any other error."""
    ident = getattr(error, "identity", None)
    if ident is None or ident.kind is not DbKind.DAMNIT:
        return None
    from backend.damnit.source import SUPPORTED_FORMATS
    fmt = int(ident.data_format or 0)
    dest = getattr(error, "import_dest", None)
    return DamnitDir(ident.path.parent, fmt, fmt in SUPPORTED_FORMATS, dest, str(error))


@dataclass
class DamnitTable:
    """DAMNIT's run table as :func:`read_table` read it: ``data`` (every run and value, in the
    table's columns: computed variables, then user-editable ones), ``proposal``,
    ``thumbnails`` (``(proposal, run, name) -> PNG bytes`` of the thumbnail cells) and
    ``variables`` (the number of variables)."""

    data: TableData
    proposal: int | str | None
    thumbnails: dict = field(default_factory=dict)
    variables: int = 0


def read_table(path: str | os.PathLike) -> DamnitTable:
    """DAMNIT's run table in ``path``, as AMORE shows its own (values converted by
    :mod:`backend.damnit.values`: numbers, text, thumbnails, trendlines as sparklines, errors
    as errors). Nothing in the directory is changed. Raises
    :class:`backend.damnit.source.DamnitError` (the message says why) when ``path`` holds no
    DAMNIT database of a format AMORE reads. Blocks."""
    from backend.damnit.source import DamnitSource
    from backend.damnit.values import damnit_table
    source = DamnitSource(path)
    variables, runs, values = damnit_table(source)
    data = TableData([Column(v.name, v.title or v.name, v.units, v.description, tuple(v.tags))
                      for v in variables], capacity=len(runs) + 1)
    thumbnails = {}
    for info in runs:
        key = (info["proposal"], info["run"])
        upd = RunUpdate(*key, {k: info[k] for k in ("start_time", "added_at", "status",
                                                    "comment")}, complete=True)
        for name, sv in values.get(key, {}).items():
            cell = cell_from_stored(sv.value, sv.summary_type, sv.attributes)
            upd.values[name] = cell
            if cell.kind == K_THUMBNAIL and sv.value:
                thumbnails[(*key, name)] = bytes(sv.value)
        data.apply_update(upd)
    proposal = runs[0]["proposal"] if runs else None
    return DamnitTable(data, proposal, thumbnails, len(variables))


def progress_line(stage: str, done: int, total: int) -> str:
    """One progress line of ``amore-proto import-damnit --progress json`` (JSON, versioned):
    ``stage`` (``runs``, ``files``), ``done`` of ``total``."""
    return json.dumps({"v": PROGRESS_VERSION, "stage": stage, "done": int(done),
                       "total": int(total)})


class ImportJob:
    """``amore-proto import-damnit SRC DEST`` (``update``: ``--update``) as a front-end runs it:
    :attr:`argv` in :attr:`cwd` (never DAMNIT's directory), its merged output given to
    :meth:`feed`, then :meth:`finish` with the exit code.

    State: :attr:`stage`, :attr:`done`, :attr:`total` (the last progress reported),
    :attr:`lines` (what the command said: its summary, or why it failed), :attr:`exit_code`."""

    def __init__(self, src: str | os.PathLike, dest: str | os.PathLike, update: bool = False):
        self.src = Path(src).expanduser().absolute()
        self.dest = Path(dest).expanduser().absolute()
        self.update = update
        self.stage: str | None = None
        self.done = 0
        self.total = 0
        self.lines: list[str] = []
        self.exit_code: int | None = None
        self._buf = b""

    @property
    def argv(self) -> list[str]:
        """The command (``argv[0]`` is this Python)."""
        argv = [sys.executable, "-m", "amore.cli", "import-damnit", str(self.src),
                str(self.dest), "--progress", "json"]
        return argv + (["--update"] if self.update else [])

    @property
    def cwd(self) -> Path:
        """Where to run it: the destination's parent if it exists, else the home directory."""
        parent = self.dest.parent
        return parent if parent.is_dir() else Path.home()

    @property
    def command_text(self) -> str:
        """The command as the user would type it."""
        return (f"amore-proto import-damnit {self.src} {self.dest}"
                + (" --update" if self.update else ""))

    @property
    def stage_text(self) -> str:
        """The current stage for people (``Runs and values``, ``Run files``)."""
        return STAGES.get(self.stage or "", self.stage or "Starting")

    def feed(self, data: bytes) -> list[str]:
        """Take output of the process (any chunk); returns the complete lines to show (progress
        lines are taken, not shown). A partial last line waits for the next chunk."""
        lines, self._buf = complete_lines(self._buf, data)
        out = []
        for line in lines:
            if line.startswith("{"):
                try:
                    msg = json.loads(line)
                except ValueError:
                    msg = None
                if isinstance(msg, dict) and msg.get("v") == PROGRESS_VERSION:
                    self.stage = str(msg.get("stage"))
                    self.done, self.total = int(msg.get("done", 0)), int(msg.get("total", 0))
                    continue
            out.append(line)
        self.lines += out
        return out

    def finish(self, exit_code: int) -> str:
        """The process ended with ``exit_code``: what to say (the command's own last line on
        failure)."""
        self.feed(b"\n")
        self.exit_code = exit_code
        if exit_code == 0:
            return f"{'Updated' if self.update else 'Imported'} into {self.dest}."
        said = [ln for ln in self.lines if ln.strip()]
        prefix = "amore-proto import-damnit: "
        why = said[-1].removeprefix(prefix) if said else f"exit code {exit_code}"
        return f"The import failed: {why}"
