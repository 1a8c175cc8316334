"""Posting to the logbook: selected rows as a Markdown table (run numbers, split under the
message size limit) and a picture, through the facility's logbook proxy exactly as DAMNIT 0.4.0
talks to it (``zulip.cfg``), or to a Zulip server directly with the ``zulip`` package. Local
HTTP servers check exactly what the proxy and a Zulip server receive; the keys appear nowhere
else."""
import base64
import io
import json
import os
import subprocess
from http.server import BaseHTTPRequestHandler

import numpy as np
import pytest

from tests.conftest import PROPOSAL, PROXY_KEY, LogbookRecorder, amore_cmd, parse_body, \
    send_json

ZULIP_KEY = "zulip-bot-key-41be0f"


class ZulipHandler(BaseHTTPRequestHandler):
    """Answers like a Zulip server's REST API (what the zulip package asks)."""

    def _auth_ok(self) -> bool:
        want = "Basic " + base64.b64encode(f"bot@example.org:{ZULIP_KEY}".encode()).decode()
        return self.headers.get("Authorization") == want

    def do_GET(self):
        self.server.requests.append({"method": "GET", "path": self.path,
                                     "auth": self._auth_ok()})
        if self.path.startswith("/api/v1/server_settings"):
            return send_json(self, 200, {"result": "success", "msg": "", "zulip_version": "9.0",
                                     "zulip_feature_level": 300})
        send_json(self, 404, {"result": "error", "msg": "no"})

    def do_POST(self):
        fields, files = parse_body(self)
        self.server.requests.append({"method": "POST", "path": self.path, "auth": self._auth_ok(),
                                     "fields": fields, "files": files})
        if not self._auth_ok():
            return send_json(self, 401, {"result": "error", "msg": "bad credentials"})
        if self.path == "/api/v1/user_uploads":
            return send_json(self, 200, {"result": "success", "uri": "/user_uploads/2/ab/figure.png"})
        if self.path == "/api/v1/messages":
            return send_json(self, 200, {"result": "success", "id": 42})
        send_json(self, 404, {"result": "error", "msg": "no"})

    def log_message(self, *a):
        pass


@pytest.fixture
def zulip_server():
    s = LogbookRecorder(ZulipHandler)
    yield s
    s.shutdown()


def _table_ctx(make_context_dir, nruns=3, config=""):
    from backend.store.writer import RunDB
    from backend.vocab import StoredValue, VariableInfo
    ctx = make_context_dir(template="generic", config=config)
    db = RunDB(ctx)
    db.set_variables([VariableInfo("energy", "Pulse energy", units="uJ"),
                      VariableInfo("sample", "Sample"),
                      VariableInfo("img", "Image")])
    from backend.ctxrunner.results import thumbnail_png, write_run_file
    for r in range(1, nruns + 1):
        db.write_values(PROPOSAL, r, {"energy": StoredValue(r * 1.5, "number"),
                                      "sample": StoredValue(f"sample {r} | x", "string"),
                                      "img": StoredValue(thumbnail_png(np.eye(8) * r), "thumbnail")},
                        status="done")
        write_run_file(ctx / "extracted_data" / f"p{PROPOSAL}_r{r}.h5",
                       {"img": (np.eye(8) * r, None)})
    db.close()
    return ctx


def cli(*args):
    env = {**os.environ, "AMORE_BROKER": "none", "COLUMNS": "200"}
    return subprocess.run(amore_cmd(*args), capture_output=True, text=True, timeout=120,
                          env=env)


def _no_key_anywhere(ctx, key, *outputs):
    for out in outputs:
        assert key not in out
    for p in ctx.rglob("*"):
        if p.is_file() and p.name != "zulip.cfg":
            assert key.encode() not in p.read_bytes(), p


