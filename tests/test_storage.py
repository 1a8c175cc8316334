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
