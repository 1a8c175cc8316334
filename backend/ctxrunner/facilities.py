"""The run as each facility gives it to the context file, and metadata columns without Python.

Runs the context file sees (its variables' first argument):

* ``euxfel``: extra-data's ``DataCollection`` (opened in :mod:`backend.ctxrunner.worker`).
* ``ess``: the run's NeXus file, an ``h5py.File`` opened read-only (:func:`open_ess_file`
  retries while the file writer still holds it).
* ``esrf`` and ``swissfel``: a :class:`FacilityRun` with ``metadata`` (dict: the collection's
  ``metadata.json``, or the acquisition request JSON), ``data_dir`` (``pathlib.Path``, after path
  prefix rewriting) and ``files`` (the run's data files, sorted).

``meta#`` inputs (:func:`meta_for`): ``run_number``, ``proposal``, ``proposal_path`` everywhere,
plus what the facility knows of the run (:data:`FACILITY_META_KEYS`).

Metadata columns (:class:`ColumnSpec`, from ``[columns.NAME]`` in ``amore.toml`` and, at ESRF,
AMARCORD's ``attributo-config.json``): a metadata key or an HDF5 path -> a typed table value.
A value of the wrong type becomes an error cell naming the key, the type expected and the
value found.

No SQLAlchemy, Kafka or Qt here: this runs in the context-file worker.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from backend.vocab import StoredValue

#: ``meta#`` keys each facility provides beyond run_number, proposal and proposal_path.
FACILITY_META_KEYS = {
    "euxfel": (),
    "ess": ("run_name", "instrument", "start_time", "stop_time", "file_name", "job_id",
            "metadata"),
    "esrf": ("metadata", "tag", "sample", "data_dir", "start_time", "stop_time"),
    "swissfel": ("metadata", "data_dir", "start_time", "pgroup", "beamline"),
}
ALL_META_KEYS = tuple(dict.fromkeys(
    ("run_number", "proposal", "proposal_path")
    + tuple(k for keys in FACILITY_META_KEYS.values() for k in keys)))

COLUMN_TYPES = ("number", "integer", "string", "boolean")
REDUCTIONS = ("first", "last", "mean", "min", "max")

#: Units of ESRF's metadata.json keys (ESRF ICAT definitions, hdf5_cfg.xml), used when
#: attributo-config.json names none.
ESRF_ICAT_UNITS = {
    "MX_beamSizeAtSampleX": "mm", "MX_beamSizeAtSampleY": "mm", "MX_detectorDistance": "mm",
    "MX_exposureTime": "s", "MX_transmission": "%", "MX_wavelength": "Å",
    "MX_resolution": "Å", "MX_flux": "ph/s", "MX_oscillationRange": "deg",
    "MX_oscillationStart": "deg",
}


@dataclass
class FacilityRun:
    """An ESRF collection or a SwissFEL acquisition, as the context file's first argument.

    ``metadata``: the facility's JSON for the run (ESRF ``metadata.json``; SwissFEL the request
    JSON, unknown fields kept). ``data_dir``: where its data files are (``pathlib.Path``, after
    path prefix rewriting). ``files``: the data files found there (sorted ``Path`` list; HDF5 and
    image files, not the metadata). ``run_number`` and ``proposal`` as in the run table.
    """

    facility: str
    proposal: int | str
    run_number: int
    metadata: dict
    data_dir: Path | None
    files: list[Path] = field(default_factory=list)

    def __repr__(self):
        return (f"<FacilityRun {self.facility} {self.proposal} run {self.run_number}: "
                f"{len(self.files)} file(s) in {self.data_dir}>")


class RunNotReady(Exception):
    """The run's data cannot be opened (missing, or still locked by its writer)."""


def open_ess_file(path: str | os.PathLike, retries: int = 5, delay: float = 1.0):
    """Open an ESS NeXus file read-only with h5py.

    A file the file writer still holds (HDF5's file lock, "unable to lock file", or a truncated
    superblock while it is being closed) is retried ``retries`` times, ``delay`` seconds apart.
    Raises :class:`RunNotReady` naming the file and the last error.
    """
    import h5py
    last = None
    for attempt in range(max(int(retries), 0) + 1):
        try:
            return h5py.File(path, "r")
        except FileNotFoundError as e:
            last = e
        except OSError as e:
            last = e
        if attempt < retries:
            time.sleep(delay)
    raise RunNotReady(f"cannot open {path} after {retries + 1} attempt(s): {last}")


def data_files(data_dir: Path | None, pattern: str = "*") -> list[Path]:
    """Data files under ``data_dir`` whose names match ``pattern`` (recursively; JSON metadata
    files excluded), sorted."""
    if data_dir is None or not data_dir.is_dir():
        return []
    return sorted(p for p in data_dir.rglob(pattern or "*")
                  if p.is_file() and p.suffix != ".json")


