"""Realistic mock European XFEL run data for AMORE's tests, benchmarks and demo.

The HDF5 structure comes from extra-data's own mock-data machinery
(``extra_data.tests.mockdata``: ``write_file`` and the ``XGM``, ``Motor``,
``BaslerCamera`` and ``AGIPDModule`` device classes, pinned by our
``extra-data==1.25.0`` requirement).  Those mocks leave most arrays empty and
use placeholder metadata, so this module adds what a run overview needs:

* the facility layout
  ``<root>/<INSTRUMENT>/<CYCLE>/p<proposal:06d>/raw/r<run:04d>/RAW-R<run:04d>-DA01-S<seq:05d>.h5``
  (AGIPD raw ``RAW-R<run:04d>-AGIPD<mod:02d>-S<seq:05d>.h5``, corrected
  ``proc/r<run:04d>/CORR-R<run:04d>-AGIPD<mod:02d>-S<seq:05d>.h5``), file
  format version 1.2;
* correct ``METADATA`` (``proposalNumber``, ``runNumber``, ``sequenceNumber``,
  ``sample``, ``runType``, ``creationDate``, ``updateDate``), so that
  ``run.run_metadata()`` describes the run that was asked for;
* train IDs around 1.4e9 that follow the 10 Hz train clock: each run starts
  after the previous run of the proposal, and ``INDEX/timestamp`` agrees with
  the train IDs;
* plausible values: XGM pulse energy, a step scan of a motor, a Gaussian beam
  spot on a camera, and (optionally) AGIPD detector signal that follows the
  XGM pulse energies.

Speed: creating the ~750 datasets of a DA01 file with ``write_file`` costs
~0.2 s, so each distinct file skeleton is built once per process and kept in
memory as bytes ("template"); every further file is a copy of those bytes
with new train IDs, metadata and values.  A 100-train run without detector
takes a few tens of milliseconds once the template exists.

Completeness: a run's files are written into a staging directory under
``<proposal>/scratch/`` and the finished run directory is renamed into
``raw/`` (then ``proc/``), so a watcher on ``raw/`` only ever sees a run
directory that already holds its complete file set.

Command line::

    python -m backend.testing.mockdata ROOT --proposal 2832 --runs 1-5 --ntrains 300 \\
        --trains-per-seq 250 --agipd-modules 16 --fill-detector --no-proc
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import io
import math
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import h5py
import numpy as np

from extra_data.tests.mockdata import write_file
from extra_data.tests.mockdata.base import DeviceBase
from extra_data.tests.mockdata.basler_camera import BaslerCamera
from extra_data.tests.mockdata.detectors import AGIPDModule
from extra_data.tests.mockdata.motor import Motor
from extra_data.tests.mockdata.xgm import XGM

from backend.contextdir import proposal_dir_name

__all__ = [
    'XGM_SRC', 'MOTOR_SRC', 'CAM_SRC', 'CAM_DEVICE', 'AGIPD_SRC', 'AGIPD_DEVICE',
    'XGM_OUTPUT_SRC', 'XGM_FLUX_KEY', 'MOTOR_POS_KEY', 'CAM_IMAGE_KEY', 'AGIPD_IMAGE_KEY',
    'TIMESERVER_DEVICE', 'TIMESERVER_SRC', 'BUNCH_PATTERN_KEY',
    'FORMAT_VERSION', 'TRAIN_RATE_HZ', 'REFERENCE_TIME', 'REFERENCE_TRAIN',
    'agipd_source', 'train_id_at', 'time_of_train', 'parse_runs',
    'proposal_dir', 'write_run', 'make_proposal', 'main',
    'drop_trains', 'duplicate_train', 'truncate_file',
]

# --------------------------------------------------------------------------
# Source names and keys (as seen through extra-data)
# --------------------------------------------------------------------------

#: SASE2 X-ray gas monitor (the XGM upstream of MID/HED); control source.
#: Key :data:`XGM_FLUX_KEY`: float32 per train, mean pulse energy in μJ.
XGM_SRC = 'SA2_XTD1_XGM/XGM/DOOCS'
#: Pulse-resolved XGM data (``data.intensityTD``, float32 (trains, 1000), μJ;
#: the first ``pulses`` entries of each train are filled, the rest hold 1.0, the fill value
#: real XGMs write, by which tools such as ``extra.components.XGM`` count the pulses).
XGM_OUTPUT_SRC = XGM_SRC + ':output'
#: Key of the train-averaged pulse energy (μJ) in :data:`XGM_SRC`.
XGM_FLUX_KEY = 'pulseEnergy.photonFlux'

#: Sample-stage motor; control source.  Key :data:`MOTOR_POS_KEY` (float64,
#: one value per train, motor units, treated as mm) performs a step scan;
#: ``targetPosition`` holds the set point of the current step.  The RUN
#: section holds the position at the start of the run.
MOTOR_SRC = 'MID_EXP_UPP/MOTOR/R3'
#: Key of the motor readback position in :data:`MOTOR_SRC`.
MOTOR_POS_KEY = 'actualPosition'

#: Karabo device name of the sample camera.
CAM_DEVICE = 'MID_EXP_SAM/CAM/CAM1'
#: Sample camera output channel (instrument source).  Key
#: :data:`CAM_IMAGE_KEY`: uint16 (trains, height, width) images, counts,
#: one image per train, showing a Gaussian beam spot on a dark level.
CAM_SRC = CAM_DEVICE + ':daqOutput'
#: Key of the camera images in :data:`CAM_SRC`.
CAM_IMAGE_KEY = 'data.image.pixels'

#: Karabo device name of an AGIPD 1M module: ``AGIPD_DEVICE.format(mod=3)``.
AGIPD_DEVICE = 'MID_DET_AGIPD1M-1/DET/{mod}CH0'
#: Source of an AGIPD 1M module as extra-data names it:
#: ``AGIPD_SRC.format(mod=3)`` -> ``'MID_DET_AGIPD1M-1/DET/3CH0:xtdf'``.
#: Key :data:`AGIPD_IMAGE_KEY`: raw uint16 (frames, 2, 512, 128) (ADC value
#: and gain stage), corrected float32 (frames, 512, 128); ``pulses`` frames
#: per train.
AGIPD_SRC = AGIPD_DEVICE + ':xtdf'
#: Key of the AGIPD images.
AGIPD_IMAGE_KEY = 'image.data'

#: Karabo device name of the SASE2 timeserver (optional, ``write_run(timeserver=True)``).
TIMESERVER_DEVICE = 'SA2_BR_UTC/TSYS/TIMESERVER'
#: Timeserver bunch pattern output (instrument source, in its own aggregator file DA02).  Key
#: :data:`BUNCH_PATTERN_KEY`: uint32 (trains, 2700), one entry per bunch slot; the *pulses*
#: X-ray pulses of a train go to SASE2 (destination bits ``2 << 18``, the T5D dump) every 4th
#: slot from slot 1000, with a bunch charge code of 0.25 nC.
TIMESERVER_SRC = TIMESERVER_DEVICE + ':outputBunchPattern'
#: Key of the bunch pattern table in :data:`TIMESERVER_SRC`.
BUNCH_PATTERN_KEY = 'data.bunchPatternTable'
_BUNCH_SLOTS = 2700
_SASE2_DESTINATION = 2 << 18
_CHARGE_025NC = 8
_FIRST_PULSE_SLOT, _PULSE_SPACING = 1000, 4

#: File format version written into all files.
FORMAT_VERSION = '1.2'
#: European XFEL delivers 10 trains per second.
TRAIN_RATE_HZ = 10
_TRAIN_NS = 1_000_000_000 // TRAIN_RATE_HZ
#: Anchor of the train clock used here: train :data:`REFERENCE_TRAIN` started
#: at :data:`REFERENCE_TIME`.  Train IDs then advance at 10 Hz, so any other
#: time maps to a train ID (see :func:`train_id_at`).
REFERENCE_TIME = datetime(2022, 2, 1, 8, 0, 0, tzinfo=timezone.utc)
REFERENCE_TRAIN = 1_400_000_000

# Nominal spacing of the first runs of a proposal when nothing earlier exists.
_RUN_SLOT = timedelta(minutes=15)
# Padding of INSTRUMENT/INDEX datasets (write_file's "chunksize").
_PAD = 32

_SAMPLES = ('Au nanoparticles 50 nm', 'SiO2 spheres 200 nm', 'Lysozyme crystals',
            'Kapton blank', 'YAG screen')


def agipd_source(mod: int) -> str:
    """extra-data source name of AGIPD module *mod* (0-15)."""
    return AGIPD_SRC.format(mod=mod)


# --------------------------------------------------------------------------
# Train clock
# --------------------------------------------------------------------------

def _as_utc(t) -> datetime:
    if isinstance(t, datetime):
        # naive datetimes are taken as local time, like datetime.astimezone()
        return t.astimezone(timezone.utc)
    if isinstance(t, (int, float)):
        return datetime.fromtimestamp(t, tz=timezone.utc)
    raise TypeError(f'start_time must be a datetime or Unix time, not {type(t).__name__}')


def _to_ns(dt: datetime) -> int:
    d = dt - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (d.days * 86400 + d.seconds) * 1_000_000_000 + d.microseconds * 1000


def _from_ns(ns: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=ns // 1000)


def train_id_at(t) -> int:
    """Train ID of the train running at time *t* (datetime or Unix seconds).

    Uses the clock anchored at :data:`REFERENCE_TIME` /
    :data:`REFERENCE_TRAIN` (10 trains per second).
    """
    ns = _to_ns(_as_utc(t)) - _to_ns(REFERENCE_TIME)
    tid = REFERENCE_TRAIN + ns // _TRAIN_NS
    if tid <= 0:
        raise ValueError(f'{t} is before train ID 1 of this clock')
    return int(tid)


def time_of_train(train_id: int) -> datetime:
    """UTC start time of *train_id* on the clock of :func:`train_id_at`."""
    return _from_ns(_to_ns(REFERENCE_TIME) + (int(train_id) - REFERENCE_TRAIN) * _TRAIN_NS)


# --------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------

def proposal_dir(root, instrument: str, cycle, proposal: int) -> Path:
    """``<root>/<instrument>/<cycle>/p<proposal:06d>`` as a Path (not created)."""
    return Path(root) / instrument / str(cycle) / proposal_dir_name(proposal)


def _raw_name(run, seq, agg='DA01'):
    return f'RAW-R{run:04d}-{agg}-S{seq:05d}.h5'


def _corr_name(run, mod, seq):
    return f'CORR-R{run:04d}-AGIPD{mod:02d}-S{seq:05d}.h5'


def parse_runs(spec: str) -> list[int]:
    """Parse ``'1-5'``, ``'3'`` or ``'1,4,7-9'`` into a sorted list of run numbers."""
    runs = set()
    for part in str(spec).split(','):
        part = part.strip()
        if not part:
            continue
        if '-' in part:
            a, b = part.split('-', 1)
            a, b = int(a), int(b)
            if b < a:
                raise ValueError(f'bad run range {part!r}')
            runs.update(range(a, b + 1))
        else:
            runs.add(int(part))
    if not runs:
        raise ValueError(f'no runs in {spec!r}')
    return sorted(runs)


# --------------------------------------------------------------------------
# File templates: write_file once per layout, then copy bytes
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class _Template:
    data: bytes
    trainid_paths: tuple      # INSTRUMENT/**/trainId datasets (template train IDs)
    first_train: int          # first train ID used in the template
    source_device: str = ''   # AGIPD device name baked into the template


_TEMPLATE_FIRST = 1_000_000   # any non-zero value; replaced on instantiation
_DA01_BASE_MIN = 256          # smallest DA01 skeleton built with write_file
_template_lock = threading.RLock()


def _trainid_paths(f) -> tuple:
    paths = []
    f['INSTRUMENT'].visititems(
        lambda name, obj: paths.append('INSTRUMENT/' + name)
        if isinstance(obj, h5py.Dataset) and name.endswith('/trainId') else None)
    return tuple(paths)


def _template_from_bytes(data: bytes, device: str = '') -> _Template:
    with h5py.File(io.BytesIO(data), 'r') as f:
        return _Template(data, _trainid_paths(f), _TEMPLATE_FIRST, device)


def _build(fname, devices, n, tweak=None) -> bytes:
    with tempfile.TemporaryDirectory(prefix='amore-mock-') as td:
        path = os.path.join(td, fname)
        write_file(path, devices, ntrains=n, firsttrain=_TEMPLATE_FIRST,
                   chunksize=min(n, _PAD), format_version=FORMAT_VERSION)
        with h5py.File(path, 'r+') as f:
            # Strings we rewrite per file: make them variable-length.
            for name in ('sample', 'runType'):
                del f[f'METADATA/{name}']
                f.create_dataset(f'METADATA/{name}', data=[b''],
                                 dtype=h5py.string_dtype('utf-8'))
            if tweak is not None:
                tweak(f)
        with open(path, 'rb') as fh:
            return fh.read()


def _set_units(obj, prefix_sym, prefix_name, unit_sym, unit_name):
    if prefix_sym:
        obj.attrs['metricPrefixSymbol'] = prefix_sym.encode()
        obj.attrs['metricPrefixName'] = prefix_name.encode()
    obj.attrs['unitSymbol'] = unit_sym.encode()
    obj.attrs['unitName'] = unit_name.encode()


def _tweak_da01(f, cam_shape):
    # The stock XGM mock marks the first 5 trains of every file 'OFF'.
    f[f'CONTROL/{XGM_SRC}/state/value'][:] = b'ON'
    _set_units(f[f'CONTROL/{XGM_SRC}/pulseEnergy/photonFlux/value'],
               'u', 'micro', 'J', 'joule')
    _set_units(f[f'CONTROL/{XGM_SRC}/beamPosition/ixPos/value'],
               'm', 'milli', 'm', 'meter')
    _set_units(f[f'CONTROL/{XGM_SRC}/beamPosition/iyPos/value'],
               'm', 'milli', 'm', 'meter')
    _set_units(f[f'CONTROL/{XGM_SRC}/pulseEnergy/wavelengthUsed/value'],
               'n', 'nano', 'm', 'meter')
    for key in ('actualPosition', 'targetPosition', 'encoderPosition'):
        _set_units(f[f'CONTROL/{MOTOR_SRC}/{key}/value'], 'm', 'milli', 'm', 'meter')
    # Camera frames: re-create the pixel dataset with frame-aligned chunks of
    # ~256 kB (the stock one gets h5py's guessed chunks).
    p = f'INSTRUMENT/{CAM_SRC}/data/image/pixels'
    shape = f[p].shape
    del f[p]
    h, w = cam_shape
    per_chunk = max(1, min(shape[0], (256 * 1024) // (2 * h * w)))
    f.create_dataset(p, shape=shape, dtype='u2', maxshape=(None, h, w),
                     chunks=(per_chunk, h, w))


def _disk_cache_dir():
    """Directory for DA01 skeletons shared between processes, or None.

    ``$AMORE_MOCKDATA_CACHE`` overrides the default
    ``<tempdir>/amore-mockdata-<uid>``; set it to an empty string to disable.
    """
    d = os.environ.get('AMORE_MOCKDATA_CACHE')
    if d is None:
        uid = os.getuid() if hasattr(os, 'getuid') else 0
        d = os.path.join(tempfile.gettempdir(), f'amore-mockdata-{uid}')
    return Path(d) if d else None


@functools.lru_cache(maxsize=1)
def _code_fingerprint() -> str:
    import extra_data
    h = hashlib.sha1(Path(__file__).read_bytes())
    h.update(f'{extra_data.__version__}|{h5py.version.version}|'
             f'{h5py.version.hdf5_version}'.encode())
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=8)
def _da01_base(nbase: int, cam_shape: tuple) -> _Template:
    """DA01 skeleton for *nbase* trains, built by write_file (~0.2 s) or read
    from the disk cache."""
    cache = _disk_cache_dir()
    cfile = None
    if cache is not None:
        cfile = cache / f'DA01-{_code_fingerprint()}-n{nbase}-{cam_shape[0]}x{cam_shape[1]}.h5'
        try:
            return _template_from_bytes(cfile.read_bytes())
        except (OSError, ValueError):
            pass   # missing or unreadable: rebuild
    devices = [XGM(XGM_SRC), Motor(MOTOR_SRC),
               BaslerCamera(CAM_DEVICE, sensor_size=tuple(cam_shape))]
    data = _build('RAW-R0000-DA01-S00000.h5', devices, nbase,
                  lambda f: _tweak_da01(f, cam_shape))
    if cfile is not None:
        try:
            cache.mkdir(parents=True, exist_ok=True)
            tmp = cfile.with_name(f'.{cfile.name}.{os.getpid()}.{uuid.uuid4().hex[:6]}')
            tmp.write_bytes(data)
            os.replace(tmp, cfile)
        except OSError:
            pass   # a cache is a cache
    return _template_from_bytes(data)


@functools.lru_cache(maxsize=64)
def _da01_template(n: int, cam_shape: tuple) -> _Template:
    """DA01 skeleton for exactly *n* trains: the next larger base skeleton
    with every per-train dataset shrunk to *n* (padded ones to a multiple of
    32), which is much faster than another write_file."""
    nbase = _DA01_BASE_MIN
    while nbase < n:
        nbase *= 2
    base = _da01_base(nbase, cam_shape)
    if n == nbase:
        return base
    npad = -(-n // _PAD) * _PAD
    with tempfile.TemporaryDirectory(prefix='amore-mock-') as td:
        path = os.path.join(td, 'RAW-R0000-DA01-S00000.h5')
        with open(path, 'wb') as fh:
            fh.write(base.data)
        with h5py.File(path, 'r+') as f:
            # low-level API: the high-level one costs ~0.1 ms per object here
            names = []
            h5py.h5o.visit(f.id, lambda name, info: names.append(name)
                           if info.type == h5py.h5o.TYPE_DATASET else None, info=True)
            for name in names:
                top = name.split(b'/', 1)[0]
                if top in (b'METADATA', b'RUN'):
                    continue
                dsid = h5py.h5d.open(f.id, name)
                shape = dsid.shape
                if not shape or shape[0] != nbase:
                    continue
                per_train = top == b'CONTROL' or (top == b'INDEX' and name.count(b'/') > 1)
                dsid.set_extent(((n if per_train else npad),) + shape[1:])
                if not per_train and npad > n and dsid.get_storage_size():
                    ds = f[name.decode()]   # INDEX/trainId etc., INSTRUMENT: zero padding
                    if ds.dtype.kind == 'O':
                        ds[n:] = b''
                    else:
                        ds[n:] = np.zeros((npad - n,) + shape[1:], ds.dtype)
        with open(path, 'rb') as fh:
            return _template_from_bytes(fh.read())


@functools.lru_cache(maxsize=64)
def _agipd_template(n: int, frames: int, raw: bool) -> _Template:
    dev = AGIPD_DEVICE.format(mod=0)
    name = 'RAW-R0000-AGIPD00-S00000.h5' if raw else 'CORR-R0000-AGIPD00-S00000.h5'
    data = _build(name, [AGIPDModule(dev, raw=raw, frames_per_train=frames)], n)
    return _template_from_bytes(data, dev)


class _TimeServer(DeviceBase):
    # extra-data's mock machinery has no timeserver: just its bunch pattern output
    output_channels = ('outputBunchPattern/data',)
    instrument_keys = [('bunchPatternTable', 'u4', (_BUNCH_SLOTS,))]


@functools.lru_cache(maxsize=16)
def _timeserver_template(n: int) -> _Template:
    data = _build('RAW-R0000-DA02-S00000.h5', [_TimeServer(TIMESERVER_DEVICE)], n)
    return _template_from_bytes(data)


def _bunch_pattern(n: int, pulses: int) -> np.ndarray:
    table = np.zeros((n, _BUNCH_SLOTS), 'u4')
    slots = _FIRST_PULSE_SLOT + _PULSE_SPACING * np.arange(pulses)
    table[:, slots] = _SASE2_DESTINATION | _CHARGE_025NC
    return table


def _get_template(factory, *args) -> _Template:
    with _template_lock:   # build each template once even with several threads
        return factory(*args)


def _instantiate(tpl: _Template, path: Path, first_train: int, n: int,
                 device: str | None = None) -> h5py.File:
    """Copy *tpl* to *path*, shift its train IDs, rename its source; return it open r+."""
    with open(path, 'wb') as fh:
        fh.write(tpl.data)
    f = h5py.File(path, 'r+')
    try:
        f['INDEX/trainId'][:n] = np.arange(first_train, first_train + n, dtype='u8')
        delta = int(first_train) - tpl.first_train
        tid_paths = tpl.trainid_paths
        if device is not None and device != tpl.source_device:
            old = tpl.source_device
            for top in ('INDEX', 'INSTRUMENT'):
                f.move(f'{top}/{old}:xtdf', f'{top}/{device}:xtdf')
            for key in ('dataSourceId', 'deviceId'):
                ds = f[f'METADATA/dataSources/{key}']
                ds[:] = [s.replace(old.encode(), device.encode()) for s in ds[:]]
            tid_paths = [p.replace(old, device) for p in tid_paths]
        for p in tid_paths:
            ds = f[p]
            a = ds[()].astype(np.int64)
            ds[()] = np.where(a != 0, a + delta, 0).astype('u8')
        return f
    except BaseException:
        f.close()
        raise


def _stamp(dt: datetime) -> bytes:
    return dt.strftime('%Y%m%dT%H%M%SZ').encode('ascii')


def _write_metadata(f, *, proposal, run, seq, sample, run_type, ts_ns):
    n = len(ts_ns)
    f['INDEX/timestamp'][:n] = ts_ns
    m = f['METADATA']
    m['proposalNumber'][0] = proposal
    m['runNumber'][0] = run
    m['sequenceNumber'][0] = seq
    m['sample'][0] = sample.encode('utf-8')
    m['runType'][0] = run_type.encode('utf-8')
    # fixed-length 16-byte strings in the stock files, same format here
    m['creationDate'][0] = _stamp(_from_ns(int(ts_ns[0])))
    m['updateDate'][0] = _stamp(_from_ns(int(ts_ns[-1]) + 2_000_000_000))


# --------------------------------------------------------------------------
# Physics-ish values for one run
# --------------------------------------------------------------------------

@dataclass
class _RunValues:
    flux: np.ndarray          # (ntrains,) μJ
    pulse_e: np.ndarray       # (ntrains, pulses) μJ
    ixpos: np.ndarray
    iypos: np.ndarray
    motor_target: np.ndarray  # (ntrains,)
    motor_actual: np.ndarray  # (ntrains,)
    scan: tuple               # (start, stop, nsteps)
    spot_amp: np.ndarray      # (ntrains,) counts at the peak
    spot_y: np.ndarray        # (ntrains,) px
    spot_x: np.ndarray
    spot_center: tuple        # (row, col) nominal
    spot_sigma: tuple         # (sigma_row, sigma_col)
    flux_mean: float
    wavelength_nm: float


def _run_values(rng, ntrains, pulses, cam_shape) -> _RunValues:
    t = np.arange(ntrains)
    # XGM: ~800 μJ, per-run level, slow drift and ~8 % SASE fluctuations.
    flux_mean = 800.0 * rng.uniform(0.8, 1.2)
    drift = 1 + 0.03 * np.sin(2 * np.pi * t / max(ntrains, 600) + rng.uniform(0, 2 * np.pi))
    flux = flux_mean * drift * (1 + 0.08 * rng.standard_normal(ntrains))
    flux = np.clip(flux, 1.0, None)
    pulse_e = flux[:, None] * (1 + 0.12 * rng.standard_normal((ntrains, max(pulses, 1))))
    pulse_e = np.clip(pulse_e, 0.0, None)[:, :pulses]
    ixpos = rng.normal(0.12, 0.02, ntrains)
    iypos = rng.normal(-0.05, 0.02, ntrains)

    # Motor: step scan over 2 mm from a per-run start, ~10 trains per step.
    nsteps = int(max(1, min(11, ntrains // 10)))
    start = round(float(rng.uniform(-5.0, 3.0)), 1)
    stop = start + 2.0 if nsteps > 1 else start
    steps = np.linspace(start, stop, nsteps)
    target = steps[(t * nsteps) // ntrains]
    actual = target + rng.normal(0, 2e-4, ntrains)

    # Camera: Gaussian spot, per-run position/size/intensity, pointing jitter,
    # intensity proportional to the XGM pulse energy.
    h, w = cam_shape
    cy = h * (0.5 + rng.uniform(-0.2, 0.2))
    cx = w * (0.5 + rng.uniform(-0.2, 0.2))
    sy = max(1.0, h / 16 * rng.uniform(0.8, 1.2))
    sx = max(1.0, w / 12 * rng.uniform(0.8, 1.2))
    peak = rng.uniform(1500, 4000)
    amp = peak * flux / flux_mean
    jitter = 0.01 * min(h, w)
    spot_y = cy + rng.normal(0, jitter, ntrains)
    spot_x = cx + rng.normal(0, jitter, ntrains)
    return _RunValues(flux, pulse_e, ixpos, iypos, target, actual,
                      (float(start), float(stop), nsteps), amp, spot_y, spot_x,
                      (float(cy), float(cx)), (float(sy), float(sx)),
                      float(flux_mean), float(rng.uniform(0.12, 0.16)))


def _camera_images(rng, v: _RunValues, sl: slice, cam_shape) -> np.ndarray:
    h, w = cam_shape
    sy, sx = v.spot_sigma
    yy = np.arange(h, dtype=np.float32)
    xx = np.arange(w, dtype=np.float32)
    gy = np.exp(-0.5 * ((yy[None, :] - v.spot_y[sl, None].astype(np.float32)) / sy) ** 2)
    gx = np.exp(-0.5 * ((xx[None, :] - v.spot_x[sl, None].astype(np.float32)) / sx) ** 2)
    img = v.spot_amp[sl, None, None].astype(np.float32) * gy[:, :, None] * gx[:, None, :]
    img += 100.0  # dark level (counts)
    # shot + read noise, Gaussian approximation
    img += np.sqrt(img + 25.0) * rng.standard_normal(img.shape, dtype=np.float32)
    return np.clip(img, 0, 65535).astype('u2')


def _fill_da01(f, rng, v: _RunValues, sl: slice, ts_ns, run_start_ns, pulses, cam_shape):
    n = sl.stop - sl.start
    i_start = 0  # index of the run's first train in the run-wide arrays

    def put(src, key, values, run_value):
        grp = f[f'CONTROL/{src}/{key}']
        grp['value'][:] = values
        grp['timestamp'][:] = ts_ns
        # RUN holds the state at the start of the run, the same in every file
        f[f'RUN/{src}/{key}/value'][0] = run_value
        f[f'RUN/{src}/{key}/timestamp'][0] = run_start_ns

    put(XGM_SRC, 'pulseEnergy/photonFlux', v.flux[sl].astype('f4'), v.flux[i_start])
    put(XGM_SRC, 'pulseEnergy/nummberOfBunches', np.full(n, pulses, 'f4'), pulses)
    put(XGM_SRC, 'pulseEnergy/wavelengthUsed', np.full(n, v.wavelength_nm, 'f4'),
        v.wavelength_nm)
    put(XGM_SRC, 'beamPosition/ixPos', v.ixpos[sl].astype('f4'), v.ixpos[i_start])
    put(XGM_SRC, 'beamPosition/iyPos', v.iypos[sl].astype('f4'), v.iypos[i_start])
    f[f'RUN/{XGM_SRC}/state/value'][0] = b'ON'
    if pulses:
        td = np.ones((n, 1000), 'f4')   # 1.0: the XGM's fill value for slots without a pulse
        td[:, :pulses] = v.pulse_e[sl]
        f[f'INSTRUMENT/{XGM_OUTPUT_SRC}/data/intensityTD'][:n] = td

    put(MOTOR_SRC, 'actualPosition', v.motor_actual[sl], v.motor_actual[i_start])
    put(MOTOR_SRC, 'encoderPosition', v.motor_actual[sl], v.motor_actual[i_start])
    put(MOTOR_SRC, 'targetPosition', v.motor_target[sl], v.motor_target[i_start])
    put(MOTOR_SRC, 'isOnTarget', np.ones(n, 'u1'), 1)

    f[f'INSTRUMENT/{CAM_SRC}/data/image/pixels'][:n] = _camera_images(rng, v, sl, cam_shape)


# ---- AGIPD --------------------------------------------------------------

_AGIPD_BLOCK = 32  # frames written per h5py call when filling


@functools.lru_cache(maxsize=32)
def _agipd_module_maps(mod: int):
    """Per-module offset map (ADU), noise pool and mean photon pattern.

    Deterministic per module; a ring-like scattering pattern centred off the
    module (the beam passes through the hole in the middle of the AGIPD 1M).
    """
    rng = np.random.default_rng(1000 + mod)
    offset = rng.normal(5000, 150, (512, 128)).astype(np.float32)
    noise = rng.normal(0, 12, (8, 512, 128)).astype(np.float32)   # ADU
    yy, xx = np.mgrid[:512, :128].astype(np.float32)
    quadrant, pos = divmod(mod, 4)
    cy, cx = 256.0, -40.0 - 140.0 * pos + 10.0 * quadrant
    r = np.hypot(yy - cy, xx - cx)
    photons = (0.05 + 1.5 * np.exp(-0.5 * ((r - 300) / 25) ** 2)
               + 3.0 * np.exp(-r / 150)).astype(np.float32)   # photons / pulse at 800 μJ
    return offset, noise, photons


_ADU_PER_PHOTON = 60.0
_PHOTON_KEV = 9.0


def _fill_agipd(f, src, mod, v: _RunValues, sl: slice, frames, raw):
    grp = f[f'INSTRUMENT/{src}']
    n = sl.stop - sl.start
    grp['header/pulseCount'][:n] = frames
    nframes = n * frames
    if not frames:
        return
    offset, noise, photons = _agipd_module_maps(mod)
    scale = (v.pulse_e[sl] / 800.0).reshape(-1).astype(np.float32)  # (nframes,)
    ds = grp['image/data']
    for i0 in range(0, nframes, _AGIPD_BLOCK):
        i1 = min(nframes, i0 + _AGIPD_BLOCK)
        k = np.arange(i0, i1) % noise.shape[0]
        sig = scale[i0:i1, None, None] * photons[None]
        if raw:
            block = np.empty((i1 - i0, 2, 512, 128), 'u2')
            adc = offset[None] + noise[k] + _ADU_PER_PHOTON * sig
            block[:, 0] = np.clip(adc, 0, 16383)
            block[:, 1] = np.clip(offset[None] * 0.9 + noise[k[::-1]], 0, 16383)
        else:
            block = (_PHOTON_KEV * sig + noise[k] * 0.02).astype('f4')
        ds[i0:i1] = block


# --------------------------------------------------------------------------
# Writing runs
# --------------------------------------------------------------------------

def _previous_run_end(prop_dir: Path, run: int):
    """(last train ID, its timestamp ns) of the latest raw run numbered < run."""
    raw = prop_dir / 'raw'
    if not raw.is_dir():
        return None
    earlier = []
    for d in raw.iterdir():
        m = re.fullmatch(r'r(\d{4})', d.name)
        if m and int(m.group(1)) < run and d.is_dir():
            earlier.append((int(m.group(1)), d))
    for _, d in sorted(earlier, reverse=True):
        da01 = sorted(d.glob('RAW-*-DA01-S*.h5'), reverse=True)
        files = da01 or sorted(d.glob('*.h5'))
        best = None
        for p in files:
            if da01 and best is not None:
                break   # the last readable DA01 sequence file holds the last train
            try:
                with h5py.File(p, 'r') as f:
                    tids = f['INDEX/trainId'][:]
                    ok = np.nonzero(tids)[0]
                    if not len(ok):
                        continue
                    i = ok[np.argmax(tids[ok])]
                    ts = int(f['INDEX/timestamp'][i]) if 'INDEX/timestamp' in f else 0
                    cand = (int(tids[i]), ts)
            except (OSError, KeyError):
                continue
            if best is None or cand[0] > best[0]:
                best = cand
        if best is not None:
            if not best[1]:
                best = (best[0], _to_ns(time_of_train(best[0])))
            return best
    return None


def _rng_for(seed, proposal, run):
    key = [int(proposal), int(run)] if seed is None else [int(seed), int(proposal), int(run)]
    return np.random.default_rng(np.random.SeedSequence(key))


def _publish(stage: Path, target: Path, trash_parent: Path):
    """Move the finished directory *stage* to *target* (replacing it)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if target.exists():
        old = trash_parent / f'.old-{target.name}-{uuid.uuid4().hex[:8]}'
        os.rename(target, old)
    try:
        os.rename(stage, target)
    except OSError:          # e.g. raw/ is a link to another file system
        shutil.move(str(stage), str(target))
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_run(proposal_dir, proposal: int, run: int, *, ntrains: int = 100,
              trains_per_seq: int = 250, agipd_modules: int = 0,
              fill_detector: bool = False, proc: bool = True,
              cam_shape=(64, 64), start_time=None, first_train=None,
              sample=None, run_type=None, seed=None, pulses: int = 4,
              timeserver: bool = False) -> dict:
    """Write one complete run into *proposal_dir* (``.../p<proposal:06d>``).

    Parameters: *ntrains* trains in all, split into sequence files of at most
    *trains_per_seq* trains; *agipd_modules* AGIPD modules (0-16, modules
    0..M-1); *fill_detector* writes AGIPD values (otherwise they read as
    zeros and the files stay ~150 kB); *proc* also writes corrected AGIPD data
    (only when *agipd_modules* > 0); *cam_shape* camera (height, width);
    *seed* varies the random values; *pulses* pulses per train (XGM
    pulse-resolved entries and AGIPD frames per train); *timeserver* also
    writes ``RAW-R<run:04d>-DA02-S<seq:05d>.h5`` with the SASE2 timeserver's
    bunch pattern (:data:`TIMESERVER_SRC`), which pulse-pattern tools such as
    ``extra.components.XrayPulses`` read.

    Files: ``raw/r<run:04d>/RAW-R<run:04d>-DA01-S<seq:05d>.h5`` holding
    :data:`XGM_SRC` (+ :data:`XGM_OUTPUT_SRC`), :data:`MOTOR_SRC` and
    :data:`CAM_SRC`; with ``agipd_modules=M`` also
    ``RAW-R<run:04d>-AGIPD<mod:02d>-S<seq:05d>.h5`` (:data:`AGIPD_SRC`) and,
    if *proc*, ``proc/r<run:04d>/CORR-R<run:04d>-AGIPD<mod:02d>-S<seq:05d>.h5``.
    The files are written under ``<proposal>/scratch/.amore-mockdata/`` (removed
    afterwards) and each finished run directory is then renamed into place
    (raw first, then proc; an existing one is replaced), so a watcher sees
    ``raw/r<run:04d>`` only with its complete file set, and all files are
    complete when this function returns.

    Values (all deterministic for given *seed*, *proposal*, *run*; ``seed=None``
    still gives a fixed, run-dependent result):

    * XGM ``pulseEnergy.photonFlux``: float32 per train, μJ, mean ~640-960 μJ
      depending on the run, ~8 % fluctuations; ``data.intensityTD`` of the
      ``:output`` source: float32 (trains, 1000), the first *pulses* entries
      are the pulse energies in μJ, the others 1.0 (the XGM's fill value).
    * Motor ``actualPosition`` / ``targetPosition``: float64 per train, a step
      scan over 2 mm (up to 11 steps); ``get_run_value`` gives the start.
    * Camera ``data.image.pixels``: uint16 (trains, *cam_shape*) counts;
      a Gaussian spot (peak 1500-4000 counts above a dark level of ~100,
      scaled by the XGM energy) around ``info['cam_spot']``.
    * AGIPD: *pulses* frames per train; raw ``image.data`` uint16
      (frames, 2, 512, 128) and corrected float32 (frames, 512, 128).  They
      read as zeros unless *fill_detector* (then: ADU ~5000 + signal, and
      keV respectively, proportional to the XGM pulse energies).  Filling
      writes 256 kB per frame and module, raw and corrected: 16 modules x
      300 trains x 4 frames is ~5 GB raw + ~5 GB proc (~40 s).

    Timing: *start_time* (datetime, naive = local time, or Unix seconds)
    and/or *first_train* fix the start; given only one, the other follows the
    10 Hz clock of :func:`train_id_at`.  Given neither, the run starts 30-180 s
    after the end of the latest existing earlier run of this proposal, or at
    ``REFERENCE_TIME + (run - 1) * 15 min`` if there is none.
    ``INDEX/timestamp`` is ``start_time + 100 ms * i`` for train
    ``first_train + i``.

    *sample* / *run_type* default to a sample name cycling with the run
    number / ``'Experiment'``.

    Returns a dict: ``proposal``, ``run``, ``raw_dir`` (Path), ``proc_dir``
    (Path or None), ``first_train``, ``last_train``, ``ntrains``,
    ``start_time`` / ``end_time`` (UTC datetimes of the first / last train),
    ``sample``, ``run_type``, ``files`` (list of Paths, final locations),
    ``xgm_flux_mean`` (μJ, nominal), ``cam_spot`` ((row, col) px, nominal spot
    centre), ``motor_scan`` ((start, stop, nsteps)), ``pulses``,
    ``agipd_modules``.
    """
    prop = Path(proposal_dir)
    proposal, run, ntrains = int(proposal), int(run), int(ntrains)
    trains_per_seq, agipd_modules = int(trains_per_seq), int(agipd_modules)
    pulses = int(pulses)
    cam_shape = tuple(int(x) for x in cam_shape)
    if not 1 <= run <= 9999:
        raise ValueError('run must be in 1..9999')
    if ntrains < 1 or trains_per_seq < 1:
        raise ValueError('ntrains and trains_per_seq must be >= 1')
    if not 0 <= agipd_modules <= 16:
        raise ValueError('agipd_modules must be in 0..16')
    if len(cam_shape) != 2 or min(cam_shape) < 1:
        raise ValueError('cam_shape must be (height, width)')
    if not 0 <= pulses <= 1000:
        raise ValueError('pulses must be in 0..1000')

    rng = _rng_for(seed, proposal, run)

    # ---- when does the run happen? ----
    if start_time is not None:
        start_ns = _to_ns(_as_utc(start_time))
        if first_train is None:
            first_train = train_id_at(_from_ns(start_ns))
    elif first_train is not None:
        start_ns = _to_ns(time_of_train(first_train))
    else:
        prev = _previous_run_end(prop, run)
        if prev is None:
            t0 = REFERENCE_TIME + (run - 1) * _RUN_SLOT
            first_train = train_id_at(t0)
            start_ns = _to_ns(t0)
        else:
            gap = int(rng.integers(300, 1800))   # 30-180 s between runs
            first_train = prev[0] + gap
            start_ns = prev[1] + gap * _TRAIN_NS
    first_train = int(first_train)
    if first_train <= 0:
        raise ValueError('first_train must be positive')
    ts_all = start_ns + np.arange(ntrains, dtype=np.int64) * _TRAIN_NS

    sample = sample if sample is not None else _SAMPLES[(run - 1) % len(_SAMPLES)]
    run_type = run_type if run_type is not None else 'Experiment'
    values = _run_values(rng, ntrains, pulses, cam_shape)
    meta = dict(proposal=proposal, run=run, sample=sample, run_type=run_type)

    # ---- write into a staging area outside raw/ and proc/ ----
    prop.mkdir(parents=True, exist_ok=True)
    scratch = prop / 'scratch'
    scratch_existed = scratch.exists()
    staging_root = scratch / '.amore-mockdata'
    tag = f'r{run:04d}-{os.getpid()}-{uuid.uuid4().hex[:8]}'
    stage_raw = staging_root / f'raw-{tag}'
    stage_proc = staging_root / f'proc-{tag}'
    stage_raw.mkdir(parents=True)
    do_proc = bool(proc and agipd_modules)
    if do_proc:
        stage_proc.mkdir(parents=True)
    raw_dir = prop / 'raw' / f'r{run:04d}'
    proc_dir = prop / 'proc' / f'r{run:04d}' if do_proc else None
    files = []
    try:
        nseq = math.ceil(ntrains / trains_per_seq)
        for seq in range(nseq):
            i0 = seq * trains_per_seq
            n = min(trains_per_seq, ntrains - i0)
            sl = slice(i0, i0 + n)
            ts = ts_all[sl].astype('u8')
            first = first_train + i0

            name = _raw_name(run, seq)
            tpl = _get_template(_da01_template, n, cam_shape)
            with _instantiate(tpl, stage_raw / name, first, n) as f:
                _write_metadata(f, seq=seq, ts_ns=ts, **meta)
                _fill_da01(f, rng, values, sl, ts, int(ts_all[0]), pulses, cam_shape)
            files.append(raw_dir / name)

            if timeserver:
                name = _raw_name(run, seq, 'DA02')
                tpl = _get_template(_timeserver_template, n)
                with _instantiate(tpl, stage_raw / name, first, n) as f:
                    _write_metadata(f, seq=seq, ts_ns=ts, **meta)
                    f[f'INSTRUMENT/{TIMESERVER_SRC}/data/bunchPatternTable'][:n] = \
                        _bunch_pattern(n, pulses)
                files.append(raw_dir / name)

            for mod in range(agipd_modules):
                dev = AGIPD_DEVICE.format(mod=mod)
                src = agipd_source(mod)
                kinds = [(True, stage_raw, raw_dir, _raw_name(run, seq, f'AGIPD{mod:02d}'))]
                if do_proc:
                    kinds.append((False, stage_proc, proc_dir, _corr_name(run, mod, seq)))
                for raw, sdir, fdir, name in kinds:
                    tpl = _get_template(_agipd_template, n, pulses, raw)
                    with _instantiate(tpl, sdir / name, first, n, device=dev) as f:
                        _write_metadata(f, seq=seq, ts_ns=ts, **meta)
                        if fill_detector:
                            _fill_agipd(f, src, mod, values, sl, pulses, raw)
                        else:
                            f[f'INSTRUMENT/{src}/header/pulseCount'][:n] = pulses
                    files.append(fdir / name)

        _publish(stage_raw, raw_dir, staging_root)
        if do_proc:
            _publish(stage_proc, proc_dir, staging_root)
    finally:
        for d in (stage_raw, stage_proc):
            if d.exists():
                shutil.rmtree(d, ignore_errors=True)
        # leave no trace: remove the staging dirs unless another writer uses them
        for d in (staging_root, None if scratch_existed else scratch):
            try:
                if d is not None:
                    d.rmdir()
            except OSError:
                pass

    return {
        'proposal': proposal,
        'run': run,
        'raw_dir': raw_dir,
        'proc_dir': proc_dir,
        'first_train': first_train,
        'last_train': first_train + ntrains - 1,
        'ntrains': ntrains,
        'start_time': _from_ns(int(ts_all[0])),
        'end_time': _from_ns(int(ts_all[-1])),
        'sample': sample,
        'run_type': run_type,
        'files': files,
        'xgm_flux_mean': values.flux_mean,
        'cam_spot': values.spot_center,
        'motor_scan': values.scan,
        'pulses': pulses,
        'agipd_modules': agipd_modules,
    }


