"""Manual columns, expression filters, grouping, logs, copying, dark theme and shortcuts in the GUI
(pytest-qt, offscreen) on databases filled by the real backend (tests/gui_fixtures.py)."""
import os
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import json  # noqa: E402

from qtpy.QtCore import Qt  # noqa: E402
from qtpy.QtWidgets import (QApplication, QCheckBox, QComboBox, QDoubleSpinBox,  # noqa: E402
                             QSpinBox, QStyleOptionViewItem, QLineEdit)

from backend.store.manual import ManualStore  # noqa: E402
from backend.store.writer import RunDB  # noqa: E402

from tests.gui_fixtures import GUI_PROPOSAL  # noqa: E402
from tests.gui_helpers import WAIT, cell, runs_in_view  # noqa: E402


def add_column_from_dialog(qtbot, w, **fields):
    from amore_gui._qt import manual
    dlg = manual._open_add_column(w)
    dlg.name.setText(fields["name"])
    dlg.type.setCurrentText(fields["type"])
    dlg.title.setText(fields.get("title", ""))
    dlg.units.setText(fields.get("units", ""))
    dlg.choices.setText(fields.get("choices", ""))
    dlg.carry.setChecked(fields.get("carry", False))
    dlg.submit()
    return dlg


def select_runs(w, runs):
    from qtpy.QtCore import QItemSelection, QItemSelectionModel
    m = w.model
    sel = QItemSelection()
    for r in runs:
        row = m.view_row_of(GUI_PROPOSAL, r)
        sel.select(m.index(row, 0), m.index(row, m.columnCount() - 1))
    w.table.selectionModel().select(sel, QItemSelectionModel.ClearAndSelect)


def edit_cell(w, run, key, set_editor):
    """Open the delegate's editor on a cell, let ``set_editor(editor)`` change it, commit."""
    m = w.model
    idx = m.index(m.view_row_of(GUI_PROPOSAL, run), m.column_of(key))
    from qtpy.QtCore import QItemSelectionModel
    # like F2 on the current cell: the selection (several runs) stays
    w.table.selectionModel().setCurrentIndex(idx, QItemSelectionModel.NoUpdate)
    editor = w.delegate.createEditor(w.table.viewport(), QStyleOptionViewItem(), idx)
    w.delegate.setEditorData(editor, idx)
    set_editor(editor)
    w.delegate.setModelData(editor, m, idx)
    return editor


def db_value(ctx, run, name):
    v = RunDB(ctx).get_values(GUI_PROPOSAL, run, [name]).get(name)
    return None if v is None else v.value


