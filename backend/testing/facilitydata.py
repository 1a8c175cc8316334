"""Runs of other facilities, in their own formats, for tests and the demo.

* ESS: :func:`write_ess_nexus` writes a NeXus file as the ESS file writer (kafka-to-nexus) lays
  it out (``NXentry`` with ``title``, ``experiment_identifier``, ``entry_identifier``,
  ``entry_identifier_uuid``, ``start_time``/``end_time`` ISO strings, ``NXinstrument`` with
  ``name``, ``NXsample`` with ``name``, an ``NXuser``, and ``NXlog`` groups with ``time`` (uint64
  ns since the epoch, ``start`` attribute) / ``value`` (``units``) / ``minimum_value`` /
  ``maximum_value`` / ``average_value``); file names ``{instrument}_{proposal}_{counter:08}.hdf``.
  :func:`ess_run_start` / :func:`ess_run_stop` / :func:`ess_finished_writing` make the file
  writer's messages with ``ess-streaming-data-types``' own serialisers.
* ESRF: :func:`write_esrf_collection` writes a collection folder with a ``metadata.json`` holding
  the keys MXCuBE writes (standard MX with ``startDate``/``endDate`` in Europe/Paris offset, or
  ID29 SSX without dates) and a few data files.
* SwissFEL: :func:`write_swissfel_request` writes ``raw/run_info/<thousands:06>/run_<run:06>.json``
  (the seed's layout) or ``raw/run<NNNN>/meta/acq<NNNN>.json`` (the current one), and the
  acquisition's data files.
"""
from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

PARIS = timezone(timedelta(hours=2))


def _nx(group, cls: str):
    group.attrs["NX_class"] = cls
    return group


def _fixed(s: str) -> np.bytes_:
    """A fixed-length byte string, as the file writer stores many strings."""
    return np.bytes_(s.encode())


def ess_file_name(instrument: str, proposal: int, counter: int) -> str:
    """``{instrument}_{proposal}_{counter:08}.hdf`` (e.g. ``coda_estia_999999_00013947.hdf``)."""
    return f"{instrument}_{proposal}_{counter:08d}.hdf"


def write_ess_nexus(path: str | Path, *, proposal: int, counter: int, job_id: str,
                    instrument: str = "YMIR", title: str = "alignment scan",
                    sample: str = "vanadium rod", start: float | None = None,
                    duration: float = 60.0, temperatures=None) -> Path:
    """Write an ESS file-writer style NeXus file; returns its path.

    ``temperatures``: values (K) of the NXlog ``/entry/instrument/cryostat/temperature``, one
    per second from ``start`` (Unix seconds, default now - duration).
    """
    import h5py
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    start = time.time() - duration if start is None else start
    temps = np.asarray([290.0, 291.0, 292.5, 293.0] if temperatures is None else temperatures,
                       dtype=np.float64)
    iso = lambda t: datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"  # noqa: E731
    with h5py.File(path, "w") as f:
        entry = _nx(f.create_group("entry"), "NXentry")
        entry["title"] = _fixed(title)
        entry["experiment_identifier"] = _fixed(str(proposal))
        entry["entry_identifier"] = _fixed(str(counter))
        entry["entry_identifier_uuid"] = _fixed(job_id)
        entry.create_dataset("start_time", data=iso(start), dtype=h5py.string_dtype())
        entry.create_dataset("end_time", data=iso(start + duration), dtype=h5py.string_dtype())
        inst = _nx(entry.create_group("instrument"), "NXinstrument")
        inst["name"] = _fixed(instrument)
        cryo = _nx(inst.create_group("cryostat"), "NXenvironment")
        log = _nx(cryo.create_group("temperature"), "NXlog")
        t = (np.arange(len(temps)) * 1_000_000_000 + int(start * 1e9)).astype(np.uint64)
        ds = log.create_dataset("time", data=t)
        ds.attrs["units"] = "ns"
        ds.attrs["start"] = "1970-01-01T00:00:00Z"
        v = log.create_dataset("value", data=temps)
        v.attrs["units"] = "K"
        for name, val in (("minimum_value", temps.min()), ("maximum_value", temps.max()),
                          ("average_value", temps.mean())):
            d = log.create_dataset(name, data=val)
            d.attrs["units"] = "K"
        smp = _nx(entry.create_group("sample"), "NXsample")
        smp["name"] = _fixed(sample)
        user = _nx(entry.create_group("user_JaneDoe"), "NXuser")
        user["name"] = _fixed("Jane Doe")
        user["affiliation"] = _fixed("ESS")
    return path


def ess_run_start(*, job_id: str, filename: str, proposal: int | None, start: float,
                  run_name: str = "run", instrument: str = "YMIR", metadata: dict | None = None,
                  nexus_structure: dict | None = None) -> bytes:
    """A ``pl72`` RunStart made by ``streaming_data_types.run_start_pl72.serialise_pl72``
    (times in ms since the epoch; ``metadata`` JSON carries the proposal unless None)."""
    from streaming_data_types.run_start_pl72 import serialise_pl72
    md = dict(metadata or {})
    if proposal is not None:
        md.setdefault("proposal", proposal)
    return serialise_pl72(job_id=job_id, filename=filename, start_time=int(start * 1000),
                          run_name=run_name, instrument_name=instrument,
                          nexus_structure=json.dumps(nexus_structure or {"children": []}),
                          service_id="filewriter-1", broker="localhost:9092",
                          metadata=json.dumps(md))


def ess_run_stop(*, job_id: str, stop: float, run_name: str = "run") -> bytes:
    """A ``6s4t`` RunStop (``serialise_6s4t``)."""
    from streaming_data_types.run_stop_6s4t import serialise_6s4t
    return serialise_6s4t(job_id=job_id, run_name=run_name, service_id="filewriter-1",
                          command_id=str(uuid.uuid4()), stop_time=int(stop * 1000))


