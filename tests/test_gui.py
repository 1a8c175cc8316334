"""The GUI (pytest-qt, offscreen) on databases filled by the real backend from real mock runs:
opening, sorting, filtering, hiding columns, live updates (database watching and Kafka with a
real broker), comments seen by a second window, plots and inspection windows."""
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from qtpy.QtCore import Qt  # noqa: E402

from amore_gui.application.table_data import (C_COMMENT, C_RUN, C_STATUS, K_ERROR, K_SPARKLINE,  # noqa: E402
                                  K_THUMBNAIL, NSTATIC, NumberRange)
from tests.gui_fixtures import GUI_PROPOSAL, GUI_RUNS, process_runs, write_runs  # noqa: E402
from tests.gui_helpers import cell, qtbot_wait_until, runs_in_view  # noqa: E402


def test_open_shows_runs_newest_first(open_window, gui_ctx):
    w = open_window()
    m = w.model
    assert runs_in_view(w) == sorted(GUI_RUNS, reverse=True)
    assert f"p{GUI_PROPOSAL}" in w.windowTitle()
    assert w.update_mode == "db" and "from database changes" in w.source_label.text()
    assert "Backend" in w.backend_label.text() or w.backend_label.text() == "Backend: …"
    # headers: title with units, group on its own line
    col = m.column_of("xgm_energy")
    assert m.headerData(col, Qt.Horizontal) == "XGM\nPulse energy [µJ]"
    assert m.headerData(m.column_of("motor_start"), Qt.Horizontal) == "Motor R3\nStart [mm]"
    # cells: readable numbers, strings, booleans, sparklines, thumbnails, errors
    txt = cell(w, 2, "xgm_energy")
    assert 1 <= len(txt.replace(".", "").replace("-", "")) <= 5
    assert cell(w, 2, "n_trains") == "40"
    assert cell(w, 2, "sample")
    assert cell(w, 2, "xgm_stable") in ("✓", "✗")
    assert cell(w, 2, "xgm_trend", Qt.UserRole + 1) == K_SPARKLINE
    assert cell(w, 2, "cam_mean", Qt.UserRole + 1) == K_THUMBNAIL
    assert cell(w, 3, "flaky", Qt.UserRole + 1) == K_ERROR
    assert "odd run 3" in cell(w, 3, "flaky", Qt.ToolTipRole)
    assert cell(w, 3, "flaky", Qt.BackgroundRole) is not None
    assert cell(w, 2, "flaky") == "3"
    assert cell(w, 2, C_STATUS, Qt.CheckStateRole) == Qt.Checked
    # thumbnails of visible cells are read and decoded off the GUI thread
    key = (GUI_PROPOSAL, 4, "cam_mean")
    w.table.scrollTo(m.index(0, m.column_of("cam_mean")))
    qtbot_wait_until(lambda: w.thumbs._images.get(key) is not None)
    assert not w.thumbs._images[key].isNull()


def test_decoded_thumbnails_are_kept_up_to_a_size(qtbot):
    """The decoded thumbnails a window keeps are bounded by their bytes, the least recently
    used going first: a window that shows every new run's image as it arrives holds a few
    screens of them, not hundreds, and a bounded number of small ones (issue 23: its memory
    grew for the first 600 runs)."""
    from qtpy.QtGui import QImage

    from amore_gui._qt.delegates import ThumbnailCache
    asked = []
    cache = ThumbnailCache(lambda key, h: asked.append(key), max_bytes=10 * 58 * 58 * 4)

    def image():
        img = QImage(58, 58, QImage.Format_ARGB32)
        img.fill(0)
        return img
    for run in range(1, 31):
        assert cache.get((1, run, "cam"), 58) is None
        cache.put((1, run, "cam"), image())
        assert cache.get((1, 1, "cam"), 58) is not None         # run 1 stays in view
    assert asked == [(1, run, "cam") for run in range(1, 31)]
    assert sorted(k[1] for k in cache._images) == [1] + list(range(22, 31))
    assert cache.nbytes == sum(i.sizeInBytes() for i in cache._images.values()) <= 10 * 58 * 58 * 4
    big = QImage(400, 400, QImage.Format_ARGB32)
    big.fill(0)
    cache.put((1, 99, "cam"), big)                               # larger than the bound: kept alone
    assert list(cache._images) == [(1, 99, "cam")] and cache.nbytes == big.sizeInBytes()
    cache.invalidate((1, 99, "cam"))
    assert cache.nbytes == 0 and not cache._images
    small = ThumbnailCache(max_images=5)                         # tiny images: bounded in number
    for run in range(1, 11):
        small.put((1, run, "cam"), QImage(8, 8, QImage.Format_ARGB32))
    assert sorted(k[1] for k in small._images) == [6, 7, 8, 9, 10]


