"""Runs from ESS, ESRF and SwissFEL through the one code path: the run appears, its metadata
columns and context variables are stored, a restart neither loses nor duplicates runs, malformed
input is reported and skipped. Real formats: ESS messages from ess-streaming-data-types'
serialisers on the real tansu broker, NeXus files laid out as the ESS file writer does, ESRF
metadata.json files with the keys MXCuBE writes, SwissFEL request JSONs in both layouts."""
import json
import sqlite3
import time
from pathlib import Path

import pytest

from backend.store.writer import RunDB
from backend.facilities.ess import demo as ess_demo
from backend.facilities.esrf import demo as esrf_demo
from backend.facilities.swissfel import demo as swissfel_demo
from tests.conftest import wait_for


def _status(ctx, proposal, run):
    r = RunDB(ctx).get_run(proposal, run)
    return r and r["status"]


def _init(tmp_path, name, facility, proposal, toml, template=None, files=None):
    from backend.store.init import init_context_dir
    d = tmp_path / name
    init_context_dir(d, proposal, template=template, facility=facility)
    (d / "amore.toml").write_text(toml)
    for fname, text in (files or {}).items():
        (d / fname).write_text(text)
    return d


# ---------------------------------------------------------------------------------------------
# proposals as identifiers, the 0004 migration

