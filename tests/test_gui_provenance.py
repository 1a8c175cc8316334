"""Stale values in the Qt GUI (pytest-qt, offscreen) on a database filled by the real backend
(tests/gui_fixtures.py): after a function of the context file changed, its cells carry a mark
in their corner, their tooltip says what changed, the status bar counts them, the cell menu shows
how the value was made; recomputing one run's value clears its mark live."""
import os
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from qtpy.QtGui import QColor, QImage  # noqa: E402
from qtpy.QtWidgets import QMenu  # noqa: E402

from backend.store.writer import RunDB  # noqa: E402
from tests.gui_fixtures import GUI_PROPOSAL, GUI_RUNS, change_flaky, process_runs  # noqa: E402,E501
from tests.gui_helpers import WAIT, cell  # noqa: E402


def corner_colour(w, run, key) -> QColor:
    """The colour just inside the top right corner of a cell, as painted."""
    m = w.model
    idx = m.index(m.view_row_of(GUI_PROPOSAL, run), m.column_of(key))
    w.table.scrollTo(idx)
    rect = w.table.visualRect(idx)
    img: QImage = w.table.viewport().grab().toImage()
    return img.pixelColor(rect.right() - 1, rect.top() + 1)


def test_stale_cells_marked_explained_counted_and_cleared(qtbot, open_window, gui_ctx):
    from amore_gui._qt.delegates import STALE_MARK
    from amore_gui._qt.model import StaleRole
    ctx = gui_ctx["ctx"]
    change_flaky(ctx)
    w = open_window()
    for r in GUI_RUNS:
        bits_text = cell(w, r, "flaky", StaleRole)
        assert bits_text is not None, f"flaky of run {r} not marked stale"
        assert "function flaky changed in context.py" in cell(w, r, "flaky", 3), r  # ToolTipRole
        assert cell(w, r, "xgm_energy", StaleRole) is None, r
    assert cell(w, 2, "flaky", 3).startswith("Stale: function flaky changed in context.py")
    assert "4 stale values" in w.live.counts_label.text(), w.live.counts_label.text()
    # the mark is painted in the cell's corner, not in an up-to-date cell's
    assert corner_colour(w, 2, "flaky") == STALE_MARK
    w.grab().save(str(gui_ctx["settings"].parent / "stale-cells.png"))
    assert corner_colour(w, 2, "xgm_energy") != STALE_MARK

    # the cell menu: how the value was made, and why it is stale
    m = w.model
    idx = m.index(m.view_row_of(GUI_PROPOSAL, 2), m.column_of("flaky"))
    menu = QMenu(w)
    w.manual.menu_items(menu, idx, [m.run_at(idx.row())])
    how = [a for a in menu.actions() if a.text().startswith("How ")]
    assert len(how) == 1 and how[0].text().endswith("Flaky of run 2 was made…"), \
        [a.text() for a in menu.actions()]
    how[0].trigger()
    qtbot.waitUntil(lambda: "provenance" in getattr(w._last_dialog, "windowTitle", str)(),
                    timeout=WAIT)
    text = w._last_dialog.text.toPlainText()
    assert "STALE: function flaky changed in context.py" in text, text
    assert "local worker, PID" in text and "Code: " in text, text

    # recomputing run 2's flaky (the backend's way) clears its mark, live; run 4 stays stale
    outs = process_runs(ctx, [2], names=["flaky"])
    assert outs[0].status == "done", outs
    qtbot.waitUntil(lambda: cell(w, 2, "flaky", StaleRole) is None, timeout=WAIT)
    assert RunDB(ctx).get_values(GUI_PROPOSAL, 2, ["flaky"])["flaky"].value == 5.0
    assert cell(w, 4, "flaky", StaleRole) is not None
    qtbot.waitUntil(lambda: "3 stale values" in w.live.counts_label.text(), timeout=WAIT)