def test_the_gui_runs_on_one_qt_binding(open_window):
    """PyQt5 is the default; ``QT_API=pyqt6`` (or PyQt6 alone) runs the same GUI on PyQt6. One
    binding is loaded, and pyqtgraph's plot windows use the same one."""
    import sys

    import qtpy
    wanted = (os.environ.get("QT_API") or "pyqt5").lower()
    w = open_window()
    plot = w.open_plot("run", "xgm_energy")
    assert plot.isVisible()
    import pyqtgraph
    other = {"pyqt5": "PyQt6", "pyqt6": "PyQt5"}[wanted]
    assert qtpy.API_NAME.lower() == wanted, (qtpy.API_NAME, wanted)
    assert pyqtgraph.Qt.QT_LIB == qtpy.API_NAME, (pyqtgraph.Qt.QT_LIB, qtpy.API_NAME)
    assert other not in sys.modules, f"{other} was loaded beside {qtpy.API_NAME}"


def test_sorting_any_column(open_window):
    w = open_window()
    m = w.model
    col = m.column_of("xgm_energy")
    w.table.sortByColumn(col, Qt.AscendingOrder)
    vals = [float(m.data_obj.num[m.data_row(i), col - NSTATIC]) for i in range(m.rowCount())]
    assert vals == sorted(vals)
    w.table.sortByColumn(col, Qt.DescendingOrder)
    vals = [float(m.data_obj.num[m.data_row(i), col - NSTATIC]) for i in range(m.rowCount())]
    assert vals == sorted(vals, reverse=True)
    # errors sort last
    w.table.sortByColumn(m.column_of("flaky"), Qt.DescendingOrder)
    assert runs_in_view(w)[:2] == [4, 2]
    w.table.sortByColumn(m.column_of("sample"), Qt.AscendingOrder)
    samples = [cell(w, r, "sample") for r in runs_in_view(w)]
    assert samples == sorted(samples, key=str.lower)
    w.table.sortByColumn(m.column_of(C_RUN), Qt.AscendingOrder)
    assert runs_in_view(w) == sorted(GUI_RUNS)


def test_filters_and_jump_to_run(open_window):
    w = open_window()
    m = w.model
    x = m.data_obj.numeric(m.column_of("xgm_energy"))
    lo = float(np.median(x))
    w.add_filter(NumberRange("xgm_energy", lo, None))
    expect = sorted((int(m.data_obj.run[r]) for r in range(m.data_obj.nrows) if x[r] >= lo),
                    reverse=True)
    assert runs_in_view(w) == expect
    assert not w.chips.isHidden()
    assert "shown" in w.counts_label.text()
    w.clear_filters()
    assert len(runs_in_view(w)) == len(GUI_RUNS)
    sample = cell(w, 3, "sample")
    w.search.setText(sample[:6])
    qtbot_wait_until(lambda: len(runs_in_view(w)) < len(GUI_RUNS) or
                     all(cell(w, r, "sample").startswith(sample[:6]) for r in runs_in_view(w)))
    assert 3 in runs_in_view(w)
    assert all(sample[:6].lower() in cell(w, r, "sample").lower() for r in runs_in_view(w))
    w.search.clear()
    qtbot_wait_until(lambda: len(runs_in_view(w)) == len(GUI_RUNS))
    # unchecked runs and "checked only"
    m.setData(m.index(m.view_row_of(GUI_PROPOSAL, 2), m.column_of(C_STATUS)), Qt.Unchecked,
              Qt.CheckStateRole)
    w.only_checked.setChecked(True)
    assert 2 not in runs_in_view(w) and len(runs_in_view(w)) == len(GUI_RUNS) - 1
    w.only_checked.setChecked(False)
    assert w.jump_to_run(3)
    assert w.selected_runs() == [(GUI_PROPOSAL, 3)]
    assert not w.jump_to_run(99)