def test_manual_columns_from_the_gui(qtbot, open_window, gui_ctx, tmp_path):
    ctx = gui_ctx["ctx"]
    w = open_window()
    # each type from the "Add manual column" dialog; a bad unit keeps the dialog open
    dlg = add_column_from_dialog(qtbot, w, name="distance", type="number", units="furlongz")
    qtbot.waitUntil(lambda: "furlongz" in dlg.error.text(), timeout=WAIT)
    assert "not defined in the unit registry" in dlg.error.text() and dlg.isVisible()
    dlg.units.setText("mm")
    dlg.title.setText("Detector distance")
    dlg.submit()
    qtbot.waitUntil(lambda: not dlg.isVisible(), timeout=WAIT)
    for f in (dict(name="good", type="boolean"), dict(name="shots", type="integer"),
              dict(name="note", type="string"),
              dict(name="crystal", type="choice", choices="lysozyme, buffer", carry=True)):
        add_column_from_dialog(qtbot, w, **f)
    qtbot.waitUntil(lambda: all(w.model.column_of(n) >= 0 for n in
                                ("distance", "good", "shots", "note", "crystal")), timeout=WAIT)
    assert w.model.headerData(w.model.column_of("distance"), Qt.Horizontal) == \
        "Detector distance [mm]"

    # several selected runs at once, with an editor fitting each type
    select_runs(w, [2, 3])
    ed = edit_cell(w, 2, "distance", lambda e: e.setValue(25.5))
    assert isinstance(ed, QDoubleSpinBox) and ed.suffix() == " mm"
    qtbot.waitUntil(lambda: cell(w, 2, "distance") == "25.5" and cell(w, 3, "distance") == "25.5",
                    timeout=WAIT)
    assert cell(w, 4, "distance") == ""
    ed = edit_cell(w, 3, "good", lambda e: e.setChecked(True))
    assert isinstance(ed, QCheckBox)
    ed = edit_cell(w, 2, "crystal", lambda e: e.setCurrentIndex(e.findData("buffer")))
    assert isinstance(ed, QComboBox) and ed.count() == 3
    select_runs(w, [1])
    ed = edit_cell(w, 1, "shots", lambda e: e.setValue(120))
    assert isinstance(ed, QSpinBox)
    ed = edit_cell(w, 1, "note", lambda e: e.setText("crystal moved"))
    assert isinstance(ed, QLineEdit)
    qtbot.waitUntil(lambda: cell(w, 1, "note") == "crystal moved" and cell(w, 1, "shots") == "120"
                    and cell(w, 2, "crystal") == "buffer" and cell(w, 3, "crystal") == "buffer"
                    and cell(w, 3, "good") == "✓", timeout=WAIT)
    assert db_value(ctx, 3, "distance") == 25.5 and db_value(ctx, 2, "good") == 1

    # a refused value: message, nothing written
    m = w.model
    m.setData(m.index(m.view_row_of(GUI_PROPOSAL, 1), m.column_of("distance")), "3 s", Qt.EditRole)
    qtbot.waitUntil(lambda: "Not saved" in w.statusBar().currentMessage(), timeout=WAIT)
    assert "Cannot convert from 'second'" in w.statusBar().currentMessage()
    assert db_value(ctx, 1, "distance") is None

    # tooltip: the last change; history view
    assert "(from gui)" in cell(w, 2, "distance", Qt.ToolTipRole)
    from amore_gui._qt import manual
    manual.show_history(w, GUI_PROPOSAL, 2, "distance")
    qtbot.waitUntil(lambda: getattr(w, "_last_dialog", None) is not None
                    and "History" in w._last_dialog.windowTitle(), timeout=WAIT)
    hist = w._last_dialog.table
    assert hist.rowCount() == 1 and hist.item(0, 1).text() == "25.5 mm"
    assert hist.item(0, 3).text() == "gui"

    # a carried-over value is drawn in italics and says so
    RunDB(ctx).ensure_run(GUI_PROPOSAL, 5)      # a new run, as the backend records it
    ManualStore(RunDB(ctx)).carry_over(GUI_PROPOSAL, 5)
    qtbot.waitUntil(lambda: w.model.view_row_of(GUI_PROPOSAL, 5) >= 0
                    and cell(w, 5, "crystal") == "buffer", timeout=WAIT)
    assert "Carried over" in cell(w, 5, "crystal", Qt.ToolTipRole)
    assert cell(w, 5, "crystal", Qt.FontRole).italic()
    from qtpy.QtWidgets import QMenu
    menu = QMenu(w)
    m = w.model
    manual.table_menu_items(w, menu, m.index(m.view_row_of(GUI_PROPOSAL, 5),
                                             m.column_of("crystal")), [(GUI_PROPOSAL, 5)])
    texts = [a.text() for a in menu.actions() if a.text()]
    assert texts[:3] == ["History of crystal in run 5…", "Confirm carried-over crystal of 1 run(s)",
                         "Clear crystal of 1 run(s)"]
    assert "Processing log of run 5…" in texts and "Group rows by crystal…" in texts
    from amore_gui.application.manual_edit import set_manual_values
    set_manual_values(w.session, [(GUI_PROPOSAL, 5)], "crystal", None, confirm=True,
                      on_done=lambda *_: manual.poke(w))
    qtbot.waitUntil(lambda: not (cell(w, 5, "crystal", Qt.FontRole) or
                                 __import__("qtpy.QtGui").QtGui.QFont()).italic(), timeout=WAIT)
    assert "Carried over" not in cell(w, 5, "crystal", Qt.ToolTipRole)
    assert cell(w, 5, "crystal") == "buffer"

    w.grab().save(str(tmp_path / "manual-columns.png"))


