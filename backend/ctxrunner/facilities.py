"""The worker side of the facility plug-ins: how the context-file worker opens a run, whatever the
facility, and the pieces facilities share. Runs in the user's Python: no SQLAlchemy, Kafka or Qt.

Each facility's worker module (``backend/facilities/<name>/run.py``; the backend names it in
``$AMORE_FACILITY``, see :mod:`backend.ctxrunner.worker`) provides

``open_run(request: RunRequest) -> OpenedRun``
    the context file's first argument for one run (extra-data's ``DataCollection`` at European
    XFEL, an ``h5py.File`` at ESS, a :class:`FacilityRun` at ESRF and SwissFEL), its ``meta#``
    inputs, start time and what its metadata columns read. Raises :class:`RunNotReady` when the
    run's data cannot be opened (the run then fails with that reason);
``META_KEYS``
    the ``meta#`` keys it provides beyond ``run_number``, ``proposal`` and ``proposal_path``
    (each must be one of :data:`backend.ctxrunner.context.META_KEYS`, which context files are
    checked against when they are loaded).

Metadata columns (:class:`ColumnSpec`, from ``[columns.NAME]`` in ``amore.toml`` and AMARCORD's
``attributo-config.json``): a metadata key or an HDF5 path -> a typed table value. A value of the
wrong type becomes an error cell naming the key, the type expected and the value found.
"""
from __future__ import annotations

import glob
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from backend.vocab import StoredValue, normalize_proposal

COLUMN_TYPES = ("number", "integer", "string", "boolean")
REDUCTIONS = ("first", "last", "mean", "min", "max")

#: Units of the ESRF ICAT metadata keys that AMARCORD's attributi name (ICAT definitions,
#: hdf5_cfg.xml; the keys of ESRF's metadata.json), used when attributo-config.json names none.
ICAT_UNITS = {
    "MX_beamSizeAtSampleX": "mm", "MX_beamSizeAtSampleY": "mm", "MX_detectorDistance": "mm",
    "MX_exposureTime": "s", "MX_transmission": "%", "MX_wavelength": "Å",
    "MX_resolution": "Å", "MX_flux": "ph/s", "MX_oscillationRange": "deg",
    "MX_oscillationStart": "deg",
}


@dataclass
class RunRequest:
    """What the worker knows of the run to open: ``proposal`` (as the backend sent it: int or
    identifier), ``run`` (int), ``data`` (``"raw"``, ``"proc"`` or ``"all"``), ``info`` (what the
    run source recorded, ``source_runs.info``, or None: nothing recorded, e.g. European XFEL),
    ``options`` (the facility's worker options, :meth:`backend.facilities.Facility.
    worker_settings`), ``processes`` (how many processes may share opening it: this one and
    forked copies, see :mod:`backend.ctxrunner.forked`), ``start_time`` (whether the run's
    start time is wanted; False when the backend has it already and the request stores some
    of the run's values only: a facility may then leave ``OpenedRun.start_time`` None)."""

    proposal: int | str
    run: int
    data: str = "all"
    info: dict | None = None
    options: dict = field(default_factory=dict)
    processes: int = 1
    start_time: bool = True


@dataclass
class OpenedRun:
    """One opened run, as the worker evaluates the context file on it.

    ``obj``: the context file's first argument. ``proposal``: the proposal as the context file
    sees it (``meta#proposal``). ``proposal_path``: ``meta#proposal_path`` (text; "" = found from
    the run's files). ``data``: the data the variables may use (``"raw"`` when a run has no
    corrected data yet: proc variables wait). ``start_time``: Unix seconds or None. ``meta``:
    further ``meta#`` values. ``metadata()``: the metadata dict that ``key`` metadata columns
    read (called only when there are such columns), described as ``metadata_where`` in their
    messages; ``h5file``: an open ``h5py.File`` for ``hdf5`` columns, or None. ``close()``: called
    once the variables are computed. ``damaged()``: ``{file name: reason}`` of the run's files
    that could not be read, asked only when a variable failed (named in its error), or None.
    ``data_locations``: where the run's data is, per kind (``"raw"``, ``"proc"``): absolute glob
    patterns (``**`` recursive) listing its files, whose names, sizes and modification times
    are the data's identity in the values' provenance
    (:func:`backend.ctxrunner.provenance.data_identity`); empty where not known.
    """

    obj: Any
    proposal: int | str
    proposal_path: str = ""
    data: str = "all"
    start_time: float | None = None
    meta: dict = field(default_factory=dict)
    metadata: Callable[[], dict] = dict
    metadata_where: str = "metadata"
    h5file: Any = None
    close: Callable[[], None] = lambda: None
    damaged: Callable[[], dict] | None = None
    data_locations: dict = field(default_factory=dict)