def test_database_at_0003_is_upgraded_and_identifiers_work(tmp_path):
    from alembic import command
    from alembic.config import Config as AlembicConfig

    import backend.store.writer as w
    path = tmp_path / "old" / "runs.sqlite"
    path.parent.mkdir()
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(Path(w.__file__).parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", f"sqlite:///{path}")
    command.upgrade(cfg, "0003")
    con = sqlite3.connect(path)
    con.execute("INSERT INTO metadata VALUES ('proposal', '002832'), ('db_id', 'abc')")
    con.execute("INSERT INTO runs(proposal, run, status) VALUES (2832, 7, 'done')")
    con.commit()
    con.close()
    db = RunDB(path.parent)           # migrates to 0004
    assert db.proposal == 2832 and isinstance(db.proposal, int)
    assert [(r["proposal"], r["run"]) for r in db.runs()] == [(2832, 7)]
    assert db.register_source_run("esrf", "/a/metadata.json", 2832, {"x": 1}) == (8, True, True)

    esrf = RunDB.create(tmp_path / "esrf", "mx2532")
    assert esrf.proposal == "mx2532"
    keys = [f"/data/visitor/mx2532/id29/s/{i}/metadata.json" for i in range(3)]
    assert [esrf.register_source_run("esrf", k, "mx2532", {"i": i})[0]
            for i, k in enumerate(keys)] == [1, 2, 3]
    # the same file is the same run; a changed file is the same run, changed
    assert esrf.register_source_run("esrf", keys[1], "mx2532", {"i": 1}) == (2, False, False)
    assert esrf.register_source_run("esrf", keys[1], "mx2532", {"i": 9}) == (2, False, True)
    assert [r["proposal"] for r in esrf.runs()] == ["mx2532"] * 3
    # ESS: a start message delivered again after the run finished does not revive it
    ess = RunDB.create(tmp_path / "ess", 999999)
    assert ess.register_source_run("ess", "job", 999999, {"a": 1}, "running", 5) == (5, True, True)
    assert ess.get_run(999999, 5)["status"] == "running"
    assert ess.register_source_run("ess", "job", 999999, {"b": 2}, "ready", 5) == (5, False, True)
    assert ess.register_source_run("ess", "job", 999999, {"a": 1}, "running", 5) == (5, False, False)
    assert ess.source_run(999999, 5)["state"] == "ready"
    assert esrf.source_run("mx2532", 2)["info"] == {"i": 9}
    with pytest.raises(Exception, match="belongs to proposal mx2532"):
        RunDB.create(tmp_path / "esrf", "mx9999")


# ---------------------------------------------------------------------------------------------
# metadata columns

def test_metadata_columns_typed_with_units_and_error_cells(tmp_path):
    from backend.ctxrunner.facilities import column_specs, compute_columns
    attributi = [
        {"beamline-name": "MX_exposureTime", "attributo-name": "exposure", "attributo-type": "number"},
        {"beamline-name": "MX_numberOfImages", "attributo-name": "images", "attributo-type": "integer"},
        {"beamline-name": "Sample_name", "attributo-name": "sample", "attributo-type": "string"},
        {"beamline-name": "MX_flux", "attributo-name": "flux", "attributo-type": "number",
         "attributo-unit": "ph/s"},
        {"beamline-name": "MX_positionName", "attributo-name": "position", "attributo-type": "string"},
        {"beamline-name": "MX_missing", "attributo-name": "missing", "attributo-type": "number"},
    ]
    specs = column_specs({"temperature": {"hdf5": "/entry/instrument/cryostat/temperature",
                                          "type": "number", "reduce": "mean"},
                          "tmax": {"hdf5": "/entry/instrument/cryostat/temperature/value",
                                   "type": "number", "reduce": "max", "units": "degK"},
                          "title": {"hdf5": "/entry/title", "type": "string"},
                          "temp_plain": {"hdf5": "/entry/instrument/cryostat/temperature",
                                         "type": "number"}}, attributi)
    md = {"MX_exposureTime": 0.01, "MX_numberOfImages": "900", "Sample_name": "lysozyme",
          "MX_flux": 2.8e10, "MX_positionName": None}
    import h5py
    p = ess_demo.write_ess_nexus(tmp_path / "f.hdf", proposal=1, counter=2, job_id="j",
                           temperatures=[290, 292, 294])
    with h5py.File(p, "r") as f:
        out = compute_columns(specs, md, f, "metadata.json")
    assert out["exposure"].value == 0.01 and out["exposure"].attributes["units"] == "s"
    err = out["images"]
    assert err.summary_type == "error"
    assert err.attributes["error"] == "MX_numberOfImages: expected integer, found '900' (str)"
    assert out["sample"].value == "lysozyme"
    assert out["flux"].attributes["units"] == "ph/s"
    assert out["position"].summary_type == "none"
    assert out["missing"].summary_type == "skipped"
    assert "MX_missing not in metadata.json" in out["missing"].attributes["reason"]
    assert out["temperature"].value == 292.0 and out["temperature"].attributes["units"] == "K"
    assert out["tmax"].value == 294.0 and out["tmax"].attributes["units"] == "degK"
    assert out["title"].value == "alignment scan"
    assert out["temp_plain"].summary_type == "error"
    assert "give reduce" in out["temp_plain"].attributes["error"]
    with pytest.raises(ValueError, match="type 'float' is not one of"):
        column_specs({"x": {"key": "a", "type": "float"}})


# ---------------------------------------------------------------------------------------------
# ESS

def test_ess_parser_uses_streaming_data_types():
    from backend.sources.base import MalformedEvent
    from backend.facilities.ess.source import EssMessageParser
    from streaming_data_types.logdata_f144 import serialise_f144
    p = EssMessageParser(r"_(\d+)\.(?:hdf|nxs|h5)$", file_root="/ess/raw/coda/999999/raw")
    name = "coda_estia_999999_00013947.hdf"
    ev = p.parse(ess_demo.ess_run_start(job_id="J1", filename=name, proposal=None, start=1730106401.186),
                 "kafka:t[0]@0", 1.0)
    assert (ev.proposal, ev.run, ev.state, ev.key) == (999999, 13947, "running", "J1")
    assert ev.info["file"] == "/ess/raw/coda/999999/raw/" + name
    assert ev.info["start_time"] == pytest.approx(1730106401.186)
    # the stop is recorded with its run (kept across a restart before wrdn)
    ev = p.parse(ess_demo.ess_run_stop(job_id="J1", stop=1730106461.0))
    assert (ev.proposal, ev.run, ev.state, ev.key, ev.event) == (999999, 13947, "running", "J1", "6s4t")
    assert ev.info == {"job_id": "J1", "stop_time": 1730106461.0}
    assert p.parse(ess_demo.ess_run_stop(job_id="unseen", stop=1.0)) is None  # its pl72 not seen
    ev = p.parse(ess_demo.ess_finished_writing(job_id="J1", file_name=name))
    assert (ev.run, ev.state, ev.info["stop_time"]) == (13947, "ready", 1730106461.0)
    ev = p.parse(ess_demo.ess_finished_writing(job_id="J2", file_name="ymir_1234_00000005.hdf",
                                         error="disk full"))
    assert (ev.proposal, ev.run, ev.state) == (1234, 5, "failed") and "disk full" in ev.error
    # no number in the file name: the run name gives it; neither: reported
    ev = p.parse(ess_demo.ess_run_start(job_id="J3", filename="ymir/latest.nxs", proposal=999999,
                                  start=1.0, run_name="42"))
    assert (ev.proposal, ev.run) == (999999, 42)
    with pytest.raises(MalformedEvent, match="no run number in file name 'latest.nxs'"):
        p.parse(ess_demo.ess_run_start(job_id="J4", filename="latest.nxs", proposal=999999, start=1.0,
                                 run_name="tuesday"))
    with pytest.raises(MalformedEvent, match="unknown message schema 'f144'"):
        p.parse(serialise_f144("temp", 1.0, 0))
    with pytest.raises(MalformedEvent):
        p.parse(b"\x00" * 4 + b"pl72" + b"\xff" * 8)


ESS_CONTEXT = '''
from amore.context import Variable, Skip

@Variable(title="Title")
def title(run):
    v = run["/entry/title"][()]
    return v.decode() if isinstance(v, bytes) else str(v)

@Variable(title="Run name")
def run_name(run, name: "meta#run_name", md: "meta#metadata", job: "meta#job_id"):
    return f"{name} {md['proposal']} {job}"

@Variable(title="Duration", units="s")
def duration(run, start: "meta#start_time", stop: "meta#stop_time"):
    return round(stop - start, 3)
'''


def test_ess_file_writer_runs_through_the_real_broker(tmp_path, backend, kafka_broker,  # noqa: F811
                                                      monkeypatch):
    from tests.kafka_broker import create_topics, produce
    monkeypatch.setenv("AMORE_BROKER", kafka_broker)
    proposal = 999999
    topic = f"estia_filewriter_{int(time.time() * 1000)}"
    raw = tmp_path / "ess" / "raw" / "coda" / str(proposal) / "raw"
    toml = (f'facility = "ess"\n[ess]\ntopics = ["{topic}"]\nfile_root = "{raw}"\n'
            f'open_retry_seconds = 0.2\n'
            f'[columns.temperature]\nhdf5 = "/entry/instrument/cryostat/temperature"\n'
            f'type = "number"\nreduce = "mean"\n'
            f'[columns.sample]\nhdf5 = "/entry/sample/name"\ntype = "string"\n')
    ctx = _init(tmp_path, "ctx", "ess", proposal, toml, files={"context.py": ESS_CONTEXT})
    create_topics(kafka_broker, [topic])
    b = backend(ctx)
    start = time.time() - 60
    name = ess_demo.ess_file_name("coda_estia", proposal, 13947)
    # another proposal's run and garbage: skipped
    produce(kafka_broker, topic, ess_demo.ess_run_start(job_id="other", filename=ess_demo.ess_file_name(
        "coda_estia", 123, 1), proposal=123, start=start))
    _, bad_offset = produce(kafka_broker, topic, b"\x10\x00\x00\x00pl72 this is no flatbuffer")
    produce(kafka_broker, topic, ess_demo.ess_run_start(job_id="job-1", filename=name,
                                                  proposal=proposal, start=start,
                                                  run_name="first run"))
    wait_for(lambda: _status(ctx, proposal, 13947) == "running", 20, what="run running at pl72")
    assert RunDB(ctx).get_run(proposal, 13947)["start_time"] == pytest.approx(start, abs=0.01)
    ess_demo.write_ess_nexus(raw / name, proposal=proposal, counter=13947, job_id="job-1",
                       title="Ni reflectivity", sample="Ni film", temperatures=[290, 300])
    produce(kafka_broker, topic, ess_demo.ess_run_stop(job_id="job-1", stop=start + 42))
    produce(kafka_broker, topic, ess_demo.ess_finished_writing(job_id="job-1", file_name=name))
    wait_for(lambda: _status(ctx, proposal, 13947) == "done", 30, what="run computed at wrdn")
    vals = RunDB(ctx).get_values(proposal, 13947)
    assert vals["title"].value == "Ni reflectivity"
    assert vals["run_name"].value == "first run 999999 job-1"
    assert vals["duration"].value == pytest.approx(42.0)
    assert vals["temperature"].value == 295.0 and vals["temperature"].attributes["units"] == "K"
    assert vals["sample"].value == "Ni film"
    # the writer failed on the next one; then a good one follows
    name2, name3 = (ess_demo.ess_file_name("coda_estia", proposal, n) for n in (13948, 13949))
    produce(kafka_broker, topic, ess_demo.ess_run_start(job_id="job-2", filename=name2,
                                                  proposal=proposal, start=start))
    produce(kafka_broker, topic, ess_demo.ess_finished_writing(job_id="job-2", file_name=name2,
                                                         error="Kafka stream timed out"))
    wait_for(lambda: _status(ctx, proposal, 13948) == "failed", 20, what="failed run")
    assert "Kafka stream timed out" in RunDB(ctx).get_run(proposal, 13948)["status_message"]
    ess_demo.write_ess_nexus(raw / name3, proposal=proposal, counter=13949, job_id="job-3")
    produce(kafka_broker, topic, ess_demo.ess_run_start(job_id="job-3", filename=name3,
                                                  proposal=proposal, start=start))
    produce(kafka_broker, topic, ess_demo.ess_finished_writing(job_id="job-3", file_name=name3))
    wait_for(lambda: _status(ctx, proposal, 13949) == "done", 30, what="a later good run")
    events = RunDB(ctx).events(level="warning")
    # (other "ess" entries, such as the failed run's error, carry no offset)
    assert any(e["source"] == "ess" and (e["details"] or {}).get("offset") == bad_offset
               and "malformed" in e["message"].lower() for e in events), events
    assert b.stop() == 0
    # a run written while the backend is down is not lost; after the restart the same
    # wrdn again (a redelivery) changes nothing, and no run is added twice
    done_at = RunDB(ctx).get_values(proposal, 13947)["title"]
    name4 = ess_demo.ess_file_name("coda_estia", proposal, 13950)
    ess_demo.write_ess_nexus(raw / name4, proposal=proposal, counter=13950, job_id="job-4")
    produce(kafka_broker, topic, ess_demo.ess_run_start(job_id="job-4", filename=name4,
                                                  proposal=proposal, start=start))
    produce(kafka_broker, topic, ess_demo.ess_finished_writing(job_id="job-4", file_name=name4))
    b = backend(ctx)
    wait_for(lambda: _status(ctx, proposal, 13950) == "done", 30, what="run sent while down")
    # the backend restarted between a run's stop (6s4t) and its file being closed (wrdn): the
    # stop time recorded with the run still gives its duration
    name5 = ess_demo.ess_file_name("coda_estia", proposal, 13951)
    ess_demo.write_ess_nexus(raw / name5, proposal=proposal, counter=13951, job_id="job-5")
    produce(kafka_broker, topic, ess_demo.ess_run_start(job_id="job-5", filename=name5,
                                                  proposal=proposal, start=start))
    produce(kafka_broker, topic, ess_demo.ess_run_stop(job_id="job-5", stop=start + 7))
    wait_for(lambda: "Run 13951: running (6s4t" in b.log.read_text(), 20, what="stop recorded")
    assert b.stop() == 0
    produce(kafka_broker, topic, ess_demo.ess_finished_writing(job_id="job-5", file_name=name5))
    b = backend(ctx)
    wait_for(lambda: _status(ctx, proposal, 13951) == "done", 30, what="run closed while down")
    assert RunDB(ctx).get_values(proposal, 13951)["duration"].value == pytest.approx(7.0)
    produce(kafka_broker, topic, ess_demo.ess_finished_writing(job_id="job-1", file_name=name))
    time.sleep(1.5)
    db = RunDB(ctx)
    assert db.run_numbers() == [13947, 13948, 13949, 13950, 13951]
    assert db.get_values(proposal, 13947)["title"] == done_at
    assert [r["status"] for r in db.runs()] == ["done", "failed", "done", "done", "done"]
    assert b.stop() == 0


# ---------------------------------------------------------------------------------------------
# ESRF

ATTRIBUTI = json.dumps([
    {"beamline-name": "MX_exposureTime", "attributo-name": "MX_exposureTime", "attributo-type": "number"},
    {"beamline-name": "MX_numberOfImages", "attributo-name": "MX_numberOfImages", "attributo-type": "integer"},
    {"beamline-name": "MX_directory", "attributo-name": "MX_directory", "attributo-type": "string"},
    {"beamline-name": "MX_transmission", "attributo-name": "MX_transmission", "attributo-type": "number"},
])

ESRF_CONTEXT = '''
from amore.context import Variable

@Variable(title="Files")
def n_files(run):
    return len(run.files)

@Variable(title="Where")
def where(run, tag: "meta#tag", sample: "meta#sample"):
    assert run.data_dir.is_dir(), run.data_dir
    return f"{sample}/{tag}"
'''


def test_esrf_metadata_json_runs(tmp_path, backend):  # noqa: F811
    proposal = "mx2532"
    beamline_root = f"/data/visitor/{proposal}/id29/20240201"
    session = tmp_path / "mnt" / "esrf" / proposal / "id29" / "20240201"   # the same, elsewhere
    session.mkdir(parents=True)
    toml = (f'facility = "esrf"\n[esrf]\nroot = "{session}"\n'
            f'attributo_config = "attributo-config.json"\npath_prefix = "{beamline_root}"\n'
            f'path_prefix_replacement = "{session}"\nrescan_seconds = 1.0\nquiet_seconds = 0.2\n')
    ctx = _init(tmp_path, "ctx", "esrf", proposal, toml,
                files={"attributo-config.json": ATTRIBUTI, "context.py": ESRF_CONTEXT})
    now = time.time()

    def collect(sample, coll, **kw):
        reported = f"{beamline_root}/RAW_DATA/{sample}/{coll}"
        return esrf_demo.write_esrf_collection(session, sample, coll, reported_dir=reported, **kw)
    # written in the "wrong" order: the earlier collection must become run 1
    collect("lyso", "run_02_MXPressE/run_02_01_datacollection", start=now - 100, n_files=3)
    collect("lyso", "run_01_MXPressE/run_01_01_datacollection", start=now - 300, n_files=2)
    b = backend(ctx)
    wait_for(lambda: _status(ctx, proposal, 2) == "done", 30, what="runs 1 and 2")
    wait_for(lambda: _status(ctx, proposal, 1) == "done", 30, what="run 1")
    db = RunDB(ctx)
    v1, v2 = db.get_values(proposal, 1), db.get_values(proposal, 2)
    assert v1["where"].value == "lyso/run_01_MXPressE" and v1["n_files"].value == 2
    assert v2["n_files"].value == 3
    assert v1["MX_exposureTime"].value == 0.01 and v1["MX_exposureTime"].attributes["units"] == "s"
    assert v1["MX_numberOfImages"].value == 900
    assert v1["MX_directory"].value.startswith(beamline_root)   # as the beamline wrote it
    assert db.get_run(proposal, 1)["start_time"] == pytest.approx(now - 300, abs=0.01)
    assert {v.name for v in db.get_variables()} >= {"MX_exposureTime", "n_files", "where"}
    # malformed: not JSON; wrong type: an error cell naming the key; SSX without dates
    bad = session / "RAW_DATA" / "lyso" / "broken" / "metadata.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{ not json")
    collect("thaum", "ssx_01/ssx_01_001", dated=False, overrides={"MX_numberOfImages": "lots"})
    wait_for(lambda: _status(ctx, proposal, 3) == "done", 30, what="run 3")
    v3 = db.get_values(proposal, 3)
    assert v3["MX_numberOfImages"].summary_type == "error"
    assert v3["MX_numberOfImages"].attributes["error"] == \
        "MX_numberOfImages: expected integer, found 'lots' (str)"
    assert v3["where"].value == "thaum/ssx_01"
    ssx_files = list((session / "RAW_DATA" / "thaum" / "ssx_01" / "ssx_01_001").glob("*.h5"))
    assert db.get_run(proposal, 3)["start_time"] == pytest.approx(
        min(p.stat().st_mtime for p in ssx_files), abs=0.01)
    wait_for(lambda: any(str(bad) in e["message"] for e in db.events(level="warning")), 10,
             what="malformed metadata.json in the event log")
    assert b.stop() == 0
    before = {r["key"]: r["run"] for r in db.source_runs("esrf")}
    stamps = {n: v.attributes.get("seconds") for n, v in db.get_values(proposal, 1).items()}
    # restart with one more collection: old runs keep their numbers and values, the new one is 4
    collect("thaum", "ssx_02/ssx_02_001", dated=False)
    b = backend(ctx)
    wait_for(lambda: _status(ctx, proposal, 4) == "done", 30, what="run 4 after restart")
    after = {r["key"]: r["run"] for r in db.source_runs("esrf")}
    assert {k: after[k] for k in before} == before and len(after) == 4
    assert db.run_numbers() == [1, 2, 3, 4]
    assert {n: v.attributes.get("seconds") for n, v in db.get_values(proposal, 1).items()} == stamps
    assert b.stop() == 0


