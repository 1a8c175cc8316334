"""``amore-proto column ...``, ``amore-proto set`` and ``amore-proto history``: manual columns
(typed, with units, every edit kept) from the command line.

Edits are short transactions on ``runs.sqlite`` (like comments), safe beside the running
backend; they are announced on the database's update topic when a Kafka broker is reachable, so
open GUIs show them at once (GUIs without Kafka see them by watching the database). The backend
recomputes the variables that take an edited column as input.
"""
from __future__ import annotations

import sys
import time

from amore.cli.common import context_dir, parse_runs
from backend.vocab import UpdateKind


def _open(a, prog):
    from backend.store.manual import ManualStore
    from backend.store.writer import RunDB, StorageError
    try:
        db = RunDB(context_dir(a.dir))
    except StorageError as e:
        print(f"amore-proto {prog}: {e}", file=sys.stderr)
        return None, None
    return db, ManualStore(db)


def announce(d, db, messages: list[tuple[str, dict]]) -> None:
    """Publish update messages about this command's edits (best effort: nothing happens
    without a reachable broker; never raises for broker problems)."""
    try:
        from backend.config import load_config
        config = load_config(d)
        if not config.broker or not messages:
            return
        from backend.kafkaclient import broker_reachable
        from backend.notify.kafka import UpdatePublisher
        if not broker_reachable(config.broker, min(2.0, float(config["kafka"]["connect_timeout"]))):
            return
        with UpdatePublisher(config, db.db_id) as pub:
            for kind, data in messages:
                pub.publish(kind, data)
            pub.flush(3.0)
    except Exception as e:  # the edit is stored; GUIs watching the database still see it
        print(f"(not announced to open GUIs: {e})", file=sys.stderr)


def cmd_column_add(a) -> int:
    from backend.store.manual import ManualError
    db, m = _open(a, "column add")
    if m is None:
        return 1
    try:
        col = m.add_column(a.name, a.type, title=a.title, units=a.units, choices=a.choices,
                           description=a.description, carry_over=a.carry_over)
    except ManualError as e:
        print(f"amore-proto column add: {e}", file=sys.stderr)
        return 1
    announce(context_dir(a.dir), db, [(UpdateKind.VARIABLES_CHANGED, {"names": [col.name]})])
    print(f"Added manual column {col.name!r} ({col.describe_type()}"
          f"{', carried over to new runs' if col.carry_over else ''})")
    return 0


def cmd_column_list(a) -> int:
    from rich.console import Console
    from rich.table import Table
    db, m = _open(a, "column list")
    if m is None:
        return 1
    cols = m.columns(include_deleted=a.all)
    if a.json:
        import json
        print(json.dumps([c.to_dict() for c in cols], indent=1))
        return 0
    if not cols:
        print("No manual columns yet; add one with 'amore-proto column add NAME --type ...'")
        return 0
    t = Table(header_style="bold")
    for h in ("Name", "Title", "Type", "Units", "Choices", "Carry over", "Description"):
        t.add_column(h)
    for c in cols:
        t.add_row(c.name + (" (deleted)" if c.deleted_at else ""), c.title or "", c.type,
                  c.units or "", ", ".join(c.choices), "yes" if c.carry_over else "",
                  c.description or "")
    Console().print(t)
    return 0


def _column_change(a, prog, fn) -> int:
    from backend.store.manual import ManualError
    db, m = _open(a, prog)
    if m is None:
        return 1
    try:
        col, msg = fn(m)
    except ManualError as e:
        print(f"amore-proto {prog}: {e}", file=sys.stderr)
        return 1
    announce(context_dir(a.dir), db, [(UpdateKind.VARIABLES_CHANGED, {"names": [col.name]})])
    print(msg)
    return 0


def cmd_column_rename(a) -> int:
    def fn(m):
        col = m.rename(a.name, a.new_name)
        return col, f"Renamed manual column {a.name!r} to {col.name!r}"
    return _column_change(a, "column rename", fn)


