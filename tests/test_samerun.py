"""AMORE's quicker "same run?" check (backend/facilities/euxfel/samerun.py) gives extra-data's
answer when a run's raw and proc data are opened together, and is gone after the open."""
import extra_data
import h5py
import numpy as np
import pytest
from extra_data import read_machinery, reader, sourcedata

from backend.facilities.euxfel import samerun
from backend.facilities.euxfel.samerun import quick_same_run
from tests.conftest import PROPOSAL


def described(dc) -> dict:
    """What a user of the opened run sees of its parts: files, sources, trains, and whether it
    (and each source) counts as one run, with the run's metadata where it does."""
    out = {"files": sorted(f.filename for f in dc.files), "sources": sorted(dc.all_sources),
           "trains": list(dc.train_ids), "single": dc.is_single_run,
           "per_source": {s: (sorted(f.filename for f in dc[s].files), dc[s].is_single_run)
                          for s in sorted(dc.all_sources)}}
    if dc.is_single_run:
        out["metadata"] = dc.run_metadata()
    return out


def opened(run, quick):
    if not quick:
        return extra_data.open_run(PROPOSAL, run, data="all")
    with quick_same_run():
        return extra_data.open_run(PROPOSAL, run, data="all")


def test_raw_and_proc_of_one_run_open_as_extra_data_opens_them(write_run):
    write_run(1, ntrains=60, trains_per_seq=25, agipd_modules=2, proc=True)
    ours, theirs = described(opened(1, True)), described(opened(1, False))
    assert ours == theirs
    assert ours["single"] and ours["metadata"]["runNumber"] == 1
    assert any("/proc/" in f for f in ours["files"]) and any("/raw/" in f for f in ours["files"])


def test_a_proc_file_of_another_run_gets_extra_datas_answer(write_run, proposal_dir):
    write_run(1, ntrains=60, trains_per_seq=25, agipd_modules=2, proc=True)
    for f in sorted((proposal_dir / "proc" / "r0001").glob("*.h5")):
        with h5py.File(f, "r+") as h:  # as if another run's corrected data had been put here
            h["METADATA/runNumber"][0] = 7
    assert described(opened(1, True)) == described(opened(1, False))


def test_a_file_it_cannot_read_is_left_to_extra_data(write_run, monkeypatch):
    write_run(1, ntrains=60, trains_per_seq=25, agipd_modules=2, proc=True)
    asked = []

    def unreadable(path):
        asked.append(path)
        raise samerun._Unknown(path)
    monkeypatch.setattr(samerun, "file_run_ids", unreadable)
    assert described(opened(1, True)) == described(opened(1, False))
    assert asked, "the quick check was not used at all"


def test_file_run_ids_reads_proposal_and_run(write_run, proposal_dir):
    write_run(3, ntrains=30, trains_per_seq=25, agipd_modules=1, proc=True)
    for f in sorted(proposal_dir.glob("*/r0003/*.h5")):
        assert samerun.file_run_ids(str(f)) == (PROPOSAL, 3), f
    with h5py.File(f, "r+") as h:   # format 0.5 files have no dataFormatVersion
        del h["METADATA/dataFormatVersion"]
    assert samerun.file_run_ids(str(f)) is None


def test_extra_datas_own_check_is_back_after_the_block(write_run):
    write_run(1, ntrains=30, trains_per_seq=25, agipd_modules=1, proc=True)
    with pytest.raises(RuntimeError):
        with quick_same_run():
            assert reader.same_run is not read_machinery.same_run
            assert sourcedata.same_run is reader.same_run
            raise RuntimeError("a failed open")
    assert reader.same_run is read_machinery.same_run
    assert sourcedata.same_run is read_machinery.same_run
    assert np.all(opened(1, False).train_ids == opened(1, True).train_ids)
