"""B2 for the side-by-side comparison: AMORE's GUI opening the *same logical table* as DAMNIT's B2.

DAMNIT's harness builds its B2 databases with ``b2_make_db.py`` (DAMNIT's own row code: 5 %
string columns, 10 % integer, one 300 px PNG thumbnail column, one sparkline column, floats with
units / bold, half the titles grouped). This script takes such a database (building it with the
DAMNIT venv's python if it is missing, exactly where DAMNIT's ``b2_gui_load.py`` looks for it)
and copies it cell by cell into an AMORE context directory: same runs, start times, variable
names, titles, types, units, bold cells, the same PNG bytes, the trendline's y values as an
AMORE sparkline. Then it opens that table in AMORE's real GUI (``MainWindow``, offscreen) in a
fresh process per repeat and measures what DAMNIT's ``b2_gui_probe.py`` measures:

* ``imports_s``: spawn -> PyQt5 and the GUI imported;
* ``painted_s``: spawn -> window shown and painted with the table (all runs, the values of the
  newest runs: what the first screen shows; older runs' values are still streaming in);
* ``full_s``: spawn -> every value of every run is in the table model (``fully_loaded``)
  - DAMNIT's ``constructed_s``/``shown_s`` only come after all values are in, so compare both;
* ``peak_rss_mb``: ``ru_maxrss`` of the process after everything (as DAMNIT's probe);
* ``update_existing_s``: all variables of the middle run changed in SQLite first (not timed,
  same changes as DAMNIT's probe), then timed: reading the run from SQLite (what the live-update
  thread does, here on the GUI thread so it is counted) + applying it to the model + event
  processing (3 x ``processEvents``, which paints what changed, as DAMNIT's probe's
  ``settle()``); ``update_read_s`` / ``update_apply_s`` are the two parts;
* ``update_1var_s`` (one variable) and ``update_new_run_s`` (a run not yet in the table).

The probe restores the database afterwards. Without a broker (``AMORE_BROKER=none``) and with
live updates off, as DAMNIT's probe runs with ``background_activity=False``.

usage: python b4_gui_open.py [--sizes 500x50,2000x200,5000x300] [--repeats 3] [--no-warmup]
                             [--out FILE.json]
       python b4_gui_open.py --child CONTEXT_DIR       (one probe; prints one JSON line)
Env: ``BENCH_WORK`` (AMORE side, tables in ``$BENCH_WORK/b2``), ``DAMNIT_BENCH_WORK`` (where
DAMNIT's B2 databases live: ``$DAMNIT_BENCH_WORK/b2/db-RxV``, default ``$BENCH_WORK/damnit``),
``DAMNIT_VENV`` (default ``$BENCH_WORK/damnit-venv``), ``BENCH_SHARED``.
"""
from __future__ import annotations

import os
import time

T0 = float(os.environ.get("BENCH_T0", time.time()))

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import sqlite3  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --- the same logical table ---------------------------------------------------------------------

def damnit_work() -> Path:
    from common import work_dir
    return Path(os.environ.get("DAMNIT_BENCH_WORK", work_dir() / "damnit")).resolve()


def damnit_python() -> str:
    from common import work_dir
    return str(Path(os.environ.get("DAMNIT_VENV", work_dir() / "damnit-venv")) / "bin" / "python")