def open_run(facility: str, info: dict, proposal, run: int, options: dict | None = None):
    """The context file's first argument for a run of ``facility`` and its ``meta#`` dict.

    ``info``: what the run source recorded (``source_runs.info``: ``file`` for ESS, ``metadata``
    and ``data_dir`` for ESRF/SwissFEL, plus times and names). Returns ``(run_object, meta,
    start_time)``; the caller closes an ESS ``h5py.File``. Raises :class:`RunNotReady`.
    """
    options = options or {}
    meta = meta_for(facility, info, proposal, run)
    start = info.get("start_time")
    if facility == "ess":
        path = info.get("file")
        if not path:
            raise RunNotReady("the file writer named no file for this run")
        obj = open_ess_file(path, int(options.get("open_retries", 5)),
                            float(options.get("open_retry_seconds", 1.0)))
        return obj, meta, start
    if facility in ("esrf", "swissfel"):
        d = info.get("data_dir")
        data_dir = Path(d) if d else None
        obj = FacilityRun(facility, proposal, run, dict(info.get("metadata") or {}), data_dir,
                          data_files(data_dir, info.get("file_glob") or "*"))
        return obj, meta, start
    raise ValueError(f"no run object for facility {facility!r}")


def meta_for(facility: str, info: dict, proposal, run: int) -> dict:
    """``meta#`` values of one run: run_number, proposal, proposal_path and the facility's keys
    (:data:`FACILITY_META_KEYS`) taken from the recorded ``info``; ``data_dir`` as a Path."""
    meta = {"run_number": run, "proposal": proposal,
            "proposal_path": info.get("proposal_path", "")}
    for k in FACILITY_META_KEYS.get(facility, ()):
        if k in info:
            meta[k] = Path(info[k]) if k == "data_dir" and info[k] else info[k]
    return meta


# ---------------------------------------------------------------------------------------------
# Metadata columns

@dataclass
class ColumnSpec:
    """One metadata column: ``key`` (metadata key, ``"a.b"`` for nested) or ``hdf5`` (dataset or
    NXlog group path in the run's file) -> ``type`` (:data:`COLUMN_TYPES`), ``units`` (None: the
    dataset's ``units`` attribute), ``reduce`` (:data:`REDUCTIONS`, for arrays)."""

    name: str
    type: str
    key: str | None = None
    hdf5: str | None = None
    units: str | None = None
    reduce: str | None = None
    title: str | None = None

    def source(self) -> str:
        return self.key if self.key is not None else self.hdf5


def column_specs(columns: dict | None, attributi: list | None = None,
                 where: str = "amore.toml") -> list[ColumnSpec]:
    """Column specs from ``[columns.NAME]`` tables and AMARCORD attributo entries (read as
    they are: ``beamline-name``, ``attributo-name``, ``attributo-type``, optional
    ``attributo-unit``). Raises ``ValueError`` naming the bad entry."""
    out: list[ColumnSpec] = []
    for a in attributi or []:
        if not isinstance(a, dict) or not {"beamline-name", "attributo-name",
                                            "attributo-type"} <= set(a):
            raise ValueError(f"attributo-config entry {a!r} lacks beamline-name, attributo-name "
                             f"or attributo-type")
        key = a["beamline-name"]
        out.append(ColumnSpec(name=a["attributo-name"], type=a["attributo-type"], key=key,
                              units=a.get("attributo-unit") or ESRF_ICAT_UNITS.get(key)))
    for name, c in (columns or {}).items():
        if not isinstance(c, dict):
            raise ValueError(f"{where} [columns.{name}] must be a table")
        unknown = set(c) - {"key", "hdf5", "type", "units", "reduce", "title"}
        if unknown:
            raise ValueError(f"{where} [columns.{name}]: unknown setting(s) {', '.join(sorted(unknown))}")
        if ("key" in c) == ("hdf5" in c):
            raise ValueError(f"{where} [columns.{name}]: give exactly one of 'key' or 'hdf5'")
        out.append(ColumnSpec(name=name, type=c.get("type", "number"), key=c.get("key"),
                              hdf5=c.get("hdf5"), units=c.get("units"), reduce=c.get("reduce"),
                              title=c.get("title")))
    for s in out:
        if s.type not in COLUMN_TYPES:
            raise ValueError(f"column {s.name!r}: type {s.type!r} is not one of "
                             f"{', '.join(COLUMN_TYPES)}")
        if s.reduce is not None and s.reduce not in REDUCTIONS:
            raise ValueError(f"column {s.name!r}: reduce {s.reduce!r} is not one of "
                             f"{', '.join(REDUCTIONS)}")
    return out


