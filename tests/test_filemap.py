"""The run files map AMORE writes before its first open of a run (backend/facilities/euxfel/filemap.py)
is the one extra-data would write, and extra-data opens runs from it."""
import json
import subprocess

import extra_data
import h5py
import numpy as np
import pytest

from backend.facilities.euxfel import filemap
from backend.facilities.euxfel.filemap import write_files_map
from tests.conftest import PROPOSAL, amore_cmd

MAP = "karabo_data_map.json"


def extra_datas_own_map(run_dir) -> dict:
    """The map extra-data writes when it opens the run itself (then removed again)."""
    (run_dir / MAP).unlink(missing_ok=True)
    extra_data.RunDirectory(str(run_dir), parallelize=False)
    entries = {e["filename"]: e for e in json.loads((run_dir / MAP).read_text())}
    (run_dir / MAP).unlink()
    return entries


def written_map(run_dir) -> dict:
    return {e["filename"]: e for e in json.loads((run_dir / MAP).read_text())}


@pytest.mark.parametrize("processes", [1, 2])
def test_map_equals_extra_datas_own_for_raw_and_proc(write_run, proposal_dir, processes,
                                                      monkeypatch):
    # processes=2: half of the files are read by a forked copy (from 64 files per process on;
    # here from 2, as this run has 9 raw files)
    monkeypatch.setattr(filemap, "MIN_FILES_PER_PROCESS", 2)
    write_run(1, ntrains=120, trains_per_seq=50, agipd_modules=2, proc=True, timeserver=True)
    raw, proc = proposal_dir / "raw" / "r0001", proposal_dir / "proc" / "r0001"
    f0 = sorted(raw.glob("*DA01-S00001.h5"))[0]
    with h5py.File(f0, "r+") as f:  # a suspect train, as the DAQ flags them
        f["INDEX/flag"][3] = 0
    agipd = sorted(raw.glob("*AGIPD01-S00000.h5"))[0]
    with h5py.File(agipd, "r+") as f:  # an instrument source under a legacy (soft-link) name
        old = next(s.decode().partition("/")[2] for s in f["METADATA/dataSources/dataSourceId"][:]
                   if s.startswith(b"INSTRUMENT/"))
        old = old.split(":")[0] + ":" + old.split(":")[1].split("/")[0]
        f.create_group("INSTRUMENT/MID_DET_NEWNAME/DET")
        f.move(f"INSTRUMENT/{old}", "INSTRUMENT/MID_DET_NEWNAME/DET/1CH0:xtdf")
        f[f"INSTRUMENT/{old}"] = h5py.SoftLink("/INSTRUMENT/MID_DET_NEWNAME/DET/1CH0:xtdf")
    for run_dir in (raw, proc):
        theirs = extra_datas_own_map(run_dir)
        assert write_files_map(run_dir, processes) == len(theirs) > 0
        assert written_map(run_dir) == theirs
    assert written_map(raw)[f0.name]["suspect_train_indices"] == [3]
    assert written_map(raw)[agipd.name]["legacy_sources"] == {old: "MID_DET_NEWNAME/DET/1CH0:xtdf"}
    # a map exists: it stays as it is (extra-data completes it if files were added)
    before = (raw / MAP).stat().st_mtime_ns
    assert write_files_map(raw) == 0 and (raw / MAP).stat().st_mtime_ns == before


@pytest.mark.filterwarnings("ignore:Train validation is not fully supported")
def test_a_file_it_does_not_vouch_for_is_left_to_extra_data(write_run, proposal_dir):
    write_run(1, ntrains=120, trains_per_seq=50)
    raw = proposal_dir / "raw" / "r0001"
    files = sorted(raw.glob("*.h5"))
    with h5py.File(files[1], "r+") as f:  # format 1.1 has an inverted INDEX/flag
        del f["METADATA/dataFormatVersion"]
        f["METADATA/dataFormatVersion"] = np.array([b"1.1"])
    assert write_files_map(raw) == len(files) - 1
    assert files[1].name not in written_map(raw)
    # extra-data opens that one itself, the others from the map: every train is there
    run = extra_data.RunDirectory(str(raw), parallelize=False)
    assert len(run.train_ids) == 120
    assert files[1].name in written_map(raw)  # extra-data completed the map


def test_backend_writes_the_map_and_its_values_are_unchanged(make_context_dir, write_run,
                                                             proposal_dir):
    ctx = make_context_dir(template="mid")
    write_run(1, ntrains=60, trains_per_seq=25)
    raw = proposal_dir / "raw" / "r0001"
    expected = extra_datas_own_map(raw)
    p = subprocess.run(amore_cmd("reprocess", "1", "-d", ctx, "-q"), capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert written_map(raw) == expected
    # written by AMORE before extra-data's first open (extra-data indents its own)
    assert "\n " not in (raw / MAP).read_text()
    from backend.store.writer import RunDB
    values = RunDB(ctx).get_values(PROPOSAL, 1)
    assert values["n_trains"].value == 60
