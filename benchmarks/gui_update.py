"""A GUI's live update of one run, on a small and on a large table (issue 23): a fast stand-in
for the soak's row "GUI update of one run (read + apply)".

A context directory with the soak's columns (``benchmarks/soak_growth.py``: numbers, a
thumbnail, a failing variable on every seventh run, manual columns) gets ``--runs`` runs written
by the real storage writer; then the real main window (offscreen, as ``amore-proto gui``) opens
it with live updates from database watching (no broker: every change is found by
:meth:`amore_gui.application.dbread.DbChangeWatcher.poll`), and a writer process (another
process, as the backend or ``amore-proto set`` would be) changes one run at a time, ``--n``
times each:

* ``value``: a manual value (the ``sample`` column, :meth:`backend.store.manual.ManualStore.set_values`);
* ``status``: the run's status (``processing``, then ``done`` again: two samples);
* ``comment``: the run's comment (:meth:`backend.store.writer.RunDB.set_comment`).

Each sample is the time the GUI took for that run, as ``benchmarks/soak_gui.py`` counts it:
the watcher's poll that found it (live-update thread; polls that found nothing are not
counted) plus applying it to the model (``LiveTable.apply_updates``, GUI thread). Usage::

    python benchmarks/gui_update.py [--runs 100 2000] [--n 12] [--work DIR]

``$AMORE_TREE``: the source tree to measure (default: this one), e.g. a worktree of ``main``
for a side-by-side figure. Prints one table: per table size and change, the median and range
(min-max) in ms, of poll and apply separately and together.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import soak_growth                       # (puts this tree first on sys.path)

TREE = os.environ.get("AMORE_TREE")
if TREE:
    sys.path.insert(0, str(Path(TREE).resolve()))
KINDS = ("value", "status", "comment")


def writer(ctx: Path) -> None:
    """The writer process: one change per line on standard input (``kind run k``), answered
    ``ok`` once committed."""
    from backend.store.manual import ManualStore
    from backend.store.writer import RunDB
    db = RunDB(ctx)
    m = ManualStore(db)
    for line in sys.stdin:
        kind, run, k = line.split()
        run, k = int(run), int(k)
        if kind == "value":
            m.set_values([run], "sample", f"probe {k}", via="cli")
        elif kind == "status":
            db.set_run_status(soak_growth.PROPOSAL, run, "processing" if k % 2 == 0 else "done")
        elif kind == "comment":
            db.set_comment(soak_growth.PROPOSAL, run, f"comment {k}")
        print("ok", flush=True)
    db.close()


def gui(ctx: Path, n: int) -> dict:
    """Open the window on ``ctx``, time ``n`` changes of each kind; returns
    ``{kind: [(poll_ms, apply_ms), ...]}``."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ["AMORE_GUI_NO_DIALOGS"] = "1"
    from qtpy.QtCore import QTimer

    from amore_gui._qt import livetable
    from amore_gui._qt.app import make_app
    from amore_gui._qt.mainwindow import MainWindow
    from amore_gui.application import dbread
    from amore_gui.application.settings import Settings

    polled = {"s": 0.0}
    original_poll = dbread.DbChangeWatcher.poll

    def timed_poll(self, *args, **kwargs):
        t0 = time.perf_counter()
        ch = original_poll(self, *args, **kwargs)
        if ch.updates:
            polled["s"] += time.perf_counter() - t0
        return ch
    dbread.DbChangeWatcher.poll = timed_poll
    applied: list[tuple[list[int], float, float]] = []
    got = threading.Condition()
    original_apply = livetable.LiveTable.apply_updates

    def apply_updates(self, updates):
        t0 = time.perf_counter()
        original_apply(self, updates)
        dt = time.perf_counter() - t0
        with got:
            read, polled["s"] = polled["s"], 0.0
            applied.append(([u.run for u in updates], read * 1e3, dt * 1e3))
            got.notify_all()
    livetable.LiveTable.apply_updates = apply_updates

    app = make_app([sys.argv[0], "-platform", os.environ["QT_QPA_PLATFORM"]])
    win = MainWindow(ctx, live_updates=True, use_kafka=False,
                     settings=Settings(Path(tempfile.mkdtemp()) / "s.json"))
    win.resize(1400, 900)
    win.show()
    out: dict[str, list] = {k: [] for k in KINDS}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (TREE, os.environ.get(
        "PYTHONPATH")) if p))
    w = subprocess.Popen([sys.executable, __file__, "--writer", str(ctx)], env=env,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def drive():
        nrows = win.model.rowCount()
        for kind in KINDS:
            for k in range(n):
                j = k // 2 if kind == "status" else k      # processing, then done again
                run = 1 + (j * 37 + nrows // 3) % nrows
                with got:
                    seen = len(applied)
                w.stdin.write(f"{kind} {run} {k}\n")
                w.stdin.flush()
                w.stdout.readline()
                with got:
                    ok = got.wait_for(lambda: any(run in a[0] for a in applied[seen:]), 20)
                    rec = next((a for a in applied[seen:] if run in a[0]), None)
                if ok and rec and len(rec[0]) == 1:
                    out[kind].append((rec[1], rec[2]))
                time.sleep(0.3)
        app.quit()

    def start():
        if win.is_fully_loaded and win.live_ready:
            timer.stop()
            time.sleep(0.5)
            threading.Thread(target=drive, daemon=True).start()
    timer = QTimer()
    timer.timeout.connect(start)
    timer.start(100)
    app.exec()
    w.stdin.close()
    w.wait(30)
    win.close()
    return out


def _fig(xs: list[float]) -> str:
    if not xs:
        return "-"
    return f"{statistics.median(xs):.2f} [{min(xs):.2f}-{max(xs):.2f}]"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, nargs="+", default=[100, 2000])
    ap.add_argument("--n", type=int, default=12, help="changes of each kind")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--writer", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--gui", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    os.environ["AMORE_BROKER"] = "none"
    if a.writer:
        writer(a.writer)
        return 0
    if a.gui:
        print(json.dumps(gui(Path(a.gui[0]), int(a.gui[1]))), flush=True)
        return 0
    work = a.work or Path(tempfile.mkdtemp(prefix="gui-update-"))
    rows = []
    for n_runs in a.runs:
        ctx = work / f"ctx{n_runs}"
        soak_growth.make_context(ctx)
        soak_growth.write_runs(ctx, n_runs, rate=1e6)
        env = dict(os.environ, AMORE_CONFIG_DIR=str(work / "config"))
        p = subprocess.run([sys.executable, __file__, "--gui", str(ctx), str(a.n)], env=env,
                           capture_output=True, text=True, timeout=900)
        if p.returncode != 0:
            print(p.stderr[-3000:], file=sys.stderr)
            return 1
        res = json.loads(p.stdout.strip().splitlines()[-1])
        for kind in KINDS:
            s = res[kind]
            rows.append((n_runs, kind, len(s), _fig([x[0] for x in s]), _fig([x[1] for x in s]),
                         _fig([x[0] + x[1] for x in s])))
    print(f"tree: {TREE or soak_growth.REPO}")
    head = ("runs", "change", "n", "poll ms", "apply ms", "poll + apply ms")
    print("  ".join(f"{h:>24}" if i > 2 else f"{h:>7}" for i, h in enumerate(head)))
    for r in rows:
        print("  ".join(f"{str(x):>24}" if i > 2 else f"{str(x):>7}" for i, x in enumerate(r)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