def make_proposal(root, proposal: int, runs, *, instrument: str = 'MID',
                  cycle='202201', **kw) -> Path:
    """Write several runs of one proposal under *root*; return the proposal dir.

    *runs*: iterable of run numbers, an int (runs 1..N) or a spec such as
    ``'1-5'`` / ``'1,3,7-9'``.  *kw* are passed to :func:`write_run`.  Runs
    are written in ascending order, each starting after the previous one; a
    given *start_time* / *first_train* applies to the first run only.
    """
    if isinstance(runs, str):
        runs = parse_runs(runs)
    elif isinstance(runs, int):
        runs = range(1, runs + 1)
    pdir = proposal_dir(root, instrument, cycle, proposal)
    for i, run in enumerate(sorted(runs)):
        kw_i = dict(kw)
        if i:
            kw_i.pop('start_time', None)
            kw_i.pop('first_train', None)
        write_run(pdir, proposal, run, **kw_i)
    return pdir


# --------------------------------------------------------------------------
# Damaged runs (for the data consistency check)
# --------------------------------------------------------------------------

def _index_count_paths(f, source: str) -> list[str]:
    """INDEX count datasets of *source* (control: one; instrument: one per group)."""
    base = f'INDEX/{source}'
    if 'count' in f[base]:
        return [f'{base}/count']
    return [f'{base}/{g}/count' for g in f[base] if 'count' in f[f'{base}/{g}']]


