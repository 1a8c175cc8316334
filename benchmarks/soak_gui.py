"""One open AMORE GUI in the soak (``benchmarks/soak.py``): the real main window (offscreen),
driven by JSON commands on standard input, reporting JSON lines on standard output.

    python benchmarks/soak_gui.py CONTEXT_DIR SETTINGS_FILE NAME

It opens :class:`amore_gui._qt.mainwindow.MainWindow` with live updates (Kafka, as
``amore-proto gui``), and answers, one line each (``{"op": ..., "id": ...}`` in, the same ``op``
and ``id`` back with the result):

* ``{"op": "set", "run": R, "name": COLUMN, "value": V}`` -- a manual value typed into the
  table's cell (the model's edit path: ``setData`` on the cell, as the cell editor commits it);
  answered once the GUI has written it (``ok``) or refused it (``error``);
* ``{"op": "start_backend"}`` -- *Processing > Start backend* (the window's backend controller);
  answered when the start is done or failed;
* ``{"op": "state", "names": [...]}`` -- what the table shows: rows, each run's status and the
  texts of the columns ``names``;
* ``{"op": "quit"}``.

Unasked, it writes ``{"op": "ready"}`` once the table is loaded and live, and every 10 s
``{"op": "stats", "rows": N, "max_stall_ms": ...}`` (the longest time the event loop was blocked
since the last report) with ``"memory"``: where the process's resident memory is
(:func:`memory_breakdown`). Each batch of live updates applied to the table is timed:
``{"op": "apply", "rows": rows in the table, "runs": runs in the batch, "read_ms": reading
the runs of the batch (and of batches not applied) from runs.sqlite (live-update thread: the
runs an update message names, or the database watcher's poll that found them),
"apply_ms": applying them to the model (GUI thread), "run_list": the first 20 runs}``. An exception in a slot is reported as ``{"op": "exception", "text": ...}``.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def memory_breakdown() -> dict:
    """Where this process's resident memory is: ``mappings`` (RSS in MB by kind of mapping,
    :func:`soak_growth.rss_by_mapping`: the main heap, other threads' heaps, other anonymous
    memory, files), ``malloc`` (glibc's bytes in use and freed, MB,
    :func:`soak_growth.malloc_mb`), ``py_blocks`` (Python's allocated blocks)."""
    from soak_growth import malloc_mb, rss_by_mapping   # (this script's folder is on sys.path)
    return {"mappings": rss_by_mapping(), "malloc": malloc_mb(),
            "py_blocks": sys.getallocatedblocks()}


def main() -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ["AMORE_GUI_NO_DIALOGS"] = "1"   # messages in the status bar, not modal boxes
    ctx, settings_file, name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    out_lock = threading.Lock()

    def write(rec):
        with out_lock:
            sys.stdout.write(json.dumps(rec, default=str) + "\n")
            sys.stdout.flush()

    def excepthook(tp, value, tb):
        write({"op": "exception", "gui": name,
               "text": "".join(traceback.format_exception(tp, value, tb))[-4000:]})
    sys.excepthook = excepthook

    from qtpy.QtCore import QObject, Qt, QTimer, Signal

    from amore_gui._qt import livetable
    from amore_gui._qt.app import make_app
    from amore_gui._qt.mainwindow import MainWindow
    from amore_gui.application.settings import Settings
    from amore_gui.application.table_data import RUN_STATUSES

    # time the two halves of a live update: reading the changed runs (live-update thread) and
    # applying them to the model (GUI thread)
    from amore_gui.application import dbread
    original_read = dbread.read_run_update
    last_read = {"s": 0.0}

    def timed_read(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return original_read(*args, **kwargs)
        finally:
            last_read["s"] += time.perf_counter() - t0
    dbread.read_run_update = timed_read
    # ... or found by the database watcher (without Kafka, the backstop check while Kafka is
    # used, a broker away): its poll reads the runs table and the new values
    original_poll = dbread.DbChangeWatcher.poll

    def timed_poll(self, *args, **kwargs):
        t0 = time.perf_counter()
        ch = original_poll(self, *args, **kwargs)
        if ch.updates:
            last_read["s"] += time.perf_counter() - t0
        return ch
    dbread.DbChangeWatcher.poll = timed_poll
    original_apply = livetable.LiveTable.apply_updates

    def apply_updates(self, updates):
        t0 = time.perf_counter()
        original_apply(self, updates)
        dt = (time.perf_counter() - t0) * 1e3
        read, last_read["s"] = last_read["s"], 0.0
        write({"op": "apply", "rows": self.model.rowCount(), "runs": len(updates),
               "apply_ms": round(dt, 3), "read_ms": round(read * 1e3, 3),
               "run_list": [u.run for u in updates[:20]]})
    livetable.LiveTable.apply_updates = apply_updates

    app = make_app([sys.argv[0], "-platform", os.environ["QT_QPA_PLATFORM"]])
    win = MainWindow(ctx, live_updates=True, settings=Settings(settings_file), use_kafka=True)
    win.resize(1400, 900)
    win.show()
    model = win.model

    class Commands(QObject):
        line = Signal(str)
    commands = Commands()
    waiting_set: list[dict] = []      # set commands waiting for the session's message
    waiting_start: list[dict] = []

    def on_message(text, error):
        if not waiting_set:
            return
        if text.startswith("Not saved") or " set for run(s) " in text:
            cmd = waiting_set.pop(0)
            write({"op": "set", "id": cmd.get("id"), "ok": not error,
                   "error": text if error else None})
    win.session.events.message.connect(on_message)

    def on_backend_done(action, status):
        while waiting_start:
            cmd = waiting_start.pop(0)
            write({"op": "start_backend", "id": cmd.get("id"), "ok": True,
                   "text": getattr(status, "text", "")})

    def on_backend_failed(action, message, status):
        while waiting_start:
            cmd = waiting_start.pop(0)
            write({"op": "start_backend", "id": cmd.get("id"), "ok": False, "error": message})
    win.backend.done.connect(on_backend_done)
    win.backend.failed.connect(on_backend_failed)

    def run_command(text):
        try:
            cmd = json.loads(text)
        except ValueError:
            return
        op = cmd.get("op")
        if op == "quit":
            app.quit()
            return
        if op == "set":
            row = model.view_row_of(int(cmd.get("proposal", win.proposal)), int(cmd["run"]))
            col = model.column_of(cmd["name"])
            if row < 0 or col < 0:
                write({"op": "set", "id": cmd.get("id"), "ok": False,
                       "error": f"run {cmd['run']} or column {cmd['name']} not in the table "
                                f"(row {row}, column {col})"})
                return
            waiting_set.append(cmd)
            if not model.setData(model.index(row, col), cmd["value"], Qt.EditRole):
                waiting_set.remove(cmd)
                write({"op": "set", "id": cmd.get("id"), "ok": False, "error": "not editable"})
            return
        if op == "start_backend":
            waiting_start.append(cmd)
            win.backend.start()
            return
        if op == "state":
            d = model.data_obj
            names = [n for n in cmd.get("names", []) if model.column_of(n) >= 0]
            cols = {n: model.column_of(n) for n in names}
            runs = {}
            for (p, r), row in list(d.row_of.items()):
                runs[str(r)] = {"status": RUN_STATUSES[int(d.status[row])],
                                **{n: d.display(row, c) for n, c in cols.items()}}
            write({"op": "state", "id": cmd.get("id"), "rows": model.rowCount(), "runs": runs,
                   "source": win.update_source_text})
            return
        write({"op": op, "id": cmd.get("id"), "ok": False, "error": "unknown command"})

    commands.line.connect(run_command, Qt.QueuedConnection)

    def read_stdin():
        for line in sys.stdin:
            if line.strip():
                commands.line.emit(line)
        commands.line.emit('{"op": "quit"}')
    threading.Thread(target=read_stdin, daemon=True).start()

    state = {"ready": False, "max_stall": 0.0, "last": time.monotonic()}

    def poll_ready():
        if not state["ready"] and win.is_fully_loaded and win.live_ready:
            state["ready"] = True
            write({"op": "ready", "rows": model.rowCount(), "source": win.update_source_text,
                   "pid": os.getpid()})
    ready_timer = QTimer()
    ready_timer.timeout.connect(poll_ready)
    ready_timer.start(100)

    def beat():            # how late a 20 ms timer fires: how long the event loop was blocked
        now = time.monotonic()
        state["max_stall"] = max(state["max_stall"], now - state["last"] - 0.020)
        state["last"] = now
    beat_timer = QTimer()
    beat_timer.timeout.connect(beat)
    beat_timer.start(20)

    def stats():
        write({"op": "stats", "rows": model.rowCount(),
               "max_stall_ms": round(state["max_stall"] * 1e3, 1),
               "source": win.update_source_text, "memory": memory_breakdown()})
        state["max_stall"] = 0.0
    stats_timer = QTimer()
    stats_timer.timeout.connect(stats)
    stats_timer.start(10_000)
    app.exec()
    win.close()
    write({"op": "bye"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