@dataclass
class FacilityRun:
    """A run described by the facility's metadata and a folder of data files (an ESRF collection,
    a SwissFEL acquisition), as the context file's first argument.

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


def recorded_info(request: RunRequest, facility: str) -> dict:
    """What the run source recorded for the requested run; raises :class:`RunNotReady` if it
    recorded nothing."""
    if not request.info:
        raise RunNotReady(f"Run {request.run} of proposal {request.proposal}: the {facility} "
                          f"run source recorded nothing for it")
    return request.info


def meta_for(info: dict, proposal, run: int, keys) -> dict:
    """``meta#`` values of one run: run_number, proposal, proposal_path and the facility's
    ``keys`` taken from the recorded ``info``; ``data_dir`` as a Path."""
    meta = {"run_number": run, "proposal": proposal,
            "proposal_path": info.get("proposal_path", "")}
    for k in keys:
        if k in info:
            meta[k] = Path(info[k]) if k == "data_dir" and info[k] else info[k]
    return meta


def describe_damage(damaged: dict[str, str], most: int = 5) -> str:
    """``{file name: reason}`` as one line for people, the first ``most`` files named."""
    items = [f"{n} ({why})" for n, why in list(damaged.items())[:most]]
    more = f" and {len(damaged) - most} more" if len(damaged) > most else ""
    return "; ".join(items) + more


def data_files(data_dir: Path | None, pattern: str = "*") -> list[Path]:
    """Data files under ``data_dir`` whose names match ``pattern`` (recursively; JSON metadata
    files excluded), sorted."""
    if data_dir is None or not data_dir.is_dir():
        return []
    return sorted(p for p in data_dir.rglob(pattern or "*")
                  if p.is_file() and p.suffix != ".json")


def open_facility_run(facility: str, request: RunRequest, keys, where: str) -> OpenedRun:
    """A run the facility describes with metadata and a folder of data files, opened as a
    :class:`FacilityRun` from what its run source recorded (``info``: ``metadata``, ``data_dir``,
    optionally ``file_glob``, ``proposal_path``, ``start_time``); ``keys``: the facility's
    ``meta#`` keys; ``where``: what its metadata is called in messages. Raises
    :class:`RunNotReady` if the source recorded nothing."""
    info = recorded_info(request, facility)
    proposal = normalize_proposal(request.proposal)
    meta = meta_for(info, proposal, request.run, keys)
    d = info.get("data_dir")
    data_dir = Path(d) if d else None
    obj = FacilityRun(facility, proposal, request.run, dict(info.get("metadata") or {}), data_dir,
                      data_files(data_dir, info.get("file_glob") or "*"))
    locations = ({"raw": [os.path.join(glob.escape(str(data_dir)), "**",
                                       info.get("file_glob") or "*")]}
                 if data_dir is not None else {})
    return OpenedRun(obj, proposal, str(info.get("proposal_path", "")), request.data,
                     info.get("start_time"), meta, lambda: meta.get("metadata") or {}, where,
                     data_locations=locations)


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
    ``attributo-unit``, else the key's unit in :data:`ICAT_UNITS`). Raises ``ValueError`` naming
    the bad entry."""
    out: list[ColumnSpec] = []
    for a in attributi or []:
        if not isinstance(a, dict) or not {"beamline-name", "attributo-name",
                                            "attributo-type"} <= set(a):
            raise ValueError(f"attributo-config entry {a!r} lacks beamline-name, attributo-name "
                             f"or attributo-type")
        key = a["beamline-name"]
        out.append(ColumnSpec(name=a["attributo-name"], type=a["attributo-type"], key=key,
                              units=a.get("attributo-unit") or ICAT_UNITS.get(key)))
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