def read_attributo_config(path: Path) -> list:
    """AMARCORD's attributo-config.json (a JSON list). Raises ``ValueError`` if unreadable."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read {path}: {e}") from None
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of attributi")
    return data


def _typed(spec: ColumnSpec, value, units) -> StoredValue:
    def wrong():
        return StoredValue(None, "error", {
            "error": f"{spec.source()}: expected {spec.type}, found {value!r} "
                     f"({type(value).__name__})", "error_type": "TypeError"})
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    attrs = {"units": units} if units else {}
    attrs["source"] = spec.source()
    if value is None:
        return StoredValue(None, "none", {**attrs, "reason": f"{spec.source()} is null"})
    if spec.type == "boolean":
        return StoredValue(int(value), "bool", attrs) if isinstance(value, bool) else wrong()
    if isinstance(value, bool):
        return wrong()
    if spec.type == "integer":
        return StoredValue(value, "number", attrs) if isinstance(value, int) else wrong()
    if spec.type == "number":
        if not isinstance(value, (int, float)):
            return wrong()
        if isinstance(value, float) and not math.isfinite(value):
            return StoredValue(None, "none", {**attrs, "reason": f"{spec.source()} is {value}"})
        return StoredValue(value, "number", attrs)
    return StoredValue(value, "string", attrs) if isinstance(value, str) else wrong()


def _lookup(d: dict, key: str):
    if key in d:
        return d[key]
    cur: Any = d
    for part in key.split("."):
        if not isinstance(cur, dict) or part not in cur:
            raise KeyError(key)
        cur = cur[part]
    return cur


def _reduce(spec: ColumnSpec, arr: np.ndarray):
    if arr.ndim == 0 or arr.size == 1:
        return arr.reshape(-1)[0] if arr.size else None
    if arr.size == 0:
        return None
    if spec.reduce is None:
        raise ValueError(f"{spec.source()} is an array of shape {arr.shape}; give reduce = "
                         f"one of {', '.join(REDUCTIONS)}")
    flat = arr.reshape(-1)
    if spec.reduce == "first":
        return flat[0]
    if spec.reduce == "last":
        return flat[-1]
    return getattr(np, spec.reduce)(flat)


def compute_columns(specs: list[ColumnSpec], metadata: dict | None, h5file=None,
                    where: str = "metadata") -> dict[str, StoredValue]:
    """Table values of the metadata columns for one run.

    ``metadata``: the facility's metadata dict for ``key`` columns; ``h5file``: an open
    ``h5py.File`` for ``hdf5`` columns (an NXlog group gives its ``value`` dataset; units from
    the dataset's ``units`` attribute unless the spec gives them). Never raises: a missing key
    is a skipped cell saying so, a wrong type or unreadable dataset an error cell.
    """
    out: dict[str, StoredValue] = {}
    for spec in specs:
        try:
            if spec.key is not None:
                try:
                    value = _lookup(metadata or {}, spec.key)
                except KeyError:
                    out[spec.name] = StoredValue(None, "skipped",
                                                 {"reason": f"{spec.key} not in {where}"})
                    continue
                if isinstance(value, list) and value and all(
                        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
                    value = _reduce(spec, np.asarray(value))
                out[spec.name] = _typed(spec, value, spec.units)
            else:
                if h5file is None:
                    out[spec.name] = StoredValue(None, "skipped",
                                                 {"reason": f"no HDF5 file for {spec.hdf5}"})
                    continue
                if spec.hdf5 not in h5file:
                    out[spec.name] = StoredValue(None, "skipped",
                                                 {"reason": f"{spec.hdf5} not in the file"})
                    continue
                obj = h5file[spec.hdf5]
                if not hasattr(obj, "shape"):  # a group: an NXlog's value
                    if "value" not in obj:
                        raise ValueError(f"{spec.hdf5} is a group without 'value'")
                    obj = obj["value"]
                units = spec.units or _attr_str(obj.attrs.get("units"))
                arr = obj[()]
                if isinstance(arr, np.ndarray):
                    if arr.dtype.kind in "SOU":
                        arr = arr.reshape(-1)[0] if arr.size else None
                    else:
                        arr = _reduce(spec, arr)
                out[spec.name] = _typed(spec, arr, units)
        except Exception as e:
            out[spec.name] = StoredValue(None, "error", {"error": f"{spec.source()}: {e}",
                                                         "error_type": type(e).__name__})
    return out


def _attr_str(v) -> str | None:
    if v is None:
        return None
    if isinstance(v, np.ndarray):
        v = v.reshape(-1)[0] if v.size else None
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return None if v is None else str(v)
