"""The run table in a browser (``amore-proto web``): a real server process, a real headless Chromium
(Debian's, driven by Playwright), databases filled by the real backend from real mock runs.

What a scientist would notice: the table as the GUI shows it, new runs over Kafka without a
reload, edits recorded with the web user's name and seen by an open Qt window, filters with the
GUI's query language, catching up after the server restarted, who may see and edit, values that
stay text, inspection and plots, export, links to runs, remembered layouts, reprocessing."""
from __future__ import annotations

import json
import os
import re
import subprocess

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402

from tests.conftest import amore_cmd, wait_for  # noqa: E402
from tests.gui_fixtures import (GUI_PROPOSAL, GUI_RUNS, change_flaky, process_runs,  # noqa: E402
                                write_runs)
from tests.web_browser import http  # noqa: E402

SLUG = f"p{GUI_PROPOSAL}"
WAIT = 20_000


def open_table(browser_page, server, token=None, path=""):
    """A page showing the table, fully loaded and live."""
    url = f"{server.url}/d/{SLUG}/{path}" + (f"?token={token}" if token else "")
    page = browser_page(url)
    page.wait_for_function("() => document.body.dataset.loaded === '1' && document.body.dataset.live === '1'",
                           timeout=WAIT)
    return page


def cell(page, run, key):
    """The grid cell of a run and column (scrolled into view first)."""
    page.evaluate("k => amore.state.grid.ensureColumnVisible(k)", key)
    return page.locator(f'.ag-row[row-id="{GUI_PROPOSAL}:{run}"] .ag-cell[col-id="{key}"]').first


def wait_text(page, run, key, text, timeout=WAIT / 1000):
    """Wait until the cell of ``run`` and ``key`` shows ``text`` in the page (the grid may be
    rebuilt meanwhile: the cell is looked up again each time)."""
    def shows():
        c = cell(page, run, key)
        return c.count() and c.inner_text() == text
    wait_for(shows, timeout, 0.1, f"run {run} {key} to show {text!r} in the browser")
    return cell(page, run, key)


def shown_runs(page):
    return page.evaluate("""() => { const out = [];
        amore.state.grid.forEachNodeAfterFilterAndSort(n => out.push(n.data.r)); return out; }""")


def wait_runs(page, runs, timeout=WAIT / 1000):
    """Wait until the page shows exactly ``runs`` (in this order)."""
    wait_for(lambda: shown_runs(page) == runs, timeout, 0.05, f"the page to show runs {runs}")


def table_texts(ctx):
    """Cell texts as the GUI's table code formats them (TableData.display)."""
    from amore_gui.application import dbread
    d = dbread.load_table(ctx).data

    def text(run, key):
        return d.display(d.row_of[(GUI_PROPOSAL, run)], d.col_of(key))
    return text


def add_token(user, editor=False):
    out = subprocess.run(amore_cmd("web", "token", "add", user, *(["--editor"] if editor else [])),
                         capture_output=True, text=True, check=True).stdout
    return re.search(r"(amore_\S+)", out).group(1)


# -- the table ------------------------------------------------------------------------------------

