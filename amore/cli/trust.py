"""``amore-proto run-info | check | verify | events | close | reopen``: what lets people trust
the run table (run snapshots, data consistency, file checksums, the event log, closing a
proposal after its beamtime)."""
from __future__ import annotations

import getpass
import json
import sys
import time

from amore.cli.common import context_dir, parse_runs


def _open(a, cmd):
    from backend.config import load_config
    from backend.locate import find_proposal_dir
    from backend.store.writer import RunDB, StorageError
    d = context_dir(a.dir)
    try:
        db = RunDB(d)
    except StorageError as e:
        print(f"amore-proto {cmd}: {e}", file=sys.stderr)
        return None
    config = load_config(d)
    return db, config, find_proposal_dir(db.proposal, config)


def _runs(a, db, config, pdir, cmd):
    from backend.facilities import get
    known = sorted(set(db.run_numbers()) | get(config.facility).runs_on_disk(pdir))
    try:
        return parse_runs(a.runs, known)
    except ValueError:
        print(f"amore-proto {cmd}: runs must be numbers, ranges (3-7) or 'all': {a.runs}",
              file=sys.stderr)
        return None


def _open_runs(a, cmd):
    """``(db, config, proposal dir, runs)`` for ``check`` and ``verify``, or the exit status
    (1: no database or proposal directory, 2: bad run list) after saying why."""
    opened = _open(a, cmd)
    if opened is None:
        return 1
    db, config, pdir = opened
    if pdir is None:
        print(f"amore-proto {cmd}: proposal {db.proposal} not found under the data root",
              file=sys.stderr)
        return 1
    runs = _runs(a, db, config, pdir, cmd)
    if runs is None:
        return 2
    return db, config, pdir, runs


def _t(ts) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _value_provenance(a, db) -> int:
    """``run-info RUN --var NAME``: how the value was made, whether it is stale and why."""
    from backend.store import reader, staleness
    con = reader.connect(db.path, uri_readonly=True)
    try:
        out = []
        for name in a.var:
            info = staleness.provenance(con, db.proposal, a.run, name,
                                        staleness.context_name(db.path.parent))
            if info is None:
                print(f"amore-proto run-info: run {a.run} has no value {name!r}", file=sys.stderr)
                return 1
            out.append(info)
    finally:
        con.close()
    if a.json:
        print(json.dumps(out[0] if len(out) == 1 else out, indent=2, default=str))
        return 0
    for info in out:
        print("\n".join(staleness.describe_provenance(info)))
    return 0


def cmd_run_info(a) -> int:
    from backend.store.trust import DATA_CHECK, FILES_CHECK, TrustStore
    opened = _open(a, "run-info")
    if opened is None:
        return 1
    db, config, pdir = opened
    if a.var:
        return _value_provenance(a, db)
    trust = TrustStore(db)
    p = db.proposal
    row = db.get_run(p, a.run)
    snaps = trust.snapshots(p, a.run)
    if row is None and not snaps:
        print(f"amore-proto run-info: run {a.run} is not in the table", file=sys.stderr)
        return 1
    cells = db.get_values(p, a.run, [DATA_CHECK, FILES_CHECK])
    info = {
        "proposal": p, "run": a.run, "row": row,
        "announcements": [{k: s[k] for k in ("received_at", "source", "location", "data")}
                          for s in snaps if s["kind"] == "event"],
        "metadata": [{k: s[k] for k in ("received_at", "source", "location", "data")}
                     for s in snaps if s["kind"] == "metadata"],
        "data_check": cells[DATA_CHECK].attributes.get("report") if DATA_CHECK in cells else None,
        "files": trust.verification(p, a.run),
    }
    if a.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    print(f"Proposal {p}, run {a.run}: "
          + (f"{row['status']}" + (f" ({row['status_message']})" if row["status_message"] else "")
             if row else "not in the table"))
    print(f"Announced {len(info['announcements'])} time(s):")
    for s in info["announcements"]:
        print(f"  {_t(s['received_at'])}  {s['source']}  {s['location'] or ''}")
        print(f"    {json.dumps(s['data'], sort_keys=True)}")
    for m in info["metadata"][-1:]:
        print(f"Metadata ({m['source']}, {_t(m['received_at'])}):")
        for k, v in m["data"].items():
            print(f"  {k}: {v}")
    if DATA_CHECK in cells:
        print(f"Data check: {cells[DATA_CHECK].value}")
    v = info["files"]
    if v:
        print(f"Files: last verified {_t(v['verified_at'])} ({v['algorithm']}): "
              f"{v['changed']} changed, {v['missing']} missing, {v['new']} new")
    return 0


