"""Manual columns with the real backend and the real command line: each column type, several runs
at once, refused values, history, carry-over on a new run, a context variable recomputed after a
manual edit, per-run processing logs."""
import subprocess
import textwrap

from backend.store.manual import ManualStore
from backend.store.runlogs import run_logs
from backend.store.writer import RunDB

from tests.conftest import (FAST_WATCH, HANGING_CONTEXT, PROPOSAL, amore_cmd, run_status,
                            start_hanging_reprocess, wait_for)

MANUAL_CONTEXT = textwrap.dedent('''
    from amore.context import Variable

    @Variable(title="Trains")
    def n_trains(run):
        print("counting trains")
        return len(run.train_ids)

    @Variable(title="Twice the distance", units="mm")
    def twice(run, d: "var#distance"):
        print(f"distance is {d}")
        return 2 * d

    @Variable(title="Four times")
    def four(run, t: "var#twice"):
        return 2 * t

    @Variable(title="Label")
    def label(run, s: "var#sample" = "unknown"):
        return f"{s}-{run.train_ids[0] > 0}"

    @Variable
    def broken(run):
        raise RuntimeError("this variable always fails")
''')


def cli(ctx, *args, check=True):
    p = subprocess.run(amore_cmd(*args, "-d", ctx), capture_output=True, text=True, timeout=60)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def values(ctx, run):
    return {n: v.value for n, v in RunDB(ctx).get_values(PROPOSAL, run).items()}


def test_each_column_type_from_cli_several_runs_refused_values_history(make_context_dir):
    ctx = make_context_dir(template="generic")
    db = RunDB(ctx)
    for r in (1, 2, 3):
        db.ensure_run(PROPOSAL, r)
    cli(ctx, "column", "add", "distance", "--type", "number", "--units", "um",
        "--title", "Detector distance", "--description", "sample to detector")
    cli(ctx, "column", "add", "good", "--type", "boolean")
    cli(ctx, "column", "add", "shots", "--type", "integer")
    cli(ctx, "column", "add", "note", "--type", "string")
    cli(ctx, "column", "add", "sample", "--type", "choice", "--choices", "lyso,buffer,empty")
    p = cli(ctx, "column", "add", "bad", "--type", "number", "--units", "furlongs_per_fortnite",
            check=False)
    assert p.returncode == 1 and "not defined in the unit registry" in p.stderr

    # several runs at once; units converted (mm into a µm column)
    out = cli(ctx, "set", "1-3", "distance", "1.5 mm").stdout
    assert "1500 µm" in out
    cli(ctx, "set", "1,3", "good", "yes")
    cli(ctx, "set", "2", "good", "no")
    cli(ctx, "set", "2", "shots", "120")
    cli(ctx, "set", "2", "note", "crystal moved")
    cli(ctx, "set", "2", "Sample", "LYSO")  # by title/case-insensitive name and choice
    for run in (1, 2, 3):
        assert values(ctx, run)["distance"] == 1500.0
    v2 = values(ctx, 2)
    assert (v2["good"], v2["shots"], v2["note"], v2["sample"]) == (0, 120, "crystal moved", "lyso")
    assert values(ctx, 1)["good"] == 1

    # refused values: clear messages, nothing written
    for args, words in [(("2", "distance", "3 s"), "Cannot convert from 'second'"),
                        (("2", "good", "maybe"), "is not yes/no"),
                        (("2", "shots", "1.5"), "not a whole number"),
                        (("2", "sample", "water"), "use one of lyso, buffer, empty"),
                        (("2", "nosuch", "1"), "no manual column 'nosuch'"),
                        (("2,99", "shots", "1"), "run(s) 99 of proposal 2832 are not in the run table")]:
        p = cli(ctx, "set", *args, check=False)
        assert p.returncode == 1 and words in p.stderr and "nothing was changed" in p.stderr, p.stderr
    assert values(ctx, 2) == v2

    cli(ctx, "set", "2", "distance", "2000")
    hist = cli(ctx, "history", "2", "distance").stdout.splitlines()
    assert len(hist) == 2 and "1500 µm" in hist[0] and "typed '1.5 mm'" in hist[0]
    assert "2000 µm" in hist[1] and "via cli" in hist[1] and "@" in hist[1]

    import json
    listing = {c["name"]: c for c in json.loads(cli(ctx, "column", "list", "--json").stdout)}
    assert listing["distance"]["title"] == "Detector distance"
    assert listing["distance"]["units"] == "µm"
    assert listing["sample"]["choices"] == ["lyso", "buffer", "empty"]
    assert [listing[n]["type"] for n in ("good", "shots", "note")] == ["boolean", "integer",
                                                                        "string"]

    # rename and delete keep the history; restore brings the values back
    cli(ctx, "column", "rename", "distance", "det_distance")
    assert values(ctx, 2)["det_distance"] == 2000.0
    cli(ctx, "column", "delete", "det_distance")
    assert "det_distance" not in values(ctx, 2)
    assert "2000 µm" in cli(ctx, "history", "2", "det_distance").stdout
    cli(ctx, "column", "restore", "det_distance")
    assert values(ctx, 2)["det_distance"] == 2000.0