def cmd_column_describe(a) -> int:
    carry = True if a.carry_over else (False if a.no_carry_over else None)

    def fn(m):
        col = m.describe(a.name, title=a.title, description=a.description, carry_over=carry,
                         choices=a.choices)
        return col, f"Manual column {col.name!r}: {col.describe_type()}" + (
            f", title {col.title!r}" if col.title else "") + (
            ", carried over to new runs" if col.carry_over else "")
    return _column_change(a, "column describe", fn)


def cmd_column_delete(a) -> int:
    def fn(m):
        col = m.delete(a.name)
        return col, (f"Deleted manual column {col.name!r}; its history is kept "
                     f"('amore-proto column restore {col.name}' brings it back)")
    return _column_change(a, "column delete", fn)


def cmd_column_restore(a) -> int:
    def fn(m):
        col = m.restore(a.name)
        return col, f"Restored manual column {col.name!r} with its last values"
    return _column_change(a, "column restore", fn)


def cmd_column_import_damnit(a) -> int:
    from backend.damnit.source import DamnitError, DamnitSource
    from backend.damnit.user_columns import import_user_variables
    from backend.store.manual import ManualError
    try:
        source = DamnitSource(a.damnit)
    except DamnitError as e:
        print(f"amore-proto column import-damnit: {e}", file=sys.stderr)
        return 1
    db, m = _open(a, "column import-damnit")
    if m is None:
        return 1
    try:
        res = import_user_variables(m, source)
    except ManualError as e:
        print(f"amore-proto column import-damnit: {e}", file=sys.stderr)
        return 1
    names = res["columns"] + res["reused"]
    if names:
        announce(context_dir(a.dir), db, [(UpdateKind.VARIABLES_CHANGED, {"names": names})])
    print(f"Imported {len(res['columns'])} DAMNIT user-editable variable(s) as manual columns"
          f"{': ' + ', '.join(res['columns']) if res['columns'] else ''}; "
          f"{res['values']} value(s) set"
          + (f"; {res['kept']} value(s) edited in AMORE kept" if res["kept"] else ""))
    for name, why in res["skipped"].items():
        print(f"  skipped {name}: {why}", file=sys.stderr)
    return 0


def cmd_set(a) -> int:
    from backend.store.manual import ManualError
    db, m = _open(a, "set")
    if m is None:
        return 1
    try:
        runs = parse_runs(a.runs.replace(",", " ").split(), db.run_numbers())
    except ValueError:
        print(f"amore-proto set: runs must be numbers, ranges (3-7), lists (3,5) or 'all': "
              f"{a.runs}", file=sys.stderr)
        return 2
    try:
        if a.confirm:
            edits = m.confirm(runs, a.name, via="cli")
        else:
            if a.value is None:
                print("amore-proto set: give a VALUE (or --confirm)", file=sys.stderr)
                return 2
            edits = m.set_values(runs, a.name, a.value, via="cli")
    except ManualError as e:
        print(f"amore-proto set: {e}; nothing was changed", file=sys.stderr)
        return 1
    col = m.column(a.name)
    announce(context_dir(a.dir), db, [
        (UpdateKind.RUN_VALUES_UPDATED, {"proposal": e.proposal, "run": e.run, "names": [e.name],
                                "manual": True}) for e in edits])
    shown = col.format(edits[0].value) if edits and edits[0].value is not None else "(cleared)"
    runs_txt = ", ".join(str(e.run) for e in edits) or "none"
    if a.confirm:
        print(f"Confirmed {col.name} for run(s) {runs_txt}")
    else:
        print(f"{col.name} = {shown} for run(s) {runs_txt}")
    return 0