# ---------------------------------------------------------------------------------------------
# SwissFEL

SF_CONTEXT = '''
from amore.context import Variable

@Variable(title="Channels")
def n_channels(run, md: "meta#metadata"):
    assert md is not None and md == run.metadata
    return len(run.metadata["channels_list"])

@Variable(title="Files")
def files(run):
    return ",".join(p.name.split(".")[1] for p in run.files)
'''


def test_swissfel_requests_in_both_layouts(tmp_path, backend):  # noqa: F811
    pgroup = "p18493"
    root = tmp_path / "sf" / "alvra" / "data" / pgroup
    toml = (f'facility = "swissfel"\n[swissfel]\nroot = "{root}"\nrescan_seconds = 1.0\n'
            f'quiet_seconds = 0.2\n[columns.rate]\nkey = "rate_multiplicator"\ntype = "integer"\n'
            f'[columns.scan]\nkey = "scan_info.scan_name"\ntype = "string"\n')
    ctx = _init(tmp_path, "ctx", "swissfel", pgroup, toml, files={"context.py": SF_CONTEXT})
    swissfel_demo.write_swissfel_request(root, 1, pgroup=pgroup, n_channels=2)
    swissfel_demo.write_swissfel_request(root, 2, pgroup=pgroup, n_channels=3, rate_multiplicator=2)
    swissfel_demo.write_swissfel_request(root, 7, pgroup="p99999")         # another pgroup: ignored
    b = backend(ctx)
    wait_for(lambda: _status(ctx, pgroup, 2) == "done", 30, what="runs 1, 2")
    wait_for(lambda: _status(ctx, pgroup, 1) == "done", 30, what="run 1")
    db = RunDB(ctx)
    v2 = db.get_values(pgroup, 2)
    assert v2["n_channels"].value == 3 and v2["rate"].value == 2 and v2["scan"].value == "scan_test"
    assert v2["files"].value == "BSDATA,JF07T32V01,PVDATA"
    assert db.source_run(pgroup, 1)["info"]["metadata"]["operator_note"] == "kept although unknown"
    # malformed (no stop_pulseid): reported and skipped; the current layout's next run works
    swissfel_demo.write_swissfel_request(root, 3, pgroup=pgroup, drop=("stop_pulseid",))
    swissfel_demo.write_swissfel_request(root, 4, pgroup=pgroup, layout="meta", n_channels=4)
    wait_for(lambda: _status(ctx, pgroup, 4) == "done", 30, what="run 4 (meta/acq layout)")
    assert db.get_values(pgroup, 4)["n_channels"].value == 4
    wait_for(lambda: any("lacks stop_pulseid" in e["message"] for e in db.events()), 10,
             what="malformed request in the event log")
    assert db.get_run(pgroup, 3) is None
    assert b.stop() == 0
    b = backend(ctx)
    swissfel_demo.write_swissfel_request(root, 4, pgroup=pgroup, layout="meta", n_channels=5, acquisition=2)
    wait_for(lambda: db.get_values(pgroup, 4)["n_channels"].value == 5, 30,
             what="run 4 updated by its second acquisition")
    assert db.run_numbers() == [1, 2, 4]
    assert b.stop() == 0


