"""Posting to the logbook: selected rows as a Markdown table (run numbers, split under the
message size limit) and a picture, through the facility's logbook proxy exactly as DAMNIT 0.4.0
talks to it (``zulip.cfg``), or to a Zulip server directly with the ``zulip`` package. Local
HTTP servers check exactly what the proxy and a Zulip server receive; the keys appear nowhere
else."""
import base64
import email
import io
import json
import os
import subprocess
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from tests.conftest import PROPOSAL, amore_cmd, send_json

PROXY_KEY = "proxy-key-7c2d9a"
ZULIP_KEY = "zulip-bot-key-41be0f"


def parse_body(handler) -> tuple[dict, dict]:
    """The form fields and files of a request (urlencoded or multipart)."""
    n = int(handler.headers.get("Content-Length") or 0)
    body = handler.rfile.read(n)
    ctype = handler.headers.get("Content-Type") or ""
    if ctype.startswith("multipart/form-data"):
        msg = email.message_from_bytes(b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body)
        fields, files = {}, {}
        for part in msg.get_payload():
            name = part.get_param("name", header="content-disposition")
            if part.get_filename() is not None:
                files[name] = (part.get_filename(), part.get_payload(decode=True))
            else:
                fields[name] = part.get_payload(decode=True).decode()
        return fields, files
    return {k: v[0] for k, v in urllib.parse.parse_qs(body.decode()).items()}, {}


class Recorder(ThreadingHTTPServer):
    def __init__(self, handler):
        super().__init__(("127.0.0.1", 0), handler)
        self.requests = []
        self.reply_error = None
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class ProxyHandler(BaseHTTPRequestHandler):
    """Answers like the facility's logbook proxy (DAMNIT's zulip_messenger talks to it)."""

    def _record(self, fields=None, files=None):
        u = urllib.parse.urlsplit(self.path)
        self.server.requests.append({"method": self.command, "path": u.path,
                                     "query": urllib.parse.parse_qs(u.query),
                                     "key": self.headers.get("X-API-key"),
                                     "fields": fields or {}, "files": files or {}})

    def do_GET(self):
        self._record()
        if self.headers.get("X-API-key") != PROXY_KEY:
            return send_json(self, 403, {"result": "error", "msg": "bad key"})
        if self.path == "/zulip/me":
            return send_json(self, 200, {"stream": "p2832 beamtime"})
        send_json(self, 404, {})

    def do_POST(self):
        fields, files = parse_body(self)
        self._record(fields, files)
        if self.server.reply_error:
            return send_json(self, 200, {"result": "error", "msg": self.server.reply_error})
        send_json(self, 200, {"result": "success"})

    def log_message(self, *a):
        pass


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
def proxy():
    s = Recorder(ProxyHandler)
    yield s
    s.shutdown()


@pytest.fixture
def zulip_server():
    s = Recorder(ZulipHandler)
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


def test_rows_go_to_the_logbook_proxy_as_damnit_posts_them(make_context_dir, proxy):
    ctx = _table_ctx(make_context_dir)
    (ctx / "zulip.cfg").write_text(f"[ZULIP]\nkey = {PROXY_KEY}\nurl = {proxy.url}/zulip\n"
                                   f'topics = ["shift 1", "alignment"]\n')
    r = cli("post", "-d", ctx, "--runs", "1-2", "--columns", "energy,sample", "--title", "Scan")
    assert r.returncode == 0, r.stderr
    assert "Posted 1 message(s) to p2832 beamtime > shift 1" in r.stdout
    gets = [q for q in proxy.requests if q["method"] == "GET"]
    posts = [q for q in proxy.requests if q["method"] == "POST"]
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


def test_a_long_table_is_split_between_rows_under_the_limit(make_context_dir, proxy):
    ctx = _table_ctx(make_context_dir, nruns=40, config="[logbook]\nmessage_limit = 400\n")
    (ctx / "zulip.cfg").write_text(f"[ZULIP]\nkey = {PROXY_KEY}\nurl = {proxy.url}/zulip\n")
    r = cli("post", "-d", ctx, "--topic", "runs", "--columns", "energy,sample")
    assert r.returncode == 0, r.stderr
    posts = [q["fields"]["content"] for q in proxy.requests if q["method"] == "POST"]
    assert len(posts) > 3 and f"Posted {len(posts)} message(s)" in r.stdout
    runs = []
    for content in posts:
        assert len(content) <= 400
        lines = content.rstrip("\n").split("\n")
        assert lines[0] == "| Run | Pulse energy [uJ] | Sample |" and lines[1] == "|---:|---:|---|"
        runs += [int(line.split("|")[1]) for line in lines[2:]]
    assert runs == list(range(1, 41))


def test_a_figure_goes_to_the_proxy_as_an_image_file(make_context_dir, proxy, tmp_path):
    ctx = _table_ctx(make_context_dir)
    (ctx / "zulip.cfg").write_text(f"[ZULIP]\nkey = {PROXY_KEY}\nurl = {proxy.url}/zulip\n")
    png = tmp_path / "plot.png"
    from backend.ctxrunner.results import thumbnail_png
    png.write_bytes(thumbnail_png(np.arange(16.0).reshape(4, 4)))
    r = cli("post", "-d", ctx, "--topic", "plots", "--image", png, "--title", "My plot")
    assert r.returncode == 0, r.stderr
    (p,) = [q for q in proxy.requests if q["method"] == "POST"]
    assert p["fields"] == {"content": "My plot"} and p["query"] == {"topic": ["plots"]}
    assert p["files"] == {"image": ("plot.png", png.read_bytes())}
    # a variable's picture: the run's image drawn from its stored data
    r = cli("post", "-d", ctx, "--topic", "plots", "--figure", "2", "img")
    assert r.returncode == 0, r.stderr
    name, data = [q for q in proxy.requests if q["method"] == "POST"][-1]["files"]["image"]
    assert name == "r2_img.png" and data[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_refusal_or_an_unreachable_proxy_is_said_plainly(make_context_dir, proxy):
    ctx = _table_ctx(make_context_dir)
    (ctx / "zulip.cfg").write_text(f"[ZULIP]\nkey = {PROXY_KEY}\nurl = {proxy.url}/zulip\n")
    proxy.reply_error = "stream is archived"
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


def test_application_layer_splits_and_posts_for_the_gui(make_context_dir, proxy):
    from amore_gui.application import dbread
    from amore_gui.application.logbook import logbook_choices, post_figure, post_table, \
        table_messages
    ctx = _table_ctx(make_context_dir, nruns=5)
    (ctx / "zulip.cfg").write_text(f"[ZULIP]\nkey = {PROXY_KEY}\nurl = {proxy.url}/zulip\n"
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
    last = proxy.requests[-1]
    assert last["files"] == {"image": ("figure.png", b"\x89PNG\r\n\x1a\nfake")}