def cmd_history(a) -> int:
    from backend.store.manual import ManualError
    db, m = _open(a, "history")
    if m is None:
        return 1
    try:
        rows = m.history(a.run, a.name)
    except ManualError as e:
        print(f"amore-proto history: {e}", file=sys.stderr)
        return 1
    if not rows:
        print(f"No edits of {a.name} in run {a.run}")
        return 0
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["timestamp"]))
        extra = " (carried over)" if r["carried"] else ""
        typed = f"  [typed {r['text']!r}]" if r["text"] and r["text"] != r["display"] else ""
        print(f"{when}  {r['display']}{extra}  by {r['author']} via {r['via']}{typed}")
    return 0


def register(sub) -> None:
    """Add this module's commands to the ``amore-proto`` sub-parsers."""
    from backend.vocab import MANUAL_COLUMN_TYPES as COLUMN_TYPES
    c = sub.add_parser("column", help="manual columns: add, list, rename, describe, delete")
    csub = c.add_subparsers(dest="column_command", required=True)

    s = csub.add_parser("add", help="add a manual column")
    s.add_argument("name", help="column name (letters, digits, _); usable as var#NAME")
    s.add_argument("--type", required=True, choices=COLUMN_TYPES)
    s.add_argument("--title")
    s.add_argument("--units", help="units understood by pint (um, mJ, deg, ...)")
    s.add_argument("--choices", help="comma-separated choices (type choice)")
    s.add_argument("--description")
    s.add_argument("--carry-over", action="store_true",
                   help="new runs start with the previous run's value (until confirmed)")
    s.add_argument("-d", "--dir")
    s.set_defaults(func=cmd_column_add)

    s = csub.add_parser("list", help="list manual columns")
    s.add_argument("--all", action="store_true", help="include deleted columns")
    s.add_argument("--json", action="store_true")
    s.add_argument("-d", "--dir")
    s.set_defaults(func=cmd_column_list)

    s = csub.add_parser("rename", help="rename a manual column")
    s.add_argument("name")
    s.add_argument("new_name")
    s.add_argument("-d", "--dir")
    s.set_defaults(func=cmd_column_rename)

    s = csub.add_parser("describe", help="change title, description, choices or carry-over")
    s.add_argument("name")
    s.add_argument("--title")
    s.add_argument("--description")
    s.add_argument("--choices", help="the full new list of choices (comma-separated)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--carry-over", action="store_true")
    g.add_argument("--no-carry-over", action="store_true")
    s.add_argument("-d", "--dir")
    s.set_defaults(func=cmd_column_describe)

    s = csub.add_parser("delete", help="remove a manual column (history kept; restorable)")
    s.add_argument("name")
    s.add_argument("-d", "--dir")
    s.set_defaults(func=cmd_column_delete)

    s = csub.add_parser("restore", help="bring back a deleted manual column")
    s.add_argument("name")
    s.add_argument("-d", "--dir")
    s.set_defaults(func=cmd_column_restore)

    s = csub.add_parser("import-damnit",
                        help="make a DAMNIT database's user-editable variables manual columns")
    s.add_argument("damnit", metavar="DAMNIT_DIR_OR_DB")
    s.add_argument("-d", "--dir")
    s.set_defaults(func=cmd_column_import_damnit)

    s = sub.add_parser("set", help="set a manual column of one or more runs")
    s.add_argument("runs", metavar="RUN", help="run number, range 3-7, list 3,5,8 or 'all'")
    s.add_argument("name", metavar="NAME", help="manual column name or title")
    s.add_argument("value", metavar="VALUE", nargs="?",
                   help="the value ('1.5 mm', yes, a choice...); 'none' (text columns: '') clears it")
    s.add_argument("--confirm", action="store_true",
                   help="confirm carried-over values instead of setting one")
    s.add_argument("-d", "--dir")
    s.set_defaults(func=cmd_set)

    s = sub.add_parser("history", help="every edit of a manual cell")
    s.add_argument("run", type=int, metavar="RUN")
    s.add_argument("name", metavar="NAME")
    s.add_argument("-d", "--dir")
    s.set_defaults(func=cmd_history)
