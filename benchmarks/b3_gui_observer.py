"""B3 ``--gui``: the real AMORE GUI (offscreen) on a context directory, logging when each run's
cell has its value in the table model.

Opens :class:`amore_gui._qt.mainwindow.MainWindow` on CONTEXT_DIR with live updates through
Kafka (``$AMORE_BROKER``; the same code path as ``amore-proto gui``) and appends one JSON line per
run to OUT_JSONL the first time the model holds a value for variable WATCH_VAR (default
``n_trains``) of that run, stamped with ``time.time()`` right after the model changed (its
``dataChanged`` / ``rowsInserted`` / ``modelReset`` / ``runApplied`` signals): the moment the
view can paint the cell. Runs that already have the value when the window opens are not logged.

The first line, ``{"msg_kind": "observer_ready", "mode": "kafka"|"db"|...}``, is written once
the table is loaded and the live-update thread has chosen its source (for Kafka: its consumer
is positioned at the end of the update topic, so no later message is missed). Like DAMNIT's
``b3_gui_observer.py`` (which stamps after ``MainWindow.handle_update()`` returned).

usage: python b3_gui_observer.py CONTEXT_DIR OUT_JSONL [WATCH_VAR]
On SIGTERM it writes ``{"msg_kind": "event_loop", "max_stall_ms": ..., "stalls_over_100ms":
..., "cells": ...}`` (how long the GUI's event loop was blocked at most while ready) and exits.
Stop it with SIGTERM. Needs ``QT_QPA_PLATFORM=offscreen`` on a headless machine (set here if
unset).
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main():
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    ctx, out = Path(sys.argv[1]), open(sys.argv[2], "a", buffering=1)
    watch = sys.argv[3] if len(sys.argv) > 3 else "n_trains"

    from qtpy.QtCore import QTimer

    from amore_gui._qt.app import make_app
    from amore_gui._qt.mainwindow import MainWindow

    app = make_app([sys.argv[0]])
    win = MainWindow(ctx, live_updates=True, use_kafka=True)
    win.resize(1280, 800)
    win.show()
    model = win.model
    logged: set[int] = set()
    state = {"ready": False}

    def write(rec):
        out.write(json.dumps(rec, default=str) + "\n")

    def check(*_args):
        """Log every run whose WATCH_VAR cell got its value since the last call (tables here
        are small, so looking at all rows is cheap)."""
        t = time.time()
        d = model.data_obj
        col = model.column_of(watch)
        if col < 0:
            return
        for (p, r), row in list(d.row_of.items()):
            if r in logged:
                continue
            v = d.value(row, col)
            if v is None:
                continue
            logged.add(r)
            if state["ready"]:
                write({"t": t, "msg_kind": "cell", "proposal": p, "run": r, "cell": v})

    for sig in (model.dataChanged, model.rowsInserted, model.modelReset, model.layoutChanged,
                model.runApplied, win.loaded, win.fully_loaded):
        sig.connect(check)

    def poll_ready():
        if state["ready"] or not win.is_fully_loaded or win.update_mode is None:
            return
        check()                      # values present before we are ready are not logged
        state["ready"] = True
        write({"t": time.time(), "msg_kind": "observer_ready", "mode": win.update_mode,
               "source": win.update_source_text})

    ready_timer = QTimer()
    ready_timer.timeout.connect(poll_ready)
    ready_timer.start(20)
    signal.signal(signal.SIGTERM, lambda *_: app.quit())
    tick = QTimer()                  # lets Python see SIGTERM while Qt's loop runs
    tick.timeout.connect(lambda: None)
    tick.start(200)
    # How long the event loop was blocked: a 20 ms timer that fires late by that much.
    lag = {"last": time.monotonic(), "max": 0.0, "over_100ms": 0}

    def beat():
        now = time.monotonic()
        late = now - lag["last"] - 0.020
        lag["last"] = now
        if state["ready"]:
            lag["max"] = max(lag["max"], late)
            lag["over_100ms"] += late > 0.100
    beat_timer = QTimer()
    beat_timer.timeout.connect(beat)
    beat_timer.start(20)
    app.exec()
    write({"t": time.time(), "msg_kind": "event_loop", "max_stall_ms": round(lag["max"] * 1e3, 1),
           "stalls_over_100ms": lag["over_100ms"], "cells": len(logged)})
    win.close()


if __name__ == "__main__":
    main()
