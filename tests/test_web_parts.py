"""Parts of the browser front-end without a browser: the push channel's numbering and replay,
access tokens and session cookies, the owner-on-loopback rule, refused starts, the Qt-free live
follower on a real database, and the adapter's rows (cells formatted by the GUI's code)."""
from __future__ import annotations

import asyncio
import json
import os
import socket
import stat

import pytest

from tests.conftest import wait_for
from tests.gui_fixtures import GUI_PROPOSAL


# -- the push channel -------------------------------------------------------------------------------

def _run(coro):
    """Run a coroutine in a thread of its own (the browser tests' Playwright keeps an event loop
    running in this one)."""
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(1) as ex:
        return ex.submit(asyncio.run, coro).result()


def _drain(sub) -> list[dict]:
    out = []
    while not sub.queue.empty():
        t = sub.queue.get_nowait()
        out.append(None if t is None else json.loads(t))
    return out


def test_push_channel_replays_what_a_client_missed_or_asks_for_a_reload():
    from amore_gui.web.push import PushChannel

    async def main():
        ch = PushChannel(keep=5, queue_size=100)
        live = ch.subscribe(None, None)
        for i in range(3):
            s = ch.take_seq()
            ch.deliver(s, ch.encode(s, "rows", {"i": i}))
        assert [m["seq"] for m in _drain(live)] == [1, 2, 3]
        # a client that saw 1 gets 2 and 3
        again = ch.subscribe(1, ch.epoch)
        assert [(m["seq"], m["i"]) for m in _drain(again)] == [(2, 1), (3, 2)]
        # one that saw everything gets nothing; one from a restarted server must reload
        assert _drain(ch.subscribe(3, ch.epoch)) == []
        assert [m["type"] for m in _drain(ch.subscribe(3, "old-epoch"))] == ["reload"]
        # the buffer keeps 5: a client that saw 1 after 8 messages missed too much
        for i in range(5):
            s = ch.take_seq()
            ch.deliver(s, ch.encode(s, "rows", {"i": i}))
        assert [m["type"] for m in _drain(ch.subscribe(1, ch.epoch))] == ["reload"]
        assert [m["seq"] for m in _drain(ch.subscribe(4, ch.epoch))] == [5, 6, 7, 8]
    _run(main())


def test_push_channel_keeps_a_bounded_amount_of_text_and_a_client_beyond_it_reloads():
    """A server open for days keeps at most ``keep_chars`` characters of pushed messages (a
    message of many rows counts by its size): the oldest go, and a client that missed those
    is told to reload instead of getting a replay with a gap."""
    from amore_gui.web.push import PushChannel

    async def main():
        ch = PushChannel(keep=1000, queue_size=1000, keep_chars=2000)
        for i in range(200):
            s = ch.take_seq()
            ch.deliver(s, ch.encode(s, "rows", {"pad": "x" * 80, "i": i}))
        n, chars = ch.kept
        assert chars <= 2000, f"the replay buffer holds {chars} characters (limit 2000)"
        assert 0 < n < 200, f"{n} of 200 messages kept"
        # the newest n messages are kept and replayed in order...
        assert [m["i"] for m in _drain(ch.subscribe(200 - n, ch.epoch))] == list(
            range(200 - n, 200))
        # ...one that missed an older one is told to reload
        assert [m["type"] for m in _drain(ch.subscribe(200 - n - 1, ch.epoch))] == ["reload"]
        # a single message larger than the limit is still kept (the newest always is)
        s = ch.take_seq()
        ch.deliver(s, ch.encode(s, "rows", {"pad": "y" * 5000}))
        assert ch.kept[0] == 1 and [m["seq"] for m in _drain(ch.subscribe(s - 1, ch.epoch))] \
            == [s]
    _run(main())


def test_a_slow_viewer_is_told_to_reload_instead_of_piling_up():
    from amore_gui.web.push import PushChannel

    async def main():
        ch = PushChannel(queue_size=3)
        slow = ch.subscribe(None, None)
        for i in range(10):
            s = ch.take_seq()
            ch.deliver(s, ch.encode(s, "rows", {"i": i}))
        msgs = _drain(slow)
        assert msgs[0]["type"] == "reload" and msgs[-1] is None and len(msgs) == 2
    _run(main())


def test_raw_row_texts_are_inserted_as_json():
    from amore_gui.web.push import PushChannel
    t = PushChannel.encode(7, "rows", {"x": "<b>"}, {"rows": '[{"id":"1:2"}]'})
    assert json.loads(t) == {"seq": 7, "type": "rows", "x": "<b>", "rows": [{"id": "1:2"}]}


