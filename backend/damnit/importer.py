"""``amore-proto import-damnit SRC [DEST] [--update]``: a DAMNIT context directory into a new
AMORE directory, leaving DAMNIT's directory byte for byte as it was.

What comes across (:func:`import_damnit`):

* every run (``run_info``: start time, when DAMNIT heard of it); runs with values are ``done``
  ("imported from DAMNIT"), the others ``pending``;
* every computed value, as AMORE shows its own (:mod:`backend.damnit.values`: numbers, text,
  thumbnails, sparklines, errors as errors, skipped as skipped), with the provenance "imported
  from DAMNIT" (an ``evaluations`` row of origin ``damnit`` naming DAMNIT's context file by its
  SHA-256): such a value counts as stale only once its code differs from the context file's
  (:mod:`backend.store.provenance`);
* the stored data behind them: ``extracted_data/p<P>_r<R>.h5`` copied whole (DAMNIT's file is
  only read), readable through ``amore.api`` and the GUI's inspection window
  (:func:`backend.ctxrunner.results.read_run_value` reads DAMNIT's groups);
* run comments (DAMNIT's ``comment`` variable) and time comments (with their times);
* variable titles, descriptions, tags and units (units from the values' attributes);
* user-editable variables as manual columns of the matching type, with their values
  (:mod:`backend.damnit.user_columns`; the history says ``via import`` by ``DAMNIT import``);
* ``context.py`` (it runs in AMORE unchanged), ``zulip.cfg`` (logbook posting; not readable by
  others), and the settings that mean something in AMORE, written to ``amore.toml``:
  ``context_python`` -> ``[processing] context_python``, ``concurrent_jobs`` ->
  ``[slurm] max_concurrent``, ``slurm_time`` -> ``[slurm] time``, ``slurm_partition`` ->
  ``[slurm] partition``, ``slurm_reservation`` -> ``[slurm] extra_args``.

``--update`` (:func:`import_damnit` with ``update=True``) brings into an imported directory what
DAMNIT computed since: new runs, values not yet in DEST, values DAMNIT recomputed whose AMORE
cell is still the imported one, new comments and user values. A value AMORE has written (computed
or edited) is never overwritten, so DAMNIT and AMORE can run side by side during a hand-over.

The import is recorded in DEST's ``metadata`` (key :data:`RECORD_KEY`: the source, DAMNIT's
``db_id``, the data format, the times of the first and the last import, and the newest DAMNIT
write it saw).
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from backend.contextdir import ContextDir
from backend.ctxrunner.results import copy_run_groups, damnit_group_names
from backend.damnit.source import COMMENT_NAME, DamnitCell, DamnitError, DamnitSource
from backend.damnit.user_columns import import_user_variables
from backend.damnit.values import IMPORTED_AT, stored_value
from backend.files import share_like_dir
from backend.store.identify import DbKind, identify, import_destination
from backend.facilities import toml_str
from backend.store.init import init_context_dir
from backend.store.manual import ManualStore
from backend.store.provenance import ORIGIN_DAMNIT
from backend.ctxrunner.provenance import file_sha
from backend.store.writer import RunDB
from backend.vocab import EventLevel, RunStatus, StoredValue, SummaryType, VariableInfo

#: DEST ``metadata`` key recording the import (JSON).
RECORD_KEY = "damnit_import"
#: Status message of runs whose values came from DAMNIT.
IMPORTED_STATUS = "imported from DAMNIT"
#: Runs read from DAMNIT per read transaction (keeps DAMNIT's writers waiting only briefly).
RUNS_PER_READ = 200

#: DAMNIT settings (``metameta``) -> (AMORE section, key) in DEST's ``amore.toml``.
SETTINGS = {"context_python": ("processing", "context_python"),
            "concurrent_jobs": ("slurm", "max_concurrent"),
            "slurm_time": ("slurm", "time"),
            "slurm_partition": ("slurm", "partition"),
            "slurm_reservation": ("slurm", "extra_args")}
#: DAMNIT settings that have no meaning in AMORE, and why.
NOT_CARRIED = {
    "damnit_python": "AMORE runs with its own Python",
    "noncluster_cpus": "AMORE computes variables without cluster=True in its own workers",
    "noncluster_mem": "AMORE computes variables without cluster=True in its own workers",
    "db_id": "the AMORE database has its own id",
}

Progress = Callable[[str, int, int], None]


class ImportError_(Exception):   # noqa: N801 - not the builtin ImportError
    """The import cannot be done as asked (DEST exists, nothing to update, DEST inside the DAMNIT
    directory...); the message says why and what to do. Nothing was written."""


@dataclass
class ImportSummary:
    """What an import brought across (counts of this import; with ``update``, of the update)."""

    source: Path
    dest: Path
    update: bool = False
    runs: int = 0
    runs_total: int = 0
    variables: int = 0
    values: int = 0
    errors: int = 0
    kept: int = 0
    comments: int = 0
    time_comments: int = 0
    user_columns: int = 0
    user_values: int = 0
    user_kept: int = 0
    files: int = 0
    settings: dict = field(default_factory=dict)
    not_carried: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)
    seconds: float = 0.0

    def lines(self) -> list[str]:
        """The summary for people, one line per item."""
        verb = "Updated" if self.update else "Imported"
        out = [f"{verb} {self.dest} from DAMNIT's {self.source} in {self.seconds:.1f} s:",
               f"  runs:          {self.runs} new ({self.runs_total} in DAMNIT)",
               f"  variables:     {self.variables}",
               f"  values:        {self.values} (of which {self.errors} errors or skipped)",
               f"  run files:     {self.files} copied",
               f"  comments:      {self.comments} run comments, {self.time_comments} time comments",
               f"  user columns:  {self.user_columns} new manual columns, {self.user_values} values"]
        if self.kept or self.user_kept:
            out.append(f"  kept:          {self.kept + self.user_kept} values AMORE has written "
                       f"since (not overwritten)")
        for k, v in self.settings.items():
            out.append(f"  setting:       {k} = {v}")
        for k, why in self.not_carried.items():
            out.append(f"  not carried:   {k} ({why})")
        for k, why in self.skipped.items():
            out.append(f"  skipped:       {k}: {why}")
        return out


def _settings_toml(meta: dict, source: Path) -> tuple[str, dict, dict]:
    """``amore.toml`` text with DAMNIT's meaningful settings; (text, carried, not carried)."""
    sections: dict[str, dict] = {}
    carried, not_carried = {}, {}
    for key, value in meta.items():
        if key in SETTINGS and value not in (None, ""):
            sec, k = SETTINGS[key]
            if k == "max_concurrent":
                try:
                    value = int(value)
                except (TypeError, ValueError):
                    not_carried[key] = f"not a number: {value!r}"
                    continue
            if k == "extra_args":
                value = [f"--reservation={value}"]
            sections.setdefault(sec, {})[k] = value
            carried[f"[{sec}] {k}"] = value
        elif key in NOT_CARRIED:
            not_carried[key] = NOT_CARRIED[key]
    lines = [f"# AMORE settings of this context directory; carried over from DAMNIT ({source})",
             "# by amore-proto import-damnit"]
    for sec, values in sections.items():
        lines += ["", f"[{sec}]"]
        for k, v in values.items():
            if isinstance(v, int):
                lines.append(f"{k} = {v}")
            elif isinstance(v, list):
                lines.append(f"{k} = [{', '.join(toml_str(x) for x in v)}]")
            else:
                lines.append(f"{k} = {toml_str(v)}")
    return "\n".join(lines) + "\n", carried, not_carried