def test_hide_and_reorder_columns_remembered(open_window, gui_ctx):
    w = open_window()
    hh = w.table.horizontalHeader()
    col = w.model.column_of("sample")
    w.set_column_hidden("sample", True)
    assert hh.isSectionHidden(col)
    order, _ = w.column_layout()
    order.remove("cam_peak")
    order.insert(0, "cam_peak")
    w.set_column_order(order)
    assert hh.logicalIndex(0) == w.model.column_of("cam_peak")
    w.table.sortByColumn(w.model.column_of("motor_start"), Qt.AscendingOrder)
    w.close()
    w2 = open_window()
    hh2 = w2.table.horizontalHeader()
    assert hh2.isSectionHidden(w2.model.column_of("sample"))
    assert hh2.logicalIndex(0) == w2.model.column_of("cam_peak")
    assert w2.model.view.sort_key == "motor_start" and not w2.model.view.descending
    assert "sample" not in [w2.model.data_obj.columns[c].key for c in w2.visible_columns()]
    # tag filter shows only the variables of a tag (fixed columns stay)
    w2.tag_combo.setCurrentIndex(w2.tag_combo.findData("camera"))
    vis = {w2.model.data_obj.columns[c].key for c in w2.visible_columns()}
    assert "cam_mean" in vis and "xgm_energy" not in vis and C_RUN in vis


def test_live_update_by_watching_the_database(open_window, gui_ctx):
    from backend.store.writer import RunDB, StoredValue
    w = open_window()
    assert w.update_mode == "db"
    applied = []
    w.model.runApplied.connect(applied.append)
    changed_rows = []
    w.model.dataChanged.connect(lambda a, b: changed_rows.append((a.row(), b.row())))
    db = RunDB(gui_ctx["ctx"])
    db.write_values(GUI_PROPOSAL, 2, {"cam_peak": StoredValue(4242.0, "number")})
    db.close()
    qtbot_wait_until(lambda: cell(w, 2, "cam_peak") == "4242")
    row2 = w.model.view_row_of(GUI_PROPOSAL, 2)
    assert changed_rows and all(a == b == row2 for a, b in changed_rows)
    # a new run processed by the real backend appears on top
    write_runs(gui_ctx["pdir"], [5])
    process_runs(gui_ctx["ctx"], [5])
    qtbot_wait_until(lambda: runs_in_view(w)[0] == 5 and cell(w, 5, "n_trains") == "40")
    assert cell(w, 5, "flaky", Qt.UserRole + 1) == K_ERROR


def test_live_update_redraws_a_sparkline_with_the_new_trend(open_window, gui_ctx):
    """A sparkline cell shows a run's new trend after a live update (sparklines are drawn
    once per value into a cached pixmap: the cache must not show the old one)."""
    from backend.store.writer import RunDB, StoredValue
    w = open_window()
    m = w.model
    col = m.column_of("xgm_trend")

    def slope_in_cell():
        idx = m.index(m.view_row_of(GUI_PROPOSAL, 2), col)
        w.table.scrollTo(idx)
        qtbot_wait_until(lambda: not w.table.visualRect(idx).isEmpty())
        img = w.table.viewport().grab(w.table.visualRect(idx)).toImage()
        a = np.array([[img.pixelColor(x, y).getRgb()[:3] for x in range(img.width())]
                      for y in range(img.height())], int)
        line = (a[..., 2] - a[..., 0] > 60)           # the sparkline's blue
        ys, xs = np.nonzero(line)
        assert len(xs) > 10, "no sparkline drawn"
        third = img.width() / 3
        left, right = ys[xs < third].mean(), ys[xs > 2 * third].mean()
        return "falling" if right > left + 3 else "rising" if left > right + 3 else "flat"

    for trend, pts in (("falling", np.linspace(10, 0, 60)), ("rising", np.linspace(0, 10, 60))):
        db = RunDB(gui_ctx["ctx"])
        db.write_values(GUI_PROPOSAL, 2, {"xgm_trend": StoredValue(
            pts.astype("<f4").tobytes(), "sparkline")})
        db.close()
        qtbot_wait_until(lambda: np.array_equal(
            m.sparkline(m.data_obj.row_of[(GUI_PROPOSAL, 2)], col), pts.astype("<f4")))
        assert slope_in_cell() == trend