def drop_trains(path, source: str, train_ids) -> int:
    """Make *source* in the file *path* lose its data for *train_ids* (their INDEX count is
    set to 0; the data stays in the file, as when a device did not send).  Returns how many
    trains were dropped."""
    with h5py.File(path, 'r+') as f:
        tids = f['INDEX/trainId'][:]
        hit = np.isin(tids, np.asarray(list(train_ids), dtype=tids.dtype)) & (tids != 0)
        for ds in _index_count_paths(f, source):
            c = f[ds][:]
            c[hit[:c.size]] = 0
            f[ds][:] = c
    return int(hit.sum())


def duplicate_train(path, index: int = 1) -> int:
    """Overwrite ``INDEX/trainId[index]`` of the file *path* with the train ID before it, as a
    DAQ that recorded one train twice; returns the duplicated train ID."""
    with h5py.File(path, 'r+') as f:
        tids = f['INDEX/trainId']
        tids[index] = tids[index - 1]
        return int(tids[index])


def truncate_file(path, keep: float = 0.5) -> int:
    """Cut the file *path* to the fraction *keep* of its size (a copy that was interrupted);
    returns the new size in bytes."""
    size = os.path.getsize(path)
    new = max(int(size * keep), 1)
    with open(path, 'r+b') as f:
        f.truncate(new)
    return new


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog='python -m backend.testing.mockdata',
        description='Write realistic mock European XFEL runs '
                    '(<root>/<instrument>/<cycle>/p<proposal>/raw|proc/r<run>).')
    ap.add_argument('root', help='data root (use as EXTRA_DATA_DATA_ROOT)')
    ap.add_argument('--instrument', default='MID')
    ap.add_argument('--cycle', default='202201')
    ap.add_argument('--proposal', type=int, default=2832)
    ap.add_argument('--runs', default='1-5', help="e.g. '1-5' or '1,3,7-9'")
    ap.add_argument('--ntrains', type=int, default=100)
    ap.add_argument('--trains-per-seq', type=int, default=250)
    ap.add_argument('--agipd-modules', type=int, default=0)
    ap.add_argument('--pulses', type=int, default=4,
                    help='pulses (AGIPD frames) per train')
    ap.add_argument('--fill-detector', action='store_true',
                    help='write AGIPD values (large files!)')
    ap.add_argument('--no-proc', action='store_true', help='no corrected AGIPD data')
    ap.add_argument('--cam', default='64x64', help='camera HEIGHTxWIDTH')
    ap.add_argument('--seed', type=int, default=None)
    ap.add_argument('--sample', default=None)
    ap.add_argument('--run-type', default=None)
    ap.add_argument('--interval', type=float, default=0.0,
                    help='seconds to wait between runs (live demo)')
    ap.add_argument('--now', action='store_true',
                    help='the first run starts now (train IDs from the current time)')
    a = ap.parse_args(argv)

    cam = tuple(int(x) for x in a.cam.lower().split('x'))
    pdir = proposal_dir(a.root, a.instrument, a.cycle, a.proposal)
    t_all = time.perf_counter()
    for i, run in enumerate(parse_runs(a.runs)):
        if i and a.interval > 0:
            time.sleep(a.interval)
        t0 = time.perf_counter()
        info = write_run(
            pdir, a.proposal, run, ntrains=a.ntrains, trains_per_seq=a.trains_per_seq,
            agipd_modules=a.agipd_modules, fill_detector=a.fill_detector,
            proc=not a.no_proc, cam_shape=cam, seed=a.seed, sample=a.sample,
            run_type=a.run_type, pulses=a.pulses,
            start_time=datetime.now(timezone.utc) if (a.now and i == 0) else None)
        print(f"r{run:04d}: trains {info['first_train']}-{info['last_train']} "
              f"{info['start_time']:%Y-%m-%d %H:%M:%S}Z  {len(info['files'])} files  "
              f"{time.perf_counter() - t0:.2f} s", flush=True)
    print(f'{pdir}  ({time.perf_counter() - t_all:.2f} s)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