def _copy_private(src: Path, dest: Path) -> None:
    """Copy a file that holds a key (``zulip.cfg``) readable by its owner (and the group where
    the directory is group-shared), never by others."""
    data = src.read_bytes()
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    share_like_dir(dest)
    os.chmod(dest, os.stat(dest).st_mode & 0o770)


def _copy_run_file(src: Path, dest: Path) -> None:
    """Copy DAMNIT's run file whole (read only; written beside DEST's and renamed into place)."""
    tmp = dest.with_name(f".{dest.name}.import")
    shutil.copyfile(src, tmp)
    share_like_dir(tmp, dest.parent)
    os.replace(tmp, dest)


def _units(cells_units: dict[str, dict[str, int]], name: str) -> str | None:
    counts = cells_units.get(name)
    return max(counts, key=counts.get) if counts else None


def import_damnit(src: str | os.PathLike, dest: str | os.PathLike | None = None, *,
                  update: bool = False, progress: Progress | None = None,
                  sparkline_points: int = 100) -> ImportSummary:
    """Import DAMNIT's context directory ``src`` into the AMORE directory ``dest`` (default: the
    conventional one beside it, :func:`backend.store.identify.import_destination`); with
    ``update``, bring an imported ``dest`` up to date (see the module docstring).

    ``progress(stage, done, total)`` is called as runs are read (stage ``"runs"``) and files
    copied (``"files"``). Returns an :class:`ImportSummary`.

    Raises :class:`backend.damnit.source.DamnitError` if ``src`` is not a DAMNIT directory of a
    format AMORE imports (the message names the format), :class:`ImportError_` when ``dest``
    cannot be used as asked. DAMNIT's directory is only read.
    """
    t0 = time.monotonic()
    source = DamnitSource(src)
    if dest is None:
        dest = import_destination(source.path)
        if dest is None:
            raise ImportError_(f"Name the AMORE directory to create: amore-proto import-damnit "
                               f"{source.path} DEST")
    dest = Path(dest).expanduser().absolute()
    if dest == source.path or source.path in dest.parents:
        raise ImportError_(f"{dest} is inside DAMNIT's directory {source.path}, which AMORE "
                           f"does not change: choose a directory elsewhere")
    cd = ContextDir(dest)
    summary = ImportSummary(source.path, dest, update)
    with source.snapshot() as con:
        meta = source.metameta(con)
        proposal = source.proposal(con)
        variables = source.variables(con)
        runs = source.runs(con)
        time_comments = source.time_comments(con)
    if proposal is None:
        raise DamnitError(f"{source.path}: DAMNIT's database names no proposal "
                          f"('damnit proposal N' sets it)")

    ident = identify(dest)
    now = time.time()
    if update:
        if ident.kind is not DbKind.AMORE:
            raise ImportError_(f"{dest} holds no AMORE directory to update; import first: "
                               f"amore-proto import-damnit {source.path} {dest}")
        db = RunDB(dest)
        rec = json.loads(db.get_metadata(RECORD_KEY) or "null")
        if not rec:
            db.close()
            raise ImportError_(f"{dest} was not made by amore-proto import-damnit: nothing to "
                               f"update (import into a new directory instead)")
        if rec.get("db_id") and rec.get("db_id") != meta.get("db_id"):
            db.close()
            raise ImportError_(f"{dest} was imported from another DAMNIT database "
                               f"({rec.get('source')}), not from {source.path}")
    else:
        if ident.kind is not DbKind.MISSING or cd.context_file.exists():
            raise ImportError_(
                f"{dest} already holds an AMORE directory; to bring in what DAMNIT computed "
                f"since the import: amore-proto import-damnit {source.path} {dest} --update")
        ctx_src = source.dir.context_file if source.dir.context_file.is_file() else None
        init_context_dir(dest, proposal, context_file=ctx_src)
        text, summary.settings, summary.not_carried = _settings_toml(meta, source.path)
        cd.config_file.write_text(text)
        share_like_dir(cd.config_file)
        if source.zulip_cfg.is_file():
            _copy_private(source.zulip_cfg, dest / source.zulip_cfg.name)
            summary.settings["zulip.cfg"] = "copied (logbook posting)"
        db = RunDB(dest)
        rec = {"source": str(source.path), "db_id": meta.get("db_id"),
               "data_format": source.data_format, "first": now}
    try:
        _import_into(db, source, summary, variables, runs, time_comments, update, rec,
                     progress, sparkline_points)
        rec["last"] = now
        rec["source"] = str(source.path)
        db.set_metadata(RECORD_KEY, json.dumps(rec))
        summary.seconds = time.monotonic() - t0
        db.add_event(EventLevel.INFO, "import",
                     f"{'Updated' if update else 'Imported'} from DAMNIT {source.path}: "
                     f"{summary.runs} new runs, {summary.values} values, "
                     f"{summary.files} run files",
                     details={k: getattr(summary, k) for k in (
                         "runs", "variables", "values", "errors", "kept", "comments",
                         "time_comments", "user_columns", "user_values", "files")})
    finally:
        db.close()
    return summary