def test_rows_go_to_the_logbook_proxy_as_damnit_posts_them(make_context_dir, logbook_proxy):
    ctx = _table_ctx(make_context_dir)
    (ctx / "zulip.cfg").write_text(f"[ZULIP]\nkey = {PROXY_KEY}\nurl = {logbook_proxy.url}/zulip\n"
                                   f'topics = ["shift 1", "alignment"]\n')
    r = cli("post", "-d", ctx, "--runs", "1-2", "--columns", "energy,sample", "--title", "Scan")
    assert r.returncode == 0, r.stderr
    assert "Posted 1 message(s) to p2832 beamtime > shift 1" in r.stdout
    gets = [q for q in logbook_proxy.requests if q["method"] == "GET"]
    posts = [q for q in logbook_proxy.requests if q["method"] == "POST"]
    assert [g["path"] for g in gets] == ["/zulip/me"] and gets[0]["key"] == PROXY_KEY
    assert len(posts) == 1
    p = posts[0]
    assert p["path"] == "/zulip/send_message" and p["key"] == PROXY_KEY
    assert p["query"] == {"topic": ["shift 1"]} and p["files"] == {}
    assert p["fields"]["content"] == (
        "### Scan\n"
        "| Run | Pulse energy [uJ] | Sample |\n"
        "|---:|---:|---|\n"
        "| 1 | 1.5 | sample 1 \\| x |\n"
        "| 2 | 3 | sample 2 \\| x |\n")
    _no_key_anywhere(ctx, PROXY_KEY, r.stdout, r.stderr)


def test_a_long_table_is_split_between_rows_under_the_limit(make_context_dir, logbook_proxy):
    ctx = _table_ctx(make_context_dir, nruns=40, config="[logbook]\nmessage_limit = 400\n")
    (ctx / "zulip.cfg").write_text(f"[ZULIP]\nkey = {PROXY_KEY}\nurl = {logbook_proxy.url}/zulip\n")
    r = cli("post", "-d", ctx, "--topic", "runs", "--columns", "energy,sample")
    assert r.returncode == 0, r.stderr
    posts = [q["fields"]["content"] for q in logbook_proxy.requests if q["method"] == "POST"]
    assert len(posts) > 3 and f"Posted {len(posts)} message(s)" in r.stdout
    runs = []
    for content in posts:
        assert len(content) <= 400
        lines = content.rstrip("\n").split("\n")
        assert lines[0] == "| Run | Pulse energy [uJ] | Sample |" and lines[1] == "|---:|---:|---|"
        runs += [int(line.split("|")[1]) for line in lines[2:]]
    assert runs == list(range(1, 41))