def test_page_shows_the_table_as_the_gui_does(gui_ctx, web_server, browser_page):
    ctx = gui_ctx["ctx"]
    server = web_server(ctx)
    page = open_table(browser_page, server)
    assert shown_runs(page) == sorted(GUI_RUNS, reverse=True)       # newest on top
    assert f"p{GUI_PROPOSAL}" in page.title()
    # the backend's status says where the table is served
    st = subprocess.run(amore_cmd("backend", "status", ctx), capture_output=True, text=True)
    assert f"Web:            {server.url}/d/{SLUG}/" in st.stdout, st.stdout
    # the run's fixed columns are in view as the page opens, each with its header
    grid = page.locator("#grid").bounding_box()
    for key, title in (("#status", "Status"), ("#run", "Run"), ("#start", "Start"),
                       ("#added", "Added"), ("#comment", "Comment")):
        head = page.locator(f'.ag-header-cell[col-id="{key}"] .ag-header-cell-text')
        assert head.inner_text() == title, key
        box = head.bounding_box()
        assert box and grid["x"] <= box["x"] and box["x"] + box["width"] <= grid["x"] + grid["width"], \
            f"the header of {key} is not in view: {box} (grid {grid})"
    header = page.locator('.ag-header-cell[col-id="xgm_energy"] .ag-header-cell-text')
    page.evaluate("amore.state.grid.ensureColumnVisible('xgm_energy')")
    assert header.inner_text() == "XGM\nPulse energy [µJ]"
    # numbers rounded by the GUI's formatting code, strings and booleans as the GUI shows them
    text = table_texts(ctx)
    for key in ("xgm_energy", "n_trains", "sample", "xgm_stable", "cam_peak"):
        assert cell(page, 2, key).inner_text() == text(2, key), key
    assert cell(page, 2, "n_trains").inner_text() == "40"
    # a sparkline is drawn from its points, a thumbnail's PNG is loaded
    line = cell(page, 4, "xgm_trend").locator("svg polyline")
    assert line.count() == 1
    npts = page.evaluate("""() => { const i = amore.state.columns.findIndex(c => c.key === 'xgm_trend');
        return amore.state.rowsById.get('%s:4').x[i - 6].s.length; }""" % GUI_PROPOSAL)
    assert npts > 2 and len(line.get_attribute("points").split()) == npts   # every point drawn
    img = cell(page, 4, "cam_mean").locator("img")
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img.element_handle())
    # an error in red with its message on hover
    err = cell(page, 3, "flaky")
    assert "k-err" in err.get_attribute("class")
    assert "odd run 3" in (err.get_attribute("title") or "")
    assert err.evaluate("e => getComputedStyle(e).color") == "rgb(164, 38, 44)"
    assert cell(page, 2, "flaky").inner_text() == "3"
    # no backend runs for this directory: the page says so
    banner = page.locator("#banner-backend")
    banner.wait_for(state="visible")
    assert "not processed" in banner.inner_text()
    # how updates arrive, in plain words; no banner while they do
    assert page.locator("#source").inner_text().startswith(
        "Live: updates arrive from database changes (runs.sqlite checked every")
    assert page.locator("#banner-nolive").is_hidden()
    # when the server stops following the database, a banner says the table stands still
    page.evaluate("""() => amore.showStatus({...amore.state.status,
        source: {mode: "none", text: "Live updates stopped (see the log): the table may be out of date"}})""")
    assert page.locator("#banner-nolive").inner_text() == (
        "Live updates stopped (see the log): the table may be out of date. New runs and values "
        "show after reloading the page.")
    # sorting by a column keeps errors last in both directions
    page.locator('.ag-header-cell[col-id="flaky"] .ag-header-cell-label').click()
    page.locator('.ag-header-cell[col-id="flaky"] .ag-header-cell-label').click()
    page.wait_for_function("() => { const o = []; amore.state.grid.forEachNodeAfterFilterAndSort("
                           "n => o.push(n.data.r)); return o[0] === 4 && o[1] === 2; }")
    assert shown_runs(page)[:2] == [4, 2]