# -- access ----------------------------------------------------------------------------------------

def test_tokens_are_stored_hashed_shown_once_and_revocable(tmp_path):
    from amore_gui.web.auth import TokenStore
    path = tmp_path / "cfg" / "web-access.json"
    store = TokenStore(path)
    info, token = store.add("alice", editor=True)
    text = path.read_text()
    assert token not in text and info.sha256 in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert store.check(token).user == "alice"
    assert store.check(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert store.check("") is None and store.check("Bearer x") is None
    # another process (the CLI) revokes it: the server's store sees that at once
    other = TokenStore(path)
    cookie = store.session_cookie(info)
    assert store.check_cookie(cookie).id == info.id
    assert other.revoke("alice") and store.check(token) is None
    assert store.check_cookie(cookie) is None
    with pytest.raises(ValueError):
        store.add("  ")


def test_session_cookies_are_signed_and_expire(tmp_path):
    from amore_gui.web.auth import SESSION_SECONDS, TokenStore
    store = TokenStore(tmp_path / "a.json")
    info, _ = store.add("bob")
    c = store.session_cookie(info, now=1000.0)
    assert store.check_cookie(c, now=1001.0).user == "bob"
    assert store.check_cookie(c, now=1000.0 + SESSION_SECONDS + 1) is None
    tid, exp, sig = c.split(".")
    assert store.check_cookie(f"{tid}.{int(exp) + 999}.{sig}", now=1001.0) is None
    assert store.check_cookie("garbage", now=1001.0) is None


def test_the_owner_is_served_on_loopback_only_from_their_own_sockets(tmp_path):
    from amore_gui.web.auth import AccessPolicy, TokenStore, peer_uid
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    cli = socket.create_connection(srv.getsockname())
    conn, addr = srv.accept()
    try:
        server_end = srv.getsockname()
        assert peer_uid(addr[1], server_end[1]) == os.getuid()
        store = TokenStore(tmp_path / "a.json")
        mine = AccessPolicy(store, loopback=True)
        p = mine.identify({}, {}, addr, server_end)
        assert p is not None and p.editor and p.via == "owner"
        # another user's socket, a server bound elsewhere, a remote address: nobody
        assert AccessPolicy(store, loopback=True, owner_uid=os.getuid() + 1).identify(
            {}, {}, addr, server_end) is None
        assert AccessPolicy(store, loopback=False).identify({}, {}, addr, server_end) is None
        assert mine.identify({}, {}, ("10.1.2.3", addr[1]), server_end) is None
    finally:
        for s in (cli, conn, srv):
            s.close()


def test_a_proxy_user_header_is_trusted_only_from_the_proxy(tmp_path):
    from amore_gui.web.auth import AccessPolicy, TokenStore
    pol = AccessPolicy(TokenStore(tmp_path / "a.json"), loopback=False,
                       proxy_header="x-remote-user", trusted_proxies=["192.0.2.0/28"],
                       proxy_editors={"carol"})
    h = {"x-remote-user": "carol"}
    assert pol.identify(h, {}, ("192.0.2.5", 4000), ("0.0.0.0", 8765)).editor is True
    assert pol.identify({"x-remote-user": "dave"}, {}, ("192.0.2.5", 4000), None).editor is False
    assert pol.identify(h, {}, ("198.51.100.7", 4000), None) is None
    assert pol.identify({}, {}, ("192.0.2.5", 4000), None) is None


def test_refused_starts_say_why(tmp_path, gui_ctx):
    from amore_gui.web.auth import AccessPolicy, TokenStore, refusal
    from amore_gui.web.server import StartRefused, prepare
    store = TokenStore(tmp_path / "a.json")
    assert refusal("127.0.0.1", AccessPolicy(store)) is None
    why = refusal("0.0.0.0", AccessPolicy(store, loopback=False))
    assert "refusing to serve on 0.0.0.0" in why and "web token add" in why
    assert "go together" in refusal("127.0.0.1", AccessPolicy(store, proxy_header="x-user"))
    with pytest.raises(StartRefused, match="no runs.sqlite"):
        prepare([tmp_path], tokens=store, port=0)
    with pytest.raises(StartRefused, match="not a proxy address"):
        prepare([gui_ctx["ctx"]], proxy_header="x-user", proxy_from=["not-an-address"],
                tokens=store, port=0)
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        with pytest.raises(StartRefused, match="cannot listen"):
            prepare([gui_ctx["ctx"]], port=busy.getsockname()[1], tokens=store)
    finally:
        busy.close()
    server = prepare([gui_ctx["ctx"], gui_ctx["ctx"]], port=0, tokens=store)
    assert [d.slug for d in server.directories] == [f"p{GUI_PROPOSAL}"]


# -- live updates as the web server follows them, and the adapter ------------------------------------------------------------

def test_live_updates_report_database_changes_as_the_server_follows_them(gui_ctx):
    from amore_gui.application import dbread
    import threading
    from amore_gui.application.live import LiveUpdates
    from backend.store.writer import RunDB
    ctx = gui_ctx["ctx"]
    res = dbread.load_table(ctx)
    f = LiveUpdates.from_load(ctx, res, res.data.max_timestamp, use_kafka=True)   # no broker: db
    f.POLL_DB = 0.05
    got = {"updates": [], "source": [], "backend": [], "ready": 0, "comments": 0}
    f.events.updates.connect(lambda ups: got["updates"].extend(ups))
    f.events.source.connect(lambda mode, text: got["source"].append(mode))
    f.events.backend.connect(lambda ind: got["backend"].append(ind.state))
    f.events.ready.connect(lambda: got.__setitem__("ready", got["ready"] + 1))
    f.events.comments.connect(lambda: got.__setitem__("comments", got["comments"] + 1))
    thread = threading.Thread(target=f.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: got["ready"] and got["backend"], 20, what="the follower to start")
        assert got["source"] == ["db"] and got["backend"][0] == "stopped"
        db = RunDB(ctx)
        db.set_comment(GUI_PROPOSAL, 2, "seen live")
        db.add_comment("logbook line", author="test")
        db.close()
        wait_for(lambda: any(u.run == 2 and u.info and u.info.get("comment") == "seen live"
                             for u in got["updates"]), 20, what="the comment update")
        wait_for(lambda: got["comments"], 20, what="the logbook change")
    finally:
        f.stop()
        thread.join(10)
    assert not thread.is_alive()


def test_rows_carry_the_gui_texts_and_tooltips(gui_ctx):
    from concurrent.futures import ThreadPoolExecutor
    from amore_gui.application import dbread
    from amore_gui.web.data import ServedDirectory, css_colour
    from amore_gui.web.push import PushChannel
    ctx = gui_ctx["ctx"]
    d = ServedDirectory(ctx, "p", "p", PushChannel(), ThreadPoolExecutor(1), use_kafka=False)
    d._take(dbread.load_table(ctx))
    page = json.loads(d.page(None, 10))
    assert [r["r"] for r in page["rows"]] == [4, 3, 2, 1] and page["next"] is None
    keys = [c["key"] for c in page["columns"]]
    t = d.data
    for row in page["rows"]:
        dr = t.row_of[(GUI_PROPOSAL, row["r"])]
        for key in ("xgm_energy", "n_trains", "flaky", "sample"):
            c = row["x"][keys.index(key) - 6]
            text = c if isinstance(c, str) else c[0] if isinstance(c, list) else c.get("t", "")
            assert text == t.display(dr, t.col_of(key)), (row["r"], key, c)
    err = page["rows"][1]["x"][keys.index("flaky") - 6]
    assert err["k"] == 8 and "odd run 3" in err["h"]
    assert css_colour("#ff0000") == "#ff0000" and css_colour((1, 0.5, 0)) == "rgb(255,127,0)"
    assert css_colour("red; background-image: url(x)") is None
    with pytest.raises(LookupError):
        d.key_of("1:999")
    assert d.filter_ids("run in 2..3")["ids"] == [f"{GUI_PROPOSAL}:2", f"{GUI_PROPOSAL}:3"]
    e = d.filter_ids("run >")["error"]
    assert e["pos"] == 5 and "^" in e["text"]


def test_stored_data_is_described_for_drawing_elsewhere():
    """What a browser draws for a cell's full data: a line against train ID, an image with its
    colour levels (binned when large), a Plotly figure as itself, a Dataset as tabs, text."""
    import numpy as np
    import xarray as xr
    from amore_gui.application.values import describe_value
    line = xr.DataArray(np.array([1.0, np.nan, 3.0]), dims=["trainId"],
                        coords={"trainId": [10001, 10002, 10003]})
    d = describe_value(line, "XGM/Energy", "µJ")
    assert d["kind"] == "line" and d["xlabel"] == "Train ID" and d["x"] == [10001, 10002, 10003]
    assert d["y"] == [1.0, None, 3.0] and d["ylabel"] == "Energy [µJ]" and d["integer_x"]
    img = describe_value(np.arange(3000 * 10, dtype=float).reshape(3000, 10))
    assert img["kind"] == "image" and img["binned"] == 3 and len(img["z"]) == 1000
    assert img["zmin"] < img["zmax"]
    fig = '{"data": [{"type": "bar", "y": [1, 2]}], "layout": {"title": {"text": "t"}}}'
    assert describe_value(fig)["kind"] == "plotly"
    assert describe_value(fig)["figure"]["data"][0]["type"] == "bar"
    tabs = describe_value({"a": np.float64(2.5), "b": "text"}, units="mm")
    assert tabs["kind"] == "tabs" and tabs["tabs"]["a"]["text"] == "2.5 mm"
    assert describe_value("just text") == {"kind": "text", "text": "just text", "info": ""}
    assert describe_value(np.zeros((2, 2, 2, 2)))["kind"] == "text"


def test_the_first_drawn_cell_of_a_column_makes_browsers_read_the_columns_again(gui_ctx):
    """A column announced without sparklines (its first runs failed) gets one: the browsers are
    told to reload, so the column gets its renderer."""
    from concurrent.futures import ThreadPoolExecutor
    from amore_gui.application import dbread
    from amore_gui.application.table_data import CellValue, K_ERROR, K_SPARKLINE, RunUpdate
    from amore_gui.web.data import ServedDirectory
    from amore_gui.web.push import PushChannel
    import numpy as np
    ctx = gui_ctx["ctx"]
    d = ServedDirectory(ctx, "p", "p", PushChannel(), ThreadPoolExecutor(1), use_kafka=False)
    d._take(dbread.load_table(ctx))
    cols = {c["key"]: c for c in d.columns()}
    assert cols["xgm_trend"]["drawn"] and not cols["flaky"]["drawn"]
    sent = []
    d._push = lambda kind, body=None, raw=None: sent.append(kind)
    d._apply([RunUpdate(GUI_PROPOSAL, 3, values={"flaky": CellValue(K_ERROR, attrs={"error": "x"})})])
    assert sent == []
    spark = np.arange(5, dtype="<f4").tobytes()
    d._apply([RunUpdate(GUI_PROPOSAL, 3, values={"flaky": CellValue(K_SPARKLINE, obj=spark)})])
    assert sent == ["reload"]
    assert {c["key"]: c for c in d.columns()}["flaky"]["drawn"]


def test_a_row_changed_shows_its_new_value_whether_its_text_was_kept_or_not(gui_ctx, monkeypatch):
    """The served directory keeps row texts up to a size (``ROW_CACHE_CHARS``): a table larger
    than that is still read whole, every changed row shows its new value (kept or not), and
    text beyond ASCII reaches the browser as written."""
    from concurrent.futures import ThreadPoolExecutor
    from amore_gui.application import dbread
    from amore_gui.application.table_data import CellValue, K_STRING, RunUpdate
    from amore_gui.web import data
    from amore_gui.web.push import PushChannel
    ctx = gui_ctx["ctx"]
    d = data.ServedDirectory(ctx, "p", "p", PushChannel(), ThreadPoolExecutor(1),
                             use_kafka=False)
    d._take(dbread.load_table(ctx))
    one_row = len(d.row_text(0))
    d._forget_rows()
    monkeypatch.setattr(data, "ROW_CACHE_CHARS", int(one_row * 2.5))   # two of the four rows
    page = json.loads(d.page(None, 10))
    assert [r["r"] for r in page["rows"]] == [4, 3, 2, 1]
    assert d._cache_chars <= data.ROW_CACHE_CHARS and len(d._cache) == 2, \
        f"{len(d._cache)} row texts kept, {d._cache_chars} characters"
    col = [c["key"] for c in page["columns"]].index("sample") - 6
    d._push = lambda kind, body=None, raw=None: None
    for run in (4, 1):      # the newest row's text was kept, the oldest one's was not
        d._apply([RunUpdate(GUI_PROPOSAL, run,
                            values={"sample": CellValue(K_STRING, obj=f"Fe₂O₃ – run {run}")})])
    for _ in range(2):      # read again: the second read comes from what was kept
        rows = {r["r"]: r for r in json.loads(d.page(None, 10))["rows"]}
        for run in (4, 1):
            cell = rows[run]["x"][col]
            text = cell if isinstance(cell, str) else cell["t"]
            assert text == f"Fe₂O₃ – run {run}", (run, cell)
        assert d._cache_chars <= data.ROW_CACHE_CHARS
    assert d.page(None, 10).isascii()