def test_comment_edit_seen_by_second_window(open_window, gui_ctx):
    from backend.store.writer import RunDB
    a = open_window()
    b = open_window()
    m = a.model
    idx = m.index(m.view_row_of(GUI_PROPOSAL, 3), m.column_of(C_COMMENT))
    assert m.flags(idx) & Qt.ItemIsEditable
    assert m.setData(idx, "sample moved", Qt.EditRole)
    qtbot_wait_until(lambda: cell(b, 3, C_COMMENT) == "sample moved")
    db = RunDB(gui_ctx["ctx"])
    assert db.get_run(GUI_PROPOSAL, 3)["comment"] == "sample moved"
    db.close()
    # standalone comments (logbook)
    a.comments_panel.edit.setText("shift change")
    a.comments_panel._add()
    qtbot_wait_until(lambda: any(c["text"] == "shift change" for c in b.comments_panel.comments))
    assert "shift change" in b.comments_panel.view.toPlainText()


def test_kafka_live_updates_and_comments(open_window, gui_ctx, kafka_broker, monkeypatch):
    from backend.config import load_config
    from backend.notify.kafka import UpdatePublisher
    from backend.store.writer import RunDB
    monkeypatch.setenv("AMORE_BROKER", kafka_broker)
    a = open_window()
    b = open_window()
    assert a.update_mode == b.update_mode == "kafka"
    assert kafka_broker in a.source_label.text()
    # the backend processes a run and announces it on the update topic
    db = RunDB(gui_ctx["ctx"])
    pub = UpdatePublisher(load_config(gui_ctx["ctx"]), db.db_id)
    db.close()
    before = cell(a, 2, "xgm_energy")
    # reprocess run 2 with different data: rewrite run 2 with another seed, then process
    from backend.testing.mockdata import write_run
    write_run(gui_ctx["pdir"], GUI_PROPOSAL, 2, ntrains=60, seed=99)
    process_runs(gui_ctx["ctx"], [2], publish=pub.publish)
    pub.flush(5)
    qtbot_wait_until(lambda: cell(a, 2, "n_trains") == "60")
    qtbot_wait_until(lambda: cell(b, 2, "n_trains") == "60")
    assert cell(a, 2, "xgm_energy") != before
    # in Kafka mode nothing polls the database: the update came through Kafka
    assert a.update_thread.mode == "kafka"
    # comment edits are announced to the other window
    m = a.model
    m.setData(m.index(m.view_row_of(GUI_PROPOSAL, 4), m.column_of(C_COMMENT)), "via kafka")
    qtbot_wait_until(lambda: cell(b, 4, C_COMMENT) == "via kafka")
    pub.close()


def test_plot_window(open_window, gui_ctx):
    from backend.store.writer import RunDB, StoredValue
    w = open_window()
    d = w.model.data_obj
    p = w.open_plot("xgm_energy", "cam_peak")
    runs, x, y = p.points
    assert sorted(runs.astype(int)) == sorted(GUI_RUNS)
    for r, xi, yi in zip(runs.astype(int), x, y):
        row = d.row_of[(GUI_PROPOSAL, r)]
        assert xi == d.num[row, d.var_of("xgm_energy")]
        assert yi == d.num[row, d.var_of("cam_peak")]
    assert "Run 2" in p.describe_point(2, x[0], y[0])
    p.swap_axes()
    assert p.x_key == "cam_peak" and p.y_key == "xgm_energy"
    assert np.array_equal(p.points[1], y)
    # only checked runs
    w.model.set_included([(GUI_PROPOSAL, 1)], False)
    p.refresh()
    assert 1 not in p.points[0].astype(int)
    p.only_checked.setChecked(False)
    assert 1 in p.points[0].astype(int)
    # refresh as runs arrive
    db = RunDB(gui_ctx["ctx"])
    db.write_values(GUI_PROPOSAL, 4, {"cam_peak": StoredValue(99999.0, "number")})
    db.close()
    qtbot_wait_until(lambda: 99999.0 in p.points[1])
    # histogram
    p.mode_hist.setChecked(True)
    assert len(p.points[1]) == len(GUI_RUNS) and p._hist is not None
    assert sum(p._hist[1]) == len(GUI_RUNS)
    p.close()