def test_the_run_and_status_stay_in_view_while_scrolling_right(gui_ctx, web_server, browser_page):
    ctx = gui_ctx["ctx"]
    server = web_server(ctx)
    page = browser_page(f"{server.url}/d/{SLUG}/", viewport={"width": 640, "height": 600})
    page.wait_for_function("() => document.body.dataset.loaded === '1' && document.body.dataset.live === '1'",
                           timeout=WAIT)
    grid = page.locator("#grid").bounding_box()
    widths = page.evaluate("() => ['#status', '#run'].map(k => amore.state.grid.getColumn(k).getActualWidth())")

    def at_left(y):
        """The text the page shows where the Status and Run columns were, at height y."""
        return page.evaluate("""([xs, y]) => xs.map(x => { const e = document.elementFromPoint(x, y);
            return e ? e.textContent.trim() : null; })""",
                             [[grid["x"] + widths[0] / 2, grid["x"] + widths[0] + widths[1] / 2], y])

    def row_y(run, key):
        box = cell(page, run, key).bounding_box()
        return box["y"] + box["height"] / 2

    statuses = {run: cell(page, run, "#status").inner_text() for run in GUI_RUNS}
    # scrolled right to the last column: the run's own cells are out of view, its number is not
    last = page.evaluate("() => amore.state.grid.getAllDisplayedColumns().at(-1).getColId()")
    page.evaluate("k => amore.state.grid.ensureColumnVisible(k)", last)
    wait_for(lambda: page.evaluate("() => amore.state.grid.getHorizontalPixelRange().left")
             > sum(widths), WAIT / 1000, 0.05, "the Run column to scroll out of view")
    for run in GUI_RUNS:
        wait_for(lambda: at_left(row_y(run, last)) == [statuses[run], str(run)], WAIT / 1000, 0.05,
                 f"run {run} and its status {statuses[run]!r} at the left, scrolled right "
                 f"(shown: {at_left(row_y(run, last))})")
    header = page.locator("#grid .ag-header").bounding_box()
    heads = page.evaluate("""([xs, y]) => xs.map(x => { const e = document.elementFromPoint(x, y);
        const h = e && e.closest('.ag-header-cell');
        return h && h.querySelector('.ag-header-cell-text').textContent; })""",
                          [[grid["x"] + widths[0] / 2, grid["x"] + widths[0] + widths[1] / 2],
                           header["y"] + header["height"] / 2])
    assert heads == ["Status", "Run"]
    # a run that arrives meanwhile shows its number there too
    write_runs(gui_ctx["pdir"], [5], ntrains=30)
    assert process_runs(ctx, [5])[0].status == "done"
    page.locator(f'.ag-row[row-id="{GUI_PROPOSAL}:5"]').first.wait_for(timeout=WAIT)
    wait_for(lambda: at_left(row_y(5, last))[1] == "5", WAIT / 1000, 0.05,
             "run 5's number at the left, scrolled right")
    # a click there selects the run's row
    y = row_y(3, last)
    page.mouse.click(grid["x"] + widths[0] + widths[1] / 2, y)
    assert page.evaluate("() => amore.state.grid.getSelectedRows().map(r => r.r)") == [3]
    # a column scrolled back into view from the right stops beside the run number, not under it
    page.evaluate("amore.state.grid.ensureColumnVisible('#comment')")
    box = page.locator('.ag-header-cell[col-id="#comment"]').bounding_box()
    assert box["x"] >= grid["x"] + widths[0] + widths[1] - 1, (box, grid, widths)
    cell(page, 3, "#comment").click()                  # not covered by the run number


def test_stale_values_are_marked_explained_and_counted(gui_ctx, web_server, browser_page):
    ctx = gui_ctx["ctx"]
    change_flaky(ctx)
    page = open_table(browser_page, web_server(ctx))
    for run in GUI_RUNS:
        c = cell(page, run, "flaky")
        assert "stale" in c.get_attribute("class").split(), run
        assert "Stale: function flaky changed in context.py" in (c.get_attribute("title") or "")
        assert "stale" not in cell(page, run, "xgm_energy").get_attribute("class").split(), run
    # the mark: an orange corner drawn by the stylesheet
    assert "217, 119, 6" in cell(page, 2, "flaky").evaluate(
        "e => getComputedStyle(e).backgroundImage")
    wait_for(lambda: "4 stale values" in page.locator("#counts").inner_text(), WAIT / 1000, 0.1,
             "the counts to say 4 stale values")
    # recomputing run 2's flaky clears its mark in the page, live
    assert process_runs(ctx, [2], names=["flaky"])[0].status == "done"
    wait_text(page, 2, "flaky", "5")
    wait_for(lambda: "stale" not in cell(page, 2, "flaky").get_attribute("class").split(),
             WAIT / 1000, 0.1, "run 2's flaky to lose its stale mark")
    wait_for(lambda: "3 stale values" in page.locator("#counts").inner_text(), WAIT / 1000, 0.1,
             "the counts to say 3 stale values")


def test_a_run_announced_over_kafka_appears_without_a_reload(gui_ctx, web_server, browser_page,
                                                              kafka_broker):
    from backend.config import load_config
    from backend.notify.kafka import UpdatePublisher
    from backend.store.writer import RunDB
    ctx = gui_ctx["ctx"]
    server = web_server(ctx, env={"AMORE_BROKER": kafka_broker})
    page = open_table(browser_page, server)
    page.wait_for_function("() => document.getElementById('source').textContent.includes('Kafka')")
    page.evaluate("window.__same_page = 1")
    db = RunDB(ctx)
    pub = UpdatePublisher(load_config(ctx), db.db_id)
    db.close()
    write_runs(gui_ctx["pdir"], [5], ntrains=30)
    outs = process_runs(ctx, [5], publish=pub.publish)
    pub.flush(5)
    assert outs[0].status == "done"
    page.locator(f'.ag-row[row-id="{GUI_PROPOSAL}:5"]').first.wait_for(timeout=WAIT)
    wait_text(page, 5, "n_trains", "30")
    assert shown_runs(page)[0] == 5
    assert page.evaluate("window.__same_page") == 1          # no reload happened
    pub.close()