def test_a_figure_goes_to_the_proxy_as_an_image_file(make_context_dir, logbook_proxy, tmp_path):
    ctx = _table_ctx(make_context_dir)
    (ctx / "zulip.cfg").write_text(f"[ZULIP]\nkey = {PROXY_KEY}\nurl = {logbook_proxy.url}/zulip\n")
    png = tmp_path / "plot.png"
    from backend.ctxrunner.results import thumbnail_png
    png.write_bytes(thumbnail_png(np.arange(16.0).reshape(4, 4)))
    r = cli("post", "-d", ctx, "--topic", "plots", "--image", png, "--title", "My plot")
    assert r.returncode == 0, r.stderr
    (p,) = [q for q in logbook_proxy.requests if q["method"] == "POST"]
    assert p["fields"] == {"content": "My plot"} and p["query"] == {"topic": ["plots"]}
    assert p["files"] == {"image": ("plot.png", png.read_bytes())}
    # a variable's picture: the run's image drawn from its stored data
    r = cli("post", "-d", ctx, "--topic", "plots", "--figure", "2", "img")
    assert r.returncode == 0, r.stderr
    name, data = [q for q in logbook_proxy.requests if q["method"] == "POST"][-1]["files"]["image"]
    assert name == "r2_img.png" and data[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_refusal_or_an_unreachable_proxy_is_said_plainly(make_context_dir, logbook_proxy):
    ctx = _table_ctx(make_context_dir)
    (ctx / "zulip.cfg").write_text(f"[ZULIP]\nkey = {PROXY_KEY}\nurl = {logbook_proxy.url}/zulip\n")
    logbook_proxy.reply_error = "stream is archived"
    r = cli("post", "-d", ctx, "--topic", "x")
    assert r.returncode == 1 and "stream is archived" in r.stderr and "Traceback" not in r.stderr
    (ctx / "zulip.cfg").write_text(f"[ZULIP]\nkey = {PROXY_KEY}\nurl = http://127.0.0.1:9/z\n")
    r = cli("post", "-d", ctx, "--topic", "x")
    assert r.returncode == 1 and "unreachable" in r.stderr and "Traceback" not in r.stderr
    _no_key_anywhere(ctx, PROXY_KEY, r.stdout, r.stderr)
    (ctx / "zulip.cfg").unlink()
    r = cli("post", "-d", ctx, "--topic", "x")
    assert r.returncode == 1 and "No logbook set up" in r.stderr


def test_rows_and_a_figure_go_to_a_zulip_server_directly(make_context_dir, zulip_server,
                                                         tmp_path):
    rc = tmp_path / "zuliprc"
    rc.write_text(f"[api]\nemail = bot@example.org\nkey = {ZULIP_KEY}\nsite = {zulip_server.url}\n")
    rc.chmod(0o600)
    ctx = _table_ctx(make_context_dir, config=f'[logbook]\nzuliprc = "{rc}"\n'
                                              f'stream = "beamtime 2832"\ntopic = "runs"\n')
    r = cli("post", "-d", ctx, "--runs", "3", "--columns", "energy")
    assert r.returncode == 0, r.stderr
    assert "to beamtime 2832 > runs" in r.stdout
    (msg,) = [q for q in zulip_server.requests if q["path"] == "/api/v1/messages"]
    assert msg["auth"] and msg["fields"] == {
        "type": "stream", "to": "beamtime 2832", "topic": "runs",
        "content": "| Run | Pulse energy [uJ] |\n|---:|---:|\n| 3 | 4.5 |\n"}
    r = cli("post", "-d", ctx, "--figure", "1", "img", "--title", "Image of run 1")
    assert r.returncode == 0, r.stderr
    up = [q for q in zulip_server.requests if q["path"] == "/api/v1/user_uploads"]
    assert len(up) == 1 and up[0]["auth"]
    (fname, data), = up[0]["files"].values()
    assert fname == "r1_img.png" and data[:8] == b"\x89PNG\r\n\x1a\n"
    last = [q for q in zulip_server.requests if q["path"] == "/api/v1/messages"][-1]
    assert last["fields"]["content"] == ("Image of run 1\n"
                                         "[r1_img.png](/user_uploads/2/ab/figure.png)")
    _no_key_anywhere(ctx, ZULIP_KEY, r.stdout, r.stderr)


def test_zulip_credentials_readable_by_others_are_refused(make_context_dir, zulip_server,
                                                          tmp_path):
    rc = tmp_path / "zuliprc"
    rc.write_text(f"[api]\nemail = bot@example.org\nkey = {ZULIP_KEY}\nsite = {zulip_server.url}\n")
    rc.chmod(0o644)
    ctx = _table_ctx(make_context_dir, config=f'[logbook]\nzuliprc = "{rc}"\nstream = "b"\n')
    r = cli("post", "-d", ctx, "--topic", "x")
    assert r.returncode == 1 and "can be read by others" in r.stderr and "chmod 600" in r.stderr
    assert zulip_server.requests == []
    assert ZULIP_KEY not in r.stderr


def test_application_layer_splits_and_posts_for_the_gui(make_context_dir, logbook_proxy):
    from amore_gui.application import dbread
    from amore_gui.application.logbook import logbook_choices, post_figure, post_table, \
        table_messages
    ctx = _table_ctx(make_context_dir, nruns=5)
    (ctx / "zulip.cfg").write_text(f"[ZULIP]\nkey = {PROXY_KEY}\nurl = {logbook_proxy.url}/zulip\n"
                                   f'topics = ["a", "b"]\n')
    assert logbook_choices(ctx) == {"stream": "p2832 beamtime", "topics": ["a", "b"],
                                    "topic": "a"}
    data = dbread.load_table(ctx).data
    rows = [data.row_of[(PROPOSAL, r)] for r in (2, 4)]
    cols = [data.col_of("energy")]
    msgs = table_messages(data, rows, cols, "T", limit=10000)
    assert msgs == ["### T\n| Run | Pulse energy [uJ] |\n|---:|---:|\n| 2 | 3 |\n| 4 | 6 |\n"]
    posted = post_table(ctx, data, rows, cols, "b", "T")
    assert (posted.stream, posted.topic, posted.messages) == ("p2832 beamtime", "b", 1)
    post_figure(ctx, b"\x89PNG\r\n\x1a\nfake", "b", "pic")
    last = logbook_proxy.requests[-1]
    assert last["files"] == {"image": ("figure.png", b"\x89PNG\r\n\x1a\nfake")}


def test_a_dialog_learns_the_setup_or_why_posting_is_not_possible(make_context_dir,
                                                                 logbook_proxy):
    """What the GUI's dialog asks first (off its GUI thread): the stream, topics and message
    limit; or, in plain words, why posting is not possible - with what to put where when
    nothing is set up, and never the key."""
    from amore_gui.application.logbook import logbook_setup
    ctx = _table_ctx(make_context_dir, config="[logbook]\nmessage_limit = 500\n")
    s = logbook_setup(ctx)
    assert not s.ok and "No logbook set up" in s.error and logbook_proxy.requests == []
    assert f"{ctx / 'zulip.cfg'}\n  [ZULIP]\n  key = " in s.help and "url = " in s.help
    assert f"{ctx / 'amore.toml'}:\n  [logbook]\n  zuliprc = " in s.help
    (ctx / "zulip.cfg").write_text(f"[ZULIP]\nkey = {PROXY_KEY}\nurl = {logbook_proxy.url}/zulip\n"
                                   f'topics = ["a", "b"]\n')
    s = logbook_setup(ctx)
    assert s.ok and (s.stream, s.topics, s.topic, s.limit) == ("p2832 beamtime", ["a", "b"], "a",
                                                               500)
    (ctx / "zulip.cfg").write_text(f"[ZULIP]\nkey = wrong-key-0000\nurl = {logbook_proxy.url}/zulip\n")
    s = logbook_setup(ctx)
    assert not s.ok and s.help is None
    assert s.error == f"logbook proxy {logbook_proxy.url}/zulip/me: HTTP 403: bad key"
    (ctx / "zulip.cfg").write_text("[ZULIP]\nurl = http://127.0.0.1:9/zulip\n")
    s = logbook_setup(ctx)
    assert not s.ok and "is not a logbook set-up ([ZULIP] key, url, topics)" in s.error


def test_rows_to_post_leave_out_what_a_markdown_table_cannot_show(make_context_dir):
    """The columns offered for a post: the run number first, no Status or Proposal, no column
    holding only pictures in the chosen rows; the rows in run order."""
    from amore_gui.application import dbread
    from amore_gui.application.logbook import rows_by_run, table_columns
    ctx = _table_ctx(make_context_dir, nruns=4)
    data = dbread.load_table(ctx).data
    everything = list(range(len(data.columns)))
    rows = [data.row_of[(PROPOSAL, r)] for r in (3, 1, 2)]
    cols = table_columns(data, rows, [everything[-1], *everything[:-1]])
    assert [data.columns[c].key for c in cols] == ["#run", "#start", "#added", "#comment",
                                                   "energy", "sample"]
    assert [int(data.run[r]) for r in rows_by_run(data, rows)] == [1, 2, 3]