# ---------------------------------------------------------------------------------------------
# amore-proto init --facility

@pytest.mark.parametrize("facility,proposal", [("ess", "999999"), ("esrf", "mx2532"),
                                               ("swissfel", "p18493"), ("euxfel", "2832")])
def test_init_writes_amore_toml_and_template_per_facility(tmp_path, facility, proposal):
    import subprocess

    from backend.config import load_config
    from backend.ctxrunner.context import ContextFile
    from tests.conftest import amore_cmd
    d = tmp_path / facility
    out = subprocess.run(amore_cmd("init", d, "--facility", facility, "--proposal", proposal,
                                   "--root", tmp_path / "data"), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    cfg = load_config(d)
    assert cfg.facility == facility
    if facility in ("esrf", "swissfel"):
        assert cfg[facility]["root"] == str(tmp_path / "data")
    if facility == "ess":
        assert cfg["ess"]["topics"] == ["ymir_filewriter"]
        assert cfg["ess"]["run_number_pattern"] == r"_(\d+)\.(?:hdf|nxs|h5)$"
    assert RunDB(d).proposal == (int(proposal) if proposal.isdigit() else proposal)
    ctx = ContextFile.from_path(d / "context.py")
    assert ctx.variables      # the facility's template loads
    import context_templates
    expected = context_templates.path("generic" if facility == "euxfel" else facility)
    assert (d / "context.py").read_text() == expected.read_text()


def test_ess_file_still_held_by_the_writer_is_retried(tmp_path):
    """A NeXus file the writer still holds (HDF5 file lock) is opened once the writer lets go;
    without retries the run says why it could not be opened."""
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor

    from backend.ctxrunner.facilities import RunNotReady
    from backend.facilities.ess.run import open_ess_file
    path = ess_demo.write_ess_nexus(tmp_path / "ymir_999999_00000001.hdf", proposal=999999, counter=1,
                              job_id="j")
    # the writer holds the file until its standard input is closed
    holder = subprocess.Popen([sys.executable, "-c", (
        "import h5py, sys\n"
        f"f = h5py.File({str(path)!r}, 'a')\n"
        "print('held', flush=True)\n"
        "sys.stdin.read()\n"
        "f.close()\n")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunNotReady, match="cannot open .*ymir_999999_00000001.hdf"):
            open_ess_file(path, retries=0)
        with ThreadPoolExecutor(1) as pool:
            opening = pool.submit(open_ess_file, path, retries=300, delay=0.1)
            time.sleep(0.6)
            # still retrying while the writer holds the file ...
            assert not opening.done(), f"returned while the file was held: {opening.exception()}"
            holder.stdin.close()                 # ... the writer lets go: opened
            f = opening.result(30)
        assert f["/entry/title"][()] == b"alignment scan"
        f.close()
    finally:
        if not holder.stdin.closed:
            holder.stdin.close()
        holder.wait(10)


def test_euxfel_online_topics_follow_the_proposals_instrument(make_context_dir):
    from backend.config import load_config
    from backend.facilities.euxfel.facility import FACILITY
    from backend.facilities.euxfel.source import event_topics
    from backend.locate import find_proposal_dir

    def euxfel_topics(d):   # with what the listener hands the European XFEL plug-in
        config, proposal = load_config(d), RunDB(d).proposal
        return event_topics(config, FACILITY.settings(config), proposal,
                            find_proposal_dir(proposal, config))

    off = make_context_dir(name="off")
    assert euxfel_topics(off) == ["test.r2d2", "cal.offline-corrections"]
    on = make_context_dir(name="on", config="[euxfel]\nonline = true\n")
    assert euxfel_topics(on) == ["test.r2d2", "cal.offline-corrections",
                                 "test.euxfel.mid.daq", "test.euxfel.mid.cal"]
    custom = make_context_dir(name="custom", config=(
        '[euxfel]\nonline = true\ninstrument = "SPB"\nonline_topics = ["{instrument}-online"]\n'
        '[kafka]\nevent_topics = []\n'))
    assert euxfel_topics(custom) == ["spb-online"]


@pytest.mark.parametrize("facility", ["esrf", "swissfel"])
def test_demo_plays_the_facility(tmp_path, facility):
    import subprocess

    from tests.conftest import amore_cmd
    out = subprocess.run(amore_cmd("demo", tmp_path, "--facility", facility, "--runs", "2",
                                   "--interval", "0.5", "--no-gui"),
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    ctx = next((tmp_path / facility).rglob("runs.sqlite")).parent
    db = RunDB(ctx)
    assert [r["status"] for r in db.runs()] == ["done", "done"]
    assert db.proposal == {"esrf": "mx2532", "swissfel": "p18493"}[facility]


def test_every_facility_folder_is_a_complete_plug_in():
    """Adding a facility is adding a folder: each folder of backend/facilities is registered,
    its plug-in carries the folder's name, its worker module opens runs, and the meta# keys it
    gives are ones context files may ask for (checked when a context file loads)."""
    import importlib

    import backend.facilities as facilities
    from backend.ctxrunner.context import META_KEYS
    folders = sorted(p.name for p in Path(facilities.__file__).parent.iterdir()
                     if (p / "__init__.py").is_file())
    assert list(facilities.names()) == folders
    for name in folders:
        plugin = facilities.get(f" {name.upper()} ")
        assert plugin.name == name
        run = importlib.import_module(plugin.run_module)
        assert callable(run.open_run), name
        unknown = set(run.META_KEYS) - set(META_KEYS)
        assert not unknown, f"{name}: meta# keys {unknown} missing from context.META_KEYS"
    with pytest.raises(facilities.FacilityError, match="facility must be one of esrf, ess, "
                                                       "euxfel, swissfel, not 'xfel'"):
        facilities.get("xfel")