def test_a_manual_value_edited_in_the_browser_is_in_the_history_and_the_qt_gui(
        gui_ctx, web_server, browser_page, qtbot):
    from amore_gui._qt.mainwindow import MainWindow
    from amore_gui.application.settings import Settings
    ctx = gui_ctx["ctx"]
    subprocess.run(amore_cmd("column", "add", "thickness", "--type", "number", "--units", "um",
                             "-d", ctx), check=True, capture_output=True)
    token = add_token("alice", editor=True)
    server = web_server(ctx)
    win = MainWindow(ctx, settings=Settings(gui_ctx["settings"]), use_kafka=False)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: win.is_fully_loaded and win.live_ready, timeout=WAIT)
    page = open_table(browser_page, server, token=token)
    assert "token=" not in page.url                       # exchanged for a session cookie
    assert page.locator("#who").inner_text() == "alice (editor)"
    cell(page, 2, "thickness").dblclick()
    page.locator("#set-value").fill("0.5 mm")             # converted to the column's units
    page.locator("#set-save").click()
    c = wait_text(page, 2, "thickness", "500")
    assert "alice" in c.get_attribute("title") and "web" in c.get_attribute("title")
    hist = subprocess.run(amore_cmd("history", "2", "thickness", "-d", ctx), capture_output=True,
                          text=True, check=True).stdout
    assert "by alice via web" in hist and "500" in hist, hist
    m = win.model

    def qt_text():
        return m.data(m.index(m.view_row_of(GUI_PROPOSAL, 2), m.column_of("thickness")))
    qtbot.waitUntil(lambda: qt_text() == "500", timeout=WAIT)
    # a value that does not fit is refused with the reason, nothing written
    cell(page, 3, "thickness").dblclick()
    page.locator("#set-value").fill("thick")
    page.locator("#set-save").click()
    page.locator("#set-error").wait_for()
    assert "Not saved" in page.locator("#set-error").inner_text()
    page.locator("#modal-close").click()
    assert cell(page, 3, "thickness").inner_text() == ""
    # a run comment edited in the browser reaches the Qt window too
    cell(page, 4, "#comment").dblclick()
    page.keyboard.type("aligned by alice")
    page.keyboard.press("Enter")
    qtbot.waitUntil(lambda: m.data(m.index(m.view_row_of(GUI_PROPOSAL, 4),
                                           m.column_of("#comment"))) == "aligned by alice",
                    timeout=WAIT)
    win.close()


def test_the_selected_run_stays_selected_when_the_table_is_read_again(gui_ctx, web_server,
                                                                      browser_page):
    """A manual column added elsewhere makes the page read its table again: the run a person
    had selected (to set a value, to reprocess) is still selected afterwards."""
    ctx = gui_ctx["ctx"]
    server = web_server(ctx)
    page = open_table(browser_page, server)
    assert page.evaluate("amore.jumpTo('3', true)")
    assert page.evaluate("amore.state.grid.getSelectedRows().map(r => r.r)") == [3]
    page.evaluate("window.__grid_before = amore.state.grid")
    subprocess.run(amore_cmd("column", "add", "beamline_note", "--type", "string", "-d", ctx),
                   check=True, capture_output=True)
    page.wait_for_function("() => amore.state.columns.some(c => c.key === 'beamline_note') "
                           "&& !amore.state.loading", timeout=WAIT)
    assert page.evaluate("amore.state.grid !== window.__grid_before")   # read again: a new grid
    page.wait_for_function("() => amore.state.grid.getDisplayedRowCount() > 0", timeout=WAIT)
    assert page.evaluate("amore.state.grid.getSelectedRows().map(r => r.r)") == [3]