def test_expression_filter_box_grouping_logs_copy(qtbot, open_window, gui_ctx):
    ctx = gui_ctx["ctx"]
    store = ManualStore(RunDB(ctx))
    store.add_column("distance", "number", units="mm")
    store.set_values([1, 2], "distance", "15 mm", via="api")
    store.set_values([3, 4], "distance", "2.5 cm", via="api")
    w = open_window()
    w.search.setText("distance >= 2 cm and run in 1..3")
    qtbot.waitUntil(lambda: runs_in_view(w) == [3], timeout=WAIT)
    w.search.setText("xgm_energy > 0.000001 J or failed(flaky)")   # units, failed test
    qtbot.waitUntil(lambda: sorted(runs_in_view(w)) == [1, 2, 3, 4], timeout=WAIT)
    # a syntax error: the box turns red, says where; an unknown column likewise
    w.search.setText("distance >= (2")
    qtbot.waitUntil(lambda: "unexpected" in w.search.toolTip(), timeout=WAIT)
    assert "border" in w.search.styleSheet() and "^" in w.search.toolTip()
    w.grab().save(str(gui_ctx["settings"].parent / "filter-error.png"))
    w.search.setText("distanse > 3")
    qtbot.waitUntil(lambda: "no column named" in w.search.toolTip(), timeout=WAIT)
    assert sorted(runs_in_view(w)) == [1, 2, 3, 4]     # nothing filtered while it is wrong
    w.search.setText("lyso")                            # plain words stay a text search
    qtbot.waitUntil(lambda: w.search.styleSheet() == "", timeout=WAIT)
    w.search.setText("")
    qtbot.waitUntil(lambda: len(runs_in_view(w)) == 4, timeout=WAIT)

    # group rows by a column: count and means
    from amore_gui._qt import manual
    dlg = manual.show_groups(w, w.model.column_of("distance"))
    t = dlg.table
    groups = {t.item(i, 0).text(): t.item(i, 1).text() for i in range(t.rowCount())}
    assert groups == {"15": "2", "25": "2"}
    assert t.horizontalHeaderItem(2).text().startswith("mean ")
    for i in range(dlg.columns.count()):                 # add a second column: Run
        if dlg.columns.item(i).text() == "Run":
            dlg.columns.item(i).setCheckState(Qt.Checked)
    assert dlg.table.rowCount() == 4 and "4 group(s)" in dlg.note.text()
    dlg.grab().save(str(gui_ctx["settings"].parent / "groups.png"))

    # processing log of a run (the fixture's flaky variable fails for odd runs)
    manual.show_run_log(w, GUI_PROPOSAL, 3)
    qtbot.waitUntil(lambda: "log of run 3" in getattr(w, "_last_dialog").windowTitle(),
                    timeout=WAIT)
    text = w._last_dialog.text.toPlainText()
    assert "flaky failed" in text and "ValueError: odd run 3" in text

    # copy selected runs as TSV / Markdown
    select_runs(w, [2, 4])
    tsv = manual.copy_selection(w, "tsv")
    lines = tsv.splitlines()
    assert lines[0].split("\t")[:2] == ["Status", "Run"]      # visible columns only
    assert [ln.split("\t")[1] for ln in lines[1:]] == ["4", "2"]
    assert QApplication.clipboard().text() == tsv
    md = manual.copy_selection(w, "markdown")
    assert md.startswith("| Status | Run |") and "|---" in md