def cmd_check(a) -> int:
    from backend.integrity.datacheck import describe
    from backend.service.integrity import data_check
    opened = _open_runs(a, "check")
    if isinstance(opened, int):
        return opened
    db, config, pdir, runs = opened
    bad, out = 0, {}
    for r in runs:
        try:
            rep = data_check(db, config, db.proposal, r, pdir, store=not a.no_store)
        except FileNotFoundError as e:
            print(f"run {r}: {e}", file=sys.stderr)
            bad += 1
            continue
        except ValueError as e:
            print(f"amore-proto check: [check] configuration: {e}", file=sys.stderr)
            return 2
        out[r] = rep
        bad += not rep["ok"]
        if not a.json:
            print(f"run {r}: {rep['summary']}")
            if not rep["ok"] or a.verbose:
                for line in describe(rep).splitlines():
                    print(f"  {line}")
    if a.json:
        print(json.dumps(out, indent=2))
    return 1 if bad else 0


def cmd_verify(a) -> int:
    from backend.service.integrity import checksum_run
    opened = _open_runs(a, "verify")
    if isinstance(opened, int):
        return opened
    db, config, pdir, runs = opened
    bad = 0
    for r in runs:
        comp = checksum_run(db, config, db.proposal, r, pdir, algorithm=a.algorithm,
                            source="verify")
        print(f"run {r}: {comp.summary()}")
        for c in comp.changed:
            print(f"  changed: {c['path']} ({c['stored_size']} -> {c['size']} bytes, "
                  f"modified {_t(c['mtime'])})")
        for p in comp.missing:
            print(f"  missing: {p}")
        for p in comp.new:
            print(f"  new:     {p}")
        bad += not comp.ok
    return 1 if bad else 0


def cmd_events(a) -> int:
    opened = _open(a, "events")
    if opened is None:
        return 1
    db = opened[0]
    rows = db.events(level=a.level, run=a.run, limit=a.limit)
    if a.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    for e in rows:
        run = f" run {e['run']}" if e["run"] is not None else ""
        print(f"{_t(e['timestamp'])} {e['level'].upper():7s} {e['source']}{run}: {e['message']}")
        if a.details and e["details"]:
            print("    " + json.dumps(e["details"], default=str))
    return 0


def cmd_close(a) -> int:
    from backend.store.trust import is_closed, set_closed
    opened = _open(a, a.command)
    if opened is None:
        return 1
    db = opened[0]
    want = a.command == "close"
    if is_closed(db) == want:
        print(f"Proposal {db.proposal} is already {'closed' if want else 'open'}")
        return 0
    set_closed(db, want, getpass.getuser())
    print(f"Proposal {db.proposal} " + (
        "closed: the table is read-only (the backend records events, changes no values; "
        "'amore-proto reopen' undoes it)" if want else "reopened"))
    return 0


def register(sub) -> None:
    """Add this module's commands to the ``amore-proto`` sub-parsers."""
    s = sub.add_parser("run-info", help="how a run was announced and its metadata (snapshots); "
                                        "with --var, how a value was made (provenance)")
    s.add_argument("run", type=int)
    s.add_argument("--dir", "-d")
    s.add_argument("--var", action="append", metavar="NAME",
                   help="the provenance of this variable's value: the code that made it, its "
                        "inputs, the data it read, where, when, and whether it is stale "
                        "(repeatable)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_run_info)

    s = sub.add_parser("check", help="data consistency of runs (exit 1 when one is incomplete)")
    s.add_argument("runs", nargs="+", help="run numbers, ranges like 3-7, or 'all'")
    s.add_argument("--dir", "-d")
    s.add_argument("--json", action="store_true")
    s.add_argument("--verbose", "-v", action="store_true", help="details of complete runs too")
    s.add_argument("--no-store", action="store_true", help="do not update the table")
    s.set_defaults(func=cmd_check)

    s = sub.add_parser("verify", help="recompute file checksums of runs (exit 1 when any "
                                      "file changed, is missing or new)")
    s.add_argument("runs", nargs="+", help="run numbers, ranges like 3-7, or 'all'")
    s.add_argument("--dir", "-d")
    s.add_argument("--algorithm", choices=("blake2b", "sha256", "sha512"), default=None,
                   help="default: check.checksum_algorithm (blake2b)")
    s.set_defaults(func=cmd_verify)

    s = sub.add_parser("events", help="the event log (malformed messages, worker deaths, ...)")
    s.add_argument("--dir", "-d")
    s.add_argument("--level", choices=("info", "warning", "error"))
    s.add_argument("--run", type=int)
    s.add_argument("--limit", type=int, help="only the newest N")
    s.add_argument("--details", action="store_true")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_events)

    for name, text in (("close", "make the table read-only after the beamtime"),
                       ("reopen", "undo 'close'")):
        s = sub.add_parser(name, help=text)
        s.add_argument("--dir", "-d")
        s.set_defaults(func=cmd_close)
