"""Recording the provenance of values in ``runs.sqlite`` (the writer's side; SQLAlchemy Core on
the writer's connection). The tables are described in :mod:`backend.store.schema` (revision
0008); reading it -- which values are stale and why, a value's provenance -- is
:mod:`backend.store.staleness`.

What is recorded, and when:

* with every value the worker computed (:meth:`backend.store.writer.RunDB.write_values` with a
  ``provenance``): the ``code_versions`` id of its code, its ``evaluations`` row (where, when,
  how long, versions, the context file's SHA-256, the identity of the run's data) and its
  ``inputs``; the run's data as that evaluation saw it becomes the run's current ``run_data``
  (unless something newer was seen already);
* when the context file is loaded (:func:`record_context`, by the backend and
  ``amore-proto reprocess``): the current code of every variable (``current_code``) and which
  file that is (``metadata`` key :data:`STATE_KEY`), so that front-ends compare without running
  user code; then values whose code is not known are given the current one where that is sure:
  values stored before revision 0008 and written after the context file last changed
  (once, the first time a context file is loaded after the upgrade: :data:`ADOPTED_KEY`), and
  values imported from DAMNIT whose evaluation names the same context file text.
"""
from __future__ import annotations

import json
import time
from typing import Iterable

import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from backend.ctxrunner.provenance import DIGEST_VERSION, digest
from backend.store.schema import (code_versions_table, current_code_table, evaluations_table,
                                  metadata_table, run_data_table, run_values_table)

from backend.store.staleness import STATE_KEY  # noqa: F401 - (defined there: no SQLAlchemy)
#: ``metadata`` key: set once values from before revision 0008 were given their code.
ADOPTED_KEY = "provenance_adopted"
#: ``evaluations.origin`` of values computed by AMORE and of values imported from DAMNIT.
ORIGIN_AMORE = "amore"
ORIGIN_DAMNIT = "damnit"
#: Kinds of run data with an identity.
DATA_KINDS = ("raw", "proc")


def state_key(sha: str | None, watched: dict, manual: Iterable[str], columns, python: str,
              watch_modules: Iterable[str]) -> str:
    """The identity of what the context file's code digests depend on: its text (``sha``), the
    watched modules' files (``watched``: path -> SHA-256), the manual columns it may read, the
    metadata columns (``[columns]``), the interpreter that runs it and the watched module
    names. Equal keys mean the recorded ``current_code`` is still the file's."""
    return digest("state", DIGEST_VERSION, sha, sorted((watched or {}).items()),
                  sorted(manual), columns or {}, python or "", sorted(watch_modules))


def code_ids(conn, codes: dict[str, dict | None], cache: dict[str, int] | None = None
             ) -> dict[str, int]:
    """``code_versions`` ids of ``codes`` (digest -> ``{"name", "parts"}`` or None when only
    known by digest), inserting those not recorded yet (parts filled in where they were not
    known). ``cache``: digest -> id known from before, updated."""
    cache = {} if cache is None else cache
    todo = {d: c for d, c in codes.items() if d not in cache or c}
    if not todo:
        return {d: cache[d] for d in codes}
    t = code_versions_table
    ins = sqlite_insert(t)
    stmt = ins.on_conflict_do_update(
        index_elements=[t.c.digest],
        set_={"parts": sa.func.coalesce(t.c.parts, ins.excluded.parts)})
    now = time.time()
    new = [{"digest": d, "name": (c or {}).get("name") or "",
            "parts": json.dumps(c["parts"], sort_keys=True) if c and c.get("parts") is not None
            else None, "recorded_at": now}
           for d, c in todo.items() if d not in cache or (c and c.get("parts") is not None)]
    if new:
        conn.execute(stmt, new)
    missing = [d for d in codes if d not in cache]
    for i in range(0, len(missing), 500):
        part = missing[i:i + 500]
        cache.update(conn.execute(sa.select(t.c.digest, t.c.id)
                                  .where(t.c.digest.in_(part))).all())
    return {d: cache[d] for d in codes if d in cache}


def add_evaluation(conn, proposal, run, run_info: dict, origin: str = ORIGIN_AMORE) -> int:
    """Insert one ``evaluations`` row from the ``run`` part of a worker's provenance (see
    :meth:`backend.ctxrunner.worker.Worker._provenance`); returns its id."""
    data = run_info.get("data") or {}
    details = dict(run_info.get("details") or {})
    details["data_identity"] = {k: {f: v.get(f) for f in ("files", "bytes", "mtime")}
                                for k, v in data.items()}
    res = conn.execute(_ADD_EVALUATION, dict(
        proposal=proposal, run=run, origin=origin, started_at=run_info.get("started_at"),
        seconds=run_info.get("seconds"), host=run_info.get("host"),
        worker=run_info.get("worker"), amore_version=run_info.get("amore_version"),
        python=run_info.get("python"), context=run_info.get("context"),
        raw_data=(data.get("raw") or {}).get("digest"),
        proc_data=(data.get("proc") or {}).get("digest"),
        details=json.dumps(details, default=str, sort_keys=True)))
    return res.inserted_primary_key[0]


# built once (every stored run uses them; building costs more than running them)
_ADD_EVALUATION = evaluations_table.insert()
_DROP_UNUSED_EVALUATIONS = sa.text(
    "DELETE FROM evaluations WHERE proposal = :p AND run = :r AND id NOT IN "
    "(SELECT evaluation FROM run_values WHERE proposal = :p AND run = :r "
    "AND evaluation IS NOT NULL)")