def _import_into(db: RunDB, source: DamnitSource, summary: ImportSummary, variables, runs,
                 time_comments, update: bool, rec: dict, progress: Progress | None,
                 sparkline_points: int) -> None:
    cd = ContextDir(db.path.parent)
    user_names = {v.name for v in variables if v.user_editable}
    computed = [v for v in variables if not v.user_editable and v.name != COMMENT_NAME]
    # DAMNIT's newest write seen by the last import: DAMNIT values written after it that AMORE
    # has its own value for are counted as kept
    seen = float(rec.get("damnit_seen") or 0.0)
    newest = seen

    existing_runs = {(r["proposal"], r["run"]): r for r in db.runs()} if update else {}
    dest_cells: dict[tuple, dict] = {}
    if update:
        for p, r, name, _v, _st, attrs in db.all_values():
            try:
                dest_cells[(p, r, name)] = json.loads(attrs) if attrs else {}
            except ValueError:
                dest_cells[(p, r, name)] = {}
    summary.runs_total = len(runs)
    # the provenance of every imported value: "imported from DAMNIT", made by DAMNIT's context
    # file as it is now (its SHA-256: the values count as stale only once AMORE's context file
    # differs from it, see backend.store.provenance)
    ctx_sha = file_sha(source.dir.context_file) if source.dir.context_file.is_file() else None
    imported_at = time.time()
    units: dict[str, dict[str, int]] = {}
    comments: dict[tuple, str] = {}
    imported_names: dict[tuple, list[str]] = {}

    for lo in range(0, len(runs), RUNS_PER_READ):
        chunk = runs[lo:lo + RUNS_PER_READ]
        with source.snapshot() as con:
            cells = list(source.cells(con, runs=(chunk[0][1], chunk[-1][1])))
        by_run: dict[tuple, list[DamnitCell]] = {}
        for c in cells:
            by_run.setdefault((c.proposal, c.run), []).append(c)
        for p, r, start, added in chunk:
            values: dict[str, StoredValue] = {}
            for c in by_run.get((p, r), ()):
                if c.name in user_names:
                    continue
                if c.name == COMMENT_NAME:
                    if isinstance(c.value, str) and c.value:
                        comments[(p, r)] = c.value
                    continue
                u = c.attributes.get("units")
                if u:
                    units.setdefault(c.name, {}).setdefault(str(u), 0)
                    units[c.name][str(u)] += 1
                if c.timestamp is not None:
                    newest = max(newest, c.timestamp)
                have = dest_cells.get((p, r, c.name))
                if have is not None:
                    untouched = IMPORTED_AT in have
                    newer = c.timestamp is not None and c.timestamp > float(
                        have.get(IMPORTED_AT) or 0.0)
                    if not (untouched and newer):
                        if not untouched and c.timestamp is not None and c.timestamp > seen:
                            summary.kept += 1
                        continue
                sv = stored_value(c, sparkline_points)
                if sv is None:
                    continue
                values[c.name] = sv
            new_run = (p, r) not in existing_runs
            if new_run:
                db.ensure_run(p, r, start_time=start, added_at=added)
                summary.runs += 1
            if values:
                status = {}
                if new_run:
                    status = {"status": RunStatus.DONE.value, "status_message": IMPORTED_STATUS}
                written = [c.timestamp for c in by_run.get((p, r), ()) if c.timestamp]
                prov = {"run": {"started_at": max(written) if written else None,
                                "host": "DAMNIT", "worker": f"imported from DAMNIT {source.path}",
                                "context": ctx_sha,
                                "details": {"imported_at": imported_at,
                                            "source": str(source.path)}}}
                db.write_values(p, r, values, provenance=prov, origin=ORIGIN_DAMNIT, **status)
                summary.values += len(values)
                summary.errors += sum(sv.summary_type in (SummaryType.ERROR, SummaryType.SKIPPED)
                                      for sv in values.values())
                imported_names[(p, r)] = list(values)
            if progress is not None:
                progress("runs", lo + chunk.index((p, r, start, added)) + 1, len(runs))
    rec["damnit_seen"] = newest

    # variables: titles, descriptions, tags, units (DEST's own definitions are kept)
    have_vars = {v.name: v for v in db.get_variables()}
    new_vars = [VariableInfo(v.name, v.title or None, v.description or None,
                             _units(units, v.name), list(v.tags))
                for v in computed if v.name not in have_vars]
    if new_vars:
        db.set_variables(list(have_vars.values()) + new_vars)
    summary.variables = len(new_vars)

    # comments
    for (p, r), text in comments.items():
        row = existing_runs.get((p, r))
        if row is not None and row.get("comment"):
            continue
        db.set_comment(p, r, text)
        summary.comments += 1
    known = {(round(float(c["timestamp"]), 6), c["text"]) for c in db.comments()} if update \
        else set()
    proposal = db.proposal
    for ts, text in time_comments:
        if (round(ts, 6), text) in known:
            continue
        db.add_comment(text, author="DAMNIT", timestamp=ts, proposal=proposal)
        summary.time_comments += 1

    # user-editable variables -> manual columns
    res = import_user_variables(ManualStore(db), source)
    summary.user_columns = len(res["columns"])
    summary.user_values = res["values"]
    summary.user_kept = res["kept"]
    summary.skipped.update(res["skipped"])

    # the stored data: run files copied whole, or the new groups into AMORE's file
    files = [(p, r) for p, r, _s, _a in runs if source.run_file(p, r).is_file()]
    for i, (p, r) in enumerate(files):
        src_file, dest_file = source.run_file(p, r), cd.run_file(p, r)
        if not dest_file.exists():
            cd.extracted_dir.mkdir(exist_ok=True)
            _copy_run_file(src_file, dest_file)
            summary.files += 1
        elif imported_names.get((p, r)):
            names = [n for n in imported_names[(p, r)] if n in damnit_group_names(src_file)]
            if names:
                errors = copy_run_groups(src_file, dest_file, names)
                for n, why in errors.items():
                    summary.skipped[f"{n} (run {r} data)"] = why
                summary.files += 1
        if progress is not None:
            progress("files", i + 1, len(files))
