"""Tests of backend.testing.mockdata: the mock runs look like European XFEL runs to extra-data."""
from datetime import datetime, timezone

import numpy as np
import pytest

import extra_data as ed

from backend.testing import mockdata as md
from tests.conftest import PROPOSAL


@pytest.fixture(scope='module')
def proposal_root(tmp_path_factory):
    """A proposal with three 100-train runs (no detector)."""
    root = tmp_path_factory.mktemp('data')
    pdir = md.proposal_dir(root, 'MID', '202201', PROPOSAL)
    infos = [md.write_run(pdir, PROPOSAL, run, ntrains=100) for run in (1, 2, 3)]
    return root, pdir, infos


@pytest.fixture
def xfel_env(monkeypatch, tmp_path):
    """Point extra-data at a root; SW root is an empty directory."""
    sw = tmp_path / 'sw'
    sw.mkdir()
    monkeypatch.setenv('EXTRA_DATA_SW_ROOT', str(sw))

    def set_root(root):
        monkeypatch.setenv('EXTRA_DATA_DATA_ROOT', str(root))
    return set_root


def test_layout(proposal_root):
    root, pdir, infos = proposal_root
    assert pdir == root / 'MID' / '202201' / 'p002832'
    for run, info in enumerate(infos, start=1):
        assert info['raw_dir'] == pdir / 'raw' / f'r{run:04d}'
        assert info['proc_dir'] is None
        assert sorted(p.name for p in info['raw_dir'].iterdir()) == [
            f'RAW-R{run:04d}-DA01-S00000.h5']
    # nothing else left behind (staging happens under scratch/ and is removed)
    assert sorted(p.name for p in pdir.iterdir()) == ['raw']


@pytest.mark.filterwarnings("ignore:No data available")
def test_run_metadata(proposal_root, xfel_env):
    root, pdir, infos = proposal_root
    xfel_env(root)
    for info in infos:
        for run in (ed.RunDirectory(str(info['raw_dir'])),
                    ed.open_run(PROPOSAL, info['run'], data='all')):
            meta = run.run_metadata()
            assert meta['proposalNumber'] == PROPOSAL
            assert meta['runNumber'] == info['run']
            assert meta['sample'] == info['sample']
            assert meta['runType'] == info['run_type'] == 'Experiment'
            assert meta['dataFormatVersion'] == '1.2'
            assert meta['creationDate'] == info['start_time'].strftime('%Y%m%dT%H%M%SZ')


def test_train_ids_and_timestamps(proposal_root, xfel_env):
    root, pdir, infos = proposal_root
    xfel_env(root)
    prev_last = None
    prev_end = None
    for info in infos:
        run = ed.open_run(PROPOSAL, info['run'])
        tids = np.asarray(run.train_ids)
        assert len(tids) == 100
        assert tids[0] == info['first_train'] and tids[-1] == info['last_train']
        assert 1.3e9 < tids[0] < 1.5e9
        assert np.all(np.diff(tids) == 1)

        ts = run.train_timestamps()
        assert not np.isnat(ts).any()
        assert np.all(np.diff(ts) == np.timedelta64(100, 'ms'))   # 10 Hz
        start = np.datetime64(info['start_time'].replace(tzinfo=None), 'ns')
        assert ts[0] == start
        # consistent with the 10 Hz train clock
        assert md.time_of_train(tids[0]) == info['start_time']

        if prev_last is not None:
            assert tids[0] > prev_last
            gap = (ts[0] - prev_end) / np.timedelta64(1, 's')
            assert 10 <= gap <= 600
        prev_last, prev_end = tids[-1], ts[-1]


def test_xgm_flux(proposal_root, xfel_env):
    root, pdir, infos = proposal_root
    xfel_env(root)
    means = []
    for info in infos:
        run = ed.open_run(PROPOSAL, info['run'])
        kd = run[md.XGM_SRC, md.XGM_FLUX_KEY]
        flux = kd.ndarray()
        assert flux.shape == (100,) and flux.dtype == np.float32
        assert np.all(flux > 0)
        assert 500 < flux.mean() < 1100
        assert flux.std() > 0
        assert kd.units == 'μJ'
        means.append(flux.mean())
        td = run[md.XGM_OUTPUT_SRC, 'data.intensityTD'].ndarray()
        assert td.shape == (100, 1000)
        # pulses, then the XGM's fill value 1.0 (by which tools count the pulses)
        assert np.all(td[:, :info['pulses']] > 5) and np.all(td[:, info['pulses']:] == 1)
    assert len(set(np.round(means))) == len(means)   # varies from run to run


