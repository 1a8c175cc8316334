"""Faults of the storage: a full disk (a size-limited tmpfs holding the context directory), a
database locked by another process, damaged run files.

What users notice: a full disk keeps the table values when only the extracted-data file cannot
be written and says why; a database write that fails leaves the database intact
(``PRAGMA integrity_check``) and the run is completed once space is freed; a locked database
makes the backend wait (said in its log and in the event log) without losing a value; a damaged
run file gives a clear error on that run only.
"""
from __future__ import annotations

import os
import sqlite3
import textwrap
import time

import h5py
import pytest

from backend.store.init import init_context_dir
from backend.store.writer import RunDB
from tests.conftest import returns_within
from tests.faults_helpers import (PROPOSAL, KafkaBackend, can_mount_tmpfs, fill_disk,
                                  hold_write_lock, tmpfs, wait_for)

OFFLINE = textwrap.dedent("""
    [watch]
    enabled = true
    quiet_seconds = 0.3
    poll_seconds = 0.1

    [processing]
    jobs = 1
    store_retry_seconds = 1.0
""")

BIG_CONTEXT = textwrap.dedent("""
    import numpy as np
    from amore.context import Variable

    @Variable(title="Trains")
    def n_trains(run):
        return len(run.train_ids)

    @Variable(title="Big", summary="mean")
    def big(run, r: "meta#run_number"):
        # 24 MB of extracted data for run 3, a few bytes otherwise
        return np.ones(3_000_000 if r == 3 else 3)
""")


def integrity(db_file) -> str:
    con = sqlite3.connect(f"file:{db_file}?mode=ro", uri=True)
    try:
        return con.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        con.close()


def status(db, run):
    r = db.get_run(PROPOSAL, run)
    return r and r["status"]


def test_disk_full(tmp_path, write_run):
    reason = can_mount_tmpfs(tmp_path / "probe")
    if reason:
        pytest.skip(reason)
    with tmpfs(tmp_path / "fs", "40m") as fs:
        ctx = fs / "ctx"
        src = tmp_path / "context.py"
        src.write_text(BIG_CONTEXT)
        init_context_dir(ctx, PROPOSAL, context_file=src)
        (ctx / "amore.toml").write_text(OFFLINE)
        b = KafkaBackend(ctx, "none")
        try:
            db = RunDB(ctx)
            write_run(1, ntrains=5)
            wait_for(lambda: status(db, 1) == "done", 30, what="run 1 done")

            # Only the extracted data does not fit: table values kept, reason given.
            filler1 = fill_disk(fs, leave_bytes=2 << 20)
            write_run(3, ntrains=5)
            wait_for(lambda: status(db, 3) in ("done", "failed"), 30, what="run 3 processed")
            row, values = db.get_run(PROPOSAL, 3), db.get_values(PROPOSAL, 3)
            assert row["status"] == "done", row
            assert "No space left" in row["status_message"], row
            assert values["n_trains"].value == 5
            assert "No space left" in values["big"].attributes["storage_error"]
            assert values["big"].value == 1.0

            # Nothing fits: the database write fails, the database stays intact.
            filler2 = fill_disk(fs)
            write_run(2, ntrains=7)
            wait_for(lambda: "Run 2: could not" in b.log_text()
                     or "database or disk is full" in b.out_text(), 30,
                     what="the failed write of run 2")
            time.sleep(1.5)   # a retry or two while the disk is still full
            assert b.alive()
            assert integrity(ctx / "runs.sqlite") == "ok"
            assert status(db, 2) != "done"
            assert db.get_values(PROPOSAL, 1)["n_trains"].value == 5

            # Space freed: the backend catches up by itself.
            filler2.unlink()
            filler1.unlink()
            wait_for(lambda: status(db, 2) == "done", 30, 0.2, "run 2 done after space freed")
            assert db.get_values(PROPOSAL, 2)["n_trains"].value == 7
            assert integrity(ctx / "runs.sqlite") == "ok"
            # ... and a reprocess completes run 3's extracted data
            import subprocess
            from tests.conftest import amore_cmd
            subprocess.run(amore_cmd("reprocess", "3", "--dir", ctx), check=True,
                           capture_output=True, timeout=120)
            row = db.get_run(PROPOSAL, 3)
            assert row["status"] == "done" and not row["status_message"], row
            assert "storage_error" not in db.get_values(PROPOSAL, 3)["big"].attributes
            with h5py.File(ctx / "extracted_data" / f"p{PROPOSAL}_r3.h5", "r") as f:
                assert f["big/data"].shape == (3_000_000,)
            assert b.stop() == 0
        finally:
            b.cleanup()


