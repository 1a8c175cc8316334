"""Opens AMORE's windows on a real X server and screenshots each one (run by tests/test_gui_x11.py).

``python -m tests.x11_driver CONTEXT_DIR OUT_DIR [--only main]`` with ``$DISPLAY`` set and
``QT_QPA_PLATFORM=xcb``: the main window (as ``amore-proto gui`` opens it, offering to start the
backend), a plot window, an inspection window, a per-train correlation window, the dialogs
(the "Start the AMORE backend?" question, filter, columns, open, reprocess), the context-file
editor and the backend log. Each screenshot is taken from the X server of that window alone
(``QScreen.grabWindow(winId)``) and saved as ``OUT_DIR/<name>.png``. Then it writes a value of
one run to the database and records the viewport area repainted for that live update.
``OUT_DIR/result.json``: ``{"windows": {name: {"png", "width", "height", "logical_width",
"colours", "top_fraction"}}, "platform", "opengl_widgets", "repaint": {...}}``.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np


def _rects(region) -> list:
    """The rectangles of a ``QRegion``: ``rects()`` in PyQt5; PyQt6 has neither that nor
    iteration, so its bounding rectangle (which covers them all: never less than painted)."""
    return list(region.rects()) if hasattr(region, "rects") else [region.boundingRect()]


def image_stats(img) -> dict:
    """Distinct colours (of a sample) and the share of the most common colour of a QImage."""
    from qtpy.QtGui import QImage
    img = img.convertToFormat(QImage.Format_RGB32)
    w, h = img.width(), img.height()
    if w == 0 or h == 0:
        return {"colours": 0, "top_fraction": 1.0, "black_fraction": 1.0}
    ptr = img.constBits()
    ptr.setsize(img.bytesPerLine() * h)
    a = np.frombuffer(ptr, np.uint32).reshape(h, img.bytesPerLine() // 4)[:, :w] & 0xFFFFFF
    vals, counts = np.unique(a, return_counts=True)
    return {"colours": int(len(vals)), "top_fraction": float(counts.max() / a.size),
            "black_fraction": float(np.count_nonzero(a == 0) / a.size)}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ctx, out = Path(argv[0]), Path(argv[1])
    only_main = "--only" in argv
    out.mkdir(parents=True, exist_ok=True)
    from qtpy.QtCore import QTimer
    from qtpy.QtGui import QGuiApplication, QPaintEvent
    from qtpy.QtTest import QTest
    from qtpy.QtWidgets import QApplication, QMessageBox, QWidget

    from amore_gui._qt.app import make_app
    from amore_gui._qt.mainwindow import MainWindow
    from amore_gui.application.settings import Settings
    from amore_gui.application.table_data import C_RUN

    app = make_app(["amore-x11-test"])
    result = {"platform": QGuiApplication.platformName(), "windows": {}}

    def wait(pred, timeout=20.0):
        t = time.monotonic()
        while not pred():
            if time.monotonic() - t > timeout:
                raise AssertionError("condition not met in time")
            QTest.qWait(20)

    def shoot(name, w, settle_ms=400):
        w.show()
        w.raise_()
        assert QTest.qWaitForWindowExposed(w, 10000), name
        QTest.qWait(settle_ms)
        app.processEvents()
        img = QGuiApplication.primaryScreen().grabWindow(int(w.winId())).toImage()
        png = out / f"{name}.png"
        img.save(str(png))
        result["windows"][name] = {"png": str(png), "width": img.width(),
                                   "height": img.height(), "logical_width": w.width(),
                                   **image_stats(img)}

    # the main window as the user opens it: no backend runs, so it asks to start one
    asked = []

    def answer_question():
        dlg = QApplication.activeModalWidget()
        if isinstance(dlg, QMessageBox):
            shoot("backend_question", dlg)
            asked.append(dlg.text())
            dlg.button(QMessageBox.No).click()
        else:
            QTimer.singleShot(100, answer_question)

    win = MainWindow(ctx, settings=Settings(out / "gui.json"), use_kafka=False,
                     offer_backend=not only_main)
    win.resize(1200, 700)
    if not only_main:
        QTimer.singleShot(100, answer_question)
    win.show()
    wait(lambda: win.is_fully_loaded and win.live_ready)
    if not only_main:
        wait(lambda: bool(asked))
    shoot("main", win, 800)
    if only_main:
        win.table.scrollTo(win.model.index(0, win.model.column_of("cam_mean")))
        wait(lambda: win.thumbs._images.get((*win.model.run_at(0), "cam_mean")) is not None)
        shoot("main_scrolled", win, 500)
        _write(out, result)
        win.close()
        return 0

    m = win.model
    p = win.open_plot(C_RUN, "xgm_energy")
    wait(lambda: len(p.points[0]) > 0)
    shoot("plot", p)
    run = m.run_at(0)
    iw = win.inspect(m.index(0, m.column_of("cam_mean")))
    wait(lambda: iw.kind is not None)
    shoot("inspect_image", iw)
    cw = win.open_correlation("motor_trend", "xgm_energy", runs=[run])
    wait(lambda: cw.result is not None)
    shoot("correlation", cw)

    from amore_gui._qt.dialogs import ColumnsDialog, FilterDialog, OpenDialog
    d = m.data_obj
    shoot("filter_dialog", FilterDialog(d, d.col_of("xgm_energy"), win))
    order, hidden = win.column_layout()
    shoot("columns_dialog", ColumnsDialog(d, order, hidden, win))
    shoot("open_dialog", OpenDialog([str(ctx)]))
    shoot("reprocess_dialog", win.open_reprocess())
    shoot("context_editor", win.open_editor())
    win.show_backend_log()
    shoot("backend_log", win.log_window)

    from qtpy.QtWidgets import QOpenGLWidget
    result["opengl_widgets"] = sum(len(w.findChildren(QOpenGLWidget))
                                   for w in QApplication.topLevelWidgets())

    # a live update of one run: which part of the table's viewport is repainted?
    painted = []

    class Recorder(QWidget):
        def eventFilter(self, obj, ev):
            if isinstance(ev, QPaintEvent):
                painted.extend((r.x(), r.y(), r.width(), r.height()) for r in _rects(ev.region()))
            return False
    for w in win._live_windows():
        w.close()
    win.activateWindow()
    QTest.qWait(500)
    rec = Recorder()
    win.table.viewport().installEventFilter(rec)
    target = m.run_at(1)
    row = m.view_row_of(*target)
    col = m.column_of("cam_peak")
    win.table.scrollTo(m.index(row, col))
    QTest.qWait(300)
    from backend.store.writer import RunDB, StoredValue
    QTest.qWait(300)
    painted.clear()
    db = RunDB(ctx)
    db.write_values(target[0], target[1], {"cam_peak": StoredValue(4242.0, "number")})
    db.close()
    wait(lambda: m.data(m.index(row, col)) == "4242")
    QTest.qWait(300)
    cell = win.table.visualRect(m.index(row, col))
    vp = win.table.viewport()
    result["repaint"] = {"rects": painted, "cell": [cell.x(), cell.y(), cell.width(),
                                                    cell.height()],
                         "viewport": [vp.width(), vp.height()]}
    _write(out, result)
    win.close()
    return 0


def _write(out: Path, result: dict) -> None:
    (out / "result.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    sys.exit(main())
