"""Posting to the beamtime's logbook from the Qt GUI, as DAMNIT users do it: selected rows as a
Markdown table (columns chosen, previewed, split under the message limit) and the picture of a
plot or an inspection window, through the facility's logbook proxy (``zulip.cfg``, answered by a
local stand-in that records what it receives). Clear words when nothing is set up or the proxy
refuses; the key appears nowhere but in ``zulip.cfg`` and the proxy's header."""
import logging

from qtpy.QtCore import QItemSelectionModel, Qt

from tests.conftest import PROXY_KEY
from tests.gui_fixtures import GUI_PROPOSAL, WAIT
from tests.gui_helpers import qtbot_wait_until


def _cfg(ctx, proxy, key=PROXY_KEY, topics='["shift 1", "alignment"]'):
    (ctx / "zulip.cfg").write_text(f"[ZULIP]\nkey = {key}\nurl = {proxy.url}/zulip\n"
                                   f"topics = {topics}\n")


def _select_runs(w, runs):
    sm = w.table.selectionModel()
    sm.clearSelection()
    for r in runs:
        vr = w.model.view_row_of(GUI_PROPOSAL, r)
        sm.select(w.model.index(vr, 0), QItemSelectionModel.Select | QItemSelectionModel.Rows)


def _set_up(dlg):
    qtbot_wait_until(lambda: dlg.setup is not None)
    return dlg.setup


def _closed(dlg) -> bool:
    try:
        return not dlg.isVisible()
    except RuntimeError:            # closed and deleted
        return True


def _posts(proxy):
    return [q for q in proxy.requests if q["method"] == "POST"]


def _texts(widget) -> str:
    """Every text a dialog shows (labels, line edits, combo boxes, text boxes, list items)."""
    from qtpy.QtWidgets import QComboBox, QLabel, QLineEdit, QListWidget, QPlainTextEdit
    out = [widget.windowTitle()]
    out += [w.text() for w in widget.findChildren(QLabel)]
    out += [w.text() for w in widget.findChildren(QLineEdit)]
    out += [w.toPlainText() for w in widget.findChildren(QPlainTextEdit)]
    for cb in widget.findChildren(QComboBox):
        out += [cb.itemText(i) for i in range(cb.count())]
    for lw in widget.findChildren(QListWidget):
        out += [lw.item(i).text() for i in range(lw.count())]
    return "\n".join(out)


def test_selected_runs_go_to_the_logbook_proxy_as_a_previewed_markdown_table(
        open_window, gui_ctx, logbook_proxy):
    ctx = gui_ctx["ctx"]
    _cfg(ctx, logbook_proxy)
    w = open_window()
    assert w.posting.act_post_rows in w.menuBar().actions()[0].menu().actions()
    _select_runs(w, [3, 1])
    dlg = w.posting.post_selection()
    setup = _set_up(dlg)
    assert setup.ok and dlg.stream.text() == "p2832 beamtime"
    assert [dlg.topic.itemText(i) for i in range(dlg.topic.count())] == ["shift 1", "alignment"]
    assert dlg.topic.currentText() == "shift 1"
    # the columns offered: the run number (always), no Status/Proposal, no picture columns
    offered = [dlg.columns.item(i).text() for i in range(dlg.columns.count())]
    assert offered[0] == "Run" and "Trains" in offered and "Status" not in offered
    assert "Proposal" not in offered
    assert not any(t.startswith(("Camera/Mean image", "XGM/Energy trend")) for t in offered)
    for i in range(1, dlg.columns.count()):
        it = dlg.columns.item(i)
        it.setCheckState(Qt.Checked if it.text() == "Trains" else Qt.Unchecked)
    dlg.title.setText("Scan 5")
    dlg.topic.setCurrentText("alignment")
    want = "### Scan 5\n| Run | Trains |\n|---:|---:|\n| 1 | 40 |\n| 3 | 40 |\n"
    assert dlg.messages == [want] and dlg.preview.toPlainText() == want
    assert dlg.send_btn.isEnabled()
    dlg.send_btn.click()
    qtbot_wait_until(lambda: _posts(logbook_proxy))
    (post,) = _posts(logbook_proxy)
    assert post["path"] == "/zulip/send_message" and post["key"] == PROXY_KEY
    assert post["query"] == {"topic": ["alignment"]} and post["fields"] == {"content": want}
    assert post["files"] == {}
    qtbot_wait_until(lambda: _closed(dlg))
    assert "Posted 1 message(s) to the logbook: p2832 beamtime › alignment" in \
        w.statusBar().currentMessage()
    # the next post offers the last topic and the columns chosen
    _select_runs(w, [2])
    dlg = w.posting.post_selection()
    _set_up(dlg)
    assert dlg.topic.currentText() == "alignment"
    assert dlg.messages == ["| Run | Trains |\n|---:|---:|\n| 2 | 40 |\n"]


