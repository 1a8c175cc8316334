"""Trusting the table: append-only run snapshots, data consistency checks on damaged real runs,
file checksums, catch-up after a killed backend (`listen --once`), the event log, closing a
proposal."""
import json
import os
import signal
import sqlite3
import subprocess
import textwrap
import time

import h5py
import numpy as np
import pytest

from backend.store.trust import DATA_CHECK, FILES_CHECK, TrustStore
from backend.store.writer import RunDB
from backend.testing import mockdata as md

from tests.conftest import PROPOSAL, amore_cmd, wait_for

N_TRAINS = textwrap.dedent("""
    from amore.context import Variable

    @Variable(title="Trains")
    def n_trains(run):
        return len(run.train_ids)
""")


def cli(*args, timeout=120):
    return subprocess.run(amore_cmd(*args), capture_output=True, text=True, timeout=timeout)


def test_snapshots_are_append_only(make_context_dir):
    ctx = make_context_dir(N_TRAINS)
    db = RunDB(ctx)
    trust = TrustStore(db)
    raw = '{"event": "migration_complete", "proposal": 2832, "run": 7, "new_field": [1, 2]}'
    trust.add_snapshot(PROPOSAL, 7, "event", "kafka", raw, location="test.r2d2[0]@41")
    snap = trust.snapshots(PROPOSAL, 7)[0]
    assert snap["message"] == raw and snap["data"]["new_field"] == [1, 2]
    con = sqlite3.connect(db.path)
    for sql in ("UPDATE run_snapshots SET message = '{}'", "DELETE FROM run_snapshots",
                "UPDATE run_snapshots SET run = 8 WHERE run = 7"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            con.execute(sql)
    con.close()
    assert trust.snapshots(PROPOSAL, 7)[0]["message"] == raw


def test_data_check_of_damaged_runs(make_context_dir, write_run, proposal_dir):
    ctx = make_context_dir(N_TRAINS)
    good = write_run(1, ntrains=40)
    bad = write_run(2, ntrains=60, trains_per_seq=30, agipd_modules=2, proc=False)
    raw = bad["raw_dir"]
    ft = bad["first_train"]
    md.drop_trains(raw / "RAW-R0002-DA01-S00000.h5", md.MOTOR_SRC, range(ft + 3, ft + 8))
    dup = md.duplicate_train(raw / "RAW-R0002-AGIPD01-S00001.h5", 4)
    md.truncate_file(raw / "RAW-R0002-AGIPD00-S00001.h5")

    out = cli("check", "1", "2", "-d", ctx)
    assert out.returncode == 1, out.stderr
    lines = out.stdout
    assert "run 1: OK" in lines
    assert "run 2: 1 file unreadable, 3 sources incomplete" in lines
    assert f"{md.MOTOR_SRC}: 55/60; 5 of 60 missing (first gaps {ft + 3}-{ft + 7})" in lines
    assert "RAW-R0002-AGIPD00-S00001.h5" in lines and "truncated" in lines
    assert "AGIPD1M-1/DET/1CH0:xtdf: 59/60" in lines and "1 duplicated" in lines
    assert f"first gaps {dup + 1})" in lines
    assert "AGIPD1M-1/DET/0CH0:xtdf: 30/60" in lines

    # stored as the "Data check" cell, with the details for the tooltip
    cell = RunDB(ctx).get_values(PROPOSAL, 2)[DATA_CHECK]
    assert cell.value == "1 file unreadable, 3 sources incomplete"
    assert "5 of 60 missing" in cell.attributes["tooltip"] and not cell.attributes["ok"]
    assert RunDB(ctx).get_values(PROPOSAL, 1)[DATA_CHECK].value == "OK"
    assert any(e["run"] == 2 and e["level"] == "warning" for e in RunDB(ctx).events())

    # sources that record less often are configured, not reported
    (ctx / "amore.toml").write_text('[check]\nskip = ["*AGIPD*"]\n'
                                    'expected_fraction = {"*MOTOR*" = 0.9}\n')
    out = cli("check", "2", "-d", ctx, "--json")
    rep = json.loads(out.stdout)["2"]
    assert rep["sources"][md.MOTOR_SRC]["ok"] and rep["sources"][md.MOTOR_SRC]["missing"] == 5
    assert not rep["incomplete"] and rep["files"]["unreadable"]  # the broken file still counts
    assert out.returncode == 1
    (ctx / "amore.toml").write_text('[check]\nexpected_fraction = {"*MOTOR*" = 2}\n')
    out = cli("check", "2", "-d", ctx)
    assert out.returncode == 2 and "within 0..1" in out.stderr


def test_train_ids_out_of_order_and_outside_the_run(write_run):
    from backend.facilities.euxfel.check import check_euxfel_run
    info = write_run(3, ntrains=20, agipd_modules=1, proc=False)
    f = info["raw_dir"] / "RAW-R0003-AGIPD00-S00000.h5"
    with h5py.File(f, "r+") as h:
        tid = h["INDEX/trainId"]
        t = tid[:]
        t[2], t[3] = t[3], t[2]          # two trains swapped
        t[19] = info["last_train"] + 50  # one train after the run
        tid[:] = t
    rep = check_euxfel_run(info["raw_dir"])
    st = rep["sources"][md.agipd_source(0)]
    assert st["non_monotonic"] == 1 and st["outside"] == 1 and st["missing"] == 1
    assert rep["incomplete"] == [md.agipd_source(0)]


def _write_swissfel(path, channels, legacy=False):
    with h5py.File(path, "w") as f:
        for name, pids in channels.items():
            g = f.create_group(f"data/{name}" if legacy else name)
            g["pulse_id"] = np.asarray(pids, np.int64)
            g["data"] = np.zeros(len(pids))
            if legacy:
                g["is_data_present"] = np.ones(len(pids), bool)


def test_swissfel_pulse_id_check(tmp_path):
    from backend.facilities.swissfel.check import (check_swissfel_acquisition,
                                                   swissfel_expected_pulse_ids)
    request = {"start_pulseid": 1001, "stop_pulseid": 1040, "rate_multiplicator": 2,
               "channels_list": ["SAR-CVME-TIFALL5:EvtSet", "SARES11-SPEC125-M1.roi", "GONE"]}
    exp = swissfel_expected_pulse_ids(1001, 1040, 2)
    assert exp[0] == 1002 and exp[-1] == 1040 and len(exp) == 20
    every = np.arange(1001, 1041)                     # a 100 Hz source: off-rate ids ignored
    spec = np.setdiff1d(exp, [1010, 1012, 1030])       # three pulses lost
    _write_swissfel(tmp_path / "acq0001.BSDATA.h5", {"SAR-CVME-TIFALL5:EvtSet": every,
                                                     "SARES11-SPEC125-M1.roi": spec})
    _write_swissfel(tmp_path / "acq0001.LEGACY.h5", {"SLAAR-LSCP1:CH1": exp}, legacy=True)
    rep = check_swissfel_acquisition(request, sorted(tmp_path.glob("*.h5")))
    assert rep["sources"]["SAR-CVME-TIFALL5:EvtSet"]["ok"]
    assert rep["sources"]["SLAAR-LSCP1:CH1"]["ok"]
    roi = rep["sources"]["SARES11-SPEC125-M1.roi"]
    assert (roi["with_data"], roi["missing"], roi["gaps"]) == (17, 3, [[1010, 1012], [1030, 1030]])
    assert rep["sources"]["GONE"]["with_data"] == 0
    assert rep["summary"] == "2 sources incomplete"


def test_swissfel_run_directory(tmp_path):
    """The current SwissFEL layout: meta/acq<NNNN>.json requests, data/acq<NNNN>.*.h5 files."""
    from backend.facilities.swissfel.check import check_swissfel_run
    run = tmp_path / "run0001-test"
    (run / "meta").mkdir(parents=True)
    (run / "data").mkdir()
    for n, lost in ((10, []), (11, [18940427000])):
        req = {"pgroup": "p21528", "rate_multiplicator": 1, "run_number": 1,
               "start_pulseid": 18940426916, "stop_pulseid": 18940427116,
               "channels_list": ["SAROP31-PBPS149:YPOS"], "pv_list": ["SARFE10-OAPU044:MOTOR_X"],
               "acquisition_number": n}
        (run / "meta" / f"acq{n:04d}.json").write_text(json.dumps(req))
        pids = np.setdiff1d(np.arange(18940426916, 18940427117), lost)
        _write_swissfel(run / "data" / f"acq{n:04d}.BSDATA.h5", {"SAROP31-PBPS149:YPOS": pids})
        _write_swissfel(run / "data" / f"acq{n:04d}.PVDATA.h5", {"SARFE10-OAPU044:MOTOR_X": [1]})
    rep = check_swissfel_run(run)
    assert rep["incomplete"] == ["acq0011:SAROP31-PBPS149:YPOS"]
    assert rep["sources"]["acq0011:SAROP31-PBPS149:YPOS"]["gaps"] == [[18940427000, 18940427000]]
    assert rep["summary"] == "1 source incomplete" and rep["files"]["checked"] == 2


def test_checksums_after_processing_and_verify_finds_a_changed_file(make_context_dir, write_run):
    ctx = make_context_dir(N_TRAINS)
    info = write_run(1, ntrains=30, agipd_modules=1)
    out = cli("listen", "--once", ctx)
    assert out.returncode == 0, out.stdout + out.stderr
    db = RunDB(ctx)
    vals = db.get_values(PROPOSAL, 1)
    assert vals["n_trains"].value == 30
    assert vals[FILES_CHECK].value == f"OK ({len(info['files'])} files)"
    sums = TrustStore(db).checksums(PROPOSAL, 1)
    f = info["raw_dir"] / "RAW-R0001-DA01-S00000.h5"
    out = subprocess.run(["b2sum", str(f)], capture_output=True, text=True)
    assert sums[str(f)].digest == out.stdout.split()[0]   # the same as b2sum's

    assert cli("verify", "all", "-d", ctx).returncode == 0
    with h5py.File(f, "r+") as h:                          # someone edits a raw file
        h[f"CONTROL/{md.MOTOR_SRC}/actualPosition/value"][0] = 99.0
    (info["raw_dir"] / "notes.txt").write_text("added later")
    out = cli("verify", "1", "-d", ctx)
    assert out.returncode == 1
    assert "run 1: 1 changed, 1 new" in out.stdout and f"changed: {f}" in out.stdout
    cell = RunDB(ctx).get_values(PROPOSAL, 1)[FILES_CHECK]
    assert cell.value == "1 changed, 1 new" and cell.attributes["background"]
    assert "changed: RAW-R0001-DA01-S00000.h5" in cell.attributes["tooltip"]
    v = TrustStore(RunDB(ctx)).verification(PROPOSAL, 1)
    assert v["changed"] == 1 and time.time() - v["verified_at"] < 60
    ev = cli("events", "-d", ctx, "--level", "error")
    assert "files changed after their checksum was taken" in ev.stdout
    out = cli("verify", "1", "-d", ctx, "--algorithm", "sha256")
    assert out.returncode == 0 and "OK" in out.stdout       # first sha256 pass: the reference


def test_killed_backend_then_listen_once_catches_up(make_context_dir, write_run):
    ctx = make_context_dir(textwrap.dedent("""
        import os, time
        from amore.context import Variable

        @Variable
        def slow(run, n: "meta#run_number"):
            while os.path.exists("hang"):
                time.sleep(0.05)
            return n * 10
    """), config="[watch]\nquiet_seconds = 0.3\npoll_seconds = 0.1\n")
    (ctx / "hang").write_text("")
    write_run(1, ntrains=20)
    proc = subprocess.Popen(amore_cmd("listen", ctx), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: (RunDB(ctx).get_run(PROPOSAL, 1) or {}).get("status") == "processing",
                 60, what="run 1 processing")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)        # the backend and its workers die
        proc.wait()
    (ctx / "hang").unlink()
    write_run(2, ntrains=20)                        # arrives while no backend runs
    db = RunDB(ctx)
    db.set_run_status(PROPOSAL, 3, "failed", "context worker process was killed by SIGKILL")
    write_run(3, ntrains=20)
    assert db.get_run(PROPOSAL, 2) is None

    out = cli("listen", "--once", ctx)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 new on disk, 1 unfinished, 1 worker died" in out.stderr
    db = RunDB(ctx)
    for r in (1, 2, 3):
        assert db.get_run(PROPOSAL, r)["status"] == "done"
        vals = db.get_values(PROPOSAL, r)
        assert vals["slow"].value == 10 * r
        assert vals[DATA_CHECK].value == "OK" and vals[FILES_CHECK].value.startswith("OK"), \
            (r, vals[DATA_CHECK], vals[FILES_CHECK])
    snaps = TrustStore(db).snapshots(PROPOSAL, 2)
    assert [s["source"] for s in snaps if s["kind"] == "event"] == ["catch-up"]
    meta = [s["data"] for s in snaps if s["kind"] == "metadata"][0]
    assert meta["runNumber"] == 2 and meta["proposalNumber"] == PROPOSAL

    # a second catch-up finds nothing to do and changes nothing (how long it takes, against
    # the first: benchmarks/waits.py)
    n_events = len(db.events())
    n_snaps = len(TrustStore(db).snapshots(PROPOSAL, 2))
    stamp = db.get_values(PROPOSAL, 1)
    out = cli("listen", "--once", ctx)
    assert out.returncode == 0 and "Nothing to do" in out.stderr, out.stdout + out.stderr
    assert len(db.events()) == n_events, db.events()[n_events:]
    snaps = TrustStore(db).snapshots(PROPOSAL, 2)
    assert len(snaps) == n_snaps, snaps
    assert db.get_values(PROPOSAL, 1) == stamp

    info = cli("run-info", "2", "-d", ctx)
    assert info.returncode == 0 and "catch-up" in info.stdout and "runNumber: 2" in info.stdout, \
        info.stdout + info.stderr
    assert "Data check: OK" in info.stdout


