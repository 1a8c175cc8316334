"""runs.sqlite: schema migrations, proposals, and many concurrent writers."""
import multiprocessing as mp
import sqlite3

import pytest

from backend.store.schema import SCHEMA_HEAD
from backend.store.writer import RunDB, StorageError, StoredValue


def test_schema_head_matches_alembic_scripts():
    from pathlib import Path

    from alembic.config import Config
    from alembic.script import ScriptDirectory
    import backend.store.writer

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(backend.store.writer.__file__).parent / "migrations"))
    assert ScriptDirectory.from_config(cfg).get_current_head() == SCHEMA_HEAD


def test_create_is_versioned_and_refuses_other_proposal(tmp_path):
    db = RunDB.create(tmp_path, 1234)
    assert db.proposal == 1234 and len(db.db_id) == 32
    con = sqlite3.connect(tmp_path / "runs.sqlite")
    assert con.execute("SELECT version_num FROM alembic_version").fetchone()[0] == SCHEMA_HEAD
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(StorageError, match="belongs to proposal 1234"):
        RunDB.create(tmp_path, 999)
    with pytest.raises(StorageError, match="No AMORE database"):
        RunDB(tmp_path / "elsewhere")


def test_values_keep_their_types(tmp_path):
    db = RunDB.create(tmp_path, 1)
    db.write_values(1, 5, {"s": StoredValue("007", "string"), "i": StoredValue(7, "number"),
                           "f": StoredValue(0.5, "number", {"units": "mm"}),
                           "png": StoredValue(b"\x89PNG..", "thumbnail")}, status="done",
                    start_time=1.6e9)
    v = db.get_values(1, 5)
    assert v["s"].value == "007" and v["i"].value == 7 and v["f"].value == 0.5
    assert v["f"].attributes == {"units": "mm"} and v["png"].value == b"\x89PNG.."
    run = db.get_run(1, 5)
    assert run["status"] == "done" and run["start_time"] == 1.6e9 and run["added_at"] > 1.6e9


def _writer(path, worker, n_runs, n_vars, barrier, errors):
    try:
        db = RunDB(path)
        barrier.wait()
        for r in range(n_runs):
            run = worker * 1000 + r
            db.write_values(1, run, {f"v{i}": StoredValue(float(run * i), "number")
                                     for i in range(n_vars)}, status="done")
            db.set_run_status(1, run, "done")
    except Exception as e:  # reported to the parent
        errors.put(f"{type(e).__name__}: {e}")