def test_a_long_selection_is_split_between_rows_under_the_limit(open_window, gui_ctx,
                                                                logbook_proxy):
    ctx = gui_ctx["ctx"]
    with open(ctx / "amore.toml", "a") as f:
        f.write("\n[logbook]\nmessage_limit = 160\n")
    _cfg(ctx, logbook_proxy)
    w = open_window()
    _select_runs(w, [1, 2, 3, 4])
    dlg = w.posting.post_selection()
    assert _set_up(dlg).limit == 160
    for i in range(1, dlg.columns.count()):
        it = dlg.columns.item(i)
        it.setCheckState(Qt.Checked if it.text() in ("Trains", "Sample") else Qt.Unchecked)
    assert len(dlg.messages) >= 2 and "message 2 of" in dlg.preview.toPlainText()
    dlg.send_btn.click()
    qtbot_wait_until(lambda: len(_posts(logbook_proxy)) == len(dlg.messages))
    runs = []
    for post in _posts(logbook_proxy):
        content = post["fields"]["content"]
        lines = content.rstrip("\n").split("\n")
        assert len(content) <= 160 and lines[0] == "| Run | Trains | Sample |"
        runs += [int(line.split("|")[1]) for line in lines[2:]]
    assert runs == [1, 2, 3, 4]


def test_a_plot_and_an_inspected_image_go_as_pictures(open_window, gui_ctx, logbook_proxy):
    _cfg(gui_ctx["ctx"], logbook_proxy)
    w = open_window()
    plot = w.open_plot("xgm_energy", "cam_peak")
    plot.only_checked.setChecked(False)
    dlg = plot.post_to_logbook()
    assert _set_up(dlg).ok and dlg.title.text() == plot.windowTitle().removesuffix(" — AMORE")
    assert dlg.png[:8] == b"\x89PNG\r\n\x1a\n"
    dlg.title.setText("Spot peak against pulse energy")
    dlg.send_btn.click()
    qtbot_wait_until(lambda: _posts(logbook_proxy))
    (post,) = _posts(logbook_proxy)
    assert post["fields"] == {"content": "Spot peak against pulse energy"}
    assert post["query"] == {"topic": ["shift 1"]}
    assert post["files"] == {"image": ("amore-plot.png", dlg.png)}
    plot.close()        # with its dialog, maybe before the post's answer came: still said
    qtbot_wait_until(lambda: w.statusBar().currentMessage().startswith(
        "Posted 1 message(s) to the logbook: p2832 beamtime › shift 1"))

    m = w.model
    insp = w.inspect(m.index(m.view_row_of(GUI_PROPOSAL, 2), m.column_of("cam_mean")))
    qtbot_wait_until(lambda: insp.kind is not None)
    assert insp.kind == "image" and insp.post_btn.isEnabled()
    dlg = insp.post_to_logbook()
    _set_up(dlg)
    assert dlg.title.text() == "Run 2 · Camera › Mean image"
    dlg.send_btn.click()
    qtbot_wait_until(lambda: len(_posts(logbook_proxy)) == 2)
    name, png = _posts(logbook_proxy)[-1]["files"]["image"]
    assert name == "r2_cam_mean.png" and png == dlg.png and png[:8] == b"\x89PNG\r\n\x1a\n"
    insp.close()


def test_no_logbook_and_a_refusal_are_said_plainly_and_the_key_stays_hidden(
        open_window, gui_ctx, logbook_proxy, caplog):
    caplog.set_level(logging.DEBUG)
    ctx = gui_ctx["ctx"]
    w = open_window()
    _select_runs(w, [1])
    dlg = w.posting.post_selection()
    assert not _set_up(dlg).ok
    assert dlg.status.text().startswith(f"Posting is not possible: No logbook set up for {ctx}")
    assert dlg.help.isVisibleTo(dlg) and str(ctx / "zulip.cfg") in dlg.help.toPlainText()
    assert "[ZULIP]" in dlg.help.toPlainText() and not dlg.send_btn.isEnabled()
    dlg.close()

    _cfg(ctx, logbook_proxy, topics='["shift 1"]')
    logbook_proxy.reply_error = "stream is archived"
    dlg = w.posting.post_selection()
    assert _set_up(dlg).ok and not dlg.help.isVisibleTo(dlg)
    dlg.send_btn.click()
    qtbot_wait_until(lambda: dlg.status.text().startswith("Not posted"))
    assert dlg.status.text() == (f"Not posted: logbook proxy {logbook_proxy.url}/zulip/"
                                 f"send_message: HTTP 200: stream is archived")
    assert dlg.isVisible() and dlg.send_btn.isEnabled()       # try again, or cancel
    shown = _texts(dlg) + "\n" + w.statusBar().currentMessage() + "\n" + w.last_message
    assert PROXY_KEY not in shown
    assert PROXY_KEY not in caplog.text
    for p in [gui_ctx["settings"], *ctx.rglob("*")]:
        if p.is_file() and p.name != "zulip.cfg":
            assert PROXY_KEY.encode() not in p.read_bytes(), p
    dlg.close()

    # a key the proxy does not accept: said when the dialog opens, Send stays off
    _cfg(ctx, logbook_proxy, key="wrong-key-1234")
    dlg = w.posting.post_selection()
    assert not _set_up(dlg).ok and not dlg.send_btn.isEnabled()
    assert dlg.status.text() == (f"Posting is not possible: logbook proxy {logbook_proxy.url}"
                                 f"/zulip/me: HTTP 403: bad key")
    assert "wrong-key-1234" not in _texts(dlg) and "wrong-key-1234" not in caplog.text
    dlg.close()


def test_posting_rows_needs_a_selection(open_window):
    w = open_window()
    w.table.selectionModel().clearSelection()
    assert w.posting.post_selection() is None
    assert w.last_message == "Select the runs to post first."