def test_closed_proposal_changes_no_values(make_context_dir, write_run):
    ctx = make_context_dir(N_TRAINS)
    write_run(1, ntrains=20)
    assert cli("listen", "--once", ctx).returncode == 0
    out = cli("close", "-d", ctx)
    assert out.returncode == 0 and "read-only" in out.stdout
    write_run(2, ntrains=20)
    out = cli("reprocess", "all", "-d", ctx)
    assert out.returncode == 1 and "closed" in out.stderr and "amore-proto reopen" in out.stderr
    out = cli("listen", "--once", ctx)
    assert out.returncode == 0
    assert RunDB(ctx).get_run(PROPOSAL, 2) is None
    assert cli("reopen", "-d", ctx).returncode == 0
    assert cli("listen", "--once", ctx).returncode == 0
    assert RunDB(ctx).get_values(PROPOSAL, 2)["n_trains"].value == 20
    msgs = [e["message"] for e in RunDB(ctx).events()]
    assert any("closed" in m for m in msgs) and any("reopened" in m for m in msgs)


def test_malformed_messages_and_snapshots_from_kafka(make_context_dir, write_run, kafka_broker,
                                                     monkeypatch):
    from backend.config import load_config
    from tests.kafka_broker import create_topics, produce

    monkeypatch.setenv("AMORE_BROKER", kafka_broker)
    ctx = make_context_dir(N_TRAINS, name="kctx")
    config = load_config(ctx)
    create_topics(kafka_broker, config["kafka"]["event_topics"]
                  + [config.update_topic(RunDB(ctx).db_id)])
    proc = subprocess.Popen(amore_cmd("listen", ctx), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: (ctx / "amore.log").exists() and " Ready" in (ctx / "amore.log").read_text(),
                 60, what="backend ready")
        write_run(1, ntrains=20)
        topic = config["kafka"]["event_topics"][0]
        produce(kafka_broker, topic, b"not json at all")
        msg = {"event": "migration_complete", "proposal": PROPOSAL, "run": 1,
               "path": "/gpfs/x/r0001", "extra": {"beamtime": True}}
        produce(kafka_broker, topic, json.dumps(msg).encode())
        wait_for(lambda: (RunDB(ctx).get_run(PROPOSAL, 1) or {}).get("status") == "done", 30,
                 what="run 1 processed")
        wait_for(lambda: DATA_CHECK in RunDB(ctx).get_values(PROPOSAL, 1), 30, what="check")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    out = cli("events", "-d", ctx, "--level", "warning", "--details")
    assert f"Malformed message on {topic} [0] at offset" in out.stdout
    assert "not JSON" in out.stdout and "not json at all" in out.stdout
    snaps = TrustStore(RunDB(ctx)).snapshots(PROPOSAL, 1, "event")
    assert snaps[0]["data"] == msg and snaps[0]["location"].startswith(f"{topic}[0]@")
    info = json.loads(cli("run-info", "1", "-d", ctx, "--json").stdout)
    assert info["announcements"][0]["data"]["extra"] == {"beamtime": True}


