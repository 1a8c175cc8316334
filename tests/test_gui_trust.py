"""The GUI shows what lets people trust the table: the "Data check" and "Files" columns with
their details in the tooltip, the event log pane with a count of new warnings, and the notice
that the proposal is closed."""
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import subprocess  # noqa: E402

from qtpy.QtCore import Qt  # noqa: E402

from backend.store.writer import RunDB  # noqa: E402
from backend.testing import mockdata as md  # noqa: E402
from tests.conftest import amore_cmd  # noqa: E402
from tests.gui_helpers import WAIT, cell  # noqa: E402


def test_data_check_column_event_log_and_closed_notice(open_window, gui_ctx, qtbot, tmp_path):
    ctx, pdir = gui_ctx["ctx"], gui_ctx["pdir"]
    raw = pdir / "raw" / "r0003"
    f = raw / "RAW-R0003-DA01-S00000.h5"
    import h5py
    with h5py.File(f, "r") as h:
        ft = int(h["INDEX/trainId"][0])
    md.drop_trains(f, md.MOTOR_SRC, range(ft + 2, ft + 6))
    out = subprocess.run(amore_cmd("check", "all", "-d", ctx), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 1, out.stderr
    db = RunDB(ctx)
    db.add_event("warning", "kafka", "Malformed message on test.r2d2 [0] at offset 7 skipped: "
                 "not JSON", details={"topic": "test.r2d2", "offset": 7})

    w = open_window()
    m = w.model
    col = m.column_of("amore.data_check")
    assert m.headerData(col, Qt.Horizontal) == "Data check"
    assert cell(w, 3, "amore.data_check") == "1 source incomplete"
    assert "4 of 40 missing" in cell(w, 3, "amore.data_check", Qt.ToolTipRole)
    assert cell(w, 3, "amore.data_check", Qt.BackgroundRole) is not None
    assert cell(w, 2, "amore.data_check") == "OK"
    assert "every source complete" in cell(w, 2, "amore.data_check", Qt.ToolTipRole)

    el = w.event_log
    qtbot.waitUntil(lambda: bool(el.state.entries), timeout=WAIT)
    assert el.button.text() == "Event log"          # what was there on opening counts as seen
    db.add_event("error", "worker", "Run 2: context worker process was killed by SIGKILL", run=2)
    db.add_event("warning", "kafka", "Lost the connection to Kafka broker b:9092")
    qtbot.waitUntil(lambda: "2 new warnings" in el.button.text(), timeout=WAIT)
    assert el.panel.table.rowCount() == 0           # the dock is closed: no table items kept

    subprocess.run(amore_cmd("close", "-d", ctx), check=True, capture_output=True, timeout=60)
    qtbot.waitUntil(lambda: el.closed_label.isVisible(), timeout=WAIT)
    assert "read-only" in el.closed_label.text() and not w.act_reprocess.isEnabled()
    el.show_log()
    qtbot.waitUntil(lambda: el.panel.table.rowCount() >= 4, timeout=WAIT)
    w.table.scrollTo(m.index(0, col))
    w.grab().save(str(tmp_path / "trust.png"))
    if os.environ.get("AMORE_SCREENSHOT_DIR"):
        w.grab().save(os.path.join(os.environ["AMORE_SCREENSHOT_DIR"], "gui-trust.png"))
    assert el.button.text() == "Event log"          # looked at: nothing new
    texts = [el.panel.table.item(i, 4).text() for i in range(el.panel.table.rowCount())]
    assert texts[0].startswith("Proposal closed") and any("SIGKILL" in t for t in texts)
    assert any("Malformed message" in t for t in texts)
    el.panel.level.setCurrentIndex(2)               # errors only
    assert el.panel.table.rowCount() == 1
    el.dock.setVisible(False)
    qtbot.waitUntil(lambda: el.panel.table.rowCount() == 0, timeout=WAIT)
