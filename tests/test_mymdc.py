"""``mymdc#`` inputs as DAMNIT users have them: at European XFEL through the extra-proposal
package with no configuration (its proposal's ``usr/mymdc-credentials.yml``), ``sample_name``,
``run_type`` and ``techniques``; the ``[mymdc]`` settings for other set-ups. Against a local
HTTP server answering like MyMdC, through the real worker."""
import json
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import PROPOSAL
from tests.test_context import process

TECHNIQUES = [{"identifier": "PaNET01188", "name": "serial femtosecond crystallography"}]
KEY = "mymdc-test-key-5f1e"

MYMDC_CONTEXT = textwrap.dedent("""
    from damnit_ctx import Variable

    @Variable(title="Sample")
    def sample(run, name: "mymdc#sample_name"):
        return name

    @Variable(title="Run type")
    def run_type(run, kind: "mymdc#run_type"):
        return kind

    @Variable(title="Techniques")
    def techniques(run, t: "mymdc#techniques"):
        return ", ".join(x["name"] for x in t)
""")


@pytest.fixture
def mymdc_server():
    """A local server answering MyMdC's API under ``/api/mymdc`` (as extra-proposal reaches it:
    ``{server}/api/mymdc``), only with the right API key; records every request."""
    replies = {
        f"/api/mymdc/proposals/by_number/{PROPOSAL}/runs/1": {
            "runs": [{"id": 501, "sample_id": 7, "experiment_id": 3, "run_number": 1}]},
        f"/api/mymdc/proposals/by_number/{PROPOSAL}/runs/2": {"runs": []},
        "/api/mymdc/samples/7": {"name": "Lysozyme crystals", "id": 7},
        "/api/mymdc/experiments/3": {"name": "Pump-probe", "id": 3},
        "/api/mymdc/runs/501": {"id": 501, "techniques": TECHNIQUES},
    }
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append({"path": self.path, "key": self.headers.get("X-API-key"),
                         "accept": self.headers.get("Accept")})
            body = replies.get(self.path.split("?")[0])
            if self.headers.get("X-API-key") != KEY:
                body, code = {"info": "bad key"}, 403
            elif body is None:
                body, code = {"info": "not found"}, 404
            else:
                code = 200
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()


def test_mymdc_works_without_configuration_through_extra_proposal(make_context_dir, write_run,
                                                                  proposal_dir, mymdc_server):
    server, seen = mymdc_server
    # what the facility's token service leaves in every proposal (extra-proposal reads it)
    (proposal_dir / "usr").mkdir(exist_ok=True)
    (proposal_dir / "usr" / "mymdc-credentials.yml").write_text(
        f"token: {KEY}\nserver: {server}\n")
    ctx = make_context_dir(MYMDC_CONTEXT)          # no [mymdc] settings at all
    write_run(1)
    write_run(2)
    out, values, err = process(ctx, 1)
    assert err is None
    assert values["sample"].value == "Lysozyme crystals"
    assert values["run_type"].value == "Pump-probe"
    assert values["techniques"].value == "serial femtosecond crystallography"
    assert seen and all(s["key"] == KEY for s in seen)
    assert {s["path"] for s in seen} >= {f"/api/mymdc/proposals/by_number/{PROPOSAL}/runs/1",
                                         "/api/mymdc/samples/7", "/api/mymdc/experiments/3",
                                         "/api/mymdc/runs/501"}
    # a run MyMdC does not know: the variables say so, and never show the key
    _, values, _ = process(ctx, 2)
    err = values["sample"].attributes["error"]
    assert values["sample"].summary_type == "error" and "run 2 of proposal 2832" in err
    assert KEY not in json.dumps({k: v.attributes for k, v in values.items()})
    log = (ctx / "amore.log").read_text() if (ctx / "amore.log").exists() else ""
    assert KEY not in log


def test_configured_metadata_service_gives_techniques_too(make_context_dir, write_run,
                                                           mymdc_server, tmp_path):
    server, seen = mymdc_server
    (tmp_path / "token").write_text(KEY + "\n")
    ctx = make_context_dir(MYMDC_CONTEXT, config=f'[mymdc]\nurl = "{server}/api/mymdc"\n'
                                                 f'token_file = "{tmp_path / "token"}"\n')
    write_run(1)
    _, values, _ = process(ctx, 1)
    assert values["techniques"].value == "serial femtosecond crystallography"
    assert values["sample"].value == "Lysozyme crystals"
    assert all(s["key"] == KEY for s in seen)


def test_unknown_mymdc_field_is_refused_when_the_context_file_loads(make_context_dir,
                                                                   write_run):
    ctx = make_context_dir(textwrap.dedent("""
        from damnit_ctx import Variable

        @Variable
        def t(run, x: "mymdc#proposal_title"):
            return x
    """))
    write_run(1)
    _, _, err = process(ctx, 1)
    assert "mymdc#proposal_title" in str(err) and "mymdc#techniques" in str(err)