def test_edit_while_no_backend_runs_is_recomputed_by_listen_once(make_context_dir, write_run):
    """A manual value typed while no backend ran: ``listen --once`` (catch-up) recomputes the
    variables that read it, as a normal start does."""
    ctx = make_context_dir(MANUAL_CONTEXT, config=FAST_WATCH)
    cli(ctx, "column", "add", "distance", "--type", "number", "--units", "mm")
    cli(ctx, "column", "add", "sample", "--type", "string")
    write_run(1, ntrains=10)
    out = subprocess.run(amore_cmd("listen", "--once", ctx), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert RunDB(ctx).get_values(PROPOSAL, 1)["twice"].summary_type == "skipped"
    cli(ctx, "set", "1", "distance", "3 mm")
    out = subprocess.run(amore_cmd("listen", "--once", ctx), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert values(ctx, 1)["twice"] == 6.0 and values(ctx, 1)["four"] == 12.0
    log = (ctx / "amore.log").read_text()
    assert log.count("distance changed; recomputing") == 1
    # nothing edited since: nothing recomputed
    out = subprocess.run(amore_cmd("listen", "--once", ctx), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    log = (ctx / "amore.log").read_text()
    assert log.count("distance changed; recomputing") == 1
    assert log.rstrip().splitlines()[-3].endswith("Caught up: nothing")


def test_carry_over_recompute_after_edit_and_run_logs(make_context_dir, write_run, backend):
    ctx = make_context_dir(MANUAL_CONTEXT, config=FAST_WATCH)
    cli(ctx, "column", "add", "distance", "--type", "number", "--units", "mm", "--carry-over")
    cli(ctx, "column", "add", "sample", "--type", "string")
    b = backend(ctx)
    write_run(1, ntrains=10)
    wait_for(lambda: run_status(ctx, 1) == "done", what="run 1 processed")
    db = RunDB(ctx)
    got = db.get_values(PROPOSAL, 1)
    assert got["n_trains"].value == 10
    assert got["twice"].summary_type == "skipped"
    assert "has no value" in got["twice"].attributes["reason"]
    assert got["label"].value.startswith("unknown-")

    # a manual edit recomputes the variables that depend on it (and theirs), for that run
    cli(ctx, "set", "1", "distance", "2 cm")
    wait_for(lambda: values(ctx, 1).get("four") == 80.0, 30, what="run 1 recomputed")
    assert values(ctx, 1)["twice"] == 40.0
    cli(ctx, "set", "1", "sample", "lysozyme")
    wait_for(lambda: str(values(ctx, 1).get("label")).startswith("lysozyme-"), 30,
             what="label recomputed")

    # auto-pilot: the new run starts with the previous run's distance, marked carried over
    write_run(2, ntrains=12)
    wait_for(lambda: run_status(ctx, 2) == "done", what="run 2 processed")
    v2 = values(ctx, 2)
    assert v2["distance"] == 20.0 and v2["twice"] == 40.0 and "sample" not in v2
    m = ManualStore(db)
    assert m.values("distance")[(PROPOSAL, 2)]["carried"] is True
    hist = cli(ctx, "history", "2", "distance").stdout
    assert "carried over" in hist and "via carry-over" in hist
    cli(ctx, "set", "2", "distance", "--confirm")
    assert m.values("distance")[(PROPOSAL, 2)]["carried"] is False

    # per-run logs: what the variables printed and the tracebacks
    logs = run_logs(db, 1)
    assert any("distance is 20.0" in entry["text"] for entry in logs)
    out = cli(ctx, "logs", "1").stdout        # the last evaluation: label, after sample changed
    assert "only label" in out and "distance is" not in out
    out = cli(ctx, "logs", "1", "--all").stdout
    assert "counting trains" in out and "distance is 20.0" in out
    out = cli(ctx, "logs", "2").stdout
    assert "counting trains" in out and "distance is 20.0" in out
    assert "RuntimeError: this variable always fails" in out and "Traceback" in out
    assert b.stop() == 0


def test_cancelled_reprocess_leaves_no_run_processing(make_context_dir, write_run):
    ctx = make_context_dir(HANGING_CONTEXT)
    write_run(1, ntrains=5)
    write_run(2, ntrains=5)
    cli(ctx, "reprocess", "1")                      # no "hang" file: run 1 gets its value
    assert values(ctx, 1)["slow"] == 1 and run_status(ctx, 1) == "done"
    p = start_hanging_reprocess(ctx)
    try:
        p.terminate()                                 # what the GUI's Cancel button does
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, err
    assert "Cancelled" in err and "2 stopped" in err
    db = RunDB(ctx)
    r1, r2 = db.get_run(PROPOSAL, 1), db.get_run(PROPOSAL, 2)
    assert r1["status"] == "done" and "cancelled" in r1["status_message"]
    assert values(ctx, 1)["slow"] == 1                # the previous value stays
    assert r2["status"] == "pending" and "cancelled" in r2["status_message"]
    assert run_logs(db, 1)[-1]["status"] == "cancelled"


def test_damnit_user_editable_variables_become_manual_columns(make_context_dir, tmp_path):
    from pathlib import Path
    from damnit.backend.db import DamnitDB, ReducedData
    from damnit.backend.user_variables import UserEditableVariable
    ddir = tmp_path / "damnit"
    ddir.mkdir()
    ddb = DamnitDB(Path(ddir / "runs.sqlite"), create=True)
    ddb.add_user_variable(UserEditableVariable("good_run", "Good run?", "boolean"))
    ddb.add_user_variable(UserEditableVariable("att", "Attenuator", "integer", "foils in"))
    ddb.add_user_variable(UserEditableVariable("sample_note", "Sample note", "string"))
    ddb.set_variable(PROPOSAL, 7, "good_run", ReducedData(True), provenance="manual-input")
    ddb.set_variable(PROPOSAL, 8, "good_run", ReducedData(False), provenance="manual-input")
    ddb.set_variable(PROPOSAL, 7, "att", ReducedData(3), provenance="manual-input")
    ddb.set_variable(PROPOSAL, 7, "att", ReducedData(4), provenance="manual-input")  # newer
    ddb.set_variable(PROPOSAL, 8, "sample_note", ReducedData("cracked"), provenance="manual-input")
    ddb.conn.close()

    ctx = make_context_dir(template="generic")
    out = cli(ctx, "column", "import-damnit", ddir).stdout
    assert "Imported 3" in out and "4 value(s)" in out
    m = ManualStore(RunDB(ctx))
    cols = {c.name: c for c in m.columns()}
    assert (cols["good_run"].type, cols["good_run"].title) == ("boolean", "Good run?")
    assert (cols["att"].type, cols["att"].description) == ("integer", "foils in")
    assert values(ctx, 7)["good_run"] == 1 and values(ctx, 8)["good_run"] == 0
    assert values(ctx, 7)["att"] == 4 and values(ctx, 8)["sample_note"] == "cracked"
    assert "via import" in cli(ctx, "history", "7", "att").stdout
    assert "0 value(s)" in cli(ctx, "column", "import-damnit", ddir).stdout   # idempotent


def test_gui_context_check_knows_manual_columns(make_context_dir):
    from amore_gui.application.context_check import validate
    ctx = make_context_dir(template="generic")
    code = MANUAL_CONTEXT
    res = validate(code, ctx)
    assert not res.ok and "no variable 'distance' is defined" in res.error
    cli(ctx, "column", "add", "distance", "--type", "number", "--units", "mm")
    cli(ctx, "column", "add", "sample", "--type", "string")
    assert validate(code, ctx).ok


def test_column_added_while_backend_runs_unblocks_the_context_file(make_context_dir, write_run,
                                                                   backend):
    ctx = make_context_dir(MANUAL_CONTEXT, config=FAST_WATCH)
    b = backend(ctx)                       # the context reads var#distance, not defined yet
    write_run(1, ntrains=10)
    wait_for(lambda: "waiting for a working context file" in
             ((RunDB(ctx).get_run(PROPOSAL, 1) or {}).get("status_message") or ""),
             60, what="run 1 waiting for the context file")
    cli(ctx, "column", "add", "distance", "--type", "number", "--units", "mm")
    cli(ctx, "column", "add", "sample", "--type", "string")
    wait_for(lambda: run_status(ctx, 1) == "done", 60, what="run 1 processed")
    assert values(ctx, 1)["n_trains"] == 10
    cli(ctx, "set", "1", "distance", "7")
    wait_for(lambda: values(ctx, 1).get("twice") == 14.0, 30, what="twice recomputed")
    assert b.stop() == 0


def test_closed_proposal_refuses_manual_edits_and_carries_nothing(make_context_dir):
    """Closing a proposal (``amore-proto close``) makes the table read-only: setting, confirming
    and adding manual columns are refused with a message saying why, nothing is written, and a
    new run gets no carried-over value; after ``reopen`` edits work again."""
    ctx = make_context_dir(template="generic")
    db = RunDB(ctx)
    for r in (1, 2):
        db.ensure_run(PROPOSAL, r)
    cli(ctx, "column", "add", "distance", "--type", "number", "--units", "mm", "--carry-over")
    cli(ctx, "set", "1", "distance", "3")
    cli(ctx, "close")
    p = cli(ctx, "set", "2", "distance", "5", check=False)
    assert p.returncode == 1
    assert "closed" in p.stderr and "read-only" in p.stderr and "reopen" in p.stderr
    p = cli(ctx, "column", "add", "good", "--type", "boolean", check=False)
    assert p.returncode == 1 and "closed" in p.stderr
    m = ManualStore(RunDB(ctx))
    assert [c.name for c in m.columns()] == ["distance"]
    assert values(ctx, 1)["distance"] == 3 and "distance" not in values(ctx, 2)
    assert len(m.history(None, "distance")) == 1
    db.ensure_run(PROPOSAL, 3)
    assert m.carry_over(PROPOSAL, 3) == []
    assert "distance" not in values(ctx, 3)
    cli(ctx, "reopen")
    cli(ctx, "set", "2", "distance", "5")
    assert values(ctx, 2)["distance"] == 5


def test_manual_columns_and_logs_of_an_identifier_proposal(tmp_path):
    """ESRF/SwissFEL proposals are identifiers (``mx2532``): manual values, their history,
    carry-over and run logs keep the proposal as text, and the GUI's reader lists the column."""
    import sqlite3

    from amore_gui.application import dbread
    from backend.store.runlogs import add_run_log

    db = RunDB.create(tmp_path / "esrf", "mx2532")
    for r in (1, 2):
        db.ensure_run("mx2532", r)
    m = ManualStore(db)
    m.add_column("sample", "string", carry_over=True)
    m.set_values([1], "sample", "lysozyme", via="api")
    db.ensure_run("mx2532", 3)
    assert [e.name for e in m.carry_over("mx2532", 3)] == ["sample"]
    assert m.run_values("mx2532", 3) == {"sample": "lysozyme"}
    assert m.run_values("mx2532", 2) == {}
    assert [(h["proposal"], h["run"]) for h in m.history(None, "sample")] == [
        ("mx2532", 1), ("mx2532", 3)]
    add_run_log(db, "mx2532", 3, "done", "hello\n")
    assert [(r["proposal"], r["text"]) for r in run_logs(db, 3)] == [("mx2532", "hello\n")]
    con = sqlite3.connect(tmp_path / "esrf" / "runs.sqlite")
    try:
        assert {t for (t,) in con.execute("SELECT typeof(proposal) FROM manual_history "
                                          "UNION SELECT typeof(proposal) FROM run_logs")} == {"text"}
    finally:
        con.close()
    con = dbread.connect(tmp_path / "esrf")
    try:
        assert [c.key for c in dbread.read_manual_columns(con)] == ["sample"]
    finally:
        con.close()


def test_carry_over_for_other_facilities_runs_at_their_first_event(tmp_path):
    """ESRF/ESS runs arrive as keyed events (run numbers synthesised, ESS announced while still
    running): a new run gets the carried-over manual values at its first event, with the
    proposal kept as an identifier."""
    from backend.sources.base import RunEvent
    from backend.service.listener import Listener
    from backend.store.init import init_context_dir

    d = tmp_path / "esrf"
    init_context_dir(d, "mx2532", facility="esrf")
    db = RunDB(d)
    m = ManualStore(db)
    m.add_column("sample", "string", carry_over=True)
    listener = Listener(d)
    try:
        listener.handle_event(RunEvent("mx2532", None, key="/a/1/metadata.json",
                                       info={"i": 1}, state="running"))
        assert [r["run"] for r in db.runs()] == [1]
        m.set_values([1], "sample", "lysozyme", via="api")
        listener.handle_event(RunEvent("mx2532", None, key="/a/2/metadata.json",
                                       info={"i": 2}, state="running"))
        assert m.run_values("mx2532", 2) == {"sample": "lysozyme"}
        assert m.history(2, "sample", proposal="mx2532")[0]["via"] == "carry-over"
    finally:
        listener.shutdown(grace=0.0)