def test_a_selection_changed_during_a_reload_is_not_overridden(gui_ctx, web_server,
                                                                browser_page):
    """While the table is read again, the person selects another run before the rows of the
    run selected before have come back: their new selection stays, the old one does not
    return with its row."""
    ctx = gui_ctx["ctx"]
    server = web_server(ctx)
    page = open_table(browser_page, server)
    assert page.evaluate("amore.jumpTo('1', true)")
    assert page.evaluate("amore.state.grid.getSelectedRows().map(r => r.r)") == [1]
    held = []

    def pages(route):   # the reload's first page holds 2 rows; the rest waits until released
        url = route.request.url
        if "below=" in url:
            held.append(route)
        else:
            route.continue_(url=url + ("&" if "?" in url else "?") + "limit=2")
    page.route("**/table*", pages)
    page.evaluate("window.__grid_before = amore.state.grid")
    subprocess.run(amore_cmd("column", "add", "shift_note", "--type", "string", "-d", ctx),
                   check=True, capture_output=True)
    page.wait_for_function("() => amore.state.grid !== window.__grid_before && amore.state.loading"
                           " && amore.state.grid.getDisplayedRowCount() === 2", timeout=WAIT)
    wait_for(lambda: held or page.evaluate("0"), WAIT / 1000, 0.05, "the reload's next page")
    cell(page, 3, "#comment").click()                 # the person selects run 3 instead
    assert page.evaluate("amore.state.grid.getSelectedRows().map(r => r.r)") == [3]
    for route in held:
        route.continue_()
    page.unroute("**/table*")
    page.wait_for_function("() => !amore.state.loading && "
                           "amore.state.grid.getDisplayedRowCount() === 4", timeout=WAIT)
    assert page.evaluate("amore.state.grid.getSelectedRows().map(r => r.r)") == [3]


def test_a_filter_expression_narrows_the_rows_and_a_mistake_shows_where(gui_ctx, web_server,
                                                                       browser_page):
    server = web_server(gui_ctx["ctx"])
    page = open_table(browser_page, server)
    box = page.locator("#filter")
    box.fill("run in 2..3")
    box.press("Enter")
    wait_runs(page, [3, 2])
    assert "4 runs, 2 shown" in page.locator("#counts").inner_text()
    # a syntax error: the message with its position, a caret under it, the rows stay
    box.fill("run in 2..3 and xgm_energy >")
    box.press("Enter")
    page.locator("#filter-error").wait_for()
    caret = page.locator("#filter-caret").inner_text().split("\n")
    assert caret[0] == "run in 2..3 and xgm_energy >" and caret[1].endswith("^")
    assert len(caret[1]) - 1 == len("run in 2..3 and xgm_energy >")
    assert "position" in page.locator("#filter-message").inner_text()
    assert shown_runs(page) == [3, 2]
    # an unknown column is a mistake with a position too (the same code as the GUI)
    box.fill("nosuchvar > 1")
    box.press("Enter")
    page.wait_for_function("() => document.getElementById('filter-message').textContent"
                           ".includes('nosuchvar')")
    # failed(...) and plain words
    box.fill("failed(flaky)")
    box.press("Enter")
    wait_runs(page, [3, 1])
    box.fill("")
    box.press("Enter")
    wait_runs(page, [4, 3, 2, 1])


def test_after_the_server_was_stopped_and_started_again_the_page_catches_up(
        gui_ctx, web_server, browser_page):
    from backend.store.writer import RunDB
    ctx = gui_ctx["ctx"]
    server = web_server(ctx)
    page = open_table(browser_page, server)
    server.stop()
    page.locator("#banner-disconnected").wait_for(state="visible", timeout=WAIT)
    assert not (ctx / "amore-web.json").exists()       # the server's record goes with it
    db = RunDB(ctx)
    db.set_comment(GUI_PROPOSAL, 3, "changed while the server was away")
    db.close()
    server.start()
    wait_text(page, 3, "#comment", "changed while the server was away")
    page.locator("#banner-disconnected").wait_for(state="hidden", timeout=WAIT)


