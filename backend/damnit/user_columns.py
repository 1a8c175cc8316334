"""DAMNIT's user-editable variables as AMORE's manual columns (typed, every edit kept).

Used by ``amore-proto import-damnit`` (the whole import) and by ``amore-proto column
import-damnit`` (only these columns, into an existing AMORE directory): one code path.
"""
from __future__ import annotations

from backend.damnit.source import DamnitSource
from backend.damnit.values import as_python
from backend.store.manual import ManualError, ManualStore

#: DAMNIT's user-editable variable types -> manual column types (DAMNIT's ``timestamp``
#: values become text: the local time as DAMNIT shows it)
DAMNIT_TYPES = {"boolean": "boolean", "integer": "integer", "number": "number",
                "string": "string", "timestamp": "string"}
#: Who the history of an imported value names.
IMPORT_AUTHOR = "DAMNIT import"
#: ``via`` of an imported value in the history.
IMPORT_VIA = "import"


def import_user_variables(store: ManualStore, source: DamnitSource, con=None,
                          progress=None) -> dict:
    """Make DAMNIT's user-editable variables (``variables`` rows with a ``type``) manual
    columns of ``store`` (:data:`DAMNIT_TYPES`), with their latest value per run; the history
    of each value says ``via import`` by ``DAMNIT import``. A manual column of the same name and
    type is reused. A value is set only where the AMORE cell is empty or still holds an
    imported value that DAMNIT has changed since: a value edited in AMORE is never
    overwritten, and importing twice changes nothing.

    ``con``: a connection of ``source.snapshot()`` (one is opened otherwise); ``progress``:
    called with the number of values handled so far.

    Returns ``{"columns": [names added], "reused": [...], "skipped": {name: reason},
    "values": n, "kept": n (AMORE edits left as they are)}``. Raises :class:`ManualError` on a
    closed proposal. The DAMNIT directory is only read.
    """
    if con is None:
        with source.snapshot() as con:
            return import_user_variables(store, source, con, progress)
    store.check_open()
    out = {"columns": [], "reused": [], "skipped": {}, "values": 0, "kept": 0}
    existing = {c.name: c for c in store.columns()}
    wanted = [v for v in source.variables(con) if v.user_editable]
    done = 0
    for var in wanted:
        mtype = DAMNIT_TYPES.get(var.type)
        if mtype is None:
            out["skipped"][var.name] = f"unknown DAMNIT type {var.type!r}"
            continue
        if var.name in existing:
            if existing[var.name].type != mtype:
                out["skipped"][var.name] = (f"a manual column {var.name!r} of type "
                                            f"{existing[var.name].type} exists")
                continue
            out["reused"].append(var.name)
        else:
            try:
                store.add_column(var.name, mtype, title=var.title or None,
                                 description=var.description or None)
            except ManualError as e:
                out["skipped"][var.name] = str(e)
                continue
            out["columns"].append(var.name)
        current = store.values(var.name)
        by_value: dict = {}
        for cell in source.cells(con, [var.name]):
            v = as_python(cell)
            if v is None:
                continue
            have = current.get((cell.proposal, cell.run))
            if have is not None:
                if have["value"] == (int(bool(v)) if mtype == "boolean" else v):
                    continue
                if have.get("via") != IMPORT_VIA:
                    out["kept"] += 1        # edited in AMORE: AMORE's value stays
                    continue
            by_value.setdefault((cell.proposal, v), []).append(cell.run)
        for (p, v), runs in by_value.items():
            raw = bool(v) if mtype == "boolean" else v
            store.set_values(runs, var.name, raw, via=IMPORT_VIA, author=IMPORT_AUTHOR,
                             proposal=p, create_runs=True)
            out["values"] += len(runs)
            done += len(runs)
            if progress is not None:
                progress(done)
    return out