def test_inspection_windows_show_the_runs_data(open_window, gui_ctx):
    from backend.ctxrunner.results import h5_path, read_run_value
    w = open_window()
    m = w.model

    def inspect(run, key):
        iw = w.inspect(m.index(m.view_row_of(GUI_PROPOSAL, run), m.column_of(key)))
        qtbot_wait_until(lambda: iw.kind is not None)
        return iw
    h5 = h5_path(gui_ctx["ctx"], GUI_PROPOSAL, 2)
    iw = inspect(2, "xgm_trend")
    assert iw.kind == "line"
    ref = read_run_value(h5, "xgm_trend")
    item = iw.plot_widget.getPlotItem().listDataItems()[0]
    assert np.array_equal(item.xData, ref.coords["trainId"].values.astype(float))
    assert np.allclose(item.yData, ref.values)
    iw = inspect(2, "cam_mean")
    assert iw.kind == "image"
    assert iw.image_view.image.shape == read_run_value(h5, "cam_mean").shape
    iw = inspect(2, "cam_vs_motor")
    assert iw.kind == "figure"
    iw = inspect(2, "sample")
    assert iw.kind == "text" and iw.text_widget.text() == cell(w, 2, "sample")
    iw = inspect(3, "flaky")
    assert iw.kind == "error" and "odd run 3" in iw.text_widget.toPlainText()


def test_per_train_correlation(open_window, gui_ctx):
    w = open_window()
    cw = w.open_correlation("motor_trend", "xgm_energy", runs=[(GUI_PROPOSAL, 2), (GUI_PROPOSAL, 4)])
    qtbot_wait_until(lambda: cw.result is not None)
    assert sorted(cw.result) == [(GUI_PROPOSAL, 2), (GUI_PROPOSAL, 4)]
    from backend.ctxrunner.results import h5_path, read_run_value
    tids, (x, y) = cw.result[(GUI_PROPOSAL, 4)]
    h5 = h5_path(gui_ctx["ctx"], GUI_PROPOSAL, 4)
    motor = read_run_value(h5, "motor_trend")
    xgm = read_run_value(h5, "xgm_energy")
    assert len(tids) == 40
    assert np.allclose(x, motor.sel(trainId=tids).values)
    assert np.allclose(y, xgm.sel(trainId=tids).values)
    assert len(cw.plot.getPlotItem().listDataItems()) == 2


def test_export_visible_table(open_window, tmp_path):
    import pandas as pd
    w = open_window()
    w.set_column_hidden("sample", True)
    w.table.sortByColumn(w.model.column_of(C_RUN), Qt.AscendingOrder)
    out = {}
    w.export(str(tmp_path / "runs.xlsx"), callback=lambda res, err: out.update(res=res, err=err))
    qtbot_wait_until(lambda: out)
    assert out["err"] is None
    df = pd.read_excel(tmp_path / "runs.xlsx")
    assert list(df["Run"]) == sorted(GUI_RUNS)
    assert not any("Sample" == c for c in df.columns)
    assert "XGM / Pulse energy [µJ]" in df.columns
    row = w.model.data_obj.row_of[(GUI_PROPOSAL, 2)]
    assert df.loc[df["Run"] == 2, "XGM / Pulse energy [µJ]"].iloc[0] == pytest.approx(
        w.model.data_obj.num[row, w.model.data_obj.var_of("xgm_energy")])


def test_context_editor_validates_before_saving(open_window, gui_ctx):
    w = open_window(live_updates=False)
    ed = w.open_editor()
    path = gui_ctx["ctx"] / "context.py"
    good = path.read_text()
    results = []
    ed.checked.connect(results.append)
    ed.editor.setPlainText(good.replace("return len(run.train_ids)", "return len(run.train_ids", 1))
    ed.save()
    qtbot_wait_until(lambda: results, timeout=30000)
    assert not results[0].ok and ed.editor.error_line == results[0].line
    assert path.read_text() == good            # not saved (the dialog answers "no" in tests)
    ed.editor.setPlainText(good + "\n# checked\n")
    ed.save()
    qtbot_wait_until(lambda: len(results) == 2, timeout=30000)
    assert results[1].ok
    qtbot_wait_until(lambda: path.read_text().endswith("# checked\n"))
    ed.close()


