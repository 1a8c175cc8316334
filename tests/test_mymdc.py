"""``mymdc#`` inputs as DAMNIT users have them: at European XFEL through the extra-proposal
package with no configuration (its proposal's ``usr/mymdc-credentials.yml``), ``sample_name``,
``run_type`` and ``techniques``; the ``[mymdc]`` settings for other set-ups. Against a local
HTTP server answering like MyMdC, through the real worker."""
import json
import textwrap

from tests.conftest import MYMDC_KEY as KEY
from tests.conftest import PROPOSAL
from tests.conftest import process

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


def test_mymdc_works_without_configuration_through_extra_proposal(make_context_dir, write_run,
                                                                  proposal_dir, mymdc_server):
    server, seen = mymdc_server.url, mymdc_server.seen
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


def test_mymdc_inputs_come_from_the_configured_metadata_service(make_context_dir, write_run,
                                                                mymdc_server, tmp_path):
    """Other set-ups: [mymdc] url and token_file name the service (AMORE's own client)."""
    (tmp_path / "token").write_text(KEY + "\n")
    ctx = make_context_dir(MYMDC_CONTEXT, config=f'[mymdc]\nurl = "{mymdc_server.api}"\n'
                                                 f'token_file = "{tmp_path / "token"}"\n')
    write_run(1)
    write_run(2)
    _, values, _ = process(ctx, 1)
    assert values["sample"].value == "Lysozyme crystals"
    assert values["run_type"].value == "Pump-probe"
    assert values["techniques"].value == "serial femtosecond crystallography"
    assert all(s["key"] == KEY for s in mymdc_server.seen)
    _, values, _ = process(ctx, 2)  # a run the service does not know
    assert values["sample"].summary_type == "error"
    assert "knows no run 2 of proposal 2832" in values["sample"].attributes["error"]


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