def ensure_damnit_db(runs: int, nvars: int) -> Path:
    """DAMNIT's B2 database of this size (built by its own ``b2_make_db.py`` if missing, with the
    defaults of its driver, so ``b2_gui_load.py`` reuses it)."""
    from common import SHARED
    d = damnit_work() / "b2" / f"db-{runs}x{nvars}"
    info_f = d / "bench-db.json"
    if info_f.is_file():
        info = json.loads(info_f.read_text())
        if (info["runs"], info["vars"]) == (runs, nvars) and info["kinds"].get("png", 0) == 1 \
                and info["kinds"].get("trend", 0) == 1:
            return d
    print(f"building DAMNIT's {d.name} ...", flush=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(MPLBACKEND="Agg", HOME=str(damnit_work() / "home"),
               MPLCONFIGDIR=str(damnit_work() / "mplconfig"))
    (damnit_work() / "home").mkdir(parents=True, exist_ok=True)
    subprocess.run([damnit_python(), str(SHARED / "damnit" / "b2_make_db.py"), str(d),
                    "--runs", str(runs), "--vars", str(nvars)], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return d


def convert(damnit_dir: Path, ctx: Path) -> dict:
    """Copy DAMNIT's ``runs.sqlite`` into an AMORE context directory ``ctx`` (reused while the
    source is unchanged). Returns info (cells, size)."""
    import numpy as np
    from backend.store.writer import RunDB, VariableInfo

    src = damnit_dir / "runs.sqlite"
    stamp = {"source": str(src), "mtime_ns": src.stat().st_mtime_ns,
             "bench_db": json.loads((damnit_dir / "bench-db.json").read_text())}
    marker = ctx / "bench-source.json"
    if marker.is_file() and json.loads(marker.read_text()).get("bench_db") == stamp["bench_db"] \
            and (ctx / "runs.sqlite").is_file():
        return json.loads(marker.read_text())
    t0 = time.perf_counter()
    if ctx.exists():
        subprocess.run(["rm", "-rf", str(ctx)], check=True)
    sc = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
    proposal = int(sc.execute("SELECT value FROM metameta WHERE key = 'proposal'").fetchone()[0])
    units: dict[str, str] = {}
    for name, attrs in sc.execute("SELECT name, attributes FROM run_variables WHERE run = "
                                  "(SELECT min(run) FROM run_info) AND attributes IS NOT NULL"):
        u = json.loads(attrs).get("units")
        if u:
            units[name] = u
    variables = [VariableInfo(name=n, title=t, description=d, units=units.get(n))
                 for n, t, d in sc.execute("SELECT name, title, description FROM variables "
                                           "ORDER BY rowid")]
    ctx.mkdir(parents=True)
    db = RunDB.create(ctx, proposal)
    db.set_variables(variables)
    path = db.path
    db.close()
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    con.executemany("INSERT INTO runs(proposal, run, start_time, added_at, status) "
                    "VALUES (?, ?, ?, ?, 'done')",
                    sc.execute("SELECT proposal, run, start_time, added_at FROM run_info"))

    def rows():
        cur = sc.execute("SELECT proposal, run, name, value, max_diff, summary_type, attributes, "
                         "timestamp FROM run_variables ORDER BY run")
        for p, r, name, value, max_diff, st, attrs, ts in cur:
            if value is None:
                continue
            a = json.loads(attrs) if attrs else {}
            if st == "trendline":
                y = np.load(io.BytesIO(value), allow_pickle=False)[1].astype("<f4")
                value, kind = y.tobytes(), "sparkline"
                a.update(shape=[int(y.size)], dtype="float32")
            elif isinstance(value, bytes) and value.startswith(PNG_MAGIC):
                kind = "thumbnail"
            elif isinstance(value, str):
                kind = "string"
            elif isinstance(value, (int, float)):
                kind = "number"
                if max_diff is not None and max_diff > 1e-9:   # DAMNIT's bold rule
                    a["bold"] = True
            else:
                raise ValueError(f"unexpected cell {name} of run {r}: {st} {type(value)}")
            yield p, r, name, value, kind, json.dumps(a) if a else None, ts

    con.executemany("INSERT INTO run_values(proposal, run, name, value, summary_type, attributes, "
                    "timestamp) VALUES (?, ?, ?, ?, ?, ?, ?)", rows())
    con.commit()
    n = con.execute("SELECT count(*) FROM run_values").fetchone()[0]
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    sc.close()
    (ctx / "context.py").write_text("# converted from DAMNIT's B2 benchmark database\n")
    info = dict(stamp, cells=n, db_mb=round(path.stat().st_size / 2**20, 1),
                convert_s=round(time.perf_counter() - t0, 1))
    marker.write_text(json.dumps(info))
    return info


# --- the probe (a fresh process) ----------------------------------------------------------------

def child(ctx: Path) -> None:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    t_interp = time.time() - T0
    from qtpy.QtCore import QEventLoop, Qt

    from amore_gui._qt.app import make_app
    from amore_gui._qt.mainwindow import MainWindow
    from amore_gui.application.dbread import read_run_update
    from amore_gui.application.settings import Settings
    t_imports = time.time() - T0

    app = make_app([sys.argv[0]])
    settings = Settings(Path(os.environ.get("AMORE_GUI_CONFIG", ctx / "bench-gui.json")))
    win = MainWindow(ctx, live_updates=False, settings=settings)
    win.show()
    loop = QEventLoop()
    win.loaded.connect(loop.quit)
    if not win.is_loaded:
        loop.exec()
    app.processEvents()
    win.table.viewport().repaint()
    t_painted = time.time() - T0
    visible = win.visible_cell_count()
    loop2 = QEventLoop()
    win.fully_loaded.connect(loop2.quit)
    if not win.is_fully_loaded:
        loop2.exec()
    app.processEvents()
    win.table.viewport().repaint()
    t_full = time.time() - T0
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    model = win.model
    nrows, ncols = model.rowCount(), model.columnCount()

    # --- incremental updates, the same changes as DAMNIT's b2_gui_probe.py ----------------------
    db = win.db_file
    con = sqlite3.connect(db, timeout=30)
    proposal = int(con.execute("SELECT value FROM metadata WHERE key = 'proposal'").fetchone()[0])
    runs = [r for (r,) in con.execute("SELECT run FROM runs ORDER BY run")]
    run = runs[len(runs) // 2]
    rows = con.execute("SELECT name, value, summary_type, attributes, timestamp FROM run_values "
                       "WHERE proposal = ? AND run = ?", (proposal, run)).fetchall()

    def changed(v, st):
        if st == "number" and isinstance(v, float):
            return v * 1.01
        if st == "number" and isinstance(v, int):
            return v + 1
        if st == "string":
            return v + "x"
        return v                       # thumbnail: same bytes, timestamp moves; sparkline kept

    def write(rows_, r=run):
        now = time.time()
        con.execute("BEGIN IMMEDIATE")
        con.execute("INSERT INTO runs(proposal, run, start_time, added_at, status) VALUES "
                    "(?, ?, ?, ?, 'done') ON CONFLICT(proposal, run) DO NOTHING",
                    (proposal, r, 1_643_700_000.0 + 600 * r, now))
        con.executemany("INSERT INTO run_values(proposal, run, name, value, summary_type, "
                        "attributes, timestamp) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(proposal, "
                        "run, name) DO UPDATE SET value = excluded.value, timestamp = "
                        "excluded.timestamp",
                        [(proposal, r, n, changed(v, st), st, a, now) for n, v, st, a, _ in rows_])
        con.execute("COMMIT")

    def settle(rounds=3):              # as DAMNIT's probe: event processing incl. painting
        for _ in range(rounds):
            app.processEvents(QEventLoop.AllEvents)

    def apply(r):
        t = time.perf_counter()
        upd = read_run_update(db, proposal, r)
        t_read = time.perf_counter()
        model.apply_run_update(upd)
        settle()
        t_end = time.perf_counter()
        return t_end - t, t_read - t, t_end - t_read

    write(rows)
    settle()
    update_existing, update_read, update_apply = apply(run)
    write(rows[:1])
    update_1var = apply(run)[0]
    new_run = max(runs) + 1
    write(rows, new_run)
    update_new_run = apply(new_run)[0]
    new_row_ok = model.rowCount() == nrows + 1
    fname = next(n for n, v, st, *_ in rows if st == "number" and isinstance(v, float))
    want = con.execute("SELECT value FROM run_values WHERE proposal = ? AND run = ? AND name = ?",
                       (proposal, run, fname)).fetchone()[0]
    d = model.data_obj
    shown = d.value(d.row_of[(proposal, run)], model.column_of(fname))
    update_ok = shown == want != dict((r[0], r[1]) for r in rows)[fname]
    txt = model.data(model.index(model.view_row_of(proposal, run), model.column_of(fname)),
                     Qt.DisplayRole)

    # restore the database
    con.execute("BEGIN IMMEDIATE")
    con.execute("DELETE FROM run_values WHERE proposal = ? AND run = ?", (proposal, new_run))
    con.execute("DELETE FROM runs WHERE proposal = ? AND run = ?", (proposal, new_run))
    con.executemany("UPDATE run_values SET value = ?, timestamp = ? WHERE proposal = ? AND run = ? "
                    "AND name = ?", [(v, ts, proposal, run, n) for n, v, st, a, ts in rows])
    con.execute("COMMIT")
    con.close()
    print(json.dumps({
        "interpreter_s": t_interp, "imports_s": t_imports, "painted_s": t_painted,
        "full_s": t_full, "rows": nrows, "cols": ncols, "visible_cells": visible,
        "update_existing_s": update_existing, "update_read_s": update_read,
        "update_apply_s": update_apply, "update_1var_s": update_1var,
        "update_new_run_s": update_new_run, "update_ok": bool(update_ok), "shown_text": txt,
        "new_row_ok": new_row_ok, "rss_after_load_mb": rss_loaded,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), flush=True)
    os._exit(0)   # skip teardown (not measured), like DAMNIT's probe


def probe(ctx: Path, env: dict, timeout: float = 900) -> dict:
    env = dict(env, BENCH_T0=repr(time.time()))
    p = subprocess.run([sys.executable, __file__, "--child", str(ctx)], env=env,
                       capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"probe failed rc={p.returncode}\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


KEYS = ["imports_s", "painted_s", "full_s", "peak_rss_mb", "update_existing_s", "update_read_s",
        "update_apply_s", "update_1var_s", "update_new_run_s"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="500x50,2000x200,5000x300")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-warmup", action="store_true")
    ap.add_argument("--out")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return child(Path(a.child))
    from common import bench_env, med, print_table, rng, work_dir
    env = bench_env({"AMORE_BROKER": "none", "QT_QPA_PLATFORM": "offscreen",
                     "AMORE_GUI_CONFIG": str(work_dir() / "b2" / "gui-settings.json")})
    env.pop("PYTHONPATH", None)
    sizes = [tuple(int(x) for x in s.split("x")) for s in a.sizes.split(",")]
    ctxs = {}
    for runs, nvars in sizes:
        src = ensure_damnit_db(runs, nvars)
        ctx = work_dir() / "b2" / f"ctx-{runs}x{nvars}"
        info = convert(src, ctx)
        ctxs[(runs, nvars)] = (ctx, info)
    if not a.no_warmup:
        probe(ctxs[sizes[0]][0], env)
    results = {"params": vars(a), "sizes": {}}
    for (runs, nvars), (ctx, info) in ctxs.items():
        key = f"{runs}x{nvars}"
        reps = []
        for i in range(a.repeats):
            r = probe(ctx, env)
            reps.append(r)
            print(f"[{key} #{i}] painted {r['painted_s']:.2f} s, all values {r['full_s']:.2f} s, "
                  f"rss {r['peak_rss_mb']:.0f} MB, update {r['update_existing_s'] * 1e3:.1f} ms "
                  f"(read {r['update_read_s'] * 1e3:.1f}), 1 var {r['update_1var_s'] * 1e3:.1f} "
                  f"ms, new run {r['update_new_run_s'] * 1e3:.1f} ms, {r['rows']}x{r['cols']}, "
                  f"update_ok={r['update_ok']} new_row_ok={r['new_row_ok']}", flush=True)
        results["sizes"][key] = {"db": info, "runs": reps,
                                 "median": {k: med([r[k] for r in reps]) for k in KEYS}}
    rows = []
    for key, v in results["sizes"].items():
        reps = v["runs"]
        m = v["median"]
        rows.append([key, f"{m['painted_s']:.2f} s {rng([r['painted_s'] for r in reps])}",
                     f"{m['full_s']:.2f} s", f"{m['peak_rss_mb']:.0f} MB",
                     f"{m['update_existing_s'] * 1e3:.1f} ms", f"{m['update_1var_s'] * 1e3:.1f} ms",
                     f"{m['update_new_run_s'] * 1e3:.1f} ms"])
    print_table(f"B2: AMORE GUI on DAMNIT's B2 tables (median of {a.repeats})",
                ["runs x vars", "painted", "all values", "peak RSS", "update 1 run",
                 "update 1 var", "new run"], rows)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    sys.exit(main())