def test_a_client_that_lost_its_connection_gets_what_it_missed(gui_ctx, web_server):
    """The push channel's replay: reconnecting with the last sequence number and the epoch
    delivers the missed messages; another epoch (a restarted server) asks for a reload."""
    from websockets.sync.client import connect
    server = web_server(gui_ctx["ctx"])
    ws_url = f"ws://127.0.0.1:{server.port}/api/d/{SLUG}/live"
    origin = {"origin": server.url}
    with connect(ws_url, additional_headers=origin) as ws:
        hello = json.loads(ws.recv(timeout=10))
    epoch, seq = hello["epoch"], hello["seq"]
    head = {"Content-Type": "application/json", "X-AMORE-Request": "1"}
    st, _, body = http(server.url + f"/api/d/{SLUG}/comment", "POST", head,
                       {"id": f"{GUI_PROPOSAL}:2", "text": "written while away"})
    assert st == 200, body
    with connect(f"{ws_url}?since={seq}&epoch={epoch}", additional_headers=origin) as ws:
        msgs = []
        while not any(m.get("type") == "rows" for m in msgs):
            msgs.append(json.loads(ws.recv(timeout=15)))
    rows = [r for m in msgs if m.get("type") == "rows" for r in m["rows"]]
    assert any(r["r"] == 2 and r["c"] == "written while away" for r in rows), msgs
    assert all(m["seq"] > seq for m in msgs if m["type"] in ("rows", "status"))
    with connect(f"{ws_url}?since={seq}&epoch=another", additional_headers=origin) as ws:
        kinds = [json.loads(ws.recv(timeout=10))["type"] for _ in range(2)]
    assert "reload" in kinds


def test_the_live_connection_is_not_compressed(gui_ctx, web_server):
    """The server declines ``permessage-deflate`` (which browsers and the ``websockets`` client
    ask for): a compressor and decompressor per connection, made again by every viewer at
    each reload, left the server's heap fragmented (+56 % in ``benchmarks/soak_growth.py
    --reconnect``); the live messages still arrive."""
    from websockets.sync.client import connect
    server = web_server(gui_ctx["ctx"])
    ws_url = f"ws://127.0.0.1:{server.port}/api/d/{SLUG}/live"
    with connect(ws_url, additional_headers={"origin": server.url}) as ws:
        assert "permessage-deflate" in (ws.request.headers.get("Sec-WebSocket-Extensions")
                                        or ""), "the client did not ask for compression"
        agreed = ws.response.headers.get("Sec-WebSocket-Extensions")
        assert agreed is None, f"the server agreed to {agreed!r}"
        assert json.loads(ws.recv(timeout=10))["type"] == "hello"


# -- who may see and edit ---------------------------------------------------------------------------