def test_motor_scan(proposal_root, xfel_env):
    root, pdir, infos = proposal_root
    xfel_env(root)
    for info in infos:
        run = ed.open_run(PROPOSAL, info['run'])
        pos = run[md.MOTOR_SRC, md.MOTOR_POS_KEY].ndarray()
        start, stop, nsteps = info['motor_scan']
        assert pos.shape == (100,)
        assert pos[0] == pytest.approx(start, abs=0.01)
        assert pos[-1] == pytest.approx(stop, abs=0.01)
        assert np.all(np.diff(pos) > -0.01)          # scanning upwards
        assert len(np.unique(run[md.MOTOR_SRC, 'targetPosition'].ndarray())) == nsteps
        assert run.get_run_value(md.MOTOR_SRC, md.MOTOR_POS_KEY) == pytest.approx(pos[0])


def test_camera_spot(proposal_root, xfel_env):
    root, pdir, infos = proposal_root
    xfel_env(root)
    spots = []
    for info in infos:
        run = ed.open_run(PROPOSAL, info['run'])
        img = run[md.CAM_SRC, md.CAM_IMAGE_KEY].ndarray()
        assert img.shape == (100, 64, 64) and img.dtype == np.uint16
        mean = img.mean(axis=0)
        peak = np.unravel_index(mean.argmax(), mean.shape)
        assert np.hypot(peak[0] - info['cam_spot'][0], peak[1] - info['cam_spot'][1]) <= 2
        assert mean.max() > 5 * np.median(mean)       # a spot on a dark background
        spots.append(peak)
    assert len(set(spots)) == len(spots)              # moves from run to run


def test_sequences_and_start_time(tmp_path, xfel_env):
    xfel_env(tmp_path)
    pdir = md.proposal_dir(tmp_path, 'SPB', '202301', 7)
    t0 = datetime(2023, 3, 14, 15, 9, 26, tzinfo=timezone.utc)
    info = md.write_run(pdir, 7, 12, ntrains=30, trains_per_seq=12, start_time=t0,
                        sample='Water jet', run_type='Calibration - dark', cam_shape=(40, 48))
    assert [p.name for p in sorted(info['raw_dir'].iterdir())] == [
        f'RAW-R0012-DA01-S{s:05d}.h5' for s in range(3)]
    assert info['first_train'] == md.train_id_at(t0)
    run = ed.open_run(7, 12)
    assert len(run.files) == 3
    assert np.array_equal(run.train_ids, np.arange(info['first_train'], info['first_train'] + 30))
    ts = run.train_timestamps()
    assert ts[0] == np.datetime64('2023-03-14T15:09:26', 'ns')
    assert np.all(np.diff(ts) == np.timedelta64(100, 'ms'))
    meta = run.run_metadata()
    assert (meta['proposalNumber'], meta['runNumber']) == (7, 12)
    assert (meta['sample'], meta['runType']) == ('Water jet', 'Calibration - dark')
    assert sorted(f.metadata()['sequenceNumber'] for f in run.files) == [0, 1, 2]
    assert run[md.CAM_SRC, md.CAM_IMAGE_KEY].shape == (30, 40, 48)
    assert np.all(run[md.XGM_SRC, md.XGM_FLUX_KEY].ndarray() > 0)