def test_a_sources_own_metadata_is_kept_as_the_run_snapshot(make_context_dir):
    """Other facilities' sources hand over the run's metadata with the event."""
    from backend.processing.runpath import snapshot_event
    from backend.sources.base import RunEvent
    ctx = make_context_dir(N_TRAINS)
    db = RunDB(ctx)
    request = {"pgroup": "p21528", "start_pulseid": 1, "stop_pulseid": 9, "rate_multiplicator": 2}
    snapshot_event(db, RunEvent(PROPOSAL, 5, source="swissfel", event="acquisition",
                                location="/sf/x/raw/run0005/meta/acq0001.json",
                                message=json.dumps(request), metadata=request))
    snaps = TrustStore(db).snapshots(PROPOSAL, 5)
    assert [(s["kind"], s["data"]) for s in snaps] == [("event", request), ("metadata", request)]
    out = cli("run-info", "5", "-d", ctx)
    assert out.returncode == 0 and "pgroup: p21528" in out.stdout and "swissfel" in out.stdout


def test_lost_and_restored_broker_in_the_event_log(make_context_dir, monkeypatch, tmp_path):
    """A broker of its own, stopped and started again on the same address."""
    from tests.kafka_broker import TansuBroker, _answers, create_topics, tansu_binary

    binary = tansu_binary()
    assert binary, "no tansu binary"
    broker = TansuBroker(binary, tmp_path / "tansu.log")
    address = broker.start()

    def restart():
        url = f"tcp://{address}"
        broker.proc = subprocess.Popen(
            [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: _answers(address, 0.5), 30, what="broker back")

    monkeypatch.setenv("AMORE_BROKER", address)
    ctx = make_context_dir(N_TRAINS, name="bctx")
    from backend.config import load_config
    config = load_config(ctx)
    create_topics(address, config["kafka"]["event_topics"])
    proc = subprocess.Popen(amore_cmd("listen", ctx), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: (ctx / "amore.log").exists() and " Ready" in (ctx / "amore.log").read_text(),
                 60, what="backend ready")
        broker.stop()

        def messages():
            return [e["message"] for e in RunDB(ctx).events()]
        wait_for(lambda: any("Lost the connection to Kafka broker" in m for m in messages()), 60,
                 what="disconnection in the event log")
        restart()
        wait_for(lambda: any("is reachable again" in m for m in messages()), 60,
                 what="reconnection in the event log")
        assert sum("Lost the connection" in m for m in messages()) == 1
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        broker.stop()


def test_checks_and_checksums_run_at_low_priority_after_processing(make_context_dir, write_run,
                                                                   proposal_dir):
    """The background thread is nice 19 and waits while a run is being processed."""
    from backend.config import load_config
    from backend.service.integrity import IntegrityWorker
    ctx = make_context_dir(N_TRAINS)
    write_run(1, ntrains=20)
    db = RunDB(ctx)
    db.set_run_status(PROPOSAL, 1, "done")
    busy = {"now": True}
    w = IntegrityWorker(db, load_config(ctx), proposal_dir, busy=lambda: busy["now"],
                        max_defer=30)
    try:
        wait_for(lambda: w._thread.native_id is not None
                 and os.getpriority(os.PRIO_PROCESS, w._thread.native_id) == 19,
                 10, what="nice 19")
        w.submit(PROPOSAL, 1)
        wait_for(lambda: DATA_CHECK in db.get_values(PROPOSAL, 1), 30, what="data check")
        time.sleep(0.5)                    # checksums wait while a run is being processed
        assert FILES_CHECK not in db.get_values(PROPOSAL, 1)
        busy["now"] = False
        assert w.wait_idle(30)
        assert db.get_values(PROPOSAL, 1)[FILES_CHECK].value.startswith("OK")
    finally:
        w.stop()