def test_reprocess_from_the_gui(open_window, gui_ctx):
    from backend.testing.mockdata import write_run
    w = open_window()
    write_run(gui_ctx["pdir"], GUI_PROPOSAL, 3, ntrains=70, seed=7)
    w.jump_to_run(3)
    dlg = w.open_reprocess(selected=True)
    assert dlg.chosen_runs() == ["3"]
    for i in range(dlg.vars.count()):
        it = dlg.vars.item(i)
        it.setCheckState(Qt.Checked if it.data(Qt.UserRole) == "n_trains" else Qt.Unchecked)
    assert dlg.chosen_names() == ["n_trains"]
    codes = []
    dlg.finished_job.connect(codes.append)
    dlg.start()
    qtbot_wait_until(lambda: codes, timeout=90000)
    assert codes == [0], dlg.log.toPlainText()
    assert dlg.progress.value() == 1
    qtbot_wait_until(lambda: cell(w, 3, "n_trains") == "70")
    dlg.close()


def test_a_window_closed_while_its_table_loads_starts_no_live_updates(qtbot, gui_ctx):
    """Closed before the table arrived (e.g. right after an import opened it): the table read
    meanwhile must not start live updates that nothing would stop (Qt aborts the process at
    exit on a QThread destroyed while running)."""
    from amore_gui._qt.mainwindow import MainWindow
    from amore_gui.application.settings import Settings
    w = MainWindow(gui_ctx["ctx"], settings=Settings(gui_ctx["settings"]))
    w.show()
    w.close()                   # the table's `loaded` is still queued: delivered below
    qtbot_wait_until(lambda: w.live.load_thread.isFinished())
    qtbot.wait(200)
    assert w.live.update_thread is None, "live updates started in a closed window"


def test_missing_context_dir_is_offered_and_created(qtbot, tmp_path, monkeypatch, gui_ctx):
    from amore_gui._qt import launch as gui_app
    from amore_gui._qt.dialogs import CreateContextDialog
    seen = {}

    def fake_exec(self):
        seen["proposal"] = self.proposal.value()
        self.template.setCurrentText("generic")
        return True
    monkeypatch.setattr(CreateContextDialog, "exec", fake_exec)
    target = tmp_path / "new-ctx"
    d = gui_app.resolve_or_ask(str(target))
    assert d == target.resolve() and (d / "runs.sqlite").is_file() and (d / "context.py").is_file()
    # a proposal number resolves through the data root; an existing directory opens directly
    assert gui_app.resolve_or_ask(str(GUI_PROPOSAL)) == gui_ctx["ctx"]
    assert "proposal" in seen