def test_locked_database(make_context_dir, write_run):
    """Another process holds a write transaction on runs.sqlite: the backend waits, says so,
    loses nothing; readers are not blocked."""
    from tests.faults_helpers import SIMPLE_CONTEXT
    ctx = make_context_dir(code=SIMPLE_CONTEXT, config=OFFLINE)
    b = KafkaBackend(ctx, "none")
    try:
        db = RunDB(ctx)
        write_run(1, ntrains=5)
        wait_for(lambda: status(db, 1) == "done", 30, what="run 1 done")
        holder = hold_write_lock(ctx / "runs.sqlite", None)     # held until released below
        for r in (2, 3, 4):
            write_run(r, ntrains=r)
        time.sleep(6.5)
        # readers still read while the lock is held (how long a read takes then:
        # benchmarks/waits.py)
        assert returns_within(10, status, db, 1, what="a read while the lock is held") == "done"
        assert "is locked by another process; waiting" in b.log_text()
        # nothing can be written while the lock is held: runs 2-4 are done only after it
        assert [status(db, r) for r in (2, 3, 4)] == [None] * 3, "written while locked"
        holder.stdin.close()
        holder.wait(20)
        wait_for(lambda: all(status(db, r) == "done" for r in (2, 3, 4)), 30, 0.2,
                 "runs 2-4 done after the lock is released")
        for r in (2, 3, 4):
            assert db.get_values(PROPOSAL, r)["n_trains"].value == r
        waits = [e for e in db.events() if e["source"] == "database"]
        assert waits and "another process held a write lock" in waits[0]["message"], waits
        assert waits[0]["details"]["seconds"] >= 2
        assert integrity(ctx / "runs.sqlite") == "ok"
        assert b.stop() == 0
    finally:
        b.cleanup()


DAMAGE_CONTEXT = textwrap.dedent("""
    from amore.context import Variable

    @Variable(title="XGM flux")
    def xgm(run):
        return float(run["SA2_XTD1_XGM/XGM/DOOCS", "pulseEnergy.photonFlux"].ndarray().mean())

    @Variable(title="AGIPD frames")
    def agipd_frames(run):
        return run["MID_DET_AGIPD1M-1/DET/0CH0:xtdf", "image.data"].shape[0]
""")


def test_damaged_run_files(make_context_dir, write_run, proposal_dir, run_processor):
    """Truncated files, a bad superblock, a directory where a file should be (unreadable even
    for root): a clear error naming the file on that run (per variable, or for the run when no
    file can be read); the other runs untouched."""
    ctx = make_context_dir(code=DAMAGE_CONTEXT,
                           config="[processing]\njobs = 1\nrun_timeout = 60\n")
    for r in range(1, 6):
        write_run(r, ntrains=10, agipd_modules=1, proc=False)
    raw = proposal_dir / "raw"

    def agipd_file(r):
        return next((raw / f"r{r:04d}").glob("*AGIPD00*.h5"))

    for f in (raw / "r0002").glob("*.h5"):          # run 2: every file truncated
        os.truncate(f, f.stat().st_size // 2)
    with open(agipd_file(3), "r+b") as fh:          # run 3: bad superblock
        fh.write(b"\0" * 64)
    f4 = agipd_file(4)                               # run 4: not a file
    f4.unlink()
    f4.mkdir()
    db, pool, proc = run_processor(ctx)
    outcomes = {r: proc.process(PROPOSAL, r) for r in range(1, 6)}
    pool.stop()
    for r in (1, 5):                                 # untouched
        v = db.get_values(PROPOSAL, r)
        assert outcomes[r].status == "done" and not outcomes[r].message, outcomes[r]
        assert v["agipd_frames"].value == 40 and v["xgm"].summary_type == "number"
    row = db.get_run(PROPOSAL, 2)                    # nothing readable: the run says why
    assert row["status"] == "failed"
    assert "RAW-R0002-DA01-S00000.h5" in row["status_message"]
    assert "RAW-R0002-AGIPD00-S00000.h5" in row["status_message"]
    for r, why in ((3, "signature"), (4, "not a regular file")):
        row, v = db.get_run(PROPOSAL, r), db.get_values(PROPOSAL, r)
        assert row["status"] == "done" and v["xgm"].summary_type == "number", (r, row)
        err = v["agipd_frames"].attributes["error"]
        assert v["agipd_frames"].summary_type == "error"
        assert agipd_file(r).name in err and why in err, err