def test_agipd_raw_and_proc(tmp_path, xfel_env):
    xfel_env(tmp_path)
    pdir = md.make_proposal(tmp_path, 900001, [1], instrument='MID', cycle='202201',
                            ntrains=6, trains_per_seq=4, agipd_modules=2,
                            fill_detector=True, pulses=3)
    raw_names = sorted(p.name for p in (pdir / 'raw' / 'r0001').iterdir())
    assert raw_names == sorted(
        [f'RAW-R0001-DA01-S{s:05d}.h5' for s in range(2)]
        + [f'RAW-R0001-AGIPD{m:02d}-S{s:05d}.h5' for m in range(2) for s in range(2)])
    proc_names = sorted(p.name for p in (pdir / 'proc' / 'r0001').iterdir())
    assert proc_names == [f'CORR-R0001-AGIPD{m:02d}-S{s:05d}.h5'
                          for m in range(2) for s in range(2)]

    proc = ed.open_run(900001, 1, data='proc')
    assert proc.run_metadata()['proposalNumber'] == 900001
    assert proc.run_metadata()['runNumber'] == 1
    assert set(proc.all_sources) == {md.agipd_source(0), md.agipd_source(1)}
    corr = proc[md.agipd_source(1), md.AGIPD_IMAGE_KEY]
    assert corr.shape == (18, 512, 128) and corr.dtype == np.float32
    assert corr.ndarray().mean() > 0

    raw = ed.open_run(900001, 1, data='raw')
    adc = raw[md.agipd_source(0), md.AGIPD_IMAGE_KEY]
    assert adc.shape == (18, 2, 512, 128) and adc.dtype == np.uint16
    assert 4000 < adc[:1].ndarray()[:, 0].mean() < 7000
    assert np.array_equal(raw.train_ids, proc.train_ids)

    both = ed.open_run(900001, 1, data='all')
    assert md.XGM_SRC in both.control_sources
    assert both[md.agipd_source(0), md.AGIPD_IMAGE_KEY].dtype == np.float32  # proc wins


def test_agipd_unfilled_no_proc(tmp_path, xfel_env):
    xfel_env(tmp_path)
    pdir = md.proposal_dir(tmp_path, 'MID', '202201', 5)
    info = md.write_run(pdir, 5, 3, ntrains=10, agipd_modules=16, proc=False)
    assert info['proc_dir'] is None and not (pdir / 'proc').exists()
    run = ed.open_run(5, 3, data='raw')
    assert len([s for s in run.instrument_sources if 'AGIPD1M' in s]) == 16
    assert run[md.agipd_source(15), md.AGIPD_IMAGE_KEY].shape == (40, 2, 512, 128)


def test_rewrite_replaces_run(tmp_path, xfel_env):
    xfel_env(tmp_path)
    pdir = md.proposal_dir(tmp_path, 'MID', '202201', 6)
    md.write_run(pdir, 6, 1, ntrains=40, trains_per_seq=10)
    info = md.write_run(pdir, 6, 1, ntrains=15, sample='again')
    assert [p.name for p in info['raw_dir'].iterdir()] == ['RAW-R0001-DA01-S00000.h5']
    run = ed.open_run(6, 1)
    assert len(run.train_ids) == 15 and run.run_metadata()['sample'] == 'again'
    assert sorted(p.name for p in pdir.iterdir()) == ['raw']


def test_cli(tmp_path, xfel_env, capsys):
    xfel_env(tmp_path)
    assert md.main([str(tmp_path), '--proposal', '42', '--runs', '2-3,5', '--ntrains', '20',
                    '--trains-per-seq', '8', '--agipd-modules', '1', '--no-proc']) == 0
    assert 'r0005' in capsys.readouterr().out
    pdir = tmp_path / 'MID' / '202201' / 'p000042'
    assert sorted(p.name for p in (pdir / 'raw').iterdir()) == ['r0002', 'r0003', 'r0005']
    assert not (pdir / 'proc').exists()
    run = ed.open_run(42, 5)
    assert run.run_metadata()['runNumber'] == 5
    assert len(run.files) == 6


def test_parse_runs():
    assert md.parse_runs('1-5') == [1, 2, 3, 4, 5]
    assert md.parse_runs('3') == [3]
    assert md.parse_runs('1,4,7-9') == [1, 4, 7, 8, 9]
    with pytest.raises(ValueError):
        md.parse_runs('5-1')



def test_second_run_is_written_from_the_first_runs_template(tmp_path):
    """A second run of the same shape is written from the in-memory template the first one
    built (no new skeleton through extra-data's write_file): what makes mock runs fast (how
    fast: benchmarks/waits.py)."""
    pdir = md.proposal_dir(tmp_path, 'MID', '202201', 1)
    md.write_run(pdir, 1, 1, ntrains=100)                # warm the template cache
    built = md._da01_template.cache_info().misses
    md.write_run(pdir, 1, 2, ntrains=100)
    assert md._da01_template.cache_info().misses == built, "the DA01 template was built again"