def _run_data_upsert():
    t = run_data_table
    ins = sqlite_insert(t)
    return ins.on_conflict_do_update(
        index_elements=[t.c.proposal, t.c.run, t.c.kind],
        set_={c: ins.excluded[c] for c in ("digest", "files", "bytes", "mtime", "locations",
                                           "seen_at")},
        where=ins.excluded.seen_at >= t.c.seen_at)


_RUN_DATA_UPSERT = _run_data_upsert()


def set_run_data(conn, proposal, run, data: dict, seen_at: float) -> None:
    """Record the run's data as seen at ``seen_at`` (``data``: kind -> identity, see
    :func:`backend.ctxrunner.provenance.data_identity`), unless something newer was recorded."""
    rows = [{"proposal": proposal, "run": run, "kind": k, "digest": v["digest"],
             "files": v.get("files"), "bytes": v.get("bytes"), "mtime": v.get("mtime"),
             "locations": json.dumps(v.get("locations") or []), "seen_at": seen_at}
            for k, v in (data or {}).items() if k in DATA_KINDS and v and v.get("digest")]
    if rows:
        conn.execute(_RUN_DATA_UPSERT, rows)


def drop_unused_evaluations(conn, proposal, run) -> None:
    """Delete the run's ``evaluations`` rows that no value refers to any more."""
    conn.execute(_DROP_UNUSED_EVALUATIONS, {"p": proposal, "r": run})


def record_context(conn, codes: dict[str, dict], state: dict) -> bool:
    """Record the loaded context file's code (``codes``: name -> the worker's
    :class:`~backend.ctxrunner.provenance.CodeInfo` as JSON) as ``current_code``, and ``state``
    (``key``, ``sha``, ``watched``, ``mtime``) under :data:`STATE_KEY`; then give the current
    code to the values whose code is not known where that is sure (see the module docstring).
    Returns True if the current code of any variable changed."""
    ids = code_ids(conn, {c["digest"]: {"name": n, "parts": c.get("parts")}
                          for n, c in codes.items()})
    cc = current_code_table
    rows = [{"name": n, "code": ids[c["digest"]], "data": c.get("data"),
             "manual": json.dumps(c.get("manual") or []), "deps": json.dumps(c.get("deps") or [])}
            for n, c in codes.items()]
    old = {r["name"]: dict(r) for r in conn.execute(sa.select(cc)).mappings()}
    changed = old != {r["name"]: r for r in rows}
    if changed:
        conn.execute(cc.delete())
        if rows:
            conn.execute(cc.insert(), rows)
    _set_meta(conn, STATE_KEY, json.dumps(dict(state, loaded_at=time.time()), sort_keys=True))
    _adopt(conn, {r["name"]: r["code"] for r in rows}, state)
    return changed


def _set_meta(conn, key: str, value: str) -> None:
    ins = sqlite_insert(metadata_table).values(key=key, value=value)
    conn.execute(ins.on_conflict_do_update(index_elements=[metadata_table.c.key],
                                           set_={"value": ins.excluded.value}))


def _adopt(conn, current: dict[str, int], state: dict) -> None:
    """Give the current code to values whose code is not known, where that is sure."""
    v = run_values_table.c
    adopted = conn.execute(sa.select(metadata_table.c.value)
                           .where(metadata_table.c.key == ADOPTED_KEY)).scalar()
    if adopted is None:
        # values stored before revision 0008, written after the context file last changed
        mtime = state.get("mtime")
        for name, code in current.items():
            q = run_values_table.update().where(v.name == name, v.code.is_(None),
                                                v.evaluation.is_(None))
            if mtime is not None:
                q = q.where(v.timestamp >= float(mtime))
            conn.execute(q.values(code=code))
        _set_meta(conn, ADOPTED_KEY, repr(time.time()))
    # values imported from DAMNIT, made by the text the context file has now
    sha = state.get("sha")
    e = evaluations_table.c
    damnit = sa.select(e.id).where(e.origin == ORIGIN_DAMNIT, e.context == sha)
    if sha and conn.execute(damnit.limit(1)).first() is not None:
        for name, code in current.items():
            conn.execute(run_values_table.update().where(
                v.name == name, v.code.is_(None), v.evaluation.in_(damnit)).values(code=code))


def value_row_provenance(provenance: dict | None, names: Iterable[str], conn,
                         cache: dict[str, int], proposal, run,
                         origin: str = ORIGIN_AMORE) -> dict[str, dict]:
    """For a write of ``names``: name -> ``{"code", "evaluation", "inputs"}`` column values
    (NULLs without provenance), inserting the evaluation and unknown code digests and
    recording the run's data (see :meth:`backend.store.writer.RunDB.write_values`)."""
    none = {"code": None, "evaluation": None, "inputs": None}
    if not provenance or not provenance.get("run"):
        return {n: none for n in names}
    info = provenance["run"]
    per_value = provenance.get("values") or {}
    eval_id = add_evaluation(conn, proposal, run, info, origin)
    wanted = {pv["code"]: None for pv in per_value.values() if pv.get("code")}
    wanted.update({d: c for d, c in (provenance.get("codes") or {}).items() if d in wanted})
    ids = code_ids(conn, wanted, cache)
    set_run_data(conn, proposal, run, info.get("data") or {},
                 float(info.get("started_at") or time.time()))
    out = {}
    for n in names:
        pv = per_value.get(n) or {}
        inputs = pv.get("inputs")
        out[n] = {"code": ids.get(pv.get("code")), "evaluation": eval_id,
                  "inputs": json.dumps(inputs, sort_keys=True, default=str) if inputs else None}
    return out
