"""ESS runs as the file writer makes them, for tests and the demo (``amore-proto demo --facility
ess``, :class:`EssDemo`).

:func:`write_ess_nexus` writes a NeXus file as the ESS file writer (kafka-to-nexus) lays
  it out (``NXentry`` with ``title``, ``experiment_identifier``, ``entry_identifier``,
  ``entry_identifier_uuid``, ``start_time``/``end_time`` ISO strings, ``NXinstrument`` with
  ``name``, ``NXsample`` with ``name``, an ``NXuser``, and ``NXlog`` groups with ``time`` (uint64
  ns since the epoch, ``start`` attribute) / ``value`` (``units``) / ``minimum_value`` /
  ``maximum_value`` / ``average_value``); file names ``{instrument}_{proposal}_{counter:08}.hdf``.
  :func:`ess_run_start` / :func:`ess_run_stop` / :func:`ess_finished_writing` make the file
  writer's messages with ``ess-streaming-data-types``' own serialisers.
"""
from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

#: The demo's proposal and the topic its file writer messages go to.
DEMO_PROPOSAL = 999999
DEMO_TOPIC = "ymir_filewriter"


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


class EssDemo:
    """``amore-proto demo --facility ess``: the file writer on Kafka; per run a ``pl72``, the
    NeXus file, a ``6s4t`` and a ``wrdn``. The context directory is
    ``<base>/ess/ymir/999999/amore``."""

    proposal = DEMO_PROPOSAL
    needs_broker = True
    topics = [DEMO_TOPIC]

    def __init__(self):
        self.producer = None
        self.data: Path | None = None

    def prepare(self, base: Path, broker: str | None) -> dict:
        """Create the demo's data folder; returns ``data`` (where runs appear),
        ``context_dir`` and ``amore_toml`` (the context directory's settings)."""
        self.data = Path(base) / "ess" / "ymir" / str(DEMO_PROPOSAL) / "raw"
        self.data.mkdir(parents=True, exist_ok=True)
        self.broker = broker
        toml = (f'facility = "ess"\n[kafka]\nbroker = "{broker}"\n[ess]\ntopics = ["{DEMO_TOPIC}"]\n'
                f'file_root = "{self.data}"\n'
                f'[columns.temperature]\nhdf5 = "/entry/instrument/cryostat/temperature"\n'
                f'type = "number"\nreduce = "mean"\n')
        return {"data": self.data, "context_dir": self.data.parent / "amore", "amore_toml": toml}

    def _send(self, value: bytes) -> None:
        if self.producer is None:
            from confluent_kafka import Producer
            self.producer = Producer({"bootstrap.servers": self.broker, "log_level": 0})
        self.producer.produce(DEMO_TOPIC, value)
        self.producer.flush(5)

    def next_run(self, n: int) -> None:
        """The ``n``-th run (1, 2, ...): announced, written, stopped, closed."""
        rng = np.random.default_rng(n)
        counter = 11465 + n
        name = ess_file_name("ymir", DEMO_PROPOSAL, counter)
        job = f"demo-{time.time():.0f}-{n}"
        start = time.time()
        self._send(ess_run_start(job_id=job, filename=name, proposal=DEMO_PROPOSAL,
                                 start=start, run_name=f"scan {n}"))
        time.sleep(1.0)
        write_ess_nexus(self.data / name, proposal=DEMO_PROPOSAL, counter=counter, job_id=job,
                        title=f"scan {n}", start=start, duration=1.0,
                        temperatures=290 + rng.normal(0, 1, 20))
        self._send(ess_run_stop(job_id=job, stop=time.time()))
        self._send(ess_finished_writing(job_id=job, file_name=name))

    def close(self) -> None:
        if self.producer is not None:
            self.producer.flush(2)
            self.producer = None
