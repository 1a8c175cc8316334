"""Query-language benchmark (issue 12): expression filters on the 5,000 x 300 benchmark table.

Builds the B2 table of :mod:`benchmarks.gui_load` (real schema, 5 % strings, units, errors,
thumbnails, sparklines), adds manual columns filled through :class:`backend.store.manual.ManualStore`
(a choice, a number in mm, a boolean), loads it as the GUI does (:func:`amore_gui.application.dbread.load_table`)
and measures, without Qt:

* ``compile``: parsing + checking an expression against the table's columns;
* ``filter``: evaluating it over every row and rebuilding the view order (:class:`RowView`);
* ``update``: applying one run's update (all variables) to the table and placing the row in the
  filtered, sorted view - the GUI-thread part of a live update minus painting.

Usage::

    python benchmarks/query_filter.py [--runs 5000] [--vars 300] [--repeats 20] [--work DIR]

Prints a table; no pass/fail (the target is filter <= 50 ms).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

EXPRESSIONS = [
    "run in 1000..3000",
    'var_002_string ~ "lyso"',
    "var_050_float > 50 and var_051_float < 1e4",
    "`Float 51` > 0.5 mJ",
    "var_050_float > 0.5 m and (sample == \"lyso\" or not has(sample))",
    "failed(var_052_float) or comment != none",
    "good and distance >= 1.5 cm and run in 100..4900",
]


def build(work: Path, nruns: int, nvars: int) -> Path:
    from benchmarks.gui_load import add_manual_columns, build_db
    ctx = work / f"q-{nruns}x{nvars}"
    if (ctx / "runs.sqlite").exists():
        return ctx
    build_db(ctx, nruns, nvars)
    add_manual_columns(ctx, nruns)
    return ctx


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=5000)
    p.add_argument("--vars", type=int, default=300)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--work", type=Path, default=None)
    a = p.parse_args(argv)
    work = a.work or Path(tempfile.gettempdir()) / "amore-bench"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    ctx = build(work, a.runs, a.vars)
    print(f"table ready in {time.perf_counter() - t0:.1f} s: {ctx}")

    from amore_gui.application import dbread
    from amore_gui.application.query import ExpressionFilter, Query
    from amore_gui.application.table_data import RowView
    res = dbread.load_table(ctx)
    data = res.data
    print(f"loaded {data.nrows} runs x {data.nvars} columns in {res.seconds:.2f} s")
    Query("run > 1", data)   # lark grammar + pint registry, once per process

    rows = []
    for expr in EXPRESSIONS:
        tc, tf = [], []
        n = 0
        for _ in range(a.repeats):
            t = time.perf_counter()
            f = ExpressionFilter(expr)
            f.query(data)
            tc.append(time.perf_counter() - t)
            view = RowView(data)
            t = time.perf_counter()
            view.set_filters([f])
            tf.append(time.perf_counter() - t)
            n = len(view)
        rows.append((expr, n, statistics.median(tc) * 1e3, statistics.median(tf) * 1e3,
                     max(tf) * 1e3))

    # one run's update (all variables) applied with an expression filter active
    view = RowView(data, sort_key="var_050_float")
    view.set_filters([ExpressionFilter(EXPRESSIONS[4])])
    run = a.runs // 2
    upd = dbread.read_run_update(ctx, 4242, run)
    for name, cell in upd.values.items():
        cell.num = cell.num * 1.5 if cell.num == cell.num else cell.num
    tu = []
    for i in range(a.repeats):
        for cell in upd.values.values():
            if cell.num == cell.num:
                cell.num *= -1 if i % 2 else 1
        t = time.perf_counter()
        row, changed, new, _ = data.apply_update(upd)
        view.update_row(row, changed, new)
        tu.append(time.perf_counter() - t)

    w = max(len(r[0]) for r in rows)
    print()
    print(f"Expression filters on {data.nrows} runs x {data.nvars} columns "
          f"(median of {a.repeats}; target: filter <= 50 ms)")
    print(f"{'expression':<{w}}  {'runs':>5}  {'compile ms':>10}  {'filter ms':>9}  {'max ms':>7}")
    for expr, n, c, f, mx in rows:
        print(f"{expr:<{w}}  {n:>5}  {c:>10.2f}  {f:>9.2f}  {mx:>7.2f}")
    print()
    print(f"{'one run update (all variables) + filtered, sorted view placement':<{w}}  "
          f"{statistics.median(tu) * 1e3:>7.2f} ms median, {max(tu) * 1e3:.2f} ms max "
          f"(target <= 5 ms incl. painting)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