def ess_finished_writing(*, job_id: str, file_name: str, error: str | None = None) -> bytes:
    """A ``wrdn`` FinishedWriting (``serialise_wrdn``); ``error`` sets ``error_encountered``."""
    from streaming_data_types.finished_writing_wrdn import serialise_wrdn
    return serialise_wrdn(service_id="filewriter-1", job_id=job_id,
                          error_encountered=error is not None, file_name=file_name,
                          metadata=json.dumps({"hello": 123}), message=error or "")


def write_esrf_collection(session_dir: str | Path, sample: str, collection: str, *,
                          reported_dir: str | None = None, dated: bool = True,
                          start: float | None = None, n_images: int = 900,
                          exposure: float = 0.01, n_files: int = 2, overrides: dict | None = None
                          ) -> Path:
    """Write ``<session_dir>/RAW_DATA/<sample>/<collection>/`` (``collection`` may have
    several levels, e.g. ``run_01_MXPressE/run_01_05_datacollection``) with data files and the
    ``metadata.json`` MXCuBE writes there; returns the metadata.json path.

    ``reported_dir``: the ``MX_directory`` written into the file (as the beamline sees it, for
    path prefix rewriting tests; default the real folder). ``dated``: standard MX collection
    with ``startDate``/``endDate`` (+02:00); False: ID29 SSX style (no dates: times come from the
    data files). ``overrides``: keys replaced or added (e.g. wrong types).
    """
    d = Path(session_dir) / "RAW_DATA" / sample / collection
    d.mkdir(parents=True, exist_ok=True)
    start = time.time() - 120 if start is None else start
    for i in range(n_files):
        f = d / f"{d.name}_{i + 1:05d}.h5"
        f.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))
    md = {
        "MX_beamShape": "ELLIPTICAL",
        "MX_beamSizeAtSampleX": 0.003,
        "MX_beamSizeAtSampleY": 0.004,
        "MX_detectorDistance": 182.4375,
        "MX_directory": reported_dir or str(d),
        "MX_exposureTime": exposure,
        "MX_flux": 28886038049.230362,
        "MX_numberOfImages": n_images,
        "MX_positionName": None,
        "MX_resolution": 1.5799984192455605,
        "MX_transmission": 12.5,
        "MX_wavelength": 0.976254,
        "Sample_name": sample,
        "Project_name": sample,
    }
    if dated:
        md["startDate"] = datetime.fromtimestamp(start, PARIS).isoformat(timespec="microseconds")
        md["endDate"] = datetime.fromtimestamp(start + n_images * exposure + 5,
                                               PARIS).isoformat(timespec="microseconds")
    md.update(overrides or {})
    path = d / "metadata.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(md, indent=4))
    tmp.rename(path)
    return path


def write_swissfel_request(pgroup_dir: str | Path, run: int, *, pgroup: str,
                           layout: str = "run_info", directory_name: str = "sample/scan",
                           beamline: str = "alvra", n_channels: int = 2, acquisition: int = 1,
                           drop: tuple = (), start_pulseid: int = 11884948775,
                           n_pulses: int = 1000, rate_multiplicator: int = 1) -> Path:
    """Write one accepted acquisition request as sf_daq_broker saves it; returns its path.

    ``layout``: ``"run_info"`` (``raw/run_info/<run//1000*1000:06>/run_<run:06>.json``, data
    ``raw/<directory_name>/run_<run:06>.<KIND>.h5``) or ``"meta"`` (``raw/run<run:04>/meta/
    acq<acquisition:04>.json``, data ``raw/run<run:04>/data/acq<acquisition:04>.<KIND>.h5``).
    ``drop``: keys left out (malformed requests).
    """
    raw = Path(pgroup_dir) / "raw"
    req = {
        "pgroup": pgroup,
        "directory_name": directory_name,
        "start_pulseid": start_pulseid,
        "stop_pulseid": start_pulseid + n_pulses - 1,
        "rate_multiplicator": rate_multiplicator,
        "channels_list": [f"SAR-CVME-TIFALL{i}:EvtSet" for i in range(n_channels)],
        "pv_list": ["SARFE10-OAPU044:MOTOR_X"],
        "detectors": {"JF07T32V01": {}},
        "scan_info": {"scan_name": "scan_test", "name": ["motor1"], "scan_values": [11.01]},
        "beamline": beamline,
        "run_number": run,
        "request_time": datetime.now().strftime("%Y-%m-%d %H:%M:%S.%f"),
        "operator_note": "kept although unknown",
    }
    if layout == "run_info":
        path = raw / "run_info" / f"{run // 1000 * 1000:06d}" / f"run_{run:06d}.json"
        data = raw / directory_name
        names = [f"run_{run:06d}.{k}.h5" for k in ("BSDATA", "PVDATA", "JF07T32V01")]
    else:
        req.pop("directory_name")
        req.update({"acquisition_number": acquisition, "unique_acquisition_run_number": acquisition,
                    "user_tag": "", "append_user_tag_to_data_dir": False})
        path = raw / f"run{run:04d}" / "meta" / f"acq{acquisition:04d}.json"
        data = raw / f"run{run:04d}" / "data"
        names = [f"acq{acquisition:04d}.{k}.h5" for k in ("BSDATA", "PVDATA", "JF07T32V01")]
    for k in drop:
        req.pop(k, None)
    data.mkdir(parents=True, exist_ok=True)
    for n in names:
        (data / n).write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(req, indent=2))
    tmp.rename(path)
    return path