def test_a_server_reachable_from_elsewhere_needs_a_token_and_viewers_cannot_edit(
        gui_ctx, web_server, browser_page, tmp_path):
    from tests.web_browser import free_port
    ctx = gui_ctx["ctx"]
    # no access configured: the start is refused, saying why
    r = subprocess.run(amore_cmd("web", ctx, "--host", "0.0.0.0", "--port", free_port()),
                       capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, AMORE_WEB_ACCESS=str(tmp_path / "web-access.json")))
    assert r.returncode == 1 and "refusing to serve on 0.0.0.0" in r.stderr, r.stderr
    assert "amore-proto web token add" in r.stderr
    os.environ["AMORE_WEB_ACCESS"] = str(tmp_path / "web-access.json")
    viewer, editor = add_token("victor"), add_token("erin", editor=True)
    server = web_server(ctx, host="0.0.0.0")
    api = server.url + f"/api/d/{SLUG}"
    # nobody: 401 and no data, also for the page, the static files and the live channel
    st, h, body = http(api + "/table")
    assert st == 401 and b"rows" not in body and b"xgm" not in body
    assert h.get("www-authenticate", "").startswith("Bearer")
    st, _, body = http(server.url + f"/d/{SLUG}/", headers={"Accept": "text/html"})
    assert st == 401 and b"Sign-in needed" in body
    assert http(server.url + "/static/app.js")[0] == 401
    # a viewer sees, but may not edit
    bearer = {"Authorization": f"Bearer {viewer}"}
    st, _, body = http(api + "/table", headers=bearer)
    assert st == 200 and json.loads(body)["editor"] is False
    write = {"Content-Type": "application/json", "X-AMORE-Request": "1"}
    st, _, body = http(api + "/comment", "POST", {**bearer, **write},
                       {"id": f"{GUI_PROPOSAL}:2", "text": "x"})
    assert st == 403 and b"victor may look but not edit" in body
    # an editor may, with a CSRF-safe request only
    ed = {"Authorization": f"Bearer {editor}"}
    assert http(api + "/comment", "POST", {**ed, **write},
                {"id": f"{GUI_PROPOSAL}:2", "text": "by erin"})[0] == 200
    assert http(api + "/comment", "POST", {**ed, "Content-Type": "application/json"},
                {"id": f"{GUI_PROPOSAL}:2", "text": "csrf"})[0] == 403
    assert http(api + "/comment", "POST", {**ed, **write, "Origin": "http://evil.example"},
                {"id": f"{GUI_PROPOSAL}:2", "text": "csrf"})[0] == 403
    # no CORS for other origins
    st, h, _ = http(api + "/table", "OPTIONS", {**ed, "Origin": "http://evil.example",
                                                "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in h
    st, h, _ = http(api + "/table", headers={**ed, "Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in h
    # a wrong token is 401; a ?token= link becomes a session cookie and leaves the address
    assert http(api + "/table", headers={"Authorization": "Bearer amore_00000000_nope"})[0] == 401
    st, h, _ = http(server.url + f"/d/{SLUG}/?token={viewer}&x=1")
    assert st == 303 and h["location"] == f"/d/{SLUG}/?x=1"
    cookie = h["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")
    session = {"Cookie": cookie.split(";")[0]}
    assert http(api + "/table", headers=session)[0] == 200
    # in the browser: the viewer's page offers no edits
    page = open_table(browser_page, server, token=viewer)
    assert page.locator("body.viewer").count() == 1
    assert not page.locator("#btn-set").is_visible()
    # revoking the token ends its sessions
    subprocess.run(amore_cmd("web", "token", "revoke", "victor"), check=True, capture_output=True)
    assert http(api + "/table", headers=session)[0] == 401
    assert http(api + "/table", headers=bearer)[0] == 401
    # the live channel refuses other sites' pages and strangers
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect
    ws_url = f"ws://127.0.0.1:{server.port}/api/d/{SLUG}/live"
    for headers in ({"origin": "http://evil.example", **ed}, {"origin": server.url}):
        with pytest.raises(InvalidStatus):
            connect(ws_url, additional_headers=headers).close()


def test_a_script_in_a_value_stays_text(gui_ctx, web_server, browser_page):
    from backend.store.writer import RunDB
    from backend.vocab import StoredValue
    ctx = gui_ctx["ctx"]
    evil = "<script>window.pwned=1</script><img src=x onerror=\"window.pwned=2\">"
    db = RunDB(ctx)
    db.write_values(GUI_PROPOSAL, 2, {"evil": StoredValue(evil, "string")})
    db.set_comment(GUI_PROPOSAL, 3, "<b>not bold</b><img src=x onerror=\"window.pwned=3\">")
    db.close()
    server = web_server(ctx)
    page = open_table(browser_page, server)
    assert cell(page, 2, "evil").inner_text() == evil
    assert cell(page, 3, "#comment").inner_text().startswith("<b>not bold</b>")
    assert page.locator(".ag-cell script, .ag-cell img[src='x'], .ag-cell b").count() == 0
    box = page.locator("#filter")
    box.fill('sample == "<img src=x onerror=window.pwned=4>')
    box.press("Enter")
    page.locator("#filter-error").wait_for()
    assert page.locator("#filter-error img").count() == 0
    assert page.evaluate("window.pwned") is None


# -- inspect, plot, export, links, layout, reprocess --------------------------------------------------

def test_inspect_a_cell_and_plot_variables_across_runs(gui_ctx, web_server, browser_page):
    server = web_server(gui_ctx["ctx"])
    page = open_table(browser_page, server)
    cell(page, 2, "xgm_trend").dblclick()
    page.wait_for_function("() => document.getElementById('inspect')?.dataset.kind === 'line'")
    page.locator("#inspect .js-plotly-plot").wait_for()
    assert "Train ID" in page.locator("#inspect .xtitle").text_content()
    assert "points" in page.locator("#inspect .info").inner_text()
    page.locator("#modal-close").click()
    cell(page, 2, "cam_mean").dblclick()
    page.wait_for_function("() => document.getElementById('inspect')?.dataset.kind === 'image'")
    page.locator("#inspect .heatmaplayer, #inspect .hm").first.wait_for(state="attached")
    page.locator("#modal-close").click()
    cell(page, 3, "flaky").dblclick()
    page.wait_for_function("() => document.getElementById('inspect')?.dataset.kind === 'error'")
    assert "odd run 3" in page.locator("#inspect pre").inner_text()
    page.locator("#modal-close").click()
    # one variable against another, hover names the run
    page.locator("#btn-plot").click()
    page.locator("#plot-y").select_option("cam_peak")
    page.locator("#plot-x").select_option("xgm_energy")
    page.wait_for_function("() => document.getElementById('plot-div')?.dataset.points === '4'")
    page.wait_for_function("() => document.querySelectorAll('#plot-div .scatterlayer .point')"
                           ".length === 4")
    page.locator("#plot-div .scatterlayer .point").first.hover(force=True)
    page.locator("#plot-div .hoverlayer").get_by_text(re.compile(r"Run \d")).wait_for()


def test_export_link_to_a_run_and_a_remembered_layout(gui_ctx, web_server, browser_page):
    server = web_server(gui_ctx["ctx"])
    page = open_table(browser_page, server)
    page.locator("#filter").fill("run >= 2")
    page.locator("#filter").press("Enter")
    wait_runs(page, [4, 3, 2])
    with page.expect_download() as dl:
        page.locator("#btn-csv").click()
    csv = open(dl.value.path(), encoding="utf-8").read().splitlines()
    assert csv[0].split(",")[:3] == ["Status", "Run", "Start"]
    assert [line.split(",")[1] for line in csv[1:]] == ["4", "3", "2"]
    with page.expect_download() as dl:
        page.locator("#btn-md").click()
    md = open(dl.value.path(), encoding="utf-8").read()
    assert md.startswith("| Status | Run |") and "| 3 |" in md and "| 1 |" not in md
    # a link to a run's row, to paste into a logbook
    page.locator("#goto").fill("3")
    page.locator("#goto").press("Enter")
    page.locator("#btn-link").click()
    page.wait_for_function("() => document.body.dataset.link")
    link = page.evaluate("document.body.dataset.link")
    assert link.endswith(f"/d/{SLUG}/#run=3")
    other = browser_page(link)
    other.wait_for_function(f"() => document.body.dataset.jumped === '{GUI_PROPOSAL}:3'", timeout=WAIT)
    # hide a column: remembered for this user and directory
    page.locator("#btn-columns").click()
    page.locator('#side-body input[data-key="sample"]').uncheck()
    saved = f"() => fetch('/api/d/{SLUG}/layout').then(r => r.json())" \
            ".then(l => l.hidden.includes('sample'))"
    wait_for(lambda: page.evaluate(saved), WAIT / 1000, 0.2, "the layout to be saved")
    again = open_table(browser_page, server)
    hidden = again.evaluate("amore.state.grid.getColumnState().filter(c => c.hide).map(c => c.colId)")
    assert "sample" in hidden


def test_reprocess_selected_runs_and_cancel(gui_ctx, web_server, browser_page):
    server = web_server(gui_ctx["ctx"])
    page = open_table(browser_page, server)
    page.locator("#goto").fill("2")
    page.locator("#goto").press("Enter")
    page.locator("#btn-reprocess").click()
    assert page.locator("#rp-runs").input_value() == "sel"
    page.locator("#rp-go").click()
    page.wait_for_function("() => ['Done.', 'Finished'].some(t => "
                           "document.getElementById('job-state')?.textContent.startsWith(t))",
                           timeout=120_000)
    assert page.locator("#job-state").inner_text() == "Done."
    assert "reprocess 2" in page.locator("#job-log").inner_text()
    page.locator("#modal-close").click()
    page.locator("#btn-reprocess").click()
    page.locator("#rp-runs").select_option("all")
    page.locator("#rp-go").click()
    page.locator("#job-cancel").click()
    page.wait_for_function("() => document.getElementById('job-state')?.textContent === "
                           "'Cancelled.'", timeout=60_000)


def test_several_directories_are_listed(gui_ctx, web_server, make_context_dir, browser_page):
    other = make_context_dir(name="second")
    server = web_server(gui_ctx["ctx"], other)
    page = browser_page(server.url + "/")
    links = page.locator("ul.tables a")
    assert links.count() == 2
    assert {links.nth(i).inner_text() for i in range(2)} == {f"p{GUI_PROPOSAL}", "p2832"}