def test_dark_theme_remembered_and_toolbar_shortcuts(qtbot, open_window, gui_ctx, tmp_path):
    w = open_window()
    from qtpy.QtWidgets import QToolBar
    tb_actions = [a for tb in w.findChildren(QToolBar) for a in tb.actions()
                  if a.text() and not a.isSeparator()]
    assert len(tb_actions) >= 6
    missing = [a.text() for a in tb_actions if a.shortcut().isEmpty()]
    assert not missing, missing
    in_menus = {a for m in (x.menu() for x in w.menuBar().actions()) if m for a in m.actions()}
    assert not [a.text() for a in tb_actions if a not in in_menus]   # menus show the keys
    keys = [a.shortcut().toString() for a in w.findChildren(type(w.act_dark))
            if not a.shortcut().isEmpty()]
    assert len(keys) == len(set(keys)), sorted(keys)     # no shortcut used twice
    # the shortcut works: Ctrl+Shift+D switches the dark theme on, remembered
    from qtpy.QtTest import QTest
    w.activateWindow()
    w.table.setFocus()
    QTest.keyClick(w.table, Qt.Key_D, Qt.ControlModifier | Qt.ShiftModifier)
    # the events carried Ctrl+Shift, so Qt thinks they are still held: release them (else later
    # selections in this process toggle instead of select)
    QTest.keyClick(w.table, Qt.Key_Escape, Qt.NoModifier)
    qtbot.waitUntil(lambda: w.act_dark.isChecked(), timeout=WAIT)
    view_menu = [a.menu() for a in w.menuBar().actions() if a.text() == "&View"][0]
    assert w.act_dark in view_menu.actions()
    assert QApplication.instance().palette().color(w.palette().Window).lightness() < 100
    saved = json.loads(gui_ctx["settings"].read_text())
    assert saved["theme"] == "dark"
    w.grab().save(str(tmp_path / "dark.png"))
    w2 = open_window()
    assert w2.act_dark.isChecked()
    w2.act_dark.trigger()
    assert QApplication.instance().palette().color(w.palette().Window).lightness() > 100
    assert json.loads(gui_ctx["settings"].read_text())["theme"] == "light"


def test_manual_edits_reach_other_guis_through_kafka(qtbot, open_window, gui_ctx, kafka_broker,
                                                     monkeypatch):
    import subprocess
    from tests.conftest import amore_cmd
    monkeypatch.setenv("AMORE_BROKER", kafka_broker)
    ctx = gui_ctx["ctx"]
    a = open_window()
    b = open_window()
    assert a.update_mode == b.update_mode == "kafka"
    # a column added and a value set from the command line (another process) appear live
    for args in (("column", "add", "distance", "--type", "number", "--units", "mm"),
                 ("set", "2-3", "distance", "4 cm")):
        p = subprocess.run(amore_cmd(*args, "-d", ctx), capture_output=True, text=True,
                           timeout=60)
        assert p.returncode == 0, p.stderr
    qtbot.waitUntil(lambda: a.model.column_of("distance") >= 0 and cell(a, 3, "distance") == "40"
                    and cell(b, 2, "distance") == "40", timeout=WAIT)
    # an edit in one window reaches the other
    select_runs(a, [4])
    edit_cell(a, 4, "distance", lambda e: e.setValue(12.5))
    qtbot.waitUntil(lambda: cell(b, 4, "distance") == "12.5", timeout=WAIT)
    assert a.update_thread.mode == b.update_thread.mode == "kafka"


def test_selection_survives_a_reload(qtbot, open_window, gui_ctx):
    """Runs selected for a multi-run edit stay selected when the table reloads (a column added
    from another GUI or the command line), so the edit still reaches all of them."""
    ctx = gui_ctx["ctx"]
    w = open_window()
    from qtpy.QtCore import QItemSelectionModel
    select_runs(w, [2, 3])
    w.table.selectionModel().setCurrentIndex(
        w.model.index(w.model.view_row_of(GUI_PROPOSAL, 2), 0), QItemSelectionModel.NoUpdate)
    ManualStore(RunDB(ctx)).add_column("crystal", "choice", choices=["lysozyme", "buffer"])
    w.reload()
    qtbot.waitUntil(lambda: w.model.column_of("crystal") >= 0, timeout=WAIT)
    assert sorted(r for _, r in w.selected_runs()) == [2, 3]
    edit_cell(w, 2, "crystal", lambda e: e.setCurrentIndex(e.findData("buffer")))
    qtbot.waitUntil(lambda: cell(w, 2, "crystal") == "buffer" and cell(w, 3, "crystal") == "buffer",
                    timeout=WAIT)