@pytest.mark.parametrize("n_writers", [16])
def test_concurrent_writers_never_lock_or_lose(tmp_path, n_writers):
    RunDB.create(tmp_path, 1).close()
    ctx = mp.get_context("spawn")
    barrier, errors = ctx.Barrier(n_writers), ctx.Queue()
    n_runs, n_vars = 10, 30
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, n_runs, n_vars, barrier, errors))
             for w in range(n_writers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    errs = []
    while not errors.empty():
        errs.append(errors.get())
    assert errs == []
    assert all(p.exitcode == 0 for p in procs)
    db = RunDB(tmp_path)
    rows = db.all_values()
    assert len(rows) == n_writers * n_runs * n_vars
    assert all(value == float(run * int(name[1:])) for _, run, name, value, _, _ in rows)
    assert len(db.runs()) == n_writers * n_runs


def test_event_log_keeps_entries_in_order_and_filters(tmp_path):
    db = RunDB.create(tmp_path, 2832)
    db.add_event("info", "watcher", "watching raw/")
    i = db.add_event("warning", "kafka", "malformed message skipped", details={"topic": "t", "offset": 7})
    db.add_event("error", "worker", "worker died", run=5, proposal=2832)
    with pytest.raises(ValueError):
        db.add_event("chatty", "x", "no such level")
    assert [e["message"] for e in db.events()] == ["watching raw/", "malformed message skipped",
                                                    "worker died"]
    assert [e["level"] for e in db.events(level="warning")] == ["warning", "error"]
    assert db.events(run=5)[0]["source"] == "worker"
    assert db.events(since_id=i)[0]["message"] == "worker died"
    assert db.events()[1]["details"] == {"topic": "t", "offset": 7}
    assert [e["message"] for e in db.events(limit=1)] == ["worker died"]


def test_reader_reads_what_the_writer_wrote(tmp_path):
    """The fast reader's SQL (text, no SQLAlchemy) runs against a database made by the writer
    and finds what was written, and its connections cannot write."""
    from backend.store import reader
    from backend.vocab import VariableInfo
    db = RunDB.create(tmp_path, 1234)
    db.set_variables([VariableInfo("a", title="A", units="mm", tags=["x"]), VariableInfo("b")])
    db.write_values(1234, 7, {"a": StoredValue(1.5, "number", {"units": "mm"}),
                              "b": StoredValue(b"\x89PNG", "thumbnail")},
                    status="done", start_time=1700000000.0)
    db.set_run_status(1234, 8, "waiting", "waiting for a working context file: SyntaxError")
    db.set_comment(1234, 7, "good")
    db.add_comment("note", author="me", timestamp=5.0, proposal=1234, run=7)
    db.close()
    con = reader.connect(tmp_path, uri_readonly=True)
    assert reader.schema_revision(con) == SCHEMA_HEAD
    assert dict(con.execute(reader.METADATA_SQL))["proposal"] == "1234"
    assert [r[:4] for r in con.execute(reader.VARIABLES_SQL)] == [("a", "A", None, "mm"),
                                                                  ("b", None, None, None)]
    runs = {(p, r): dict(zip(reader.RUN_FIELDS, rest)) for p, r, *rest in con.execute(reader.RUNS_SQL)}
    assert runs[(1234, 7)]["status"] == "done" and runs[(1234, 7)]["comment"] == "good"
    assert runs[(1234, 7)]["start_time"] == 1700000000.0
    assert runs[(1234, 8)]["status"] == "waiting"
    assert con.execute(reader.RUN_INFO_SQL, (1234, 8)).fetchone()[2] == "waiting"
    vals = {r[0]: r for r in con.execute(reader.RUN_VALUES_SQL, (1234, 7))}
    assert vals["a"][1:3] == ("number", 1.5) and vals["b"][1:3] == ("thumbnail", None)
    assert con.execute(reader.THUMBNAIL_SQL, (1234, 7, "b")).fetchone()[0] == b"\x89PNG"
    assert con.execute(reader.VALUE_SQL, (1234, 7, "a")).fetchone()[:2] == (1.5, "number")
    assert con.execute(reader.NUMBER_VALUES_SQL).fetchall() == [(1234, 7, "a", 1.5)]
    assert con.execute(reader.OTHER_VALUES_SQL).fetchall() == [(1234, 7, "b", "thumbnail", None)]
    assert con.execute(reader.NAME_HAS_VALUES_SQL, ("a",)).fetchone()[0] == 1
    assert con.execute(reader.NAME_HAS_VALUES_SQL, ("zz",)).fetchone()[0] == 0
    assert len(con.execute(reader.VALUES_SINCE_SQL, (0.0,)).fetchall()) == 2
    chunk = con.execute(reader.CHUNK_SQL, (1234, 1, 10)).fetchall()
    assert [(r[0], r[1], r[2]) for r in chunk] == [(7, "a", "1.5")]
    assert '"b","thumbnail",null' in chunk[0][3].replace(" ", "")
    comments = [dict(zip(reader.COMMENT_FIELDS, r)) for r in con.execute(reader.COMMENTS_SQL)]
    assert comments[0]["text"] == "note" and comments[0]["run"] == 7
    assert con.execute(reader.COMMENTS_SIGNATURE_SQL).fetchone()[:2] == (1, comments[0]["id"])
    with pytest.raises(sqlite3.OperationalError):
        con.execute("UPDATE runs SET comment = 'x'")
    con.close()


def test_reader_sql_matches_the_schema_the_migrations_make(tmp_path):
    """The reader's queries are SQL text (so the front-ends never import SQLAlchemy): each one
    prepares against a database the Alembic migrations made from an empty file (SQLite refuses
    an unknown table or column), with as many parameters as it has placeholders, and every
    ``*_FIELDS`` tuple names columns of its table in ``schema.py``, in the order its query
    returns them."""
    from backend.store import reader
    from backend.store.schema import metadata_obj
    from backend.store.writer import upgrade_schema
    path = tmp_path / "runs.sqlite"
    upgrade_schema(path)
    con = sqlite3.connect(path)
    statements = {name: getattr(reader, name) for name in dir(reader) if name.endswith("_SQL")}
    assert len(statements) >= 20, sorted(statements)

    def prepare(text):
        return con.execute("EXPLAIN " + text, [None] * text.count("?"))

    with pytest.raises(sqlite3.OperationalError, match="no such column"):
        prepare("SELECT nonexistent FROM runs WHERE run = ?")     # what a stale query meets
    refused = {}
    for name, text in statements.items():
        try:
            prepare(text)
        except sqlite3.Error as e:
            refused[name] = f"{e}: {text}"
    assert not refused, "queries the migrated schema refuses:\n" + "\n".join(
        f"{k}: {v}" for k, v in refused.items())

    def returned(text):
        return tuple(d[0] for d in con.execute(text, [None] * text.count("?")).description)

    tables = metadata_obj.tables
    for fields, table, text, before in [
            (reader.RUN_FIELDS, "runs", reader.RUNS_SQL, ("proposal", "run")),
            (reader.RUN_FIELDS, "runs", reader.RUN_INFO_SQL, ()),
            (reader.VARIABLE_FIELDS, "variables", reader.VARIABLES_SQL, ()),
            (reader.COMMENT_FIELDS, "comments", reader.COMMENTS_SQL, ()),
            (reader.EVENT_FIELDS, "events", reader.EVENTS_SINCE_SQL, ()),
            (reader.MANUAL_COLUMN_FIELDS, "manual_columns", reader.MANUAL_COLUMNS_SQL, ()),
            (reader.SLURM_JOB_FIELDS, "slurm_jobs", reader.RUN_SLURM_JOBS_SQL, ())]:
        unknown = [f for f in fields if f not in tables[table].c]
        assert not unknown, f"{unknown} are not columns of {table} in schema.py"
        assert returned(text) == before + fields, text
    con.close()


def test_a_value_computed_after_a_slurm_job_read_its_inputs_is_not_replaced_by_the_job(tmp_path):
    """A Slurm job's result arriving after the backend computed one of its values again (e.g.
    after a manual edit the job did not see) keeps the newer value; the job's other values,
    newer than what is stored, are stored."""
    import time
    db = RunDB.create(tmp_path / "ctx", 2832)
    t = time.time()

    def made(started):
        return {"run": {"started_at": started}, "values": {}}

    db.write_values(2832, 5, {"other": StoredValue(1.0, "number", {})}, provenance=made(t - 100))
    db.write_values(2832, 5, {"scaled": StoredValue(632.0, "number", {})}, provenance=made(t))
    kept = db.write_values(2832, 5, {"scaled": StoredValue(None, "error", {"error": "skipped"}),
                                     "other": StoredValue(2.0, "number", {})},
                           provenance=made(t - 20), inputs_at=t - 30)
    values = db.get_values(2832, 5)
    assert kept == ["scaled"]
    assert values["scaled"].value == 632.0, "the newer value was replaced by the job's"
    assert values["other"].value == 2.0
    # a job whose inputs were read after the stored value was computed replaces it
    assert db.write_values(2832, 5, {"scaled": StoredValue(640.0, "number", {})},
                           provenance=made(t + 10), inputs_at=t + 5) == []
    assert db.get_values(2832, 5)["scaled"].value == 640.0


def test_a_reader_keeps_seeing_writes_when_another_thread_identified_the_database(tmp_path,
                                                                                 monkeypatch):
    """Another thread identifying the database (its header read with a plain open) while a
    reader connects must not drop the reader's SQLite locks: else the next process to close
    its last connection removes the -wal/-shm files under the reader, which then never sees a
    change again (a GUI's live updates stopped that way)."""
    import subprocess
    import sys
    import threading
    from pathlib import Path

    from backend.store import identify, reader
    p = subprocess.run([sys.executable, "-c", "import sys; from backend.store.writer import RunDB; "
                        "RunDB.create(sys.argv[1], 1234).close()", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)   # made by another process
    assert p.returncode == 0, p.stderr
    db = tmp_path / "runs.sqlite"
    assert not Path(f"{db}-wal").exists()   # closed cleanly: the header may be read directly
    header_open, reader_up = threading.Event(), threading.Event()
    slow_thread = []
    real_header = identify._header

    def slow_header(path):
        if threading.current_thread() not in slow_thread:
            return real_header(path)
        with open(path, "rb") as f:
            header_open.set()
            reader_up.wait(3)           # a reader connects meanwhile, if it can
            return f.read(100)
    monkeypatch.setattr(identify, "_header", slow_header)
    t = threading.Thread(target=identify.identify, args=(db,))
    slow_thread.append(t)
    t.start()
    assert header_open.wait(30)
    con = reader.connect(tmp_path)
    assert con.execute("SELECT value FROM metadata WHERE key = 'probe'").fetchall() == []
    reader_up.set()
    t.join(30)
    for i in range(3):      # another process writes, then closes its last connection
        p = subprocess.run([sys.executable, "-c",
                            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
                            "c.execute(\"INSERT OR REPLACE INTO metadata VALUES ('probe', ?)\", "
                            "(sys.argv[2],)); c.commit(); c.close()", str(db), f"write {i}"],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        seen = con.execute("SELECT value FROM metadata WHERE key = 'probe'").fetchall()
        assert seen == [(f"write {i}",)], f"the reader no longer sees what another process commits: {seen}"
    con.close()


def test_runs_change_stamp_grows_in_commit_order_whoever_writes(tmp_path):
    """``runs.changed`` (revision 0009) is set by the database's triggers: every insert and
    every update that changes a run's fields gives the run a stamp above all others, whether
    the writer is AMORE's writer (two of them, as the backend and a GUI) or a plain SQL
    statement that knows nothing of stamps; a write that changes nothing keeps the stamp. A
    database from before 0009 keeps its runs through the migration (stamp 0)."""
    from backend.store import reader
    from backend.store.writer import upgrade_schema
    path = tmp_path / "runs.sqlite"
    upgrade_schema(path, "0008")
    with sqlite3.connect(path) as con:
        con.execute("INSERT INTO metadata VALUES ('proposal', '1234')")
        con.execute("INSERT INTO runs(proposal, run, status, comment) VALUES (1234, 1, 'done', 'old')")
    backend, gui = RunDB(tmp_path), RunDB(tmp_path)          # migrated by the first
    plain = sqlite3.connect(path)
    rd = reader.connect(tmp_path)

    def stamps():
        return dict(rd.execute("SELECT run, changed FROM runs"))

    assert stamps() == {1: 0}
    assert rd.execute("SELECT comment FROM runs WHERE run = 1").fetchone() == ("old",)
    writes = [lambda: backend.ensure_run(1234, 2), lambda: gui.set_comment(1234, 1, "new"),
              lambda: backend.set_run_status(1234, 2, "processing"),
              lambda: plain.executescript("UPDATE runs SET status = 'failed' WHERE run = 1"),
              lambda: backend.write_values(1234, 3, {"a": StoredValue(1.0, "number")},
                                           status="done"),
              lambda: gui.set_run_statuses([(1234, 2, "done", None), (1234, 1, "done", "ok")])]
    for k, write in enumerate(writes):
        before = stamps()
        write()
        after = stamps()
        moved = {r for r in after if after[r] != before.get(r)}
        assert moved, f"write {k} changed no stamp: {after}"
        assert all(after[r] > max(before.values()) for r in moved), (k, before, after)
        found = rd.execute(reader.RUNS_CHANGED_SQL, (max(before.values()),)).fetchall()
        assert sorted(r[1] for r in found) == sorted(moved), (k, found)
    before = stamps()
    backend.set_run_status(1234, 2, "done")                  # as it is: nothing changes
    gui.set_comment(1234, 1, "new")
    assert stamps() == before
    for db in (backend, gui):
        db.close()
    plain.close()
    rd.close()
