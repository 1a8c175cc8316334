"""The GUI on a real X server (issue 14): Xvfb with Qt's ``xcb`` platform, as over FastX.

On the synthetic N runs x M variables database of :mod:`benchmarks.gui_load` (5 % strings,
10 % integers, a thumbnail and a sparkline column, the rest floats), in a fresh process per
repeat, with a private Xvfb (``tests/xvfb.py``) and ``QT_XCB_GL_INTEGRATION=none`` (no OpenGL):

* ``open``: process spawn -> main window shown and painted with the newest runs' values, and
  -> all values loaded and the table painted;
* ``live update``: every variable of one visible run is changed in SQLite (a reprocessed run)
  and arrives through the live-update path (database watching); every paint event of the
  table's viewport from the commit until 0.5 s after the run was applied is recorded. Reported:
  the area repainted (device pixels), the area of that run's visible cells (the target) and the
  whole viewport, and whether every repainted rectangle lies inside that run's row;
* ``scroll``: wheel-sized scroll steps (3 rows) through the table, each step's scroll plus
  the paint it causes (the frame time; the beamtime-table issue's target is < 16 ms), and the
  area painted per step (the rows scrolled in; the rest is moved on the X server).

Usage::

    python benchmarks/gui_x11.py [--runs 5000] [--vars 300] [--repeats 3] [--work DIR]

Needs Xvfb and Qt's X11 libraries (``./dev test`` installs them). Prints a table; no pass/fail.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.gui_load import build_db, change_run, wait_painted  # noqa: E402


def _rects(region) -> list:
    """The rectangles of a ``QRegion``: ``rects()`` in PyQt5; PyQt6 has neither that nor
    iteration, so its bounding rectangle (which covers them all: never less than painted)."""
    return list(region.rects()) if hasattr(region, "rects") else [region.boundingRect()]


def child(context_dir: str, spawn_t: float) -> None:
    from qtpy import QtCore
    from qtpy.QtGui import QGuiApplication, QPaintEvent
    from qtpy.QtWidgets import QWidget

    from amore_gui._qt.app import make_app
    from amore_gui._qt.mainwindow import MainWindow

    app = make_app([])
    assert QGuiApplication.platformName() == "xcb", QGuiApplication.platformName()
    win = MainWindow(Path(context_dir), live_updates=True, use_kafka=False)
    win.resize(1280, 800)
    win.show()
    t_first, t_painted = wait_painted(app, win)
    loop = QtCore.QEventLoop()

    def settle(seconds):
        t = time.time() + seconds
        while time.time() < t:
            app.processEvents()
            time.sleep(0.005)
    settle(1.0)
    vp = win.table.viewport()
    dpr = vp.devicePixelRatioF()
    painted: list = []

    class Recorder(QWidget):
        def eventFilter(self, obj, ev):
            if isinstance(ev, QPaintEvent):
                painted.extend((r.x(), r.y(), r.width(), r.height())
                               for r in _rects(ev.region()))
            return False
    rec = Recorder()
    vp.installEventFilter(rec)

    # --- live update of one visible run (all its variables change); the view scrolled to the
    # numeric columns (the first ones are strings, thumbnails and sparklines, which do not change)
    model = win.model
    d = model.data_obj
    win.table.scrollTo(model.index(0, model.column_of(d.names[len(d.names) // 2])))
    settle(0.5)
    updates = []
    guard = QtCore.QTimer(singleShot=True)
    guard.timeout.connect(loop.quit)
    for k, view_row in enumerate((2, 5, 8)):
        p, run = model.run_at(view_row)
        row_y = win.table.rowViewportPosition(view_row)
        row_h = win.table.rowHeight(view_row)
        settle(0.3)
        painted.clear()
        seen = {}

        def on_applied(key, target=(p, run)):
            if key == target and "t" not in seen:
                seen["t"] = time.time()
                loop.quit()
        model.runApplied.connect(on_applied)
        t0 = time.time()
        change_run(Path(context_dir) / "runs.sqlite", run, 1.5 + k)
        guard.start(10000)
        if "t" not in seen:
            loop.exec()
        guard.stop()
        model.runApplied.disconnect(on_applied)
        settle(0.5)
        area = sum(w * h for _, _, w, h in painted)
        inside = all(y >= row_y and y + h <= row_y + row_h for _, y, _, h in painted)
        vis_w = min(vp.width(), sum(win.table.columnWidth(c) for c in win.visible_columns()))
        updates.append({"latency_ms": (seen.get("t", time.time()) - t0) * 1000,
                        "area": area * dpr * dpr, "rects": len(painted), "inside_row": inside,
                        "row_area": vis_w * row_h * dpr * dpr,
                        "viewport_area": vp.width() * vp.height() * dpr * dpr})

    # --- scrolling, wheel-sized steps
    sb = win.table.verticalScrollBar()
    step = 3 * win.table.rowHeight(0)
    frames, scroll_area = [], []
    sb.setValue(0)
    settle(0.2)
    for i in range(60):
        painted.clear()
        t0 = time.perf_counter()
        sb.setValue(sb.value() + step)
        # paint what the scroll left to paint, now (a forced repaint() would repaint it all)
        QtCore.QCoreApplication.sendPostedEvents(None, QtCore.QEvent.UpdateRequest)
        frames.append((time.perf_counter() - t0) * 1000)
        scroll_area.append(sum(w * h for _, _, w, h in painted) * dpr * dpr)
        app.processEvents()
    vp.removeEventFilter(rec)
    print(json.dumps({"first_paint": t_first - spawn_t, "painted": t_painted - spawn_t,
                      "load_seconds": win.load_seconds, "updates": updates, "frames": frames,
                      "scroll_area": scroll_area,
                      "dpr": dpr, "viewport": [vp.width(), vp.height()]}))
    win.close()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5000)
    p.add_argument("--vars", type=int, default=300)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--scale", type=float, default=1.0, help="QT_SCALE_FACTOR")
    p.add_argument("--work", help="directory for the database (default: a temp dir)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--spawn", type=float, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        child(a.child, a.spawn)
        return 0
    from tests.xvfb import xvfb

    work = Path(a.work or tempfile.mkdtemp(prefix="amore-gui-x11-"))
    ctx = work / f"ctx-{a.runs}x{a.vars}"
    if not (ctx / "runs.sqlite").exists():
        t = time.time()
        print(f"Building {a.runs} x {a.vars} database in {ctx} ...", flush=True)
        build_db(ctx, a.runs, a.vars)
        print(f"  built in {time.time() - t:.0f} s", flush=True)
    results = []
    with xvfb(2800, 1800) as display:
        env = dict(os.environ, DISPLAY=display, QT_QPA_PLATFORM="xcb",
                   QT_XCB_GL_INTEGRATION="none", QT_SCALE_FACTOR=str(a.scale),
                   AMORE_BROKER="none", PYTHONPATH=str(REPO),
                   XDG_CONFIG_HOME=tempfile.mkdtemp(prefix="amore-gui-x11-cfg-"))
        for i in range(a.repeats + 1):               # first one: untimed warm-up
            spawn = time.time()
            out = subprocess.run([sys.executable, __file__, "--child", str(ctx), "--spawn",
                                  str(spawn)], env=env, capture_output=True, text=True,
                                 timeout=600)
            if out.returncode != 0:
                print(out.stdout, out.stderr, file=sys.stderr)
                return 1
            res = json.loads(out.stdout.strip().splitlines()[-1])
            if i:
                results.append(res)
            print(f"  {'warm-up' if not i else f'repeat {i}'}: painted {res['painted']:.2f} s, "
                  f"update repainted {res['updates'][0]['area']:.0f} px²", flush=True)

    def med(vals):
        return statistics.median(vals), min(vals), max(vals)

    def fmt(t, unit="", prec=2):
        m, lo, hi = t
        return f"{m:.{prec}f}{unit} [{lo:.{prec}f}-{hi:.{prec}f}]"
    ups = [u for r in results for u in r["updates"]]
    frames = sorted(f for r in results for f in r["frames"])
    vpw, vph = results[0]["viewport"]
    print()
    print(f"AMORE GUI on Xvfb (xcb, no OpenGL, QT_SCALE_FACTOR={a.scale:g}), {a.runs} runs x "
          f"{a.vars} variables, viewport {vpw}x{vph} px; median [min-max] of "
          f"{len(results)} fresh processes")
    print()
    rows = [
        ("open: window painted with the newest runs' values (from spawn)",
         fmt(med([r["first_paint"] for r in results]), " s")),
        ("open: all values loaded, table painted (from spawn)",
         fmt(med([r["painted"] for r in results]), " s")),
        ("live update of 1 run (all variables): commit -> applied",
         fmt(med([u["latency_ms"] for u in ups]), " ms", 0)),
        ("  area repainted (device px²)", fmt(med([u["area"] for u in ups]), "", 0)),
        ("  that run's visible cells (target, device px²)",
         fmt(med([u["row_area"] for u in ups]), "", 0)),
        ("  whole viewport (device px²)", fmt(med([u["viewport_area"] for u in ups]), "", 0)),
        ("  repainted / viewport", fmt(med([u["area"] / u["viewport_area"] for u in ups]), "", 3)),
        ("  every repainted rectangle inside that run's row",
         f"{sum(u['inside_row'] for u in ups)}/{len(ups)} updates"),
        ("scroll frame (3 rows, scroll + paint), median / 95th pct",
         f"{statistics.median(frames):.1f} ms / {frames[int(0.95 * (len(frames) - 1))]:.1f} ms"),
        ("  area repainted per scroll step / viewport",
         fmt(med([a / u["viewport_area"] for r in results for a in r["scroll_area"]
                  for u in r["updates"][:1]]), "", 3)),
    ]
    w = max(len(r[0]) for r in rows)
    for name, val in rows:
        print(f"{name:<{w}}  {val}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