def test_a_window_reloaded_many_times_keeps_one_load_thread(qtbot, open_window, gui_ctx):
    """A window open for a whole beamtime reads its table again after every change of the
    context file: each read's thread is freed afterwards, not kept for the window's life."""
    from amore_gui._qt.workers import LoadThread
    ctx = gui_ctx["ctx"]
    w = open_window()
    for i in range(5):
        ManualStore(RunDB(ctx)).add_column(f"note{i}", "string")
        w.reload()
        qtbot.waitUntil(lambda i=i: w.model.column_of(f"note{i}") >= 0 and w.is_fully_loaded,
                        timeout=WAIT)
    qtbot.waitUntil(lambda: len(w.findChildren(LoadThread)) <= 2, timeout=WAIT)
    qtbot.wait(200)
    threads = w.findChildren(LoadThread)
    assert len(threads) <= 2, f"{len(threads)} load threads kept after 5 reloads"
    assert cell(w, 2, "note4") == ""


def test_a_context_edit_changes_the_columns_without_reading_the_table_again(qtbot, open_window,
                                                                             gui_ctx):
    """A context edit that keeps the variables (titles, units changed) and a manual column
    added elsewhere reach the open window's headers without its table being read again (every
    read cost a window open for days memory, issue 23); the values stay. A variable that went
    away makes it read the whole table again: its stored values are shown without its
    definition."""
    from backend.store.writer import VariableInfo
    ctx = gui_ctx["ctx"]
    w = open_window()
    data = w.model.data_obj
    loads = w.live.load_thread
    db = RunDB(ctx)
    old = db.get_variables()
    first = old[0].name
    shown = cell(w, 2, first)
    db.set_variables([VariableInfo(v.name, f"Edited {v.name}", v.description, v.units, v.tags)
                      for v in old])
    col = w.model.column_of(first)
    qtbot.waitUntil(lambda: w.model.headerData(col, Qt.Horizontal).startswith(
        f"Edited {first}"), timeout=WAIT)
    ManualStore(db).add_column("crystal", "choice", choices=["lysozyme", "buffer"])
    qtbot.waitUntil(lambda: w.model.column_of("crystal") >= 0, timeout=WAIT)
    assert w.model.data_obj is data and w.live.load_thread is loads, "the table was read again"
    assert cell(w, 2, first) == shown and cell(w, 2, "crystal") == ""
    edit_cell(w, 2, "crystal", lambda e: e.setCurrentIndex(e.findData("buffer")))
    qtbot.waitUntil(lambda: cell(w, 2, "crystal") == "buffer", timeout=WAIT)
    # a variable removed from the context file: the whole table is read again
    db.set_variables([v for v in db.get_variables() if v.name != first])
    db.close()
    qtbot.waitUntil(lambda: w.model.data_obj is not data and w.is_fully_loaded, timeout=WAIT)
    assert w.model.headerData(w.model.column_of(old[1].name), Qt.Horizontal).startswith(
        f"Edited {old[1].name}")
    assert cell(w, 2, "crystal") == "buffer" and cell(w, 2, first) == shown
    assert w.model.headerData(w.model.column_of(first), Qt.Horizontal) == first


def test_a_window_hands_back_the_memory_of_a_table_read_again(qtbot, open_window, gui_ctx,
                                                               monkeypatch):
    """A window that read its table again (a manual column deleted elsewhere) or took new
    column definitions in place hands the memory glibc keeps freed (the table shown before,
    the copies of its arrays) back to the system, off the GUI thread: without it a window
    open for a beamtime kept 1.5-3 MB more after each such step (issue 23's soak)."""
    import threading

    from amore_gui._qt import livetable
    calls = []
    monkeypatch.setattr(livetable, "hand_back_memory",
                        lambda: calls.append(threading.current_thread()))
    ctx = gui_ctx["ctx"]
    w = open_window()
    data = w.model.data_obj
    db = RunDB(ctx)
    ManualStore(db).add_column("note", "string")           # taken in place
    qtbot.waitUntil(lambda: w.model.column_of("note") >= 0, timeout=WAIT)
    qtbot.waitUntil(lambda: len(calls) >= 1, timeout=WAIT)
    assert w.model.data_obj is data
    ManualStore(db).delete("note")                         # the table is read again
    db.close()
    qtbot.waitUntil(lambda: w.model.data_obj is not data and w.is_fully_loaded, timeout=WAIT)
    qtbot.waitUntil(lambda: len(calls) >= 2, timeout=WAIT)
    assert w.model.column_of("note") < 0
    assert threading.main_thread() not in calls, "memory handed back on the GUI thread"