def test_amore_proto_gui_command_starts(gui_ctx, tmp_path):
    """``amore-proto gui DIR`` (as the demo launches it) opens and keeps running."""
    import subprocess
    import sys
    import time
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", AMORE_GUI_CONFIG=str(tmp_path / "g.json"))
    p = subprocess.Popen([sys.executable, "-m", "amore.cli", "gui", str(gui_ctx["ctx"])],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        time.sleep(4)
        assert p.poll() is None, p.stdout.read().decode()
    finally:
        p.terminate()
        p.wait(10)


#: A fresh GUI process opening a table, run by the test below: prints what it loaded and which
#: of SQLAlchemy / Alembic it imported.
_LOAD_CHILD = """
import sys
from pathlib import Path
from qtpy.QtCore import QTimer
from amore_gui._qt.app import make_app
from amore_gui._qt.mainwindow import MainWindow
app = make_app([])
win = MainWindow(Path(sys.argv[1]), live_updates=True)
win.show()
def check():
    if win.is_fully_loaded and win.live_ready:
        d = win.model.data_obj
        print("ROWS", d.nrows, "CELLS", int((d.kind[:d.nrows] != 0).sum()), flush=True)
        print("STATUS", win.live.counts_label.text(), flush=True)
        print("PROVENANCE", win.workspace.provenance(int(sys.argv[2]), 2, "flaky")["stale"], flush=True)
        print("IMPORTED", sorted(m for m in ("sqlalchemy", "alembic") if m in sys.modules), flush=True)
        app.quit()
timer = QTimer()
timer.timeout.connect(check)
timer.start(50)
QTimer.singleShot(150000, app.quit)
app.exec_()
win.close()
"""


def test_the_gui_loads_a_table_with_stale_values_without_importing_sqlalchemy(gui_ctx):
    """A fresh GUI process opens a table (the backend's database, with stale values), loads
    every value, follows it live, shows how a stale value was made - and never imports
    SQLAlchemy or Alembic: the read path is SQL text on :mod:`sqlite3`, and SQLAlchemy alone
    would add ~18 MB and ~0.2-0.3 s to every GUI's start."""
    import subprocess
    import sys
    from tests.gui_fixtures import change_flaky
    change_flaky(gui_ctx["ctx"])
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    p = subprocess.run([sys.executable, "-c", _LOAD_CHILD, str(gui_ctx["ctx"]), str(GUI_PROPOSAL)],
                       env=env, capture_output=True, text=True, timeout=180)
    out = p.stdout + p.stderr
    assert p.returncode == 0 and "IMPORTED" in p.stdout, out
    lines = dict(line.split(" ", 1) for line in p.stdout.splitlines() if " " in line)
    rows, cells = lines["ROWS"].split(" CELLS ")
    assert int(rows) == len(GUI_RUNS) and int(cells) > 0, out
    assert "4 stale values" in lines["STATUS"], out
    assert lines["PROVENANCE"] == "True", out
    assert lines["IMPORTED"] == "[]", f"the GUI's load path imported {lines['IMPORTED']}"


def test_gui_command_with_pyqt6_alone(gui_ctx, tmp_path):
    """Where a facility's Python has PyQt6 and not PyQt5, ``amore-proto gui`` runs on PyQt6 with
    no setting (PyQt5 made unimportable in the child process)."""
    import subprocess
    import sys
    import time
    code = ("import sys; sys.modules['PyQt5'] = None; "
            "import qtpy; print('BINDING', qtpy.API_NAME, flush=True); "
            "from amore.cli.main import main; "
            "sys.argv = ['amore-proto', 'gui', sys.argv[1]]; sys.exit(main())")
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", AMORE_GUI_CONFIG=str(tmp_path / "g.json"))
    env.pop("QT_API", None)
    p = subprocess.Popen([sys.executable, "-c", code, str(gui_ctx["ctx"])], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(5)
        assert p.poll() is None, p.stdout.read()
    finally:
        p.terminate()
        out = p.communicate(timeout=20)[0]
    assert "BINDING PyQt6" in out, out     # PyQt5 cannot load there: the window ran on PyQt6


def test_model_signals_are_consistent(qtmodeltester):
    """Qt's model tester watches sort, filter and one-row updates that move, insert and
    remove rows."""
    from amore_gui._qt.model import RunTableModel
    from amore_gui.application.table_data import K_NUMBER, CellValue, RunUpdate
    from tests.gui_fixtures import synthetic_table
    d = synthetic_table(60)
    m = RunTableModel(d)
    qtmodeltester.check(m)
    rows_moved = []
    m.rowsMoved.connect(lambda *a: rows_moved.append(a))
    m.sort(m.column_of("a"), Qt.DescendingOrder)
    m.set_filters([NumberRange("b", 1, 3)])
    rng = np.random.default_rng(3)
    for i in range(80):
        r = int(rng.integers(1, 70))          # some new runs
        upd = RunUpdate(1, r, {"status": "done"})
        upd.values["a"] = CellValue(K_NUMBER, float(rng.normal()))
        if i % 2:
            upd.values["b"] = CellValue(K_NUMBER, float(rng.integers(0, 5)))
        m.apply_run_update(upd)
        ref = type(m.view)(d, m.view.sort_key, m.view.descending)
        ref.set_filters(m.view.filters)
        assert list(m.view.order) == list(ref.order)
        assert m.rowCount() == len(ref.order)
    assert rows_moved
    qtmodeltester.check(m)


def test_dialogs(qtbot, gui_ctx):
    from amore_gui.application import dbread
    from amore_gui._qt.dialogs import ColumnsDialog, FilterDialog, OpenDialog
    from amore_gui.application.table_data import TextContains
    d = dbread.load_table(gui_ctx["ctx"]).data
    fd = FilterDialog(d, d.col_of("xgm_energy"))
    qtbot.addWidget(fd)
    assert fd.lo.isEnabled() and not fd.text.isEnabled()
    fd.lo.setText("700")
    f = fd.result_filter()
    assert isinstance(f, NumberRange) and f.key == "xgm_energy" and f.lo == 700 and f.hi is None
    fd.column.setCurrentIndex(fd._cols.index(d.col_of("sample")))
    assert fd.text.isEnabled()
    fd.text.setText("Au")
    assert fd.result_filter() == TextContains("sample", "Au")
    keys = [c.key for c in d.columns]
    cd = ColumnsDialog(d, keys, {"sample"})
    qtbot.addWidget(cd)
    it = cd.list.item(keys.index("cam_peak"))
    it.setCheckState(Qt.Unchecked)
    order, hidden = cd.result()
    assert order == keys and hidden == {"sample", "cam_peak"}
    od = OpenDialog([str(gui_ctx["ctx"])])
    qtbot.addWidget(od)
    od.recent.itemClicked.emit(od.recent.item(0))
    od.accept()
    assert od.choice == str(gui_ctx["ctx"])


def test_gui_offers_starts_shows_log_of_and_stops_the_backend(qtbot, data_root, monkeypatch):
    """Real tmux: a window on a directory without a backend asks, starts it on this machine,
    shows it running with its live log, and stops it."""
    import shutil
    import tempfile
    from pathlib import Path

    from qtpy.QtWidgets import QMessageBox

    from amore_gui._qt.mainwindow import MainWindow
    from amore_gui.application.settings import Settings
    from backend.service import manager
    from backend.service.tmux import find_tmux_servers
    from backend.store.init import init_context_dir

    short = Path(tempfile.mkdtemp(prefix="amg", dir="/tmp"))  # tmux sockets need short paths
    ctx = short / "ctx"
    init_context_dir(ctx, 2832, template="generic")
    asked = []
    monkeypatch.setattr(QMessageBox, "question",
                        lambda *a, **k: asked.append(a[2]) or QMessageBox.Yes)
    w = MainWindow(ctx, offer_backend=True, settings=Settings(short / "gui.json"))
    qtbot.addWidget(w)
    w.show()
    try:
        qtbot.waitUntil(lambda: "Backend running" in w.backend_label.text(), timeout=60000)
        assert w.backend_state.state == "running_here"
        assert len(asked) == 1 and "No AMORE backend is running" in asked[0]
        assert manager.backend_state(ctx).state == "running_here"
        assert w.act_backend_stop.isEnabled() and not w.act_backend_start.isEnabled()
        w.show_backend_log()
        qtbot.waitUntil(lambda: "Running on" in w.log_window.text.toPlainText(), timeout=15000)
        w.act_backend_stop.trigger()
        qtbot.waitUntil(lambda: "Backend stopped" in w.backend_label.text(), timeout=60000)
        assert manager.backend_state(ctx).state == "stopped"
        assert not (ctx / "amore-tmux.sock").exists()
        assert w.act_backend_start.isEnabled()
    finally:
        w.close()
        if manager.backend_state(ctx).state == "running_here":
            manager.stop_backend(ctx)
        for p in find_tmux_servers(ctx):
            p.kill()
        shutil.rmtree(short, ignore_errors=True)


def test_a_result_arriving_after_its_dialog_closed_is_dropped(open_window, qtbot):
    """A dialog closed while its data is read (e.g. a Slurm job's log) does not turn the late
    result into an error; other results are still delivered."""
    import threading

    from qtpy.QtWidgets import QDialog, QPlainTextEdit
    w = open_window()
    dlg = QDialog()
    dlg.setAttribute(Qt.WA_DeleteOnClose, True)
    text = QPlainTextEdit(dlg)
    gone = []
    dlg.destroyed.connect(lambda *_: gone.append(True))
    gate = threading.Event()
    got = []
    w.tasks.submit(gate.wait, 30, callback=lambda res, err: text.setPlainText("late log"))
    dlg.show()
    dlg.close()
    qtbot_wait_until(lambda: gone, what="the closed dialog deleted")
    gate.set()
    assert w.tasks.wait(30000)   # the late result is queued first, delivered before the next
    w.tasks.submit(lambda: 42, callback=lambda res, err: got.append((res, err)))
    qtbot_wait_until(lambda: got, what="the next result delivered")
    assert got == [(42, None)]
